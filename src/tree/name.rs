//! A name as the inode table keeps it: short names (nearly all of them:
//! tags, `blobs`, `sha256`, `referrers`, `manifest.json`) inside the value,
//! longer ones on the heap. A walk of a million paths keeps one or two
//! names a slot; on the heap each cost a 32-byte allocation besides the
//! 16-byte pointer.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Names up to this many bytes are kept inline.
const INLINE: usize = 22;

/// An immutable string, inline when short. 24 bytes.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Name {
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // Only ever made from a whole `&str` (`From<&str>`), so the
                // bytes are UTF-8; an empty name would be the fallback.
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("")
            }
            Repr::Heap(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Name(Repr::Inline {
                len: s.len() as u8,
                bytes,
            })
        } else {
            Name(Repr::Heap(s.into()))
        }
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl Hash for Name {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_given_inline_or_not() {
        for s in [
            "",
            "blobs",
            "manifest.json",
            "exactly-twenty-two-byt",
            "twenty-three-bytes-long",
            "é-ünïcödé",
            &"x".repeat(300),
        ] {
            let n = Name::from(s);
            assert_eq!(&*n, s);
            assert_eq!(n.clone(), n);
            assert_eq!(crate::tree::hash64(&n), crate::tree::hash64(&s));
        }
        assert!(matches!(Name::from("t0001").0, Repr::Inline { .. }));
        assert!(matches!(
            Name::from("twenty-three-bytes-long").0,
            Repr::Heap(_)
        ));
        assert_ne!(Name::from("a"), Name::from("b"));
    }

    #[test]
    fn a_name_is_no_bigger_than_a_string() {
        assert_eq!(std::mem::size_of::<Name>(), 24);
    }
}
