//! Referrers: the manifests whose `subject` is a given manifest.
//!
//! A registry lists them itself through the referrers API (`GET
//! /v2/<name>/referrers/<digest>`, an image index), or it does not, and the
//! pushers keep the list in the `sha256-<hex>` tag schema: an index tagged
//! with the subject's digest. Which kind a registry is, is learnt from its
//! first answer and remembered for the client's life, as ORAS does: a 200
//! with an image index is the API; a 404 (distribution 2.8 has no such
//! route), a 405, or a 200 that is no index mean there is none. A 404 that
//! names the repository as unknown (`NAME_UNKNOWN`, as go-containerregistry's
//! registry answers) says nothing either way: that repository has no
//! referrers, and the next question decides.
//!
//! Writing is decided per put, not here: a registry that indexed a
//! manifest's subject says so with `OCI-Subject` (`push.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::{check, header_str, pull_scope, read_limited, Client, Error, MAX_MANIFEST_BYTES};
use crate::digest::Digest;
use crate::oci::INDEX_MEDIA_TYPE;

/// Whether the registry was found to have no referrers API.
#[derive(Debug, Default)]
pub(super) struct ApiState(AtomicBool);

impl ApiState {
    fn absent(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set_absent(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Client {
    /// Whether this registry was found to keep referrers only in the tag
    /// schema (no referrers API): a subject without a `sha256-<hex>` tag
    /// then has none.
    pub fn referrers_by_tag(&self) -> bool {
        self.referrers_api.absent()
    }

    /// Referrers of `subject`: the referrers API, else the tag schema.
    pub async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<Digest>, Error> {
        if let Some(list) = self.referrers_by_api(repo, subject).await? {
            return Ok(list);
        }
        let tag = format!("sha256-{}", subject.hex());
        match self.manifest(repo, &tag).await {
            Ok(m) => Ok(index_digests(&m.bytes)),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The referrers API's list, or `None` where the registry has no API.
    async fn referrers_by_api(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<Digest>>, Error> {
        if self.referrers_api.absent() {
            return Ok(None);
        }
        let url = format!("{}/v2/{repo}/referrers/{subject}", self.base().await?);
        let mut headers = HeaderMap::new();
        if let Ok(v) = INDEX_MEDIA_TYPE.parse() {
            headers.insert(ACCEPT, v);
        }
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), headers, true)
            .await?;
        let status = resp.status();
        let is_index = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .is_some_and(|t| t.starts_with(INDEX_MEDIA_TYPE));
        if status.is_success() && is_index {
            let body = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
            return Ok(Some(index_digests(&body)));
        }
        if status == StatusCode::NOT_FOUND {
            let body = read_limited(resp, MAX_MANIFEST_BYTES, &url)
                .await
                .unwrap_or_default();
            if names_unknown_repository(&body) {
                return Ok(Some(Vec::new()));
            }
        } else if !(status == StatusCode::METHOD_NOT_ALLOWED || status.is_success()) {
            check(resp, &url)?;
            return Ok(None);
        }
        tracing::debug!(host = %self.config.host, "no referrers API; using the sha256-<hex> tag schema");
        self.referrers_api.set_absent();
        Ok(None)
    }
}

/// The `subject` digest of manifest bytes, if any.
pub fn subject_of(bytes: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("subject")?.get("digest")?.as_str()?.parse().ok()
}

/// The manifest digests listed by an index JSON (a referrers answer or a
/// tag-schema index).
fn index_digests(bytes: &[u8]) -> Vec<Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    v.get("manifests")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.get("digest")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an error body is the distribution-spec error `NAME_UNKNOWN`
/// (`{"errors":[{"code":"NAME_UNKNOWN",...}]}`).
fn names_unknown_repository(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    v.get("errors").and_then(|e| e.as_array()).is_some_and(|a| {
        a.iter()
            .any(|e| e.get("code") == Some(&"NAME_UNKNOWN".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_repository_is_told_from_a_missing_route() {
        // go-containerregistry's registry, for a repository it does not have
        assert!(names_unknown_repository(
            br#"{"errors":[{"code":"NAME_UNKNOWN","message":"Unknown name"}]}"#
        ));
        // distribution 2.8, which has no referrers route
        assert!(!names_unknown_repository(b"404 page not found\n"));
        assert!(!names_unknown_repository(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
        ));
        assert!(!names_unknown_repository(b""));
    }

    #[test]
    fn index_digests_reads_the_manifests_list() {
        let a = format!("sha256:{}", "a".repeat(64));
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{a}"}},{{"digest":"md5:x"}}]}}"#
        );
        assert_eq!(index_digests(body.as_bytes()), [a.parse().unwrap()]);
        assert!(index_digests(b"not json").is_empty());
    }
}
