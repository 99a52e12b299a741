//! Content digests: the `Digest` type and a streaming verifier.
//!
//! A `Digest` is parsed once and cannot hold an invalid value afterwards.
//! Only sha256 is supported: it is what every registry and ORAS write, and a
//! digest we cannot verify is one we will not serve.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<hex>)")]
    NoAlgorithm(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} is not 64 lowercase hex characters")]
    BadHex(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(&Sha256::digest(bytes))
    }

    fn from_hash(hash: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(hash),
        }
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of everything `r` yields.
    pub fn of_reader(r: impl std::io::Read) -> std::io::Result<Digest> {
        let mut h = Sha256::new();
        read_chunks(r, |b| h.update(b))?;
        Ok(Digest::from_hash(&h.finalize()))
    }

    /// Parses the bare hex form (`<64 hex>`), as used in `blobs/sha256/<hex>`.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        // encoded ::= [a-f0-9]{64}   (OCI image-spec, sha256 registered algorithm)
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError::BadHex(hex.to_string()))
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    // digest ::= algorithm ":" encoded
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::NoAlgorithm(s.to_string()))?;
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(algorithm.to_string()));
        }
        Digest::from_hex(hex).map_err(|_| DigestError::BadHex(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Feeds `r` to `f` in 1 MiB pieces.
fn read_chunks(mut r: impl std::io::Read, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Hashes bytes as they pass and says at the end whether they match.
pub struct Verifier {
    expected: Digest,
    hasher: Sha256,
    len: u64,
}

impl Verifier {
    pub fn new(expected: Digest) -> Verifier {
        Verifier {
            expected,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Hashes everything `r` yields.
    pub fn update_from(&mut self, r: impl std::io::Read) -> std::io::Result<()> {
        read_chunks(r, |b| self.update(b))
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything passed in, and whether it is the expected one.
    pub fn finish(self) -> Result<(), Digest> {
        let actual = Digest::from_hash(&self.hasher.finalize());
        if actual == self.expected {
            Ok(())
        } else {
            Err(actual)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d, Digest::of(b""));
    }

    #[test]
    fn rejects_bad_digests() {
        let table = [
            ("e3b0", DigestError::NoAlgorithm("e3b0".into())),
            (
                "sha512:abcd",
                DigestError::UnsupportedAlgorithm("sha512".into()),
            ),
            ("sha256:abc", DigestError::BadHex("sha256:abc".into())),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                DigestError::BadHex(
                    "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                        .into(),
                ),
            ),
            (
                "sha256:../../etc/passwd",
                DigestError::BadHex("sha256:../../etc/passwd".into()),
            ),
        ];
        for (input, want) in table {
            assert_eq!(input.parse::<Digest>().unwrap_err(), want, "{input}");
        }
    }

    #[test]
    fn verifier_detects_mismatch() {
        let mut v = Verifier::new(Digest::of(b"hello"));
        v.update(b"hel");
        v.update(b"lo");
        assert_eq!(v.len(), 5);
        assert!(v.finish().is_ok());
        let mut v = Verifier::new(Digest::of(b"hello"));
        v.update(b"hellO");
        assert_eq!(v.finish().unwrap_err(), Digest::of(b"hellO"));
    }
}
