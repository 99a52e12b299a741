//! Hostile referrer graphs (issue 11, item 9b) against a real
//! docker-registry, which has no referrers API: the `sha256-<hex>` tag
//! schema, whose index can list anything. Manifests and indexes are written
//! by hand. `find` of the tag must end, show each manifest at most once on
//! any path, and show a referrer only under the manifest its `subject`
//! names.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const REPO: &str = "cyc";

/// Puts `value` as `REPO:reference` (a tag, or its own digest when
/// `reference` is `None`); returns its descriptor.
fn put(reg: &Registry, reference: Option<&str>, value: &Value) -> Value {
    let bytes = serde_json::to_vec(value).unwrap();
    let media_type = value["mediaType"].as_str().unwrap();
    let digest = sha256_bytes(&bytes);
    reg.push_manifest(REPO, reference.unwrap_or(&digest), &bytes, media_type);
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// An artifact manifest with one titled file, referring to `subject`.
fn artifact(reg: &Registry, file: &str, subject: Option<&Value>) -> Value {
    let config = reg.push_blob(REPO, b"{}");
    let layer = reg.push_blob(REPO, file.as_bytes());
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": MT_OCI_EMPTY, "digest": config, "size": 2},
        "layers": [{
            "mediaType": MT_OCI_LAYER_TAR,
            "digest": layer,
            "size": file.len(),
            "annotations": {"org.opencontainers.image.title": file},
        }],
    });
    if let Some(s) = subject {
        m["subject"] = s.clone();
    }
    m
}

/// The `sha256-<hex>` tag of `subject`, listing `listed`.
fn referrers_tag(reg: &Registry, subject: &Value, listed: &[&Value]) {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": listed,
    });
    let tag = format!("sha256-{}", hex(subject["digest"].as_str().unwrap()));
    put(reg, Some(&tag), &index);
}

fn short(d: &Value) -> String {
    d["digest"].as_str().unwrap().to_string()
}

/// Regression (issue 11, item 9b): a `sha256-<A>` tag listing A itself
/// showed A as its own referrer, and cycles were walked until the kernel's
/// path limits.
#[test]
fn find_of_a_tag_with_a_hostile_referrer_graph_ends_and_shows_each_manifest_once() {
    let reg = Registry::start();
    let a = put(&reg, Some("v1"), &artifact(&reg, "a.txt", None));
    // B refers to A and lists A as its child: A/referrers/B/linux-amd64 is A.
    let mut child = a.clone();
    child["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let b = put(
        &reg,
        None,
        &json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "subject": a,
            "manifests": [child],
        }),
    );
    let c = put(&reg, None, &artifact(&reg, "c.sig", Some(&b)));
    // A's tag lists A itself, B, and C (which refers to B); B's and C's
    // tags list each other and A: a cycle of two, and loops back to A.
    referrers_tag(&reg, &a, &[&a, &b, &c]);
    referrers_tag(&reg, &b, &[&c, &a]);
    referrers_tag(&reg, &c, &[&b, &a]);

    let m = Mount::new(&reg.host(), &["--timeout", "5"]);
    let t = Instant::now();
    let out = run_timeout(
        Command::new("find").arg(m.join(REPO)).args(["-type", "d"]),
        Duration::from_secs(60),
    );
    let took = t.elapsed();
    let root = m.join(REPO).display().to_string();
    let mut dirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.strip_prefix(&root).unwrap_or(l).to_string())
        .collect();
    dirs.sort();
    let (sa, sb, sc) = (short(&a), short(&b), short(&c));
    let want: Vec<String> = vec![
        String::new(),
        "/v1".into(),
        "/v1/blobs".into(),
        "/v1/blobs/sha256".into(),
        "/v1/referrers".into(),
        format!("/v1/referrers/{sb}"),
        format!("/v1/referrers/{sb}/referrers"),
        format!("/v1/referrers/{sb}/referrers/{sc}"),
        format!("/v1/referrers/{sb}/referrers/{sc}/blobs"),
        format!("/v1/referrers/{sb}/referrers/{sc}/blobs/sha256"),
        format!("/v1/referrers/{sb}/referrers/{sc}/referrers"),
    ];
    assert_eq!(dirs, want, "find took {took:?}");
    assert!(!dirs.iter().any(|d| d.contains(&sa)));
    // The cut child is not reachable by name either; from B's own folder,
    // A shows once as its platform child, and B not again below it.
    let cut = m.join(&format!("{REPO}/v1/referrers/{sb}/linux-amd64"));
    let stat = bounded("stat", OP, move || std::fs::metadata(cut));
    assert_eq!(errno(&stat.unwrap_err()), 2);
    let from_b = m.join(&format!("{REPO}/@{sb}"));
    assert_eq!(
        try_ls(&from_b.join("linux-amd64")).unwrap(),
        vec!["a.txt", "blobs", "manifest.json", "referrers"]
    );
    assert_eq!(
        try_ls(&from_b.join("linux-amd64/referrers")).unwrap(),
        Vec::<String>::new()
    );
    eprintln!("find of the tag: {} folders in {took:?}", dirs.len());
    finish(m);
}
