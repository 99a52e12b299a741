//! Platforms: what OCI writes (`{"os", "architecture", "variant"}`,
//! `linux/arm/v7`) and the folder names regfs gives them (`linux-arm-v7`).
//!
//! The tree names an index's children by platform and the commit reads the
//! names back, so both directions live here:
//!
//! ```text
//! folder-name ::= os "-" architecture [ "-" variant ]
//! variant     ::= [a-zA-Z0-9.]+
//! ```
//!
//! Any platform has a folder name; only a known `os` and `architecture`
//! make a folder name a platform (`docs-amd64` is a folder, not a platform).

use serde_json::{Map, Value};

/// An image's platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// Never empty: an empty `variant` reads as none.
    pub variant: Option<String>,
}

/// The `os` values a platform folder name may start with (Go's GOOS).
const OS: &[&str] = &[
    "linux",
    "windows",
    "darwin",
    "freebsd",
    "netbsd",
    "openbsd",
    "solaris",
    "illumos",
    "aix",
    "android",
    "ios",
    "plan9",
    "dragonfly",
    "js",
    "wasip1",
    "zos",
];

/// The `architecture` values of a platform folder name (Go's GOARCH).
const ARCH: &[&str] = &[
    "amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64", "mips64le", "mips64",
    "mipsle", "mips", "loong64", "wasm",
];

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// The platform of a descriptor.
    pub fn from_spec(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }

    /// A platform folder name (`linux-amd64`, `linux-arm-v7`), or `None`
    /// for any other folder name.
    pub fn from_folder_name(name: &str) -> Option<Platform> {
        let mut parts = name.splitn(3, '-');
        let os = parts.next()?;
        let arch = parts.next()?;
        let variant = parts.next();
        if !OS.contains(&os) || !ARCH.contains(&arch) {
            return None;
        }
        if let Some(v) = variant {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
                return None;
            }
        }
        Some(Platform::new(os, arch, variant))
    }

    /// `<os>-<arch>[-<variant>]`: the folder name of an index's child.
    pub fn folder_name(&self) -> String {
        self.joined('-')
    }

    /// `<os>/<arch>[/<variant>]`: the platform as OCI tools write it.
    pub fn spec(&self) -> String {
        self.joined('/')
    }

    fn joined(&self, sep: char) -> String {
        let mut s = format!("{}{sep}{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push(sep);
            s.push_str(v);
        }
        s
    }

    /// The JSON object of a config or a descriptor's `platform`, keys in
    /// the order ORAS writes them (the bytes, hence digests, depend on it).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "architecture".into(),
            Value::String(self.architecture.clone()),
        );
        m.insert("os".into(), Value::String(self.os.clone()));
        if let Some(v) = &self.variant {
            m.insert("variant".into(), Value::String(v.clone()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        let table = [
            ("linux-amd64", Some(("linux", "amd64", None))),
            ("linux-arm-v7", Some(("linux", "arm", Some("v7")))),
            ("darwin-arm64", Some(("darwin", "arm64", None))),
            (
                "windows-amd64-10.0",
                Some(("windows", "amd64", Some("10.0"))),
            ),
            ("linux", None),
            ("docs-amd64", None),
            ("linux-x86", None),
            ("linux-arm-", None),
            ("linux-arm-v7/x", None),
            ("sub", None),
        ];
        for (name, want) in table {
            let got = Platform::from_folder_name(name);
            assert_eq!(got, want.map(|(o, a, v)| Platform::new(o, a, v)), "{name}");
            if let Some(p) = got {
                assert_eq!(p.folder_name(), name);
            }
        }
    }

    #[test]
    fn spellings() {
        let p = Platform::new("linux", "arm", Some("v7"));
        assert_eq!(p.folder_name(), "linux-arm-v7");
        assert_eq!(p.spec(), "linux/arm/v7");
        assert_eq!(
            serde_json::to_string(&p.to_json()).unwrap(),
            r#"{"architecture":"arm","os":"linux","variant":"v7"}"#
        );
        let q = Platform::new("plan9", "386", Some(""));
        assert_eq!(q.variant, None);
        assert_eq!(q.spec(), "plan9/386");
        assert_eq!(
            serde_json::to_string(&q.to_json()).unwrap(),
            r#"{"architecture":"386","os":"plan9"}"#
        );
    }
}
