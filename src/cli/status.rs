//! `regfs status`: cache use and downloads in progress.

use std::fs;

use super::args::StatusArgs;

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let mounts = match &args.path {
        Some(p) => vec![super::records::Record::find(p)?],
        None => super::records::Record::all()
            .into_iter()
            .map(|r| (r, Vec::new()))
            .collect(),
    };
    if mounts.is_empty() && args.path.is_none() {
        println!("no regfs mounts");
    }
    for (rec, parts) in &mounts {
        println!(
            "mount {} ({}), pid {}",
            rec.mountpoint.display(),
            rec.source,
            rec.pid
        );
        let staging = crate::stage::Staging::open(&rec.staging_root)?;
        let source: crate::reference::Source = rec.source.parse()?;
        let prefix = source.prefix();
        let jobs = super::commit::find_tags(&staging, prefix.as_deref(), &parts.join("/"));
        if jobs.is_empty() {
            println!("  staged: nothing");
        }
        let state = staging.state();
        // Hard links (a blob shared by tags, as `rsync -aH` writes it) are
        // one file on disk: counted once in the total.
        let mut seen = Seen::default();
        let tags = jobs.len();
        for j in jobs {
            let mut files = 0u64;
            let mut bytes = 0u64;
            count(&staging.real(&j.rel), &mut files, &mut bytes, &mut seen);
            let pre = format!("{}/", j.rel);
            let removed = state.removed.iter().filter(|p| p.starts_with(&pre)).count();
            let kind = if state.bases.contains_key(&j.rel) {
                "changed"
            } else {
                "new"
            };
            println!(
                "  staged {kind} {}:{}  {files} files ({}), {removed} removed",
                j.repo,
                j.tag,
                human(bytes)
            );
        }
        if tags > 1 {
            println!(
                "  staged in all: {} files ({}) on disk, each hard-linked file once",
                seen.files,
                human(seen.bytes)
            );
        }
    }
    let dir = match (&args.cache_dir, mounts.first()) {
        (Some(d), _) => d.clone(),
        (None, Some((r, _))) => r.cache_dir.clone(),
        (None, None) => super::default_cache_dir(),
    };
    println!("cache: {}", dir.display());
    // The cache knows its own layout: ask it what it holds and fetches.
    let usage = crate::cache::Cache::usage_in(&dir);
    println!(
        "cached blobs: {} ({})",
        usage.blobs,
        human(usage.blob_bytes)
    );
    println!(
        "unpacked layers: {} ({})",
        usage.trees,
        human(usage.tree_bytes)
    );
    println!("cache use: {}", human(usage.total()));
    let fetching = crate::cache::Cache::downloads_in(&dir);
    if fetching.is_empty() {
        println!("fetching: none");
    } else {
        println!("fetching (or interrupted, resumed on next read):");
        for (hex, len) in fetching {
            println!("  sha256:{hex}  {} so far", human(len));
        }
    }
    Ok(())
}

/// Files already counted in a total, by (device, inode).
#[derive(Default)]
struct Seen {
    inodes: std::collections::HashSet<(u64, u64)>,
    files: u64,
    bytes: u64,
}

/// Files and bytes under `p` (every name), adding each file once to `seen`.
fn count(p: &std::path::Path, files: &mut u64, bytes: &mut u64, seen: &mut Seen) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = fs::read_dir(p) else { return };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            count(&e.path(), files, bytes, seen);
        } else {
            *files += 1;
            *bytes += m.len();
            if seen.inodes.insert((m.dev(), m.ino())) {
                seen.files += 1;
                seen.bytes += m.len();
            }
        }
    }
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
