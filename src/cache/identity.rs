//! What a verified blob's file was when its bytes were hashed.
//!
//! A blob is verified once, when it is moved into `blobs/`; hashing it at
//! every open would cost a full read. Instead its identity is recorded
//! beside it (`verified/sha256/<hex>`): device, inode, size, mtime and
//! ctime. An open compares the file it opened with the record; any
//! difference means the file was written, replaced or moved since, and its
//! bytes are hashed again before anything is served from it.
//!
//! The record is not a signature. A write keeps no identity intact (the
//! kernel sets ctime on every change, and nobody can set it back), so a
//! changed file is caught, unless the write falls in the same tick of the
//! kernel's coarse clock as the record; bytes that rot on the disk without
//! a write are not, which is what `regfs verify` (`Cache::check`) is for.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::digest::Digest;

/// The identity of a file, as `fstat` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    /// Seconds and nanoseconds.
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub(super) fn of(m: &Metadata) -> Identity {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub(super) fn ino(&self) -> u64 {
        self.ino
    }

    pub(super) fn to_json(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }

    pub(super) fn from_json(bytes: &[u8]) -> Option<Identity> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The sha256 of an open file's whole content, read by position (the
/// file's offset is left alone: it may be served afterwards).
pub(super) fn digest_of(f: &File) -> io::Result<Digest> {
    struct At<'a> {
        f: &'a File,
        pos: u64,
    }
    impl Read for At<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.f.read_at(buf, self.pos)?;
            self.pos += n as u64;
            Ok(n)
        }
    }
    Digest::of_reader(At { f, pos: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;
    use std::time::{Duration, SystemTime};

    #[test]
    fn any_write_changes_the_identity_even_with_the_mtime_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let before = Identity::of(&std::fs::metadata(&p).unwrap());
        assert_eq!(Identity::from_json(&before.to_json()), Some(before));
        assert_eq!(before, Identity::of(&std::fs::metadata(&p).unwrap()));
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        // ctime has the clock's resolution: make sure it moves.
        std::thread::sleep(Duration::from_millis(20));
        let f = File::options().write(true).open(&p).unwrap();
        f.write_all_at(b"J", 0).unwrap();
        f.set_modified(mtime).unwrap();
        let after = Identity::of(&std::fs::metadata(&p).unwrap());
        assert_eq!(after.mtime, before.mtime);
        assert_eq!(after.size, before.size);
        assert_ne!(after, before, "only the ctime tells, and it does");
        f.set_modified(SystemTime::now()).unwrap();
        assert_ne!(Identity::of(&std::fs::metadata(&p).unwrap()), before);
    }

    #[test]
    fn digest_of_leaves_the_offset_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let mut f = File::open(&p).unwrap();
        f.seek(io::SeekFrom::Start(3)).unwrap();
        assert_eq!(digest_of(&f).unwrap(), Digest::of(b"hello world"));
        assert_eq!(f.stream_position().unwrap(), 3);
    }
}
