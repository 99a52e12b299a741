//! Which blobs to evict: a pure plan over what is on disk.

use std::collections::HashSet;

use crate::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub digest: Digest,
    pub size: u64,
    /// Last use, seconds since the epoch.
    pub used: i64,
}

/// The blobs to remove, least recently used first, so that what stays fits
/// in `budget` bytes. Blobs in `open` are never chosen.
pub fn plan_eviction(
    mut entries: Vec<CacheEntry>,
    open: &HashSet<Digest>,
    budget: u64,
) -> Vec<Digest> {
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    if total <= budget {
        return Vec::new();
    }
    entries.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.digest.cmp(&b.digest)));
    let mut out = Vec::new();
    for e in entries {
        if total <= budget {
            break;
        }
        if open.contains(&e.digest) {
            continue;
        }
        total -= e.size;
        out.push(e.digest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &[u8], size: u64, used: i64) -> CacheEntry {
        CacheEntry {
            digest: Digest::of(name),
            size,
            used,
        }
    }

    #[test]
    fn evicts_oldest_first_and_skips_open() {
        let entries = vec![e(b"a", 10, 3), e(b"b", 10, 1), e(b"c", 10, 2)];
        assert!(plan_eviction(entries.clone(), &HashSet::new(), 30).is_empty());
        assert_eq!(
            plan_eviction(entries.clone(), &HashSet::new(), 20),
            vec![Digest::of(b"b")]
        );
        assert_eq!(
            plan_eviction(entries.clone(), &HashSet::new(), 5),
            vec![Digest::of(b"b"), Digest::of(b"c"), Digest::of(b"a")]
        );
        let open: HashSet<_> = [Digest::of(b"b")].into();
        assert_eq!(plan_eviction(entries, &open, 20), vec![Digest::of(b"c")]);
    }
}
