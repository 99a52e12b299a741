//! Downloads in progress: one scheme for every way a blob arrives.
//!
//! A partial blob is a sparse file of the blob's full size under
//! `partial/sha256/<hex>`, the byte ranges it holds (`<hex>.map`, so a
//! download resumes after a crash), and the verifier of the prefix hashed
//! so far. Bytes may arrive in any order (one stream, Range requests, a
//! mix): each write records its range, and the prefix is hashed as it grows,
//! in memory when the bytes written continue it, from disk when they filled
//! a gap. The partial carries its verifier: bytes become "verified" only in
//! `Cache::complete`, which renames the file into `blobs/` after the whole
//! blob matched its digest.
//!
//! The file is locked (`flock`) so mounts sharing the cache never write the
//! same file; a download that finds it locked writes a private file of its
//! own (`<hex>.<pid>`) instead of waiting on a process it cannot see.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::{err, Error};
use crate::digest::{Digest, Verifier};

/// Byte ranges held, as sorted, disjoint, non-adjacent half-open intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet(Vec::new())
    }

    /// Adds `a..b`, merging with what it touches.
    pub fn insert(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let (mut a, mut b) = (a, b);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(x, y) in &self.0 {
            if y < a {
                out.push((x, y));
            } else if x > b {
                if !placed {
                    out.push((a, b));
                    placed = true;
                }
                out.push((x, y));
            } else {
                a = a.min(x);
                b = b.max(y);
            }
        }
        if !placed {
            out.push((a, b));
        }
        self.0 = out;
    }

    /// Whether all of `a..b` is held.
    pub fn contains(&self, a: u64, b: u64) -> bool {
        if a >= b {
            return true;
        }
        self.0.iter().any(|&(x, y)| x <= a && b <= y)
    }

    /// Where the range held from `at` ends (`at` itself when `at` is not held).
    pub fn end_of_run(&self, at: u64) -> u64 {
        self.0
            .iter()
            .find(|&&(x, y)| x <= at && at < y)
            .map_or(at, |&(_, y)| y)
    }

    /// The first byte at or after `at` that is not held, and where that gap
    /// ends (`limit` when nothing is held after it). `None` when all of
    /// `at..limit` is held.
    pub fn first_gap(&self, at: u64, limit: u64) -> Option<(u64, u64)> {
        let mut cur = at;
        for &(x, y) in &self.0 {
            if y <= cur {
                continue;
            }
            if x > cur {
                return (cur < limit).then_some((cur, x.min(limit)));
            }
            cur = y;
        }
        (cur < limit).then_some((cur, limit))
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).unwrap_or_default()
    }

    fn from_json(bytes: &[u8], size: u64) -> RangeSet {
        let pairs: Vec<(u64, u64)> = serde_json::from_slice(bytes).unwrap_or_default();
        let mut s = RangeSet::new();
        for (a, b) in pairs {
            s.insert(a.min(size), b.min(size));
        }
        s
    }
}

struct Hasher {
    verifier: Option<Verifier>,
    /// Bytes `0..hashed` went through the verifier.
    hashed: u64,
}

/// A blob being downloaded (see the module doc). Shared by every task that
/// writes into it; all methods take `&self` and may block on disk I/O (call
/// them from blocking threads).
pub struct Partial {
    digest: Digest,
    size: u64,
    file: File,
    path: PathBuf,
    map_path: PathBuf,
    held: Mutex<RangeSet>,
    hasher: Mutex<Hasher>,
    /// Moved into place or dropped: nothing more is saved.
    ended: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves the value whole; a panic cannot tear it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a write did to the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes held now.
    pub held: u64,
    /// The whole blob is held and hashed: call `Cache::complete`.
    pub complete: bool,
}

impl Partial {
    pub(super) fn open(dir: &Path, digest: &Digest, size: u64) -> Result<Partial, Error> {
        let hex = digest.hex();
        let mut path = dir.join(hex);
        let open = |p: &Path, truncate: bool| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(truncate)
                .open(p)
                .map_err(err(p))
        };
        let mut file = open(&path, false)?;
        // SAFETY: flock on an open descriptor has no memory effects.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            path = dir.join(format!("{hex}.{}", std::process::id()));
            file = open(&path, true)?;
        }
        let mut map_path = path.clone().into_os_string();
        map_path.push(".map");
        let map_path = PathBuf::from(map_path);
        let len = file.metadata().map_err(err(&path))?.len();
        let held = if len == size {
            fs::read(&map_path)
                .map(|b| RangeSet::from_json(&b, size))
                .unwrap_or_default()
        } else {
            // A download of an older regfs wrote the blob in order, with no
            // map: what is there is a prefix.
            let mut s = RangeSet::new();
            if len < size && !map_path.exists() {
                s.insert(0, len);
            }
            file.set_len(size).map_err(err(&path))?;
            s
        };
        Ok(Partial {
            digest: digest.clone(),
            size,
            file,
            path,
            map_path,
            held: Mutex::new(held),
            hasher: Mutex::new(Hasher {
                verifier: Some(Verifier::new(digest.clone())),
                hashed: 0,
            }),
            ended: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ranges held now.
    pub fn held(&self) -> RangeSet {
        lock(&self.held).clone()
    }

    /// Whether all of `a..b` is held.
    pub fn holds(&self, a: u64, b: u64) -> bool {
        lock(&self.held).contains(a, b)
    }

    /// Writes `bytes` at `offset`, records them, and hashes what now
    /// continues the hashed prefix.
    pub fn write(&self, offset: u64, bytes: &[u8]) -> Result<Progress, Error> {
        let end = offset.saturating_add(bytes.len() as u64);
        if end > self.size {
            return Err(err(&self.path)(io::Error::other(format!(
                "write past the blob's {} bytes",
                self.size
            ))));
        }
        // Only bytes not held yet are written: what was hashed is never
        // overwritten, so the verified file is exactly what was hashed.
        let whole = {
            let mut held = lock(&self.held);
            if self.ended.load(std::sync::atomic::Ordering::Acquire) {
                // Moved into the verified cache (or dropped): never written again.
                return Ok(Progress {
                    held: held.len(),
                    complete: false,
                });
            }
            let mut at = offset;
            let mut whole = true;
            while let Some((a, b)) = held.first_gap(at, end) {
                whole &= a == offset && b == end;
                let piece = &bytes[(a - offset) as usize..(b - offset) as usize];
                self.file.write_all_at(piece, a).map_err(err(&self.path))?;
                at = b;
            }
            if at == offset && offset < end {
                whole = false; // all of it was held already
            }
            held.insert(offset, end);
            whole
        };
        self.hash(whole.then_some((offset, bytes)))
    }

    /// Hashes the held prefix past what was hashed (after a resume).
    pub fn catch_up(&self) -> Result<Progress, Error> {
        self.hash(None)
    }

    fn hash(&self, fresh: Option<(u64, &[u8])>) -> Result<Progress, Error> {
        let mut guard = lock(&self.hasher);
        let h = &mut *guard;
        if let (Some((off, bytes)), Some(v)) = (fresh, h.verifier.as_mut()) {
            if off == h.hashed {
                v.update(bytes);
                h.hashed += bytes.len() as u64;
            }
        }
        // Bytes that arrived earlier, out of order, now continue the prefix:
        // hash them from disk.
        let mut buf = Vec::new();
        loop {
            let run_end = lock(&self.held).end_of_run(h.hashed);
            if run_end <= h.hashed {
                break;
            }
            let n = (run_end - h.hashed).min(4 << 20) as usize;
            buf.resize(n, 0);
            self.file
                .read_exact_at(&mut buf, h.hashed)
                .map_err(err(&self.path))?;
            if let Some(v) = h.verifier.as_mut() {
                v.update(&buf);
            }
            h.hashed += n as u64;
        }
        let held = lock(&self.held).len();
        Ok(Progress {
            held,
            complete: h.hashed == self.size && h.verifier.is_some(),
        })
    }

    /// Bytes `offset..offset+len` (held: check first), unverified.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let len = (len as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(err(&self.path))?;
        Ok(buf)
    }

    /// Saves the map of held ranges (so a later download resumes).
    pub fn save(&self) {
        let held = lock(&self.held);
        if self.ended.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let bytes = held.to_json();
        if let Err(e) = fs::write(&self.map_path, bytes) {
            tracing::debug!(path = %self.map_path.display(), "cannot save download map: {e}");
        }
    }

    /// Takes the verifier out if the whole blob was hashed.
    pub(super) fn take_verifier(&self) -> Option<Verifier> {
        let mut h = lock(&self.hasher);
        if h.hashed == self.size {
            h.verifier.take()
        } else {
            None
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (its identity is recorded once it is verified).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Ends the download: its map goes, and its file too unless it was
    /// moved into place. Nothing is written or saved after this.
    pub(super) fn remove(&self, keep_file: bool) {
        // Under the lock `write` and `save` take.
        let _held = lock(&self.held);
        self.ended.store(true, std::sync::atomic::Ordering::Release);
        if !keep_file {
            let _ = fs::remove_file(&self.path);
        }
        let _ = fs::remove_file(&self.map_path);
    }
}

/// How much of a download in progress is on disk (for `regfs status`).
pub(super) fn held_bytes(path: &Path) -> Option<u64> {
    let mut map = path.as_os_str().to_owned();
    map.push(".map");
    let meta = fs::metadata(path).ok()?;
    match fs::read(&map) {
        Ok(b) => Some(RangeSet::from_json(&b, meta.len()).len()),
        Err(_) => {
            use std::os::unix::fs::MetadataExt;
            Some(meta.len().min(meta.blocks() * 512))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in v {
            s.insert(a, b);
        }
        s
    }

    #[test]
    fn ranges_merge_when_they_touch_or_overlap() {
        assert_eq!(set(&[(0, 5), (5, 9)]).0, vec![(0, 9)]);
        assert_eq!(set(&[(10, 20), (0, 5), (4, 12)]).0, vec![(0, 20)]);
        assert_eq!(set(&[(10, 20), (0, 5)]).0, vec![(0, 5), (10, 20)]);
        assert_eq!(
            set(&[(0, 5), (30, 40), (10, 20)]).0,
            vec![(0, 5), (10, 20), (30, 40)]
        );
        assert_eq!(set(&[(3, 3)]).0, vec![]);
    }

    #[test]
    fn gaps_runs_and_containment() {
        let s = set(&[(0, 5), (10, 20)]);
        assert!(s.contains(0, 5) && s.contains(12, 20) && s.contains(7, 7));
        assert!(!s.contains(4, 11));
        assert_eq!(s.end_of_run(0), 5);
        assert_eq!(s.end_of_run(5), 5);
        assert_eq!(s.end_of_run(15), 20);
        assert_eq!(s.first_gap(0, 30), Some((5, 10)));
        assert_eq!(s.first_gap(10, 30), Some((20, 30)));
        assert_eq!(s.first_gap(10, 20), None);
        assert_eq!(s.first_gap(2, 4), None);
        assert_eq!(s.len(), 15);
        assert_eq!(
            RangeSet::from_json(&s.to_json(), 12).0,
            vec![(0, 5), (10, 12)]
        );
    }

    #[test]
    fn out_of_order_writes_hash_in_order_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let d = Digest::of(&data);
        let p = Partial::open(dir.path(), &d, data.len() as u64).unwrap();
        let w = |a: usize, b: usize| p.write(a as u64, &data[a..b]).unwrap();
        assert!(!w(6000, 10_000).complete);
        assert!(!w(0, 3000).complete);
        let last = w(3000, 6000);
        assert_eq!(last.held, 10_000);
        assert!(last.complete);
        assert!(p.take_verifier().unwrap().finish().is_ok());
    }

    #[test]
    fn a_resumed_partial_knows_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![9u8; 4096];
        let d = Digest::of(&data);
        {
            let p = Partial::open(dir.path(), &d, 4096).unwrap();
            p.write(1000, &data[1000..2000]).unwrap();
            p.save();
        }
        let p = Partial::open(dir.path(), &d, 4096).unwrap();
        assert_eq!(p.held().0, vec![(1000, 2000)]);
        p.write(0, &data[..1000]).unwrap();
        assert!(p.write(2000, &data[2000..]).unwrap().complete);
    }

    #[test]
    fn held_bytes_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello world".to_vec();
        let d = Digest::of(&data);
        let p = Partial::open(dir.path(), &d, data.len() as u64).unwrap();
        p.write(0, b"hello").unwrap();
        // A second answer for the same bytes, different (a lying registry):
        // the held ones stay, the new part is taken.
        assert!(p.write(0, b"HELLO world").unwrap().complete);
        assert_eq!(p.read_at(0, 11).unwrap(), data);
        assert!(p.take_verifier().unwrap().finish().is_ok());
    }

    #[test]
    fn a_write_past_the_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"abc");
        let p = Partial::open(dir.path(), &d, 3).unwrap();
        assert!(p.write(2, b"xy").is_err());
    }
}
