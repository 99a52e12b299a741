//! The two kinds of registry the referrers tests run against: one without
//! the referrers API, where ORAS and regfs keep the `sha256-<hex>` tag
//! schema, and one with it, where neither writes such a tag.
//!
//! - [`RegistryKind::TagSchema`]: docker-registry 2.8 (`registry.rs`).
//! - [`RegistryKind::ReferrersApi`]: go-containerregistry's registry
//!   (`ggcr.rs`), the version crane is built from.

use super::ggcr::GgcrRegistry;
use super::http::{http_request, HttpResponse};
use super::registry::Registry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// docker-registry 2.8: no referrers API.
    TagSchema,
    /// go-containerregistry's registry with `WithReferrersSupport(true)`.
    ReferrersApi,
}

impl RegistryKind {
    pub fn has_referrers_api(self) -> bool {
        self == RegistryKind::ReferrersApi
    }

    pub fn other(self) -> RegistryKind {
        match self {
            RegistryKind::TagSchema => RegistryKind::ReferrersApi,
            RegistryKind::ReferrersApi => RegistryKind::TagSchema,
        }
    }

    /// The `artifactType` a referrers listing of this registry gives a
    /// referrer of type `artifact_type` whose config is the empty
    /// descriptor (what `oras attach` and regfs push). A tag-schema index
    /// carries the manifest's `artifactType` (its writer, ORAS or regfs,
    /// put it there). go-containerregistry's registry v0.22.1 computes the
    /// listing itself and gives the config's media type instead
    /// (`handleReferrers` in its pkg/registry/manifest.go), so `oras
    /// discover` shows `application/vnd.oci.empty.v1+json` there.
    pub fn listed_artifact_type(self, artifact_type: &str) -> String {
        match self {
            RegistryKind::TagSchema => artifact_type.to_string(),
            RegistryKind::ReferrersApi => super::fixtures::MT_OCI_EMPTY.to_string(),
        }
    }
}

/// A running registry of either kind.
pub enum AnyRegistry {
    Distribution(Registry),
    Ggcr(GgcrRegistry),
}

impl AnyRegistry {
    pub fn start(kind: RegistryKind) -> AnyRegistry {
        match kind {
            RegistryKind::TagSchema => AnyRegistry::Distribution(Registry::start()),
            RegistryKind::ReferrersApi => AnyRegistry::Ggcr(GgcrRegistry::start()),
        }
    }

    pub fn kind(&self) -> RegistryKind {
        match self {
            AnyRegistry::Distribution(_) => RegistryKind::TagSchema,
            AnyRegistry::Ggcr(_) => RegistryKind::ReferrersApi,
        }
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        match self {
            AnyRegistry::Distribution(r) => r.host(),
            AnyRegistry::Ggcr(r) => r.host(),
        }
    }

    /// Every tag of `repo` as tags/list gives them, `sha256-<hex>` ones
    /// included, sorted (empty when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        match self {
            AnyRegistry::Distribution(r) => r.tags(repo),
            AnyRegistry::Ggcr(r) => {
                let resp = r.request("GET", &format!("/v2/{repo}/tags/list"));
                if resp.status == 404 {
                    return Vec::new();
                }
                assert_eq!(resp.status, 200, "tags/list {repo}: {}", resp.text());
                let mut v: Vec<String> = resp.json()["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect();
                v.sort();
                v
            }
        }
    }

    /// The registry's log so far (for docker-registry, errors only; for
    /// go-containerregistry's, every request: `GET /v2/...`).
    pub fn log(&self) -> String {
        match self {
            AnyRegistry::Distribution(r) => r.log(),
            AnyRegistry::Ggcr(r) => r.log(),
        }
    }

    /// An anonymous request to the registry.
    pub fn request(&self, method: &str, path: &str) -> HttpResponse {
        http_request(&self.host(), method, path, &[], &[])
            .unwrap_or_else(|e| panic!("{method} http://{}{path}: {e}", self.host()))
    }
}
