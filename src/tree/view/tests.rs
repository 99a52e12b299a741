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
