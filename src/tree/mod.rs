//! The tree regfs shows: nodes, their inode numbers, what a manifest
//! looks like as a folder (`view`), and what a tar layer looks like as one
//! (`archive`). Nothing here does I/O or names fuser.

pub mod archive;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;

use crate::digest::Digest;
use view::Desc;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// What a manifest folder points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Root,
    /// A folder of repository names: `path` is a repository, a prefix of
    /// some, or both.
    Repo {
        path: String,
    },
    /// A manifest or index folder: a tag, an `@sha256:` folder, a platform
    /// child or a referrer.
    Manifest {
        repo: String,
        target: Target,
    },
    /// A folder made by a manifest view (`blobs`, `blobs/sha256`, a title's
    /// parent); `path` is relative to the manifest folder `folder`.
    ViewDir {
        repo: String,
        folder: Ino,
        manifest: Digest,
        path: Vec<String>,
        mtime: i64,
    },
    /// `referrers/` of the manifest `subject`.
    Referrers {
        repo: String,
        subject: Digest,
        mtime: i64,
    },
    /// A manifest's exact bytes.
    ManifestJson {
        repo: String,
        digest: Digest,
        size: u64,
        mtime: i64,
    },
    /// A blob: a layer, the config, or an entry of `blobs/sha256`.
    Blob {
        repo: String,
        desc: Desc,
        mtime: i64,
    },
    /// A folder inside an unpacked directory layer.
    UnpackedDir {
        repo: String,
        layer: Desc,
        path: Vec<String>,
        mtime: i64,
    },
    /// A folder or file of the staging area, at the path its names spell
    /// from the root (so a rename moves it without touching the node).
    Staged {
        dir: bool,
    },
    /// A file inside an unpacked directory layer.
    UnpackedFile {
        repo: String,
        layer: Desc,
        path: Vec<String>,
        size: u64,
        mode: u32,
        mtime: i64,
    },
    /// A folder of a ModelPack tar layer (`archive`): `path` is relative to
    /// the layer's own folder, which stands at its filepath.
    ArchiveDir {
        repo: String,
        layer: Desc,
        path: Vec<String>,
        mtime: i64,
    },
    /// A file of a ModelPack tar layer: a byte range of the (decompressed)
    /// tar. `path` is where it is in the layer's folder; empty when the
    /// layer is this one file.
    ArchiveFile {
        repo: String,
        layer: Desc,
        path: Vec<String>,
        size: u64,
        mode: u32,
        mtime: i64,
    },
}

impl Node {
    pub fn is_dir(&self) -> bool {
        match self {
            Node::Staged { dir } => *dir,
            Node::ManifestJson { .. }
            | Node::Blob { .. }
            | Node::UnpackedFile { .. }
            | Node::ArchiveFile { .. } => false,
            _ => true,
        }
    }
}

/// What identifies an inode: a name under a parent (and, inside a manifest
/// folder, the manifest it came from, so a moved tag gives new inodes), or a
/// blob within one manifest folder (so a titled file and its
/// `blobs/sha256/<hex>` are one inode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Child {
        parent: Ino,
        name: String,
        version: Option<Digest>,
    },
    Blob {
        folder: Ino,
        manifest: Digest,
        blob: Digest,
    },
}

struct Slot {
    node: Arc<Node>,
    /// The folder and name it was last looked up under.
    parent: Ino,
    name: String,
    /// Names under which the kernel knows this inode (for nlink).
    links: u32,
    /// The node was replaced at some point: the kernel's cached pages for
    /// this inode may hold other bytes.
    changed: bool,
}

/// The inode table: stable numbers for keys, and the node behind each.
pub struct Inodes {
    by_key: HashMap<Key, Ino>,
    slots: HashMap<Ino, Slot>,
    next: Ino,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes::new()
    }
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut slots = HashMap::new();
        slots.insert(
            ROOT_INO,
            Slot {
                node: Arc::new(Node::Root),
                parent: ROOT_INO,
                name: String::new(),
                links: 1,
                changed: false,
            },
        );
        Inodes {
            by_key: HashMap::new(),
            slots,
            next: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: Ino) -> Option<Arc<Node>> {
        self.slots.get(&ino).map(|s| s.node.clone())
    }

    pub fn parent(&self, ino: Ino) -> Ino {
        self.slots.get(&ino).map(|s| s.parent).unwrap_or(ROOT_INO)
    }

    /// The inode for `key`, made from `node` the first time, found again
    /// under `parent`/`name`. A key whose node changed (a staged folder
    /// that became a tag after a commit) keeps its number with the new node.
    /// `links` is the number of names the node has (2 for a titled blob).
    pub fn intern(
        &mut self,
        key: Key,
        parent: Ino,
        name: &str,
        node: Node,
        links: u32,
    ) -> (Ino, Arc<Node>) {
        if let Some(&ino) = self.by_key.get(&key) {
            if let Some(s) = self.slots.get_mut(&ino) {
                // Link counts can only grow as more names of a blob are seen.
                s.links = s.links.max(links);
                s.parent = parent;
                if s.name != name {
                    s.name = name.to_string();
                }
                if *s.node != node {
                    s.node = Arc::new(node);
                    s.changed = true;
                }
                return (ino, s.node.clone());
            }
        }
        let ino = self.next;
        self.next += 1;
        let node = Arc::new(node);
        self.by_key.insert(key, ino);
        self.slots.insert(
            ino,
            Slot {
                node: node.clone(),
                parent,
                name: name.to_string(),
                links,
                changed: false,
            },
        );
        (ino, node)
    }

    /// Gives `ino` a new node and key, keeping its number (a registry file
    /// copied up into the staging area while the kernel holds it open).
    pub fn rebind(&mut self, ino: Ino, key: Key, node: Node) {
        self.by_key.retain(|_, v| *v != ino);
        self.by_key.insert(key, ino);
        if let Some(s) = self.slots.get_mut(&ino) {
            s.node = Arc::new(node);
            s.links = 1;
            s.changed = true;
        }
    }

    /// Makes `into` stand for what `from` stands for: every key of `from`
    /// now finds `into`, with `from`'s node and links.
    pub fn merge_into(&mut self, from: Ino, into: Ino) {
        if from == into {
            return;
        }
        for v in self.by_key.values_mut() {
            if *v == from {
                *v = into;
            }
        }
        self.by_key.retain(|_, v| *v != from || *v == into);
        if let Some(src) = self.slots.get(&from).map(|s| (s.node.clone(), s.links)) {
            if let Some(dst) = self.slots.get_mut(&into) {
                dst.node = src.0;
                dst.links = src.1;
                dst.changed = true;
            }
        }
    }

    /// Moves the inode known as `parent`/`name` to `new_parent`/`new_name`.
    pub fn rename(&mut self, from: Key, to: Key, new_parent: Ino, new_name: &str) {
        if let Some(ino) = self.by_key.remove(&from) {
            self.by_key.insert(to, ino);
            if let Some(s) = self.slots.get_mut(&ino) {
                s.parent = new_parent;
                s.name = new_name.to_string();
            }
        }
    }

    /// The names from the root down to `ino` (empty for the root). `None`
    /// when the chain is broken or loops.
    pub fn path(&self, ino: Ino) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                out.reverse();
                return Some(out);
            }
            let s = self.slots.get(&cur)?;
            out.push(s.name.clone());
            cur = s.parent;
        }
        None
    }

    /// Whether the node behind `ino` was ever replaced.
    pub fn changed(&self, ino: Ino) -> bool {
        self.slots.get(&ino).is_some_and(|s| s.changed)
    }

    pub fn links(&self, ino: Ino) -> u32 {
        self.slots.get(&ino).map(|s| s.links).unwrap_or(1)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_inode() {
        let mut t = Inodes::new();
        let k = Key::Child {
            parent: ROOT_INO,
            name: "repo".into(),
            version: None,
        };
        let repo = Node::Repo {
            path: "repo".into(),
        };
        let (a, _) = t.intern(k.clone(), ROOT_INO, "repo", repo, 1);
        let (b, _) = t.intern(k, ROOT_INO, "repo", Node::Staged { dir: true }, 1);
        assert_eq!(a, b);
        assert_ne!(a, ROOT_INO);
        assert_eq!(t.parent(a), ROOT_INO);
        assert_eq!(
            *t.get(a).unwrap(),
            Node::Staged { dir: true },
            "a changed node is replaced"
        );
        assert_eq!(t.path(a), Some(vec!["repo".to_string()]));
    }

    #[test]
    fn blob_key_shares_inode_across_names() {
        let mut t = Inodes::new();
        let key = Key::Blob {
            folder: 7,
            manifest: Digest::of(b"m"),
            blob: Digest::of(b"b"),
        };
        let node = Node::Root;
        let (a, _) = t.intern(key.clone(), 7, "title", node.clone(), 1);
        let (b, _) = t.intern(key, 9, "hex", node, 2);
        assert_eq!(a, b);
        assert_eq!(t.links(a), 2);
    }

    #[test]
    fn rename_moves_the_path() {
        let mut t = Inodes::new();
        let child = |p, n: &str| Key::Child {
            parent: p,
            name: n.into(),
            version: None,
        };
        let (d, _) = t.intern(
            child(ROOT_INO, "d"),
            ROOT_INO,
            "d",
            Node::Staged { dir: true },
            1,
        );
        let (f, _) = t.intern(
            child(d, ".f.tmp"),
            d,
            ".f.tmp",
            Node::Staged { dir: false },
            1,
        );
        assert_eq!(t.path(f), Some(vec!["d".to_string(), ".f.tmp".to_string()]));
        t.rename(child(d, ".f.tmp"), child(ROOT_INO, "f"), ROOT_INO, "f");
        assert_eq!(t.path(f), Some(vec!["f".to_string()]));
        let (again, _) = t.intern(
            child(ROOT_INO, "f"),
            ROOT_INO,
            "f",
            Node::Staged { dir: false },
            1,
        );
        assert_eq!(again, f);
    }
}
