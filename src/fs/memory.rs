//! An in-memory source with faults, for testing the filesystem core without
//! a registry or a mount: repositories, tags, manifests and blobs held in
//! maps, and a blob transfer that can be corrupted, cut short or stalled,
//! as the fault proxy of the integration tests does to a real registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;

use super::source::{Body, Source, SourceResult};
use crate::digest::Digest;
use crate::registry::{self, Manifest};

/// What blob transfers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// One byte in the middle of every blob answer is flipped.
    Corrupt,
    /// Every blob answer stops after this many bytes (the transfer breaks).
    Truncate(u64),
    /// Every blob answer sends 64 KiB, then nothing, ever.
    Stall,
    /// Every blob answer is sent at this many bytes per second (each
    /// answer on its own: a per-connection cap).
    Slow(u64),
    /// The 100th byte of every blob answer is flipped: the first read of a
    /// stream sees it.
    CorruptStart,
    /// As `Corrupt` until the engine reports wrong bytes
    /// (`Source::wrong_bytes`), then `None`: a corrupting mirror in front
    /// of a sound registry.
    CorruptingMirror,
}

const PIECE: usize = 64 * 1024;

#[derive(Default)]
struct Store {
    tags: BTreeMap<String, BTreeMap<String, Digest>>,
    manifests: HashMap<Digest, (Bytes, String)>,
    blobs: HashMap<Digest, Bytes>,
    /// What the referrers listing of a subject says (like a tag-schema
    /// index, it can list anything).
    referrers: HashMap<Digest, Vec<Digest>>,
}

pub struct Memory {
    store: Mutex<Store>,
    fault: Mutex<Fault>,
    /// Blob requests answered, and blob bytes sent.
    pub blob_gets: AtomicU64,
    /// (Counted as the pieces are taken, as a network would.)
    pub blob_bytes: std::sync::Arc<AtomicU64>,
    /// A `CorruptingMirror` was reported (`Source::wrong_bytes`).
    pub mirror_blamed: std::sync::atomic::AtomicBool,
    /// Keep referrers as a registry without the referrers API does: tag
    /// lists show a `sha256-<hex>` tag for each subject that has some.
    pub tag_schema: std::sync::atomic::AtomicBool,
    /// Referrer listings asked for.
    pub referrer_gets: AtomicU64,
    /// How long a referrer listing takes to answer.
    pub referrers_wait: Mutex<std::time::Duration>,
    /// Manifests asked for (by tag or digest).
    pub manifest_gets: AtomicU64,
    /// Tag lists asked for (of repositories or not).
    pub tag_gets: AtomicU64,
    /// Answer as a registry without a catalog.
    pub no_catalog: std::sync::atomic::AtomicBool,
}

pub const EMPTY_CONFIG: &[u8] = b"{}";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Memory {
    pub fn new() -> Memory {
        Memory {
            store: Mutex::new(Store::default()),
            fault: Mutex::new(Fault::None),
            blob_gets: AtomicU64::new(0),
            blob_bytes: std::sync::Arc::new(AtomicU64::new(0)),
            mirror_blamed: Default::default(),
            tag_schema: Default::default(),
            referrer_gets: AtomicU64::new(0),
            referrers_wait: Default::default(),
            manifest_gets: AtomicU64::new(0),
            tag_gets: AtomicU64::new(0),
            no_catalog: Default::default(),
        }
    }

    pub fn set_fault(&self, f: Fault) {
        *lock(&self.fault) = f;
    }

    pub fn put_blob(&self, data: &[u8]) -> Digest {
        let d = Digest::of(data);
        lock(&self.store)
            .blobs
            .insert(d.clone(), Bytes::copy_from_slice(data));
        d
    }

    /// Pushes an ORAS-style artifact: an empty config and one titled layer
    /// per file. Returns the manifest digest.
    pub fn push(&self, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> Digest {
        let layers: Vec<serde_json::Value> = files
            .iter()
            .map(|(title, data)| self.titled_layer(title, data))
            .collect();
        self.push_layers(repo, tag, layers)
    }

    /// Pushes a file as regfs commits a large one: its titled layer and
    /// a chunk-digest layer with `list` (made with `chunk_list_of` or by
    /// hand, to lie).
    pub fn push_chunked(
        &self,
        repo: &str,
        tag: &str,
        title: &str,
        data: &[u8],
        list: &[u8],
    ) -> Digest {
        let layer = self.titled_layer(title, data);
        let list_digest = self.put_blob(list);
        let list_layer = serde_json::json!({
            "mediaType": crate::oci::CHUNKS_MEDIA_TYPE,
            "digest": list_digest.to_string(),
            "size": list.len(),
            "annotations": {crate::oci::CHUNKS_OF_ANNOTATION: Digest::of(data).to_string()},
        });
        self.push_layers(repo, tag, vec![layer, list_layer])
    }

    /// Pushes a folder as ORAS does: one titled tar+gzip layer with
    /// `io.deis.oras.content.unpack=true`, holding `targz`.
    pub fn push_dir(&self, repo: &str, tag: &str, title: &str, targz: &[u8]) -> Digest {
        let d = self.put_blob(targz);
        let layer = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d.to_string(),
            "size": targz.len(),
            "annotations": {
                "org.opencontainers.image.title": title,
                crate::oci::UNPACK_ANNOTATION: "true",
            },
        });
        self.push_layers(repo, tag, vec![layer])
    }

    fn titled_layer(&self, title: &str, data: &[u8]) -> serde_json::Value {
        self.layer(
            "application/vnd.oci.image.layer.v1.tar",
            data,
            &[("org.opencontainers.image.title", title)],
        )
    }

    /// Stores `data` as a blob; its descriptor, with this media type and
    /// these annotations, for `push_artifact`.
    pub fn layer(
        &self,
        media_type: &str,
        data: &[u8],
        annotations: &[(&str, &str)],
    ) -> serde_json::Value {
        let d = self.put_blob(data);
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": data.len(),
            "annotations": annotations,
        })
    }

    /// Puts manifest `value` (any JSON) by digest, and as `tag` if given.
    pub fn put_manifest(&self, repo: &str, tag: Option<&str>, value: &serde_json::Value) -> Digest {
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        let d = Digest::of(&bytes);
        let media_type = value["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json")
            .to_string();
        let mut st = lock(&self.store);
        st.manifests
            .insert(d.clone(), (Bytes::from(bytes), media_type));
        let tags = st.tags.entry(repo.to_string()).or_default();
        if let Some(t) = tag {
            tags.insert(t.to_string(), d.clone());
        }
        d
    }

    /// An artifact manifest with one titled file, and `subject` if given.
    pub fn artifact(&self, file: &str, subject: Option<&Digest>) -> serde_json::Value {
        let config = self.put_blob(EMPTY_CONFIG);
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.sig",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": config.to_string(),
                "size": 2,
            },
            "layers": [self.titled_layer(file, file.as_bytes())],
        });
        if let Some(s) = subject {
            let size = lock(&self.store)
                .manifests
                .get(s)
                .map_or(0, |(b, _)| b.len());
            m["subject"] = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": s.to_string(),
                "size": size,
            });
        }
        m
    }

    /// Sets what the referrers listing of `subject` says.
    pub fn set_referrers(&self, subject: &Digest, listed: &[Digest]) {
        lock(&self.store)
            .referrers
            .insert(subject.clone(), listed.to_vec());
    }

    fn push_layers(&self, repo: &str, tag: &str, layers: Vec<serde_json::Value>) -> Digest {
        self.push_artifact(
            repo,
            tag,
            "application/vnd.unknown.artifact.v1",
            ("application/vnd.oci.empty.v1+json", EMPTY_CONFIG),
            layers,
        )
    }

    /// Pushes a manifest of `layers` (made with `layer`) with this
    /// artifactType and config (media type, bytes). Returns its digest.
    pub fn push_artifact(
        &self,
        repo: &str,
        tag: &str,
        artifact_type: &str,
        config: (&str, &[u8]),
        layers: Vec<serde_json::Value>,
    ) -> Digest {
        let config_digest = self.put_blob(config.1);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": {
                "mediaType": config.0,
                "digest": config_digest.to_string(),
                "size": config.1.len(),
            },
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
        let d = Digest::of(&bytes);
        let mut st = lock(&self.store);
        st.manifests.insert(
            d.clone(),
            (
                Bytes::from(bytes),
                "application/vnd.oci.image.manifest.v1+json".into(),
            ),
        );
        st.tags
            .entry(repo.to_string())
            .or_default()
            .insert(tag.to_string(), d.clone());
        d
    }

    fn not_found(what: String) -> registry::Error {
        registry::Error::NotFound { what }
    }

    fn body(&self, data: Bytes, start: u64) -> Body {
        let fault = *lock(&self.fault);
        self.blob_gets.fetch_add(1, Ordering::Relaxed);
        let mut data = data.to_vec();
        if matches!(fault, Fault::Corrupt | Fault::CorruptingMirror) && !data.is_empty() {
            let mid = data.len() / 2;
            data[mid] ^= 0xff;
        }
        if fault == Fault::CorruptStart && !data.is_empty() {
            let at = 100.min(data.len() - 1);
            data[at] ^= 0xff;
        }
        let limit = match fault {
            Fault::Truncate(n) => (n as usize).min(data.len()),
            Fault::Stall => PIECE.min(data.len()),
            _ => data.len(),
        };
        let cut = limit < data.len();
        let pieces: Vec<SourceResult<Bytes>> = data[..limit]
            .chunks(PIECE)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let sent = self.blob_bytes.clone();
        let head = futures_util::stream::iter(pieces).inspect(move |p| {
            if let Ok(b) = p {
                sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
        });
        let stream = match (fault, cut) {
            (Fault::Slow(bps), _) => {
                let pause = Duration::from_secs_f64(PIECE as f64 / bps.max(1) as f64);
                head.then(move |piece| async move {
                    tokio::time::sleep(pause).await;
                    piece
                })
                .boxed()
            }
            (Fault::Stall, true) => head.chain(futures_util::stream::pending()).boxed(),
            (_, true) => head
                .chain(futures_util::stream::once(async {
                    Err(registry::Error::Unreachable {
                        host: "memory".into(),
                        reason: "blob transfer broke".into(),
                    })
                }))
                .boxed(),
            _ => head.boxed(),
        };
        Body::new(start, stream)
    }
}

/// The chunk-digest list of `data`, as regfs commits it.
pub fn chunk_list_of(data: &[u8]) -> Vec<u8> {
    let chunks = data
        .chunks(crate::oci::CHUNK_SIZE as usize)
        .map(Digest::of)
        .collect();
    crate::oci::ChunkList::new(Digest::of(data), data.len() as u64, chunks).to_bytes()
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Source for Memory {
    fn host(&self) -> &str {
        "memory"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn catalog(&self) -> BoxFuture<'_, SourceResult<Option<Vec<String>>>> {
        let names = lock(&self.store).tags.keys().cloned().collect();
        let none = self.no_catalog.load(Ordering::Relaxed);
        Box::pin(async move { Ok((!none).then_some(names)) })
    }

    fn tags<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, SourceResult<Vec<String>>> {
        self.tag_gets.fetch_add(1, Ordering::Relaxed);
        let st = lock(&self.store);
        let r = st
            .tags
            .get(repo)
            .map(|t| {
                let mut names: Vec<String> = t.keys().cloned().collect();
                if self.tag_schema.load(Ordering::Relaxed) {
                    names.extend(
                        st.referrers
                            .iter()
                            .filter(|(_, l)| !l.is_empty())
                            .map(|(s, _)| format!("sha256-{}", s.hex())),
                    );
                }
                names
            })
            .ok_or_else(|| Self::not_found(format!("repository {repo}")));
        Box::pin(async move { r })
    }

    fn manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Manifest>> {
        self.manifest_gets.fetch_add(1, Ordering::Relaxed);
        let st = lock(&self.store);
        let d = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => st.tags.get(repo).and_then(|t| t.get(reference)).cloned(),
        };
        let r = d
            .and_then(|d| {
                st.manifests.get(&d).map(|(b, t)| Manifest {
                    bytes: b.clone(),
                    digest: d.clone(),
                    media_type: Some(t.clone()),
                })
            })
            .ok_or_else(|| Self::not_found(format!("manifest {repo}:{reference}")));
        Box::pin(async move { r })
    }

    fn head_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Digest>>> {
        Box::pin(async move { Ok(Some(self.manifest(repo, reference).await?.digest)) })
    }

    fn blob<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, SourceResult<Body>> {
        let data = lock(&self.store).blobs.get(digest).cloned();
        Box::pin(async move {
            let data = data.ok_or_else(|| Self::not_found(format!("blob {digest} in {repo}")))?;
            let len = data.len() as u64;
            let (a, b) = (start.min(len), end.unwrap_or(len).min(len));
            Ok(self.body(data.slice(a as usize..b.max(a) as usize), a))
        })
    }

    fn referrers<'a>(
        &'a self,
        _repo: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, SourceResult<Vec<Digest>>> {
        self.referrer_gets.fetch_add(1, Ordering::Relaxed);
        let listed = lock(&self.store)
            .referrers
            .get(subject)
            .cloned()
            .unwrap_or_default();
        let wait = *lock(&self.referrers_wait);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Ok(listed)
        })
    }

    fn referrers_by_tag(&self) -> bool {
        self.tag_schema.load(Ordering::Relaxed)
    }

    fn wrong_bytes(&self, _digest: &Digest) -> bool {
        // As `registry::Mirrored`: once a mirror sent wrong bytes, every
        // report says the registry itself has the right ones.
        let mut f = lock(&self.fault);
        if *f == Fault::CorruptingMirror {
            *f = Fault::None;
            self.mirror_blamed.store(true, Ordering::Relaxed);
        }
        self.mirror_blamed.load(Ordering::Relaxed)
    }
}
