//! Title safety: a title accepted as a path is relative, has no empty,
//! `.` or `..` component, no NUL, and components of at most 255 bytes; the
//! same rules hold for tar entry paths. (Reserved first components are the
//! view's to refuse: see the `view_parse` target.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfs::fs::fuzzing::safe_entry_path;
use regfs::tree::view::title_components;

fn safe(c: &str) -> bool {
    !c.is_empty()
        && c != "."
        && c != ".."
        && !c.contains('/')
        && !c.contains('\0')
        && c.len() <= 255
}

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Ok(parts) = title_components(&s) {
        assert!(!parts.is_empty(), "{s:?}");
        assert!(!s.starts_with('/'), "{s:?}");
        for c in &parts {
            assert!(safe(c), "{s:?} gave {c:?}");
        }
        assert_eq!(parts.join("/"), s, "a title is its components");
    }
    if let Some(parts) = safe_entry_path(&s) {
        assert!(!s.starts_with('/'), "{s:?}");
        for c in &parts {
            assert!(safe(c), "{s:?} gave {c:?}");
        }
    }
});
