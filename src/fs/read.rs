//! Opening and reading files: manifests from memory, blobs and the files
//! of tar layers from the verified cache (fetched whole, by Range chunks,
//! or lazily), staged, unpacked and decompressed files from local disk.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::blobs::Read;
use super::{lock, Error, Fs, Handle, Span};
use crate::tree::view::Desc;
use crate::tree::{Ino, Node};

/// Blobs up to this size open without I/O once verified (`open_known_blob`):
/// for them a kernel round trip per read costs less than setting up
/// passthrough at every open.
const FAST_OPEN_MAX: u64 = 1 << 20;

/// A read of a handle whose last read failed for want of bytes (the
/// registry failing, or nothing arriving for `--timeout`) less than this
/// long ago gets the same failure at once. The kernel asks again for what a
/// read could not get (readahead, then page by page), on the same handle:
/// without this, each of those asks would wait `--timeout` of its own. A
/// new open asks the registry again.
pub(super) const FAIL_FAST: std::time::Duration = std::time::Duration::from_secs(1);

impl Fs {
    /// Opens a file; returns the handle and, when the bytes are already
    /// verified on disk, the file (for passthrough).
    pub async fn open(
        &self,
        ino: Ino,
        write: bool,
        truncate: bool,
    ) -> Result<(u64, Option<Arc<std::fs::File>>), Error> {
        let mut node = self.node(ino)?;
        if matches!(&*node, Node::Staged { .. }) && self.staged_attr(ino).is_err() {
            // Committed or discarded since the kernel looked it up.
            self.relookup(ino).await?;
            node = self.node(ino)?;
        }
        if write || matches!(&*node, Node::Staged { .. }) {
            let f = self.open_staged(ino, &node, write, truncate).await?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            lock(&self.handles).insert(fh, Handle::Staged(f));
            return Ok((fh, None));
        }
        let handle = match &*node {
            Node::ManifestJson { repo, digest, .. } => {
                Handle::Bytes(self.metadata.manifest_bytes(repo, digest).await?.0)
            }
            Node::Blob { repo, desc, .. } => {
                // Strict reads wait for the whole verified blob anyway: fetch
                // it at open, so every read goes to the verified file (and
                // the kernel can pass reads through to it). Lazy blobs are
                // fetched by the reads themselves.
                let mut file = self.open_verified(desc).await?;
                if file.is_none() && !self.blobs.is_lazy(desc) {
                    self.blobs.fetch(repo, desc).await?;
                    file = self.open_verified(desc).await?;
                }
                let file = file.map(Arc::new);
                Handle::Blob {
                    repo: repo.clone(),
                    desc: desc.clone(),
                    span: Span::whole(desc.size),
                    file,
                    next: 0,
                    failed: None,
                    unverified_from: None,
                }
            }
            Node::UnpackedFile {
                repo, layer, path, ..
            } => {
                let (f, held) = self.open_unpacked(repo, layer, path).await?;
                Handle::Unpacked {
                    file: Arc::new(f),
                    _held: held,
                }
            }
            Node::ArchiveFile {
                repo,
                layer,
                path,
                size,
                ..
            } => self.open_archive_file(repo, layer, path, *size).await?,
            _ => return Err(Error::IsDir),
        };
        // Only a whole file can be passed through to the kernel (its
        // offsets are the file's).
        let ready = match &handle {
            // Small blobs are read through the kernel's page cache, which
            // keeps them across opens (`open_known_blob`), not passed through.
            Handle::Blob {
                file, span, desc, ..
            } if *span == Span::whole(desc.size) && desc.size > FAST_OPEN_MAX => file.clone(),
            Handle::File(f, None) => Some(f.clone()),
            Handle::Unpacked { file, .. } => Some(file.clone()),
            Handle::Blob { .. } | Handle::File(..) | Handle::Bytes(_) | Handle::Staged(_) => None,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        Ok((fh, ready))
    }

    /// Opens a small blob this mount has seen verified, without I/O (what
    /// a warm walk of many small files does most): the handle opens its
    /// cache file at the first read that reaches regfs, which checks the
    /// file as every open does; with the kernel's pages kept across opens,
    /// a warm read never does. `None`: open it the full way (`open`).
    /// Large blobs take the full way, which passes their reads through to
    /// the cache file.
    pub fn open_known_blob(&self, ino: Ino) -> Option<u64> {
        let node = self.node(ino).ok()?;
        let Node::Blob { repo, desc, .. } = &*node else {
            return None;
        };
        if desc.size > FAST_OPEN_MAX || !self.cache.is_known(&desc.digest) {
            return None;
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Handle::Blob {
                repo: repo.clone(),
                desc: desc.clone(),
                file: None,
                next: 0,
                span: Span::whole(desc.size),
                failed: None,
                unverified_from: None,
            },
        );
        Some(fh)
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, Error> {
        enum Src {
            Bytes(Bytes),
            File(Arc<std::fs::File>),
            Fetch(crate::tree::RepoName, Arc<Desc>, Span, bool, Option<u64>),
            Failed(Arc<Error>),
        }
        // `offset` and `size` become the bytes to read in what holds the
        // file (a tar member is a span of its tar).
        let (src, offset, size) = match lock(&self.handles).get_mut(&fh) {
            None => return Err(Error::BadHandle),
            Some(Handle::Bytes(b)) => (Src::Bytes(b.clone()), offset, size),
            Some(Handle::File(f, None))
            | Some(Handle::Staged(f))
            | Some(Handle::Unpacked { file: f, .. }) => (Src::File(f.clone()), offset, size),
            Some(Handle::File(f, Some(span))) => match span.place(offset, size) {
                Some((o, s)) => (Src::File(f.clone()), o, s),
                None => return Ok(Bytes::new()),
            },
            Some(Handle::Blob {
                span,
                file: Some(f),
                ..
            }) => match span.place(offset, size) {
                Some((o, s)) => (Src::File(f.clone()), o, s),
                None => return Ok(Bytes::new()),
            },
            Some(Handle::Blob {
                file: None,
                failed: Some((at, e)),
                ..
            }) if at.elapsed() < FAIL_FAST => (Src::Failed(e.clone()), offset, size),
            Some(Handle::Blob {
                repo,
                desc,
                span,
                file: None,
                next,
                unverified_from,
                ..
            }) => {
                let sequential = offset > 0 && offset == *next;
                *next = offset.saturating_add(size as u64);
                match span.place(offset, size) {
                    Some((o, s)) => (
                        Src::Fetch(
                            repo.clone(),
                            desc.clone(),
                            *span,
                            sequential,
                            *unverified_from,
                        ),
                        o,
                        s,
                    ),
                    None => return Ok(Bytes::new()),
                }
            }
        };
        let file = match src {
            Src::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                return Ok(b.slice(start..end));
            }
            Src::File(f) => f,
            Src::Failed(e) => return Err(Error::Shared(e)),
            Src::Fetch(repo, desc, span, sequential, unverified_from) => {
                // This open was given bytes of a download that then failed
                // verification: whatever comes next (from a new download),
                // what it already read may be wrong, so it never succeeds.
                let tainted = |desc: &Desc| Error::GivenWrongBytes {
                    digest: desc.digest.clone(),
                };
                if unverified_from.is_some_and(|d| self.blobs.failed(d)) {
                    return Err(tainted(&desc));
                }
                let fetched = if self.blobs.is_lazy(&desc) {
                    // The read reaching the end of the file (a member's
                    // end, for a file of a tar layer) waits for the blob.
                    let file_end = span.start + span.len;
                    self.blobs
                        .read(&repo, &desc, offset, size, sequential, file_end)
                        .await
                        .map(Some)
                } else {
                    self.blobs.fetch(&repo, &desc).await.map(|_| None)
                };
                match fetched {
                    Ok(Some(Read::Unverified { bytes, download })) => {
                        if let Some(Handle::Blob {
                            unverified_from, ..
                        }) = lock(&self.handles).get_mut(&fh)
                        {
                            match unverified_from {
                                Some(d) if *d != download => return Err(tainted(&desc)),
                                _ => *unverified_from = Some(download),
                            }
                        }
                        return Ok(bytes);
                    }
                    Ok(_) => {}
                    Err(e) if e.is_for_want_of_bytes() => {
                        let e = Arc::new(e);
                        if let Some(Handle::Blob { failed, .. }) = lock(&self.handles).get_mut(&fh)
                        {
                            *failed = Some((std::time::Instant::now(), e.clone()));
                        }
                        return Err(Error::Shared(e));
                    }
                    Err(e) => return Err(e),
                }
                if span != Span::whole(desc.size) {
                    // Offsets from headers read before the blob was verified.
                    self.recheck_archive(&repo, &desc).await?;
                }
                if unverified_from.is_some_and(|d| self.blobs.failed(d)) {
                    return Err(tainted(&desc));
                }
                let f = self
                    .open_verified(&desc)
                    .await?
                    .ok_or_else(|| Error::Blob {
                        digest: desc.digest.clone(),
                        reason: "evicted from the cache right after download; retry".into(),
                    })?;
                let f = Arc::new(f);
                if let Some(Handle::Blob { file, .. }) = lock(&self.handles).get_mut(&fh) {
                    if file.is_none() {
                        *file = Some(f.clone());
                    } else {
                        self.cache.release(&desc.digest);
                    }
                }
                f
            }
        };
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(Error::Io {
                            what: "reading cached blob".into(),
                            source,
                        })
                    }
                }
            }
            buf.truncate(got);
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| Error::Io {
            what: "read task".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Whether handle `fh` may serve bytes not yet verified (a lazy read
    /// of a blob that is not in the verified cache yet). The kernel must not
    /// keep such bytes across opens.
    pub fn serves_unverified(&self, fh: u64) -> bool {
        matches!(
            lock(&self.handles).get(&fh),
            Some(Handle::Blob { file: None, .. })
        )
    }

    pub fn release(&self, fh: u64) {
        if let Some(Handle::Blob {
            desc,
            file: Some(_),
            ..
        }) = lock(&self.handles).remove(&fh)
        {
            self.cache.release(&desc.digest);
        }
    }

    /// The cached blob of `desc`, if any, checked against the size the
    /// descriptor claims (the digest matched, but a descriptor can lie).
    /// Opening checks the file against its record of verification (and
    /// hashes it again if it changed): done off the async threads.
    pub(super) async fn open_verified(&self, desc: &Desc) -> Result<Option<std::fs::File>, Error> {
        let (cache, d) = (self.cache.clone(), desc.digest.clone());
        let opened = tokio::task::spawn_blocking(move || cache.open_blob(&d))
            .await
            .map_err(|e| Error::Io {
                what: "opening a cached blob".into(),
                source: std::io::Error::other(e),
            })?;
        let Some(f) = opened else {
            return Ok(None);
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len != desc.size {
            self.cache.release(&desc.digest);
            return Err(Error::Blob {
                digest: desc.digest.clone(),
                reason: format!(
                    "the descriptor says {} bytes but the blob has {len}",
                    desc.size
                ),
            });
        }
        Ok(Some(f))
    }

    /// Downloads and verifies a blob into the cache (one download however
    /// many readers wait).
    pub async fn fetch_blob(&self, repo: &str, desc: &Desc) -> Result<PathBuf, Error> {
        self.blobs.fetch(repo, desc).await
    }
}
