//! Writing into the tree: every change lands in the staging area (a mirror
//! of the mount on local disk) and nothing reaches the registry before
//! `regfs commit`. A folder's listing is what the registry has, minus what
//! was removed, with staged files and folders laid over it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use super::{lock, Attr, Children, Error, Fs, Kind};
use crate::reference::{is_repository_component, is_tag};
use crate::stage::{self, META_DIR};
use crate::tree::view::is_safe_component;
use crate::tree::{Ino, Node, Target};

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

/// What `setattr` may change.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
}

impl Fs {
    /// The mount-relative path of `ino`, as `a/b/c`.
    pub(super) fn rel_path(&self, ino: Ino) -> Result<Vec<String>, Error> {
        lock(&self.inodes).path(ino).ok_or(Error::NotFound)
    }

    fn rel(&self, ino: Ino) -> Result<String, Error> {
        Ok(stage::join(&self.rel_path(ino)?))
    }

    fn writable(&self) -> Result<(), Error> {
        if self.opts.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// A folder's listing: the registry's entries not removed, with staged
    /// entries laid over them (a staged file replaces; folders merge).
    pub(super) async fn children(&self, ino: Ino) -> Result<Children, Error> {
        if self.is_staged(ino) {
            // A staged folder may have become a registry entry (committed:
            // a new repository or tag), or gone (discarded): look its name
            // up again so the node says what it is now.
            match self.relookup(ino).await {
                Ok(_) => {}
                Err(e) if self.staged_attr(ino).is_err() => return Err(e),
                Err(_) => {}
            }
        }
        let mut out = self.registry_children(ino).await?;
        if self.opts.read_only {
            return Ok(out);
        }
        let rel = self.rel(ino)?;
        let state = self.staging.state();
        out.retain(|(name, _, _)| !state.is_removed(&join_rel(&rel, name)));
        let real = self.staging.real(&rel);
        let Ok(rd) = fs::read_dir(&real) else {
            return Ok(out);
        };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name == META_DIR {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            match out.iter().position(|(n, _, _)| *n == name) {
                Some(i) if meta.is_dir() && out[i].2.is_dir() => {}
                Some(i) => {
                    out.remove(i);
                    out.push(self.staged_child(ino, &name, meta.is_dir()));
                }
                None => out.push(self.staged_child(ino, &name, meta.is_dir())),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Looks `ino` up again under its name, so its node follows what the
    /// name means now. Fails if the name is gone or now means another inode.
    pub(super) async fn relookup(&self, ino: Ino) -> Result<Attr, Error> {
        let (parent, name) = self.last_name(ino)?;
        if parent == ino {
            return Err(Error::NotFound);
        }
        let mut children;
        loop {
            let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
            children = self.children_boxed(parent).await?;
            // Listed across a refresh: the listing may predate the commit.
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
                break;
            }
        }
        match children.into_iter().find(|(n, _, _)| *n == name) {
            Some((_, i, node)) if i == ino && !matches!(&*node, Node::Staged { .. }) => {
                Box::pin(self.attr_of(i, &node)).await
            }
            Some((_, i, _)) if i == ino => self.staged_attr(ino),
            Some((_, i, node)) if !matches!(&*node, Node::Staged { .. }) => {
                // The kernel still holds `ino` for this name (a staged file
                // that was just committed): let `ino` stand for the entry.
                lock(&self.inodes).merge_into(i, ino);
                Box::pin(self.attr_of(ino, &node)).await
            }
            _ => Err(Error::NotFound),
        }
    }

    fn children_boxed<'a>(
        &'a self,
        ino: Ino,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Children, Error>> + Send + 'a>>
    {
        Box::pin(self.children(ino))
    }

    fn staged_child(&self, parent: Ino, name: &str, dir: bool) -> (String, Ino, Arc<Node>) {
        let (i, n) = self.intern(
            Self::child_key(parent, name, None),
            parent,
            name,
            Node::Staged { dir },
            1,
        );
        (name.to_string(), i, n)
    }

    pub(super) fn staged_attr(&self, ino: Ino) -> Result<Attr, Error> {
        let real = self.staging.real(&self.rel(ino)?);
        let meta = fs::symlink_metadata(&real).map_err(io_err(&real))?;
        let dir = meta.is_dir();
        let perm = if dir || meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        Ok(Attr {
            ino,
            kind: if dir { Kind::Dir } else { Kind::File },
            size: if dir { 0 } else { meta.len() },
            perm,
            nlink: if dir { 2 } else { meta.nlink() as u32 },
            mtime: meta.mtime(),
            uid: self.opts.uid,
            gid: self.opts.gid,
        })
    }

    /// The tag folder a path is inside, if any: its inode and path.
    fn tag_above(&self, ino: Ino) -> Option<(Ino, String, String, String)> {
        let mut cur = ino;
        for _ in 0..4096 {
            let node = self.node(cur).ok()?;
            if let Node::Manifest {
                repo,
                target: Target::Tag(tag),
            } = &*node
            {
                let rel = self.rel(cur).ok()?;
                return Some((cur, rel, repo.clone(), tag.clone()));
            }
            if cur == crate::tree::ROOT_INO {
                return None;
            }
            cur = self.parent_of(cur);
        }
        None
    }

    /// Before the first change inside an existing tag, remember which
    /// manifest the change applies to.
    async fn note_base(&self, ino: Ino) -> Result<(), Error> {
        let Some((_, rel, repo, tag)) = self.tag_above(ino) else {
            return Ok(());
        };
        if self.staging.state().bases.contains_key(&rel) {
            return Ok(());
        }
        let d = self.resolve(&repo, &Target::Tag(tag)).await?;
        self.staging.update(|s| {
            s.bases.entry(rel).or_insert(d);
        })?;
        Ok(())
    }

    /// Where a new entry may go: inside a tag (any safe name), or a new tag
    /// or repository folder (folders only, with names the registry accepts).
    fn check_new(&self, parent: &Node, name: &str, dir: bool) -> Result<(), Error> {
        if !is_safe_component(name) || name == META_DIR {
            return Err(Error::Invalid(format!(
                "{name:?} is not a name regfs can stage"
            )));
        }
        if matches!(parent, Node::Root | Node::Repo { .. }) {
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

    fn ensure_real_dir(&self, rel: &str) -> Result<(), Error> {
        let p = self.staging.real(rel);
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

    pub async fn mkdir(&self, parent: Ino, name: &str) -> Result<Attr, Error> {
        self.writable()?;
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        self.check_new(&pnode, name, true)?;
        if self
            .children(parent)
            .await?
            .iter()
            .any(|(n, _, _)| n == name)
        {
            return Err(Error::Exists);
        }
        self.note_base(parent).await?;
        let rel = join_rel(&self.rel(parent)?, name);
        self.ensure_real_dir(&rel)?;
        self.unremove(&rel)?;
        let (_, ino, _) = self.staged_child(parent, name, true);
        self.staged_attr(ino)
    }

    pub async fn create(&self, parent: Ino, name: &str, mode: u32) -> Result<(Attr, u64), Error> {
        self.writable()?;
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        self.check_new(&pnode, name, false)?;
        self.note_base(parent).await?;
        let prel = self.rel(parent)?;
        self.ensure_real_dir(&prel)?;
        let rel = join_rel(&prel, name);
        let real = self.staging.real(&rel);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&real)
            .map_err(io_err(&real))?;
        let _ = f.set_permissions(fs::Permissions::from_mode(if mode & 0o111 != 0 {
            0o755
        } else {
            0o644
        }));
        self.unremove(&rel)?;
        let (_, ino, _) = self.staged_child(parent, name, false);
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.handles).insert(fh, super::Handle::Staged(Arc::new(f)));
        Ok((self.staged_attr(ino)?, fh))
    }

    /// Opens a staged file, copying a registry file up into the staging
    /// area first when it is opened for writing.
    pub(super) async fn open_staged(
        &self,
        ino: Ino,
        node: &Node,
        write: bool,
        truncate: bool,
    ) -> Result<Arc<File>, Error> {
        match node {
            Node::Staged { dir: false } => {
                let real = self.staging.real(&self.rel(ino)?);
                let f = OpenOptions::new()
                    .read(true)
                    .write(write)
                    .open(&real)
                    .map_err(io_err(&real))?;
                Ok(Arc::new(f))
            }
            Node::Blob { repo, desc, .. } => {
                self.writable()?;
                let (parent, name) = self.last_name(ino)?;
                self.note_base(parent).await?;
                let prel = self.rel(parent)?;
                self.ensure_real_dir(&prel)?;
                let rel = join_rel(&prel, &name);
                let real = self.staging.real(&rel);
                if truncate {
                    File::create(&real).map_err(io_err(&real))?;
                } else {
                    let src = self.fetch_blob(repo, desc).await?;
                    fs::copy(&src, &real).map_err(io_err(&real))?;
                    let _ = fs::set_permissions(&real, fs::Permissions::from_mode(0o644));
                }
                self.unremove(&rel)?;
                lock(&self.inodes).rebind(
                    ino,
                    Self::child_key(parent, &name, None),
                    Node::Staged { dir: false },
                );
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&real)
                    .map_err(io_err(&real))?;
                Ok(Arc::new(f))
            }
            Node::Staged { dir: true } => Err(Error::IsDir),
            n if n.is_dir() => Err(Error::IsDir),
            _ => Err(Error::NotPermitted(
                "this file cannot be changed; replace it in a tag folder",
            )),
        }
    }

    fn last_name(&self, ino: Ino) -> Result<(Ino, String), Error> {
        let path = self.rel_path(ino)?;
        let name = path.last().cloned().ok_or(Error::NotFound)?;
        Ok((self.parent_of(ino), name))
    }

    /// Writes into a staged file. Local disk only: safe on the FUSE thread.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Error> {
        let f = match lock(&self.handles).get(&fh) {
            Some(super::Handle::Staged(f)) => f.clone(),
            Some(_) => return Err(Error::ReadOnly),
            None => return Err(Error::BadHandle),
        };
        f.write_all_at(data, offset).map_err(|source| Error::Io {
            what: "staged file".into(),
            source,
        })?;
        Ok(data.len() as u32)
    }

    pub fn fsync(&self, fh: u64) -> Result<(), Error> {
        if let Some(super::Handle::Staged(f)) = lock(&self.handles).get(&fh) {
            f.sync_data().map_err(|source| Error::Io {
                what: "staged file".into(),
                source,
            })?;
        }
        Ok(())
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Attr, Error> {
        let node = self.node(ino)?;
        let wants_change =
            set.size.is_some() || set.mode.is_some() || set.mtime.is_some() || set.atime.is_some();
        if wants_change {
            self.writable()?;
        }
        if let Some(size) = set.size {
            if !matches!(&*node, Node::Staged { .. }) {
                self.open_staged(ino, &node, true, size == 0).await?;
            }
        }
        let node = self.node(ino)?;
        if !matches!(&*node, Node::Staged { .. }) {
            // Registry entries keep their modes and times: accept and ignore,
            // so `rsync -a` and `cp -a` over existing folders do not fail.
            return self.getattr(ino).await;
        }
        let real = self.staging.real(&self.rel(ino)?);
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
        self.staged_attr(ino)
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<(), Error> {
        self.remove(parent, name, false).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<(), Error> {
        self.remove(parent, name, true).await
    }

    async fn remove(&self, parent: Ino, name: &str, dir: bool) -> Result<(), Error> {
        self.writable()?;
        let children = self.children(parent).await?;
        let (_, ino, node) = children
            .into_iter()
            .find(|(n, _, _)| n == name)
            .ok_or(Error::NotFound)?;
        if node.is_dir() != dir {
            return Err(if dir { Error::NotDir } else { Error::IsDir });
        }
        if matches!(
            &*node,
            Node::Manifest {
                target: Target::Tag(_),
                ..
            } | Node::Repo { .. }
        ) {
            return Err(Error::NotPermitted(
                "deleting tags and repositories is not part of this version",
            ));
        }
        if dir && !self.children(ino).await?.is_empty() {
            return Err(Error::NotEmpty);
        }
        self.note_base(parent).await?;
        let rel = join_rel(&self.rel(parent)?, name);
        let real = self.staging.real(&rel);
        if real.symlink_metadata().is_ok() {
            let r = if dir {
                fs::remove_dir(&real)
            } else {
                fs::remove_file(&real)
            };
            r.map_err(io_err(&real))?;
        }
        let in_registry = self
            .registry_children(parent)
            .await?
            .iter()
            .any(|(n, _, _)| n == name);
        if in_registry {
            self.staging.update(|s| {
                s.removed.insert(rel.clone());
                s.xattrs.remove(&rel);
            })?;
        }
        Ok(())
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
    ) -> Result<(), Error> {
        self.writable()?;
        let pnew = self.node(new_parent)?;
        let src = self.node(parent)?;
        if !pnew.is_dir() || !src.is_dir() {
            return Err(Error::NotDir);
        }
        let children = self.children(parent).await?;
        let (_, _, node) = children
            .into_iter()
            .find(|(n, _, _)| n == name)
            .ok_or(Error::NotFound)?;
        if !matches!(&*node, Node::Staged { .. }) {
            // Moving a registry entry would change what it is; `mv` falls
            // back to copy and unlink, which stage exactly that.
            return Err(Error::CrossDevice);
        }
        self.check_new(&pnew, new_name, node.is_dir())?;
        self.note_base(new_parent).await?;
        let from = join_rel(&self.rel(parent)?, name);
        let to_parent = self.rel(new_parent)?;
        self.ensure_real_dir(&to_parent)?;
        let to = join_rel(&to_parent, new_name);
        let (rf, rt) = (self.staging.real(&from), self.staging.real(&to));
        fs::rename(&rf, &rt).map_err(io_err(&rt))?;
        self.unremove(&to)?;
        lock(&self.inodes).rename(
            Self::child_key(parent, name, None),
            Self::child_key(new_parent, new_name, None),
            new_parent,
            new_name,
        );
        Ok(())
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &str) -> Result<Attr, Error> {
        self.writable()?;
        let node = self.node(ino)?;
        if !matches!(&*node, Node::Staged { dir: false }) {
            return Err(Error::CrossDevice);
        }
        let pnew = self.node(new_parent)?;
        self.check_new(&pnew, new_name, false)?;
        self.note_base(new_parent).await?;
        let to_parent = self.rel(new_parent)?;
        self.ensure_real_dir(&to_parent)?;
        let to = join_rel(&to_parent, new_name);
        let from = self.staging.real(&self.rel(ino)?);
        let rt = self.staging.real(&to);
        fs::hard_link(&from, &rt).map_err(io_err(&rt))?;
        self.unremove(&to)?;
        let (_, new_ino, _) = self.staged_child(new_parent, new_name, false);
        self.staged_attr(new_ino)
    }

    pub async fn setxattr(&self, ino: Ino, name: &str, value: &[u8]) -> Result<(), Error> {
        self.writable()?;
        // `cp -a` and `mv` copy every user.* attribute. The ones regfs
        // derives (digest, media type, platform) and the title (a file's
        // title is its name) are accepted and ignored, so a copy neither
        // fails nor carries the old name along.
        const DERIVED: [&str; 3] = ["user.oci.digest", "user.oci.mediaType", "user.oci.platform"];
        let title = format!(
            "{}{}",
            stage::plan::ANNOTATION_XATTR,
            crate::tree::view::TITLE_ANNOTATION
        );
        if DERIVED.contains(&name) || name == title {
            return Ok(());
        }
        if name != stage::plan::ARTIFACT_TYPE_XATTR
            && !name.starts_with(stage::plan::ANNOTATION_XATTR)
        {
            return Err(Error::Unsupported);
        }
        let value = String::from_utf8(value.to_vec())
            .map_err(|_| Error::Invalid("attribute values are UTF-8 text".into()))?;
        self.note_base(ino).await?;
        let rel = self.rel(ino)?;
        self.staging.update(|s| {
            s.xattrs
                .entry(rel)
                .or_default()
                .insert(name.to_string(), value);
        })?;
        Ok(())
    }

    pub async fn removexattr(&self, ino: Ino, name: &str) -> Result<(), Error> {
        self.writable()?;
        let rel = self.rel(ino)?;
        let had = self.staging.update(|s| {
            s.xattrs
                .get_mut(&rel)
                .and_then(|m| m.remove(name))
                .is_some()
        })?;
        if had {
            Ok(())
        } else {
            Err(Error::NoAttr)
        }
    }

    /// Staged attributes of `ino`, laid over the registry's.
    pub(super) fn staged_xattrs(
        &self,
        ino: Ino,
        mut attrs: Vec<(String, Vec<u8>)>,
    ) -> Vec<(String, Vec<u8>)> {
        let Ok(rel) = self.rel(ino) else { return attrs };
        if let Some(m) = self.staging.state().xattrs.get(&rel) {
            for (k, v) in m {
                attrs.retain(|(n, _)| n != k);
                attrs.push((k.clone(), v.as_bytes().to_vec()));
            }
        }
        attrs
    }

    /// Drops what this process remembers of tags and listings, and re-reads
    /// the staging state (after a commit or discard by another process).
    pub fn refresh(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.tags).clear();
        lock(&self.tag_lists).clear();
        *lock(&self.catalog) = None;
        if let Err(e) = self.staging.reload() {
            tracing::warn!("{e}");
        }
    }

    /// Whether the kernel may keep its cached pages of `ino` across opens:
    /// its bytes never changed under it.
    pub fn keeps_cache(&self, ino: Ino) -> bool {
        !lock(&self.inodes).changed(ino)
    }

    pub fn is_staged(&self, ino: Ino) -> bool {
        self.node(ino)
            .is_ok_and(|n| matches!(&*n, Node::Staged { .. }))
    }

    pub fn staging(&self) -> &Arc<stage::Staging> {
        &self.staging
    }
}
