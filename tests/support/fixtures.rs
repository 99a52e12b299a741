//! Test data: files, ORAS artifacts (through tests/fixtures/push_oras.py),
//! hand-made OCI image layouts, skopeo copies, and direct registry reads.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::cmd::run;
use super::http::{basic_auth, http_request, MANIFEST_ACCEPT};

pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_LAYER_TGZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// sha256 of `{}`, the ORAS empty config.
pub const EMPTY_CONFIG_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

// ---------------------------------------------------------------- hashing

/// "sha256:<hex>" of a byte slice.
pub fn sha256_bytes(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// "sha256:<hex>" of a file's contents.
pub fn sha256_file(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Writes `size` pseudo-random bytes (deterministic for a `seed`) to `path`.
pub fn make_random_file(path: impl AsRef<Path>, size: u64, seed: u64) {
    let path = path.as_ref();
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    }
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for c in buf[..n].chunks_mut(8) {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            c.copy_from_slice(&z.to_le_bytes()[..c.len()]);
        }
        w.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
    w.flush()
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `content` to `dir/rel`, creating parent folders; returns the path.
pub fn write_file(dir: impl AsRef<Path>, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.as_ref().join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    fs::write(&p, content).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

// ---------------------------------------------------------------- ORAS

/// tests/fixtures/push_oras.py
pub fn push_oras_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/push_oras.py")
}

fn python() -> String {
    std::env::var("REGFS_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Extra layer for [`oras_push_with`], with an arbitrary (even unsafe or
/// missing) title: for negative tests of title handling.
#[derive(Clone, Debug, Default)]
pub struct RawLayer {
    /// File holding the blob (relative to the push directory, or absolute).
    pub path: String,
    /// `None`: no title annotation.
    pub title: Option<String>,
    pub media_type: Option<String>,
    pub annotations: Vec<(String, String)>,
}

/// Options of [`oras_push_with`]; mirror the `oras push` / `oras attach` flags.
#[derive(Clone, Debug, Default)]
pub struct PushOpts {
    /// `--artifact-type` (default `application/vnd.unknown.artifact.v1`).
    pub artifact_type: Option<String>,
    /// `--annotation K=V` (manifest annotations).
    pub annotations: Vec<(String, String)>,
    /// `--annotation-file` (ORAS format: `$manifest`, `$config`, titles).
    pub annotation_file: Option<PathBuf>,
    /// `--config PATH[:MEDIATYPE]`.
    pub config: Option<String>,
    /// `--image-spec v1.0`: no artifactType, config media type = artifact type.
    pub image_spec_v1_0: bool,
    /// `--artifact-platform os/arch[/variant]`.
    pub artifact_platform: Option<String>,
    /// `oras attach`: tag or `sha256:` digest (same repository) this
    /// artifact refers to. Also maintains the `sha256-<hex>` referrers tag.
    /// Give the reference without `:TAG` to push by digest only.
    pub subject: Option<String>,
    pub layers: Vec<RawLayer>,
    /// Fixed `org.opencontainers.image.created` (default: now).
    pub created: Option<String>,
    /// Do not add `org.opencontainers.image.created`.
    pub no_created: bool,
    /// Use the ORAS Python SDK's own `push()` (basename titles, no unpack
    /// annotation, spaced JSON) instead of CLI-like manifests.
    pub python_native: bool,
    /// Basic auth.
    pub creds: Option<(String, String)>,
}

fn push_oras_cmd(sub: &str, host: &str, reference: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(push_oras_script()).arg(sub).arg(host).arg(reference);
    c
}

/// Options after the positional arguments: argparse cannot take a
/// `nargs="*"` positional list after options in a sub-command.
fn add_creds(c: &mut Command, creds: Option<(&str, &str)>) {
    if let Some((u, p)) = creds {
        c.args(["--user", u, "--password", p]);
    }
}

fn parse_digest(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    s.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no 'Digest:' line in push_oras.py output:\n{s}"))
        .trim()
        .to_string()
}

/// `oras push HOST/REFERENCE FILES...` run in `dir` (titles are the paths
/// as given, relative to `dir`; folders become unpackable tar+gzip layers).
/// Returns the manifest digest.
pub fn oras_push(host: &str, reference: &str, files: &[&str], dir: impl AsRef<Path>) -> String {
    oras_push_with(host, reference, files, dir, &PushOpts::default())
}

/// [`oras_push`] with options. Returns the manifest digest.
pub fn oras_push_with(
    host: &str,
    reference: &str,
    files: &[&str],
    dir: impl AsRef<Path>,
    opts: &PushOpts,
) -> String {
    let creds = opts.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let mut c = push_oras_cmd("push", host, reference);
    c.current_dir(dir.as_ref()).args(files);
    add_creds(&mut c, creds);
    if let Some(t) = &opts.artifact_type {
        c.args(["--artifact-type", t]);
    }
    for (k, v) in &opts.annotations {
        c.arg("--annotation").arg(format!("{k}={v}"));
    }
    if let Some(f) = &opts.annotation_file {
        c.arg("--annotation-file").arg(f);
    }
    if let Some(cfg) = &opts.config {
        c.args(["--config", cfg]);
    }
    if opts.image_spec_v1_0 {
        c.args(["--image-spec", "v1.0"]);
    }
    if let Some(p) = &opts.artifact_platform {
        c.args(["--artifact-platform", p]);
    }
    if let Some(s) = &opts.subject {
        c.args(["--subject", s]);
    }
    for l in &opts.layers {
        let ann: serde_json::Map<String, Value> = l
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let spec = json!({"path": l.path, "title": l.title, "mediaType": l.media_type, "annotations": ann});
        c.arg("--layer").arg(spec.to_string());
    }
    if let Some(t) = &opts.created {
        c.args(["--created", t]);
    }
    if opts.no_created {
        c.arg("--no-created");
    }
    if opts.python_native {
        c.arg("--python-native");
    }
    parse_digest(&run(&mut c).stdout)
}

/// `oras pull HOST/REFERENCE -o OUT_DIR` (reference reader: verifies every
/// blob, unpacks folder layers). Returns the titles written.
pub fn oras_pull(host: &str, reference: &str, out_dir: impl AsRef<Path>) -> Vec<String> {
    oras_pull_with(host, reference, out_dir, None)
}

pub fn oras_pull_with(
    host: &str,
    reference: &str,
    out_dir: impl AsRef<Path>,
    creds: Option<(&str, &str)>,
) -> Vec<String> {
    let mut c = push_oras_cmd("pull", host, reference);
    c.arg(out_dir.as_ref());
    add_creds(&mut c, creds);
    let out = run(&mut c);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// `oras manifest index create HOST/REPO:TAG SRC...`: an OCI index of the
/// manifests `sources` (tags or digests in the same repository), each with
/// the platform of its image config (see `PushOpts::artifact_platform`).
/// Returns the index digest.
pub fn oras_index(host: &str, reference: &str, sources: &[&str]) -> String {
    let mut c = push_oras_cmd("index", host, reference);
    c.args(sources);
    parse_digest(&run(&mut c).stdout)
}

// ---------------------------------------------------------------- OCI layout

/// One platform image written by [`make_oci_image_layout`].
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
    /// "linux-arm-v7" (the folder name regfs gives it).
    pub dir_name: String,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layer_digest: String,
    pub layer_size: u64,
    /// sha256 of the uncompressed layer tar (config rootfs.diff_ids[0]).
    pub diff_id: String,
    /// File inside the layer ("platform.txt") and its content
    /// ("linux/arm/v7\n").
    pub file_name: String,
    pub file_content: String,
}

/// What [`make_oci_image_layout`] tagged.
#[derive(Clone, Debug)]
pub struct LayoutImage {
    pub tag: String,
    /// Digest of the tagged manifest (the index when >1 platform).
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub platforms: Vec<PlatformImage>,
}

fn write_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let digest = sha256_bytes(data);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("mkdir blobs/sha256");
    fs::write(dir.join(&digest["sha256:".len()..]), data).expect("write blob");
    (digest, data.len() as u64)
}

fn platform_layer(file_name: &str, content: &str) -> (Vec<u8>, Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    let mut h = tar::Header::new_ustar();
    h.set_path(file_name).unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, content.as_bytes()).unwrap();
    let raw = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    (raw, gz.finish().unwrap())
}

/// Writes (or adds a tag to) an OCI image layout at `dir`, by hand: one
/// small real image per platform `(os, arch, variant)`: a gzip tar layer with
/// `platform.txt` whose content names the platform (`linux/arm/v7\n`), and
/// an image config with architecture/os/variant and rootfs.diff_ids. With
/// more than one platform the tag names an OCI image index. Deterministic:
/// the same platforms give the same digests (so tags share blobs).
pub fn make_oci_image_layout(
    dir: impl AsRef<Path>,
    tag: &str,
    platforms: &[(&str, &str, Option<&str>)],
) -> LayoutImage {
    let dir = dir.as_ref();
    assert!(
        !platforms.is_empty(),
        "make_oci_image_layout needs a platform"
    );
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir layout");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");

    let mut images = Vec::new();
    for &(os, arch, variant) in platforms {
        let pname = match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        };
        let content = format!("{pname}\n");
        let (raw, gz) = platform_layer("platform.txt", &content);
        let diff_id = sha256_bytes(&raw);
        let (layer_digest, layer_size) = write_blob(dir, &gz);
        let mut config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": os,
        });
        if let Some(v) = variant {
            config["variant"] = json!(v);
        }
        config["config"] =
            json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]});
        config["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]});
        config["history"] =
            json!([{"created": "2024-01-01T00:00:00Z", "created_by": "regfs test fixture"}]);
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let (config_digest, config_size) = write_blob(dir, &config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MT_OCI_LAYER_TGZ, "digest": layer_digest, "size": layer_size}],
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let (manifest_digest, manifest_size) = write_blob(dir, &manifest_bytes);
        images.push(PlatformImage {
            os: os.to_string(),
            arch: arch.to_string(),
            variant: variant.map(String::from),
            dir_name: pname.replace('/', "-"),
            manifest_digest,
            manifest_size,
            config_digest,
            layer_digest,
            layer_size,
            diff_id,
            file_name: "platform.txt".to_string(),
            file_content: content,
        });
    }

    let (digest, size, media_type) = if images.len() == 1 {
        (
            images[0].manifest_digest.clone(),
            images[0].manifest_size,
            MT_OCI_MANIFEST,
        )
    } else {
        let manifests: Vec<Value> = images
            .iter()
            .map(|im| {
                let mut p = json!({"architecture": im.arch, "os": im.os});
                if let Some(v) = &im.variant {
                    p["variant"] = json!(v);
                }
                json!({"mediaType": MT_OCI_MANIFEST, "digest": im.manifest_digest, "size": im.manifest_size, "platform": p})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec(&index).unwrap();
        let (d, s) = write_blob(dir, &bytes);
        (d, s, MT_OCI_INDEX)
    };

    // index.json: replace any entry with this tag, keep the others.
    let index_path = dir.join("index.json");
    let mut top: Value = fs::read(&index_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": []}));
    let mut entries: Vec<Value> = top["manifests"].as_array().cloned().unwrap_or_default();
    entries.retain(|e| e["annotations"][ANNOTATION_REF_NAME].as_str() != Some(tag));
    entries.push(json!({
        "mediaType": media_type,
        "digest": digest,
        "size": size,
        "annotations": {ANNOTATION_REF_NAME: tag},
    }));
    top["manifests"] = Value::Array(entries);
    fs::write(&index_path, serde_json::to_vec(&top).unwrap()).expect("write index.json");

    LayoutImage {
        tag: tag.to_string(),
        digest,
        media_type: media_type.to_string(),
        size,
        platforms: images,
    }
}

// ---------------------------------------------------------------- skopeo

/// `skopeo copy [--all] [--format F] --dest-tls-verify=false
/// oci:LAYOUT:TAG docker://HOST/REPO_TAG`. `format`: `Some("v2s2")` converts
/// to Docker schema 2 (manifest list for an index with `all`).
pub fn skopeo_copy_to_registry(
    layout_dir: impl AsRef<Path>,
    tag: &str,
    host: &str,
    repo_tag: &str,
    all: bool,
    format: Option<&str>,
) {
    let mut args: Vec<String> = vec!["--insecure-policy".into(), "copy".into(), "--quiet".into()];
    if all {
        args.push("--all".into());
    }
    if let Some(f) = format {
        args.push("--format".into());
        args.push(f.into());
    }
    args.push("--dest-tls-verify=false".into());
    args.push(format!("oci:{}:{tag}", layout_dir.as_ref().display()));
    args.push(format!("docker://{host}/{repo_tag}"));
    skopeo(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Runs `skopeo ARGS...` (checked); returns stdout.
pub fn skopeo(args: &[&str]) -> String {
    let out = run(Command::new("skopeo").args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `skopeo inspect --raw docker://HOST/REFERENCE`: the manifest bytes.
pub fn skopeo_inspect_raw(host: &str, reference: &str) -> Vec<u8> {
    run(Command::new("skopeo").args([
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{host}/{reference}"),
    ]))
    .stdout
}

// ---------------------------------------------------------------- direct reads

/// A manifest as served by the registry.
#[derive(Clone, Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// sha256 of `bytes` (checked against `Docker-Content-Digest`).
    pub digest: String,
    /// Content-Type.
    pub media_type: String,
    pub json: Value,
}

/// GET /v2/REPO/manifests/REFERENCE (all manifest kinds accepted).
pub fn fetch_manifest(host: &str, repo: &str, reference: &str) -> FetchedManifest {
    fetch_manifest_with(host, repo, reference, None)
}

pub fn fetch_manifest_with(
    host: &str,
    repo: &str,
    reference: &str,
    creds: Option<(&str, &str)>,
) -> FetchedManifest {
    let auth = creds.map(|(u, p)| basic_auth(u, p));
    let mut hs = vec![("Accept", MANIFEST_ACCEPT)];
    if let Some(a) = &auth {
        hs.push(("Authorization", a));
    }
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = http_request(host, "GET", &path, &hs, &[])
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"));
    assert_eq!(r.status, 200, "GET {host}{path}: {}", r.text());
    let digest = sha256_bytes(&r.body);
    if let Some(d) = r.header("Docker-Content-Digest") {
        assert_eq!(d, digest, "Docker-Content-Digest of {path}");
    }
    if reference.starts_with("sha256:") {
        assert_eq!(reference, digest, "manifest bytes of {path}");
    }
    FetchedManifest {
        media_type: r.header("Content-Type").unwrap_or_default().to_string(),
        json: serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("manifest {path} not JSON: {e}")),
        digest,
        bytes: r.body,
    }
}

/// GET /v2/REPO/blobs/DIGEST, verified.
pub fn fetch_blob(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let r = http_request(host, "GET", &path, &[], &[])
        .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"));
    assert_eq!(r.status, 200, "GET {host}{path}: {}", r.text());
    assert_eq!(sha256_bytes(&r.body), digest, "blob {digest} content");
    r.body
}
