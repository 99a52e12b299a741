//! Filesystem calls for tests against a mount, each bounded in time so a
//! hung mount fails a test instead of hanging the suite.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long one filesystem call on a mount may take.
pub const OP: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread; `None` unless it returns within `limit`
/// (the thread is then left behind, stuck in the kernel). A panic inside
/// `f` is passed on.
pub fn try_bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => Some(v),
        Err(mpsc::RecvTimeoutError::Timeout) => None,
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: thread ended without a result"),
        },
    }
}

/// [`try_bounded`], panicking (naming `what`) on timeout.
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    try_bounded(what, limit, f)
        .unwrap_or_else(|| panic!("{what}: no answer within {limit:?} (hung mount?)"))
}

/// The bytes of `p` (a path in a mount: the read is bounded by `OP`).
pub fn read(p: &Path) -> Vec<u8> {
    let q = p.to_path_buf();
    bounded(&format!("read {}", p.display()), OP, move || fs::read(q))
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// `mkdir -p`, bounded by `OP`.
pub fn mkdir_p(p: &Path) {
    let q = p.to_path_buf();
    bounded(&format!("mkdir -p {}", p.display()), OP, move || {
        fs::create_dir_all(&q)
    })
    .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", p.display()))
}

pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// The hex of a `sha256:<hex>` digest.
pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The names in `dir`, sorted.
pub fn try_ls(dir: &Path) -> std::io::Result<Vec<String>> {
    let d = dir.to_path_buf();
    bounded(&format!("readdir {}", dir.display()), OP, move || {
        let mut v = Vec::new();
        for e in fs::read_dir(&d)? {
            v.push(e?.file_name().to_string_lossy().into_owned());
        }
        v.sort();
        Ok(v)
    })
}

pub fn ls(dir: &Path) -> Vec<String> {
    try_ls(dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
}

/// Every regular file under `root`, relative paths, sorted.
pub fn walk_files(root: &Path) -> Vec<String> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for name in ls(dir) {
            let p = dir.join(&name);
            let q = p.clone();
            let md = bounded(&format!("stat {}", p.display()), OP, move || {
                fs::symlink_metadata(&q)
            })
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
            if md.is_dir() {
                go(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    go(root, root, &mut out);
    out.sort();
    out
}

/// `user.*` extended attributes, as `getfattr -d` prints them.
pub fn xattrs(path: &Path) -> BTreeMap<String, String> {
    let out = super::cmd::run_timeout(
        Command::new("getfattr")
            .args(["-d", "--absolute-names", "-e", "text"])
            .arg(path),
        OP,
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        m.insert(k.to_string(), v.to_string());
    }
    m
}

/// Asserts that `path` has at least these `user.*` attributes, with these
/// values.
pub fn assert_xattrs_include(path: &Path, want: &[(&str, &str)]) {
    let got = xattrs(path);
    for (k, v) in want {
        assert_eq!(
            got.get(*k).map(String::as_str),
            Some(*v),
            "xattr {k} of {}; all: {got:#?}",
            path.display()
        );
    }
}
