//! The staging area as the tree sees it: files and folders laid over what
//! the registry has, names removed from it, attributes set on it. `Overlay`
//! owns the staging area and does every disk operation on it, by
//! mount-relative path (`a/b/c`); `Fs` decides which path an operation
//! means. Nothing here reaches the registry.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Attr, Error, Kind};
use crate::digest::Digest;
use crate::reference::{is_repository_component, is_tag};
use crate::stage::{self, Staging, META_DIR};
use crate::tree::view::is_safe_component;
use crate::tree::Ino;

/// What `setattr` may change.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    /// An owner asked for (`chown`): only the mount's own is kept.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

pub(super) fn join_rel(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn io_err(what: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotFound,
        _ => Error::Io {
            what: what.display().to_string(),
            source,
        },
    }
}

pub(super) struct Overlay {
    staging: Arc<Staging>,
    read_only: bool,
    uid: u32,
    gid: u32,
}

impl Overlay {
    pub(super) fn new(staging: Arc<Staging>, read_only: bool, uid: u32, gid: u32) -> Overlay {
        Overlay {
            staging,
            read_only,
            uid,
            gid,
        }
    }

    pub(super) fn staging(&self) -> &Arc<Staging> {
        &self.staging
    }

    pub(super) fn read_only(&self) -> bool {
        self.read_only
    }

    pub(super) fn writable(&self) -> Result<(), Error> {
        if self.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn real(&self, rel: &str) -> PathBuf {
        self.staging.real(rel)
    }

    /// Whether `rel` was removed from what the registry has.
    pub(super) fn is_removed(&self, rel: &str) -> bool {
        self.staging.state().is_removed(rel)
    }

    /// The staged entries of folder `rel`: name and whether it is a folder.
    pub(super) fn entries(&self, rel: &str) -> Vec<(String, bool)> {
        let Ok(rd) = fs::read_dir(self.real(rel)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                if name == META_DIR {
                    return None;
                }
                Some((name, e.metadata().ok()?.is_dir()))
            })
            .collect()
    }

    /// The staged entry `name` of folder `rel`, if any: whether it is a folder.
    pub(super) fn entry(&self, rel: &str, name: &str) -> Option<bool> {
        if self.read_only || name == META_DIR {
            return None;
        }
        fs::symlink_metadata(self.real(&join_rel(rel, name)))
            .ok()
            .map(|m| m.is_dir())
    }

    /// Attributes of the staged entry at `rel`, shown as inode `ino`.
    pub(super) fn attr(&self, ino: Ino, rel: &str) -> Result<Attr, Error> {
        let real = self.real(rel);
        let meta = fs::symlink_metadata(&real).map_err(io_err(&real))?;
        let dir = meta.is_dir();
        // The mode that was set is the mode shown (the staging area itself
        // is private, so others cannot use it to reach the file).
        let perm = (meta.permissions().mode() & 0o7777) as u16;
        Ok(Attr {
            ino,
            kind: if dir { Kind::Dir } else { Kind::File },
            size: if dir { 0 } else { meta.len() },
            perm,
            nlink: if dir { 2 } else { meta.nlink() as u32 },
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            uid: self.uid,
            gid: self.gid,
            cache: super::Cacheable::default(),
        })
    }

    /// Whether nothing is staged at or below folder `rel`: no entry laid
    /// over it, none removed from it.
    pub(super) fn is_untouched(&self, rel: &str) -> bool {
        if !self.entries(rel).is_empty() {
            return false;
        }
        let pre = format!("{rel}/");
        let state = self.staging.state();
        !state
            .removed
            .iter()
            .any(|r| r == rel || r.starts_with(&pre))
    }

    /// Whether the manifest an edit inside tag folder `rel` applies to is
    /// recorded.
    pub(super) fn has_base(&self, rel: &str) -> bool {
        self.staging.state().bases.contains_key(rel)
    }

    pub(super) fn set_base(&self, rel: &str, d: Digest) -> Result<(), Error> {
        self.staging.update(|s| {
            s.bases.entry(rel.to_string()).or_insert(d);
        })?;
        Ok(())
    }

    /// Where a new entry may go: inside a tag (any safe name), or a new tag
    /// or repository folder (folders only, with names the registry
    /// accepts) when `in_repo_folder`.
    pub(super) fn check_new(
        &self,
        in_repo_folder: bool,
        name: &str,
        dir: bool,
    ) -> Result<(), Error> {
        if !is_safe_component(name) || name == META_DIR {
            return Err(Error::Invalid(format!(
                "{name:?} is not a name regfs can stage"
            )));
        }
        if in_repo_folder {
            if !dir {
                return Err(Error::NotPermitted(
                    "a repository holds tags, which are folders: create a folder first",
                ));
            }
            if !is_tag(name) && !is_repository_component(name) {
                return Err(Error::Invalid(format!(
                    "{name:?} is neither a valid tag nor a repository name"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn mkdir(&self, rel: &str) -> Result<(), Error> {
        let p = self.real(rel);
        fs::create_dir_all(&p).map_err(io_err(&p))
    }

    fn unremove(&self, rel: &str) -> Result<(), Error> {
        if self.staging.state().removed.contains(rel) {
            self.staging.update(|s| {
                s.removed.remove(rel);
            })?;
        }
        Ok(())
    }

    /// A new folder at `rel` (its parents too) with `mode`.
    pub(super) fn make_dir(&self, rel: &str, mode: u32) -> Result<(), Error> {
        self.mkdir(rel)?;
        let p = self.real(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(&p))?;
        self.unremove(rel)
    }

    /// A new, empty file at `rel`, open for reading and writing.
    pub(super) fn create(&self, parent: &str, rel: &str, mode: u32) -> Result<File, Error> {
        self.mkdir(parent)?;
        let real = self.real(rel);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&real)
            .map_err(io_err(&real))?;
        // `mode` comes with the caller's umask applied by the kernel.
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .map_err(io_err(&real))?;
        self.unremove(rel)?;
        Ok(f)
    }

    pub(super) fn open(&self, rel: &str, write: bool) -> Result<File, Error> {
        let real = self.real(rel);
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(&real)
            .map_err(io_err(&real))
    }

    /// Copies a registry file up to `rel` (from the verified blob `src`, or
    /// empty when it is truncated anyway), so it can be changed.
    pub(super) fn copy_up(
        &self,
        parent: &str,
        rel: &str,
        src: Option<&Path>,
    ) -> Result<File, Error> {
        self.mkdir(parent)?;
        let real = self.real(rel);
        match src {
            None => {
                File::create(&real).map_err(io_err(&real))?;
            }
            Some(src) => {
                fs::copy(src, &real).map_err(io_err(&real))?;
                let _ = fs::set_permissions(&real, fs::Permissions::from_mode(0o644));
            }
        }
        self.unremove(rel)?;
        self.open(rel, true)
    }

    /// Sets what `set` asks on the staged entry at `rel`. An owner other
    /// than the mount's cannot be kept: refused, not ignored.
    pub(super) fn set_attr(&self, rel: &str, set: SetAttr) -> Result<(), Error> {
        if set.uid.is_some_and(|u| u != self.uid) || set.gid.is_some_and(|g| g != self.gid) {
            return Err(Error::NotPermitted(
                "staged files belong to the mount's owner; chown is not kept",
            ));
        }
        let real = self.real(rel);
        if let Some(size) = set.size {
            let f = OpenOptions::new()
                .write(true)
                .open(&real)
                .map_err(io_err(&real))?;
            f.set_len(size).map_err(io_err(&real))?;
        }
        if let Some(mode) = set.mode {
            fs::set_permissions(&real, fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err(&real))?;
        }
        if set.mtime.is_some() || set.atime.is_some() {
            let f = File::open(&real).map_err(io_err(&real))?;
            let mut times = fs::FileTimes::new();
            if let Some(t) = set.mtime {
                times = times.set_modified(t);
            }
            if let Some(t) = set.atime {
                times = times.set_accessed(t);
            }
            f.set_times(times).map_err(io_err(&real))?;
        }
        Ok(())
    }

    /// Removes the staged entry at `rel`, if there is one; `in_registry`:
    /// the name also hides what the registry has there.
    pub(super) fn remove(&self, rel: &str, dir: bool, in_registry: bool) -> Result<(), Error> {
        let real = self.real(rel);
        if real.symlink_metadata().is_ok() {
            let r = if dir {
                fs::remove_dir(&real)
            } else {
                fs::remove_file(&real)
            };
            r.map_err(io_err(&real))?;
        }
        if in_registry {
            self.staging.update(|s| {
                s.removed.insert(rel.to_string());
                s.xattrs.remove(rel);
            })?;
        }
        Ok(())
    }

    pub(super) fn rename(&self, from: &str, to_parent: &str, to: &str) -> Result<(), Error> {
        self.mkdir(to_parent)?;
        let (rf, rt) = (self.real(from), self.real(to));
        fs::rename(&rf, &rt).map_err(io_err(&rt))?;
        self.unremove(to)
    }

    pub(super) fn link(&self, from: &str, to_parent: &str, to: &str) -> Result<(), Error> {
        self.mkdir(to_parent)?;
        let (rf, rt) = (self.real(from), self.real(to));
        fs::hard_link(&rf, &rt).map_err(io_err(&rt))?;
        self.unremove(to)
    }

    /// Staged attributes of `rel`, laid over the registry's.
    pub(super) fn xattrs_over(
        &self,
        rel: &str,
        mut attrs: Vec<(String, Vec<u8>)>,
    ) -> Vec<(String, Vec<u8>)> {
        if let Some(m) = self.staging.state().xattrs.get(rel) {
            for (k, v) in m {
                attrs.retain(|(n, _)| n != k);
                attrs.push((k.clone(), v.as_bytes().to_vec()));
            }
        }
        attrs
    }

    pub(super) fn set_xattr(&self, rel: &str, name: &str, value: String) -> Result<(), Error> {
        self.staging.update(|s| {
            s.xattrs
                .entry(rel.to_string())
                .or_default()
                .insert(name.to_string(), value);
        })?;
        Ok(())
    }

    /// Whether the attribute was there to remove.
    pub(super) fn remove_xattr(&self, rel: &str, name: &str) -> Result<bool, Error> {
        Ok(self
            .staging
            .update(|s| s.xattrs.get_mut(rel).and_then(|m| m.remove(name)).is_some())?)
    }

    /// Re-reads the staging state (after a commit or discard by another
    /// process).
    pub(super) fn reload(&self) {
        if let Err(e) = self.staging.reload() {
            tracing::warn!("{e}");
        }
    }
}

/// The mount-relative path of components.
pub(super) fn rel_of(path: &[String]) -> String {
    stage::join(path)
}
