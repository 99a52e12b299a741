//! The distribution protocol over reqwest: catalog and tag listings (all
//! pages), manifests (verified against their digest), blob streams with
//! Range, and referrers (`referrers.rs`). Every request has a timeout; idempotent ones are retried with
//! backoff on connection errors, 429 and 5xx; 401 challenges are answered
//! through `auth`. Whether HTTPS or plain HTTP is spoken is `transport`'s;
//! reading through mirrors and pull-through caches is `mirrors`'.

mod access;
mod error;
pub mod layout;
pub mod link;
pub mod mirrors;
pub mod push;
mod referrers;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

pub use error::Error;
pub use mirrors::Mirrored;
pub use referrers::subject_of;
pub use transport::{is_loopback, SchemeFlags, Transport};

use crate::auth::{parse_challenge, Auth};
use crate::digest::Digest;
use crate::oci::MANIFEST_MEDIA_TYPES;
use crate::reference::LAYOUT_REPOSITORY;
use transport::TlsFailure;

/// Manifests larger than this are refused: registries need only accept 4 MiB,
/// and a larger "manifest" is hostile.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
const PAGE_SIZE: usize = 1000;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    /// HTTPS, plain HTTP, or HTTPS then plain HTTP (`transport::choose`).
    pub transport: Transport,
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// Limit for one metadata request, and for a blob stream to go silent.
    pub timeout: Duration,
    /// Attempts after the first for idempotent requests.
    pub retries: u32,
}

impl Config {
    /// For `host` with no flags: HTTPS, tried first on loopback (see `transport`).
    pub fn new(host: &str) -> Config {
        Config {
            host: host.to_string(),
            transport: transport::choose(is_loopback(host), SchemeFlags::default())
                .unwrap_or(Transport::Https),
            insecure: false,
            ca_file: None,
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }

    /// For `host` with these flags: `--plain-http[=BOOL]`, `--https`,
    /// `--insecure`, `--ca-file`.
    pub fn with_flags(
        host: &str,
        plain_http: Option<bool>,
        https: bool,
        insecure: bool,
        ca_file: Option<PathBuf>,
    ) -> Result<Config, Error> {
        let flags = SchemeFlags {
            plain_http,
            https,
            tls_options: insecure || ca_file.is_some(),
        };
        let transport = transport::choose(is_loopback(host), flags).map_err(Error::Config)?;
        Ok(Config {
            transport,
            insecure,
            ca_file,
            ..Config::new(host)
        })
    }
}

/// A manifest as fetched: its exact bytes, verified digest and media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: Option<String>,
}

/// A registry client for one host.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    /// `scheme://host`, settled at the first request that needs it when
    /// the transport is `HttpsThenHttp` (see `base`).
    base: tokio::sync::OnceCell<String>,
    config: Config,
    auth: Auth,
    /// What this registry said of the referrers API (`referrers.rs`).
    referrers_api: referrers::ApiState,
}

impl Client {
    pub fn new(config: Config) -> Result<Client, Error> {
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("regfs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(Duration::from_secs(15)))
            .read_timeout(config.timeout)
            .pool_max_idle_per_host(16)
            .redirect(reqwest::redirect::Policy::limited(10));
        if config.insecure {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::Config(format!("cannot read --ca-file {}: {e}", ca.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Config(format!("--ca-file {}: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("cannot set up HTTP client: {e}")))?;
        let base = match config.transport {
            Transport::Https => Some(format!("https://{}", config.host)),
            Transport::Http => Some(format!("http://{}", config.host)),
            Transport::HttpsThenHttp => None,
        };
        Ok(Client {
            base: tokio::sync::OnceCell::new_with(base),
            auth: Auth::new(&config.host),
            referrers_api: referrers::ApiState::default(),
            http,
            config,
        })
    }

    pub fn host(&self) -> &str {
        &self.config.host
    }

    /// All repository names (every page), or `None` where the registry has no catalog.
    pub async fn catalog(&self) -> Result<Option<Vec<String>>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let first = format!("{}/v2/_catalog?n={PAGE_SIZE}", self.base().await?);
        match self
            .pages::<Page>(&first, CATALOG_SCOPE, |p| {
                p.repositories.unwrap_or_default()
            })
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound { .. }) | Err(Error::Denied { .. }) | Err(Error::Auth(_)) => {
                Ok(None)
            }
            Err(Error::Status { status: 405, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// All tags of `repo` (every page).
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let first = format!("{}/v2/{repo}/tags/list?n={PAGE_SIZE}", self.base().await?);
        self.pages::<Page>(&first, &pull_scope(repo), |p| p.tags.unwrap_or_default())
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::NotFound {
                    what: format!("repository {repo}"),
                },
                e => e,
            })
    }

    async fn pages<P: serde::de::DeserializeOwned>(
        &self,
        first: &str,
        scope: &str,
        items: impl Fn(P) -> Vec<String>,
    ) -> Result<Vec<String>, Error> {
        let base = self.base().await?;
        let mut out = Vec::new();
        let mut url = first.to_string();
        // A registry whose Link chain loops must not hang us: stop after a
        // generous number of pages.
        for _ in 0..100_000 {
            let resp = self
                .send(Method::GET, &url, scope, HeaderMap::new(), true)
                .await?;
            let resp = check(resp, &url)?;
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(link::next_link)
                .map(|l| link::absolute(base, &l));
            let body = read_limited(resp, MAX_MANIFEST_BYTES * 4, &url).await?;
            let page: P = serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                url: url.clone(),
                reason: format!("bad listing JSON: {e}"),
            })?;
            let before = out.len();
            out.extend(items(page));
            match next {
                Some(n) if n != url && out.len() > before => url = n,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// Fetches a manifest by tag or digest and verifies it: against the
    /// digest asked for, else against `Docker-Content-Digest`.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Manifest, Error> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base().await?);
        let mut headers = HeaderMap::new();
        if let Ok(v) = MANIFEST_MEDIA_TYPES.join(", ").parse() {
            headers.insert(ACCEPT, v);
        }
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), headers, true)
            .await?;
        let resp = check(resp, &url).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                what: format!("manifest {repo}:{reference}"),
            },
            e => e,
        })?;
        let media_type = header_str(resp.headers(), CONTENT_TYPE.as_str())
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_string());
        let claimed = header_str(resp.headers(), "docker-content-digest").map(str::to_string);
        let bytes = read_limited(resp, MAX_MANIFEST_BYTES, &url).await?;
        let actual = Digest::of(&bytes);
        let expected = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => match claimed {
                Some(c) => Some(c.parse::<Digest>().map_err(|e| Error::Protocol {
                    url: url.clone(),
                    reason: format!("bad Docker-Content-Digest: {e}"),
                })?),
                None => None,
            },
        };
        if let Some(expected) = expected {
            if expected != actual {
                return Err(Error::DigestMismatch {
                    what: format!("manifest {repo}:{reference}"),
                    expected,
                    actual,
                });
            }
        }
        Ok(Manifest {
            bytes,
            digest: actual,
            media_type,
        })
    }

    /// What a tag points at now, by `HEAD` (no body). `None` when the
    /// registry does not say (no `Docker-Content-Digest`).
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, Error> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base().await?);
        let mut headers = HeaderMap::new();
        if let Ok(v) = MANIFEST_MEDIA_TYPES.join(", ").parse() {
            headers.insert(ACCEPT, v);
        }
        let resp = self
            .send(Method::HEAD, &url, &pull_scope(repo), headers, true)
            .await?;
        let resp = check(resp, &url).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                what: format!("manifest {repo}:{reference}"),
            },
            e => e,
        })?;
        Ok(header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()))
    }

    /// Bytes `offset..end` of a blob (to its end when `end` is None). The
    /// answer is 206 from `offset`, or 200 with the whole blob (Range is
    /// optional): `BlobStream::start` says which.
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        end: Option<u64>,
    ) -> Result<BlobStream, Error> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base().await?);
        let mut headers = HeaderMap::new();
        let range = match end {
            Some(e) => Some(format!("bytes={offset}-{}", e.saturating_sub(1))),
            None if offset > 0 => Some(format!("bytes={offset}-")),
            None => None,
        };
        if let Some(r) = range {
            if let Ok(v) = r.parse() {
                headers.insert(RANGE, v);
            }
        }
        let resp = self
            .send(Method::GET, &url, &pull_scope(repo), headers, true)
            .await?;
        let resp = check(resp, &url).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                what: format!("blob {digest} in {repo}"),
            },
            e => e,
        })?;
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let range = header_str(resp.headers(), "content-range").unwrap_or("");
            content_range_start(range).ok_or_else(|| Error::Protocol {
                url: url.clone(),
                reason: format!("unusable Content-Range {range:?}"),
            })?
        } else {
            0
        };
        Ok(BlobStream {
            body: Body::Http(Box::new(resp)),
            start,
            url,
            remaining: None,
        })
    }

    /// Sends one request, answering auth challenges and retrying what may be retried.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        idempotent: bool,
    ) -> Result<reqwest::Response, Error> {
        self.send_inner(method, url, scope, headers, idempotent, None)
            .await
    }

    /// Like `send`, with a body made afresh for each attempt (PUTs are
    /// idempotent: the content is addressed by its digest).
    async fn send_with_body(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        body: &(dyn Fn() -> Result<reqwest::Body, Error> + Send + Sync),
    ) -> Result<reqwest::Response, Error> {
        self.send_inner(method, url, scope, headers, true, Some(body))
            .await
    }

    async fn send_inner(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: HeaderMap,
        idempotent: bool,
        body: Option<&(dyn Fn() -> Result<reqwest::Body, Error> + Send + Sync)>,
    ) -> Result<reqwest::Response, Error> {
        let mut attempt = 0u32;
        let mut answered_challenge = false;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if body.is_none() && (method != Method::GET || !url.contains("/blobs/")) {
                req = req.timeout(self.config.timeout);
            }
            if let Some(b) = body {
                req = req.body(b()?);
            }
            if let Some(h) = self.auth.header(scope).await {
                req = req.header(AUTHORIZATION, h);
            }
            let retry_after;
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                        let challenge = header_str(resp.headers(), WWW_AUTHENTICATE.as_str())
                            .and_then(parse_challenge);
                        if let Some(c) = challenge {
                            self.auth.respond(&self.http, &c, scope).await?;
                            answered_challenge = true;
                            continue;
                        }
                    }
                    if status == StatusCode::BAD_REQUEST && url.starts_with("http:") {
                        return self.unless_tls_port(resp, url).await;
                    }
                    let transient =
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                    if !(transient && idempotent && attempt < self.config.retries) {
                        return Ok(resp);
                    }
                    retry_after = retry_wait(
                        header_str(resp.headers(), "retry-after"),
                        self.config.timeout,
                    );
                    tracing::warn!(%url, %status, attempt, "registry busy or failing; retrying");
                }
                Err(e) => {
                    let tls = if url.starts_with("https:") {
                        transport::tls_failure(&e)
                    } else {
                        TlsFailure::Other
                    };
                    match tls {
                        TlsFailure::Certificate { reason, hint } => {
                            return Err(Error::Certificate {
                                host: self.config.host.clone(),
                                reason,
                                hint,
                            })
                        }
                        TlsFailure::NotTls(reason) => {
                            return Err(Error::NotTls {
                                host: self.config.host.clone(),
                                reason,
                            })
                        }
                        TlsFailure::HungUp | TlsFailure::Other => {}
                    }
                    if url.starts_with("http:") && transport::not_http(&e) {
                        return Err(Error::Unreachable {
                            host: self.config.host.clone(),
                            reason: format!(
                                "{}; it answered plain HTTP with something that is not HTTP: if it speaks HTTPS on this port, {}",
                                error_chain(&e),
                                self.https_hint()
                            ),
                        });
                    }
                    if !(idempotent && attempt < self.config.retries) {
                        return Err(Error::Unreachable {
                            host: self.config.host.clone(),
                            reason: error_chain(&e),
                        });
                    }
                    tracing::warn!(%url, attempt, "request failed: {}; retrying", error_chain(&e));
                    retry_after = None;
                }
            }
            tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
            attempt += 1;
        }
    }
}

/// How long a `Retry-After: <seconds>` answer makes us wait: as asked, up
/// to 10 s and never longer than `timeout` (`--timeout`), so a registry
/// that always asks to come back later cannot stretch one request's
/// retries past a few timeouts. `None` (the backoff applies) when the
/// header is missing or not seconds (an HTTP date is not honoured).
pub fn retry_wait(retry_after: Option<&str>, timeout: Duration) -> Option<Duration> {
    let secs = retry_after?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs.min(10)).min(timeout))
}

/// Backoff before retry `attempt` (0-based): 200 ms doubling, at most 3 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(4)).min(3000))
}

/// The scope of the catalog (distribution token auth).
const CATALOG_SCOPE: &str = "registry:catalog:*";

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// A blob body being received, from a registry or a layout file.
pub struct BlobStream {
    body: Body,
    /// The offset of the first byte of the body in the blob.
    pub start: u64,
    url: String,
    /// For a file body: bytes left to send (a range's end).
    remaining: Option<u64>,
}

enum Body {
    Http(Box<reqwest::Response>),
    File(tokio::fs::File),
}

impl BlobStream {
    pub(crate) fn file(f: tokio::fs::File, start: u64, url: String) -> BlobStream {
        BlobStream {
            body: Body::File(f),
            start,
            url,
            remaining: None,
        }
    }

    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, Error> {
        match &mut self.body {
            Body::Http(resp) => resp.chunk().await.map_err(|e| Error::Unreachable {
                host: self.url.clone(),
                reason: format!("blob transfer broke: {}", error_chain(&e)),
            }),
            Body::File(f) => {
                use tokio::io::AsyncReadExt;
                let want = self.remaining.map_or(1 << 20, |r| r.min(1 << 20) as usize);
                if want == 0 {
                    return Ok(None);
                }
                let mut buf = vec![0u8; want];
                let n = f.read(&mut buf).await.map_err(|source| Error::Io {
                    what: self.url.clone(),
                    source,
                })?;
                buf.truncate(n);
                if let Some(r) = self.remaining.as_mut() {
                    *r -= n as u64;
                }
                Ok((n > 0).then(|| Bytes::from(buf)))
            }
        }
    }
}

/// Where the tree comes from: a registry, or an OCI image layout.
// One per mount, behind an Arc: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Backend {
    Registry(Client),
    Layout(layout::Layout),
}

impl Backend {
    /// Names this source in cache keys and messages.
    pub fn host(&self) -> &str {
        match self {
            Backend::Registry(c) => c.host(),
            Backend::Layout(l) => l.name(),
        }
    }

    /// See `Client::check_access`; a layout needs no access check.
    pub async fn check_access(&self, repo: Option<&str>) -> Result<(), Error> {
        match self {
            Backend::Registry(c) => c.check_access(repo).await,
            Backend::Layout(_) => Ok(()),
        }
    }

    pub async fn catalog(&self) -> Result<Option<Vec<String>>, Error> {
        match self {
            Backend::Registry(c) => c.catalog().await,
            Backend::Layout(_) => Ok(Some(vec![LAYOUT_REPOSITORY.to_string()])),
        }
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, Error> {
        match self {
            Backend::Registry(c) => c.tags(repo).await,
            Backend::Layout(l) if repo == LAYOUT_REPOSITORY => l.tags(),
            Backend::Layout(_) => Err(Error::NotFound {
                what: format!("repository {repo}"),
            }),
        }
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Manifest, Error> {
        match self {
            Backend::Registry(c) => c.manifest(repo, reference).await,
            Backend::Layout(l) => l.manifest(reference),
        }
    }

    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, Error> {
        match self {
            Backend::Registry(c) => c.head_manifest(repo, reference).await,
            Backend::Layout(l) => Ok(Some(l.manifest(reference)?.digest)),
        }
    }

    /// Bytes from `offset` to the end of a blob (see `Client::blob_range`).
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, Error> {
        self.blob_range(repo, digest, offset, None).await
    }

    /// Bytes `offset..end` (see `Client::blob_range`).
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        end: Option<u64>,
    ) -> Result<BlobStream, Error> {
        match self {
            Backend::Registry(c) => c.blob_range(repo, digest, offset, end).await,
            Backend::Layout(l) => {
                let mut s = l.blob(digest, offset).await?;
                s.remaining = end.map(|e| e.saturating_sub(offset));
                Ok(s)
            }
        }
    }

    /// How output names `repo:tag` here: `[registry] host/repo:tag` or
    /// `[oci-layout] DIR:tag`, as ORAS prints them.
    pub fn describe(&self, repo: &str, tag: &str) -> String {
        match self {
            Backend::Registry(c) => format!("[registry] {}/{repo}:{tag}", c.host()),
            Backend::Layout(l) => format!("[oci-layout] {}:{tag}", l.root().display()),
        }
    }

    /// Whether partial reads are cheap here (a registry; a layout is a local file).
    pub fn is_remote(&self) -> bool {
        matches!(self, Backend::Registry(_))
    }

    /// Whether referrers are kept only in the tag schema here (see
    /// `Client::referrers_by_tag`); a layout is searched whole instead.
    pub fn referrers_by_tag(&self) -> bool {
        match self {
            Backend::Registry(c) => c.referrers_by_tag(),
            Backend::Layout(_) => false,
        }
    }

    /// Manifests whose subject is `subject`, as descriptors: the referrers
    /// API where the registry has it, else the `sha256-<hex>` tag schema.
    /// For a layout, every manifest of `index.json` is checked.
    pub async fn referrers(&self, repo: &str, subject: &Digest) -> Result<Vec<Digest>, Error> {
        match self {
            Backend::Registry(c) => c.referrers(repo, subject).await,
            Backend::Layout(l) => {
                let mut out = Vec::new();
                for d in l.all_manifests()? {
                    let Ok(m) = l.manifest(&d.to_string()) else {
                        continue;
                    };
                    if subject_of(&m.bytes).as_ref() == Some(subject) {
                        out.push(d);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// `bytes 100-199/1000` -> 100.
pub fn content_range_start(h: &str) -> Option<u64> {
    let rest = h.trim().strip_prefix("bytes")?.trim_start();
    let (range, _total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    start.trim().parse().ok()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn check(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, Error> {
    let status = resp.status();
    match status {
        s if s.is_success() => Ok(resp),
        StatusCode::NOT_FOUND => Err(Error::NotFound {
            what: url.to_string(),
        }),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Error::Denied {
            url: url.to_string(),
            status: status.as_u16(),
        }),
        s => Err(Error::Status {
            url: url.to_string(),
            status: s.as_u16(),
        }),
    }
}

async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
    url: &str,
) -> Result<Bytes, Error> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(Error::Protocol {
            url: url.to_string(),
            reason: format!("response larger than {limit} bytes refused"),
        });
    }
    let mut buf = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| Error::Unreachable {
        host: url.to_string(),
        reason: error_chain(&e),
    })? {
        if buf.len() + c.len() > limit {
            return Err(Error::Protocol {
                url: url.to_string(),
                reason: format!("response larger than {limit} bytes refused"),
            });
        }
        buf.extend_from_slice(&c);
    }
    Ok(Bytes::from(buf))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/1000"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/*"), Some(0));
        assert_eq!(content_range_start("items 1-2/3"), None);
        assert_eq!(content_range_start("bytes */1000"), None);
    }

    #[test]
    fn configs_choose_by_host_and_flags() {
        assert_eq!(
            Config::new("localhost:5000").transport,
            Transport::HttpsThenHttp
        );
        assert_eq!(Config::new("127.0.0.1").transport, Transport::HttpsThenHttp);
        assert_eq!(Config::new("ghcr.io").transport, Transport::Https);
        assert_eq!(
            Config::new("localhostile.example:5000").transport,
            Transport::Https
        );
        let c = |plain, https, insecure, ca: Option<&str>| {
            Config::with_flags(
                "127.0.0.1:5000",
                plain,
                https,
                insecure,
                ca.map(PathBuf::from),
            )
            .map(|c| c.transport)
            .map_err(|e| e.to_string())
        };
        assert_eq!(c(Some(true), false, false, None), Ok(Transport::Http));
        assert_eq!(c(Some(false), false, false, None), Ok(Transport::Https));
        assert_eq!(c(None, true, false, None), Ok(Transport::Https));
        assert_eq!(c(None, false, true, None), Ok(Transport::Https));
        assert_eq!(c(None, false, false, Some("ca.pem")), Ok(Transport::Https));
        assert_eq!(c(None, false, false, None), Ok(Transport::HttpsThenHttp));
        assert!(c(Some(true), true, false, None)
            .unwrap_err()
            .contains("--https"));
    }

    #[test]
    fn retry_after_is_honoured_within_the_timeout() {
        let t = Duration::from_secs(30);
        assert_eq!(retry_wait(Some("0"), t), Some(Duration::ZERO));
        assert_eq!(retry_wait(Some(" 4 "), t), Some(Duration::from_secs(4)));
        assert_eq!(retry_wait(Some("120"), t), Some(Duration::from_secs(10)));
        assert_eq!(
            retry_wait(Some("10"), Duration::from_secs(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(retry_wait(Some("Wed, 21 Oct 2015 07:28:00 GMT"), t), None);
        assert_eq!(retry_wait(Some("-1"), t), None);
        assert_eq!(retry_wait(None, t), None);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(10), Duration::from_millis(3000));
    }
}
