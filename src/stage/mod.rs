//! The staging area: changes written into the mount, kept on local disk
//! until `regfs commit` pushes them.
//!
//! The staging root mirrors the mount: a file written at `MNT/repo/tag/a.txt`
//! lives at `ROOT/repo/tag/a.txt`. Beside the mirror, `ROOT/.regfs/` holds
//! what a plain tree cannot say:
//!
//! - `removed.json`: mount-relative paths of registry entries the user removed;
//! - `xattrs.json`: `user.oci.*` attributes set on a path;
//! - `bases.json`: for each existing tag changed in place, the manifest it
//!   pointed at when the change began (the commit applies changes to it).
//!
//! Whether a staged folder is a tag or a repository is decided at commit
//! time (`jobs`), not when it is made: `mkdir org` then `mkdir org/app`
//! cannot tell yet. `.regfs` can never clash with a repository component or
//! a tag, neither of which may start with a dot.

pub mod jobs;
pub mod plan;
pub mod push;
pub mod scan;
pub mod tarball;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;

pub const META_DIR: &str = ".regfs";

/// Errors of the staging area: local I/O, named by path.
#[derive(Debug, thiserror::Error)]
#[error("staging {path}: {source}")]
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

/// What the plain mirror cannot hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    #[serde(default)]
    pub removed: BTreeSet<String>,
    #[serde(default)]
    pub xattrs: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub bases: BTreeMap<String, Digest>,
}

impl State {
    /// Whether `path` or one of its ancestors was removed.
    pub fn is_removed(&self, path: &str) -> bool {
        ancestors(path).any(|p| self.removed.contains(p))
    }

    /// Drops everything recorded at or below `path`.
    pub fn forget_below(&mut self, path: &str) {
        let below = |p: &String| p == path || path.is_empty() || p.starts_with(&format!("{path}/"));
        self.removed.retain(|p| !below(p));
        self.xattrs.retain(|p, _| !below(p));
        self.bases.retain(|p, _| !below(p));
    }

    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.xattrs.is_empty() && self.bases.is_empty()
    }
}

/// `a/b/c` -> `a/b/c`, `a/b`, `a`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(path);
    std::iter::from_fn(move || {
        let p = cur?;
        cur = p.rfind('/').map(|i| &p[..i]);
        Some(p)
    })
    .filter(|p| !p.is_empty())
}

/// Joins mount-relative path components.
pub fn join(parts: &[String]) -> String {
    parts.join("/")
}

/// The staging area of one source.
pub struct Staging {
    root: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Staging {
    /// Opens (creating) the staging area at `root`. A root it creates is
    /// private (0700): other users can neither read what is staged nor
    /// change it, so what is pushed is what was written through the mount.
    pub fn open(root: &Path) -> Result<Staging, Error> {
        crate::cache::create_private_dir(root).map_err(err(root))?;
        let meta = root.join(META_DIR);
        fs::create_dir_all(&meta).map_err(err(&meta))?;
        let state = Self::load(root)?;
        Ok(Staging {
            root: root.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn load(root: &Path) -> Result<State, Error> {
        let meta = root.join(META_DIR);
        let mut s = State::default();
        let read = |name: &str| -> Result<Option<Vec<u8>>, Error> {
            let p = meta.join(name);
            match fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(err(&p)(e)),
            }
        };
        let bad = |name: &str, e: serde_json::Error| err(&meta.join(name))(io::Error::other(e));
        if let Some(b) = read("removed.json")? {
            s.removed = serde_json::from_slice(&b).map_err(|e| bad("removed.json", e))?;
        }
        if let Some(b) = read("xattrs.json")? {
            s.xattrs = serde_json::from_slice(&b).map_err(|e| bad("xattrs.json", e))?;
        }
        if let Some(b) = read("bases.json")? {
            s.bases = serde_json::from_slice(&b).map_err(|e| bad("bases.json", e))?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real path of a mount-relative path.
    pub fn real(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// A copy of the state.
    pub fn state(&self) -> State {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and writes it down before returning.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, Error> {
        let mut s = self.lock();
        let out = f(&mut s);
        self.save(&s)?;
        Ok(out)
    }

    /// Re-reads the state from disk (after a commit or discard by another process).
    pub fn reload(&self) -> Result<(), Error> {
        let s = Self::load(&self.root)?;
        *self.lock() = s;
        Ok(())
    }

    fn save(&self, s: &State) -> Result<(), Error> {
        let meta = self.root.join(META_DIR);
        let write = |name: &str, bytes: Vec<u8>| -> Result<(), Error> {
            let p = meta.join(name);
            let mut tmp = tempfile::NamedTempFile::new_in(&meta).map_err(err(&p))?;
            io::Write::write_all(&mut tmp, &bytes).map_err(err(&p))?;
            tmp.persist(&p).map_err(|e| err(&p)(e.error))?;
            Ok(())
        };
        write("removed.json", to_json(&s.removed))?;
        write("xattrs.json", to_json(&s.xattrs))?;
        write("bases.json", to_json(&s.bases))?;
        Ok(())
    }

    /// Every staged change at or below `rel`: real files and folders, and
    /// recorded removals and attributes.
    pub fn has_changes_below(&self, rel: &str) -> bool {
        let s = self.lock();
        let below = |p: &String| rel.is_empty() || p == rel || p.starts_with(&format!("{rel}/"));
        if s.removed.iter().any(below) || s.xattrs.keys().any(below) {
            return true;
        }
        drop(s);
        let real = self.real(rel);
        match fs::read_dir(&real) {
            Ok(mut rd) => rd.any(|e| e.is_ok_and(|e| e.file_name() != META_DIR)),
            Err(_) => false,
        }
    }

    /// Removes everything staged at or below `rel` (the folder itself stays
    /// when it is the staging root).
    pub fn discard(&self, rel: &str) -> Result<(), Error> {
        let real = self.real(rel);
        if rel.is_empty() {
            if let Ok(rd) = fs::read_dir(&real) {
                for e in rd.flatten() {
                    if e.file_name() == META_DIR {
                        continue;
                    }
                    remove_any(&e.path())?;
                }
            }
        } else if real.symlink_metadata().is_ok() {
            remove_any(&real)?;
        }
        self.update(|s| s.forget_below(rel))?;
        Ok(())
    }
}

fn remove_any(p: &Path) -> Result<(), Error> {
    let meta = p.symlink_metadata().map_err(err(p))?;
    if meta.is_dir() {
        fs::remove_dir_all(p).map_err(err(p))
    } else {
        fs::remove_file(p).map_err(err(p))
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Maps and sets of strings always serialize.
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_and_removal() {
        assert_eq!(
            ancestors("a/b/c").collect::<Vec<_>>(),
            ["a/b/c", "a/b", "a"]
        );
        let mut s = State::default();
        s.removed.insert("repo/v1/linux-amd64".into());
        assert!(s.is_removed("repo/v1/linux-amd64/a.txt"));
        assert!(!s.is_removed("repo/v1/linux-amd64x"));
        s.xattrs.insert("repo/v1".into(), BTreeMap::new());
        s.forget_below("repo/v1");
        assert!(s.is_empty());
    }

    #[test]
    fn a_new_staging_area_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("staging/localhost_5000");
        let st = Staging::open(&root).unwrap();
        for p in [&root, &root.parent().unwrap().to_path_buf()] {
            let mode = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        st.discard("").unwrap();
        let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "a discard keeps the root");
    }

    #[test]
    fn state_survives_reopen_and_discard() {
        let dir = tempfile::tempdir().unwrap();
        let st = Staging::open(dir.path()).unwrap();
        st.update(|s| s.removed.insert("repo/v1/a.txt".into()))
            .unwrap();
        fs::create_dir_all(st.real("repo/v2")).unwrap();
        fs::write(st.real("repo/v2/f"), b"x").unwrap();
        drop(st);
        let st = Staging::open(dir.path()).unwrap();
        assert!(st.state().is_removed("repo/v1/a.txt"));
        assert!(st.has_changes_below("repo"));
        assert!(st.has_changes_below("repo/v2"));
        assert!(!st.has_changes_below("other"));
        st.discard("repo/v2").unwrap();
        assert!(!st.real("repo/v2").exists());
        st.discard("").unwrap();
        assert!(!st.has_changes_below(""));
        assert!(dir.path().join(META_DIR).is_dir());
    }
}
