//! Filesystem semantics as async functions: lookup, attributes, listings,
//! reads and extended attributes over the registry, the cache and the tree.
//! Testable without a mount; `fuse` is a thin adapter over this.
//!
//! Locks here are std mutexes held only for map updates, never across an
//! `.await`.
//!
//! - `mod.rs`   the tree: lookup, attributes, listings of every kind of folder
//! - `meta`     catalog, tags and manifests, cached
//! - `read`     open, read, release
//! - `blobs`    the one blob engine: downloads in flight, streams and ranges
//! - `source`   what the filesystem needs from a registry or a layout
//! - `unpack`   directory layers
//! - `write`    the staging overlay and every write operation
//! - `xattr`    `user.oci.*` attributes

mod blobs;
mod error;
#[cfg(test)]
mod memory;
mod meta;
mod read;
pub mod source;
#[cfg(test)]
mod tests;
mod unpack;
mod write;
mod xattr;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

pub use error::Error;
pub use source::Source;
use write::join_rel;
pub use write::SetAttr;

use crate::cache::{now_secs, Cache};
use crate::digest::Digest;
use crate::reference::{is_repository_component, is_tag};
use crate::stage::{self, Staging};
use crate::tree::view::{Desc, Entry, View};
use crate::tree::{Ino, Inodes, Key, Node, Target};

/// How the mount behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only repositories under this prefix are shown, relative to it.
    pub prefix: Option<String>,
    /// Repositories to show even where the registry has no catalog.
    pub repos: Vec<String>,
    pub tag_ttl: Duration,
    pub read_only: bool,
    pub verify: Verify,
    /// Strict mode: large blobs by concurrent Range requests, not one GET.
    pub parallel_ranges: bool,
    /// A wait for blob bytes ends with an error after this long without
    /// a byte arriving (`--timeout`).
    pub timeout: Duration,
    pub uid: u32,
    pub gid: u32,
}

/// When blob bytes may be served (docs/verification.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Verify {
    /// No byte before the whole blob arrived and matched its digest.
    #[default]
    Strict,
    /// Large blobs by Range on demand; the read reaching the end waits for the check.
    Lazy,
}

/// Kind of a node, for the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Attributes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub ino: Ino,
    pub kind: Kind,
}

enum Handle {
    Bytes(Bytes),
    Blob {
        repo: String,
        desc: Desc,
        /// The verified file, once there is one.
        file: Option<Arc<std::fs::File>>,
        /// Where the last read ended (a read starting there is sequential).
        next: u64,
    },
    File(Arc<std::fs::File>),
    /// A file of the staging area, open for reading and writing.
    Staged(Arc<std::fs::File>),
}

/// A folder's entries: name, inode, node.
pub(crate) type Children = Vec<(String, Ino, Arc<Node>)>;

/// Where in a manifest view a folder's entries are being made.
#[derive(Clone, Copy)]
struct ViewAt<'a> {
    folder: Ino,
    parent: Ino,
    repo: &'a str,
    manifest: &'a Digest,
    view: &'a View,
    path: &'a [String],
    mtime: i64,
}

/// Names of the tree root and `repo` folders: tags and sub-repositories.
struct Listing {
    names: Arc<Vec<String>>,
    at: Instant,
}

pub struct Fs {
    registry: Arc<dyn Source>,
    cache: Arc<Cache>,
    opts: Options,
    inodes: Mutex<Inodes>,
    views: Mutex<LruCache<Digest, Arc<View>>>,
    tags: Mutex<HashMap<(String, String), (Digest, Instant)>>,
    tag_lists: Mutex<HashMap<String, Listing>>,
    known_repos: Mutex<BTreeSet<String>>,
    catalog: Mutex<Option<Listing>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    blobs: blobs::Blobs,
    /// Bumped by `refresh`: what was fetched before it is not cached after it.
    generation: AtomicU64,
    mount_time: i64,
    staging: Arc<Staging>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Our critical sections only insert or read map entries; a panic inside
    // one cannot leave a map half-updated in a way that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tags of the referrers tag schema (`sha256-<hex>`) are not shown as tags.
pub fn is_referrers_tag(t: &str) -> bool {
    t.strip_prefix("sha256-")
        .is_some_and(|h| Digest::from_hex(h).is_ok())
}

impl Fs {
    pub fn new(
        registry: Arc<dyn Source>,
        cache: Arc<Cache>,
        staging: Arc<Staging>,
        opts: Options,
    ) -> Fs {
        let known: BTreeSet<String> = opts.repos.iter().cloned().collect();
        let blobs = blobs::Blobs::new(
            registry.clone(),
            cache.clone(),
            blobs::Settings {
                verify: opts.verify,
                parallel_ranges: opts.parallel_ranges,
                timeout: opts.timeout,
            },
        );
        Fs {
            blobs,
            registry,
            cache,
            inodes: Mutex::new(Inodes::new()),
            views: Mutex::new(LruCache::new(
                NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            )),
            tags: Mutex::new(HashMap::new()),
            tag_lists: Mutex::new(HashMap::new()),
            known_repos: Mutex::new(known),
            catalog: Mutex::new(None),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            mount_time: now_secs(),
            staging,
            opts,
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    pub fn read_only(&self) -> bool {
        self.opts.read_only
    }

    fn node(&self, ino: Ino) -> Result<Arc<Node>, Error> {
        lock(&self.inodes).get(ino).ok_or(Error::NotFound)
    }

    fn host(&self) -> &str {
        self.registry.host()
    }

    /// The full repository name of a folder path relative to the prefix.
    fn full_repo(&self, path: &str) -> String {
        match (&self.opts.prefix, path.is_empty()) {
            (Some(p), true) => p.clone(),
            (Some(p), false) => format!("{p}/{path}"),
            (None, _) => path.to_string(),
        }
    }

    // ---- the tree -----------------------------------------------------------

    fn intern(
        &self,
        key: Key,
        parent: Ino,
        name: &str,
        node: Node,
        links: u32,
    ) -> (Ino, Arc<Node>) {
        lock(&self.inodes).intern(key, parent, name, node, links)
    }

    fn child_key(parent: Ino, name: &str, version: Option<&Digest>) -> Key {
        Key::Child {
            parent,
            name: name.to_string(),
            version: version.cloned(),
        }
    }

    /// The repository folder path a node lists (root is the prefix itself).
    fn repo_path(node: &Node) -> Option<&str> {
        match node {
            Node::Root => Some(""),
            Node::Repo { path } => Some(path),
            _ => None,
        }
    }

    /// Children of a repository folder: its tags, then name components of
    /// repositories below it that are not also tags.
    async fn repo_children(&self, ino: Ino, path: &str) -> Result<Children, Error> {
        let full = self.full_repo(path);
        let tags = if full.is_empty() {
            Arc::new(Vec::new())
        } else {
            self.tags_of(&full).await?
        };
        let mut out = Vec::new();
        for t in tags.iter() {
            let node = Node::Manifest {
                repo: full.clone(),
                target: Target::Tag(t.clone()),
            };
            let (i, n) = self.intern(Self::child_key(ino, t, None), ino, t, node, 1);
            out.push((t.clone(), i, n));
        }
        let pre = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut comps = BTreeSet::new();
        for r in self.repositories().await? {
            if let Some(rest) = r.strip_prefix(&pre) {
                if let Some(c) = rest.split('/').next().filter(|c| !c.is_empty()) {
                    comps.insert(c.to_string());
                }
            }
        }
        for c in comps {
            if tags.contains(&c) {
                continue; // a tag wins over a sub-repository component
            }
            let node = Node::Repo {
                path: format!("{pre}{c}"),
            };
            let (i, n) = self.intern(Self::child_key(ino, &c, None), ino, &c, node, 1);
            out.push((c, i, n));
        }
        Ok(out)
    }

    /// The node for one entry of a manifest view.
    fn view_child(&self, at: &ViewAt<'_>, name: &str, entry: &Entry) -> Option<(Ino, Arc<Node>)> {
        let ViewAt {
            folder,
            parent,
            repo,
            manifest,
            view,
            path,
            mtime,
        } = *at;
        let key = Self::child_key(parent, name, Some(manifest));
        let repo = repo.to_string();
        Some(match entry {
            Entry::ManifestJson => {
                let node = Node::ManifestJson {
                    repo,
                    digest: manifest.clone(),
                    size: view.size,
                    mtime,
                };
                self.intern(key, parent, name, node, 1)
            }
            Entry::Blob(i) => {
                let desc = view.blobs.get(*i)?.clone();
                let links = view.names_of(&desc.digest);
                let key = Key::Blob {
                    folder,
                    manifest: manifest.clone(),
                    blob: desc.digest.clone(),
                };
                self.intern(key, parent, name, Node::Blob { repo, desc, mtime }, links)
            }
            Entry::Dir(_) => {
                let mut p = path.to_vec();
                p.push(name.to_string());
                let node = Node::ViewDir {
                    repo,
                    folder,
                    manifest: manifest.clone(),
                    path: p,
                    mtime,
                };
                self.intern(key, parent, name, node, 1)
            }
            Entry::Unpacked(i) => {
                let layer = view.blobs.get(*i)?.clone();
                let node = Node::UnpackedDir {
                    repo,
                    layer,
                    path: Vec::new(),
                    mtime,
                };
                self.intern(key, parent, name, node, 1)
            }
            Entry::Child(i) => {
                let c = view.children.get(*i)?;
                let node = Node::Manifest {
                    repo,
                    target: Target::Digest(c.digest.clone()),
                };
                self.intern(key, parent, name, node, 1)
            }
            Entry::Referrers => {
                let node = Node::Referrers {
                    repo,
                    subject: manifest.clone(),
                    mtime,
                };
                self.intern(key, parent, name, node, 1)
            }
        })
    }

    /// Children of a view folder (`path` inside the manifest folder `folder`).
    async fn view_children(
        &self,
        ino: Ino,
        folder: Ino,
        repo: &str,
        manifest: &Digest,
        path: &[String],
        mtime: Option<i64>,
    ) -> Result<Children, Error> {
        let view = self.view(repo, manifest).await?;
        let mtime = mtime.unwrap_or_else(|| self.manifest_mtime(&view, manifest));
        let dir = view.dir(path).ok_or(Error::NotFound)?;
        let at = ViewAt {
            folder,
            parent: ino,
            repo,
            manifest,
            view: &view,
            path,
            mtime,
        };
        let mut out = Vec::with_capacity(dir.len());
        for (name, entry) in dir {
            if let Some((i, n)) = self.view_child(&at, name, entry) {
                out.push((name.clone(), i, n));
            }
        }
        Ok(out)
    }

    /// What the registry has in a folder (no staged changes).
    async fn registry_children(&self, ino: Ino) -> Result<Children, Error> {
        let node = self.node(ino)?;
        match &*node {
            Node::Staged { dir: true } => Ok(Vec::new()),
            Node::Root | Node::Repo { .. } => {
                let path = Self::repo_path(&node).unwrap_or("");
                self.repo_children(ino, path).await
            }
            Node::Manifest { repo, target } => {
                let d = self.resolve(repo, target).await?;
                self.view_children(ino, ino, repo, &d, &[], None).await
            }
            Node::ViewDir {
                repo,
                folder,
                manifest,
                path,
                mtime,
            } => {
                self.view_children(ino, *folder, repo, manifest, path, Some(*mtime))
                    .await
            }
            Node::Referrers { repo, subject, .. } => {
                self.referrer_children(ino, repo, subject).await
            }
            Node::UnpackedDir {
                repo,
                layer,
                path,
                mtime,
            } => self.unpacked_children(ino, repo, layer, path, *mtime).await,
            _ => Err(Error::NotDir),
        }
    }

    /// `referrers/`: one manifest folder per artifact whose subject is
    /// `subject`, named by its digest. Trusted for `--tag-ttl` like a tag.
    async fn referrer_children(
        &self,
        ino: Ino,
        repo: &str,
        subject: &Digest,
    ) -> Result<Children, Error> {
        let key = format!("{repo}@{subject}");
        let fresh = lock(&self.tag_lists)
            .get(&key)
            .filter(|l| l.at.elapsed() < self.opts.tag_ttl)
            .map(|l| l.names.clone());
        let names = match fresh {
            Some(n) => n,
            None => {
                let found = self.registry.referrers(repo, subject).await?;
                let mut names: Vec<String> = found.iter().map(|d| d.to_string()).collect();
                names.sort();
                names.dedup();
                let names = Arc::new(names);
                lock(&self.tag_lists).insert(
                    key,
                    Listing {
                        names: names.clone(),
                        at: Instant::now(),
                    },
                );
                names
            }
        };
        let mut out = Vec::new();
        for name in names.iter() {
            let Ok(d) = name.parse::<Digest>() else {
                continue;
            };
            let node = Node::Manifest {
                repo: repo.to_string(),
                target: Target::Digest(d),
            };
            let (i, n) = self.intern(Self::child_key(ino, name, None), ino, name, node, 1);
            out.push((name.clone(), i, n));
        }
        Ok(out)
    }

    // ---- operations ---------------------------------------------------------

    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, Error> {
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        if let Some(path) = Self::repo_path(&pnode) {
            let full = self.full_repo(path);
            if let Some(hex) = name.strip_prefix("@sha256:") {
                // A manifest by digest: reachable, not listed.
                let d = Digest::from_hex(hex).map_err(|_| Error::NotFound)?;
                if full.is_empty() {
                    return Err(Error::NotFound);
                }
                self.view(&full, &d).await?;
                let node = Node::Manifest {
                    repo: full,
                    target: Target::Digest(d),
                };
                let (ino, node) =
                    self.intern(Self::child_key(parent, name, None), parent, name, node, 1);
                return self.attr_of(ino, &node).await;
            }
            let children = self.children(parent).await?;
            if let Some((_, ino, node)) = children.into_iter().find(|(n, _, _)| n == name) {
                return self.attr_of(ino, &node).await;
            }
            let rel = stage::join(&self.rel_path(parent)?);
            if self.staging.state().is_removed(&join_rel(&rel, name)) {
                return Err(Error::NotFound);
            }
            return self.lookup_unlisted(parent, path, &full, name).await;
        }
        let children = self.children(parent).await?;
        match children.into_iter().find(|(n, _, _)| n == name) {
            Some((_, ino, node)) => self.attr_of(ino, &node).await,
            None => Err(Error::NotFound),
        }
    }

    /// A name not in a listing may still exist: a tag pushed since we
    /// listed, or a repository the catalog does not show.
    async fn lookup_unlisted(
        &self,
        parent: Ino,
        path: &str,
        full: &str,
        name: &str,
    ) -> Result<Attr, Error> {
        if !full.is_empty() && is_tag(name) && !is_referrers_tag(name) {
            let target = Target::Tag(name.to_string());
            match self.resolve(full, &target).await {
                Ok(_) => {
                    lock(&self.tag_lists).remove(full);
                    let node = Node::Manifest {
                        repo: full.to_string(),
                        target,
                    };
                    let (ino, node) =
                        self.intern(Self::child_key(parent, name, None), parent, name, node, 1);
                    return self.attr_of(ino, &node).await;
                }
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        if is_repository_component(name) {
            let sub_full = if full.is_empty() {
                name.to_string()
            } else {
                format!("{full}/{name}")
            };
            match self.registry.tags(&sub_full).await {
                Ok(_) => {
                    lock(&self.known_repos).insert(sub_full);
                    let sub = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}/{name}")
                    };
                    let (ino, node) = self.intern(
                        Self::child_key(parent, name, None),
                        parent,
                        name,
                        Node::Repo { path: sub },
                        1,
                    );
                    return self.attr_of(ino, &node).await;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NotFound)
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Attr, Error> {
        let node = self.node(ino)?;
        self.attr_of(ino, &node).await
    }

    async fn attr_of(&self, ino: Ino, node: &Node) -> Result<Attr, Error> {
        let dir = |mtime| Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            perm: if self.opts.read_only { 0o555 } else { 0o755 },
            nlink: 2,
            mtime,
            uid: self.opts.uid,
            gid: self.opts.gid,
        };
        let file = |size, mtime, perm| Attr {
            ino,
            kind: Kind::File,
            size,
            perm,
            nlink: lock(&self.inodes).links(ino),
            mtime,
            uid: self.opts.uid,
            gid: self.opts.gid,
        };
        Ok(match node {
            Node::Staged { .. } => match self.staged_attr(ino) {
                // Committed or discarded by another process: what is there now?
                Err(Error::NotFound) => return self.relookup(ino).await,
                r => return r,
            },
            Node::Root | Node::Repo { .. } => dir(self.mount_time),
            Node::Manifest { repo, target } => {
                // A folder whose manifest is unusable still stats (so `ls`
                // shows it); reading inside it reports the error.
                match self.resolve(repo, target).await {
                    Ok(d) => match self.view(repo, &d).await {
                        Ok(v) => dir(self.manifest_mtime(&v, &d)),
                        Err(e) => {
                            tracing::warn!("{repo}: {e}");
                            dir(self.cache.first_seen(&d, now_secs()))
                        }
                    },
                    Err(e) => return Err(e),
                }
            }
            Node::ViewDir { mtime, .. }
            | Node::Referrers { mtime, .. }
            | Node::UnpackedDir { mtime, .. } => dir(*mtime),
            Node::ManifestJson { size, mtime, .. } => file(*size, *mtime, 0o444),
            Node::Blob { desc, mtime, .. } => file(desc.size, *mtime, 0o444),
            Node::UnpackedFile {
                size, mtime, mode, ..
            } => {
                let perm = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
                file(*size, *mtime, perm)
            }
        })
    }

    pub async fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>, Error> {
        let children = self.children(ino).await?;
        Ok(children
            .into_iter()
            .map(|(name, ino, node)| DirEntry {
                name,
                ino,
                kind: if node.is_dir() { Kind::Dir } else { Kind::File },
            })
            .collect())
    }

    /// A folder's listing as the kernel sees it: `.`, `..`, then the entries.
    pub async fn listing(&self, ino: Ino) -> Result<Vec<DirEntry>, Error> {
        let dot = |ino, name: &str| DirEntry {
            name: name.to_string(),
            ino,
            kind: Kind::Dir,
        };
        let mut all = vec![dot(ino, "."), dot(self.parent_of(ino), "..")];
        all.extend(self.readdir(ino).await?);
        Ok(all)
    }

    /// Attributes of several inodes at once (for readdirplus); `None` for
    /// one whose attributes cannot be had now (the kernel then asks again).
    pub async fn attrs(&self, inos: &[Ino]) -> Vec<Option<Attr>> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(inos.iter().copied())
            .map(|i| async move { self.getattr(i).await.ok() })
            .buffered(16)
            .collect()
            .await
    }

    /// Attributes for an entry listed while its real ones cannot be had.
    pub fn placeholder_attr(&self, ino: Ino, kind: Kind) -> Attr {
        Attr {
            ino,
            kind,
            size: 0,
            perm: if kind == Kind::Dir { 0o555 } else { 0o444 },
            nlink: 1,
            mtime: self.mount_time,
            uid: self.opts.uid,
            gid: self.opts.gid,
        }
    }

    pub fn parent_of(&self, ino: Ino) -> Ino {
        lock(&self.inodes).parent(ino)
    }
}
