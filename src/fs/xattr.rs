//! Extended attributes: `user.oci.*` of manifests, indexes and blobs.

use crate::digest::Digest;
use crate::tree::view::{Desc, View};

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
