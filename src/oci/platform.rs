//! Platforms: what OCI writes (`{"os", "architecture", "variant",
//! "os.version"}`, `linux/arm/v7`) and the folder names regfs gives them
//! (`linux-arm-v7`, `darwin-arm64-macOS_13`).
//!
//! The tree names an index's children by platform and the commit reads the
//! names back, so both directions live here:
//!
//! ```text
//! folder-name ::= os "-" architecture [ "-" variant ] [ "-" os-version ]
//! variant     ::= "v" [0-9]+ [ "." [0-9]+ ]      (v5, v7, v8, v8.2: what platforms use)
//! os-version  ::= [A-Za-z0-9._+]+                (every other character becomes "_")
//! ```
//!
//! A name depends only on its own platform. Any platform has a folder
//! name; only a known `os` and `architecture` make a folder name a platform
//! (`docs-amd64` is a folder, not a platform). Reading a name back is exact
//! for every name it writes, except two things a name cannot carry: an
//! `os.version` that had characters replaced (`macOS_13` reads back as
//! `macOS_13`, not `macOS 13`), and a variant outside the grammar
//! (`linux-riscv64-rva22u64` reads back with `os.version` `rva22u64`).

use serde_json::{Map, Value};

/// An image's platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    /// Never empty: an empty `variant` reads as none.
    pub variant: Option<String>,
    /// `os.version` (`10.0.20348.2113`, `macOS 13`); never empty.
    pub os_version: Option<String>,
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
            os_version: None,
        }
    }

    /// The same platform with an `os.version` (none when empty).
    pub fn with_os_version(mut self, os_version: Option<&str>) -> Platform {
        self.os_version = os_version.filter(|v| !v.is_empty()).map(str::to_string);
        self
    }

    /// The platform of a descriptor.
    pub fn from_spec(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
        .with_os_version(p.os_version().as_deref())
    }

    /// A platform folder name (`linux-amd64`, `linux-arm-v7`,
    /// `windows-amd64-10.0.20348.2113`), or `None` for any other folder name.
    pub fn from_folder_name(name: &str) -> Option<Platform> {
        let mut parts = name.splitn(3, '-');
        let os = parts.next()?;
        let arch = parts.next()?;
        if !OS.contains(&os) || !ARCH.contains(&arch) {
            return None;
        }
        let Some(rest) = parts.next() else {
            return Some(Platform::new(os, arch, None));
        };
        let (variant, os_version) = match rest.split_once('-') {
            Some((v, ver)) if is_variant(v) => (Some(v), Some(ver)),
            None if is_variant(rest) => (Some(rest), None),
            _ => (None, Some(rest)),
        };
        match os_version {
            Some(v) if !is_os_version_name(v) => None,
            _ => Some(Platform::new(os, arch, variant).with_os_version(os_version)),
        }
    }

    /// `<os>-<arch>[-<variant>][-<os.version>]`: the folder name of an
    /// index's child, `os.version` with every character outside
    /// `A-Za-z0-9._+` replaced by `_`.
    pub fn folder_name(&self) -> String {
        let mut s = self.joined('-');
        if let Some(v) = &self.os_version {
            s.push('-');
            s.extend(
                v.chars()
                    .map(|c| if is_os_version_char(c) { c } else { '_' }),
            );
        }
        s
    }

    /// `<os>/<arch>[/<variant>][:<os.version>]`: the platform as ORAS
    /// writes it (`oras push --artifact-platform windows/amd64:10.0.20348.2113`).
    pub fn spec(&self) -> String {
        let mut s = self.joined('/');
        if let Some(v) = &self.os_version {
            s.push(':');
            s.push_str(v);
        }
        s
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
    /// the order ORAS writes them (Go's `ocispec.Platform`: the bytes,
    /// hence digests, depend on it).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "architecture".into(),
            Value::String(self.architecture.clone()),
        );
        m.insert("os".into(), Value::String(self.os.clone()));
        if let Some(v) = &self.os_version {
            m.insert("os.version".into(), Value::String(v.clone()));
        }
        if let Some(v) = &self.variant {
            m.insert("variant".into(), Value::String(v.clone()));
        }
        m
    }
}

/// Readies a descriptor's raw JSON for `oci_spec`: its `Platform` (0.10)
/// reads `os.version` and `os.features` under the field names `os_version`
/// and `os_features` (the image config has the rename, the descriptor does
/// not), so the OCI names are copied to those. Only the parsed copy is
/// touched; manifest bytes never are.
pub fn prepare_descriptor(descriptor: &mut Value) {
    let Some(p) = descriptor
        .get_mut("platform")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (oci, field) in [("os.version", "os_version"), ("os.features", "os_features")] {
        if let Some(v) = p.get(oci).cloned() {
            p.insert(field.to_string(), v);
        }
    }
}

/// `variant ::= "v" [0-9]+ [ "." [0-9]+ ]`
fn is_variant(s: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match s.strip_prefix('v') {
        Some(rest) => match rest.split_once('.') {
            Some((major, minor)) => digits(major) && digits(minor),
            None => digits(rest),
        },
        None => false,
    }
}

/// A character an `os.version` keeps in a folder name: `[A-Za-z0-9._+]`.
fn is_os_version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+')
}

/// `os-version ::= [A-Za-z0-9._+]+`
fn is_os_version_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_os_version_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (os, architecture, variant, os.version)
    type Parts = (
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    fn platform((o, a, v, ver): Parts) -> Platform {
        Platform::new(o, a, v).with_os_version(ver)
    }

    #[test]
    fn folder_names_read_back() {
        let table: [(&str, Option<Parts>); 19] = [
            ("linux-amd64", Some(("linux", "amd64", None, None))),
            ("linux-arm-v7", Some(("linux", "arm", Some("v7"), None))),
            (
                "linux-arm64-v8.2",
                Some(("linux", "arm64", Some("v8.2"), None)),
            ),
            ("darwin-arm64", Some(("darwin", "arm64", None, None))),
            (
                "windows-amd64-10.0.20348.2113",
                Some(("windows", "amd64", None, Some("10.0.20348.2113"))),
            ),
            (
                "darwin-arm64-macOS_13",
                Some(("darwin", "arm64", None, Some("macOS_13"))),
            ),
            (
                "linux-arm-v7-foo_bar",
                Some(("linux", "arm", Some("v7"), Some("foo_bar"))),
            ),
            // not a variant: the rest is the os.version
            ("linux-arm-vx", Some(("linux", "arm", None, Some("vx")))),
            ("linux-arm-v7.", Some(("linux", "arm", None, Some("v7.")))),
            (
                "windows-amd64-10.0",
                Some(("windows", "amd64", None, Some("10.0"))),
            ),
            ("linux", None),
            ("docs-amd64", None),
            ("linux-x86", None),
            ("linux-arm-", None),
            ("linux-arm-v7-", None),
            ("linux-arm-v7/x", None),
            ("linux-amd64-a-b", None),
            ("darwin-arm64-macOS 13", None),
            ("sub", None),
        ];
        for (name, want) in table {
            let got = Platform::from_folder_name(name);
            assert_eq!(got, want.map(platform), "{name}");
            if let Some(p) = got {
                assert_eq!(p.folder_name(), name, "a name reads back to itself");
            }
        }
    }

    #[test]
    fn os_version_in_names() {
        let table: [(Parts, &str, &str); 6] = [
            (
                ("windows", "amd64", None, Some("10.0.20348.2113")),
                "windows-amd64-10.0.20348.2113",
                "windows/amd64:10.0.20348.2113",
            ),
            (
                ("darwin", "arm64", None, Some("macOS 13")),
                "darwin-arm64-macOS_13",
                "darwin/arm64:macOS 13",
            ),
            (
                ("linux", "arm", Some("v7"), Some("a/b-c+d\u{e9}")),
                "linux-arm-v7-a_b_c+d_",
                "linux/arm/v7:a/b-c+d\u{e9}",
            ),
            (
                ("linux", "amd64", None, Some("")),
                "linux-amd64",
                "linux/amd64",
            ),
            (
                ("linux", "amd64", Some(""), None),
                "linux-amd64",
                "linux/amd64",
            ),
            (
                ("plan9", "386", None, Some("..")),
                "plan9-386-..",
                "plan9/386:..",
            ),
        ];
        for (parts, name, spec) in table {
            let p = platform(parts);
            assert_eq!(p.folder_name(), name, "{parts:?}");
            assert_eq!(p.spec(), spec, "{parts:?}");
        }
    }

    #[test]
    fn os_version_is_read_from_a_descriptor() {
        let mut d = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "a".repeat(64)), "size": 1,
            "platform": {"architecture": "amd64", "os": "windows",
                         "os.version": "10.0.20348.2113", "os.features": ["win32k"]}
        });
        prepare_descriptor(&mut d);
        let parsed: oci_spec::image::Descriptor = serde_json::from_value(d).unwrap();
        let p = Platform::from_spec(parsed.platform().as_ref().unwrap());
        assert_eq!(p.os_version.as_deref(), Some("10.0.20348.2113"));
        assert_eq!(p.folder_name(), "windows-amd64-10.0.20348.2113");
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
        // what `oras push --artifact-platform linux/arm/v7:foo` writes
        let r = Platform::new("linux", "arm", Some("v7")).with_os_version(Some("foo"));
        assert_eq!(
            serde_json::to_string(&r.to_json()).unwrap(),
            r#"{"architecture":"arm","os":"linux","os.version":"foo","variant":"v7"}"#
        );
    }
}
