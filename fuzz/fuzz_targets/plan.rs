//! The commit planner's inputs: a staged folder (names and contents as a
//! user may make them), the manifest it changes (any bytes a registry may
//! have), removals, `user.oci.*` attributes, an annotation file. Never a
//! panic; every manifest planned is valid JSON whose digest is its bytes'.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use regfs::digest::Digest;
use regfs::stage::plan::{plan, Base, Input, PlanError, Resolver, Settings};
use regfs::stage::scan::{StagedDir, StagedFile};
use regfs::stage::tarball::Tarball;

#[derive(Arbitrary, Debug)]
struct Case {
    base: Option<(Vec<u8>, u8)>,
    files: Vec<(String, Vec<u8>)>,
    /// What a staged `manifest.json` holds.
    manifest_json: Vec<u8>,
    removed: Vec<String>,
    xattrs: Vec<(String, String, String)>,
    artifact_type: Option<String>,
    annotations: Vec<(String, String, String)>,
    no_chunk_lists: bool,
}

const TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/octet-stream",
];

/// A folder name as a file system can hold it.
fn real_name(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('\0') && c.len() <= 255
}

fn insert(dir: &mut StagedDir, path: &[&str], rel: &str, data: &[u8]) {
    match path {
        [] => {}
        [name] => {
            if !dir.dirs.contains_key(*name) {
                dir.files.insert(
                    name.to_string(),
                    StagedFile {
                        path: dir.path.join(name),
                        digest: Digest::of(data),
                        size: data.len() as u64,
                        chunks: None,
                    },
                );
            }
        }
        [name, rest @ ..] => {
            if dir.files.contains_key(*name) {
                return;
            }
            let sub = dir
                .dirs
                .entry(name.to_string())
                .or_insert_with(|| StagedDir {
                    path: dir.path.join(name),
                    ..StagedDir::default()
                });
            insert(sub, rest, rel, data);
        }
    }
}

struct Fake<'a> {
    manifest_json: &'a [u8],
}

impl Resolver for Fake<'_> {
    fn tarball(&mut self, dir: &StagedDir, name: &str) -> Result<Tarball, PlanError> {
        let tgz = format!("{name}.tar.gz");
        Ok(Tarball {
            path: dir.path.clone(),
            digest: Digest::of(tgz.as_bytes()),
            size: tgz.len() as u64,
            tar_digest: Digest::of(name.as_bytes()),
            chunks: Vec::new(),
        })
    }

    fn manifest(&mut self, digest: &Digest) -> Result<Base, PlanError> {
        Err(PlanError::Resolve(format!(
            "{digest} is not in this registry"
        )))
    }

    fn read(&mut self, _: &StagedFile) -> Result<Vec<u8>, PlanError> {
        Ok(self.manifest_json.to_vec())
    }
}

fuzz_target!(|case: Case| {
    let mut dir = StagedDir {
        path: PathBuf::from("/staged/repo/tag"),
        ..StagedDir::default()
    };
    for (path, data) in case.files.iter().take(64) {
        let parts: Vec<&str> = path.split('/').take(8).collect();
        if parts.iter().all(|c| real_name(c)) {
            insert(&mut dir, &parts, path, data);
        }
    }
    let base = case.base.map(|(bytes, t)| Base {
        digest: Digest::of(&bytes),
        bytes,
        media_type: Some(TYPES[t as usize % TYPES.len()].to_string()),
    });
    let mut xattrs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (path, k, v) in case.xattrs {
        xattrs.entry(path).or_default().insert(k, v);
    }
    let mut annotations: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (title, k, v) in case.annotations {
        annotations.entry(title).or_default().insert(k, v);
    }
    let input = Input {
        dir: &dir,
        base,
        removed: case.removed.into_iter().collect::<BTreeSet<_>>(),
        xattrs,
    };
    let settings = Settings {
        created: "2024-05-06T07:08:09Z".into(),
        artifact_type: case.artifact_type,
        annotations,
        no_chunk_lists: case.no_chunk_lists,
    };
    let mut fake = Fake {
        manifest_json: &case.manifest_json,
    };
    if let Ok(p) = plan(&input, &settings, &mut fake) {
        for m in p.manifests.iter().chain(&p.referrers) {
            assert_eq!(m.digest, Digest::of(&m.bytes), "{}", m.path);
            if !m.existing {
                serde_json::from_slice::<serde_json::Value>(&m.bytes)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", m.path));
            }
        }
    }
});
