//! Fetching ahead of a walk: repositories listed one after another in the
//! catalog's order have the next ones fetched before the walk gets there;
//! a single listing fetches nothing ahead.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{world_with, World};
use crate::fs::memory::Memory;
use crate::fs::Verify;

/// Repositories `walk/r0` .. `walk/r7`, three tags each.
fn repos() -> World {
    let m = Memory::new();
    for r in 0..8 {
        for t in 0..3 {
            let body = format!("r{r} t{t}\n");
            m.push(
                &format!("walk/r{r}"),
                &format!("t{t}"),
                &[("f.txt", body.as_bytes())],
            );
        }
    }
    world_with(m, Verify::Strict, Duration::from_secs(5))
}

fn gets(w: &World) -> u64 {
    w.source.manifest_gets.load(Ordering::Relaxed)
}

/// Waits until `n` manifests were asked for (or 5 s passed).
async fn until_gets(w: &World, n: u64) -> u64 {
    for _ in 0..500 {
        if gets(w) >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything more would come now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    gets(w)
}

/// Waits until nothing is fetched ahead (or 5 s passed); whether so.
async fn until_done_fetching(w: &World) -> bool {
    for _ in 0..500 {
        if !w.fs.fetching_ahead() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    !w.fs.fetching_ahead()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_finds_the_next_repositories_fetched() {
    let w = repos();
    w.names("walk/r0").await;
    w.names("walk/r1").await;
    // r2..r5 are fetched ahead: a manifest for each of their 12 tags.
    assert_eq!(until_gets(&w, 12).await, 12, "r2..r5, not r6 or r7");
    // The walk finds them without asking.
    for t in 0..3 {
        assert_eq!(w.names(&format!("walk/r3/t{t}")).await.len(), 4);
    }
    assert_eq!(gets(&w), 12, "walking r3 asked for nothing");
    // Each listing moves the window on: r6, then r7.
    w.names("walk/r2").await;
    assert_eq!(until_gets(&w, 15).await, 15);
    w.names("walk/r3").await;
    assert_eq!(until_gets(&w, 18).await, 18);
    // Done fetching: nothing at work any more (the FUSE thread may spin).
    assert!(until_done_fetching(&w).await);
}

/// While repositories are fetched ahead, the filesystem says so (the FUSE
/// thread then sleeps between requests instead of spinning beside them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_ahead_is_work_in_flight_until_it_ends() {
    let w = repos();
    assert!(!w.fs.fetching_ahead());
    *w.source.referrers_wait.lock().unwrap() = Duration::from_millis(300);
    w.names("walk/r0").await;
    w.names("walk/r1").await;
    assert!(w.fs.fetching_ahead(), "r2..r5 are being fetched");
    until_gets(&w, 12).await;
    assert!(until_done_fetching(&w).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_listing_fetches_nothing_ahead() {
    let w = repos();
    w.names("walk/r3").await;
    // Going back is no walk either.
    w.names("walk/r1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gets(&w), 0);
}
