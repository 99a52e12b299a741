//! Listings of open folders. A folder is listed once when it is opened (or
//! read again from its start: `rewinddir`), and the kernel's `readdir`
//! and `readdirplus` calls, one per buffer of a few dozen entries, read on
//! at their offsets in that one listing: listing a folder of 10,000 tags
//! costs one listing, not one per buffer, and offsets keep meaning the
//! same entries while the folder changes underneath.
//!
//! Where the kernel supports it (`FUSE_NO_OPENDIR_SUPPORT`), folders are
//! not opened at all: `opendir` answers ENOSYS once, the kernel stops
//! sending opendir and releasedir, and it caches every folder's listing
//! until the folder changes (its mtime: see `fs::Attr::mtime_nsec`), is
//! changed through the mount, or is invalidated (a commit or discard by
//! another process). Reads then carry no handle: the listing being read
//! is kept per folder from its offset 0 until its end was given.
//!
//! A folder whose listing follows the registry's tags (a repository, a
//! tag's folder, `referrers/`) is listed when opened, and the kernel may
//! keep its cached copy of the listing when it is the one it was given
//! last time (`unchanged`): a warm walk lists such folders without
//! reading them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::lock;
use crate::fs::DirEntry;

pub(super) type Listing = Arc<Vec<DirEntry>>;

/// The listing kept for a handle, and whether it was made when the folder
/// was opened and not read from its start yet.
type Kept = (Option<Listing>, bool);

#[derive(Default)]
pub(super) struct Dirs {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Kept>>,
    /// A fingerprint of the listing last given for a folder, by inode.
    given: Mutex<HashMap<u64, u64>>,
    /// Listings being read without a handle, by folder inode.
    by_ino: Mutex<HashMap<u64, Listing>>,
}

fn fingerprint(l: &[DirEntry]) -> u64 {
    crate::fs::hash64(&l)
}

impl Dirs {
    /// A handle for folder `ino` just opened and listed: reads from its
    /// start get `listing` first. Also says whether `listing` is the one
    /// the kernel was given last for `ino` (its cached copy may be kept).
    pub(super) fn open_listed(&self, ino: u64, listing: Listing) -> (u64, bool) {
        let f = fingerprint(&listing);
        let unchanged = lock(&self.given).insert(ino, f) == Some(f);
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.open).insert(fh, (Some(listing), true));
        (fh, unchanged)
    }

    /// The kernel forgot folder `ino`: so do we.
    pub(super) fn forget(&self, ino: u64) {
        lock(&self.given).remove(&ino);
        lock(&self.by_ino).remove(&ino);
    }

    /// Without a handle: the listing of `ino` being read, unless the read
    /// starts over (offset 0) or there is none.
    pub(super) fn kept_by_ino(&self, ino: u64, offset: u64) -> Option<Listing> {
        if offset == 0 {
            return None;
        }
        lock(&self.by_ino).get(&ino).cloned()
    }

    pub(super) fn keep_by_ino(&self, ino: u64, listing: Listing) {
        lock(&self.by_ino).insert(ino, listing);
    }

    /// The whole listing of `ino` was given: it need not be kept.
    pub(super) fn read_to_end(&self, ino: u64) {
        lock(&self.by_ino).remove(&ino);
    }

    /// A handle for a folder just opened.
    pub(super) fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.open).insert(fh, (None, false));
        fh
    }

    /// The listing to read from `offset` on: the one kept for `fh`, unless
    /// the read starts over (offset 0: a new listing, except the first
    /// read of one made at open) or there is none yet.
    pub(super) fn kept(&self, fh: u64, offset: u64) -> Option<Listing> {
        let mut open = lock(&self.open);
        let (listing, unread) = open.get_mut(&fh)?;
        if offset == 0 && !std::mem::take(unread) {
            return None;
        }
        listing.clone()
    }

    /// Keeps `listing` for the next reads of `fh` (if it is still open).
    pub(super) fn keep(&self, fh: u64, ino: u64, listing: Listing) {
        let f = fingerprint(&listing);
        if let Some(slot) = lock(&self.open).get_mut(&fh) {
            *slot = (Some(listing), false);
        }
        // What the kernel caches now, if it caches this folder.
        lock(&self.given).insert(ino, f);
    }

    pub(super) fn release(&self, fh: u64) {
        lock(&self.open).remove(&fh);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.open).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::Kind;

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.into(),
            ino: 9,
            kind: Kind::File,
        }
    }

    #[test]
    fn a_listing_is_kept_per_handle_until_read_from_the_start_or_released() {
        let d = Dirs::default();
        let (a, b) = (d.open(), d.open());
        assert_ne!(a, b);
        assert!(d.kept(a, 5).is_none(), "nothing listed yet");
        d.keep(a, 7, Arc::new(vec![entry("x")]));
        assert_eq!(d.kept(a, 3).map(|l| l.len()), Some(1));
        assert!(d.kept(a, 0).is_none(), "offset 0 lists again");
        assert!(d.kept(b, 3).is_none(), "handles do not share");
        d.release(a);
        d.keep(a, 7, Arc::new(vec![entry("y")]));
        assert!(d.kept(a, 3).is_none(), "a released handle keeps nothing");
        d.release(b);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_folder_listed_at_open_says_whether_the_kernel_has_it_already() {
        let d = Dirs::default();
        let one = Arc::new(vec![entry("x")]);
        let (fh, unchanged) = d.open_listed(7, one.clone());
        assert!(!unchanged, "never given");
        assert_eq!(d.kept(fh, 0).map(|l| l.len()), Some(1), "read at open");
        assert!(d.kept(fh, 0).is_none(), "rewound: listed again");
        d.release(fh);
        let (_, unchanged) = d.open_listed(7, one.clone());
        assert!(unchanged);
        let (_, unchanged) = d.open_listed(7, Arc::new(vec![entry("x"), entry("y")]));
        assert!(!unchanged, "a new tag");
        d.forget(7);
        let (_, unchanged) = d.open_listed(7, Arc::new(vec![entry("x"), entry("y")]));
        assert!(!unchanged, "forgotten");
    }

    #[test]
    fn without_handles_a_listing_is_kept_per_folder_until_read_to_its_end() {
        let d = Dirs::default();
        assert!(d.kept_by_ino(7, 2).is_none());
        d.keep_by_ino(7, Arc::new(vec![entry("x"), entry("y")]));
        assert_eq!(d.kept_by_ino(7, 2).map(|l| l.len()), Some(2));
        assert!(d.kept_by_ino(7, 0).is_none(), "offset 0 lists again");
        assert!(d.kept_by_ino(8, 1).is_none());
        d.read_to_end(7);
        assert!(d.kept_by_ino(7, 1).is_none());
    }
}
