//! Pushing: blob existence, cross-repository mount, monolithic uploads and
//! manifest puts, for a registry; blob files and an atomic `index.json`
//! update, for a layout.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::layout::Layout;
use super::{check, link, Backend, Client, Error};
use crate::digest::Digest;
use crate::oci::REF_NAME_ANNOTATION;

/// How a blob is sent: its bytes in memory, or a file streamed from disk.
#[derive(Debug, Clone)]
pub enum Payload<'a> {
    Bytes(Bytes),
    File(&'a Path),
}

/// Whether a manifest put left referrers upkeep to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The registry said it indexed the subject (`OCI-Subject` header).
    /// Without it a client keeps the tag schema: distribution-spec v1.1.1
    /// requires the header of every registry with the referrers API, and
    /// ORAS reads its absence the same way. Always true for a layout.
    pub subject_indexed: bool,
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

impl Client {
    pub async fn blob_exists(&self, repo: &str, d: &Digest) -> Result<bool, Error> {
        let url = format!("{}/v2/{repo}/blobs/{d}", self.base().await?);
        let resp = self
            .send(
                Method::HEAD,
                &url,
                &push_scope(repo),
                HeaderMap::new(),
                true,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => check(resp, &url).map(|_| false),
        }
    }

    /// Asks the registry to mount `d` from `from` into `repo`. False when it
    /// would not (the blob then has to be uploaded).
    pub async fn mount_blob(&self, repo: &str, d: &Digest, from: &str) -> Result<bool, Error> {
        let url = format!(
            "{}/v2/{repo}/blobs/uploads/?mount={d}&from={from}",
            self.base().await?
        );
        let resp = self
            .send(
                Method::POST,
                &url,
                &push_scope(repo),
                HeaderMap::new(),
                true,
            )
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Uploads a blob in one request (POST for a session, then PUT with the digest).
    pub async fn upload_blob(
        &self,
        repo: &str,
        d: &Digest,
        size: u64,
        payload: &Payload<'_>,
        sent: &Arc<AtomicU64>,
    ) -> Result<(), Error> {
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base().await?);
        let resp = self
            .send(
                Method::POST,
                &start,
                &push_scope(repo),
                HeaderMap::new(),
                true,
            )
            .await?;
        let resp = check(resp, &start)?;
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol {
                url: start.clone(),
                reason: "upload session without Location".into(),
            })?;
        let location = link::absolute(self.base().await?, location);
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={d}");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/octet-stream"),
        );
        if let Ok(v) = size.to_string().parse() {
            headers.insert(CONTENT_LENGTH, v);
        }
        let body = || -> Result<reqwest::Body, Error> {
            // A retried request starts the count again.
            sent.store(0, Ordering::Relaxed);
            Ok(match payload {
                Payload::Bytes(b) => {
                    sent.store(b.len() as u64, Ordering::Relaxed);
                    reqwest::Body::from(b.clone())
                }
                Payload::File(p) => file_body(p, sent.clone())?,
            })
        };
        let resp = self
            .send_with_body(Method::PUT, &url, &push_scope(repo), headers, &body)
            .await?;
        check(resp, &url)?;
        Ok(())
    }

    /// Puts a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Pushed, Error> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base().await?);
        let mut headers = HeaderMap::new();
        if let Ok(v) = media_type.parse() {
            headers.insert(CONTENT_TYPE, v);
        }
        let bytes = Bytes::copy_from_slice(bytes);
        let body = || Ok(reqwest::Body::from(bytes.clone()));
        let resp = self
            .send_with_body(Method::PUT, &url, &push_scope(repo), headers, &body)
            .await?;
        let subject_indexed = resp.headers().contains_key("oci-subject");
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::Protocol {
                url,
                reason: format!(
                    "registry refused the manifest (HTTP {status}): {}",
                    text.trim()
                ),
            });
        }
        Ok(Pushed { subject_indexed })
    }

    pub async fn manifest_exists(&self, repo: &str, d: &Digest) -> Result<bool, Error> {
        match self.head_manifest(repo, &d.to_string()).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Streams a file as a request body, counting bytes sent into `sent`.
fn file_body(p: &Path, sent: Arc<AtomicU64>) -> Result<reqwest::Body, Error> {
    use futures_util::StreamExt;
    let f = std::fs::File::open(p).map_err(|source| Error::Io {
        what: p.display().to_string(),
        source,
    })?;
    let stream = futures_util::stream::unfold(tokio::fs::File::from_std(f), |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
    .map(move |r| {
        if let Ok(b) = &r {
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

impl Layout {
    fn write_blob_file(&self, d: &Digest, payload: &Payload<'_>) -> Result<(), Error> {
        let dest = self.root().join("blobs/sha256").join(d.hex());
        if dest.exists() {
            return Ok(());
        }
        let dir = self.root().join("blobs/sha256");
        let io = |source| Error::Io {
            what: dest.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io)?;
        match payload {
            Payload::Bytes(b) => std::io::Write::write_all(&mut tmp, b).map_err(io)?,
            Payload::File(p) => {
                let mut f = std::fs::File::open(p).map_err(io)?;
                std::io::copy(&mut f, &mut tmp).map_err(io)?;
            }
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&dest).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Points `tag` at a manifest: rewrites `index.json` through a rename.
    fn set_tag(&self, tag: &str, d: &Digest, media_type: &str, size: u64) -> Result<(), Error> {
        let entry = serde_json::json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": size,
            "annotations": { REF_NAME_ANNOTATION: tag },
        });
        self.edit_index(|list| {
            list.retain(|m| {
                m.get("annotations")
                    .and_then(|a| a.get(REF_NAME_ANNOTATION))
                    .and_then(|v| v.as_str())
                    != Some(tag)
            });
            list.push(entry);
        })
    }

    /// Lists a manifest pushed by digest in `index.json`, untagged, unless
    /// it is there already: how a layout knows its referrers (`oras attach
    /// --oci-layout` writes the same entry: the manifest's annotations and
    /// artifactType).
    fn add_untagged(&self, d: &Digest, media_type: &str, bytes: &[u8]) -> Result<(), Error> {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let mut entry = serde_json::json!({
            "mediaType": media_type,
            "digest": d.to_string(),
            "size": bytes.len(),
        });
        if let Some(a) = v.get("annotations") {
            entry["annotations"] = a.clone();
        }
        if let Some(t) = v.get("artifactType") {
            entry["artifactType"] = t.clone();
        }
        let digest = d.to_string();
        self.edit_index(|list| {
            if !list
                .iter()
                .any(|m| m.get("digest").and_then(|v| v.as_str()) == Some(digest.as_str()))
            {
                list.push(entry);
            }
        })
    }

    /// Changes the `manifests` list of `index.json`, replacing the file
    /// through a rename.
    fn edit_index(&self, edit: impl FnOnce(&mut Vec<serde_json::Value>)) -> Result<(), Error> {
        let path = self.root().join("index.json");
        let io = |source| Error::Io {
            what: path.display().to_string(),
            source,
        };
        let bytes = std::fs::read(&path).map_err(io)?;
        let mut idx: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                url: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let list = idx
            .as_object_mut()
            .and_then(|o| {
                o.entry("manifests")
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                    .as_array_mut()
            })
            .ok_or_else(|| Error::Protocol {
                url: path.display().to_string(),
                reason: "index.json has no manifests list".into(),
            })?;
        edit(list);
        let out = serde_json::to_vec(&idx).map_err(|e| Error::Protocol {
            url: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.root()).map_err(io)?;
        std::io::Write::write_all(&mut tmp, &out).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

impl Backend {
    pub async fn blob_exists(&self, repo: &str, d: &Digest) -> Result<bool, Error> {
        match self {
            Backend::Registry(c) => c.blob_exists(repo, d).await,
            Backend::Layout(l) => Ok(l.root().join("blobs/sha256").join(d.hex()).exists()),
        }
    }

    pub async fn mount_blob(&self, repo: &str, d: &Digest, from: &str) -> Result<bool, Error> {
        match self {
            Backend::Registry(c) => c.mount_blob(repo, d, from).await,
            Backend::Layout(_) => Ok(false),
        }
    }

    pub async fn upload_blob(
        &self,
        repo: &str,
        d: &Digest,
        size: u64,
        payload: &Payload<'_>,
        sent: &Arc<AtomicU64>,
    ) -> Result<(), Error> {
        match self {
            Backend::Registry(c) => c.upload_blob(repo, d, size, payload, sent).await,
            Backend::Layout(l) => {
                l.write_blob_file(d, payload)?;
                sent.store(size, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    pub async fn manifest_exists(&self, repo: &str, d: &Digest) -> Result<bool, Error> {
        match self {
            Backend::Registry(c) => c.manifest_exists(repo, d).await,
            Backend::Layout(l) => Ok(l.root().join("blobs/sha256").join(d.hex()).exists()),
        }
    }

    /// Puts a manifest by digest or by tag.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Pushed, Error> {
        match self {
            Backend::Registry(c) => c.put_manifest(repo, reference, media_type, bytes).await,
            Backend::Layout(l) => {
                let d = Digest::of(bytes);
                l.write_blob_file(&d, &Payload::Bytes(Bytes::copy_from_slice(bytes)))?;
                if reference.parse::<Digest>().is_err() {
                    l.set_tag(reference, &d, media_type, bytes.len() as u64)?;
                } else if super::subject_of(bytes).is_some() {
                    l.add_untagged(&d, media_type, bytes)?;
                }
                Ok(Pushed {
                    subject_indexed: true,
                })
            }
        }
    }
}
