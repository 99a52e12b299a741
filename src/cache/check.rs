//! `regfs verify`: every cached blob and manifest hashed again, as `fsck`
//! for the cache.
//!
//! An open only hashes a blob whose file changed since it was verified
//! (see `identity`); bytes that rot on the disk without a write keep the
//! file's identity, and only this full pass finds them.

use std::fmt;
use std::fs::{self, File};
use std::io;

use super::{err, identity, Cache, Error, Identity};
use crate::digest::Digest;

/// What kind of cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Blob,
    Manifest,
}

impl fmt::Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stored::Blob => "blob",
            Stored::Manifest => "manifest",
        })
    }
}

/// A cached file whose bytes do not match the digest it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub kind: Stored,
    pub digest: Digest,
    /// What its bytes hash to, or why they could not be read.
    pub found: Result<Digest, String>,
}

/// What a check hashed, and what it found damaged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    pub blobs: u64,
    pub manifests: u64,
    pub damaged: Vec<Damaged>,
}

impl Cache {
    /// Hashes every cached blob and manifest again. Each damaged one is
    /// passed to `each` as it is found; with `repair` it is dropped (a
    /// mount fetches it again when it is read), and the records of the
    /// good blobs are renewed. Without `repair` nothing is changed.
    pub fn check(&self, repair: bool, mut each: impl FnMut(&Damaged)) -> Result<Checked, Error> {
        let mut out = Checked::default();
        for kind in [Stored::Blob, Stored::Manifest] {
            let dir = self.root.join(match kind {
                Stored::Blob => "blobs/sha256",
                Stored::Manifest => "manifests/sha256",
            });
            let mut names: Vec<String> = fs::read_dir(&dir)
                .map_err(err(&dir))?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            names.sort();
            // Other names (`<hex>.type`, temporary files) are not content.
            for (name, d) in names
                .into_iter()
                .filter_map(|n| Some((n.clone(), Digest::from_hex(&n).ok()?)))
            {
                let path = dir.join(&name);
                let found = match File::open(&path) {
                    // Evicted (or dropped by a mount) since the listing.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => Err(Err(e.to_string())),
                    Ok(f) => match identity::digest_of(&f) {
                        Ok(actual) if actual == d => Ok(f),
                        Ok(actual) => Err(Ok(actual)),
                        Err(e) => Err(Err(e.to_string())),
                    },
                };
                match kind {
                    Stored::Blob => out.blobs += 1,
                    Stored::Manifest => out.manifests += 1,
                }
                match found {
                    Ok(f) => {
                        if repair && kind == Stored::Blob {
                            if let Ok(m) = f.metadata() {
                                self.record(&d, Identity::of(&m));
                            }
                        }
                    }
                    Err(found) => {
                        let damaged = Damaged {
                            kind,
                            digest: d,
                            found,
                        };
                        each(&damaged);
                        if repair {
                            self.drop_damaged(&damaged);
                        }
                        out.damaged.push(damaged);
                    }
                }
            }
        }
        if repair {
            self.drop_stray_records();
        }
        Ok(out)
    }

    fn drop_damaged(&self, d: &Damaged) {
        match d.kind {
            Stored::Blob => self.drop_blob(&d.digest, None),
            Stored::Manifest => {
                let dir = self.root.join("manifests/sha256");
                let _ = fs::remove_file(dir.join(d.digest.hex()));
                let _ = fs::remove_file(dir.join(format!("{}.type", d.digest.hex())));
            }
        }
    }

    /// Records whose blob is gone.
    fn drop_stray_records(&self) {
        let Ok(rd) = fs::read_dir(self.root.join("verified/sha256")) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
                continue;
            };
            if !self.blob_file(&d).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}
