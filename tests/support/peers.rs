//! The real ORAS CLI and crane, as peers: where their binaries are, and
//! small wrappers that run them against a local plain-HTTP registry.
//!
//! scripts/install-deps.sh builds both with `go install` at pinned
//! versions into `$(go env GOPATH)/bin`; scripts/test.sh puts that folder
//! on `PATH`. A `cargo test` run by hand finds them there too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::cmd::run;

/// The versions scripts/install-deps.sh pins.
pub const ORAS_VERSION: &str = "1.3.6";
pub const CRANE_VERSION: &str = "v0.22.1";

/// The folders a Go binary may be in: `PATH`, then `go env GOPATH`/bin,
/// then `~/go/bin` (the default GOPATH).
fn search_path() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for go in ["go", "/usr/local/go/bin/go"] {
            if let Ok(out) = Command::new(go).args(["env", "GOPATH"]).output() {
                let gopath = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if out.status.success() && !gopath.is_empty() {
                    dirs.extend(std::env::split_paths(&gopath).map(|p| p.join("bin")));
                    break;
                }
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(Path::new(&home).join("go/bin"));
        }
        dirs
    })
}

/// The path of the peer tool `name` (`oras`, `crane`); panics naming the
/// script that installs it.
pub fn peer_bin(name: &str) -> PathBuf {
    search_path()
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed (on PATH or in GOPATH/bin): run scripts/install-deps.sh"
            )
        })
}

/// `oras ARGS...`, checked; stdout. Talks plain HTTP to the test registries
/// (`--plain-http` is given by the callers that reach a registry).
pub fn oras(args: &[&str]) -> String {
    let mut c = Command::new(peer_bin("oras"));
    c.args(args);
    String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
}

/// `oras ARGS...` run in `dir` (relative file paths), checked; stdout.
pub fn oras_in(dir: &Path, args: &[&str]) -> String {
    let mut c = Command::new(peer_bin("oras"));
    c.args(args).current_dir(dir);
    String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
}

/// `crane ARGS...` against plain-HTTP registries (`--insecure`), checked; stdout.
pub fn crane(args: &[&str]) -> String {
    let mut c = Command::new(peer_bin("crane"));
    c.arg("--insecure").args(args);
    String::from_utf8_lossy(&run(&mut c).stdout).into_owned()
}

/// The `Digest: sha256:...` line ORAS prints after a push, attach or index
/// command.
pub fn oras_digest(stdout: &str) -> String {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no 'Digest:' line in oras output:\n{stdout}"))
        .trim()
        .to_string()
}
