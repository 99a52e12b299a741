//! Listings of open folders. A folder is listed once when it is opened (or
//! read again from its start: `rewinddir`), and the kernel's `readdir`
//! and `readdirplus` calls, one per buffer of a few dozen entries, read on
//! at their offsets in that one listing: listing a folder of 10,000 tags
//! costs one listing, not one per buffer, and offsets keep meaning the
//! same entries while the folder changes underneath.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::DirEntry;

pub(super) type Listing = Arc<Vec<DirEntry>>;

#[derive(Default)]
pub(super) struct Dirs {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Option<Listing>>>,
}

impl Dirs {
    fn open_map(&self) -> MutexGuard<'_, HashMap<u64, Option<Listing>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle for a folder just opened.
    pub(super) fn open(&self) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_map().insert(fh, None);
        fh
    }

    /// The listing to read from `offset` on: the one kept for `fh`, unless
    /// the read starts over (offset 0) or there is none yet.
    pub(super) fn kept(&self, fh: u64, offset: u64) -> Option<Listing> {
        if offset == 0 {
            return None;
        }
        self.open_map().get(&fh).cloned().flatten()
    }

    /// Keeps `listing` for the next reads of `fh` (if it is still open).
    pub(super) fn keep(&self, fh: u64, listing: Listing) {
        if let Some(slot) = self.open_map().get_mut(&fh) {
            *slot = Some(listing);
        }
    }

    pub(super) fn release(&self, fh: u64) {
        self.open_map().remove(&fh);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open_map().len()
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
        d.keep(a, Arc::new(vec![entry("x")]));
        assert_eq!(d.kept(a, 3).map(|l| l.len()), Some(1));
        assert!(d.kept(a, 0).is_none(), "offset 0 lists again");
        assert!(d.kept(b, 3).is_none(), "handles do not share");
        d.release(a);
        d.keep(a, Arc::new(vec![entry("y")]));
        assert!(d.kept(a, 3).is_none(), "a released handle keeps nothing");
        d.release(b);
        assert_eq!(d.len(), 0);
    }
}
