//! Kernel passthrough of reads to verified cache files (kernel >= 6.9,
//! root): the kernel reads the backing file itself, and reads never reach
//! us. The kernel wants one backing file per inode for all its handles.

use super::lock;
use std::sync::Arc;

use fuser::{FileHandle, FopenFlags, ReplyOpen};

/// A backing id, the (dev, ino) of the file behind it, and its handle count.
type Backing = (fuser::BackingId, (u64, u64), usize);

/// Kernel passthrough of reads to verified cache files (kernel >= 6.9, root).
/// The kernel wants one backing id per inode for all its open handles.
#[derive(Default)]
pub(super) struct Passthrough {
    pub(super) enabled: std::sync::atomic::AtomicBool,
    /// Per inode: the backing id, the (dev, ino) of the file behind it, and
    /// how many handles use it.
    backing: std::sync::Mutex<std::collections::HashMap<u64, Backing>>,
    handles: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
}

impl Passthrough {
    /// Replies to an open with passthrough when it can, plainly otherwise.
    pub(super) fn reply_open(
        &self,
        reply: ReplyOpen,
        ino: u64,
        fh: u64,
        file: Option<Arc<std::fs::File>>,
        flags: FopenFlags,
    ) {
        use std::sync::atomic::Ordering;
        let Some(file) = file.filter(|_| self.enabled.load(Ordering::Relaxed)) else {
            return reply.opened(FileHandle(fh), flags);
        };
        // Passthrough reads come from the backing file's own page cache; the
        // kernel fails them when KEEP_CACHE is asked for as well.
        let flags = flags - FopenFlags::FOPEN_KEEP_CACHE;
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = file.metadata() else {
            return reply.opened(FileHandle(fh), flags);
        };
        let identity = (meta.dev(), meta.ino());
        let mut backing = lock(&self.backing);
        match backing.get_mut(&ino) {
            Some((id, same, n)) if *same == identity => {
                *n += 1;
                lock(&self.handles).insert(fh, ino);
                return reply.opened_passthrough(FileHandle(fh), flags, id);
            }
            // The inode now stands for other bytes (a staged file that was
            // committed) while a handle on the old ones is open: the kernel
            // wants one backing file per inode, so serve this one ourselves.
            Some(_) => return reply.opened(FileHandle(fh), flags),
            None => {}
        }
        match reply.open_backing(&*file) {
            Ok(id) => {
                reply.opened_passthrough(FileHandle(fh), flags, &id);
                backing.insert(ino, (id, identity, 1));
                lock(&self.handles).insert(fh, ino);
            }
            Err(e) => {
                tracing::info!("passthrough unavailable ({e}); serving reads ourselves");
                self.enabled.store(false, Ordering::Relaxed);
                reply.opened(FileHandle(fh), flags);
            }
        }
    }

    pub(super) fn release(&self, fh: u64) {
        let Some(ino) = lock(&self.handles).remove(&fh) else {
            return;
        };
        let mut backing = lock(&self.backing);
        if let Some((_, _, n)) = backing.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                backing.remove(&ino);
            }
        }
    }
}
