//! Blob downloads: one per blob however many readers wait, resumed with
//! Range after a broken transfer, hashed as the bytes pass, and moved into
//! the cache only once the whole blob matched its digest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::{lock, Error};
use crate::cache::{Cache, Partial};
use crate::digest::{Digest, Verifier};
use crate::registry::{self, backoff, Backend};
use crate::tree::view::Desc;

/// Bytes gathered before they are written and hashed off the async threads
/// (at most a few batches are in flight: memory stays flat whatever the size).
const WRITE_BATCH: usize = 2 << 20;
/// Attempts to resume a broken transfer before giving up.
const RESUMES: u32 = 4;

type SharedFetch = Shared<BoxFuture<'static, Result<PathBuf, Arc<Error>>>>;

/// Downloads in progress, and how far each has come.
#[derive(Default)]
pub struct Inflight {
    map: Mutex<HashMap<Digest, SharedFetch>>,
    progress: Mutex<HashMap<Digest, (u64, u64)>>,
}

impl Inflight {
    /// Blobs being fetched: digest, bytes so far, total.
    pub fn progress(&self) -> Vec<(Digest, u64, u64)> {
        lock(&self.progress)
            .iter()
            .map(|(d, (n, t))| (d.clone(), *n, *t))
            .collect()
    }
}

/// The cached, verified blob, downloading it first if needed.
pub async fn fetch(
    inflight: &Inflight,
    registry: Arc<Backend>,
    cache: Arc<Cache>,
    repo: &str,
    desc: &Desc,
) -> Result<PathBuf, Error> {
    if let Some(p) = cache.blob(&desc.digest) {
        return Ok(p);
    }
    let fut = {
        let mut map = lock(&inflight.map);
        match map.get(&desc.digest) {
            Some(f) => f.clone(),
            None => {
                let (repo, desc2) = (repo.to_string(), desc.clone());
                let task = tokio::spawn(download(registry, cache, repo, desc2));
                let f = async move {
                    match task.await {
                        Ok(r) => r.map_err(Arc::new),
                        Err(e) => Err(Arc::new(Error::Io {
                            what: "download task".into(),
                            source: std::io::Error::other(e),
                        })),
                    }
                }
                .boxed()
                .shared();
                map.insert(desc.digest.clone(), f.clone());
                f
            }
        }
    };
    // Progress is reported by the download itself; register it here so
    // `status` shows a blob from the moment a reader waits for it.
    lock(&inflight.progress)
        .entry(desc.digest.clone())
        .or_insert((0, desc.size));
    let result = fut.clone().await;
    {
        let mut map = lock(&inflight.map);
        if map.get(&desc.digest).is_some_and(|f| f.ptr_eq(&fut)) {
            map.remove(&desc.digest);
            lock(&inflight.progress).remove(&desc.digest);
        }
    }
    result.map_err(Error::Shared)
}

struct Sink {
    partial: Partial,
    verifier: Verifier,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io {
        what: "blocking task".into(),
        source: std::io::Error::other(e),
    })
}

async fn download(
    registry: Arc<Backend>,
    cache: Arc<Cache>,
    repo: String,
    desc: Desc,
) -> Result<PathBuf, Error> {
    let d = desc.digest.clone();
    let (c, dd) = (cache.clone(), d.clone());
    let mut partial = blocking(move || c.begin(&dd)).await??;
    if let Some(p) = cache.blob(&d) {
        // Another mount sharing the cache finished it while we waited for the lock.
        cache.discard(partial);
        return Ok(p);
    }
    if partial.len > desc.size {
        partial.reset().map_err(|source| io(&partial, source))?;
    }
    let mut verifier = Verifier::new(d.clone());
    if partial.len > 0 {
        tracing::info!(digest = %d, bytes = partial.len, "resuming download");
        let c = cache.clone();
        let (p, v, r) = blocking(move || {
            let r = c.rehash(&mut partial, &mut verifier);
            (partial, verifier, r)
        })
        .await?;
        r?;
        (partial, verifier) = (p, v);
    }
    let mut sink = Some(Sink { partial, verifier });
    // Resume as long as each attempt makes progress; a registry that sends
    // nothing at all gets one more try (the request itself was already
    // retried), so a dead registry fails fast.
    let mut attempt = 0;
    let mut stalled = 0;
    loop {
        let before = sink.as_ref().map_or(0, |s| s.partial.len);
        match pump(&registry, &repo, &desc, &mut sink).await {
            Ok(()) => break,
            Err(e) if attempt < RESUMES && stalled < 1 && e.is_transient() && sink.is_some() => {
                tracing::warn!(digest = %d, "transfer broke ({e}); resuming");
                if sink.as_ref().map_or(0, |s| s.partial.len) == before {
                    stalled += 1;
                } else {
                    stalled = 0;
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                if let (Error::Blob { .. }, Some(s)) = (&e, sink.take()) {
                    cache.discard(s.partial);
                }
                return Err(e);
            }
        }
    }
    let Some(Sink { partial, verifier }) = sink else {
        return Err(Error::Blob {
            digest: d,
            reason: "download state lost".into(),
        });
    };
    match verifier.finish() {
        Ok(()) => {
            cache.put_origin(registry.host(), &d, &repo);
            let c = cache.clone();
            let dd = d.clone();
            Ok(blocking(move || c.finish(partial, &dd)).await??)
        }
        Err(actual) => {
            tracing::error!(digest = %d, %actual, "blob does not match its digest; discarded");
            cache.discard(partial);
            Err(Error::Blob {
                digest: d,
                reason: format!("content does not match its digest (got {actual})"),
            })
        }
    }
}

fn io(p: &Partial, source: std::io::Error) -> Error {
    Error::Io {
        what: p.path.display().to_string(),
        source,
    }
}

/// Receives the rest of the blob into the sink. On a broken transfer the
/// bytes received so far stay written, so the next call resumes.
async fn pump(
    registry: &Backend,
    repo: &str,
    desc: &Desc,
    slot: &mut Option<Sink>,
) -> Result<(), Error> {
    let have = slot.as_ref().map(|s| s.partial.len).unwrap_or(0);
    if have == desc.size {
        return Ok(());
    }
    let mut stream = registry.blob(repo, &desc.digest, have).await?;
    if stream.start != have {
        if stream.start != 0 {
            return Err(Error::Blob {
                digest: desc.digest.clone(),
                reason: format!(
                    "registry answered from byte {} when asked for {have}",
                    stream.start
                ),
            });
        }
        // Range is optional: the registry sent the whole blob. Start over.
        if let Some(s) = slot.as_mut() {
            s.partial.reset().map_err(|e| io(&s.partial, e))?;
            s.verifier = Verifier::new(desc.digest.clone());
        }
    }
    // The network is read here while a blocking thread writes and hashes
    // the previous batches: receiving and hashing overlap.
    let Some(mut sink) = slot.take() else {
        return Err(lost());
    };
    // Batches travel as the received pieces themselves: no copy on the way.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<bytes::Bytes>>(2);
    let writer = tokio::task::spawn_blocking(move || {
        let mut r = Ok(());
        'batches: while let Some(batch) = rx.blocking_recv() {
            for piece in batch {
                if let Err(e) = sink.partial.append(&piece) {
                    r = Err(e);
                    break 'batches;
                }
                sink.verifier.update(&piece);
            }
        }
        (sink, r)
    });
    let mut received = stream.start;
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0usize;
    let result = loop {
        match stream.chunk().await {
            Ok(Some(c)) => {
                received += c.len() as u64;
                if received > desc.size {
                    break Err(Error::Blob {
                        digest: desc.digest.clone(),
                        reason: format!(
                            "registry sent more than the {} bytes the descriptor says",
                            desc.size
                        ),
                    });
                }
                batched += c.len();
                batch.push(c);
                if batched >= WRITE_BATCH {
                    batched = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        break Err(lost());
                    }
                }
            }
            Ok(None) if received < desc.size => {
                break Err(Error::Registry(registry::Error::Protocol {
                    url: format!("blob {}", desc.digest),
                    reason: format!("transfer ended at {received} of {} bytes", desc.size),
                }))
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        }
    };
    if !batch.is_empty() && !matches!(result, Err(Error::Blob { .. })) {
        let _ = tx.send(batch).await;
    }
    drop(tx);
    let (sink, written) = writer.await.map_err(|e| Error::Io {
        what: "download writer".into(),
        source: std::io::Error::other(e),
    })?;
    let written = written.map_err(|e| io(&sink.partial, e));
    *slot = Some(sink);
    written?;
    result
}

fn lost() -> Error {
    Error::Io {
        what: "download".into(),
        source: std::io::Error::other("download state lost"),
    }
}
