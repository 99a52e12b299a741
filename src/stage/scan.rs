//! Reads a staged folder (or a plain local folder for `commit --to`) into a
//! tree of files with their digests, ready for the planner.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::META_DIR;
use crate::digest::{of_reader_with_chunks, Digest};
use crate::oci::{wants_chunk_list, CHUNK_SIZE};

/// A regular file and its content digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// The digests of its 4 MiB chunks, for a file large enough to get a
    /// chunk-digest list when committed (hashed in the same read).
    pub chunks: Option<Vec<Digest>>,
}

/// A folder: its files and subfolders by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StagedDir {
    pub path: PathBuf,
    pub files: BTreeMap<String, StagedFile>,
    pub dirs: BTreeMap<String, StagedDir>,
}

impl StagedDir {
    /// Every file below, with its path relative to this folder.
    pub fn walk(&self) -> Vec<(String, &StagedFile)> {
        let mut out = Vec::new();
        self.walk_into("", &mut out);
        out
    }

    fn walk_into<'a>(&'a self, prefix: &str, out: &mut Vec<(String, &'a StagedFile)>) {
        for (n, f) in &self.files {
            out.push((format!("{prefix}{n}"), f));
        }
        for (n, d) in &self.dirs {
            d.walk_into(&format!("{prefix}{n}/"), out);
        }
    }

    /// The file at a relative path (`a/b/c`).
    pub fn file(&self, rel: &str) -> Option<&StagedFile> {
        let (dirs, name) = match rel.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, rel),
        };
        let mut d = self;
        if let Some(dirs) = dirs {
            for c in dirs.split('/') {
                d = d.dirs.get(c)?;
            }
        }
        d.files.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.values().all(StagedDir::is_empty)
    }
}

/// Hashes every regular file below `dir` (and, with `chunks`, the 4 MiB
/// chunks of files large enough for a chunk list, in the same read). Files
/// hard-linked to each other are hashed once. Symbolic links and special files are refused: an
/// artifact holds bytes, and following a link could push a file from
/// outside the folder.
pub fn scan(dir: &Path, chunks: bool) -> io::Result<StagedDir> {
    let mut seen = HashMap::new();
    scan_dir(dir, chunks, &mut seen)
}

type Hashed = (Digest, u64, Option<Vec<Digest>>);

fn scan_dir(
    dir: &Path,
    chunks: bool,
    seen: &mut HashMap<(u64, u64), Hashed>,
) -> io::Result<StagedDir> {
    let mut out = StagedDir {
        path: dir.to_path_buf(),
        ..StagedDir::default()
    };
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if name == META_DIR {
            continue;
        }
        let name = name.to_str().map(str::to_string).ok_or_else(|| {
            io::Error::other(format!("{}: file name is not UTF-8", e.path().display()))
        })?;
        let meta = fs::symlink_metadata(e.path())?;
        if meta.is_dir() {
            out.dirs.insert(name, scan_dir(&e.path(), chunks, seen)?);
        } else if meta.is_file() {
            let key = (meta.dev(), meta.ino());
            let (digest, size, chunks) = match seen.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let v = if chunks && wants_chunk_list(meta.len()) {
                        let (d, chunks) =
                            of_reader_with_chunks(fs::File::open(e.path())?, CHUNK_SIZE)?;
                        (d, meta.len(), Some(chunks))
                    } else {
                        (hash_file(&e.path())?, meta.len(), None)
                    };
                    seen.insert(key, v.clone());
                    v
                }
            };
            out.files.insert(
                name,
                StagedFile {
                    path: e.path(),
                    digest,
                    size,
                    chunks,
                },
            );
        } else {
            return Err(io::Error::other(format!(
                "{}: only regular files and folders can be committed (not links or devices)",
                e.path().display()
            )));
        }
    }
    Ok(out)
}

pub fn hash_file(p: &Path) -> io::Result<Digest> {
    Digest::of_reader(fs::File::open(p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_and_hashes_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        fs::create_dir_all(dir.path().join(META_DIR)).unwrap();
        fs::write(dir.path().join("a.txt"), b"hello").unwrap();
        fs::write(dir.path().join("sub/deeper/b"), b"x").unwrap();
        fs::hard_link(dir.path().join("a.txt"), dir.path().join("sub/link")).unwrap();
        let s = scan(dir.path(), true).unwrap();
        assert_eq!(s.files["a.txt"].digest, Digest::of(b"hello"));
        assert_eq!(s.file("sub/link").unwrap().digest, Digest::of(b"hello"));
        assert_eq!(s.file("sub/deeper/b").unwrap().size, 1);
        assert!(!s.dirs.contains_key(META_DIR));
        let names: Vec<String> = s.walk().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a.txt", "sub/link", "sub/deeper/b"]);
    }

    #[test]
    fn refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("pw")).unwrap();
        assert!(scan(dir.path(), true)
            .unwrap_err()
            .to_string()
            .contains("only regular files"));
    }
}
