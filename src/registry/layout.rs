//! An OCI image layout directory as a read-only source: `index.json` names
//! the tags (`org.opencontainers.image.ref.name`), `blobs/sha256/<hex>`
//! holds manifests and blobs. Everything read is verified like a registry's.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{BlobStream, Error, Manifest, MAX_MANIFEST_BYTES};
use crate::digest::Digest;
use crate::oci::REF_NAME_ANNOTATION;
use crate::reference::is_tag;

#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    /// Stands for the layout in cache keys and log lines.
    name: String,
}

#[derive(serde::Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

impl Layout {
    /// Opens a layout, checking it has `oci-layout` and `index.json`.
    pub fn open(root: &Path) -> Result<Layout, Error> {
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::Config(format!("oci:{}: {e}", root.display())))?;
        for f in ["oci-layout", "index.json"] {
            if !root.join(f).is_file() {
                return Err(Error::Config(format!(
                    "oci:{}: not an OCI image layout (no {f})",
                    root.display()
                )));
            }
        }
        let name = format!("oci-layout{}", root.display()).replace('/', "_");
        Ok(Layout { root, name })
    }

    /// Opens a layout, creating an empty one first where there is none
    /// (as `oras push --oci-layout` and `skopeo copy oci:` do).
    pub fn create(root: &Path) -> Result<Layout, Error> {
        let io = |source| Error::Io {
            what: root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(root.join("blobs/sha256")).map_err(io)?;
        if !root.join("oci-layout").exists() {
            std::fs::write(
                root.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .map_err(io)?;
        }
        if !root.join("index.json").exists() {
            std::fs::write(
                root.join("index.json"),
                br#"{"schemaVersion":2,"manifests":[]}"#,
            )
            .map_err(io)?;
        }
        Layout::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn index(&self) -> Result<Vec<IndexEntry>, Error> {
        let p = self.root.join("index.json");
        let bytes = std::fs::read(&p).map_err(|source| Error::Io {
            what: p.display().to_string(),
            source,
        })?;
        let idx: Index = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
            url: p.display().to_string(),
            reason: format!("bad index.json: {e}"),
        })?;
        Ok(idx.manifests)
    }

    /// Tags: the ref names of `index.json` that are valid tags.
    pub fn tags(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for m in self.index()? {
            if let Some(r) = m.annotations.get(REF_NAME_ANNOTATION) {
                if is_tag(r) {
                    out.push(r.clone());
                } else {
                    tracing::warn!(layout = %self.root.display(), name = %r, "ref name is not a valid tag; not shown");
                }
            }
        }
        Ok(out)
    }

    /// Untagged and tagged manifests alike (for referrers).
    pub fn all_manifests(&self) -> Result<Vec<Digest>, Error> {
        Ok(self
            .index()?
            .into_iter()
            .filter_map(|m| m.digest.parse().ok())
            .collect())
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn manifest(&self, reference: &str) -> Result<Manifest, Error> {
        let (digest, media_type) = match reference.parse::<Digest>() {
            Ok(d) => (d, None),
            Err(_) => {
                let entry = self
                    .index()?
                    .into_iter()
                    .find(|m| {
                        m.annotations.get(REF_NAME_ANNOTATION).map(String::as_str)
                            == Some(reference)
                    })
                    .ok_or_else(|| Error::NotFound {
                        what: format!("tag {reference} in oci:{}", self.root.display()),
                    })?;
                let d = entry
                    .digest
                    .parse::<Digest>()
                    .map_err(|e| Error::Protocol {
                        url: self.root.join("index.json").display().to_string(),
                        reason: e.to_string(),
                    })?;
                (d, entry.media_type)
            }
        };
        let p = self.blob_path(&digest);
        let meta = std::fs::metadata(&p).map_err(|_| Error::NotFound {
            what: format!("manifest {digest} in oci:{}", self.root.display()),
        })?;
        if meta.len() > MAX_MANIFEST_BYTES as u64 {
            return Err(Error::Protocol {
                url: p.display().to_string(),
                reason: format!("manifest larger than {MAX_MANIFEST_BYTES} bytes refused"),
            });
        }
        let bytes = std::fs::read(&p).map_err(|source| Error::Io {
            what: p.display().to_string(),
            source,
        })?;
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: p.display().to_string(),
                expected: digest,
                actual,
            });
        }
        Ok(Manifest {
            bytes: Bytes::from(bytes),
            digest,
            media_type,
        })
    }

    pub async fn blob(&self, d: &Digest, offset: u64) -> Result<BlobStream, Error> {
        use tokio::io::AsyncSeekExt;
        let p = self.blob_path(d);
        let mut f = tokio::fs::File::open(&p)
            .await
            .map_err(|_| Error::NotFound {
                what: format!("blob {d} in oci:{}", self.root.display()),
            })?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|source| Error::Io {
                what: p.display().to_string(),
                source,
            })?;
        Ok(BlobStream::file(f, offset, p.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::MANIFEST_MEDIA_TYPE;

    #[test]
    fn reads_tags_and_verifies_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let m = br#"{"schemaVersion":2}"#;
        let d = Digest::of(m);
        std::fs::write(root.join("blobs/sha256").join(d.hex()), m).unwrap();
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{MANIFEST_MEDIA_TYPE}","digest":"{d}","size":19,"annotations":{{"{REF_NAME_ANNOTATION}":"v1"}}}},
              {{"mediaType":"{MANIFEST_MEDIA_TYPE}","digest":"{d}","size":19,"annotations":{{"{REF_NAME_ANNOTATION}":"bad/name"}}}}]}}"#
        );
        std::fs::write(root.join("index.json"), index).unwrap();
        let l = Layout::open(root).unwrap();
        assert_eq!(l.tags().unwrap(), vec!["v1".to_string()]);
        let got = l.manifest("v1").unwrap();
        assert_eq!(got.digest, d);
        assert_eq!(got.media_type.as_deref(), Some(MANIFEST_MEDIA_TYPE));
        assert!(l.manifest("v2").unwrap_err().is_not_found());
        std::fs::write(root.join("blobs/sha256").join(d.hex()), b"tampered").unwrap();
        assert!(matches!(
            l.manifest("v1"),
            Err(Error::DigestMismatch { .. })
        ));
    }

    #[test]
    fn refuses_what_is_not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let e = Layout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not an OCI image layout"), "{e}");
    }
}
