//! ModelPack artifacts as `modctl` packs them: one layer per file or
//! folder, named by `org.cncf.model.filepath` (no title), of every
//! packing (raw, tar, tar+gzip, tar+zstd) and the older `vnd.cnai` names,
//! with `org.cncf.model.file.metadata+json` on some. Built here from a
//! folder of source files and pushed with tests/fixtures/push_oras.py
//! (the ORAS Python client: untitled layers of any media type).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::fixtures::{
    make_random_file, oras_push_with, sha256_file, write_file, PushOpts, RawLayer,
};

pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.model.config.v1+json";
pub const MODEL_FILEPATH: &str = "org.cncf.model.filepath";
pub const CNAI_MODEL_FILEPATH: &str = "org.cnai.model.filepath";
pub const MODEL_FILE_METADATA: &str = "org.cncf.model.file.metadata+json";
/// The mtime the metadata of `config.json` gives (2024-05-06T07:08:09Z).
pub const CONFIG_MTIME: i64 = 1_714_979_289;
/// The weight file: past 16 MiB, so `--verify lazy` reads it by range.
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_LEN: u64 = 20 * 1024 * 1024 + 4321;

/// A model pushed to a registry; its source files stay in `src()`.
pub struct ModelArtifact {
    work: TempDir,
    pub digest: String,
    /// The digest of the tar layer that wraps `model.safetensors`.
    pub weights_layer: String,
}

/// Every file of the model, as the tree should show it.
pub const MODEL_FILES: &[&str] = &[
    WEIGHTS,
    "config.json",
    "tokenizer.json",
    "README.md",
    "scripts/run.sh",
    "scripts/lib/util.py",
    "data/train.csv",
    "LICENSE",
];

fn media_type(kind: &str, packing: &str) -> String {
    format!("application/vnd.cncf.model.{kind}.v1.{packing}")
}

/// The file metadata modctl writes for `path` (typeflag 0 file, 5 folder).
fn metadata(path: &Path, typeflag: u8, mtime: &str) -> String {
    let m = fs::metadata(path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    serde_json::json!({
        "name": path.file_name().unwrap().to_string_lossy(),
        "mode": m.permissions().mode() & 0o777,
        "uid": 0, "gid": 0,
        "size": if m.is_dir() { 0 } else { m.len() },
        "mtime": mtime,
        "typeflag": typeflag,
    })
    .to_string()
}

/// A tar of `paths` (relative to `src`, folders with their contents),
/// named as they are relative to `src`, as modctl writes them.
fn tar_of(src: &Path, paths: &[&str]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Complete);
    for p in paths {
        let full = src.join(p);
        if full.is_dir() {
            b.append_dir_all(p, &full).unwrap();
        } else {
            b.append_path_with_name(&full, p).unwrap();
        }
    }
    b.into_inner().unwrap()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

impl ModelArtifact {
    /// Builds the model and pushes it as `host/reference`.
    pub fn push(host: &str, reference: &str) -> ModelArtifact {
        let work = tempfile::Builder::new()
            .prefix("regfs-model-")
            .tempdir()
            .unwrap();
        let src = work.path().join("src");
        make_random_file(src.join(WEIGHTS), WEIGHTS_LEN, 1414);
        write_file(
            &src,
            "config.json",
            r#"{"architectures":["LlamaForCausalLM"],"hidden_size":64}"#,
        );
        write_file(&src, "tokenizer.json", r#"{"version":"1.0","model":{}}"#);
        write_file(&src, "README.md", "# demo\nA model made for a test.\n");
        let run = write_file(
            &src,
            "scripts/run.sh",
            "#!/bin/sh\nexec python3 lib/util.py\n",
        );
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
        write_file(&src, "scripts/lib/util.py", "print('hello')\n");
        write_file(&src, "data/train.csv", "text,label\nhi,1\n");
        write_file(&src, "LICENSE", "Apache-2.0\n");

        let layers_dir = work.path().join("layers");
        fs::create_dir_all(&layers_dir).unwrap();
        let blob = |name: &str, bytes: Vec<u8>| -> String {
            let p = layers_dir.join(name);
            fs::write(&p, bytes).unwrap();
            p.to_string_lossy().into_owned()
        };
        let file = |path: &Path| path.to_string_lossy().into_owned();
        let layer = |path: String, mt: String, ann: Vec<(&str, String)>| RawLayer {
            path,
            title: None,
            media_type: Some(mt),
            annotations: ann.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let weights_tar = blob("weights.tar", tar_of(&src, &[WEIGHTS]));
        let weights_layer = sha256_file(&weights_tar);
        let layers = vec![
            // A tar-wrapped weight, with metadata: stat needs no blob.
            layer(
                weights_tar,
                media_type("weight", "tar"),
                vec![
                    (MODEL_FILEPATH, WEIGHTS.into()),
                    (
                        MODEL_FILE_METADATA,
                        metadata(&src.join(WEIGHTS), 0, "2024-01-01T00:00:00Z"),
                    ),
                ],
            ),
            // The model's own config.json, raw.
            layer(
                file(&src.join("config.json")),
                media_type("weight.config", "raw"),
                vec![
                    (MODEL_FILEPATH, "config.json".into()),
                    (
                        MODEL_FILE_METADATA,
                        metadata(&src.join("config.json"), 0, "2024-05-06T07:08:09Z"),
                    ),
                ],
            ),
            // A plain tar, no metadata.
            layer(
                blob("tokenizer.tar", tar_of(&src, &["tokenizer.json"])),
                media_type("weight.config", "tar"),
                vec![(MODEL_FILEPATH, "tokenizer.json".into())],
            ),
            layer(
                blob("readme.tgz", gzip(&tar_of(&src, &["README.md"]))),
                media_type("doc", "tar+gzip"),
                vec![(MODEL_FILEPATH, "README.md".into())],
            ),
            // A folder, zstd-compressed, its metadata saying it is one.
            layer(
                blob(
                    "scripts.tzst",
                    zstd::encode_all(&tar_of(&src, &["scripts"])[..], 3).unwrap(),
                ),
                media_type("code", "tar+zstd"),
                vec![
                    (MODEL_FILEPATH, "scripts".into()),
                    (
                        MODEL_FILE_METADATA,
                        metadata(&src.join("scripts"), 5, "2024-01-01T00:00:00Z"),
                    ),
                ],
            ),
            layer(
                blob("data.tar", tar_of(&src, &["data"])),
                media_type("dataset", "tar"),
                vec![(MODEL_FILEPATH, "data".into())],
            ),
            // The older vnd.cnai names.
            layer(
                file(&src.join("LICENSE")),
                "application/vnd.cnai.model.doc.v1.raw".into(),
                vec![(CNAI_MODEL_FILEPATH, "LICENSE".into())],
            ),
        ];
        let config = write_file(
            work.path(),
            "model-config.json",
            r#"{"descriptor":{"name":"demo"},"config":{"format":"safetensors"},"modelfs":{"type":"layers","diffIds":[]}}"#,
        );
        let opts = PushOpts {
            artifact_type: Some(MODEL_ARTIFACT_TYPE.into()),
            config: Some(format!("{}:{MODEL_CONFIG_MEDIA_TYPE}", config.display())),
            layers,
            no_created: true,
            ..Default::default()
        };
        let digest = oras_push_with(host, reference, &[], work.path(), &opts);
        ModelArtifact {
            work,
            digest,
            weights_layer,
        }
    }

    /// The folder of the model's source files.
    pub fn src(&self) -> PathBuf {
        self.work.path().join("src")
    }
}
