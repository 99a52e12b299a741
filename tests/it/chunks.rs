//! Chunk-digest lists (docs/verification.md#chunk-digests): what `regfs
//! commit` adds to the manifests it builds, what other tools make of it,
//! and lazy random reads verified chunk by chunk against a registry that
//! corrupts what it sends.

use std::fs;
use std::os::unix::fs::FileExt;

use crate::support::*;
use crate::tmpdir;

const CHUNKS_MEDIA_TYPE: &str = "application/vnd.regfs.chunks.v1+json";
const CHUNKS_OF: &str = "dev.regfs.chunks.of";
const TITLE: &str = "org.opencontainers.image.title";
const CHUNK: usize = 4 << 20;

/// Commits `files` (name, bytes) as the new tag `repo:tag` through a mount
/// of `host`; returns the manifest digest.
fn commit_files(host: &str, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> String {
    let m = Mount::new(host, &[]);
    let dir = m.join(&format!("{repo}/{tag}"));
    fs::create_dir_all(&dir).unwrap();
    for (name, data) in files {
        fs::write(dir.join(name), data).unwrap();
    }
    let out = run_timeout(
        regfs().arg("commit").arg(&dir),
        std::time::Duration::from_secs(120),
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    finish(m);
    out.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in commit output:\n{out}"))
        .trim()
        .to_string()
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let w = tmpdir();
    make_random_file(w.path().join("f"), len as u64, seed);
    fs::read(w.path().join("f")).unwrap()
}

#[test]
fn a_commit_adds_chunk_lists_that_oras_skips_and_skopeo_copies() {
    let reg = Registry::start();
    let big = random_bytes(18 * 1024 * 1024 + 333, 71);
    let notes = b"release notes\n".to_vec();
    let digest = commit_files(
        &reg.host(),
        "c/model",
        "v1",
        &[("big.bin", &big), ("notes.txt", &notes)],
    );

    // The manifest: the two files, then one list for the large one.
    let fetched = fetch_manifest(&reg.host(), "c/model", "v1");
    assert_eq!(sha256_bytes(&fetched.bytes), digest);
    let m: serde_json::Value = serde_json::from_slice(&fetched.bytes).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{m}");
    let list = &layers[2];
    assert_eq!(list["mediaType"], CHUNKS_MEDIA_TYPE);
    assert_eq!(list["annotations"][CHUNKS_OF], sha256_bytes(&big));
    assert!(list["annotations"].get(TITLE).is_none(), "no title: {list}");
    for l in &layers[..2] {
        assert_ne!(l["mediaType"], CHUNKS_MEDIA_TYPE);
    }
    // The list: the layer's digest and size, and each 4 MiB chunk's sha256.
    let bytes = fetch_blob(&reg.host(), "c/model", list["digest"].as_str().unwrap());
    assert_eq!(list["size"], bytes.len() as u64);
    let l: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(l["mediaType"], CHUNKS_MEDIA_TYPE);
    assert_eq!(l["layer"]["digest"], sha256_bytes(&big));
    assert_eq!(l["layer"]["size"], big.len() as u64);
    assert_eq!(l["chunkSize"], CHUNK as u64);
    let want: Vec<String> = big.chunks(CHUNK).map(sha256_bytes).collect();
    let got: Vec<String> = l["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, want);

    // `oras pull`: exactly the titled files.
    let out = tmpdir();
    oras(&[
        "pull",
        "--plain-http",
        &format!("{}/c/model:v1", reg.host()),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    let mut pulled = walk_files(out.path());
    pulled.sort();
    assert_eq!(pulled, ["big.bin", "notes.txt"]);
    assert!(fs::read(out.path().join("big.bin")).unwrap() == big);

    // skopeo copies it as a layer like any other: the same digest.
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/c/model:v1", reg.host()),
        &format!("docker://{}/c/copy:v1", reg.host()),
    ]);
    let copied = fetch_manifest(&reg.host(), "c/copy", "v1");
    assert_eq!(sha256_bytes(&copied.bytes), digest);

    // regfs shows the files, not the list, and says how reads are checked.
    let m = Mount::new(&reg.host(), &["--verify", "lazy"]);
    let mut names = ls(&m.join("c/model/v1"));
    names.sort();
    assert_eq!(
        names,
        [
            "big.bin",
            "blobs",
            "manifest.json",
            "notes.txt",
            "referrers"
        ]
    );
    assert_xattrs_include(
        &m.join("c/model/v1/big.bin"),
        &[("user.oci.verify", "chunks")],
    );
    assert_xattrs_include(
        &m.join("c/model/v1/notes.txt"),
        &[("user.oci.verify", "strict")],
    );
    assert!(fs::read(m.join("c/model/v1/big.bin")).unwrap() == big);
    finish(m);
}

/// Reads `len` bytes at `at`; `None` on EIO.
fn pread(f: &fs::File, at: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    match f.read_exact_at(&mut buf, at) {
        Ok(()) => Some(buf),
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "at {at}: {e}");
            None
        }
    }
}

#[test]
fn lazy_random_reads_never_return_corrupted_bytes_of_a_layer_with_a_list() {
    let reg = Registry::start();
    let big = random_bytes(40 * 1024 * 1024 + 77, 72);
    commit_files(&reg.host(), "c/rand", "v1", &[("big.bin", &big)]);
    let proxy = FaultProxy::start(&reg.host(), Mode::Pass);
    let m = Mount::new(&proxy.host(), &["--verify", "lazy", "--timeout", "5"]);
    let path = m.join("c/rand/v1/big.bin");
    assert_xattrs_include(&path, &[("user.oci.verify", "chunks")]);
    let f = fs::File::open(&path).unwrap();
    // The list and the first chunk, clean.
    assert_eq!(pread(&f, 0, 16).as_deref(), Some(&big[..16]));

    // Every range answer corrupted: every read of a new chunk is EIO.
    proxy.set_mode(Mode::CorruptRangesEvery(1));
    let offsets: Vec<u64> = (1..10).map(|i| i * CHUNK as u64 + 1000 * i).collect();
    for &at in &offsets {
        assert!(
            pread(&f, at, 4096).is_none(),
            "a read of a corrupted chunk at {at} succeeded"
        );
    }
    // Clean again: the same reads give the right bytes (fetched once more).
    proxy.set_mode(Mode::Pass);
    for &at in &offsets {
        let got = pread(&f, at, 4096).unwrap_or_else(|| panic!("EIO at {at} after recovery"));
        assert!(got == big[at as usize..at as usize + 4096], "at {at}");
    }
    drop(f);

    // One answer in three corrupted, random reads across the layer, new
    // reader each time: each read is EIO or right; never other bytes.
    let _ = fs::write("/proc/sys/vm/drop_caches", "1");
    proxy.set_mode(Mode::CorruptRangesEvery(3));
    let (mut right, mut eio) = (0, 0);
    let mut x: u64 = 12345;
    for _ in 0..60 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let at = (x >> 16) % (big.len() as u64 - 4096);
        let f = fs::File::open(&path).unwrap();
        match pread(&f, at, 4096) {
            Some(got) => {
                assert!(
                    got == big[at as usize..at as usize + 4096],
                    "wrong bytes at {at}"
                );
                right += 1;
            }
            None => eio += 1,
        }
    }
    assert!(right > 0, "no read succeeded ({eio} EIO)");
    assert!(proxy.range_requests() > 0);
    finish(m);
}
