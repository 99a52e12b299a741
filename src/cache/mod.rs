//! The on-disk cache, content-addressed and shared by concurrent mounts.
//!
//! Layout under the cache folder:
//!
//! ```text
//! blobs/sha256/<hex>       verified blobs (only ever created by rename after verification)
//! manifests/sha256/<hex>   verified manifest bytes, with <hex>.type holding the media type
//! partial/sha256/<hex>     a download in progress (sparse), locked with flock, with
//!                          <hex>.map of the ranges it holds; resumed after a crash
//! refs/<host>/<repo>/...   last known tag resolutions and listings (for --tag-ttl and offline use)
//! seen/sha256/<hex>        when a manifest digest was first seen (its folder's mtime)
//! ```
//!
//! Invariant: whatever is under `blobs/` and `manifests/` is verified. A file
//! gets there only by `rename` from a temporary name after its sha256
//! matched, so a crash or a concurrent mount never exposes a partial file.

mod evict;
mod partial;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{Digest, Verifier};

pub use evict::{plan_eviction, CacheEntry};
pub use partial::{Partial, Progress, RangeSet};

/// Why a download could not be moved into the verified cache.
#[derive(Debug, thiserror::Error)]
pub enum Incomplete {
    #[error("the download does not hold the whole blob yet")]
    NotHeld,
    #[error("content does not match its digest (got {0})")]
    Mismatch(Digest),
    #[error(transparent)]
    Cache(Error),
}

/// Errors of the cache: always local I/O, named by path.
#[derive(Debug, thiserror::Error)]
#[error("cache {path}: {source}")]
pub struct Error {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error {
        path: path.to_path_buf(),
        source,
    }
}

/// A tag's last known resolution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagRef {
    pub digest: Digest,
    /// When the registry last confirmed it (seconds since the epoch).
    pub checked: i64,
}

pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    /// Blobs this process has open, which eviction must keep.
    open: Mutex<HashMap<Digest, usize>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Cache {
    pub fn open(root: &Path, max_bytes: u64) -> Result<Cache, Error> {
        for sub in [
            "blobs/sha256",
            "manifests/sha256",
            "partial/sha256",
            "refs",
            "seen/sha256",
            "unpacked/sha256",
            "tmp",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(err(&p))?;
        }
        Ok(Cache {
            root: root.to_path_buf(),
            max_bytes,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_file(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Where the contents of the verified directory layer `d` are unpacked.
    pub fn unpacked(&self, d: &Digest) -> PathBuf {
        self.root.join("unpacked/sha256").join(d.hex())
    }

    /// A folder for temporary files on the cache's file system (so a
    /// finished one moves into place by rename).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The verified blob's path, if the cache has it.
    pub fn blob(&self, d: &Digest) -> Option<PathBuf> {
        let p = self.blob_file(d);
        p.exists().then_some(p)
    }

    /// Opens a cached blob for reading and marks it used (for LRU) and open
    /// (so eviction keeps it). Pair with `release`.
    pub fn open_blob(&self, d: &Digest) -> Option<File> {
        let p = self.blob_file(d);
        let f = File::open(&p).ok()?;
        // (The size is checked against the descriptor by the caller.)
        // mtime is the LRU clock; failing to set it only makes eviction less fair.
        let _ = f.set_modified(SystemTime::now());
        *self.lock_open().entry(d.clone()).or_insert(0) += 1;
        Some(f)
    }

    pub fn release(&self, d: &Digest) {
        let mut open = self.lock_open();
        if let Some(n) = open.get_mut(d) {
            *n -= 1;
            if *n == 0 {
                open.remove(d);
            }
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or resumes the download of `d` (`size` bytes): see `partial`.
    pub fn partial(&self, d: &Digest, size: u64) -> Result<Partial, Error> {
        Partial::open(&self.root.join("partial/sha256"), d, size)
    }

    /// Moves a fully held download into `blobs/` if its bytes match its
    /// digest: the only way bytes become verified. A mismatch drops the
    /// download's bytes and names the digest that arrived.
    pub fn complete(&self, p: &Partial) -> Result<PathBuf, Incomplete> {
        let Some(v) = p.take_verifier() else {
            return Err(Incomplete::NotHeld);
        };
        match v.finish() {
            Ok(()) => {
                let dest = self.blob_file(p.digest());
                fs::rename(p.path(), &dest)
                    .map_err(err(&dest))
                    .map_err(Incomplete::Cache)?;
                p.remove(true);
                if let Err(e) = self.evict() {
                    tracing::warn!("cache eviction failed: {e}");
                }
                Ok(dest)
            }
            Err(actual) => {
                p.remove(false);
                Err(Incomplete::Mismatch(actual))
            }
        }
    }

    /// Drops a download's bytes.
    pub fn discard(&self, p: &Partial) {
        p.remove(false);
    }

    /// Downloads in progress or interrupted: digest hex and bytes held.
    pub fn downloads(&self) -> Vec<(String, u64)> {
        Cache::downloads_in(&self.root)
    }

    /// How many verified blobs the cache at `root` holds, and their bytes
    /// (without opening or creating it).
    pub fn blobs_in(root: &Path) -> (u64, u64) {
        let (mut n, mut bytes) = (0u64, 0u64);
        if let Ok(rd) = fs::read_dir(root.join("blobs/sha256")) {
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    n += 1;
                    bytes += m.len();
                }
            }
        }
        (n, bytes)
    }

    /// `downloads` of the cache at `root`, without opening (or creating) it.
    pub fn downloads_in(root: &Path) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let Ok(rd) = fs::read_dir(root.join("partial/sha256")) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".map") {
                continue;
            }
            let hex = name.split('.').next().unwrap_or(&name).to_string();
            if let Some(n) = partial::held_bytes(&e.path()) {
                out.push((hex, n));
            }
        }
        out.sort();
        out
    }

    /// Moves a verified file into place.
    fn adopt(&self, from: &Path, d: &Digest) -> Result<PathBuf, Error> {
        let dest = self.blob_file(d);
        fs::rename(from, &dest).map_err(err(&dest))?;
        if let Err(e) = self.evict() {
            tracing::warn!("cache eviction failed: {e}");
        }
        Ok(dest)
    }

    /// Puts a local file whose digest should be `d` into the cache (a blob
    /// just pushed from the staging area), so reading it back needs no
    /// download. Linked where it can be, copied where not, and hashed again
    /// before it is renamed into place: only verified bytes get there.
    pub fn insert_file(&self, src: &Path, d: &Digest) -> Result<(), Error> {
        if self.blob(d).is_some() {
            return Ok(());
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("insert-{}-{}", d.hex(), std::process::id()));
        let _ = fs::remove_file(&tmp);
        if fs::hard_link(src, &tmp).is_err() {
            fs::copy(src, &tmp).map_err(err(&tmp))?;
        }
        let mut v = Verifier::new(d.clone());
        v.update_from(File::open(&tmp).map_err(err(&tmp))?)
            .map_err(err(&tmp))?;
        if v.finish().is_err() {
            let _ = fs::remove_file(&tmp);
            return Ok(());
        }
        self.adopt(&tmp, d).map(|_| ())
    }

    /// Stores verified manifest bytes.
    pub fn put_manifest(
        &self,
        d: &Digest,
        bytes: &[u8],
        media_type: Option<&str>,
    ) -> Result<(), Error> {
        let dir = self.root.join("manifests/sha256");
        if let Some(t) = media_type {
            write_atomic(
                &self.root,
                &dir.join(format!("{}.type", d.hex())),
                t.as_bytes(),
            )?;
        }
        write_atomic(&self.root, &dir.join(d.hex()), bytes)
    }

    /// Whether manifest bytes for `d` are cached (checked when read).
    pub fn has_manifest(&self, d: &Digest) -> bool {
        self.root.join("manifests/sha256").join(d.hex()).is_file()
    }

    /// Cached manifest bytes and media type. Re-verified on read: a manifest
    /// file damaged on disk is dropped, not served.
    pub fn manifest(&self, d: &Digest) -> Option<(Vec<u8>, Option<String>)> {
        let dir = self.root.join("manifests/sha256");
        let bytes = fs::read(dir.join(d.hex())).ok()?;
        if Digest::of(&bytes) != *d {
            tracing::warn!(digest = %d, "cached manifest is damaged; dropping it");
            let _ = fs::remove_file(dir.join(d.hex()));
            return None;
        }
        let media_type = fs::read_to_string(dir.join(format!("{}.type", d.hex()))).ok();
        Some((bytes, media_type))
    }

    fn refs_dir(&self, host: &str, repo: Option<&str>) -> PathBuf {
        let mut p = self
            .root
            .join("refs")
            .join(host.replace([':', '[', ']'], "_"));
        if let Some(r) = repo {
            // Repository names are validated (lowercase components); `_`
            // prefixes below cannot collide with a component.
            p = p.join(r).join("_regfs");
        }
        p
    }

    pub fn tag_ref(&self, host: &str, repo: &str, tag: &str) -> Option<TagRef> {
        let p = self.refs_dir(host, Some(repo)).join("tags").join(tag);
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    }

    pub fn put_tag_ref(&self, host: &str, repo: &str, tag: &str, r: &TagRef) -> Result<(), Error> {
        let p = self.refs_dir(host, Some(repo)).join("tags").join(tag);
        let bytes = serde_json::to_vec(r).map_err(|e| err(&p)(io::Error::other(e)))?;
        write_atomic(&self.root, &p, &bytes)
    }

    /// A saved listing (tags of a repo, or the catalog when `repo` is None).
    pub fn listing(&self, host: &str, repo: Option<&str>) -> Option<Vec<String>> {
        let p = self.refs_dir(host, repo).join("list.json");
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    }

    pub fn put_listing(
        &self,
        host: &str,
        repo: Option<&str>,
        names: &[String],
    ) -> Result<(), Error> {
        let p = self.refs_dir(host, repo).join("list.json");
        let bytes = serde_json::to_vec(names).map_err(|e| err(&p)(io::Error::other(e)))?;
        write_atomic(&self.root, &p, &bytes)
    }

    /// Remembers that blob `d` was read from `repo` on `host`, so a commit
    /// into another repository there can mount it instead of uploading.
    pub fn put_origin(&self, host: &str, d: &Digest, repo: &str) {
        let p = self.refs_dir(host, None).join("_origins").join(d.hex());
        let _ = write_atomic(&self.root, &p, repo.as_bytes());
    }

    pub fn origin(&self, host: &str, d: &Digest) -> Option<String> {
        let p = self.refs_dir(host, None).join("_origins").join(d.hex());
        fs::read_to_string(p)
            .ok()
            .filter(|r| crate::reference::is_repository(r))
    }

    /// Whether anything at all is cached for `host` (to mount offline).
    pub fn knows_host(&self, host: &str) -> bool {
        self.refs_dir(host, None).exists()
    }

    /// When `d` was first seen, recording `now` if it never was.
    pub fn first_seen(&self, d: &Digest, now: i64) -> i64 {
        let p = self.root.join("seen/sha256").join(d.hex());
        if let Some(t) = fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return t;
        }
        // Racing mounts may both write; both write a time within the same
        // moment, and the rename makes one of them win whole.
        let _ = write_atomic(&self.root, &p, now.to_string().as_bytes());
        now
    }

    /// Removes least recently used blobs until the cache fits its budget and
    /// its disk stays below 95% full.
    pub fn evict(&self) -> Result<(), Error> {
        let dir = self.root.join("blobs/sha256");
        let mut entries = Vec::new();
        for e in fs::read_dir(&dir).map_err(err(&dir))? {
            let Ok(e) = e else { continue };
            let Ok(meta) = e.metadata() else { continue };
            let Some(digest) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            else {
                continue;
            };
            let used = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            entries.push(CacheEntry {
                digest,
                size: meta.len(),
                used,
            });
        }
        let budget = self
            .max_bytes
            .min(disk_budget(&dir, entries.iter().map(|e| e.size).sum()));
        let open = self.lock_open().keys().cloned().collect();
        for d in plan_eviction(entries, &open, budget) {
            let p = self.blob_file(&d);
            tracing::info!(digest = %d, "evicting from cache");
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), "cannot evict: {e}");
            }
        }
        Ok(())
    }
}

/// How many bytes the cache may hold so that its disk stays below 95% full.
fn disk_budget(dir: &Path, cached: u64) -> u64 {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return u64::MAX;
    };
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return u64::MAX;
    }
    let total = s.f_blocks as u64 * s.f_frsize as u64;
    let free = s.f_bavail as u64 * s.f_frsize as u64;
    let used_by_others = total.saturating_sub(free).saturating_sub(cached);
    (total / 100 * 95).saturating_sub(used_by_others)
}

/// Writes `bytes` to `dest` through a temporary file and a rename.
fn write_atomic(root: &Path, dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(err(parent))?;
    }
    let tmp_dir = root.join("tmp");
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(err(&tmp_dir))?;
    tmp.write_all(bytes).map_err(err(dest))?;
    tmp.persist(dest).map_err(|e| err(dest)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap();
        let bytes = br#"{"schemaVersion":2}"#;
        let d = Digest::of(bytes);
        c.put_manifest(
            &d,
            bytes,
            Some("application/vnd.oci.image.manifest.v1+json"),
        )
        .unwrap();
        let (b, t) = c.manifest(&d).unwrap();
        assert_eq!(b, bytes);
        assert_eq!(
            t.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        fs::write(
            dir.path().join("manifests/sha256").join(d.hex()),
            b"tampered",
        )
        .unwrap();
        assert!(c.manifest(&d).is_none());
    }

    #[test]
    fn only_a_matching_download_becomes_a_cached_blob() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap();
        let d = Digest::of(b"hello world");
        let p = c.partial(&d, 11).unwrap();
        p.write(0, b"hello ").unwrap();
        assert!(matches!(c.complete(&p), Err(Incomplete::NotHeld)));
        p.write(6, b"WORLD").unwrap();
        assert!(matches!(c.complete(&p), Err(Incomplete::Mismatch(_))));
        assert!(c.blob(&d).is_none());
        assert!(!p.write(0, b"hello world").unwrap().complete, "ended");
        drop(p);
        let p = c.partial(&d, 11).unwrap();
        assert!(p.held().is_empty(), "a mismatch leaves nothing behind");
        p.write(0, b"hello world").unwrap();
        let path = c.complete(&p).unwrap();
        assert_eq!(fs::read(path).unwrap(), b"hello world");
        assert!(c.downloads().is_empty());
    }

    #[test]
    fn insert_file_only_takes_matching_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("c"), 1 << 30).unwrap();
        let src = dir.path().join("f");
        fs::write(&src, b"pushed").unwrap();
        c.insert_file(&src, &Digest::of(b"other")).unwrap();
        assert!(c.blob(&Digest::of(b"other")).is_none());
        c.insert_file(&src, &Digest::of(b"pushed")).unwrap();
        assert_eq!(
            fs::read(c.blob(&Digest::of(b"pushed")).unwrap()).unwrap(),
            b"pushed"
        );
    }

    #[test]
    fn first_seen_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap();
        let d = Digest::of(b"x");
        assert_eq!(c.first_seen(&d, 100), 100);
        assert_eq!(c.first_seen(&d, 200), 100);
    }

    #[test]
    fn tag_refs_and_listings() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path(), 1 << 30).unwrap();
        let r = TagRef {
            digest: Digest::of(b"m"),
            checked: 5,
        };
        c.put_tag_ref("localhost:5000", "org/app", "v1", &r)
            .unwrap();
        assert_eq!(c.tag_ref("localhost:5000", "org/app", "v1"), Some(r));
        assert_eq!(c.tag_ref("localhost:5000", "org/app", "v2"), None);
        c.put_listing("localhost:5000", None, &["org/app".into()])
            .unwrap();
        assert_eq!(
            c.listing("localhost:5000", None),
            Some(vec!["org/app".to_string()])
        );
        assert!(c.knows_host("localhost:5000"));
        assert!(!c.knows_host("other:5000"));
    }
}
