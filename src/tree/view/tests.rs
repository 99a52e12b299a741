use super::*;
use crate::oci::{
    DOCKER_MANIFEST_MEDIA_TYPE, IMAGE_CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE, UNPACK_ANNOTATION,
};

fn d(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn layer(n: u8, title: Option<&str>, unpack: bool) -> serde_json::Value {
    let mut ann = serde_json::Map::new();
    if let Some(t) = title {
        ann.insert(TITLE_ANNOTATION.into(), t.into());
    }
    if unpack {
        ann.insert(UNPACK_ANNOTATION.into(), "true".into());
    }
    serde_json::json!({
        "mediaType": LAYER_MEDIA_TYPE,
        "digest": d(n), "size": n as u64 * 10, "annotations": ann
    })
}

fn manifest(config_mt: &str, layers: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": config_mt, "digest": d(200), "size": 7},
        "layers": layers,
    }))
    .unwrap()
}

fn names(m: &BTreeMap<String, Entry>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[test]
fn artifact_folder() {
    let bytes = manifest(
        IMAGE_CONFIG_MEDIA_TYPE,
        vec![
            layer(1, Some("a.txt"), false),
            layer(2, Some("bin/linux/amd64/oras"), false),
            layer(3, None, false),
        ],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.kind, Kind::Manifest);
    assert_eq!(
        names(&v.root),
        [
            "a.txt",
            "bin",
            "blobs",
            "config.json",
            "manifest.json",
            "referrers"
        ]
    );
    let path: Vec<String> = ["bin", "linux", "amd64", "oras"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(v.entry(&path), Some(&Entry::Blob(2)));
    let sha = v.dir(&["blobs".into(), "sha256".into()]).unwrap();
    assert_eq!(sha.len(), 4, "config and three layers");
    assert_eq!(v.names_of(&d(1).parse().unwrap()), 2);
    assert_eq!(v.names_of(&d(3).parse().unwrap()), 1);
    assert!(v.skipped.is_empty());
}

#[test]
fn a_chunk_list_is_linked_to_its_layer_and_is_no_titled_file() {
    let list = |n: u8, of: u8, media_type: &str| {
        serde_json::json!({
            "mediaType": media_type, "digest": d(n), "size": 100,
            "annotations": {crate::oci::CHUNKS_OF_ANNOTATION: d(of)}
        })
    };
    let bytes = manifest(
        IMAGE_CONFIG_MEDIA_TYPE,
        vec![
            layer(1, Some("big.bin"), false),
            layer(2, Some("other.bin"), false),
            list(9, 1, crate::oci::CHUNKS_MEDIA_TYPE),
            // Not a list (wrong media type), and a list of no layer here.
            list(8, 2, LAYER_MEDIA_TYPE),
            list(7, 5, crate::oci::CHUNKS_MEDIA_TYPE),
        ],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(
        names(&v.root),
        [
            "big.bin",
            "blobs",
            "config.json",
            "manifest.json",
            "other.bin",
            "referrers"
        ]
    );
    let big = &v.blobs[1];
    assert_eq!(
        big.chunk_list.as_ref().map(|l| l.digest.to_string()),
        Some(d(9))
    );
    assert!(v.blobs[2].chunk_list.is_none());
    let sha = v.dir(&["blobs".into(), "sha256".into()]).unwrap();
    assert!(sha.contains_key(&d(9)[7..]), "the list stays under blobs/");
}

#[test]
fn empty_config_is_hidden() {
    let bytes = manifest(EMPTY_CONFIG_MEDIA_TYPE, vec![]);
    let v = View::parse(&bytes, None).unwrap();
    assert!(!v.root.contains_key(CONFIG_JSON));
}

#[test]
fn unsafe_titles_are_not_named() {
    let table = [
        ("/etc/passwd", TitleRejection::Absolute),
        ("../escape", TitleRejection::UnsafeComponent("..".into())),
        ("a/./b", TitleRejection::UnsafeComponent(".".into())),
        ("a//b", TitleRejection::UnsafeComponent("".into())),
        (
            "nul\0byte",
            TitleRejection::UnsafeComponent("nul\0byte".into()),
        ),
    ];
    for (title, want) in table {
        assert_eq!(title_components(title).unwrap_err(), want, "{title:?}");
    }
    let long = "x".repeat(256);
    assert!(title_components(&long).is_err());
    assert!(title_components(&"x".repeat(255)).is_ok());
}

#[test]
fn reserved_duplicate_and_conflicting_titles() {
    let bytes = manifest(
        IMAGE_CONFIG_MEDIA_TYPE,
        vec![
            layer(1, Some("manifest.json"), false),
            layer(2, Some("blobs/sha256/x"), false),
            layer(3, Some("dup"), false),
            layer(4, Some("dup"), false),
            layer(5, Some("dup/inside"), false),
            layer(6, Some("../../etc/passwd"), false),
            layer(7, Some("dir"), true),
        ],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.root.get("dup"), Some(&Entry::Blob(3)), "first layer wins");
    assert_eq!(v.root.get("dir"), Some(&Entry::Unpacked(7)));
    assert_eq!(v.root.get("manifest.json"), Some(&Entry::ManifestJson));
    assert_eq!(v.skipped.len(), 5, "{:?}", v.skipped);
    // Every layer is still readable under blobs/.
    let sha = v.dir(&["blobs".into(), "sha256".into()]).unwrap();
    assert_eq!(sha.len(), 8);
}

#[test]
fn index_platform_names() {
    let child = |n: u8, p: Option<serde_json::Value>| {
        let mut c = serde_json::json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": d(n), "size": 100
        });
        if let Some(p) = p {
            c["platform"] = p;
        }
        c
    };
    let bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            child(1, Some(serde_json::json!({"os": "linux", "architecture": "amd64"}))),
            child(2, Some(serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"}))),
            child(3, Some(serde_json::json!({"os": "unknown", "architecture": "unknown"}))),
            child(4, Some(serde_json::json!({"os": "unknown", "architecture": "unknown"}))),
            child(5, None),
            child(6, Some(serde_json::json!({"os": "linux", "architecture": "amd64"}))),
            child(7, Some(serde_json::json!({"os": "../x", "architecture": "amd64"}))),
        ],
        "annotations": {"k": "v"}
    }))
    .unwrap();
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.kind, Kind::Index);
    assert_eq!(
        names(&v.root),
        [
            "linux-amd64",
            "linux-amd64-060606060606",
            "linux-arm-v7",
            "manifest.json",
            "referrers",
            "unknown-050505050505",
            "unknown-070707070707",
            "unknown-unknown",
            "unknown-unknown-040404040404",
        ]
    );
    assert_eq!(v.root.get("linux-arm-v7"), Some(&Entry::Child(1)));
    assert_eq!(v.children[1].platform_spec.as_deref(), Some("linux/arm/v7"));
    assert_eq!(v.annotations.get("k").map(String::as_str), Some("v"));
}

#[test]
fn docker_manifests_by_content_type() {
    let bytes = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8c8","size":5},"layers":[]}"#;
    let v = View::parse(bytes, Some(DOCKER_MANIFEST_MEDIA_TYPE)).unwrap();
    assert_eq!(v.kind, Kind::Manifest);
    assert!(v.root.contains_key(CONFIG_JSON));
    let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#;
    assert_eq!(View::parse(list, None).unwrap().kind, Kind::Index);
}

#[test]
fn unaddressable_layers_are_skipped_not_fatal() {
    let mut good = layer(1, Some("fine.txt"), false);
    good["size"] = 5.into();
    let bad1 = serde_json::json!({"mediaType": "x", "digest": "sha256:zz", "size": 1,
        "annotations": {TITLE_ANNOTATION: "bad.txt"}});
    let bad2 =
        serde_json::json!({"mediaType": "x", "digest": "sha256:../../../../etc/passwd", "size": 1});
    let bad3 = serde_json::json!({"mediaType": "x", "digest": d(9), "size": -5});
    let bytes = manifest(IMAGE_CONFIG_MEDIA_TYPE, vec![bad1, good, bad2, bad3]);
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.root.get("fine.txt"), Some(&Entry::Blob(1)));
    assert!(!v.root.contains_key("bad.txt"));
    assert_eq!(v.skipped.len(), 3, "{:?}", v.skipped);
}

#[test]
fn hostile_manifests_are_errors() {
    let table: Vec<(&[u8], &str)> = vec![
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (br#"{"schemaVersion":1,"fsLayers":[]}"#, "schemaVersion 1"),
        (br#"{"schemaVersion":2}"#, "neither"),
        (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:zz","size":1},"layers":[]}"#, "malformed"),
        (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":-1},"layers":[]}"#, "malformed"),
    ];
    for (bytes, want) in table {
        let e = View::parse(bytes, None).unwrap_err().to_string();
        assert!(e.contains(want), "{e} should mention {want}");
    }
}

/// Regression (issue 11, item 9): a descriptor claiming 2^60 bytes was
/// shown with that size and fetched. Over the 16 TiB limit it is left out
/// of the tree, said why, and the rest of the manifest still shows.
#[test]
fn absurd_sizes_are_skipped_before_any_request() {
    let bytes = br#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                 "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
      "layers": [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar",
         "digest": "sha256:0101010101010101010101010101010101010101010101010101010101010101",
         "size": 1152921504606846976,
         "annotations": {"org.opencontainers.image.title": "huge.bin"}},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar",
         "digest": "sha256:0202020202020202020202020202020202020202020202020202020202020202",
         "size": 17592186044417},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar",
         "digest": "sha256:0303030303030303030303030303030303030303030303030303030303030303",
         "size": 17592186044416,
         "annotations": {"org.opencontainers.image.title": "at-the-limit.bin"}},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar",
         "digest": "sha256:0404040404040404040404040404040404040404040404040404040404040404",
         "size": 5,
         "annotations": {"org.opencontainers.image.title": "fine.txt"}}
      ]
    }"#;
    let v = View::parse(bytes, None).unwrap();
    assert_eq!(
        names(&v.root),
        [
            "at-the-limit.bin",
            "blobs",
            "fine.txt",
            "manifest.json",
            "referrers"
        ]
    );
    let sizes: Vec<u64> = v.blobs.iter().map(|b| b.size).collect();
    assert_eq!(sizes, [2, 1 << 44, 5], "config, then the layers kept");
    let sha = v.dir(&["blobs".into(), "sha256".into()]).unwrap();
    assert!(!sha.contains_key(&"01".repeat(32)));
    assert!(!sha.contains_key(&"02".repeat(32)));
    assert_eq!(
        v.skipped,
        [
            "manifest descriptor layers[0] is unusable: size 1152921504606846976 is over \
             the 16 TiB limit",
            "manifest descriptor layers[1] is unusable: size 17592186044417 is over \
             the 16 TiB limit",
        ]
    );

    // In an index, such a child is skipped the same way.
    let index = br#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:0101010101010101010101010101010101010101010101010101010101010101",
         "size": 1152921504606846976, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": "sha256:0202020202020202020202020202020202020202020202020202020202020202",
         "size": 500, "platform": {"os": "linux", "architecture": "arm64"}}
      ]
    }"#;
    let v = View::parse(index, None).unwrap();
    assert_eq!(
        names(&v.root),
        ["linux-arm64", "manifest.json", "referrers"]
    );
    assert_eq!(v.skipped.len(), 1, "{:?}", v.skipped);
}

/// The names a literal index gives its children.
fn child_names(index: &str) -> Vec<(String, usize)> {
    let v = View::parse(index.as_bytes(), None).unwrap();
    v.root
        .iter()
        .filter_map(|(n, e)| match e {
            Entry::Child(i) => Some((n.clone(), *i)),
            _ => None,
        })
        .collect()
}

/// A Homebrew bottle index (the shape of ORAS issue #1053): one
/// `darwin/arm64` child per macOS release, told apart by `os.version`.
const HOMEBREW_INDEX: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:bba084a74022aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "size": 1203,
     "platform": {"architecture": "arm64", "os": "darwin", "os.version": "macOS 14"},
     "annotations": {"org.opencontainers.image.ref.name": "8.7.1.arm64_sonoma",
                     "sh.brew.bottle.digest": "1111111111111111111111111111111111111111111111111111111111111111"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:2bedd7c590d7bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "size": 1203,
     "platform": {"architecture": "arm64", "os": "darwin", "os.version": "macOS 13"},
     "annotations": {"org.opencontainers.image.ref.name": "8.7.1.arm64_ventura"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "size": 1203,
     "platform": {"architecture": "arm64", "os": "darwin", "os.version": "macOS 12"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", "size": 1203,
     "platform": {"architecture": "amd64", "os": "darwin", "os.version": "macOS 13"}},
    {"mediaType": "application/vnd.oci.image.manifest.v1+json",
     "digest": "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "size": 1203,
     "platform": {"architecture": "amd64", "os": "linux", "os.version": "Ubuntu 22.04"}}
  ]
}"#;

#[test]
fn homebrew_bottles_are_named_by_os_version() {
    let names = child_names(HOMEBREW_INDEX);
    assert_eq!(
        names,
        [
            ("darwin-amd64-macOS_13".to_string(), 3),
            ("darwin-arm64-macOS_12".to_string(), 2),
            ("darwin-arm64-macOS_13".to_string(), 1),
            ("darwin-arm64-macOS_14".to_string(), 0),
            ("linux-amd64-Ubuntu_22.04".to_string(), 4),
        ]
    );
    let v = View::parse(HOMEBREW_INDEX.as_bytes(), None).unwrap();
    assert_eq!(
        v.children[0].platform_spec.as_deref(),
        Some("darwin/arm64:macOS 14")
    );
}

#[test]
fn a_child_name_depends_only_on_its_own_entry() {
    let child = |hex: char, platform: &str| {
        format!(
            r#"{{"mediaType": "{MANIFEST_MEDIA_TYPE}", "digest": "sha256:{}", "size": 10, "platform": {platform}}}"#,
            hex.to_string().repeat(64)
        )
    };
    let index = |children: &[String]| {
        format!(
            r#"{{"schemaVersion": 2, "mediaType": "{INDEX_MEDIA_TYPE}", "manifests": [{}]}}"#,
            children.join(",")
        )
    };
    let win = child(
        'a',
        r#"{"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2113"}"#,
    );
    let win_older = child(
        'b',
        r#"{"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.5206"}"#,
    );
    let linux = child('c', r#"{"architecture": "amd64", "os": "linux"}"#);
    let alone = child_names(&index(std::slice::from_ref(&win)));
    assert_eq!(alone, [("windows-amd64-10.0.20348.2113".to_string(), 0)]);
    // siblings added before or after leave the name as it was
    let with_siblings = child_names(&index(&[win_older.clone(), linux.clone(), win.clone()]));
    assert_eq!(
        with_siblings,
        [
            ("linux-amd64".to_string(), 1),
            ("windows-amd64-10.0.17763.5206".to_string(), 0),
            ("windows-amd64-10.0.20348.2113".to_string(), 2),
        ]
    );
    // a platform repeated exactly is told apart by digest, the first keeps the name
    let again = child(
        'd',
        r#"{"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2113"}"#,
    );
    let repeated = child_names(&index(&[win, again, linux]));
    assert_eq!(
        repeated,
        [
            ("linux-amd64".to_string(), 2),
            ("windows-amd64-10.0.20348.2113".to_string(), 0),
            ("windows-amd64-10.0.20348.2113-dddddddddddd".to_string(), 1),
        ]
    );
}

#[test]
fn every_index_child_name_reads_back_as_its_platform() {
    // What the tree shows, commit reads back: a platform folder copied out
    // and in again makes the same platform (os.version only loses the
    // characters a name cannot hold).
    let v = View::parse(HOMEBREW_INDEX.as_bytes(), None).unwrap();
    for c in &v.children {
        let name = c.platform.as_deref().unwrap();
        let p = crate::oci::Platform::from_folder_name(name)
            .unwrap_or_else(|| panic!("{name} does not read back as a platform"));
        assert_eq!(p.folder_name(), name);
        assert_eq!(
            p.spec().replace(' ', "_"),
            c.platform_spec.as_deref().unwrap().replace(' ', "_")
        );
    }
}

fn model_layer(n: u8, media_type: &str, annotations: &[(&str, &str)]) -> serde_json::Value {
    let ann: serde_json::Map<String, serde_json::Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "mediaType": media_type,
        "digest": d(n), "size": n as u64 * 10, "annotations": ann
    })
}

#[test]
fn model_layers_are_named_by_their_filepath() {
    use crate::oci::{
        CNAI_MODEL_FILEPATH_ANNOTATION as CNAI, MODEL_CONFIG_MEDIA_TYPE,
        MODEL_FILEPATH_ANNOTATION as CNCF,
    };
    let bytes = manifest(
        MODEL_CONFIG_MEDIA_TYPE,
        vec![
            model_layer(
                1,
                "application/vnd.cncf.model.weight.v1.raw",
                &[(CNCF, "model.safetensors")],
            ),
            model_layer(
                2,
                "application/vnd.cncf.model.weight.v1.tar",
                &[(CNCF, "w/part-1.bin")],
            ),
            model_layer(
                3,
                "application/vnd.cncf.model.code.v1.tar+gzip",
                &[(CNCF, "code")],
            ),
            model_layer(
                4,
                "application/vnd.cncf.model.doc.v1.tar+zstd",
                &[(CNCF, "docs")],
            ),
            model_layer(
                5,
                "application/vnd.cnai.model.doc.v1.raw",
                &[(CNAI, "README.md")],
            ),
            // A title wins over a filepath.
            model_layer(
                6,
                "application/vnd.cncf.model.doc.v1.tar",
                &[(CNCF, "LICENSE"), (TITLE_ANNOTATION, "COPYING")],
            ),
            // A filepath on a layer of another media type: the file itself.
            model_layer(7, LAYER_MEDIA_TYPE, &[(CNCF, "extra.txt")]),
            // Unsafe and reserved filepaths are not shown.
            model_layer(
                8,
                "application/vnd.cncf.model.weight.v1.raw",
                &[(CNCF, "../x")],
            ),
            model_layer(
                9,
                "application/vnd.cncf.model.weight.v1.raw",
                &[(CNCF, "/abs")],
            ),
            model_layer(
                10,
                "application/vnd.cncf.model.weight.v1.raw",
                &[(CNCF, "blobs/y")],
            ),
            // No filepath and no title: only under blobs/.
            model_layer(11, "application/vnd.cncf.model.weight.v1.raw", &[]),
        ],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.root.get("model.safetensors"), Some(&Entry::Blob(1)));
    let w = v.dir(&["w".into()]).unwrap();
    assert_eq!(w.get("part-1.bin"), Some(&Entry::Archive(2)));
    assert_eq!(v.root.get("code"), Some(&Entry::Archive(3)));
    assert_eq!(v.root.get("docs"), Some(&Entry::Archive(4)));
    assert_eq!(v.root.get("README.md"), Some(&Entry::Blob(5)));
    assert_eq!(v.root.get("COPYING"), Some(&Entry::Blob(6)));
    assert_eq!(v.root.get("LICENSE"), None);
    assert_eq!(v.root.get("extra.txt"), Some(&Entry::Blob(7)));
    assert_eq!(v.skipped.len(), 3, "{:?}", v.skipped);
    assert!(
        v.skipped.iter().all(|s| s.contains("filepath")),
        "{:?}",
        v.skipped
    );
    assert_eq!(
        names(&v.root),
        [
            "COPYING",
            "README.md",
            "blobs",
            "code",
            "config.json",
            "docs",
            "extra.txt",
            "manifest.json",
            "model.safetensors",
            "referrers",
            "w"
        ]
    );
    assert_eq!(Entry::Archive(3).is_dir(), None);
    assert_eq!(Entry::Blob(1).is_dir(), Some(false));
}

#[test]
fn a_models_own_config_json_takes_the_name_from_the_manifest_config() {
    use crate::oci::{MODEL_CONFIG_MEDIA_TYPE, MODEL_FILEPATH_ANNOTATION as CNCF};
    let raw = "application/vnd.cncf.model.weight.config.v1.raw";
    let bytes = manifest(
        MODEL_CONFIG_MEDIA_TYPE,
        vec![model_layer(1, raw, &[(CNCF, "config.json")])],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.root.get("config.json"), Some(&Entry::Blob(1)));
    assert!(v.skipped.is_empty(), "{:?}", v.skipped);
    // The manifest's config is still under blobs/.
    let sha = v.dir(&["blobs".into(), "sha256".into()]).unwrap();
    assert_eq!(sha.get(&"c8".repeat(32)), Some(&Entry::Blob(0)));
    // Without such a layer, config.json is the manifest's config; a title
    // may not take it.
    let bytes = manifest(
        MODEL_CONFIG_MEDIA_TYPE,
        vec![
            model_layer(1, raw, &[(CNCF, "weights/config.json")]),
            layer(2, Some("config.json"), false),
        ],
    );
    let v = View::parse(&bytes, None).unwrap();
    assert_eq!(v.root.get("config.json"), Some(&Entry::Blob(0)));
    assert_eq!(v.skipped.len(), 1, "{:?}", v.skipped);
}
