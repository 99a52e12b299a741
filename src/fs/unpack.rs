//! Directory layers (`io.deis.oras.content.unpack=true`): the verified
//! tar+gzip layer is unpacked once into the cache, with the same safety
//! rules as titles, and its contents are served from there.
//!
//! An unpacked tree is cache content like a blob: it counts against
//! `--cache-size` and the disk floor, is evicted least recently used, and is
//! kept while a file of it is open or a listing of it is made. A layer is
//! unpacked into a temporary folder and moved into place whole.
//!
//! It is charged `cache::file_charge` per file and `cache::ENTRY_CHARGE`
//! per folder, and written into the room the cache has free (its bound and
//! the disk floor, less what it holds). A layer that outgrows that room is
//! measured to its end without writing; then the cache evicts idle entries
//! for it (least recently used first) and it is unpacked again, or, if it
//! cannot fit even so, it is refused with nothing evicted. An unpack stops,
//! and its partial tree is removed, as soon as
//!
//! - the tar stream inside the gzip passes `MAX_RATIO` times the layer's
//!   compressed size, and `RATIO_FLOOR` (a gzip bomb), or
//! - what it would write passes the room the cache can make for it, or
//! - a tar metadata entry (a long name, PAX headers) is over `MAX_META`.
//!
//! The listing then fails with EIO and one log line saying which limit.
//! A layer refused for its content (too large an expansion, a broken tar)
//! is not tried again by this mount; one refused for want of room is tried
//! again after `RETRY_ROOM`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::namespace::layer_key;
use super::{lock, Children, Error, Fs};
use crate::cache::{file_charge, Cache, ENTRY_CHARGE};
use crate::digest::Digest;
use crate::tree::archive::safe_entry_path;
use crate::tree::view::{is_safe_component, Desc};
use crate::tree::{Ino, Node};

/// A layer's tar stream may be at most this many times its compressed size…
pub const MAX_RATIO: u64 = 100;
/// …unless it is at most this long.
pub const RATIO_FLOOR: u64 = 64 << 20;
/// A tar entry that only names the next one (GNU long name, PAX) is at most this long.
pub const MAX_META: u64 = 1 << 20;
/// A layer refused for want of room is tried again after this long.
const RETRY_ROOM: Duration = Duration::from_secs(60);

/// The most a layer of `compressed` bytes may expand to (its tar stream).
pub fn expansion_limit(compressed: u64) -> u64 {
    compressed.saturating_mul(MAX_RATIO).max(RATIO_FLOOR)
}

/// Why a layer was not unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Its tar stream passes `expansion_limit`.
    TooLarge { compressed: u64, limit: u64 },
    /// It needs more room than the cache can make for it.
    NoRoom { needed: u64 },
    /// The gzip or tar is broken, or a metadata entry too long.
    Bad(String),
    /// Local I/O failed.
    Io(String),
}

impl Failure {
    /// Whether trying again cannot help: the layer's bytes are verified, so
    /// what they unpack to never changes.
    fn is_permanent(&self) -> bool {
        matches!(self, Failure::TooLarge { .. } | Failure::Bad(_))
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TooLarge { compressed, limit } => write!(
                f,
                "it expands past {} from {} compressed (the limit is {MAX_RATIO} times the \
                 compressed size, and at least {}): refused as a decompression bomb; nothing kept",
                mib(*limit),
                mib(*compressed),
                mib(RATIO_FLOOR)
            ),
            Failure::NoRoom { needed } => write!(
                f,
                "it needs more room than the cache has: {} unpacked, and unpacked layers \
                 count against --cache-size and the disk is never filled past 95%, beside \
                 what is in use; nothing kept, nothing evicted for it; raise --cache-size or \
                 free disk space",
                mib(*needed)
            ),
            Failure::Bad(why) => write!(f, "{why}"),
            Failure::Io(why) => write!(f, "{why}"),
        }
    }
}

/// Room for what an unpack writes: the cache in a mount (`Cache::reserve`),
/// anything in tests and fuzzing.
pub trait Room {
    /// The bytes a tree with `written` bytes on disk may hold, at least
    /// `need`, or `None`. Without `evict`, the room free now; with it, the
    /// room after evicting for `need` (nothing evicted when it cannot fit).
    fn reserve(&self, written: u64, need: u64, evict: bool) -> Result<Option<u64>, String>;
}

impl Room for Cache {
    fn reserve(&self, written: u64, need: u64, evict: bool) -> Result<Option<u64>, String> {
        Cache::reserve(self, written, need, evict).map_err(|e| e.to_string())
    }
}

/// Room without a bound.
pub struct Unbounded;

impl Room for Unbounded {
    fn reserve(&self, _: u64, _: u64, _: bool) -> Result<Option<u64>, String> {
        Ok(Some(u64::MAX))
    }
}

/// The directory layers of this mount: one unpack at a time, and the layers
/// refused (with when and why).
pub(super) struct Unpacker {
    one_at_a_time: tokio::sync::Mutex<()>,
    refused: Arc<Mutex<HashMap<Digest, (Failure, Instant)>>>,
}

impl Unpacker {
    pub(super) fn new() -> Unpacker {
        Unpacker {
            one_at_a_time: tokio::sync::Mutex::new(()),
            refused: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Why `d` was refused, if that still holds.
    pub(super) fn refused(&self, d: &Digest) -> Option<Failure> {
        let mut refused = lock(&self.refused);
        let (why, at) = refused.get(d)?;
        if why.is_permanent() || at.elapsed() < RETRY_ROOM {
            return Some(why.clone());
        }
        refused.remove(d);
        None
    }
}

/// An unpacked tree kept from eviction while this lives.
pub(super) struct Held {
    cache: Arc<Cache>,
    layer: Digest,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cache.release_unpacked(&self.layer);
    }
}

impl Fs {
    /// The unpacked tree of layer `layer`, unpacked first if needed, held
    /// until the answer is dropped.
    pub(super) async fn unpacked_root(&self, repo: &str, layer: &Desc) -> Result<Held, Error> {
        let d = &layer.digest;
        let held = || {
            self.cache.hold_unpacked(d).then(|| Held {
                cache: self.cache.clone(),
                layer: d.clone(),
            })
        };
        if let Some(h) = held() {
            return Ok(h);
        }
        let refusal = |why: Failure| Error::Unpack {
            digest: d.clone(),
            reason: why.to_string(),
        };
        if let Some(why) = self.unpacker.refused(d) {
            return Err(refusal(why));
        }
        let _one = self.unpacker.one_at_a_time.lock().await;
        if let Some(h) = held() {
            return Ok(h);
        }
        let blob = self.fetch_blob(repo, layer).await?;
        let name = layer
            .title()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        let (cache, layer2, refused) = (
            self.cache.clone(),
            layer.clone(),
            self.unpacker.refused.clone(),
        );
        // The blocking unpack runs to its end even if this operation is
        // interrupted; it records its own refusal.
        let done = tokio::task::spawn_blocking(move || {
            let r = unpack_layer(&cache, &blob, &layer2, &name);
            if let Err(why) = &r {
                tracing::error!(layer = %layer2.digest, "layer cannot be unpacked: {why}");
                lock(&refused).insert(layer2.digest.clone(), (why.clone(), Instant::now()));
            }
            r
        })
        .await
        .map_err(|e| Error::Io {
            what: "unpack task".into(),
            source: io::Error::other(e),
        })?;
        done.map_err(refusal)?;
        held().ok_or_else(|| Error::Unpack {
            digest: d.clone(),
            reason: "evicted right after it was unpacked (the cache is too small for it \
                     beside what is in use); retry"
                .into(),
        })
    }

    pub(super) fn unpacked_path(&self, layer: &Digest, path: &[String]) -> Result<PathBuf, Error> {
        let mut p = self.cache.unpacked(layer);
        for c in path {
            if !is_safe_component(c) {
                return Err(Error::NotFound);
            }
            p.push(c);
        }
        Ok(p)
    }

    /// Opens a file of an unpacked tree (unpacked again if it was evicted),
    /// with the tree held until the file is closed.
    pub(super) async fn open_unpacked(
        &self,
        repo: &str,
        layer: &Desc,
        path: &[String],
    ) -> Result<(File, Held), Error> {
        let held = self.unpacked_root(repo, layer).await?;
        let p = self.unpacked_path(&layer.digest, path)?;
        let f = File::open(&p).map_err(|source| Error::Io {
            what: p.display().to_string(),
            source,
        })?;
        Ok((f, held))
    }

    pub(super) async fn unpacked_children(
        &self,
        ino: Ino,
        repo: &str,
        layer: &Arc<Desc>,
        path: &[String],
        mtime: i64,
    ) -> Result<Children, Error> {
        let _held = self.unpacked_root(repo, layer).await?;
        let dir = self.unpacked_path(&layer.digest, path)?;
        let rd = fs::read_dir(&dir).map_err(|source| Error::Io {
            what: dir.display().to_string(),
            source,
        })?;
        let mut out = Vec::new();
        let shared: crate::tree::RepoName = repo.into();
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let mut p = path.to_vec();
            p.push(name.clone());
            let node = if meta.is_dir() {
                Node::UnpackedDir {
                    repo: shared.clone(),
                    layer: layer.clone(),
                    path: p.into(),
                    mtime,
                }
            } else {
                use std::os::unix::fs::PermissionsExt;
                Node::UnpackedFile {
                    repo: shared.clone(),
                    layer: layer.clone(),
                    path: p.into(),
                    size: meta.len(),
                    mode: meta.permissions().mode(),
                    mtime,
                }
            };
            let (key, links) = layer_key(ino, &name, &node);
            let (i, n) = self.namespace.intern(key, ino, &name, node, links);
            out.push((name, i, n));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Unpacks the verified tar+gzip `blob` of `layer` into the cache, through
/// a temporary folder and a rename. ORAS writes a folder `name` as entries
/// `name/...`: that leading folder is the layer's own, so its contents
/// become the tree. Whatever stops it, nothing of it is left behind.
fn unpack_layer(cache: &Cache, blob: &Path, layer: &Desc, name: &str) -> Result<(), Failure> {
    let io = |e: io::Error| Failure::Io(e.to_string());
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(cache.tmp_dir())
        .map_err(io)?;
    let f = File::open(blob).map_err(io)?;
    let bytes = unpack_into(f, layer.size, tmp.path(), &layer.digest, cache)?;
    let inner = tmp.path().join(name);
    let only_inner = !name.is_empty()
        && inner.is_dir()
        && fs::read_dir(tmp.path())
            .map(|rd| rd.count() == 1)
            .unwrap_or(false);
    let src = if only_inner {
        inner
    } else {
        tmp.path().to_path_buf()
    };
    cache
        .adopt_unpacked(&src, &layer.digest, bytes)
        .map_err(|e| Failure::Io(e.to_string()))
    // `tmp` is removed here with whatever was not moved.
}

/// Unpacks the tar+gzip stream `gz` (`compressed` bytes long) of layer `d`
/// into the empty folder `into`, within the limits of the module doc and
/// the room `room` gives: first into the free room, and if it needs more,
/// once more after `room` made room for all of it. Returns the bytes
/// charged. Entries with unsafe paths, links, devices and anything but
/// regular files and folders are skipped, with a log line. On failure
/// `into` may hold a partial tree: the caller removes it.
pub fn unpack_into<R: Read + Seek>(
    mut gz: R,
    compressed: u64,
    into: &Path,
    d: &Digest,
    room: &dyn Room,
) -> Result<u64, Failure> {
    let mut meter = Meter {
        room,
        charged: 0,
        granted: 0,
        writing: true,
        evict: false,
    };
    pass(&mut gz, compressed, into, d, &mut meter)?;
    if meter.writing {
        return Ok(meter.charged);
    }
    // Measured, not written: it needs more than the free room.
    let needed = meter.charged;
    let granted = match room.reserve(0, needed, true) {
        Ok(Some(g)) => g,
        Ok(None) => return Err(Failure::NoRoom { needed }),
        Err(e) => return Err(Failure::Io(e)),
    };
    let io = |e: io::Error| Failure::Io(e.to_string());
    for e in fs::read_dir(into).map_err(io)?.flatten() {
        let p = e.path();
        let gone = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        gone.map_err(io)?;
    }
    gz.rewind().map_err(io)?;
    let mut meter = Meter {
        room,
        charged: 0,
        granted,
        writing: true,
        evict: true,
    };
    pass(&mut gz, compressed, into, d, &mut meter)?;
    Ok(meter.charged)
}

/// One pass over the stream: writes while `meter` says so, then measures.
fn pass<R: Read>(
    gz: &mut R,
    compressed: u64,
    into: &Path,
    d: &Digest,
    meter: &mut Meter<'_>,
) -> Result<(), Failure> {
    let limit = expansion_limit(compressed);
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(gz),
        left: limit,
        hit: false,
    };
    let mut archive = tar::Archive::new(stream);
    let r = unpack_entries(&mut archive, into, d, meter);
    if archive.into_inner().hit {
        return Err(Failure::TooLarge { compressed, limit });
    }
    r
}

fn unpack_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    into: &Path,
    d: &Digest,
    meter: &mut Meter<'_>,
) -> Result<(), Failure> {
    let bad = |e: io::Error| Failure::Bad(format!("broken tar+gzip: {e}"));
    let io = |e: io::Error| Failure::Io(e.to_string());
    // Raw entries: the tar crate would read a long name or PAX entry of
    // any length into memory; those are read here, within `MAX_META`.
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut dirs = std::collections::HashSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(bad)?.raw(true) {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        let meta = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        if meta {
            let size = entry.size();
            if size > MAX_META {
                return Err(Failure::Bad(format!(
                    "a tar metadata entry of {size} bytes (the limit is {MAX_META})"
                )));
            }
            let mut v = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut v).map_err(bad)?;
            if kind.is_gnu_longname() {
                while v.last() == Some(&0) {
                    v.pop();
                }
                long_name = Some(v);
            } else if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&v) {
                    let ext = ext.map_err(bad)?;
                    match ext.key() {
                        Ok("path") => pax_path = Some(ext.value_bytes().to_vec()),
                        Ok("size") => {
                            pax_size = std::str::from_utf8(ext.value_bytes())
                                .ok()
                                .and_then(|s| s.parse().ok())
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        let header_path = entry.header().path_bytes().to_vec();
        let raw_path = long_name.take().or(pax_path.take()).unwrap_or(header_path);
        if let Some(size) = pax_size.take() {
            if size != entry.size() {
                return Err(Failure::Bad(format!(
                    "a tar entry of {size} bytes (PAX size); entries of 8 GiB or more are not supported"
                )));
            }
        }
        let raw = String::from_utf8_lossy(&raw_path).to_string();
        let Some(rel) = safe_entry_path(&raw) else {
            tracing::warn!(layer = %d, entry = %raw, "tar entry has an unsafe path; skipped");
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let is_dir = kind.is_dir();
        if !is_dir && !kind.is_file() {
            tracing::warn!(layer = %d, entry = %raw, "tar entry is not a file or folder; skipped");
            continue;
        }
        // Every folder on the way is made (and charged) once.
        let upto = if is_dir { rel.len() } else { rel.len() - 1 };
        let mut target = into.to_path_buf();
        let mut clash = false;
        for (i, c) in rel.iter().enumerate() {
            target.push(c);
            if i >= upto {
                break;
            }
            if dirs.contains(&target) {
                continue;
            }
            if meter.writing && target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                clash = true;
                break;
            }
            if meter.charge(ENTRY_CHARGE)? {
                fs::create_dir(&target).map_err(io)?;
            }
            dirs.insert(target.clone());
        }
        if clash || (meter.writing && !is_dir && target.is_dir()) {
            tracing::warn!(layer = %d, entry = %raw, "tar entry is both a file and a folder; skipped");
            continue;
        }
        if is_dir {
            continue;
        }
        if !meter.writing {
            // Measuring: the header says what would be written (the tar
            // reader skips the data).
            meter.charge(file_charge(entry.size()))?;
            continue;
        }
        let mut out = File::create(&target).map_err(io)?;
        let mut len = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(e)),
            };
            if !meter.charge(n as u64)? {
                // Out of free room: the rest of this file is measured.
                drop(out);
                let _ = fs::remove_file(&target);
                let rest = entry.size().saturating_sub(len + n as u64);
                meter.charge(file_charge(len + n as u64 + rest) - (len + n as u64))?;
                break;
            }
            out.write_all(&buf[..n]).map_err(io)?;
            len += n as u64;
        }
        if !meter.writing {
            continue;
        }
        meter.charge(file_charge(len) - len)?;
        let mode = entry.header().mode().unwrap_or(0o644);
        use std::os::unix::fs::PermissionsExt;
        let perm = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
        fs::set_permissions(&target, fs::Permissions::from_mode(perm)).map_err(io)?;
    }
    Ok(())
}

/// The decompressed stream, cut off past the expansion limit.
struct Capped<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.hit {
            return Err(io::Error::other("past the expansion limit"));
        }
        // One byte more than is left tells a stream that ends at the limit
        // from one that goes on past it.
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.hit = true;
            return Err(io::Error::other("past the expansion limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What an unpack has charged, against the room it was given.
struct Meter<'a> {
    room: &'a dyn Room,
    charged: u64,
    granted: u64,
    /// Still writing (else measuring what it would take).
    writing: bool,
    /// Room may be made by eviction (else only free room is used, and the
    /// unpack turns to measuring when that runs out).
    evict: bool,
}

impl Meter<'_> {
    /// Counts `n` more bytes, before they are written; whether to write them.
    fn charge(&mut self, n: u64) -> Result<bool, Failure> {
        let need = self.charged.saturating_add(n);
        if self.writing && need > self.granted {
            match self.room.reserve(self.charged, need, self.evict) {
                Ok(Some(granted)) => self.granted = granted,
                Ok(None) if self.evict => return Err(Failure::NoRoom { needed: need }),
                Ok(None) => self.writing = false,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        self.charged = need;
        Ok(self.writing)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;

    /// A tar+gzip of `entries`: a name ending in `/` is a folder; a file is
    /// `len` bytes of `fill` (so a bomb need not be held in memory).
    pub fn targz(entries: &[(&str, u64, u8)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, len, fill) in entries {
            let mut h = tar::Header::new_gnu();
            if name.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, name, io::empty()).unwrap();
            } else {
                h.set_size(*len);
                h.set_mode(0o644);
                let data = io::repeat(*fill).take(*len);
                b.append_data(&mut h, name, data).unwrap();
            }
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    /// Room for `most` bytes, counting how often it was asked.
    struct Most(u64, Cell<u32>);

    impl Room for Most {
        fn reserve(&self, _: u64, need: u64, _: bool) -> Result<Option<u64>, String> {
            self.1.set(self.1.get() + 1);
            Ok((need <= self.0).then_some(self.0))
        }
    }

    /// `free` bytes free, and `most` once idle entries are evicted.
    struct Evicting {
        free: u64,
        most: u64,
        evicted: Cell<bool>,
    }

    impl Room for Evicting {
        fn reserve(&self, _: u64, need: u64, evict: bool) -> Result<Option<u64>, String> {
            let room = if evict { self.most } else { self.free };
            if evict && need <= room {
                self.evicted.set(true);
            }
            Ok((need <= room).then_some(room))
        }
    }

    fn run(gz: &[u8], room: &dyn Room) -> (tempfile::TempDir, Result<u64, Failure>) {
        let dir = tempfile::tempdir().unwrap();
        let r = unpack_into(
            io::Cursor::new(gz),
            gz.len() as u64,
            dir.path(),
            &Digest::of(gz),
            room,
        );
        (dir, r)
    }

    /// Bytes of the files under `p`.
    fn du(p: &Path) -> u64 {
        fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    du(&e.path())
                } else {
                    m.len()
                }
            })
            .sum()
    }

    #[test]
    fn a_layer_unpacks_with_folders_files_and_long_names_charged_in_blocks() {
        let long = format!("dir/{}/f", "n".repeat(200));
        let gz = targz(&[("dir/", 0, 0), ("dir/a.txt", 5000, b'a'), (&long, 3, b'b')]);
        let (dir, r) = run(&gz, &Unbounded);
        // dir, the long folder: 2 folders; a.txt two blocks, f one.
        assert_eq!(r, Ok(2 * ENTRY_CHARGE + 3 * 4096));
        assert_eq!(
            fs::read(dir.path().join("dir/a.txt")).unwrap(),
            vec![b'a'; 5000]
        );
        assert_eq!(fs::read(dir.path().join(&long)).unwrap(), b"bbb");
    }

    /// Regression (issue 11, item 4): a 5.2 MB layer that expanded to
    /// 5 GiB was written out whole. Past `MAX_RATIO` (and the floor) it
    /// stops, having written no more than the limit.
    #[test]
    fn a_gzip_bomb_stops_at_the_expansion_limit() {
        let gz = targz(&[("zeros", RATIO_FLOOR + (1 << 20), 0)]);
        assert!(gz.len() < 1 << 20, "a bomb: {} bytes", gz.len());
        let (dir, r) = run(&gz, &Unbounded);
        assert_eq!(
            r,
            Err(Failure::TooLarge {
                compressed: gz.len() as u64,
                limit: RATIO_FLOOR
            })
        );
        assert!(du(dir.path()) <= RATIO_FLOOR);
        // Just under the floor is no bomb.
        let gz = targz(&[("zeros", RATIO_FLOOR - (1 << 20), 0)]);
        assert!(run(&gz, &Unbounded).1.is_ok());
    }

    #[test]
    fn an_unpack_stops_before_it_writes_past_its_room() {
        let gz = targz(&[("a", 3 << 20, 1), ("b", 3 << 20, 2), ("c", 3 << 20, 3)]);
        let room = Most(7 << 20, Cell::new(0));
        let (dir, r) = run(&gz, &room);
        assert_eq!(r, Err(Failure::NoRoom { needed: 9 << 20 }));
        assert!(du(dir.path()) <= 7 << 20);
        // Room is asked for when the last answer runs out, not at every write.
        assert_eq!(room.1.get(), 3);
        let room = Most(10 << 20, Cell::new(0));
        assert_eq!(run(&gz, &room).1, Ok(9 << 20));
        assert_eq!(room.1.get(), 1);
    }

    #[test]
    fn a_layer_past_the_free_room_is_measured_then_unpacked_after_eviction() {
        let gz = targz(&[("d/", 0, 0), ("d/a", 3 << 20, 1), ("d/b", 6 << 20, 2)]);
        let want = ENTRY_CHARGE + (9 << 20);
        // Eviction cannot make room: refused, nothing evicted.
        let room = Evicting {
            free: 5 << 20,
            most: 8 << 20,
            evicted: Cell::new(false),
        };
        assert_eq!(run(&gz, &room).1, Err(Failure::NoRoom { needed: want }));
        assert!(!room.evicted.get());
        // It can: the layer is unpacked whole, in a second pass.
        let room = Evicting {
            free: 5 << 20,
            most: 20 << 20,
            evicted: Cell::new(false),
        };
        let (dir, r) = run(&gz, &room);
        assert_eq!(r, Ok(want));
        assert!(room.evicted.get());
        assert_eq!(fs::read(dir.path().join("d/a")).unwrap(), vec![1; 3 << 20]);
        assert_eq!(fs::read(dir.path().join("d/b")).unwrap(), vec![2; 6 << 20]);
    }

    #[test]
    fn many_empty_files_are_charged_a_block_each() {
        let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, u64, u8)> = names.iter().map(|n| (n.as_str(), 0, 0)).collect();
        let gz = targz(&entries);
        assert_eq!(run(&gz, &Unbounded).1, Ok(100 * ENTRY_CHARGE));
        let (_, r) = run(&gz, &Most(50 * ENTRY_CHARGE, Cell::new(0)));
        assert_eq!(
            r,
            Err(Failure::NoRoom {
                needed: 100 * ENTRY_CHARGE
            })
        );
    }

    /// A PAX header is read into memory: one of gigabytes (a few MB of
    /// gzip) must not be.
    #[test]
    fn a_huge_metadata_entry_is_refused_before_it_is_read() {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(MAX_META + 1);
        h.set_path("pax").unwrap();
        h.set_cksum();
        b.append(&h, io::repeat(b'x').take(MAX_META + 1)).unwrap();
        let gz = b.into_inner().unwrap().finish().unwrap();
        let (_, r) = run(&gz, &Unbounded);
        assert!(
            matches!(&r, Err(Failure::Bad(why)) if why.contains("metadata")),
            "{r:?}"
        );
    }

    #[test]
    fn a_pax_path_names_the_next_entry() {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let long = format!("{}/file", "p".repeat(150));
        let body = format!(" path={long}\n");
        let mut n = body.len();
        while format!("{n}{body}").len() != n {
            n = format!("{n}{body}").len();
        }
        let record = format!("{n}{body}");
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(record.len() as u64);
        h.set_path("PaxHeader").unwrap();
        h.set_cksum();
        b.append(&h, record.as_bytes()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_path("short").unwrap();
        h.set_mode(0o755);
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        let gz = b.into_inner().unwrap().finish().unwrap();
        let (dir, r) = run(&gz, &Unbounded);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(fs::read(dir.path().join(&long)).unwrap(), b"hi");
        assert!(!dir.path().join("short").exists());
    }
}
