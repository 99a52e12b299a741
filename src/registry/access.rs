//! The mount-time access check: does the registry let us in with the
//! credentials we have, and if not, why (wrong ones, or none)?
//!
//! A 401 means different things by scheme. With Basic, a 401 to a request
//! that carried the credentials means they are wrong. With Bearer tokens,
//! the token service refusing (401/403) means the same; but a 401 to a
//! request carrying a token the service granted only means the token does
//! not reach that far (Docker Hub grants anonymous tokens and refuses its
//! catalog to everyone), which must not stop an anonymous pull.

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::{pull_scope, Client, Error, CATALOG_SCOPE};

impl Client {
    /// Checks at mount time that the registry answers and lets us in:
    /// `GET /v2/` (its challenge answered), then a probe of what a mount
    /// lists first: the tags of `repo` (the first `--repo`), else the
    /// catalog, for registries whose `/v2/` is anonymous but whose
    /// repositories are not.
    ///
    /// A 401 after credentials were sent is `AuthError::Refused`, naming
    /// where they came from; a 401 with none configured is
    /// `AuthError::NoCredentials`. A registry that lets anonymous users
    /// pull but not list its catalog (Docker Hub: a token, then 401) passes,
    /// and so does one without a catalog or without `repo` yet.
    pub async fn check_access(&self, repo: Option<&str>) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base().await?);
        let resp = self
            .send(Method::GET, &url, "", HeaderMap::new(), true)
            .await?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => return Err(self.auth.refusal(None).await.into()),
            s => {
                return Err(Error::Status {
                    url,
                    status: s.as_u16(),
                })
            }
        }
        let (url, scope, what) = match repo {
            Some(r) => (
                format!("{}/v2/{r}/tags/list?n=1", self.base().await?),
                pull_scope(r),
                format!("repository {r}"),
            ),
            None => (
                format!("{}/v2/_catalog?n=1", self.base().await?),
                CATALOG_SCOPE.to_string(),
                "the catalog".to_string(),
            ),
        };
        let resp = match self
            .send(Method::GET, &url, &scope, HeaderMap::new(), true)
            .await
        {
            Ok(r) => r,
            Err(Error::Auth(e)) if e.is_refusal() => return Err(e.about(&what).into()),
            // A token for the catalog may be refused for reasons other
            // than credentials: no catalog for us, as below.
            Err(Error::Auth(e)) if repo.is_none() => {
                tracing::info!("no catalog: {e}");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let status = resp.status();
        let refused = match repo {
            // The repository asked for by name: 401 or 403 is a no.
            Some(_) => status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
            // The catalog: only Basic's 401 is about the credentials; a
            // token without catalog access (401) or a 403 is no catalog.
            None => status == StatusCode::UNAUTHORIZED && self.auth.uses_basic(),
        };
        if refused {
            return Err(self.auth.refusal(Some(&what)).await.into());
        }
        if !status.is_success() {
            tracing::info!(%url, %status, "access probe: {what} not listed");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::auth::AuthError;
    use crate::registry::{Config, Transport};

    /// How the fake registry answers `(path, Authorization)`: status and
    /// `WWW-Authenticate`, with `{base}` replaced by its own address.
    type Answer = fn(&str, Option<&str>) -> (u16, Option<&'static str>, &'static str);

    /// A registry on a loopback port that answers each request by `answer`.
    async fn fake(answer: Answer) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let host = base.trim_start_matches("http://").to_string();
        let base = Arc::new(base);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let base = base.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    let auth = head.lines().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("authorization").then(|| v.trim())
                    });
                    let (status, challenge, body) = answer(&path, auth);
                    let mut out = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
                        body.len()
                    );
                    if let Some(c) = challenge {
                        out.push_str(&format!(
                            "WWW-Authenticate: {}\r\n",
                            c.replace("{base}", &base)
                        ));
                    }
                    out.push_str("\r\n");
                    out.push_str(body);
                    let _ = conn.write_all(out.as_bytes()).await;
                });
            }
        });
        let mut cfg = Config::new(&host);
        cfg.transport = Transport::Http;
        cfg.retries = 0;
        Client::new(cfg).unwrap()
    }

    const BEARER: Option<&str> = Some(r#"Bearer realm="{base}/token",service="fake""#);

    /// Docker Hub's way: anonymous tokens for anything, a catalog for nobody.
    fn anonymous_tokens(
        path: &str,
        auth: Option<&str>,
    ) -> (u16, Option<&'static str>, &'static str) {
        if path.starts_with("/token") {
            return (200, None, r#"{"token":"anon"}"#);
        }
        match (path, auth) {
            (_, None) => (401, BEARER, "{}"),
            (p, Some("Bearer anon")) if p.starts_with("/v2/_catalog") => (401, BEARER, "{}"),
            (_, Some("Bearer anon")) => (200, None, r#"{"tags":["v1"]}"#),
            _ => (401, BEARER, "{}"),
        }
    }

    /// A token service that wants credentials for everything.
    fn tokens_need_credentials(
        path: &str,
        _: Option<&str>,
    ) -> (u16, Option<&'static str>, &'static str) {
        if path.starts_with("/token") {
            return (401, None, "{}");
        }
        (401, BEARER, "{}")
    }

    /// An anonymous `/v2/` and catalog; repositories need Basic.
    fn basic_per_repository(
        path: &str,
        _: Option<&str>,
    ) -> (u16, Option<&'static str>, &'static str) {
        match path {
            "/v2/" => (200, None, "{}"),
            p if p.starts_with("/v2/_catalog") => (404, None, "{}"),
            _ => (401, Some(r#"Basic realm="r""#), "{}"),
        }
    }

    #[tokio::test]
    async fn anonymous_pull_registries_pass_without_a_catalog() {
        let c = fake(anonymous_tokens).await;
        c.check_access(None).await.unwrap();
        c.check_access(Some("library/alpine")).await.unwrap();
        let open = fake(|_, _| (200, None, "{}")).await;
        open.check_access(None).await.unwrap();
    }

    #[tokio::test]
    async fn a_token_service_refusing_anonymous_users_means_credentials_are_needed() {
        let c = fake(tokens_need_credentials).await;
        match c.check_access(None).await {
            Err(Error::Auth(AuthError::NoCredentials { host, what, .. })) => {
                assert_eq!(host, c.host());
                assert_eq!(what, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_repository_that_needs_credentials_is_found_by_the_probe() {
        let c = fake(basic_per_repository).await;
        c.check_access(None).await.unwrap();
        let e = c.check_access(Some("org/app")).await.unwrap_err();
        assert!(
            matches!(&e, Error::Auth(AuthError::NoCredentials { what: Some(w), .. }) if w == "repository org/app"),
            "{e:?}"
        );
        assert!(e.to_string().contains("for repository org/app"), "{e}");
    }
}
