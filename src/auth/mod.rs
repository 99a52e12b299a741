//! Registry authentication: `WWW-Authenticate` challenges, credentials from
//! the docker config (as `docker login` / `oras login` write them), and
//! bearer tokens cached per scope.
//!
//! Parsing and expiry are pure and tested on literal header strings; the
//! token fetch is the only I/O. Secrets never reach a log: every type that
//! holds one redacts it in `Debug`. A refusal says where the credentials
//! came from (`source`), never what they are.

mod source;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::OnceCell;

pub use source::{credential_source, docker_config_path, CredentialSource};

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://a/token",service="b",scope="c"`.
/// A Bearer challenge is answered at its realm, so one whose realm is not
/// an absolute `http(s)://` URL is not a challenge regfs can answer: `None`.
///
/// challenge ::= scheme SP auth-param *( "," auth-param )
/// auth-param ::= token "=" ( token / quoted-string )
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params
                .get("realm")
                .filter(|r| is_absolute_http_url(r))?
                .clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `http://HOST...` or `https://HOST...` with a host.
fn is_absolute_http_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// Credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    UsernamePassword(String, String),
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::UsernamePassword(u, _) => write!(f, "UsernamePassword({u:?}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    fn basic_header(&self) -> Option<String> {
        match self {
            Credential::UsernamePassword(u, p) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Looks up credentials for `host` in `$DOCKER_CONFIG/config.json` or
/// `~/.docker/config.json` (`auths`, `credsStore`, `credHelpers`), and
/// where they were found. Blocking: credential helpers are programs.
pub fn load_credential(host: &str) -> Option<(Credential, CredentialSource)> {
    let mut candidates = vec![host.to_string()];
    if host == "docker.io" || host == "registry-1.docker.io" {
        candidates.push("https://index.docker.io/v1/".to_string());
    }
    for c in candidates {
        let cred = match docker_credential::get_credential(&c) {
            Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => {
                Credential::UsernamePassword(u, p)
            }
            Ok(docker_credential::DockerCredential::IdentityToken(t)) => {
                Credential::IdentityToken(t)
            }
            Err(e) => {
                tracing::debug!(host = %c, "no docker credential: {e}");
                continue;
            }
        };
        // The crate found it in this file; which part of it, for messages.
        let path = docker_config_path().unwrap_or_else(|| "config.json".into());
        let source = std::fs::read(&path)
            .ok()
            .and_then(|b| credential_source(&b, &path, &c))
            .unwrap_or(CredentialSource::Config(path));
        return Some((cred, source));
    }
    None
}

/// A bearer token and when it stops being usable.
#[derive(Clone)]
struct Token {
    value: String,
    refresh_at: Instant,
}

/// When to stop using a token: a little before it expires, so a request
/// sent with it does not race the expiry. Registries that give no
/// `expires_in` mean 60 seconds (distribution-spec token auth).
pub fn token_refresh_at(now: Instant, expires_in: Option<u64>) -> Instant {
    let lifetime = expires_in.unwrap_or(60).max(1);
    let margin = (lifetime / 10).clamp(0, 30);
    now + Duration::from_secs(lifetime.saturating_sub(margin).max(1))
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token request to {realm} failed: {reason}")]
    TokenRequest { realm: String, reason: String },
    /// The registry wants credentials and none are configured for it.
    #[error("registry {host} asks for credentials{} and there are no credentials for it in {looked_in} (run `docker login {host}` or `oras login {host}`)", about(what))]
    NoCredentials {
        host: String,
        /// What was asked for (`repository org/app`), when not the registry itself.
        what: Option<String>,
        looked_in: String,
    },
    /// The registry answered 401 to the credentials that were sent.
    #[error("registry {host} refused the credentials{} from {from} (log in again: `docker login {host}`)", about(what))]
    Refused {
        host: String,
        what: Option<String>,
        /// Where the credentials came from.
        from: CredentialSource,
    },
}

fn about(what: &Option<String>) -> String {
    what.as_ref()
        .map(|w| format!(" for {w}"))
        .unwrap_or_default()
}

impl AuthError {
    /// The same refusal, about `what` (unless it names something already).
    pub fn about(self, w: &str) -> AuthError {
        match self {
            AuthError::NoCredentials {
                host,
                what: None,
                looked_in,
            } => AuthError::NoCredentials {
                host,
                what: Some(w.to_string()),
                looked_in,
            },
            AuthError::Refused {
                host,
                what: None,
                from,
            } => AuthError::Refused {
                host,
                what: Some(w.to_string()),
                from,
            },
            e => e,
        }
    }

    /// The registry refused us for want of (good) credentials.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AuthError::NoCredentials { .. } | AuthError::Refused { .. }
        )
    }
}

/// Authentication state for one registry host.
pub struct Auth {
    host: String,
    credential: OnceCell<Option<(Credential, CredentialSource)>>,
    tokens: Mutex<HashMap<String, Token>>,
    /// The registry asked for Basic: send it up front from now on.
    basic: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(host: &str) -> Auth {
        Auth {
            host: host.to_string(),
            credential: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn credential(&self) -> Option<Credential> {
        self.loaded().await.map(|(c, _)| c)
    }

    async fn loaded(&self) -> Option<(Credential, CredentialSource)> {
        self.credential
            .get_or_init(|| async {
                let host = self.host.clone();
                tokio::task::spawn_blocking(move || load_credential(&host))
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone()
    }

    /// What a 401 means once the challenge was answered: the credentials
    /// sent were refused, or (with none configured) they are needed.
    pub async fn refusal(&self, what: Option<&str>) -> AuthError {
        let e = match self.loaded().await {
            Some((_, from)) => AuthError::Refused {
                host: self.host.clone(),
                what: None,
                from,
            },
            None => self.no_credentials(),
        };
        match what {
            Some(w) => e.about(w),
            None => e,
        }
    }

    fn no_credentials(&self) -> AuthError {
        AuthError::NoCredentials {
            host: self.host.clone(),
            what: None,
            looked_in: docker_config_path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| {
                    "the docker config (neither $DOCKER_CONFIG nor $HOME is set)".into()
                }),
        }
    }

    /// Whether the registry asked for Basic auth (so a 401 to a request
    /// that carried it means the credentials are wrong, not short of a scope).
    pub fn uses_basic(&self) -> bool {
        self.basic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The `Authorization` header to send for `scope`, if we have one.
    pub async fn header(&self, scope: &str) -> Option<String> {
        if let Some(t) = self.lock_tokens().get(scope) {
            if Instant::now() < t.refresh_at {
                return Some(format!("Bearer {}", t.value));
            }
        }
        if self.basic.load(std::sync::atomic::Ordering::Relaxed) {
            return self.credential().await.and_then(|c| c.basic_header());
        }
        None
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // cache entry; the map is still usable.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers a 401 challenge for `scope`. Afterwards `header(scope)` has
    /// what to send.
    pub async fn respond(
        &self,
        http: &reqwest::Client,
        challenge: &Challenge,
        scope: &str,
    ) -> Result<(), AuthError> {
        match challenge {
            Challenge::Basic => {
                if self.credential().await.is_none() {
                    return Err(self.no_credentials());
                }
                self.basic.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let cred = self.credential().await;
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(s) = service {
                    query.push(("service", s));
                }
                // No scope: a token for `GET /v2/` (as `docker login` asks).
                if !scope.is_empty() {
                    query.push(("scope", scope));
                }
                let fail = |reason: String| AuthError::TokenRequest {
                    realm: realm.clone(),
                    reason,
                };
                let req = match &cred {
                    Some(Credential::IdentityToken(t)) => {
                        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", t)];
                        form.extend(query.iter().copied());
                        form.push(("client_id", "regfs"));
                        let body = form
                            .iter()
                            .map(|(k, v)| format!("{k}={}", urlencode(v)))
                            .collect::<Vec<_>>()
                            .join("&");
                        http.post(realm)
                            .header("Content-Type", "application/x-www-form-urlencoded")
                            .body(body)
                    }
                    other => {
                        let qs = query
                            .iter()
                            .map(|(k, v)| format!("{k}={}", urlencode(v)))
                            .collect::<Vec<_>>()
                            .join("&");
                        let sep = if realm.contains('?') { '&' } else { '?' };
                        let mut r = http.get(format!("{realm}{sep}{qs}"));
                        if let Some(h) = other.as_ref().and_then(Credential::basic_header) {
                            r = r.header("Authorization", h);
                        }
                        r
                    }
                };
                let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
                let status = resp.status();
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    // The token service refused what was sent: the
                    // credentials, or no credentials at all.
                    return Err(self.refusal(None).await);
                }
                if !status.is_success() {
                    return Err(fail(format!("HTTP {status}")));
                }
                let body: TokenResponse = resp.json().await.map_err(|e| fail(e.to_string()))?;
                let value = body
                    .token
                    .or(body.access_token)
                    .ok_or_else(|| fail("response has no token".into()))?;
                let token = Token {
                    value,
                    refresh_at: token_refresh_at(Instant::now(), body.expires_in),
                };
                self.lock_tokens().insert(scope.to_string(), token);
                Ok(())
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let table = [
            (r#"Basic realm="Registry Realm""#, Some(Challenge::Basic)),
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
                Some(Challenge::Bearer {
                    realm: "https://auth.docker.io/token".into(),
                    service: Some("registry.docker.io".into()),
                    scope: Some("repository:library/alpine:pull".into()),
                }),
            ),
            (
                r#"bearer realm="https://ghcr.io/token", service="ghcr.io""#,
                Some(Challenge::Bearer {
                    realm: "https://ghcr.io/token".into(),
                    service: Some("ghcr.io".into()),
                    scope: None,
                }),
            ),
            (r#"Bearer service="x""#, None),
            // Found by fuzzing (fuzz/ www_authenticate): an empty realm was
            // taken, and its token asked for at "?service=...".
            (r#"Bearer realm="""#, None),
            (r#"Bearer realm="/token",service="x""#, None),
            (r#"Bearer realm="ftp://auth.example/token""#, None),
            (r#"Bearer realm="https://""#, None),
            (
                r#"Bearer realm="HTTP://127.0.0.1:5001/token""#,
                Some(Challenge::Bearer {
                    realm: "HTTP://127.0.0.1:5001/token".into(),
                    service: None,
                    scope: None,
                }),
            ),
            ("Negotiate abc", None),
        ];
        for (h, want) in table {
            assert_eq!(parse_challenge(h), want, "{h}");
        }
    }

    #[test]
    fn scope_with_comma_in_quotes() {
        let c = parse_challenge(r#"Bearer realm="https://r/t",scope="repository:a:pull,push""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: None,
                scope: Some("repository:a:pull,push".into())
            })
        );
    }

    #[test]
    fn refresh_before_expiry() {
        let now = Instant::now();
        assert_eq!(
            token_refresh_at(now, Some(300)),
            now + Duration::from_secs(270)
        );
        assert_eq!(token_refresh_at(now, None), now + Duration::from_secs(54));
        assert_eq!(token_refresh_at(now, Some(0)), now + Duration::from_secs(1));
        assert_eq!(
            token_refresh_at(now, Some(3600)),
            now + Duration::from_secs(3570)
        );
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credential::UsernamePassword("bob".into(), "hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        let t = Credential::IdentityToken("secret-token".into());
        assert!(!format!("{t:?}").contains("secret-token"));
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(
            urlencode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
