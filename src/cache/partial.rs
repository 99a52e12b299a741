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

    /// Takes `a..b` out.
    pub fn remove(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(x, y) in &self.0 {
            if y <= a || x >= b {
                out.push((x, y));
                continue;
            }
            if x < a {
                out.push((x, a));
            }
            if y > b {
                out.push((b, y));
            }
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

/// Chunk-by-chunk verification against a chunk-digest list: a chunk's bytes
/// count as ready for readers only once they matched its digest; a chunk
/// that does not match is reported, then dropped (`drop_chunk`: its range
/// is no longer held, so it is fetched again).
struct Chunks {
    size: u64,
    digests: Vec<Digest>,
    verified: Vec<bool>,
    /// Chunks hashed in memory as their bytes arrive in order from the
    /// chunk's start; a chunk filled any other way is hashed from disk.
    filling: std::collections::HashMap<usize, Verifier>,
}

/// A chunk that did not match its listed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadChunk {
    pub index: u64,
    pub offset: u64,
    pub end: u64,
    pub actual: Digest,
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
    chunks: Mutex<Option<Chunks>>,
    /// Held by a write from finding its gaps to recording them.
    writing: Mutex<()>,
    /// A chunk list is in use (`chunks` is `Some`; it never goes back).
    chunked: std::sync::atomic::AtomicBool,
    /// Moved into place or dropped: nothing more is saved.
    ended: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section leaves the value whole; a panic cannot tear it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a write did to the download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Bytes held now.
    pub held: u64,
    /// The whole blob is held and hashed: call `Cache::complete`.
    pub complete: bool,
    /// A chunk this write completed did not match its listed digest; its
    /// bytes were dropped.
    pub bad_chunk: Option<BadChunk>,
}

impl Partial {
    pub(super) fn open(dir: &Path, digest: &Digest, size: u64) -> Result<Partial, Error> {
        let hex = digest.hex();
        let mut path = dir.join(&hex);
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
            chunks: Mutex::new(None),
            writing: Mutex::new(()),
            chunked: std::sync::atomic::AtomicBool::new(false),
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
        // Writers take turns (so no two write the same gap), and the map
        // is locked only to find the gaps and to record them once written:
        // readers asking what is held never wait for the disk.
        let _turn = lock(&self.writing);
        let ended = || self.ended.load(std::sync::atomic::Ordering::Acquire);
        let not_written = |held: &RangeSet| Progress {
            held: held.len(),
            complete: false,
            bad_chunk: None,
        };
        let gaps: Vec<(u64, u64)> = {
            let held = lock(&self.held);
            if ended() {
                // Moved into the verified cache (or dropped): never written again.
                return Ok(not_written(&held));
            }
            let mut gaps = Vec::new();
            let mut at = offset;
            while let Some((a, b)) = held.first_gap(at, end) {
                gaps.push((a, b));
                at = b;
            }
            gaps
        };
        for &(a, b) in &gaps {
            let piece = &bytes[(a - offset) as usize..(b - offset) as usize];
            self.file.write_all_at(piece, a).map_err(err(&self.path))?;
        }
        let whole = gaps == [(offset, end)] && offset < end;
        {
            let mut held = lock(&self.held);
            if ended() {
                return Ok(not_written(&held));
            }
            // Only what this write wrote: a range dropped meanwhile (a chunk
            // that did not match) stays dropped.
            for &(a, b) in &gaps {
                held.insert(a, b);
            }
        }
        let bad_chunk = self.check_chunks(offset, bytes, whole)?;
        let fresh = (whole && bad_chunk.is_none()).then_some((offset, bytes));
        let mut progress = self.hash(fresh)?;
        progress.bad_chunk = bad_chunk;
        Ok(progress)
    }

    /// From now on, bytes are ready for readers only chunk by chunk, once
    /// each matched its digest in `digests` (the chunks of `chunk_size`
    /// bytes, in order). Ignored if a list is in use already, or if it does
    /// not have one digest per chunk.
    pub fn verify_chunks(&self, digests: Vec<Digest>, chunk_size: u64) -> bool {
        let mut c = lock(&self.chunks);
        if c.is_some() {
            return true;
        }
        if chunk_size == 0 || digests.len() as u64 != self.size.div_ceil(chunk_size) {
            return false;
        }
        *c = Some(Chunks {
            size: chunk_size,
            verified: vec![false; digests.len()],
            digests,
            filling: Default::default(),
        });
        self.chunked
            .store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// Whether reads are verified chunk by chunk.
    pub fn has_chunks(&self) -> bool {
        self.chunked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `a..b` may be read: held, and with a chunk list, every chunk
    /// it touches verified.
    pub fn ready(&self, a: u64, b: u64) -> bool {
        if !self.has_chunks() {
            return self.holds(a, b);
        }
        match &*lock(&self.chunks) {
            None => self.holds(a, b),
            Some(c) => a >= b || chunk_span(c.size, a, b).all(|i| c.verified[i]),
        }
    }

    /// Verifies, from disk, the chunks touching `a..b` that are held but
    /// not verified (held before the list was known, or by a download that
    /// resumed). A chunk that does not match is dropped.
    pub fn check_held_chunks(&self, a: u64, b: u64) -> Result<Option<BadChunk>, Error> {
        let span: Vec<usize> = match &*lock(&self.chunks) {
            None => return Ok(None),
            Some(c) => chunk_span(c.size, a, b.max(a + 1).min(self.size))
                .filter(|&i| !c.verified[i])
                .collect(),
        };
        let mut bad = None;
        for i in span {
            bad = bad.or(self.check_chunk(i)?);
        }
        Ok(bad)
    }

    /// After a write: feeds fresh bytes to the chunks filling in order, and
    /// verifies every chunk the write completed.
    fn check_chunks(
        &self,
        offset: u64,
        bytes: &[u8],
        fresh: bool,
    ) -> Result<Option<BadChunk>, Error> {
        if !self.has_chunks() {
            return Ok(None);
        }
        let end = offset + bytes.len() as u64;
        let span: Vec<usize> = {
            let mut guard = lock(&self.chunks);
            let Some(c) = guard.as_mut() else {
                return Ok(None);
            };
            let span: Vec<usize> = chunk_span(c.size, offset, end).collect();
            for &i in &span {
                let (cs, ce) = chunk_bounds(c.size, self.size, i);
                let (pa, pb) = (offset.max(cs), end.min(ce));
                let piece = &bytes[(pa - offset) as usize..(pb - offset) as usize];
                match c.filling.get_mut(&i) {
                    Some(v) if fresh && v.len() == pa - cs => v.update(piece),
                    Some(_) => {
                        c.filling.remove(&i);
                    }
                    None if fresh && pa == cs && !c.verified[i] => {
                        let mut v = Verifier::new(c.digests[i].clone());
                        v.update(piece);
                        c.filling.insert(i, v);
                    }
                    None => {}
                }
            }
            span
        };
        let mut bad = None;
        for i in span {
            bad = bad.or(self.check_chunk(i)?);
        }
        Ok(bad)
    }

    /// Verifies chunk `i` if it is wholly held and not verified yet: from
    /// the bytes hashed as they arrived, else from disk.
    fn check_chunk(&self, i: usize) -> Result<Option<BadChunk>, Error> {
        let (chunk, expected, in_memory) = {
            let mut guard = lock(&self.chunks);
            let Some(c) = guard.as_mut() else {
                return Ok(None);
            };
            let (cs, ce) = chunk_bounds(c.size, self.size, i);
            if c.verified[i] || !self.holds(cs, ce) {
                return Ok(None);
            }
            let in_memory = match c.filling.remove(&i) {
                Some(v) if v.len() == ce - cs => Some(v),
                _ => None,
            };
            ((cs, ce), c.digests[i].clone(), in_memory)
        };
        let (cs, ce) = chunk;
        let verdict = match in_memory {
            Some(v) => v.finish(),
            None => {
                let mut buf = vec![0u8; (ce - cs) as usize];
                self.file
                    .read_exact_at(&mut buf, cs)
                    .map_err(err(&self.path))?;
                let actual = Digest::of(&buf);
                if actual == expected {
                    Ok(())
                } else {
                    Err(actual)
                }
            }
        };
        let mut guard = lock(&self.chunks);
        let Some(c) = guard.as_mut() else {
            return Ok(None);
        };
        match verdict {
            Ok(()) => {
                c.verified[i] = true;
                Ok(None)
            }
            // Never readable (not verified); the caller gives it up with
            // `drop_chunk` once no new transfer can start for it.
            Err(actual) => Ok(Some(BadChunk {
                index: i as u64,
                offset: cs,
                end: ce,
                actual,
            })),
        }
    }

    /// Gives up a chunk that did not match: its range is no longer held
    /// (so it is fetched again and its bytes are overwritten then), and a
    /// prefix hash that went through it starts over.
    pub fn drop_chunk(&self, bad: &BadChunk) {
        lock(&self.held).remove(bad.offset, bad.end);
        let mut h = lock(&self.hasher);
        if h.hashed > bad.offset && h.verifier.is_some() {
            h.verifier = Some(Verifier::new(self.digest.clone()));
            h.hashed = 0;
        }
    }

    /// Gives up every chunk held (wholly or in part) but not verified: after
    /// a mismatch, what the same transfers wrote into chunks not complete
    /// yet is not trusted either (it is fetched again). Without a chunk
    /// list, nothing is dropped.
    pub fn drop_unverified_chunks(&self) {
        let dropped: Vec<(u64, u64)> = {
            let mut guard = lock(&self.chunks);
            let Some(c) = guard.as_mut() else {
                return;
            };
            c.filling.clear();
            let held = lock(&self.held);
            (0..c.verified.len())
                .filter(|&i| !c.verified[i])
                .map(|i| chunk_bounds(c.size, self.size, i))
                .filter(|&(a, b)| held.first_gap(a, b) != Some((a, b)))
                .collect()
        };
        let Some(first) = dropped.first().map(|&(a, _)| a) else {
            return;
        };
        {
            let mut held = lock(&self.held);
            for &(a, b) in &dropped {
                held.remove(a, b);
            }
        }
        let mut h = lock(&self.hasher);
        if h.hashed > first && h.verifier.is_some() {
            h.verifier = Some(Verifier::new(self.digest.clone()));
            h.hashed = 0;
        }
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
            bad_chunk: None,
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

/// The chunks of `size` bytes that `a..b` touches.
fn chunk_span(size: u64, a: u64, b: u64) -> std::ops::Range<usize> {
    if a >= b {
        return 0..0;
    }
    (a / size) as usize..b.div_ceil(size) as usize
}

/// Where chunk `i` starts and ends in a blob of `total` bytes.
fn chunk_bounds(size: u64, total: u64, i: usize) -> (u64, u64) {
    let start = i as u64 * size;
    (start, (start + size).min(total))
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
    fn removing_ranges_splits_what_it_cuts() {
        let mut s = set(&[(0, 10), (20, 30)]);
        s.remove(5, 25);
        assert_eq!(s.0, vec![(0, 5), (25, 30)]);
        s.remove(0, 100);
        assert!(s.is_empty());
    }

    /// 10 chunks of 1,000 bytes and a short last one.
    fn chunked() -> (Vec<u8>, Vec<Digest>) {
        let data: Vec<u8> = (0..10_500u32).map(|i| (i * 13 % 256) as u8).collect();
        let digests = data.chunks(1000).map(Digest::of).collect();
        (data, digests)
    }

    #[test]
    fn with_a_chunk_list_bytes_are_ready_only_in_verified_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (data, digests) = chunked();
        let p = Partial::open(dir.path(), &Digest::of(&data), data.len() as u64).unwrap();
        assert!(
            !p.verify_chunks(digests[1..].to_vec(), 1000),
            "one digest per chunk"
        );
        assert!(p.verify_chunks(digests.clone(), 1000));
        // Half a chunk is held but not ready.
        p.write(2000, &data[2000..2500]).unwrap();
        assert!(p.holds(2000, 2500) && !p.ready(2000, 2500));
        p.write(2500, &data[2500..3000]).unwrap();
        assert!(p.ready(2000, 3000) && !p.ready(2000, 3001));
        // Out of order within a chunk: hashed from disk when whole.
        p.write(10_200, &data[10_200..]).unwrap();
        p.write(10_000, &data[10_000..10_200]).unwrap();
        assert!(p.ready(10_000, 10_500));
        // Everything, in any order: the whole blob completes as before.
        p.write(0, &data[..2000]).unwrap();
        let last = p.write(3000, &data[3000..10_000]).unwrap();
        assert!(last.complete && last.bad_chunk.is_none());
        assert!(p.take_verifier().unwrap().finish().is_ok());
    }

    /// A download of `chunked()`'s blob, verified by its chunk list.
    fn by_chunks() -> (tempfile::TempDir, Vec<u8>, Partial) {
        let dir = tempfile::tempdir().unwrap();
        let (data, digests) = chunked();
        let p = Partial::open(dir.path(), &Digest::of(&data), data.len() as u64).unwrap();
        assert!(p.verify_chunks(digests, 1000));
        (dir, data, p)
    }

    #[test]
    fn a_chunk_that_does_not_match_is_dropped_and_fetched_again() {
        let (_dir, data, p) = by_chunks();
        let mut bad = data[..3000].to_vec();
        bad[1500] ^= 1;
        let w = p.write(0, &bad).unwrap();
        let b = w.bad_chunk.unwrap();
        assert_eq!(
            (b.index, b.offset, b.end),
            (1, 1000, 2000),
            "the corrupted chunk is named"
        );
        assert!(!p.ready(1000, 2000), "never ready");
        p.drop_chunk(&b);
        assert!(p.ready(0, 1000) && p.ready(2000, 3000));
        assert!(!p.holds(1000, 2000) && !p.ready(1000, 2000));
        // The right bytes, fetched again, are taken; the prefix hash
        // started over, so the whole blob still verifies.
        assert!(p
            .write(1000, &data[1000..2000])
            .unwrap()
            .bad_chunk
            .is_none());
        assert!(p.ready(0, 3000));
        assert!(p.write(3000, &data[3000..]).unwrap().complete);
        assert!(p.take_verifier().unwrap().finish().is_ok());
    }

    #[test]
    fn after_a_mismatch_chunks_not_verified_are_dropped_and_verified_ones_kept() {
        let (_dir, data, p) = by_chunks();
        // Chunk 0 verified; chunks 4 and 7 half written by the same transfers
        // (corrupt, but not complete so not found out yet).
        p.write(0, &data[..1000]).unwrap();
        let mut bad = data[4000..4500].to_vec();
        bad[10] ^= 1;
        p.write(4000, &bad).unwrap();
        p.write(7300, &data[7300..7600]).unwrap();
        p.drop_unverified_chunks();
        assert!(p.ready(0, 1000), "a verified chunk stays");
        assert!(!p.holds(4000, 4001) && !p.holds(7300, 7301));
        // Fetched again, the right bytes verify and the blob completes.
        assert!(p.write(1000, &data[1000..]).unwrap().complete);
        assert!(p.take_verifier().unwrap().finish().is_ok());
    }

    #[test]
    fn chunks_held_before_the_list_was_known_are_checked_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (data, digests) = chunked();
        let d = Digest::of(&data);
        {
            let p = Partial::open(dir.path(), &d, data.len() as u64).unwrap();
            let mut bad = data[..2000].to_vec();
            bad[10] ^= 1;
            p.write(0, &bad).unwrap();
            p.save();
        }
        let p = Partial::open(dir.path(), &d, data.len() as u64).unwrap();
        p.verify_chunks(digests, 1000);
        assert!(!p.ready(0, 10));
        let bad = p.check_held_chunks(0, 2000).unwrap().unwrap();
        assert_eq!(bad.index, 0);
        p.drop_chunk(&bad);
        assert!(p.ready(1000, 2000) && !p.holds(0, 1000));
    }

    #[test]
    fn a_write_past_the_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = Digest::of(b"abc");
        let p = Partial::open(dir.path(), &d, 3).unwrap();
        assert!(p.write(2, b"xy").is_err());
    }
}
