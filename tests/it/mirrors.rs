//! Mirrors and pull-through caches (`--mirror`, registries.conf): reads
//! go through a real `docker-registry` in proxy mode in front of the
//! origin, fall back to the origin when the cache stops or lies, and
//! pushes go to the origin. A fault proxy in front of each registry counts
//! what regfs asked of it.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tmpdir;

const ARGS: &[&str] = &["--timeout", "5"];

/// GETs of `/blobs/<digest>` the proxy saw.
fn blob_gets_of(p: &FaultProxy, digest: &str) -> usize {
    p.log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
        .count()
}

/// Requests (GET or HEAD) for the manifest of `repo:tag`, by tag.
fn tag_requests_of(p: &FaultProxy, repo: &str, tag: &str) -> usize {
    p.log()
        .iter()
        .filter(|r| r.path == format!("/v2/{repo}/manifests/{tag}"))
        .count()
}

fn log_of(m: &Mount) -> String {
    fs::read_to_string(m.cache_dir().join("regfs.log")).unwrap_or_default()
}

fn read(m: &Mount, rel: &str) -> Vec<u8> {
    let p = m.join(rel);
    bounded(&format!("read {rel}"), Duration::from_secs(60), move || {
        fs::read(&p)
    })
    .unwrap_or_else(|e| panic!("read {rel}: {e}\nregfs log:\n{}", log_of(m)))
}

/// A registry with `app:v1` (a.bin) and `app:v2` (b.bin), each `size`
/// random bytes; returns the workdir and the two files' digests.
fn origin_with_two_tags(origin: &Registry, size: u64) -> (tempfile::TempDir, String, String) {
    let w = tmpdir();
    make_random_file(w.path().join("a.bin"), size, 11);
    make_random_file(w.path().join("b.bin"), size, 12);
    oras_push(&origin.host(), "app:v1", &["a.bin"], w.path());
    oras_push(&origin.host(), "app:v2", &["b.bin"], w.path());
    let a = sha256_file(w.path().join("a.bin"));
    let b = sha256_file(w.path().join("b.bin"));
    (w, a, b)
}

/// Where distribution's filesystem storage keeps a blob.
fn stored_blob(reg: &Registry, digest: &str) -> std::path::PathBuf {
    let h = hex(digest);
    reg.storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&h[..2])
        .join(h)
        .join("data")
}

#[test]
fn reads_go_through_a_pull_through_cache_and_fall_back_to_the_origin_when_it_stops() {
    let origin = Registry::start();
    let (w, a, b) = origin_with_two_tags(&origin, 300 * 1024);
    let at_origin = FaultProxy::start(&origin.host(), Mode::Pass);
    let mut cache = Registry::start_proxy(&origin.url());
    let at_cache = FaultProxy::start(&cache.host(), Mode::Pass);
    let mut args = ARGS.to_vec();
    let mirror = at_cache.host();
    args.extend(["--mirror", &mirror]);
    let m = Mount::new(&at_origin.host(), &args);

    assert_eq!(
        read(&m, "app/v1/a.bin"),
        fs::read(w.path().join("a.bin")).unwrap()
    );
    assert_eq!(blob_gets_of(&at_cache, &a), 1, "{:#?}", at_cache.log());
    assert_eq!(blob_gets_of(&at_origin, &a), 0, "{:#?}", at_origin.log());
    // Tags too (pull-from-mirror = all, as podman's default).
    assert!(
        tag_requests_of(&at_cache, "app", "v1") >= 1,
        "{:#?}",
        at_cache.log()
    );
    // (It stores what it fetched once it has sent it.)
    wait_until(Duration::from_secs(10), "the cache keeps the blob", || {
        stored_blob(&cache, &a).exists()
    });
    // Listings come from the origin only.
    assert_eq!(ls(&m.join("app")), vec!["v1", "v2"]);
    assert!(
        !at_cache.log().iter().any(|r| r.path.contains("/tags/list")),
        "{:#?}",
        at_cache.log()
    );

    // The cache stops: reads go to the origin, and soon.
    cache.stop();
    let t = Instant::now();
    assert_eq!(
        read(&m, "app/v2/b.bin"),
        fs::read(w.path().join("b.bin")).unwrap()
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(blob_gets_of(&at_origin, &b), 1, "{:#?}", at_origin.log());
    assert!(log_of(&m).contains(&mirror), "{}", log_of(&m));
    finish(m);
}

#[test]
fn a_corrupting_mirror_is_caught_and_the_origin_serves() {
    let origin = Registry::start();
    let (w, a, b) = origin_with_two_tags(&origin, 300 * 1024);
    let at_origin = FaultProxy::start(&origin.host(), Mode::Pass);
    // A mirror with the same content that flips a byte of every blob.
    let liar = FaultProxy::start(&origin.host(), Mode::CorruptBlobs);
    let mut args = ARGS.to_vec();
    let mirror = liar.host();
    args.extend(["--mirror", &mirror]);
    let m = Mount::new(&at_origin.host(), &args);

    assert_eq!(
        read(&m, "app/v1/a.bin"),
        fs::read(w.path().join("a.bin")).unwrap()
    );
    assert_eq!(blob_gets_of(&liar, &a), 1, "{:#?}", liar.log());
    assert_eq!(blob_gets_of(&at_origin, &a), 1, "{:#?}", at_origin.log());
    let cached = m.cache_dir().join("blobs/sha256").join(hex(&a));
    assert_eq!(sha256_file(&cached), a);
    // That blob is the origin's from now on; the next one tries the mirror first.
    assert_eq!(
        read(&m, "app/v2/b.bin"),
        fs::read(w.path().join("b.bin")).unwrap()
    );
    assert_eq!(blob_gets_of(&liar, &b), 1);
    assert_eq!(blob_gets_of(&at_origin, &b), 1);
    // Nothing wrong was kept.
    run(regfs().arg("verify").arg("--cache-dir").arg(m.cache_dir()));
    finish(m);
}

#[test]
fn a_lazy_read_given_a_mirrors_wrong_bytes_fails_once_then_the_origin_serves() {
    let origin = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("big.bin"), 20 << 20, 13);
    oras_push(&origin.host(), "big:v1", &["big.bin"], w.path());
    let digest = sha256_file(w.path().join("big.bin"));
    let liar = FaultProxy::start(&origin.host(), Mode::CorruptBlobs);
    let mut args = ARGS.to_vec();
    let mirror = liar.host();
    args.extend(["--verify", "lazy", "--mirror", &mirror]);
    let m = Mount::new(&origin.host(), &args);
    // Bytes before the end went out unchecked: the end must fail (EIO)...
    let p = m.join("big/v1/big.bin");
    match bounded("read big.bin", Duration::from_secs(60), move || {
        fs::read(&p)
    }) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(5), "{e}"),
        Ok(b) => panic!(
            "read {} bytes (sha256 {}, want {digest})\nregfs log:\n{}",
            b.len(),
            sha256_bytes(&b),
            log_of(&m)
        ),
    }
    // ...and the next read gets the origin's bytes.
    let got = read(&m, "big/v1/big.bin");
    assert_eq!(sha256_bytes(&got), digest);
    assert!(blob_gets_of(&liar, &digest) >= 1);
    finish(m);
}

fn write_conf(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("registries.conf");
    fs::write(&p, text).unwrap();
    p
}

#[test]
fn mirrors_come_from_registries_conf_and_digest_only_keeps_tags_at_the_origin() {
    let origin = Registry::start();
    let (w, a, _) = origin_with_two_tags(&origin, 100 * 1024);
    let at_origin = FaultProxy::start(&origin.host(), Mode::Pass);
    let at_mirror = FaultProxy::start(&origin.host(), Mode::Pass);
    let home = tmpdir();
    let conf = write_conf(
        home.path(),
        &format!(
            "unqualified-search-registries = [\"docker.io\"]\n\n\
             [[registry]]\nlocation = \"{}\"\nmirror-by-digest-only = true\n\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            at_origin.host(),
            at_mirror.host()
        ),
    );
    let envs = [
        ("CONTAINERS_REGISTRIES_CONF", conf.as_path()),
        ("HOME", home.path()),
    ];
    let m = Mount::try_with_env(&at_origin.host(), ARGS, &envs)
        .unwrap_or_else(|f| panic!("{}", f.report));
    assert_eq!(
        read(&m, "app/v1/a.bin"),
        fs::read(w.path().join("a.bin")).unwrap()
    );
    assert_eq!(blob_gets_of(&at_mirror, &a), 1, "{:#?}", at_mirror.log());
    assert_eq!(blob_gets_of(&at_origin, &a), 0);
    assert_eq!(
        tag_requests_of(&at_mirror, "app", "v1"),
        0,
        "{:#?}",
        at_mirror.log()
    );
    assert!(tag_requests_of(&at_origin, "app", "v1") >= 1);
    finish(m);

    // Without mirror-by-digest-only, tags go to the mirror too (the file
    // named by --registries-conf this time).
    let conf = write_conf(
        home.path(),
        &format!(
            "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
            at_origin.host(),
            at_mirror.host()
        ),
    );
    let mut args = ARGS.to_vec();
    let conf_arg = conf.display().to_string();
    args.extend(["--registries-conf", &conf_arg]);
    let m = Mount::try_with_env(&at_origin.host(), &args, &[("HOME", home.path())])
        .unwrap_or_else(|f| panic!("{}", f.report));
    assert_eq!(ls(&m.join("app/v2")).len(), 4, "{}", log_of(&m));
    assert!(
        tag_requests_of(&at_mirror, "app", "v2") >= 1,
        "{:#?}",
        at_mirror.log()
    );
    finish(m);

    // A file regfs cannot read fails the mount, naming it.
    let bad = write_conf(home.path(), "[[registry]\nlocation = 1\n");
    let f = match Mount::try_with_env(
        &at_origin.host(),
        ARGS,
        &[("CONTAINERS_REGISTRIES_CONF", &bad)],
    ) {
        Ok(_) => panic!("mounted with a broken registries.conf"),
        Err(f) => f,
    };
    let msg = assert_one_line_error(&f.output, "a broken registries.conf");
    assert!(
        msg.contains("registry mirrors") && msg.contains(&bad.display().to_string()),
        "{msg}"
    );
}

#[test]
fn commit_pushes_to_the_origin_not_the_mirror() {
    let origin = Registry::start();
    let (_w, _, _) = origin_with_two_tags(&origin, 10 * 1024);
    let cache = Registry::start_proxy(&origin.url());
    let at_cache = FaultProxy::start(&cache.host(), Mode::Pass);
    let mut args = ARGS.to_vec();
    let mirror = at_cache.host();
    args.extend(["--mirror", &mirror]);
    let m = Mount::new(&origin.host(), &args);
    fs::create_dir(m.join("app/v9")).unwrap();
    fs::write(m.join("app/v9/notes.txt"), b"pushed past the cache\n").unwrap();
    run_timeout(
        regfs().arg("commit").arg(m.join("app/v9")),
        Duration::from_secs(120),
    );
    assert!(origin.tags("app").contains(&"v9".to_string()));
    let writes: Vec<_> = at_cache
        .log()
        .into_iter()
        .filter(|r| r.method != "GET" && r.method != "HEAD")
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
    assert_eq!(read(&m, "app/v9/notes.txt"), b"pushed past the cache\n");
    finish(m);
}
