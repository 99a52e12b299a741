//! Read-path tests of the regfs binary: a real docker-registry (often behind
//! the fault-injecting proxy), real ORAS / skopeo pushes, a real FUSE mount,
//! and the kernel between the test and regfs.
//!
//! Every filesystem call goes through [`bounded`] (or a command run with a
//! time bound), so a hung mount fails the test instead of the CI job. Every
//! test ends with [`finish`], which unmounts and checks that the mount
//! daemon went away.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::mount::{is_mountpoint, MOUNT_TIMEOUT};
use crate::support::registry::free_port;
use crate::support::*;
use crate::tmpdir;

const ENOENT: i32 = 2;
const EIO: i32 = 5;
const EROFS: i32 = 30;

/// Bound on one filesystem call against a healthy registry.
/// Bound on a call that has to fail because the registry is gone (the
/// mounts of those tests use `--timeout 2`).
const DEAD_BOUND: Duration = Duration::from_secs(60);
/// Options of most test mounts: failures show up in seconds, not minutes.
const MOUNT_ARGS: &[&str] = &["--timeout", "5"];

const CREATED: &str = "2024-05-06T07:08:09Z";
/// `date -u -d 2024-05-06T07:08:09Z +%s`
const CREATED_EPOCH: i64 = 1_714_979_289;
const ARTIFACT_TYPE_DEFAULT: &str = "application/vnd.unknown.artifact.v1";

// ====================================================================
// helpers
// ====================================================================

/// A failed read: the error and how many bytes had been returned before it.
#[derive(Debug)]
struct ReadFailure {
    err: std::io::Error,
    got: usize,
}

/// Reads `path` whole; `None` when that takes longer than `limit`.
fn try_read_timed(path: &Path, limit: Duration) -> Option<Result<Vec<u8>, ReadFailure>> {
    let p = path.to_path_buf();
    try_bounded(&format!("read {}", path.display()), limit, move || {
        let mut f = fs::File::open(&p).map_err(|err| ReadFailure { err, got: 0 })?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(ReadFailure {
                        err,
                        got: out.len(),
                    })
                }
            }
        }
    })
}

fn try_read_within(path: &Path, limit: Duration) -> Result<Vec<u8>, ReadFailure> {
    try_read_timed(path, limit).unwrap_or_else(|| {
        panic!(
            "read {}: no answer within {limit:?} (hung mount?)",
            path.display()
        )
    })
}

fn try_read(path: &Path) -> Result<Vec<u8>, ReadFailure> {
    try_read_within(path, OP)
}

fn read(path: &Path) -> Vec<u8> {
    try_read(path).unwrap_or_else(|e| panic!("read {}: {:?}", path.display(), e))
}

fn try_meta(path: &Path) -> std::io::Result<fs::Metadata> {
    let p = path.to_path_buf();
    bounded(&format!("stat {}", path.display()), OP, move || {
        fs::metadata(&p)
    })
}

fn meta(path: &Path) -> fs::Metadata {
    try_meta(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
}

/// Asserts that a read of `path` fails with `want` (an errno) having
/// returned no byte, within `limit`; returns how long it took.
fn assert_read_fails(
    path: &Path,
    want: i32,
    limit: Duration,
    log: impl Fn() -> String,
) -> Duration {
    let t = Instant::now();
    let Some(r) = try_read_timed(path, limit) else {
        panic!(
            "read {}: no answer within {limit:?}; expected errno {want}\nregfs log:\n{}",
            path.display(),
            log()
        )
    };
    match r {
        Ok(b) => panic!(
            "read {} succeeded ({} bytes); expected errno {want}\nregfs log:\n{}",
            path.display(),
            b.len(),
            log()
        ),
        Err(f) => {
            assert_eq!(
                errno(&f.err),
                want,
                "read {}: {} (expected errno {want})\nregfs log:\n{}",
                path.display(),
                f.err,
                log()
            );
            assert_eq!(
                f.got,
                0,
                "read {} returned {} bytes before failing",
                path.display(),
                f.got
            );
        }
    }
    t.elapsed()
}

fn regfs_log(cache_dir: &Path) -> String {
    fs::read_to_string(cache_dir.join("regfs.log")).unwrap_or_default()
}

fn log_of(m: &Mount) -> impl Fn() -> String + '_ {
    move || regfs_log(m.cache_dir())
}

/// Waits (bounded) until the regfs log contains every one of `needles`.
fn wait_for_log(cache_dir: &Path, needles: &[&str]) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        let l = regfs_log(cache_dir);
        if needles.iter().all(|n| l.contains(n)) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "the regfs log never mentioned all of {needles:?}; log:\n{}",
        regfs_log(cache_dir)
    );
}

fn mount(source: &str) -> Mount {
    Mount::new(source, MOUNT_ARGS)
}

/// Blob GETs (full or Range) the proxy saw for `digest`.
fn blob_gets_of(proxy: &FaultProxy, digest: &str) -> usize {
    proxy
        .log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
        .count()
}

/// A mount made by a hand-written `regfs` command line (own mountpoint,
/// environment, or the fstab form); unmounted on drop.
struct RawMount {
    mnt: PathBuf,
    _dir: TempDir,
    /// Folders the mount uses (its cache, HOME), kept while it lives.
    keep: Vec<TempDir>,
}

impl RawMount {
    fn path(&self) -> &Path {
        &self.mnt
    }
    fn join(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for RawMount {
    fn drop(&mut self) {
        if is_mountpoint(&self.mnt) {
            let _ = try_run(
                Command::new("fusermount3").arg("-u").arg(&self.mnt),
                Duration::from_secs(30),
            );
        }
        if is_mountpoint(&self.mnt) {
            let _ = try_run(
                Command::new("umount").arg("-l").arg(&self.mnt),
                Duration::from_secs(30),
            );
        }
    }
}

/// `regfs ARGS...` where `MNT` in `args` is replaced by a fresh mountpoint;
/// `Ok` once mounted, `Err(output)` when regfs failed.
fn raw_mount(args: &[&str], envs: &[(&str, &Path)]) -> Result<RawMount, Output> {
    let dir = tempfile::Builder::new()
        .prefix("regfs-rawmnt-")
        .tempdir()
        .unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut cmd = regfs();
    for a in args {
        if *a == "MNT" {
            cmd.arg(&mnt);
        } else {
            cmd.arg(a);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run_unchecked_timeout(&mut cmd, MOUNT_TIMEOUT);
    let m = RawMount {
        mnt,
        _dir: dir,
        keep: Vec::new(),
    };
    if out.status.success() {
        assert!(
            is_mountpoint(m.path()),
            "regfs mount exited 0 but nothing is mounted"
        );
        Ok(m)
    } else {
        Err(out)
    }
}

fn finish_raw(m: RawMount) {
    let p = m.path().to_path_buf();
    drop(m);
    assert!(!is_mountpoint(&p), "{} still mounted", p.display());
    wait_daemon_gone(&p);
}

/// `(digest, size)` of the config and every layer of an image manifest.
fn blob_descs(manifest: &Value) -> Vec<(String, u64)> {
    let mut v = vec![(
        manifest["config"]["digest"].as_str().unwrap().to_string(),
        manifest["config"]["size"].as_u64().unwrap(),
    )];
    for l in manifest["layers"].as_array().unwrap() {
        v.push((
            l["digest"].as_str().unwrap().to_string(),
            l["size"].as_u64().unwrap(),
        ));
    }
    v
}

fn layer_digest(manifest: &Value, title: &str) -> String {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["annotations"][ANNOTATION_TITLE] == title)
        .unwrap_or_else(|| panic!("no layer titled {title}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The standard test artifact: two small files (one nested) and a 300 KiB
/// random file, with a fixed creation time and a custom annotation.
struct Artifact {
    work: TempDir,
    digest: String,
    manifest: FetchedManifest,
}

const ARTIFACT_FILES: [&str; 3] = ["hello.txt", "bin/linux/amd64/tool", "data.bin"];

impl Artifact {
    fn push(host: &str, reference: &str) -> Artifact {
        let work = tmpdir();
        write_file(work.path(), "hello.txt", "hello world\n");
        write_file(
            work.path(),
            "bin/linux/amd64/tool",
            "#!/bin/sh\necho tool\n",
        );
        make_random_file(work.path().join("data.bin"), 300 * 1024, 1);
        let digest = oras_push_with(
            host,
            reference,
            &ARTIFACT_FILES,
            work.path(),
            &PushOpts {
                created: Some(CREATED.into()),
                annotations: vec![("com.example.note".into(), "demo value".into())],
                ..Default::default()
            },
        );
        let (repo, _) = reference.split_once(':').unwrap();
        let manifest = fetch_manifest(host, repo, &digest);
        Artifact {
            work,
            digest,
            manifest,
        }
    }

    fn source(&self, rel: &str) -> Vec<u8> {
        fs::read(self.work.path().join(rel)).unwrap()
    }
}

// ====================================================================
// 1. an ORAS artifact: names, bytes, metadata
// ====================================================================

#[test]
fn read_oras_artifact_names_and_bytes() {
    let reg = Registry::start();
    let a = Artifact::push(&reg.host(), "org/app:v1");
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = mount(&proxy.host());

    assert_eq!(ls(m.path()), ["org"]);
    assert_eq!(ls(&m.join("org")), ["app"]);
    assert_eq!(ls(&m.join("org/app")), ["v1"]);
    let tag = m.join("org/app/v1");
    // the empty ORAS config is not shown as config.json
    assert_eq!(
        ls(&tag),
        [
            "bin",
            "blobs",
            "data.bin",
            "hello.txt",
            "manifest.json",
            "referrers"
        ]
    );
    assert_eq!(ls(&tag.join("bin")), ["linux"]);
    assert_eq!(ls(&tag.join("bin/linux/amd64")), ["tool"]);
    assert_eq!(ls(&tag.join("blobs")), ["sha256"]);
    let descs = blob_descs(&a.manifest.json);
    let want: BTreeSet<String> = descs.iter().map(|(d, _)| hex(d).to_string()).collect();
    assert_eq!(
        ls(&tag.join("blobs/sha256")),
        want.into_iter().collect::<Vec<_>>()
    );
    assert!(ls(&tag.join("referrers")).is_empty());

    // manifest.json: the exact bytes the registry serves
    let mj = read(&tag.join("manifest.json"));
    assert_eq!(sha256_bytes(&mj), a.digest);
    assert_eq!(mj, a.manifest.bytes);

    // titled files
    for f in ARTIFACT_FILES {
        assert_eq!(read(&tag.join(f)), a.source(f), "{f}");
    }
    // every blob under blobs/ is the registry's blob
    for (d, _) in &descs {
        assert_eq!(
            read(&tag.join("blobs/sha256").join(hex(d))),
            fetch_blob(&reg.host(), "org/app", d),
            "blobs/sha256/{}",
            hex(d)
        );
    }
    // a titled file and its blobs/ entry share one download
    for (d, _) in &descs {
        assert!(
            blob_gets_of(&proxy, d) <= 1,
            "blob {d} fetched {} times: {:#?}",
            blob_gets_of(&proxy, d),
            proxy.log()
        );
    }

    // names that are not there
    for p in [
        "org/app/v1/nope.txt",
        "org/app/nosuchtag",
        "nosuchrepo",
        "org/app/v1/blobs/sha256/00",
    ] {
        let e = try_meta(&m.join(p)).expect_err(p);
        assert_eq!(errno(&e), ENOENT, "{p}: {e}");
    }
    finish(m);
}

#[test]
fn listing_and_stat_fetch_no_blob_and_show_metadata() {
    let reg = Registry::start();
    let a = Artifact::push(&reg.host(), "org/app:v1");
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = mount(&proxy.host());
    let tag = m.join("org/app/v1");

    // ls -lR of the whole mount, stat of every file, getfattr of every entry
    let out = run_timeout(Command::new("ls").arg("-lR").arg(m.path()), OP);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.contains("hello.txt"), "{listing}");
    let files = walk_files(&tag);
    for f in &files {
        meta(&tag.join(f));
    }
    run_timeout(
        Command::new("getfattr")
            .args(["-R", "-d", "--absolute-names"])
            .arg(&tag),
        OP,
    );
    assert_eq!(
        proxy.blob_gets(),
        0,
        "ls -lR / stat / getfattr fetched blobs: {:#?}",
        proxy.log()
    );

    // sizes from the descriptors
    let hello_d = layer_digest(&a.manifest.json, "hello.txt");
    let data_d = layer_digest(&a.manifest.json, "data.bin");
    assert_eq!(meta(&tag.join("hello.txt")).len(), 12);
    assert_eq!(meta(&tag.join("data.bin")).len(), 300 * 1024);
    assert_eq!(
        meta(&tag.join("manifest.json")).len(),
        a.manifest.bytes.len() as u64
    );
    for (d, size) in blob_descs(&a.manifest.json) {
        assert_eq!(
            meta(&tag.join("blobs/sha256").join(hex(&d))).len(),
            size,
            "size of blobs/sha256/{}",
            hex(&d)
        );
    }

    // one inode for a titled file and its blob
    for (title, d) in [("hello.txt", &hello_d), ("data.bin", &data_d)] {
        let f = meta(&tag.join(title));
        let b = meta(&tag.join("blobs/sha256").join(hex(d)));
        assert_eq!(f.ino(), b.ino(), "{title} and its blob: same inode");
        assert_eq!(f.nlink(), 2, "nlink of {title}");
        assert_eq!(b.nlink(), 2, "nlink of blobs/sha256/{}", hex(d));
    }

    // modes
    assert_eq!(
        meta(&tag.join("hello.txt")).permissions().mode() & 0o7777,
        0o444
    );
    assert_eq!(
        meta(&tag.join("manifest.json")).permissions().mode() & 0o7777,
        0o444
    );
    // folders: 0555, or 0755 where the mount takes writes (staging)
    let dmode = meta(&tag).permissions().mode() & 0o7777;
    assert!(
        dmode == 0o555 || dmode == 0o755,
        "tag folder mode {dmode:o}"
    );
    assert!(meta(&tag).is_dir());

    // mtime = org.opencontainers.image.created
    for p in [
        "",
        "hello.txt",
        "manifest.json",
        "bin/linux/amd64/tool",
        "blobs",
    ] {
        assert_eq!(
            meta(&tag.join(p)).mtime(),
            CREATED_EPOCH,
            "mtime of org/app/v1/{p}"
        );
    }

    // extended attributes
    assert_xattrs_include(
        &tag,
        &[
            ("user.oci.digest", &a.digest),
            ("user.oci.mediaType", MT_OCI_MANIFEST),
            ("user.oci.artifactType", ARTIFACT_TYPE_DEFAULT),
            (
                "user.oci.annotation.org.opencontainers.image.created",
                CREATED,
            ),
            ("user.oci.annotation.com.example.note", "demo value"),
        ],
    );
    assert!(
        !xattrs(&tag).contains_key("user.oci.platform"),
        "a manifest that is not an index child has no platform"
    );
    for p in [
        tag.join("hello.txt"),
        tag.join("blobs/sha256").join(hex(&hello_d)),
    ] {
        assert_xattrs_include(
            &p,
            &[
                ("user.oci.digest", &hello_d),
                ("user.oci.mediaType", MT_OCI_LAYER_TAR),
                (
                    "user.oci.annotation.org.opencontainers.image.title",
                    "hello.txt",
                ),
            ],
        );
    }
    assert_eq!(
        proxy.blob_gets(),
        0,
        "getfattr fetched blobs: {:#?}",
        proxy.log()
    );
    finish(m);
}

// ====================================================================
// 2. titles: nested, unsafe, duplicate
// ====================================================================

#[test]
fn titles_nested_unsafe_and_duplicate() {
    let reg = Registry::start();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "A first\n");
    write_file(w.path(), "x/y/z.txt", "nested z\n");
    let long = "L".repeat(300);
    let hidden: Vec<String> = vec![
        "../evil".into(),
        "/abs/evil".into(),
        "a//b".into(),
        "./dot".into(),
        "x/../../up".into(),
        "x/y/".into(),
        "".into(),
        "manifest.json".into(),
        "blobs/sha256/fake".into(),
        "referrers/r".into(),
        "nul\u{0}name".into(),
        long.clone(),
        format!("dir/{long}"),
        // a duplicate of a title shown earlier: shown once, first layer wins
        "a.txt".into(),
        // a folder where a file already is
        "a.txt/inner".into(),
    ];
    let mut layers = Vec::new();
    for (i, t) in hidden.iter().enumerate() {
        write_file(
            w.path(),
            &format!("u{i}"),
            format!("layer {i} titled {t:?}\n"),
        );
        layers.push(RawLayer {
            path: format!("u{i}"),
            title: Some(t.clone()),
            ..Default::default()
        });
    }
    write_file(w.path(), "untitled", "no title at all\n");
    layers.push(RawLayer {
        path: "untitled".into(),
        title: None,
        ..Default::default()
    });
    // an odd but safe title is shown
    let odd = "with space & ünïcode.txt";
    write_file(w.path(), "odd", "odd but fine\n");
    layers.push(RawLayer {
        path: "odd".into(),
        title: Some(odd.into()),
        ..Default::default()
    });
    let digest = oras_push_with(
        &reg.host(),
        "t:v1",
        &["a.txt", "x/y/z.txt"],
        w.path(),
        &PushOpts {
            layers,
            ..Default::default()
        },
    );
    let man = fetch_manifest(&reg.host(), "t", &digest).json;

    let m = mount(&reg.host());
    let tag = m.join("t/v1");
    assert_eq!(
        ls(&tag),
        ["a.txt", "blobs", "manifest.json", "referrers", odd, "x"],
        "regfs log:\n{}",
        log_of(&m)()
    );
    assert_eq!(ls(&tag.join("x")), ["y"]);
    assert_eq!(ls(&tag.join("x/y")), ["z.txt"]);
    assert_eq!(read(&tag.join("x/y/z.txt")), b"nested z\n");
    assert!(meta(&tag.join("x/y")).is_dir());
    assert_eq!(
        read(&tag.join("a.txt")),
        b"A first\n",
        "first a.txt layer wins"
    );
    assert!(meta(&tag.join("a.txt")).is_file());
    assert_eq!(read(&tag.join(odd)), b"odd but fine\n");
    assert_eq!(
        ls(&tag.join("blobs")),
        ["sha256"],
        "no layer titled into blobs/"
    );

    // every layer, named or not, is readable under blobs/sha256
    let blobs = ls(&tag.join("blobs/sha256"));
    for l in man["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        assert!(
            blobs.contains(&hex(d).to_string()),
            "{d} missing from blobs/sha256"
        );
        assert_eq!(
            read(&tag.join("blobs/sha256").join(hex(d))),
            fetch_blob(&reg.host(), "t", d),
            "blob {d} titled {:?}",
            l["annotations"][ANNOTATION_TITLE]
        );
    }
    // the log says why a layer was not named
    wait_for_log(m.cache_dir(), &["../evil", "/abs/evil"]);
    finish(m);
}

// ====================================================================
// 3. directory layers
// ====================================================================

#[test]
fn directory_layer_is_a_folder_of_its_contents() {
    let reg = Registry::start();
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello\n");
    write_file(w.path(), "docs/readme.md", "# docs\n");
    write_file(w.path(), "docs/sub/deep.txt", "deep\n");
    make_random_file(w.path().join("docs/sub/rand.bin"), 70_000, 9);
    let digest = oras_push(&reg.host(), "d:v1", &["hello.txt", "docs"], w.path());
    let man = fetch_manifest(&reg.host(), "d", &digest).json;
    let tgz = layer_digest(&man, "docs");

    let m = mount(&reg.host());
    let tag = m.join("d/v1");
    assert_eq!(
        ls(&tag),
        ["blobs", "docs", "hello.txt", "manifest.json", "referrers"]
    );
    // ORAS puts `docs/` in front of every tar entry; the folder shows the
    // contents, as `oras pull` writes them
    assert_eq!(
        ls(&tag.join("docs")),
        ["readme.md", "sub"],
        "regfs log:\n{}",
        log_of(&m)()
    );
    assert_eq!(ls(&tag.join("docs/sub")), ["deep.txt", "rand.bin"]);
    let pulled = tmpdir();
    oras_pull(&reg.host(), "d:v1", pulled.path());
    let want = walk_files(&pulled.path().join("docs"));
    assert_eq!(walk_files(&tag.join("docs")), want);
    for f in &want {
        let src = fs::read(pulled.path().join("docs").join(f)).unwrap();
        assert_eq!(
            meta(&tag.join("docs").join(f)).len(),
            src.len() as u64,
            "{f}"
        );
        assert_eq!(read(&tag.join("docs").join(f)), src, "docs/{f}");
    }
    // the layer itself stays readable as a blob
    assert_eq!(
        read(&tag.join("blobs/sha256").join(hex(&tgz))),
        fetch_blob(&reg.host(), "d", &tgz)
    );
    finish(m);
}

// ====================================================================
// 4-7. downloads: sharing, verification, resume, retries, dead registry
// ====================================================================

/// A registry with one artifact `repo:v1` holding `file` (random, `size`
/// bytes) and a mount through a Pass proxy; returns the data and digest.
struct OneBlob {
    _reg: Registry,
    proxy: FaultProxy,
    _w: TempDir,
    data: Vec<u8>,
    digest: String,
}

fn one_blob(size: u64, seed: u64) -> OneBlob {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("blob.bin"), size, seed);
    oras_push(&reg.host(), "b:v1", &["blob.bin"], w.path());
    let data = fs::read(w.path().join("blob.bin")).unwrap();
    let digest = sha256_bytes(&data);
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    OneBlob {
        _reg: reg,
        proxy,
        _w: w,
        data,
        digest,
    }
}

#[test]
fn concurrent_readers_share_one_download() {
    let o = one_blob(2 * 1024 * 1024, 4);
    let m = mount(&o.proxy.host());
    let file = m.join("b/v1/blob.bin");
    let blob = m.join("b/v1/blobs/sha256").join(hex(&o.digest));
    meta(&file);
    meta(&blob);
    // about a second per download, so the readers overlap it
    o.proxy.set_mode(Mode::SlowBlobs(2 * 1024 * 1024));
    let barrier = Arc::new(Barrier::new(8));
    let (tx, rx) = mpsc::channel();
    for i in 0..8 {
        let p = if i % 2 == 0 {
            file.clone()
        } else {
            blob.clone()
        };
        let b = barrier.clone();
        let tx = tx.clone();
        thread::spawn(move || {
            b.wait();
            let r = fs::read(&p).map(|d| sha256_bytes(&d));
            let _ = tx.send((p, r));
        });
    }
    drop(tx);
    for _ in 0..8 {
        let (p, r) = rx
            .recv_timeout(OP)
            .expect("8 concurrent readers did not all finish in time");
        match r {
            Ok(d) => assert_eq!(d, o.digest, "bytes read from {}", p.display()),
            Err(e) => panic!("read {}: {e}\nregfs log:\n{}", p.display(), log_of(&m)()),
        }
    }
    assert_eq!(
        blob_gets_of(&o.proxy, &o.digest),
        1,
        "8 readers of one blob: {:#?}",
        o.proxy.log()
    );
    finish(m);
}

#[test]
fn corrupt_blob_fails_with_eio_and_is_not_cached() {
    let o = one_blob(256 * 1024, 5);
    let m = mount(&o.proxy.host());
    let file = m.join("b/v1/blob.bin");
    meta(&file);
    o.proxy.set_mode(Mode::CorruptBlobs);
    assert_read_fails(&file, EIO, OP, log_of(&m));
    assert!(o.proxy.blob_gets() >= 1, "the blob was never fetched");
    let cached = m.cache_dir().join("blobs/sha256").join(hex(&o.digest));
    assert!(
        !cached.exists(),
        "corrupt blob kept in the cache at {}",
        cached.display()
    );
    // the same read again: still refused, not served from a bad cache
    assert_read_fails(
        &m.join("b/v1/blobs/sha256").join(hex(&o.digest)),
        EIO,
        OP,
        log_of(&m),
    );
    wait_for_log(m.cache_dir(), &[hex(&o.digest)]);

    o.proxy.set_mode(Mode::Pass);
    assert_eq!(read(&file), o.data);
    assert_eq!(sha256_file(&cached), o.digest, "verified blob in the cache");
    finish(m);
}

#[test]
fn broken_transfer_resumes_with_range() {
    let o = one_blob(600 * 1024, 6);
    let m = mount(&o.proxy.host());
    let file = m.join("b/v1/blob.bin");
    meta(&file);
    // every blob answer stops after 200 KiB: only resuming gets it all
    o.proxy.set_mode(Mode::TruncateBlobs(200 * 1024));
    let got = try_read(&file).unwrap_or_else(|e| {
        panic!(
            "read through truncating proxy: {e:?}\nproxy log: {:#?}\nregfs log:\n{}",
            o.proxy.log(),
            log_of(&m)()
        )
    });
    assert_eq!(sha256_bytes(&got), o.digest);
    assert!(o.proxy.range_requests() > 0, "{:#?}", o.proxy.log());
    assert!(
        o.proxy.blob_bytes_sent() < 2 * o.data.len() as u64,
        "resumed transfers re-sent {} bytes for a {} byte blob",
        o.proxy.blob_bytes_sent(),
        o.data.len()
    );
    finish(m);
}

#[test]
fn resume_works_when_the_registry_ignores_range() {
    let o = one_blob(600 * 1024, 7);
    let m = mount(&o.proxy.host());
    let file = m.join("b/v1/blob.bin");
    meta(&file);
    o.proxy.set_mode(Mode::TruncateBlobs(200 * 1024));
    // after the first broken transfer, the registry stops honouring Range
    let h = o.proxy.handle();
    let watcher = thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < OP {
            if h.blob_bytes_sent() >= 200 * 1024 {
                h.set_mode(Mode::IgnoreRange);
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    });
    let got = try_read(&file);
    assert!(watcher.join().unwrap(), "no blob bytes were ever sent");
    let got = got.unwrap_or_else(|e| {
        panic!(
            "read: {e:?}\nproxy log: {:#?}\nregfs log:\n{}",
            o.proxy.log(),
            log_of(&m)()
        )
    });
    assert_eq!(sha256_bytes(&got), o.digest);
    assert!(
        o.proxy
            .log()
            .iter()
            .any(|r| r.range.is_some() && r.status == 200),
        "no Range request was answered with a whole body: {:#?}",
        o.proxy.log()
    );
    finish(m);
}

#[test]
fn server_errors_and_throttling_are_retried() {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("f1"), 64 * 1024, 11);
    make_random_file(w.path().join("f2"), 64 * 1024, 12);
    oras_push(&reg.host(), "r:v1", &["f1", "f2"], w.path());
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = mount(&proxy.host());
    meta(&m.join("r/v1/f1"));
    meta(&m.join("r/v1/f2"));

    proxy.reset_counters();
    proxy.set_mode(Mode::Fail5xx(2));
    assert_eq!(
        read(&m.join("r/v1/f1")),
        fs::read(w.path().join("f1")).unwrap()
    );
    let n503 = proxy.log().iter().filter(|r| r.status == 503).count();
    assert_eq!(n503, 2, "{:#?}", proxy.log());

    proxy.reset_counters();
    proxy.set_mode(Mode::FailWith {
        status: 429,
        count: 2,
    });
    assert_eq!(
        read(&m.join("r/v1/f2")),
        fs::read(w.path().join("f2")).unwrap()
    );
    let n429 = proxy.log().iter().filter(|r| r.status == 429).count();
    assert_eq!(n429, 2, "{:#?}", proxy.log());
    finish(m);
}

#[test]
fn dead_registry_gives_eio_not_a_hang() {
    let reg = Registry::start();
    let w = tmpdir();
    for (i, f) in ["f1.txt", "f2.txt", "f3.txt"].iter().enumerate() {
        write_file(w.path(), f, format!("file {i}\n"));
    }
    oras_push(
        &reg.host(),
        "a:v1",
        &["f1.txt", "f2.txt", "f3.txt"],
        w.path(),
    );
    oras_push(&reg.host(), "b:v1", &["f1.txt"], w.path());
    oras_push(&reg.host(), "c:v1", &["f1.txt"], w.path());
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    // --tag-ttl 300: what was listed stays fresh, so only the failing
    // requests are timed
    let m = Mount::new(&proxy.host(), &["--timeout", "2", "--tag-ttl", "300"]);
    assert_eq!(ls(m.path()), ["a", "b", "c"]);
    assert_eq!(ls(&m.join("a")), ["v1"]);
    assert_eq!(ls(&m.join("a/v1")).len(), 6);

    let check = |mode: Mode, file: &str, repo: &str| {
        proxy.set_mode(mode.clone());
        // an uncached repository (known from the catalog, tags never listed)
        let t = Instant::now();
        let out = try_run(Command::new("ls").arg(m.join(repo)), DEAD_BOUND)
            .unwrap_or_else(|_| panic!("{mode:?}: ls {repo} did not finish in {DEAD_BOUND:?}"));
        assert!(!out.status.success(), "{mode:?}: ls {repo} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
            "{mode:?}: ls {repo}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "{mode:?}: ls {repo} failed with EIO after {:?}",
            t.elapsed()
        );
        // an uncached blob
        let took = assert_read_fails(&m.join(file), EIO, DEAD_BOUND, log_of(&m));
        eprintln!("{mode:?}: read {file} failed with EIO after {took:?}");
    };
    check(Mode::Dead, "a/v1/f1.txt", "b");
    check(Mode::Blackhole, "a/v1/f2.txt", "c");
    check(Mode::Refuse, "a/v1/f3.txt", "c");

    // back to life: the same reads work
    proxy.set_mode(Mode::Pass);
    assert_eq!(read(&m.join("a/v1/f1.txt")), b"file 0\n");
    assert_eq!(ls(&m.join("b")), ["v1"]);
    finish(m);
}

// ====================================================================
// 8. warm cache and offline
// ====================================================================

/// Reads every file of the standard artifact's tag folder; returns
/// (relative path, bytes).
fn read_all(tag: &Path) -> Vec<(String, Vec<u8>)> {
    walk_files(tag)
        .into_iter()
        .map(|f| {
            let b = read(&tag.join(&f));
            (f, b)
        })
        .collect()
}

#[test]
fn warm_remount_fetches_no_blob() {
    let reg = Registry::start();
    let a = Artifact::push(&reg.host(), "org/app:v1");
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let cache = tmpdir();

    let m1 = Mount::with_cache(&proxy.host(), cache.path(), MOUNT_ARGS);
    let first = read_all(&m1.join("org/app/v1"));
    assert!(proxy.blob_gets() > 0);
    for f in ARTIFACT_FILES {
        let b = &first.iter().find(|(p, _)| p == f).unwrap().1;
        assert_eq!(*b, a.source(f), "{f}");
    }
    finish(m1);

    proxy.reset_counters();
    let m2 = Mount::with_cache(&proxy.host(), cache.path(), MOUNT_ARGS);
    let second = read_all(&m2.join("org/app/v1"));
    assert_eq!(first, second);
    assert_eq!(
        proxy.blob_gets(),
        0,
        "a warm remount fetched blobs: {:#?}",
        proxy.log()
    );
    finish(m2);
}

#[test]
fn offline_mount_serves_the_cache() {
    let mut reg = Registry::start();
    let a = Artifact::push(&reg.host(), "org/app:v1");
    let host = reg.host();
    let cache = tmpdir();
    let m1 = Mount::with_cache(&host, cache.path(), &["--timeout", "2"]);
    let tag = m1.join("org/app/v1");
    // what the offline mount will need: the listings and two files
    assert_eq!(ls(m1.path()), ["org"]);
    assert_eq!(ls(&m1.join("org")), ["app"]);
    assert_eq!(ls(&m1.join("org/app")), ["v1"]);
    assert_eq!(read(&tag.join("hello.txt")), a.source("hello.txt"));
    assert_eq!(read(&tag.join("data.bin")), a.source("data.bin"));
    let listing = ls(&tag);
    finish(m1);

    reg.stop();
    // --tag-ttl 0: the tag must be re-checked, fails, and the last known
    // resolution is used
    let m2 = Mount::try_with_cache(&host, cache.path(), &["--timeout", "2", "--tag-ttl", "0"])
        .unwrap_or_else(|f| panic!("offline mount with a warm cache failed\n{}", f.report));
    let tag = m2.join("org/app/v1");
    let ls2 = |rel: &str| {
        try_ls(&m2.join(rel)).unwrap_or_else(|e| {
            panic!(
                "offline: readdir {rel:?}: {e}\nregfs log:\n{}",
                regfs_log(cache.path())
            )
        })
    };
    // cached files read (lookups only)
    assert_eq!(read(&tag.join("hello.txt")), a.source("hello.txt"));
    assert_eq!(read(&tag.join("data.bin")), a.source("data.bin"));
    assert_eq!(read(&tag.join("manifest.json")), a.manifest.bytes);
    // listings seen online are listed offline
    assert_eq!(ls2(""), ["org"]);
    assert_eq!(ls2("org"), ["app"]);
    assert_eq!(ls2("org/app"), ["v1"]);
    assert_eq!(ls(&tag), listing);
    // a blob never fetched: EIO, not a hang
    assert_read_fails(
        &tag.join("bin/linux/amd64/tool"),
        EIO,
        DEAD_BOUND,
        log_of(&m2),
    );
    finish(m2);
}

#[test]
fn offline_mount_with_an_empty_cache_fails_in_one_line() {
    let mut reg = Registry::start();
    Artifact::push(&reg.host(), "org/app:v1");
    let host = reg.host();
    reg.stop();
    // nothing cached and nobody answering: the mount itself fails
    let empty = tmpdir();
    let t = Instant::now();
    match Mount::try_with_cache(&host, empty.path(), &["--timeout", "2"]) {
        Ok(m) => {
            finish(m);
            panic!("mount of an unreachable registry with an empty cache succeeded");
        }
        Err(f) => {
            let line = assert_one_line_error(&f.output, "cold offline mount");
            eprintln!("cold offline mount: {line:?} after {:?}", t.elapsed());
        }
    }
}

// ====================================================================
// 9. mount errors
// ====================================================================

#[test]
fn mount_errors_are_one_line() {
    let reg = Registry::start();
    let d = tmpdir();
    let cache = tmpdir();
    let cache_s = cache.path().to_str().unwrap().to_string();
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let file = write_file(d.path(), "file", "x");
    let dead = format!("127.0.0.1:{}", free_port());

    let host = reg.host();
    let cases: Vec<(&str, String, PathBuf)> = vec![
        ("bad source", "not a source!".into(), mnt.clone()),
        ("bad source (empty)", String::new(), mnt.clone()),
        (
            "missing layout",
            "oci:/nonexistent/regfs/layout".into(),
            mnt.clone(),
        ),
        ("missing mountpoint", host.clone(), d.path().join("missing")),
        ("mountpoint is a file", host.clone(), file.clone()),
        (
            "unreachable registry, empty cache",
            dead.clone(),
            mnt.clone(),
        ),
    ];
    for (what, source, mp) in &cases {
        let mut cmd = regfs();
        cmd.arg("mount")
            .arg(source)
            .arg(mp)
            .args(["--cache-dir", &cache_s, "--timeout", "2"]);
        let out = run_unchecked_timeout(&mut cmd, MOUNT_TIMEOUT);
        if out.status.success() {
            // do not leave it mounted
            let _ = run_unchecked(Command::new("fusermount3").arg("-u").arg(mp));
        }
        let line = assert_one_line_error(&out, what);
        eprintln!("{what}: {line}");
        assert!(!is_mountpoint(mp), "{what}: left a mount");
        wait_daemon_gone(mp);
    }

    // busy: something is already mounted there
    let m = mount(&host);
    let out = run_unchecked_timeout(
        regfs()
            .arg("mount")
            .arg(&host)
            .arg(m.path())
            .args(["--cache-dir", &cache_s]),
        MOUNT_TIMEOUT,
    );
    let line = assert_one_line_error(&out, "busy mountpoint");
    eprintln!("busy: {line}");
    // the first mount is still fine
    assert!(ls(m.path()).is_empty());
    finish(m);
}

// ====================================================================
// 10. prefixes, nested names, digest folders, --repo
// ====================================================================

#[test]
fn prefix_nested_repos_digest_folders_and_repo_flag() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello\n");
    write_file(w.path(), "t.txt", "tool\n");
    write_file(w.path(), "o.txt", "other\n");
    let app = oras_push(&host, "org/app:v1", &["hello.txt"], w.path());
    oras_push(&host, "org/team/tool:v2", &["t.txt"], w.path());
    oras_push(&host, "other:v1", &["o.txt"], w.path());
    // org/app has tags and sub-repositories; one of those is named like a tag
    oras_push(&host, "org/app/plugins:p1", &["t.txt"], w.path());
    oras_push(&host, "org/app/v1:x", &["o.txt"], w.path());

    let m = mount(&host);
    assert_eq!(ls(m.path()), ["org", "other"]);
    assert_eq!(ls(&m.join("org")), ["app", "team"]);
    assert_eq!(ls(&m.join("org/app")), ["plugins", "v1"]);
    assert_eq!(read(&m.join("org/app/plugins/p1/t.txt")), b"tool\n");
    // a name that is both a tag and a sub-repository is the tag
    assert_eq!(read(&m.join("org/app/v1/hello.txt")), b"hello\n");
    assert!(meta(&m.join("org/app/v1/manifest.json")).is_file());
    assert_eq!(ls(&m.join("org/team")), ["tool"]);
    assert_eq!(ls(&m.join("org/team/tool")), ["v2"]);
    assert_eq!(read(&m.join("org/team/tool/v2/t.txt")), b"tool\n");

    // @sha256:<hex>: reachable by name, not listed
    let at = m.join(&format!("org/app/@{app}"));
    assert_eq!(sha256_bytes(&read(&at.join("manifest.json"))), app);
    assert_eq!(read(&at.join("hello.txt")), b"hello\n");
    assert_xattrs_include(&at, &[("user.oci.digest", &app)]);
    assert_eq!(
        ls(&m.join("org/app")),
        ["plugins", "v1"],
        "digest folders are not listed"
    );
    let missing = format!("org/app/@sha256:{}", "0".repeat(64));
    assert_eq!(errno(&try_meta(&m.join(&missing)).unwrap_err()), ENOENT);
    let bad = "org/app/@sha256:nothex";
    assert_eq!(errno(&try_meta(&m.join(bad)).unwrap_err()), ENOENT);
    finish(m);

    // HOST/org: the tree starts inside org/
    let m = mount(&format!("{host}/org"));
    assert_eq!(ls(m.path()), ["app", "team"]);
    assert_eq!(read(&m.join("app/v1/hello.txt")), b"hello\n");
    assert_eq!(read(&m.join("team/tool/v2/t.txt")), b"tool\n");
    assert_eq!(errno(&try_meta(&m.join("other")).unwrap_err()), ENOENT);
    finish(m);

    // --repo (and -o repo=): named repositories are shown
    let m = Mount::new(
        &host,
        &["--timeout", "5", "--repo", "extra/thing", "-o", "repo=more"],
    );
    let top = ls(m.path());
    for want in ["extra", "more", "org", "other"] {
        assert!(top.contains(&want.to_string()), "{want} not in {top:?}");
    }
    assert_eq!(ls(&m.join("extra")), ["thing"]);
    assert!(
        ls(&m.join("extra/thing")).is_empty(),
        "no tags in a repo that does not exist"
    );
    finish(m);
}

// ====================================================================
// 11. skopeo peers: images, indexes, Docker schema 2
// ====================================================================

#[test]
fn skopeo_single_arch_images_oci_and_docker() {
    let reg = Registry::start();
    let host = reg.host();
    let layout = tmpdir();
    let img = make_oci_image_layout(layout.path(), "single", &[("linux", "amd64", None)]);
    skopeo_copy_to_registry(layout.path(), "single", &host, "img:oci", false, None);
    skopeo_copy_to_registry(
        layout.path(),
        "single",
        &host,
        "img:docker",
        false,
        Some("v2s2"),
    );

    let m = mount(&host);
    assert_eq!(ls(&m.join("img")), ["docker", "oci"]);
    for (tag, mt) in [("oci", MT_OCI_MANIFEST), ("docker", MT_DOCKER_MANIFEST)] {
        let fm = fetch_manifest(&host, "img", tag);
        assert_eq!(fm.media_type, mt);
        if tag == "oci" {
            assert_eq!(fm.digest, img.digest);
        }
        let dir = m.join(&format!("img/{tag}"));
        // an image: config.json, untitled layer under blobs/ only
        assert_eq!(
            ls(&dir),
            ["blobs", "config.json", "manifest.json", "referrers"],
            "{tag}"
        );
        assert_eq!(read(&dir.join("manifest.json")), fm.bytes, "{tag}");
        let cfg = fm.json["config"]["digest"].as_str().unwrap();
        let cfg_bytes = read(&dir.join("config.json"));
        assert_eq!(
            cfg_bytes,
            fetch_blob(&host, "img", cfg),
            "{tag} config.json"
        );
        let cfg_json: Value = serde_json::from_slice(&cfg_bytes).unwrap();
        assert_eq!(cfg_json["architecture"], "amd64");
        assert_eq!(
            meta(&dir.join("config.json")).ino(),
            meta(&dir.join("blobs/sha256").join(hex(cfg))).ino()
        );
        let layer = fm.json["layers"][0]["digest"].as_str().unwrap();
        let gz = read(&dir.join("blobs/sha256").join(hex(layer)));
        assert_eq!(gz, fetch_blob(&host, "img", layer), "{tag} layer");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut e = tar.entries().unwrap().next().unwrap().unwrap();
        let mut s = String::new();
        e.read_to_string(&mut s).unwrap();
        assert_eq!(s, "linux/amd64\n");
        assert_xattrs_include(
            &dir,
            &[("user.oci.digest", &fm.digest), ("user.oci.mediaType", mt)],
        );
    }
    finish(m);
}

/// `skopeo copy --override-os/arch/variant docker://HOST/REF dir:OUT`.
fn skopeo_pull_platform(
    host: &str,
    reference: &str,
    os: &str,
    arch: &str,
    variant: Option<&str>,
    out: &Path,
) {
    let mut args: Vec<String> = vec![
        "--insecure-policy".into(),
        "--override-os".into(),
        os.into(),
        "--override-arch".into(),
        arch.into(),
    ];
    if let Some(v) = variant {
        args.push("--override-variant".into());
        args.push(v.into());
    }
    args.extend([
        "copy".to_string(),
        "--quiet".into(),
        "--src-tls-verify=false".into(),
        format!("docker://{host}/{reference}"),
        format!("dir:{}", out.display()),
    ]);
    skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The blob files skopeo's dir: transport wrote (`<hex>`), by hex.
fn skopeo_dir_blobs(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for e in fs::read_dir(out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let h = name.strip_suffix(".tar").unwrap_or(&name).to_string();
        if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
            m.insert(h, fs::read(e.path()).unwrap());
        }
    }
    m
}

#[test]
fn skopeo_multi_arch_index_and_docker_manifest_list() {
    let reg = Registry::start();
    let host = reg.host();
    let layout = tmpdir();
    let platforms = [
        ("linux", "amd64", None),
        ("linux", "arm", Some("v7")),
        ("linux", "arm64", None),
    ];
    let img = make_oci_image_layout(layout.path(), "multi", &platforms);
    skopeo_copy_to_registry(layout.path(), "multi", &host, "img:multi", true, None);
    skopeo_copy_to_registry(
        layout.path(),
        "multi",
        &host,
        "dimg:multi",
        true,
        Some("v2s2"),
    );

    let m = mount(&host);
    for (repo, mt) in [("img", MT_OCI_INDEX), ("dimg", MT_DOCKER_LIST)] {
        let fm = fetch_manifest(&host, repo, "multi");
        assert_eq!(fm.media_type, mt);
        let dir = m.join(&format!("{repo}/multi"));
        assert_eq!(
            ls(&dir),
            [
                "linux-amd64",
                "linux-arm-v7",
                "linux-arm64",
                "manifest.json",
                "referrers"
            ],
            "{repo}"
        );
        assert_eq!(
            read(&dir.join("manifest.json")),
            fm.bytes,
            "{repo} index bytes"
        );
        assert_xattrs_include(
            &dir,
            &[("user.oci.digest", &fm.digest), ("user.oci.mediaType", mt)],
        );
        for p in &img.platforms {
            let pdir = dir.join(&p.dir_name);
            let spec = match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.arch),
                None => format!("{}/{}", p.os, p.arch),
            };
            let out = tmpdir();
            let out_dir = out.path().join("img");
            skopeo_pull_platform(
                &host,
                &format!("{repo}:multi"),
                &p.os,
                &p.arch,
                p.variant.as_deref(),
                &out_dir,
            );
            let want_manifest = fs::read(out_dir.join("manifest.json")).unwrap();
            let got_manifest = read(&pdir.join("manifest.json"));
            assert_eq!(got_manifest, want_manifest, "{repo} {spec}: manifest.json");
            assert_xattrs_include(
                &pdir,
                &[
                    ("user.oci.platform", &spec),
                    ("user.oci.digest", &sha256_bytes(&want_manifest)),
                ],
            );
            if repo == "img" {
                assert_eq!(sha256_bytes(&got_manifest), p.manifest_digest);
            }
            let blobs = skopeo_dir_blobs(&out_dir);
            assert_eq!(
                ls(&pdir.join("blobs/sha256")),
                blobs.keys().cloned().collect::<Vec<_>>(),
                "{repo} {spec}: blobs"
            );
            for (h, bytes) in &blobs {
                assert_eq!(
                    read(&pdir.join("blobs/sha256").join(h)),
                    *bytes,
                    "{repo} {spec}: blob {h}"
                );
            }
            assert_eq!(
                ls(&pdir),
                ["blobs", "config.json", "manifest.json", "referrers"]
            );
        }
    }
    finish(m);
}

// ====================================================================
// 12. referrers
// ====================================================================

#[test]
fn referrers_show_under_their_subject() {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "subject\n");
    write_file(w.path(), "sig.txt", "signature\n");
    write_file(w.path(), "sbom.json", "{\"sbom\":true}\n");
    let subject = oras_push(&host, "art:v1", &["a.txt"], w.path());
    let sig = oras_push_with(
        &host,
        "art",
        &["sig.txt"],
        w.path(),
        &PushOpts {
            artifact_type: Some("application/vnd.example.sig".into()),
            subject: Some("v1".into()),
            ..Default::default()
        },
    );
    let sbom = oras_push_with(
        &host,
        "art",
        &["sbom.json"],
        w.path(),
        &PushOpts {
            artifact_type: Some("application/vnd.example.sbom".into()),
            subject: Some(subject.clone()),
            ..Default::default()
        },
    );
    let ref_tag = subject.replace(':', "-");
    assert!(reg.tags("art").contains(&ref_tag));

    let m = mount(&host);
    assert_eq!(ls(&m.join("art")), ["v1"], "sha256-<hex> tags are not tags");
    let refs = m.join("art/v1/referrers");
    let mut want = vec![sig.clone(), sbom.clone()];
    want.sort();
    assert_eq!(ls(&refs), want);
    let sdir = refs.join(&sig);
    assert_eq!(sha256_bytes(&read(&sdir.join("manifest.json"))), sig);
    assert_eq!(read(&sdir.join("sig.txt")), b"signature\n");
    assert_xattrs_include(
        &sdir,
        &[
            ("user.oci.digest", &sig),
            ("user.oci.artifactType", "application/vnd.example.sig"),
        ],
    );
    assert_eq!(
        read(&refs.join(&sbom).join("sbom.json")),
        b"{\"sbom\":true}\n"
    );
    assert!(ls(&sdir.join("referrers")).is_empty());
    // the same artifact by digest
    assert_eq!(
        read(&m.join(&format!("art/@{sig}/sig.txt"))),
        b"signature\n"
    );
    finish(m);
}

// ====================================================================
// 13. OCI layout source
// ====================================================================

#[test]
fn oci_layout_written_by_skopeo_mounts_and_verifies() {
    let reg = Registry::start();
    let host = reg.host();
    let src = tmpdir();
    let platforms = [("linux", "amd64", None), ("linux", "arm64", None)];
    let multi = make_oci_image_layout(src.path(), "multi", &platforms);
    let single = make_oci_image_layout(src.path(), "single", &[("linux", "arm", Some("v7"))]);
    skopeo_copy_to_registry(src.path(), "multi", &host, "img:multi", true, None);
    skopeo_copy_to_registry(src.path(), "single", &host, "img:single", false, None);

    let lay = tmpdir();
    let lay_path = lay.path().join("layout");
    for (tag, all) in [("multi", true), ("single", false)] {
        let mut args = vec![
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ];
        if all {
            args.push("--all");
        }
        let from = format!("docker://{host}/img:{tag}");
        let to = format!("oci:{}:{tag}", lay_path.display());
        args.push(&from);
        args.push(&to);
        skopeo(&args);
    }

    let m = mount(&format!("oci:{}", lay_path.display()));
    assert_eq!(ls(m.path()), ["multi", "single"]);
    let mj = read(&m.join("multi/manifest.json"));
    assert_eq!(sha256_bytes(&mj), multi.digest);
    assert_eq!(
        ls(&m.join("multi")),
        ["linux-amd64", "linux-arm64", "manifest.json", "referrers"]
    );
    let blob_file = |d: &str| lay_path.join("blobs/sha256").join(hex(d));
    for p in &multi.platforms {
        let pdir = m.join("multi").join(&p.dir_name);
        assert_eq!(
            sha256_bytes(&read(&pdir.join("manifest.json"))),
            p.manifest_digest
        );
        assert_eq!(
            read(&pdir.join("config.json")),
            fs::read(blob_file(&p.config_digest)).unwrap()
        );
        if p.arch == "amd64" {
            assert_eq!(
                read(&pdir.join("blobs/sha256").join(hex(&p.layer_digest))),
                fs::read(blob_file(&p.layer_digest)).unwrap()
            );
        }
    }
    let s = &single.platforms[0];
    assert_eq!(
        sha256_bytes(&read(&m.join("single/manifest.json"))),
        s.manifest_digest
    );
    assert_eq!(
        read(&m.join("single/blobs/sha256").join(hex(&s.layer_digest))),
        fs::read(blob_file(&s.layer_digest)).unwrap()
    );

    // a blob file changed behind regfs's back (same size) is refused
    let arm64 = multi.platforms.iter().find(|p| p.arch == "arm64").unwrap();
    let victim = blob_file(&arm64.layer_digest);
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let mut perms = fs::metadata(&victim).unwrap().permissions();
    perms.set_mode(0o644);
    fs::set_permissions(&victim, perms).unwrap();
    fs::write(&victim, &bytes).unwrap();
    let p = m
        .join("multi/linux-arm64/blobs/sha256")
        .join(hex(&arm64.layer_digest));
    assert_read_fails(&p, EIO, OP, log_of(&m));
    assert!(!m
        .cache_dir()
        .join("blobs/sha256")
        .join(hex(&arm64.layer_digest))
        .exists());
    finish(m);
}

// ====================================================================
// 14. hostile registry content
// ====================================================================

/// Plants `bytes` in the registry's storage as manifest `digest` of `repo`
/// (default: their real sha256), tagged `tag`, bypassing the checks the
/// registry makes on PUT. Returns the digest.
fn plant_manifest(
    reg: &Registry,
    repo: &str,
    tag: &str,
    bytes: &[u8],
    digest: Option<&str>,
) -> String {
    let digest = digest
        .map(String::from)
        .unwrap_or_else(|| sha256_bytes(bytes));
    let h = hex(&digest).to_string();
    let v2 = reg.storage_dir().join("docker/registry/v2");
    write_file(&v2, &format!("blobs/sha256/{}/{h}/data", &h[..2]), bytes);
    let mf = format!("repositories/{repo}/_manifests");
    for link in [
        format!("{mf}/revisions/sha256/{h}/link"),
        format!("{mf}/tags/{tag}/current/link"),
        format!("{mf}/tags/{tag}/index/sha256/{h}/link"),
    ] {
        write_file(&v2, &link, &digest);
    }
    digest
}

/// Repository `h` of a fresh registry with honest tags (`good`: ok.txt,
/// `base`: fine.txt) and hostile ones: `huge` (a layer claiming 2^60 bytes,
/// accepted by the registry's PUT), and, planted in storage because the
/// registry refuses them on PUT, `badlayer` (unusable layer digests),
/// `noconfig` (no config descriptor), `garbage` (not JSON; the registry
/// answers 500) and `liar` (served under a digest it does not hash to).
struct Hostile {
    reg: Registry,
    fine_layer: String,
    noconfig: String,
    liar: String,
}

const HOSTILE_TAGS: [&str; 7] = [
    "badlayer", "base", "garbage", "good", "huge", "liar", "noconfig",
];

fn hostile_registry() -> Hostile {
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "fine.txt", "fine\n");
    write_file(w.path(), "ok.txt", "ok\n");
    let good = oras_push(&host, "h:good", &["ok.txt"], w.path());
    let ok_layer = layer_digest(&fetch_manifest(&host, "h", &good).json, "ok.txt");
    let fine = oras_push(&host, "h:base", &["fine.txt"], w.path());
    let fine_layer = layer_digest(&fetch_manifest(&host, "h", &fine).json, "fine.txt");
    let cfg = json!({"mediaType": MT_OCI_EMPTY, "digest": EMPTY_CONFIG_DIGEST, "size": 2});
    let layer = |digest: &str, size: Value, title: &str| {
        json!({"mediaType": MT_OCI_LAYER_TAR, "digest": digest, "size": size,
               "annotations": {ANNOTATION_TITLE: title}})
    };
    // huge.bin names ok.txt's 3-byte blob with a size of 2^60
    let huge = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg,
        "layers": [layer(&ok_layer, json!(1u64 << 60), "huge.bin"),
                   layer(&fine_layer, json!(5), "fine.txt")]});
    let r = reg.request(
        "PUT",
        "/v2/h/manifests/huge",
        &[("Content-Type", MT_OCI_MANIFEST)],
        huge.to_string().as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let bad_layer = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg,
        "layers": [layer("sha256:zz", json!(3), "bad.txt"),
                   layer("sha256:../../../../etc/passwd", json!(3), "evil.txt"),
                   layer(&fine_layer, json!(5), "fine.txt")]});
    plant_manifest(
        &reg,
        "h",
        "badlayer",
        bad_layer.to_string().as_bytes(),
        None,
    );
    let noconfig = plant_manifest(
        &reg,
        "h",
        "noconfig",
        json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "layers": []})
            .to_string()
            .as_bytes(),
        None,
    );
    plant_manifest(&reg, "h", "garbage", b"this is not json {", None);
    let fine2 = json!({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg,
        "layers": [layer(&fine_layer, json!(5), "fine.txt")]});
    let liar = format!("sha256:{}", "1".repeat(64));
    plant_manifest(&reg, "h", "liar", fine2.to_string().as_bytes(), Some(&liar));
    assert_eq!(reg.tags("h"), HOSTILE_TAGS);
    Hostile {
        reg,
        fine_layer,
        noconfig,
        liar,
    }
}

#[test]
fn hostile_unparseable_manifests_fail_only_their_tag() {
    let h = hostile_registry();
    let m = Mount::new(&h.reg.host(), &["--timeout", "2"]);
    assert_eq!(ls(&m.join("h")), HOSTILE_TAGS);
    assert_eq!(read(&m.join("h/good/ok.txt")), b"ok\n");
    for (tag, why) in [
        ("noconfig", hex(&h.noconfig).to_string()),
        ("garbage", "garbage".into()),
        ("liar", hex(&h.liar).to_string()),
    ] {
        let t = Instant::now();
        let e = try_ls(&m.join("h").join(tag)).expect_err(tag);
        assert_eq!(
            errno(&e),
            EIO,
            "ls h/{tag}: {e}\nregfs log:\n{}",
            regfs_log(m.cache_dir())
        );
        eprintln!("ls h/{tag}: EIO after {:?}", t.elapsed());
        assert!(t.elapsed() < DEAD_BOUND);
        // the log names what is wrong
        wait_for_log(m.cache_dir(), &[&why]);
    }
    // nothing else is disturbed
    assert_eq!(ls(&m.join("h")), HOSTILE_TAGS);
    assert_eq!(read(&m.join("h/base/fine.txt")), b"fine\n");
    assert_eq!(read(&m.join("h/good/ok.txt")), b"ok\n");
    finish(m);
}

/// Regression (issue 11, item 9): a layer descriptor claiming 2^60 bytes
/// (for a 3-byte blob) was shown with that size and fetched. It is refused
/// where the manifest is parsed: not in the tree, not under `blobs/`, never
/// requested, and said in the log; the rest of the manifest still reads.
fn absurd_layer_size(extra: &[&str]) {
    let h = hostile_registry();
    let proxy = FaultProxy::start(&h.reg.host(), Mode::Pass);
    let mut args = vec!["--timeout", "2"];
    args.extend_from_slice(extra);
    let m = Mount::new(&proxy.host(), &args);
    let hdir = m.join("h/huge");
    assert_eq!(
        ls(&hdir),
        ["blobs", "fine.txt", "manifest.json", "referrers"],
        "regfs log:\n{}",
        regfs_log(m.cache_dir())
    );
    assert_eq!(
        errno(&try_meta(&hdir.join("huge.bin")).unwrap_err()),
        ENOENT
    );
    let mut want = vec![
        hex(EMPTY_CONFIG_DIGEST).to_string(),
        hex(&h.fine_layer).to_string(),
    ];
    want.sort();
    assert_eq!(ls(&hdir.join("blobs/sha256")), want);
    assert_eq!(read(&hdir.join("fine.txt")), b"fine\n");
    wait_for_log(
        m.cache_dir(),
        &["layers[0] is unusable: size 1152921504606846976 is over the 16 TiB limit"],
    );
    // The honest tag that names the same blob reads; the absurd descriptor
    // never made a request of its own.
    let ok_layer = layer_digest(&fetch_manifest(&h.reg.host(), "h", "good").json, "ok.txt");
    assert_eq!(blob_gets_of(&proxy, &ok_layer), 0);
    assert_eq!(read(&m.join("h/good/ok.txt")), b"ok\n");
    assert_eq!(blob_gets_of(&proxy, &ok_layer), 1);
    assert!(try_meta(&hdir.join("huge.bin")).is_err());
    // the mount is alive and well
    assert_eq!(ls(&m.join("h")), HOSTILE_TAGS);
    assert_eq!(read(&m.join("h/base/fine.txt")), b"fine\n");
    finish(m);
}

#[test]
fn hostile_absurd_layer_size_is_not_shown() {
    absurd_layer_size(&[]);
}

#[test]
fn hostile_absurd_layer_size_is_not_shown_lazy() {
    absurd_layer_size(&["--verify", "lazy"]);
}

#[test]
fn hostile_invalid_layer_digest_is_skipped() {
    let h = hostile_registry();
    let m = Mount::new(&h.reg.host(), &["--timeout", "2"]);
    // a layer whose digest cannot be addressed is skipped (and logged);
    // the rest of the artifact reads
    let bdir = m.join("h/badlayer");
    let names = try_ls(&bdir).unwrap_or_else(|e| {
        panic!(
            "ls h/badlayer: {e}\nregfs log:\n{}",
            regfs_log(m.cache_dir())
        )
    });
    assert_eq!(names, ["blobs", "fine.txt", "manifest.json", "referrers"]);
    let mut want = vec![
        hex(EMPTY_CONFIG_DIGEST).to_string(),
        hex(&h.fine_layer).to_string(),
    ];
    want.sort();
    assert_eq!(ls(&bdir.join("blobs/sha256")), want);
    assert_eq!(read(&bdir.join("fine.txt")), b"fine\n");
    wait_for_log(m.cache_dir(), &["sha256:zz"]);
    finish(m);
}

// ====================================================================
// 15. basic auth with docker config credentials
// ====================================================================

#[test]
fn basic_auth_with_docker_config() {
    let (user, pass) = ("alice", "s3cret-Pa55");
    let reg = Registry::start_with_basic_auth(user, pass);
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "secret.txt", "top secret\n");
    oras_push_with(
        &host,
        "priv:v1",
        &["secret.txt"],
        w.path(),
        &PushOpts {
            creds: Some((user.into(), pass.into())),
            ..Default::default()
        },
    );
    let home = tmpdir();
    let encoded = crate::support::http::base64(format!("{user}:{pass}").as_bytes());
    let good = tmpdir();
    write_file(
        good.path(),
        "config.json",
        json!({"auths": {host.clone(): {"auth": encoded}}}).to_string(),
    );

    // with credentials (without them, or with wrong ones, the mount fails:
    // see the tests below)
    let cache = tmpdir();
    let cache_s = cache.path().to_str().unwrap();
    let m = raw_mount(
        &[
            "mount",
            &host,
            "MNT",
            "--cache-dir",
            cache_s,
            "--timeout",
            "5",
        ],
        &[("DOCKER_CONFIG", good.path()), ("HOME", home.path())],
    )
    .unwrap_or_else(|o| {
        panic!(
            "mount with credentials failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(ls(m.path()), ["priv"]);
    assert_eq!(read(&m.join("priv/v1/secret.txt")), b"top secret\n");
    finish_raw(m);
    // credentials never land in the cache or the log
    let mut stack = vec![cache.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = fs::read(&p).unwrap_or_default();
                let s = String::from_utf8_lossy(&b);
                assert!(
                    !s.contains(pass) && !s.contains(&encoded),
                    "credentials in {}",
                    p.display()
                );
            }
        }
    }
}

/// A docker config folder whose `auths` hold `user:pass` for `host`.
fn docker_config(host: &str, user: &str, pass: &str) -> TempDir {
    let d = tmpdir();
    let auth = crate::support::http::base64(format!("{user}:{pass}").as_bytes());
    write_file(
        d.path(),
        "config.json",
        json!({"auths": {host: {"auth": auth}}}).to_string(),
    );
    d
}

/// `regfs mount HOST MNT --cache-dir <fresh> --timeout 5 EXTRA...` with
/// `DOCKER_CONFIG=cfg` (and an empty HOME).
fn mount_with_config(host: &str, cfg: &Path, extra: &[&str]) -> Result<RawMount, Output> {
    let cache = tmpdir();
    let home = tmpdir();
    let mut args = vec![
        "mount",
        host,
        "MNT",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    let mut m = raw_mount(&args, &[("DOCKER_CONFIG", cfg), ("HOME", home.path())])?;
    m.keep.extend([cache, home]);
    Ok(m)
}

/// Regression (issue 11, item 5): `regfs mount` with a wrong password
/// exited 0 and showed an empty root. The registry refusing the
/// credentials (401 after they were sent) fails the mount in one line
/// naming the host and where the credentials came from.
#[test]
fn mount_with_a_wrong_password_fails_naming_the_host_and_the_config() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret-Pa55");
    let host = reg.host();
    let wrong = docker_config(&host, "alice", "nope-not-it");
    let t = Instant::now();
    let out = match mount_with_config(&host, wrong.path(), &[]) {
        Ok(_) => panic!("a mount with a wrong password succeeded"),
        Err(out) => out,
    };
    let line = assert_one_line_error(&out, "wrong password");
    eprintln!("wrong password: {line}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let config = wrong.path().join("config.json");
    for want in [host.as_str(), "refused", config.to_str().unwrap()] {
        assert!(line.contains(want), "{line:?} does not say {want:?}");
    }
    assert!(!line.contains("nope-not-it"), "the password is in {line:?}");
    // The right password mounts (and reads).
    let good = docker_config(&host, "alice", "s3cret-Pa55");
    let w = tmpdir();
    write_file(w.path(), "s.txt", "secret\n");
    oras_push_with(
        &host,
        "priv:v1",
        &["s.txt"],
        w.path(),
        &PushOpts {
            creds: Some(("alice".into(), "s3cret-Pa55".into())),
            ..Default::default()
        },
    );
    let m = mount_with_config(&host, good.path(), &[]).unwrap_or_else(|o| {
        panic!(
            "the right password did not mount: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(read(&m.join("priv/v1/s.txt")), b"secret\n");
    finish_raw(m);
}

/// Regression (issue 11, item 5): with no credentials for a registry that
/// needs them, the mount "succeeded". It fails and says so.
#[test]
fn mount_with_no_credentials_where_they_are_needed_says_so() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret-Pa55");
    let host = reg.host();
    let none = tmpdir();
    let out = match mount_with_config(&host, none.path(), &[]) {
        Ok(_) => panic!("a mount with no credentials succeeded"),
        Err(out) => out,
    };
    let line = assert_one_line_error(&out, "no credentials");
    eprintln!("no credentials: {line}");
    for want in [host.as_str(), "no credentials", "docker login"] {
        assert!(line.contains(want), "{line:?} does not say {want:?}");
    }
}

/// A registry whose `GET /v2/` is anonymous but whose repositories (and
/// catalog) need credentials: the mount probes the first `--repo`, else
/// the catalog, and says what is wrong; with the right credentials it
/// mounts. (A proxy answers `/v2/` for the Basic-auth registry.)
#[test]
fn mount_probes_repositories_when_only_they_need_credentials() {
    let reg = Registry::start_with_basic_auth("alice", "s3cret-Pa55");
    let w = tmpdir();
    write_file(w.path(), "s.txt", "secret\n");
    oras_push_with(
        &reg.host(),
        "priv:v1",
        &["s.txt"],
        w.path(),
        &PushOpts {
            creds: Some(("alice".into(), "s3cret-Pa55".into())),
            ..Default::default()
        },
    );
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    proxy.set_rule(Some(Rule::exact("GET", "/v2/", RuleAction::Fail(200))));
    let host = proxy.host();
    let none = tmpdir();
    let wrong = docker_config(&host, "alice", "nope-not-it");
    let good = docker_config(&host, "alice", "s3cret-Pa55");
    for (what, cfg, extra, wants) in [
        (
            "no credentials, --repo",
            none.path(),
            &["--repo", "priv"][..],
            &["no credentials", "priv"][..],
        ),
        (
            "no credentials, catalog",
            none.path(),
            &[][..],
            &["no credentials"][..],
        ),
        (
            "wrong password, --repo",
            wrong.path(),
            &["--repo", "priv"][..],
            &["refused", "priv"][..],
        ),
        (
            "wrong password, catalog",
            wrong.path(),
            &[][..],
            &["refused"][..],
        ),
    ] {
        let out = match mount_with_config(&host, cfg, extra) {
            Ok(_) => panic!("{what}: mounted"),
            Err(out) => out,
        };
        let line = assert_one_line_error(&out, what);
        eprintln!("{what}: {line}");
        assert!(
            line.contains(&host),
            "{what}: {line:?} does not name {host}"
        );
        for want in wants {
            assert!(
                line.contains(want),
                "{what}: {line:?} does not say {want:?}"
            );
        }
    }
    for extra in [&["--repo", "priv"][..], &[][..]] {
        let m = mount_with_config(&host, good.path(), extra).unwrap_or_else(|o| {
            panic!(
                "{extra:?}: the right password did not mount: {}",
                String::from_utf8_lossy(&o.stderr)
            )
        });
        assert_eq!(read(&m.join("priv/v1/s.txt")), b"secret\n");
        finish_raw(m);
    }
}

// ====================================================================
// 16. read-only and unmounting
// ====================================================================

/// A write a read-only mount must refuse.
type WriteAttempt = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

#[test]
fn read_only_mount_refuses_writes() {
    let reg = Registry::start();
    let a = Artifact::push(&reg.host(), "org/app:v1");
    let m = Mount::new(&reg.host(), &["--read-only", "--timeout", "5"]);
    let tag = m.join("org/app/v1");
    assert_eq!(read(&tag.join("hello.txt")), a.source("hello.txt"));
    // read-only: files 0444, folders 0555
    for (p, mode) in [
        ("", 0o555),
        ("org", 0o555),
        ("org/app", 0o555),
        ("org/app/v1", 0o555),
        ("org/app/v1/bin", 0o555),
        ("org/app/v1/blobs/sha256", 0o555),
        ("org/app/v1/hello.txt", 0o444),
        ("org/app/v1/manifest.json", 0o444),
    ] {
        let got = meta(&m.join(p)).permissions().mode() & 0o7777;
        assert_eq!(got, mode, "mode of {p:?}: {got:o}");
    }

    let attempts: Vec<(&str, WriteAttempt)> = vec![
        ("mkdir in a tag", {
            let p = tag.join("newdir");
            Box::new(move || fs::create_dir(p))
        }),
        ("mkdir of a new tag", {
            let p = m.join("org/app/newtag");
            Box::new(move || fs::create_dir(p))
        }),
        ("mkdir of a new repo", {
            let p = m.join("newrepo");
            Box::new(move || fs::create_dir(p))
        }),
        ("create a file", {
            let p = tag.join("new.txt");
            Box::new(move || fs::File::create(p).map(|_| ()))
        }),
        ("rm a titled file", {
            let p = tag.join("hello.txt");
            Box::new(move || fs::remove_file(p))
        }),
        ("open a file for writing", {
            let p = tag.join("hello.txt");
            Box::new(move || fs::OpenOptions::new().write(true).open(p).map(|_| ()))
        }),
        ("rename", {
            let (p, q) = (tag.join("hello.txt"), tag.join("renamed.txt"));
            Box::new(move || fs::rename(p, q))
        }),
    ];
    for (what, f) in attempts {
        let r = bounded(what, OP, f);
        let e = r.expect_err(what);
        assert_eq!(errno(&e), EROFS, "{what}: {e}");
    }
    let out = run_unchecked_timeout(
        Command::new("setfattr")
            .args(["-n", "user.oci.annotation.k", "-v", "v"])
            .arg(&tag),
        OP,
    );
    assert!(
        !out.status.success(),
        "setfattr on a read-only mount succeeded"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nothing changed
    assert_eq!(read(&tag.join("hello.txt")), a.source("hello.txt"));
    assert_eq!(
        ls(&tag),
        [
            "bin",
            "blobs",
            "data.bin",
            "hello.txt",
            "manifest.json",
            "referrers"
        ]
    );
    finish(m);
}

#[test]
fn regfs_umount_fusermount_and_fstab_form() {
    let reg = Registry::start();
    let host = reg.host();
    let a = Artifact::push(&host, "org/app:v1");

    // regfs umount
    let m = mount(&host);
    let p = m.path().to_path_buf();
    assert_eq!(read(&m.join("org/app/v1/hello.txt")), a.source("hello.txt"));
    let out = run_timeout(regfs().arg("umount").arg(&p), Duration::from_secs(30));
    assert!(out.status.success());
    assert!(!is_mountpoint(&p), "still mounted after regfs umount");
    wait_daemon_gone(&p);
    drop(m);

    // fusermount3 -u
    let mut m = mount(&host);
    let p = m.path().to_path_buf();
    assert_eq!(ls(m.path()), ["org"]);
    m.unmount();
    assert!(!is_mountpoint(&p));
    wait_daemon_gone(&p);
    drop(m);

    // `regfs HOST MNT -o ...` (what mount.fuse3 and fstab run)
    let cache = tmpdir();
    let opts = format!(
        "cache-dir={},ro,timeout=5,tag-ttl=10",
        cache.path().display()
    );
    let m = raw_mount(&[&host, "MNT", "-o", &opts], &[]).unwrap_or_else(|o| {
        panic!(
            "fstab-form mount failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    assert_eq!(read(&m.join("org/app/v1/hello.txt")), a.source("hello.txt"));
    let e = bounded("mkdir", OP, {
        let p = m.join("org/app/v1/x");
        move || fs::create_dir(p)
    })
    .expect_err("mkdir on an -o ro mount");
    assert_eq!(errno(&e), EROFS);
    assert!(
        cache.path().join("regfs.log").exists(),
        "-o cache-dir= was not used"
    );
    let out = run_timeout(regfs().arg("umount").arg(m.path()), Duration::from_secs(30));
    assert!(out.status.success());
    finish_raw(m);

    // regfs umount of something not mounted: non-zero, one line
    let d = tmpdir();
    let out = run_unchecked_timeout(regfs().arg("umount").arg(d.path()), Duration::from_secs(30));
    assert_one_line_error(&out, "umount of a folder that is not mounted");
}

// ====================================================================
// the cache: its bound, and two mounts sharing it
// ====================================================================

#[test]
fn cache_size_bound_evicts_least_recently_used() {
    let reg = Registry::start();
    let w = tmpdir();
    for (name, seed) in [("a.bin", 1), ("b.bin", 2), ("c.bin", 3)] {
        make_random_file(w.path().join(name), 600 * 1024, seed);
    }
    oras_push(
        &reg.host(),
        "ev/x:v1",
        &["a.bin", "b.bin", "c.bin"],
        w.path(),
    );
    let cache = tmpdir();
    // Room for two 600 KiB blobs, not three.
    let args = ["--timeout", "5", "--cache-size", "1300K"];
    let m = Mount::with_cache(&reg.host(), cache.path(), &args);
    let blobs = |names: &[&str]| -> Vec<bool> {
        names
            .iter()
            .map(|n| {
                let d = sha256_file(w.path().join(n));
                cache.path().join("blobs/sha256").join(hex(&d)).exists()
            })
            .collect()
    };
    for n in ["a.bin", "b.bin", "c.bin"] {
        let got = fs::read(m.join("ev/x/v1").join(n)).unwrap();
        assert_eq!(got, fs::read(w.path().join(n)).unwrap(), "{n}");
        // Distinct use times for the LRU order (mtime has 1 s resolution on some filesystems).
        thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(
        blobs(&["a.bin", "b.bin", "c.bin"]),
        [false, true, true],
        "the oldest blob goes"
    );
    // Read again (from the registry) after eviction: still right.
    assert_eq!(
        fs::read(m.join("ev/x/v1/a.bin")).unwrap(),
        fs::read(w.path().join("a.bin")).unwrap()
    );
    let total: u64 = fs::read_dir(cache.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(total <= 1300 * 1024, "cache holds {total} bytes");
    finish(m);
}

#[test]
fn two_mounts_sharing_a_cache_read_one_blob_concurrently() {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("big.bin"), 24 << 20, 7);
    oras_push(&reg.host(), "share/x:v1", &["big.bin"], w.path());
    let want = sha256_file(w.path().join("big.bin"));
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let cache = tmpdir();
    let m1 = Mount::with_cache(&proxy.host(), cache.path(), MOUNT_ARGS);
    let m2 = Mount::with_cache(&proxy.host(), cache.path(), MOUNT_ARGS);
    let readers: Vec<_> = [m1.join("share/x/v1/big.bin"), m2.join("share/x/v1/big.bin")]
        .into_iter()
        .flat_map(|p| [p.clone(), p])
        .map(|p| thread::spawn(move || sha256_bytes(&fs::read(p).unwrap())))
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), want);
    }
    let cached = cache.path().join("blobs/sha256").join(hex(&want));
    assert_eq!(
        sha256_file(&cached),
        want,
        "the shared cache holds the verified blob"
    );
    // Each mount downloads at most once (the second may find it cached).
    assert!(proxy.blob_gets() <= 2, "blob GETs: {}", proxy.blob_gets());
    let leftovers: Vec<_> = fs::read_dir(cache.path().join("partial/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial downloads left: {leftovers:?}"
    );
    finish(m1);
    finish(m2);
}

// ====================================================================
// listings longer than one page
// ====================================================================

#[test]
fn catalog_listings_follow_link_pages() {
    // regfs asks for 1000 repositories a page; 1001 need a second page,
    // which the registry announces with a Link header. (distribution 2.8
    // pages the catalog but not tags/list, so the catalog carries this test;
    // both go through the same pager.)
    let reg = Registry::start();
    let w = tmpdir();
    write_file(w.path(), "p.txt", "paged\n");
    oras_push(&reg.host(), "pg/r0000:v1", &["p.txt"], w.path());
    let m0 = fetch_manifest(&reg.host(), "pg/r0000", "v1");
    let blobs: Vec<String> = std::iter::once(&m0.json["config"])
        .chain(m0.json["layers"].as_array().unwrap().iter())
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (host, bytes, media_type, blobs) = (
                reg.host(),
                m0.bytes.clone(),
                m0.media_type.clone(),
                blobs.clone(),
            );
            thread::spawn(move || {
                for i in (1..=1000).filter(|i| i % 4 == k) {
                    let repo = format!("pg/r{i:04}");
                    for d in &blobs {
                        let path = format!("/v2/{repo}/blobs/uploads/?mount={d}&from=pg/r0000");
                        let r = http_request(&host, "POST", &path, &[], b"").unwrap();
                        assert_eq!(r.status, 201, "mount {d} into {repo}: {}", r.text());
                    }
                    let path = format!("/v2/{repo}/manifests/v1");
                    let r = http_request(
                        &host,
                        "PUT",
                        &path,
                        &[("Content-Type", media_type.as_str())],
                        &bytes,
                    )
                    .unwrap();
                    assert_eq!(r.status, 201, "PUT {repo}: {}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let first = reg.request("GET", "/v2/_catalog?n=1000", &[], &[]);
    assert!(
        first.header("link").is_some(),
        "the registry must page this listing"
    );
    let m = mount(&reg.host());
    let repos = ls(&m.join("pg"));
    assert_eq!(
        repos.len(),
        1001,
        "first {:?} last {:?}",
        repos.first(),
        repos.last()
    );
    assert_eq!(repos[1000], "r1000");
    assert_eq!(read(&m.join("pg/r1000/v1/p.txt")), b"paged\n");
    finish(m);
}
