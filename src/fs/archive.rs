//! ModelPack tar layers (`tree::archive`): each layer's tar is indexed
//! once per digest and kept in memory, and its files are served as byte
//! ranges of it.
//!
//! - An uncompressed tar read strictly is indexed from the verified blob.
//! - One read lazily is indexed from its headers, read by range through
//!   the blob engine (a few chunks, however large its files); files are
//!   then ranges of the blob, verified as the blob is (chunk lists, or the
//!   read that reaches the file's end waits for the whole blob). Once the
//!   blob is verified, the index is built again from it: headers that
//!   differ fail that read with EIO.
//! - A compressed tar (gzip, zstd) cannot be read from the middle: the
//!   verified layer is decompressed once into the cache, and indexed and
//!   read from there.

use std::collections::HashMap;
use std::io::Read as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::OnceCell;

use super::blobs::Read;
use super::namespace::{layer_key, shape_known, Layouts};
use super::{lock, Children, Error, Fs, Handle, Span};
use crate::digest::Digest;
use crate::oci::{FileKind, Packing, MAX_BLOB_SIZE};
use crate::tree::archive::{Indexer, Item, Layout, TarIndex};
use crate::tree::view::{title_components, Desc, Entry, View};
use crate::tree::{Ino, Node};

/// How many layers' headers are read at once for a listing.
const AT_ONCE: usize = 8;

/// The tar indexes built so far, one per layer digest.
#[derive(Default)]
pub(super) struct Archives {
    cells: Mutex<HashMap<Digest, Arc<OnceCell<Arc<Indexed>>>>>,
}

impl Archives {
    fn cell(&self, d: &Digest) -> Arc<OnceCell<Arc<Indexed>>> {
        lock(&self.cells).entry(d.clone()).or_default().clone()
    }

    fn replace(&self, d: &Digest, indexed: Arc<Indexed>) {
        lock(&self.cells).insert(d.clone(), Arc::new(OnceCell::new_with(Some(indexed))));
    }
}

/// A layer's tar, indexed.
pub(super) struct Indexed {
    index: TarIndex,
    /// Where the tar's bytes are: the blob, or the decompressed file.
    decompressed: Option<PathBuf>,
    /// Built from bytes verified against the layer's digest.
    verified: bool,
    /// Layouts made of it, by the filepath and metadata they were made for.
    layouts: Mutex<HashMap<LayoutKey, Arc<Layout>>>,
}

type LayoutKey = (String, Option<(FileKind, Option<u64>)>);

impl Indexed {
    fn new(index: TarIndex, decompressed: Option<PathBuf>, verified: bool) -> Indexed {
        Indexed {
            index,
            decompressed,
            verified,
            layouts: Mutex::new(HashMap::new()),
        }
    }

    /// What the layer shows at its filepath, made once per filepath.
    fn layout(&self, layer: &Desc) -> Result<Arc<Layout>, Error> {
        let filepath = layer.model_filepath().unwrap_or_default();
        let hint = layer
            .file_metadata()
            .and_then(|m| m.kind.map(|k| (k, m.size)));
        let key = (filepath.to_string(), hint);
        if let Some(l) = lock(&self.layouts).get(&key) {
            return Ok(l.clone());
        }
        let comps: Vec<String> = title_components(filepath)
            .map(|c| c.into_iter().map(String::from).collect())
            .unwrap_or_default();
        let mut skipped = Vec::new();
        let layout = Layout::of(&self.index, &comps, hint, &mut skipped).map_err(|reason| {
            Error::Archive {
                digest: layer.digest.clone(),
                reason,
            }
        })?;
        for why in skipped {
            tracing::warn!(layer = %layer.digest, "tar entry {why}; not shown");
        }
        let layout = Arc::new(layout);
        lock(&self.layouts).insert(key, layout.clone());
        Ok(layout)
    }
}

impl Fs {
    /// The index of the tar layer `layer`, built the first time.
    async fn archive(&self, repo: &str, layer: &Desc) -> Result<Arc<Indexed>, Error> {
        let cell = self.archives.cell(&layer.digest);
        cell.get_or_try_init(|| self.index_archive(repo, layer))
            .await
            .cloned()
    }

    /// What the tar layer `layer` shows at its filepath.
    pub(super) async fn layout(&self, repo: &str, layer: &Desc) -> Result<Arc<Layout>, Error> {
        self.archive(repo, layer).await?.layout(layer)
    }

    /// The layouts the tar layers among `entries` need to become nodes:
    /// those whose file metadata does not say what they are (their
    /// headers are read, several layers at once).
    pub(super) async fn layouts_for<'e>(
        &self,
        repo: &str,
        view: &View,
        entries: impl Iterator<Item = &'e Entry>,
    ) -> Result<Layouts, Error> {
        let wanted: Vec<(usize, &Desc)> = entries
            .filter_map(|e| match e {
                Entry::Archive(i) => Some((*i, view.blobs.get(*i)?)),
                _ => None,
            })
            .filter(|(_, layer)| !shape_known(layer))
            .collect();
        let mut reads = Vec::with_capacity(wanted.len());
        for (i, layer) in wanted {
            reads.push(async move { (i, self.layout(repo, layer).await) });
        }
        let mut out = Layouts::new();
        let mut done = stream::iter(reads).buffered(AT_ONCE);
        while let Some((i, layout)) = done.next().await {
            out.insert(i, layout?);
        }
        Ok(out)
    }

    async fn index_archive(&self, repo: &str, layer: &Desc) -> Result<Arc<Indexed>, Error> {
        let indexed = match layer.model_packing() {
            Some(p @ (Packing::TarGzip | Packing::TarZstd)) => {
                let path = self.decompressed(repo, layer, p).await?;
                let index = index_file(path.clone(), layer.digest.clone()).await?;
                Indexed::new(index, Some(path), true)
            }
            _ if self.blobs.is_lazy(layer) => self.index_lazily(repo, layer).await?,
            _ => {
                let blob = self.blobs.fetch(repo, layer).await?;
                Indexed::new(index_file(blob, layer.digest.clone()).await?, None, true)
            }
        };
        for why in &indexed.index.skipped {
            tracing::warn!(layer = %layer.digest, "tar entry {why}; not shown");
        }
        Ok(Arc::new(indexed))
    }

    /// Indexes a lazily read tar from its headers, read by range (the
    /// whole blob, if it is verified by the time a header is asked for).
    async fn index_lazily(&self, repo: &str, layer: &Desc) -> Result<Indexed, Error> {
        let mut ix = Indexer::new(layer.size);
        while let Some(need) = ix.need() {
            let len = u32::try_from(need.len).map_err(|_| Error::Archive {
                digest: layer.digest.clone(),
                reason: "a tar header too large".into(),
            })?;
            let bytes = match self
                .blobs
                .read(repo, layer, need.offset, len, false, layer.size)
                .await?
            {
                Read::Unverified { bytes, .. } => bytes,
                Read::Verified(blob) => {
                    let index = index_file(blob, layer.digest.clone()).await?;
                    return Ok(Indexed::new(index, None, true));
                }
            };
            ix.feed(&bytes).map_err(|e| Error::Archive {
                digest: layer.digest.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(Indexed::new(ix.finish(), None, false))
    }

    /// After the blob of a lazily indexed layer was verified: builds its
    /// index again from the verified blob. Headers read before that
    /// differ from the verified ones: the error says so, and the tree
    /// shows the verified ones from then on.
    pub(super) async fn recheck_archive(&self, repo: &str, layer: &Desc) -> Result<(), Error> {
        let current = self.archive(repo, layer).await?;
        if current.verified {
            return Ok(());
        }
        let blob = self.blobs.fetch(repo, layer).await?;
        let index = index_file(blob, layer.digest.clone()).await?;
        let same = index.members == current.index.members;
        self.archives
            .replace(&layer.digest, Arc::new(Indexed::new(index, None, true)));
        if same {
            Ok(())
        } else {
            tracing::error!(layer = %layer.digest, "tar headers read before the layer was verified differ from the verified layer");
            Err(Error::Archive {
                digest: layer.digest.clone(),
                reason: "its tar headers, read before the layer was verified, differ from the verified layer's".into(),
            })
        }
    }

    /// The entries of a folder of a tar layer.
    pub(super) async fn archive_children(
        &self,
        ino: Ino,
        repo: &str,
        layer: &Arc<Desc>,
        path: &[String],
        mtime: i64,
    ) -> Result<Children, Error> {
        let layout = self.layout(repo, layer).await?;
        let dir = layout.dir(path).ok_or(Error::NotDir)?;
        let mut out = Vec::with_capacity(dir.entries.len());
        let shared: crate::tree::RepoName = repo.into();
        for (name, item) in &dir.entries {
            let mut p = path.to_vec();
            p.push(name.clone());
            let node = match item {
                Item::File(m) => Node::ArchiveFile {
                    repo: shared.clone(),
                    layer: layer.clone(),
                    path: p.into(),
                    size: m.size,
                    mode: m.mode,
                    mtime: if m.mtime > 0 { m.mtime } else { mtime },
                },
                Item::Dir(_) => Node::ArchiveDir {
                    repo: shared.clone(),
                    layer: layer.clone(),
                    path: p.into(),
                    mtime,
                },
            };
            let (key, links) = layer_key(ino, name, &node);
            let (i, n) = self.namespace.intern(key, ino, name, node, links);
            out.push((name.clone(), i, n));
        }
        Ok(out)
    }

    /// Opens a file of a tar layer: a byte range of the blob (verified
    /// whole first unless read lazily), or of the decompressed tar.
    pub(super) async fn open_archive_file(
        &self,
        repo: &str,
        layer: &Arc<Desc>,
        path: &[String],
        size: u64,
    ) -> Result<Handle, Error> {
        let indexed = self.archive(repo, layer).await?;
        let layout = indexed.layout(layer)?;
        let m = layout.file(path).ok_or(Error::NotFound)?;
        if m.size != size {
            return Err(Error::Archive {
                digest: layer.digest.clone(),
                reason: format!(
                    "{} has {} bytes in the tar, not the {size} shown",
                    m.path.join("/"),
                    m.size
                ),
            });
        }
        let span = Span {
            start: m.offset,
            len: m.size,
        };
        if let Some(p) = &indexed.decompressed {
            let f = std::fs::File::open(p).map_err(|source| Error::Io {
                what: p.display().to_string(),
                source,
            })?;
            return Ok(Handle::File(Arc::new(f), Some(span)));
        }
        let mut file = self.open_verified(layer).await?;
        if file.is_none() && !self.blobs.is_lazy(layer) {
            self.blobs.fetch(repo, layer).await?;
            file = self.open_verified(layer).await?;
        }
        if file.is_some() {
            if let Err(e) = self.recheck_archive(repo, layer).await {
                self.cache.release(&layer.digest);
                return Err(e);
            }
        }
        Ok(Handle::Blob {
            repo: repo.into(),
            desc: layer.clone(),
            span,
            file: file.map(Arc::new),
            next: 0,
            failed: None,
            unverified_from: None,
        })
    }

    /// The tar inside a compressed layer, decompressed once into the
    /// cache from the verified layer.
    async fn decompressed(
        &self,
        repo: &str,
        layer: &Desc,
        packing: Packing,
    ) -> Result<PathBuf, Error> {
        let dest = self.cache.decompressed(&layer.digest);
        if dest.is_file() {
            return Ok(dest);
        }
        let blob = self.blobs.fetch(repo, layer).await?;
        let (tmp, d, dest2) = (self.cache.tmp_dir(), layer.digest.clone(), dest.clone());
        tokio::task::spawn_blocking(move || decompress(&tmp, &blob, &dest2, packing, &d))
            .await
            .map_err(|e| Error::Io {
                what: "decompress task".into(),
                source: std::io::Error::other(e),
            })??;
        Ok(dest)
    }
}

/// Indexes a tar on local disk (a verified blob, or a decompressed tar).
async fn index_file(path: PathBuf, layer: Digest) -> Result<TarIndex, Error> {
    tokio::task::spawn_blocking(move || {
        let fail = |reason: String| Error::Archive {
            digest: layer.clone(),
            reason,
        };
        let f = std::fs::File::open(&path).map_err(|e| fail(e.to_string()))?;
        let len = f.metadata().map_err(|e| fail(e.to_string()))?.len();
        let mut ix = Indexer::new(len);
        let mut buf = Vec::new();
        while let Some(need) = ix.need() {
            buf.resize(need.len, 0);
            f.read_exact_at(&mut buf, need.offset)
                .map_err(|e| fail(format!("reading the tar at {}: {e}", need.offset)))?;
            ix.feed(&buf).map_err(|e| fail(e.to_string()))?;
        }
        Ok(ix.finish())
    })
    .await
    .map_err(|e| Error::Io {
        what: "tar index task".into(),
        source: std::io::Error::other(e),
    })?
}

/// Decompresses a verified gzip or zstd layer into `dest`, through a
/// temporary file and a rename. A tar larger than any blob regfs accepts
/// is refused (a decompression bomb).
fn decompress(
    tmp_dir: &Path,
    blob: &Path,
    dest: &Path,
    packing: Packing,
    d: &Digest,
) -> Result<(), Error> {
    let fail = |reason: String| Error::Archive {
        digest: d.clone(),
        reason,
    };
    let f = std::fs::File::open(blob).map_err(|e| fail(e.to_string()))?;
    let reader: Box<dyn std::io::Read> = match packing {
        Packing::TarZstd => {
            Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| fail(e.to_string()))?)
        }
        _ => Box::new(flate2::read::MultiGzDecoder::new(f)),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir).map_err(|e| fail(e.to_string()))?;
    let copied = std::io::copy(&mut reader.take(MAX_BLOB_SIZE + 1), &mut tmp)
        .map_err(|e| fail(format!("decompressing: {e}")))?;
    if copied > MAX_BLOB_SIZE {
        return Err(fail("decompresses to more than 16 TiB".into()));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
    }
    if let Err(e) = tmp.persist(dest) {
        // Another mount decompressed it first: theirs is as good as ours.
        if !dest.is_file() {
            return Err(fail(e.error.to_string()));
        }
    }
    Ok(())
}
