//! A token service for `docker-registry`'s token auth (`auth: token:`), as
//! the distribution token spec describes it: `GET /token?service=&scope=`
//! with Basic credentials in, a JWT signed RS256 out, granting each user
//! what the test says. The key and its self-signed certificate are made
//! with `openssl` per server; the JWT names the certificate in `x5c`, which
//! the registry checks against `rootcertbundle`, and is signed with
//! `openssl dgst -sha256 -sign`.
//!
//! docker_auth (cesanta) would do the same, but its Go module is not on
//! the module proxy; this is the part of it the tests need.
//!
//! distribution accepts a token up to 60 s past its `exp` (clock skew
//! leeway). To make a token really expire after `lifetime`, its `exp` is
//! `lifetime - 60` s from now, and `expires_in` (what clients go by) is
//! `lifetime`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::cmd::run;

pub const TOKEN_SERVICE: &str = "regfs-test-registry";
pub const TOKEN_ISSUER: &str = "regfs-test-tokens";

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pull: bool,
    pub push: bool,
    /// `registry:catalog:*`
    pub catalog: bool,
}

impl Grant {
    pub const ALL: Grant = Grant {
        pull: true,
        push: true,
        catalog: true,
    };
    pub const PULL: Grant = Grant {
        pull: true,
        push: false,
        catalog: true,
    };
}

/// One token handed out.
#[derive(Clone, Debug)]
pub struct Issued {
    /// `None`: asked without credentials.
    pub user: Option<String>,
    /// The scopes asked for, as sent.
    pub scopes: Vec<String>,
    /// What the token grants, as `type:name:actions`.
    pub granted: Vec<String>,
}

struct Shared {
    users: Vec<(String, String, Grant)>,
    lifetime: Duration,
    key: PathBuf,
    x5c: String,
    issued: Mutex<Vec<Issued>>,
    refused: Mutex<u64>,
}

pub struct TokenServer {
    dir: TempDir,
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TokenServer {
    /// A token service on 127.0.0.1:<free port> for `users` (name,
    /// password, grant); tokens live `lifetime`.
    pub fn start(users: &[(&str, &str, Grant)], lifetime: Duration) -> TokenServer {
        let dir = tempfile::Builder::new()
            .prefix("regfs-tokens-")
            .tempdir()
            .expect("token tempdir");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=regfs test token issuer",
            ])
            .current_dir(dir.path()));
        let der = run(Command::new("openssl")
            .args(["x509", "-in", "cert.pem", "-outform", "DER"])
            .current_dir(dir.path()))
        .stdout;
        let shared = Arc::new(Shared {
            users: users
                .iter()
                .map(|(u, p, g)| (u.to_string(), p.to_string(), *g))
                .collect(),
            lifetime,
            key: dir.path().join("key.pem"),
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
            issued: Mutex::new(Vec::new()),
            refused: Mutex::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        thread::spawn(move || serve(conn, &s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TokenServer {
            dir,
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// The realm the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The certificate whose key signs the tokens (`rootcertbundle`).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Every token handed out so far.
    pub fn issued(&self) -> Vec<Issued> {
        self.shared.issued.lock().unwrap().clone()
    }

    /// Token requests refused (unknown user, wrong password).
    pub fn refused(&self) -> u64 {
        *self.shared.refused.lock().unwrap()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one connection: one request.
fn serve(conn: TcpStream, s: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    let mut auth = None;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "authorization" {
                auth = Some(v);
            } else if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    let _ = r.read_exact(&mut body);
    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(("scope", v)) = pair.split_once('=') {
            scopes.push(percent_decode(v));
        }
    }
    let user = match auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        None => None,
        Some(b) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default();
            let (u, p) = decoded.split_once(':').unwrap_or(("", ""));
            match s.users.iter().find(|(n, pw, _)| n == u && pw == p) {
                Some((n, _, g)) => Some((n.clone(), *g)),
                None => {
                    *s.refused.lock().unwrap() += 1;
                    return answer(conn, 401, &json!({"details": "wrong credentials"}));
                }
            }
        }
    };
    let grant = user.as_ref().map(|(_, g)| *g);
    let mut access = Vec::new();
    let mut granted = Vec::new();
    for scope in &scopes {
        // type:name:actions (the name may hold ':' with a port; not here)
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let allowed: Vec<&str> = actions
            .split(',')
            .filter(|a| match (kind, *a, grant) {
                ("repository", "pull", Some(g)) => g.pull,
                ("repository", "push", Some(g)) => g.push,
                ("registry", "*", Some(g)) => name == "catalog" && g.catalog,
                _ => false,
            })
            .collect();
        if !allowed.is_empty() {
            granted.push(format!("{kind}:{name}:{}", allowed.join(",")));
            access.push(json!({"type": kind, "name": name, "actions": allowed}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let lifetime = s.lifetime.as_secs() as i64;
    let n = s.issued.lock().unwrap().len();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [s.x5c]});
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": user.as_ref().map(|(u, _)| u.as_str()).unwrap_or(""),
        "aud": TOKEN_SERVICE,
        "exp": now + lifetime - 60,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("regfs-test-{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let Some(signature) = sign(&s.key, signing_input.as_bytes()) else {
        return answer(conn, 500, &json!({"details": "signing failed"}));
    };
    let token = format!("{signing_input}.{}", b64url(&signature));
    s.issued.lock().unwrap().push(Issued {
        user: user.map(|(u, _)| u),
        scopes,
        granted,
    });
    answer(
        conn,
        200,
        &json!({"token": token, "access_token": token, "expires_in": lifetime}),
    );
}

/// RS256: `openssl dgst -sha256 -sign KEY` over `input`.
fn sign(key: &std::path::Path, input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(input).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

fn answer(mut conn: TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        _ => "Internal Server Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
