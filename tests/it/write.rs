//! Write-path tests of the regfs binary: staging through a real FUSE mount,
//! `regfs commit` / `status` / `discard`, checked against a real
//! docker-registry and real peers (the ORAS fixture's pull, skopeo, rsync).
//!
//! Every filesystem call goes through [`bounded`] or a command with a time
//! bound, so a hung mount fails the test instead of the CI job. Every test
//! ends with [`finish`], which unmounts and checks the daemon went away.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::cmd::describe;
use crate::support::*;
use crate::tmpdir;

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EXDEV: i32 = 18;
const EROFS: i32 = 30;

/// Bound on one filesystem call or small command.
/// Bound on one `regfs commit`.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the mount may take to show what a commit pushed (the README
/// promises about a second; allow for a loaded machine).
const REFRESH: Duration = Duration::from_secs(5);
/// Options of the test mounts: failures show up in seconds, not minutes.
const MOUNT_ARGS: &[&str] = &["--timeout", "5"];

const ARTIFACT_TYPE_DEFAULT: &str = "application/vnd.unknown.artifact.v1";
const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
const ANNOTATION_UNPACK: &str = "io.deis.oras.content.unpack";
const ANNOTATION_CONTENT_DIGEST: &str = "io.deis.oras.content.digest";
const CREATED: &str = "2024-05-06T07:08:09Z";

// ====================================================================
// helpers
// ====================================================================

fn try_mkdir(p: &Path) -> std::io::Result<()> {
    let q = p.to_path_buf();
    bounded(&format!("mkdir {}", p.display()), OP, move || {
        fs::create_dir(&q)
    })
}

fn mkdir(p: &Path) {
    try_mkdir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()))
}

fn try_write(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let (q, d) = (p.to_path_buf(), data.to_vec());
    bounded(&format!("write {}", p.display()), OP, move || {
        fs::write(&q, d)
    })
}

fn try_read(p: &Path) -> std::io::Result<Vec<u8>> {
    let q = p.to_path_buf();
    bounded(&format!("read {}", p.display()), OP, move || {
        let mut f = fs::File::open(&q)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    })
}

fn try_meta(p: &Path) -> std::io::Result<fs::Metadata> {
    let q = p.to_path_buf();
    bounded(&format!("stat {}", p.display()), OP, move || {
        fs::symlink_metadata(&q)
    })
}

/// A command with a time bound, checked.
fn sh(cmd: &mut Command) -> Output {
    run_timeout(cmd, OP)
}

/// `cp -r SRC... DEST` (the real peer: what a user types).
fn cp(srcs: &[&Path], dest: &Path) {
    let mut c = Command::new("cp");
    c.arg("-r").args(srcs).arg(dest);
    sh(&mut c);
}

fn setfattr(path: &Path, name: &str, value: &str) {
    sh(Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path));
}

fn regfs_log(m: &Mount) -> String {
    fs::read_to_string(m.cache_dir().join("regfs.log")).unwrap_or_default()
}

fn os<S: AsRef<OsStr>>(args: &[S]) -> Vec<&OsStr> {
    args.iter().map(|a| a.as_ref()).collect()
}

/// `regfs commit ARGS...`, whatever its exit status.
fn commit_unchecked<S: AsRef<OsStr>>(args: &[S]) -> (Command, Output) {
    let mut c = regfs();
    c.arg("commit").args(os(args));
    let out = run_unchecked_timeout(&mut c, COMMIT_TIMEOUT);
    (c, out)
}

/// `regfs commit ARGS...`, which must succeed; returns stdout. On failure
/// the panic has the command, its output and the daemon log of `m`.
fn commit<S: AsRef<OsStr>>(m: Option<&Mount>, args: &[S]) -> String {
    let (c, out) = commit_unchecked(args);
    if !out.status.success() {
        panic!(
            "regfs commit failed\n{}\n--- daemon log ---\n{}",
            describe(&c, &out),
            m.map(regfs_log).unwrap_or_default()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `regfs status [PATH]`, checked; stdout.
fn status(path: &Path) -> String {
    let out = run_timeout(regfs().arg("status").arg(path), OP);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `regfs discard PATH`, checked.
fn discard(path: &Path) -> String {
    let out = run_timeout(regfs().arg("discard").arg(path), OP);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `Digest: sha256:...` line of commit output (the last one).
fn digest_line(out: &str) -> String {
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no 'Digest:' line in commit output:\n{out}"))
        .trim()
        .to_string()
}

/// All `Digest:` lines, in order.
fn digest_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("Digest: "))
        .map(|d| d.trim().to_string())
        .collect()
}

fn has_line(out: &str, want: &str) -> bool {
    out.lines().any(|l| l.trim_end() == want)
}

fn assert_line(out: &str, want: &str) {
    assert!(
        has_line(out, want),
        "commit output lacks the line {want:?}:\n{out}"
    );
}

/// Waits until `MNT/rel/manifest.json` is the manifest `digest` and every
/// name the folder lists can be looked up and opened (see
/// `files_stay_readable_right_after_commit` for the moment in between).
fn wait_shows(m: &Mount, rel: &str, digest: &str) {
    let p = m.join(rel).join("manifest.json");
    let t = Instant::now();
    loop {
        let got = try_read(&p).ok().map(|b| sha256_bytes(&b));
        if got.as_deref() == Some(digest) && all_names_open(&m.join(rel)) {
            return;
        }
        if t.elapsed() > REFRESH {
            panic!(
                "{} still shows {got:?} {REFRESH:?} after the commit of {digest}\n--- daemon log ---\n{}",
                p.display(),
                regfs_log(m)
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether every name `dir` lists can be looked up, and every file opened.
fn all_names_open(dir: &Path) -> bool {
    let Ok(names) = try_ls(dir) else {
        return false;
    };
    names.iter().all(|n| {
        let p = dir.join(n);
        match try_meta(&p) {
            Ok(md) if md.is_dir() => true,
            Ok(_) => {
                let q = p.clone();
                bounded(&format!("open {}", p.display()), OP, move || {
                    fs::File::open(&q).is_ok()
                })
            }
            Err(_) => false,
        }
    })
}

fn mount(source: &str) -> Mount {
    Mount::new(source, MOUNT_ARGS)
}

/// The layer titled `title` in an image manifest.
fn layer<'a>(manifest: &'a Value, title: &str) -> &'a Value {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers in {manifest}"))
        .iter()
        .find(|l| l["annotations"][ANNOTATION_TITLE] == title)
        .unwrap_or_else(|| panic!("no layer titled {title:?} in {manifest:#}"))
}

fn titles(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l["annotations"][ANNOTATION_TITLE]
                .as_str()
                .map(String::from)
        })
        .collect()
}

/// JSON text keeping key order (serde_json is built with preserve_order in
/// this workspace): two values print the same only with the same keys in
/// the same order.
fn ordered(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

fn assert_same_json(got: &Value, want: &Value, what: &str) {
    assert_eq!(
        serde_json::from_str::<Value>(r#"{"b":1,"a":2}"#)
            .unwrap()
            .to_string(),
        r#"{"b":1,"a":2}"#,
        "serde_json without preserve_order: key order cannot be compared"
    );
    assert_eq!(ordered(got), ordered(want), "{what} (key order matters)");
}

/// Entries of a tar+gzip blob: path -> content (regular files only), and
/// every entry name.
fn untar_gz(blob: &[u8]) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    for e in ar.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let name = e.path().unwrap().to_string_lossy().into_owned();
        names.push(name.clone());
        if e.header().entry_type().is_file() {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(name, v);
        }
    }
    (files, names)
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    flate2::read::GzDecoder::new(blob)
        .read_to_end(&mut v)
        .expect("gunzip");
    v
}

/// Blob upload requests the proxy saw, as (digest, status): the PUT that
/// completes an upload session (`.../blobs/uploads/...?digest=sha256:...`),
/// or a one-shot POST with `digest=`.
fn blob_uploads(proxy: &FaultProxy) -> Vec<(String, u16)> {
    proxy
        .log()
        .iter()
        .filter(|r| r.path.contains("/blobs/uploads/") && (r.method == "PUT" || r.method == "POST"))
        .filter_map(|r| {
            let p = r.path.replace("%3A", ":").replace("%3a", ":");
            let q = p.split_once('?')?.1;
            let d = q
                .split('&')
                .find_map(|kv| kv.strip_prefix("digest="))?
                .to_string();
            Some((d, r.status))
        })
        .collect()
}

/// Upload sessions opened (POST .../blobs/uploads/ that is not a mount) and
/// PATCH requests: any attempt to send blob bytes.
fn upload_traffic(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .log()
        .iter()
        .filter(|r| {
            r.path.contains("/blobs/uploads/")
                && (r.method == "PATCH"
                    || r.method == "PUT"
                    || (r.method == "POST" && !r.path.contains("mount=")))
        })
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// HEAD /v2/REPO/blobs/DIGEST straight at the registry.
fn blob_in_registry(reg: &Registry, repo: &str, digest: &str) -> bool {
    let r = reg.request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[]);
    match r.status {
        200 => true,
        404 => false,
        s => panic!("HEAD blob {digest}: status {s}"),
    }
}

/// Digest the tag points at, straight from the registry (None: no such tag).
fn tag_digest(reg: &Registry, repo: &str, tag: &str) -> Option<String> {
    let r = reg.request(
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Accept", MANIFEST_ACCEPT)],
        &[],
    );
    match r.status {
        200 => Some(sha256_bytes(&r.body)),
        404 => None,
        s => panic!("GET manifest {repo}:{tag}: status {s}: {}", r.text()),
    }
}

/// An ORAS `created` value: RFC 3339, UTC, seconds.
fn assert_created_format(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("created is {v}"));
    let b = s.as_bytes();
    assert!(
        s.len() == 20
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && s.ends_with('Z'),
        "created annotation {s:?} is not YYYY-MM-DDTHH:MM:SSZ"
    );
}

/// `skopeo [--override-arch A [--override-variant V]] copy docker://HOST/REF dir:OUT`.
fn skopeo_copy_to_dir(host: &str, reference: &str, arch: &str, variant: Option<&str>, out: &Path) {
    let mut c = Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "--override-os",
        "linux",
        "--override-arch",
        arch,
    ]);
    if let Some(v) = variant {
        c.args(["--override-variant", v]);
    }
    c.args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("dir:{}", out.display()));
    run_timeout(&mut c, OP);
}

/// `oras manifest index create` through the fixture, with index annotations.
fn oras_index_annotated(
    host: &str,
    reference: &str,
    sources: &[&str],
    ann: &[(&str, &str)],
) -> String {
    let mut c = Command::new("python3");
    c.arg(push_oras_script())
        .args(["index", host, reference])
        .args(sources);
    for (k, v) in ann {
        c.arg("--annotation").arg(format!("{k}={v}"));
    }
    let out = run_timeout(&mut c, OP);
    digest_line(&String::from_utf8_lossy(&out.stdout))
}

/// The platform config ORAS writes for `--artifact-platform`.
fn platform_config(os: &str, arch: &str, variant: Option<&str>) -> Vec<u8> {
    match variant {
        Some(v) => format!(r#"{{"architecture":"{arch}","os":"{os}","variant":"{v}"}}"#),
        None => format!(r#"{{"architecture":"{arch}","os":"{os}"}}"#),
    }
    .into_bytes()
}

// ====================================================================
// 1. a new artifact: mkdir + cp + commit
// ====================================================================

#[test]
fn new_artifact_commit_pulls_with_oras_and_skopeo() {
    let reg = Registry::start();
    let host = reg.host();
    let m = mount(&host);

    let src = tmpdir();
    write_file(src.path(), "hello.txt", "hello world\n");
    make_random_file(src.path().join("big.bin"), 3 * 1024 * 1024 + 17, 11);
    write_file(src.path(), "docs/readme.md", "# docs\n");
    write_file(src.path(), "docs/sub/deep.txt", "deep\n");

    let tag_dir = m.join("org/app/v1");
    mkdir_p(&tag_dir);
    cp(
        &[
            &src.path().join("hello.txt"),
            &src.path().join("big.bin"),
            &src.path().join("docs"),
        ],
        &tag_dir,
    );
    // staged: readable in place, listed, nothing pushed yet
    assert_eq!(
        read(&tag_dir.join("big.bin")),
        fs::read(src.path().join("big.bin")).unwrap()
    );
    let st = status(m.path());
    assert!(st.contains("staged new org/app:v1"), "regfs status:\n{st}");
    assert!(
        reg.catalog().is_empty(),
        "something reached the registry before commit"
    );

    let out = commit(Some(&m), &[&tag_dir]);
    let digest = digest_line(&out);
    for l in [
        "Uploaded  hello.txt (12 bytes)",
        "Tagged    v1",
        &format!("Pushed [registry] {host}/org/app:v1"),
    ] {
        assert_line(&out, l);
    }
    assert!(
        out.lines().any(|l| l.starts_with("Uploaded  big.bin")),
        "no 'Uploaded  big.bin' line:\n{out}"
    );

    // the registry has exactly that manifest under the tag; skopeo agrees
    assert_eq!(reg.tags("org/app"), ["v1"]);
    let fm = fetch_manifest(&host, "org/app", "v1");
    assert_eq!(fm.digest, digest);
    assert_eq!(fm.media_type, MT_OCI_MANIFEST);
    assert_eq!(
        sha256_bytes(&skopeo_inspect_raw(&host, "org/app:v1")),
        digest
    );

    // ORAS conventions
    let j = &fm.json;
    assert_eq!(j["schemaVersion"], 2);
    assert_eq!(j["mediaType"], MT_OCI_MANIFEST);
    assert_eq!(j["artifactType"], ARTIFACT_TYPE_DEFAULT);
    assert_eq!(
        j["config"],
        json!({"mediaType": MT_OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2, "data": "e30="})
    );
    assert_created_format(&j["annotations"][ANNOTATION_CREATED]);
    let t: BTreeSet<String> = titles(j).into_iter().collect();
    assert_eq!(
        t,
        ["big.bin", "docs", "hello.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(j["layers"].as_array().unwrap().len(), 3);
    for f in ["hello.txt", "big.bin"] {
        let l = layer(j, f);
        let p = src.path().join(f);
        assert_eq!(l["mediaType"], MT_OCI_LAYER_TAR, "{f}");
        assert_eq!(l["digest"], sha256_file(&p).as_str(), "{f}");
        assert_eq!(l["size"], fs::metadata(&p).unwrap().len(), "{f}");
        assert_eq!(
            l["annotations"],
            json!({ANNOTATION_TITLE: f}),
            "a file layer carries only its title"
        );
    }
    let d = layer(j, "docs");
    assert_eq!(d["mediaType"], MT_OCI_LAYER_TGZ);
    assert_eq!(d["annotations"][ANNOTATION_UNPACK], "true");
    let blob = fetch_blob(&host, "org/app", d["digest"].as_str().unwrap());
    assert_eq!(d["size"], blob.len());
    assert_eq!(
        d["annotations"][ANNOTATION_CONTENT_DIGEST],
        sha256_bytes(&gunzip(&blob)).as_str(),
        "io.deis.oras.content.digest is the digest of the uncompressed tar"
    );
    let (entries, names) = untar_gz(&blob);
    assert!(
        names
            .iter()
            .all(|n| n == "docs" || n == "docs/" || n.starts_with("docs/")),
        "tar entries outside docs/: {names:?}"
    );
    assert_eq!(entries["docs/readme.md"], b"# docs\n");
    assert_eq!(entries["docs/sub/deep.txt"], b"deep\n");
    fetch_blob(&host, "org/app", EMPTY_CONFIG_DIGEST);

    // the reference reader gives back the same files
    let pulled_dir = tmpdir();
    let pulled: BTreeSet<String> = oras_pull(&host, "org/app:v1", pulled_dir.path())
        .into_iter()
        .collect();
    assert_eq!(pulled, t);
    for f in [
        "hello.txt",
        "big.bin",
        "docs/readme.md",
        "docs/sub/deep.txt",
    ] {
        assert_eq!(
            fs::read(pulled_dir.path().join(f)).unwrap(),
            fs::read(src.path().join(f)).unwrap(),
            "oras pull: {f}"
        );
    }

    // the mount shows the registry's state; nothing is staged any more
    wait_shows(&m, "org/app/v1", &digest);
    assert_eq!(read(&tag_dir.join("hello.txt")), b"hello world\n");
    assert_eq!(read(&tag_dir.join("docs/sub/deep.txt")), b"deep\n");
    let st = status(m.path());
    assert!(
        !st.contains("org/app:v1"),
        "still staged after commit:\n{st}"
    );
    finish(m);
}

#[test]
fn new_tag_folder_needs_content() {
    let reg = Registry::start();
    let m = mount(&reg.host());
    let empty = m.join("e/v1");
    mkdir_p(&empty);
    let (c, out) = commit_unchecked(&[&empty]);
    // Either refused, or "nothing staged": never an empty artifact.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() || stdout.contains("Nothing staged"),
        "committing an empty new tag folder\n{}",
        describe(&c, &out)
    );
    assert!(reg.catalog().is_empty(), "{:?}", reg.catalog());
    // one file directly inside is enough
    write_file(&empty, "x.txt", "x\n");
    let d = digest_line(&commit(Some(&m), &[&empty]));
    assert_eq!(tag_digest(&reg, "e", "v1"), Some(d));
    finish(m);
}

// ====================================================================
// 2. multi-arch: platform folders make an index
// ====================================================================

#[test]
fn platform_folders_make_an_index_skopeo_selects_children() {
    let reg = Registry::start();
    let host = reg.host();
    let m = mount(&host);
    let src = tmpdir();
    let plats: [(&str, &str, Option<&str>); 3] = [
        ("linux", "amd64", None),
        ("linux", "arm64", None),
        ("linux", "arm", Some("v7")),
    ];
    let dir_name = |(o, a, v): (&str, &str, Option<&str>)| match v {
        Some(v) => format!("{o}-{a}-{v}"),
        None => format!("{o}-{a}"),
    };
    let tag_dir = m.join("multi/v1");
    mkdir_p(&tag_dir);
    for (i, p) in plats.iter().enumerate() {
        let name = dir_name(*p);
        let sd = src.path().join(&name);
        make_random_file(sd.join("app.bin"), 100_000 + i as u64, 100 + i as u64);
        write_file(&sd, "platform.txt", format!("{name}\n"));
        cp(&[&sd], &tag_dir);
    }
    let out = commit(Some(&m), &[&tag_dir]);
    let digest = digest_line(&out);
    assert_line(&out, "Tagged    v1");
    assert_line(&out, &format!("Pushed [registry] {host}/multi:v1"));

    let idx = fetch_manifest(&host, "multi", "v1");
    assert_eq!(idx.digest, digest);
    assert_eq!(idx.media_type, MT_OCI_INDEX);
    assert_eq!(idx.json["mediaType"], MT_OCI_INDEX);
    assert_eq!(sha256_bytes(&skopeo_inspect_raw(&host, "multi:v1")), digest);
    let entries = idx.json["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3, "{:#}", idx.json);

    let mut child_of = BTreeMap::new();
    let mut artifact_types = Vec::new();
    for p in plats {
        let (o, a, v) = p;
        let name = dir_name(p);
        let mut want_plat = json!({"architecture": a, "os": o});
        if let Some(v) = v {
            want_plat["variant"] = json!(v);
        }
        let e = entries
            .iter()
            .find(|e| e["platform"] == want_plat)
            .unwrap_or_else(|| panic!("no index entry with platform {want_plat}: {:#}", idx.json));
        assert_eq!(e["mediaType"], MT_OCI_MANIFEST);
        let cd = e["digest"].as_str().unwrap().to_string();
        let child = fetch_manifest(&host, "multi", &cd);
        assert_eq!(e["size"], child.bytes.len());
        // what `oras push --artifact-platform` writes
        let cj = &child.json;
        assert_eq!(cj["config"]["mediaType"], MT_OCI_CONFIG, "{name}");
        let cfg = fetch_blob(&host, "multi", cj["config"]["digest"].as_str().unwrap());
        assert_eq!(
            String::from_utf8_lossy(&cfg),
            String::from_utf8_lossy(&platform_config(o, a, v)),
            "{name}: platform config"
        );
        artifact_types.push((name.clone(), cj["artifactType"].clone(), ordered(cj)));
        let sd = src.path().join(&name);
        for f in ["app.bin", "platform.txt"] {
            let l = layer(cj, f);
            assert_eq!(l["mediaType"], MT_OCI_LAYER_TAR);
            assert_eq!(l["digest"], sha256_file(sd.join(f)).as_str(), "{name}/{f}");
        }
        // the same files pulled by digest with the reference reader
        let pd = tmpdir();
        oras_pull(&host, &format!("multi@{cd}"), pd.path());
        assert_eq!(
            fs::read(pd.path().join("app.bin")).unwrap(),
            fs::read(sd.join("app.bin")).unwrap()
        );
        child_of.insert(name, (cd, cj.clone()));
    }

    // skopeo picks the right child for a platform
    for (arch, variant, name) in [
        ("arm64", None, "linux-arm64"),
        ("arm", Some("v7"), "linux-arm-v7"),
        ("amd64", None, "linux-amd64"),
    ] {
        let out_dir = tmpdir();
        let od = out_dir.path().join("img");
        skopeo_copy_to_dir(&host, "multi:v1", arch, variant, &od);
        let (cd, cj) = &child_of[name];
        assert_eq!(
            &sha256_file(od.join("manifest.json")),
            cd,
            "skopeo --override-arch {arch} {variant:?} chose another manifest"
        );
        let l = layer(cj, "app.bin");
        let got = fs::read(od.join(hex(l["digest"].as_str().unwrap()))).unwrap();
        assert_eq!(
            got,
            fs::read(src.path().join(name).join("app.bin")).unwrap()
        );
    }

    // and the mount shows the index with its platform folders
    wait_shows(&m, "multi/v1", &digest);
    for (name, (cd, _)) in &child_of {
        assert_eq!(
            sha256_bytes(&read(&tag_dir.join(name).join("manifest.json"))),
            *cd
        );
        assert_eq!(
            read(&tag_dir.join(name).join("platform.txt")),
            format!("{name}\n").as_bytes()
        );
    }
    finish(m);
    // `oras push --artifact-platform` (v1.3; and the fixture that mimics
    // it) sets artifactType application/vnd.unknown.artifact.v1 when no
    // --artifact-type is given. Checked last so the checks above still run.
    for (name, at, manifest) in artifact_types {
        assert_eq!(
            at, ARTIFACT_TYPE_DEFAULT,
            "{name}: artifactType of the platform manifest\n{manifest}"
        );
    }
}

// ====================================================================
// 3. in-place changes of an existing tag
// ====================================================================

#[test]
fn in_place_change_keeps_everything_else() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "A old\n");
    write_file(w.path(), "b.txt", "B\n");
    write_file(w.path(), "keep.txt", "keep\n");
    write_file(w.path(), "docs/readme.md", "# docs\n");
    write_file(w.path(), "raw.bin", "untitled layer\n");
    write_file(
        w.path(),
        "ann.json",
        r#"{"$manifest":{"m":"1"},"$config":{"c":"2"},"a.txt":{"t":"3"}}"#,
    );
    let base_digest = oras_push_with(
        &host,
        "ed:v1",
        &["a.txt", "b.txt", "keep.txt", "docs"],
        w.path(),
        &PushOpts {
            annotations: vec![("k".into(), "v".into())],
            annotation_file: Some(w.path().join("ann.json")),
            created: Some(CREATED.into()),
            layers: vec![RawLayer {
                path: "raw.bin".into(),
                title: None,
                media_type: Some("application/x.raw".into()),
                annotations: vec![("x".into(), "y".into())],
            }],
            ..Default::default()
        },
    );
    let base = fetch_manifest(&host, "ed", "v1").json;

    let m = mount(&host);
    let tag = m.join("ed/v1");
    assert_eq!(sha256_bytes(&read(&tag.join("manifest.json"))), base_digest);

    // replace a.txt (cp over it), add c.txt, remove b.txt, annotate
    let src = tmpdir();
    write_file(src.path(), "a.txt", "A new, longer\n");
    write_file(src.path(), "c.txt", "C\n");
    cp(
        &[&src.path().join("a.txt"), &src.path().join("c.txt")],
        &tag,
    );
    sh(Command::new("rm").arg(tag.join("b.txt")));
    setfattr(&tag, "user.oci.annotation.added", "yes");
    setfattr(&tag.join("keep.txt"), "user.oci.annotation.note", "hi");
    assert_eq!(read(&tag.join("a.txt")), b"A new, longer\n");
    assert_eq!(
        try_read(&tag.join("b.txt"))
            .map(|_| ())
            .map_err(|e| errno(&e)),
        Err(ENOENT)
    );
    let st = status(&tag);
    assert!(st.contains("staged changed ed:v1"), "regfs status:\n{st}");
    assert_eq!(
        tag_digest(&reg, "ed", "v1").as_deref(),
        Some(base_digest.as_str())
    );

    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);
    assert_ne!(digest, base_digest);
    let got = fetch_manifest(&host, "ed", "v1");
    assert_eq!(got.digest, digest);

    // expected: the base JSON with exactly these changes
    let mut want = base.clone();
    {
        let layers = want["layers"].as_array_mut().unwrap();
        layers.retain(|l| l["annotations"][ANNOTATION_TITLE] != "b.txt");
        for l in layers.iter_mut() {
            if l["annotations"][ANNOTATION_TITLE] == "a.txt" {
                l["digest"] = json!(sha256_file(src.path().join("a.txt")));
                l["size"] = json!(14);
            }
            if l["annotations"][ANNOTATION_TITLE] == "keep.txt" {
                l["annotations"]["note"] = json!("hi");
            }
        }
        layers.push(json!({
            "mediaType": MT_OCI_LAYER_TAR,
            "digest": sha256_file(src.path().join("c.txt")),
            "size": 2,
            "annotations": {ANNOTATION_TITLE: "c.txt"},
        }));
    }
    want["annotations"]["added"] = json!("yes");
    assert_same_json(
        &got.json,
        &want,
        "manifest after replace/add/remove/annotate",
    );

    // the blobs are there and the reference reader agrees
    let pd = tmpdir();
    let pulled: BTreeSet<String> = oras_pull(&host, "ed:v1", pd.path()).into_iter().collect();
    assert_eq!(
        pulled,
        ["a.txt", "c.txt", "docs", "keep.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        fs::read(pd.path().join("a.txt")).unwrap(),
        b"A new, longer\n"
    );
    assert_eq!(
        fs::read(pd.path().join("docs/readme.md")).unwrap(),
        b"# docs\n"
    );
    wait_shows(&m, "ed/v1", &digest);
    assert_eq!(read(&tag.join("c.txt")), b"C\n");
    assert!(!ls(&tag).contains(&"b.txt".to_string()));
    finish(m);
}

#[test]
fn rename_of_a_registry_file_is_exdev_and_mv_copies() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "one.txt", "one\n");
    write_file(w.path(), "two.txt", "two\n");
    let base_digest = oras_push(&host, "mv:v1", &["one.txt", "two.txt"], w.path());
    let base = fetch_manifest(&host, "mv", "v1").json;
    let m = mount(&host);
    let tag = m.join("mv/v1");
    let from = tag.join("one.txt");
    let to = tag.join("uno.txt");
    let (f2, t2) = (from.clone(), to.clone());
    let r = bounded("rename", OP, move || fs::rename(&f2, &t2));
    assert_eq!(
        r.map_err(|e| errno(&e)),
        Err(EXDEV),
        "rename of a registry file"
    );
    // mv falls back to copy + unlink
    sh(Command::new("mv").arg(&from).arg(&to));
    assert_eq!(read(&to), b"one\n");
    assert_eq!(
        try_meta(&from).map(|_| ()).map_err(|e| errno(&e)),
        Err(ENOENT)
    );
    // cp -a (like mv) copies the user.* xattrs of the registry file too
    sh(Command::new("cp")
        .arg("-a")
        .arg(tag.join("two.txt"))
        .arg(tag.join("deux.txt")));
    assert_eq!(read(&tag.join("deux.txt")), b"two\n");
    let digest = digest_line(&commit(Some(&m), &[&tag]));
    assert_ne!(digest, base_digest);
    let j = fetch_manifest(&host, "mv", "v1").json;
    // a file's title is its (new) name
    let mut t = titles(&j);
    t.sort();
    assert_eq!(
        t,
        ["deux.txt", "two.txt", "uno.txt"],
        "layers: {:#}",
        j["layers"]
    );
    assert_eq!(
        layer(&j, "uno.txt")["digest"],
        layer(&base, "one.txt")["digest"]
    );
    assert_eq!(
        layer(&j, "deux.txt")["digest"],
        layer(&base, "two.txt")["digest"]
    );
    assert_eq!(layer(&j, "two.txt"), layer(&base, "two.txt"));
    assert_eq!(j["annotations"], base["annotations"]);
    finish(m);
}

#[test]
fn index_add_and_remove_platform_folder_keeps_annotations() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "amd.txt", "amd64\n");
    write_file(w.path(), "arm.txt", "arm64\n");
    let amd = oras_push_with(
        &host,
        "ix",
        &["amd.txt"],
        w.path(),
        &PushOpts {
            artifact_platform: Some("linux/amd64".into()),
            ..Default::default()
        },
    );
    let arm = oras_push_with(
        &host,
        "ix",
        &["arm.txt"],
        w.path(),
        &PushOpts {
            artifact_platform: Some("linux/arm64".into()),
            ..Default::default()
        },
    );
    let base_digest = oras_index_annotated(
        &host,
        "ix:v1",
        &[&amd, &arm],
        &[("org.example.idx", "kept"), ("second", "2")],
    );
    let base = fetch_manifest(&host, "ix", "v1").json;
    assert_eq!(base["annotations"]["org.example.idx"], "kept");

    let m = mount(&host);
    let tag = m.join("ix/v1");
    assert_eq!(sha256_bytes(&read(&tag.join("manifest.json"))), base_digest);
    assert!(
        ls(&tag).contains(&"linux-amd64".to_string()),
        "{:?}",
        ls(&tag)
    );

    // add a platform folder
    let src = tmpdir();
    write_file(src.path(), "linux-arm-v7/arm.txt", "arm v7\n");
    cp(&[&src.path().join("linux-arm-v7")], &tag);
    let d1 = digest_line(&commit(Some(&m), &[&tag]));
    let idx1 = fetch_manifest(&host, "ix", "v1");
    assert_eq!(idx1.digest, d1);
    let entries = idx1.json["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{:#}", idx1.json);
    let new = entries[2].clone();
    assert_eq!(
        new["platform"],
        json!({"architecture": "arm", "os": "linux", "variant": "v7"})
    );
    assert_eq!(new["mediaType"], MT_OCI_MANIFEST);
    let child = fetch_manifest(&host, "ix", new["digest"].as_str().unwrap());
    assert_eq!(new["size"], child.bytes.len());
    assert_eq!(
        fetch_blob(
            &host,
            "ix",
            child.json["config"]["digest"].as_str().unwrap()
        ),
        platform_config("linux", "arm", Some("v7"))
    );
    assert_eq!(
        layer(&child.json, "arm.txt")["digest"],
        sha256_file(src.path().join("linux-arm-v7/arm.txt")).as_str()
    );
    // everything else exactly as it was (`oras manifest index update --add`)
    let mut want = base.clone();
    want["manifests"].as_array_mut().unwrap().push(new.clone());
    assert_same_json(&idx1.json, &want, "index after adding linux-arm-v7");

    // remove a platform folder
    wait_shows(&m, "ix/v1", &d1);
    sh(Command::new("rm").arg("-r").arg(tag.join("linux-amd64")));
    assert!(!ls(&tag).contains(&"linux-amd64".to_string()));
    let d2 = digest_line(&commit(Some(&m), &[&tag]));
    let idx2 = fetch_manifest(&host, "ix", "v1");
    assert_eq!(idx2.digest, d2);
    let mut want = idx1.json.clone();
    want["manifests"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["digest"] != amd.as_str());
    assert_same_json(&idx2.json, &want, "index after removing linux-amd64");
    wait_shows(&m, "ix/v1", &d2);
    assert_eq!(
        ls(&tag).iter().filter(|n| n.starts_with("linux-")).count(),
        2
    );
    finish(m);
}

// ====================================================================
// 4. a failed commit keeps the tag and the staging, and resumes
// ====================================================================

/// Whether `r` is the request that sends the bytes of blob `digest`.
fn is_upload_of(r: &RequestRecord, digest: &str) -> bool {
    let p = r.path.replace("%3A", ":").replace("%3a", ":");
    r.path.contains("/blobs/uploads/")
        && (r.method == "PUT" || r.method == "PATCH" || r.method == "POST")
        && p.contains(&format!("digest={digest}"))
}

/// Successful uploads per digest over the whole proxy log; panics if any
/// blob went up twice.
fn assert_each_blob_uploaded_once(proxy: &FaultProxy, what: &str) -> BTreeMap<String, usize> {
    let mut ok: BTreeMap<String, usize> = BTreeMap::new();
    for (d, st) in blob_uploads(proxy) {
        if (200..300).contains(&st) {
            *ok.entry(d).or_default() += 1;
        }
    }
    let twice: Vec<_> = ok.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: blobs uploaded more than once: {twice:?}\nupload traffic:\n{}",
        upload_traffic(proxy).join("\n")
    );
    ok
}

/// A commit of one tag folder that must fail: exit 1 (not a signal), one
/// line saying no tag moved and the staging is kept; returns (stdout, stderr).
fn commit_fails<S: AsRef<OsStr>>(m: &Mount, args: &[S]) -> (String, String) {
    let (c, out) = commit_unchecked(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "regfs commit through a failing registry\n{}\n--- daemon log ---\n{}",
        describe(&c, &out),
        regfs_log(m)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("regfs: "))
        .collect();
    assert!(
        matches!(lines[..], [l] if l.contains("not committed (no tag moved, staged changes kept): ")),
        "one line saying what failed expected:\n{stderr}"
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn failed_manifest_put_keeps_tag_and_staging_then_resumes() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "old.txt", "old\n");
    let old = oras_push(&host, "res:v1", &["old.txt"], w.path());
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("res/v1");

    let src = tmpdir();
    make_random_file(src.path().join("big.bin"), 6 * 1024 * 1024 + 3, 21);
    write_file(src.path(), "small.txt", "small\n");
    cp(
        &[&src.path().join("big.bin"), &src.path().join("small.txt")],
        &tag,
    );
    let big = sha256_file(src.path().join("big.bin"));
    let small = sha256_file(src.path().join("small.txt"));

    // every manifest PUT fails: the blobs go up, no manifest, no tag
    proxy.set_rule(Some(Rule::new("PUT", "/manifests/", RuleAction::Fail(503))));
    let (o, e) = commit_fails(&m, &[&tag]);
    assert_eq!(
        tag_digest(&reg, "res", "v1").as_deref(),
        Some(old.as_str()),
        "the tag moved after a failed commit\nstdout: {o}\nstderr: {e}"
    );
    assert!(
        blob_in_registry(&reg, "res", &big),
        "big.bin was not uploaded before the manifest"
    );
    assert!(blob_in_registry(&reg, "res", &small));
    let st = status(&tag);
    assert!(
        st.contains("staged changed res:v1"),
        "staging lost after a failed commit:\n{st}"
    );
    assert_eq!(read(&tag.join("small.txt")), b"small\n");
    let first_run = proxy.log().len();

    // the registry is back: the commit resumes, skipping what is there
    proxy.set_rule(None);
    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);
    assert_eq!(
        tag_digest(&reg, "res", "v1").as_deref(),
        Some(digest.as_str())
    );
    assert_line(&out, "Exists    big.bin");
    assert_line(&out, "Exists    small.txt");
    let again: Vec<String> = proxy.log()[first_run..]
        .iter()
        .filter(|r| is_upload_of(r, &big) || is_upload_of(r, &small))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(again.is_empty(), "re-uploaded after resume: {again:?}");
    assert_each_blob_uploaded_once(&proxy, "failed manifest PUT, then resume");
    let j = fetch_manifest(&host, "res", "v1").json;
    let mut t = titles(&j);
    t.sort();
    assert_eq!(t, ["big.bin", "old.txt", "small.txt"]);
    wait_shows(&m, "res/v1", &digest);
    assert!(
        !status(&tag).contains("res:v1"),
        "still staged after a successful commit"
    );
    finish(m);
}

#[test]
fn failed_tag_put_of_an_index_resumes_without_reuploads() {
    let reg = Registry::start();
    let host = reg.host();
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("res/multi");
    mkdir_p(&tag);
    let src = tmpdir();
    for (i, p) in ["linux-amd64", "linux-arm64"].iter().enumerate() {
        make_random_file(
            src.path().join(p).join("tool"),
            2 * 1024 * 1024 + i as u64,
            30 + i as u64,
        );
        cp(&[&src.path().join(p)], &tag);
    }
    // only the tag PUT fails (children and index by digest may go up)
    proxy.set_rule(Some(Rule::new(
        "PUT",
        "/manifests/multi",
        RuleAction::Fail(503),
    )));
    commit_fails(&m, &[&tag]);
    assert!(
        !reg.tags("res").contains(&"multi".to_string()),
        "the tag exists after a failed commit: {:?}",
        reg.tags("res")
    );
    let st = status(&tag);
    assert!(st.contains("staged new res:multi"), "staging lost:\n{st}");
    let uploaded_first = assert_each_blob_uploaded_once(&proxy, "first run");
    assert!(
        uploaded_first.contains_key(&sha256_file(src.path().join("linux-amd64/tool"))),
        "the blobs should have gone up before the tag: {uploaded_first:?}"
    );
    let first_run = proxy.log().len();

    proxy.set_rule(None);
    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);
    assert_eq!(
        tag_digest(&reg, "res", "multi").as_deref(),
        Some(digest.as_str())
    );
    let second: Vec<String> = proxy.log()[first_run..]
        .iter()
        .filter(|r| r.path.contains("/blobs/uploads/") && r.method != "POST")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        second.is_empty(),
        "blobs sent again on resume: {second:?}\n{out}"
    );
    assert_each_blob_uploaded_once(&proxy, "tag PUT failed, then resume");
    let idx = fetch_manifest(&host, "res", "multi").json;
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
    finish(m);
}

#[test]
fn registry_dies_mid_commit_then_resumes() {
    let reg = Registry::start();
    let host = reg.host();
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("dead/v1");
    mkdir_p(&tag);
    let src = tmpdir();
    make_random_file(src.path().join("big.bin"), 8 * 1024 * 1024, 41);
    write_file(src.path(), "a.txt", "a\n");
    cp(
        &[&src.path().join("big.bin"), &src.path().join("a.txt")],
        &tag,
    );
    let big = sha256_file(src.path().join("big.bin"));

    // big.bin goes up slowly; while it does, the registry "dies"
    proxy.set_rule(Some(Rule::new(
        "PUT",
        &hex(&big)[..16],
        RuleAction::SlowBody(4 * 1024 * 1024),
    )));
    let h = proxy.handle();
    let big2 = big.clone();
    let watcher = thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            if h.log().iter().any(|r| is_upload_of(r, &big2)) {
                h.set_mode(Mode::Dead);
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    });
    commit_fails(&m, &[&tag]);
    assert!(
        watcher.join().unwrap(),
        "the upload of big.bin was never seen"
    );
    assert!(
        reg.tags("dead").is_empty(),
        "a tag moved: {:?}",
        reg.tags("dead")
    );
    assert!(status(&tag).contains("staged new dead:v1"));
    let big_up_first = blob_in_registry(&reg, "dead", &big);
    let first_run = proxy.log().len();

    proxy.set_mode(Mode::Pass);
    proxy.set_rule(None);
    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);
    assert_eq!(
        tag_digest(&reg, "dead", "v1").as_deref(),
        Some(digest.as_str())
    );
    // the upload in flight when the registry died had completed
    assert!(
        big_up_first,
        "big.bin not in the registry after the first run"
    );
    assert_line(&out, "Exists    big.bin");
    assert!(
        !proxy.log()[first_run..]
            .iter()
            .any(|r| is_upload_of(r, &big)),
        "big.bin uploaded again"
    );
    assert_each_blob_uploaded_once(&proxy, "registry died, then resume");
    let pd = tmpdir();
    oras_pull(&host, "dead:v1", pd.path());
    assert_eq!(sha256_file(pd.path().join("big.bin")), big);
    finish(m);
}

/// What a command spawned by `commit_caught_mid_upload` printed so far.
fn output_in(outs: &Path, name: &str) -> String {
    fs::read_to_string(outs.join(name)).unwrap_or_default()
}

/// Spawns `cmd` (a `regfs commit`), its stdout and stderr going to `out`
/// and `err` in `outs`, and returns it once it has been uploading `blob`
/// through `proxy` for 1.5 s and is still running (`before`: what must not
/// have happened yet, for the message).
fn commit_caught_mid_upload(
    cmd: &mut Command,
    proxy: &FaultProxy,
    blob: &str,
    outs: &Path,
    before: &str,
) -> std::process::Child {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(outs.join("out")).unwrap())
        .stderr(fs::File::create(outs.join("err")).unwrap())
        .spawn()
        .expect("spawn regfs commit");
    let t = Instant::now();
    while !proxy.log().iter().any(|r| is_upload_of(r, blob)) {
        if t.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the upload of {blob} never started\nstdout: {}\nstderr: {}",
                output_in(outs, "out"),
                output_in(outs, "err")
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "commit ended before {before}\nstdout: {}\nstderr: {}",
        output_in(outs, "out"),
        output_in(outs, "err")
    );
    child
}

#[test]
fn commit_killed_mid_upload_then_rerun() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "old.txt", "old\n");
    let old = oras_push(&host, "kill:v1", &["old.txt"], w.path());
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("kill/v1");
    let src = tmpdir();
    make_random_file(src.path().join("big.bin"), 12 * 1024 * 1024, 51);
    cp(&[&src.path().join("big.bin")], &tag);
    let big = sha256_file(src.path().join("big.bin"));

    // ~12 s at 1 MiB/s: the kill lands in the middle of the upload
    proxy.set_rule(Some(Rule::new(
        "PUT",
        &hex(&big)[..16],
        RuleAction::SlowBody(1024 * 1024),
    )));
    let outs = tmpdir();
    let mut child = commit_caught_mid_upload(
        regfs().arg("commit").arg(&tag),
        &proxy,
        &big,
        outs.path(),
        "the kill",
    );
    child.kill().expect("kill -9 regfs commit");
    let st = crate::support::cmd::wait_timeout(&mut child, Duration::from_secs(10))
        .expect("killed commit did not exit");
    assert!(!st.success());

    assert_eq!(
        tag_digest(&reg, "kill", "v1").as_deref(),
        Some(old.as_str())
    );
    assert!(
        !blob_in_registry(&reg, "kill", &big),
        "the killed upload completed anyway (the test did not kill it mid-upload)"
    );
    let stt = status(&tag);
    assert!(
        stt.contains("staged changed kill:v1"),
        "staging lost after kill -9:\n{stt}"
    );
    assert_eq!(sha256_bytes(&read(&tag.join("big.bin"))), big);

    proxy.set_rule(None);
    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);
    assert_eq!(
        tag_digest(&reg, "kill", "v1").as_deref(),
        Some(digest.as_str())
    );
    let ok = assert_each_blob_uploaded_once(&proxy, "kill -9, then rerun");
    assert_eq!(ok.get(&big), Some(&1));
    let pd = tmpdir();
    oras_pull(&host, "kill:v1", pd.path());
    assert_eq!(sha256_file(pd.path().join("big.bin")), big);
    assert_eq!(fs::read(pd.path().join("old.txt")).unwrap(), b"old\n");
    wait_shows(&m, "kill/v1", &digest);
    finish(m);
}

/// Reliability issue, item 2: `regfs commit` died of SIGPIPE (exit 141,
/// nothing printed) when the registry went away while a large blob was
/// going up. A broken connection is an error like any other: one line on
/// stderr, exit 1, no tag.
#[test]
fn commit_to_reports_a_registry_killed_mid_upload() {
    let mut reg = Registry::start();
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let src = tmpdir();
    make_random_file(src.path().join("big.bin"), 96 * 1024 * 1024, 71);
    let big = sha256_file(src.path().join("big.bin"));
    // ~6 s at 16 MiB/s: the registry dies in the middle of the upload
    proxy.set_rule(Some(Rule::new(
        "PUT",
        &hex(&big)[..16],
        RuleAction::SlowBody(16 * 1024 * 1024),
    )));
    let target = format!("{}/cut:v1", proxy.host());
    let outs = tmpdir();
    let mut child = commit_caught_mid_upload(
        regfs()
            .arg("commit")
            .arg(src.path())
            .arg("--to")
            .arg(&target)
            .args(["--timeout", "5"]),
        &proxy,
        &big,
        outs.path(),
        "the registry died",
    );
    let output = |name: &str| output_in(outs.path(), name);
    reg.stop();
    let st = crate::support::cmd::wait_timeout(&mut child, COMMIT_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("regfs commit hung after the registry died")
    });
    let (out, err) = (output("out"), output("err"));
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.code(),
            Some(1),
            "regfs commit ended with {st:?} (signal {:?})\nstdout: {out}\nstderr: {err}",
            st.signal()
        );
    }
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("regfs: ")).collect();
    let want = format!("regfs: [registry] {target} not committed (no tag moved): ");
    assert!(
        matches!(lines[..], [l] if l.starts_with(&want)),
        "one line saying what failed and that no tag moved expected:\n{err}"
    );
    reg.restart();
    assert_eq!(
        tag_digest(&reg, "cut", "v1"),
        None,
        "a tag exists after a failed commit\nstdout: {out}\nstderr: {err}"
    );
}

// ====================================================================
// 5. mirroring: rsync between two mounts, and through a plain folder
// ====================================================================

fn rsync(from: &Path, to: &Path) {
    let mut c = Command::new("rsync");
    c.arg("-aH")
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display()));
    run_timeout(&mut c, Duration::from_secs(300));
}

/// Every manifest (index and children) and blob of `repo@digest` in
/// registry `host` verifies; returns the digests of all manifests reached.
fn manifest_closure(host: &str, repo: &str, digest: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![digest.to_string()];
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let m = fetch_manifest(host, repo, &d);
        if let Some(children) = m.json["manifests"].as_array() {
            todo.extend(
                children
                    .iter()
                    .map(|c| c["digest"].as_str().unwrap().to_string()),
            );
        } else {
            fetch_blob(host, repo, m.json["config"]["digest"].as_str().unwrap());
            for l in m.json["layers"].as_array().unwrap() {
                fetch_blob(host, repo, l["digest"].as_str().unwrap());
            }
        }
    }
    seen
}

#[test]
fn rsync_between_mounts_keeps_digests() {
    let reg_a = Registry::start();
    let reg_b = Registry::start();
    let (ha, hb) = (reg_a.host(), reg_b.host());
    // an ORAS artifact (files, a nested title, a folder layer) ...
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello\n");
    make_random_file(w.path().join("data.bin"), 1024 * 1024 + 7, 61);
    write_file(w.path(), "bin/linux/amd64/tool", "#!/bin/sh\n");
    write_file(w.path(), "docs/readme.md", "# docs\n");
    let art = oras_push(
        &ha,
        "mir/art:v1",
        &["hello.txt", "data.bin", "bin/linux/amd64/tool", "docs"],
        w.path(),
    );
    // ... and a multi-arch image index pushed by skopeo
    let layout = tmpdir();
    let img = make_oci_image_layout(
        layout.path(),
        "multi",
        &[
            ("linux", "amd64", None),
            ("linux", "arm64", None),
            ("linux", "arm", Some("v7")),
        ],
    );
    skopeo_copy_to_registry(layout.path(), "multi", &ha, "mir/img:v1", true, None);
    assert_eq!(fetch_manifest(&ha, "mir/img", "v1").digest, img.digest);

    let ma = mount(&ha);
    let mb = mount(&hb);
    mkdir_p(&mb.join("mir"));
    for repo in ["art", "img"] {
        rsync(
            &ma.join(&format!("mir/{repo}")),
            &mb.join(&format!("mir/{repo}")),
        );
    }
    let st = status(mb.path());
    assert!(st.contains("staged new mir/art:v1"), "{st}");
    assert!(st.contains("staged new mir/img:v1"), "{st}");
    assert!(
        reg_b.catalog().is_empty(),
        "rsync reached registry B before commit"
    );

    let out = commit(Some(&mb), &[mb.join("mir/art"), mb.join("mir/img")]);
    let ds: BTreeSet<String> = digest_lines(&out).into_iter().collect();
    assert_eq!(
        ds,
        [art.clone(), img.digest.clone()].into_iter().collect(),
        "commit output:\n{out}"
    );
    assert_eq!(
        tag_digest(&reg_b, "mir/art", "v1").as_deref(),
        Some(art.as_str())
    );
    assert_eq!(
        tag_digest(&reg_b, "mir/img", "v1").as_deref(),
        Some(img.digest.as_str())
    );
    assert_eq!(
        manifest_closure(&hb, "mir/img", &img.digest),
        manifest_closure(&ha, "mir/img", &img.digest)
    );
    manifest_closure(&hb, "mir/art", &art);
    // the copy pulls to the same files
    let pd = tmpdir();
    oras_pull(&hb, "mir/art:v1", pd.path());
    for f in [
        "hello.txt",
        "data.bin",
        "bin/linux/amd64/tool",
        "docs/readme.md",
    ] {
        assert_eq!(
            fs::read(pd.path().join(f)).unwrap(),
            fs::read(w.path().join(f)).unwrap(),
            "{f}"
        );
    }
    wait_shows(&mb, "mir/img/v1", &img.digest);
    wait_shows(&mb, "mir/art/v1", &art);
    // B's tree now reads like A's
    for t in ["mir/art/v1", "mir/img/v1"] {
        let fa = walk_files(&ma.join(t));
        assert_eq!(fa, walk_files(&mb.join(t)), "{t}");
        for f in &fa {
            assert_eq!(
                read(&ma.join(t).join(f)),
                read(&mb.join(t).join(f)),
                "{t}/{f}"
            );
        }
    }

    // the same through a plain folder and `commit --to`
    let usb = tmpdir();
    rsync(&ma.join("mir"), &usb.path().join("mir"));
    for (repo, digest) in [("art", &art), ("img", &img.digest)] {
        let dir = usb.path().join(format!("mir/{repo}/v1"));
        assert_eq!(&sha256_file(dir.join("manifest.json")), digest);
        let out = commit(
            None,
            &[
                dir.as_os_str(),
                OsStr::new("--to"),
                OsStr::new(&format!("{hb}/usb/{repo}:v1")),
            ],
        );
        assert_eq!(&digest_line(&out), digest, "commit --to of {repo}:\n{out}");
        assert_eq!(
            tag_digest(&reg_b, &format!("usb/{repo}"), "v1").as_ref(),
            Some(digest)
        );
        manifest_closure(&hb, &format!("usb/{repo}"), digest);
    }
    // ... and into an OCI layout, which skopeo reads
    let oci = tmpdir();
    let other = make_oci_image_layout(oci.path(), "other", &[("linux", "s390x", None)]);
    let out = commit(
        None,
        &[
            usb.path().join("mir/img/v1").as_os_str(),
            OsStr::new("--to"),
            OsStr::new(&format!("oci:{}:v1", oci.path().display())),
        ],
    );
    assert_eq!(digest_line(&out), img.digest);
    let raw = skopeo(&[
        "--insecure-policy",
        "inspect",
        "--raw",
        &format!("oci:{}:v1", oci.path().display()),
    ]);
    assert_eq!(sha256_bytes(raw.as_bytes()), img.digest);
    let raw = skopeo(&[
        "--insecure-policy",
        "inspect",
        "--raw",
        &format!("oci:{}:other", oci.path().display()),
    ]);
    assert_eq!(sha256_bytes(raw.as_bytes()), other.digest);
    finish(ma);
    finish(mb);

    // `oras push --oci-layout DIR:TAG` and `skopeo copy ... oci:DIR:TAG`
    // create the layout in an empty (or missing) folder; so should --to
    let fresh = tmpdir();
    let out = commit(
        None,
        &[
            usb.path().join("mir/art/v1").as_os_str(),
            OsStr::new("--to"),
            OsStr::new(&format!("oci:{}:v1", fresh.path().display())),
        ],
    );
    assert_eq!(digest_line(&out), art);
    let raw = skopeo(&[
        "--insecure-policy",
        "inspect",
        "--raw",
        &format!("oci:{}:v1", fresh.path().display()),
    ]);
    assert_eq!(sha256_bytes(raw.as_bytes()), art);
}

// ====================================================================
// 6. staging survives a remount; status, discard, dry run
// ====================================================================

#[test]
fn staging_survives_remount_status_discard_and_dry_run() {
    let reg = Registry::start();
    let host = reg.host();
    let cache = tmpdir();
    let staging = tmpdir();
    let args = [
        "--timeout",
        "5",
        "--staging-dir",
        staging.path().to_str().unwrap(),
    ];
    let m = Mount::with_cache(&host, cache.path(), &args);
    let src = tmpdir();
    make_random_file(src.path().join("payload.bin"), 300 * 1024, 71);
    write_file(src.path(), "note.txt", "note\n");
    mkdir_p(&m.join("st/v1"));
    mkdir_p(&m.join("st/v2"));
    cp(
        &[
            &src.path().join("payload.bin"),
            &src.path().join("note.txt"),
        ],
        &m.join("st/v1"),
    );
    cp(&[&src.path().join("note.txt")], &m.join("st/v2"));
    // a fixed created annotation, so the dry run and the commit agree
    setfattr(
        &m.join("st/v1"),
        &format!("user.oci.annotation.{ANNOTATION_CREATED}"),
        CREATED,
    );
    // the staging lives where --staging-dir says
    let staged: Vec<PathBuf> = walk_local(staging.path())
        .into_iter()
        .filter(|p| p.file_name() == Some(OsStr::new("payload.bin")))
        .collect();
    assert_eq!(
        staged.len(),
        1,
        "payload.bin not staged under --staging-dir: {staged:?}"
    );
    assert_eq!(
        sha256_file(&staged[0]),
        sha256_file(src.path().join("payload.bin"))
    );
    let p = m.path().to_path_buf();
    finish(m);
    assert!(!p.join("st").exists());

    // remount: still staged, still readable
    let m = Mount::with_cache(&host, cache.path(), &args);
    let st = status(m.path());
    assert!(st.contains("staged new st:v1"), "after remount:\n{st}");
    assert!(st.contains("staged new st:v2"), "after remount:\n{st}");
    assert_eq!(
        sha256_bytes(&read(&m.join("st/v1/payload.bin"))),
        sha256_file(src.path().join("payload.bin"))
    );

    // dry run and --output -: JSON, nothing pushed
    let dry = commit(
        Some(&m),
        &[m.join("st/v1").as_os_str(), OsStr::new("--dry-run")],
    );
    let j: Value = serde_json::from_str(&dry)
        .unwrap_or_else(|e| panic!("--dry-run is not JSON ({e}):\n{dry}"));
    let out_dash = commit(
        Some(&m),
        &[
            m.join("st/v1").as_os_str(),
            OsStr::new("--output"),
            OsStr::new("-"),
        ],
    );
    let j2: Value = serde_json::from_str(&out_dash)
        .unwrap_or_else(|e| panic!("--output - is not JSON ({e}):\n{out_dash}"));
    let file = cache.path().join("plan.json");
    commit(
        Some(&m),
        &[
            m.join("st/v1").as_os_str(),
            OsStr::new("--output"),
            file.as_os_str(),
        ],
    );
    let j3: Value = serde_json::from_slice(&fs::read(&file).unwrap()).expect("--output FILE JSON");
    assert_eq!(j, j2);
    assert_eq!(j, j3);
    assert!(
        reg.catalog().is_empty(),
        "a dry run pushed: {:?}",
        reg.catalog()
    );
    assert_eq!(j["reference"], format!("{host}/st:v1").as_str());
    assert_eq!(j["mediaType"], MT_OCI_MANIFEST);
    let planned = j["digest"].as_str().unwrap().to_string();
    let mans = j["manifests"].as_array().unwrap();
    assert_eq!(mans.len(), 1);
    assert_eq!(mans[0]["digest"], planned.as_str());
    assert_eq!(mans[0]["mediaType"], MT_OCI_MANIFEST);
    let pm = &mans[0]["manifest"];
    assert_eq!(pm["annotations"][ANNOTATION_CREATED], CREATED);
    assert_eq!(
        layer(pm, "note.txt")["digest"],
        sha256_file(src.path().join("note.txt")).as_str()
    );
    let blob_digests: BTreeSet<&str> = j["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap())
        .collect();
    assert!(blob_digests.contains(sha256_file(src.path().join("payload.bin")).as_str()));
    // still staged after the dry runs
    assert!(status(m.path()).contains("staged new st:v1"));

    // discard v2: gone from status and from the tree
    discard(&m.join("st/v2"));
    let st = status(m.path());
    assert!(!st.contains("st:v2"), "discarded tag still listed:\n{st}");
    assert_eq!(
        try_meta(&m.join("st/v2"))
            .map(|_| ())
            .map_err(|e| errno(&e)),
        Err(ENOENT)
    );

    // commit the repository folder: only v1, with the digest the dry run planned
    let out = commit(Some(&m), &[m.join("st")]);
    assert_eq!(digest_line(&out), planned, "dry run and commit disagree");
    assert_eq!(reg.tags("st"), ["v1"]);
    let fm = fetch_manifest(&host, "st", "v1");
    assert_eq!(fm.digest, planned);
    assert_same_json(&fm.json, pm, "pushed manifest vs --dry-run");
    wait_shows(&m, "st/v1", &planned);
    let st = status(m.path());
    assert!(!st.contains("st:v1"), "{st}");
    finish(m);
}

/// Every path under a local folder (no FUSE involved).
fn walk_local(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

// ====================================================================
// 7. --annotation-file, --artifact-type, --tag; unchanged re-commit
// ====================================================================

#[test]
fn annotation_file_artifact_type_extra_tags_and_unchanged_recommit() {
    let reg = Registry::start();
    let host = reg.host();
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let src = tmpdir();
    write_file(src.path(), "a.txt", "A\n");
    make_random_file(src.path().join("b.bin"), 500 * 1024, 81);
    let ann = write_file(
        src.path(),
        "ann.json",
        r#"{"$manifest":{"m":"1"},"$config":{"c":"2"},"a.txt":{"t":"3"}}"#,
    );
    let tag = m.join("ann/v1");
    mkdir_p(&tag);
    cp(
        &[&src.path().join("a.txt"), &src.path().join("b.bin")],
        &tag,
    );
    let out = commit(
        Some(&m),
        &[
            tag.as_os_str(),
            OsStr::new("--annotation-file"),
            ann.as_os_str(),
            OsStr::new("--artifact-type"),
            OsStr::new("application/x.test"),
            OsStr::new("--tag"),
            OsStr::new("extra1"),
            OsStr::new("--tag"),
            OsStr::new("extra2"),
        ],
    );
    let digest = digest_line(&out);
    for t in ["v1", "extra1", "extra2"] {
        assert_line(&out, &format!("Tagged    {t}"));
        assert_eq!(
            tag_digest(&reg, "ann", t).as_deref(),
            Some(digest.as_str()),
            "{t}"
        );
    }
    assert_eq!(reg.tags("ann"), ["extra1", "extra2", "v1"]);
    let j = fetch_manifest(&host, "ann", "v1").json;
    assert_eq!(j["artifactType"], "application/x.test");
    assert_eq!(j["annotations"]["m"], "1");
    assert_created_format(&j["annotations"][ANNOTATION_CREATED]);
    assert_eq!(j["config"]["mediaType"], MT_OCI_EMPTY);
    assert_eq!(
        layer(&j, "a.txt")["annotations"],
        json!({ANNOTATION_TITLE: "a.txt", "t": "3"})
    );
    assert_eq!(
        layer(&j, "b.bin")["annotations"],
        json!({ANNOTATION_TITLE: "b.bin"})
    );
    // the config descriptor changed (annotations), the blob is the empty one
    fetch_blob(&host, "ann", EMPTY_CONFIG_DIGEST);

    // an unchanged copy into another tag: every blob exists, none is sent
    wait_shows(&m, "ann/v1", &digest);
    proxy.reset_counters();
    let tag2 = m.join("ann/v2");
    mkdir_p(&tag2);
    cp(
        &[&src.path().join("a.txt"), &src.path().join("b.bin")],
        &tag2,
    );
    setfattr(&tag2, "user.oci.artifactType", "application/x.by-xattr");
    let out = commit(Some(&m), &[&tag2]);
    let d2 = digest_line(&out);
    let j2 = fetch_manifest(&host, "ann", "v2").json;
    assert_eq!(fetch_manifest(&host, "ann", "v2").digest, d2);
    assert_eq!(j2["artifactType"], "application/x.by-xattr");
    assert!(
        upload_traffic(&proxy).is_empty(),
        "blob bytes sent for an unchanged copy:\n{}\n{out}",
        upload_traffic(&proxy).join("\n")
    );
    for l in out
        .lines()
        .filter(|l| l.contains(" a.txt") || l.contains(" b.bin"))
    {
        assert!(l.starts_with("Exists    "), "not 'Exists': {l}\n{out}");
    }
    assert_line(&out, "Exists    a.txt");
    assert_line(&out, "Exists    b.bin");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("Uploaded  ") && !l.contains("manifest")),
        "a blob was uploaded:\n{out}"
    );
    finish(m);
    // ORAS puts the "$config" annotations on the config descriptor
    // (checked last, so the checks above still run)
    assert_eq!(
        j["config"]["annotations"],
        json!({"c": "2"}),
        "config descriptor after --annotation-file with \"$config\": {:#}",
        j["config"]
    );
}

/// Manifest PUTs the proxy saw (`PUT /v2/.../manifests/REF`), as `REPO:REF`.
fn manifest_puts(proxy: &FaultProxy) -> Vec<String> {
    proxy
        .log()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/manifests/"))
        .map(|r| {
            r.path
                .replacen("/v2/", "", 1)
                .replacen("/manifests/", ":", 1)
        })
        .collect()
}

#[test]
fn a_commit_with_no_effective_change_is_unchanged_and_moves_nothing() {
    let reg = Registry::start();
    let host = reg.host();
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let src = tmpdir();
    write_file(src.path(), "a.txt", "A\n");
    write_file(src.path(), "b.txt", "B\n");
    // the ORAS Python SDK's own push: JSON with ", " and ": "
    let digest = oras_push_with(
        &host,
        "unch:v1",
        &["a.txt", "b.txt"],
        src.path(),
        &PushOpts {
            python_native: true,
            ..Default::default()
        },
    );
    let before = fetch_manifest(&host, "unch", "v1").bytes;
    assert!(String::from_utf8_lossy(&before).contains(", "));
    let m = mount(&proxy.host());
    let tag = m.join("unch/v1");
    // edits that change nothing: a file copied over itself, touched, its
    // title and a derived attribute copied back
    cp(&[&src.path().join("a.txt")], &tag);
    sh(Command::new("touch").arg(tag.join("b.txt")));
    setfattr(
        &tag.join("a.txt"),
        &format!("user.oci.annotation.{ANNOTATION_TITLE}"),
        "a.txt",
    );
    setfattr(&tag, "user.oci.digest", &digest);
    assert!(
        status(&tag).contains("staged changed unch:v1"),
        "{}",
        status(&tag)
    );
    proxy.reset_counters();
    let out = commit(Some(&m), &[&tag]);
    assert_line(
        &out,
        &format!("Unchanged [registry] {}/unch:v1", proxy.host()),
    );
    assert_eq!(digest_line(&out), digest);
    assert!(!out.contains("Tagged"), "{out}");
    assert!(
        manifest_puts(&proxy).is_empty(),
        "{:?}\n{out}",
        manifest_puts(&proxy)
    );
    assert!(
        upload_traffic(&proxy).is_empty(),
        "{:?}",
        upload_traffic(&proxy)
    );
    assert_eq!(fetch_manifest(&host, "unch", "v1").bytes, before);
    // nothing is left staged, and the folder shows the same manifest
    assert!(!status(&tag).contains("unch:v1"), "{}", status(&tag));
    wait_shows(&m, "unch/v1", &digest);

    // a real change moves the tag, and the rest of the manifest is kept
    write_file(src.path(), "a.txt", "A2\n");
    cp(&[&src.path().join("a.txt")], &tag);
    proxy.reset_counters();
    let out = commit(Some(&m), &[&tag]);
    let d2 = digest_line(&out);
    assert_ne!(d2, digest);
    assert_line(&out, "Tagged    v1");
    assert_eq!(
        manifest_puts(&proxy),
        [format!("unch:{d2}"), "unch:v1".to_string()]
    );
    // an extra tag that does not point there yet is moved, the tag itself is not
    wait_shows(&m, "unch/v1", &d2);
    cp(&[&src.path().join("a.txt")], &tag);
    proxy.reset_counters();
    let out = commit(
        Some(&m),
        &[tag.as_os_str(), OsStr::new("--tag"), OsStr::new("extra")],
    );
    assert_line(&out, "Tagged    extra");
    assert!(!has_line(&out, "Tagged    v1"), "{out}");
    assert_eq!(manifest_puts(&proxy), ["unch:extra".to_string()]);
    assert_eq!(
        tag_digest(&reg, "unch", "extra").as_deref(),
        Some(d2.as_str())
    );
    finish(m);
}

// ====================================================================
// 8. refusals, read-only mounts, OCI layouts
// ====================================================================

#[test]
fn rmdir_of_a_tag_is_eperm() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "f.txt", "f\n");
    let d = oras_push(&host, "perm:v1", &["f.txt"], w.path());
    let m = mount(&host);
    let tag = m.join("perm/v1");
    let t2 = tag.clone();
    let r = bounded("rmdir", OP, move || fs::remove_dir(&t2));
    assert_eq!(
        r.map_err(|e| errno(&e)),
        Err(EPERM),
        "rmdir of a tag folder"
    );
    let out = run_unchecked_timeout(Command::new("rmdir").arg(&tag), OP);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_bytes(&read(&tag.join("manifest.json"))), d);
    assert_eq!(read(&tag.join("f.txt")), b"f\n");
    assert_eq!(reg.tags("perm"), ["v1"]);
    finish(m);
}

#[test]
fn read_only_mount_refuses_writes_with_erofs() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "f.txt", "f\n");
    oras_push(&host, "ro:v1", &["f.txt"], w.path());
    let m = Mount::new(&host, &["--timeout", "5", "--read-only"]);
    let tag = m.join("ro/v1");
    assert_eq!(read(&tag.join("f.txt")), b"f\n");
    assert_eq!(
        try_mkdir(&m.join("ro/v2")).map_err(|e| errno(&e)),
        Err(EROFS),
        "mkdir"
    );
    assert_eq!(
        try_mkdir(&m.join("newrepo")).map_err(|e| errno(&e)),
        Err(EROFS),
        "mkdir repo"
    );
    assert_eq!(
        try_write(&tag.join("new.txt"), b"x").map_err(|e| errno(&e)),
        Err(EROFS),
        "create"
    );
    assert_eq!(
        try_write(&tag.join("f.txt"), b"x").map_err(|e| errno(&e)),
        Err(EROFS),
        "overwrite"
    );
    let f = tag.join("f.txt");
    let r = bounded("unlink", OP, move || fs::remove_file(&f));
    assert_eq!(r.map_err(|e| errno(&e)), Err(EROFS), "unlink");
    let out = run_unchecked_timeout(
        Command::new("setfattr")
            .args(["-n", "user.oci.annotation.k", "-v", "v"])
            .arg(&tag),
        OP,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "setfattr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c, out) = commit_unchecked(&[&tag]);
    assert!(
        !out.status.success(),
        "commit on a read-only mount\n{}",
        describe(&c, &out)
    );
    assert_eq!(read(&tag.join("f.txt")), b"f\n");
    assert_eq!(reg.tags("ro"), ["v1"]);
    finish(m);
}

#[test]
fn commit_into_an_oci_layout_mount() {
    let layout = tmpdir();
    let base = make_oci_image_layout(layout.path(), "base", &[("linux", "amd64", None)]);
    let m = mount(&format!("oci:{}", layout.path().display()));
    assert!(
        ls(m.path()).contains(&"base".to_string()),
        "{:?}",
        ls(m.path())
    );
    let src = tmpdir();
    write_file(src.path(), "hello.txt", "hello layout\n");
    write_file(src.path(), "docs/a.md", "a\n");
    let tag = m.join("newtag");
    mkdir(&tag);
    cp(
        &[&src.path().join("hello.txt"), &src.path().join("docs")],
        &tag,
    );
    let out = commit(Some(&m), &[&tag]);
    let digest = digest_line(&out);

    // index.json names the new tag, keeps the old; no temporary files left
    let idx: Value = serde_json::from_slice(&fs::read(layout.path().join("index.json")).unwrap())
        .expect("index.json is JSON");
    let entries = idx["manifests"].as_array().unwrap();
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["annotations"][ANNOTATION_REF_NAME] == n)
            .unwrap_or_else(|| panic!("no {n} in index.json: {idx:#}"))
    };
    assert_eq!(by_name("newtag")["digest"], digest.as_str());
    assert_eq!(by_name("newtag")["mediaType"], MT_OCI_MANIFEST);
    assert_eq!(by_name("base")["digest"], base.digest.as_str());
    let mut top: Vec<String> = fs::read_dir(layout.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["blobs", "index.json", "oci-layout"],
        "layout top level"
    );
    // blobs verify
    for e in fs::read_dir(layout.path().join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        assert_eq!(
            sha256_file(e.path()),
            format!("sha256:{}", e.file_name().to_string_lossy()),
            "blob file content"
        );
    }
    // skopeo reads it
    let oref = format!("oci:{}:newtag", layout.path().display());
    let raw = skopeo(&["--insecure-policy", "inspect", "--raw", &oref]);
    assert_eq!(sha256_bytes(raw.as_bytes()), digest);
    let od = tmpdir();
    let dir_out = od.path().join("x");
    run_timeout(
        Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--quiet", &oref])
            .arg(format!("dir:{}", dir_out.display())),
        OP,
    );
    let j: Value =
        serde_json::from_slice(&fs::read(dir_out.join("manifest.json")).unwrap()).unwrap();
    let l = layer(&j, "hello.txt");
    assert_eq!(
        fs::read(dir_out.join(hex(l["digest"].as_str().unwrap()))).unwrap(),
        b"hello layout\n"
    );
    // the mount shows it
    wait_shows(&m, "newtag", &digest);
    assert_eq!(read(&tag.join("hello.txt")), b"hello layout\n");
    assert_eq!(read(&tag.join("docs/a.md")), b"a\n");
    finish(m);
}

// ====================================================================
// the moment right after a commit
// ====================================================================

/// A file that was staged before the commit and is in the registry after
/// it must stay readable through the commit: `regfs commit DIR && cat
/// DIR/file` is what scripts do.
#[test]
fn files_stay_readable_right_after_commit() {
    let reg = Registry::start();
    let host = reg.host();
    let m = mount(&host);
    let mut failures = Vec::new();
    for i in 0..3 {
        let tag = m.join(&format!("now/t{i}"));
        mkdir_p(&tag);
        write_file(&tag, "f.txt", format!("f{i}\n"));
        let digest = digest_line(&commit(Some(&m), &[&tag]));
        // no wait: straight after `regfs commit` returned
        match try_read(&tag.join("f.txt")) {
            Ok(b) if b == format!("f{i}\n").as_bytes() => {}
            other => failures.push(format!(
                "t{i}: read f.txt right after commit: {:?} (listing: {:?})",
                other.map(|b| String::from_utf8_lossy(&b).into_owned()),
                try_ls(&tag)
            )),
        }
        wait_shows(&m, &format!("now/t{i}"), &digest);
        assert_eq!(read(&tag.join("f.txt")), format!("f{i}\n").as_bytes());
    }
    // an existing tag: a replaced file and an untouched one
    let w = tmpdir();
    write_file(w.path(), "same.txt", "same\n");
    write_file(w.path(), "changed.txt", "before\n");
    oras_push(&host, "now/old:v1", &["same.txt", "changed.txt"], w.path());
    let tag = m.join("now/old/v1");
    assert_eq!(read(&tag.join("changed.txt")), b"before\n");
    let src = tmpdir();
    write_file(src.path(), "changed.txt", "after\n");
    cp(&[&src.path().join("changed.txt")], &tag);
    let digest = digest_line(&commit(Some(&m), &[&tag]));
    for (f, want) in [("changed.txt", "after\n"), ("same.txt", "same\n")] {
        match try_read(&tag.join(f)) {
            Ok(b) if b == want.as_bytes() => {}
            other => failures.push(format!(
                "old:v1: read {f} right after commit: {:?}",
                other.map(|b| String::from_utf8_lossy(&b).into_owned())
            )),
        }
    }
    wait_shows(&m, "now/old/v1", &digest);
    assert_eq!(read(&tag.join("changed.txt")), b"after\n");
    finish(m);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ====================================================================
// cross-repository mounts; committing the whole mount
// ====================================================================

#[test]
fn blob_in_another_repository_is_mounted_not_uploaded() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    make_random_file(w.path().join("shared.bin"), 700 * 1024, 91);
    oras_push(&host, "src/one:v1", &["shared.bin"], w.path());
    let shared = sha256_file(w.path().join("shared.bin"));
    let proxy = FaultProxy::start(&host, Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("dst/two/v1");
    mkdir_p(&tag);
    // copied through the mount from the other repository
    cp(&[&m.join("src/one/v1/shared.bin")], &tag);
    proxy.reset_counters();
    let out = commit(Some(&m), &[&tag]);
    assert_line(&out, "Mounted   shared.bin from src/one");
    let log = proxy.log();
    assert!(
        log.iter().any(|r| r.method == "POST"
            && r.path.contains("/v2/dst/two/blobs/uploads/")
            && r.path.contains("mount=")
            && r.path.contains("from=src")
            && r.status == 201),
        "no cross-repository mount request: {:#?}",
        log
    );
    assert!(
        !log.iter().any(|r| is_upload_of(r, &shared)),
        "shared.bin was uploaded: {}",
        upload_traffic(&proxy).join("\n")
    );
    assert!(blob_in_registry(&reg, "dst/two", &shared));
    let pd = tmpdir();
    oras_pull(&host, "dst/two:v1", pd.path());
    assert_eq!(sha256_file(pd.path().join("shared.bin")), shared);
    finish(m);
}

#[test]
fn commit_of_the_mount_root_pushes_every_staged_tag() {
    let reg = Registry::start();
    let host = reg.host();
    let m = mount(&host);
    for (dir, content) in [("r1/a", "1a"), ("r1/b", "1b"), ("deep/r2/c", "2c")] {
        mkdir_p(&m.join(dir));
        write_file(m.join(dir), "f.txt", content);
    }
    let st = status(m.path());
    for t in ["r1:a", "r1:b", "deep/r2:c"] {
        assert!(st.contains(&format!("staged new {t}")), "{t}:\n{st}");
    }
    let out = commit(Some(&m), &[m.path()]);
    assert_eq!(digest_lines(&out).len(), 3, "{out}");
    assert_eq!(reg.tags("r1"), ["a", "b"]);
    assert_eq!(reg.tags("deep/r2"), ["c"]);
    for (repo, tag, content) in [("r1", "a", "1a"), ("r1", "b", "1b"), ("deep/r2", "c", "2c")] {
        let j = fetch_manifest(&host, repo, tag).json;
        assert_eq!(
            fetch_blob(&host, repo, layer(&j, "f.txt")["digest"].as_str().unwrap()),
            content.as_bytes()
        );
    }
    let st = status(m.path());
    assert!(!st.contains("staged new"), "{st}");
    // nothing left: a second commit of the root does nothing
    let before = reg.tags("r1");
    commit(Some(&m), &[m.path()]);
    assert_eq!(reg.tags("r1"), before);
    finish(m);
}

#[test]
fn verbatim_folder_with_a_missing_blob_is_refused_before_any_upload() {
    let reg_a = Registry::start();
    let reg_b = Registry::start();
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello\n");
    make_random_file(w.path().join("data.bin"), 200 * 1024, 95);
    let art = oras_push(&reg_a.host(), "vb:v1", &["hello.txt", "data.bin"], w.path());
    let ma = mount(&reg_a.host());
    let usb = tmpdir();
    rsync(&ma.join("vb/v1"), &usb.path().join("v1"));
    finish(ma);
    let dir = usb.path().join("v1");
    assert_eq!(sha256_file(dir.join("manifest.json")), art);
    // the folder alone is enough
    let ok_dir = usb.path().join("copy");
    sh(Command::new("cp").arg("-a").arg(&dir).arg(&ok_dir));
    let data = sha256_file(w.path().join("data.bin"));
    let hello = sha256_file(w.path().join("hello.txt"));
    // without data.bin (neither titled file nor blob), and registry B lacks it
    fs::remove_file(dir.join("data.bin")).unwrap();
    fs::remove_file(dir.join("blobs/sha256").join(hex(&data))).unwrap();
    let target = format!("{}/vb:v1", reg_b.host());
    let (c, out) = commit_unchecked(&[dir.as_os_str(), OsStr::new("--to"), OsStr::new(&target)]);
    assert!(
        !out.status.success(),
        "commit with a missing blob succeeded\n{}",
        describe(&c, &out)
    );
    assert!(reg_b.tags("vb").is_empty());
    assert!(
        !blob_in_registry(&reg_b, "vb", &hello),
        "hello.txt was uploaded before the missing blob was noticed\n{}",
        describe(&c, &out)
    );
    let d = digest_line(&commit(
        None,
        &[ok_dir.as_os_str(), OsStr::new("--to"), OsStr::new(&target)],
    ));
    assert_eq!(d, art);
    assert_eq!(tag_digest(&reg_b, "vb", "v1"), Some(art));
    fetch_blob(&reg_b.host(), "vb", &data);
}

// ====================================================================
// the proxy's per-request rules (tests/support/proxy.rs), used above
// ====================================================================

#[test]
fn support_proxy_rules_hit_only_matching_requests() {
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let h = proxy.host();
    proxy.set_rule(Some(Rule::new("PUT", "/manifests/", RuleAction::Fail(503))));
    assert_eq!(http_get(&h, "/v2/").unwrap().status, 200);
    let put = |tag: &str| {
        http_request(
            &h,
            "PUT",
            &format!("/v2/r/manifests/{tag}"),
            &[("Content-Type", MT_OCI_MANIFEST)],
            br#"{"schemaVersion":2}"#,
        )
        .unwrap()
        .status
    };
    assert_eq!(put("a"), 503);
    assert_eq!(put("a"), 503, "a rule stays until cleared");
    assert_eq!(
        http_get(&h, "/v2/r/manifests/a").unwrap().status,
        404,
        "GET not matched"
    );
    proxy.set_rule(Some(Rule::new("", "/v2/x", RuleAction::Close)));
    assert!(http_get(&h, "/v2/x/tags/list").is_err());
    assert_eq!(http_get(&h, "/v2/").unwrap().status, 200);
    proxy.set_rule(Some(Rule::new("GET", "/v2/hang", RuleAction::Hang)));
    let t = Instant::now();
    let hung = {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&h).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        write!(c, "GET /v2/hang HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut b = [0u8; 64];
        c.read(&mut b)
    };
    assert!(hung.is_err(), "a Hang rule answered: {hung:?}");
    assert!(t.elapsed() >= Duration::from_millis(900));
    // a slow upload: 200 KiB at 400 KiB/s takes about half a second
    proxy.set_rule(Some(Rule::new(
        "PUT",
        "/blobs/uploads/",
        RuleAction::SlowBody(400 * 1024),
    )));
    let data = vec![7u8; 200 * 1024];
    let d = sha256_bytes(&data);
    let post = http_request(&h, "POST", "/v2/r/blobs/uploads/", &[], &[]).unwrap();
    assert_eq!(post.status, 202);
    let loc = post.header("Location").unwrap().to_string();
    let path = loc
        .split_once(&h)
        .map(|(_, p)| p.to_string())
        .unwrap_or(loc.clone());
    let sep = if path.contains('?') { '&' } else { '?' };
    let t = Instant::now();
    let put = http_request(&h, "PUT", &format!("{path}{sep}digest={d}"), &[], &data).unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(fetch_blob(&reg.host(), "r", &d), data);
    proxy.set_rule(None);
    assert_eq!(
        put_status_after_clear(&h),
        400,
        "cleared rule: the registry answers"
    );
}

/// A bad manifest PUT straight through the proxy: the registry's own answer.
fn put_status_after_clear(h: &str) -> u16 {
    http_request(
        h,
        "PUT",
        "/v2/r/manifests/a",
        &[("Content-Type", MT_OCI_MANIFEST)],
        br#"{"schemaVersion":2}"#,
    )
    .unwrap()
    .status
}

/// Bytes of the files under `dir`, each file (inode) once, as `du` counts.
fn unique_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}

/// (inode, link count) of a path in a mount.
fn ino_links(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let q = p.to_path_buf();
    let m = bounded("stat", OP, move || fs::metadata(&q))
        .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.ino(), m.nlink())
}

#[test]
fn a_mirror_carries_each_blob_once() {
    let reg_a = Registry::start();
    let reg_b = Registry::start();
    let (ha, hb) = (reg_a.host(), reg_b.host());
    // Four tags of one repository and a second repository share weights;
    // each tag has notes of its own.
    let w = tmpdir();
    let size = 3 * 1024 * 1024 + 11;
    make_random_file(w.path().join("weights.bin"), size, 71);
    let weights_hex = hex(&sha256_file(w.path().join("weights.bin"))).to_string();
    let mut tags = BTreeMap::new();
    for t in 0..4 {
        write_file(w.path(), "notes.txt", format!("notes of v{t}\n"));
        let d = oras_push(
            &ha,
            &format!("share/llm:v{t}"),
            &["weights.bin", "notes.txt"],
            w.path(),
        );
        tags.insert(format!("v{t}"), d);
    }
    oras_push(&ha, "share/copy:v1", &["weights.bin"], w.path());
    // A two-platform index whose images share a layer.
    let layer = b"a layer both platforms have\n".repeat(100);
    let layer_d = reg_a.push_blob("share/img", &layer);
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}"#
        );
        let config_d = reg_a.push_blob("share/img", config.as_bytes());
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": layer.len()}],
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        let d = reg_a.push_manifest(
            "share/img",
            &sha256_bytes(&bytes),
            &bytes,
            "application/vnd.oci.image.manifest.v1+json",
        );
        children.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": bytes.len(), "platform": {"os": "linux", "architecture": arch}}));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }))
    .unwrap();
    reg_a.push_manifest(
        "share/img",
        "v1",
        &index,
        "application/vnd.oci.image.index.v1+json",
    );

    let ma = mount(&ha);
    // Every name of a blob, in every tag, platform and repository, is one
    // inode with at least two links.
    let lhex = hex(&layer_d).to_string();
    for group in [
        vec![
            "share/llm/v0/weights.bin".to_string(),
            "share/llm/v3/weights.bin".to_string(),
            format!("share/llm/v2/blobs/sha256/{weights_hex}"),
            "share/copy/v1/weights.bin".to_string(),
        ],
        vec![
            format!("share/img/v1/linux-amd64/blobs/sha256/{lhex}"),
            format!("share/img/v1/linux-arm64/blobs/sha256/{lhex}"),
        ],
    ] {
        let first = ino_links(&ma.join(&group[0]));
        for name in &group {
            let (ino, links) = ino_links(&ma.join(name));
            assert_eq!(ino, first.0, "{name} is not the inode of {}", group[0]);
            assert!(links >= 2, "{name}: {links} links");
        }
    }
    assert_ne!(
        ino_links(&ma.join("share/llm/v0/notes.txt")).0,
        ino_links(&ma.join("share/llm/v1/notes.txt")).0
    );

    // rsync -aH out: the weights cross once.
    let usb = tmpdir();
    rsync(&ma.join("share/llm"), &usb.path().join("llm"));
    let copied = unique_bytes(usb.path());
    assert!(
        copied < size + 256 * 1024,
        "the copy of 4 tags holds {copied} bytes for a {size}-byte shared blob"
    );

    // ... and back in: hard links across tag folders are staged as such,
    // one copy on disk, and the blob is uploaded once.
    let mb = mount(&hb);
    mkdir_p(&mb.join("share"));
    rsync(&usb.path().join("llm"), &mb.join("share/llm"));
    let staged = unique_bytes(&mb.cache_dir().join("staging"));
    assert!(
        staged < size + 256 * 1024,
        "staging holds {staged} bytes for a {size}-byte shared blob"
    );
    let (v0, v1) = (
        ino_links(&mb.join("share/llm/v0/weights.bin")),
        ino_links(&mb.join("share/llm/v1/weights.bin")),
    );
    assert!(v0.1 >= 2 && v1.1 >= 2, "staged links: {v0:?} {v1:?}");
    let st = status(mb.path());
    assert!(st.contains("staged in all: "), "{st}");
    let paths: Vec<PathBuf> = tags
        .keys()
        .map(|t| mb.join(&format!("share/llm/{t}")))
        .collect();
    let out = commit(Some(&mb), &paths);
    let uploads = out
        .lines()
        .filter(|l| l.starts_with("Uploaded") && l.contains(&format!("({size} bytes)")))
        .count();
    assert_eq!(
        uploads, 1,
        "the shared blob was uploaded {uploads} times:\n{out}"
    );
    for (t, d) in &tags {
        assert_eq!(
            tag_digest(&reg_b, "share/llm", t).as_ref(),
            Some(d),
            "{t} in the second registry"
        );
    }
    finish(ma);
    finish(mb);
}
