use super::*;

/// A tar of `(path, data, mode)` entries as `tar` writes them (ustar, GNU
/// long names past 100 bytes); a path ending in `/` is a folder.
fn tar_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            b.append_data(&mut h, path, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, *data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// A header whose name is written as is (no checks), then its data.
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

/// Indexes `tar` as a caller would, and records the furthest byte asked for.
fn index_of(tar: &[u8]) -> (Result<TarIndex, TarError>, u64) {
    let mut ix = Indexer::new(tar.len() as u64);
    let mut furthest = 0;
    while let Some(n) = ix.need() {
        let end = (n.offset as usize + n.len).min(tar.len());
        furthest = furthest.max(end as u64);
        if let Err(e) = ix.feed(&tar[n.offset as usize..end]) {
            return (Err(e), furthest);
        }
    }
    (Ok(ix.finish()), furthest)
}

fn index(tar: &[u8]) -> TarIndex {
    index_of(tar).0.unwrap()
}

fn bytes_of<'a>(tar: &'a [u8], m: &Member) -> &'a [u8] {
    &tar[m.offset as usize..(m.offset + m.size) as usize]
}

fn comps(p: &str) -> Vec<String> {
    p.split('/').map(String::from).collect()
}

#[test]
fn a_file_is_a_range_of_the_tar() {
    let weights: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let t = tar_of(&[
        ("model.bin", &weights, 0o644),
        ("run.sh", b"#!/bin/sh\n", 0o755),
    ]);
    let (ix, furthest) = index_of(&t);
    let ix = ix.unwrap();
    assert_eq!(ix.members.len(), 2);
    let m = &ix.members[0];
    assert_eq!(m.path, ["model.bin"]);
    assert_eq!(m.kind, FileKind::File);
    assert_eq!(m.offset, 512);
    assert_eq!(bytes_of(&t, m), &weights[..]);
    assert_eq!(m.mode, 0o644);
    assert_eq!(m.mtime, 1_700_000_000);
    assert_eq!(bytes_of(&t, &ix.members[1]), b"#!/bin/sh\n");
    assert_eq!(ix.members[1].mode, 0o755);
    // Headers only: the last block of the tar is never asked for (a lazy
    // read there would wait for the whole blob).
    assert!(furthest < t.len() as u64, "{furthest} of {}", t.len());
}

#[test]
fn folders_long_names_and_pax_records() {
    let long = format!("{}/tokenizer.json", "d".repeat(120));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "code/", &[][..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(5);
    b.append_data(&mut h, &long, &b"vocab"[..]).unwrap();
    // A PAX header naming the next entry and its mtime.
    b.append_pax_extensions([("path", &b"pax/name.txt"[..]), ("mtime", &b"1234.5"[..])])
        .unwrap();
    raw_entry(&mut b, "short", tar::EntryType::Regular, b"pax!");
    let t = b.into_inner().unwrap();
    let ix = index(&t);
    let paths: Vec<String> = ix.members.iter().map(|m| m.path.join("/")).collect();
    assert_eq!(paths, ["code", long.as_str(), "pax/name.txt"]);
    assert_eq!(ix.members[0].kind, FileKind::Dir);
    assert_eq!(bytes_of(&t, &ix.members[1]), b"vocab");
    assert_eq!(bytes_of(&t, &ix.members[2]), b"pax!");
    assert_eq!(ix.members[2].mtime, 1234);
}

#[test]
fn a_pax_size_is_the_size_of_the_entry_that_follows() {
    // How a file past 8 GiB is written; here the ustar field says 0.
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("size", &b"6"[..])]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..3].copy_from_slice(b"big");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    // Unfinished: no end-of-archive blocks yet.
    let mut t = b.get_ref().clone();
    // The data the PAX size claims, padded, then the next entry.
    let at = t.len();
    t.extend_from_slice(b"sixby!");
    t.resize(at + 512, 0);
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "next", tar::EntryType::Regular, b"n");
    t.extend_from_slice(&b.into_inner().unwrap());
    let ix = index(&t);
    assert_eq!(ix.members.len(), 2);
    assert_eq!(bytes_of(&t, &ix.members[0]), b"sixby!");
    assert_eq!(bytes_of(&t, &ix.members[1]), b"n");
}

#[test]
fn links_devices_and_unsafe_paths_are_left_out() {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(&mut b, "../escape", tar::EntryType::Regular, b"x");
    raw_entry(&mut b, "/etc/passwd", tar::EntryType::Regular, b"x");
    raw_entry(&mut b, "link", tar::EntryType::Symlink, b"");
    raw_entry(&mut b, "hard", tar::EntryType::Link, b"");
    raw_entry(&mut b, "fifo", tar::EntryType::Fifo, b"");
    raw_entry(&mut b, "./", tar::EntryType::Directory, b"");
    raw_entry(&mut b, "./ok.txt", tar::EntryType::Regular, b"ok");
    let t = b.into_inner().unwrap();
    let ix = index(&t);
    assert_eq!(ix.members.len(), 1);
    assert_eq!(ix.members[0].path, ["ok.txt"]);
    assert_eq!(ix.skipped.len(), 5, "{:?}", ix.skipped);
    assert!(ix.skipped[0].contains("unsafe path"), "{:?}", ix.skipped);
}

#[test]
fn damaged_and_cut_tars_are_errors() {
    let t = tar_of(&[("a.txt", b"hello", 0o644)]);
    let mut bad = t.clone();
    bad[10] ^= 1;
    assert_eq!(index_of(&bad).0, Err(TarError::Checksum(0)));
    // Cut inside the file's data.
    assert_eq!(index_of(&t[..515]).0, Err(TarError::Truncated(0)));
    // Cut after the file (no end-of-archive blocks): the end.
    assert_eq!(index(&t[..1024]).members.len(), 1);
    // Empty or tiny: nothing.
    assert_eq!(index(&[]), TarIndex::default());
    assert_eq!(index(&[0u8; 1024]), TarIndex::default());
}

fn member(path: &str, size: u64) -> Member {
    Member {
        path: comps(path),
        kind: if path.ends_with('/') {
            FileKind::Dir
        } else {
            FileKind::File
        },
        offset: 512,
        size,
        mode: 0o644,
        mtime: 0,
    }
}

fn index_with(paths: &[&str]) -> TarIndex {
    TarIndex {
        members: paths
            .iter()
            .map(|p| {
                let mut m = member(p.trim_end_matches('/'), 3);
                if p.ends_with('/') {
                    m.kind = FileKind::Dir;
                    m.size = 0;
                }
                m
            })
            .collect(),
        skipped: Vec::new(),
    }
}

fn layout(paths: &[&str], filepath: &str, hint: Option<(FileKind, Option<u64>)>) -> Layout {
    let mut skipped = Vec::new();
    Layout::of(&index_with(paths), &comps(filepath), hint, &mut skipped).unwrap()
}

fn names(f: &Folder) -> Vec<&str> {
    f.entries.keys().map(String::as_str).collect()
}

#[test]
fn one_file_is_the_layer_itself() {
    // modctl names it by its filepath; older modctl by its last component.
    for name in ["w/model.bin", "model.bin"] {
        let l = layout(&[name], "w/model.bin", None);
        assert!(
            matches!(&l, Layout::File(m) if m.path == comps(name)),
            "{name}"
        );
        assert!(l.file(&[]).is_some());
        assert!(l.dir(&[]).is_none());
    }
    // Its metadata agrees.
    let l = layout(&["model.bin"], "model.bin", Some((FileKind::File, Some(3))));
    assert!(matches!(l, Layout::File(_)));
}

#[test]
fn a_folder_layer_shows_its_entries_below_its_own_folder() {
    let l = layout(
        &[
            "code/",
            "code/a.py",
            "code/lib/",
            "code/lib/b.py",
            "top.txt",
        ],
        "code",
        None,
    );
    let root = l.dir(&[]).unwrap();
    assert_eq!(names(root), ["a.py", "lib", "top.txt"]);
    assert_eq!(names(l.dir(&comps("lib")).unwrap()), ["b.py"]);
    assert_eq!(
        l.file(&comps("lib/b.py")).unwrap().path,
        comps("code/lib/b.py")
    );
    assert!(l.file(&comps("lib")).is_none());
    assert!(l.file(&[]).is_none());
    // One file, inside the layer's folder: still a folder.
    let l = layout(&["docs/README.md"], "docs", None);
    assert_eq!(names(l.dir(&[]).unwrap()), ["README.md"]);
    // The metadata says folder: a single file is shown inside it.
    let l = layout(&["README.md"], "docs", Some((FileKind::Dir, None)));
    assert_eq!(names(l.dir(&[]).unwrap()), ["README.md"]);
}

#[test]
fn later_files_replace_earlier_ones_and_conflicts_are_logged() {
    let mut ix = index_with(&["d/a", "d/a", "d/a/x", "d/b/", "d/b"]);
    ix.members[1].offset = 9999;
    let mut skipped = Vec::new();
    let l = Layout::of(&ix, &comps("d"), None, &mut skipped).unwrap();
    assert_eq!(l.file(&comps("a")).unwrap().offset, 9999);
    assert!(l.dir(&comps("b")).is_some());
    assert_eq!(skipped.len(), 2, "{skipped:?}");
}

#[test]
fn metadata_the_tar_contradicts_is_an_error() {
    let mut skipped = Vec::new();
    let two = index_with(&["a", "b"]);
    let e = Layout::of(
        &two,
        &comps("a"),
        Some((FileKind::File, None)),
        &mut skipped,
    )
    .unwrap_err();
    assert!(e.contains("holds 2 files"), "{e}");
    let one = index_with(&["a"]);
    let e = Layout::of(
        &one,
        &comps("a"),
        Some((FileKind::File, Some(4))),
        &mut skipped,
    )
    .unwrap_err();
    assert!(e.contains("says 4 bytes"), "{e}");
}

#[test]
fn entry_paths() {
    let ok = |s: &str, v: &[&str]| {
        assert_eq!(
            safe_entry_path(s),
            Some(v.iter().map(|x| x.to_string()).collect()),
            "{s}"
        )
    };
    ok("dir/file", &["dir", "file"]);
    ok("./dir/", &["dir"]);
    ok("a//b", &["a", "b"]);
    for bad in ["/etc/passwd", "../x", "a/../../x", "a/\0b"] {
        assert_eq!(safe_entry_path(bad), None, "{bad}");
    }
}
