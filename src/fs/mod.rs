//! Filesystem semantics as async functions: lookup, attributes, listings,
//! reads and extended attributes over the registry, the cache and the tree.
//! Testable without a mount; `fuse` is a thin adapter over this.
//!
//! Locks here are std mutexes held only for map updates, never across an
//! `.await`.

mod chunks;
mod error;
mod fetch;
mod unpack;
mod write;
mod xattr;

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;

pub use error::Error;
pub use fetch::Inflight;
use write::join_rel;
pub use write::SetAttr;

use crate::cache::{now_secs, Cache, TagRef};
use crate::digest::Digest;
use crate::reference::{is_repository, is_repository_component, is_tag};
use crate::registry::{self, Backend};
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
    pub uid: u32,
    pub gid: u32,
}

/// When blob bytes may be served (SPEC section 4).
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
        file: Option<Arc<std::fs::File>>,
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
    registry: Arc<Backend>,
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
    inflight: Inflight,
    chunked: Mutex<HashMap<Digest, Arc<chunks::Chunked>>>,
    /// Bumped by `refresh`: what was fetched before it is not cached after it.
    generation: AtomicU64,
    mount_time: i64,
    staging: Arc<Staging>,
}

/// Chunks read ahead of a sequential lazy reader.
const LAZY_READ_AHEAD: usize = 4;

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
        registry: Arc<Backend>,
        cache: Arc<Cache>,
        staging: Arc<Staging>,
        opts: Options,
    ) -> Fs {
        let known: BTreeSet<String> = opts.repos.iter().cloned().collect();
        Fs {
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
            inflight: Inflight::default(),
            chunked: Mutex::new(HashMap::new()),
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

    // ---- listings ---------------------------------------------------------

    /// All repository names we know of, relative to the prefix.
    async fn repositories(&self) -> Result<Vec<String>, Error> {
        let fresh = lock(&self.catalog)
            .as_ref()
            .filter(|l| l.at.elapsed() < self.opts.tag_ttl)
            .map(|l| l.names.clone());
        let names = match fresh {
            Some(n) => n,
            None => {
                let names = match self.registry.catalog().await {
                    Ok(Some(n)) => {
                        let _ = self.cache.put_listing(self.host(), None, &n);
                        n
                    }
                    Ok(None) => Vec::new(),
                    Err(e) if e.is_unreachable() => {
                        tracing::warn!("{e}; using the last known catalog");
                        self.cache.listing(self.host(), None).unwrap_or_default()
                    }
                    Err(e) => return Err(e.into()),
                };
                let names = Arc::new(names);
                *lock(&self.catalog) = Some(Listing {
                    names: names.clone(),
                    at: Instant::now(),
                });
                names
            }
        };
        let known = lock(&self.known_repos).clone();
        let mut all: BTreeSet<String> =
            names.iter().filter(|n| is_repository(n)).cloned().collect();
        all.extend(known);
        let out = match &self.opts.prefix {
            None => all.into_iter().collect(),
            Some(p) => {
                let pre = format!("{p}/");
                all.iter()
                    .filter_map(|n| {
                        if n == p {
                            Some(String::new())
                        } else {
                            n.strip_prefix(&pre).map(str::to_string)
                        }
                    })
                    .collect()
            }
        };
        Ok(out)
    }

    /// Tags of `repo` (full name), without referrer-schema tags. Empty when
    /// `repo` is not a repository.
    async fn tags_of(&self, repo: &str) -> Result<Arc<Vec<String>>, Error> {
        if let Some(l) = lock(&self.tag_lists).get(repo) {
            if l.at.elapsed() < self.opts.tag_ttl {
                return Ok(l.names.clone());
            }
        }
        let tags = match self.registry.tags(repo).await {
            Ok(t) => {
                let _ = self.cache.put_listing(self.host(), Some(repo), &t);
                lock(&self.known_repos).insert(repo.to_string());
                t
            }
            Err(e) if e.is_not_found() => {
                // Only a path prefix of other repositories: remember that too,
                // so the folder lists offline.
                let _ = self.cache.put_listing(self.host(), Some(repo), &[]);
                Vec::new()
            }
            Err(e) if e.is_unreachable() => match self.cache.listing(self.host(), Some(repo)) {
                Some(t) => {
                    tracing::warn!("{e}; using the last known tags of {repo}");
                    t
                }
                None if self.is_known_prefix(repo) => Vec::new(),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let mut shown: Vec<String> = tags
            .into_iter()
            .filter(|t| is_tag(t) && !is_referrers_tag(t))
            .collect();
        shown.sort();
        shown.dedup();
        let names = Arc::new(shown);
        lock(&self.tag_lists).insert(
            repo.to_string(),
            Listing {
                names: names.clone(),
                at: Instant::now(),
            },
        );
        Ok(names)
    }

    /// Whether the last known catalog has repositories below `repo` but not
    /// `repo` itself (a folder of repositories, with no tags of its own).
    fn is_known_prefix(&self, repo: &str) -> bool {
        let pre = format!("{repo}/");
        let known = lock(&self.known_repos).clone();
        let catalog = self.cache.listing(self.host(), None).unwrap_or_default();
        let all: Vec<&String> = catalog.iter().chain(known.iter()).collect();
        all.iter().any(|n| n.starts_with(&pre)) && !all.iter().any(|n| n.as_str() == repo)
    }

    // ---- manifests --------------------------------------------------------

    /// What a tag points at, trusting a resolution for `--tag-ttl`, and the
    /// last known one while the registry is unreachable.
    async fn resolve(&self, repo: &str, target: &Target) -> Result<Digest, Error> {
        let tag = match target {
            Target::Digest(d) => return Ok(d.clone()),
            Target::Tag(t) => t,
        };
        let key = (repo.to_string(), tag.clone());
        if let Some((d, at)) = lock(&self.tags).get(&key) {
            if at.elapsed() < self.opts.tag_ttl {
                return Ok(d.clone());
            }
        }
        // A refresh while we ask (a commit just moved the tag) makes our
        // answer too old to remember.
        let generation = self.generation.load(Ordering::SeqCst);
        let known = lock(&self.tags)
            .get(&key)
            .map(|(d, _)| d.clone())
            .or_else(|| self.cache.tag_ref(self.host(), repo, tag).map(|r| r.digest));
        let fetched = async {
            // Where we have a manifest this tag pointed at, a HEAD says
            // whether it still does; otherwise one GET gives both answers.
            if known.is_some_and(|d| self.cache.manifest(&d).is_some()) {
                if let Some(d) = self.registry.head_manifest(repo, tag).await? {
                    if self.cache.manifest(&d).is_some() {
                        return Ok::<_, registry::Error>(d);
                    }
                }
            }
            let m = self.registry.manifest(repo, tag).await?;
            self.store_manifest(&m);
            Ok(m.digest)
        }
        .await;
        let digest = match fetched {
            Ok(d) => {
                let r = TagRef {
                    digest: d.clone(),
                    checked: now_secs(),
                };
                if let Err(e) = self.cache.put_tag_ref(self.host(), repo, tag, &r) {
                    tracing::warn!("{e}");
                }
                d
            }
            Err(e) if e.is_unreachable() => {
                let known = lock(&self.tags).get(&key).map(|(d, _)| d.clone());
                match known.or_else(|| self.cache.tag_ref(self.host(), repo, tag).map(|r| r.digest))
                {
                    Some(d) => {
                        tracing::warn!(
                            "{e}; using the last known resolution of {repo}:{tag} ({d})"
                        );
                        d
                    }
                    None => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if self.generation.load(Ordering::SeqCst) == generation {
            lock(&self.tags).insert(key, (digest.clone(), Instant::now()));
        }
        Ok(digest)
    }

    fn store_manifest(&self, m: &registry::Manifest) {
        if let Err(e) = self
            .cache
            .put_manifest(&m.digest, &m.bytes, m.media_type.as_deref())
        {
            tracing::warn!("{e}");
        }
    }

    /// The verified bytes of a manifest, from the cache or the registry.
    async fn manifest_bytes(
        &self,
        repo: &str,
        d: &Digest,
    ) -> Result<(Bytes, Option<String>), Error> {
        if let Some((b, t)) = self.cache.manifest(d) {
            return Ok((Bytes::from(b), t));
        }
        let m = self.registry.manifest(repo, &d.to_string()).await?;
        self.store_manifest(&m);
        Ok((m.bytes, m.media_type))
    }

    /// The folder view of a manifest.
    async fn view(&self, repo: &str, d: &Digest) -> Result<Arc<View>, Error> {
        if let Some(v) = lock(&self.views).get(d) {
            return Ok(v.clone());
        }
        let (bytes, media_type) = self.manifest_bytes(repo, d).await?;
        let view =
            View::parse(&bytes, media_type.as_deref()).map_err(|source| Error::BadManifest {
                digest: d.clone(),
                source,
            })?;
        for why in &view.skipped {
            tracing::warn!(manifest = %d, "{why}");
        }
        let view = Arc::new(view);
        lock(&self.views).put(d.clone(), view.clone());
        Ok(view)
    }

    /// A manifest folder's mtime: its created annotation, else when its
    /// digest was first seen.
    fn manifest_mtime(&self, view: &View, d: &Digest) -> i64 {
        view.created()
            .unwrap_or_else(|| self.cache.first_seen(d, now_secs()))
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
                let size = self.cache.manifest(manifest).map(|(b, _)| b.len() as u64)?;
                let node = Node::ManifestJson {
                    repo,
                    digest: manifest.clone(),
                    size,
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
        if path.is_empty() {
            // manifest.json's size comes from the cached bytes.
            self.manifest_bytes(repo, manifest).await?;
        }
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
                Handle::Bytes(self.manifest_bytes(repo, digest).await?.0)
            }
            Node::Blob { repo, desc, .. } => {
                // Strict reads wait for the whole verified blob anyway: fetch
                // it at open, so every read goes to the verified file (and
                // the kernel can pass reads through to it). Lazy large blobs
                // are fetched by the reads themselves.
                let lazy = self.opts.verify == Verify::Lazy
                    && self.registry.is_remote()
                    && desc.size >= chunks::RANGE_THRESHOLD;
                if !lazy && self.cache.blob(&desc.digest).is_none() {
                    if self.opts.parallel_ranges
                        && self.registry.is_remote()
                        && desc.size >= chunks::RANGE_THRESHOLD
                    {
                        self.finish_chunked(repo, desc).await?;
                    } else {
                        self.fetch_blob(repo, desc).await?;
                    }
                }
                let file = self.open_verified(desc)?.map(Arc::new);
                Handle::Blob {
                    repo: repo.clone(),
                    desc: desc.clone(),
                    file,
                }
            }
            Node::UnpackedFile { layer, path, .. } => {
                let p = self.unpacked_path(layer, path)?;
                let f = std::fs::File::open(&p).map_err(|source| Error::Io {
                    what: p.display().to_string(),
                    source,
                })?;
                Handle::File(Arc::new(f))
            }
            _ => return Err(Error::IsDir),
        };
        let ready = match &handle {
            Handle::Blob { file, .. } => file.clone(),
            Handle::File(f) => Some(f.clone()),
            Handle::Bytes(_) | Handle::Staged(_) => None,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        Ok((fh, ready))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, Error> {
        enum Src {
            Bytes(Bytes),
            File(Arc<std::fs::File>),
            Fetch(String, Desc),
        }
        let src = match lock(&self.handles).get(&fh) {
            None => return Err(Error::BadHandle),
            Some(Handle::Bytes(b)) => Src::Bytes(b.clone()),
            Some(Handle::File(f)) | Some(Handle::Staged(f)) => Src::File(f.clone()),
            Some(Handle::Blob { file: Some(f), .. }) => Src::File(f.clone()),
            Some(Handle::Blob {
                repo,
                desc,
                file: None,
            }) => Src::Fetch(repo.clone(), desc.clone()),
        };
        let file = match src {
            Src::Bytes(b) => {
                let start = (offset as usize).min(b.len());
                let end = start.saturating_add(size as usize).min(b.len());
                return Ok(b.slice(start..end));
            }
            Src::File(f) => f,
            Src::Fetch(repo, desc) => {
                let ranged = self.registry.is_remote() && desc.size >= chunks::RANGE_THRESHOLD;
                let lazy = ranged && self.opts.verify == Verify::Lazy;
                let at_end = offset.saturating_add(size as u64) >= desc.size;
                if lazy && !at_end {
                    return self.read_lazy(&repo, &desc, offset, size).await;
                }
                if lazy || (ranged && self.opts.parallel_ranges) {
                    self.finish_chunked(&repo, &desc).await?;
                } else {
                    self.fetch_blob(&repo, &desc).await?;
                }
                let f = self.open_verified(&desc)?.ok_or_else(|| Error::Blob {
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
    fn open_verified(&self, desc: &Desc) -> Result<Option<std::fs::File>, Error> {
        let Some(f) = self.cache.open_blob(&desc.digest) else {
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

    fn chunked(&self, repo: &str, desc: &Desc) -> Result<Arc<chunks::Chunked>, Error> {
        let mut map = lock(&self.chunked);
        if let Some(c) = map.get(&desc.digest) {
            return Ok(c.clone());
        }
        let c = chunks::Chunked::open(self.registry.clone(), self.cache.clone(), repo, desc)?;
        map.insert(desc.digest.clone(), c.clone());
        Ok(c)
    }

    /// A large blob by Range: every chunk fetched (several at a time) and
    /// the whole blob checked before it is served.
    async fn finish_chunked(&self, repo: &str, desc: &Desc) -> Result<PathBuf, Error> {
        if let Some(p) = self.cache.blob(&desc.digest) {
            return Ok(p);
        }
        let c = self.chunked(repo, desc)?;
        let r = c.finish().await;
        lock(&self.chunked).remove(&desc.digest);
        r
    }

    /// `--verify lazy`: the chunks this read needs (and read-ahead for a
    /// sequential reader), served before the whole blob is checked.
    async fn read_lazy(
        &self,
        repo: &str,
        desc: &Desc,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, Error> {
        let c = self.chunked(repo, desc)?;
        let need = c.chunks_for(offset, size as u64);
        let ahead_end = (need.end + LAZY_READ_AHEAD).min(c.chunks_for(0, c.size()).end);
        if need.start > 0 {
            // Not the first chunk: a sequential reader, most likely.
            c.prefetch(need.end..ahead_end);
        }
        c.ensure(need).await?;
        c.read_at(offset, size).await
    }

    /// Downloads and verifies a blob into the cache (one download however
    /// many readers wait).
    pub async fn fetch_blob(&self, repo: &str, desc: &Desc) -> Result<PathBuf, Error> {
        fetch::fetch(
            &self.inflight,
            self.registry.clone(),
            self.cache.clone(),
            repo,
            desc,
        )
        .await
    }

    // ---- extended attributes -----------------------------------------------

    pub async fn listxattr(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let node = self.node(ino)?;
        let attrs = match &*node {
            Node::Manifest { repo, target } => {
                let d = self.resolve(repo, target).await?;
                let v = self.view(repo, &d).await?;
                let via = self.reached_by(ino, &d).await;
                xattr::of_manifest(&d, &v, via.as_ref())
            }
            Node::ManifestJson { repo, digest, .. } => {
                let v = self.view(repo, digest).await?;
                xattr::of_manifest(digest, &v, None)
            }
            Node::Blob { desc, .. } => xattr::of_desc(desc),
            Node::UnpackedDir { layer, path, .. } if path.is_empty() => xattr::of_desc(layer),
            _ => Vec::new(),
        };
        Ok(if self.opts.read_only {
            attrs
        } else {
            self.staged_xattrs(ino, attrs)
        })
    }

    pub async fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>, Error> {
        self.listxattr(ino)
            .await?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(Error::NoAttr)
    }

    /// The index descriptor a child manifest folder was reached by (for its platform).
    async fn reached_by(&self, ino: Ino, d: &Digest) -> Option<Desc> {
        let parent = self.parent_of(ino);
        let pnode = self.node(parent).ok()?;
        let Node::Manifest { repo, target } = &*pnode else {
            return None;
        };
        let pd = self.resolve(repo, target).await.ok()?;
        let pv = self.view(repo, &pd).await.ok()?;
        pv.children.iter().find(|c| c.digest == *d).cloned()
    }
}
