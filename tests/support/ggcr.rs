//! go-containerregistry's registry (`pkg/registry`, the version crane is
//! built from) with the OCI referrers API on: the tests' second registry,
//! next to docker-registry 2.8, which has no referrers API.
//!
//! tests/ggcr-registry/ is a small Go program serving it. It is built on
//! first use with `go build` into `<cargo target dir>/ggcr-registry/`, and
//! built again only when its sources are newer than the binary
//! (scripts/install-deps.sh downloads its modules, so a test run needs no
//! network). Each [`GgcrRegistry`] is one process on a port it picked
//! itself (`-addr 127.0.0.1:0`, then the address on its first line of
//! stdout), so there is no race for a free port. Manifests and blobs live
//! in its memory. It is killed by PID on drop, and exits by itself when
//! the test process goes away (its stdin, a pipe we hold, ends).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::cmd::{run, wait_timeout};
use super::http::{http_request, HttpResponse};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct GgcrRegistry {
    dir: TempDir,
    host: String,
    child: Option<Child>,
    /// Held open: the registry exits when it is closed.
    _stdin: Option<ChildStdin>,
}

impl GgcrRegistry {
    /// A registry on 127.0.0.1:<a port it chose>, referrers API on,
    /// `OCI-Subject` sent as distribution-spec v1.1.1 requires (the one
    /// thing tests/ggcr-registry/main.go adds to go-containerregistry's
    /// registry).
    pub fn start() -> GgcrRegistry {
        Self::start_with(&[])
    }

    /// The same, as go-containerregistry v0.22.1 serves it: the referrers
    /// API, but no `OCI-Subject` header.
    pub fn start_without_oci_subject() -> GgcrRegistry {
        Self::start_with(&["-oci-subject=false"])
    }

    fn start_with(args: &[&str]) -> GgcrRegistry {
        let dir = tempfile::Builder::new()
            .prefix("regfs-ggcr-")
            .tempdir()
            .expect("ggcr registry tempdir");
        let bin = ggcr_bin();
        let log = dir.path().join("registry.log");
        let mut child = Command::new(bin)
            .args(["-addr", "127.0.0.1:0", "-log"])
            .arg(&log)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                fs::File::create(dir.path().join("stderr.log")).expect("ggcr registry stderr file"),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        // The first line of stdout is the address, read on a thread so a
        // registry that never prints cannot hang the test.
        let stdout = child.stdout.take().expect("ggcr registry stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut reg = GgcrRegistry {
            dir,
            host: String::new(),
            child: Some(child),
            _stdin: stdin,
        };
        let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        reg.host = line.trim().to_string();
        if !reg.host.starts_with("127.0.0.1:") {
            let stderr = fs::read_to_string(reg.dir.path().join("stderr.log")).unwrap_or_default();
            reg.kill();
            panic!(
                "ggcr-registry did not say where it listens (got {line:?}); its stderr:\n{stderr}"
            );
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !http_request(&reg.host, "GET", "/v2/", &[], &[]).is_ok_and(|r| r.status == 200) {
            assert!(
                Instant::now() < deadline,
                "ggcr-registry on {} did not answer GET /v2/",
                reg.host
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        self.host.clone()
    }

    /// Its request log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn request(&self, method: &str, path: &str) -> HttpResponse {
        http_request(&self.host, method, path, &[], &[]).unwrap_or_else(|e| {
            panic!(
                "{method} http://{}{path}: {e}\nregistry log:\n{}",
                self.host,
                self.log()
            )
        })
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                eprintln!(
                    "warning: ggcr-registry pid {} did not exit after SIGKILL",
                    c.id()
                );
            }
        }
    }
}

impl Drop for GgcrRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Go program's sources.
fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ggcr-registry")
}

/// The built registry, built now if missing or older than its sources.
pub fn ggcr_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/regfs -> target/ggcr-registry/ggcr-registry
        let target = Path::new(env!("CARGO_BIN_EXE_regfs"))
            .parent()
            .and_then(Path::parent)
            .expect("the cargo target dir");
        let out_dir = target.join("ggcr-registry");
        let bin = out_dir.join("ggcr-registry");
        let src = source_dir();
        let newest_source = ["main.go", "go.mod", "go.sum"]
            .iter()
            .filter_map(|f| fs::metadata(src.join(f)).and_then(|m| m.modified()).ok())
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| b >= newest_source) {
            return bin;
        }
        fs::create_dir_all(&out_dir).expect("create the ggcr-registry build folder");
        // Built under a name of our own, then renamed: another test binary
        // building at the same time never runs a half-written file.
        let tmp = out_dir.join(format!("ggcr-registry.{}", std::process::id()));
        let mut c = Command::new(go_bin());
        c.args(["build", "-buildvcs=false", "-o"])
            .arg(&tmp)
            .arg(".")
            .current_dir(&src);
        run(&mut c);
        fs::rename(&tmp, &bin).expect("rename the built ggcr-registry");
        bin
    })
}

/// `go` on PATH, else the tarball install in /usr/local/go.
fn go_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("go"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!("go is not installed (needed to build tests/ggcr-registry): run scripts/install-deps.sh")
        })
}
