//! Tar layers seen as folders without unpacking them: where each file's
//! bytes are in the (uncompressed) tar, and what a ModelPack tar layer
//! shows at its filepath. Pure: `Indexer` says which bytes it needs next
//! (a 512-byte header, or a PAX header's or long name's data), the caller
//! reads them (from the verified blob, through the blob engine by range,
//! or from a decompressed file) and feeds them back. File data is never
//! read: the next header is found from the entry's size.
//!
//! The layout rules (docs/tree.md, *ModelPack*): a layer at filepath `P`
//! is one file when its file metadata says so, or, without metadata, when
//! the tar holds exactly one file and that file is not under `P/` (modctl
//! names it `P`; older modctl wrote only its last component). Otherwise
//! `P` is a folder: an entry `P/x` shows as `x` in it (the layer's own
//! folder, as ORAS writes directory layers), any other entry at its own
//! path inside it. Entries obey the title rules; links, devices and
//! unsafe paths are skipped and logged; a later file of the same path
//! replaces an earlier one, as `tar x` does.

use std::collections::BTreeMap;

use super::view::is_safe_component;
use crate::oci::FileKind;

/// The tar block size.
pub const BLOCK: u64 = 512;
/// The most bytes of a PAX header or GNU long name that are read.
const MAX_EXTENSION: u64 = 1 << 20;
/// The most entries a layer may have.
pub const MAX_MEMBERS: usize = 1 << 20;

/// A file or folder of a tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its path, in safe components.
    pub path: Vec<String>,
    pub kind: FileKind,
    /// Where its bytes start in the tar.
    pub offset: u64,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// The files and folders of a tar, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TarIndex {
    pub members: Vec<Member>,
    /// Entries left out, and why (for the log).
    pub skipped: Vec<String>,
}

/// Bytes the indexer needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub offset: u64,
    pub len: usize,
}

/// Why a tar cannot be indexed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TarError {
    #[error("the tar ends inside the entry whose header is at byte {0}")]
    Truncated(u64),
    #[error("the tar header at byte {0} is damaged (its checksum does not match)")]
    Checksum(u64),
    #[error("the tar entry at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("the tar has more than {MAX_MEMBERS} entries")]
    TooMany,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    Pax,
    LongName,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Header,
    Extension {
        ext: Ext,
        at: u64,
        len: u64,
        next: u64,
    },
}

/// What extension headers said of the entry that follows them.
#[derive(Debug, Default)]
struct Pending {
    path: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
    sparse: bool,
}

/// Walks a tar's headers: `need` says what to read, `feed` takes it.
pub struct Indexer {
    /// The tar's length in bytes.
    len: u64,
    /// Where the next header is.
    at: u64,
    step: Step,
    pending: Pending,
    index: TarIndex,
    done: bool,
}

impl Indexer {
    /// Indexes a tar of `len` bytes.
    pub fn new(len: u64) -> Indexer {
        Indexer {
            len,
            at: 0,
            step: Step::Header,
            pending: Pending::default(),
            index: TarIndex::default(),
            done: len < BLOCK,
        }
    }

    /// The bytes to read next; `None` once the index is complete.
    pub fn need(&self) -> Option<Need> {
        if self.done {
            return None;
        }
        Some(match self.step {
            Step::Header => Need {
                offset: self.at,
                len: BLOCK as usize,
            },
            Step::Extension { at, len, .. } => Need {
                offset: at,
                len: len as usize,
            },
        })
    }

    /// Takes the bytes `need` asked for.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), TarError> {
        match self.step {
            Step::Header => self.header(bytes),
            Step::Extension { ext, at, len, next } => {
                let data = bytes
                    .get(..len as usize)
                    .ok_or(TarError::Truncated(at - BLOCK))?;
                match ext {
                    Ext::LongName => {
                        let end = data.iter().position(|&c| c == 0).unwrap_or(data.len());
                        self.pending.path = Some(data[..end].to_vec());
                    }
                    Ext::Pax => self.pax(data, at - BLOCK)?,
                }
                self.advance(next);
                Ok(())
            }
        }
    }

    /// The index, once `need` says nothing more is needed.
    pub fn finish(self) -> TarIndex {
        self.index
    }

    fn advance(&mut self, next: u64) {
        self.at = next;
        self.step = Step::Header;
        // No room for another header: the end (a header read there could
        // only be the end-of-archive blocks).
        if next.saturating_add(BLOCK) > self.len {
            self.done = true;
        }
    }

    fn header(&mut self, bytes: &[u8]) -> Result<(), TarError> {
        let at = self.at;
        let block: &[u8; BLOCK as usize] = bytes
            .get(..BLOCK as usize)
            .and_then(|b| b.try_into().ok())
            .ok_or(TarError::Truncated(at))?;
        if block.iter().all(|&c| c == 0) {
            self.done = true;
            return Ok(());
        }
        if !checksum_ok(block) {
            return Err(TarError::Checksum(at));
        }
        let bad = |reason: String| TarError::Malformed { offset: at, reason };
        let h = tar::Header::from_byte_slice(block);
        let kind = h.entry_type();
        let own_size = h.entry_size().map_err(|e| bad(format!("size: {e}")))?;
        let extension = kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_pax_global_extensions()
            || kind.is_gnu_longlink();
        let size = if extension {
            own_size
        } else {
            self.pending.size.unwrap_or(own_size)
        };
        let data = at + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|e| *e <= self.len)
            .ok_or(TarError::Truncated(at))?;
        let next = end.div_ceil(BLOCK).saturating_mul(BLOCK);
        if kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            if size > MAX_EXTENSION {
                return Err(bad(format!("an extended header of {size} bytes")));
            }
            let ext = if kind.is_gnu_longname() {
                Ext::LongName
            } else {
                Ext::Pax
            };
            self.step = Step::Extension {
                ext,
                at: data,
                len: size,
                next,
            };
            return Ok(());
        }
        if extension {
            // A global PAX header or a long link name: nothing we use.
            self.advance(next);
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let raw = match &pending.path {
            Some(p) => p.clone(),
            None => h.path_bytes().into_owned(),
        };
        self.advance(next);
        let name = String::from_utf8_lossy(&raw).into_owned();
        let member_kind = if kind.is_dir() {
            FileKind::Dir
        } else if (kind.is_file() || kind.is_contiguous()) && !pending.sparse {
            FileKind::File
        } else {
            self.index
                .skipped
                .push(format!("{name:?}: not a file or folder"));
            return Ok(());
        };
        let Ok(utf8) = std::str::from_utf8(&raw) else {
            self.index
                .skipped
                .push(format!("{name:?}: its name is not UTF-8"));
            return Ok(());
        };
        let Some(path) = safe_entry_path(utf8) else {
            self.index.skipped.push(format!("{name:?}: unsafe path"));
            return Ok(());
        };
        if path.is_empty() {
            return Ok(()); // `./`: the archive's own folder
        }
        if self.index.members.len() >= MAX_MEMBERS {
            return Err(TarError::TooMany);
        }
        self.index.members.push(Member {
            path,
            kind: member_kind,
            offset: data,
            size: if member_kind == FileKind::Dir {
                0
            } else {
                size
            },
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: pending
                .mtime
                .or_else(|| h.mtime().ok().and_then(|t| i64::try_from(t).ok()))
                .unwrap_or(0),
        });
        Ok(())
    }

    /// The records of a PAX header that matter here: `path`, `size`,
    /// `mtime`, and GNU sparse files (not shown).
    fn pax(&mut self, data: &[u8], at: u64) -> Result<(), TarError> {
        for rec in tar::PaxExtensions::new(data) {
            let rec = rec.map_err(|e| TarError::Malformed {
                offset: at,
                reason: format!("PAX header: {e}"),
            })?;
            let Ok(key) = rec.key() else { continue };
            let value = rec.value_bytes();
            match key {
                "path" => self.pending.path = Some(value.to_vec()),
                "size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| TarError::Malformed {
                            offset: at,
                            reason: "PAX size is not a number".into(),
                        })?;
                    self.pending.size = Some(size);
                }
                "mtime" => {
                    self.pending.mtime = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next())
                        .and_then(|v| v.parse().ok());
                }
                k if k.starts_with("GNU.sparse.") => self.pending.sparse = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The header checksum: the byte sum with the checksum field as spaces
/// (unsigned, or signed as some old tars wrote it).
fn checksum_ok(block: &[u8; BLOCK as usize]) -> bool {
    let field = &block[148..156];
    let text = std::str::from_utf8(field).unwrap_or("");
    let Ok(want) = i64::from_str_radix(text.trim_matches(|c: char| c == ' ' || c == '\0'), 8)
    else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &c) in block.iter().enumerate() {
        let c = if (148..156).contains(&i) { b' ' } else { c };
        unsigned += c as i64;
        signed += c as i8 as i64;
    }
    want == unsigned || want == signed
}

/// The components of a tar entry path if it is safe to show below its
/// layer's folder: relative, no `..`, each component safe. `./` prefixes
/// and a trailing `/` are allowed, as `tar` writes them.
pub fn safe_entry_path(raw: &str) -> Option<Vec<String>> {
    if raw.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => continue,
            c if is_safe_component(c) => out.push(c.to_string()),
            _ => return None,
        }
    }
    Some(out)
}

/// What a ModelPack tar layer shows at its filepath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The layer is this one file.
    File(Member),
    /// The layer is a folder.
    Folder(Folder),
}

/// A folder of a tar layer: names to files and folders.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Folder {
    pub entries: BTreeMap<String, Item>,
}

/// An entry of a `Folder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    File(Member),
    Dir(Folder),
}

impl Layout {
    /// The layout of the layer at `filepath` (safe components) whose tar
    /// is `index`. `hint` is what the layer's file metadata says (kind and
    /// size), which the tar must agree with. Entries left out are added
    /// to `skipped`.
    pub fn of(
        index: &TarIndex,
        filepath: &[String],
        hint: Option<(FileKind, Option<u64>)>,
        skipped: &mut Vec<String>,
    ) -> Result<Layout, String> {
        let under = |m: &Member| m.path.len() > filepath.len() && m.path.starts_with(filepath);
        let files: Vec<&Member> = index
            .members
            .iter()
            .filter(|m| m.kind == FileKind::File)
            .collect();
        let one_file = match files.as_slice() {
            [m] if !under(m) => Some(*m),
            _ => None,
        };
        match (hint, one_file) {
            (Some((FileKind::Dir, _)), _) => {}
            (Some((FileKind::File, size)), Some(m)) => {
                return match size {
                    Some(s) if s != m.size => Err(format!(
                        "its file metadata says {s} bytes and the file in its tar has {}",
                        m.size
                    )),
                    _ => Ok(Layout::File(m.clone())),
                };
            }
            (Some((FileKind::File, _)), None) => {
                return Err(format!(
                    "its file metadata says it is one file and its tar holds {} files",
                    files.len()
                ))
            }
            (None, Some(m)) => return Ok(Layout::File(m.clone())),
            (None, None) => {}
        }
        let mut root = Folder::default();
        for m in &index.members {
            let rel: &[String] = if under(m) {
                &m.path[filepath.len()..]
            } else if m.path == filepath {
                if m.kind == FileKind::File {
                    skipped.push(format!(
                        "{}: a file where the layer's folder is",
                        m.path.join("/")
                    ));
                }
                continue;
            } else {
                &m.path
            };
            if let Err(why) = root.insert(rel, m) {
                skipped.push(format!("{}: {why}", m.path.join("/")));
            }
        }
        Ok(Layout::Folder(root))
    }

    /// The folder at `path` (empty: the layer's own), if it is one.
    pub fn dir(&self, path: &[String]) -> Option<&Folder> {
        match self {
            Layout::File(_) => None,
            Layout::Folder(root) => {
                let mut f = root;
                for c in path {
                    match f.entries.get(c)? {
                        Item::Dir(sub) => f = sub,
                        Item::File(_) => return None,
                    }
                }
                Some(f)
            }
        }
    }

    /// The file at `path` (empty: the layer, if it is one file).
    pub fn file(&self, path: &[String]) -> Option<&Member> {
        match (self, path.split_last()) {
            (Layout::File(m), None) => Some(m),
            (Layout::Folder(_), Some((last, parent))) => {
                match self.dir(parent)?.entries.get(last)? {
                    Item::File(m) => Some(m),
                    Item::Dir(_) => None,
                }
            }
            _ => None,
        }
    }
}

impl Folder {
    /// Puts `m` at `rel`, making parent folders.
    fn insert(&mut self, rel: &[String], m: &Member) -> Result<(), &'static str> {
        let Some((last, parents)) = rel.split_last() else {
            return Ok(());
        };
        let mut f = self;
        for p in parents {
            let e = f
                .entries
                .entry(p.clone())
                .or_insert_with(|| Item::Dir(Folder::default()));
            match e {
                Item::Dir(sub) => f = sub,
                Item::File(_) => return Err("both a file and a folder; the first is shown"),
            }
        }
        match (f.entries.get_mut(last), m.kind) {
            (None, FileKind::File) => {
                f.entries.insert(last.clone(), Item::File(m.clone()));
            }
            (None, FileKind::Dir) => {
                f.entries.insert(last.clone(), Item::Dir(Folder::default()));
            }
            // A later file replaces an earlier one, as extracting would.
            (Some(e @ Item::File(_)), FileKind::File) => *e = Item::File(m.clone()),
            (Some(Item::Dir(_)), FileKind::Dir) => {}
            _ => return Err("both a file and a folder; the first is shown"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
