//! Which staged folders are tags, and what committing each one takes.
//!
//! The rules (docs/commit.md):
//! - a staged folder is a tag folder when it changes an existing tag (it
//!   has a base), or holds a file or a platform folder (`linux-amd64`):
//!   `mkdir org/app` cannot be told from `mkdir org/app/v1` until something
//!   is put inside;
//! - its parent path, under the mount's prefix, is the repository and its
//!   name the tag; a tag folder outside any repository is skipped;
//! - a path inside a tag folder commits that tag; a path above tag folders
//!   commits every one below it, in name order, and the tags whose only
//!   changes are removals;
//! - tag folders do not nest: below a tag folder everything is content.
//!
//! The decisions are pure over [`Folders`], the shape of the staging area:
//! [`Staging`] is the real one, the tests use a literal tree.

use std::collections::{BTreeMap, BTreeSet};

use super::scan::{scan, StagedDir};
use super::{Error, Staging, State, META_DIR};
use crate::digest::Digest;
use crate::oci::Platform;
use crate::reference::{is_repository, is_tag};

/// What an entry of a staged folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A link or a special file: neither content nor a folder.
    Other,
}

/// The shape of the staging area, as the tag decisions see it.
pub trait Folders {
    /// The entries of the folder at the mount-relative path `rel` ("" is
    /// the root); none when there is no such folder.
    fn entries(&self, rel: &str) -> Vec<(String, EntryKind)>;
}

impl Folders for Staging {
    fn entries(&self, rel: &str) -> Vec<(String, EntryKind)> {
        let Ok(rd) = std::fs::read_dir(self.real(rel)) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| {
                let kind = match e.file_type() {
                    Ok(t) if t.is_file() => EntryKind::File,
                    Ok(t) if t.is_dir() => EntryKind::Dir,
                    _ => EntryKind::Other,
                };
                (e.file_name().to_string_lossy().into_owned(), kind)
            })
            .collect()
    }
}

/// One tag folder to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagJob {
    /// Mount-relative path of the tag folder.
    pub rel: String,
    pub repo: String,
    pub tag: String,
}

/// What [`find_tags`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub jobs: Vec<TagJob>,
    /// Tag folders outside any repository (their paths), left alone.
    pub skipped: Vec<String>,
}

impl Found {
    fn add(&mut self, prefix: Option<&str>, rel: &str) {
        match job_for(prefix, rel) {
            Some(j) => self.jobs.push(j),
            None => self.skipped.push(rel.to_string()),
        }
    }
}

/// The tag folders staged at or below `rel`, or the one `rel` is inside.
pub fn find_tags(folders: &impl Folders, state: &State, prefix: Option<&str>, rel: &str) -> Found {
    let mut found = Found::default();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for n in 1..=parts.len() {
        let p = parts[..n].join("/");
        if is_tag_dir(folders, state, &p) {
            found.add(prefix, &p);
            return found;
        }
    }
    walk(folders, state, prefix, &parts.join("/"), &mut found);
    // In-place changes whose tag folder holds no staged file (only removals).
    for p in state.bases.keys() {
        let under = rel.is_empty() || p == rel || p.starts_with(&format!("{rel}/"));
        let known = found.jobs.iter().any(|j| j.rel == *p) || found.skipped.contains(p);
        if under && !known {
            found.add(prefix, p);
        }
    }
    found
}

/// Whether the staged folder `rel` is a tag folder.
pub fn is_tag_dir(folders: &impl Folders, state: &State, rel: &str) -> bool {
    state.bases.contains_key(rel)
        || folders.entries(rel).iter().any(|(name, kind)| {
            name != META_DIR
                && match kind {
                    EntryKind::File => true,
                    EntryKind::Dir => Platform::from_folder_name(name).is_some(),
                    EntryKind::Other => false,
                }
        })
}

fn walk(folders: &impl Folders, state: &State, prefix: Option<&str>, rel: &str, out: &mut Found) {
    if !rel.is_empty() && is_tag_dir(folders, state, rel) {
        out.add(prefix, rel);
        return;
    }
    let mut names: Vec<String> = folders
        .entries(rel)
        .into_iter()
        .filter(|(n, k)| *k == EntryKind::Dir && n != META_DIR)
        .map(|(n, _)| n)
        .collect();
    names.sort();
    for n in names {
        let child = if rel.is_empty() {
            n
        } else {
            format!("{rel}/{n}")
        };
        walk(folders, state, prefix, &child, out);
    }
}

/// The repository and tag of the tag folder at `rel`: its parent path under
/// the prefix, and its name. `None` when they are not a repository and a tag.
pub fn job_for(prefix: Option<&str>, rel: &str) -> Option<TagJob> {
    let (parent, tag) = rel.rsplit_once('/').unwrap_or(("", rel));
    let repo = match (prefix, parent.is_empty()) {
        (Some(p), true) => p.to_string(),
        (Some(p), false) => format!("{p}/{parent}"),
        (None, _) => parent.to_string(),
    };
    if repo.is_empty() || !is_repository(&repo) || !is_tag(tag) {
        return None;
    }
    Some(TagJob {
        rel: rel.to_string(),
        repo,
        tag: tag.to_string(),
    })
}

/// What committing one tag folder takes: its staged files, the manifest it
/// changes (if any), and the removals and attributes recorded below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub dir: StagedDir,
    pub base: Option<Digest>,
    /// Paths relative to the tag folder.
    pub removed: BTreeSet<String>,
    /// `user.oci.*` attributes by path relative to the tag folder ("" = the folder).
    pub xattrs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Change {
    /// Reads the change of the tag folder `rel`: hashes its staged files.
    /// `chunks`: also hash the 4 MiB chunks of large files (for chunk lists).
    pub fn read(
        staging: &Staging,
        state: &State,
        rel: &str,
        chunks: bool,
    ) -> Result<Change, Error> {
        let real = staging.real(rel);
        // A tag whose only changes are removals has no folder.
        let dir = if real.is_dir() {
            scan(&real, chunks).map_err(|source| Error { path: real, source })?
        } else {
            StagedDir::default()
        };
        Ok(Change::new(dir, state, rel))
    }

    /// The change of the tag folder `rel` whose staged files are `dir`.
    pub fn new(dir: StagedDir, state: &State, rel: &str) -> Change {
        Change {
            dir,
            base: state.bases.get(rel).cloned(),
            removed: state
                .removed
                .iter()
                .filter_map(|p| relative(p, rel))
                .map(str::to_string)
                .collect(),
            xattrs: state
                .xattrs
                .iter()
                .filter_map(|(p, v)| Some((relative(p, rel)?.to_string(), v.clone())))
                .collect(),
        }
    }
}

/// `path` relative to `rel`, when it is `rel` (then "") or below it.
fn relative<'a>(path: &'a str, rel: &str) -> Option<&'a str> {
    if path == rel {
        return Some("");
    }
    path.strip_prefix(rel)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staging area as a list of paths: `a/b/f` is a file (its folders
    /// exist), `a/b/` a folder, `a/l@` a link.
    struct Tree(BTreeMap<String, Vec<(String, EntryKind)>>);

    fn tree(paths: &[&str]) -> Tree {
        let mut t: BTreeMap<String, Vec<(String, EntryKind)>> = BTreeMap::new();
        let mut add = |parent: &str, name: &str, kind| {
            let e = t.entry(parent.to_string()).or_default();
            if !e.iter().any(|(n, _)| n == name) {
                e.push((name.to_string(), kind));
            }
        };
        for p in paths {
            let (p, last) = if let Some(d) = p.strip_suffix('/') {
                (d, EntryKind::Dir)
            } else if let Some(l) = p.strip_suffix('@') {
                (l, EntryKind::Other)
            } else {
                (*p, EntryKind::File)
            };
            let parts: Vec<&str> = p.split('/').collect();
            for i in 0..parts.len() {
                let kind = if i + 1 == parts.len() {
                    last
                } else {
                    EntryKind::Dir
                };
                add(&parts[..i].join("/"), parts[i], kind);
            }
        }
        Tree(t)
    }

    impl Folders for Tree {
        fn entries(&self, rel: &str) -> Vec<(String, EntryKind)> {
            self.0.get(rel).cloned().unwrap_or_default()
        }
    }

    fn state(bases: &[&str]) -> State {
        let mut s = State::default();
        for b in bases {
            s.bases.insert(b.to_string(), Digest::of(b.as_bytes()));
        }
        s
    }

    /// `repo:tag@rel` of each job.
    fn jobs(f: &Found) -> Vec<String> {
        f.jobs
            .iter()
            .map(|j| format!("{}:{}@{}", j.repo, j.tag, j.rel))
            .collect()
    }

    /// One row of `which_folders_are_tags`.
    struct Case {
        staged: &'static [&'static str],
        bases: &'static [&'static str],
        prefix: Option<&'static str>,
        rel: &'static str,
        jobs: &'static [&'static str],
        skipped: &'static [&'static str],
    }

    const NONE: Case = Case {
        staged: &[],
        bases: &[],
        prefix: None,
        rel: "",
        jobs: &[],
        skipped: &[],
    };

    #[test]
    fn which_folders_are_tags() {
        let table = [
            Case {
                staged: &["org/app/v1/a.txt"],
                jobs: &["org/app:v1@org/app/v1"],
                ..NONE
            },
            // a platform folder makes a tag; an empty or plain folder does not yet
            Case {
                staged: &["org/app/v1/linux-amd64/", "org/app/v2/docs/", "org/app/v3/"],
                jobs: &["org/app:v1@org/app/v1"],
                ..NONE
            },
            // a link is not content
            Case {
                staged: &["org/app/v1/l@"],
                ..NONE
            },
            // name order, and no tag inside a tag
            Case {
                staged: &["b/x/v1/f", "a/x/v1/f", "a/x/v1/sub/v2/f"],
                jobs: &["a/x:v1@a/x/v1", "b/x:v1@b/x/v1"],
                ..NONE
            },
            // a path inside a tag commits that tag alone
            Case {
                staged: &["org/app/v1/sub/a.txt", "org/app/v1/b.txt", "org/app/v2/c"],
                rel: "org/app/v1/sub",
                jobs: &["org/app:v1@org/app/v1"],
                ..NONE
            },
            // a path above tags commits those below it only
            Case {
                staged: &["org/app/v1/a", "org/web/v1/a"],
                rel: "org/web",
                jobs: &["org/web:v1@org/web/v1"],
                ..NONE
            },
            // the prefix is the repository path above the top folders
            Case {
                staged: &["v1/a.txt", "sub/v2/b"],
                prefix: Some("team"),
                jobs: &["team/sub:v2@sub/v2", "team:v1@v1"],
                ..NONE
            },
            // without a prefix a top folder is in no repository; bad names are skipped
            Case {
                staged: &["v1/a.txt", "Org/app/v1/a", "org/app/bad tag/a"],
                skipped: &["Org/app/v1", "org/app/bad tag", "v1"],
                ..NONE
            },
            // only removals: the base makes the tag, with or without a folder
            Case {
                staged: &["org/app/v1/"],
                bases: &["org/app/v1", "org/app/v9"],
                jobs: &["org/app:v1@org/app/v1", "org/app:v9@org/app/v9"],
                ..NONE
            },
            Case {
                bases: &["org/app/v9", "org/web/v1"],
                rel: "org/app",
                jobs: &["org/app:v9@org/app/v9"],
                ..NONE
            },
            // the staging area's own folder is not staged content
            Case {
                staged: &[".regfs/removed.json", "org/app/v1/.regfs/x/"],
                ..NONE
            },
        ];
        for c in table {
            let found = find_tags(&tree(c.staged), &state(c.bases), c.prefix, c.rel);
            let what = format!("{:?} {:?} {:?}", c.staged, c.bases, c.rel);
            assert_eq!(jobs(&found), c.jobs, "{what}");
            assert_eq!(found.skipped, c.skipped, "{what}");
        }
    }

    #[test]
    fn repository_and_tag_of_a_folder() {
        let table = [
            (None, "org/app/v1", Some(("org/app", "v1"))),
            (Some("team"), "v1", Some(("team", "v1"))),
            (Some("team"), "app/v1", Some(("team/app", "v1"))),
            (None, "v1", None),
            (None, "org/app/.hidden", None),
            (None, "Org/v1", None),
        ];
        for (prefix, rel, want) in table {
            let got = job_for(prefix, rel);
            assert_eq!(
                got.as_ref().map(|j| (j.repo.as_str(), j.tag.as_str())),
                want,
                "{prefix:?} {rel}"
            );
            if let Some(j) = got {
                assert_eq!(j.rel, rel);
            }
        }
    }

    #[test]
    fn a_change_takes_what_is_recorded_below_its_folder() {
        let mut s = state(&["org/app/v1"]);
        for p in [
            "org/app/v1/a.txt",
            "org/app/v1/sub/b",
            "org/app/v10/c",
            "org/web/v1",
        ] {
            s.removed.insert(p.into());
        }
        let attrs =
            |v: &str| BTreeMap::from([("user.oci.annotation.k".to_string(), v.to_string())]);
        for (p, v) in [
            ("org/app/v1", "tag"),
            ("org/app/v1/d.txt", "d"),
            ("org/app/v10", "x"),
        ] {
            s.xattrs.insert(p.into(), attrs(v));
        }
        let c = Change::new(StagedDir::default(), &s, "org/app/v1");
        assert_eq!(c.base, Some(Digest::of(b"org/app/v1")));
        assert_eq!(
            c.removed,
            BTreeSet::from(["a.txt".to_string(), "sub/b".to_string()])
        );
        assert_eq!(
            c.xattrs,
            BTreeMap::from([
                (String::new(), attrs("tag")),
                ("d.txt".to_string(), attrs("d"))
            ])
        );
        let none = Change::new(StagedDir::default(), &s, "org/app/v2");
        assert_eq!(none, Change::default());
    }
}
