//! ModelPack (the CNCF model-spec, which `modctl` writes): what a model
//! layer's media type says about how its file is packed, and the file
//! metadata annotation. Pure.
//!
//! A model layer's media type is `application/vnd.cncf.model.<kind>.v1.<packing>`
//! (older artifacts: `application/vnd.cnai.model.…`), with `<kind>` one of
//! `MODEL_LAYER_KINDS` and `<packing>` one of `MODEL_LAYER_PACKINGS`.

use super::{
    parse_rfc3339, CNAI_MODEL_LAYER_PREFIX, MODEL_LAYER_KINDS, MODEL_LAYER_PACKINGS,
    MODEL_LAYER_PREFIX,
};

/// How a model layer holds its file (or folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Packing {
    /// The layer is the file itself.
    Raw,
    /// An uncompressed tar: its files are byte ranges of the blob.
    Tar,
    TarGzip,
    TarZstd,
}

impl Packing {
    /// The packing a model layer's media type names; `None` for any other
    /// media type (or a kind the spec does not define).
    pub fn of_media_type(media_type: &str) -> Option<Packing> {
        let rest = media_type
            .strip_prefix(MODEL_LAYER_PREFIX)
            .or_else(|| media_type.strip_prefix(CNAI_MODEL_LAYER_PREFIX))?;
        let (kind, packing) = rest.split_once(".v1.")?;
        if !MODEL_LAYER_KINDS.contains(&kind) {
            return None;
        }
        let [raw, tar, gzip, zstd] = MODEL_LAYER_PACKINGS;
        Some(match packing {
            p if p == raw => Packing::Raw,
            p if p == tar => Packing::Tar,
            p if p == gzip => Packing::TarGzip,
            p if p == zstd => Packing::TarZstd,
            _ => return None,
        })
    }

    /// The media type of a (current, `vnd.cncf`) model layer of `kind`.
    pub fn media_type(self, kind: &str) -> String {
        let [raw, tar, gzip, zstd] = MODEL_LAYER_PACKINGS;
        let p = match self {
            Packing::Raw => raw,
            Packing::Tar => tar,
            Packing::TarGzip => gzip,
            Packing::TarZstd => zstd,
        };
        format!("{MODEL_LAYER_PREFIX}{kind}.v1.{p}")
    }

    /// A tar archive (plain or compressed), not the file itself.
    pub fn is_tar(self) -> bool {
        self != Packing::Raw
    }
}

/// Whether a layer's path is a file or a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
}

/// What `org.cncf.model.file.metadata+json` says of a layer's file; each
/// field only where present and usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileMetadata {
    /// Permission bits (`0o644`).
    pub mode: Option<u32>,
    /// Seconds since the epoch.
    pub mtime: Option<i64>,
    pub size: Option<u64>,
    pub kind: Option<FileKind>,
}

impl FileMetadata {
    /// Parses the annotation's JSON value: `{"name", "mode", "uid", "gid",
    /// "size", "mtime", "typeflag"}` as modctl writes it (`mode` a number,
    /// `mtime` RFC 3339, `typeflag` the tar type as a number: 0 or `'0'`
    /// a file, 5 or `'5'` a folder). `None` when it is not a JSON object.
    pub fn parse(json: &str) -> Option<FileMetadata> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let o = v.as_object()?;
        let mode = o
            .get("mode")
            .and_then(|m| m.as_u64())
            .map(|m| (m & 0o7777) as u32);
        let mtime = o
            .get("mtime")
            .and_then(|t| t.as_str())
            .and_then(parse_rfc3339)
            .filter(|t| *t > 0);
        let size = o.get("size").and_then(|s| s.as_u64());
        let kind = match o.get("typeflag").and_then(|t| t.as_u64()) {
            Some(0) | Some(48) => Some(FileKind::File),
            Some(5) | Some(53) => Some(FileKind::Dir),
            _ => None,
        };
        Some(FileMetadata {
            mode,
            mtime,
            size,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packings_of_media_types() {
        let cases = [
            (
                "application/vnd.cncf.model.weight.v1.raw",
                Some(Packing::Raw),
            ),
            (
                "application/vnd.cncf.model.weight.v1.tar",
                Some(Packing::Tar),
            ),
            (
                "application/vnd.cncf.model.weight.config.v1.tar+gzip",
                Some(Packing::TarGzip),
            ),
            (
                "application/vnd.cncf.model.dataset.v1.tar+zstd",
                Some(Packing::TarZstd),
            ),
            ("application/vnd.cncf.model.doc.v1.raw", Some(Packing::Raw)),
            ("application/vnd.cnai.model.code.v1.tar", Some(Packing::Tar)),
            // Not model layers.
            ("application/vnd.cncf.model.config.v1+json", None),
            ("application/vnd.cncf.model.weight.v2.tar", None),
            ("application/vnd.cncf.model.tensor.v1.tar", None),
            ("application/vnd.cncf.model.weight.v1.tar+lz4", None),
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("", None),
        ];
        for (mt, want) in cases {
            assert_eq!(Packing::of_media_type(mt), want, "{mt}");
        }
        for p in [
            Packing::Raw,
            Packing::Tar,
            Packing::TarGzip,
            Packing::TarZstd,
        ] {
            for kind in MODEL_LAYER_KINDS {
                assert_eq!(Packing::of_media_type(&p.media_type(kind)), Some(p));
            }
        }
    }

    #[test]
    fn file_metadata_as_modctl_writes_it() {
        let m = FileMetadata::parse(
            r#"{"name":"model.safetensors","mode":420,"uid":1000,"gid":1000,"size":17825792,
                "mtime":"2025-03-04T05:06:07.123456789+01:00","typeflag":0}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            FileMetadata {
                mode: Some(0o644),
                mtime: Some(parse_rfc3339("2025-03-04T04:06:07Z").unwrap()),
                size: Some(17825792),
                kind: Some(FileKind::File),
            }
        );
        let dir = FileMetadata::parse(r#"{"mode":493,"typeflag":5}"#).unwrap();
        assert_eq!(dir.kind, Some(FileKind::Dir));
        assert_eq!(dir.mode, Some(0o755));
        assert_eq!(dir.mtime, None);
        // The tar type as a character code.
        assert_eq!(
            FileMetadata::parse(r#"{"typeflag":53}"#).unwrap().kind,
            Some(FileKind::Dir)
        );
        // A symlink, Go's zero time, junk: not used.
        let odd = FileMetadata::parse(
            r#"{"typeflag":2,"mtime":"0001-01-01T00:00:00Z","mode":"rw","size":-1}"#,
        )
        .unwrap();
        assert_eq!(odd, FileMetadata::default());
        assert_eq!(FileMetadata::parse("not json"), None);
        assert_eq!(FileMetadata::parse("[1]"), None);
    }
}
