//! Where a credential comes from, for messages: the docker config file, or
//! the credential helper it names. Never the secret itself.
//!
//! The lookup order is `docker_credential`'s (and docker's): a helper
//! named for the registry in `credHelpers`, else the registry's `auths`
//! entry, else the default `credsStore` helper. Pure: the config's bytes
//! are passed in.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the credential for a registry was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `auths` of this docker config file.
    Config(PathBuf),
    /// The helper program `docker-credential-<name>`, named by this config.
    Helper { name: String, config: PathBuf },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Config(p) => write!(f, "{}", p.display()),
            CredentialSource::Helper { name, config } => write!(
                f,
                "credential helper docker-credential-{name} (named in {})",
                config.display()
            ),
        }
    }
}

/// The docker config file credentials are read from:
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))?;
    Some(dir.join("config.json"))
}

/// Where the docker config at `path` (holding `config`) has the credential
/// of `server`; `None` when it names none.
pub fn credential_source(config: &[u8], path: &Path, server: &str) -> Option<CredentialSource> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        #[serde(default)]
        auths: std::collections::HashMap<String, serde_json::Value>,
        creds_store: Option<String>,
        #[serde(default)]
        cred_helpers: std::collections::HashMap<String, String>,
    }
    let c: Config = serde_json::from_slice(config).ok()?;
    let helper = |name: &str| CredentialSource::Helper {
        name: name.to_string(),
        config: path.to_path_buf(),
    };
    if let Some(name) = c.cred_helpers.get(server).filter(|n| !n.is_empty()) {
        return Some(helper(name));
    }
    let want = normalize(server);
    if c.auths.contains_key(server) || c.auths.keys().any(|k| normalize_key(k) == want) {
        return Some(CredentialSource::Config(path.to_path_buf()));
    }
    c.creds_store.filter(|s| !s.is_empty()).map(|s| helper(&s))
}

/// An `auths` key as the registry it names: `https://host/v1/` -> `host`.
fn normalize_key(key: &str) -> &str {
    match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(rest) => normalize(rest.split('/').next().unwrap_or(rest)),
        None => normalize(key),
    }
}

/// Docker Hub's names are one registry.
fn normalize(registry: &str) -> &str {
    match registry {
        "registry-1.docker.io" | "docker.io" => "index.docker.io",
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_a_credential_is_found() {
        let path = Path::new("/home/me/.docker/config.json");
        let config = |c: &str| CredentialSource::Config(PathBuf::from(c));
        let helper = |n: &str| CredentialSource::Helper {
            name: n.into(),
            config: path.to_path_buf(),
        };
        let table = [
            (
                r#"{"auths":{"r.io":{"auth":"eDp5"}}}"#,
                "r.io",
                Some(config("/home/me/.docker/config.json")),
            ),
            (
                r#"{"auths":{"https://r.io/v1/":{"auth":"eDp5"}}}"#,
                "r.io",
                Some(config("/home/me/.docker/config.json")),
            ),
            (
                r#"{"auths":{"https://index.docker.io/v1/":{}}}"#,
                "https://index.docker.io/v1/",
                Some(config("/home/me/.docker/config.json")),
            ),
            (r#"{"auths":{"other.io":{"auth":"eDp5"}}}"#, "r.io", None),
            (
                r#"{"auths":{"r.io":{"auth":"eDp5"}},"credHelpers":{"r.io":"ecr-login"}}"#,
                "r.io",
                Some(helper("ecr-login")),
            ),
            (
                r#"{"credsStore":"desktop","auths":{"r.io":{}}}"#,
                "r.io",
                Some(config("/home/me/.docker/config.json")),
            ),
            (r#"{"credsStore":"pass"}"#, "r.io", Some(helper("pass"))),
            (r#"{"credHelpers":{"r.io":""}}"#, "r.io", None),
            ("not json", "r.io", None),
        ];
        for (json, server, want) in table {
            assert_eq!(
                credential_source(json.as_bytes(), path, server),
                want,
                "{json} {server}"
            );
        }
        assert_eq!(
            helper("pass").to_string(),
            "credential helper docker-credential-pass (named in /home/me/.docker/config.json)"
        );
    }
}
