//! Parsing of what the user names: mount sources, repository names, tags.
//!
//! Pure functions with the distribution-spec grammar written beside them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// What `regfs mount` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A registry, optionally limited to repositories under `prefix`.
    Registry {
        host: String,
        prefix: Option<String>,
    },
    /// An OCI image layout directory (`oci:PATH`).
    Layout(PathBuf),
}

/// The repository name a layout's tags live under: a layout holds one
/// repository.
pub const LAYOUT_REPOSITORY: &str = "layout";

impl Source {
    /// The repository path the tree of this source starts at: the
    /// registry's prefix, or the one repository of a layout (its tags are
    /// the top of the tree).
    pub fn prefix(&self) -> Option<String> {
        match self {
            Source::Registry { prefix, .. } => prefix.clone(),
            Source::Layout(_) => Some(LAYOUT_REPOSITORY.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty source: expected HOST[:PORT][/REPO-PREFIX] or oci:PATH")]
    Empty,
    #[error("{0:?} is not a valid registry host (expected HOST[:PORT], e.g. localhost:5000)")]
    BadHost(String),
    #[error("{0:?} is not a valid repository name (lowercase components separated by '/')")]
    BadRepository(String),
    #[error("oci: source needs a path, e.g. oci:./layout")]
    EmptyLayoutPath,
    #[error("{0:?} is not a target: expected HOST[:PORT]/REPO:TAG or oci:PATH:TAG")]
    BadTarget(String),
}

impl FromStr for Source {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Source, ReferenceError> {
        if let Some(path) = s.strip_prefix("oci:") {
            if path.is_empty() {
                return Err(ReferenceError::EmptyLayoutPath);
            }
            return Ok(Source::Layout(PathBuf::from(path)));
        }
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (host, prefix) = match s.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if !is_host(host) {
            return Err(ReferenceError::BadHost(host.to_string()));
        }
        if let Some(p) = prefix {
            if !is_repository(p) {
                return Err(ReferenceError::BadRepository(p.to_string()));
            }
        }
        Ok(Source::Registry {
            host: host.to_string(),
            prefix: prefix.map(str::to_string),
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Registry { host, prefix: None } => write!(f, "{host}"),
            Source::Registry {
                host,
                prefix: Some(p),
            } => write!(f, "{host}/{p}"),
            Source::Layout(p) => write!(f, "oci:{}", p.display()),
        }
    }
}

/// Where `commit --to` pushes: `HOST[:PORT]/REPO:TAG` or `oci:PATH:TAG`.
pub fn parse_target(s: &str) -> Result<(Source, String, String), ReferenceError> {
    let bad = || ReferenceError::BadTarget(s.to_string());
    if let Some(rest) = s.strip_prefix("oci:") {
        let (path, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
        if path.is_empty() || !is_tag(tag) {
            return Err(bad());
        }
        return Ok((
            Source::Layout(PathBuf::from(path)),
            LAYOUT_REPOSITORY.to_string(),
            tag.to_string(),
        ));
    }
    let (host, rest) = s.split_once('/').ok_or_else(bad)?;
    let (repo, tag) = rest.rsplit_once(':').ok_or_else(bad)?;
    if !is_host(host) || !is_repository(repo) || !is_tag(tag) {
        return Err(bad());
    }
    Ok((
        Source::Registry {
            host: host.to_string(),
            prefix: None,
        },
        repo.to_string(),
        tag.to_string(),
    ))
}

/// host ::= domain-or-ipv4 [":" port]; domain components are alphanumerics and '-'.
/// A bracketed IPv6 literal (`[::1]:5000`) is accepted too.
pub fn is_host(s: &str) -> bool {
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, tail)) => {
                if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => match t.strip_prefix(':') {
                        Some(p) => return is_port(p),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if !is_port(p) {
            return false;
        }
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// path-component ::= [a-z0-9]+ (separator [a-z0-9]+)*
/// separator      ::= [_.] | "__" | [-]+
pub fn is_repository_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: one of ".", "_", "__", or "-"+, followed by alnum.
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// name ::= path-component ("/" path-component)*, at most 255 bytes in all.
pub fn is_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(is_repository_component)
}

/// tag ::= [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
pub fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let reg = |h: &str, p: Option<&str>| Source::Registry {
            host: h.into(),
            prefix: p.map(Into::into),
        };
        let table: Vec<(&str, Result<Source, ReferenceError>)> = vec![
            ("localhost:5000", Ok(reg("localhost:5000", None))),
            (
                "ghcr.io/oras-project",
                Ok(reg("ghcr.io", Some("oras-project"))),
            ),
            (
                "127.0.0.1:5000/org/app/",
                Ok(reg("127.0.0.1:5000", Some("org/app"))),
            ),
            ("http://localhost:5000", Ok(reg("localhost:5000", None))),
            ("[::1]:5000", Ok(reg("[::1]:5000", None))),
            ("oci:./layout", Ok(Source::Layout("./layout".into()))),
            ("oci:", Err(ReferenceError::EmptyLayoutPath)),
            ("", Err(ReferenceError::Empty)),
            (
                "local host",
                Err(ReferenceError::BadHost("local host".into())),
            ),
            (
                "localhost:99999",
                Err(ReferenceError::BadHost("localhost:99999".into())),
            ),
            (
                "localhost:5000/Org",
                Err(ReferenceError::BadRepository("Org".into())),
            ),
            (
                "localhost:5000/a//b",
                Err(ReferenceError::BadRepository("a//b".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(input.parse::<Source>(), want, "{input}");
        }
    }

    #[test]
    fn prefixes() {
        let table = [
            ("localhost:5000", None),
            ("localhost:5000/org/app", Some("org/app")),
            ("oci:./layout", Some(LAYOUT_REPOSITORY)),
        ];
        for (input, want) in table {
            let s: Source = input.parse().unwrap();
            assert_eq!(s.prefix().as_deref(), want, "{input}");
        }
    }

    #[test]
    fn repository_names() {
        for ok in ["a", "org/app", "a.b_c__d---e", "x9/y-z"] {
            assert!(is_repository(ok), "{ok}");
        }
        for bad in [
            "", "A", "a/", "/a", "a..b", "a___b", "-a", "a-", "..", "a/../b", "a b",
        ] {
            assert!(!is_repository(bad), "{bad}");
        }
    }

    #[test]
    fn targets() {
        let (src, repo, tag) = parse_target("localhost:5000/org/app:v1").unwrap();
        assert_eq!(
            src,
            Source::Registry {
                host: "localhost:5000".into(),
                prefix: None
            }
        );
        assert_eq!((repo.as_str(), tag.as_str()), ("org/app", "v1"));
        let (src, _, tag) = parse_target("oci:/tmp/lay:latest").unwrap();
        assert_eq!(src, Source::Layout("/tmp/lay".into()));
        assert_eq!(tag, "latest");
        for bad in [
            "localhost:5000/app",
            "app:v1",
            "localhost:5000/App:v1",
            "oci::v1",
            "h/r:bad/tag",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0.0", "_x", "A-b.c_d"] {
            assert!(is_tag(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".x", "-x", "a/b", "a:b", long.as_str()] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
