//! `Link` pagination headers, and the next page's URL made from one:
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use regfs::registry::link::{absolute, next_link};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some(next) = next_link(&s) {
        let _ = absolute("http://127.0.0.1:5000/v2/_catalog?n=100", &next);
        let _ = absolute("https://registry.example", &next);
    }
    let mid = s
        .char_indices()
        .nth(s.chars().count() / 2)
        .map_or(s.len(), |(i, _)| i);
    let (base, link) = s.split_at(mid);
    let _ = absolute(base, link);
});
