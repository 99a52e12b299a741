use crate::auth::AuthError;
use crate::digest::Digest;

/// What went wrong talking to a registry (or reading a layout).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{url}: access denied (HTTP {status}); check `docker login` credentials")]
    Denied { url: String, status: u16 },
    #[error("cannot reach registry {host}: {reason}")]
    Unreachable { host: String, reason: String },
    /// HTTPS reached a TLS server whose certificate did not verify.
    #[error("registry {host}: TLS certificate not accepted: {reason}; {hint}")]
    Certificate {
        host: String,
        reason: String,
        hint: &'static str,
    },
    /// HTTPS was asked for and the port speaks something else.
    #[error("registry {host} does not speak TLS on this port ({reason}); pass --plain-http to talk plain HTTP")]
    NotTls { host: String, reason: String },
    /// Plain HTTP reached a port that speaks TLS.
    #[error("registry {host} speaks HTTPS on this port, not plain HTTP (it answered {answer:?}); {hint}")]
    WantsHttps {
        host: String,
        answer: String,
        hint: &'static str,
    },
    #[error("{url}: registry answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{what}: content does not match digest {expected} (got {actual})")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The registry could not be reached at all (as opposed to answering no).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}
