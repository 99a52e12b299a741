//! Commit planning: from a staged folder (and the manifest it changes, if
//! any) to the exact blobs and manifest bytes to push, children first.
//!
//! Pure: files are known by their digests (`scan`), and the two things that
//! need I/O (building a directory layer, fetching a base manifest) come
//! through the `Resolver` the caller hands in, so the rules below have
//! table tests with a resolver made of maps.
//!
//! The rules (docs/commit.md):
//! - a folder holding `manifest.json` is pushed verbatim: those bytes, and
//!   the blobs it names from the folder (any file with the right digest) or
//!   the registry;
//! - a changed existing tag keeps its manifest exactly, but for the titled
//!   layers added, replaced or removed (and an index for the platform
//!   folders added, removed or changed); when the changes leave it as it
//!   was, its own bytes are planned again, never a re-serialization;
//! - a folder under a manifest folder's `referrers/` is an artifact whose
//!   subject is that manifest (`referrers`): verbatim with a `manifest.json`,
//!   else a change of the existing referrer it is named after, else new;
//! - a new folder becomes an ORAS artifact: one layer per file, a tar+gzip
//!   layer per subfolder, the empty config; platform-named subfolders make
//!   it an image index of one manifest per platform, the platform read from
//!   the name (`Platform::from_folder_name`: `windows-amd64-10.0.20348.2113`
//!   has an `os.version`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::scan::{StagedDir, StagedFile};
use super::tarball::Tarball;
use crate::digest::Digest;
use crate::oci::{
    Platform, CONTENT_DIGEST_ANNOTATION, CREATED_ANNOTATION, DEFAULT_ARTIFACT_TYPE,
    EMPTY_CONFIG_MEDIA_TYPE, EMPTY_JSON, EMPTY_JSON_DIGEST, IMAGE_CONFIG_MEDIA_TYPE,
    INDEX_MEDIA_TYPE, LAYER_GZIP_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION, UNPACK_ANNOTATION,
};
use crate::tree::view::{title_components, View, BLOBS, CONFIG_JSON, MANIFEST_JSON, REFERRERS};

pub const ANNOTATION_XATTR: &str = "user.oci.annotation.";
pub const ARTIFACT_TYPE_XATTR: &str = "user.oci.artifactType";

/// Names in a staged folder that are not layers.
const NOT_LAYERS: [&str; 2] = [BLOBS, REFERRERS];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{0}")]
    Resolve(String),
}

fn invalid(path: &str, reason: impl Into<String>) -> PlanError {
    PlanError::Invalid {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

/// A manifest the tag (or a child of it) pointed at before the change.
#[derive(Debug, Clone)]
pub struct Base {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub media_type: Option<String>,
}

/// The I/O the planner needs.
pub trait Resolver {
    /// Builds the tar+gzip layer of a folder named `name`.
    fn tarball(&mut self, dir: &StagedDir, name: &str) -> Result<Tarball, PlanError>;
    /// A manifest by digest (a child of a changed index).
    fn manifest(&mut self, digest: &Digest) -> Result<Base, PlanError>;
    /// The bytes of a small staged file (a `manifest.json`).
    fn read(&mut self, file: &StagedFile) -> Result<Vec<u8>, PlanError>;
}

/// ORAS's annotation file: `$manifest`, `$config`, and titles.
pub type AnnotationFile = BTreeMap<String, BTreeMap<String, String>>;

/// What the planner needs to know besides the folder.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `org.opencontainers.image.created` for new manifests (RFC 3339).
    pub created: String,
    pub artifact_type: Option<String>,
    pub annotations: AnnotationFile,
    /// Add no chunk-digest lists (`commit --no-chunk-lists`).
    pub no_chunk_lists: bool,
}

/// One staged tag folder to plan.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub dir: &'a StagedDir,
    pub base: Option<Base>,
    /// Paths (relative to the tag folder) of registry entries removed.
    pub removed: BTreeSet<String>,
    /// `user.oci.*` attributes by path relative to the tag folder ("" = the folder).
    pub xattrs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a blob's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(std::path::PathBuf),
    Bytes(Vec<u8>),
    /// Not staged: must already be in the registry (checked before anything is pushed).
    Registry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub digest: Digest,
    pub size: u64,
    pub source: Source,
    /// What the output line calls it (a title, or the media type).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Where it lives in the staged folder ("" = the tag itself).
    pub path: String,
    /// Pushed earlier already (a kept child of a changed index): only checked.
    pub existing: bool,
}

/// What to push, in order: blobs, then manifests (children first), then
/// referrers (subjects first). The last manifest is what the tag will
/// point at; referrers are pushed by digest only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub blobs: Vec<Blob>,
    pub manifests: Vec<Manifest>,
    pub referrers: Vec<Manifest>,
}

impl Plan {
    pub fn top(&self) -> Option<&Manifest> {
        self.manifests.last()
    }

    fn add_blob(&mut self, b: Blob) {
        match self.blobs.iter_mut().find(|x| x.digest == b.digest) {
            // A staged copy beats "must be in the registry".
            Some(x) if x.source == Source::Registry && b.source != Source::Registry => *x = b,
            Some(_) => {}
            None => self.blobs.push(b),
        }
    }

    fn add_manifest(&mut self, m: Manifest) {
        if !self.manifests.iter().any(|x| x.digest == m.digest) {
            self.manifests.push(m);
        }
    }
}

/// The descriptor of a planned manifest, for its parent index (or its
/// referrers' `subject`).
#[derive(Debug, Clone)]
struct Made {
    digest: Digest,
    size: u64,
    media_type: String,
    artifact_type: Option<String>,
}

struct Planner<'a, R: Resolver> {
    input: &'a Input<'a>,
    settings: &'a Settings,
    resolver: &'a mut R,
    plan: Plan,
    /// Chunk digests of the staged blobs that have them, by blob digest.
    chunks: BTreeMap<Digest, Vec<Digest>>,
}

/// Plans one staged tag folder.
pub fn plan<R: Resolver>(
    input: &Input<'_>,
    settings: &Settings,
    resolver: &mut R,
) -> Result<Plan, PlanError> {
    let mut p = Planner {
        input,
        settings,
        resolver,
        plan: Plan::default(),
        chunks: BTreeMap::new(),
    };
    p.folder("", input.dir, input.base.clone(), 0)?;
    Ok(p.plan)
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}/{b}")
    }
}

fn parse_json(bytes: &[u8], path: &str) -> Result<Map<String, Value>, PlanError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid(path, "manifest.json is not a JSON object")),
        Err(e) => Err(invalid(
            path,
            format!("manifest.json is not valid JSON: {e}"),
        )),
    }
}

fn is_index(m: &Map<String, Value>, media_type: Option<&str>) -> bool {
    let mt = m
        .get("mediaType")
        .and_then(Value::as_str)
        .or(media_type)
        .unwrap_or("");
    mt.contains("index")
        || mt.contains("manifest.list")
        || (mt.is_empty() && m.contains_key("manifests"))
}

fn digest_field(v: &Value, path: &str) -> Result<Digest, PlanError> {
    v.get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(path, "descriptor without digest"))?
        .parse()
        .map_err(|e: crate::digest::DigestError| invalid(path, e.to_string()))
}

fn set_annotations(obj: &mut Map<String, Value>, extra: &BTreeMap<String, String>) {
    if extra.is_empty() {
        return;
    }
    let ann = obj
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(a) = ann {
        for (k, v) in extra {
            a.insert(k.clone(), Value::String(v.clone()));
        }
    }
}

fn to_bytes(v: &Map<String, Value>) -> Vec<u8> {
    // A map of JSON values always serializes.
    serde_json::to_vec(v).unwrap_or_default()
}

impl<R: Resolver> Planner<'_, R> {
    /// Annotations set by xattr on `path`.
    fn xattr_annotations(&self, path: &str) -> BTreeMap<String, String> {
        self.input
            .xattrs
            .get(path)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix(ANNOTATION_XATTR)
                            .map(|k| (k.to_string(), v.clone()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Annotations of a manifest or index made at `path`: the created time
    /// (for a new one), the annotation file's `$manifest` (for the tag
    /// itself), and xattrs set on the folder.
    fn manifest_annotations(&self, path: &str, new: bool) -> BTreeMap<String, String> {
        let mut ann = BTreeMap::new();
        if new {
            ann.insert(
                CREATED_ANNOTATION.to_string(),
                self.settings.created.clone(),
            );
        }
        if path.is_empty() {
            ann.extend(
                self.settings
                    .annotations
                    .get("$manifest")
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        ann.extend(self.xattr_annotations(path));
        ann
    }

    fn artifact_type_of(&self, path: &str) -> Option<String> {
        self.input
            .xattrs
            .get(path)
            .and_then(|m| m.get(ARTIFACT_TYPE_XATTR).cloned())
    }

    fn is_removed(&self, path: &str) -> bool {
        super::ancestors(path).any(|p| self.input.removed.contains(p))
    }

    fn has_changes_below(&self, path: &str) -> bool {
        let pre = format!("{path}/");
        self.input
            .removed
            .iter()
            .any(|p| p == path || p.starts_with(&pre))
            || self
                .input
                .xattrs
                .keys()
                .any(|p| p == path || p.starts_with(&pre))
    }

    fn title_annotations(&self, title: &str, path: &str) -> BTreeMap<String, String> {
        let mut a = self
            .settings
            .annotations
            .get(title)
            .cloned()
            .unwrap_or_default();
        a.extend(self.xattr_annotations(path));
        a
    }

    /// The manifest folder at `path`, and the referrers staged under it.
    fn folder(
        &mut self,
        path: &str,
        dir: &StagedDir,
        base: Option<Base>,
        depth: usize,
    ) -> Result<Made, PlanError> {
        let made = self.manifest_folder(path, dir, base, depth)?;
        self.referrers(path, dir, &made, depth)?;
        Ok(made)
    }

    fn manifest_folder(
        &mut self,
        path: &str,
        dir: &StagedDir,
        base: Option<Base>,
        depth: usize,
    ) -> Result<Made, PlanError> {
        if depth > 8 {
            return Err(invalid(path, "folders nest too deep for an index"));
        }
        if let Some(m) = dir.files.get(MANIFEST_JSON) {
            return self.verbatim(path, dir, m, depth);
        }
        match base {
            Some(b) => {
                let obj = parse_json(&b.bytes, path)?;
                if is_index(&obj, b.media_type.as_deref()) {
                    self.change_index(path, dir, &b, obj, depth)
                } else {
                    self.change_manifest(path, dir, &b, obj)
                }
            }
            None => {
                if dir
                    .dirs
                    .keys()
                    .any(|n| Platform::from_folder_name(n).is_some())
                {
                    self.new_index(path, dir, depth)
                } else {
                    self.new_manifest(path, dir, None, None)
                }
            }
        }
    }

    fn file_blob(&mut self, f: &StagedFile, name: &str) {
        self.note_chunks(&f.digest, f.chunks.as_ref());
        self.plan.add_blob(Blob {
            digest: f.digest.clone(),
            size: f.size,
            source: Source::File(f.path.clone()),
            name: name.to_string(),
        });
    }

    fn dir_layer(&mut self, dir: &StagedDir, title: &str, path: &str) -> Result<Value, PlanError> {
        let name = title.rsplit('/').next().unwrap_or(title);
        let t = self.resolver.tarball(dir, name)?;
        self.note_chunks(&t.digest, Some(&t.chunks));
        self.plan.add_blob(Blob {
            digest: t.digest.clone(),
            size: t.size,
            source: Source::File(t.path.clone()),
            name: title.to_string(),
        });
        let mut ann = BTreeMap::new();
        ann.insert(
            CONTENT_DIGEST_ANNOTATION.to_string(),
            t.tar_digest.to_string(),
        );
        ann.insert(TITLE_ANNOTATION.to_string(), title.to_string());
        ann.insert(UNPACK_ANNOTATION.to_string(), "true".to_string());
        ann.extend(self.title_annotations(title, path));
        Ok(json!({
            "mediaType": LAYER_GZIP_MEDIA_TYPE,
            "digest": t.digest.to_string(),
            "size": t.size,
            "annotations": ann,
        }))
    }

    fn file_layer(&mut self, f: &StagedFile, title: &str, path: &str) -> Value {
        self.file_blob(f, title);
        let mut ann = BTreeMap::new();
        ann.insert(TITLE_ANNOTATION.to_string(), title.to_string());
        ann.extend(self.title_annotations(title, path));
        json!({
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": f.digest.to_string(),
            "size": f.size,
            "annotations": ann,
        })
    }

    /// Layers for every file of a new folder: files as titled layers,
    /// subfolders as directory layers.
    fn new_layers(&mut self, path: &str, dir: &StagedDir) -> Result<Vec<Value>, PlanError> {
        let mut layers = Vec::new();
        for (name, f) in &dir.files {
            if name == CONFIG_JSON {
                return Err(invalid(
                    &join(path, name),
                    "config.json is a reserved name in a new artifact; rename the file",
                ));
            }
            layers.push(self.file_layer(f, name, &join(path, name)));
        }
        for (name, d) in &dir.dirs {
            if name == REFERRERS {
                continue; // artifacts of their own (`referrers`)
            }
            if NOT_LAYERS.contains(&name.as_str()) {
                return Err(invalid(
                    &join(path, name),
                    "is a reserved name in a new artifact",
                ));
            }
            if d.is_empty() {
                continue;
            }
            layers.push(self.dir_layer(d, name, &join(path, name))?);
        }
        Ok(layers)
    }

    /// A new artifact of the files of `dir`: for a platform folder, with
    /// that platform's config; for a new referrer, with its `subject`.
    fn new_manifest(
        &mut self,
        path: &str,
        dir: &StagedDir,
        platform: Option<&Platform>,
        subject: Option<&Made>,
    ) -> Result<Made, PlanError> {
        let mut layers = self.new_layers(path, dir)?;
        if layers.is_empty() {
            return Err(invalid(path, "nothing to commit: the folder has no files"));
        }
        self.chunk_lists(&mut layers, &BTreeSet::new());
        // ORAS sets the default artifactType whenever none is given, for
        // --artifact-platform manifests as well.
        let artifact_type = Some(
            self.artifact_type_of(path)
                .or_else(|| self.settings.artifact_type.clone())
                .unwrap_or_else(|| DEFAULT_ARTIFACT_TYPE.to_string()),
        );
        let mut config = match platform {
            Some(p) => {
                let bytes = to_bytes(&p.to_json());
                let d = Digest::of(&bytes);
                let size = bytes.len() as u64;
                self.plan.add_blob(Blob {
                    digest: d.clone(),
                    size,
                    source: Source::Bytes(bytes),
                    name: IMAGE_CONFIG_MEDIA_TYPE.into(),
                });
                json!({"mediaType": IMAGE_CONFIG_MEDIA_TYPE, "digest": d.to_string(), "size": size})
            }
            None => {
                self.plan.add_blob(Blob {
                    digest: EMPTY_JSON_DIGEST
                        .parse()
                        .map_err(|_| PlanError::Resolve("empty digest".into()))?,
                    size: 2,
                    source: Source::Bytes(EMPTY_JSON.to_vec()),
                    name: EMPTY_CONFIG_MEDIA_TYPE.into(),
                });
                json!({"mediaType": EMPTY_CONFIG_MEDIA_TYPE, "digest": EMPTY_JSON_DIGEST, "size": 2, "data": "e30="})
            }
        };
        if let (Some(a), Value::Object(o)) = (self.settings.annotations.get("$config"), &mut config)
        {
            set_annotations(o, a);
        }
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(MANIFEST_MEDIA_TYPE));
        if let Some(t) = &artifact_type {
            m.insert("artifactType".into(), json!(t));
        }
        m.insert("config".into(), config);
        m.insert("layers".into(), Value::Array(layers));
        if let Some(s) = subject {
            // As `oras attach` writes it: after the layers, before the annotations.
            m.insert(
                "subject".into(),
                json!({"mediaType": s.media_type, "digest": s.digest.to_string(), "size": s.size}),
            );
        }
        let ann = self.manifest_annotations(path, true);
        set_annotations(&mut m, &ann);
        Ok(self.emit(path, m, MANIFEST_MEDIA_TYPE, artifact_type))
    }

    fn new_index(&mut self, path: &str, dir: &StagedDir, depth: usize) -> Result<Made, PlanError> {
        if let Some(name) = dir.files.keys().next() {
            return Err(invalid(
                &join(path, name),
                "a folder with platform folders is an index: files belong inside a platform folder",
            ));
        }
        let mut manifests = Vec::new();
        for (name, sub) in &dir.dirs {
            if name == REFERRERS {
                continue;
            }
            let Some(platform) = Platform::from_folder_name(name) else {
                return Err(invalid(
                    &join(path, name),
                    "not a platform folder name (like linux-amd64 or linux-arm-v7) beside platform folders",
                ));
            };
            let made = self.platform_folder(&join(path, name), sub, &platform, depth + 1)?;
            manifests.push(self.child_descriptor(&made, Some(&platform), None));
        }
        self.index_manifest(path, manifests, None)
    }

    /// A new platform folder of an index: verbatim with a `manifest.json`,
    /// else an artifact for that platform; then its referrers.
    fn platform_folder(
        &mut self,
        path: &str,
        dir: &StagedDir,
        platform: &Platform,
        depth: usize,
    ) -> Result<Made, PlanError> {
        if dir.files.contains_key(MANIFEST_JSON) {
            return self.folder(path, dir, None, depth);
        }
        let made = self.new_manifest(path, dir, Some(platform), None)?;
        self.referrers(path, dir, &made, depth)?;
        Ok(made)
    }

    fn child_descriptor(
        &self,
        made: &Made,
        platform: Option<&Platform>,
        keep: Option<&Map<String, Value>>,
    ) -> Value {
        let mut d = keep.cloned().unwrap_or_default();
        d.insert("mediaType".into(), json!(made.media_type));
        d.insert("digest".into(), json!(made.digest.to_string()));
        d.insert("size".into(), json!(made.size));
        // Keys in the order `oras manifest index create` writes them.
        if let Some(p) = platform {
            d.insert("platform".into(), Value::Object(p.to_json()));
        }
        if let Some(t) = &made.artifact_type {
            if keep.is_none() {
                d.insert("artifactType".into(), json!(t));
            }
        }
        Value::Object(d)
    }

    /// The index at `path` listing `manifests`: a new one, or `keep` (the
    /// existing index `base`) with its list replaced.
    fn index_manifest(
        &mut self,
        path: &str,
        manifests: Vec<Value>,
        keep: Option<(Map<String, Value>, &Base)>,
    ) -> Result<Made, PlanError> {
        if manifests.is_empty() {
            return Err(invalid(path, "an index needs at least one platform folder"));
        }
        let is_new = keep.is_none();
        let (keep, base) = match keep {
            Some((m, b)) => (Some(m), Some(b)),
            None => (None, None),
        };
        let old = keep.clone();
        let mut m = keep.unwrap_or_else(|| {
            let mut m = Map::new();
            m.insert("schemaVersion".into(), json!(2));
            m.insert("mediaType".into(), json!(INDEX_MEDIA_TYPE));
            m
        });
        m.insert("manifests".into(), Value::Array(manifests));
        let ann = self.manifest_annotations(path, is_new);
        set_annotations(&mut m, &ann);
        let artifact_type = self.artifact_type_of(path);
        if let Some(t) = &artifact_type {
            m.insert("artifactType".into(), json!(t));
        }
        let media_type = m
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(INDEX_MEDIA_TYPE)
            .to_string();
        Ok(match (base, old) {
            (Some(b), Some(old)) => self.emit_change(path, b, &old, m, &media_type, artifact_type),
            _ => self.emit(path, m, &media_type, artifact_type),
        })
    }

    /// An existing manifest after its changes: its own bytes again when
    /// the changes left it as it was. It is never re-serialized for no
    /// change: other tools' spacing and key order are part of its digest,
    /// and a new digest would move the tag.
    fn emit_change(
        &mut self,
        path: &str,
        base: &Base,
        old: &Map<String, Value>,
        m: Map<String, Value>,
        media_type: &str,
        artifact_type: Option<String>,
    ) -> Made {
        if to_bytes(&m) != to_bytes(old) {
            return self.emit(path, m, media_type, artifact_type);
        }
        self.plan.add_manifest(Manifest {
            digest: base.digest.clone(),
            media_type: media_type.to_string(),
            bytes: base.bytes.clone(),
            path: path.to_string(),
            existing: false,
        });
        Made {
            digest: base.digest.clone(),
            size: base.bytes.len() as u64,
            media_type: media_type.to_string(),
            artifact_type,
        }
    }

    fn emit(
        &mut self,
        path: &str,
        m: Map<String, Value>,
        media_type: &str,
        artifact_type: Option<String>,
    ) -> Made {
        let bytes = to_bytes(&m);
        let digest = Digest::of(&bytes);
        let size = bytes.len() as u64;
        self.plan.add_manifest(Manifest {
            digest: digest.clone(),
            media_type: media_type.to_string(),
            bytes,
            path: path.to_string(),
            existing: false,
        });
        Made {
            digest,
            size,
            media_type: media_type.to_string(),
            artifact_type,
        }
    }
}

fn staged_dir<'a>(dir: &'a StagedDir, rel: &str) -> Option<&'a StagedDir> {
    let mut d = dir;
    for c in rel.split('/') {
        d = d.dirs.get(c)?;
    }
    Some(d)
}

mod change;
mod chunks;
mod referrers;
#[cfg(test)]
mod tests;
mod verbatim;
