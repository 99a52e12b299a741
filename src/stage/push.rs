//! Carrying out a plan: what must already be there is checked first, then
//! blobs (HEAD, cross-repository mount, upload), child manifests by digest,
//! referrers by digest, and the tags last, so a failure at any step moves
//! no tag and the next commit resumes, skipping what is already there. A
//! tag that already points at the plan's top manifest is left alone; when
//! every tag does and there is no referrer to push, nothing is pushed at
//! all (`Outcome::unchanged`).
//!
//! A registry without the referrers API learns of a referrer through the
//! `sha256-<hex>` tag-schema index of its subject, read, added to and put
//! as ORAS does; an OCI layout, through an untagged entry of `index.json`.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;

use super::plan::{Base, Blob, Manifest, Plan, PlanError, Resolver, Source};
use super::scan::{StagedDir, StagedFile};
use super::tarball::{self, Tarball};
use crate::cache::Cache;
use crate::digest::Digest;
use crate::oci::INDEX_MEDIA_TYPE;
use crate::registry::push::Payload;
use crate::registry::{self, subject_of, Backend};

/// What happened, for the caller to show.
#[derive(Debug)]
pub enum Event<'a> {
    Exists(&'a Blob),
    Mounted(&'a Blob, &'a str),
    Uploading(&'a Blob, Arc<AtomicU64>),
    Uploaded(&'a Blob),
    ManifestExists(&'a Manifest),
    ManifestPushed(&'a Manifest),
    /// A referrer is in the registry and listed for its subject (the
    /// digest), pushed now or before.
    Attached(&'a Manifest, &'a Digest),
    Tagged(&'a str, &'a Digest),
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The top manifest, which the tags point at.
    pub digest: Digest,
    /// Every tag already pointed at it: no tag moved, and nothing was
    /// pushed but the plan's referrers.
    pub unchanged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{what} is neither staged nor in {repo}: stage it, or push it first")]
    Missing { what: String, repo: String },
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error("the plan has no manifest")]
    Empty,
}

/// Pushes `plan` into `repo` and points `tags` at its top manifest.
/// `mount_from` names repositories of the same registry that may hold
/// blobs (tried with cross-repository mount before uploading).
pub async fn push(
    backend: &Backend,
    repo: &str,
    plan: &Plan,
    tags: &[String],
    mount_from: &[String],
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Outcome, PushError> {
    let top = plan.top().ok_or(PushError::Empty)?;
    // 0. Tags already at the top manifest stay as they are. When all are,
    // the registry holds the manifest and everything it names: done.
    let mut to_move = Vec::new();
    for t in tags {
        if points_at(backend, repo, t).await?.as_ref() != Some(&top.digest) {
            to_move.push(t);
        }
    }
    if to_move.is_empty() && plan.referrers.is_empty() {
        return Ok(Outcome {
            digest: top.digest.clone(),
            unchanged: true,
        });
    }
    // 1. What the plan does not carry must be there already.
    for b in plan.blobs.iter().filter(|b| b.source == Source::Registry) {
        if !backend.blob_exists(repo, &b.digest).await?
            && !try_mount(backend, repo, b, mount_from, on).await?
        {
            return Err(PushError::Missing {
                what: format!("blob {} ({})", b.digest, b.name),
                repo: repo.to_string(),
            });
        }
    }
    let all = || plan.manifests.iter().chain(&plan.referrers);
    for m in all().filter(|m| m.existing) {
        if !backend.manifest_exists(repo, &m.digest).await? {
            return Err(PushError::Missing {
                what: format!("manifest {} ({})", m.digest, m.path),
                repo: repo.to_string(),
            });
        }
        on(Event::ManifestExists(m));
    }
    // 2. Blobs.
    for b in plan.blobs.iter().filter(|b| b.source != Source::Registry) {
        if backend.blob_exists(repo, &b.digest).await? {
            on(Event::Exists(b));
            continue;
        }
        if try_mount(backend, repo, b, mount_from, on).await? {
            continue;
        }
        let payload = match &b.source {
            Source::File(p) => Payload::File(p),
            Source::Bytes(v) => Payload::Bytes(Bytes::copy_from_slice(v)),
            Source::Registry => continue,
        };
        let sent = Arc::new(AtomicU64::new(0));
        on(Event::Uploading(b, sent.clone()));
        backend
            .upload_blob(repo, &b.digest, b.size, &payload, &sent)
            .await?;
        on(Event::Uploaded(b));
    }
    // 3. Manifests by digest, children first.
    for m in plan.manifests.iter().filter(|m| !m.existing) {
        if backend.manifest_exists(repo, &m.digest).await? {
            on(Event::ManifestExists(m));
        } else {
            let pushed = backend
                .put_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes)
                .await?;
            on(Event::ManifestPushed(m));
            if let (false, Some(subject)) = (pushed.subject_indexed, subject_of(&m.bytes)) {
                update_referrers_tag(backend, repo, m, &subject).await?;
            }
        }
    }
    // 4. Referrers, by digest; each listed for its subject.
    for m in plan.referrers.iter().filter(|m| !m.existing) {
        let Some(subject) = subject_of(&m.bytes) else {
            continue;
        };
        // Pushed and listed before: done. Pushed but not listed (a commit
        // that died in between): the put is repeated, which lists it.
        let listed = backend.manifest_exists(repo, &m.digest).await?
            && backend.referrers(repo, &subject).await?.contains(&m.digest);
        if listed {
            on(Event::ManifestExists(m));
        } else {
            let pushed = backend
                .put_manifest(repo, &m.digest.to_string(), &m.media_type, &m.bytes)
                .await?;
            on(Event::ManifestPushed(m));
            if !pushed.subject_indexed {
                update_referrers_tag(backend, repo, m, &subject).await?;
            }
        }
        on(Event::Attached(m, &subject));
    }
    // 5. Tags, last.
    let unchanged = to_move.is_empty();
    for t in to_move {
        backend
            .put_manifest(repo, t, &top.media_type, &top.bytes)
            .await?;
        on(Event::Tagged(t, &top.digest));
    }
    Ok(Outcome {
        digest: top.digest.clone(),
        unchanged,
    })
}

/// What `tag` points at now; `None` when there is no such tag.
async fn points_at(backend: &Backend, repo: &str, tag: &str) -> Result<Option<Digest>, PushError> {
    match backend.head_manifest(repo, tag).await {
        Ok(d) => Ok(d),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn try_mount(
    backend: &Backend,
    repo: &str,
    b: &Blob,
    from: &[String],
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<bool, PushError> {
    for other in from.iter().filter(|o| o.as_str() != repo) {
        if backend.mount_blob(repo, &b.digest, other).await? {
            on(Event::Mounted(b, other));
            return Ok(true);
        }
    }
    Ok(false)
}

/// A registry without the referrers API learns of a manifest's subject
/// through the `sha256-<hex>` tag schema: add the manifest to that index
/// (read, add, put, as ORAS does; the entry's keys in ORAS's order).
async fn update_referrers_tag(
    backend: &Backend,
    repo: &str,
    m: &Manifest,
    subject: &Digest,
) -> Result<(), PushError> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.bytes) else {
        return Ok(());
    };
    let tag = format!("sha256-{}", subject.hex());
    let empty =
        || serde_json::json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []});
    let mut index = match backend.manifest(repo, &tag).await {
        Ok(existing) => {
            serde_json::from_slice::<serde_json::Value>(&existing.bytes).unwrap_or_else(|_| empty())
        }
        Err(e) if e.is_not_found() => empty(),
        Err(e) => return Err(e.into()),
    };
    let mut desc = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest.to_string(),
        "size": m.bytes.len(),
    });
    if let Some(a) = v.get("annotations") {
        desc["annotations"] = a.clone();
    }
    let artifact_type = v
        .get("artifactType")
        .or_else(|| v.get("config").and_then(|c| c.get("mediaType")))
        .cloned();
    if let Some(t) = artifact_type {
        desc["artifactType"] = t;
    }
    let Some(list) = index.get_mut("manifests").and_then(|l| l.as_array_mut()) else {
        return Ok(());
    };
    let d = m.digest.to_string();
    if list
        .iter()
        .any(|x| x.get("digest").and_then(|v| v.as_str()) == Some(d.as_str()))
    {
        return Ok(());
    }
    list.push(desc);
    let bytes = serde_json::to_vec(&index).unwrap_or_default();
    backend
        .put_manifest(repo, &tag, INDEX_MEDIA_TYPE, &bytes)
        .await?;
    Ok(())
}

/// The resolver of a real commit: tarballs into a temporary folder, base
/// manifests from the cache or the registry. Runs on a blocking thread.
pub struct IoResolver {
    pub backend: Arc<Backend>,
    pub repo: String,
    pub cache: Option<Arc<Cache>>,
    pub tmp: PathBuf,
    pub rt: tokio::runtime::Handle,
}

impl Resolver for IoResolver {
    fn tarball(&mut self, dir: &StagedDir, name: &str) -> Result<Tarball, PlanError> {
        tarball::build(dir, name, &self.tmp).map_err(|e| {
            PlanError::Resolve(format!(
                "cannot build the layer for {}: {e}",
                dir.path.display()
            ))
        })
    }

    fn manifest(&mut self, d: &Digest) -> Result<Base, PlanError> {
        if let Some((bytes, media_type)) = self.cache.as_ref().and_then(|c| c.manifest(d)) {
            return Ok(Base {
                digest: d.clone(),
                bytes,
                media_type,
            });
        }
        let m = self
            .rt
            .block_on(self.backend.manifest(&self.repo, &d.to_string()))
            .map_err(|e| PlanError::Resolve(e.to_string()))?;
        Ok(Base {
            digest: d.clone(),
            bytes: m.bytes.to_vec(),
            media_type: m.media_type,
        })
    }

    fn read(&mut self, f: &StagedFile) -> Result<Vec<u8>, PlanError> {
        let bytes = std::fs::read(&f.path)
            .map_err(|e| PlanError::Resolve(format!("{}: {e}", f.path.display())))?;
        if Digest::of(&bytes) != f.digest {
            return Err(PlanError::Resolve(format!(
                "{} changed while committing",
                f.path.display()
            )));
        }
        Ok(bytes)
    }
}
