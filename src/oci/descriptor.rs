//! Descriptors after validation: the digest parsed, the size bounded,
//! annotations ordered, the platform spelled both ways. A descriptor whose
//! digest cannot be parsed, or whose size is over `MAX_BLOB_SIZE`, never
//! becomes a `Desc`: nothing is ever requested for it.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::Descriptor;

use super::{
    Platform, CHUNKS_MEDIA_TYPE, CHUNKS_OF_ANNOTATION, MAX_BLOB_SIZE, TITLE_ANNOTATION,
    UNPACK_ANNOTATION,
};
use crate::digest::Digest;

/// A descriptor after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub annotations: BTreeMap<String, String>,
    pub artifact_type: Option<String>,
    /// The folder name of a platform: `<os>-<arch>[-<variant>]`.
    pub platform: Option<String>,
    /// The platform as OCI writes it: `<os>/<arch>[/<variant>]`.
    pub platform_spec: Option<String>,
    /// The chunk-digest list layer of the same manifest that covers this
    /// layer (`chunks.rs`), if there is one.
    pub chunk_list: Option<Box<Desc>>,
}

/// Why a descriptor is unusable; `field` says where it was (`layers[2]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("descriptor {field} is unusable: {reason}")]
pub struct DescriptorError {
    pub field: String,
    pub reason: String,
}

impl Desc {
    /// Validates the descriptor found at `field`.
    pub fn from_spec(d: &Descriptor, field: &str) -> Result<Desc, DescriptorError> {
        let digest: Digest =
            d.digest()
                .to_string()
                .parse()
                .map_err(|e: crate::digest::DigestError| DescriptorError {
                    field: field.to_string(),
                    reason: e.to_string(),
                })?;
        if d.size() > MAX_BLOB_SIZE {
            return Err(DescriptorError {
                field: field.to_string(),
                reason: format!("size {} is over the 16 TiB limit", d.size()),
            });
        }
        let platform = d.platform().as_ref().map(Platform::from_spec);
        Ok(Desc {
            media_type: d.media_type().to_string(),
            digest,
            size: d.size(),
            annotations: ordered_annotations(d.annotations()),
            artifact_type: d.artifact_type().as_ref().map(|t| t.to_string()),
            platform: platform.as_ref().map(Platform::folder_name),
            platform_spec: platform.as_ref().map(Platform::spec),
            chunk_list: None,
        })
    }

    pub fn title(&self) -> Option<&str> {
        self.annotations.get(TITLE_ANNOTATION).map(String::as_str)
    }

    /// A chunk-digest list (`chunks.rs`): the digest of the layer it covers.
    pub fn chunks_of(&self) -> Option<Digest> {
        if self.media_type != CHUNKS_MEDIA_TYPE {
            return None;
        }
        self.annotations.get(CHUNKS_OF_ANNOTATION)?.parse().ok()
    }

    /// A titled tar+gzip layer that ORAS unpacks into a folder.
    pub fn is_directory_layer(&self) -> bool {
        self.annotations.get(UNPACK_ANNOTATION).map(String::as_str) == Some("true")
    }
}

/// Annotations in a stable order.
pub fn ordered_annotations(a: &Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    a.as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Desc, DescriptorError> {
        Desc::from_spec(&serde_json::from_str(json).unwrap(), "layers[0]")
    }

    #[test]
    fn a_valid_descriptor() {
        let hex = "ab".repeat(32);
        let d = parse(&format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{hex}","size":7,
                "platform":{{"os":"linux","architecture":"arm","variant":"v7"}},
                "annotations":{{"{TITLE_ANNOTATION}":"a.txt","{UNPACK_ANNOTATION}":"true"}}}}"#
        ))
        .unwrap();
        assert_eq!(d.digest.hex(), hex);
        assert_eq!(d.size, 7);
        assert_eq!(d.title(), Some("a.txt"));
        assert!(d.is_directory_layer());
        assert_eq!(d.platform.as_deref(), Some("linux-arm-v7"));
        assert_eq!(d.platform_spec.as_deref(), Some("linux/arm/v7"));
    }

    #[test]
    fn an_unusable_digest_is_an_error_naming_the_field() {
        // A digest oci-spec takes and we cannot verify.
        let sha512 = format!("sha512:{}", "00".repeat(64));
        let e = parse(&format!(
            r#"{{"mediaType":"x","digest":"{sha512}","size":1}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field, "layers[0]");
        assert!(e
            .to_string()
            .starts_with("descriptor layers[0] is unusable"));
    }

    #[test]
    fn a_size_over_the_limit_is_an_error_naming_it() {
        let d = |size: u64| {
            parse(&format!(
                r#"{{"mediaType":"x","digest":"sha256:{}","size":{size}}}"#,
                "ab".repeat(32)
            ))
        };
        assert_eq!(d(1 << 44).unwrap().size, 1 << 44);
        assert_eq!(
            d((1 << 44) + 1).unwrap_err(),
            DescriptorError {
                field: "layers[0]".into(),
                reason: "size 17592186044417 is over the 16 TiB limit".into(),
            }
        );
        assert!(d(1 << 60).is_err());
        assert!(d(u64::MAX).is_err());
    }
}
