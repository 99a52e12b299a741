//! No byte a reader gets with success ever differs from the blob.
//!
//! `--verify lazy` serves bytes before the whole blob is checked; a transfer
//! that fails verification must not leave those bytes anywhere a later
//! reader can get them with success: not in the cache, and not in the
//! kernel's page cache (regression: the second `cat` of a corrupted lazy
//! read exited 0 with the corrupted bytes).

use std::fs;
use std::io::Read;
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
