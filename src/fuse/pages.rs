//! What the kernel's page cache may keep.
//!
//! Blob bytes never change under a name, so an open normally asks the
//! kernel to keep its cached pages (`FOPEN_KEEP_CACHE`). Lazy reads serve
//! bytes before the whole blob is verified: such pages must never outlive
//! the opens that read them, or a later reader could get bytes of a transfer
//! that failed verification with success. So an inode that served
//! unverified bytes is *tainted*: its opens do not keep the cache (which
//! makes the kernel drop its pages at open), until one open finds the blob
//! verified while no unverified handle is open. When a read fails
//! verification, the inode's pages are dropped at once
//! (`FUSE_NOTIFY_INVAL_INODE`), after the failed read has been answered.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Pages {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Inodes whose page cache may hold unverified bytes.
    tainted: HashSet<u64>,
    /// Open handles serving unverified bytes: handle -> inode.
    unverified: HashMap<u64, u64>,
}

impl Pages {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An open of `ino` as handle `fh`; returns whether the kernel may keep
    /// the pages it has for the inode.
    pub(super) fn open(&self, ino: u64, fh: u64, unverified: bool) -> bool {
        let mut g = self.lock();
        if unverified {
            g.tainted.insert(ino);
            g.unverified.insert(fh, ino);
            return false;
        }
        if !g.tainted.contains(&ino) {
            return true;
        }
        // This open drops the pages (no KEEP_CACHE); if no unverified handle
        // can put new ones there, the inode is clean from now on.
        if !g.unverified.values().any(|i| *i == ino) {
            g.tainted.remove(&ino);
        }
        false
    }

    pub(super) fn release(&self, fh: u64) {
        self.lock().unverified.remove(&fh);
    }

    /// A read of `fh` failed: the inode to invalidate, if it may hold
    /// unverified pages.
    pub(super) fn failed(&self, fh: u64) -> Option<u64> {
        let g = self.lock();
        g.unverified.get(&fh).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::Pages;

    #[test]
    fn a_verified_inode_keeps_its_pages() {
        let p = Pages::default();
        assert!(p.open(5, 1, false));
        assert!(p.open(5, 2, false));
    }

    #[test]
    fn unverified_pages_never_outlive_their_opens() {
        let p = Pages::default();
        assert!(!p.open(5, 1, true), "a lazy open must not keep the cache");
        // The blob became verified, but the lazy handle is still open.
        assert!(!p.open(5, 2, false));
        p.release(1);
        // First verified open with no lazy handle: drops the pages once...
        assert!(!p.open(5, 3, false));
        // ...and from then on the cache is kept.
        assert!(p.open(5, 4, false));
        // Other inodes are not affected.
        assert!(p.open(6, 7, false));
    }

    #[test]
    fn a_failed_read_names_the_inode_of_an_unverified_handle() {
        let p = Pages::default();
        p.open(5, 1, true);
        p.open(6, 2, false);
        assert_eq!(p.failed(1), Some(5));
        assert_eq!(p.failed(2), None);
    }
}
