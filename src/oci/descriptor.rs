//! Descriptors after validation: the digest parsed, the size bounded,
//! annotations ordered, the platform spelled both ways. A descriptor whose
//! digest cannot be parsed, or whose size is over `MAX_BLOB_SIZE`, never
//! becomes a `Desc`: nothing is ever requested for it.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::Descriptor;

use super::{
    FileMetadata, Packing, Platform, CHUNKS_MEDIA_TYPE, CHUNKS_OF_ANNOTATION,
    CNAI_MODEL_FILEPATH_ANNOTATION, CNAI_MODEL_FILE_METADATA_ANNOTATION, MAX_BLOB_SIZE,
    MODEL_FILEPATH_ANNOTATION, MODEL_FILE_METADATA_ANNOTATION, TITLE_ANNOTATION, UNPACK_ANNOTATION,
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

    /// ModelPack: the path of the layer's file (or folder) in the model.
    pub fn model_filepath(&self) -> Option<&str> {
        self.annotations
            .get(MODEL_FILEPATH_ANNOTATION)
            .or_else(|| self.annotations.get(CNAI_MODEL_FILEPATH_ANNOTATION))
            .map(String::as_str)
    }

    /// ModelPack: how the layer packs its file, from its media type.
    pub fn model_packing(&self) -> Option<Packing> {
        Packing::of_media_type(&self.media_type)
    }

    /// ModelPack: the mode, mtime, size and type of the layer's file.
    pub fn file_metadata(&self) -> Option<FileMetadata> {
        self.annotations
            .get(MODEL_FILE_METADATA_ANNOTATION)
            .or_else(|| self.annotations.get(CNAI_MODEL_FILE_METADATA_ANNOTATION))
            .and_then(|j| FileMetadata::parse(j))
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
    fn model_annotations_current_and_older() {
        let hex = "ab".repeat(32);
        let d = |mt: &str, ann: &str| {
            parse(&format!(
                r#"{{"mediaType":"{mt}","digest":"sha256:{hex}","size":7,"annotations":{{{ann}}}}}"#
            ))
            .unwrap()
        };
        let cncf = d(
            "application/vnd.cncf.model.weight.v1.tar",
            r#""org.cncf.model.filepath":"w/model.bin",
               "org.cncf.model.file.metadata+json":"{\"mode\":493,\"typeflag\":0}""#,
        );
        assert_eq!(cncf.model_filepath(), Some("w/model.bin"));
        assert_eq!(cncf.model_packing(), Some(Packing::Tar));
        assert_eq!(cncf.file_metadata().unwrap().mode, Some(0o755));
        let cnai = d(
            "application/vnd.cnai.model.doc.v1.raw",
            r#""org.cnai.model.filepath":"README.md",
               "org.cnai.model.file.metadata+json":"{\"size\":3}""#,
        );
        assert_eq!(cnai.model_filepath(), Some("README.md"));
        assert_eq!(cnai.model_packing(), Some(Packing::Raw));
        assert_eq!(cnai.file_metadata().unwrap().size, Some(3));
        let plain = d("application/vnd.oci.image.layer.v1.tar", "");
        assert_eq!(plain.model_filepath(), None);
        assert_eq!(plain.model_packing(), None);
        assert_eq!(plain.file_metadata(), None);
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
