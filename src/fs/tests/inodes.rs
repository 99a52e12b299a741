//! The inode table as the kernel drives it: one inode per blob across the
//! mount, references given by lookups and returned by forget, memory that
//! follows what the kernel holds, and lookups in large repositories that
//! do not list them.

use std::time::Duration;

use super::{data, world_with, World};
use crate::fs::memory::Memory;
use crate::fs::{Error, Verify};
use crate::tree::ROOT_INO;

/// A repository whose tags share one weights file, each with notes of its
/// own, and a second repository with the same weights.
fn shared() -> (World, Vec<u8>) {
    let m = Memory::new();
    let weights = data(300_000, 3);
    for t in 0..5 {
        let notes = format!("notes of v{t}\n");
        m.push(
            "models/llm",
            &format!("v{t}"),
            &[("weights.bin", &weights), ("notes.txt", notes.as_bytes())],
        );
    }
    m.push("mirror/llm", "v0", &[("weights.bin", &weights)]);
    (
        world_with(m, Verify::Strict, Duration::from_secs(5)),
        weights,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_is_one_inode_in_every_tag_repository_and_name() {
    let (w, weights) = shared();
    let hex = crate::digest::Digest::of(&weights).hex().to_string();
    let mut inos = Vec::new();
    for path in [
        "models/llm/v0/weights.bin".to_string(),
        "models/llm/v3/weights.bin".to_string(),
        format!("models/llm/v4/blobs/sha256/{hex}"),
        "mirror/llm/v0/weights.bin".to_string(),
    ] {
        let ino = w.path(&path).await.unwrap();
        let a = w.fs.getattr(ino).await.unwrap();
        assert!(a.nlink >= 2, "{path}: nlink {}", a.nlink);
        assert_eq!(a.size, weights.len() as u64);
        inos.push(ino);
    }
    assert!(inos.windows(2).all(|p| p[0] == p[1]), "{inos:?}");
    let notes0 = w.path("models/llm/v0/notes.txt").await.unwrap();
    let notes1 = w.path("models/llm/v1/notes.txt").await.unwrap();
    assert_ne!(notes0, notes1, "different blobs, different inodes");
    assert_eq!(
        w.read_all("models/llm/v3/weights.bin", 65536)
            .await
            .unwrap(),
        weights
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_drops_inodes_and_a_blob_comes_back_with_its_number() {
    let (w, _) = shared();
    let before = w.fs.inode_count();
    // Each lookup is one reference of the kernel's, as in FUSE.
    let repo = w.fs.lookup(ROOT_INO, "models").await.unwrap().ino;
    let llm = w.fs.lookup(repo, "llm").await.unwrap().ino;
    let tag = w.fs.lookup(llm, "v2").await.unwrap().ino;
    let file = w.fs.lookup(tag, "weights.bin").await.unwrap().ino;
    let again = w.fs.lookup(tag, "weights.bin").await.unwrap().ino;
    assert_eq!(file, again);
    assert!(w.fs.inode_count() > before);
    w.fs.forget(file, 1);
    assert!(w.fs.getattr(file).await.is_ok(), "still held once");
    w.fs.forget_many(&[(file, 1), (tag, 1), (llm, 1), (repo, 1)]);
    assert!(matches!(w.fs.getattr(file).await, Err(Error::NotFound)));
    assert!(matches!(w.fs.getattr(tag).await, Err(Error::NotFound)));
    // What listing made and nobody held goes at the table's sweeps; what
    // the kernel held is gone now: only the root is held.
    assert!(w.fs.getattr(ROOT_INO).await.is_ok());
    let tag2 = w.path("models/llm/v2").await.unwrap();
    let file2 = w.fs.lookup(tag2, "weights.bin").await.unwrap().ino;
    assert_eq!(file2, file, "a blob's number is its own");
    assert_ne!(tag2, tag, "a folder's number was given back and not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_in_a_repository_of_many_tags_does_not_list_it() {
    let m = Memory::new();
    for t in 0..2000 {
        m.push("big", &format!("t{t:04}"), &[("a.txt", b"a\n")]);
    }
    let w = world_with(m, Verify::Strict, Duration::from_secs(5));
    let before = w.fs.inode_count();
    let tag = w.path("big/t1234").await.unwrap();
    assert!(w.fs.getattr(tag).await.is_ok());
    assert!(
        w.fs.inode_count() < before + 10,
        "{} inodes made by one lookup",
        w.fs.inode_count() - before
    );
    assert!(matches!(w.path("big/t9999").await, Err(Error::NotFound)));
    assert_eq!(w.names("big").await.len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_named_in_several_tags_is_replaced_by_name_not_written_in_place() {
    let (w, weights) = shared();
    let a = w.path("models/llm/v0/weights.bin").await.unwrap();
    // Known in one tag folder only: written in place (copied up there).
    let (fh, _) = w.fs.open(a, true, false).await.unwrap();
    w.fs.write(fh, 0, b"XY").unwrap();
    w.fs.release(fh);
    let got = w
        .read_all("models/llm/v0/weights.bin", 65536)
        .await
        .unwrap();
    assert_eq!(&got[..2], b"XY");
    assert_eq!(
        w.read_all("models/llm/v1/weights.bin", 65536)
            .await
            .unwrap(),
        weights,
        "the other tags keep the blob"
    );
    // Now known in two tag folders: which name an open came by is not
    // known, so it is refused, and nothing changes.
    let b = w.path("models/llm/v1/weights.bin").await.unwrap();
    let c = w.path("models/llm/v2/weights.bin").await.unwrap();
    assert_eq!(b, c);
    match w.fs.open(b, true, false).await {
        Err(Error::NotPermitted(_)) => {}
        other => panic!("expected EPERM, got {:?}", other.map(|(fh, _)| fh)),
    }
    assert_eq!(
        w.read_all("models/llm/v2/weights.bin", 65536)
            .await
            .unwrap(),
        weights
    );
    // Replacing the name works: rm, then write a new file.
    let tag = w.path("models/llm/v1").await.unwrap();
    w.fs.unlink(tag, "weights.bin").await.unwrap();
    let (_, fh) = w.fs.create(tag, "weights.bin", 0o644).await.unwrap();
    w.fs.write(fh, 0, b"new").unwrap();
    w.fs.release(fh);
    assert_eq!(
        w.read_all("models/llm/v1/weights.bin", 64).await.unwrap(),
        b"new"
    );
    assert_eq!(
        w.read_all("models/llm/v2/weights.bin", 65536)
            .await
            .unwrap(),
        weights
    );
}

/// Regression: the repositories shown were kept by the address of the
/// catalog listing they came from; a refreshed catalog allocated at the
/// old one's address showed the old repositories (a committed repository
/// stayed ENOENT until the catalog expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_pushed_before_a_refresh_shows_after_it() {
    let m = Memory::new();
    m.push("a", "v1", &[("a.txt", b"a")]);
    let w = world_with(m, Verify::Strict, Duration::from_secs(5));
    for i in 0..20 {
        assert!(w.path(&format!("n{i}")).await.is_err());
        assert!(!w.names("").await.contains(&format!("n{i}")));
        w.source.push(&format!("n{i}"), "v1", &[("a.txt", b"a")]);
        // As `regfs commit` does: forget what the cache saved, then refresh.
        let host = crate::fs::Source::host(&*w.source).to_string();
        w.fs.cache()
            .forget_tags(&host, &format!("n{i}"), &["v1".into()]);
        w.fs.refresh();
        assert!(w.names("").await.contains(&format!("n{i}")), "round {i}");
        assert!(w.path(&format!("n{i}/v1/a.txt")).await.is_ok(), "round {i}");
    }
}
