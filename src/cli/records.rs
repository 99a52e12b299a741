//! Mount records: what a running mount daemon tells other regfs commands
//! (`commit`, `discard`, `status`) about itself: its source, cache, staging
//! area, registry options and PID. One JSON file per mount under the
//! runtime folder, removed when the daemon stops.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub mountpoint: PathBuf,
    pub source: String,
    pub pid: u32,
    pub cache_dir: PathBuf,
    pub staging_root: PathBuf,
    /// `--plain-http`.
    pub plain_http: bool,
    /// `--https` or `--plain-http=false` (absent from records of older mounts).
    #[serde(default)]
    pub https: bool,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub timeout: u64,
    pub read_only: bool,
}

/// `$REGFS_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/regfs`, else `/tmp/regfs-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REGFS_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("regfs");
    }
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/regfs-{uid}"))
}

/// A folder name for a source: its characters, with anything outside
/// `[A-Za-z0-9._-]` as `_`.
pub fn source_key(source: &str) -> String {
    source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn record_file(mountpoint: &Path) -> PathBuf {
    let d = crate::digest::Digest::of(mountpoint.as_os_str().as_encoded_bytes());
    runtime_dir()
        .join("mounts")
        .join(format!("{}.json", &d.hex()[..16]))
}

/// Where a daemon acknowledges a refresh (a counter).
pub fn ack_file(record: &Path) -> PathBuf {
    record.with_extension("refreshed")
}

impl Record {
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let path = record_file(&self.mountpoint);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let bytes = serde_json::to_vec_pretty(self)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Every live mount's record (stale ones, whose daemon is gone, are removed).
    pub fn all() -> Vec<Record> {
        let dir = runtime_dir().join("mounts");
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return out;
        };
        for e in rd.flatten() {
            let Ok(bytes) = std::fs::read(e.path()) else {
                continue;
            };
            let Ok(r) = serde_json::from_slice::<Record>(&bytes) else {
                continue;
            };
            if Path::new(&format!("/proc/{}", r.pid)).exists() {
                out.push(r);
            } else {
                let _ = std::fs::remove_file(e.path());
            }
        }
        out
    }

    /// The mount holding `path`, and `path` relative to its mountpoint.
    pub fn find(path: &Path) -> anyhow::Result<(Record, Vec<String>)> {
        let abs = absolute(path)?;
        let mut best: Option<(Record, Vec<String>)> = None;
        for r in Record::all() {
            if let Ok(rest) = abs.strip_prefix(&r.mountpoint) {
                let parts: Vec<String> = rest
                    .components()
                    .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
                    .collect();
                let better = best.as_ref().is_none_or(|(b, _)| {
                    r.mountpoint.as_os_str().len() > b.mountpoint.as_os_str().len()
                });
                if better {
                    best = Some((r, parts));
                }
            }
        }
        match best {
            Some(b) => Ok(b),
            None => bail!(
                "{} is not inside a regfs mount (use --to REF to commit a plain folder)",
                path.display()
            ),
        }
    }

    /// Asks the daemon to forget what it remembers of tags and staged
    /// state, and waits (a little) until it says it has.
    pub fn refresh_daemon(&self) {
        let ack = ack_file(&record_file(&self.mountpoint));
        let before = std::fs::read_to_string(&ack).ok();
        // SAFETY: kill with a signal number has no memory effects; a stale
        // PID at worst gets a signal it ignores (checked alive above).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGUSR1);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if std::fs::read_to_string(&ack).ok() != before {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// An absolute path without resolving anything inside a mount (no
/// canonicalize: it would ask the mount for every component).
fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_folder_names() {
        assert_eq!(source_key("localhost:5000/org"), "localhost_5000_org");
        assert_eq!(source_key("oci:/tmp/lay out"), "oci__tmp_lay_out");
    }

    #[test]
    fn absolute_paths_are_normalized() {
        assert_eq!(
            absolute(Path::new("/a/b/../c/./d")).unwrap(),
            PathBuf::from("/a/c/d")
        );
    }
}
