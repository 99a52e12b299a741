//! What to evict: a pure plan over what is on disk. The cache holds two
//! kinds of things that count against its bound, verified blobs and the
//! unpacked trees of directory layers; both are evicted least recently used
//! first, and neither while this process has it in use.

use std::collections::HashSet;

use crate::digest::Digest;

/// One thing the cache holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cached {
    /// `blobs/sha256/<hex>`.
    Blob(Digest),
    /// `unpacked/sha256/<hex>/`: the unpacked tree of directory layer `hex`.
    Unpacked(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub what: Cached,
    /// Bytes it takes (for a tree: the bytes its unpacking was charged).
    pub size: u64,
    /// Last use, seconds since the epoch.
    pub used: i64,
}

/// The entries to remove, least recently used first, so that what stays fits
/// in `budget` bytes. Entries in `open` are never chosen.
pub fn plan_eviction(
    mut entries: Vec<CacheEntry>,
    open: &HashSet<Cached>,
    budget: u64,
) -> Vec<Cached> {
    let mut total: u64 = entries.iter().map(|e| e.size).sum();
    if total <= budget {
        return Vec::new();
    }
    entries.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.what.cmp(&b.what)));
    let mut out = Vec::new();
    for e in entries {
        if total <= budget {
            break;
        }
        if open.contains(&e.what) {
            continue;
        }
        total -= e.size;
        out.push(e.what);
    }
    out
}

/// Room for something being written outside the entries (a tree being
/// unpacked) that will hold `need` bytes in all: the entries to evict for
/// it, least recently used first, and the bytes it may then hold (at least
/// `need`). `None`, and nothing evicted, when even evicting every entry not
/// in `open` would not make room for `need`.
pub fn plan_room(
    entries: Vec<CacheEntry>,
    open: &HashSet<Cached>,
    budget: u64,
    need: u64,
) -> Option<(Vec<Cached>, u64)> {
    let kept: u64 = entries
        .iter()
        .filter(|e| open.contains(&e.what))
        .map(|e| e.size)
        .sum();
    if kept.saturating_add(need) > budget {
        return None;
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let sizes: std::collections::HashMap<Cached, u64> =
        entries.iter().map(|e| (e.what.clone(), e.size)).collect();
    let evict = plan_eviction(entries, open, budget - need);
    let freed: u64 = evict.iter().filter_map(|w| sizes.get(w)).sum();
    Some((evict, budget - (total - freed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &[u8], size: u64, used: i64) -> CacheEntry {
        CacheEntry {
            what: Cached::Blob(Digest::of(name)),
            size,
            used,
        }
    }

    fn blob(name: &[u8]) -> Cached {
        Cached::Blob(Digest::of(name))
    }

    #[test]
    fn evicts_oldest_first_and_skips_open() {
        let entries = vec![e(b"a", 10, 3), e(b"b", 10, 1), e(b"c", 10, 2)];
        assert!(plan_eviction(entries.clone(), &HashSet::new(), 30).is_empty());
        assert_eq!(
            plan_eviction(entries.clone(), &HashSet::new(), 20),
            vec![blob(b"b")]
        );
        assert_eq!(
            plan_eviction(entries.clone(), &HashSet::new(), 5),
            vec![blob(b"b"), blob(b"c"), blob(b"a")]
        );
        let open: HashSet<_> = [blob(b"b")].into();
        assert_eq!(plan_eviction(entries, &open, 20), vec![blob(b"c")]);
    }

    #[test]
    fn a_tree_and_the_blob_it_came_from_are_two_entries() {
        let d = Digest::of(b"layer");
        let entries = vec![
            CacheEntry {
                what: Cached::Blob(d.clone()),
                size: 10,
                used: 2,
            },
            CacheEntry {
                what: Cached::Unpacked(d.clone()),
                size: 100,
                used: 1,
            },
        ];
        // The tree is in use: only the blob can go.
        let open: HashSet<_> = [Cached::Unpacked(d.clone())].into();
        assert_eq!(
            plan_eviction(entries.clone(), &open, 50),
            vec![Cached::Blob(d.clone())]
        );
        assert_eq!(
            plan_eviction(entries, &HashSet::new(), 50),
            vec![Cached::Unpacked(d)]
        );
    }

    #[test]
    fn room_is_made_by_eviction_only_when_it_can_be_had() {
        let entries = vec![e(b"a", 10, 3), e(b"b", 10, 1), e(b"c", 10, 2)];
        let none = HashSet::new();
        // Free room already: nothing evicted, all of it granted.
        assert_eq!(
            plan_room(entries.clone(), &none, 100, 20),
            Some((vec![], 70))
        );
        // 20 needed of a budget of 40 holding 30: the oldest goes.
        assert_eq!(
            plan_room(entries.clone(), &none, 40, 20),
            Some((vec![blob(b"b")], 20))
        );
        // Two have to go for 25.
        assert_eq!(
            plan_room(entries.clone(), &none, 40, 25),
            Some((vec![blob(b"b"), blob(b"c")], 30))
        );
        let open: HashSet<_> = [blob(b"a"), blob(b"c")].into();
        assert_eq!(
            plan_room(entries.clone(), &open, 40, 15),
            Some((vec![blob(b"b")], 20))
        );
        // More than could ever fit beside what is open: nothing is evicted.
        assert_eq!(plan_room(entries.clone(), &open, 40, 21), None);
        assert_eq!(plan_room(entries, &none, 40, 41), None);
        // Open entries alone past the budget (a smaller disk): no room.
        assert_eq!(
            plan_room(vec![e(b"a", 50, 1)], &[blob(b"a")].into(), 40, 0),
            None
        );
    }
}
