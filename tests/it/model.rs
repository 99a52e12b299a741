//! ModelPack artifacts (docs/tree.md, *ModelPack*): a model as modctl
//! packs it, pushed to the real registry, read back file for file with
//! `cmp` in both verify modes, and a random read inside its tar-wrapped
//! weight that fetches only the chunk around it.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::Duration;

use crate::support::model::*;
use crate::support::*;

const MIB: u64 = 1 << 20;

/// `cmp a b`, bounded in time: the mount is read by another process.
fn cmp(a: &std::path::Path, b: &std::path::Path) {
    run_timeout(Command::new("cmp").arg(a).arg(b), Duration::from_secs(120));
}

#[test]
fn a_model_reads_back_file_for_file_strict_and_lazy() {
    let reg = Registry::start();
    let model = ModelArtifact::push(&reg.host(), "models/demo:v1");
    for verify in ["strict", "lazy"] {
        let m = Mount::new(&reg.host(), &["--timeout", "10", "--verify", verify]);
        let tag = m.join("models/demo/v1");
        assert_eq!(
            ls(&tag),
            [
                "LICENSE",
                "README.md",
                "blobs",
                "config.json",
                "data",
                "manifest.json",
                WEIGHTS,
                "referrers",
                "scripts",
                "tokenizer.json"
            ],
            "{verify}"
        );
        assert_eq!(ls(&tag.join("scripts")), ["lib", "run.sh"]);
        for f in MODEL_FILES {
            cmp(&model.src().join(f), &tag.join(f));
        }
        // Modes and mtimes from the file metadata and the tar headers.
        let meta = |rel: &str| {
            let p = tag.join(rel);
            bounded(rel, OP, move || fs::metadata(p).unwrap())
        };
        assert_eq!(meta("config.json").mtime(), CONFIG_MTIME);
        assert_eq!(meta("scripts/run.sh").mode() & 0o777, 0o555);
        assert_eq!(meta("scripts/lib/util.py").mode() & 0o777, 0o444);
        assert_eq!(meta(WEIGHTS).len(), WEIGHTS_LEN);
        let sha = tag.join("blobs/sha256");
        assert_eq!(ls(&sha).len(), 8, "7 layers and the config");
        let x = xattrs(&tag.join(WEIGHTS));
        let want = if verify == "lazy" { "eof" } else { "strict" };
        assert_eq!(x.get("user.oci.verify").map(String::as_str), Some(want));
        assert_eq!(
            x.get("user.oci.digest").map(String::as_str),
            Some(model.weights_layer.as_str())
        );
        finish(m);
    }
}

#[test]
fn a_lazy_random_read_inside_a_tar_wrapped_weight_fetches_only_its_range() {
    let reg = Registry::start();
    let model = ModelArtifact::push(&reg.host(), "models/demo:v1");
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = Mount::new(&proxy.host(), &["--timeout", "10", "--verify", "lazy"]);
    let path = m.join(&format!("models/demo/v1/{WEIGHTS}"));

    // Its file metadata gives its size: stat fetches no blob.
    let p = path.clone();
    assert_eq!(
        bounded("stat", OP, move || fs::metadata(p).unwrap()).len(),
        WEIGHTS_LEN
    );
    assert_eq!(proxy.blob_bytes_sent(), 0);

    // Opening reads the tar's headers (the chunks around them); the read
    // then fetches the 4 MiB chunk around its bytes, and nothing else.
    let p = path.clone();
    let (at_open, got, sent) = {
        let proxy = proxy.handle();
        bounded("open and read", OP, move || {
            let f = fs::File::open(p).unwrap();
            // What opening started may still be arriving (a reader wakes
            // at its first bytes): count it all before the read.
            let mut at_open = proxy.blob_bytes_sent();
            loop {
                std::thread::sleep(Duration::from_millis(300));
                let now = proxy.blob_bytes_sent();
                if now == at_open {
                    break;
                }
                at_open = now;
            }
            let mut buf = vec![0u8; 64 * 1024];
            f.read_exact_at(&mut buf, 9 * MIB + 100).unwrap();
            (at_open, buf, proxy.blob_bytes_sent() - at_open)
        })
    };
    let src = fs::read(model.src().join(WEIGHTS)).unwrap();
    let off = (9 * MIB + 100) as usize;
    assert!(got == src[off..off + got.len()], "wrong bytes at {off}");
    assert!(at_open <= 6 * MIB, "opening fetched {at_open} bytes");
    assert!(sent <= 4 * MIB, "a 64 KiB read fetched {sent} bytes");
    assert!(
        proxy.blob_bytes_sent() < WEIGHTS_LEN / 2,
        "{} of {WEIGHTS_LEN} bytes fetched",
        proxy.blob_bytes_sent()
    );
    // A reader of the whole file gets it, verified at its end.
    cmp(&model.src().join(WEIGHTS), &path);
    finish(m);
}
