//! No byte a reader gets with success ever differs from the blob.
//!
//! `--verify lazy` serves bytes before the whole blob is checked; a transfer
//! that fails verification must not leave those bytes anywhere a later
//! reader can get them with success: not in the cache, and not in the
//! kernel's page cache (regression: the second `cat` of a corrupted lazy
//! read exited 0 with the corrupted bytes). Nor may bytes changed in the
//! cache after they were verified be served (regression: a flipped byte in
//! `blobs/sha256/` was served after a remount); `regfs verify` finds them.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;
use crate::tmpdir;

/// Read `path` whole: the bytes, or the error and how many bytes came first.
fn read_all(path: &Path) -> Result<Vec<u8>, (std::io::Error, usize)> {
    let mut f = fs::File::open(path).map_err(|e| (e, 0))?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, out.len())),
        }
    }
}

#[test]
fn a_lazy_read_after_a_corrupted_transfer_never_succeeds_with_wrong_bytes() {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("model.bin"), 24 * 1024 * 1024, 401);
    oras_push(&reg.host(), "v:v1", &["model.bin"], w.path());
    let data = fs::read(w.path().join("model.bin")).unwrap();
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = Mount::new(&proxy.host(), &["--timeout", "5", "--verify", "lazy"]);
    let file = m.join("v/v1/model.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), data.len() as u64);

    for round in 0..3 {
        proxy.set_mode(Mode::CorruptBlobs);
        match read_all(&file) {
            Ok(got) => panic!(
                "round {round}: a corrupted transfer read with success ({} bytes, equal: {})",
                got.len(),
                got == data
            ),
            Err((e, got)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "round {round}: {e}");
                assert!(got < data.len(), "round {round}");
            }
        }
        proxy.set_mode(Mode::Pass);
        // A new reader of the same file in the same mount: either the right
        // bytes, or an error; never other bytes with success.
        let again = read_all(&file).unwrap_or_else(|(e, n)| {
            panic!("round {round}: read after recovery failed after {n} bytes: {e}")
        });
        assert_eq!(again.len(), data.len(), "round {round}");
        let differing = again.iter().zip(&data).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "round {round}: bytes differ from the blob");
        // Start the next round uncached: drop the verified copy (no reader
        // holds it) and the kernel's pages.
        drop_cached(m.cache_dir(), &sha256_bytes(&data));
        // SAFETY-free: writes to a procfs knob.
        let _ = fs::write("/proc/sys/vm/drop_caches", "1");
    }
    finish(m);
}

fn drop_cached(cache_dir: &Path, digest: &str) {
    let hex = digest.trim_start_matches("sha256:");
    let _ = fs::remove_file(cache_dir.join("blobs/sha256").join(hex));
}

// ---- a tampered cache (issue 11, item 7) ----

/// Flips the byte at `at` of `path` in place, then puts its mtime back, as
/// a careful tamperer (or a disk) would: only the ctime tells.
fn flip_byte_keeping_mtime(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[!b[0]], at).unwrap();
    f.set_modified(mtime).unwrap();
}

/// Replaces `path` by a file of the same size with other bytes (a new
/// inode), mtime copied from the original.
fn replace_same_size(path: &Path) {
    let old = fs::read(path).unwrap();
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let tmp = path.with_extension("swap");
    let forged: Vec<u8> = old.iter().map(|b| b.wrapping_add(1)).collect();
    fs::write(&tmp, forged).unwrap();
    fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A registry holding `t/x:v1` with a 2 MiB file and a small one, and a
/// cache warmed by reading both through a proxy (which counts blob GETs).
struct Warm {
    _reg: Registry,
    proxy: FaultProxy,
    _dir: tempfile::TempDir,
    cache: std::path::PathBuf,
    big: Vec<u8>,
    small: Vec<u8>,
    manifest: String,
}

const WARM_ARGS: &[&str] = &["--timeout", "5"];

fn warm_cache() -> Warm {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("big.bin"), 2 << 20, 701);
    write_file(w.path(), "small.txt", "small, cached, verified\n");
    let manifest = oras_push(&reg.host(), "t/x:v1", &["big.bin", "small.txt"], w.path());
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let dir = tmpdir();
    // A cache folder regfs creates itself.
    let cache = dir.path().join("cache");
    let big = fs::read(w.path().join("big.bin")).unwrap();
    let small = fs::read(w.path().join("small.txt")).unwrap();
    let m = Mount::with_cache(&proxy.host(), &cache, WARM_ARGS);
    assert_eq!(fs::read(m.join("t/x/v1/big.bin")).unwrap(), big);
    assert_eq!(fs::read(m.join("t/x/v1/small.txt")).unwrap(), small);
    finish(m);
    Warm {
        _reg: reg,
        proxy,
        _dir: dir,
        cache,
        big,
        small,
        manifest,
    }
}

impl Warm {
    fn blob(&self, bytes: &[u8]) -> std::path::PathBuf {
        self.cache
            .join("blobs/sha256")
            .join(hex(&sha256_bytes(bytes)))
    }

    fn gets_of(&self, bytes: &[u8]) -> usize {
        let d = sha256_bytes(bytes);
        self.proxy
            .log()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{d}")))
            .count()
    }
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// Regression: one flipped byte in a verified blob of the cache was served
/// after a remount, exit 0. A cached blob whose file changed since it was
/// verified is hashed again at open; one that no longer matches is dropped
/// and fetched again.
#[test]
fn a_tampered_cached_blob_is_fetched_again_never_served() {
    let w = warm_cache();
    assert_eq!(w.gets_of(&w.big), 1);
    assert_eq!(w.gets_of(&w.small), 1);
    flip_byte_keeping_mtime(&w.blob(&w.big), (w.big.len() / 2) as u64);
    replace_same_size(&w.blob(&w.small));
    assert_ne!(fs::read(w.blob(&w.big)).unwrap(), w.big, "the flip took");

    let m = Mount::with_cache(&w.proxy.host(), &w.cache, WARM_ARGS);
    let big = fs::read(m.join("t/x/v1/big.bin")).unwrap();
    assert_eq!(
        differing(&big, &w.big),
        0,
        "bytes of the tampered cache were served"
    );
    let small = fs::read(m.join("t/x/v1/small.txt")).unwrap();
    assert_eq!(small, w.small, "a replaced cache file was served");
    assert_eq!(w.gets_of(&w.big), 2, "fetched again");
    assert_eq!(w.gets_of(&w.small), 2, "fetched again");
    // The cache holds the right bytes again, and the log says what happened.
    assert_eq!(fs::read(w.blob(&w.big)).unwrap(), w.big);
    let log = fs::read_to_string(w.cache.join("regfs.log")).unwrap_or_default();
    assert!(
        log.contains(hex(&sha256_bytes(&w.big))) && log.contains("changed on disk"),
        "the log does not name the tampered blob:\n{log}"
    );
    // A blob that was only read again (not changed) is not fetched again.
    finish(m);
    let m = Mount::with_cache(&w.proxy.host(), &w.cache, WARM_ARGS);
    assert_eq!(fs::read(m.join("t/x/v1/big.bin")).unwrap(), w.big);
    assert_eq!(w.gets_of(&w.big), 2, "an unchanged cached blob was fetched");
    finish(m);
    // The cache and the staging area are private to the user who mounted.
    for p in [w.cache.clone(), w.cache.join("staging")] {
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "mode of {}: {mode:o}", p.display());
    }
}

/// `regfs verify` hashes the cache again: bit rot that left the file's
/// identity alone is found there (a mount trusts an unchanged file).
#[test]
fn regfs_verify_reports_damaged_cache_files_and_repair_drops_them() {
    let w = warm_cache();
    let cache = w.cache.to_str().unwrap();
    let clean = run(regfs().args(["verify", "--cache-dir", cache]));
    let out = String::from_utf8_lossy(&clean.stdout);
    assert!(out.contains("0 damaged"), "{out}");

    flip_byte_keeping_mtime(&w.blob(&w.big), 7);
    let manifest = w.cache.join("manifests/sha256").join(hex(&w.manifest));
    assert!(manifest.is_file(), "the manifest is cached");
    flip_byte_keeping_mtime(&manifest, 3);

    let mut cmd = regfs();
    cmd.args(["verify", "--cache-dir", cache]);
    let found = run_unchecked(&mut cmd);
    let report = crate::support::cmd::describe(&cmd, &found);
    assert_eq!(found.status.code(), Some(1), "{report}");
    let out = String::from_utf8_lossy(&found.stdout);
    let damaged: Vec<&str> = out.lines().filter(|l| l.starts_with("damaged")).collect();
    assert_eq!(damaged.len(), 2, "{report}");
    assert!(
        out.contains(&format!("blob {}", sha256_bytes(&w.big))),
        "{report}"
    );
    assert!(
        out.contains(&format!("manifest {}", w.manifest)),
        "{report}"
    );
    assert!(!out.contains(&sha256_bytes(&w.small)), "{report}");
    let err = String::from_utf8_lossy(&found.stderr);
    assert_eq!(err.lines().count(), 1, "{report}");
    assert!(
        err.starts_with("regfs: ") && err.contains("--repair"),
        "{report}"
    );
    assert!(
        w.blob(&w.big).exists(),
        "verify without --repair changes nothing"
    );

    let repaired = run(regfs().args(["verify", "--repair", "--cache-dir", cache]));
    let out = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("dropped")).count(),
        2,
        "{out}"
    );
    assert!(!w.blob(&w.big).exists() && !manifest.exists());
    assert_eq!(
        fs::read(w.blob(&w.small)).unwrap(),
        w.small,
        "the good blob stays"
    );
    let again = run(regfs().args(["verify", "--cache-dir", cache]));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 damaged"));

    // A mount reads the dropped ones from the registry again.
    let m = Mount::with_cache(&w.proxy.host(), &w.cache, WARM_ARGS);
    assert_eq!(fs::read(m.join("t/x/v1/big.bin")).unwrap(), w.big);
    assert_eq!(w.gets_of(&w.big), 2);
    finish(m);

    // No cache there: said in one line.
    let missing = w.cache.join("nothing-here");
    let mut cmd = regfs();
    cmd.arg("verify").arg("--cache-dir").arg(&missing);
    let out = run_unchecked(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        crate::support::cmd::describe(&cmd, &out)
    );
}
