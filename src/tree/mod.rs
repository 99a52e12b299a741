//! The tree regfs shows: nodes, their inode numbers, what a manifest
//! looks like as a folder (`view`), and what a tar layer looks like as one
//! (`archive`). Nothing here does I/O or names fuser.

pub mod archive;
mod inodes;
mod name;
pub mod view;

pub use inodes::{Inodes, Key};
pub use name::Name;

use crate::digest::Digest;
use view::Desc;

pub type Ino = u64;

/// A 64-bit hash of `what`, the same for the same value for the life of
/// the process (inode numbers, listing stamps and fingerprints).
pub fn hash64(what: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    what.hash(&mut h);
    h.finish()
}
pub const ROOT_INO: Ino = 1;

/// What a manifest folder points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

/// A repository's full name, shared by the nodes made under it (one
/// allocation per repository listing, not one per node). One pointer: an
/// `Arc<str>` is two, and every node holds one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(std::sync::Arc<Box<str>>);

impl RepoName {
    /// Whether `a` and `b` are the same allocation (a name shared, not
    /// copied).
    pub fn ptr_eq(a: &RepoName, b: &RepoName) -> bool {
        std::sync::Arc::ptr_eq(&a.0, &b.0)
    }
}

impl std::ops::Deref for RepoName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RepoName {
    fn from(s: &str) -> RepoName {
        RepoName(std::sync::Arc::new(s.into()))
    }
}

impl From<String> for RepoName {
    fn from(s: String) -> RepoName {
        RepoName(std::sync::Arc::new(s.into_boxed_str()))
    }
}

impl std::fmt::Debug for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self.0, f)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a view folder is in its manifest folder: its names joined by
/// `/`. The two every manifest has (`blobs`, `blobs/sha256`) take no
/// allocation: a walk holds two of them a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewPath {
    Blobs,
    BlobsSha256,
    Other(Box<str>),
}

impl From<String> for ViewPath {
    fn from(path: String) -> ViewPath {
        match path.as_str() {
            view::BLOBS => ViewPath::Blobs,
            view::BLOBS_SHA256 => ViewPath::BlobsSha256,
            _ => ViewPath::Other(path.into_boxed_str()),
        }
    }
}

impl std::ops::Deref for ViewPath {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            ViewPath::Blobs => view::BLOBS,
            ViewPath::BlobsSha256 => view::BLOBS_SHA256,
            ViewPath::Other(p) => p,
        }
    }
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
        repo: RepoName,
        target: Target,
    },
    /// A folder made by a manifest view (`blobs`, `blobs/sha256`, a title's
    /// parent); `path` is relative to the manifest folder `folder`, its
    /// names joined by `/` (one allocation for a node every tag has two
    /// of, where a list of names took three).
    ViewDir {
        repo: RepoName,
        folder: Ino,
        /// Shared by the folders of one manifest's view (8 bytes a node
        /// where the digest is 32, and every node is as large as the
        /// largest).
        manifest: std::sync::Arc<Digest>,
        path: ViewPath,
        mtime: i64,
    },
    /// `referrers/` of the manifest `subject`.
    Referrers {
        repo: RepoName,
        subject: Digest,
        mtime: i64,
    },
    /// A manifest's exact bytes.
    ManifestJson {
        repo: RepoName,
        digest: Digest,
        size: u64,
        mtime: i64,
    },
    /// A blob: a layer, the config, or an entry of `blobs/sha256`.
    Blob {
        repo: RepoName,
        desc: std::sync::Arc<Desc>,
        mtime: i64,
    },
    /// A folder inside an unpacked directory layer.
    UnpackedDir {
        repo: RepoName,
        layer: std::sync::Arc<Desc>,
        path: Box<[String]>,
        mtime: i64,
    },
    /// A folder or file of the staging area, at the path its names spell
    /// from the root (so a rename moves it without touching the node).
    Staged {
        dir: bool,
    },
    /// A file inside an unpacked directory layer.
    UnpackedFile {
        repo: RepoName,
        layer: std::sync::Arc<Desc>,
        path: Box<[String]>,
        size: u64,
        mode: u32,
        mtime: i64,
    },
    /// A folder of a ModelPack tar layer (`archive`): `path` is relative to
    /// the layer's own folder, which stands at its filepath.
    ArchiveDir {
        repo: RepoName,
        layer: std::sync::Arc<Desc>,
        path: Box<[String]>,
        mtime: i64,
    },
    /// A file of a ModelPack tar layer: a byte range of the (decompressed)
    /// tar. `path` is where it is in the layer's folder; empty when the
    /// layer is this one file.
    ArchiveFile {
        repo: RepoName,
        layer: std::sync::Arc<Desc>,
        path: Box<[String]>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_path_reads_back_as_made() {
        for p in ["blobs", "blobs/sha256", "models/llm", "blobs/sha512", ""] {
            assert_eq!(&*ViewPath::from(p.to_string()), p);
        }
        assert_eq!(
            ViewPath::from("blobs/sha256".to_string()),
            ViewPath::BlobsSha256
        );
    }
}
