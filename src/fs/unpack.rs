//! Directory layers (`io.deis.oras.content.unpack=true`): the verified
//! tar+gzip layer is unpacked once into the cache, with the same safety
//! rules as titles, and its contents are served from there.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::namespace::child_key;
use super::{Children, Error, Fs};
use crate::digest::Digest;
use crate::tree::archive::safe_entry_path;
use crate::tree::view::{is_safe_component, Desc};
use crate::tree::{Ino, Node};

impl Fs {
    /// The folder the layer `d` is unpacked in, unpacking it first if needed.
    async fn unpacked_root(&self, repo: &str, layer: &Desc) -> Result<PathBuf, Error> {
        let dest = self.cache.unpacked(&layer.digest);
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.fetch_blob(repo, layer).await?;
        let (tmp, d) = (self.cache.tmp_dir(), layer.digest.clone());
        let dest2 = dest.clone();
        let name = layer
            .title()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or_default()
            .to_string();
        tokio::task::spawn_blocking(move || unpack(&tmp, &blob, &dest2, &d, &name))
            .await
            .map_err(|e| Error::Io {
                what: "unpack task".into(),
                source: io::Error::other(e),
            })??;
        Ok(dest)
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

    pub(super) async fn unpacked_children(
        &self,
        ino: Ino,
        repo: &str,
        layer: &Desc,
        path: &[String],
        mtime: i64,
    ) -> Result<Children, Error> {
        self.unpacked_root(repo, layer).await?;
        let dir = self.unpacked_path(&layer.digest, path)?;
        let rd = fs::read_dir(&dir).map_err(|source| Error::Io {
            what: dir.display().to_string(),
            source,
        })?;
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let mut p = path.to_vec();
            p.push(name.clone());
            let node = if meta.is_dir() {
                Node::UnpackedDir {
                    repo: repo.to_string(),
                    layer: layer.clone(),
                    path: p,
                    mtime,
                }
            } else {
                use std::os::unix::fs::PermissionsExt;
                Node::UnpackedFile {
                    repo: repo.to_string(),
                    layer: layer.digest.clone(),
                    path: p,
                    size: meta.len(),
                    mode: meta.permissions().mode(),
                    mtime,
                }
            };
            let key = child_key(ino, &name, Some(&layer.digest));
            let (i, n) = self.namespace.intern(key, ino, &name, node, 1);
            out.push((name, i, n));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// Unpacks a verified tar+gzip blob into `dest` through a temporary folder
/// and a rename. Entries with unsafe paths and anything but regular files
/// and folders are skipped, with a log line. ORAS writes a folder `name` as
/// entries `name/...`: that leading folder is the layer's own, so its
/// contents become `dest`.
fn unpack(tmp_root: &Path, blob: &Path, dest: &Path, d: &Digest, name: &str) -> Result<(), Error> {
    let fail = |reason: String| Error::Unpack {
        digest: d.clone(),
        reason,
    };
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(tmp_root)
        .map_err(|e| fail(e.to_string()))?;
    let f = File::open(blob).map_err(|e| fail(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let entries = archive.entries().map_err(|e| fail(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        let raw = entry
            .path()
            .map_err(|e| fail(e.to_string()))?
            .to_string_lossy()
            .to_string();
        let Some(rel) = safe_entry_path(&raw) else {
            tracing::warn!(layer = %d, entry = %raw, "tar entry has an unsafe path; skipped");
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let target = rel.iter().fold(tmp.path().to_path_buf(), |p, c| p.join(c));
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            fs::create_dir_all(&target).map_err(|e| fail(e.to_string()))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
            }
            if target.is_dir() {
                tracing::warn!(layer = %d, entry = %raw, "tar entry is both a file and a folder; skipped");
                continue;
            }
            let mut out = File::create(&target).map_err(|e| fail(e.to_string()))?;
            io::copy(&mut entry, &mut out).map_err(|e| fail(e.to_string()))?;
            let mode = entry.header().mode().unwrap_or(0o644);
            use std::os::unix::fs::PermissionsExt;
            let perm = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
            fs::set_permissions(&target, fs::Permissions::from_mode(perm))
                .map_err(|e| fail(e.to_string()))?;
        } else {
            tracing::warn!(layer = %d, entry = %raw, "tar entry is not a file or folder; skipped");
        }
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    let kept = tmp.keep();
    let inner = kept.join(name);
    let only_inner = !name.is_empty()
        && inner.is_dir()
        && fs::read_dir(&kept)
            .map(|rd| rd.count() == 1)
            .unwrap_or(false);
    let src = if only_inner { inner } else { kept.clone() };
    if let Err(e) = fs::rename(&src, dest) {
        let _ = fs::remove_dir_all(&kept);
        // Another mount unpacked it first: theirs is as good as ours.
        if !dest.is_dir() {
            return Err(fail(e.to_string()));
        }
    }
    let _ = fs::remove_dir_all(&kept);
    Ok(())
}
