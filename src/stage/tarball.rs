//! A folder as an ORAS directory layer: a gzip-compressed tar whose entries
//! are `<name>/...`, as `oras push DIR` writes it, built deterministically
//! (sorted entries, owner 0, gzip header without time or name) so the same
//! folder gives the same digest.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::scan::StagedDir;
use crate::digest::{ChunkHasher, Digest};
use crate::oci::CHUNK_SIZE;

/// A built layer: the `.tar.gz` file, its digest and size, and the digest of
/// the uncompressed tar (`io.deis.oras.content.digest`).
#[derive(Debug, Clone)]
pub struct Tarball {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub tar_digest: Digest,
    /// The digests of the `.tar.gz`'s 4 MiB chunks (for its chunk-digest list).
    pub chunks: Vec<Digest>,
}

struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    len: u64,
    chunks: Option<ChunkHasher>,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        if let Some(c) = self.chunks.as_mut() {
            c.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest_of(h: Sha256) -> io::Result<Digest> {
    Digest::from_hex(&hex::encode(h.finalize())).map_err(io::Error::other)
}

/// Writes `dir` as `<name>/...` into a new file in `tmp_dir`.
pub fn build(dir: &StagedDir, name: &str, tmp_dir: &Path) -> io::Result<Tarball> {
    std::fs::create_dir_all(tmp_dir)?;
    let out = tempfile::Builder::new()
        .prefix("layer-")
        .suffix(".tar.gz")
        .tempfile_in(tmp_dir)?;
    let (file, path) = out.keep().map_err(|e| e.error)?;
    let gz_hasher = HashWriter {
        inner: file,
        hash: Sha256::new(),
        len: 0,
        chunks: Some(ChunkHasher::new(CHUNK_SIZE)),
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(gz_hasher, flate2::Compression::default());
    let tar_hasher = HashWriter {
        inner: gz,
        hash: Sha256::new(),
        len: 0,
        chunks: None,
    };
    let mut tar = tar::Builder::new(tar_hasher);
    tar.mode(tar::HeaderMode::Deterministic);
    append_dir(&mut tar, dir, name)?;
    let tar_hasher = tar.into_inner()?;
    let tar_digest = digest_of(tar_hasher.hash)?;
    let gz_hasher = tar_hasher.inner.finish()?;
    let mut file = gz_hasher.inner;
    file.flush()?;
    file.sync_all()?;
    Ok(Tarball {
        path,
        digest: digest_of(gz_hasher.hash)?,
        size: gz_hasher.len,
        tar_digest,
        chunks: gz_hasher
            .chunks
            .map(ChunkHasher::finish)
            .unwrap_or_default(),
    })
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &StagedDir,
    prefix: &str,
) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(0);
    tar.append_data(&mut h, format!("{prefix}/"), io::empty())?;
    for (name, f) in &dir.files {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&f.path)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        });
        h.set_size(f.size);
        h.set_mtime(0);
        tar.append_data(&mut h, format!("{prefix}/{name}"), File::open(&f.path)?)?;
    }
    for (name, d) in &dir.dirs {
        append_dir(tar, d, &format!("{prefix}/{name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::scan::scan;

    #[test]
    fn deterministic_and_unpackable() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("inner")).unwrap();
        std::fs::write(src.path().join("a.txt"), b"alpha").unwrap();
        std::fs::write(src.path().join("inner/b.txt"), b"beta").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = scan(src.path(), true).unwrap();
        let one = build(&dir, "docs", tmp.path()).unwrap();
        let two = build(&dir, "docs", tmp.path()).unwrap();
        assert_eq!(one.digest, two.digest);
        assert_eq!(
            one.digest,
            crate::stage::scan::hash_file(&one.path).unwrap()
        );
        let f = File::open(&one.path).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            ["docs/", "docs/a.txt", "docs/inner/", "docs/inner/b.txt"]
        );
    }
}
