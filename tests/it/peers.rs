//! The real ORAS CLI and crane as peers, in both directions. What `oras
//! push`, `oras push --artifact-platform` with `oras manifest index create`
//! and `oras attach` write reads through a regfs mount as the same names,
//! bytes and attributes; what `regfs commit` writes, `oras pull` gives back
//! as exactly the files, `oras manifest fetch` as the same bytes, and crane
//! digests and validates as it does ORAS's own output.
//!
//! The registry is docker-registry 2.8, which has no referrers API: ORAS
//! and regfs both fall back to the `sha256-<hex>` tag schema. The referrers
//! tests run twice (`on_each_registry_kind!`): there, and against
//! go-containerregistry's registry with the referrers API, where no such
//! tag may be written (tests/support/kinds.rs). The tools are the pinned
//! versions scripts/install-deps.sh installs (tests/support/peers.rs).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;
use crate::tmpdir;

/// Options of the test mounts: failures show up in seconds, not minutes.
const MOUNT_ARGS: &[&str] = &["--timeout", "5"];
/// How long the mount may take to show a change (`--tag-ttl 1`, and the
/// kernel's one-second name cache; allow for a loaded machine).
const REFRESH: Duration = Duration::from_secs(15);
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const WINDOWS: &str = "windows/amd64:10.0.20348.2113";
const WINDOWS_FOLDER: &str = "windows-amd64-10.0.20348.2113";

// ====================================================================
// helpers
// ====================================================================

/// For each `name`, a module of two tests that call `name(kind)`:
/// `name::tag_schema` (docker-registry 2.8) and `name::referrers_api`
/// (go-containerregistry's registry).
macro_rules! on_each_registry_kind {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::support::RegistryKind;

            #[test]
            fn tag_schema() {
                super::$name(RegistryKind::TagSchema)
            }

            #[test]
            fn referrers_api() {
                super::$name(RegistryKind::ReferrersApi)
            }
        }
    )*};
}

on_each_registry_kind!(
    oras_cli_attach_shows_under_referrers,
    a_folder_made_under_referrers_is_attached_and_the_tag_stays,
    a_mirror_carries_referrers_with_their_subject,
    a_lazy_read_streams_the_rest_of_a_blob,
);

/// `cp -r SRC... DEST`.
fn cp(srcs: &[PathBuf], dest: &Path) {
    let mut c = Command::new("cp");
    c.arg("-r").args(srcs).arg(dest);
    run_timeout(&mut c, OP);
}

/// `regfs commit ARGS...`, checked; the digest it printed last.
fn regfs_commit(args: &[&str]) -> String {
    let mut c = regfs();
    c.arg("commit").args(args);
    let out = run_timeout(&mut c, Duration::from_secs(180));
    oras_digest(&String::from_utf8_lossy(&out.stdout))
}

/// `oras pull` of `reference` into a new folder: (the folder, its files).
fn oras_pull_files(reference: &str, extra: &[&str]) -> (tempfile::TempDir, Vec<String>) {
    let out = tmpdir();
    let dir = out.path().to_str().unwrap();
    let mut args = vec!["pull", "--plain-http", reference, "-o", dir];
    args.extend_from_slice(extra);
    oras(&args);
    let files = walk_files(out.path());
    (out, files)
}

/// The files a manifest folder shows as titled content: all but
/// `manifest.json`, `config.json`, `blobs/` and `referrers/`.
fn titled_files(folder: &Path) -> Vec<String> {
    walk_files(folder)
        .into_iter()
        .filter(|f| {
            let first = f.split('/').next().unwrap_or("");
            !["manifest.json", "config.json", "blobs", "referrers"].contains(&first)
        })
        .collect()
}

/// `oras manifest fetch` of `reference`: the bytes the registry serves.
fn manifest_fetch(reference: &str) -> Vec<u8> {
    oras(&["manifest", "fetch", "--plain-http", reference]).into_bytes()
}

/// Waits until `folder/manifest.json` is the manifest `digest`.
fn wait_manifest(folder: &Path, digest: &str) {
    let p = folder.join("manifest.json");
    wait_until(REFRESH, &format!("{} to be {digest}", p.display()), || {
        let q = p.clone();
        try_bounded("read manifest.json", OP, move || fs::read(&q))
            .and_then(Result::ok)
            .is_some_and(|b| sha256_bytes(&b) == digest)
    });
}

/// Whether `crane validate` passes for `reference` (`--fast`: without
/// downloading layers).
fn crane_validates(reference: &str, fast: bool) -> bool {
    let mut c = Command::new(peer_bin("crane"));
    c.args(["--insecure", "validate", "--remote", reference]);
    if fast {
        c.arg("--fast");
    }
    run_unchecked_timeout(&mut c, OP).status.success()
}

// ====================================================================
// ORAS -> regfs
// ====================================================================

#[test]
fn oras_cli_push_reads_back_with_the_same_names_bytes_and_xattrs() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello\n");
    write_file(w.path(), "bin/linux/amd64/tool", "#!/bin/sh\necho tool\n");
    write_file(w.path(), "docs/readme.md", "# docs\n");
    write_file(w.path(), "docs/sub/deep.txt", "deep\n");
    make_random_file(w.path().join("data.bin"), 300_000, 7);
    write_file(
        w.path(),
        "ann.json",
        r#"{"$manifest":{"org.example.m":"1"},"$config":{"org.example.c":"2"},"hello.txt":{"org.example.file":"yes"}}"#,
    );
    let r1 = format!("{host}/peer/app:v1");
    let d1 = oras_digest(&oras_in(
        w.path(),
        &[
            "push",
            "--plain-http",
            &r1,
            "--artifact-type",
            "application/vnd.example.tool",
            "--annotation",
            "org.example.k=v",
            "hello.txt",
            "bin/linux/amd64/tool",
            "docs",
            "data.bin",
        ],
    ));
    let r2 = format!("{host}/peer/app:v2");
    let d2 = oras_digest(&oras_in(
        w.path(),
        &[
            "push",
            "--plain-http",
            &r2,
            "--annotation-file",
            "ann.json",
            "hello.txt",
        ],
    ));

    let m = Mount::new(&host, MOUNT_ARGS);
    let tag = m.join("peer/app/v1");
    assert_eq!(
        ls(&tag),
        [
            "bin",
            "blobs",
            "data.bin",
            "docs",
            "hello.txt",
            "manifest.json",
            "referrers"
        ]
    );
    // manifest.json is what ORAS fetches, byte for byte
    let mj = read(&tag.join("manifest.json"));
    assert_eq!(mj, manifest_fetch(&r1));
    assert_eq!(sha256_bytes(&mj), d1);
    // the same files as `oras pull`, with the same bytes
    let (pd, pulled) = oras_pull_files(&r1, &[]);
    assert_eq!(
        pulled,
        [
            "bin/linux/amd64/tool",
            "data.bin",
            "docs/readme.md",
            "docs/sub/deep.txt",
            "hello.txt"
        ]
    );
    assert_eq!(titled_files(&tag), pulled);
    for f in &pulled {
        let want = fs::read(w.path().join(f)).unwrap();
        assert_eq!(read(&tag.join(f)), want, "{f} in the mount");
        assert_eq!(fs::read(pd.path().join(f)).unwrap(), want, "{f} pulled");
    }
    // attributes: the manifest's, and each layer's
    let j: Value = serde_json::from_slice(&mj).unwrap();
    let created = j["annotations"]["org.opencontainers.image.created"]
        .as_str()
        .unwrap();
    assert_xattrs_include(
        &tag,
        &[
            ("user.oci.digest", &d1),
            ("user.oci.mediaType", MT_OCI_MANIFEST),
            ("user.oci.artifactType", "application/vnd.example.tool"),
            ("user.oci.annotation.org.example.k", "v"),
            (
                "user.oci.annotation.org.opencontainers.image.created",
                created,
            ),
        ],
    );
    for f in ["hello.txt", "bin/linux/amd64/tool", "data.bin"] {
        assert_xattrs_include(
            &tag.join(f),
            &[
                ("user.oci.digest", &sha256_file(w.path().join(f))),
                ("user.oci.mediaType", TAR),
                (&format!("user.oci.annotation.{ANNOTATION_TITLE}"), f),
            ],
        );
    }
    let docs = j["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"][ANNOTATION_TITLE] == "docs")
        .unwrap();
    assert_xattrs_include(
        &tag.join("docs"),
        &[
            ("user.oci.digest", docs["digest"].as_str().unwrap()),
            ("user.oci.mediaType", MT_OCI_LAYER_TGZ),
            ("user.oci.annotation.io.deis.oras.content.unpack", "true"),
        ],
    );
    // --annotation-file: $manifest on the folder, a title's on its file
    let tag2 = m.join("peer/app/v2");
    assert_eq!(sha256_bytes(&read(&tag2.join("manifest.json"))), d2);
    assert_xattrs_include(&tag2, &[("user.oci.annotation.org.example.m", "1")]);
    assert_xattrs_include(
        &tag2.join("hello.txt"),
        &[("user.oci.annotation.org.example.file", "yes")],
    );
    finish(m);
}

/// `oras push --artifact-platform P` of a file `tool` holding `P`, as
/// `host/repo:tag`; the digest.
fn oras_push_platform(host: &str, repo_tag: &str, platform: &str) -> String {
    let w = tmpdir();
    write_file(w.path(), "tool", format!("{platform}\n"));
    oras_digest(&oras_in(
        w.path(),
        &[
            "push",
            "--plain-http",
            &format!("{host}/{repo_tag}"),
            "--artifact-platform",
            platform,
            "tool",
        ],
    ))
}

#[test]
fn oras_cli_platform_index_shows_platform_folders_and_its_updates() {
    let reg = Registry::start();
    let host = reg.host();
    let amd = oras_push_platform(&host, "peer/multi:amd64", "linux/amd64");
    let arm = oras_push_platform(&host, "peer/multi:arm64", "linux/arm64");
    let win = oras_push_platform(&host, "peer/multi:win", WINDOWS);
    let idx = format!("{host}/peer/multi:v1");
    let d = oras_digest(&oras(&[
        "manifest",
        "index",
        "create",
        "--plain-http",
        &idx,
        "amd64",
        "arm64",
        "win",
    ]));
    let mut args = MOUNT_ARGS.to_vec();
    args.extend(["--tag-ttl", "1"]);
    let m = Mount::new(&host, &args);
    let tag = m.join("peer/multi/v1");
    assert_eq!(
        ls(&tag),
        [
            "linux-amd64",
            "linux-arm64",
            "manifest.json",
            "referrers",
            WINDOWS_FOLDER
        ]
    );
    assert_eq!(read(&tag.join("manifest.json")), manifest_fetch(&idx));
    assert_eq!(sha256_bytes(&read(&tag.join("manifest.json"))), d);
    for (folder, digest, platform) in [
        ("linux-amd64", &amd, "linux/amd64"),
        ("linux-arm64", &arm, "linux/arm64"),
        (WINDOWS_FOLDER, &win, WINDOWS),
    ] {
        let f = tag.join(folder);
        assert_eq!(sha256_bytes(&read(&f.join("manifest.json"))), *digest);
        assert_eq!(read(&f.join("tool")), format!("{platform}\n").as_bytes());
        assert_xattrs_include(&f, &[("user.oci.platform", platform)]);
    }

    // `oras manifest index update`: the folder follows after --tag-ttl
    let armv7 = oras_push_platform(&host, "peer/multi:armv7", "linux/arm/v7");
    let d2 = oras_digest(&oras(&[
        "manifest",
        "index",
        "update",
        "--plain-http",
        &idx,
        "--add",
        "armv7",
        "--remove",
        &arm,
    ]));
    wait_manifest(&tag, &d2);
    wait_until(REFRESH, "the platform folders to follow the update", || {
        try_ls(&tag).is_ok_and(|names| {
            names
                == [
                    "linux-amd64",
                    "linux-arm-v7",
                    "manifest.json",
                    "referrers",
                    WINDOWS_FOLDER,
                ]
        })
    });
    assert_eq!(
        sha256_bytes(&read(&tag.join("linux-arm-v7/manifest.json"))),
        armv7
    );
    finish(m);
}

/// The kernel keeps folder listings (see the README, *What the kernel
/// keeps*): a tag pushed by another tool must still be listed within
/// --tag-ttl, at once when looked up by name, and a warm walk must list
/// the same tree.
#[test]
fn a_tag_pushed_by_another_tool_is_listed_within_the_tag_ttl() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "one\n");
    oras_push(&host, "peer/new:v1", &["a.txt"], w.path());
    let mut args = MOUNT_ARGS.to_vec();
    args.extend(["--tag-ttl", "1"]);
    let m = Mount::new(&host, &args);
    let repo = m.join("peer/new");
    assert_eq!(ls(&repo), ["v1"]);
    let walk = |p: &Path| {
        let mut c = Command::new("find");
        c.arg(p);
        String::from_utf8_lossy(&run_timeout(&mut c, Duration::from_secs(60)).stdout).into_owned()
    };
    let cold = walk(m.path());
    assert_eq!(
        walk(m.path()),
        cold,
        "a warm walk lists what the cold one did"
    );
    write_file(w.path(), "a.txt", "two\n");
    oras_push(&host, "peer/new:v2", &["a.txt"], w.path());
    wait_until(REFRESH, "the new tag to be listed", || {
        try_ls(&repo).is_ok_and(|names| names == ["v1", "v2"])
    });
    assert_eq!(read(&repo.join("v2/a.txt")), b"two\n");
    // Looked up by name first: listed at once after that.
    write_file(w.path(), "a.txt", "three\n");
    oras_push(&host, "peer/new:v3", &["a.txt"], w.path());
    assert_eq!(read(&repo.join("v3/a.txt")), b"three\n");
    wait_until(
        Duration::from_secs(3),
        "the tag looked up to be listed",
        || try_ls(&repo).is_ok_and(|names| names == ["v1", "v2", "v3"]),
    );
    let warm = walk(m.path());
    assert!(warm.contains("peer/new/v3/a.txt"), "{warm}");
    finish(m);
}

fn oras_cli_attach_shows_under_referrers(kind: RegistryKind) {
    let reg = AnyRegistry::start(kind);
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "subject\n");
    write_file(
        w.path(),
        "sbom.spdx.json",
        "{\"spdxVersion\":\"SPDX-2.3\"}\n",
    );
    let subject_ref = format!("{host}/att/app:v1");
    let subject = oras_digest(&oras_in(
        w.path(),
        &["push", "--plain-http", &subject_ref, "a.txt"],
    ));
    let sbom = oras_digest(&oras_in(
        w.path(),
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/spdx+json",
            "--annotation",
            "org.example.k=v",
            &subject_ref,
            "sbom.spdx.json",
        ],
    ));
    // ORAS keeps the tag schema only where the registry has no referrers API
    let tags = reg.tags("att/app");
    assert_eq!(
        tags.contains(&format!("sha256-{}", hex(&subject))),
        !kind.has_referrers_api(),
        "{tags:?}"
    );
    let discovered: Value = serde_json::from_str(&oras(&[
        "discover",
        "--plain-http",
        "--format",
        "json",
        &subject_ref,
    ]))
    .unwrap();
    assert_eq!(discovered["referrers"][0]["digest"], sbom.as_str());

    let logged = reg.log().len();
    let m = Mount::new(&host, MOUNT_ARGS);
    assert_eq!(ls(&m.join("att/app")), ["v1"], "sha256-<hex> is not a tag");
    let refs = m.join("att/app/v1/referrers");
    assert_eq!(ls(&refs), std::slice::from_ref(&sbom));
    if kind.has_referrers_api() {
        // regfs asked the API, and never looked for a tag-schema index
        let log = reg.log()[logged..].to_string();
        assert!(
            log.contains(&format!("GET /v2/att/app/referrers/{subject}")),
            "{log}"
        );
        assert!(!log.contains("/manifests/sha256-"), "{log}");
    }
    let r = refs.join(&sbom);
    assert_eq!(
        read(&r.join("manifest.json")),
        manifest_fetch(&format!("{host}/att/app@{sbom}"))
    );
    assert_eq!(
        read(&r.join("sbom.spdx.json")),
        fs::read(w.path().join("sbom.spdx.json")).unwrap()
    );
    assert_xattrs_include(
        &r,
        &[
            ("user.oci.digest", &sbom),
            ("user.oci.artifactType", "application/spdx+json"),
            ("user.oci.annotation.org.example.k", "v"),
        ],
    );
    let j: Value = serde_json::from_slice(&read(&r.join("manifest.json"))).unwrap();
    assert_eq!(j["subject"]["digest"], subject.as_str());
    finish(m);
}

// ====================================================================
// regfs -> ORAS, crane
// ====================================================================

#[test]
fn what_regfs_commits_oras_pulls_and_crane_digests() {
    let reg = Registry::start();
    let host = reg.host();
    let src = tmpdir();
    write_file(src.path(), "hello.txt", "hello\n");
    make_random_file(src.path().join("data.bin"), 200_000, 11);
    write_file(src.path(), "site/index.html", "<h1>hi</h1>\n");
    write_file(src.path(), "site/css/a.css", "h1{}\n");
    let m = Mount::new(&host, MOUNT_ARGS);

    // a new tag with files and a folder
    let tag = m.join("out/files");
    mkdir_p(&tag);
    cp(
        &["hello.txt", "data.bin", "site"].map(|f| src.path().join(f)),
        &tag,
    );
    let d = regfs_commit(&[tag.to_str().unwrap()]);
    let r = format!("{host}/out:files");
    let (pd, pulled) = oras_pull_files(&r, &[]);
    assert_eq!(
        pulled,
        ["data.bin", "hello.txt", "site/css/a.css", "site/index.html"],
        "oras pull gives exactly the files"
    );
    for f in &pulled {
        assert_eq!(
            fs::read(pd.path().join(f)).unwrap(),
            fs::read(src.path().join(f)).unwrap(),
            "{f}"
        );
    }
    wait_manifest(&tag, &d);
    let fetched = manifest_fetch(&r);
    assert_eq!(read(&tag.join("manifest.json")), fetched);
    assert_eq!(sha256_bytes(&fetched), d);
    assert_eq!(crane(&["digest", &r]).trim(), d);
    // crane judges it as it judges ORAS's own push of the same files
    let by_oras = format!("{host}/out:by-oras");
    oras_in(
        src.path(),
        &[
            "push",
            "--plain-http",
            &by_oras,
            "hello.txt",
            "data.bin",
            "site",
        ],
    );
    assert!(crane_validates(&r, true), "crane validate --fast {r}");
    assert_eq!(crane_validates(&r, false), crane_validates(&by_oras, false));

    // platform folders: an index that `oras pull --platform` selects from
    let multi = m.join("out/multi");
    let platforms = [
        ("linux-amd64", "linux/amd64"),
        ("linux-arm64", "linux/arm64"),
        (WINDOWS_FOLDER, WINDOWS),
    ];
    for (folder, platform) in platforms {
        mkdir_p(&multi.join(folder));
        write_file(
            src.path(),
            &format!("{folder}/tool"),
            format!("{platform}\n"),
        );
        cp(&[src.path().join(folder).join("tool")], &multi.join(folder));
    }
    let d2 = regfs_commit(&[multi.to_str().unwrap()]);
    let r2 = format!("{host}/out:multi");
    assert_eq!(crane(&["digest", &r2]).trim(), d2);
    wait_manifest(&multi, &d2);
    assert_eq!(read(&multi.join("manifest.json")), manifest_fetch(&r2));
    let index: Value = serde_json::from_slice(&manifest_fetch(&r2)).unwrap();
    let mut by_platform = BTreeMap::new();
    for e in index["manifests"].as_array().unwrap() {
        let p = &e["platform"];
        by_platform.insert(p.to_string(), e["digest"].as_str().unwrap().to_string());
    }
    for (folder, platform) in platforms {
        let (pd, pulled) = oras_pull_files(&r2, &["--platform", platform]);
        assert_eq!(pulled, ["tool"], "{platform}");
        assert_eq!(
            fs::read(pd.path().join("tool")).unwrap(),
            format!("{platform}\n").as_bytes(),
            "oras pull --platform {platform}"
        );
        let child = read(&multi.join(folder).join("manifest.json"));
        let cd = sha256_bytes(&child);
        assert!(by_platform.values().any(|v| *v == cd), "{folder}");
        assert_eq!(child, manifest_fetch(&format!("{host}/out@{cd}")));
    }
    let win_platform = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["platform"]["os"] == "windows")
        .unwrap()["platform"]
        .to_string();
    assert_eq!(
        win_platform,
        r#"{"architecture":"amd64","os":"windows","os.version":"10.0.20348.2113"}"#
    );
    // crane judges the index as it judges ORAS's own
    let mut children = Vec::new();
    for (i, (folder, platform)) in platforms.iter().enumerate() {
        children.push(format!("oras-{i}"));
        oras_in(
            &src.path().join(folder),
            &[
                "push",
                "--plain-http",
                &format!("{host}/out:oras-{i}"),
                "--artifact-platform",
                platform,
                "tool",
            ],
        );
    }
    let oras_index = format!("{host}/out:oras-multi");
    let mut args = vec!["manifest", "index", "create", "--plain-http", &oras_index];
    args.extend(children.iter().map(String::as_str));
    oras(&args);
    assert_eq!(
        crane_validates(&r2, true),
        crane_validates(&oras_index, true)
    );
    finish(m);
}

#[test]
fn an_image_regfs_carries_verbatim_passes_crane_validate() {
    let reg = Registry::start();
    let host = reg.host();
    let layout = tmpdir();
    let img = make_oci_image_layout(
        layout.path(),
        "img",
        &[("linux", "amd64", None), ("linux", "arm", Some("v7"))],
    );
    // out of an OCI layout mount with rsync, into the registry with commit --to
    let m = Mount::new(&format!("oci:{}", layout.path().display()), MOUNT_ARGS);
    let usb = tmpdir();
    let mut c = Command::new("rsync");
    c.arg("-aH")
        .arg(format!("{}/", m.join("img").display()))
        .arg(format!("{}/", usb.path().display()));
    run_timeout(&mut c, OP);
    finish(m);
    let r = format!("{host}/carried:img");
    let d = regfs_commit(&[usb.path().to_str().unwrap(), "--to", &r]);
    assert_eq!(d, img.digest);
    assert_eq!(crane(&["digest", &r]).trim(), img.digest);
    assert!(crane_validates(&r, false), "crane validate --remote {r}");
    assert_eq!(
        manifest_fetch(&r),
        fs::read(layout.path().join("blobs/sha256").join(hex(&img.digest))).unwrap()
    );
}

// ====================================================================
// referrers: attach in a mount, mirror with rsync
// ====================================================================

fn setfattr(path: &Path, name: &str, value: &str) {
    run_timeout(
        Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(path),
        OP,
    );
}

/// `regfs commit ARGS...`, checked; stdout.
fn regfs_commit_out(args: &[&str]) -> String {
    let mut c = regfs();
    c.arg("commit").args(args);
    String::from_utf8_lossy(&run_timeout(&mut c, Duration::from_secs(180)).stdout).into_owned()
}

/// `oras discover --format json` of `reference`: each referrer as
/// (digest, artifactType, its own referrers), depth first.
fn discover(reference: &str, layout: bool) -> Vec<(String, String, usize)> {
    let mut args = vec!["discover", "--format", "json", reference];
    args.push(if layout {
        "--oci-layout"
    } else {
        "--plain-http"
    });
    let v: Value = serde_json::from_str(&oras(&args)).unwrap();
    fn walk(v: &Value, out: &mut Vec<(String, String, usize)>) {
        for r in v["referrers"].as_array().into_iter().flatten() {
            let n = r["referrers"].as_array().map_or(0, Vec::len);
            out.push((
                r["digest"].as_str().unwrap().to_string(),
                r["artifactType"].as_str().unwrap_or("").to_string(),
                n,
            ));
            walk(r, out);
        }
    }
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

fn a_folder_made_under_referrers_is_attached_and_the_tag_stays(kind: RegistryKind) {
    let reg = AnyRegistry::start(kind);
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "subject\n");
    write_file(
        w.path(),
        "sbom.spdx.json",
        "{\"spdxVersion\":\"SPDX-2.3\"}\n",
    );
    let subject_ref = format!("{host}/att/app:v1");
    let subject = oras_digest(&oras_in(
        w.path(),
        &["push", "--plain-http", &subject_ref, "a.txt"],
    ));
    let m = Mount::new(&host, MOUNT_ARGS);
    let sbom = m.join("att/app/v1/referrers/sbom");
    mkdir_p(&sbom);
    cp(&[w.path().join("sbom.spdx.json")], &sbom);
    setfattr(&sbom, "user.oci.artifactType", "application/spdx+json");
    setfattr(&sbom, "user.oci.annotation.org.example.k", "v");
    let out = regfs_commit_out(&[m.join("att/app/v1").to_str().unwrap()]);
    let attached = out
        .lines()
        .find_map(|l| l.strip_prefix("Attached  "))
        .unwrap_or_else(|| panic!("no Attached line:\n{out}"));
    let (r, to) = attached.split_once(" to ").unwrap();
    assert_eq!(to, subject, "{out}");
    assert!(
        out.lines()
            .any(|l| l == format!("Unchanged [registry] {host}/att/app:v1")),
        "{out}"
    );
    assert_eq!(oras_digest(&out), subject);
    assert!(!out.contains("Tagged"), "{out}");
    assert_eq!(crane(&["digest", &subject_ref]).trim(), subject);

    // what ORAS sees: one referrer, its type, annotation and file
    assert_eq!(
        discover(&subject_ref, false),
        [(
            r.to_string(),
            kind.listed_artifact_type("application/spdx+json"),
            0
        )]
    );
    let rj: Value =
        serde_json::from_slice(&manifest_fetch(&format!("{host}/att/app@{r}"))).unwrap();
    assert_eq!(rj["annotations"]["org.example.k"], "v");
    let (pd, pulled) = oras_pull_files(&format!("{host}/att/app@{r}"), &[]);
    assert_eq!(pulled, ["sbom.spdx.json"]);
    assert_eq!(
        fs::read(pd.path().join("sbom.spdx.json")).unwrap(),
        fs::read(w.path().join("sbom.spdx.json")).unwrap()
    );
    let schema_tag = format!("sha256-{}", hex(&subject));
    if kind.has_referrers_api() {
        // the registry lists it: no tag-schema index is written
        assert_eq!(reg.tags("att/app"), ["v1"]);
    } else {
        // no referrers API here: the tag schema, as ORAS writes it
        assert_eq!(reg.tags("att/app"), [schema_tag.as_str(), "v1"]);
        let schema: Value =
            serde_json::from_slice(&manifest_fetch(&format!("{host}/att/app:{schema_tag}")))
                .unwrap();
        assert_eq!(schema["manifests"][0]["digest"], r);
        assert_eq!(
            schema["manifests"][0]["artifactType"],
            "application/spdx+json"
        );
    }

    // the mount shows it by digest, and nothing is left staged
    let refs = m.join("att/app/v1/referrers");
    wait_until(REFRESH, "the referrer to show by digest", || {
        try_ls(&refs).is_ok_and(|n| n == [r.to_string()])
    });
    assert_eq!(
        read(&refs.join(r).join("sbom.spdx.json")),
        fs::read(w.path().join("sbom.spdx.json")).unwrap()
    );
    let st = run_timeout(regfs().arg("status").arg(m.path()), OP);
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("staged: nothing"),
        "{}",
        String::from_utf8_lossy(&st.stdout)
    );
    finish(m);
}

/// From a registry of kind `from` into one of the other kind: read through
/// one way of listing referrers, written through the other.
fn a_mirror_carries_referrers_with_their_subject(from: RegistryKind) {
    let reg_a = AnyRegistry::start(from);
    let reg_b = AnyRegistry::start(from.other());
    let (ha, hb) = (reg_a.host(), reg_b.host());
    let w = tmpdir();
    write_file(w.path(), "a.txt", "subject\n");
    write_file(
        w.path(),
        "sbom.spdx.json",
        "{\"spdxVersion\":\"SPDX-2.3\"}\n",
    );
    write_file(w.path(), "sbom.sig", "signature of the sbom\n");
    let subject = oras_digest(&oras_in(
        w.path(),
        &["push", "--plain-http", &format!("{ha}/mir/app:v1"), "a.txt"],
    ));
    let sbom = oras_digest(&oras_in(
        w.path(),
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/spdx+json",
            &format!("{ha}/mir/app:v1"),
            "sbom.spdx.json",
        ],
    ));
    let sig = oras_digest(&oras_in(
        w.path(),
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/vnd.example.sig",
            &format!("{ha}/mir/app@{sbom}"),
            "sbom.sig",
        ],
    ));
    // the graph as `oras discover` lists it from a registry of `kind`
    let want = |kind: RegistryKind| {
        vec![
            (
                sbom.clone(),
                kind.listed_artifact_type("application/spdx+json"),
                1,
            ),
            (
                sig.clone(),
                kind.listed_artifact_type("application/vnd.example.sig"),
                0,
            ),
        ]
    };
    // where the registry has no referrers API, one tag-schema index per subject
    let tags_with = |reg: &AnyRegistry, tag: &str| {
        let mut v = vec![tag.to_string()];
        if !reg.kind().has_referrers_api() {
            v.extend([&subject, &sbom].map(|d| format!("sha256-{}", hex(d))));
        }
        v.sort();
        v
    };
    assert_eq!(discover(&format!("{ha}/mir/app:v1"), false), want(from));
    assert_eq!(reg_a.tags("mir/app"), tags_with(&reg_a, "v1"));

    let ma = Mount::new(&ha, MOUNT_ARGS);
    let usb = tmpdir();
    let mut c = Command::new("rsync");
    c.arg("-aH")
        .arg(format!("{}/", ma.join("mir/app").display()))
        .arg(format!("{}/", usb.path().display()));
    run_timeout(&mut c, OP);
    let v1 = usb.path().join("v1");
    assert!(v1
        .join(format!("referrers/{sbom}/referrers/{sig}/manifest.json"))
        .is_file());

    // into registry B with commit --to: the same digests, the same graph
    let out = regfs_commit_out(&[v1.to_str().unwrap(), "--to", &format!("{hb}/mir/app:v1")]);
    assert_eq!(oras_digest(&out), subject, "{out}");
    assert_eq!(
        discover(&format!("{hb}/mir/app:v1"), false),
        want(from.other())
    );
    assert_eq!(reg_b.tags("mir/app"), tags_with(&reg_b, "v1"));

    // into an OCI layout: untagged index.json entries, as oras attach
    // --oci-layout (which lists each manifest's own artifactType)
    let oci = tmpdir();
    let target = format!("{}:v1", oci.path().display());
    regfs_commit_out(&[v1.to_str().unwrap(), "--to", &format!("oci:{target}")]);
    assert_eq!(discover(&target, true), want(RegistryKind::TagSchema));

    // through a mount of B, rsync and commit of the repository
    let mb = Mount::new(&hb, MOUNT_ARGS);
    mkdir_p(&mb.join("mir/copy"));
    let mut c = Command::new("rsync");
    c.arg("-aH")
        .arg(format!("{}/", ma.join("mir/app").display()))
        .arg(format!("{}/", mb.join("mir/copy").display()));
    run_timeout(&mut c, OP);
    let out = regfs_commit_out(&[mb.join("mir/copy").to_str().unwrap()]);
    assert_eq!(oras_digest(&out), subject, "{out}");
    assert_eq!(
        discover(&format!("{hb}/mir/copy:v1"), false),
        want(from.other())
    );
    assert_eq!(reg_b.tags("mir/copy"), tags_with(&reg_b, "v1"));
    finish(mb);
    finish(ma);
}

// ====================================================================
// go-containerregistry's registry
// ====================================================================

/// A registry with the referrers API that sends no `OCI-Subject` (the one
/// go-containerregistry v0.22.1 serves) gets a tag-schema index from
/// regfs, as from ORAS: distribution-spec v1.1.1 tells a client that gets
/// no such header to keep the tag schema. regfs and ORAS add to each
/// other's index; reads still use the API.
#[test]
fn without_oci_subject_regfs_keeps_the_tag_schema_as_oras_does() {
    let reg = AnyRegistry::Ggcr(GgcrRegistry::start_without_oci_subject());
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "subject\n");
    write_file(w.path(), "sbom.spdx.json", "{}\n");
    write_file(w.path(), "sig.txt", "signature\n");
    let subject_ref = format!("{host}/att/app:v1");
    let subject = oras_digest(&oras_in(
        w.path(),
        &["push", "--plain-http", &subject_ref, "a.txt"],
    ));
    let schema_tag = format!("sha256-{}", hex(&subject));
    let schema_digests = || -> Vec<String> {
        let v: Value =
            serde_json::from_slice(&manifest_fetch(&format!("{host}/att/app:{schema_tag}")))
                .unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    };

    let m = Mount::new(&host, MOUNT_ARGS);
    let sbom = m.join("att/app/v1/referrers/sbom");
    mkdir_p(&sbom);
    cp(&[w.path().join("sbom.spdx.json")], &sbom);
    let out = regfs_commit_out(&[m.join("att/app/v1").to_str().unwrap()]);
    let by_regfs = out
        .lines()
        .find_map(|l| l.strip_prefix("Attached  "))
        .and_then(|a| a.split_once(" to "))
        .map(|(r, _)| r.to_string())
        .unwrap_or_else(|| panic!("no Attached line:\n{out}"));
    assert_eq!(reg.tags("att/app"), [schema_tag.as_str(), "v1"]);
    assert_eq!(schema_digests(), std::slice::from_ref(&by_regfs));

    let by_oras = oras_digest(&oras_in(
        w.path(),
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/vnd.example.sig",
            &subject_ref,
            "sig.txt",
        ],
    ));
    assert_eq!(schema_digests(), [by_regfs.clone(), by_oras.clone()]);
    let mut listed: Vec<String> = discover(&subject_ref, false)
        .into_iter()
        .map(|(d, _, _)| d)
        .collect();
    listed.sort();
    let mut want = vec![by_regfs, by_oras];
    want.sort();
    assert_eq!(listed, want);
    let refs = m.join("att/app/v1/referrers");
    wait_until(REFRESH, "both referrers to show", || {
        try_ls(&refs).is_ok_and(|n| n == want)
    });
    finish(m);
}

/// `--verify lazy`: a reader that goes on where it left off gets the rest
/// of the blob in one Range request, which names its last byte (the
/// registry with the referrers API refuses `bytes=N-` with 416).
fn a_lazy_read_streams_the_rest_of_a_blob(kind: RegistryKind) {
    let reg = AnyRegistry::start(kind);
    let host = reg.host();
    let w = tmpdir();
    let big = w.path().join("big.bin");
    make_random_file(&big, 24 << 20, 17);
    oras_in(
        w.path(),
        &[
            "push",
            "--plain-http",
            &format!("{host}/lazy/app:v1"),
            "big.bin",
        ],
    );
    let mut args = MOUNT_ARGS.to_vec();
    args.extend(["--verify", "lazy"]);
    let m = Mount::new(&host, &args);
    let f = m.join("lazy/app/v1/big.bin");
    // a random read first, then the whole file from the start
    let mut c = Command::new("dd");
    c.arg(format!("if={}", f.display()))
        .args(["of=/dev/null", "bs=4096", "skip=3000", "count=1"]);
    run_timeout(&mut c, OP);
    assert_eq!(sha256_bytes(&read(&f)), sha256_file(&big));
    if kind.has_referrers_api() {
        assert!(!reg.log().contains(" 416 "), "{}", reg.log());
    }
    finish(m);
}
