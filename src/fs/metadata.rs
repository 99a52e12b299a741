//! What the registry says, cached: the catalog and tag listings, tag
//! resolutions (trusted for `--tag-ttl`, the last known one used while the
//! registry is unreachable), manifests by digest with their views, and
//! referrer listings. `Metadata` owns all of it; nothing else in `fs`
//! talks to the source about anything but blob bytes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use lru::LruCache;

use super::source::Source;
use super::{lock, Error};
use crate::cache::{now_secs, Cache, TagRef};
use crate::digest::Digest;
use crate::reference::{is_repository, is_tag};
use crate::registry;
use crate::tree::view::View;
use crate::tree::Target;

/// Tags of the referrers tag schema (`sha256-<hex>`) are not shown as tags.
pub fn is_referrers_tag(t: &str) -> bool {
    t.strip_prefix("sha256-")
        .is_some_and(|h| Digest::from_hex(h).is_ok())
}

/// One request at a time per key (a tag, a tag list, a manifest, a
/// listing of referrers): a walk
/// and the fetching ahead of it (`fs::walkahead`) asking for the same thing
/// at once share one request; the second finds the first's answer cached.
#[derive(Default)]
struct Flights(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Held while a keyed request is in flight; the key goes when nobody waits.
struct Flight<'a> {
    flights: &'a Flights,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Flights {
    /// `fresh()`'s answer when it has one; else `fetch`'s, one caller per
    /// `key` at a time: the others wait, then find its answer in `fresh`.
    /// The key is made only when there is something to fetch (a warm walk
    /// asks for thousands of fresh answers).
    async fn once<T, Fut>(
        &self,
        key: impl FnOnce() -> String,
        fresh: impl Fn() -> Option<T>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<T, Error>
    where
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        if let Some(v) = fresh() {
            return Ok(v);
        }
        let _one = self.enter(key()).await;
        if let Some(v) = fresh() {
            return Ok(v);
        }
        fetch().await
    }

    async fn enter(&self, key: String) -> Flight<'_> {
        let m = lock(&self.0).entry(key.clone()).or_default().clone();
        let guard = m.lock_owned().await;
        Flight {
            flights: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut map = lock(&self.flights.0);
        // Only the map holds it: nobody is waiting (waiters clone it under
        // this lock).
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Tag resolutions and when each was made, by repository, then tag (a
/// repository's name held once, not once per tag; a tag's name inline when
/// short, as nearly all are; looked up without making a key).
#[derive(Default)]
struct Resolutions(HashMap<String, HashMap<crate::tree::Name, (Digest, Instant)>>);

impl Resolutions {
    fn get(&self, repo: &str, tag: &str) -> Option<&(Digest, Instant)> {
        self.0.get(repo)?.get(tag)
    }

    fn insert(&mut self, repo: &str, tag: &str, resolution: (Digest, Instant)) {
        let tags = match self.0.get_mut(repo) {
            Some(tags) => tags,
            None => self.0.entry(repo.to_string()).or_default(),
        };
        tags.insert(tag.into(), resolution);
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Names of a listing and when they were fetched.
struct Listing {
    names: Arc<Vec<String>>,
    at: Instant,
    /// Of a tag listing: its referrers-schema tags (`sha256-<hex>`).
    schema: HashSet<String>,
}

/// The catalog as last listed.
struct Catalog {
    names: Arc<Vec<String>>,
    at: Instant,
    /// The registry's whole answer (not an empty one made up for a
    /// registry without a catalog, nor the last known one while it is
    /// unreachable).
    whole: bool,
}

/// The repositories shown, and the catalog listing and count of known
/// repositories they were made from (the listing itself is held, so a new
/// listing can never be taken for it because it got its address).
type Shown = (Arc<Vec<String>>, Arc<Vec<String>>, usize);

/// What a parsed view is taken to cost in memory, per byte of its
/// manifest (its maps, names and descriptors), plus a fixed part. Measured
/// on a walk of 3,000 small artifacts (about 700-byte manifests): 6.3 KiB
/// of resident memory per view; this estimate is a little above that.
const VIEW_BYTES_PER_BYTE: usize = 8;
const VIEW_BYTES_FIXED: usize = 2048;

/// Parsed manifest views kept in memory, least recently used dropped
/// first once their estimated size passes the bound (`--metadata-cache`):
/// a dropped view is parsed again from the manifest in the disk cache.
struct Views {
    lru: LruCache<Digest, (Arc<View>, i64, usize)>,
    bytes: usize,
    bound: usize,
}

impl Views {
    fn get(&mut self, d: &Digest) -> Option<(Arc<View>, i64)> {
        self.lru.get(d).map(|(v, m, _)| (v.clone(), *m))
    }

    fn put(&mut self, d: Digest, view: Arc<View>, mtime: i64, manifest_len: usize) {
        let cost = manifest_len * VIEW_BYTES_PER_BYTE + VIEW_BYTES_FIXED;
        if let Some((_, _, old)) = self.lru.put(d, (view, mtime, cost)) {
            self.bytes -= old;
        }
        self.bytes += cost;
        // The one just put stays, whatever its size.
        while self.bytes > self.bound && self.lru.len() > 1 {
            match self.lru.pop_lru() {
                Some((_, (_, _, c))) => self.bytes -= c,
                None => break,
            }
        }
    }
}

pub(super) struct Metadata {
    source: Arc<dyn Source>,
    cache: Arc<Cache>,
    /// Only repositories under this prefix are shown, relative to it.
    prefix: Option<String>,
    tag_ttl: Duration,
    views: Mutex<Views>,
    tags: Mutex<Resolutions>,
    /// Tags of a repository, and referrers of `repo@digest`.
    lists: Mutex<HashMap<String, Listing>>,
    known_repos: Mutex<BTreeSet<String>>,
    catalog: Mutex<Option<Catalog>>,
    /// The repositories last shown, sorted, with the catalog listing and
    /// the count of known repositories they were made from.
    shown: Mutex<Option<Shown>>,
    /// Bumped by `refresh`: what was fetched before it is not kept after it.
    generation: AtomicU64,
    flights: Flights,
}

impl Metadata {
    pub(super) fn new(
        source: Arc<dyn Source>,
        cache: Arc<Cache>,
        prefix: Option<String>,
        repos: &[String],
        tag_ttl: Duration,
        view_bytes: usize,
    ) -> Metadata {
        Metadata {
            source,
            cache,
            prefix,
            tag_ttl,
            views: Mutex::new(Views {
                lru: LruCache::unbounded(),
                bytes: 0,
                bound: view_bytes,
            }),
            tags: Mutex::default(),
            lists: Mutex::new(HashMap::new()),
            known_repos: Mutex::new(repos.iter().cloned().collect()),
            catalog: Mutex::new(None),
            shown: Mutex::new(None),
            generation: AtomicU64::new(0),
            flights: Flights::default(),
        }
    }

    fn host(&self) -> &str {
        self.source.host()
    }

    /// The full repository name of a folder path relative to the prefix.
    pub(super) fn full_repo(&self, path: &str) -> String {
        match (&self.prefix, path.is_empty()) {
            (Some(p), true) => p.clone(),
            (Some(p), false) => format!("{p}/{path}"),
            (None, _) => path.to_string(),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Forgets tags, listings and the catalog (after a commit or discard by
    /// another process): the next look asks the registry.
    pub(super) fn refresh(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.tags).clear();
        lock(&self.lists).clear();
        *lock(&self.catalog) = None;
        *lock(&self.shown) = None;
    }

    /// Whether the tags of `repo` (or the referrers of `repo@digest`) were
    /// listed since the last refresh.
    pub(super) fn listed(&self, key: &str) -> bool {
        lock(&self.lists).contains_key(key)
    }

    /// The names of listing `key` (a repository's tags, or `repo@digest`'s
    /// referrers) while younger than `--tag-ttl`.
    fn fresh_listing(&self, key: &str) -> Option<Arc<Vec<String>>> {
        lock(&self.lists)
            .get(key)
            .filter(|l| l.at.elapsed() < self.tag_ttl)
            .map(|l| l.names.clone())
    }

    /// Whether the catalog was listed since the last refresh.
    pub(super) fn catalog_listed(&self) -> bool {
        lock(&self.catalog).is_some()
    }

    /// A tag found by name that the listing of `repo` did not have.
    pub(super) fn forget_tags_of(&self, repo: &str) {
        lock(&self.lists).remove(repo);
    }

    /// Whether `full` is a repository (it has a tag list); remembered.
    pub(super) async fn probe_repository(&self, full: &str) -> Result<bool, Error> {
        match self.source.tags(full).await {
            Ok(_) => {
                lock(&self.known_repos).insert(full.to_string());
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Artifacts whose subject is `subject`, as digest names, sorted;
    /// trusted for `--tag-ttl` like a tag. A listed manifest is kept only
    /// if its own `subject` is `subject`: a tag-schema index (or a
    /// registry) can list anything, itself included.
    pub(super) async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Arc<Vec<String>>, Error> {
        // Known to be none from the repository's tag list (no
        // `sha256-<hex>` tag): nothing is fetched, nor kept per manifest
        // (a walk of 100,000 tags would keep 100,000 empty listings); the
        // folder's stamp stays that of a folder never listed.
        if self.no_schema_tag(repo, subject) {
            return Ok(Arc::new(Vec::new()));
        }
        let key = format!("{repo}@{subject}");
        let fresh = || self.fresh_listing(&key);
        let fetch = || self.fetch_referrers(repo, subject, key.clone());
        self.flights
            .once(|| format!("referrers {key}"), fresh, fetch)
            .await
    }

    async fn fetch_referrers(
        &self,
        repo: &str,
        subject: &Digest,
        key: String,
    ) -> Result<Arc<Vec<String>>, Error> {
        let mut found = self.source.referrers(repo, subject).await?;
        found.sort();
        found.dedup();
        let checked: Vec<(Digest, Result<Arc<View>, Error>)> = stream::iter(found)
            .map(|d| async move {
                let v = self.view(repo, &d).await;
                (d, v)
            })
            .buffered(8)
            .collect()
            .await;
        let mut names = Vec::new();
        for (d, view) in checked {
            match view {
                Ok(v) => match v.subject.as_ref().map(|s| &s.digest) {
                    Some(s) if s == subject => names.push(d.to_string()),
                    other => tracing::warn!(
                        %subject,
                        referrer = %d,
                        "listed as a referrer but its subject is {}; not shown",
                        other.map_or("missing".to_string(), |s| s.to_string())
                    ),
                },
                Err(e) if e.errno() == libc::ENOENT || matches!(e, Error::BadManifest { .. }) => {
                    tracing::warn!(%subject, referrer = %d, "listed as a referrer: {e}; not shown");
                }
                Err(e) => return Err(e),
            }
        }
        names.sort();
        let names = Arc::new(names);
        lock(&self.lists).insert(
            key,
            Listing {
                names: names.clone(),
                at: Instant::now(),
                schema: HashSet::new(),
            },
        );
        Ok(names)
    }

    // ---- listings ---------------------------------------------------------

    /// All repository names we know of, relative to the prefix.
    /// Repositories (relative to the prefix), sorted: the catalog and the
    /// ones known otherwise (`--repo`, found by name).
    pub(super) async fn repositories(&self) -> Result<Arc<Vec<String>>, Error> {
        let fresh = lock(&self.catalog)
            .as_ref()
            .filter(|l| l.at.elapsed() < self.tag_ttl)
            .map(|l| l.names.clone());
        let names = match fresh {
            Some(n) => n,
            None => {
                // Read from the disk cache only when not known here (asked
                // at every listing of a repository: a walk of a large
                // catalog would parse it once per repository).
                let saved = self
                    .cache
                    .listing_with_age(self.host(), None)
                    .filter(|(_, age)| *age < self.tag_ttl);
                let (names, whole) = match saved {
                    // Saved by an earlier mount within --tag-ttl: trusted.
                    Some((n, _)) => (n, true),
                    None => match self.source.catalog().await {
                        Ok(Some(n)) => {
                            let _ = self.cache.put_listing(self.host(), None, &n);
                            (n, true)
                        }
                        Ok(None) => (Vec::new(), false),
                        Err(e) if e.is_unreachable() => {
                            tracing::warn!("{e}; using the last known catalog");
                            let n = self.cache.listing(self.host(), None).unwrap_or_default();
                            (n, false)
                        }
                        Err(e) => return Err(e.into()),
                    },
                };
                let names = Arc::new(names);
                *lock(&self.catalog) = Some(Catalog {
                    names: names.clone(),
                    at: Instant::now(),
                    whole,
                });
                names
            }
        };
        let known_count = lock(&self.known_repos).len();
        if let Some((shown, from, k)) = lock(&self.shown).as_ref() {
            if Arc::ptr_eq(from, &names) && *k == known_count {
                return Ok(shown.clone());
            }
        }
        let known = lock(&self.known_repos).clone();
        let mut all: BTreeSet<String> =
            names.iter().filter(|n| is_repository(n)).cloned().collect();
        all.extend(known);
        let out: Vec<String> = match &self.prefix {
            None => all.into_iter().collect(),
            Some(p) => {
                let pre = format!("{p}/");
                all.iter()
                    .filter_map(|n| {
                        if n == p {
                            Some(String::new())
                        } else {
                            n.strip_prefix(&pre).map(str::to_string)
                        }
                    })
                    .collect()
            }
        };
        let out = Arc::new(out);
        *lock(&self.shown) = Some((out.clone(), names, known_count));
        Ok(out)
    }

    /// Whether `name` is a folder of repositories in the folder `path`
    /// (relative to the prefix): a repository, or a prefix of some.
    pub(super) async fn has_component(&self, path: &str, name: &str) -> Result<bool, Error> {
        let repos = self.repositories().await?;
        let exact = super::join_rel(path, name);
        let below = format!("{exact}/");
        let i = repos.partition_point(|r| r.as_str() < below.as_str());
        Ok(repos.binary_search(&exact).is_ok()
            || repos.get(i).is_some_and(|r| r.starts_with(&below)))
    }

    /// Whether a fresh tag list of `repo` shows that `subject` has no
    /// referrers: the source keeps them only in the tag schema, and the
    /// list has no `sha256-<hex>` tag for it. Saves a request per manifest
    /// on a walk of a registry without the referrers API.
    fn no_schema_tag(&self, repo: &str, subject: &Digest) -> bool {
        if !self.source.referrers_by_tag() {
            return false;
        }
        let tag = format!("sha256-{}", subject.hex());
        lock(&self.lists)
            .get(repo)
            .filter(|l| l.at.elapsed() < self.tag_ttl)
            .is_some_and(|l| !l.schema.contains(&tag))
    }

    /// Tags of `repo` (full name), without referrer-schema tags. Empty when
    /// `repo` is not a repository.
    pub(super) async fn tags_of(&self, repo: &str) -> Result<Arc<Vec<String>>, Error> {
        let fresh = || self.fresh_listing(repo);
        let fetch = || self.fetch_tags(repo);
        self.flights
            .once(|| format!("tags {repo}"), fresh, fetch)
            .await
    }

    /// Whether the catalog held now says `repo` is no repository (only a
    /// folder of repositories): it is the registry's whole catalog, fresh,
    /// and neither it nor the repositories found by name have `repo`.
    fn not_in_catalog(&self, repo: &str) -> bool {
        let listed = lock(&self.catalog)
            .as_ref()
            .filter(|c| c.whole && c.at.elapsed() < self.tag_ttl)
            .map(|c| c.names.iter().any(|n| n == repo));
        listed == Some(false) && !lock(&self.known_repos).contains(repo)
    }

    /// `repo` was found by name (a tag of it resolved): it has tags,
    /// whatever the catalog says.
    pub(super) fn found_repository(&self, repo: &str) {
        lock(&self.known_repos).insert(repo.to_string());
    }

    async fn fetch_tags(&self, repo: &str) -> Result<Arc<Vec<String>>, Error> {
        // A folder the catalog shows only as a prefix (`org` of `org/app`):
        // its tag list would be a 404. A tag of it asked for by name is
        // still looked up (`Fs::lookup_unlisted`).
        let saved = self
            .cache
            .listing_with_age(self.host(), Some(repo))
            .filter(|(_, age)| *age < self.tag_ttl);
        let prefix_only = saved.is_none() && self.not_in_catalog(repo);
        let tags = match saved {
            // Saved by an earlier mount within --tag-ttl: trusted as ours.
            Some((t, _)) => Ok(t),
            None if prefix_only => Ok(Vec::new()),
            None => self.source.tags(repo).await.inspect(|t| {
                let _ = self.cache.put_listing(self.host(), Some(repo), t);
            }),
        };
        let tags = match tags {
            Ok(t) => {
                if !prefix_only {
                    lock(&self.known_repos).insert(repo.to_string());
                }
                t
            }
            Err(e) if e.is_not_found() => {
                // Only a path prefix of other repositories: remember that too,
                // so the folder lists offline.
                let _ = self.cache.put_listing(self.host(), Some(repo), &[]);
                Vec::new()
            }
            Err(e) if e.is_unreachable() => match self.cache.listing(self.host(), Some(repo)) {
                Some(t) => {
                    tracing::warn!("{e}; using the last known tags of {repo}");
                    t
                }
                None if self.is_known_prefix(repo) => Vec::new(),
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let (schema, tags): (Vec<String>, Vec<String>) =
            tags.into_iter().partition(|t| is_referrers_tag(t));
        let schema: HashSet<String> = schema.into_iter().collect();
        let mut shown: Vec<String> = tags.into_iter().filter(|t| is_tag(t)).collect();
        shown.sort();
        shown.dedup();
        let names = Arc::new(shown);
        lock(&self.lists).insert(
            repo.to_string(),
            Listing {
                names: names.clone(),
                at: Instant::now(),
                schema,
            },
        );
        Ok(names)
    }

    /// Whether the last known catalog has repositories below `repo` but not
    /// `repo` itself (a folder of repositories, with no tags of its own).
    pub(super) fn is_known_prefix(&self, repo: &str) -> bool {
        let pre = format!("{repo}/");
        let known = lock(&self.known_repos).clone();
        let catalog = self.cache.listing(self.host(), None).unwrap_or_default();
        let all: Vec<&String> = catalog.iter().chain(known.iter()).collect();
        all.iter().any(|n| n.starts_with(&pre)) && !all.iter().any(|n| n.as_str() == repo)
    }

    // ---- manifests --------------------------------------------------------

    /// What a tag points at, trusting a resolution for `--tag-ttl`, and the
    /// last known one while the registry is unreachable.
    pub(super) async fn resolve(&self, repo: &str, target: &Target) -> Result<Digest, Error> {
        let tag = match target {
            Target::Digest(d) => return Ok(d.clone()),
            Target::Tag(t) => t,
        };
        let fresh = || {
            lock(&self.tags)
                .get(repo, tag)
                .filter(|(_, at)| at.elapsed() < self.tag_ttl)
                .map(|(d, _)| d.clone())
        };
        let fetch = || self.fetch_resolution(repo, tag);
        self.flights
            .once(|| format!("tag {repo}:{tag}"), fresh, fetch)
            .await
    }

    async fn fetch_resolution(&self, repo: &str, tag: &str) -> Result<Digest, Error> {
        // A resolution an earlier mount saved is trusted for what is left
        // of its --tag-ttl: a warm remount reads without asking.
        if let Some(r) = self.cache.tag_ref(self.host(), repo, tag) {
            let age = Duration::from_secs(now_secs().saturating_sub(r.checked).max(0) as u64);
            if age < self.tag_ttl && self.cache.has_manifest(&r.digest) {
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                lock(&self.tags).insert(repo, tag, (r.digest.clone(), at));
                return Ok(r.digest);
            }
        }
        // A refresh while we ask (a commit just moved the tag) makes our
        // answer too old to remember.
        let generation = self.generation();
        let known = lock(&self.tags)
            .get(repo, tag)
            .map(|(d, _)| d.clone())
            .or_else(|| self.cache.tag_ref(self.host(), repo, tag).map(|r| r.digest));
        let fetched = async {
            // Where we have a manifest this tag pointed at, a HEAD says
            // whether it still does; otherwise one GET gives both answers.
            if known.is_some_and(|d| self.cache.has_manifest(&d)) {
                if let Some(d) = self.source.head_manifest(repo, tag).await? {
                    if self.cache.has_manifest(&d) {
                        return Ok::<_, registry::Error>(d);
                    }
                }
            }
            let m = self.source.manifest(repo, tag).await?;
            self.store_manifest(&m);
            Ok(m.digest)
        }
        .await;
        let digest = match fetched {
            Ok(d) => {
                let r = TagRef {
                    digest: d.clone(),
                    checked: now_secs(),
                };
                if let Err(e) = self.cache.put_tag_ref(self.host(), repo, tag, &r) {
                    tracing::warn!("{e}");
                }
                d
            }
            Err(e) if e.is_unreachable() => {
                let known = lock(&self.tags).get(repo, tag).map(|(d, _)| d.clone());
                match known.or_else(|| self.cache.tag_ref(self.host(), repo, tag).map(|r| r.digest))
                {
                    Some(d) => {
                        tracing::warn!(
                            "{e}; using the last known resolution of {repo}:{tag} ({d})"
                        );
                        d
                    }
                    None => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if self.generation() == generation {
            lock(&self.tags).insert(repo, tag, (digest.clone(), Instant::now()));
        }
        Ok(digest)
    }

    pub(super) fn store_manifest(&self, m: &registry::Manifest) {
        if let Err(e) = self
            .cache
            .put_manifest(&m.digest, &m.bytes, m.media_type.as_deref())
        {
            tracing::warn!("{e}");
        }
    }

    /// The verified bytes of a manifest, from the cache or the registry.
    pub(super) async fn manifest_bytes(
        &self,
        repo: &str,
        d: &Digest,
    ) -> Result<(Bytes, Option<String>), Error> {
        if let Some((b, t)) = self.cache.manifest(d) {
            return Ok((Bytes::from(b), t));
        }
        let m = self.source.manifest(repo, &d.to_string()).await?;
        self.store_manifest(&m);
        Ok((m.bytes, m.media_type))
    }

    /// The folder view of a manifest.
    pub(super) async fn view(&self, repo: &str, d: &Digest) -> Result<Arc<View>, Error> {
        let fresh = || lock(&self.views).get(d).map(|(v, _)| v);
        let fetch = || self.parse_view(repo, d);
        self.flights
            .once(|| format!("view {d}"), fresh, fetch)
            .await
    }

    async fn parse_view(&self, repo: &str, d: &Digest) -> Result<Arc<View>, Error> {
        let (bytes, media_type) = self.manifest_bytes(repo, d).await?;
        let view =
            View::parse(&bytes, media_type.as_deref()).map_err(|source| Error::BadManifest {
                digest: d.clone(),
                source,
            })?;
        for why in &view.skipped {
            tracing::warn!(manifest = %d, "{why}");
        }
        let view = Arc::new(view);
        let mtime = self.mtime_of(&view, d);
        lock(&self.views).put(d.clone(), view.clone(), mtime, bytes.len());
        Ok(view)
    }

    /// A manifest folder's mtime: its created annotation, else when its
    /// digest was first seen (kept with the view: asked for at every stat).
    pub(super) fn manifest_mtime(&self, view: &View, d: &Digest) -> i64 {
        match lock(&self.views).get(d) {
            Some((_, m)) => m,
            None => self.mtime_of(view, d),
        }
    }

    fn mtime_of(&self, view: &View, d: &Digest) -> i64 {
        view.created()
            .unwrap_or_else(|| self.cache.first_seen(d, now_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_are_found_by_repository_then_tag() {
        let d = |b: &[u8]| Digest::of(b);
        let now = Instant::now();
        let mut r = Resolutions::default();
        r.insert("a/b", "v1", (d(b"1"), now));
        r.insert("a/b", "v2", (d(b"2"), now));
        r.insert("a", "b/v1", (d(b"3"), now));
        r.insert("a/b", "v1", (d(b"4"), now));
        assert_eq!(r.get("a/b", "v1").map(|x| &x.0), Some(&d(b"4")));
        assert_eq!(r.get("a/b", "v2").map(|x| &x.0), Some(&d(b"2")));
        assert_eq!(r.get("a", "b/v1").map(|x| &x.0), Some(&d(b"3")));
        assert!(r.get("a", "v1").is_none() && r.get("c", "v1").is_none());
        assert_eq!(r.0.len(), 2, "one entry per repository");
        r.clear();
        assert!(r.get("a/b", "v2").is_none());
    }

    #[test]
    fn parsed_views_stay_within_their_memory_bound_least_recent_first() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
            "layers":[]}"#;
        let view = Arc::new(View::parse(bytes, None).unwrap());
        let cost = bytes.len() * VIEW_BYTES_PER_BYTE + VIEW_BYTES_FIXED;
        let mut v = Views {
            lru: LruCache::unbounded(),
            bytes: 0,
            bound: cost * 10,
        };
        let d = |i: u32| Digest::of(&i.to_le_bytes());
        for i in 0..100 {
            v.put(d(i), view.clone(), 7, bytes.len());
            if i == 50 {
                assert!(v.get(&d(45)).is_some(), "recently used");
            }
            assert!(v.bytes <= v.bound, "{} > {}", v.bytes, v.bound);
        }
        assert_eq!(v.lru.len(), 10);
        assert!(v.get(&d(99)).is_some_and(|(_, m)| m == 7));
        assert!(v.get(&d(0)).is_none());
        // One view larger than the bound is still kept while it is used.
        v.put(d(1000), view.clone(), 7, cost * 20);
        assert!(v.get(&d(1000)).is_some());
        assert_eq!(v.lru.len(), 1);
    }
}
