//! What the filesystem needs from where the tree comes from: listings,
//! manifests, blob bodies and referrers. A registry and an OCI layout
//! (`registry::Backend`) are sources, and so is a registry read through
//! its mirrors (`registry::Mirrored`); so is the in-memory store the
//! mount-free tests use (`fs::memory`). Everything above this trait is
//! testable without a network or a mount.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::digest::Digest;
use crate::registry::{self, Backend, BlobStream, Manifest, Mirrored};

/// A result from a source.
pub type SourceResult<T> = Result<T, registry::Error>;

/// Where listings, manifests and blobs come from.
pub trait Source: Send + Sync + 'static {
    /// Names the source in cache keys and messages.
    fn host(&self) -> &str;
    /// Whether partial reads are cheap only as ranged requests (a registry;
    /// a layout is a local file and is read whole).
    fn is_remote(&self) -> bool;
    /// Every repository name, or `None` where there is no catalog.
    fn catalog(&self) -> BoxFuture<'_, SourceResult<Option<Vec<String>>>>;
    fn tags<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, SourceResult<Vec<String>>>;
    /// A manifest by tag or digest, verified by the source against the
    /// digest asked for (or the one the registry names).
    fn manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Manifest>>;
    /// The digest a tag points at, without the body where the source can.
    fn head_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Digest>>>;
    /// Bytes `start..end` of a blob (to its end when `end` is `None`). The
    /// body may start at 0 instead (Range is optional): `Body::start` says.
    fn blob<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, SourceResult<Body>>;
    /// Manifests whose subject is `subject`.
    fn referrers<'a>(
        &'a self,
        repo: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, SourceResult<Vec<Digest>>>;
    /// Whether the source keeps referrers only in the `sha256-<hex>` tag
    /// schema (a registry found to have no referrers API): a subject whose
    /// tag is not in a fresh tag list has none, without asking.
    fn referrers_by_tag(&self) -> bool {
        false
    }
    /// Bytes of `digest` this source served did not match it. Whether
    /// another place may have the right ones, so fetching again is worth
    /// it (a mirror sent them: the registry itself serves the blob now).
    fn wrong_bytes(&self, _digest: &Digest) -> bool {
        false
    }
}

/// A blob body being received.
pub struct Body {
    /// The offset of the body's first byte in the blob.
    pub start: u64,
    stream: BoxStream<'static, SourceResult<Bytes>>,
}

impl Body {
    pub fn new(start: u64, stream: BoxStream<'static, SourceResult<Bytes>>) -> Body {
        Body { start, stream }
    }

    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> SourceResult<Option<Bytes>> {
        self.stream.next().await.transpose()
    }
}

impl From<BlobStream> for Body {
    fn from(s: BlobStream) -> Body {
        let start = s.start;
        let stream = futures_util::stream::unfold(Some(s), |st| async move {
            let mut s = st?;
            match s.chunk().await {
                Ok(Some(b)) => Some((Ok(b), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        Body::new(start, stream.boxed())
    }
}

impl Source for Backend {
    fn host(&self) -> &str {
        Backend::host(self)
    }

    fn is_remote(&self) -> bool {
        Backend::is_remote(self)
    }

    fn catalog(&self) -> BoxFuture<'_, SourceResult<Option<Vec<String>>>> {
        Box::pin(Backend::catalog(self))
    }

    fn tags<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, SourceResult<Vec<String>>> {
        Box::pin(Backend::tags(self, repo))
    }

    fn manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Manifest>> {
        Box::pin(Backend::manifest(self, repo, reference))
    }

    fn head_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Digest>>> {
        Box::pin(Backend::head_manifest(self, repo, reference))
    }

    fn blob<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, SourceResult<Body>> {
        Box::pin(async move {
            Ok(Backend::blob_range(self, repo, digest, start, end)
                .await?
                .into())
        })
    }

    fn referrers<'a>(
        &'a self,
        repo: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, SourceResult<Vec<Digest>>> {
        Box::pin(Backend::referrers(self, repo, subject))
    }

    fn referrers_by_tag(&self) -> bool {
        Backend::referrers_by_tag(self)
    }
}

/// A registry read through its mirrors (`registry::mirrors`): listings and
/// referrers from the registry itself.
impl Source for Mirrored {
    fn host(&self) -> &str {
        self.origin().host()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn catalog(&self) -> BoxFuture<'_, SourceResult<Option<Vec<String>>>> {
        Box::pin(self.origin().catalog())
    }

    fn tags<'a>(&'a self, repo: &'a str) -> BoxFuture<'a, SourceResult<Vec<String>>> {
        Box::pin(self.origin().tags(repo))
    }

    fn manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Manifest>> {
        Box::pin(Mirrored::manifest(self, repo, reference))
    }

    fn head_manifest<'a>(
        &'a self,
        repo: &'a str,
        reference: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Digest>>> {
        Box::pin(Mirrored::head_manifest(self, repo, reference))
    }

    fn blob<'a>(
        &'a self,
        repo: &'a str,
        digest: &'a Digest,
        start: u64,
        end: Option<u64>,
    ) -> BoxFuture<'a, SourceResult<Body>> {
        Box::pin(async move {
            Ok(Mirrored::blob_range(self, repo, digest, start, end)
                .await?
                .into())
        })
    }

    fn referrers<'a>(
        &'a self,
        repo: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, SourceResult<Vec<Digest>>> {
        Box::pin(self.origin().referrers(repo, subject))
    }

    fn referrers_by_tag(&self) -> bool {
        self.origin().referrers_by_tag()
    }

    fn wrong_bytes(&self, digest: &Digest) -> bool {
        Mirrored::wrong_bytes(self, digest)
    }
}
