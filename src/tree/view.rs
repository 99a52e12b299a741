//! What a manifest looks like as a folder: a pure function from manifest
//! bytes to a `View`, the map of names the manifest folder holds.
//!
//! This module owns the naming rules of docs/tree.md: titles and their
//! safety, `blobs/sha256/<hex>`, the names of an index's children, and the
//! reserved names. It does no I/O; everything it decides is table-tested below.

use std::collections::BTreeMap;
use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::oci::{
    ordered_annotations, prepare_descriptor, DescriptorError, CREATED_ANNOTATION,
    EMPTY_CONFIG_MEDIA_TYPE, EMPTY_JSON_DIGEST,
};
// `fs` names these through `tree::view`.
pub use crate::oci::{Desc, TITLE_ANNOTATION};

pub const MANIFEST_JSON: &str = "manifest.json";
pub const CONFIG_JSON: &str = "config.json";
pub const BLOBS: &str = "blobs";
/// The folder of a manifest view that names every blob by its digest.
pub const BLOBS_SHA256: &str = "blobs/sha256";
pub const REFERRERS: &str = "referrers";

/// Whether a manifest is an image/artifact manifest or an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Manifest,
    Index,
}

/// An entry of a manifest folder, or of a folder inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A plain folder made by the view (`blobs`, `blobs/sha256`, a title's parent).
    Dir(BTreeMap<String, Entry>),
    /// `manifest.json`: the manifest's own bytes.
    ManifestJson,
    /// A blob, by index into `View::blobs`.
    Blob(usize),
    /// A titled directory layer, by index into `View::blobs`: a folder whose
    /// contents come from the verified, unpacked layer.
    Unpacked(usize),
    /// A ModelPack tar layer (plain or compressed), by index into
    /// `View::blobs`: a file or a folder, as its file metadata or its tar
    /// headers say (`archive`).
    Archive(usize),
    /// A child manifest folder of an index, by index into `View::children`.
    Child(usize),
    /// `referrers/`: artifacts whose subject is this manifest.
    Referrers,
}

impl Entry {
    /// Whether the entry is a folder; `None` for a tar layer, which may be
    /// either.
    pub fn is_dir(&self) -> Option<bool> {
        match self {
            Entry::ManifestJson | Entry::Blob(_) => Some(false),
            Entry::Archive(_) => None,
            _ => Some(true),
        }
    }
}

/// A manifest seen as a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Length of the manifest bytes (the size of `manifest.json`).
    pub size: u64,
    pub kind: Kind,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub subject: Option<Desc>,
    /// Config first (for manifests), then layers in order.
    pub blobs: Vec<Desc>,
    /// Children of an index, in order.
    pub children: Vec<Desc>,
    /// The names at the top of the manifest folder.
    pub root: BTreeMap<String, Entry>,
    /// Why some layers or children are not named (for the log).
    pub skipped: Vec<String>,
    /// How many names each blob has, counted once on first use.
    pub links: std::sync::OnceLock<std::collections::HashMap<Digest, u32>>,
}

/// Why manifest bytes cannot be shown as a folder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest has schemaVersion {0}; only schema 2 (OCI and Docker v2) is supported")]
    SchemaVersion(u64),
    #[error("manifest media type {0:?} is neither an image manifest nor an index")]
    UnknownKind(String),
    #[error("manifest is malformed: {0}")]
    Malformed(String),
    #[error("manifest descriptor {field} is unusable: {reason}")]
    BadDescriptor { field: String, reason: String },
}

impl From<DescriptorError> for ViewError {
    fn from(e: DescriptorError) -> ViewError {
        ViewError::BadDescriptor {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl View {
    /// Builds the view of `bytes`. `content_type` is the media type the
    /// registry sent, used when the manifest has no `mediaType` of its own.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<View, ViewError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ViewError::Json(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ViewError::Malformed("not a JSON object".into()))?;
        match obj.get("schemaVersion").and_then(|v| v.as_u64()) {
            Some(2) => {}
            Some(v) => return Err(ViewError::SchemaVersion(v)),
            None => return Err(ViewError::Malformed("no schemaVersion".into())),
        }
        let media_type = obj
            .get("mediaType")
            .and_then(|v| v.as_str())
            .or(content_type)
            .unwrap_or("")
            .to_string();
        let kind = if media_type.contains("index") || media_type.contains("manifest.list") {
            Kind::Index
        } else if media_type.contains("manifest") {
            Kind::Manifest
        } else if obj.contains_key("manifests") {
            Kind::Index
        } else if obj.contains_key("layers") || obj.contains_key("config") {
            Kind::Manifest
        } else {
            return Err(ViewError::UnknownKind(media_type));
        };
        // A layer (or child) we cannot address is skipped, not fatal: the
        // rest of the artifact stays readable. Weed them out before the
        // strict oci-spec types see the list.
        let list = if kind == Kind::Manifest {
            "layers"
        } else {
            "manifests"
        };
        let mut value = value;
        let mut skipped = Vec::new();
        if let Some(items) = value.get_mut(list).and_then(|v| v.as_array_mut()) {
            items.iter_mut().for_each(prepare_descriptor);
            let mut i = 0;
            items.retain(|item| {
                let field = format!("{list}[{i}]");
                i += 1;
                let ok = serde_json::from_value::<Descriptor>(item.clone())
                    .map_err(|e| ViewError::BadDescriptor {
                        field: field.clone(),
                        reason: format!(
                            "{e} (digest {})",
                            item.get("digest").unwrap_or(&serde_json::Value::Null)
                        ),
                    })
                    .and_then(|d| desc(&d, &field));
                match ok {
                    Ok(_) => true,
                    Err(e) => {
                        skipped.push(e.to_string());
                        false
                    }
                }
            });
        }
        let mut view = match kind {
            Kind::Manifest => {
                let m: ImageManifest = serde_json::from_value(value)
                    .map_err(|e| ViewError::Malformed(e.to_string()))?;
                View::of_manifest(&m, media_type)?
            }
            Kind::Index => {
                let i: ImageIndex = serde_json::from_value(value)
                    .map_err(|e| ViewError::Malformed(e.to_string()))?;
                View::of_index(&i, media_type)?
            }
        };
        skipped.append(&mut view.skipped);
        view.skipped = skipped;
        view.size = bytes.len() as u64;
        Ok(view)
    }

    fn of_manifest(m: &ImageManifest, media_type: String) -> Result<View, ViewError> {
        let config = desc(m.config(), "config")?;
        let mut blobs = vec![config];
        let mut skipped = Vec::new();
        for (i, layer) in m.layers().iter().enumerate() {
            match desc(layer, &format!("layers[{i}]")) {
                Ok(d) => blobs.push(d),
                // A layer we cannot address is skipped, not fatal: the rest of
                // the artifact stays readable.
                Err(e) => skipped.push(e.to_string()),
            }
        }
        link_chunk_lists(&mut blobs);
        let mut root = BTreeMap::new();
        root.insert(MANIFEST_JSON.to_string(), Entry::ManifestJson);
        root.insert(REFERRERS.to_string(), Entry::Referrers);
        let mut sha = BTreeMap::new();
        for (i, b) in blobs.iter().enumerate() {
            sha.entry(b.digest.hex().to_string())
                .or_insert(Entry::Blob(i));
        }
        let mut blobs_dir = BTreeMap::new();
        blobs_dir.insert("sha256".to_string(), Entry::Dir(sha));
        root.insert(BLOBS.to_string(), Entry::Dir(blobs_dir));
        for (i, layer) in blobs.iter().enumerate().skip(1) {
            let (title, entry, reserved) = if let Some(title) = layer.title() {
                let entry = if layer.is_directory_layer() {
                    Entry::Unpacked(i)
                } else {
                    Entry::Blob(i)
                };
                (title, entry, &RESERVED[..])
            } else if let Some(path) = layer.model_filepath() {
                // ModelPack: a tar (plain or compressed) holds the file or
                // folder at its path; anything else is the file itself. A
                // model's own `config.json` takes the name from the
                // manifest's config.
                let entry = match layer.model_packing() {
                    Some(p) if p.is_tar() => Entry::Archive(i),
                    _ => Entry::Blob(i),
                };
                (path, entry, &MODEL_RESERVED[..])
            } else {
                continue;
            };
            if let Err(why) = place_title(&mut root, title, entry, reserved) {
                let what = if layer.title().is_some() {
                    "title"
                } else {
                    "filepath"
                };
                skipped.push(format!("layer {} {what} {title:?}: {why}", layer.digest));
            }
        }
        if !is_empty_config(&blobs[0]) && !root.contains_key(CONFIG_JSON) {
            root.insert(CONFIG_JSON.to_string(), Entry::Blob(0));
        }
        Ok(View {
            size: 0,
            kind: Kind::Manifest,
            media_type,
            artifact_type: m.artifact_type().as_ref().map(|t| t.to_string()),
            annotations: ordered_annotations(m.annotations()),
            subject: m
                .subject()
                .as_ref()
                .map(|s| desc(s, "subject"))
                .transpose()?,
            blobs,
            children: Vec::new(),
            root,
            skipped,
            links: Default::default(),
        })
    }

    fn of_index(idx: &ImageIndex, media_type: String) -> Result<View, ViewError> {
        let mut children = Vec::new();
        let mut skipped = Vec::new();
        for (i, m) in idx.manifests().iter().enumerate() {
            match desc(m, &format!("manifests[{i}]")) {
                Ok(d) => children.push(d),
                Err(e) => skipped.push(e.to_string()),
            }
        }
        let mut root = BTreeMap::new();
        root.insert(MANIFEST_JSON.to_string(), Entry::ManifestJson);
        root.insert(REFERRERS.to_string(), Entry::Referrers);
        // A child's name is its platform's (`Platform::folder_name`, with
        // its os.version), from its own entry alone. Children with a free,
        // safe platform name first, in order; the rest (no platform, or a
        // platform repeated exactly) get `<platform or unknown>-<12 hex>`.
        let mut deferred = Vec::new();
        for (i, c) in children.iter().enumerate() {
            match c.platform.as_deref() {
                Some(p) if is_safe_component(p) && !root.contains_key(p) => {
                    root.insert(p.to_string(), Entry::Child(i));
                }
                _ => deferred.push(i),
            }
        }
        for i in deferred {
            let c = &children[i];
            let base = match c.platform.as_deref() {
                Some(p) if is_safe_component(p) => p,
                _ => "unknown",
            };
            let name = format!("{base}-{}", &c.digest.hex()[..12]);
            match root.entry(name) {
                std::collections::btree_map::Entry::Occupied(o) => {
                    skipped.push(format!("child {} repeats {}", c.digest, o.key()));
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(Entry::Child(i));
                }
            }
        }
        Ok(View {
            size: 0,
            kind: Kind::Index,
            media_type,
            artifact_type: idx.artifact_type().as_ref().map(|t| t.to_string()),
            annotations: ordered_annotations(idx.annotations()),
            subject: idx
                .subject()
                .as_ref()
                .map(|s| desc(s, "subject"))
                .transpose()?,
            blobs: Vec::new(),
            children,
            root,
            skipped,
            links: Default::default(),
        })
    }

    /// The entry at `path` (relative to the manifest folder), if any.
    pub fn entry(&self, path: &[String]) -> Option<&Entry> {
        let (first, rest) = path.split_first()?;
        let mut e = self.root.get(first)?;
        for name in rest {
            match e {
                Entry::Dir(m) => e = m.get(name)?,
                _ => return None,
            }
        }
        Some(e)
    }

    /// The names in the folder at `path` (empty path: the manifest folder).
    pub fn dir(&self, path: &[String]) -> Option<&BTreeMap<String, Entry>> {
        if path.is_empty() {
            return Some(&self.root);
        }
        match self.entry(path)? {
            Entry::Dir(m) => Some(m),
            _ => None,
        }
    }

    /// How many names the blob `d` has in this folder (its link count).
    /// Counted for every blob in one walk, the first time: a lookup in a
    /// folder of thousands of layers costs a map lookup.
    pub fn names_of(&self, d: &Digest) -> u32 {
        fn walk(
            m: &BTreeMap<String, Entry>,
            blobs: &[Desc],
            out: &mut std::collections::HashMap<Digest, u32>,
        ) {
            for e in m.values() {
                match e {
                    Entry::Blob(i) => {
                        if let Some(b) = blobs.get(*i) {
                            *out.entry(b.digest.clone()).or_insert(0) += 1;
                        }
                    }
                    Entry::Dir(sub) => walk(sub, blobs, out),
                    _ => {}
                }
            }
        }
        let links = self.links.get_or_init(|| {
            let mut out = std::collections::HashMap::new();
            walk(&self.root, &self.blobs, &mut out);
            out
        });
        links.get(d).copied().unwrap_or(0).max(1)
    }

    /// The `org.opencontainers.image.created` annotation, as seconds since the epoch.
    pub fn created(&self) -> Option<i64> {
        self.annotations
            .get(CREATED_ANNOTATION)
            .and_then(|s| crate::oci::parse_rfc3339(s))
    }
}

/// Gives each layer the chunk-digest list of the same manifest that
/// covers it (the first, if several claim it). A list has no title, so it
/// is never a titled file; it stays under `blobs/`.
fn link_chunk_lists(blobs: &mut [Desc]) {
    let lists: Vec<(Digest, Desc)> = blobs
        .iter()
        .skip(1)
        .filter_map(|b| Some((b.chunks_of()?, b.clone())))
        .collect();
    for (of, list) in lists.into_iter().rev() {
        for b in blobs.iter_mut().skip(1) {
            if b.digest == of && b.chunks_of().is_none() {
                b.chunk_list = Some(Box::new(list.clone()));
            }
        }
    }
}

fn is_empty_config(d: &Desc) -> bool {
    d.media_type == EMPTY_CONFIG_MEDIA_TYPE
        || (d.size <= 2 && d.digest.to_string() == EMPTY_JSON_DIGEST)
}

fn desc(d: &Descriptor, field: &str) -> Result<Desc, ViewError> {
    Ok(Desc::from_spec(d, field)?)
}

/// One path component we are willing to show: non-empty, not `.`/`..`, no
/// `/` or NUL, at most 255 bytes.
pub fn is_safe_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && c.len() <= 255 && !c.contains(['/', '\0'])
}

/// Why a title is not shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TitleRejection {
    Absolute,
    UnsafeComponent(String),
    Reserved(String),
    Duplicate,
    Conflicts(String),
}

impl fmt::Display for TitleRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TitleRejection::Absolute => write!(f, "absolute path; readable under blobs/ only"),
            TitleRejection::UnsafeComponent(c) => {
                write!(f, "unsafe path component {c:?}; readable under blobs/ only")
            }
            TitleRejection::Reserved(c) => {
                write!(
                    f,
                    "{c:?} is a name the folder already uses; readable under blobs/ only"
                )
            }
            TitleRejection::Duplicate => {
                write!(f, "duplicate title; shown for its first layer only")
            }
            TitleRejection::Conflicts(c) => {
                write!(
                    f,
                    "{c:?} is both a file and a folder; shown for its first layer only"
                )
            }
        }
    }
}

/// Splits a title into safe components, or says why it is not shown.
pub fn title_components(title: &str) -> Result<Vec<&str>, TitleRejection> {
    if title.starts_with('/') {
        return Err(TitleRejection::Absolute);
    }
    let parts: Vec<&str> = title.split('/').collect();
    for p in &parts {
        if !is_safe_component(p) {
            return Err(TitleRejection::UnsafeComponent((*p).to_string()));
        }
    }
    Ok(parts)
}

/// Puts a titled layer into the folder map, creating parent folders.
fn place_title(
    root: &mut BTreeMap<String, Entry>,
    title: &str,
    entry: Entry,
    reserved: &[&str],
) -> Result<(), TitleRejection> {
    let parts = title_components(title)?;
    if reserved.contains(&parts[0]) {
        return Err(TitleRejection::Reserved(parts[0].to_string()));
    }
    let (last, parents) = parts.split_last().ok_or(TitleRejection::Absolute)?;
    let mut dir = root;
    for p in parents {
        let e = dir
            .entry((*p).to_string())
            .or_insert_with(|| Entry::Dir(BTreeMap::new()));
        match e {
            Entry::Dir(m) => dir = m,
            _ => return Err(TitleRejection::Conflicts((*p).to_string())),
        }
    }
    match dir.get(*last) {
        None => {
            dir.insert((*last).to_string(), entry);
            Ok(())
        }
        Some(Entry::Dir(_)) => Err(TitleRejection::Conflicts((*last).to_string())),
        Some(_) => Err(TitleRejection::Duplicate),
    }
}

/// Names a manifest folder uses itself: a title may not start with one.
pub const RESERVED: [&str; 4] = [MANIFEST_JSON, CONFIG_JSON, BLOBS, REFERRERS];
/// The names a ModelPack filepath may not start with: a model's own
/// `config.json` is shown, and the manifest's config is then only under
/// `blobs/`.
const MODEL_RESERVED: [&str; 3] = [MANIFEST_JSON, BLOBS, REFERRERS];

#[cfg(test)]
mod tests;
