//! The on-disk cache, content-addressed and shared by concurrent mounts.
//!
//! Layout under the cache folder:
//!
//! ```text
//! blobs/sha256/<hex>       verified blobs (only ever created by rename after verification)
//! verified/sha256/<hex>    what that blob's file was when it was verified (see `identity`);
//!                          its mtime is the blob's last use, the clock of eviction
//! manifests/sha256/<hex>   verified manifest bytes, with <hex>.type holding the media type
//! partial/sha256/<hex>     a download in progress (sparse), locked with flock, with
//!                          <hex>.map of the ranges it holds; resumed after a crash
//! refs/<host>/<repo>/...   last known tag resolutions and listings (for --tag-ttl and offline use)
//! seen/sha256/<hex>        when a manifest digest was first seen (its folder's mtime)
//! unpacked/sha256/<hex>/   the unpacked tree of verified directory layer <hex> (`unpacked`),
//!                          with <hex>.size holding the bytes it was charged; its mtime is
//!                          the tree's last use
//! ```
//!
//! Blobs and unpacked trees count against the bound (`--cache-size`) and the
//! disk floor (the disk never filled past 95%), and both are evicted least
//! recently used first, never while this process has them in use.
//!
//! Invariant: whatever is served from `blobs/` and `manifests/` is
//! verified. A file gets there only by `rename` from a temporary name after
//! its sha256 matched, so a crash or a concurrent mount never exposes a
//! partial file. A file changed there afterwards (by hand, by a tamperer,
//! by a restore from backup) is caught when it is opened: a manifest is
//! hashed at every read, a blob whenever its file is not the one recorded
//! at verification; one that no longer matches is dropped, so the caller
//! fetches it again. `check` hashes everything (`regfs verify`), which also
//! finds bytes that rotted without a write.
//!
//! The folder is created private to its user (0700): other users can
//! neither read what was fetched nor change it.

mod check;
mod evict;
mod identity;
mod partial;
mod unpacked;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{Digest, Verifier};

pub use check::{Checked, Damaged, Stored};
pub use evict::{plan_eviction, plan_room, CacheEntry, Cached};
use identity::Identity;
pub use partial::{BadChunk, Partial, Progress, RangeSet};
pub use unpacked::{file_charge, Usage, ENTRY_CHARGE};

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
    /// Blobs and unpacked trees this process has in use, which eviction
    /// must keep.
    open: Mutex<HashMap<Cached, usize>>,
    /// Records this process read or wrote, and when it last marked each
    /// blob used: a warm open then costs one `fstat`, not a record read
    /// and a write (many small files read again and again).
    known: Mutex<HashMap<Digest, (Identity, Option<std::time::Instant>)>>,
    /// When this process last marked each unpacked tree used.
    trees_touched: Mutex<HashMap<Digest, std::time::Instant>>,
    /// What the last eviction scan found: when, the bytes cached then, and
    /// the budget; with the bytes this process added since, it tells when
    /// a new scan is needed (`evict_if_needed`).
    scanned: Mutex<Option<(std::time::Instant, u64, u64)>>,
    added: std::sync::atomic::AtomicU64,
}

/// A scan of the cache is skipped while the bytes added since the last one
/// keep it under this share of its budget, for at most `RESCAN_EVERY`
/// (other mounts sharing the cache, and the disk, change too).
const SCAN_BELOW: f64 = 0.9;
const RESCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How often one process marks a blob used (the LRU clock need not be finer).
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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

/// Creates `dir` (and any missing parents) private to this user, 0700. A
/// folder that exists already keeps its mode.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The umask can only have taken bits away; set the mode exactly anyway.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

impl Cache {
    /// Creates the cache folder, private (0700), unless it exists.
    pub fn create_dir(root: &Path) -> Result<(), Error> {
        create_private_dir(root).map_err(err(root))
    }

    pub fn open(root: &Path, max_bytes: u64) -> Result<Cache, Error> {
        Cache::create_dir(root)?;
        for sub in [
            "blobs/sha256",
            "verified/sha256",
            "manifests/sha256",
            "partial/sha256",
            "refs",
            "seen/sha256",
            "unpacked/sha256",
            "decompressed/sha256",
            "tmp",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(err(&p))?;
        }
        unpacked::remove_stale(&root.join("tmp"));
        Ok(Cache {
            root: root.to_path_buf(),
            max_bytes,
            open: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            trees_touched: Mutex::new(HashMap::new()),
            scanned: Mutex::new(None),
            added: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_file(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Where the tar inside the verified compressed layer `d` is kept.
    pub fn decompressed(&self, d: &Digest) -> PathBuf {
        self.root.join("decompressed/sha256").join(d.hex())
    }

    /// A folder for temporary files on the cache's file system (so a
    /// finished one moves into place by rename).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Where the identity of blob `d`'s file at verification is recorded.
    fn record_file(&self, d: &Digest) -> PathBuf {
        self.root.join("verified/sha256").join(d.hex())
    }

    /// Whether a file is where the verified blob `d` goes, without checking
    /// it (cheap: for a decision under a lock; `open_blob` checks).
    pub fn has_blob_file(&self, d: &Digest) -> Option<PathBuf> {
        let p = self.blob_file(d);
        p.exists().then_some(p)
    }

    /// The verified blob's path, if the cache has it. A file changed since
    /// it was verified is hashed again first (blocking), and dropped if it
    /// no longer matches.
    pub fn blob(&self, d: &Digest) -> Option<PathBuf> {
        let p = self.blob_file(d);
        let f = File::open(&p).ok()?;
        self.still_verified(d, &f).then_some(p)
    }

    /// Opens a cached blob for reading and marks it used (for LRU) and open
    /// (so eviction keeps it). Pair with `release`. The file returned is
    /// the one checked: unchanged since it was verified, or hashed again
    /// now; a file that no longer matches is dropped and `None` returned, so
    /// the caller fetches the blob again.
    pub fn open_blob(&self, d: &Digest) -> Option<File> {
        let p = self.blob_file(d);
        let f = File::open(&p).ok()?;
        // (The size is checked against the descriptor by the caller.)
        if !self.still_verified(d, &f) {
            return None;
        }
        self.touch(d);
        *self.lock_open().entry(Cached::Blob(d.clone())).or_insert(0) += 1;
        Some(f)
    }

    /// Whether this process has seen blob `d` verified (no I/O). Its file
    /// is checked again when it is opened (`open_blob`).
    pub fn is_known(&self, d: &Digest) -> bool {
        self.lock_known().contains_key(d)
    }

    /// Whether `f`, opened as blob `d`, still holds the verified bytes: the
    /// file recorded at verification, unchanged, or else bytes that hash to
    /// `d` now (then recorded anew). A file that does not is dropped.
    fn still_verified(&self, d: &Digest, f: &File) -> bool {
        let Ok(meta) = f.metadata() else {
            return false;
        };
        let now = Identity::of(&meta);
        if self.lock_known().get(d).is_some_and(|(id, _)| *id == now) {
            return true;
        }
        let recorded = fs::read(self.record_file(d))
            .ok()
            .and_then(|b| Identity::from_json(&b));
        if recorded == Some(now) {
            self.remember(d, now);
            return true;
        }
        match identity::digest_of(f) {
            Ok(actual) if actual == *d => {
                if recorded.is_some() {
                    tracing::info!(digest = %d, "cached blob changed on disk since it was verified, but still matches; keeping it");
                }
                // The identity seen before hashing: a write during the hash
                // leaves the record stale, and the next open hashes again.
                self.record(d, now);
                true
            }
            Ok(actual) => {
                tracing::error!(digest = %d, %actual, "cached blob changed on disk since it was verified and no longer matches its digest; dropping it (it is fetched again)");
                self.drop_blob(d, Some(now.ino()));
                false
            }
            Err(e) => {
                tracing::warn!(digest = %d, "cannot read cached blob to verify it again: {e}");
                false
            }
        }
    }

    fn lock_known(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Digest, (Identity, Option<std::time::Instant>)>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the record of `d` as `id`, keeping when it was last touched.
    fn remember(&self, d: &Digest, id: Identity) {
        let mut known = self.lock_known();
        let touched = known.get(d).and_then(|(_, t)| *t);
        known.insert(d.clone(), (id, touched));
    }

    /// Records what blob `d`'s file is (just verified).
    fn record(&self, d: &Digest, id: Identity) {
        self.remember(d, id);
        if let Err(e) = write_atomic(&self.root, &self.record_file(d), &id.to_json()) {
            // Without a record the next open hashes the blob again: slower, not wrong.
            tracing::warn!(digest = %d, "cannot record the verified blob: {e}");
        }
    }

    /// Records the identity of the open file `f`, verified as blob `d`.
    fn record_open_file(&self, d: &Digest, f: &File) {
        match f.metadata() {
            Ok(m) => self.record(d, Identity::of(&m)),
            Err(e) => tracing::warn!(digest = %d, "cannot stat the verified blob: {e}"),
        }
    }

    /// Marks blob `d` used now: the mtime of its record is the LRU clock
    /// (the blob's own file is never touched after verification, so that
    /// its identity holds).
    fn touch(&self, d: &Digest) {
        {
            let mut known = self.lock_known();
            if let Some((_, t)) = known.get_mut(d) {
                if t.is_some_and(|t| t.elapsed() < TOUCH_EVERY) {
                    return;
                }
                *t = Some(std::time::Instant::now());
            }
        }
        if let Ok(f) = File::open(self.record_file(d)) {
            // Failing only makes eviction less fair.
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Removes blob `d` and its record; only if its file is still inode
    /// `ino` when given (not a good copy another mount just moved in).
    fn drop_blob(&self, d: &Digest, ino: Option<u64>) {
        let p = self.blob_file(d);
        let same = ino.is_none_or(|ino| fs::metadata(&p).is_ok_and(|m| m.ino() == ino));
        if same {
            self.lock_known().remove(d);
            let _ = fs::remove_file(&p);
            let _ = fs::remove_file(self.record_file(d));
        }
    }

    pub fn release(&self, d: &Digest) {
        self.unhold(&Cached::Blob(d.clone()));
    }

    fn unhold(&self, what: &Cached) {
        let mut open = self.lock_open();
        if let Some(n) = open.get_mut(what) {
            *n -= 1;
            if *n == 0 {
                open.remove(what);
            }
        }
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<Cached, usize>> {
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
                // The file hashed, as it is after the rename (which sets its ctime).
                self.record_open_file(p.digest(), p.file());
                p.remove(true);
                if let Err(e) = self.evict_if_needed(p.size()) {
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

    /// What the cache at `root` holds against its bound, without opening
    /// (or creating) it.
    pub fn usage_in(root: &Path) -> Usage {
        let mut u = Usage::default();
        if let Ok(rd) = fs::read_dir(root.join("blobs/sha256")) {
            for m in rd.flatten().filter_map(|e| e.metadata().ok()) {
                u.blobs += 1;
                u.blob_bytes += m.len();
            }
        }
        for (_, bytes, _) in unpacked::trees_in(root) {
            u.trees += 1;
            u.tree_bytes += bytes;
        }
        u
    }

    /// Downloads in progress or interrupted: digest hex and bytes held.
    pub fn downloads(&self) -> Vec<(String, u64)> {
        Cache::downloads_in(&self.root)
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

    /// Moves a verified file (`from`, open as `file`) into place.
    fn adopt(&self, from: &Path, file: &File, d: &Digest) -> Result<PathBuf, Error> {
        let dest = self.blob_file(d);
        fs::rename(from, &dest).map_err(err(&dest))?;
        self.record_open_file(d, file);
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if let Err(e) = self.evict_if_needed(size) {
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
        let file = File::open(&tmp).map_err(err(&tmp))?;
        let mut v = Verifier::new(d.clone());
        v.update_from(&file).map_err(err(&tmp))?;
        if v.finish().is_err() {
            let _ = fs::remove_file(&tmp);
            return Ok(());
        }
        self.adopt(&tmp, &file, d).map(|_| ())
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

    /// A saved listing and how long ago it was saved (its file's mtime).
    pub fn listing_with_age(
        &self,
        host: &str,
        repo: Option<&str>,
    ) -> Option<(Vec<String>, std::time::Duration)> {
        let p = self.refs_dir(host, repo).join("list.json");
        let age = fs::metadata(&p).ok()?.modified().ok()?.elapsed().ok()?;
        Some((serde_json::from_slice(&fs::read(p).ok()?).ok()?, age))
    }

    /// Forgets what is saved about `repo`'s tags `tags`, its tag list and
    /// the catalog (a commit just moved them, or made the repository: the
    /// next listing asks the registry).
    pub fn forget_tags(&self, host: &str, repo: &str, tags: &[String]) {
        let _ = fs::remove_file(self.refs_dir(host, None).join("list.json"));
        let dir = self.refs_dir(host, Some(repo));
        let _ = fs::remove_file(dir.join("list.json"));
        for t in tags {
            let _ = fs::remove_file(dir.join("tags").join(t));
        }
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

    /// Everything the cache holds against its bound: blobs and unpacked
    /// trees, with their sizes and last use.
    fn entries(&self) -> Result<Vec<CacheEntry>, Error> {
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
            // Last use: the mtime of the blob's record (see `touch`), else
            // of the blob itself.
            let size = meta.len();
            let used = fs::metadata(self.record_file(&digest))
                .unwrap_or(meta)
                .modified()
                .ok()
                .map(secs)
                .unwrap_or(0);
            entries.push(CacheEntry {
                what: Cached::Blob(digest),
                size,
                used,
            });
        }
        for (digest, size, used) in unpacked::trees_in(&self.root) {
            entries.push(CacheEntry {
                what: Cached::Unpacked(digest),
                size,
                used,
            });
        }
        Ok(entries)
    }

    /// Removes what `plan_eviction` or `plan_room` chose.
    fn remove_entries(&self, chosen: Vec<Cached>) {
        for what in chosen {
            match what {
                Cached::Blob(d) => {
                    let p = self.blob_file(&d);
                    tracing::info!(digest = %d, "evicting blob from cache");
                    if let Err(e) = fs::remove_file(&p) {
                        tracing::warn!(path = %p.display(), "cannot evict: {e}");
                    }
                    let _ = fs::remove_file(self.record_file(&d));
                }
                Cached::Unpacked(d) => {
                    tracing::info!(layer = %d, "evicting unpacked layer from cache");
                    self.remove_unpacked(&d);
                }
            }
        }
    }

    /// How many bytes the cache may hold now: its bound, and what keeps its
    /// disk below 95% full when `ours` bytes on it are the cache's.
    fn budget(&self, ours: u64) -> u64 {
        self.max_bytes
            .min(disk_budget(&self.root.join("blobs/sha256"), ours))
    }

    /// Removes least recently used blobs and unpacked trees until the cache
    /// fits its budget and its disk stays below 95% full.
    /// `evict`, unless the last scan, with the `bytes` just added and
    /// what was added since, shows the cache well under its budget: one
    /// scan costs a `stat` per cached entry, too much after every small
    /// blob of a walk.
    fn evict_if_needed(&self, bytes: u64) -> Result<(), Error> {
        use std::sync::atomic::Ordering;
        let added = self.added.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let scanned = *self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, total, budget)) = scanned {
            let fresh = at.elapsed() < RESCAN_EVERY;
            if fresh && ((total + added) as f64) < budget as f64 * SCAN_BELOW {
                return Ok(());
            }
        }
        self.evict()
    }

    pub fn evict(&self) -> Result<(), Error> {
        let entries = self.entries()?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let budget = self.budget(total);
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), total, budget));
        self.added.store(0, std::sync::atomic::Ordering::Relaxed);
        let open = self.lock_open().keys().cloned().collect();
        self.remove_entries(plan_eviction(entries, &open, budget));
        Ok(())
    }

    /// Room for a tree being unpacked (not yet an entry) that has
    /// `written` bytes on disk, to hold `need` bytes in all, within the
    /// bound and the disk floor. Without `evict`, the free room, if `need`
    /// fits in it. With `evict`, what is needed is evicted for it (least
    /// recently used first, nothing in use) and the room then returned, at
    /// least `need`; `None`, evicting nothing, when `need` cannot fit.
    pub fn reserve(&self, written: u64, need: u64, evict: bool) -> Result<Option<u64>, Error> {
        let entries = self.entries()?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let budget = self.budget(total.saturating_add(written));
        if !evict {
            let free = budget.saturating_sub(total);
            return Ok((need <= free).then_some(free));
        }
        let open = self.lock_open().keys().cloned().collect();
        Ok(
            plan_room(entries, &open, budget, need).map(|(chosen, granted)| {
                self.remove_entries(chosen);
                granted
            }),
        )
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

/// Writes `bytes` to `dest` through a temporary file and a rename. The
/// folder of `dest` is made only when the rename finds it missing: a walk
/// writes three small files per manifest into folders that nearly always
/// exist, and asking for them first cost two system calls a file.
fn write_atomic(root: &Path, dest: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp_dir = root.join("tmp");
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(err(&tmp_dir))?;
    tmp.write_all(bytes).map_err(err(dest))?;
    match tmp.persist(dest) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(err(parent))?;
            }
            e.file.persist(dest).map_err(|e| err(dest)(e.error))?;
            Ok(())
        }
        Err(e) => Err(err(dest)(e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_makes_missing_folders_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let dest = dir.path().join("a/b/c/file");
        write_atomic(dir.path(), &dest, b"first").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        write_atomic(dir.path(), &dest, b"second").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"second");
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "no temporary file is left behind"
        );
        // A destination that cannot be a folder's child is an error, not a
        // loop or a panic.
        let blocked = dir.path().join("a/b/c/file/under");
        assert!(write_atomic(dir.path(), &blocked, b"x").is_err());
    }

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

    /// A cache holding `bytes` as a verified blob (through a download).
    fn with_blob(bytes: &[u8]) -> (tempfile::TempDir, Cache, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("c"), 1 << 30).unwrap();
        let d = Digest::of(bytes);
        let p = c.partial(&d, bytes.len() as u64).unwrap();
        p.write(0, bytes).unwrap();
        c.complete(&p).unwrap();
        (dir, c, d)
    }

    fn read_all(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        io::Read::read_to_end(&mut f, &mut v).unwrap();
        v
    }

    #[test]
    fn the_cache_folder_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/cache");
        Cache::open(&root, 1 << 30).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        // A folder that exists keeps its mode.
        let mine = dir.path().join("mine");
        fs::create_dir(&mine).unwrap();
        fs::set_permissions(&mine, fs::Permissions::from_mode(0o750)).unwrap();
        Cache::open(&mine, 1 << 30).unwrap();
        assert_eq!(mode(&mine), 0o750);
    }

    /// Regression (issue 11, item 7): a byte flipped in a verified blob was
    /// served. Its file is no longer the one verified: hashed, dropped.
    #[test]
    fn a_blob_changed_on_disk_is_dropped_not_served() {
        let (_dir, c, d) = with_blob(b"the verified bytes");
        assert_eq!(read_all(c.open_blob(&d).unwrap()), b"the verified bytes");
        c.release(&d);
        let path = c.blob(&d).unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        {
            use std::os::unix::fs::FileExt;
            let f = File::options().write(true).open(&path).unwrap();
            f.write_all_at(b"T", 0).unwrap();
            // The mtime put back: only the ctime tells.
            f.set_modified(mtime).unwrap();
        }
        assert!(c.open_blob(&d).is_none(), "a changed blob was served");
        assert!(!path.exists(), "and it is dropped, to be fetched again");
        assert!(c.blob(&d).is_none());
        assert!(!c.record_file(&d).exists());
        // Replaced by a file of the same size (another inode): the same.
        let (_dir, c, d) = with_blob(b"the verified bytes");
        let path = c.blob(&d).unwrap();
        fs::write(path.with_extension("new"), b"THE VERIFIED BYTES").unwrap();
        fs::rename(path.with_extension("new"), &path).unwrap();
        assert!(c.blob(&d).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn a_blob_whose_file_changed_but_still_matches_is_kept_and_recorded() {
        let (_dir, c, d) = with_blob(b"same bytes");
        let path = c.blob(&d).unwrap();
        let before = fs::read(c.record_file(&d)).unwrap();
        // Copied out and back (a restore from backup): a new inode.
        fs::copy(&path, path.with_extension("copy")).unwrap();
        fs::rename(path.with_extension("copy"), &path).unwrap();
        assert_eq!(read_all(c.open_blob(&d).unwrap()), b"same bytes");
        c.release(&d);
        assert_ne!(
            fs::read(c.record_file(&d)).unwrap(),
            before,
            "recorded anew"
        );
        // A cache from before records, opened by a new process: hashed
        // once, then recorded.
        fs::remove_file(c.record_file(&d)).unwrap();
        let c = Cache::open(c.root(), 1 << 30).unwrap();
        assert!(c.blob(&d).is_some());
        assert!(c.record_file(&d).exists());
    }

    #[test]
    fn an_inserted_file_is_recorded_and_checked_like_a_download() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("c"), 1 << 30).unwrap();
        let src = dir.path().join("f");
        fs::write(&src, b"pushed").unwrap();
        let d = Digest::of(b"pushed");
        c.insert_file(&src, &d).unwrap();
        assert!(c.record_file(&d).exists());
        assert!(c.open_blob(&d).is_some());
        c.release(&d);
        // Linked where it can be: a write to the source is a write to the
        // cached blob, and is caught.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&src, b"PUSHED").unwrap();
        assert!(c.open_blob(&d).is_none());
    }

    #[test]
    fn check_reports_damaged_blobs_and_manifests_and_repair_drops_them() {
        let (dir, c, good) = with_blob(b"good blob");
        let p = c.partial(&Digest::of(b"bad blob"), 8).unwrap();
        p.write(0, b"bad blob").unwrap();
        let bad = Digest::of(b"bad blob");
        let bad_path = c.complete(&p).unwrap();
        let m = br#"{"schemaVersion":2}"#;
        let md = Digest::of(m);
        c.put_manifest(&md, m, Some("application/vnd.oci.image.manifest.v1+json"))
            .unwrap();
        // Bit rot: the bytes change, and nothing else about the file does.
        fs::write(&bad_path, b"bad BLOB").unwrap();
        let rotted = Identity::of(&fs::metadata(&bad_path).unwrap());
        c.record(&bad, rotted);
        assert!(c.blob(&bad).is_some(), "an open trusts an unchanged file");
        fs::write(c.root().join("manifests/sha256").join(md.hex()), b"{}").unwrap();

        let mut seen = Vec::new();
        let found = c.check(false, |d| seen.push(d.clone())).unwrap();
        assert_eq!(found.blobs, 2);
        assert_eq!(found.manifests, 1);
        let want = vec![
            Damaged {
                kind: Stored::Blob,
                digest: bad.clone(),
                found: Ok(Digest::of(b"bad BLOB")),
            },
            Damaged {
                kind: Stored::Manifest,
                digest: md.clone(),
                found: Ok(Digest::of(b"{}")),
            },
        ];
        assert_eq!(found.damaged, want);
        assert_eq!(seen, want);
        assert!(bad_path.exists(), "no --repair: nothing changed");

        let repaired = c.check(true, |_| {}).unwrap();
        assert_eq!(repaired.damaged, want);
        assert!(!bad_path.exists());
        assert!(!c.record_file(&bad).exists());
        assert!(!c.has_manifest(&md));
        assert!(c.blob(&good).is_some());
        assert_eq!(c.check(false, |_| {}).unwrap().damaged, []);
        drop(dir);
    }

    #[test]
    fn eviction_goes_by_last_use_recorded_beside_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("c"), 1 << 30).unwrap();
        let mut ds = Vec::new();
        for b in [b"aaaa", b"bbbb", b"cccc"] {
            let d = Digest::of(b);
            let p = c.partial(&d, 4).unwrap();
            p.write(0, b).unwrap();
            c.complete(&p).unwrap();
            ds.push(d);
        }
        let old = SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, d) in ds.iter().enumerate() {
            let t = old + std::time::Duration::from_secs(i as u64);
            File::open(c.record_file(d))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // The oldest is used now: the next oldest goes.
        c.open_blob(&ds[0]).unwrap();
        c.release(&ds[0]);
        let c = Cache { max_bytes: 8, ..c };
        c.evict().unwrap();
        let kept: Vec<bool> = ds.iter().map(|d| c.blob_file(d).exists()).collect();
        assert_eq!(kept, [true, false, true]);
        assert!(!c.record_file(&ds[1]).exists());
    }
}
