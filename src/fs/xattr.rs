//! Extended attributes: `user.oci.*` of manifests, indexes and blobs.

use super::{Error, Fs};
use crate::digest::Digest;
use crate::oci::Packing;
use crate::tree::view::{Desc, View};
use crate::tree::{Ino, Node};

type Attrs = Vec<(String, Vec<u8>)>;

fn push(out: &mut Attrs, k: &str, v: &str) {
    out.push((k.to_string(), v.as_bytes().to_vec()));
}

/// Attributes of a manifest or index folder; `via` is the index entry it
/// was reached by, for its platform.
pub fn of_manifest(d: &Digest, v: &View, via: Option<&Desc>) -> Attrs {
    let mut out = Vec::new();
    push(&mut out, "user.oci.digest", &d.to_string());
    if !v.media_type.is_empty() {
        push(&mut out, "user.oci.mediaType", &v.media_type);
    }
    if let Some(t) = &v.artifact_type {
        push(&mut out, "user.oci.artifactType", t);
    }
    if let Some(p) = via.and_then(|c| c.platform_spec.as_deref()) {
        push(&mut out, "user.oci.platform", p);
    }
    for (k, val) in &v.annotations {
        push(&mut out, &format!("user.oci.annotation.{k}"), val);
    }
    out
}

/// Attributes of a blob file (config or layer).
pub fn of_desc(d: &Desc) -> Attrs {
    let mut out = Vec::new();
    push(&mut out, "user.oci.digest", &d.digest.to_string());
    push(&mut out, "user.oci.mediaType", &d.media_type);
    if let Some(t) = &d.artifact_type {
        push(&mut out, "user.oci.artifactType", t);
    }
    if let Some(p) = &d.platform_spec {
        push(&mut out, "user.oci.platform", p);
    }
    for (k, val) in &d.annotations {
        push(&mut out, &format!("user.oci.annotation.{k}"), val);
    }
    out
}

impl Fs {
    // ---- extended attributes -----------------------------------------------

    pub async fn listxattr(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let node = self.node(ino)?;
        let attrs = match &*node {
            Node::Manifest { repo, target } => {
                let d = self.resolve(repo, target).await?;
                let v = self.view(repo, &d).await?;
                let via = self.reached_by(ino, &d).await;
                of_manifest(&d, &v, via.as_ref())
            }
            Node::ManifestJson { repo, digest, .. } => {
                let v = self.view(repo, digest).await?;
                of_manifest(digest, &v, None)
            }
            Node::Blob { desc, .. } => {
                let mut a = of_desc(desc);
                // How a lazy read of it is verified (docs/verification.md).
                push(&mut a, "user.oci.verify", self.blobs.verify_mode(desc));
                a
            }
            Node::UnpackedDir { layer, path, .. } | Node::ArchiveDir { layer, path, .. }
                if path.is_empty() =>
            {
                of_desc(layer)
            }
            Node::ArchiveFile { layer, path, .. } => {
                let mut a = if path.is_empty() {
                    of_desc(layer)
                } else {
                    Vec::new()
                };
                // A compressed tar is read whole; a plain one as its blob is.
                let verify = match layer.model_packing() {
                    Some(Packing::TarGzip | Packing::TarZstd) => "strict",
                    _ => self.blobs.verify_mode(layer),
                };
                push(&mut a, "user.oci.verify", verify);
                a
            }
            _ => Vec::new(),
        };
        Ok(if self.overlay.read_only() {
            attrs
        } else {
            self.staged_xattrs(ino, attrs)
        })
    }

    pub async fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>, Error> {
        self.listxattr(ino)
            .await?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(Error::NoAttr)
    }

    /// The index descriptor a child manifest folder was reached by (for its platform).
    pub(super) async fn reached_by(&self, ino: Ino, d: &Digest) -> Option<Desc> {
        let parent = self.parent_of(ino);
        let pnode = self.node(parent).ok()?;
        let Node::Manifest { repo, target } = &*pnode else {
            return None;
        };
        let pd = self.resolve(repo, target).await.ok()?;
        let pv = self.view(repo, &pd).await.ok()?;
        pv.children.iter().find(|c| c.digest == *d).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_attributes() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "artifactType":"application/x-demo",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
            "layers":[],"annotations":{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}"#;
        let v = View::parse(bytes, None).unwrap();
        let d = Digest::of(bytes);
        let attrs = of_manifest(&d, &v, None);
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).to_string())
        };
        assert_eq!(get("user.oci.digest"), Some(d.to_string()));
        assert_eq!(
            get("user.oci.artifactType").as_deref(),
            Some("application/x-demo")
        );
        assert_eq!(
            get("user.oci.annotation.org.opencontainers.image.created").as_deref(),
            Some("2024-01-01T00:00:00Z")
        );
        assert_eq!(get("user.oci.platform"), None);
    }
}
