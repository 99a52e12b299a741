//! Reads through registry mirrors and pull-through caches, falling back to
//! the registry itself (the *origin*).
//!
//! `Mirrored` answers the reads of a mount: manifests and blobs go to the
//! mirrors `conf::targets` names for the repository and the kind of
//! reference, in order, then to the origin. Listings, referrers and every
//! write go to the origin only (a pull-through cache lists only what it
//! holds, and refuses pushes).
//!
//! - Any failure of a mirror (no answer, 5xx, 404, refused credentials, a
//!   manifest that does not match its digest) moves on to the next source.
//!   A mirror that did not answer, or answered 5xx, is skipped for
//!   `DOWN_FOR` (`Health`), so a stopped cache costs one failed request,
//!   not one per read.
//! - Blob bytes are verified by the blob engine above, against the digest,
//!   whatever served them. When bytes of a blob a mirror served do not
//!   match, the engine says so (`wrong_bytes`): from then on that blob
//!   comes from the origin only, and the engine fetches it again.
//! - Credentials are per host, as for the origin (each mirror has its own
//!   `Client`, made by the caller's `MakeClient`).

pub mod conf;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, BlobStream, Client, Error, Manifest};
use crate::digest::Digest;
pub use conf::{Conf, Target};

/// How long a mirror that did not answer (or answered 5xx) is left alone.
pub const DOWN_FOR: Duration = Duration::from_secs(30);

/// Makes the client for a mirror (the caller knows the flags).
pub type MakeClient = Box<dyn Fn(&Target) -> Result<Client, Error> + Send + Sync>;

/// When each mirror host may be asked again.
#[derive(Debug, Default)]
pub struct Health {
    down_until: HashMap<String, Instant>,
}

impl Health {
    pub fn is_up(&self, host: &str, now: Instant) -> bool {
        self.down_until.get(host).is_none_or(|t| now >= *t)
    }

    /// What a failure says about the mirror: down when it did not answer
    /// or failed (5xx); a 404 or a refusal is about one name only.
    pub fn failed(&mut self, host: &str, e: &Error, now: Instant) {
        let down = match e {
            Error::Unreachable { .. } | Error::NotTls { .. } | Error::WantsHttps { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        };
        if down {
            self.down_until.insert(host.to_string(), now + DOWN_FOR);
        }
    }

    pub fn answered(&mut self, host: &str) {
        self.down_until.remove(host);
    }
}

#[derive(Default)]
struct State {
    health: Health,
    /// Blobs a mirror served bytes of.
    from_mirror: HashSet<Digest>,
    /// Blobs whose mirror bytes did not match: the origin serves them.
    origin_only: HashSet<Digest>,
}

/// A registry read through its mirrors (see the module doc).
pub struct Mirrored {
    origin: Arc<Backend>,
    /// `--mirror` values, `HOST[:PORT][/NAMESPACE]`.
    flags: Vec<String>,
    conf: Conf,
    make_client: MakeClient,
    clients: Mutex<HashMap<(String, bool, bool), Arc<Client>>>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Mirrored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirrored")
            .field("origin", &self.origin.host())
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the value whole; a panic cannot tear it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mirrored {
    pub fn new(
        origin: Arc<Backend>,
        flags: Vec<String>,
        conf: Conf,
        make_client: MakeClient,
    ) -> Mirrored {
        Mirrored {
            origin,
            flags,
            conf,
            make_client,
            clients: Mutex::new(HashMap::new()),
            state: Mutex::new(State::default()),
        }
    }

    /// The registry itself: listings, referrers and the access check.
    pub fn origin(&self) -> &Backend {
        &self.origin
    }

    /// The mirrors that may serve `repo` (by digest, or by tag), in order.
    pub fn targets(&self, repo: &str, by_digest: bool) -> Vec<Target> {
        conf::targets(&self.flags, &self.conf, self.origin.host(), repo, by_digest)
    }

    fn client(&self, t: &Target) -> Result<Arc<Client>, Error> {
        let key = (t.host.clone(), t.insecure, t.from_flag);
        if let Some(c) = lock(&self.clients).get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new((self.make_client)(t)?);
        Ok(lock(&self.clients).entry(key).or_insert(c).clone())
    }

    /// Asks each mirror in turn with `ask`; `None` when none answered.
    async fn ask_mirrors<T, F, Fut>(
        &self,
        repo: &str,
        by_digest: bool,
        what: &str,
        ask: F,
    ) -> Option<T>
    where
        F: Fn(Arc<Client>, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        for t in self.targets(repo, by_digest) {
            if !lock(&self.state).health.is_up(&t.host, Instant::now()) {
                continue;
            }
            let answer = match self.client(&t) {
                Ok(c) => ask(c, t.repo.clone()).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(v) => {
                    lock(&self.state).health.answered(&t.host);
                    tracing::debug!(mirror = %t.host, repo = %t.repo, "{what} from a mirror");
                    return Some(v);
                }
                Err(e) => {
                    if e.is_not_found() {
                        tracing::debug!(mirror = %t.host, "{what}: {e}; trying the next source");
                    } else {
                        tracing::warn!(mirror = %t.host, "{what}: {e}; trying the next source");
                    }
                    lock(&self.state).health.failed(&t.host, &e, Instant::now());
                }
            }
        }
        None
    }

    /// A manifest by tag or digest: from the first mirror that has it
    /// (verified against the digest as from the origin), else the origin.
    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<Manifest, Error> {
        let by_digest = reference.parse::<Digest>().is_ok();
        let what = format!("manifest {repo}:{reference}");
        if let Some(m) = self
            .ask_mirrors(repo, by_digest, &what, |c, r| async move {
                c.manifest(&r, reference).await
            })
            .await
        {
            return Ok(m);
        }
        self.origin.manifest(repo, reference).await
    }

    /// What a tag (or digest) points at, by `HEAD`, with the same order.
    pub async fn head_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, Error> {
        let by_digest = reference.parse::<Digest>().is_ok();
        let what = format!("manifest {repo}:{reference}");
        if let Some(d) = self
            .ask_mirrors(repo, by_digest, &what, |c, r| async move {
                c.head_manifest(&r, reference).await
            })
            .await
        {
            return Ok(d);
        }
        self.origin.head_manifest(repo, reference).await
    }

    /// Bytes `offset..end` of a blob, from the first mirror that answers,
    /// else the origin (always the origin once its mirror bytes failed).
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &Digest,
        offset: u64,
        end: Option<u64>,
    ) -> Result<BlobStream, Error> {
        if !lock(&self.state).origin_only.contains(digest) {
            let what = format!("blob {digest}");
            if let Some(s) = self
                .ask_mirrors(repo, true, &what, |c, r| async move {
                    c.blob_range(&r, digest, offset, end).await
                })
                .await
            {
                lock(&self.state).from_mirror.insert(digest.clone());
                return Ok(s);
            }
        }
        self.origin.blob_range(repo, digest, offset, end).await
    }

    /// Bytes of `digest` did not match: whether they may have come from a
    /// mirror, in which case the blob is read from the origin from now on
    /// and is worth fetching again.
    pub fn wrong_bytes(&self, digest: &Digest) -> bool {
        let mut st = lock(&self.state);
        if !st.from_mirror.contains(digest) {
            return false;
        }
        if st.origin_only.insert(digest.clone()) {
            tracing::warn!(%digest, "a mirror sent bytes that do not match the digest; reading this blob from {} itself", self.origin.host());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mirror_that_does_not_answer_is_skipped_for_a_while() {
        let mut h = Health::default();
        let t0 = Instant::now();
        assert!(h.is_up("m", t0));
        let gone = Error::Unreachable {
            host: "m".into(),
            reason: "connection refused".into(),
        };
        h.failed("m", &gone, t0);
        assert!(!h.is_up("m", t0 + Duration::from_secs(1)));
        assert!(h.is_up("other", t0));
        assert!(h.is_up("m", t0 + DOWN_FOR));
        h.answered("m");
        assert!(h.is_up("m", t0));
        let busy = Error::Status {
            url: "u".into(),
            status: 503,
        };
        h.failed("m", &busy, t0);
        assert!(!h.is_up("m", t0));
        // Not having one name says nothing of the mirror.
        h.answered("m");
        for e in [
            Error::NotFound { what: "x".into() },
            Error::Denied {
                url: "u".into(),
                status: 401,
            },
            Error::Status {
                url: "u".into(),
                status: 400,
            },
        ] {
            h.failed("m", &e, t0);
            assert!(h.is_up("m", t0), "{e}");
        }
    }
}
