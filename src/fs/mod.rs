//! Filesystem semantics as async functions: lookup, attributes, listings,
//! reads, writes and extended attributes. Testable without a mount
//! (`tests.rs`, against the in-memory source in `memory.rs`); `fuse` is a
//! thin adapter over this.
//!
//! `Fs` is a thin coordinator over owned parts, each with private state
//! and a narrow API:
//!
//! - `metadata`  catalog, tags, manifests and views, referrers; TTLs, refresh
//! - `namespace` the inode table; nodes built (purely) from manifest views
//! - `blobs`     the one blob engine: downloads in flight, streams and ranges
//! - `archive`   the tar indexes of ModelPack layers, one per layer digest
//! - `overlay`   the staging area seen through the tree; every disk write
//! - `source`    what the parts need from a registry or a layout
//!
//! The operations are split by family: the tree (this file), `read`
//! (open, read, release), `write` (every change, through `overlay`),
//! `unpack` (directory layers), `archive` (ModelPack tar layers), `xattr`.
//!
//! Locks are std mutexes held only for map updates, never across an
//! `.await`.

mod archive;
mod blobs;
mod error;
#[cfg(test)]
mod memory;
mod metadata;
mod namespace;
mod overlay;
mod read;
pub mod source;
#[cfg(test)]
mod tests;
mod unpack;
mod walkahead;
mod write;
mod xattr;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

pub use crate::tree::hash64;
pub use error::Error;
pub use metadata::is_referrers_tag;
use metadata::Metadata;
pub(crate) use namespace::Children;
use namespace::{Layouts, Namespace, ViewAt};
pub use overlay::SetAttr;
use overlay::{join_rel, Overlay};
pub use source::Source;

/// What the fuzz targets (`fuzz/`) reach inside `fs`.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::unpack::{unpack_into, Failure, Room, Unbounded};
    pub use crate::tree::archive::safe_entry_path;
}

use crate::cache::{now_secs, Cache};
use crate::digest::Digest;
use crate::reference::{is_repository_component, is_tag};
use crate::stage::Staging;
use crate::tree::view::Desc;
use crate::tree::{Ino, Node, RepoName, Target};

/// How deep `referrers/` folders nest: deeper ones are shown empty.
pub const MAX_REFERRERS_DEPTH: usize = 8;

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
    /// Ranged requests per blob (`--parallel-ranges`); `None`: one stream,
    /// more when it is slow.
    pub parallel_ranges: Option<usize>,
    /// Bytes of memory for parsed manifest views (`--metadata-cache`).
    pub metadata_cache: usize,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Nanoseconds of the mtime: on a folder whose listing follows tags, a
    /// stamp of the listing, so the mtime changes whenever the listing
    /// does (the kernel drops its cached listing of a folder whose mtime
    /// changed: `listing_stamp`).
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// What the kernel may keep for long (see `Cacheable`).
    pub cache: Cacheable,
}

/// How long the kernel may trust what it was told about an entry.
/// Everything inside a manifest folder found by digest is immutable: its
/// names and attributes can be kept; what follows tags (the tags of a
/// repository, the names in a tag's folder, a tag folder's attributes,
/// referrers) changes only when the registry's tags do, and is trusted for
/// `--tag-ttl` as regfs trusts it (a commit or discard in another process
/// tells the kernel to forget it at once: `changeable_names`); a staged
/// file can change at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cacheable {
    /// The attributes never change.
    pub attr: bool,
    /// The name means this inode for good (its folder is immutable).
    pub name: bool,
    /// Whatever is not kept for good may be kept for the tag TTL.
    pub tags: bool,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Hash)]
pub struct DirEntry {
    pub name: String,
    pub ino: Ino,
    pub kind: Kind,
}

/// Where a file's bytes are in what its handle reads: all of a blob, or
/// one member of a tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    len: u64,
}

impl Span {
    fn whole(len: u64) -> Span {
        Span { start: 0, len }
    }

    /// A read of `size` bytes at `offset` of the file, as the offset and
    /// size to read in what holds it; `None` at or past the file's end.
    fn place(self, offset: u64, size: u32) -> Option<(u64, u32)> {
        let left = self.len.checked_sub(offset).filter(|l| *l > 0)?;
        Some((self.start + offset, left.min(size as u64) as u32))
    }
}

// One per open file: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Handle {
    Bytes(Bytes),
    Blob {
        repo: RepoName,
        desc: Arc<Desc>,
        /// The file's bytes in the blob.
        span: Span,
        /// The verified blob, once there is one.
        file: Option<Arc<std::fs::File>>,
        /// Where the last read ended (a read starting there is sequential).
        next: u64,
        /// The last read that failed for want of bytes, and when (see
        /// `read::FAIL_FAST`).
        failed: Option<(std::time::Instant, Arc<Error>)>,
        /// The download whose unverified bytes this open was given
        /// (`blobs::Read::Unverified`).
        unverified_from: Option<u64>,
    },
    /// A file of an unpacked directory layer, whose tree is held while open.
    Unpacked {
        file: Arc<std::fs::File>,
        _held: unpack::Held,
    },
    /// A local file: unpacked, or a decompressed tar (then the span of
    /// one member).
    File(Arc<std::fs::File>, Option<Span>),
    /// A file of the staging area, open for reading and writing.
    Staged(Arc<std::fs::File>),
}

pub struct Fs {
    metadata: Arc<Metadata>,
    walkahead: walkahead::WalkAhead,
    namespace: Namespace,
    blobs: blobs::Blobs,
    archives: archive::Archives,
    overlay: Overlay,
    unpacker: unpack::Unpacker,
    cache: Arc<Cache>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Folders whose listing turned out to have changed (a tag found by
    /// name that the listing lacked): the kernel's cached copy must go
    /// (`take_changed_folders`).
    changed_folders: Mutex<Vec<Ino>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    mount_time: i64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Our critical sections only insert or read map entries; a panic inside
    // one cannot leave a map half-updated in a way that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fs {
    pub fn new(
        source: Arc<dyn Source>,
        cache: Arc<Cache>,
        staging: Arc<Staging>,
        opts: Options,
    ) -> Fs {
        let blobs = blobs::Blobs::new(
            source.clone(),
            cache.clone(),
            blobs::Settings {
                verify: opts.verify,
                parallel_ranges: opts.parallel_ranges,
                timeout: opts.timeout,
            },
        );
        let metadata = Arc::new(Metadata::new(
            source,
            cache.clone(),
            opts.prefix.clone(),
            &opts.repos,
            opts.tag_ttl,
            opts.metadata_cache,
        ));
        Fs {
            walkahead: walkahead::WalkAhead::new(metadata.clone()),
            metadata,
            namespace: Namespace::new(),
            blobs,
            archives: Default::default(),
            overlay: Overlay::new(staging, opts.read_only, opts.uid, opts.gid),
            unpacker: unpack::Unpacker::new(),
            cache,
            handles: Mutex::new(HashMap::new()),
            changed_folders: Mutex::new(Vec::new()),
            next_fh: AtomicU64::new(1),
            uid: opts.uid,
            gid: opts.gid,
            mount_time: now_secs(),
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Whether a walk's repositories are being fetched ahead now (work in
    /// flight that wants the CPU).
    pub fn fetching_ahead(&self) -> bool {
        self.walkahead.is_fetching()
    }

    pub fn read_only(&self) -> bool {
        self.overlay.read_only()
    }

    fn node(&self, ino: Ino) -> Result<Arc<Node>, Error> {
        self.namespace.node(ino)
    }

    pub fn parent_of(&self, ino: Ino) -> Ino {
        self.namespace.parent_of(ino)
    }

    /// The mount-relative path of `ino`, as `a/b/c`.
    fn rel(&self, ino: Ino) -> Result<String, Error> {
        Ok(overlay::rel_of(&self.namespace.path(ino)?))
    }

    async fn resolve(&self, repo: &str, target: &Target) -> Result<Digest, Error> {
        self.metadata.resolve(repo, target).await
    }

    async fn view(&self, repo: &str, d: &Digest) -> Result<Arc<crate::tree::view::View>, Error> {
        self.metadata.view(repo, d).await
    }

    /// The repository folder path a node lists (root is the prefix itself).
    fn repo_path(node: &Node) -> Option<&str> {
        match node {
            Node::Root => Some(""),
            Node::Repo { path } => Some(path),
            _ => None,
        }
    }

    // ---- what the registry has in a folder ----------------------------------

    /// Children of a repository folder: its tags, then name components of
    /// repositories below it that are not also tags.
    async fn repo_children(&self, ino: Ino, path: &str) -> Result<Children, Error> {
        let full = self.metadata.full_repo(path);
        let tags = if full.is_empty() {
            Arc::new(Vec::new())
        } else {
            self.metadata.tags_of(&full).await?
        };
        let mut out = Vec::new();
        let shared: RepoName = full.as_str().into();
        for t in tags.iter() {
            let node = Node::Manifest {
                repo: shared.clone(),
                target: Target::Tag(t.clone()),
            };
            out.push(self.namespace.child(ino, t, node));
        }
        let pre = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut comps = BTreeSet::new();
        let repos = self.metadata.repositories().await?;
        if !tags.is_empty() {
            self.walkahead.listed(path, &repos);
        }
        for r in repos.iter() {
            if let Some(rest) = r.strip_prefix(&pre) {
                if let Some(c) = rest.split('/').next().filter(|c| !c.is_empty()) {
                    comps.insert(c.to_string());
                }
            }
        }
        for c in comps {
            if tags.binary_search(&c).is_ok() {
                continue; // a tag wins over a sub-repository component
            }
            let node = Node::Repo {
                path: format!("{pre}{c}"),
            };
            out.push(self.namespace.child(ino, &c, node));
        }
        Ok(out)
    }

    /// The view folder `ino` is: where in which manifest, to make entries.
    async fn view_folder(&self, ino: Ino, node: &Node) -> Result<Option<ViewFolder>, Error> {
        Ok(Some(match node {
            Node::Manifest { repo, target } => {
                let d = self.resolve(repo, target).await?;
                let view = self.view(repo, &d).await?;
                let mtime = self.metadata.manifest_mtime(&view, &d);
                ViewFolder {
                    folder: ino,
                    repo: repo.clone(),
                    manifest: Arc::new(d),
                    view,
                    path: Vec::new(),
                    mtime,
                }
            }
            Node::ViewDir {
                repo,
                folder,
                manifest,
                path,
                mtime,
            } => ViewFolder {
                folder: *folder,
                repo: repo.clone(),
                view: self.view(repo, manifest).await?,
                manifest: manifest.clone(),
                path: path.split('/').map(str::to_string).collect(),
                mtime: *mtime,
            },
            _ => return Ok(None),
        }))
    }

    /// The manifests on the path from the top down to folder `ino` (its own
    /// included), and how many `referrers/` folders that path goes through
    /// (`ino` included). A manifest graph is cut with these: a manifest is
    /// shown at most once on any path (an index may list a manifest that
    /// refers to the index), and `referrers/` nest at most
    /// `MAX_REFERRERS_DEPTH` deep, so `find` and `rsync -a` always end.
    async fn path_manifests(&self, ino: Ino) -> Result<(HashSet<Digest>, usize), Error> {
        let mut seen = HashSet::new();
        let mut referrers = 0;
        let mut at = ino;
        // Each step goes one folder up; a path is far shorter than this.
        for _ in 0..4096 {
            match &*self.node(at)? {
                Node::Root | Node::Repo { .. } => break,
                Node::Manifest { repo, target } => {
                    seen.insert(self.resolve(repo, target).await?);
                }
                Node::ViewDir { manifest, .. } => {
                    seen.insert(Digest::clone(manifest));
                }
                Node::Referrers { subject, .. } => {
                    referrers += 1;
                    seen.insert(subject.clone());
                }
                _ => {}
            }
            let up = self.parent_of(at);
            if up == at {
                break;
            }
            at = up;
        }
        Ok((seen, referrers))
    }

    /// Whether `node`, an entry listed in folder `ino`, is a manifest
    /// already on the path to it (a cycle), given `path_manifests(ino)`.
    fn closes_a_cycle(node: &Node, above: &HashSet<Digest>) -> bool {
        matches!(node, Node::Manifest { target: Target::Digest(d), .. } if above.contains(d))
    }

    /// What the registry has in a folder (no staged changes).
    async fn registry_children(&self, ino: Ino) -> Result<Children, Error> {
        let node = self.node(ino)?;
        if let Some(vf) = self.view_folder(ino, &node).await? {
            let dir = vf.view.dir(&vf.path).ok_or(Error::NotFound)?;
            let layouts = self.layouts_for(&vf.repo, &vf.view, dir.values()).await?;
            let mut out = self.namespace.view_entries(&vf.at(ino, &layouts), dir);
            if vf.path.is_empty() && !vf.view.children.is_empty() {
                let (above, _) = self.path_manifests(ino).await?;
                out.retain(|(name, _, n)| {
                    let cut = Self::closes_a_cycle(n, &above);
                    if cut {
                        tracing::warn!(index = %vf.manifest, child = name, "child is a manifest already on this path (a cycle); not shown");
                    }
                    !cut
                });
            }
            return Ok(out);
        }
        match &*node {
            Node::Staged { dir: true } => Ok(Vec::new()),
            Node::Root | Node::Repo { .. } => {
                let path = Self::repo_path(&node).unwrap_or("");
                self.repo_children(ino, path).await
            }
            Node::Referrers { repo, subject, .. } => {
                let (above, depth) = self.path_manifests(ino).await?;
                if depth > MAX_REFERRERS_DEPTH {
                    tracing::warn!(%subject, "referrers/ nested {depth} deep (the limit is {MAX_REFERRERS_DEPTH}); shown empty");
                    return Ok(Vec::new());
                }
                let names = self.metadata.referrers(repo, subject).await?;
                Ok(names
                    .iter()
                    .filter_map(|name| {
                        let d = name.parse::<Digest>().ok()?;
                        if above.contains(&d) {
                            tracing::warn!(%subject, referrer = name, "referrer is a manifest already on this path (a cycle); not shown");
                            return None;
                        }
                        let node = Node::Manifest {
                            repo: repo.clone(),
                            target: Target::Digest(d),
                        };
                        Some(self.namespace.child(ino, name, node))
                    })
                    .collect())
            }
            Node::UnpackedDir {
                repo,
                layer,
                path,
                mtime,
            } => self.unpacked_children(ino, repo, layer, path, *mtime).await,
            Node::ArchiveDir {
                repo,
                layer,
                path,
                mtime,
            } => self.archive_children(ino, repo, layer, path, *mtime).await,
            _ => Err(Error::NotDir),
        }
    }

    // ---- operations ---------------------------------------------------------

    /// Looks `name` up in `parent`; as a FUSE lookup, the answer counts
    /// as one reference of the kernel's to the inode (see `forget`).
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, Error> {
        // The inode could be swept between being found and being held only
        // if the table was swept twice meanwhile; then find it again.
        for _ in 0..3 {
            let mut a = self.lookup_inner(parent, name).await?;
            a.cache.name = a.cache.attr && self.names_are_stable(parent);
            a.cache.tags = a.cache.tags && self.names_follow_tags(parent);
            if self.namespace.hold(a.ino) {
                return Ok(a);
            }
        }
        Err(Error::NotFound)
    }

    /// The kernel forgot `n` of its references to `ino`: once it holds
    /// none, the inode and what it stands for are dropped from memory.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.namespace.forget(ino, n)
    }

    /// `forget` for many inodes at once.
    pub fn forget_many(&self, each: &[(Ino, u64)]) {
        self.namespace.forget_all(each)
    }

    /// The kernel was handed `ino` in a listing (readdirplus): one more
    /// reference. False when `ino` is gone; look its name up instead.
    pub fn hold(&self, ino: Ino) -> bool {
        self.namespace.hold(ino)
    }

    /// Folders whose listings changed since the last call (see
    /// `changed_folders`).
    pub fn take_changed_folders(&self) -> Vec<Ino> {
        std::mem::take(&mut *lock(&self.changed_folders))
    }

    /// Whether `ino` is in the table.
    pub fn knows(&self, ino: Ino) -> bool {
        self.namespace.node(ino).is_ok()
    }

    /// How many inodes the table holds.
    pub fn inode_count(&self) -> usize {
        self.namespace.len()
    }

    async fn lookup_inner(&self, parent: Ino, name: &str) -> Result<Attr, Error> {
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        if let Some(path) = Self::repo_path(&pnode) {
            let full = self.metadata.full_repo(path);
            if let Some(hex) = name.strip_prefix("@sha256:") {
                // A manifest by digest: reachable, not listed.
                let d = Digest::from_hex(hex).map_err(|_| Error::NotFound)?;
                if full.is_empty() {
                    return Err(Error::NotFound);
                }
                self.view(&full, &d).await?;
                let node = Node::Manifest {
                    repo: full.into(),
                    target: Target::Digest(d),
                };
                let (_, ino, node) = self.namespace.child(parent, name, node);
                return self.attr_of(ino, &node).await;
            }
            if let Some((ino, node)) = self.repo_entry(parent, path, &full, name).await? {
                return self.attr_of(ino, &node).await;
            }
            if self.overlay.is_removed(&join_rel(&self.rel(parent)?, name)) {
                return Err(Error::NotFound);
            }
            return self.lookup_unlisted(parent, path, &full, name).await;
        }
        if let Some(found) = self.lookup_in_view(parent, &pnode, name).await? {
            return found;
        }
        let children = self.children(parent).await?;
        match children.into_iter().find(|(n, _, _)| n == name) {
            Some((_, ino, node)) => self.attr_of(ino, &node).await,
            None => Err(Error::NotFound),
        }
    }

    /// The entry `name` of the repository folder `parent` (at `path`, the
    /// repository `full`), if its listing has it: found in the sorted tag
    /// list and repository names, without making the whole listing (a
    /// repository may have 10,000 tags, and `find` looks each up).
    async fn repo_entry(
        &self,
        parent: Ino,
        path: &str,
        full: &str,
        name: &str,
    ) -> Result<Option<(Ino, Arc<Node>)>, Error> {
        if !self.overlay.read_only() {
            let rel = self.rel(parent)?;
            if self.overlay.entry(&rel, name).is_some()
                || self.overlay.is_removed(&join_rel(&rel, name))
            {
                // Staged here: the merged listing decides.
                let children = self.children(parent).await?;
                return Ok(children
                    .into_iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, i, n)| (i, n)));
            }
        }
        if !full.is_empty()
            && self
                .metadata
                .tags_of(full)
                .await?
                .binary_search_by(|t| t.as_str().cmp(name))
                .is_ok()
        {
            let node = Node::Manifest {
                repo: full.into(),
                target: Target::Tag(name.to_string()),
            };
            let (_, i, n) = self.namespace.child(parent, name, node);
            return Ok(Some((i, n)));
        }
        if self.metadata.has_component(path, name).await? {
            let node = Node::Repo {
                path: join_rel(path, name),
            };
            let (_, i, n) = self.namespace.child(parent, name, node);
            return Ok(Some((i, n)));
        }
        Ok(None)
    }

    /// A name inside a manifest folder, found in the view's map without
    /// listing the folder (a manifest may have thousands of layers). `None`
    /// when the overlay has a say (the general path decides then).
    async fn lookup_in_view(
        &self,
        parent: Ino,
        pnode: &Node,
        name: &str,
    ) -> Result<Option<Result<Attr, Error>>, Error> {
        if matches!(pnode, Node::Staged { .. }) {
            return Ok(None);
        }
        if !self.overlay.read_only() {
            let rel = self.rel(parent)?;
            let path = join_rel(&rel, name);
            if self.overlay.entry(&rel, name).is_some() || self.overlay.is_removed(&path) {
                return Ok(None);
            }
        }
        let Some(vf) = self.view_folder(parent, pnode).await? else {
            return Ok(None);
        };
        let Some(dir) = vf.view.dir(&vf.path) else {
            return Ok(Some(Err(Error::NotFound)));
        };
        let Some(entry) = dir.get(name) else {
            return Ok(Some(Err(Error::NotFound)));
        };
        let layouts = self
            .layouts_for(&vf.repo, &vf.view, std::iter::once(entry))
            .await?;
        Ok(Some(
            match self
                .namespace
                .view_entry(&vf.at(parent, &layouts), name, entry)
            {
                Some((ino, node)) => {
                    if matches!(entry, crate::tree::view::Entry::Child(_)) {
                        let (above, _) = self.path_manifests(parent).await?;
                        if Self::closes_a_cycle(&node, &above) {
                            return Ok(Some(Err(Error::NotFound)));
                        }
                    }
                    self.attr_of(ino, &node).await
                }
                None => Err(Error::NotFound),
            },
        ))
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
                    self.metadata.found_repository(full);
                    self.metadata.forget_tags_of(full);
                    // The kernel's copy of the listing lacks it too.
                    lock(&self.changed_folders).push(parent);
                    let node = Node::Manifest {
                        repo: full.into(),
                        target,
                    };
                    let (_, ino, node) = self.namespace.child(parent, name, node);
                    return self.attr_of(ino, &node).await;
                }
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        if is_repository_component(name)
            && self
                .metadata
                .probe_repository(&join_rel(full, name))
                .await?
        {
            let node = Node::Repo {
                path: join_rel(path, name),
            };
            let (_, ino, node) = self.namespace.child(parent, name, node);
            return self.attr_of(ino, &node).await;
        }
        Err(Error::NotFound)
    }

    pub async fn getattr(&self, ino: Ino) -> Result<Attr, Error> {
        let node = self.node(ino)?;
        self.attr_of(ino, &node).await
    }

    async fn attr_of(&self, ino: Ino, node: &Node) -> Result<Attr, Error> {
        let stable = Self::immutable(node);
        // Registry nodes: what is not immutable follows the tags.
        let tags = !matches!(node, Node::Staged { .. });
        let dir = |mtime| Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            perm: if self.overlay.read_only() {
                0o555
            } else {
                0o755
            },
            nlink: 2,
            mtime,
            mtime_nsec: 0,
            uid: self.uid,
            gid: self.gid,
            cache: Cacheable {
                attr: stable,
                name: false,
                tags,
            },
        };
        let file = |size, mtime, perm| Attr {
            ino,
            kind: Kind::File,
            size,
            perm,
            nlink: self.namespace.links(ino),
            mtime,
            mtime_nsec: 0,
            uid: self.uid,
            gid: self.gid,
            cache: Cacheable {
                attr: stable,
                name: false,
                tags,
            },
        };
        Ok(match node {
            Node::Staged { .. } => match self.staged_attr(ino) {
                // Committed or discarded by another process: what is there now?
                Err(Error::NotFound) => return self.relookup(ino).await,
                r => return r,
            },
            Node::Root | Node::Repo { .. } => Attr {
                mtime_nsec: self.listing_stamp(node).await,
                ..dir(self.mount_time)
            },
            Node::Manifest { repo, target } => {
                // A folder whose manifest is unusable still stats (so `ls`
                // shows it); reading inside it reports the error.
                let d = self.resolve(repo, target).await?;
                let mtime_nsec = stamp(&d);
                match self.view(repo, &d).await {
                    Ok(v) => Attr {
                        mtime_nsec,
                        ..dir(self.metadata.manifest_mtime(&v, &d))
                    },
                    Err(e) => {
                        tracing::warn!("{repo}: {e}");
                        Attr {
                            mtime_nsec,
                            ..dir(self.cache.first_seen(&d, now_secs()))
                        }
                    }
                }
            }
            Node::Referrers { mtime, .. } => Attr {
                mtime_nsec: self.listing_stamp(node).await,
                ..dir(*mtime)
            },
            Node::ViewDir { mtime, .. }
            | Node::UnpackedDir { mtime, .. }
            | Node::ArchiveDir { mtime, .. } => dir(*mtime),
            Node::ManifestJson { size, mtime, .. } => file(*size, *mtime, 0o444),
            Node::Blob { desc, mtime, .. } => {
                // A ModelPack layer's file metadata may say it is executable.
                let mode = desc.file_metadata().and_then(|m| m.mode).unwrap_or(0);
                file(desc.size, *mtime, read_only_perm(mode))
            }
            Node::UnpackedFile {
                size, mtime, mode, ..
            }
            | Node::ArchiveFile {
                size, mtime, mode, ..
            } => file(*size, *mtime, read_only_perm(*mode)),
        })
    }

    /// A stamp of the listing of folder `ino` (the catalog, a repository's
    /// tags, `referrers/`) as regfs knows it, kept fresh for `--tag-ttl`:
    /// a listing shown before is fetched again here once it expired, so
    /// the kernel, which asks for a folder's attributes when it has kept
    /// them for the tag TTL, sees the mtime change and lists the folder
    /// again. A folder never listed is not fetched for its attributes
    /// (`ls -l` of a registry's top must not fetch every tag list): 0.
    /// Made from the names regfs holds, without building the listing's
    /// nodes (a repository may have 10,000 tags).
    async fn listing_stamp(&self, node: &Node) -> u32 {
        let stamped = match node {
            Node::Root if self.metadata.catalog_listed() => self.names_stamp("").await,
            Node::Repo { path } if self.metadata.listed(&self.metadata.full_repo(path)) => {
                self.names_stamp(path).await
            }
            Node::Referrers { repo, subject, .. }
                if self.metadata.listed(&format!("{repo}@{subject}")) =>
            {
                self.metadata
                    .referrers(repo, subject)
                    .await
                    .map(|n| stamp(&*n))
            }
            _ => return 0,
        };
        stamped.unwrap_or(0)
    }

    /// A stamp of what the repository folder `path` lists: the tags of
    /// its repository and the repositories below it.
    async fn names_stamp(&self, path: &str) -> Result<u32, Error> {
        let full = self.metadata.full_repo(path);
        let tags = if full.is_empty() {
            None
        } else {
            Some(self.metadata.tags_of(&full).await?)
        };
        let repos = self.metadata.repositories().await?;
        let pre = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let below: Vec<&String> = repos.iter().filter(|r| r.starts_with(&pre)).collect();
        Ok(stamp(&(tags.as_deref(), below)))
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
    /// For a manifest folder (a tag), its `referrers/` listing is asked for
    /// too, in the same concurrent batch: a walk (`ls -R`, `find`, `rsync`)
    /// goes into every tag's `referrers/` next, one tag after another, and
    /// would otherwise wait a round trip for each.
    pub async fn attrs(&self, inos: &[Ino]) -> Vec<Option<Attr>> {
        use futures_util::stream::{self, StreamExt};
        stream::iter(inos.iter().copied())
            .map(|i| async move {
                let a = self.getattr(i).await.ok();
                if a.is_some() {
                    self.warm_referrers(i).await;
                }
                a
            })
            .buffered(16)
            .collect()
            .await
    }

    async fn warm_referrers(&self, ino: Ino) {
        let Ok(node) = self.node(ino) else { return };
        let Node::Manifest { repo, target } = &*node else {
            return;
        };
        if let Ok(d) = self.resolve(repo, target).await {
            // A failure here is met again (and reported) when the folder is read.
            let _ = self.metadata.referrers(repo, &d).await;
        }
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
            mtime_nsec: 0,
            uid: self.uid,
            gid: self.gid,
            cache: Cacheable::default(),
        }
    }

    /// Whether a node and everything it holds never change: it is inside a
    /// manifest folder found by digest (or is one).
    fn immutable(node: &Node) -> bool {
        matches!(
            node,
            Node::ManifestJson { .. }
                | Node::Blob { .. }
                | Node::ViewDir { .. }
                | Node::UnpackedDir { .. }
                | Node::UnpackedFile { .. }
                | Node::ArchiveDir { .. }
                | Node::ArchiveFile { .. }
                | Node::Manifest {
                    target: Target::Digest(_),
                    ..
                }
        )
    }

    /// Whether the names in folder `ino` change only when the registry's
    /// tags do (a repository, a tag's folder, `referrers/`: trusted for
    /// `--tag-ttl`), with nothing staged in it.
    pub fn names_follow_tags(&self, ino: Ino) -> bool {
        self.node(ino).is_ok_and(|n| follows_tags(&n)) && self.untouched(ino)
    }

    /// Whether nothing is staged at or below folder `ino`.
    fn untouched(&self, ino: Ino) -> bool {
        if self.overlay.read_only() {
            return true;
        }
        match self.rel(ino) {
            Ok(rel) => self.overlay.is_untouched(&rel),
            Err(_) => false,
        }
    }

    /// The names the kernel holds that follow tags (`names_follow_tags`
    /// of their folders, and names in staged folders), and every folder
    /// it holds (their cached listings and attributes): what it must
    /// forget when a commit or discard by another process changed the
    /// tree (`refresh`).
    pub fn changeable_names(&self) -> (Vec<(Ino, String)>, Vec<Ino>) {
        self.namespace
            .held_names(|n| follows_tags(n) || matches!(n, Node::Staged { dir: true }))
    }

    /// Whether the names in folder `ino` mean the same inodes for good:
    /// an immutable folder with nothing staged in it.
    pub fn names_are_stable(&self, ino: Ino) -> bool {
        let Ok(node) = self.node(ino) else {
            return false;
        };
        let immutable_folder = matches!(
            &*node,
            Node::ViewDir { .. }
                | Node::UnpackedDir { .. }
                | Node::ArchiveDir { .. }
                | Node::Manifest {
                    target: Target::Digest(_),
                    ..
                }
        );
        immutable_folder && self.untouched(ino)
    }
}

/// A folder made by a manifest view, with what its entries need.
struct ViewFolder {
    folder: Ino,
    repo: RepoName,
    manifest: Arc<Digest>,
    view: Arc<crate::tree::view::View>,
    path: Vec<String>,
    mtime: i64,
}

impl ViewFolder {
    fn at<'a>(&'a self, parent: Ino, layouts: &'a Layouts) -> ViewAt<'a> {
        ViewAt {
            folder: self.folder,
            parent,
            repo: &self.repo,
            manifest: &self.manifest,
            view: &self.view,
            path: &self.path,
            mtime: self.mtime,
            layouts,
        }
    }
}

/// Whether a folder's names change only when the registry's tags do.
fn follows_tags(node: &Node) -> bool {
    matches!(
        node,
        Node::Root | Node::Repo { .. } | Node::Manifest { .. } | Node::Referrers { .. }
    )
}

/// Nanoseconds (below 10^9) that stand for `what`.
fn stamp(what: &impl std::hash::Hash) -> u32 {
    (crate::tree::hash64(what) % 1_000_000_000) as u32
}

/// A registry file's permissions: read-only, executable when its mode is.
fn read_only_perm(mode: u32) -> u16 {
    if mode & 0o111 != 0 {
        0o555
    } else {
        0o444
    }
}
