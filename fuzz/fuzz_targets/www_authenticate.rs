//! `WWW-Authenticate` challenges, as any registry may send them: never a
//! panic; a Bearer challenge always has a realm.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfs::auth::{parse_challenge, Challenge};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(Challenge::Bearer { realm, .. }) = parse_challenge(&s) {
        assert!(!realm.is_empty(), "{s:?}");
    }
});
