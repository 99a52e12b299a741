//! Chunk-digest lists (docs/verification.md#chunk-digests): the layer regfs
//! adds beside every large layer of a manifest it builds, listing the
//! sha256 of each 4 MiB chunk of that layer, and the checks a list passes
//! before it is used.
//!
//! ```json
//! {"mediaType":"application/vnd.regfs.chunks.v1+json",
//!  "layer":{"digest":"sha256:…","size":20971520},
//!  "chunkSize":4194304,
//!  "chunks":["sha256:…","sha256:…","sha256:…","sha256:…","sha256:…"]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CHUNKS_MEDIA_TYPE, CHUNKS_OF_ANNOTATION};
use crate::digest::Digest;

/// The chunk size of every list regfs writes, and the only one it uses.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// Layers this large or larger get a list.
pub const CHUNKED_MIN: u64 = 16 << 20;
/// A list longer than this is not believed (16 TiB of 4 MiB chunks).
const MAX_CHUNKS: u64 = super::MAX_BLOB_SIZE / CHUNK_SIZE;

/// The layer a list covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covered {
    pub digest: Digest,
    pub size: u64,
}

/// A chunk-digest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkList {
    pub media_type: String,
    pub layer: Covered,
    pub chunk_size: u64,
    pub chunks: Vec<Digest>,
}

impl ChunkList {
    pub fn new(layer: Digest, size: u64, chunks: Vec<Digest>) -> ChunkList {
        ChunkList {
            media_type: CHUNKS_MEDIA_TYPE.to_string(),
            layer: Covered {
                digest: layer,
                size,
            },
            chunk_size: CHUNK_SIZE,
            chunks,
        }
    }

    /// The list's bytes (compact JSON, fields in a fixed order: the same
    /// layer always gives the same blob).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The manifest layer that carries these bytes: no title (so `oras
    /// pull` skips it), the covered layer named by annotation.
    pub fn descriptor(&self, bytes: &[u8]) -> serde_json::Value {
        let mut ann = BTreeMap::new();
        ann.insert(CHUNKS_OF_ANNOTATION, self.layer.digest.to_string());
        serde_json::json!({
            "mediaType": CHUNKS_MEDIA_TYPE,
            "digest": Digest::of(bytes).to_string(),
            "size": bytes.len(),
            "annotations": ann,
        })
    }

    /// The list in `bytes`, if it describes the layer `digest` of `size`
    /// bytes in 4 MiB chunks; else why it cannot be used.
    pub fn parse(bytes: &[u8], digest: &Digest, size: u64) -> Result<ChunkList, String> {
        let list: ChunkList =
            serde_json::from_slice(bytes).map_err(|e| format!("not a chunk list: {e}"))?;
        if list.media_type != CHUNKS_MEDIA_TYPE {
            return Err(format!("media type {:?}", list.media_type));
        }
        if list.layer.digest != *digest || list.layer.size != size {
            return Err(format!(
                "it covers {} ({} bytes), not {digest} ({size} bytes)",
                list.layer.digest, list.layer.size
            ));
        }
        if list.chunk_size != CHUNK_SIZE {
            return Err(format!(
                "chunk size {} (only {CHUNK_SIZE} is used)",
                list.chunk_size
            ));
        }
        let want = size.div_ceil(CHUNK_SIZE);
        if want > MAX_CHUNKS || list.chunks.len() as u64 != want {
            return Err(format!(
                "{} chunks listed for {size} bytes ({want} expected)",
                list.chunks.len()
            ));
        }
        Ok(list)
    }
}

/// Whether a layer should carry a list.
pub fn wants_chunk_list(size: u64) -> bool {
    size >= CHUNKED_MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Digest, u64) {
        let size = CHUNKED_MIN + 5;
        let chunks: Vec<Digest> = (0..5u8).map(|i| Digest::of(&[i])).collect();
        let layer = Digest::of(b"layer");
        (
            ChunkList::new(layer.clone(), size, chunks).to_bytes(),
            layer,
            size,
        )
    }

    #[test]
    fn a_list_round_trips_and_is_deterministic() {
        let (bytes, layer, size) = sample();
        assert_eq!(bytes, sample().0);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with(
            r#"{"mediaType":"application/vnd.regfs.chunks.v1+json","layer":{"digest":"sha256:"#
        ));
        assert!(text.contains(r#""chunkSize":4194304,"chunks":["sha256:"#));
        let l = ChunkList::parse(&bytes, &layer, size).unwrap();
        assert_eq!(l.chunks.len(), 5);
        let d = l.descriptor(&bytes);
        assert_eq!(d["mediaType"], CHUNKS_MEDIA_TYPE);
        assert_eq!(d["digest"], Digest::of(&bytes).to_string());
        assert_eq!(d["annotations"][CHUNKS_OF_ANNOTATION], layer.to_string());
        assert!(d["annotations"]
            .get(super::super::TITLE_ANNOTATION)
            .is_none());
    }

    #[test]
    fn a_list_that_disagrees_with_its_layer_is_refused() {
        let (bytes, layer, size) = sample();
        let other = Digest::of(b"other");
        assert!(ChunkList::parse(&bytes, &other, size)
            .unwrap_err()
            .contains("covers"));
        assert!(ChunkList::parse(&bytes, &layer, size + 1)
            .unwrap_err()
            .contains("covers"));
        let mut l: ChunkList = serde_json::from_slice(&bytes).unwrap();
        l.chunks.pop();
        assert!(ChunkList::parse(&l.to_bytes(), &layer, size)
            .unwrap_err()
            .contains("4 chunks listed"));
        let mut l: ChunkList = serde_json::from_slice(&bytes).unwrap();
        l.chunk_size = 1 << 20;
        assert!(ChunkList::parse(&l.to_bytes(), &layer, size)
            .unwrap_err()
            .contains("chunk size"));
        assert!(ChunkList::parse(b"[]", &layer, size).is_err());
        assert!(!wants_chunk_list(CHUNKED_MIN - 1));
        assert!(wants_chunk_list(CHUNKED_MIN));
    }
}
