//! Integration tests: real docker-registry, the real ORAS CLI and Python
//! client, skopeo and crane, and the regfs binary mounted through FUSE.
//!
//! Section 1 checks the test support code itself (tests/support), so that a
//! failing regfs test can be trusted to be about regfs. Section 2 holds the
//! regfs tests.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

// ======================================================================
// Section 1: smoke tests of tests/support
// ======================================================================

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("regfs-test-")
        .tempdir()
        .unwrap()
}

/// Pushes a small artifact (two files, one nested, one folder) to `host`
/// as `repo:tag`; returns (workdir, digest).
fn push_sample(host: &str, reference: &str) -> (tempfile::TempDir, String) {
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello world\n");
    write_file(w.path(), "bin/linux/amd64/tool", "#!/bin/sh\necho tool\n");
    write_file(w.path(), "docs/readme.md", "# docs\n");
    write_file(w.path(), "docs/sub/deep.txt", "deep\n");
    let d = oras_push(
        host,
        reference,
        &["hello.txt", "bin/linux/amd64/tool", "docs"],
        w.path(),
    );
    (w, d)
}

#[test]
fn support_hashing_and_random_files() {
    assert_eq!(
        sha256_bytes(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(sha256_bytes(b"{}"), EMPTY_CONFIG_DIGEST);
    let d = tmpdir();
    make_random_file(d.path().join("a"), 3 * 1024 * 1024 + 5, 7);
    make_random_file(d.path().join("b"), 3 * 1024 * 1024 + 5, 7);
    make_random_file(d.path().join("c"), 3 * 1024 * 1024 + 5, 8);
    assert_eq!(
        fs::metadata(d.path().join("a")).unwrap().len(),
        3 * 1024 * 1024 + 5
    );
    assert_eq!(
        sha256_file(d.path().join("a")),
        sha256_file(d.path().join("b"))
    );
    assert_ne!(
        sha256_file(d.path().join("a")),
        sha256_file(d.path().join("c"))
    );
    assert_eq!(
        sha256_file(d.path().join("a")),
        sha256_bytes(&fs::read(d.path().join("a")).unwrap())
    );
}

#[test]
fn support_run_reports_failures_and_timeouts() {
    let out = run(Command::new("sh").args(["-c", "echo out; echo err >&2"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    let e = std::panic::catch_unwind(|| {
        run(Command::new("sh").args(["-c", "echo OUT; echo ERR >&2; exit 3"]))
    })
    .expect_err("run must panic on failure");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("exit status: 3") && msg.contains("OUT") && msg.contains("ERR"),
        "{msg}"
    );
    let t = Instant::now();
    assert!(try_run(Command::new("sleep").arg("30"), Duration::from_millis(300)).is_err());
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn support_finds_the_pinned_oras_cli_and_crane() {
    let v = oras(&["version"]);
    assert!(
        v.lines().next() == Some(&format!("Version:    {ORAS_VERSION}")[..]),
        "oras version:\n{v}"
    );
    assert_eq!(crane(&["version"]).trim(), CRANE_VERSION);
}

#[test]
fn registry_starts_answers_and_stops() {
    let mut reg = Registry::start();
    let r = http_get(&reg.host(), "/v2/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );
    assert!(reg.catalog().is_empty());
    let host = reg.host();
    push_sample(&host, "org/app:v1");
    assert_eq!(reg.catalog(), vec!["org/app".to_string()]);
    assert_eq!(reg.tags("org/app"), vec!["v1".to_string()]);
    // deletes are enabled (a distinct manifest: deleting a digest untags
    // every tag pointing at it)
    let w = tmpdir();
    write_file(w.path(), "other.txt", "other\n");
    let d2 = oras_push(&host, "org/app:v2", &["other.txt"], w.path());
    let del = reg.request("DELETE", &format!("/v2/org/app/manifests/{d2}"), &[], &[]);
    assert_eq!(del.status, 202, "{}", del.text());
    // stop / restart keep the storage and the port
    reg.stop();
    assert!(
        TcpStream::connect(&host).is_err(),
        "registry still listening after stop"
    );
    reg.restart();
    assert_eq!(reg.host(), host);
    assert_eq!(reg.tags("org/app"), vec!["v1".to_string()]);
    drop(reg);
    assert!(
        TcpStream::connect(&host).is_err(),
        "registry still listening after drop"
    );
}

/// scripts/gen_registry.py (the large registry of bench 12) writes a
/// storage tree docker-registry serves: catalog, tags, a manifest per tag
/// and the shared blobs.
#[test]
fn gen_registry_writes_a_tree_docker_registry_serves() {
    let mut reg = Registry::start();
    reg.stop();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen_registry.py");
    run(Command::new("python3")
        .arg(&script)
        .arg(reg.storage_dir())
        .args([
            "--repos",
            "3",
            "--tags",
            "4",
            "--big-tags",
            "25",
            "--prefix",
            "g",
        ]));
    reg.restart();
    assert_eq!(reg.catalog(), ["g/big", "g/r0000", "g/r0001", "g/r0002"]);
    assert_eq!(reg.tags("g/r0001"), ["t000", "t001", "t002", "t003"]);
    assert_eq!(reg.tags("g/big").len(), 25);
    let m = fetch_manifest(&reg.host(), "g/r0001", "t002");
    assert_eq!(m.json["annotations"]["dev.regfs.bench.ref"], "g/r0001:t002");
    let other = fetch_manifest(&reg.host(), "g/big", "t00024");
    assert_ne!(m.digest, other.digest);
    let layer = m.json["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(
        fetch_blob(&reg.host(), "g/big", layer),
        b"layer a of every generated artifact\n"
    );
}

#[test]
fn registry_with_basic_auth() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret");
    let r = http_get(&reg.host(), "/v2/").unwrap();
    assert_eq!(r.status, 401);
    assert!(
        r.header("WWW-Authenticate")
            .unwrap_or_default()
            .starts_with("Basic"),
        "{:?}",
        r.headers
    );
    let ok = http_request(
        &reg.host(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_auth("alice", "s3cret"))],
        &[],
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    let bad = http_request(
        &reg.host(),
        "GET",
        "/v2/",
        &[("Authorization", &basic_auth("alice", "nope"))],
        &[],
    )
    .unwrap();
    assert_eq!(bad.status, 401);

    let w = tmpdir();
    write_file(w.path(), "f.txt", "secret file\n");
    let opts = PushOpts {
        creds: Some(("alice".into(), "s3cret".into())),
        ..Default::default()
    };
    let digest = oras_push_with(&reg.host(), "private:v1", &["f.txt"], w.path(), &opts);
    let m = fetch_manifest_with(&reg.host(), "private", "v1", reg.creds());
    assert_eq!(m.digest, digest);
    assert_eq!(reg.tags("private"), vec!["v1"]);
    // without credentials the push is refused, quickly
    let t = Instant::now();
    let mut c = Command::new("python3");
    c.arg(push_oras_script())
        .args(["push", &reg.host(), "private:v2", "f.txt"])
        .current_dir(w.path());
    let out = run_unchecked(&mut c);
    assert!(!out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "unauthenticated push took {:?}",
        t.elapsed()
    );
    // skopeo with --creds reads it
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "alice:s3cret",
        &format!("docker://{}/private:v1", reg.host()),
    ]);
    assert_eq!(sha256_bytes(raw.as_bytes()), digest);
}

#[test]
fn oras_push_pull_and_skopeo_inspect() {
    let reg = Registry::start();
    let host = reg.host();
    let (w, digest) = push_sample(&host, "org/app:v1");

    // skopeo sees exactly the bytes the registry serves
    let raw = skopeo_inspect_raw(&host, "org/app:v1");
    assert_eq!(sha256_bytes(&raw), digest);
    let m = fetch_manifest(&host, "org/app", "v1");
    assert_eq!(m.bytes, raw);
    assert_eq!(m.media_type, MT_OCI_MANIFEST);
    assert_eq!(fetch_manifest(&host, "org/app", &digest).bytes, raw);

    // ORAS CLI conventions
    let j = &m.json;
    assert_eq!(j["artifactType"], "application/vnd.unknown.artifact.v1");
    assert_eq!(j["config"]["mediaType"], MT_OCI_EMPTY);
    assert_eq!(j["config"]["digest"], EMPTY_CONFIG_DIGEST);
    assert!(j["annotations"]["org.opencontainers.image.created"].is_string());
    let layers = j["layers"].as_array().unwrap();
    let titles: Vec<&str> = layers
        .iter()
        .map(|l| l["annotations"][ANNOTATION_TITLE].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["hello.txt", "bin/linux/amd64/tool", "docs"]);
    assert_eq!(layers[0]["mediaType"], MT_OCI_LAYER_TAR);
    assert_eq!(layers[0]["digest"], sha256_file(w.path().join("hello.txt")));
    assert_eq!(layers[0]["size"], 12);
    assert_eq!(layers[2]["mediaType"], MT_OCI_LAYER_TGZ);
    assert_eq!(
        layers[2]["annotations"]["io.deis.oras.content.unpack"],
        "true"
    );
    // every blob is there and verifies
    for l in layers {
        fetch_blob(&host, "org/app", l["digest"].as_str().unwrap());
    }
    fetch_blob(&host, "org/app", EMPTY_CONFIG_DIGEST);

    // the reference reader gives back the same files
    let out = tmpdir();
    let pulled = oras_pull(&host, "org/app:v1", out.path());
    assert_eq!(pulled, ["hello.txt", "bin/linux/amd64/tool", "docs"]);
    for f in [
        "hello.txt",
        "bin/linux/amd64/tool",
        "docs/readme.md",
        "docs/sub/deep.txt",
    ] {
        assert_eq!(
            fs::read(out.path().join(f)).unwrap(),
            fs::read(w.path().join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn oras_push_options_referrers_and_index() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "A\n");
    write_file(w.path(), "cfg.json", "{\"k\":1}");
    write_file(w.path(), "evil", "x");
    write_file(
        w.path(),
        "ann.json",
        r#"{"$manifest":{"m":"1"},"$config":{"c":"2"},"a.txt":{"t":"3"}}"#,
    );

    let opts = PushOpts {
        artifact_type: Some("application/x.test".into()),
        annotations: vec![("k".into(), "v".into())],
        annotation_file: Some(w.path().join("ann.json")),
        created: Some("2024-05-06T07:08:09Z".into()),
        layers: vec![
            RawLayer {
                path: "evil".into(),
                title: Some("../evil".into()),
                ..Default::default()
            },
            RawLayer {
                path: "evil".into(),
                title: None,
                media_type: Some("application/x.raw".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let d = oras_push_with(&host, "opts:v1", &["a.txt"], w.path(), &opts);
    let j = fetch_manifest(&host, "opts", &d).json;
    assert_eq!(j["artifactType"], "application/x.test");
    assert_eq!(j["annotations"]["k"], "v");
    assert_eq!(j["annotations"]["m"], "1");
    assert_eq!(
        j["annotations"]["org.opencontainers.image.created"],
        "2024-05-06T07:08:09Z"
    );
    assert_eq!(j["config"]["annotations"]["c"], "2");
    assert_eq!(j["layers"][0]["annotations"]["t"], "3");
    assert_eq!(j["layers"][1]["annotations"][ANNOTATION_TITLE], "../evil");
    assert!(j["layers"][2].get("annotations").is_none());
    assert_eq!(j["layers"][2]["mediaType"], "application/x.raw");

    // config file, image-spec v1.0
    let opts = PushOpts {
        config: Some("cfg.json:application/x.cfg".into()),
        image_spec_v1_0: true,
        no_created: true,
        ..Default::default()
    };
    let d = oras_push_with(&host, "opts:v10", &["a.txt"], w.path(), &opts);
    let j = fetch_manifest(&host, "opts", &d).json;
    assert!(j.get("artifactType").is_none());
    assert!(j.get("annotations").is_none());
    assert_eq!(j["config"]["mediaType"], "application/x.cfg");
    assert_eq!(
        j["config"]["digest"],
        sha256_file(w.path().join("cfg.json"))
    );

    // python SDK's own push, for comparison
    let d = oras_push_with(
        &host,
        "opts:py",
        &["a.txt"],
        w.path(),
        &PushOpts {
            python_native: true,
            ..Default::default()
        },
    );
    let m = fetch_manifest(&host, "opts", &d);
    assert_eq!(
        m.json["config"]["mediaType"],
        "application/vnd.unknown.config.v1+json"
    );
    assert!(
        String::from_utf8_lossy(&m.bytes).contains("\"schemaVersion\": 2"),
        "SDK JSON has spaces"
    );

    // attach: subject + referrers tag schema (registry 2.8 has no referrers API)
    let subject = oras_push(&host, "opts:base", &["a.txt"], w.path());
    let sig = oras_push_with(
        &host,
        "opts",
        &["a.txt"],
        w.path(),
        &PushOpts {
            artifact_type: Some("application/x.sig".into()),
            subject: Some("base".into()),
            ..Default::default()
        },
    );
    let sm = fetch_manifest(&host, "opts", &sig).json;
    assert_eq!(sm["subject"]["digest"], subject.as_str());
    let referrers_tag = subject.replace(':', "-");
    assert!(
        reg.tags("opts").contains(&referrers_tag),
        "{:?}",
        reg.tags("opts")
    );
    let idx = fetch_manifest(&host, "opts", &referrers_tag).json;
    assert_eq!(idx["manifests"][0]["digest"], sig.as_str());
    assert_eq!(idx["manifests"][0]["artifactType"], "application/x.sig");

    // multi-platform artifact index
    let amd = oras_push_with(
        &host,
        "multi:amd64",
        &["a.txt"],
        w.path(),
        &PushOpts {
            artifact_platform: Some("linux/amd64".into()),
            ..Default::default()
        },
    );
    let arm = oras_push_with(
        &host,
        "multi:armv7",
        &["a.txt"],
        w.path(),
        &PushOpts {
            artifact_platform: Some("linux/arm/v7".into()),
            ..Default::default()
        },
    );
    let cfg = fetch_manifest(&host, "multi", &amd).json["config"].clone();
    assert_eq!(cfg["mediaType"], MT_OCI_CONFIG);
    assert_eq!(
        fetch_blob(&host, "multi", cfg["digest"].as_str().unwrap()),
        br#"{"architecture":"amd64","os":"linux"}"#
    );
    let i = oras_index(&host, "multi:v1", &["amd64", "armv7"]);
    let m = fetch_manifest(&host, "multi", "v1");
    assert_eq!(m.digest, i);
    assert_eq!(m.media_type, MT_OCI_INDEX);
    assert_eq!(m.json["manifests"][0]["digest"], amd.as_str());
    assert_eq!(m.json["manifests"][1]["digest"], arm.as_str());
    assert_eq!(m.json["manifests"][1]["platform"]["variant"], "v7");
}

#[test]
fn oci_layout_and_skopeo_copy() {
    let reg = Registry::start();
    let host = reg.host();
    let layout = tmpdir();
    let single = make_oci_image_layout(layout.path(), "single", &[("linux", "amd64", None)]);
    let multi = make_oci_image_layout(
        layout.path(),
        "multi",
        &[("linux", "amd64", None), ("linux", "arm", Some("v7"))],
    );
    assert_eq!(single.media_type, MT_OCI_MANIFEST);
    assert_eq!(multi.media_type, MT_OCI_INDEX);
    // deterministic: the amd64 image is shared by both tags
    assert_eq!(
        single.platforms[0].manifest_digest,
        multi.platforms[0].manifest_digest
    );
    assert_eq!(multi.platforms[1].dir_name, "linux-arm-v7");
    assert_eq!(multi.platforms[1].file_content, "linux/arm/v7\n");
    // re-tagging replaces the entry, keeps the others
    make_oci_image_layout(layout.path(), "single", &[("linux", "amd64", None)]);
    let idx: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    // skopeo accepts the layout as valid
    let raw = skopeo(&[
        "--insecure-policy",
        "inspect",
        "--raw",
        &format!("oci:{}:multi", layout.path().display()),
    ]);
    assert_eq!(sha256_bytes(raw.as_bytes()), multi.digest);

    // OCI, all platforms: digests preserved
    skopeo_copy_to_registry(layout.path(), "multi", &host, "img:multi", true, None);
    let m = fetch_manifest(&host, "img", "multi");
    assert_eq!(m.digest, multi.digest);
    for p in &multi.platforms {
        let pm = fetch_manifest(&host, "img", &p.manifest_digest).json;
        assert_eq!(pm["layers"][0]["digest"], p.layer_digest.as_str());
        let gz = fetch_blob(&host, "img", &p.layer_digest);
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut entry = tar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("platform.txt"));
        let mut s = String::new();
        entry.read_to_string(&mut s).unwrap();
        assert_eq!(s, p.file_content);
        let cfg: serde_json::Value =
            serde_json::from_slice(&fetch_blob(&host, "img", &p.config_digest)).unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], p.diff_id.as_str());
    }
    skopeo_copy_to_registry(layout.path(), "single", &host, "img:single", false, None);
    assert_eq!(fetch_manifest(&host, "img", "single").digest, single.digest);

    // Docker schema 2: a manifest list and docker manifests
    skopeo_copy_to_registry(
        layout.path(),
        "multi",
        &host,
        "dimg:multi",
        true,
        Some("v2s2"),
    );
    let d = fetch_manifest(&host, "dimg", "multi");
    assert_eq!(d.media_type, MT_DOCKER_LIST);
    let child = d.json["manifests"][1]["digest"].as_str().unwrap();
    assert_eq!(d.json["manifests"][1]["platform"]["variant"], "v7");
    assert_eq!(
        fetch_manifest(&host, "dimg", child).media_type,
        MT_DOCKER_MANIFEST
    );
    skopeo_copy_to_registry(
        layout.path(),
        "single",
        &host,
        "dimg:single",
        false,
        Some("v2s2"),
    );
    assert_eq!(
        fetch_manifest(&host, "dimg", "single").media_type,
        MT_DOCKER_MANIFEST
    );
}

// ---------------------------------------------------------------- proxy

/// A registry with one 200 KiB random blob; returns (registry, blob digest, bytes).
fn registry_with_blob() -> (Registry, String, Vec<u8>) {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("big.bin"), 200 * 1024, 42);
    oras_push(&reg.host(), "p:v1", &["big.bin"], w.path());
    let data = fs::read(w.path().join("big.bin")).unwrap();
    let digest = sha256_bytes(&data);
    (reg, digest, data)
}

/// A raw GET with a short read timeout: Ok(bytes read until EOF) or Err on
/// timeout/reset (for Blackhole/Stall).
fn raw_get(host: &str, path: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(buf)
}

#[test]
fn proxy_pass_counts_and_keeps_connections() {
    let (reg, digest, data) = registry_with_blob();
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let path = format!("/v2/p/blobs/{digest}");
    let r = http_get(&proxy.host(), &path).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("Docker-Content-Digest"), Some(digest.as_str()));
    // Range passes through
    let r = http_request(
        &proxy.host(),
        "GET",
        &path,
        &[("Range", "bytes=100-199")],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[100..200]);
    // manifests and tag lists (chunked or not) pass through
    let m = fetch_manifest(&proxy.host(), "p", "v1");
    assert_eq!(m.bytes, fetch_manifest(&reg.host(), "p", "v1").bytes);
    assert_eq!(proxy.blob_gets(), 2);
    assert_eq!(proxy.range_requests(), 1);
    assert_eq!(proxy.manifest_gets(), 1);
    assert_eq!(proxy.requests(), 3);
    let log = proxy.log();
    assert_eq!(
        (
            log[1].method.as_str(),
            log[1].range.as_deref(),
            log[1].status
        ),
        ("GET", Some("bytes=100-199"), 206)
    );

    // keep-alive towards the client: two requests, one connection
    proxy.reset_counters();
    let mut s = TcpStream::connect(proxy.host()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        write!(s, "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n{}") {
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "proxy closed a keep-alive connection: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    assert_eq!(proxy.connections(), 1);
    assert_eq!(proxy.requests(), 2);

    // uploads through the proxy (monolithic PUT from oras; skopeo uses
    // PATCH with its own framing) land in the registry
    let w = tmpdir();
    make_random_file(w.path().join("up.bin"), 300 * 1024, 3);
    let d = oras_push(&proxy.host(), "up:v1", &["up.bin"], w.path());
    assert_eq!(fetch_manifest(&reg.host(), "up", "v1").digest, d);
    let layout = tmpdir();
    let img = make_oci_image_layout(layout.path(), "t", &[("linux", "amd64", None)]);
    skopeo_copy_to_registry(layout.path(), "t", &proxy.host(), "sk:t", false, None);
    assert_eq!(fetch_manifest(&reg.host(), "sk", "t").digest, img.digest);
}

#[test]
fn proxy_corrupts_blobs() {
    let (reg, digest, data) = registry_with_blob();
    let proxy = FaultProxy::start(&reg.host(), Mode::CorruptBlobs);
    let path = format!("/v2/p/blobs/{digest}");
    let r = http_get(&proxy.host(), &path).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    let diffs: Vec<usize> = (0..data.len()).filter(|&i| r.body[i] != data[i]).collect();
    assert_eq!(diffs, vec![data.len() / 2]);
    assert_ne!(sha256_bytes(&r.body), digest);
    // manifests are untouched
    assert_eq!(
        fetch_manifest(&proxy.host(), "p", "v1").bytes,
        fetch_manifest(&reg.host(), "p", "v1").bytes
    );
    // ranges are corrupted too
    let r = http_request(&proxy.host(), "GET", &path, &[("Range", "bytes=0-99")], &[]).unwrap();
    assert_eq!(r.status, 206);
    assert_ne!(r.body, &data[..100]);
    proxy.set_mode(Mode::Pass);
    assert_eq!(http_get(&proxy.host(), &path).unwrap().body, data);
}

#[test]
fn proxy_truncates_blobs_and_range_resumes() {
    let (reg, digest, data) = registry_with_blob();
    let proxy = FaultProxy::start(&reg.host(), Mode::TruncateBlobs(1000));
    let path = format!("/v2/p/blobs/{digest}");
    let err = http_get(&proxy.host(), &path).expect_err("truncated body must not read as complete");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    let raw = raw_get(&proxy.host(), &path, Duration::from_secs(10)).unwrap();
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&raw[body_start..], &data[..1000]);
    assert!(String::from_utf8_lossy(&raw[..body_start])
        .contains(&format!("Content-Length: {}", data.len())));
    // resuming with Range yields the next piece
    let raw = {
        let mut s = TcpStream::connect(proxy.host()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=1000-\r\n\r\n"
        )
        .unwrap();
        let mut b = Vec::new();
        s.read_to_end(&mut b).unwrap();
        b
    };
    let body_start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(raw.starts_with(b"HTTP/1.1 206"));
    assert_eq!(&raw[body_start..], &data[1000..2000]);
    assert_eq!(proxy.blob_bytes_sent(), 3000);
}

#[test]
fn proxy_fails_then_recovers() {
    let (reg, _digest, _data) = registry_with_blob();
    let proxy = FaultProxy::start(&reg.host(), Mode::Fail5xx(2));
    assert_eq!(http_get(&proxy.host(), "/v2/").unwrap().status, 503);
    assert_eq!(http_get(&proxy.host(), "/v2/").unwrap().status, 503);
    assert_eq!(http_get(&proxy.host(), "/v2/").unwrap().status, 200);
    assert_eq!(proxy.mode(), Mode::Pass);
    proxy.set_mode(Mode::FailWith {
        status: 429,
        count: 1,
    });
    let r = http_get(&proxy.host(), "/v2/p/tags/list").unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("0"));
    assert_eq!(
        http_get(&proxy.host(), "/v2/p/tags/list").unwrap().json()["tags"][0],
        "v1"
    );
    // a failed PUT with a body keeps the connection usable (body drained)
    proxy.set_mode(Mode::Fail5xx(1));
    let r = http_request(
        &proxy.host(),
        "PUT",
        "/v2/p/manifests/x",
        &[("Content-Type", MT_OCI_MANIFEST)],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(proxy.requests(), 6);
    // Unavailable: 503 with Retry-After, for as long as the mode lasts
    proxy.set_mode(Mode::Unavailable { retry_after: 7 });
    for _ in 0..3 {
        let r = http_get(&proxy.host(), "/v2/").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Retry-After"), Some("7"));
    }
    assert_eq!(proxy.mode(), Mode::Unavailable { retry_after: 7 });
}

/// The token service's tokens work at the registry, grant what the user
/// may do, and really expire after their lifetime (the registry's 60 s of
/// leeway taken into account).
#[test]
fn support_token_server_tokens_are_accepted_then_expire() {
    let tokens = TokenServer::start(&[("u", "p", Grant::PULL)], Duration::from_secs(3));
    let reg = Registry::start_with_token_auth(&tokens);
    let host = reg.host();
    let auth = basic_auth("u", "p");
    let token_host = tokens
        .realm()
        .trim_start_matches("http://")
        .replace("/token", "");
    let get_token = |scope: &str| {
        let path = format!(
            "/token?service={}&scope={scope}",
            support::token::TOKEN_SERVICE
        );
        let r = http_request(&token_host, "GET", &path, &[("Authorization", &auth)], &[]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        format!("Bearer {}", r.json()["token"].as_str().unwrap())
    };
    let bearer = get_token("registry:catalog:*");
    let catalog = |b: &str| {
        http_request(&host, "GET", "/v2/_catalog", &[("Authorization", b)], &[])
            .unwrap()
            .status
    };
    assert_eq!(catalog(&bearer), 200, "registry log:\n{}", reg.log());
    assert_eq!(tokens.issued()[0].granted, ["registry:catalog:*"]);
    // Push is not granted to a pull-only user.
    get_token("repository:x/y:pull,push");
    assert_eq!(tokens.issued()[1].granted, ["repository:x/y:pull"]);
    let wrong = basic_auth("u", "nope");
    let path = format!("/token?service={}", support::token::TOKEN_SERVICE);
    let r = http_request(&token_host, "GET", &path, &[("Authorization", &wrong)], &[]).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(tokens.refused(), 1);
    thread::sleep(Duration::from_secs(4));
    assert_eq!(catalog(&bearer), 401, "an expired token was accepted");
}

#[test]
fn proxy_dead_blackhole_refuse() {
    let (reg, digest, data) = registry_with_blob();
    let proxy = FaultProxy::start(&reg.host(), Mode::Dead);
    // Dead: accepted, then closed without an answer
    let got = raw_get(&proxy.host(), "/v2/", Duration::from_secs(5));
    assert!(
        matches!(&got, Ok(b) if b.is_empty()) || got.is_err(),
        "{got:?}"
    );
    assert!(http_get(&proxy.host(), "/v2/").is_err());

    // Blackhole: accepted, never answered
    proxy.set_mode(Mode::Blackhole);
    let t = Instant::now();
    let got = raw_get(&proxy.host(), "/v2/", Duration::from_millis(500));
    assert!(got.is_err(), "blackhole answered: {got:?}");
    assert!(t.elapsed() >= Duration::from_millis(450));

    // Refuse: connection refused, then back on the same port
    proxy.set_mode(Mode::Refuse);
    wait_until(Duration::from_secs(5), "proxy to stop listening", || {
        TcpStream::connect(proxy.host()).is_err()
    });
    proxy.set_mode(Mode::Pass);
    wait_until(Duration::from_secs(5), "proxy to listen again", || {
        TcpStream::connect(proxy.host()).is_ok()
    });
    assert_eq!(
        http_get(&proxy.host(), &format!("/v2/p/blobs/{digest}"))
            .unwrap()
            .body,
        data
    );
}

#[test]
fn proxy_ignore_range_slow_and_stall() {
    let (reg, digest, data) = registry_with_blob();
    let path = format!("/v2/p/blobs/{digest}");
    let proxy = FaultProxy::start(&reg.host(), Mode::IgnoreRange);
    let r = http_request(
        &proxy.host(),
        "GET",
        &path,
        &[("Range", "bytes=10-19")],
        &[],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);

    // ~200 KiB at 400 KiB/s: about half a second
    proxy.set_mode(Mode::SlowBlobs(400 * 1024));
    let t = Instant::now();
    assert_eq!(http_get(&proxy.host(), &path).unwrap().body, data);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "{took:?}"
    );

    // stall after 5000 bytes
    proxy.set_mode(Mode::StallBlobs(5000));
    proxy.reset_counters();
    let t = Instant::now();
    let mut s = TcpStream::connect(proxy.host()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match s.read(&mut buf) {
            Ok(0) => panic!("stalled connection was closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    let body_start = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&got[body_start..], &data[..5000]);
    assert_eq!(proxy.blob_bytes_sent(), 5000);
    assert!(t.elapsed() >= Duration::from_millis(650));
}

// ======================================================================
// Section 2: regfs tests
// ======================================================================

// Read path: tree, bytes, metadata, cache, faults, peers (tests/it/read.rs).
#[path = "it/read.rs"]
mod read;

// Write path: staging, commit, status, discard, mirroring (tests/it/write.rs).
#[path = "it/write.rs"]
mod write;

// The ORAS CLI and crane as peers, both directions (tests/it/peers.rs).
#[path = "it/peers.rs"]
mod peers;

// Stopping readers and mounts while the registry stalls (tests/it/stop.rs).
#[path = "it/stop.rs"]
mod stop;

// No wrong byte with success, whatever the transfer did (tests/it/verify.rs).
#[path = "it/verify.rs"]
mod verify;

// Chunk-digest lists: what commit adds, verified random reads (tests/it/chunks.rs).
#[path = "it/chunks.rs"]
mod chunks;

// ModelPack models: filepaths, tar members as ranges, lazy reads (tests/it/model.rs).
#[path = "it/model.rs"]
mod model;

// HTTPS: reads, commits, refusals over TLS on loopback (tests/it/tls.rs).
#[path = "it/tls.rs"]
mod tls;

// scripts/install.sh into a temporary DESTDIR (tests/it/install.rs).
#[path = "it/install.rs"]
mod install;

// Directory layers within the cache bound; gzip bombs.
#[path = "it/unpack.rs"]
mod unpack;

// Hostile referrer graphs: subjects checked, cycles and depth cut.
#[path = "it/referrers.rs"]
mod referrers;

// Bearer token auth: a token service signing RS256 JWTs.
#[path = "it/token.rs"]
mod token;

// Mirrors and pull-through caches: --mirror, registries.conf (tests/it/mirrors.rs).
#[path = "it/mirrors.rs"]
mod mirrors;
