//! `regfs status`: cache use and downloads in progress.

use std::fs;

use super::args::StatusArgs;

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let dir = args.cache_dir.unwrap_or_else(super::default_cache_dir);
    println!("cache: {}", dir.display());
    let (mut n, mut bytes) = (0u64, 0u64);
    if let Ok(rd) = fs::read_dir(dir.join("blobs/sha256")) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                n += 1;
                bytes += m.len();
            }
        }
    }
    println!("cached blobs: {n} ({})", human(bytes));
    let mut fetching = Vec::new();
    if let Ok(rd) = fs::read_dir(dir.join("partial/sha256")) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                fetching.push((e.file_name().to_string_lossy().to_string(), m.len()));
            }
        }
    }
    if fetching.is_empty() {
        println!("fetching: none");
    } else {
        println!("fetching (or interrupted, resumed on next read):");
        fetching.sort();
        for (hex, len) in fetching {
            println!("  sha256:{hex}  {} so far", human(len));
        }
    }
    Ok(())
}

pub fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(0), "0 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(10 << 30), "10.0 GiB");
    }
}
