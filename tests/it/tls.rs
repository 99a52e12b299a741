//! HTTPS (issue 14): docker-registry serving TLS on loopback with a
//! certificate from a CA each test makes (tests/support/tls.rs). Reads
//! (strict and lazy), commits in a mount and with `--to`, `--insecure`,
//! Basic auth, and the one-line refusals: a CA regfs was not told of, a
//! certificate for another name, plain HTTP to a TLS port and HTTPS to a
//! plain one. The ORAS CLI (`--ca-file`) pushes the fixtures and pulls
//! what regfs committed.
//!
//! Which scheme regfs speaks is the rule of src/registry/transport.rs:
//! `--ca-file`, `--insecure`, `--https` and `--plain-http=false` mean
//! HTTPS; with none of them a loopback registry is tried over HTTPS first.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::tmpdir;

/// Options of the test mounts: failures show up in seconds, not minutes.
const MOUNT_ARGS: &[&str] = &["--timeout", "5"];
/// A blob this large is read by Range on demand with `--verify lazy`.
const LAZY_SIZE: u64 = 20 << 20;
/// A refusal comes at once: no retries of a certificate problem.
const REFUSAL_BOUND: Duration = Duration::from_secs(20);

// ====================================================================
// helpers
// ====================================================================

/// The first `n` bytes of `p`.
fn read_head(p: &Path, n: usize) -> Vec<u8> {
    let q = p.to_path_buf();
    bounded(&format!("head -c {n} {}", p.display()), OP, move || {
        let mut v = vec![0u8; n];
        fs::File::open(&q)?.read_exact(&mut v)?;
        Ok::<_, std::io::Error>(v)
    })
    .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A TLS registry with `hello.txt` and a `LAZY_SIZE` random `big.bin`
/// pushed as `demo/app:v1` by the ORAS CLI over HTTPS; (CA, registry,
/// the pushed files' folder).
fn tls_registry_with_artifact() -> (TestCa, Registry, tempfile::TempDir) {
    let ca = TestCa::new();
    let reg = Registry::start_tls(&ca.loopback_cert());
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello over TLS\n");
    make_random_file(w.path().join("big.bin"), LAZY_SIZE, 14);
    let r = format!("{}/demo/app:v1", reg.host());
    oras_in(
        w.path(),
        &[
            "push",
            "--ca-file",
            s(&ca.ca_file()),
            &r,
            "hello.txt",
            "big.bin",
        ],
    );
    (ca, reg, w)
}

/// `oras pull --ca-file CA REF` into a new folder.
fn oras_pull_tls(ca: &TestCa, reference: &str, extra: &[&str]) -> tempfile::TempDir {
    let out = tmpdir();
    let ca_file = ca.ca_file();
    let mut args = vec![
        "pull",
        "--ca-file",
        s(&ca_file),
        reference,
        "-o",
        s(out.path()),
    ];
    args.extend_from_slice(extra);
    oras(&args);
    out
}

/// `regfs mount` that must fail: its output.
fn refused_mount(source: &str, extra: &[&str]) -> Output {
    let cache = tmpdir();
    let mut args = MOUNT_ARGS.to_vec();
    args.extend_from_slice(extra);
    match Mount::try_with_cache(source, cache.path(), &args) {
        Ok(m) => {
            finish(m);
            panic!("regfs mount {source} {extra:?} succeeded")
        }
        Err(f) => f.output,
    }
}

fn assert_says(line: &str, wants: &[&str]) {
    for w in wants {
        assert!(line.contains(w), "{line:?} does not say {w:?}");
    }
}

/// `regfs commit ARGS...` with `envs`, whatever its exit status.
fn commit_out(args: &[&str], envs: &[(&str, &Path)]) -> (Command, Output) {
    let mut c = regfs();
    c.arg("commit").args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = run_unchecked_timeout(&mut c, Duration::from_secs(180));
    (c, out)
}

/// `regfs commit ARGS...`, which must succeed; the digest it printed.
fn commit(args: &[&str], envs: &[(&str, &Path)]) -> String {
    let (c, out) = commit_out(args, envs);
    assert!(
        out.status.success(),
        "regfs commit failed\n{}",
        crate::support::cmd::describe(&c, &out)
    );
    oras_digest(&String::from_utf8_lossy(&out.stdout))
}

/// A docker config folder whose `auths` hold `user:pass` for `host`.
fn docker_config(host: &str, user: &str, pass: &str) -> tempfile::TempDir {
    let d = tmpdir();
    let auth = crate::support::http::base64(format!("{user}:{pass}").as_bytes());
    write_file(
        d.path(),
        "config.json",
        json!({"auths": {host: {"auth": auth}}}).to_string(),
    );
    d
}

// ====================================================================
// reading and writing over HTTPS
// ====================================================================

/// Regression (issue 14): `--ca-file` on a loopback registry spoke plain
/// HTTP (`registry answered HTTP 400`). Strict and lazy reads over HTTPS,
/// by flag and by `-o`.
#[test]
fn reads_over_https_with_ca_file_strict_and_lazy() {
    let (ca, reg, w) = tls_registry_with_artifact();
    let host = reg.host();
    let big = fs::read(w.path().join("big.bin")).unwrap();

    let mut args = MOUNT_ARGS.to_vec();
    let ca_file = ca.ca_file();
    args.extend(["--ca-file", s(&ca_file)]);
    let m = Mount::new(&host, &args);
    assert_eq!(
        ls(&m.join("demo/app/v1")),
        [
            "big.bin",
            "blobs",
            "hello.txt",
            "manifest.json",
            "referrers"
        ]
    );
    assert_eq!(read(&m.join("demo/app/v1/hello.txt")), b"hello over TLS\n");
    assert_eq!(
        sha256_bytes(&read(&m.join("demo/app/v1/big.bin"))),
        sha256_bytes(&big)
    );
    finish(m);

    // --verify lazy, everything through -o: a random read first (Range),
    // then the whole blob, verified at its end.
    let opts = format!("ca-file={},verify=lazy,timeout=5", ca_file.display());
    let m = Mount::new(&host, &["-o", &opts]);
    let f = m.join("demo/app/v1/big.bin");
    assert_eq!(read_head(&f, 4096), big[..4096]);
    assert_eq!(sha256_bytes(&read(&f)), sha256_bytes(&big));
    finish(m);
}

/// Write through a mount over HTTPS, `regfs commit`, and `oras pull`
/// over HTTPS gives the files back.
#[test]
fn commit_in_a_mount_over_https() {
    let (ca, reg, _w) = tls_registry_with_artifact();
    let ca_file = ca.ca_file();
    let mut args = MOUNT_ARGS.to_vec();
    args.extend(["--ca-file", s(&ca_file)]);
    let m = Mount::new(&reg.host(), &args);
    let tag = m.join("demo/app/v2");
    bounded("mkdir", OP, {
        let tag = tag.clone();
        move || fs::create_dir(&tag)
    })
    .unwrap();
    bounded("write", OP, {
        let tag = tag.clone();
        move || fs::write(tag.join("notes.md"), "# committed over TLS\n")
    })
    .unwrap();
    let d = commit(&[s(&tag)], &[]);
    assert!(d.starts_with("sha256:"), "{d}");
    finish(m);
    let out = oras_pull_tls(&ca, &format!("{}/demo/app:v2", reg.host()), &[]);
    assert_eq!(
        fs::read(out.path().join("notes.md")).unwrap(),
        b"# committed over TLS\n"
    );
}

/// `commit --to` over HTTPS with `--ca-file`; without it the CA is
/// unknown and the commit is refused in one line naming the certificate
/// problem, with nothing pushed.
#[test]
fn commit_to_over_https() {
    let ca = TestCa::new();
    let reg = Registry::start_tls(&ca.loopback_cert());
    let dir = tmpdir();
    write_file(dir.path(), "model.bin", "weights\n");
    let target = format!("{}/carried/app:v1", reg.host());

    let (_, out) = commit_out(&[s(dir.path()), "--to", &target], &[]);
    let line = assert_one_line_error(&out, "commit --to with an unknown CA");
    assert_says(&line, &["UnknownIssuer", "--ca-file", &reg.host()]);

    let ca_file = ca.ca_file();
    let d = commit(
        &[s(dir.path()), "--to", &target, "--ca-file", s(&ca_file)],
        &[],
    );
    let out = oras_pull_tls(&ca, &target, &[]);
    assert_eq!(
        fs::read(out.path().join("model.bin")).unwrap(),
        b"weights\n"
    );
    let fetched = oras(&[
        "manifest",
        "fetch",
        "--ca-file",
        s(&ca_file),
        "--descriptor",
        &target,
    ]);
    assert!(fetched.contains(&d), "{fetched} does not name {d}");
}

/// `--insecure` reads from a registry whose CA regfs does not know.
#[test]
fn insecure_accepts_a_certificate_from_an_unknown_ca() {
    let (_ca, reg, _w) = tls_registry_with_artifact();
    let mut args = MOUNT_ARGS.to_vec();
    args.push("--insecure");
    let m = Mount::new(&reg.host(), &args);
    assert_eq!(read(&m.join("demo/app/v1/hello.txt")), b"hello over TLS\n");
    finish(m);
}

/// HTTP Basic auth over TLS: credentials from the docker config reach the
/// registry inside TLS; a wrong password is refused in one line.
#[test]
fn basic_auth_over_https() {
    let (user, pass) = ("alice", "s3cret-Pa55");
    let ca = TestCa::new();
    let reg = Registry::start_tls_with_basic_auth(&ca.loopback_cert(), user, pass);
    let host = reg.host();
    let ca_file = ca.ca_file();
    let w = tmpdir();
    write_file(w.path(), "secret.txt", "top secret\n");
    oras_in(
        w.path(),
        &[
            "push",
            "--ca-file",
            s(&ca_file),
            "-u",
            user,
            "-p",
            pass,
            &format!("{host}/priv:v1"),
            "secret.txt",
        ],
    );
    let home = tmpdir();
    let good = docker_config(&host, user, pass);
    let mut args = MOUNT_ARGS.to_vec();
    args.extend(["--ca-file", s(&ca_file)]);
    let envs = [("DOCKER_CONFIG", good.path()), ("HOME", home.path())];
    let m = Mount::try_with_env(&host, &args, &envs)
        .unwrap_or_else(|f| panic!("mount with credentials over TLS failed\n{}", f.report));
    assert_eq!(ls(m.path()), ["priv"]);
    assert_eq!(read(&m.join("priv/v1/secret.txt")), b"top secret\n");
    finish(m);

    let wrong = docker_config(&host, user, "nope-not-it");
    let envs = [("DOCKER_CONFIG", wrong.path()), ("HOME", home.path())];
    let out = match Mount::try_with_env(&host, &args, &envs) {
        Ok(m) => {
            finish(m);
            panic!("a mount with a wrong password over TLS succeeded")
        }
        Err(f) => f.output,
    };
    let line = assert_one_line_error(&out, "wrong password over TLS");
    assert_says(&line, &[&host, "refused"]);
}

// ====================================================================
// refusals, in one line
// ====================================================================

/// Without `--ca-file` or `--insecure`, a loopback registry is tried over
/// HTTPS and its certificate verified: a CA regfs does not know fails
/// the mount in one line naming the problem and the fix, at once. So
/// does `--https`.
#[test]
fn a_certificate_from_an_unknown_ca_refuses_the_mount_in_one_line() {
    let ca = TestCa::new();
    let reg = Registry::start_tls(&ca.loopback_cert());
    for extra in [&[][..], &["--https"], &["--plain-http=false"]] {
        let t = Instant::now();
        let out = refused_mount(&reg.host(), extra);
        let line = assert_one_line_error(&out, "unknown CA");
        eprintln!("unknown CA {extra:?}: {line}");
        assert_says(
            &line,
            &[
                &reg.host(),
                "certificate",
                "UnknownIssuer",
                "--ca-file",
                "--insecure",
            ],
        );
        assert!(t.elapsed() < REFUSAL_BOUND, "{:?}", t.elapsed());
    }
}

/// A certificate signed by the CA given, but for another name, is refused.
#[test]
fn a_certificate_for_another_name_is_refused() {
    let ca = TestCa::new();
    let reg = Registry::start_tls(&ca.issue("wrong", "DNS:registry.example"));
    let ca_file = ca.ca_file();
    let out = refused_mount(&reg.host(), &["--ca-file", s(&ca_file)]);
    let line = assert_one_line_error(&out, "certificate for another name");
    eprintln!("wrong name: {line}");
    assert_says(
        &line,
        &[
            &reg.host(),
            "certificate",
            "not valid for name",
            "127.0.0.1",
        ],
    );
}

/// Regression (issue 14): `--plain-http` to a TLS port failed with
/// `registry answered HTTP 400`. The line now says the port speaks HTTPS.
#[test]
fn plain_http_to_an_https_registry_says_to_use_https() {
    let ca = TestCa::new();
    let reg = Registry::start_tls(&ca.loopback_cert());
    let out = refused_mount(&reg.host(), &["--plain-http"]);
    let line = assert_one_line_error(&out, "plain HTTP to a TLS port");
    eprintln!("plain HTTP to TLS: {line}");
    assert_says(&line, &[&reg.host(), "speaks HTTPS", "drop --plain-http"]);
}

/// A plain-HTTP registry on loopback is reached with no flags (HTTPS is
/// tried first, and the port answers the handshake in plain HTTP); with
/// `--https` the mount is refused in one line saying to pass
/// `--plain-http`.
#[test]
fn a_plain_registry_on_loopback_needs_no_flags_and_refuses_https() {
    let reg = Registry::start();
    let w = tmpdir();
    write_file(w.path(), "hello.txt", "hello plain\n");
    oras_in(
        w.path(),
        &[
            "push",
            "--plain-http",
            &format!("{}/demo/plain:v1", reg.host()),
            "hello.txt",
        ],
    );
    let m = Mount::new(&reg.host(), MOUNT_ARGS);
    assert_eq!(read(&m.join("demo/plain/v1/hello.txt")), b"hello plain\n");
    finish(m);
    for extra in [&["--https"][..], &["-o", "https"]] {
        let out = refused_mount(&reg.host(), extra);
        let line = assert_one_line_error(&out, "HTTPS to a plain port");
        eprintln!("HTTPS to plain {extra:?}: {line}");
        assert_says(&line, &[&reg.host(), "does not speak TLS", "--plain-http"]);
    }
}
