//! Fetching ahead of a walk. `ls -R`, `find` and `rsync` go through the
//! repositories one after another, and inside each, one tag after another:
//! each costs round trips the walk waits for. When repositories are listed
//! in the catalog's order (the one listed now follows one listed just
//! before it: a walk, not a single `ls`), the next `WINDOW` repositories
//! are fetched ahead: their tag lists, each tag's manifest (and an index's
//! platform manifests) and referrers, `AT_ONCE` requests in flight in all.
//! What was fetched is what the walk would have asked for, kept in
//! `Metadata` as if it had (tag resolutions for `--tag-ttl`, manifests by
//! digest); a request the walk makes meanwhile shares the one in flight.
//!
//! The choice of what to fetch is pure (`ahead`); the fetching is the edge.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use tokio::sync::Semaphore;

use super::lock;
use super::metadata::Metadata;
use crate::tree::Target;

/// Repositories fetched ahead of the one listed.
const WINDOW: usize = 4;
/// Requests in flight for fetching ahead, in all.
const AT_ONCE: usize = 16;
/// Tags of one repository fetched ahead, at most (a repository of 10,000
/// tags is resolved by the walk's own listing, 16 at a time).
const MOST_TAGS: usize = 500;

pub(super) struct WalkAhead {
    metadata: Arc<Metadata>,
    /// Repositories (full names) fetched ahead, or listed, since the last
    /// refresh (`Metadata::generation`).
    seen: Mutex<(u64, HashSet<String>)>,
    /// The index (in the repositories shown) of the last repository listed.
    last: Mutex<Option<usize>>,
    permits: Arc<Semaphore>,
    /// Repositories being fetched ahead now.
    fetching: Arc<std::sync::atomic::AtomicUsize>,
}

/// Which repositories to fetch ahead when the one at `at` (of `count`, in
/// the catalog's order) is listed and the one listed before was at `last`:
/// the next `WINDOW` if the listing goes forward (a walk), else none.
pub(super) fn ahead(at: usize, last: Option<usize>, count: usize) -> std::ops::Range<usize> {
    let walking = last.is_some_and(|l| l < at && at - l <= WINDOW);
    if !walking {
        return at..at;
    }
    let from = (at + 1).min(count);
    from..(at + 1 + WINDOW).min(count)
}

impl WalkAhead {
    pub(super) fn new(metadata: Arc<Metadata>) -> WalkAhead {
        WalkAhead {
            metadata,
            seen: Mutex::new((0, HashSet::new())),
            last: Mutex::new(None),
            permits: Arc::new(Semaphore::new(AT_ONCE)),
            fetching: Default::default(),
        }
    }

    /// The repository `path` is being listed; `repos` are the repositories
    /// shown (relative to the prefix, sorted). Never waits: the fetching
    /// goes on in tasks of its own.
    pub(super) fn listed(&self, path: &str, repos: &[String]) {
        let Ok(at) = repos.binary_search_by(|r| r.as_str().cmp(path)) else {
            return;
        };
        let range = {
            let mut last = lock(&self.last);
            let r = ahead(at, *last, repos.len());
            *last = Some(at);
            r
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut names = Vec::new();
        {
            let generation = self.metadata.generation();
            let mut seen = lock(&self.seen);
            if seen.0 != generation {
                *seen = (generation, HashSet::new());
            }
            seen.1.insert(self.metadata.full_repo(path));
            for r in &repos[range] {
                let full = self.metadata.full_repo(r);
                if seen.1.insert(full.clone()) {
                    names.push(full);
                }
            }
        }
        for repo in names {
            let (metadata, permits) = (self.metadata.clone(), self.permits.clone());
            let fetching = Fetching::start(&self.fetching);
            rt.spawn(async move {
                fetch_repository(metadata, permits, repo).await;
                drop(fetching);
            });
        }
    }

    /// Whether repositories are being fetched ahead now.
    pub(super) fn is_fetching(&self) -> bool {
        self.fetching.load(std::sync::atomic::Ordering::Relaxed) > 0
    }
}

/// Counts a repository being fetched ahead while it lives.
struct Fetching(Arc<std::sync::atomic::AtomicUsize>);

impl Fetching {
    fn start(n: &Arc<std::sync::atomic::AtomicUsize>) -> Fetching {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Fetching(n.clone())
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything a walk of `repo` asks the registry for, `AT_ONCE` at a time
/// with every other repository fetched ahead. Failures are left for the
/// walk to meet (and report).
async fn fetch_repository(metadata: Arc<Metadata>, permits: Arc<Semaphore>, repo: String) {
    let tags = {
        let Ok(_p) = permits.acquire().await else {
            return;
        };
        match metadata.tags_of(&repo).await {
            Ok(t) => t,
            Err(_) => return,
        }
    };
    let metadata = &metadata;
    let repo = &repo;
    let permits = &permits;
    stream::iter(tags.iter().take(MOST_TAGS).cloned())
        .for_each_concurrent(AT_ONCE, |tag| async move {
            let d = {
                let Ok(_p) = permits.acquire().await else {
                    return;
                };
                match metadata.resolve(repo, &Target::Tag(tag)).await {
                    Ok(d) => d,
                    Err(_) => return,
                }
            };
            let Ok(_p) = permits.acquire().await else {
                return;
            };
            let Ok(view) = metadata.view(repo, &d).await else {
                return;
            };
            let _ = metadata.referrers(repo, &d).await;
            for child in &view.children {
                let _ = metadata.view(repo, &child.digest).await;
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_listing_that_goes_forward_fetches_ahead() {
        // The first listing, or one that went back: a single `ls`.
        assert_eq!(ahead(3, None, 100), 3..3);
        assert_eq!(ahead(3, Some(7), 100), 3..3);
        assert_eq!(ahead(3, Some(3), 100), 3..3);
        // Far from the last one: someone looking around, not a walk.
        assert_eq!(ahead(50, Some(3), 100), 50..50);
        // The next one, or a few further (a walk that skipped some).
        assert_eq!(ahead(4, Some(3), 100), 5..5 + WINDOW);
        assert_eq!(ahead(6, Some(3), 100), 7..7 + WINDOW);
        // Never past the end.
        assert_eq!(ahead(98, Some(97), 100), 99..100);
        assert_eq!(ahead(99, Some(98), 100), 100..100);
    }
}
