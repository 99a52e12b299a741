//! Unpacking a directory layer: the fuzzed bytes are the tar stream (the
//! target gzips it, so the fuzzer works on tar structure, not checksums).
//! Never a panic, never a file outside the folder unpacked into, never a
//! link or anything but files and folders inside it, never more written
//! than the room given.
#![no_main]

use std::io::Write;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use regfs::digest::Digest;
use regfs::fs::fuzzing::{unpack_into, Room};

/// Room for `0` bytes, and no more.
struct Most(u64);

impl Room for Most {
    fn reserve(&self, _: u64, need: u64, _: bool) -> Result<Option<u64>, String> {
        Ok((need <= self.0).then_some(self.0))
    }
}

const ROOM: u64 = 4 << 20;

/// Bytes of the files under `p`; panics on anything but files and folders.
fn walk(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.path().symlink_metadata().unwrap();
        let t = m.file_type();
        assert!(t.is_file() || t.is_dir(), "{} is {t:?}", e.path().display());
        total += if t.is_dir() { walk(&e.path()) } else { m.len() };
    }
    total
}

fuzz_target!(|tar: &[u8]| {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    let gz = gz.finish().unwrap();
    let outer = tempfile::tempdir().unwrap();
    let into = outer.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let r = unpack_into(
        std::io::Cursor::new(&gz),
        gz.len() as u64,
        &into,
        &Digest::of(&gz),
        &Most(ROOM),
    );
    let names: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["into"], "something was made outside the folder");
    let held = walk(&into);
    assert!(held <= ROOM, "{held} bytes written with room for {ROOM}");
    if let Ok(charged) = r {
        assert!(held <= charged, "{held} bytes written, {charged} charged");
    }
});
