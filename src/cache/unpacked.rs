//! Unpacked directory layers: `unpacked/sha256/<hex>/` holds the tree of
//! verified layer `<hex>`, and `<hex>.size` the bytes it was charged (its
//! mtime is the tree's last use). Trees count against the cache's bound and
//! disk floor like blobs, are evicted like them, and are charged by one
//! rule (`ENTRY_CHARGE`, `file_charge`) while they are unpacked and when an
//! older cache's tree without a record is measured.
//!
//! A tree moves into place whole, by rename, after its unpacking stayed
//! within the room `Cache::reserve` gave it; a tree is evicted by renaming it
//! away first, so a reader never sees half of one.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use super::{err, secs, write_atomic, Cache, Cached, Error, TOUCH_EVERY};
use crate::digest::Digest;

/// What every file or folder of a tree is charged at least: one block.
pub const ENTRY_CHARGE: u64 = 4096;

/// What a file of `len` bytes is charged: its bytes in whole blocks, and at
/// least one block.
pub fn file_charge(len: u64) -> u64 {
    len.div_ceil(ENTRY_CHARGE)
        .max(1)
        .saturating_mul(ENTRY_CHARGE)
}

/// What the cache holds against its bound (`regfs status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Unpacked directory layers.
    pub trees: u64,
    pub tree_bytes: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.blob_bytes + self.tree_bytes
    }
}

fn tree_dir(root: &Path) -> PathBuf {
    root.join("unpacked/sha256")
}

fn size_file(root: &Path, d: &Digest) -> PathBuf {
    tree_dir(root).join(format!("{}.size", d.hex()))
}

/// The unpacked trees under the cache `root`: layer, bytes charged, last
/// use (seconds). A tree without a record (made by an older regfs, or
/// caught between its rename and its record) is measured.
pub(super) fn trees_in(root: &Path) -> Vec<(Digest, u64, i64)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(tree_dir(root)) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        else {
            continue;
        };
        let rec = size_file(root, &d);
        let recorded = fs::read_to_string(&rec)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let bytes = recorded.unwrap_or_else(|| tree_charge(&e.path()));
        let used = fs::metadata(&rec)
            .or_else(|_| e.metadata())
            .ok()
            .and_then(|m| m.modified().ok())
            .map(secs)
            .unwrap_or(0);
        out.push((d, bytes, used));
    }
    out
}

/// The charge of a tree on disk (its own folder included), by the rule
/// unpacking charges.
fn tree_charge(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else {
        return ENTRY_CHARGE;
    };
    let mut total = ENTRY_CHARGE;
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        total = total.saturating_add(if m.is_dir() {
            tree_charge(&e.path())
        } else {
            file_charge(m.len())
        });
    }
    total
}

/// Removes what a crashed process left in the cache's `tmp`: trees it was
/// unpacking or evicting, untouched for a day (a live unpack writes into
/// its folder all along).
pub(super) fn remove_stale(tmp: &Path) {
    let Ok(rd) = fs::read_dir(tmp) else { return };
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("unpack-") || name.starts_with("evicted-")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

impl Cache {
    /// Where the contents of the verified directory layer `d` are unpacked.
    pub fn unpacked(&self, d: &Digest) -> PathBuf {
        tree_dir(&self.root).join(d.hex())
    }

    /// Moves the tree unpacked in `from` into place as layer `d`, charged
    /// `bytes`, and evicts what no longer fits beside it. A tree another
    /// mount put there first is kept (it is the same layer's).
    pub fn adopt_unpacked(&self, from: &Path, d: &Digest, bytes: u64) -> Result<(), Error> {
        let dest = self.unpacked(d);
        if let Err(e) = fs::rename(from, &dest) {
            if !dest.is_dir() {
                return Err(err(&dest)(e));
            }
            return Ok(());
        }
        write_atomic(
            &self.root,
            &size_file(&self.root, d),
            bytes.to_string().as_bytes(),
        )?;
        if let Err(e) = self.evict() {
            tracing::warn!("cache eviction failed: {e}");
        }
        Ok(())
    }

    /// Keeps the tree of `d` from eviction until `release_unpacked`, and
    /// marks it used. Whether it is there (if not, unpack it and look again).
    pub fn hold_unpacked(&self, d: &Digest) -> bool {
        *self
            .lock_open()
            .entry(Cached::Unpacked(d.clone()))
            .or_insert(0) += 1;
        if !self.unpacked(d).is_dir() {
            self.release_unpacked(d);
            return false;
        }
        self.touch_unpacked(d);
        true
    }

    pub fn release_unpacked(&self, d: &Digest) {
        self.unhold(&Cached::Unpacked(d.clone()));
    }

    /// Marks the tree of `d` used now (at most once a minute per process).
    fn touch_unpacked(&self, d: &Digest) {
        {
            let mut touched = self.trees_touched.lock().unwrap_or_else(|e| e.into_inner());
            if touched.get(d).is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                return;
            }
            touched.insert(d.clone(), Instant::now());
        }
        if let Ok(f) = fs::File::open(size_file(&self.root, d)) {
            // Failing only makes eviction less fair.
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Removes the tree of `d`: renamed away first, so it disappears whole.
    pub(super) fn remove_unpacked(&self, d: &Digest) {
        static N: AtomicU64 = AtomicU64::new(0);
        let gone = self.tmp_dir().join(format!(
            "evicted-{}-{}-{}",
            d.hex(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(self.unpacked(d), &gone) {
            Ok(()) => {
                let _ = fs::remove_file(size_file(&self.root, d));
                if let Err(e) = fs::remove_dir_all(&gone) {
                    tracing::warn!(path = %gone.display(), "cannot remove evicted tree: {e}");
                }
            }
            Err(e) => tracing::warn!(layer = %d, "cannot evict unpacked tree: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_whole_blocks() {
        assert_eq!(file_charge(0), 4096);
        assert_eq!(file_charge(1), 4096);
        assert_eq!(file_charge(4096), 4096);
        assert_eq!(file_charge(4097), 8192);
        assert_eq!(file_charge(u64::MAX), u64::MAX);
    }

    /// A tree of `n` files of `len` bytes, adopted as layer `d`.
    fn tree(c: &Cache, d: &Digest, n: usize, len: usize) -> u64 {
        let t = c.tmp_dir().join(format!("t-{}", d.hex()));
        fs::create_dir_all(t.join("sub")).unwrap();
        for i in 0..n {
            fs::write(t.join("sub").join(i.to_string()), vec![0u8; len]).unwrap();
        }
        // The tree's own folder, sub, and the files.
        let bytes = 2 * ENTRY_CHARGE + n as u64 * file_charge(len as u64);
        assert_eq!(tree_charge(&t), bytes);
        c.adopt_unpacked(&t, d, bytes).unwrap();
        bytes
    }

    #[test]
    fn trees_count_in_usage_and_are_evicted_unless_held() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        let c = Cache::open(&root, 1 << 30).unwrap();
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let bytes = tree(&c, &a, 10, 5000);
        assert_eq!(
            Cache::usage_in(&root),
            Usage {
                trees: 1,
                tree_bytes: bytes,
                ..Usage::default()
            }
        );
        // A tree without its record (an older cache) is measured.
        fs::remove_file(size_file(&root, &a)).unwrap();
        assert_eq!(Cache::usage_in(&root).tree_bytes, bytes);
        tree(&c, &b, 10, 5000);
        // Room for one tree only: the one not held goes, whole.
        let c = Cache {
            max_bytes: bytes + 100,
            ..c
        };
        assert!(c.hold_unpacked(&a));
        c.evict().unwrap();
        assert!(c.unpacked(&a).is_dir());
        assert!(!c.unpacked(&b).exists());
        assert!(!size_file(&root, &b).exists());
        assert_eq!(fs::read_dir(c.tmp_dir()).unwrap().count(), 0);
        c.release_unpacked(&a);
        // Now a tree being unpacked needs room: the idle one is evicted for it.
        assert_eq!(c.reserve(0, 100, true).unwrap(), Some(100));
        assert!(c.unpacked(&a).is_dir(), "room enough: nothing evicted");
        assert_eq!(c.reserve(0, 200, false).unwrap(), None, "not free");
        assert!(c.unpacked(&a).is_dir());
        assert_eq!(c.reserve(0, bytes + 101, true).unwrap(), None);
        assert!(c.unpacked(&a).is_dir(), "cannot fit: nothing evicted");
        assert_eq!(c.reserve(0, 200, true).unwrap(), Some(bytes + 100));
        assert!(!c.unpacked(&a).exists());
        assert!(!c.hold_unpacked(&a), "gone: to be unpacked again");
    }
}
