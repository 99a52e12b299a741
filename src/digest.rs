//! Content digests: the `Digest` type and a streaming verifier.
//!
//! A `Digest` is parsed once and cannot hold an invalid value afterwards.
//! Only sha256 is supported: it is what every registry and ORAS write, and a
//! digest we cannot verify is one we will not serve.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` digest, held as its 32 bytes
/// (an inode table of a million entries holds several digests each; the
/// order is the hex text's).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
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
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&hash[..32]);
        Digest { bytes }
    }

    /// The 64 hex characters after `sha256:`.
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
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
        let mut bytes = [0u8; 32];
        if hex.len() == 64
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex::decode_to_slice(hex, &mut bytes).is_ok()
        {
            Ok(Digest { bytes })
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
        let mut text = [0u8; 64];
        // Always fits: 32 bytes are 64 hex digits, all ASCII.
        if hex::encode_to_slice(self.bytes, &mut text).is_err() {
            return Err(fmt::Error);
        }
        f.write_str("sha256:")?;
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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

/// The sha256 of each `size`-byte chunk of a stream, in order (the last
/// chunk may be shorter): what a chunk-digest list holds.
pub struct ChunkHasher {
    size: u64,
    hasher: Sha256,
    /// Bytes of the current chunk hashed so far.
    filled: u64,
    done: Vec<Digest>,
}

impl ChunkHasher {
    pub fn new(size: u64) -> ChunkHasher {
        ChunkHasher {
            size: size.max(1),
            hasher: Sha256::new(),
            filled: 0,
            done: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.size - self.filled).min(bytes.len() as u64) as usize;
            self.hasher.update(&bytes[..room]);
            self.filled += room as u64;
            bytes = &bytes[room..];
            if self.filled == self.size {
                let h = std::mem::take(&mut self.hasher);
                self.done.push(Digest::from_hash(&h.finalize()));
                self.filled = 0;
            }
        }
    }

    /// The digests of every chunk (none for an empty stream).
    pub fn finish(mut self) -> Vec<Digest> {
        if self.filled > 0 {
            self.done.push(Digest::from_hash(&self.hasher.finalize()));
        }
        self.done
    }
}

/// The digest of everything `r` yields and the digests of its
/// `chunk`-byte chunks, from one read: the chunks are hashed on a second
/// thread, so on two cores this costs what the whole-stream hash costs.
pub fn of_reader_with_chunks(
    mut r: impl std::io::Read,
    chunk: u64,
) -> std::io::Result<(Digest, Vec<Digest>)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::sync::Arc<Vec<u8>>>(4);
    std::thread::scope(|s| {
        let chunker = s.spawn(move || {
            let mut c = ChunkHasher::new(chunk);
            for block in rx {
                c.update(&block);
            }
            c.finish()
        });
        let mut whole = Sha256::new();
        let read = loop {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0;
            // Fill the block (fewer, larger blocks through the channel).
            let eof = loop {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break true,
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break false;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            buf.truncate(n);
            whole.update(&buf);
            if n > 0 && tx.send(std::sync::Arc::new(buf)).is_err() {
                break Err(std::io::Error::other("chunk hasher stopped"));
            }
            if eof {
                break Ok(());
            }
        };
        drop(tx);
        let chunks = chunker
            .join()
            .map_err(|_| std::io::Error::other("chunk hasher panicked"))?;
        read.map(|()| (Digest::from_hash(&whole.finalize()), chunks))
    })
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
    fn held_as_bytes_in_the_order_of_the_text() {
        let ds: Vec<Digest> = (0..200u32).map(|i| Digest::of(&i.to_le_bytes())).collect();
        let mut by_value = ds.clone();
        by_value.sort();
        let mut by_text: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
        by_text.sort();
        let sorted: Vec<String> = by_value.iter().map(|d| d.to_string()).collect();
        assert_eq!(sorted, by_text);
        for d in &ds {
            assert_eq!(Digest::from_hex(&d.hex()).unwrap(), *d);
            assert_eq!(format!("{d:?}"), format!("sha256:{}", d.hex()));
        }
        assert_eq!(std::mem::size_of::<Digest>(), 32);
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
    fn chunk_hashes_are_the_hashes_of_the_chunks_whatever_the_pieces() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want: Vec<Digest> = data.chunks(4096).map(Digest::of).collect();
        assert_eq!(want.len(), 3);
        for piece in [1, 100, 4096, 5000, 10_000] {
            let mut c = ChunkHasher::new(4096);
            for p in data.chunks(piece) {
                c.update(p);
            }
            assert_eq!(c.finish(), want, "pieces of {piece}");
        }
        assert!(ChunkHasher::new(4096).finish().is_empty());
        let (whole, chunks) = of_reader_with_chunks(&data[..], 4096).unwrap();
        assert_eq!((whole, chunks), (Digest::of(&data), want));
        // A multiple of the chunk size has no short last chunk.
        let (_, chunks) = of_reader_with_chunks(&data[..8192], 4096).unwrap();
        assert_eq!(chunks.len(), 2);
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
