//! ModelPack artifacts: layers named by their filepath, of every packing
//! (raw, tar, tar+gzip, tar+zstd, and the older `vnd.cnai` names), file
//! metadata, and lazy random reads inside a tar-wrapped weight.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{data, world_with, World, MIB};
use crate::digest::Digest;
use crate::fs::memory::Memory;
use crate::fs::Verify;
use crate::oci::{
    format_rfc3339, Packing, CNAI_MODEL_FILEPATH_ANNOTATION, MODEL_ARTIFACT_TYPE,
    MODEL_CONFIG_MEDIA_TYPE, MODEL_FILEPATH_ANNOTATION as FILEPATH,
    MODEL_FILE_METADATA_ANNOTATION as METADATA,
};

const MTIME: i64 = 1_700_000_000;

/// A tar of `(path, data, mode)` entries, as modctl writes one; a path
/// ending in `/` is a folder.
fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_mtime(MTIME as u64);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        } else {
            h.set_size(data.len() as u64);
        }
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zstd(b: &[u8]) -> Vec<u8> {
    zstd::encode_all(b, 3).unwrap()
}

/// `org.cncf.model.file.metadata+json` as modctl writes it.
fn metadata(mode: u32, size: u64, typeflag: u8, mtime: i64) -> String {
    serde_json::json!({
        "name": "x", "mode": mode, "uid": 0, "gid": 0, "size": size,
        "mtime": format_rfc3339(mtime), "typeflag": typeflag,
    })
    .to_string()
}

struct Model {
    weights: Vec<u8>,
    config: Vec<u8>,
    readme: Vec<u8>,
    run_sh: Vec<u8>,
    util_py: Vec<u8>,
    part2: Vec<u8>,
    license: Vec<u8>,
    /// The digest of the tar-wrapped weight's layer.
    weight_tar: Digest,
}

/// A model with a layer of every packing, pushed as `models/demo:v1`.
/// `weights_len`: past 16 MiB, the weight is read lazily in lazy mode.
fn model(weights_len: usize) -> (Memory, Model) {
    let m = Memory::new();
    let weights = data(weights_len, 3);
    let weight = tar_of(&[("model.safetensors", &weights, 0o644)]);
    let model = Model {
        weight_tar: Digest::of(&weight),
        weights,
        config: br#"{"architectures":["LlamaForCausalLM"],"hidden_size":64}"#.to_vec(),
        readme: b"# demo\nA model made for a test.\n".to_vec(),
        run_sh: b"#!/bin/sh\nexec python3 scripts/lib/util.py\n".to_vec(),
        util_py: b"print('hello')\n".to_vec(),
        part2: data(3000, 5),
        license: b"Apache-2.0\n".to_vec(),
    };
    let code = tar_of(&[
        ("scripts/", b"", 0o755),
        ("scripts/run.sh", &model.run_sh, 0o755),
        ("scripts/lib/", b"", 0o755),
        ("scripts/lib/util.py", &model.util_py, 0o644),
    ]);
    let data_tar = tar_of(&[
        ("data/a.csv", b"a,1\n", 0o644),
        ("data/b.csv", b"b,2\n", 0o644),
    ]);
    let layers = vec![
        // A tar-wrapped weight, with metadata (no read needed to stat it).
        m.layer(
            &Packing::Tar.media_type("weight"),
            &weight,
            &[
                (FILEPATH, "model.safetensors"),
                (
                    METADATA,
                    &metadata(0o644, model.weights.len() as u64, 0, MTIME + 1),
                ),
            ],
        ),
        m.layer(
            &Packing::Raw.media_type("weight.config"),
            &model.config,
            &[
                (FILEPATH, "config.json"),
                (
                    METADATA,
                    &metadata(0o755, model.config.len() as u64, 0, MTIME + 2),
                ),
            ],
        ),
        // One file in a gzip tar, no metadata.
        m.layer(
            &Packing::TarGzip.media_type("doc"),
            &gzip(&tar_of(&[("README.md", &model.readme, 0o644)])),
            &[(FILEPATH, "README.md")],
        ),
        // A folder in a zstd tar, its metadata saying so.
        m.layer(
            &Packing::TarZstd.media_type("code"),
            &zstd(&code),
            &[
                (FILEPATH, "scripts"),
                (METADATA, &metadata(0o755, 0, 5, MTIME + 3)),
            ],
        ),
        // A folder in a plain tar, no metadata.
        m.layer(
            &Packing::Tar.media_type("dataset"),
            &data_tar,
            &[(FILEPATH, "data")],
        ),
        // Older modctl: the tar names the file by its last component.
        m.layer(
            &Packing::Tar.media_type("weight"),
            &tar_of(&[("part-2.bin", &model.part2, 0o644)]),
            &[(FILEPATH, "sub/part-2.bin")],
        ),
        // The older vnd.cnai names.
        m.layer(
            "application/vnd.cnai.model.doc.v1.raw",
            &model.license,
            &[(CNAI_MODEL_FILEPATH_ANNOTATION, "LICENSE")],
        ),
        // Not shown: a path that climbs out.
        m.layer(
            &Packing::Raw.media_type("doc"),
            b"escaped",
            &[(FILEPATH, "../escape.txt")],
        ),
    ];
    m.push_artifact(
        "models/demo",
        "v1",
        MODEL_ARTIFACT_TYPE,
        (
            MODEL_CONFIG_MEDIA_TYPE,
            br#"{"config":{"format":"safetensors"}}"#,
        ),
        layers,
    );
    (m, model)
}

const V1: &str = "models/demo/v1";

async fn read(w: &World, path: &str) -> Vec<u8> {
    w.read_all(&format!("{V1}/{path}"), 128 * 1024)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_model_layer_shows_at_its_filepath() {
    let (m, model) = model(3 * MIB + 17);
    let w = world_with(m, Verify::Strict, Duration::from_secs(5));
    // A layer whose metadata says what it is: stat needs no blob.
    let folder = w.path(V1).await.unwrap();
    let weights = w.fs.lookup(folder, "model.safetensors").await.unwrap();
    assert_eq!(weights.size, model.weights.len() as u64);
    assert_eq!(weights.perm, 0o444);
    assert_eq!(weights.mtime, MTIME + 1);
    let scripts = w.fs.lookup(folder, "scripts").await.unwrap();
    assert_eq!(scripts.kind, crate::fs::Kind::Dir);
    assert_eq!(scripts.mtime, MTIME + 3);
    assert_eq!(w.source.blob_gets.load(Ordering::Relaxed), 0);

    let mut names = w.names(V1).await;
    names.sort();
    assert_eq!(
        names,
        [
            "LICENSE",
            "README.md",
            "blobs",
            "config.json",
            "data",
            "manifest.json",
            "model.safetensors",
            "referrers",
            "scripts",
            "sub"
        ]
    );
    assert_eq!(w.names(&format!("{V1}/scripts")).await, ["lib", "run.sh"]);
    assert_eq!(w.names(&format!("{V1}/scripts/lib")).await, ["util.py"]);
    assert_eq!(w.names(&format!("{V1}/data")).await, ["a.csv", "b.csv"]);
    assert_eq!(w.names(&format!("{V1}/sub")).await, ["part-2.bin"]);

    assert!(read(&w, "model.safetensors").await == model.weights);
    assert_eq!(read(&w, "config.json").await, model.config);
    assert_eq!(read(&w, "README.md").await, model.readme);
    assert_eq!(read(&w, "scripts/run.sh").await, model.run_sh);
    assert_eq!(read(&w, "scripts/lib/util.py").await, model.util_py);
    assert_eq!(read(&w, "data/b.csv").await, b"b,2\n");
    assert_eq!(read(&w, "sub/part-2.bin").await, model.part2);
    assert_eq!(read(&w, "LICENSE").await, model.license);
    // Reads at any offset stay inside the file.
    let tail = w
        .read_at(&format!("{V1}/sub/part-2.bin"), 2990, 4096)
        .await
        .unwrap();
    assert_eq!(tail, &model.part2[2990..]);
    assert!(w
        .read_at(&format!("{V1}/sub/part-2.bin"), 3000, 10)
        .await
        .unwrap()
        .is_empty());

    // Modes and mtimes: the raw layer's from its metadata, a tar's files
    // from their headers.
    let config =
        w.fs.getattr(w.path(&format!("{V1}/config.json")).await.unwrap());
    let config = config.await.unwrap();
    assert_eq!((config.perm, config.mtime), (0o555, MTIME + 2));
    let run =
        w.fs.getattr(w.path(&format!("{V1}/scripts/run.sh")).await.unwrap());
    let run = run.await.unwrap();
    assert_eq!((run.perm, run.mtime), (0o555, MTIME));
    let util =
        w.fs.getattr(w.path(&format!("{V1}/scripts/lib/util.py")).await.unwrap());
    assert_eq!(util.await.unwrap().perm, 0o444);
    // Every layer is still under blobs/, the unsafe one too.
    assert_eq!(w.names(&format!("{V1}/blobs/sha256")).await.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_random_read_inside_a_tar_wrapped_weight_fetches_only_its_range() {
    let (m, model) = model(17 * MIB + 12345);
    let w = world_with(m, Verify::Lazy, Duration::from_secs(5));
    let path = format!("{V1}/model.safetensors");
    let ino = w.path(&path).await.unwrap();
    let verify = w.fs.getxattr(ino, "user.oci.verify").await.unwrap();
    assert_eq!(verify, b"eof");
    let (fh, _) = w.fs.open(ino, false, false).await.unwrap();
    // Opening reads the tar's headers: the first chunk and the last (what
    // it started may still be arriving: a reader wakes at its first bytes).
    let mut at_open = w.source.blob_bytes.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = w.source.blob_bytes.load(Ordering::Relaxed);
        if now == at_open {
            break;
        }
        at_open = now;
    }
    assert!(at_open <= 6 * MIB as u64, "opening fetched {at_open} bytes");
    let off = 9 * MIB as u64 + 100;
    let got = w.fs.read(fh, off, 4096).await.unwrap();
    assert_eq!(&got[..], &model.weights[off as usize..off as usize + 4096]);
    let sent = w.source.blob_bytes.load(Ordering::Relaxed) - at_open;
    assert!(sent <= 4 * MIB as u64, "a 4 KiB read fetched {sent} bytes");
    w.fs.release(fh);
    let tar_digest = model.weight_tar.clone();
    assert!(!w.cached(&tar_digest), "not verified before the file's end");
    // The read that reaches the file's end (not the blob's: the tar goes
    // on) waits for the whole layer to be verified.
    let n = model.weights.len() as u64;
    let tail = w.read_at(&path, n - 100, 4096).await.unwrap();
    assert_eq!(tail, &model.weights[n as usize - 100..]);
    assert!(w.cached(&tar_digest));
    assert!(read(&w, "model.safetensors").await == model.weights);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_the_tar_contradicts_fails_the_open() {
    let m = Memory::new();
    let layer = m.layer(
        &Packing::Tar.media_type("weight"),
        &tar_of(&[("w.bin", b"12345", 0o644)]),
        &[
            (FILEPATH, "w.bin"),
            (METADATA, &metadata(0o644, 9, 0, MTIME)),
        ],
    );
    m.push_artifact(
        "models/bad",
        "v1",
        MODEL_ARTIFACT_TYPE,
        (MODEL_CONFIG_MEDIA_TYPE, b"{}"),
        vec![layer],
    );
    let w = world_with(m, Verify::Strict, Duration::from_secs(5));
    let e = w.read_all("models/bad/v1/w.bin", 4096).await.unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains("says 9 bytes"), "{e}");
}
