//! What the registry says, cached: the catalog and tag listings, tag
//! resolutions (trusted for `--tag-ttl`, the last known one used while the
//! registry is unreachable), and manifests by digest with their views.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{is_referrers_tag, lock, Error, Fs, Listing};
use crate::cache::{now_secs, TagRef};
use crate::digest::Digest;
use crate::reference::{is_repository, is_tag};
use crate::registry;
use crate::tree::view::View;
use crate::tree::Target;

impl Fs {
    // ---- listings ---------------------------------------------------------

    /// All repository names we know of, relative to the prefix.
    pub(super) async fn repositories(&self) -> Result<Vec<String>, Error> {
        let fresh = lock(&self.catalog)
            .as_ref()
            .filter(|l| l.at.elapsed() < self.opts.tag_ttl)
            .map(|l| l.names.clone());
        let names = match fresh {
            Some(n) => n,
            None => {
                let names = match self.registry.catalog().await {
                    Ok(Some(n)) => {
                        let _ = self.cache.put_listing(self.host(), None, &n);
                        n
                    }
                    Ok(None) => Vec::new(),
                    Err(e) if e.is_unreachable() => {
                        tracing::warn!("{e}; using the last known catalog");
                        self.cache.listing(self.host(), None).unwrap_or_default()
                    }
                    Err(e) => return Err(e.into()),
                };
                let names = Arc::new(names);
                *lock(&self.catalog) = Some(Listing {
                    names: names.clone(),
                    at: Instant::now(),
                });
                names
            }
        };
        let known = lock(&self.known_repos).clone();
        let mut all: BTreeSet<String> =
            names.iter().filter(|n| is_repository(n)).cloned().collect();
        all.extend(known);
        let out = match &self.opts.prefix {
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
        Ok(out)
    }

    /// Tags of `repo` (full name), without referrer-schema tags. Empty when
    /// `repo` is not a repository.
    pub(super) async fn tags_of(&self, repo: &str) -> Result<Arc<Vec<String>>, Error> {
        if let Some(l) = lock(&self.tag_lists).get(repo) {
            if l.at.elapsed() < self.opts.tag_ttl {
                return Ok(l.names.clone());
            }
        }
        let tags = match self.registry.tags(repo).await {
            Ok(t) => {
                let _ = self.cache.put_listing(self.host(), Some(repo), &t);
                lock(&self.known_repos).insert(repo.to_string());
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
        let mut shown: Vec<String> = tags
            .into_iter()
            .filter(|t| is_tag(t) && !is_referrers_tag(t))
            .collect();
        shown.sort();
        shown.dedup();
        let names = Arc::new(shown);
        lock(&self.tag_lists).insert(
            repo.to_string(),
            Listing {
                names: names.clone(),
                at: Instant::now(),
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
        let key = (repo.to_string(), tag.clone());
        if let Some((d, at)) = lock(&self.tags).get(&key) {
            if at.elapsed() < self.opts.tag_ttl {
                return Ok(d.clone());
            }
        }
        // A refresh while we ask (a commit just moved the tag) makes our
        // answer too old to remember.
        let generation = self.generation.load(Ordering::SeqCst);
        let known = lock(&self.tags)
            .get(&key)
            .map(|(d, _)| d.clone())
            .or_else(|| self.cache.tag_ref(self.host(), repo, tag).map(|r| r.digest));
        let fetched = async {
            // Where we have a manifest this tag pointed at, a HEAD says
            // whether it still does; otherwise one GET gives both answers.
            if known.is_some_and(|d| self.cache.has_manifest(&d)) {
                if let Some(d) = self.registry.head_manifest(repo, tag).await? {
                    if self.cache.has_manifest(&d) {
                        return Ok::<_, registry::Error>(d);
                    }
                }
            }
            let m = self.registry.manifest(repo, tag).await?;
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
                let known = lock(&self.tags).get(&key).map(|(d, _)| d.clone());
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
        if self.generation.load(Ordering::SeqCst) == generation {
            lock(&self.tags).insert(key, (digest.clone(), Instant::now()));
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
        let m = self.registry.manifest(repo, &d.to_string()).await?;
        self.store_manifest(&m);
        Ok((m.bytes, m.media_type))
    }

    /// The folder view of a manifest.
    pub(super) async fn view(&self, repo: &str, d: &Digest) -> Result<Arc<View>, Error> {
        if let Some(v) = lock(&self.views).get(d) {
            return Ok(v.clone());
        }
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
        lock(&self.views).put(d.clone(), view.clone());
        Ok(view)
    }

    /// A manifest folder's mtime: its created annotation, else when its
    /// digest was first seen.
    pub(super) fn manifest_mtime(&self, view: &View, d: &Digest) -> i64 {
        view.created()
            .unwrap_or_else(|| self.cache.first_seen(d, now_secs()))
    }
}
