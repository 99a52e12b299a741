//! Writing into the tree: every change lands in the staging area (through
//! `overlay`) and nothing reaches the registry before `regfs commit`. A
//! folder's listing is what the registry has, minus what was removed, with
//! staged files and folders laid over it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::namespace::child_key;
use super::overlay::{join_rel, SetAttr};
use super::{lock, Attr, Children, Error, Fs, Handle};
use crate::stage;
use crate::tree::{Ino, Node, Target, ROOT_INO};

impl Fs {
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
        if self.overlay.read_only() {
            return Ok(out);
        }
        let rel = self.rel(ino)?;
        out.retain(|(name, _, _)| !self.overlay.is_removed(&join_rel(&rel, name)));
        for (name, dir) in self.overlay.entries(&rel) {
            match out.iter().position(|(n, _, _)| *n == name) {
                Some(i) if dir && out[i].2.is_dir() => {}
                Some(i) => {
                    out.remove(i);
                    out.push(self.staged_child(ino, &name, dir));
                }
                None => out.push(self.staged_child(ino, &name, dir)),
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
            let generation = self.metadata.generation();
            children = self.children_boxed(parent).await?;
            // Listed across a refresh: the listing may predate the commit.
            if self.metadata.generation() == generation {
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
                self.namespace.merge_into(i, ino);
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
        self.namespace.child(parent, name, Node::Staged { dir })
    }

    pub(super) fn staged_attr(&self, ino: Ino) -> Result<Attr, Error> {
        self.overlay.attr(ino, &self.rel(ino)?)
    }

    /// The tag folder a path is inside, if any: its path, repository and tag.
    fn tag_above(&self, ino: Ino) -> Option<(String, String, String)> {
        let mut cur = ino;
        for _ in 0..4096 {
            let node = self.node(cur).ok()?;
            if let Node::Manifest {
                repo,
                target: Target::Tag(tag),
            } = &*node
            {
                let rel = self.rel(cur).ok()?;
                return Some((rel, repo.to_string(), tag.clone()));
            }
            if cur == ROOT_INO {
                return None;
            }
            cur = self.parent_of(cur);
        }
        None
    }

    /// Before the first change inside an existing tag, remember which
    /// manifest the change applies to.
    async fn note_base(&self, ino: Ino) -> Result<(), Error> {
        let Some((rel, repo, tag)) = self.tag_above(ino) else {
            return Ok(());
        };
        if self.overlay.has_base(&rel) {
            return Ok(());
        }
        let d = self.resolve(&repo, &Target::Tag(tag)).await?;
        self.overlay.set_base(&rel, d)
    }

    fn in_repo_folder(parent: &Node) -> bool {
        matches!(parent, Node::Root | Node::Repo { .. })
    }

    fn new_handle(&self, h: Handle) -> u64 {
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        fh
    }

    pub async fn mkdir(&self, parent: Ino, name: &str, mode: u32) -> Result<Attr, Error> {
        self.overlay.writable()?;
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        self.overlay
            .check_new(Self::in_repo_folder(&pnode), name, true)?;
        if self
            .children(parent)
            .await?
            .iter()
            .any(|(n, _, _)| n == name)
        {
            return Err(Error::Exists);
        }
        self.note_base(parent).await?;
        self.overlay
            .make_dir(&join_rel(&self.rel(parent)?, name), mode)?;
        let (_, ino, _) = self.staged_child(parent, name, true);
        self.held(self.staged_attr(ino))
    }

    /// An entry handed to the kernel counts as one of its references.
    fn held(&self, a: Result<Attr, Error>) -> Result<Attr, Error> {
        let a = a?;
        if self.namespace.hold(a.ino) {
            Ok(a)
        } else {
            Err(Error::NotFound)
        }
    }

    pub async fn create(&self, parent: Ino, name: &str, mode: u32) -> Result<(Attr, u64), Error> {
        self.overlay.writable()?;
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Error::NotDir);
        }
        self.overlay
            .check_new(Self::in_repo_folder(&pnode), name, false)?;
        self.note_base(parent).await?;
        let prel = self.rel(parent)?;
        let f = self.overlay.create(&prel, &join_rel(&prel, name), mode)?;
        let (_, ino, _) = self.staged_child(parent, name, false);
        let fh = self.new_handle(Handle::Staged(Arc::new(f)));
        Ok((self.held(self.staged_attr(ino))?, fh))
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
            Node::Staged { dir: false } => Ok(Arc::new(self.overlay.open(&self.rel(ino)?, write)?)),
            Node::Blob { repo, desc, .. } => {
                self.overlay.writable()?;
                if self.namespace.in_many_folders(ino) {
                    // One blob is one inode across the mount; which of its
                    // names this open came by, the kernel does not say.
                    return Err(Error::NotPermitted(
                        "this blob has names in several folders (they are one file); to change it in one, write a new file and mv it over the name, or rm the name first",
                    ));
                }
                let (parent, name) = self.last_name(ino)?;
                self.note_base(parent).await?;
                let prel = self.rel(parent)?;
                let rel = join_rel(&prel, &name);
                let src = if truncate {
                    None
                } else {
                    Some(self.blobs.fetch(repo, desc).await?)
                };
                let f = self.overlay.copy_up(&prel, &rel, src.as_deref())?;
                self.namespace.rebind(
                    ino,
                    child_key(parent, &name, None),
                    Node::Staged { dir: false },
                );
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
        let path = self.namespace.path(ino)?;
        let name = path.last().cloned().ok_or(Error::NotFound)?;
        Ok((self.parent_of(ino), name))
    }

    /// Writes into a staged file. Local disk only: safe on the FUSE thread.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Error> {
        let f = match lock(&self.handles).get(&fh) {
            Some(Handle::Staged(f)) => f.clone(),
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
        if let Some(Handle::Staged(f)) = lock(&self.handles).get(&fh) {
            f.sync_data().map_err(|source| Error::Io {
                what: "staged file".into(),
                source,
            })?;
        }
        Ok(())
    }

    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Attr, Error> {
        let node = self.node(ino)?;
        let wants_change = set.size.is_some()
            || set.mode.is_some()
            || set.mtime.is_some()
            || set.atime.is_some()
            || set.uid.is_some()
            || set.gid.is_some();
        if wants_change {
            self.overlay.writable()?;
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
        self.overlay.set_attr(&self.rel(ino)?, set)?;
        self.staged_attr(ino)
    }

    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<(), Error> {
        self.remove(parent, name, false).await
    }

    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<(), Error> {
        self.remove(parent, name, true).await
    }

    async fn remove(&self, parent: Ino, name: &str, dir: bool) -> Result<(), Error> {
        self.overlay.writable()?;
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
        let in_registry = self
            .registry_children(parent)
            .await?
            .iter()
            .any(|(n, _, _)| n == name);
        self.overlay.remove(&rel, dir, in_registry)
    }

    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
    ) -> Result<(), Error> {
        self.overlay.writable()?;
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
        self.overlay
            .check_new(Self::in_repo_folder(&pnew), new_name, node.is_dir())?;
        self.note_base(new_parent).await?;
        let from = join_rel(&self.rel(parent)?, name);
        let to_parent = self.rel(new_parent)?;
        let to = join_rel(&to_parent, new_name);
        self.overlay.rename(&from, &to_parent, &to)?;
        self.namespace.rename(
            child_key(parent, name, None),
            child_key(new_parent, new_name, None),
            new_parent,
            new_name,
        );
        Ok(())
    }

    pub async fn link(&self, ino: Ino, new_parent: Ino, new_name: &str) -> Result<Attr, Error> {
        self.overlay.writable()?;
        let node = self.node(ino)?;
        if !matches!(&*node, Node::Staged { dir: false }) {
            return Err(Error::CrossDevice);
        }
        let pnew = self.node(new_parent)?;
        self.overlay
            .check_new(Self::in_repo_folder(&pnew), new_name, false)?;
        self.note_base(new_parent).await?;
        let to_parent = self.rel(new_parent)?;
        let to = join_rel(&to_parent, new_name);
        self.overlay.link(&self.rel(ino)?, &to_parent, &to)?;
        let (_, new_ino, _) = self.staged_child(new_parent, new_name, false);
        self.held(self.staged_attr(new_ino))
    }

    pub async fn setxattr(&self, ino: Ino, name: &str, value: &[u8]) -> Result<(), Error> {
        self.overlay.writable()?;
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
        self.overlay.set_xattr(&self.rel(ino)?, name, value)
    }

    pub async fn removexattr(&self, ino: Ino, name: &str) -> Result<(), Error> {
        self.overlay.writable()?;
        if self.overlay.remove_xattr(&self.rel(ino)?, name)? {
            Ok(())
        } else {
            Err(Error::NoAttr)
        }
    }

    /// Staged attributes of `ino`, laid over the registry's.
    pub(super) fn staged_xattrs(
        &self,
        ino: Ino,
        attrs: Vec<(String, Vec<u8>)>,
    ) -> Vec<(String, Vec<u8>)> {
        match self.rel(ino) {
            Ok(rel) => self.overlay.xattrs_over(&rel, attrs),
            Err(_) => attrs,
        }
    }

    /// Drops what this process remembers of tags and listings, and re-reads
    /// the staging state (after a commit or discard by another process).
    pub fn refresh(&self) {
        self.metadata.refresh();
        self.overlay.reload();
    }

    /// Whether the kernel may keep its cached pages of `ino` across opens:
    /// its bytes never changed under it.
    pub fn keeps_cache(&self, ino: Ino) -> bool {
        !self.namespace.changed(ino)
    }

    pub fn is_staged(&self, ino: Ino) -> bool {
        self.node(ino)
            .is_ok_and(|n| matches!(&*n, Node::Staged { .. }))
    }

    pub fn staging(&self) -> &Arc<stage::Staging> {
        self.overlay.staging()
    }
}
