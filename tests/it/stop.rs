//! Readers can always be stopped, and a mount can always be ended.
//!
//! A `cat` of an uncached blob waits on a registry that stalls (headers and
//! 64 KiB, then silence) or trickles (about 1 MB/s) behind the fault proxy.
//! A signal to the `cat` must end it within 3 s in both verify modes (the
//! kernel sends FUSE_INTERRUPT and regfs answers the request with EINTR);
//! the mount still answers afterwards, and once the registry recovers the
//! same file reads back whole and right. SIGTERM to the daemon, and
//! `regfs umount`, end the mount within 5 s with a reader in flight.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::cmd::wait_timeout;
use crate::support::mount::is_mountpoint;
use crate::support::*;
use crate::tmpdir;

/// The layer is large enough for `--verify lazy` to read it by Range.
const SIZE: u64 = 24 * 1024 * 1024;
const STALL: Mode = Mode::StallBlobs(64 * 1024);
const TRICKLE: Mode = Mode::SlowBlobs(1024 * 1024);

struct Setup {
    _reg: Registry,
    proxy: FaultProxy,
    _w: tempfile::TempDir,
    digest: String,
}

fn setup(seed: u64) -> Setup {
    let reg = Registry::start();
    let w = tmpdir();
    make_random_file(w.path().join("big.bin"), SIZE, seed);
    oras_push(&reg.host(), "s:v1", &["big.bin"], w.path());
    let digest = sha256_file(w.path().join("big.bin"));
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    Setup {
        _reg: reg,
        proxy,
        _w: w,
        digest,
    }
}

fn regfs_log(cache_dir: &Path) -> String {
    fs::read_to_string(cache_dir.join("regfs.log")).unwrap_or_default()
}

fn blob_gets(proxy: &FaultProxy) -> usize {
    proxy
        .log()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/sha256:"))
        .count()
}

/// `cat FILE > /dev/null` in the background, once the proxy has been asked
/// for the blob (so the read is waiting inside regfs).
fn start_cat(file: &Path, proxy: &FaultProxy) -> Child {
    let before = blob_gets(proxy);
    let child = Command::new("cat")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the blob to be requested", || {
        blob_gets(proxy) > before
    });
    // Let the request settle into its wait.
    thread::sleep(Duration::from_millis(500));
    child
}

fn state_of(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .and_then(|r| r.split(' ').next().map(str::to_string))
        .unwrap_or_else(|| "gone".into())
}

/// Signals `child` and returns how long it took to exit (panics past 10 s).
fn signal_and_time(child: &mut Child, sig: i32) -> Duration {
    let pid = child.id();
    let t = Instant::now();
    // SAFETY: kill with a valid pid of our own child.
    unsafe {
        libc::kill(pid as i32, sig);
    }
    match wait_timeout(child, Duration::from_secs(10)) {
        Some(_) => t.elapsed(),
        None => {
            let st = state_of(pid);
            let _ = child.kill();
            panic!("signal {sig} did not end the reader within 10 s (state {st})");
        }
    }
}

fn check_reader_stops(verify: &str, fault: Mode, sig: i32, seed: u64) {
    let s = setup(seed);
    let m = Mount::new(
        &s.proxy.host(),
        &["--timeout", "3", "--verify", verify, "-v"],
    );
    let file = m.join("s/v1/big.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), SIZE);
    s.proxy.set_mode(fault.clone());
    let mut cat = start_cat(&file, &s.proxy);
    let took = signal_and_time(&mut cat, sig);
    eprintln!("verify {verify}, {fault:?}, signal {sig}: the reader exited after {took:?}");
    assert!(
        took < Duration::from_secs(3),
        "verify {verify}, {fault:?}, signal {sig}: the reader took {took:?} to exit\nlog:\n{}",
        regfs_log(m.cache_dir())
    );
    // The mount still answers.
    let t = Instant::now();
    let names: Vec<String> = fs::read_dir(m.join("s/v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"big.bin".to_string()), "{names:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ls took {:?}",
        t.elapsed()
    );
    // And once the registry recovers, the same file reads back right.
    s.proxy.set_mode(Mode::Pass);
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let sum = String::from_utf8_lossy(&out.stdout);
    assert!(
        sum.starts_with(s.digest.trim_start_matches("sha256:")),
        "read after recovery: {sum}"
    );
    finish(m);
}

#[test]
fn sigint_stops_a_strict_reader_on_a_stalled_registry() {
    check_reader_stops("strict", STALL, libc::SIGINT, 301);
}

#[test]
fn sigterm_stops_a_strict_reader_on_a_trickling_registry() {
    check_reader_stops("strict", TRICKLE, libc::SIGTERM, 302);
}

#[test]
fn sigkill_stops_a_strict_reader_on_a_stalled_registry() {
    check_reader_stops("strict", STALL, libc::SIGKILL, 303);
}

#[test]
fn sigint_stops_a_lazy_reader_on_a_trickling_registry() {
    check_reader_stops("lazy", TRICKLE, libc::SIGINT, 304);
}

#[test]
fn sigterm_stops_a_lazy_reader_on_a_stalled_registry() {
    check_reader_stops("lazy", STALL, libc::SIGTERM, 305);
}

#[test]
fn sigkill_stops_a_lazy_reader_on_a_trickling_registry() {
    check_reader_stops("lazy", TRICKLE, libc::SIGKILL, 306);
}

/// Ends the mount with `how` while a reader waits on a stalled registry:
/// the mount is gone within 5 s, and the reader ends with an error.
fn check_mount_ends(how: &str, seed: u64) {
    let s = setup(seed);
    let mut m = Mount::new(&s.proxy.host(), &["--timeout", "30"]);
    let file = m.join("s/v1/big.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), SIZE);
    s.proxy.set_mode(STALL);
    let mut cat = start_cat(&file, &s.proxy);
    let mnt = m.path().to_path_buf();
    let t = Instant::now();
    match how {
        "sigterm" => {
            let pids = daemon_pids(&mnt);
            assert_eq!(pids.len(), 1, "daemon pids {pids:?}");
            // SAFETY: kill with the daemon's pid.
            unsafe {
                libc::kill(pids[0] as i32, libc::SIGTERM);
            }
        }
        _ => {
            let out =
                run_unchecked_timeout(regfs().arg("umount").arg(&mnt), Duration::from_secs(20));
            assert!(out.status.success(), "regfs umount: {out:?}");
        }
    }
    wait_until(Duration::from_secs(10), "the mount to go", || {
        !is_mountpoint(&mnt)
    });
    let took = t.elapsed();
    eprintln!("{how} with a reader in flight: the mount was gone after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "{how}: the mount took {took:?} to go"
    );
    let status = wait_timeout(&mut cat, Duration::from_secs(5)).unwrap_or_else(|| {
        let _ = cat.kill();
        panic!("the reader was still waiting after the mount went")
    });
    assert!(!status.success(), "the reader of a stalled blob succeeded");
    wait_daemon_gone(&mnt);
    m.forget_mounted();
}

#[test]
fn sigterm_ends_the_mount_with_a_reader_in_flight() {
    check_mount_ends("sigterm", 307);
}

#[test]
fn regfs_umount_ends_the_mount_with_a_reader_in_flight() {
    check_mount_ends("umount", 308);
}

/// A bound on a read against a registry that always fails, for `--timeout
/// 2`: each request is tried a few times with a short backoff, a transfer
/// that brings nothing is given up, and nothing waits on a reply for more
/// than the timeout.
const FAILING_BOUND: Duration = Duration::from_secs(20);

/// Registries that always fail: 503 (come back at once), 503 with
/// `Retry-After: 10` (come back later), a reset connection, no answer.
fn always_failing() -> [Mode; 4] {
    [
        Mode::Fail5xx(u32::MAX),
        Mode::Unavailable { retry_after: 10 },
        Mode::Dead,
        Mode::Blackhole,
    ]
}

/// Regression (issue 11, item 6): a lazy read against a registry that
/// always failed took 217-247 s, and `timeout 300 cat` ended only at 494 s,
/// uninterruptible. Against each registry of `always_failing`, a read with
/// `--timeout 2` ends with EIO within `FAILING_BOUND`, and a reader
/// signalled while it waits ends at once.
fn check_failing_registry(verify: &str, seed: u64) {
    let s = setup(seed);
    let m = Mount::new(
        &s.proxy.host(),
        &["--timeout", "2", "--verify", verify, "-v"],
    );
    let file = m.join("s/v1/big.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), SIZE);
    let mut waited = 0;
    for fault in always_failing() {
        let log_at = regfs_log(m.cache_dir()).len();
        s.proxy.set_mode(fault.clone());
        let t = Instant::now();
        let out = run_unchecked_timeout(
            Command::new("cat").arg(&file).stdout(Stdio::null()),
            Duration::from_secs(120),
        );
        let took = t.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "verify {verify}, {fault:?}: cat ended after {took:?}: {}",
            err.trim()
        );
        if std::env::var_os("REGFS_TEST_LOG").is_some() {
            eprintln!("{}", &regfs_log(m.cache_dir())[log_at..]);
        }
        assert!(!out.status.success(), "{fault:?}: a read succeeded");
        assert!(err.contains("Input/output error"), "{fault:?}: {err}");
        assert!(
            took < FAILING_BOUND,
            "verify {verify}, {fault:?}: the read took {took:?}\nlog:\n{}",
            regfs_log(m.cache_dir())
        );
        // A reader signalled while it waits ends at once (where reads
        // fail fast, there may be nothing left to signal).
        let seen = s.proxy.connections() + s.proxy.requests();
        let mut cat = Command::new("cat")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The registry is asked anew, unless a request of the last read
        // is still in flight (a black hole holds it): then the reader
        // waits for that one.
        let asked = Instant::now();
        while s.proxy.connections() + s.proxy.requests() <= seen
            && asked.elapsed() < Duration::from_secs(3)
        {
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(200));
        let waiting = cat.try_wait().unwrap().is_none();
        let stopped = signal_and_time(&mut cat, libc::SIGINT);
        eprintln!("verify {verify}, {fault:?}: SIGINT ended the reader after {stopped:?} (waiting when signalled: {waiting})");
        assert!(stopped < Duration::from_secs(2), "{fault:?}: {stopped:?}");
        waited += usize::from(waiting);
    }
    assert!(waited > 0, "no reader was still waiting when signalled");
    // And once the registry recovers, the file reads back right (a request
    // sent while it did not answer may hold the first read up to
    // `--timeout`).
    s.proxy.set_mode(Mode::Pass);
    let t = Instant::now();
    let want = s.digest.trim_start_matches("sha256:").to_string();
    wait_until(
        Duration::from_secs(15),
        "the file to read back right",
        || {
            let out = Command::new("sha256sum").arg(&file).output().unwrap();
            String::from_utf8_lossy(&out.stdout).starts_with(&want)
        },
    );
    eprintln!(
        "verify {verify}: read back right {:?} after the registry recovered",
        t.elapsed()
    );
    finish(m);
}

#[test]
fn a_strict_read_against_a_registry_that_always_fails_ends_with_eio() {
    check_failing_registry("strict", 309);
}

#[test]
fn a_lazy_read_against_a_registry_that_always_fails_ends_with_eio() {
    check_failing_registry("lazy", 310);
}
