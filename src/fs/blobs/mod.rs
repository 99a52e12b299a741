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
//! Readers only wait: dropping a reader's future (an interrupted request)
//! never stops a download, which goes on and fills the cache. A wait ends
//! with an error when the download failed, or when nothing arrived for
//! `--timeout`.

mod plan;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use super::source::Source;
use super::{lock, Error, Verify};
use crate::cache::{Cache, Incomplete, Partial};
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
/// Consecutive attempts of a segment that bring no byte before it gives up
/// (each attempt's request is itself retried by the registry client).
const STALLS: u32 = 2;

/// How the engine fetches.
#[derive(Debug, Clone)]
pub struct Settings {
    pub verify: Verify,
    /// Whole blobs of a registry by parallel chunks rather than one stream.
    pub parallel_ranges: bool,
    /// A wait ends with an error after this long without a byte arriving.
    pub timeout: Duration,
}

pub struct Blobs {
    source: Arc<dyn Source>,
    cache: Arc<Cache>,
    settings: Settings,
    live: Mutex<HashMap<crate::digest::Digest, Arc<Download>>>,
}

impl Blobs {
    pub fn new(source: Arc<dyn Source>, cache: Arc<Cache>, settings: Settings) -> Blobs {
        Blobs {
            source,
            cache,
            settings,
            live: Mutex::new(HashMap::new()),
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
        if let Some(p) = self.cached(&desc.digest).await {
            return Ok(p);
        }
        match self.join(repo, desc)? {
            Joined::Cached(p) => Ok(p),
            Joined::Live(dl) => dl.wait_whole().await,
        }
    }

    /// Bytes `offset..offset+size` of a lazily read blob, possibly before
    /// the whole blob is verified; the read that reaches its end returns
    /// only once it is. `sequential`: the reader continues where it left
    /// off, so one stream serves it best.
    pub async fn read(
        &self,
        repo: &str,
        desc: &Desc,
        offset: u64,
        size: u32,
        sequential: bool,
    ) -> Result<Read, Error> {
        if let Some(p) = self.cached(&desc.digest).await {
            return Ok(Read::Verified(p));
        }
        let dl = match self.join(repo, desc)? {
            Joined::Cached(p) => return Ok(Read::Verified(p)),
            Joined::Live(dl) => dl,
        };
        let end = offset.saturating_add(size as u64).min(desc.size);
        if end >= desc.size {
            return Ok(Read::Verified(dl.wait_whole().await?));
        }
        let want = if sequential {
            Want::Stream(offset, end)
        } else {
            Want::Chunks(offset, end)
        };
        dl.wait(want).await
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
            }),
            changed: Notify::new(),
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
    /// Not verified yet: the bytes themselves.
    Unverified(Bytes),
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
}

struct Download {
    desc: Desc,
    repo: String,
    source: Arc<dyn Source>,
    cache: Arc<Cache>,
    partial: Arc<Partial>,
    settings: Settings,
    state: Mutex<State>,
    changed: Notify,
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
            Read::Unverified(_) => Err(Error::Blob {
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
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match lock(&self.state).outcome.clone() {
                Some(Ok(p)) => return Ok(Read::Verified(p)),
                Some(Err(e)) => return Err(Error::Shared(e)),
                None => {}
            }
            if want != Want::Whole && self.partial.holds(a, b) {
                let p = self.partial.clone();
                let bytes = tokio::task::spawn_blocking(move || p.read_at(a, (b - a) as usize))
                    .await
                    .map_err(|e| Error::Io {
                        what: "reading a download".into(),
                        source: std::io::Error::other(e),
                    })??;
                return Ok(Read::Unverified(Bytes::from(bytes)));
            }
            self.start_segments(want);
            if tokio::time::timeout(self.settings.timeout, notified)
                .await
                .is_err()
            {
                let idle = lock(&self.state).progress_at.elapsed();
                if idle >= self.settings.timeout {
                    return Err(Error::Stalled {
                        digest: self.desc.digest.clone(),
                        after: idle,
                    });
                }
            }
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

    /// Starts the segments the planner asks for.
    fn start_segments(self: &Arc<Self>, want: Want) {
        let mut st = lock(&self.state);
        if st.outcome.is_some() {
            return;
        }
        let active: Vec<(u64, u64)> = st.segments.iter().map(|s| (s.next, s.end)).collect();
        let whole_by_chunks = self.settings.parallel_ranges && self.source.is_remote();
        let room = MAX_SEGMENTS.saturating_sub(active.len());
        let held = self.partial.held();
        for (a, b) in plan(&held, &active, want, self.desc.size, whole_by_chunks, room) {
            let id = st.next_id;
            st.next_id += 1;
            st.segments.push(Segment {
                id,
                next: a,
                end: b,
            });
            let me = self.clone();
            tokio::spawn(async move { me.run_segment(id, a, b).await });
        }
    }

    /// One segment, resumed after each broken transfer while it makes
    /// progress.
    async fn run_segment(self: Arc<Self>, id: u64, start: u64, end: u64) {
        let mut at = start;
        let mut stalls = 0;
        let mut attempt = 0;
        let result = loop {
            if lock(&self.state).outcome.is_some() {
                break Ok(());
            }
            match self.pump(id, at, end).await {
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
            self.end(Err(e));
        }
        self.changed.notify_waiters();
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
    async fn pump(self: &Arc<Self>, id: u64, at: u64, end: u64) -> Result<(), Broken> {
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
                    let progress = me.partial.write(off, &p)?;
                    off += p.len() as u64;
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
                    let room = (end - pos) as usize;
                    if c.len() > room {
                        if to_blob_end {
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
                    if batched >= WRITE_BATCH || pos == end {
                        let b = std::mem::take(&mut batch);
                        if tx.send((batch_at, b)).await.is_err() {
                            break Ok(()); // the writer failed: its error says why
                        }
                        batch_at = pos;
                        batched = 0;
                        // The rest is held already (another segment got it):
                        // stop here; the planner starts what is missing.
                        if pos < end && self.partial.holds(pos, (pos + CHUNK).min(end)) {
                            break Ok(());
                        }
                    }
                    if pos == end {
                        break Ok(());
                    }
                    if lock(&self.state).outcome.is_some() {
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
        self.changed.notify_waiters();
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
                Err(Error::Mismatch {
                    digest: self.desc.digest.clone(),
                    actual,
                })
            }
            Err(Incomplete::NotHeld) => return,
            Err(Incomplete::Cache(e)) => Err(e.into()),
        };
        self.end(outcome);
    }

    /// The download ended (a failure that is not a mismatch ends only the
    /// current attempt: the next demand resumes).
    fn end(&self, outcome: Result<PathBuf, Error>) {
        {
            let mut st = lock(&self.state);
            if st.outcome.is_none() {
                st.outcome = Some(outcome.map_err(Arc::new));
            }
        }
        self.changed.notify_waiters();
    }
}
