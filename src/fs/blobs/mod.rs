//! The one blob engine: every byte of every blob the filesystem serves
//! comes through here.
//!
//! `Blobs` owns the downloads in flight, one per digest however many
//! readers wait (strict opens, lazy reads, unpacking, copy-up). A download
//! (`Download`) is a cache `Partial` (a sparse file that records the ranges
//! it holds and hashes its prefix as it grows) filled by *segments*: ranged
//! GETs, each in a task of its own, resumed with Range after a broken
//! transfer, behind one retry loop. Which segments to start is decided by a
//! pure planner (`plan`): one stream from a sequential reader's position,
//! aligned chunks for a random reader, the rest of the blob for a reader
//! that needs it whole (one stream, or parallel chunks with
//! `--parallel-ranges`). Bytes become verified only when the cache moves the
//! completed partial into place after its digest matched.
//!
//! Wrong bytes are dropped and fail the reads waiting for them, unless the
//! source says another place has the right ones (`Source::wrong_bytes`: a
//! mirror sent them, the registry itself serves the blob now): then the
//! reads start over (`Error::FromMirror`, `REFETCHES`), except a lazy read
//! at the end-of-file gate, whose reader was given bytes before the check.
//!
//! Readers only wait: dropping a reader's future (an interrupted request)
//! never stops a download, which goes on and fills the cache. A wait ends
//! with an error when the download failed, or when nothing arrived for
//! `--timeout`.

mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::source::Source;
use super::{lock, Error, Verify};
use crate::cache::{Cache, Incomplete, Partial};
use crate::oci::{ChunkList, CHUNK_SIZE};
use crate::registry::{self, backoff};
use crate::tree::view::Desc;
pub use plan::{plan, Want, CHUNK};

/// Blobs at least this large are read lazily by Range (smaller ones whole).
pub const RANGE_THRESHOLD: u64 = 16 << 20;
/// Larger than any real blob: a descriptor claiming more is hostile (and
/// refused where descriptors are parsed; this is a backstop).
pub const MAX_BLOB: u64 = crate::oci::MAX_BLOB_SIZE;
/// Segments in flight per blob.
const MAX_SEGMENTS: usize = 8;
/// Bytes gathered before a blocking thread writes and hashes them (a few
/// batches in flight: memory stays flat whatever the size).
const WRITE_BATCH: usize = 1 << 20;
/// Bytes at the start of each transfer that are handed on piece by piece.
const FIRST_BYTES: u64 = 256 << 10;
/// A stream that delivers less than this (bytes per second, measured over
/// `RATE_WINDOW`) is joined by parallel ranges: on loopback or a fast link
/// one stream is fastest (it is hashed as it arrives); a distant registry
/// or a capped connection gives far less per connection.
const SLOW_STREAM: f64 = 200e6;
const RATE_WINDOW: Duration = Duration::from_millis(300);
/// How many times a read is tried again after wrong bytes from a mirror
/// (`Error::FromMirror`): the source serves the blob from the registry
/// itself then, so once is enough unless the registry is wrong too.
const REFETCHES: usize = 3;
/// Consecutive attempts of a segment that bring no byte before it gives up
/// (each attempt's request is itself retried by the registry client).
const STALLS: u32 = 2;

/// How the engine fetches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub verify: Verify,
    /// Ranged requests that may fetch a whole blob at once: `Some(1)`, one
    /// stream; `Some(n)`, up to n chunks from the start; `None`, one stream
    /// and up to `MAX_SEGMENTS` chunks once it proves slow.
    pub parallel_ranges: Option<usize>,
    /// A wait ends with an error after this long without a byte arriving.
    pub timeout: Duration,
}

pub struct Blobs {
    source: Arc<dyn Source>,
    cache: Arc<Cache>,
    settings: Settings,
    live: Mutex<HashMap<crate::digest::Digest, Arc<Download>>>,
    /// Layers whose chunk list was refused (reads gated at end-of-file).
    bad_lists: Mutex<std::collections::HashSet<crate::digest::Digest>>,
    /// Names the downloads (`Read::Unverified::download`).
    next_download: AtomicU64,
    /// Downloads whose bytes did not match the digest.
    failed: Arc<Mutex<std::collections::HashSet<u64>>>,
}

impl Blobs {
    pub fn new(source: Arc<dyn Source>, cache: Arc<Cache>, settings: Settings) -> Blobs {
        Blobs {
            source,
            cache,
            settings,
            live: Mutex::new(HashMap::new()),
            bad_lists: Mutex::new(Default::default()),
            next_download: AtomicU64::new(1),
            failed: Default::default(),
        }
    }

    /// Whether reads of `desc` may be served before the whole blob matched
    /// (`--verify lazy`, a registry, a large blob).
    pub fn is_lazy(&self, desc: &Desc) -> bool {
        self.settings.verify == Verify::Lazy
            && self.source.is_remote()
            && desc.size >= RANGE_THRESHOLD
    }

    /// The verified blob in the cache, downloading what is missing first.
    pub async fn fetch(&self, repo: &str, desc: &Desc) -> Result<PathBuf, Error> {
        let mut tries = 0;
        loop {
            match self.fetch_once(repo, desc).await {
                Err(e) if e.is_from_mirror() && tries < REFETCHES => tries += 1,
                r => return r,
            }
        }
    }

    async fn fetch_once(&self, repo: &str, desc: &Desc) -> Result<PathBuf, Error> {
        if let Some(p) = self.cached(&desc.digest).await {
            return Ok(p);
        }
        match self.join(repo, desc)? {
            Joined::Cached(p) => Ok(p),
            Joined::Live(dl) => dl.wait_whole().await,
        }
    }

    /// Bytes `offset..offset+size` of a lazily read blob, possibly before
    /// the whole blob is verified; the read that reaches `file_end` (the
    /// end of the file being read: the blob's, or a tar member's) returns
    /// only once it is. `sequential`: the reader continues where it left
    /// off, so one stream serves it best.
    pub async fn read(
        &self,
        repo: &str,
        desc: &Desc,
        offset: u64,
        size: u32,
        sequential: bool,
        file_end: u64,
    ) -> Result<Read, Error> {
        let mut tries = 0;
        loop {
            match self
                .read_once(repo, desc, offset, size, sequential, file_end)
                .await
            {
                // A chunk is dropped before any of it is returned. A whole
                // blob that did not match at the end-of-file gate is not
                // tried again: bytes before the end were returned unverified,
                // so the reader must see the failure (the next read gets
                // the blob from the registry itself).
                Err(e) if e.is_from_mirror() && !e.is_mismatch() && tries < REFETCHES => tries += 1,
                r => return r,
            }
        }
    }

    async fn read_once(
        &self,
        repo: &str,
        desc: &Desc,
        offset: u64,
        size: u32,
        sequential: bool,
        file_end: u64,
    ) -> Result<Read, Error> {
        if let Some(p) = self.cached(&desc.digest).await {
            return Ok(Read::Verified(p));
        }
        let dl = match self.join(repo, desc)? {
            Joined::Cached(p) => return Ok(Read::Verified(p)),
            Joined::Live(dl) => dl,
        };
        let end = offset.saturating_add(size as u64).min(desc.size);
        // With a chunk list every chunk is verified before it is returned,
        // so the end of the blob needs no gate of its own.
        let chunked = self.chunk_list(repo, desc, &dl).await?;
        if end >= file_end.min(desc.size) && !chunked {
            return Ok(Read::Verified(dl.wait_whole().await?));
        }
        let want = if sequential {
            Want::Stream(offset, end)
        } else {
            Want::Chunks(offset, end)
        };
        dl.wait(want).await
    }

    /// Whether `download` (of a `Read::Unverified`) failed verification:
    /// the bytes it gave out may be wrong.
    pub fn failed(&self, download: u64) -> bool {
        lock(&self.failed).contains(&download)
    }

    /// How lazy reads of `desc` are verified: `strict` (not lazy: the whole
    /// blob before any byte), `chunks` (each chunk against the layer's
    /// chunk-digest list) or `eof` (at end-of-file only).
    pub fn verify_mode(&self, desc: &Desc) -> &'static str {
        if !self.is_lazy(desc) {
            "strict"
        } else if desc.chunk_list.is_some() && !lock(&self.bad_lists).contains(&desc.digest) {
            "chunks"
        } else {
            "eof"
        }
    }

    /// Puts the layer's chunk-digest list (a small blob, fetched and
    /// verified whole like any other) to use for `dl`; whether reads of it
    /// are verified chunk by chunk. A list that disagrees with the layer is
    /// not used (logged once): reads are then gated at end-of-file.
    async fn chunk_list(&self, repo: &str, desc: &Desc, dl: &Download) -> Result<bool, Error> {
        let Some(list) = desc.chunk_list.as_deref() else {
            return Ok(false);
        };
        if dl.partial.has_chunks() {
            return Ok(true);
        }
        if lock(&self.bad_lists).contains(&desc.digest) {
            return Ok(false);
        }
        // About 76 bytes a chunk: a list much larger is not a list.
        let most = desc.size.div_ceil(CHUNK_SIZE) * 80 + 4096;
        let parsed = if list.size > most {
            Err(format!(
                "{} bytes, more than a list of this layer needs",
                list.size
            ))
        } else {
            let path = self.fetch(repo, list).await?;
            let bytes = tokio::fs::read(&path).await.map_err(|source| Error::Io {
                what: format!("reading chunk list {}", list.digest),
                source,
            })?;
            ChunkList::parse(&bytes, &desc.digest, desc.size)
        };
        match parsed {
            Ok(l) => Ok(dl.partial.verify_chunks(l.chunks, CHUNK_SIZE)),
            Err(why) => {
                if lock(&self.bad_lists).insert(desc.digest.clone()) {
                    tracing::warn!(layer = %desc.digest, list = %list.digest,
                        "chunk list not used ({why}); lazy reads are verified at end-of-file");
                }
                Ok(false)
            }
        }
    }

    /// The verified blob in the cache, checked off the async threads (a file
    /// changed since it was verified is hashed again).
    async fn cached(&self, d: &crate::digest::Digest) -> Option<PathBuf> {
        // A lazy read of a blob not cached yet (every read of it, until it
        // is): one stat says so, without a trip to a blocking thread.
        self.cache.has_blob_file(d)?;
        let (cache, d) = (self.cache.clone(), d.clone());
        tokio::task::spawn_blocking(move || cache.blob(&d))
            .await
            .ok()
            .flatten()
    }

    /// The verified blob, or the download of `desc`, joined or started.
    fn join(&self, repo: &str, desc: &Desc) -> Result<Joined, Error> {
        if desc.size > MAX_BLOB {
            return Err(Error::Blob {
                digest: desc.digest.clone(),
                reason: format!(
                    "descriptor claims {} bytes, more than regfs believes of any blob",
                    desc.size
                ),
            });
        }
        let mut live = lock(&self.live);
        // Checked under the lock: a download that just finished has moved
        // its file into the cache before it counts as ended. (Only whether
        // the file is there: it is checked when it is opened.)
        if let Some(p) = self.cache.has_blob_file(&desc.digest) {
            return Ok(Joined::Cached(p));
        }
        // Downloads that ended hold a file each: forget them.
        live.retain(|_, d| !d.is_dead());
        if let Some(d) = live.get(&desc.digest) {
            return Ok(Joined::Live(d.clone()));
        }
        let partial = self.cache.partial(&desc.digest, desc.size)?;
        let dl = Arc::new(Download {
            id: self.next_download.fetch_add(1, Ordering::Relaxed),
            failed: self.failed.clone(),
            desc: desc.clone(),
            repo: repo.to_string(),
            source: self.source.clone(),
            cache: self.cache.clone(),
            partial: Arc::new(partial),
            settings: self.settings.clone(),
            state: Mutex::new(State {
                segments: Vec::new(),
                outcome: None,
                progress_at: Instant::now(),
                next_id: 0,
                attempt: 0,
                parallel: false,
                rate_from: None,
                waited: Duration::ZERO,
            }),
            gate: std::sync::RwLock::new(()),
            changed: Notify::new(),
            parts: Mutex::new(Vec::new()),
            next_part: AtomicU64::new(0),
        });
        live.insert(desc.digest.clone(), dl.clone());
        Ok(Joined::Live(dl))
    }
}

enum Joined {
    Cached(PathBuf),
    Live(Arc<Download>),
}

/// Where a lazy read's bytes are.
pub enum Read {
    /// In the verified cache (read it from this file).
    Verified(PathBuf),
    /// Not verified yet: the bytes themselves, and the download they are
    /// of. If that download fails verification (`Blobs::failed`), a reader
    /// who was given them must not succeed with bytes of another.
    Unverified { bytes: Bytes, download: u64 },
}

/// One active segment: bytes `next..end` are still to come.
#[derive(Debug, Clone, Copy)]
struct Segment {
    id: u64,
    next: u64,
    end: u64,
}

struct State {
    segments: Vec<Segment>,
    /// `Some` once the download ended: the verified file, or why it failed.
    /// A failure that is not a mismatch is cleared by the next demand,
    /// which resumes from the bytes held.
    outcome: Option<Result<PathBuf, Arc<Error>>>,
    /// When a byte last arrived (or the download was last asked for).
    progress_at: Instant,
    next_id: u64,
    /// Counts the attempts that ended in failure: a segment of an earlier
    /// attempt stops at its next piece, and its failure no longer counts
    /// (its bytes may be what made the attempt fail).
    attempt: u64,
    /// A whole-blob fetch by parallel chunks (chosen, or the stream was slow).
    parallel: bool,
    /// Since when, and from how many bytes held, the stream's rate is measured.
    rate_from: Option<(Instant, u64, Duration)>,
    /// How long transfers waited for the disk writer (a local bottleneck:
    /// more connections would not help).
    waited: Duration,
}

struct Download {
    id: u64,
    /// `Blobs::failed`.
    failed: Arc<Mutex<std::collections::HashSet<u64>>>,
    desc: Desc,
    repo: String,
    source: Arc<dyn Source>,
    cache: Arc<Cache>,
    partial: Arc<Partial>,
    settings: Settings,
    state: Mutex<State>,
    /// Held (shared) by each write from the staleness check to the bytes on
    /// disk, and (exclusive) while an attempt ends on a mismatch: no byte of
    /// an ended attempt reaches the file after the attempt's unverified
    /// chunks were dropped.
    gate: std::sync::RwLock<()>,
    /// A segment or the download ended, or an attempt failed.
    changed: Notify,
    /// Readers of part of the blob, each with the range it waits for:
    /// woken by `advanced` once that range is held, not at every piece (a
    /// `cat` has dozens of reads in flight ahead of the stream).
    parts: Mutex<Vec<Part>>,
    next_part: AtomicU64,
}

/// A reader waiting for bytes `a..b`.
struct Part {
    id: u64,
    a: u64,
    b: u64,
    wake: Arc<Notify>,
}

/// Takes a reader off `Download::parts` when its wait ends (or is dropped:
/// an interrupted request).
struct PartWait<'a> {
    download: &'a Download,
    id: u64,
    wake: Arc<Notify>,
}

impl Drop for PartWait<'_> {
    fn drop(&mut self) {
        lock(&self.download.parts).retain(|p| p.id != self.id);
    }
}

/// A segment's failure, and whether it ever received a byte.
struct Broken {
    error: Error,
    progressed: bool,
}

impl Download {
    /// Verified, or its bytes were dropped: a new download must start over.
    fn is_dead(&self) -> bool {
        match &lock(&self.state).outcome {
            Some(Ok(_)) => true,
            Some(Err(e)) => e.is_mismatch(),
            None => false,
        }
    }

    async fn wait_whole(self: &Arc<Self>) -> Result<PathBuf, Error> {
        match self.wait(Want::Whole).await? {
            Read::Verified(p) => Ok(p),
            // `wait` answers `Want::Whole` only with the verified file.
            Read::Unverified { .. } => Err(Error::Blob {
                digest: self.desc.digest.clone(),
                reason: "not verified".into(),
            }),
        }
    }

    /// Starts what `want` needs and waits until its bytes are held (for
    /// `Whole`: verified), the download fails, or nothing arrives for
    /// `--timeout`.
    async fn wait(self: &Arc<Self>, want: Want) -> Result<Read, Error> {
        {
            let mut st = lock(&self.state);
            if matches!(&st.outcome, Some(Err(e)) if !e.is_mismatch()) {
                // A new demand resumes a download that broke off.
                st.outcome = None;
            }
            st.progress_at = Instant::now();
        }
        self.finish_if_held().await;
        let (a, b) = want.range(self.desc.size);
        // A reader of a part wakes when its bytes are held (`parts`); a
        // whole blob's waiter when a segment ends or the download does
        // (`changed`), and every `RATE_WINDOW` to plan again (a slow stream
        // is joined by ranges). Planning again is needed only then.
        let whole = want == Want::Whole;
        let part = (!whole).then(|| {
            let wake = Arc::new(Notify::new());
            let id = self.next_part.fetch_add(1, Ordering::Relaxed);
            lock(&self.parts).push(Part {
                id,
                a,
                b,
                wake: wake.clone(),
            });
            PartWait {
                download: self,
                id,
                wake,
            }
        });
        let tick = if whole {
            RATE_WINDOW.min(self.settings.timeout)
        } else {
            self.settings.timeout
        };
        let mut replan = true;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // (A wake-up sent since the last wait is kept as a permit.)
            let arrived = async {
                match &part {
                    Some(p) => p.wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(arrived);
            match lock(&self.state).outcome.clone() {
                Some(Ok(p)) => return Ok(Read::Verified(p)),
                Some(Err(e)) => return Err(Error::Shared(e)),
                None => {}
            }
            if want != Want::Whole && self.partial.has_chunks() && self.partial.holds(a, b) {
                // Held before the chunk list was known: checked from disk.
                let attempt = lock(&self.state).attempt;
                let p = self.partial.clone();
                let bad = tokio::task::spawn_blocking(move || p.check_held_chunks(a, b))
                    .await
                    .map_err(|e| Error::Io {
                        what: "checking chunks".into(),
                        source: std::io::Error::other(e),
                    })??;
                if let Some(bad) = bad {
                    return Err(self.give_up_chunk(bad, attempt));
                }
            }
            if want != Want::Whole && self.partial.ready(a, b) {
                let p = self.partial.clone();
                let bytes = tokio::task::spawn_blocking(move || p.read_at(a, (b - a) as usize))
                    .await
                    .map_err(|e| Error::Io {
                        what: "reading a download".into(),
                        source: std::io::Error::other(e),
                    })??;
                return Ok(Read::Unverified {
                    bytes: Bytes::from(bytes),
                    download: self.id,
                });
            }
            if replan {
                self.start_segments(want);
            }
            replan = tokio::select! {
                _ = &mut changed => true,
                _ = &mut arrived, if !whole => false,
                _ = tokio::time::sleep(tick) => {
                    let idle = lock(&self.state).progress_at.elapsed();
                    if idle >= self.settings.timeout {
                        return Err(Error::Stalled {
                            digest: self.desc.digest.clone(),
                            after: idle,
                        });
                    }
                    true
                }
            };
        }
    }

    /// A resumed download may already hold everything: hash and finish it.
    async fn finish_if_held(self: &Arc<Self>) {
        if !self.partial.holds(0, self.desc.size) || lock(&self.state).outcome.is_some() {
            return;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || match me.partial.catch_up() {
            Ok(p) if p.complete => me.complete(),
            Ok(_) => {}
            Err(e) => me.end(Err(e.into())),
        })
        .await;
    }

    /// A chunk did not match its listed digest: the attempt ends (so no
    /// transfer starts for the chunk while the registry may still send
    /// wrong bytes, and no segment of the attempt writes again), then the
    /// chunk is dropped with every other chunk not verified yet (the same
    /// transfers wrote them), to be fetched again by the next demand. Its
    /// waiters get EIO. `attempt`: the attempt whose bytes did not match;
    /// if it ended already, the chunk was dropped with it and nothing more
    /// is done. Never called with the gate held.
    fn give_up_chunk(&self, bad: crate::cache::BadChunk, attempt: u64) -> Error {
        tracing::error!(digest = %self.desc.digest, chunk = bad.index, actual = %bad.actual,
            "chunk does not match the chunk list; dropped");
        let mut e = Error::ChunkMismatch {
            digest: self.desc.digest.clone(),
            index: bad.index,
            offset: bad.offset,
            actual: bad.actual.clone(),
        };
        if self.source.wrong_bytes(&self.desc.digest) {
            e = Error::FromMirror(Box::new(e));
        }
        let e = Arc::new(e);
        {
            let _writes = self
                .gate
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Dropped before the attempt ends: a demand after the failure
            // (which starts the next attempt) never sees the bytes held.
            let current = {
                let st = lock(&self.state);
                st.outcome.is_none() && st.attempt == attempt
            };
            if current {
                self.partial.drop_chunk(&bad);
                self.partial.drop_unverified_chunks();
                self.set_outcome(Some(attempt), Err(e.clone()));
            }
        }
        self.changed.notify_waiters();
        Error::Shared(e)
    }

    /// Starts the segments the planner asks for.
    fn start_segments(self: &Arc<Self>, want: Want) {
        // Verified chunk by chunk: a reader needs the whole chunks around
        // its bytes.
        let want = if self.partial.has_chunks() {
            want.widened(self.desc.size)
        } else {
            want
        };
        let mut st = lock(&self.state);
        if st.outcome.is_some() {
            return;
        }
        let active: Vec<(u64, u64)> = st.segments.iter().map(|s| (s.next, s.end)).collect();
        let held = self.partial.held();
        let (whole_by_chunks, limit) = self.parallelism(&mut st, want, held.len());
        let room = limit.saturating_sub(active.len());
        for (a, b) in plan(&held, &active, want, self.desc.size, whole_by_chunks, room) {
            let id = st.next_id;
            st.next_id += 1;
            st.segments.push(Segment {
                id,
                next: a,
                end: b,
            });
            let me = self.clone();
            let attempt = st.attempt;
            tokio::spawn(async move { me.run_segment(id, attempt, a, b).await });
        }
    }

    /// One segment, resumed after each broken transfer while it makes
    /// progress.
    /// Whether a whole blob is fetched by parallel chunks, and how many
    /// segments may be in flight. Unless `--parallel-ranges` says, a whole
    /// blob starts as one stream and turns to chunks (up to `MAX_SEGMENTS`)
    /// when the stream delivers less than `SLOW_STREAM` over `RATE_WINDOW`.
    fn parallelism(&self, st: &mut State, want: Want, held: u64) -> (bool, usize) {
        if !self.source.is_remote() {
            return (false, MAX_SEGMENTS);
        }
        match self.settings.parallel_ranges {
            Some(1) => return (false, MAX_SEGMENTS),
            Some(n) => return (true, n.min(MAX_SEGMENTS * 8)),
            None => {}
        }
        if want == Want::Whole && !st.parallel {
            let now = Instant::now();
            let waited = st.waited;
            let (t0, h0, w0) = *st.rate_from.get_or_insert((now, held, waited));
            let spent = now.duration_since(t0);
            if spent >= RATE_WINDOW {
                let rate = held.saturating_sub(h0) as f64 / spent.as_secs_f64();
                let left = self.desc.size.saturating_sub(held);
                // Slow because of us (hashing and writing could not keep
                // up: the machine is busy), not the link: stay one stream.
                let local = waited.saturating_sub(w0) * 4 > spent;
                if rate < SLOW_STREAM && left >= 2 * CHUNK && !local {
                    tracing::debug!(digest = %self.desc.digest, rate_mb_s = rate / 1e6,
                        "one stream is slow: fetching the rest by parallel ranges");
                    st.parallel = true;
                    // Streams end at the next chunk boundary; chunks take
                    // the rest.
                    for s in st.segments.iter_mut() {
                        let cut = (s.next / CHUNK + 1) * CHUNK;
                        if cut < s.end {
                            s.end = cut;
                        }
                    }
                } else {
                    st.rate_from = Some((now, held, waited));
                }
            }
        }
        (st.parallel, MAX_SEGMENTS)
    }

    /// Whether a segment of `attempt` should stop: the download ended, or
    /// that attempt failed.
    fn is_stale(&self, attempt: u64) -> bool {
        let st = lock(&self.state);
        st.outcome.is_some() || st.attempt != attempt
    }

    async fn run_segment(self: Arc<Self>, id: u64, attempt_of: u64, start: u64, end: u64) {
        let mut at = start;
        let mut stalls = 0;
        let mut attempt = 0;
        let result = loop {
            if self.is_stale(attempt_of) {
                break Ok(());
            }
            match self.pump(id, attempt_of, at, end).await {
                Ok(()) => break Ok(()),
                Err(b) => {
                    let next = self.segment_next(id).unwrap_or(at);
                    if !b.error.is_transient() {
                        break Err(b.error);
                    }
                    stalls = if b.progressed || next > at {
                        0
                    } else {
                        stalls + 1
                    };
                    if stalls >= STALLS {
                        break Err(b.error);
                    }
                    tracing::warn!(digest = %self.desc.digest, at = next, "transfer broke ({}); resuming", b.error);
                    at = next;
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };
        {
            let mut st = lock(&self.state);
            st.segments.retain(|s| s.id != id);
        }
        self.partial_save().await;
        if let Err(e) = result {
            // Only the attempt this segment belongs to (an earlier one's
            // failure may be what ended it).
            self.set_outcome(Some(attempt_of), Err(Arc::new(e)));
        }
        self.changed.notify_waiters();
    }

    fn segment_end(&self, id: u64) -> Option<u64> {
        lock(&self.state)
            .segments
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.end)
    }

    fn segment_next(&self, id: u64) -> Option<u64> {
        lock(&self.state)
            .segments
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.next)
    }

    async fn partial_save(&self) {
        let p = self.partial.clone();
        let _ = tokio::task::spawn_blocking(move || p.save()).await;
    }

    /// Receives `at..end` into the partial file. The network is read here
    /// while a blocking thread writes and hashes the previous batches.
    async fn pump(
        self: &Arc<Self>,
        id: u64,
        attempt: u64,
        at: u64,
        end: u64,
    ) -> Result<(), Broken> {
        let broken = |error: Error, progressed| Broken { error, progressed };
        // A Range names its last byte (`bytes=N-M`, never `bytes=N-`):
        // go-containerregistry's registry answers an open range with 416.
        let to_blob_end = end >= self.desc.size;
        let range_end = (at > 0 || !to_blob_end).then_some(end);
        let mut body = self
            .source
            .blob(&self.repo, &self.desc.digest, at, range_end)
            .await
            .map_err(|e| broken(e.into(), false))?;
        if body.start > at {
            return Err(broken(
                Error::Blob {
                    digest: self.desc.digest.clone(),
                    reason: format!(
                        "asked for bytes from {at}, the registry sent from {}",
                        body.start
                    ),
                },
                false,
            ));
        }
        // Range is optional: a registry may send the whole blob. Skip to `at`.
        let mut skip = at - body.start;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<Bytes>)>(2);
        let me = self.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(), Error> {
            while let Some((mut off, pieces)) = rx.blocking_recv() {
                for p in pieces {
                    let progress = {
                        let _write = me
                            .gate
                            .read()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        if me.is_stale(attempt) {
                            return Ok(());
                        }
                        me.partial.write(off, &p)?
                    };
                    off += p.len() as u64;
                    if let Some(bad) = progress.bad_chunk {
                        // The registry sent wrong bytes: this attempt ends at
                        // once (no segment starts for the dropped chunk while
                        // the registry may still be sending wrong bytes), its
                        // waiters get EIO, the next read fetches again.
                        return Err(me.give_up_chunk(bad, attempt));
                    }
                    me.advanced(id, off);
                    if progress.complete {
                        me.complete();
                    }
                }
            }
            Ok(())
        });
        let mut pos = at;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_at = at;
        let mut batched = 0usize;
        let mut progressed = false;
        let received: Result<(), Error> = loop {
            match body.chunk().await {
                Ok(Some(mut c)) => {
                    if skip > 0 {
                        let n = (skip as usize).min(c.len());
                        skip -= n as u64;
                        c = c.slice(n..);
                    }
                    if c.is_empty() {
                        continue;
                    }
                    // The planner may have cut this segment short (parallel
                    // ranges took over the rest).
                    let stop = self.segment_end(id).map_or(end, |e| e.min(end));
                    if pos >= stop {
                        break Ok(());
                    }
                    let room = (stop - pos) as usize;
                    if c.len() > room {
                        if to_blob_end && stop == end {
                            break Err(Error::Blob {
                                digest: self.desc.digest.clone(),
                                reason: format!(
                                    "the registry sent more than the {} bytes the descriptor says",
                                    self.desc.size
                                ),
                            });
                        }
                        c = c.slice(..room);
                    }
                    pos += c.len() as u64;
                    batched += c.len();
                    batch.push(c);
                    progressed = true;
                    // The first bytes of a transfer go on at once: a reader
                    // waiting for a few KiB should not wait for a batch.
                    if batched >= WRITE_BATCH || pos == stop || pos - at <= FIRST_BYTES {
                        let b = std::mem::take(&mut batch);
                        let t = Instant::now();
                        if tx.send((batch_at, b)).await.is_err() {
                            break Ok(()); // the writer failed: its error says why
                        }
                        let waited = t.elapsed();
                        if waited > Duration::from_millis(1) {
                            lock(&self.state).waited += waited;
                        }
                        batch_at = pos;
                        batched = 0;
                        // The rest is held already (another segment got it):
                        // stop here; the planner starts what is missing.
                        if pos < end && self.partial.holds(pos, (pos + CHUNK).min(end)) {
                            break Ok(());
                        }
                    }
                    if pos == stop {
                        break Ok(());
                    }
                    if self.is_stale(attempt) {
                        break Ok(());
                    }
                }
                Ok(None) if pos < end && to_blob_end => {
                    break Err(Error::Registry(registry::Error::Protocol {
                        url: format!("blob {}", self.desc.digest),
                        reason: format!("transfer ended at {pos} of {} bytes", self.desc.size),
                    }))
                }
                Ok(None) if pos < end => {
                    break Err(Error::Registry(registry::Error::Protocol {
                        url: format!("blob {}", self.desc.digest),
                        reason: format!("range {at}-{end} ended after {} bytes", pos - at),
                    }))
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        };
        if !batch.is_empty() && !matches!(received, Err(Error::Blob { .. })) {
            let _ = tx.send((batch_at, batch)).await;
        }
        drop(tx);
        let written = writer.await.map_err(|e| Error::Io {
            what: "download writer".into(),
            source: std::io::Error::other(e),
        });
        match (written, received) {
            (Ok(Ok(())), Ok(())) => Ok(()),
            (Ok(Err(e)), _) | (Err(e), _) => Err(broken(e, progressed)),
            (_, Err(e)) => Err(broken(e, progressed)),
        }
    }

    /// Segment `id` has written up to `next`.
    fn advanced(&self, id: u64, next: u64) {
        {
            let mut st = lock(&self.state);
            st.progress_at = Instant::now();
            if let Some(s) = st.segments.iter_mut().find(|s| s.id == id) {
                s.next = s.next.max(next);
            }
        }
        for p in lock(&self.parts).iter() {
            if self.partial.holds(p.a, p.b) {
                p.wake.notify_one();
            }
        }
    }

    /// The whole blob is held and hashed: into the verified cache, or
    /// dropped on a mismatch. Runs on a blocking thread.
    fn complete(&self) {
        let outcome = match self.cache.complete(&self.partial) {
            Ok(p) => {
                self.cache
                    .put_origin(self.source.host(), &self.desc.digest, &self.repo);
                Ok(p)
            }
            Err(Incomplete::Mismatch(actual)) => {
                tracing::error!(digest = %self.desc.digest, %actual, "blob does not match its digest; discarded");
                lock(&self.failed).insert(self.id);
                let e = Error::Mismatch {
                    digest: self.desc.digest.clone(),
                    actual,
                };
                if self.source.wrong_bytes(&self.desc.digest) {
                    Err(Error::FromMirror(Box::new(e)))
                } else {
                    Err(e)
                }
            }
            Err(Incomplete::NotHeld) => return,
            Err(Incomplete::Cache(e)) => Err(e.into()),
        };
        self.end(outcome);
    }

    /// The download ended (a failure that is not a mismatch ends only the
    /// current attempt: the next demand resumes).
    fn end(&self, outcome: Result<PathBuf, Error>) {
        self.set_outcome(None, outcome.map_err(Arc::new));
    }

    /// Ends the download, or with an error its current attempt (`of`: only
    /// if that is still the current one).
    fn set_outcome(&self, of: Option<u64>, outcome: Result<PathBuf, Arc<Error>>) {
        {
            let mut st = lock(&self.state);
            if st.outcome.is_none() && of.is_none_or(|a| a == st.attempt) {
                if outcome.is_err() {
                    st.attempt += 1;
                }
                st.outcome = Some(outcome);
            }
        }
        self.changed.notify_waiters();
    }
}
