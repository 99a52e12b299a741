//! Chunk-digest lists in the manifests regfs builds (docs/verification.md):
//! every layer of 16 MiB or more whose chunks were hashed when it was
//! staged gets a list, pushed as one more (untitled) layer of the same
//! manifest. Lists of layers that are gone are dropped; lists of layers
//! that stay are kept as they are; layers the manifest had before get no
//! new list, so a commit that changes nothing moves nothing.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::oci::{wants_chunk_list, ChunkList, CHUNKS_MEDIA_TYPE, CHUNKS_OF_ANNOTATION};

/// The digest a layer descriptor names, if it names one.
fn digest_of(l: &Value) -> Option<Digest> {
    l.get("digest")?.as_str()?.parse().ok()
}

/// The layer a chunk-list descriptor covers.
fn covers(l: &Value) -> Option<Digest> {
    if l.get("mediaType")?.as_str()? != CHUNKS_MEDIA_TYPE {
        return None;
    }
    l.get("annotations")?
        .get(CHUNKS_OF_ANNOTATION)?
        .as_str()?
        .parse()
        .ok()
}

impl<R: Resolver> Planner<'_, R> {
    /// Remembers the chunk digests of a staged blob.
    pub(super) fn note_chunks(&mut self, digest: &Digest, chunks: Option<&Vec<Digest>>) {
        if let Some(c) = chunks {
            self.chunks.insert(digest.clone(), c.clone());
        }
    }

    /// Adds and drops chunk lists in `layers`; `before` holds the digests of
    /// the layers the manifest had before the change (none for a new one).
    pub(super) fn chunk_lists(&mut self, layers: &mut Vec<Value>, before: &BTreeSet<Digest>) {
        if self.settings.no_chunk_lists {
            return;
        }
        let present: BTreeSet<Digest> = layers
            .iter()
            .filter(|l| covers(l).is_none())
            .filter_map(digest_of)
            .collect();
        layers.retain(|l| covers(l).is_none_or(|of| present.contains(&of)));
        let covered: BTreeSet<Digest> = layers.iter().filter_map(covers).collect();
        let mut added = Vec::new();
        for l in layers.iter().filter(|l| covers(l).is_none()) {
            let (Some(d), Some(size)) = (digest_of(l), l.get("size").and_then(Value::as_u64))
            else {
                continue;
            };
            if !wants_chunk_list(size) || covered.contains(&d) || before.contains(&d) {
                continue;
            }
            let Some(chunks) = self.chunks.get(&d) else {
                continue;
            };
            let list = ChunkList::new(d.clone(), size, chunks.clone());
            if ChunkList::parse(&list.to_bytes(), &d, size).is_err() {
                continue; // the file changed size since it was hashed
            }
            let bytes = list.to_bytes();
            let desc = list.descriptor(&bytes);
            self.plan.add_blob(Blob {
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                source: Source::Bytes(bytes),
                name: CHUNKS_MEDIA_TYPE.to_string(),
            });
            if !added.contains(&desc) {
                added.push(desc);
            }
        }
        layers.extend(added);
    }
}
