//! Names and inodes: the inode table, and the nodes a folder's entries
//! become. Node building from a manifest view is pure (`entry_node`);
//! `Namespace` owns the table and gives each node its stable number.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{lock, Error};
use crate::digest::Digest;
use crate::oci::FileKind;
use crate::tree::archive::Layout;
use crate::tree::view::{Desc, Entry, View};
use crate::tree::{Ino, Inodes, Key, Node, RepoName, Target};

/// A folder's entries: name, inode, node.
pub(crate) type Children = Vec<(String, Ino, Arc<Node>)>;

/// The layouts of a folder's tar layers whose file metadata does not say
/// what they are, by index into `View::blobs`.
pub(crate) type Layouts = BTreeMap<usize, Arc<Layout>>;

/// Where in a manifest view a folder's entries are being made.
#[derive(Clone, Copy)]
pub(super) struct ViewAt<'a> {
    /// The manifest folder.
    pub folder: Ino,
    /// The folder whose entries these are.
    pub parent: Ino,
    pub repo: &'a RepoName,
    pub manifest: &'a Arc<Digest>,
    pub view: &'a View,
    /// `parent`'s path inside the manifest folder.
    pub path: &'a [String],
    pub mtime: i64,
    /// For `Entry::Archive`s whose file metadata does not give their shape.
    pub layouts: &'a Layouts,
}

/// Whether a tar layer's file metadata says what it is (a folder, or a
/// file and its size), so it becomes a node without reading its tar.
pub(super) fn shape_known(layer: &Desc) -> bool {
    match layer.file_metadata() {
        Some(m) => match m.kind {
            Some(FileKind::Dir) => true,
            Some(FileKind::File) => m.size.is_some(),
            None => false,
        },
        None => false,
    }
}

/// The node a tar layer is at its filepath: from its file metadata, or
/// else from its layout (`None` without one).
fn archive_node(at: &ViewAt<'_>, i: usize) -> Option<Node> {
    let layer = Arc::new(at.view.blobs.get(i)?.clone());
    let meta = layer.file_metadata().unwrap_or_default();
    let repo = at.repo.clone();
    let dir = |layer| Node::ArchiveDir {
        repo: repo.clone(),
        layer,
        path: Box::default(),
        mtime: meta.mtime.unwrap_or(at.mtime),
    };
    Some(match (meta.kind, meta.size) {
        (Some(FileKind::Dir), _) => dir(layer),
        (Some(FileKind::File), Some(size)) => Node::ArchiveFile {
            repo: repo.clone(),
            layer,
            path: Box::default(),
            size,
            mode: meta.mode.unwrap_or(0o644),
            mtime: meta.mtime.unwrap_or(at.mtime),
        },
        _ => match at.layouts.get(&i)?.as_ref() {
            Layout::File(m) => Node::ArchiveFile {
                repo: repo.clone(),
                layer,
                path: Box::default(),
                size: m.size,
                mode: meta.mode.unwrap_or(m.mode),
                mtime: meta
                    .mtime
                    .or((m.mtime > 0).then_some(m.mtime))
                    .unwrap_or(at.mtime),
            },
            Layout::Folder(_) => dir(layer),
        },
    })
}

/// The link count of a file that is one inode wherever it is named: at
/// least 2, whatever this folder shows, since other folders of the mount
/// may name it too (`rsync -aH` and `cp -a` look for hard links only among
/// files with more than one link).
const SHARED_LINKS: u32 = 2;

/// The key, node and link count of one entry of a manifest view (a blob's
/// key is its digest: one inode wherever it is named). Pure.
pub(super) fn entry_node(at: &ViewAt<'_>, name: &str, entry: &Entry) -> Option<(Key, Node, u32)> {
    let key = child_key(at.parent, name, Some(at.manifest));
    let repo = at.repo.clone();
    let mtime = at.mtime;
    Some(match entry {
        // The same manifest under two tags is one file too.
        Entry::ManifestJson => (
            Key::Blob {
                digest: Digest::clone(at.manifest),
                shown: 0,
            },
            Node::ManifestJson {
                repo,
                digest: Digest::clone(at.manifest),
                size: at.view.size,
                mtime,
            },
            SHARED_LINKS,
        ),
        Entry::Blob(i) => {
            let desc = Arc::new(at.view.blobs.get(*i)?.clone());
            let links = at.view.names_of(&desc.digest).max(SHARED_LINKS);
            let key = Key::blob(&desc);
            // A ModelPack layer's file metadata may give its mtime.
            let mtime = desc.file_metadata().and_then(|m| m.mtime).unwrap_or(mtime);
            (key, Node::Blob { repo, desc, mtime }, links)
        }
        Entry::Dir(_) => {
            let path = super::overlay::join_rel(&at.path.join("/"), name);
            let node = Node::ViewDir {
                repo,
                folder: at.folder,
                manifest: at.manifest.clone(),
                path: path.into(),
                mtime,
            };
            (key, node, 1)
        }
        Entry::Unpacked(i) => {
            let layer = Arc::new(at.view.blobs.get(*i)?.clone());
            let node = Node::UnpackedDir {
                repo,
                layer,
                path: Box::default(),
                mtime,
            };
            (key, node, 1)
        }
        Entry::Archive(i) => (key, archive_node(at, *i)?, 1),
        Entry::Child(i) => {
            let c = at.view.children.get(*i)?;
            let node = Node::Manifest {
                repo,
                target: Target::Digest(c.digest.clone()),
            };
            (key, node, 1)
        }
        Entry::Referrers => {
            let node = Node::Referrers {
                repo,
                subject: Digest::clone(at.manifest),
                mtime,
            };
            (key, node, 1)
        }
    })
}

/// The key of `name` under `parent` (inside a manifest folder, `version`
/// is the manifest, so a moved tag gives new inodes).
pub(super) fn child_key(parent: Ino, name: &str, version: Option<&Digest>) -> Key {
    Key::child(parent, name, version)
}

/// The key and link count of `name`, an entry of a layer's tree listed in
/// folder `parent`: a file is one inode per (layer, path) across the
/// mount; a folder is one per place (a folder has one parent).
pub(super) fn layer_key(parent: Ino, name: &str, node: &Node) -> (Key, u32) {
    match node {
        Node::UnpackedFile { layer, path, .. } | Node::ArchiveFile { layer, path, .. } => (
            Key::LayerFile(Box::new((layer.digest.clone(), path.to_vec()))),
            SHARED_LINKS,
        ),
        Node::UnpackedDir { layer, .. } | Node::ArchiveDir { layer, .. } => {
            (child_key(parent, name, Some(&layer.digest)), 1)
        }
        _ => (child_key(parent, name, None), 1),
    }
}

/// The inode table behind a mutex held only for single map operations.
pub(super) struct Namespace {
    inodes: Mutex<Inodes>,
}

impl Namespace {
    pub(super) fn new() -> Namespace {
        Namespace {
            inodes: Mutex::new(Inodes::new()),
        }
    }

    pub(super) fn node(&self, ino: Ino) -> Result<Arc<Node>, Error> {
        lock(&self.inodes).get(ino).ok_or(Error::NotFound)
    }

    pub(super) fn intern(
        &self,
        key: Key,
        parent: Ino,
        name: &str,
        node: Node,
        links: u32,
    ) -> (Ino, Arc<Node>) {
        lock(&self.inodes).intern(key, parent, name, node, links)
    }

    /// A plain child `name` of `parent` (no manifest version).
    pub(super) fn child(&self, parent: Ino, name: &str, node: Node) -> (String, Ino, Arc<Node>) {
        let (i, n) = self.intern(child_key(parent, name, None), parent, name, node, 1);
        (name.to_string(), i, n)
    }

    /// The entry `name` of a view folder, if the view has it.
    pub(super) fn view_entry(
        &self,
        at: &ViewAt<'_>,
        name: &str,
        entry: &Entry,
    ) -> Option<(Ino, Arc<Node>)> {
        let (key, node, links) = entry_node(at, name, entry)?;
        let blob = matches!(key, Key::Blob { .. });
        let mut t = lock(&self.inodes);
        let (ino, node) = t.intern(key, at.parent, name, node, links);
        if blob {
            t.named_in(ino, at.folder);
        }
        Some((ino, node))
    }

    /// Every entry of a view folder.
    pub(super) fn view_entries(&self, at: &ViewAt<'_>, dir: &BTreeMap<String, Entry>) -> Children {
        let mut out = Vec::with_capacity(dir.len());
        for (name, entry) in dir {
            if let Some((i, n)) = self.view_entry(at, name, entry) {
                out.push((name.clone(), i, n));
            }
        }
        out
    }

    /// The kernel was given an entry for `ino` (see `tree::Inodes`); false
    /// when `ino` is gone.
    pub(super) fn hold(&self, ino: Ino) -> bool {
        lock(&self.inodes).hold(ino)
    }

    /// The kernel forgot `n` of its entries for `ino`.
    pub(super) fn forget(&self, ino: Ino, n: u64) {
        lock(&self.inodes).forget(ino, n)
    }

    /// Several forgets under one lock.
    pub(super) fn forget_all(&self, each: &[(Ino, u64)]) {
        let mut t = lock(&self.inodes);
        for &(ino, n) in each {
            t.forget(ino, n);
        }
    }

    /// The (folder, name) of every inode the kernel holds whose folder's
    /// node passes `folder`, and those folders.
    pub(super) fn held_names(
        &self,
        folder: impl Fn(&Node) -> bool,
    ) -> (Vec<(Ino, String)>, Vec<Ino>) {
        lock(&self.inodes).held_names(folder)
    }

    /// Whether `ino` (a blob) has names in more than one manifest folder.
    pub(super) fn in_many_folders(&self, ino: Ino) -> bool {
        lock(&self.inodes).in_many_folders(ino)
    }

    /// How many inodes are known (for tests and the status line).
    pub(super) fn len(&self) -> usize {
        lock(&self.inodes).len()
    }

    pub(super) fn parent_of(&self, ino: Ino) -> Ino {
        lock(&self.inodes).parent(ino)
    }

    /// The mount-relative path of `ino`, as its components.
    pub(super) fn path(&self, ino: Ino) -> Result<Vec<String>, Error> {
        lock(&self.inodes).path(ino).ok_or(Error::NotFound)
    }

    pub(super) fn links(&self, ino: Ino) -> u32 {
        lock(&self.inodes).links(ino)
    }

    /// Whether the node behind `ino` was ever replaced (its cached pages may
    /// hold other bytes).
    pub(super) fn changed(&self, ino: Ino) -> bool {
        lock(&self.inodes).changed(ino)
    }

    pub(super) fn rebind(&self, ino: Ino, key: Key, node: Node) {
        lock(&self.inodes).rebind(ino, key, node)
    }

    pub(super) fn merge_into(&self, from: Ino, into: Ino) {
        lock(&self.inodes).merge_into(from, into)
    }

    pub(super) fn rename(&self, from: Key, to: Key, new_parent: Ino, new_name: &str) {
        lock(&self.inodes).rename(from, to, new_parent, new_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_titled_layer_and_its_blob_entry_are_one_node_with_two_links() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447","size":12,
              "annotations":{"org.opencontainers.image.title":"hello.txt"}}]}"#;
        let view = View::parse(bytes, None).unwrap();
        let d = Arc::new(Digest::of(bytes));
        let repo: RepoName = "r".into();
        let at = ViewAt {
            folder: 7,
            parent: 7,
            repo: &repo,
            manifest: &d,
            view: &view,
            path: &[],
            mtime: 5,
            layouts: &Layouts::new(),
        };
        let Some(Entry::Blob(i)) = view.root.get("hello.txt") else {
            panic!("no titled entry: {:?}", view.root.keys());
        };
        let (key, node, links) = entry_node(&at, "hello.txt", &Entry::Blob(*i)).unwrap();
        assert_eq!(links, 2);
        assert!(matches!(key, Key::Blob { .. }));
        assert!(matches!(node, Node::Blob { mtime: 5, .. }));
        let Node::Blob { repo: shared, .. } = &node else {
            unreachable!()
        };
        assert!(
            RepoName::ptr_eq(shared, &repo),
            "the name is shared, not copied"
        );
        let ns = Namespace::new();
        let (a, _) = ns.view_entry(&at, "hello.txt", &Entry::Blob(*i)).unwrap();
        let blobs_dir = ViewAt {
            parent: 9,
            path: &["blobs".into(), "sha256".into()],
            ..at
        };
        let hex = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
        let (b, _) = ns.view_entry(&blobs_dir, hex, &Entry::Blob(*i)).unwrap();
        assert_eq!(a, b);
        assert_eq!(ns.links(a), 2);
    }
}
