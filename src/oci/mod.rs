//! The OCI vocabulary: media types, annotation keys, the empty config,
//! RFC 3339 timestamps, and descriptors and platforms after validation.
//!
//! Every module that reads or writes manifests takes these names from here,
//! so each string is written once. Pure: no I/O.

mod chunks;
mod descriptor;
mod model;
mod platform;
mod time;

pub use chunks::{wants_chunk_list, ChunkList, CHUNKED_MIN, CHUNK_SIZE};
pub use descriptor::{ordered_annotations, Desc, DescriptorError};
pub use model::{FileKind, FileMetadata, Packing};
pub use platform::{prepare_descriptor, Platform};
pub use time::{format_rfc3339, parse_rfc3339};

// ---- manifests ----

/// An OCI image (or artifact) manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// A Docker image manifest, schema 2.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list (the Docker index).
pub const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// The media types a manifest folder is made from (what we send in `Accept`).
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    MANIFEST_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE,
    DOCKER_MANIFEST_LIST_MEDIA_TYPE,
];

// ---- limits ----

/// The most bytes a descriptor may claim (16 TiB). A claim past it is a
/// hostile or broken manifest: the descriptor is refused where it is
/// parsed, before any request or allocation.
pub const MAX_BLOB_SIZE: u64 = 1 << 44;

// ---- configs and layers ----

/// The config of an image: at least `os` and `architecture`.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The empty config `{}` that artifacts carry.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The bytes of the empty config.
pub const EMPTY_JSON: &[u8] = b"{}";
/// The digest of `{}`, the empty config ORAS writes.
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
/// A layer that is a tar archive, or (for ORAS) a plain file.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed tar layer (an ORAS directory layer).
pub const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The artifactType ORAS gives a manifest when none is named.
pub const DEFAULT_ARTIFACT_TYPE: &str = "application/vnd.unknown.artifact.v1";
/// A layer listing the sha256 of each chunk of another layer (docs/verification.md).
pub const CHUNKS_MEDIA_TYPE: &str = "application/vnd.regfs.chunks.v1+json";

// ---- ModelPack (CNCF model-spec) ----

/// The artifactType of a ModelPack model.
pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
/// The config of a ModelPack model.
pub const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
/// A model layer's media type is `<prefix><kind>.v1.<packing>`:
/// `application/vnd.cncf.model.weight.v1.tar`.
pub const MODEL_LAYER_PREFIX: &str = "application/vnd.cncf.model.";
/// The prefix of older ModelPack artifacts (`application/vnd.cnai.model.doc.v1.raw`).
pub const CNAI_MODEL_LAYER_PREFIX: &str = "application/vnd.cnai.model.";
/// What a model layer holds.
pub const MODEL_LAYER_KINDS: [&str; 5] = ["weight", "weight.config", "doc", "code", "dataset"];
/// How a model layer packs it: the file itself, or a tar archive, plain
/// or compressed (`Packing`).
pub const MODEL_LAYER_PACKINGS: [&str; 4] = ["raw", "tar", "tar+gzip", "tar+zstd"];

// ---- annotations ----

/// The file name of a layer (ORAS), or of a layout's manifest.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// When a manifest was made, RFC 3339.
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// The tag of a manifest in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// ORAS: the digest of the uncompressed tar of a directory layer.
pub const CONTENT_DIGEST_ANNOTATION: &str = "io.deis.oras.content.digest";
/// ORAS: `"true"` on a titled tar+gzip layer that unpacks into a folder.
pub const UNPACK_ANNOTATION: &str = "io.deis.oras.content.unpack";
/// ModelPack: the path of an untitled layer's file in the model.
pub const MODEL_FILEPATH_ANNOTATION: &str = "org.cncf.model.filepath";
/// ModelPack's older name for [`MODEL_FILEPATH_ANNOTATION`].
pub const CNAI_MODEL_FILEPATH_ANNOTATION: &str = "org.cnai.model.filepath";
/// ModelPack: a JSON object with the mode, mtime, size and type of a
/// layer's file (`model.rs`).
pub const MODEL_FILE_METADATA_ANNOTATION: &str = "org.cncf.model.file.metadata+json";
/// ModelPack's older name for [`MODEL_FILE_METADATA_ANNOTATION`].
pub const CNAI_MODEL_FILE_METADATA_ANNOTATION: &str = "org.cnai.model.file.metadata+json";
/// On a chunk-digest layer: the digest of the layer it covers.
pub const CHUNKS_OF_ANNOTATION: &str = "dev.regfs.chunks.of";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn the_empty_config_digest_is_the_digest_of_its_bytes() {
        assert_eq!(Digest::of(EMPTY_JSON).to_string(), EMPTY_JSON_DIGEST);
    }

    #[test]
    fn every_name_is_written_once() {
        let names = [
            MANIFEST_MEDIA_TYPE,
            INDEX_MEDIA_TYPE,
            DOCKER_MANIFEST_MEDIA_TYPE,
            DOCKER_MANIFEST_LIST_MEDIA_TYPE,
            IMAGE_CONFIG_MEDIA_TYPE,
            EMPTY_CONFIG_MEDIA_TYPE,
            LAYER_MEDIA_TYPE,
            LAYER_GZIP_MEDIA_TYPE,
            DEFAULT_ARTIFACT_TYPE,
            CHUNKS_MEDIA_TYPE,
            MODEL_ARTIFACT_TYPE,
            MODEL_CONFIG_MEDIA_TYPE,
            MODEL_LAYER_PREFIX,
            CNAI_MODEL_LAYER_PREFIX,
            TITLE_ANNOTATION,
            CREATED_ANNOTATION,
            REF_NAME_ANNOTATION,
            CONTENT_DIGEST_ANNOTATION,
            UNPACK_ANNOTATION,
            MODEL_FILEPATH_ANNOTATION,
            CNAI_MODEL_FILEPATH_ANNOTATION,
            MODEL_FILE_METADATA_ANNOTATION,
            CNAI_MODEL_FILE_METADATA_ANNOTATION,
            CHUNKS_OF_ANNOTATION,
        ];
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "two constants share a value");
        for n in names {
            let media_type = n.starts_with("application/vnd.");
            let annotation = n.split('.').count() >= 3 && !n.contains('/');
            assert!(media_type || annotation, "{n}");
        }
    }
}
