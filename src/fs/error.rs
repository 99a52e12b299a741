use std::sync::Arc;
use std::time::Duration;

use crate::digest::Digest;
use crate::tree::view::ViewError;
use crate::{cache, registry};

/// What a filesystem operation can fail with; `errno` maps it for the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only file system")]
    ReadOnly,
    #[error("no such attribute")]
    NoAttr,
    #[error("bad file handle")]
    BadHandle,
    #[error("{0}")]
    Invalid(String),
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("already exists")]
    Exists,
    #[error("folder not empty")]
    NotEmpty,
    #[error("cannot move a registry entry; copy it instead")]
    CrossDevice,
    #[error("only user.oci.annotation.* and user.oci.artifactType can be set")]
    Unsupported,
    #[error(transparent)]
    Stage(#[from] crate::stage::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("manifest {digest} cannot be shown: {source}")]
    BadManifest {
        digest: Digest,
        #[source]
        source: ViewError,
    },
    #[error("blob {digest}: {reason}")]
    Blob { digest: Digest, reason: String },
    #[error("blob {digest}: content does not match its digest (got {actual})")]
    Mismatch { digest: Digest, actual: Digest },
    #[error("blob {digest}: chunk {index} (from byte {offset}) does not match the layer's chunk list (got {actual}); dropped, it is fetched again on the next read")]
    ChunkMismatch {
        digest: Digest,
        index: u64,
        offset: u64,
        actual: Digest,
    },
    /// A lazy read of an open file that was given bytes of a download that
    /// then failed verification: it never succeeds (its bytes may be wrong).
    #[error("blob {digest}: this open file was given bytes of a transfer that failed verification; open the file again")]
    GivenWrongBytes { digest: Digest },
    /// Wrong bytes that came from a mirror: the source serves the blob from
    /// the registry itself now, and the read is tried again.
    #[error("{0}; they came from a mirror: reading the blob from the registry itself")]
    FromMirror(Box<Error>),
    #[error("blob {digest}: nothing arrived for {after:.0?}; giving up (see --timeout)")]
    Stalled { digest: Digest, after: Duration },
    #[error("layer {digest} cannot be unpacked: {reason}")]
    Unpack { digest: Digest, reason: String },
    #[error("tar layer {digest} cannot be shown: {reason}")]
    Archive { digest: Digest, reason: String },
    #[error("operation timed out after {0:?}")]
    Timeout(Duration),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound => libc::ENOENT,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::ReadOnly => libc::EROFS,
            Error::NoAttr => libc::ENODATA,
            Error::BadHandle => libc::EBADF,
            Error::Invalid(_) => libc::EINVAL,
            Error::NotPermitted(_) => libc::EPERM,
            Error::Exists => libc::EEXIST,
            Error::NotEmpty => libc::ENOTEMPTY,
            Error::CrossDevice => libc::EXDEV,
            Error::Unsupported => libc::ENOTSUP,
            Error::Registry(registry::Error::NotFound { .. }) => libc::ENOENT,
            Error::Registry(registry::Error::Denied { .. }) => libc::EACCES,
            Error::Shared(e) => e.errno(),
            _ => libc::EIO,
        }
    }

    /// A failure worth another try: the registry did not answer, failed,
    /// or cut the transfer short.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Registry(registry::Error::Unreachable { .. })
                | Error::Registry(registry::Error::Status { .. })
                | Error::Registry(registry::Error::Protocol { .. })
        )
    }

    /// A read got no bytes: the registry failed or went silent for
    /// `--timeout` (not: what arrived was wrong).
    pub fn is_for_want_of_bytes(&self) -> bool {
        match self {
            Error::Stalled { .. } => true,
            Error::Shared(e) => e.is_for_want_of_bytes(),
            e => e.is_transient(),
        }
    }

    /// The bytes that arrived did not match their digest (and were dropped).
    pub fn is_mismatch(&self) -> bool {
        match self {
            Error::Mismatch { .. } | Error::GivenWrongBytes { .. } => true,
            Error::FromMirror(e) => e.is_mismatch(),
            Error::Shared(e) => e.is_mismatch(),
            _ => false,
        }
    }

    /// Wrong bytes from a mirror: worth reading again (`Error::FromMirror`).
    pub fn is_from_mirror(&self) -> bool {
        match self {
            Error::FromMirror(_) => true,
            Error::Shared(e) => e.is_from_mirror(),
            _ => false,
        }
    }

    /// Errors a user expects in normal use (a name that is not there) are
    /// not worth a warning in the log.
    pub fn is_quiet(&self) -> bool {
        match self {
            Error::NotFound | Error::NoAttr | Error::NotDir | Error::IsDir | Error::ReadOnly => {
                true
            }
            Error::Shared(e) => e.is_quiet(),
            _ => false,
        }
    }
}
