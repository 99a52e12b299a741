//! A fault-injecting HTTP/1.1 proxy in front of a real registry.
//!
//! Clients connect to `proxy.host()` as if it were the registry. Each
//! request is forwarded on a fresh upstream connection (`Connection: close`
//! upstream; keep-alive is kept towards the client), and the answer is
//! streamed back, altered according to the current [`Mode`], which tests
//! may change at any time with [`FaultProxy::set_mode`]. Headers (Range,
//! Authorization, Host, ...) pass through unchanged, so upload `Location`s
//! point back at the proxy.
//!
//! The proxy runs on its own tokio runtime (two worker threads), so it works
//! from plain `#[test]`s and from async tests alike; dropping it closes the
//! listener and every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the traffic. "Blob GET" means a GET whose path
/// contains `/blobs/sha256:` (blob uploads, `/blobs/uploads/`, are not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything unchanged.
    Pass,
    /// Blob GET answers with a body: one byte (in the middle of this
    /// response's body) is flipped; length and headers unchanged. Applies
    /// to every blob GET, full or Range, until the mode changes.
    CorruptBlobs,
    /// Blob GET answers: headers unchanged (full Content-Length), only the
    /// first n body bytes are sent, then the connection is closed. Applies
    /// to every blob GET (so a client resuming with Range gets n more bytes
    /// per attempt).
    TruncateBlobs(u64),
    /// Answer the next `count` requests with 503 (no upstream contact),
    /// then switch to `Pass` by itself.
    Fail5xx(u32),
    /// Answer the next `count` requests with `status` (e.g. 429), then `Pass`.
    FailWith { status: u16, count: u32 },
    /// Answer every request with 503 and `Retry-After: secs` (a registry
    /// that always asks to come back later), until the mode changes.
    Unavailable { retry_after: u32 },
    /// Accept connections, close them at once (also closes kept-alive
    /// connections at their next request): "connection reset".
    Dead,
    /// Accept connections and never answer (until the mode changes back or
    /// the proxy is dropped; kept-alive connections stop answering too).
    Blackhole,
    /// Stop listening: new connections are refused. Listening resumes on
    /// the same port when the mode changes.
    Refuse,
    /// Every n-th blob GET answered 206 (a Range response) has one byte
    /// flipped, as `CorruptBlobs` does; the others pass.
    CorruptRangesEvery(u64),
    /// A distant registry: every request waits `rtt_ms` before it is
    /// forwarded (one round trip), and each blob answer is sent at no more
    /// than `bytes_per_sec` (per connection, as a congested path caps one
    /// TCP stream). The slow-link bench runs through it.
    SlowLink { rtt_ms: u64, bytes_per_sec: u64 },
    /// Strip `Range`/`If-Range` from requests, so the registry answers 200
    /// with the whole body (Range support is optional in distribution-spec).
    IgnoreRange,
    /// Blob GET bodies are sent at about this many bytes per second.
    SlowBlobs(u64),
    /// Blob GET answers: send the first n body bytes, then stall (connection
    /// open, nothing more sent) until the client gives up.
    StallBlobs(u64),
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// Status sent to the client; 0 when none was sent (Dead, Blackhole,
    /// upstream failure before a head).
    pub status: u16,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    blob_gets: AtomicU64,
    blob_heads: AtomicU64,
    manifest_gets: AtomicU64,
    range_requests: AtomicU64,
    blob_bytes_sent: AtomicU64,
    connections: AtomicU64,
    /// Range responses seen by `CorruptRangesEvery`.
    ranges_answered: AtomicU64,
}

/// A fault aimed at some requests only (set with [`FaultProxy::set_rule`]),
/// applied before the [`Mode`]: every request whose method equals `method`
/// (empty: any) and whose path contains `path_contains` (is exactly it,
/// with `exact`) gets `action`, until the rule is cleared. Matching
/// requests do not use up `Fail5xx` counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub method: String,
    pub path_contains: String,
    pub exact: bool,
    pub action: RuleAction,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Answer with this status (no upstream contact), as `Fail5xx` does
    /// (`Fail(200)` answers for the registry: an anonymous `GET /v2/`).
    Fail(u16),
    /// Close the connection without an answer, as `Dead` does.
    Close,
    /// Never answer (read and discard what the client sends), as `Blackhole`.
    Hang,
    /// Forward, but pass the request body on at about this many bytes per
    /// second (a slow upload).
    SlowBody(u64),
}

impl Rule {
    pub fn new(method: &str, path_contains: &str, action: RuleAction) -> Rule {
        Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            exact: false,
            action,
        }
    }

    /// A rule for requests to exactly `path` (`/v2/`, which every path contains).
    pub fn exact(method: &str, path: &str, action: RuleAction) -> Rule {
        Rule {
            exact: true,
            ..Rule::new(method, path, action)
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method.is_empty() || self.method.eq_ignore_ascii_case(method))
            && if self.exact {
                path == self.path_contains
            } else {
                path.contains(&self.path_contains)
            }
    }
}

struct Shared {
    upstream: String,
    mode: Mutex<Mode>,
    counters: Counters,
    log: Mutex<Vec<RequestRecord>>,
    rule: Mutex<Option<Rule>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().clone()
    }
}

/// The proxy. See the module documentation.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A cheap clonable handle to change the mode and read counters from other
/// threads.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:<free port> forwarding to `upstream`
    /// ("127.0.0.1:PORT").
    pub fn start(upstream: &str, mode: Mode) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            mode: Mutex::new(mode),
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
            rule: Mutex::new(None),
        });
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener).expect("tokio listener")
        };
        rt.spawn(accept_loop(listener, addr, shared.clone()));
        FaultProxy {
            addr,
            shared,
            rt: Some(rt),
        }
    }

    /// "127.0.0.1:PORT" to give to clients instead of the registry's.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.handle().set_mode(mode)
    }

    /// Sets (or with `None` clears) the per-request [`Rule`].
    pub fn set_rule(&self, rule: Option<Rule>) {
        self.handle().set_rule(rule)
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// All requests whose head was read (whatever the mode did with them).
    pub fn requests(&self) -> u64 {
        self.handle().requests()
    }

    /// GET requests for `/blobs/sha256:...`, full or Range.
    pub fn blob_gets(&self) -> u64 {
        self.handle().blob_gets()
    }

    /// HEAD requests for `/blobs/sha256:...`.
    pub fn blob_heads(&self) -> u64 {
        self.shared.counters.blob_heads.load(Ordering::SeqCst)
    }

    /// GET requests for `/manifests/...`.
    pub fn manifest_gets(&self) -> u64 {
        self.handle().manifest_gets()
    }

    /// Requests carrying a `Range` header.
    pub fn range_requests(&self) -> u64 {
        self.shared.counters.range_requests.load(Ordering::SeqCst)
    }

    /// Body bytes of blob GET answers sent to clients (counted as they are
    /// handed to the socket).
    pub fn blob_bytes_sent(&self) -> u64 {
        self.handle().blob_bytes_sent()
    }

    /// Client connections accepted.
    pub fn connections(&self) -> u64 {
        self.shared.counters.connections.load(Ordering::SeqCst)
    }

    /// Every request seen, in arrival order.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.handle().log()
    }

    /// Zeroes the counters and clears the log.
    pub fn reset_counters(&self) {
        self.handle().reset_counters()
    }
}

impl ProxyHandle {
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }
    pub fn set_rule(&self, rule: Option<Rule>) {
        *self.shared.rule.lock().unwrap() = rule;
    }
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }
    pub fn requests(&self) -> u64 {
        self.shared.counters.requests.load(Ordering::SeqCst)
    }
    pub fn blob_gets(&self) -> u64 {
        self.shared.counters.blob_gets.load(Ordering::SeqCst)
    }
    pub fn manifest_gets(&self) -> u64 {
        self.shared.counters.manifest_gets.load(Ordering::SeqCst)
    }
    pub fn blob_bytes_sent(&self) -> u64 {
        self.shared.counters.blob_bytes_sent.load(Ordering::SeqCst)
    }
    pub fn log(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap().clone()
    }
    pub fn reset_counters(&self) {
        let c = &self.shared.counters;
        for a in [
            &c.requests,
            &c.blob_gets,
            &c.blob_heads,
            &c.manifest_gets,
            &c.range_requests,
            &c.blob_bytes_sent,
            &c.connections,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        self.shared.log.lock().unwrap().clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Drops every task (listener and connections) without blocking;
            // allowed inside an async context too.
            rt.shutdown_background();
        }
    }
}

const POLL: Duration = Duration::from_millis(10);

async fn accept_loop(mut listener: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    loop {
        if shared.mode() == Mode::Refuse {
            drop(listener);
            while shared.mode() == Mode::Refuse {
                tokio::time::sleep(POLL).await;
            }
            listener = loop {
                match TcpListener::bind(addr).await {
                    Ok(l) => break l,
                    Err(_) => tokio::time::sleep(POLL).await,
                }
            };
            continue;
        }
        // Wake up now and then to notice a switch to Refuse.
        let accepted = tokio::time::timeout(Duration::from_millis(50), listener.accept()).await;
        let Ok(Ok((stream, _))) = accepted else {
            continue;
        };
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        match shared.mode() {
            Mode::Dead | Mode::Refuse => drop(stream),
            _ => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(handle_conn(stream, shared.clone()));
            }
        }
    }
}

struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
    fn body_kind(&self) -> BodyKind {
        if self.has_token("Transfer-Encoding", "chunked") {
            BodyKind::Chunked
        } else if let Some(n) = self
            .get("Content-Length")
            .and_then(|v| v.trim().parse().ok())
        {
            BodyKind::Length(n)
        } else {
            BodyKind::None
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BodyKind {
    None,
    Length(u64),
    Chunked,
    UntilEof,
}

/// Reads a request/response head; `Ok(None)` at a clean EOF before it.
async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    loop {
        first.clear();
        if r.read_line(&mut first).await? == 0 {
            return Ok(None);
        }
        if !first.trim().is_empty() {
            break; // tolerate stray CRLF between requests
        }
    }
    let mut headers = Vec::new();
    let mut total = first.len();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF in head",
            ));
        }
        total += line.len();
        if total > 256 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "head too large",
            ));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Head {
        first_line: first.trim_end().to_string(),
        headers,
    }))
}

fn serialize_head(first_line: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str(first_line);
    s.push_str("\r\n");
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Copies a chunked body verbatim (framing included) from `r` to `w`.
async fn copy_chunked<R, W>(r: &mut R, w: &mut W) -> std::io::Result<u64>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut total = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF in chunked body",
            ));
        }
        w.write_all(line.as_bytes()).await?;
        let size_str = line.trim().split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_str, 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            loop {
                let mut t = String::new();
                if r.read_line(&mut t).await? == 0 {
                    break;
                }
                w.write_all(t.as_bytes()).await?;
                if t.trim().is_empty() {
                    break;
                }
            }
            return Ok(total);
        }
        total += tokio::io::copy(&mut (&mut *r).take(size), w).await?;
        let mut crlf = String::new();
        r.read_line(&mut crlf).await?;
        w.write_all(crlf.as_bytes()).await?;
    }
}

async fn copy_body<R, W>(kind: BodyKind, r: &mut R, w: &mut W) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match kind {
        BodyKind::None => Ok(()),
        BodyKind::Length(n) => {
            let copied = tokio::io::copy(&mut (&mut *r).take(n), w).await?;
            if copied < n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "short body",
                ));
            }
            Ok(())
        }
        BodyKind::Chunked => copy_chunked(r, w).await.map(|_| ()),
        BodyKind::UntilEof => tokio::io::copy(r, w).await.map(|_| ()),
    }
}

/// Copies `n` body bytes at about `bps` bytes per second.
async fn copy_slowly<R, W>(n: u64, bps: u64, r: &mut R, w: &mut W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let chunk = (bps / 20).clamp(1, 256 * 1024) as usize;
    let mut buf = vec![0u8; chunk];
    let mut left = n;
    while left > 0 {
        let want = (left as usize).min(chunk);
        let got = r.read(&mut buf[..want]).await?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short body",
            ));
        }
        w.write_all(&buf[..got]).await?;
        w.flush().await?;
        left -= got as u64;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// What to do with one request, decided when its head arrives.
enum Action {
    Close,
    Hang,
    /// Status and `Retry-After` seconds.
    Fail(u16, u32),
    Forward,
}

fn decide(shared: &Shared) -> (Action, Mode) {
    let mut m = shared.mode.lock().unwrap();
    let mode = m.clone();
    let action = match &mode {
        Mode::Dead | Mode::Refuse => Action::Close,
        Mode::Blackhole => Action::Hang,
        Mode::Unavailable { retry_after } => Action::Fail(503, *retry_after),
        Mode::Fail5xx(n) | Mode::FailWith { count: n, .. } => {
            let status = match &mode {
                Mode::FailWith { status, .. } => *status,
                _ => 503,
            };
            let left = n.saturating_sub(1);
            *m = match (&mode, left) {
                (_, 0) => Mode::Pass,
                (Mode::FailWith { status, .. }, _) => Mode::FailWith {
                    status: *status,
                    count: left,
                },
                _ => Mode::Fail5xx(left),
            };
            if *n == 0 {
                Action::Forward
            } else {
                Action::Fail(status, 0)
            }
        }
        _ => Action::Forward,
    };
    (action, mode)
}

fn record(shared: &Shared, method: &str, path: &str, range: Option<&str>) -> usize {
    let c = &shared.counters;
    c.requests.fetch_add(1, Ordering::SeqCst);
    let is_blob = path.contains("/blobs/sha256:");
    if is_blob && method == "GET" {
        c.blob_gets.fetch_add(1, Ordering::SeqCst);
    }
    if is_blob && method == "HEAD" {
        c.blob_heads.fetch_add(1, Ordering::SeqCst);
    }
    if path.contains("/manifests/") && method == "GET" {
        c.manifest_gets.fetch_add(1, Ordering::SeqCst);
    }
    if range.is_some() {
        c.range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let mut log = shared.log.lock().unwrap();
    log.push(RequestRecord {
        method: method.to_string(),
        path: path.to_string(),
        range: range.map(String::from),
        status: 0,
    });
    log.len() - 1
}

fn set_status(shared: &Shared, idx: usize, status: u16) {
    if let Some(r) = shared.log.lock().unwrap().get_mut(idx) {
        r.status = status;
    }
}

/// Waits until the client closes its side (reading and discarding), i.e.
/// "never answer".
async fn hang<R: AsyncRead + Unpin>(r: &mut R) {
    let mut sink = [0u8; 8192];
    loop {
        match r.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn handle_conn(client: TcpStream, shared: Arc<Shared>) {
    let (cr, mut cw) = client.into_split();
    let mut cr = BufReader::new(cr);
    loop {
        let head = match read_head(&mut cr).await {
            Ok(Some(h)) => h,
            _ => return,
        };
        let mut parts = head.first_line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let idx = record(&shared, &method, &path, head.get("Range"));
        let rule = shared
            .rule
            .lock()
            .unwrap()
            .clone()
            .filter(|r| r.matches(&method, &path));
        let mut slow_body = None;
        let (action, mode) = match rule.map(|r| r.action) {
            Some(RuleAction::Fail(st)) => (Action::Fail(st, 0), shared.mode()),
            Some(RuleAction::Close) => (Action::Close, shared.mode()),
            Some(RuleAction::Hang) => (Action::Hang, shared.mode()),
            Some(RuleAction::SlowBody(bps)) => {
                slow_body = Some(bps);
                decide(&shared)
            }
            None => decide(&shared),
        };
        let expect_continue = head.has_token("Expect", "100-continue");
        let req_body = head.body_kind();
        match action {
            Action::Close => return,
            Action::Hang => return hang(&mut cr).await,
            Action::Fail(status, retry_after) => {
                let body = format!(
                    "{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"injected {status} by FaultProxy\"}}]}}"
                );
                // Keep the connection in step: drain the request body
                // unless the client is waiting for 100-continue.
                let keep = !expect_continue
                    && copy_body(req_body, &mut cr, &mut tokio::io::sink())
                        .await
                        .is_ok();
                let reason = match status {
                    200 => "OK",
                    429 => "Too Many Requests",
                    _ => "Service Unavailable",
                };
                let mut hs = vec![
                    ("Content-Type".to_string(), "application/json".to_string()),
                    ("Content-Length".to_string(), body.len().to_string()),
                    ("Retry-After".to_string(), retry_after.to_string()),
                ];
                if !keep {
                    hs.push(("Connection".to_string(), "close".to_string()));
                }
                let mut out = serialize_head(&format!("HTTP/1.1 {status} {reason}"), &hs);
                out.extend_from_slice(body.as_bytes());
                set_status(&shared, idx, status);
                if cw.write_all(&out).await.is_err() || !keep {
                    return;
                }
                continue;
            }
            Action::Forward => {}
        }

        if let Mode::SlowLink { rtt_ms, .. } = mode {
            tokio::time::sleep(Duration::from_millis(rtt_ms)).await;
        }
        // ---- forward the request on a fresh upstream connection ----
        let upstream = match TcpStream::connect(&shared.upstream).await {
            Ok(s) => s,
            Err(_) => {
                let msg = b"upstream connect failed";
                let mut out = serialize_head(
                    "HTTP/1.1 502 Bad Gateway",
                    &[
                        ("Content-Length".into(), msg.len().to_string()),
                        ("Connection".into(), "close".into()),
                    ],
                );
                out.extend_from_slice(msg);
                set_status(&shared, idx, 502);
                let _ = cw.write_all(&out).await;
                return;
            }
        };
        let _ = upstream.set_nodelay(true);
        let (ur, mut uw) = upstream.into_split();
        let mut ur = BufReader::new(ur);
        let strip_range = mode == Mode::IgnoreRange;
        let req_headers: Vec<(String, String)> = head
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                !matches!(
                    k.as_str(),
                    "connection" | "keep-alive" | "proxy-connection" | "expect"
                ) && !(strip_range && (k == "range" || k == "if-range"))
            })
            .cloned()
            .chain(std::iter::once((
                "Connection".to_string(),
                "close".to_string(),
            )))
            .collect();
        let client_wants_close = head.has_token("Connection", "close");
        if uw
            .write_all(&serialize_head(&head.first_line, &req_headers))
            .await
            .is_err()
        {
            return;
        }
        if expect_continue
            && req_body != BodyKind::None
            && cw
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let copied = match (slow_body, req_body) {
            (Some(bps), BodyKind::Length(n)) => copy_slowly(n, bps, &mut cr, &mut uw).await,
            _ => copy_body(req_body, &mut cr, &mut uw).await,
        };
        if copied.is_err() {
            return;
        }
        let _ = uw.flush().await;

        // ---- response ----
        let resp = loop {
            match read_head(&mut ur).await {
                Ok(Some(h)) => {
                    let code: u16 = h
                        .first_line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    if (100..200).contains(&code) && code != 101 {
                        continue; // interim answer (we stripped Expect)
                    }
                    break h;
                }
                _ => return, // upstream died before answering: reset the client
            }
        };
        let status: u16 = resp
            .first_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        set_status(&shared, idx, status);
        let mut body = if method == "HEAD" || status == 204 || status == 304 {
            BodyKind::None
        } else {
            resp.body_kind()
        };
        if body == BodyKind::None
            && method != "HEAD"
            && status != 204
            && status != 304
            && resp.get("Content-Length").is_none()
        {
            body = BodyKind::UntilEof;
        }
        let mut resp_headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .filter(|(k, _)| {
                !matches!(k.to_ascii_lowercase().as_str(), "connection" | "keep-alive")
            })
            .cloned()
            .collect();
        let close_after = body == BodyKind::UntilEof || client_wants_close;
        if close_after {
            resp_headers.push(("Connection".to_string(), "close".to_string()));
        }
        if cw
            .write_all(&serialize_head(&resp.first_line, &resp_headers))
            .await
            .is_err()
        {
            return;
        }
        let is_blob_get =
            method == "GET" && path.contains("/blobs/sha256:") && (200..300).contains(&status);
        match (is_blob_get, body) {
            (true, BodyKind::Length(n)) => {
                let mode = match mode {
                    Mode::CorruptRangesEvery(every) if status == 206 => {
                        let k = shared
                            .counters
                            .ranges_answered
                            .fetch_add(1, Ordering::SeqCst);
                        if (k + 1) % every.max(1) == 0 {
                            Mode::CorruptBlobs
                        } else {
                            Mode::Pass
                        }
                    }
                    m => m,
                };
                let r = blob_body(&shared, &mode, n, &mut ur, &mut cw, &mut cr).await;
                match r {
                    Ok(true) => {}
                    _ => return, // truncated / stalled / broken: close
                }
            }
            _ => {
                if copy_body(body, &mut ur, &mut cw).await.is_err() {
                    return;
                }
            }
        }
        if cw.flush().await.is_err() || close_after {
            return;
        }
    }
}

/// Streams a blob body of `n` bytes, applying the mode. `Ok(true)`: whole
/// body sent, the connection may be reused.
async fn blob_body<R, W, C>(
    shared: &Shared,
    mode: &Mode,
    n: u64,
    ur: &mut R,
    cw: &mut W,
    cr: &mut C,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: AsyncRead + Unpin,
{
    let limit = match mode {
        Mode::TruncateBlobs(k) | Mode::StallBlobs(k) => (*k).min(n),
        _ => n,
    };
    let flip_at = if *mode == Mode::CorruptBlobs && n > 0 {
        Some(n / 2)
    } else {
        None
    };
    let (chunk, pause) = match mode {
        Mode::SlowBlobs(bps) => (
            ((*bps / 20).max(1)) as usize,
            Some(Duration::from_millis(50)),
        ),
        _ => (64 * 1024, None),
    };
    let mut buf = vec![0u8; chunk.min(256 * 1024)];
    let mut off = 0u64;
    let started = std::time::Instant::now();
    while off < limit {
        let want = ((limit - off) as usize).min(buf.len());
        let got = ur.read(&mut buf[..want]).await?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "upstream body short",
            ));
        }
        if let Some(f) = flip_at {
            if f >= off && f < off + got as u64 {
                buf[(f - off) as usize] ^= 0xff;
            }
        }
        // Count before sending, so a client never sees bytes the counter
        // does not include yet.
        shared
            .counters
            .blob_bytes_sent
            .fetch_add(got as u64, Ordering::SeqCst);
        cw.write_all(&buf[..got]).await?;
        off += got as u64;
        if let Mode::SlowLink { bytes_per_sec, .. } = mode {
            // Never ahead of the cap: wait until `off` bytes are due.
            let due = Duration::from_secs_f64(off as f64 / (*bytes_per_sec).max(1) as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                cw.flush().await?;
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(p) = pause {
            cw.flush().await?;
            tokio::time::sleep(p).await;
        }
    }
    cw.flush().await?;
    if limit < n {
        if matches!(mode, Mode::StallBlobs(_)) {
            hang(cr).await;
        }
        return Ok(false);
    }
    Ok(true)
}
