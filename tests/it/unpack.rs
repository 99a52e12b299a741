//! Directory layers against the cache bound (issue 11, item 4): a real
//! docker-registry, layers pushed with the ORAS Python client, a mount with
//! a small `--cache-size`. A gzip bomb and a layer larger than the cache
//! fail their listing with EIO and leave nothing in the cache; a layer that
//! fits is unpacked, and `regfs status` counts it.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tmpdir;

const EIO: i32 = 5;
const ANNOTATION_UNPACK: &str = "io.deis.oras.content.unpack";

/// Writes a tar+gzip of one folder `name` holding `files` (name, length,
/// fill byte), streamed: a bomb is never held in memory.
fn write_targz(path: &Path, name: &str, files: &[(&str, u64, u8)]) {
    let out = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::best());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, format!("{name}/"), io::empty())
        .unwrap();
    for (f, len, fill) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(*len);
        b.append_data(&mut h, format!("{name}/{f}"), io::repeat(*fill).take(*len))
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Pushes `repo:v1` with one directory layer titled `name`, as ORAS does.
fn push_dir_layer(host: &str, repo: &str, w: &Path, name: &str, files: &[(&str, u64, u8)]) {
    let file = format!("{name}.tar.gz");
    write_targz(&w.join(&file), name, files);
    let opts = PushOpts {
        layers: vec![RawLayer {
            path: file,
            title: Some(name.to_string()),
            media_type: Some(MT_OCI_LAYER_TGZ.to_string()),
            annotations: vec![(ANNOTATION_UNPACK.to_string(), "true".to_string())],
        }],
        ..PushOpts::default()
    };
    oras_push_with(host, &format!("{repo}:v1"), &[], w, &opts);
}

/// Bytes of the files under `p` (0 when it is gone).
fn du(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Watches the bytes the cache bound covers (blobs, unpacked trees and
/// trees being unpacked) every 10 ms; the most seen when stopped.
struct Peak {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Peak {
    fn watch(cache: PathBuf) -> Peak {
        let (stop, most) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, m) = (stop.clone(), most.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let held: u64 = ["blobs", "unpacked", "tmp"]
                    .iter()
                    .map(|d| du(&cache.join(d)))
                    .sum();
                m.fetch_max(held, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        });
        Peak {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.most.load(Ordering::Relaxed)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Regression (issue 11, item 4): a small gzip layer that expands to
/// gigabytes was unpacked whole (5.1 GiB with `--cache-size 512M`, and on
/// to ENOSPC). Now a bomb and a layer larger than the cache fail their
/// listing with EIO and a log line, the cache never holds more than its
/// bound while they are tried, and nothing of them is left; a layer that
/// fits is unpacked and counted by `regfs status`.
#[test]
fn unpacked_layers_stay_within_the_cache_bound_and_bombs_fail_with_eio() {
    const CACHE: u64 = 16 << 20;
    let reg = Registry::start();
    let host = reg.host();
    let w = tmpdir();
    // 256 MiB of zeros: about 250 KB of gzip, 1000 times smaller.
    push_dir_layer(&host, "bomb", w.path(), "bomb", &[("zeros", 256 << 20, 0)]);
    assert!(fs::metadata(w.path().join("bomb.tar.gz")).unwrap().len() < 1 << 20);
    // 40 MiB: no bomb (under the 64 MiB floor of the ratio), but more than
    // the cache holds.
    push_dir_layer(&host, "fat", w.path(), "fat", &[("zeros", 40 << 20, 0)]);
    push_dir_layer(
        &host,
        "site",
        w.path(),
        "site",
        &[("index.html", 5000, b'h'), ("a.css", 10, b'c')],
    );

    let m = Mount::new(&host, &["--cache-size", "16M", "--timeout", "5"]);
    let unpacked = m.cache_dir().join("unpacked/sha256");
    assert_eq!(
        try_ls(&m.join("site/v1/site")).unwrap(),
        vec!["a.css", "index.html"]
    );
    assert_eq!(
        fs::read(m.join("site/v1/site/index.html")).unwrap(),
        vec![b'h'; 5000]
    );
    let site_tree = names(&unpacked);
    assert_eq!(site_tree.len(), 2, "{site_tree:?}"); // the tree and its .size

    for (repo, why) in [
        ("bomb", "refused as a decompression bomb"),
        ("fat", "needs more room than the cache has"),
    ] {
        let peak = Peak::watch(m.cache_dir().to_path_buf());
        let t = Instant::now();
        let e = try_ls(&m.join(&format!("{repo}/v1/{repo}"))).unwrap_err();
        let took = t.elapsed();
        let most = peak.stop();
        assert_eq!(errno(&e), EIO, "{repo}: {e}");
        eprintln!("{repo}: EIO after {took:?}; the cache held at most {most} bytes meanwhile");
        assert!(
            most <= CACHE,
            "{repo}: the cache held {most} bytes, past {CACHE}"
        );
        assert!(took < Duration::from_secs(30), "{repo}: {took:?}");
        assert_eq!(
            names(&unpacked),
            site_tree,
            "{repo}: only the site tree is kept"
        );
        assert_eq!(names(&m.cache_dir().join("tmp")), Vec::<String>::new());
        let log = fs::read_to_string(m.cache_dir().join("regfs.log")).unwrap_or_default();
        assert!(log.contains(why), "{repo}: no {why:?} in the log:\n{log}");
        // Tried again: the same answer.
        assert_eq!(
            errno(&try_ls(&m.join(&format!("{repo}/v1/{repo}"))).unwrap_err()),
            EIO
        );
    }

    let out = run_timeout(regfs().arg("status").arg(m.path()), OP);
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    // The tree's folder, a.css one block each, index.html two.
    assert!(status.contains("unpacked layers: 1 (16.0 KiB)"), "{status}");
    finish(m);
}
