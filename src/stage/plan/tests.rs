use super::*;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Default)]
struct Fake {
    manifests: HashMap<Digest, Base>,
    files: HashMap<PathBuf, Vec<u8>>,
}

impl Resolver for Fake {
    fn tarball(&mut self, dir: &StagedDir, name: &str) -> Result<Tarball, PlanError> {
        let d = Digest::of(format!("tar:{name}:{}", dir.files.len()).as_bytes());
        Ok(Tarball {
            path: PathBuf::from(format!("/tmp/{name}.tgz")),
            digest: d.clone(),
            size: 99,
            tar_digest: Digest::of(name.as_bytes()),
            chunks: Vec::new(),
        })
    }
    fn manifest(&mut self, d: &Digest) -> Result<Base, PlanError> {
        self.manifests
            .get(d)
            .cloned()
            .ok_or_else(|| PlanError::Resolve(format!("no {d}")))
    }
    fn read(&mut self, f: &StagedFile) -> Result<Vec<u8>, PlanError> {
        self.files
            .get(&f.path)
            .cloned()
            .ok_or_else(|| PlanError::Resolve("no file".into()))
    }
}

fn file(path: &str, content: &[u8]) -> StagedFile {
    StagedFile {
        path: PathBuf::from(path),
        digest: Digest::of(content),
        size: content.len() as u64,
        chunks: None,
    }
}

fn dir(files: &[(&str, &[u8])], dirs: Vec<(&str, StagedDir)>) -> StagedDir {
    StagedDir {
        path: PathBuf::from("/stage"),
        files: files
            .iter()
            .map(|(n, c)| (n.to_string(), file(&format!("/stage/{n}"), c)))
            .collect(),
        dirs: dirs.into_iter().map(|(n, d)| (n.to_string(), d)).collect(),
    }
}

fn settings() -> Settings {
    Settings {
        created: "2026-01-01T00:00:00Z".into(),
        ..Settings::default()
    }
}

fn input(d: &StagedDir) -> Input<'_> {
    Input {
        dir: d,
        base: None,
        removed: BTreeSet::new(),
        xattrs: BTreeMap::new(),
    }
}

fn top_json(p: &Plan) -> Value {
    serde_json::from_slice(&p.top().unwrap().bytes).unwrap()
}

#[test]
fn new_artifact_is_what_oras_push_writes() {
    let d = dir(
        &[("a.txt", b"alpha"), ("b.bin", b"beta")],
        vec![("docs", dir(&[("x", b"x")], vec![]))],
    );
    let p = plan(&input(&d), &settings(), &mut Fake::default()).unwrap();
    let m = top_json(&p);
    assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(m["artifactType"], DEFAULT_ARTIFACT_TYPE);
    assert_eq!(m["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
    assert_eq!(m["config"]["digest"], EMPTY_JSON_DIGEST);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(layers[0]["annotations"][TITLE_ANNOTATION], "a.txt");
    assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
    assert_eq!(layers[0]["digest"], Digest::of(b"alpha").to_string());
    assert_eq!(layers[2]["mediaType"], LAYER_GZIP_MEDIA_TYPE);
    assert_eq!(layers[2]["annotations"][UNPACK_ANNOTATION], "true");
    assert_eq!(layers[2]["annotations"][TITLE_ANNOTATION], "docs");
    assert_eq!(m["annotations"][CREATED_ANNOTATION], "2026-01-01T00:00:00Z");
    // The empty config, two files and the tarball.
    assert_eq!(p.blobs.len(), 4);
    assert_eq!(p.manifests.len(), 1);
    assert_eq!(p.top().unwrap().digest, Digest::of(&p.top().unwrap().bytes));
}

#[test]
fn platform_folders_make_an_index() {
    let d = dir(
        &[],
        vec![
            ("linux-amd64", dir(&[("tool", b"amd")], vec![])),
            ("linux-arm-v7", dir(&[("tool", b"arm")], vec![])),
        ],
    );
    let p = plan(&input(&d), &settings(), &mut Fake::default()).unwrap();
    assert_eq!(p.manifests.len(), 3);
    let idx = top_json(&p);
    assert_eq!(idx["mediaType"], INDEX_MEDIA_TYPE);
    let kids = idx["manifests"].as_array().unwrap();
    assert_eq!(
        kids[0]["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );
    assert_eq!(
        kids[1]["platform"],
        json!({"architecture": "arm", "os": "linux", "variant": "v7"})
    );
    let child: Value = serde_json::from_slice(&p.manifests[1].bytes).unwrap();
    assert_eq!(child["config"]["mediaType"], IMAGE_CONFIG_MEDIA_TYPE);
    assert_eq!(
        child["artifactType"], DEFAULT_ARTIFACT_TYPE,
        "as oras push --artifact-platform"
    );
    let config = p
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == child["config"]["digest"])
        .unwrap();
    assert_eq!(
        config.source,
        Source::Bytes(br#"{"architecture":"arm","os":"linux","variant":"v7"}"#.to_vec())
    );
}

#[test]
fn platform_folders_with_an_os_version() {
    let d = dir(
        &[],
        vec![
            (
                "windows-amd64-10.0.20348.2113",
                dir(&[("tool.exe", b"win")], vec![]),
            ),
            ("darwin-arm64-macOS_13", dir(&[("tool", b"mac")], vec![])),
            ("linux-arm-v7-3.2", dir(&[("tool", b"arm")], vec![])),
        ],
    );
    let p = plan(&input(&d), &settings(), &mut Fake::default()).unwrap();
    let idx = top_json(&p);
    let kids = idx["manifests"].as_array().unwrap();
    // folders in name order; an os.version written in the name is kept as written
    let platforms: Vec<String> = kids.iter().map(|k| k["platform"].to_string()).collect();
    assert_eq!(
        platforms,
        [
            r#"{"architecture":"arm64","os":"darwin","os.version":"macOS_13"}"#,
            r#"{"architecture":"arm","os":"linux","os.version":"3.2","variant":"v7"}"#,
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.20348.2113"}"#,
        ]
    );
    // each config is the same platform JSON, as oras push --artifact-platform writes it
    for (k, want) in kids.iter().zip(&platforms) {
        let child = p
            .manifests
            .iter()
            .find(|m| m.digest.to_string() == k["digest"])
            .unwrap();
        let child: Value = serde_json::from_slice(&child.bytes).unwrap();
        let config = p
            .blobs
            .iter()
            .find(|b| b.digest.to_string() == child["config"]["digest"])
            .unwrap();
        assert_eq!(config.source, Source::Bytes(want.as_bytes().to_vec()));
    }
    // the entry's keys in the order of `oras manifest index create`
    let keys: Vec<&str> = kids[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["mediaType", "digest", "size", "platform", "artifactType"]
    );
}

#[test]
fn bad_layouts_are_clear_errors() {
    let mixed = dir(
        &[("stray", b"s")],
        vec![("linux-amd64", dir(&[("t", b"t")], vec![]))],
    );
    let e = plan(&input(&mixed), &settings(), &mut Fake::default()).unwrap_err();
    assert!(e.to_string().contains("stray"), "{e}");
    let mixed = dir(
        &[],
        vec![
            ("linux-amd64", dir(&[("t", b"t")], vec![])),
            ("docs", dir(&[("t", b"t")], vec![])),
        ],
    );
    let e = plan(&input(&mixed), &settings(), &mut Fake::default()).unwrap_err();
    assert!(e.to_string().contains("not a platform folder"), "{e}");
    let empty = dir(&[], vec![]);
    assert!(plan(&input(&empty), &settings(), &mut Fake::default()).is_err());
    let reserved = dir(&[("config.json", b"{}")], vec![]);
    assert!(plan(&input(&reserved), &settings(), &mut Fake::default()).is_err());
}

fn base_manifest() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": "application/x-kept",
        "config": {"mediaType": "application/x-config", "digest": Digest::of(b"cfg").to_string(), "size": 3},
        "layers": [
            {"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(b"one").to_string(), "size": 3,
             "annotations": {TITLE_ANNOTATION: "one.txt", "keep": "me"}},
            {"mediaType": "application/x-untitled", "digest": Digest::of(b"raw").to_string(), "size": 3},
            {"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(b"two").to_string(), "size": 3,
             "annotations": {TITLE_ANNOTATION: "two.txt"}},
        ],
        "annotations": {CREATED_ANNOTATION: "2020-01-01T00:00:00Z", "x": "y"}
    }))
    .unwrap()
}

#[test]
fn changing_a_tag_keeps_everything_else() {
    let d = dir(&[("one.txt", b"ONE"), ("three.txt", b"three")], vec![]);
    let mut inp = input(&d);
    inp.base = Some(Base {
        digest: Digest::of(&base_manifest()),
        bytes: base_manifest(),
        media_type: None,
    });
    inp.removed.insert("two.txt".into());
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    let m = top_json(&p);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{layers:?}");
    assert_eq!(layers[0]["digest"], Digest::of(b"ONE").to_string());
    assert_eq!(layers[0]["annotations"]["keep"], "me");
    assert_eq!(layers[1]["mediaType"], "application/x-untitled");
    assert_eq!(layers[2]["annotations"][TITLE_ANNOTATION], "three.txt");
    assert_eq!(m["artifactType"], "application/x-kept");
    assert_eq!(m["config"]["digest"], Digest::of(b"cfg").to_string());
    assert_eq!(m["annotations"]["x"], "y");
    assert_eq!(m["annotations"][CREATED_ANNOTATION], "2020-01-01T00:00:00Z");
    let cfg = p
        .blobs
        .iter()
        .find(|b| b.digest == Digest::of(b"cfg"))
        .unwrap();
    assert_eq!(cfg.source, Source::Registry);
}

#[test]
fn unchanged_base_gives_the_same_bytes_back() {
    let d = dir(&[], vec![]);
    let mut inp = input(&d);
    inp.base = Some(Base {
        digest: Digest::of(&base_manifest()),
        bytes: base_manifest(),
        media_type: None,
    });
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    assert_eq!(p.top().unwrap().digest, Digest::of(&base_manifest()));
}

/// `base_manifest` as the ORAS Python SDK writes JSON: `", "` and `": "`.
fn spaced_base() -> Vec<u8> {
    let v: Value = serde_json::from_slice(&base_manifest()).unwrap();
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(&v, &mut ser).unwrap();
    let spaced = String::from_utf8(out)
        .unwrap()
        .replace(",\n", ", ")
        .replace('\n', "");
    assert!(spaced.contains(r#""schemaVersion": 2, "#), "{spaced}");
    spaced.into_bytes()
}

#[test]
fn an_edit_that_changes_nothing_plans_the_manifest_bytes_unchanged() {
    let bytes = spaced_base();
    let base = Base {
        digest: Digest::of(&bytes),
        bytes: bytes.clone(),
        media_type: None,
    };
    let ann =
        |k: &str, v: &str| BTreeMap::from([(format!("{ANNOTATION_XATTR}{k}"), v.to_string())]);
    /// What is staged, xattrs by path, whether the manifest changes.
    type Row = (
        StagedDir,
        Vec<(&'static str, BTreeMap<String, String>)>,
        bool,
    );
    let table: Vec<Row> = vec![
        // nothing staged
        (dir(&[], vec![]), vec![], false),
        // a copy of a file over itself
        (dir(&[("one.txt", b"one")], vec![]), vec![], false),
        // an annotation set to the value it has
        (
            dir(&[], vec![]),
            vec![("", ann("x", "y")), ("one.txt", ann("keep", "me"))],
            false,
        ),
        // something under referrers/ (not a layer)
        (
            dir(
                &[],
                vec![(
                    "referrers",
                    dir(&[], vec![("sig", dir(&[("s", b"s")], vec![]))]),
                )],
            ),
            vec![],
            false,
        ),
        // real changes: new bytes, a new annotation value, a new file
        (dir(&[("one.txt", b"ONE")], vec![]), vec![], true),
        (dir(&[], vec![]), vec![("", ann("x", "z"))], true),
        (dir(&[("new.txt", b"n")], vec![]), vec![], true),
    ];
    for (i, (d, xattrs, changes)) in table.into_iter().enumerate() {
        let mut inp = input(&d);
        inp.base = Some(base.clone());
        inp.xattrs = xattrs
            .into_iter()
            .map(|(p, a)| (p.to_string(), a))
            .collect();
        let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
        let top = p.top().unwrap();
        assert_eq!(top.digest != base.digest, changes, "row {i}");
        if changes {
            assert_eq!(top.digest, Digest::of(&top.bytes), "row {i}");
        } else {
            assert_eq!(
                top.bytes, bytes,
                "row {i}: the same bytes, not re-serialized"
            );
        }
    }
}

#[test]
fn an_index_whose_children_did_not_change_keeps_its_bytes() {
    let child = base_manifest();
    let cd = Digest::of(&child);
    let idx = format!(
        r#"{{"schemaVersion": 2, "mediaType": "{INDEX_MEDIA_TYPE}", "manifests": [{{"mediaType": "{MANIFEST_MEDIA_TYPE}", "digest": "{cd}", "size": {}, "platform": {{"architecture": "amd64", "os": "linux"}}}}], "annotations": {{"a": "b"}}}}"#,
        child.len()
    )
    .into_bytes();
    let mut fake = Fake::default();
    fake.manifests.insert(
        cd.clone(),
        Base {
            digest: cd.clone(),
            bytes: child,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        },
    );
    // the child folder staged with a copy of its own file
    let d = dir(
        &[],
        vec![("linux-amd64", dir(&[("one.txt", b"one")], vec![]))],
    );
    let mut inp = input(&d);
    inp.base = Some(Base {
        digest: Digest::of(&idx),
        bytes: idx.clone(),
        media_type: None,
    });
    let p = plan(&inp, &settings(), &mut fake).unwrap();
    assert_eq!(p.top().unwrap().bytes, idx);
    assert_eq!(p.manifests[0].digest, cd);
}

#[test]
fn xattrs_set_annotations_and_artifact_type() {
    let d = dir(&[("a.txt", b"a")], vec![]);
    let mut inp = input(&d);
    inp.xattrs.insert(
        String::new(),
        [
            (
                "user.oci.annotation.org.example.k".to_string(),
                "v".to_string(),
            ),
            (
                ARTIFACT_TYPE_XATTR.to_string(),
                "application/x-mine".to_string(),
            ),
        ]
        .into(),
    );
    inp.xattrs.insert(
        "a.txt".into(),
        [("user.oci.annotation.layer.k".to_string(), "lv".to_string())].into(),
    );
    let mut s = settings();
    s.annotations.insert(
        "$manifest".into(),
        [("from.file".to_string(), "1".to_string())].into(),
    );
    s.annotations.insert(
        "$config".into(),
        [("c".to_string(), "2".to_string())].into(),
    );
    let p = plan(&inp, &s, &mut Fake::default()).unwrap();
    let m = top_json(&p);
    assert_eq!(m["artifactType"], "application/x-mine");
    assert_eq!(m["annotations"]["org.example.k"], "v");
    assert_eq!(m["annotations"]["from.file"], "1");
    assert_eq!(m["layers"][0]["annotations"]["layer.k"], "lv");
    assert_eq!(m["config"]["annotations"]["c"], "2");
}

#[test]
fn verbatim_manifest_keeps_bytes_and_finds_blobs() {
    let bytes = base_manifest();
    let mut fake = Fake::default();
    fake.files
        .insert(PathBuf::from("/stage/manifest.json"), bytes.clone());
    let sha = dir(&[(&*Digest::of(b"cfg").hex().to_string(), b"cfg")], vec![]);
    let blobs = dir(&[], vec![("sha256", sha)]);
    let d = dir(
        &[
            ("manifest.json", &bytes),
            ("one.txt", b"one"),
            ("two.txt", b"two"),
        ],
        vec![("blobs", blobs)],
    );
    let p = plan(&input(&d), &settings(), &mut fake).unwrap();
    assert_eq!(p.top().unwrap().bytes, bytes);
    let src = |c: &[u8]| {
        p.blobs
            .iter()
            .find(|b| b.digest == Digest::of(c))
            .unwrap()
            .source
            .clone()
    };
    assert!(matches!(src(b"one"), Source::File(_)));
    assert!(matches!(src(b"cfg"), Source::File(_)));
    assert_eq!(src(b"raw"), Source::Registry);
    // A titled file that differs from its layer is refused.
    let d = dir(
        &[("manifest.json", &bytes), ("one.txt", b"changed")],
        vec![],
    );
    let e = plan(&input(&d), &settings(), &mut fake).unwrap_err();
    assert!(e.to_string().contains("one.txt"), "{e}");
}

#[test]
fn index_platform_add_and_remove() {
    let child = |c: &[u8]| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": IMAGE_CONFIG_MEDIA_TYPE, "digest": Digest::of(c).to_string(), "size": 1},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(c).to_string(), "size": 1,
                        "annotations": {TITLE_ANNOTATION: "tool"}}]
        }))
        .unwrap()
    };
    let (amd, arm) = (child(b"amd"), child(b"arm"));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": MANIFEST_MEDIA_TYPE, "digest": Digest::of(&amd).to_string(), "size": amd.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": MANIFEST_MEDIA_TYPE, "digest": Digest::of(&arm).to_string(), "size": arm.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
        "annotations": {"keep": "this"}
    }))
    .unwrap();
    let d = dir(
        &[],
        vec![("linux-s390x", dir(&[("tool", b"s390")], vec![]))],
    );
    let mut inp = input(&d);
    inp.base = Some(Base {
        digest: Digest::of(&index),
        bytes: index.clone(),
        media_type: None,
    });
    inp.removed.insert("linux-arm64".into());
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    let idx = top_json(&p);
    let kids = idx["manifests"].as_array().unwrap();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0]["digest"], Digest::of(&amd).to_string());
    assert_eq!(kids[1]["platform"]["architecture"], "s390x");
    assert_eq!(idx["annotations"]["keep"], "this");
    assert!(p
        .manifests
        .iter()
        .any(|m| m.existing && m.digest == Digest::of(&amd)));
}

/// A staged `referrers/<name>/` folder holding `files`.
fn referrers_dir(entries: Vec<(&str, StagedDir)>) -> StagedDir {
    dir(&[], vec![("referrers", dir(&[], entries))])
}

fn base_of(bytes: Vec<u8>) -> Base {
    Base {
        digest: Digest::of(&bytes),
        bytes,
        media_type: None,
    }
}

#[test]
fn a_new_folder_under_referrers_is_attached_and_the_subject_is_unchanged() {
    let d = referrers_dir(vec![("sbom", dir(&[("sbom.json", b"{}\n")], vec![]))]);
    let mut inp = input(&d);
    inp.base = Some(base_of(base_manifest()));
    inp.xattrs.insert(
        "referrers/sbom".into(),
        [(
            ARTIFACT_TYPE_XATTR.to_string(),
            "application/spdx+json".to_string(),
        )]
        .into(),
    );
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    // the subject is planned as it was: the tag will not move
    assert_eq!(p.top().unwrap().bytes, base_manifest());
    assert_eq!(p.referrers.len(), 1);
    let r: Value = serde_json::from_slice(&p.referrers[0].bytes).unwrap();
    assert_eq!(p.referrers[0].path, "referrers/sbom");
    // what `oras attach` writes, keys in its order
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "schemaVersion",
            "mediaType",
            "artifactType",
            "config",
            "layers",
            "subject",
            "annotations"
        ]
    );
    assert_eq!(r["artifactType"], "application/spdx+json");
    assert_eq!(
        r["subject"],
        json!({"mediaType": MANIFEST_MEDIA_TYPE,
               "digest": Digest::of(&base_manifest()).to_string(),
               "size": base_manifest().len()})
    );
    assert_eq!(r["layers"][0]["annotations"][TITLE_ANNOTATION], "sbom.json");
    assert_eq!(r["annotations"][CREATED_ANNOTATION], "2026-01-01T00:00:00Z");
    assert!(p.blobs.iter().any(|b| b.digest == Digest::of(b"{}\n")));
}

#[test]
fn referrers_of_a_new_tag_name_the_new_manifest_and_nest_subject_first() {
    let sig = dir(&[("sig", b"signature")], vec![]);
    let sbom = dir(
        &[("sbom.json", b"{}")],
        vec![("referrers", dir(&[], vec![("sig", sig)]))],
    );
    let d = dir(
        &[("a.txt", b"a")],
        vec![(
            "referrers",
            dir(&[], vec![("sbom", sbom), ("empty", dir(&[], vec![]))]),
        )],
    );
    let p = plan(&input(&d), &settings(), &mut Fake::default()).unwrap();
    assert_eq!(p.manifests.len(), 1, "the tag's own manifest only");
    let top = p.top().unwrap();
    let paths: Vec<&str> = p.referrers.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["referrers/sbom", "referrers/sbom/referrers/sig"]);
    let subject = |m: &Manifest| {
        let v: Value = serde_json::from_slice(&m.bytes).unwrap();
        v["subject"]["digest"].as_str().unwrap().to_string()
    };
    assert_eq!(subject(&p.referrers[0]), top.digest.to_string());
    assert_eq!(subject(&p.referrers[1]), p.referrers[0].digest.to_string());
}

#[test]
fn a_mirrored_referrer_is_pushed_verbatim() {
    // a referrer as the ORAS Python client wrote it, with its file
    let subject = Digest::of(&base_manifest());
    let file = b"signature".to_vec();
    let bytes = format!(
        r#"{{"schemaVersion": 2, "mediaType": "{MANIFEST_MEDIA_TYPE}", "artifactType": "application/x.sig", "config": {{"mediaType": "{EMPTY_CONFIG_MEDIA_TYPE}", "digest": "{EMPTY_JSON_DIGEST}", "size": 2}}, "layers": [{{"mediaType": "{LAYER_MEDIA_TYPE}", "digest": "{}", "size": 9, "annotations": {{"{TITLE_ANNOTATION}": "sig"}}}}], "subject": {{"mediaType": "{MANIFEST_MEDIA_TYPE}", "digest": "{subject}", "size": {}}}}}"#,
        Digest::of(&file),
        base_manifest().len()
    )
    .into_bytes();
    let rd = Digest::of(&bytes);
    let name = rd.to_string();
    let mirrored = dir(&[("manifest.json", &bytes), ("sig", &file)], vec![]);
    let d = referrers_dir(vec![(name.as_str(), mirrored)]);
    let mut fake = Fake::default();
    fake.files
        .insert(PathBuf::from("/stage/manifest.json"), bytes.clone());
    let mut inp = input(&d);
    inp.base = Some(base_of(base_manifest()));
    let p = plan(&inp, &settings(), &mut fake).unwrap();
    assert_eq!(p.referrers.len(), 1);
    assert_eq!(p.referrers[0].bytes, bytes);
    assert_eq!(p.referrers[0].digest, rd);
    let b = p
        .blobs
        .iter()
        .find(|b| b.digest == Digest::of(&file))
        .unwrap();
    assert_eq!(b.source, Source::File(PathBuf::from("/stage/sig")));
}

#[test]
fn a_copy_of_an_existing_referrer_plans_its_own_bytes() {
    let existing = spaced_base();
    let ed = Digest::of(&existing);
    let mut fake = Fake::default();
    fake.manifests.insert(ed.clone(), base_of(existing.clone()));
    let name = ed.to_string();
    let d = referrers_dir(vec![(name.as_str(), dir(&[("one.txt", b"one")], vec![]))]);
    let mut inp = input(&d);
    inp.base = Some(base_of(base_manifest()));
    let p = plan(&inp, &settings(), &mut fake).unwrap();
    assert_eq!(p.referrers.len(), 1);
    assert_eq!(p.referrers[0].bytes, existing);
}

#[test]
fn what_referrers_cannot_hold_is_a_clear_error() {
    let refused = |d: &StagedDir, removed: &[&str]| {
        let mut inp = input(d);
        inp.base = Some(base_of(base_manifest()));
        inp.removed = removed.iter().map(|s| s.to_string()).collect();
        plan(&inp, &settings(), &mut Fake::default())
            .unwrap_err()
            .to_string()
    };
    let stray = dir(&[], vec![("referrers", dir(&[("x", b"x")], vec![]))]);
    assert!(refused(&stray, &[]).contains("referrers/x"));
    let name = format!("referrers/{}", Digest::of(b"r"));
    let e = refused(&dir(&[], vec![]), &[name.as_str()]);
    assert!(e.contains("removing a referrer is not supported"), "{e}");
}

/// A staged file as large as `size` claims, with its chunk digests.
fn big_file(path: &str, seed: &[u8], size: u64) -> StagedFile {
    let n = size.div_ceil(crate::oci::CHUNK_SIZE);
    StagedFile {
        path: PathBuf::from(path),
        digest: Digest::of(seed),
        size,
        chunks: Some((0..n).map(|i| Digest::of(&i.to_le_bytes())).collect()),
    }
}

fn chunk_layers(m: &Value) -> Vec<&Value> {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == crate::oci::CHUNKS_MEDIA_TYPE)
        .collect()
}

const BIG: u64 = 20 << 20;

#[test]
fn a_large_layer_of_a_new_manifest_gets_a_chunk_list_layer() {
    let mut d = dir(&[("small.txt", b"small")], vec![]);
    d.files
        .insert("big.bin".into(), big_file("/stage/big.bin", b"big", BIG));
    let p = plan(&input(&d), &settings(), &mut Fake::default()).unwrap();
    let m = top_json(&p);
    let lists = chunk_layers(&m);
    assert_eq!(lists.len(), 1, "one list, for the one large layer");
    let l = lists[0];
    assert_eq!(
        l["annotations"][crate::oci::CHUNKS_OF_ANNOTATION],
        Digest::of(b"big").to_string()
    );
    assert!(l["annotations"].get(TITLE_ANNOTATION).is_none());
    assert_eq!(
        m["layers"].as_array().unwrap().last(),
        Some(l),
        "after the files"
    );
    let blob = p
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == l["digest"])
        .unwrap();
    let Source::Bytes(bytes) = &blob.source else {
        panic!("the list is planned from bytes")
    };
    let list = crate::oci::ChunkList::parse(bytes, &Digest::of(b"big"), BIG).unwrap();
    assert_eq!(list.chunks.len(), 5);
    assert_eq!(l["size"], bytes.len() as u64);
}

#[test]
fn a_change_keeps_the_lists_of_kept_layers_and_drops_the_others() {
    let list_of = |seed: &[u8]| {
        json!({"mediaType": crate::oci::CHUNKS_MEDIA_TYPE, "digest": Digest::of(&[seed, b"-list"].concat()).to_string(), "size": 500,
               "annotations": {crate::oci::CHUNKS_OF_ANNOTATION: Digest::of(seed).to_string()}})
    };
    let big = |seed: &[u8], title: &str| {
        json!({"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(seed).to_string(), "size": BIG,
               "annotations": {TITLE_ANNOTATION: title}})
    };
    let base = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/x-config", "digest": Digest::of(b"cfg").to_string(), "size": 3},
        "layers": [big(b"a", "a.bin"), big(b"b", "b.bin"), big(b"c", "c.bin"),
                   list_of(b"a"), list_of(b"b"), list_of(b"c")],
    }))
    .unwrap();
    let base = Base {
        digest: Digest::of(&base),
        bytes: base,
        media_type: None,
    };
    // Nothing changed: the same bytes (and no new list for anything).
    let d = dir(&[], vec![]);
    let mut inp = input(&d);
    inp.base = Some(base.clone());
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    assert_eq!(p.top().unwrap().digest, base.digest);
    // The same bytes staged again (a copy-up, `touch`): still unchanged.
    let mut d = dir(&[], vec![]);
    d.files
        .insert("a.bin".into(), big_file("/stage/a.bin", b"a", BIG));
    let mut inp = input(&d);
    inp.base = Some(base.clone());
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    assert_eq!(p.top().unwrap().digest, base.digest);
    // b.bin replaced, c.bin removed: a's list kept, b's new, c's gone.
    let mut d = dir(&[], vec![]);
    d.files
        .insert("b.bin".into(), big_file("/stage/b.bin", b"B", BIG));
    let mut inp = input(&d);
    inp.base = Some(base);
    inp.removed.insert("c.bin".into());
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    let m = top_json(&p);
    let covered: Vec<String> = chunk_layers(&m)
        .iter()
        .map(|l| {
            l["annotations"][crate::oci::CHUNKS_OF_ANNOTATION]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        covered,
        [Digest::of(b"a").to_string(), Digest::of(b"B").to_string()]
    );
    assert_eq!(chunk_layers(&m)[0], &list_of(b"a"), "kept as it was");
}

#[test]
fn a_large_layer_of_another_tool_gets_no_list_when_nothing_changed() {
    let base = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/x-config", "digest": Digest::of(b"cfg").to_string(), "size": 3},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(b"a").to_string(), "size": BIG,
                    "annotations": {TITLE_ANNOTATION: "a.bin"}}],
    }))
    .unwrap();
    let mut d = dir(&[("notes.txt", b"n")], vec![]);
    d.files
        .insert("a.bin".into(), big_file("/stage/a.bin", b"a", BIG));
    let mut inp = input(&d);
    inp.base = Some(Base {
        digest: Digest::of(&base),
        bytes: base,
        media_type: None,
    });
    let p = plan(&inp, &settings(), &mut Fake::default()).unwrap();
    let m = top_json(&p);
    assert_eq!(
        m["layers"].as_array().unwrap().len(),
        2,
        "a.bin and notes.txt"
    );
    assert!(chunk_layers(&m).is_empty());
}

#[test]
fn no_chunk_lists_means_none() {
    let mut d = dir(&[], vec![]);
    d.files
        .insert("big.bin".into(), big_file("/stage/big.bin", b"big", BIG));
    let s = Settings {
        no_chunk_lists: true,
        ..settings()
    };
    let p = plan(&input(&d), &s, &mut Fake::default()).unwrap();
    assert!(chunk_layers(&top_json(&p)).is_empty());
    assert_eq!(p.blobs.len(), 2, "the file and the empty config");
}
