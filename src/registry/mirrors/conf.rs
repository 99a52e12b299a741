//! `registries.conf` (containers-registries.conf(5), version 2) as podman,
//! skopeo and CRI-O read it, for its mirrors only.
//!
//! ```toml
//! [[registry]]
//! prefix = "registry.example/team"      # optional; defaults to location
//! location = "registry.example/team"
//! mirror-by-digest-only = false          # true: mirrors only for digests
//!
//! [[registry.mirror]]
//! location = "cache.lan:5000/team"       # HOST[:PORT][/NAMESPACE]
//! insecure = true                        # HTTPS without verifying, or plain HTTP
//! pull-from-mirror = "all"               # or "digest-only", "tag-only"
//! ```
//!
//! The rules, as containers/image applies them:
//!
//! - A name `host/repo` belongs to the entry whose `prefix` is the longest
//!   that matches it: equal to it, or followed in it by `/`, `:` or `@`.
//!   A prefix `*.example.com` matches any host under `example.com`.
//! - A mirror's name for it is the mirror's `location` followed by what of
//!   the name comes after the prefix (`registry.example/team/app` with the
//!   entry above is `cache.lan:5000/team/app`).
//! - Mirrors are tried in the order written, then the registry itself.
//!   `mirror-by-digest-only` keeps mirrors to reads by digest (tags are
//!   resolved by the registry itself); a mirror's `pull-from-mirror` does
//!   the same for that mirror (`digest-only`), or keeps it to tags
//!   (`tag-only`). The two cannot be set together.
//! - Files: the main file, then every `*.conf` of the drop-in folders in
//!   name order; a `[[registry]]` of a later file replaces the one with the
//!   same prefix (`merge`). See `files` for which files are read.
//!
//! Everything else in the file (`unqualified-search-registries`, aliases,
//! `blocked`, the registry's own `insecure`, the version 1 tables) is not
//! about mirrors and is ignored.
//!
//! Pure but for `load`, which reads the files `files` names.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Which references a mirror serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFrom {
    All,
    DigestOnly,
    TagOnly,
}

impl PullFrom {
    fn serves(self, by_digest: bool) -> bool {
        match self {
            PullFrom::All => true,
            PullFrom::DigestOnly => by_digest,
            PullFrom::TagOnly => !by_digest,
        }
    }
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `HOST[:PORT][/NAMESPACE]`.
    pub location: String,
    pub insecure: bool,
    pub pull_from: PullFrom,
}

/// One `[[registry]]` with what regfs uses of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub prefix: String,
    pub mirrors: Vec<Mirror>,
    pub mirror_by_digest_only: bool,
}

/// The merged configuration: entries by prefix, one per prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conf {
    entries: Vec<Entry>,
}

/// Where a read may go before the registry itself: a mirror, and the
/// repository name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `HOST[:PORT]` of the mirror.
    pub host: String,
    pub repo: String,
    /// From `registries.conf` with `insecure = true`.
    pub insecure: bool,
    /// Named by `--mirror` (spoken to like the registry itself).
    pub from_flag: bool,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    #[serde(default)]
    mirror_by_digest_only: bool,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

/// `location ::= HOST[:PORT][/NAMESPACE...]`, without a scheme; a trailing
/// `/` is dropped.
fn location(s: &str) -> Result<String, String> {
    let t = s.trim_end_matches('/');
    if t.starts_with("http://") || t.starts_with("https://") {
        return Err(format!(
            "location {s:?}: write HOST[:PORT][/NAMESPACE] without http:// or https://"
        ));
    }
    Ok(t.to_string())
}

impl Conf {
    /// One file's text (`name` says which in errors).
    pub fn parse(text: &str, name: &str) -> Result<Conf, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
        let mut entries: Vec<Entry> = Vec::new();
        for r in raw.registry {
            let err = |why: String| format!("{name}: [[registry]] {why}");
            let loc = r
                .location
                .as_deref()
                .map(location)
                .transpose()
                .map_err(err)?;
            let prefix = match (r.prefix.as_deref(), loc.as_deref()) {
                (Some(p), _) => location(p).map_err(err)?,
                (None, Some(l)) if !l.is_empty() => l.to_string(),
                _ => return Err(err("has neither prefix nor location".into())),
            };
            if prefix.starts_with("*.") && prefix.contains(['/', ':', '@']) {
                return Err(err(format!(
                    "prefix {prefix:?}: a wildcard prefix is *.example.com, with no port or path"
                )));
            }
            if r.pull_from_mirror.is_some() {
                return Err(err(format!(
                    "{prefix}: pull-from-mirror belongs in a [[registry.mirror]]"
                )));
            }
            let mut mirrors = Vec::new();
            for m in r.mirror {
                let l = match m.location.as_deref().map(location).transpose() {
                    Ok(Some(l)) if !l.is_empty() => l,
                    Ok(_) => return Err(err(format!("{prefix}: a mirror has no location"))),
                    Err(e) => return Err(err(e)),
                };
                if r.mirror_by_digest_only && m.pull_from_mirror.is_some() {
                    return Err(err(format!(
                        "{prefix}: mirror-by-digest-only and a mirror's pull-from-mirror cannot both be set"
                    )));
                }
                let pull_from = match m.pull_from_mirror.as_deref() {
                    None | Some("") | Some("all") => PullFrom::All,
                    Some("digest-only") => PullFrom::DigestOnly,
                    Some("tag-only") => PullFrom::TagOnly,
                    Some(v) => {
                        return Err(err(format!(
                        "mirror {l}: pull-from-mirror = {v:?}; expected \"all\", \"digest-only\" or \"tag-only\""
                    )))
                    }
                };
                mirrors.push(Mirror {
                    location: l,
                    insecure: m.insecure,
                    pull_from,
                });
            }
            // Within one file the first entry of a prefix wins.
            if entries.iter().all(|e| e.prefix != prefix) {
                entries.push(Entry {
                    prefix,
                    mirrors,
                    mirror_by_digest_only: r.mirror_by_digest_only,
                });
            }
        }
        Ok(Conf { entries })
    }

    /// Folds a later file (a drop-in) in: its entries replace those with
    /// the same prefix.
    pub fn merge(&mut self, later: Conf) {
        for e in later.entries {
            match self.entries.iter_mut().find(|x| x.prefix == e.prefix) {
                Some(x) => *x = e,
                None => self.entries.push(e),
            }
        }
    }

    /// The entry whose prefix is the longest that matches `name` (`host/repo`).
    pub fn find(&self, name: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .filter(|e| matching_prefix(name, &e.prefix).is_some())
            .max_by_key(|e| e.prefix.len())
    }

    /// Whether any entry with mirrors may match names on `host`.
    pub fn has_mirrors_for(&self, host: &str) -> bool {
        self.entries.iter().any(|e| {
            !e.mirrors.is_empty()
                && (matching_prefix(host, &e.prefix).is_some()
                    || e.prefix
                        .strip_prefix(host)
                        .is_some_and(|rest| rest.starts_with('/')))
        })
    }
}

/// How much of `name` the prefix covers, if it matches: `prefix` itself,
/// or `prefix` followed by `/`, `:` or `@`; `*.example.com` covers a host
/// ending in `.example.com`.
pub fn matching_prefix(name: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // domain = ".example.com"
        let i = name.find(domain)?;
        if name[..i].contains('/') {
            return None;
        }
        let end = i + domain.len();
        return match name.as_bytes().get(end) {
            None | Some(b':' | b'/' | b'@') => Some(end),
            Some(_) => None,
        };
    }
    let rest = name.strip_prefix(prefix)?;
    match rest.as_bytes().first() {
        None | Some(b':' | b'/' | b'@') => Some(prefix.len()),
        Some(_) => None,
    }
}

/// `HOST[:PORT][/NAMESPACE]` followed by `rest` (which starts with `/` or
/// is empty), split into the mirror's host and the repository there.
/// `None` when no repository name is left.
fn rewrite(location: &str, rest: &str) -> Option<(String, String)> {
    let full = format!("{location}{rest}");
    let (host, repo) = full.split_once('/')?;
    let repo = repo.trim_matches('/');
    (!host.is_empty() && !repo.is_empty()).then(|| (host.to_string(), repo.to_string()))
}

/// The mirrors to try, in order, for `repo` on `host`, for a read by digest
/// (`by_digest`) or by tag: those named by `--mirror` (`flags`, each
/// `HOST[:PORT][/NAMESPACE]`), then those of the matching `conf` entry
/// its rules allow. The registry itself comes after them all.
pub fn targets(
    flags: &[String],
    conf: &Conf,
    host: &str,
    repo: &str,
    by_digest: bool,
) -> Vec<Target> {
    let mut out: Vec<Target> = flags
        .iter()
        .filter_map(|l| rewrite(l, &format!("/{repo}")))
        .map(|(host, repo)| Target {
            host,
            repo,
            insecure: false,
            from_flag: true,
        })
        .collect();
    let name = format!("{host}/{repo}");
    if let Some(e) = conf.find(&name) {
        if !e.mirror_by_digest_only || by_digest {
            let Some(covered) = matching_prefix(&name, &e.prefix) else {
                return out;
            };
            let rest = &name[covered..];
            for m in e.mirrors.iter().filter(|m| m.pull_from.serves(by_digest)) {
                match rewrite(&m.location, rest) {
                    Some((host, repo)) => out.push(Target {
                        host,
                        repo,
                        insecure: m.insecure,
                        from_flag: false,
                    }),
                    None => {
                        tracing::debug!(mirror = %m.location, %name, "no repository name left at the mirror; skipped")
                    }
                }
            }
        }
    }
    out
}

/// Checks a `--mirror` value: `HOST[:PORT][/NAMESPACE]`.
pub fn parse_flag(s: &str) -> Result<String, String> {
    let l = location(s).map_err(|e| format!("--mirror {s:?}: {e}"))?;
    let host = l.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "--mirror {s:?}: expected HOST[:PORT][/NAMESPACE], as cache.lan:5000"
        ));
    }
    Ok(l)
}

/// The files that make the configuration, in the order they are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub main: PathBuf,
    /// The main file was named (by `--registries-conf` or
    /// `CONTAINERS_REGISTRIES_CONF`): its absence is an error.
    pub named: bool,
    /// Drop-in folders, each read in name order.
    pub dirs: Vec<PathBuf>,
}

pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";
pub const SYSTEM_DIR: &str = "/etc/containers/registries.conf.d";
const USER_FILE: &str = ".config/containers/registries.conf";
const USER_DIR: &str = ".config/containers/registries.conf.d";

/// Which files podman reads: the named file (`--registries-conf`, or
/// `CONTAINERS_REGISTRIES_CONF` in the environment) or else
/// `~/.config/containers/registries.conf` where it exists or else
/// `/etc/containers/registries.conf`; then the drop-ins of
/// `/etc/containers/registries.conf.d` and
/// `~/.config/containers/registries.conf.d`, only the latter when the
/// user's own main file is used.
pub fn files(named: Option<&Path>, home: Option<&Path>, exists: impl Fn(&Path) -> bool) -> Files {
    let user_dir = home.map(|h| h.join(USER_DIR));
    let both_dirs = || {
        std::iter::once(PathBuf::from(SYSTEM_DIR))
            .chain(user_dir.clone())
            .collect()
    };
    if let Some(named) = named {
        return Files {
            main: named.to_path_buf(),
            named: true,
            dirs: both_dirs(),
        };
    }
    if let Some(user) = home.map(|h| h.join(USER_FILE)).filter(|p| exists(p)) {
        return Files {
            main: user,
            named: false,
            dirs: user_dir.into_iter().collect(),
        };
    }
    Files {
        main: PathBuf::from(SYSTEM_FILE),
        named: false,
        dirs: both_dirs(),
    }
}

/// Reads and merges `files`. A main file that was not named may be
/// missing; a drop-in folder may be missing.
pub fn load(files: &Files) -> Result<Conf, String> {
    let read = |p: &Path| std::fs::read_to_string(p);
    let mut conf = match read(&files.main) {
        Ok(t) => Conf::parse(&t, &files.main.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !files.named => Conf::default(),
        Err(e) => return Err(format!("cannot read {}: {e}", files.main.display())),
    };
    for dir in &files.dirs {
        let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
        };
        names.sort();
        for p in names {
            match read(&p) {
                Ok(t) => conf.merge(Conf::parse(&t, &p.display().to_string())?),
                // Removed since it was listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot read {}: {e}", p.display())),
            }
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"

[[registry]]
location = "docker.io"

[[registry.mirror]]
location = "cache.lan:5000/hub"
insecure = true

[[registry.mirror]]
location = "mirror.example"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "registry.example/team"
location = "registry.example/team"
mirror-by-digest-only = true

[[registry.mirror]]
location = "cache.lan:5000/team/"

[[registry]]
prefix = "*.corp.example"
[[registry.mirror]]
location = "cache.corp.example"
pull-from-mirror = "tag-only"
"#;

    fn t(host: &str, repo: &str, insecure: bool, from_flag: bool) -> Target {
        Target {
            host: host.into(),
            repo: repo.into(),
            insecure,
            from_flag,
        }
    }

    #[test]
    fn prefixes_match_whole_components() {
        let table = [
            ("docker.io/library/alpine", "docker.io", Some(9)),
            ("docker.io", "docker.io", Some(9)),
            ("docker.iox/a", "docker.io", None),
            (
                "registry.example/team/app",
                "registry.example/team",
                Some(21),
            ),
            ("registry.example/teams/app", "registry.example/team", None),
            ("r.example:5000/a", "r.example", Some(9)),
            ("a.corp.example/x", "*.corp.example", Some(14)),
            ("b.a.corp.example/x", "*.corp.example", Some(16)),
            ("corp.example/x", "*.corp.example", None),
            ("other.example/a.corp.example", "*.corp.example", None),
            ("a.corp.examples/x", "*.corp.example", None),
        ];
        for (name, prefix, want) in table {
            assert_eq!(matching_prefix(name, prefix), want, "{name} ~ {prefix}");
        }
    }

    #[test]
    fn mirrors_are_chosen_by_the_longest_prefix_and_the_reference_kind() {
        let c = Conf::parse(EXAMPLE, "example").unwrap();
        // docker.io: both mirrors for digests, only the first for tags.
        assert_eq!(
            targets(&[], &c, "docker.io", "library/alpine", true),
            vec![
                t("cache.lan:5000", "hub/library/alpine", true, false),
                t("mirror.example", "library/alpine", false, false),
            ]
        );
        assert_eq!(
            targets(&[], &c, "docker.io", "library/alpine", false),
            vec![t("cache.lan:5000", "hub/library/alpine", true, false)]
        );
        // mirror-by-digest-only: tags from the registry itself.
        assert_eq!(
            targets(&[], &c, "registry.example", "team/app", true),
            vec![t("cache.lan:5000", "team/app", false, false)]
        );
        assert!(targets(&[], &c, "registry.example", "team/app", false).is_empty());
        // Outside the prefix: no mirrors.
        assert!(targets(&[], &c, "registry.example", "other/app", true).is_empty());
        // A wildcard, tag-only.
        assert_eq!(
            targets(&[], &c, "git.corp.example", "tools/x", false),
            vec![t("cache.corp.example", "tools/x", false, false)]
        );
        assert!(targets(&[], &c, "git.corp.example", "tools/x", true).is_empty());
        // --mirror first, with or without a namespace.
        let flags = vec!["fleet.lan:5000".to_string(), "hub.lan/ns".to_string()];
        assert_eq!(
            targets(&flags, &c, "registry.example", "team/app", false),
            vec![
                t("fleet.lan:5000", "team/app", false, true),
                t("hub.lan", "ns/team/app", false, true),
            ]
        );
    }

    #[test]
    fn drop_ins_replace_entries_by_prefix() {
        let mut c = Conf::parse(EXAMPLE, "main").unwrap();
        let d = Conf::parse(
            "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"new.lan\"\n",
            "drop-in",
        )
        .unwrap();
        c.merge(d);
        assert_eq!(
            targets(&[], &c, "docker.io", "a", true),
            vec![t("new.lan", "a", false, false)]
        );
        // Other entries stay.
        assert_eq!(
            targets(&[], &c, "registry.example", "team/app", true).len(),
            1
        );
        assert!(c.has_mirrors_for("docker.io"));
        assert!(c.has_mirrors_for("registry.example"));
        assert!(c.has_mirrors_for("x.corp.example"));
        assert!(!c.has_mirrors_for("quay.io"));
    }

    #[test]
    fn the_first_entry_of_a_prefix_wins_within_a_file() {
        let c = Conf::parse(
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"a\"\n\
             [[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"b\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(targets(&[], &c, "r.io", "x", true)[0].host, "a");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let bad = [
            ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
            ("[[registry]]\nlocation = \"https://r.io\"\n", "without http://"),
            (
                "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\ninsecure = true\n",
                "no location",
            ),
            (
                "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
                "expected \"all\"",
            ),
            (
                "[[registry]]\nlocation = \"r.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n",
                "cannot both be set",
            ),
            (
                "[[registry]]\nlocation = \"r.io\"\npull-from-mirror = \"all\"\n",
                "belongs in a [[registry.mirror]]",
            ),
            ("[[registry]]\nprefix = \"*.r.io:5000\"\n", "wildcard prefix"),
            ("[[registry]\n", "f.conf"),
        ];
        for (text, want) in bad {
            let e = Conf::parse(text, "f.conf").unwrap_err();
            assert!(e.contains(want) && e.starts_with("f.conf"), "{text:?}: {e}");
        }
        // Version 1 tables and other keys are not about mirrors.
        let v1 = "[registries.search]\nregistries = ['docker.io']\n[registries.insecure]\nregistries = []\n";
        assert_eq!(Conf::parse(v1, "v1").unwrap(), Conf::default());
    }

    #[test]
    fn mirror_flags_are_checked() {
        assert_eq!(parse_flag("cache.lan:5000/").unwrap(), "cache.lan:5000");
        assert_eq!(parse_flag("cache.lan/ns").unwrap(), "cache.lan/ns");
        assert!(parse_flag("http://cache.lan")
            .unwrap_err()
            .contains("http://"));
        assert!(parse_flag("/ns").is_err());
        assert!(parse_flag("").is_err());
    }

    #[test]
    fn files_are_chosen_as_podman_chooses_them() {
        let home = Path::new("/home/u");
        let none = |_: &Path| false;
        let user_file = |p: &Path| p == Path::new("/home/u/.config/containers/registries.conf");
        let system = Files {
            main: SYSTEM_FILE.into(),
            named: false,
            dirs: vec![
                SYSTEM_DIR.into(),
                "/home/u/.config/containers/registries.conf.d".into(),
            ],
        };
        assert_eq!(files(None, Some(home), none), system);
        assert_eq!(
            files(None, Some(home), user_file),
            Files {
                main: "/home/u/.config/containers/registries.conf".into(),
                named: false,
                dirs: vec!["/home/u/.config/containers/registries.conf.d".into()],
            }
        );
        let named = files(Some(Path::new("/tmp/r.conf")), Some(home), user_file);
        assert_eq!(
            (named.main.to_str(), named.named),
            (Some("/tmp/r.conf"), true)
        );
        assert_eq!(named.dirs, system.dirs);
        let no_home = files(Some(Path::new("/a.conf")), None, none);
        assert_eq!(no_home.dirs, vec![PathBuf::from(SYSTEM_DIR)]);
    }

    #[test]
    fn load_reads_drop_ins_in_name_order_and_needs_a_named_file() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("registries.conf");
        let dir = d.path().join("registries.conf.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            &main,
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"main\"\n",
        )
        .unwrap();
        for (name, m) in [
            ("20-b.conf", "b"),
            ("10-a.conf", "a"),
            ("30-c.ignored", "c"),
        ] {
            std::fs::write(
                dir.join(name),
                format!(
                    "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"{m}\"\n"
                ),
            )
            .unwrap();
        }
        let f = Files {
            main: main.clone(),
            named: true,
            dirs: vec![dir.clone(), d.path().join("missing.d")],
        };
        let c = load(&f).unwrap();
        assert_eq!(targets(&[], &c, "r.io", "x", true)[0].host, "b");
        let gone = Files {
            main: d.path().join("nope.conf"),
            ..f.clone()
        };
        assert!(load(&gone).unwrap_err().contains("nope.conf"));
        let optional = Files {
            named: false,
            ..gone
        };
        assert_eq!(
            targets(&[], &load(&optional).unwrap(), "r.io", "x", true)[0].host,
            "b"
        );
    }
}
