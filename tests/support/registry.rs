//! A real `docker-registry` (distribution 2.8) per test, on its own port,
//! storing into a temporary directory; plain HTTP, or HTTPS with a
//! certificate from `tls.rs`.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::cmd::{run, wait_timeout};
use super::http::{basic_auth, http_request, HttpResponse};
use super::tls::ServerCert;

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Registry {
    dir: TempDir,
    port: u16,
    creds: Option<(String, String)>,
    tls: Option<ServerCert>,
    /// Token auth: the realm and the certificate that signs tokens.
    token: Option<(String, PathBuf)>,
    /// Pull-through cache of this registry URL (distribution's proxy mode).
    proxy_of: Option<String>,
    child: Option<Child>,
}

impl Registry {
    /// Anonymous registry on 127.0.0.1:<free port>, deletes enabled.
    pub fn start() -> Registry {
        Self::start_inner(None, None)
    }

    /// Registry requiring HTTP Basic auth (htpasswd, bcrypt) for every request.
    pub fn start_with_basic_auth(user: &str, pass: &str) -> Registry {
        Self::start_inner(Some((user.to_string(), pass.to_string())), None)
    }

    /// Registry serving HTTPS only, with `cert` (see `tls.rs`). It speaks
    /// no plain HTTP: [`Registry::request`] cannot reach it; the ORAS CLI
    /// with `--ca-file` can.
    pub fn start_tls(cert: &ServerCert) -> Registry {
        Self::start_inner(None, Some(cert.clone()))
    }

    /// HTTPS with `cert`, and Basic auth for every request.
    pub fn start_tls_with_basic_auth(cert: &ServerCert, user: &str, pass: &str) -> Registry {
        Self::start_inner(
            Some((user.to_string(), pass.to_string())),
            Some(cert.clone()),
        )
    }

    /// Registry requiring bearer tokens from `tokens` (`auth: token:`) for
    /// every request. [`Registry::request`] cannot reach it (it speaks
    /// Basic); the ORAS CLI with `-u`/`-p` can.
    pub fn start_with_token_auth(tokens: &super::token::TokenServer) -> Registry {
        Self::start_full(None, None, Some((tokens.realm(), tokens.cert())), None)
    }

    /// A pull-through cache (`proxy: remoteurl:`) of the registry at
    /// `remote_url` ("http://127.0.0.1:PORT"): it answers reads from its
    /// storage, fetching and keeping what it lacks from the remote, and
    /// refuses pushes.
    pub fn start_proxy(remote_url: &str) -> Registry {
        Self::start_full(None, None, None, Some(remote_url.to_string()))
    }

    fn start_inner(creds: Option<(String, String)>, tls: Option<ServerCert>) -> Registry {
        Self::start_full(creds, tls, None, None)
    }

    fn start_full(
        creds: Option<(String, String)>,
        tls: Option<ServerCert>,
        token: Option<(String, PathBuf)>,
        proxy_of: Option<String>,
    ) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("regfs-registry-")
            .tempdir()
            .expect("registry tempdir");
        if let Some((u, p)) = &creds {
            fs::write(dir.path().join("htpasswd"), htpasswd_line(u, p)).expect("write htpasswd");
        }
        let mut reg = Registry {
            dir,
            port: 0,
            creds,
            tls,
            token,
            proxy_of,
            child: None,
        };
        // A free port found by binding :0 can be taken by someone else
        // before the registry binds it: retry with a new one.
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.port = free_port();
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) if e.contains("address already in use") => last_err = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("docker-registry could not bind a port: {last_err}");
    }

    fn write_config(&self) -> PathBuf {
        let root = self.dir.path();
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: error\n  formatter: text\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: regfs-test-secret\n",
            data = root.join("data").display(),
            port = self.port
        );
        if let Some(t) = &self.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ));
        }
        if let Some(remote) = &self.proxy_of {
            cfg.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
        }
        if self.creds.is_some() {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: regfs-test\n    path: {}\n",
                root.join("htpasswd").display()
            ));
        }
        if let Some((realm, cert)) = &self.token {
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                super::token::TOKEN_SERVICE,
                super::token::TOKEN_ISSUER,
                cert.display()
            ));
        }
        let path = root.join("config.yml");
        fs::write(&path, cfg).expect("write registry config");
        path
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Registry's own output so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let config = self.write_config();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("registry log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {REGISTRY_BIN} (run scripts/install-deps.sh): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "docker-registry exited early ({st}) on port {}; its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            // A TLS listener answers plain HTTP with 400 and Go's "Client
            // sent an HTTP request to an HTTPS server": up, and speaking TLS.
            if let Ok(r) = http_request(&self.host(), "GET", "/v2/", &[], &[]) {
                let ready = match self.tls {
                    None => r.status == 200 || r.status == 401,
                    Some(_) => r.status == 400 && r.text().contains("HTTPS server"),
                };
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "docker-registry did not answer GET /v2/ on {} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.host(),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if wait_timeout(&mut c, Duration::from_secs(10)).is_none() {
                eprintln!(
                    "warning: docker-registry pid {} did not exit after SIGKILL",
                    c.id()
                );
            }
        }
    }

    /// Stops the registry process (its storage stays), e.g. to test a mount
    /// whose registry went away. [`Registry::restart`] brings it back.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// (Re)starts the registry on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // the old socket may linger for a moment
                Err(e) if e.contains("address already in use") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// "127.0.0.1:PORT"
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// "http://127.0.0.1:PORT", or "https://..." for a TLS registry.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// Whether it serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The registry's storage root (filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The tempdir holding config, storage, htpasswd and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (user, password) for a registry started with basic auth.
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Request to this registry (plain HTTP only), with basic auth when it
    /// has credentials.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        assert!(
            self.tls.is_none(),
            "Registry::request speaks plain HTTP; {} serves HTTPS (use oras --ca-file)",
            self.host()
        );
        let auth;
        let mut hs: Vec<(&str, &str)> = headers.to_vec();
        if let Some((u, p)) = self.creds() {
            auth = basic_auth(u, p);
            hs.push(("Authorization", &auth));
        }
        http_request(&self.host(), method, path, &hs, body).unwrap_or_else(|e| {
            panic!(
                "{method} {}{path}: {e}\nregistry log:\n{}",
                self.url(),
                self.log()
            )
        })
    }

    /// Uploads `data` as a blob of `repo` (POST, then one PUT); returns
    /// its digest.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = super::fixtures::sha256_bytes(data);
        let r = self.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[]);
        assert_eq!(r.status, 202, "start upload to {repo}: {}", r.text());
        let loc = r.header("Location").expect("upload Location").to_string();
        let path = match loc.find("/v2/") {
            Some(i) => loc[i..].to_string(),
            None => loc,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self.request(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(r.status, 201, "upload {digest} to {repo}: {}", r.text());
        digest
    }

    /// Puts manifest `bytes` (of `media_type`) as `repo:reference` (a tag
    /// or its digest); returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> String {
        let r = self.request(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        );
        assert_eq!(
            r.status,
            201,
            "put manifest {repo}:{reference}: {}",
            r.text()
        );
        super::fixtures::sha256_bytes(bytes)
    }

    /// Tags of `repo` (empty when the repository does not exist).
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.request("GET", &format!("/v2/{repo}/tags/list"), &[], &[]);
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "tags/list {repo}: {}", r.text());
        let mut v: Vec<String> = r.json()["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Repositories from /v2/_catalog (all pages; the registry caps a
    /// page at 1000 entries and answers 400 to a larger `n`).
    pub fn catalog(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut path = "/v2/_catalog?n=1000".to_string();
        loop {
            let r = self.request("GET", &path, &[], &[]);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            if let Some(a) = r.json()["repositories"].as_array() {
                out.extend(a.iter().filter_map(|t| t.as_str().map(String::from)));
            }
            match r.header("Link").and_then(next_link) {
                Some(next) => path = next,
                None => return out,
            }
        }
    }
}

/// The target of a `Link: <URL>; rel="next"` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',')
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            Some(l[start..end].to_string())
        })
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// One htpasswd line with a bcrypt hash (the only scheme distribution's
/// htpasswd auth accepts): `htpasswd -nbB` from apache2-utils, else
/// python3's `bcrypt` module.
pub fn htpasswd_line(user: &str, pass: &str) -> String {
    if Path::new("/usr/bin/htpasswd").exists() {
        let out = run(Command::new("/usr/bin/htpasswd").args(["-nbB", "-C", "4", user, pass]));
        let s = String::from_utf8_lossy(&out.stdout);
        let line = s.lines().next().unwrap_or_default().trim().to_string();
        assert!(
            line.starts_with(&format!("{user}:$2")),
            "unexpected htpasswd output: {s}"
        );
        return line + "\n";
    }
    let out = run(Command::new("python3").args([
        "-c",
        "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(4)).decode())",
        user,
        pass,
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string() + "\n"
}
