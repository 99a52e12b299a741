//! HTTPS or plain HTTP: which one a registry is spoken to with, and what a
//! failed exchange says about the choice. The rule is pure (`choose`); a
//! failure is read here (`tls_failure`, `wants_https`, `not_http`) and the
//! client (`Client::base`) acts on it.
//!
//! The rule (README, *Registry behaviour*):
//!
//! 1. `--plain-http`: plain HTTP (`--ca-file` and `--insecure` then have
//!    nothing to do).
//! 2. `--https`, `--plain-http=false`, `--ca-file` or `--insecure`: HTTPS.
//! 3. Otherwise a loopback registry (`localhost`, `127.0.0.0/8`, `[::1]`)
//!    is tried over HTTPS first, as Docker treats loopback registries, and
//!    spoken to over plain HTTP when its port answers the TLS handshake with
//!    something that is not TLS (a plain HTTP server answers a ClientHello
//!    with `400 Bad Request`, or hangs up), or does not answer it and does
//!    answer plain HTTP. A certificate that does not verify is an error
//!    naming the problem, never a reason to fall back: Docker skips
//!    verification on loopback; regfs wants `--insecure` said.
//! 4. Otherwise HTTPS.

use std::error::Error as StdError;

use super::{backoff, error_chain, read_limited, Client, Error, MAX_MANIFEST_BYTES};

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
    /// HTTPS, else plain HTTP when the port does not speak TLS (rule 3).
    HttpsThenHttp,
}

/// What the command line says about the scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemeFlags {
    /// `--plain-http` (`Some(true)`), `--plain-http=false` (`Some(false)`).
    pub plain_http: Option<bool>,
    /// `--https`.
    pub https: bool,
    /// `--ca-file` or `--insecure`: options only HTTPS uses.
    pub tls_options: bool,
}

/// The rule of the module doc. `Err` names the flags that contradict.
pub fn choose(loopback: bool, f: SchemeFlags) -> Result<Transport, String> {
    match f.plain_http {
        Some(true) if f.https => Err("--plain-http and --https contradict each other".into()),
        Some(true) => Ok(Transport::Http),
        Some(false) => Ok(Transport::Https),
        None if f.https || f.tls_options => Ok(Transport::Https),
        None if loopback => Ok(Transport::HttpsThenHttp),
        None => Ok(Transport::Https),
    }
}

/// Whether `host` (`NAME[:PORT]`, `[V6]:PORT`) is this machine:
/// `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, _)) => name,
            None => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a failed HTTPS request says about the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The peer answered the handshake with something that is not TLS: the
    /// port speaks something else (plain HTTP).
    NotTls(String),
    /// The peer hung up during the handshake: a plain HTTP server that
    /// could not parse a ClientHello, or a TLS server going away.
    HungUp,
    /// The peer speaks TLS and its certificate did not verify.
    Certificate { reason: String, hint: &'static str },
    /// Anything else (refused, reset before TLS, a timeout): not about TLS.
    Other,
}

/// Reads a failed HTTPS request's error chain (reqwest wraps hyper wraps
/// `io::Error` wraps `rustls::Error`).
pub fn tls_failure(e: &(dyn StdError + 'static)) -> TlsFailure {
    for err in chain(e) {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return rustls_failure(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // tokio-rustls: the peer closed the connection mid-handshake.
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return TlsFailure::HungUp;
            }
        }
    }
    TlsFailure::Other
}

fn rustls_failure(e: &rustls::Error) -> TlsFailure {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::PeerSentOversizedRecord => {
            TlsFailure::NotTls(format!("it answered the TLS handshake with something else: {e}"))
        }
        E::InvalidCertificate(c) => TlsFailure::Certificate {
            reason: e.to_string(),
            hint: match c {
                C::UnknownIssuer | C::BadSignature => {
                    "pass --ca-file with the CA certificate that signed it, or --insecure to skip verification"
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "use a name the certificate is valid for, or --insecure to skip verification"
                }
                _ => "fix the certificate, or pass --insecure to skip verification",
            },
        },
        E::NoCertificatesPresented => TlsFailure::Certificate {
            reason: e.to_string(),
            hint: "pass --insecure to skip verification",
        },
        _ => TlsFailure::Other,
    }
}

/// What servers answer a plain HTTP request sent to their TLS port with
/// (HTTP 400 and one of these in the body): Go's `net/http` (docker
/// distribution, zot, Harbor), nginx.
const TLS_PORT_ANSWERS: &[&str] = &[
    "Client sent an HTTP request to an HTTPS server",
    "The plain HTTP request was sent to HTTPS port",
];

/// The line of a 400 body that says the port speaks TLS, if one does.
pub fn wants_https(body: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(body);
    TLS_PORT_ANSWERS.iter().copied().find(|a| text.contains(a))
}

/// Whether a failed plain HTTP request got an answer that is not HTTP (a
/// TLS alert, say): hyper could not parse it.
pub fn not_http(e: &(dyn StdError + 'static)) -> bool {
    chain(e).any(|err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse())
    })
}

/// `e` and its sources. An `io::Error`'s `source` skips the error it
/// wraps (it gives that error's source); its `get_ref` does not.
fn chain<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => (*e).source(),
        }
    })
}

impl Client {
    /// `scheme://host`. With `Transport::HttpsThenHttp` the first call
    /// probes the registry (`probe`); concurrent callers wait for that one
    /// probe, and a probe that could not tell (the registry unreachable) is
    /// made again by the next call.
    pub(super) async fn base(&self) -> Result<&str, Error> {
        self.base
            .get_or_try_init(|| self.probe())
            .await
            .map(String::as_str)
    }

    /// Rule 3 of `transport`: `GET /v2/` over HTTPS; any HTTP answer means
    /// HTTPS. A handshake answered with something that is not TLS, or hung
    /// up on, means plain HTTP; so does a handshake not answered at all,
    /// when plain HTTP answers. A certificate that does not verify is an
    /// error.
    async fn probe(&self) -> Result<String, Error> {
        let host = &self.config.host;
        let https = format!("https://{host}");
        let http = format!("http://{host}");
        let mut attempt = 0;
        let e = loop {
            let sent = self
                .http
                .get(format!("{https}/v2/"))
                .timeout(self.config.timeout)
                .send()
                .await;
            match sent {
                Ok(_) => {
                    tracing::info!(%host, "the registry speaks HTTPS");
                    return Ok(https);
                }
                // Refused or reset before TLS: the registry may be starting.
                Err(e)
                    if tls_failure(&e) == TlsFailure::Other
                        && !e.is_timeout()
                        && attempt < self.config.retries =>
                {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => break e,
            }
        };
        match tls_failure(&e) {
            TlsFailure::NotTls(why) => {
                tracing::info!(%host, "no TLS on this port ({why}); talking plain HTTP");
                return Ok(http);
            }
            TlsFailure::HungUp => {
                tracing::info!(%host, "the port hung up on a TLS handshake; talking plain HTTP");
                return Ok(http);
            }
            TlsFailure::Certificate { reason, hint } => {
                return Err(Error::Certificate {
                    host: host.clone(),
                    reason,
                    hint,
                })
            }
            TlsFailure::Other if e.is_timeout() => {}
            TlsFailure::Other => {
                return Err(Error::Unreachable {
                    host: host.clone(),
                    reason: error_chain(&e),
                })
            }
        }
        // No answer to the handshake: a plain HTTP server waiting for the
        // rest of a request, or no answer at all.
        match self
            .http
            .get(format!("{http}/v2/"))
            .timeout(self.config.timeout)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(%host, "no answer to a TLS handshake, an answer to plain HTTP: talking plain HTTP");
                Ok(http)
            }
            Err(_) => Err(Error::Unreachable {
                host: host.clone(),
                reason: format!("no answer over HTTPS or plain HTTP: {}", error_chain(&e)),
            }),
        }
    }

    /// A 400 to plain HTTP: if its body says the port speaks TLS,
    /// `Error::WantsHttps`; otherwise the same answer, body and all, for
    /// the caller to read.
    pub(super) async fn unless_tls_port(
        &self,
        resp: reqwest::Response,
        url: &str,
    ) -> Result<reqwest::Response, Error> {
        let status = resp.status();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = read_limited(resp, MAX_MANIFEST_BYTES, url).await?;
        if let Some(answer) = wants_https(&body) {
            return Err(Error::WantsHttps {
                host: self.config.host.clone(),
                answer: answer.to_string(),
                hint: self.https_hint(),
            });
        }
        let mut again = hyper::Response::builder().status(status).version(version);
        if let Some(h) = again.headers_mut() {
            *h = headers;
        }
        let again = again.body(body).map_err(|e| Error::Protocol {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        Ok(reqwest::Response::from(again))
    }

    /// What to do about a registry that wants HTTPS where we spoke plain HTTP.
    pub(super) fn https_hint(&self) -> &'static str {
        match self.config.transport {
            Transport::Http => "drop --plain-http to use HTTPS (with --ca-file FILE if a private CA signed its certificate)",
            _ => "pass --https (with --ca-file FILE if a private CA signed its certificate)",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::registry::Config;

    #[test]
    fn the_rule() {
        use Transport::*;
        let f = |plain_http, https, tls_options| SchemeFlags {
            plain_http,
            https,
            tls_options,
        };
        // (loopback, flags, want)
        let table = [
            (true, f(None, false, false), Ok(HttpsThenHttp)),
            (false, f(None, false, false), Ok(Https)),
            (true, f(Some(true), false, false), Ok(Http)),
            (false, f(Some(true), false, false), Ok(Http)),
            (true, f(Some(true), false, true), Ok(Http)),
            (true, f(Some(false), false, false), Ok(Https)),
            (true, f(None, true, false), Ok(Https)),
            (true, f(Some(false), true, false), Ok(Https)),
            (true, f(None, false, true), Ok(Https)),
            (false, f(None, false, true), Ok(Https)),
            (true, f(Some(true), true, false), Err(())),
        ];
        for (loopback, flags, want) in table {
            assert_eq!(
                choose(loopback, flags).map_err(|_| ()),
                want,
                "{loopback} {flags:?}"
            );
        }
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:5000",
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "ghcr.io",
            "localhostile.example:5000",
            "localhost.example",
            "128.0.0.1:5000",
            "10.0.0.1",
            "[::2]:5000",
            "[::1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    /// As reqwest hands it over: `io::Error` (Other) of `io::Error`
    /// (InvalidData) of the rustls error.
    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn tls_failures_are_read_through_io_errors() {
        use rustls::{CertificateError, Error, InvalidMessage};
        let not_tls = io(Error::InvalidMessage(InvalidMessage::InvalidContentType));
        assert!(matches!(tls_failure(&not_tls), TlsFailure::NotTls(_)));
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(tls_failure(&eof), TlsFailure::HungUp);
        match tls_failure(&io(Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))) {
            TlsFailure::Certificate { reason, hint } => {
                assert_eq!(reason, "invalid peer certificate: UnknownIssuer");
                assert!(hint.contains("--ca-file"), "{hint}");
            }
            other => panic!("{other:?}"),
        }
        match tls_failure(&io(Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ))) {
            TlsFailure::Certificate { hint, .. } => assert!(hint.contains("name"), "{hint}"),
            other => panic!("{other:?}"),
        }
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_failure(&refused), TlsFailure::Other);
        let alert = io(Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(tls_failure(&alert), TlsFailure::Other);
    }

    #[test]
    fn answers_of_tls_ports_to_plain_http() {
        let go = b"Client sent an HTTP request to an HTTPS server.\n";
        assert!(wants_https(go).is_some());
        let nginx = b"<html><center>The plain HTTP request was sent to HTTPS port</center></html>";
        assert!(wants_https(nginx).is_some());
        let registry = br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}"#;
        assert_eq!(wants_https(registry), None);
    }

    /// A server on a loopback port whose every connection gets `answer`
    /// (what the client sent so far, at least one read) back, then closed.
    /// `None`: wait for more; a head that never completes is never answered.
    async fn server(answer: fn(&[u8]) -> Option<&'static [u8]>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        if let Some(reply) = answer(&got) {
                            let _ = conn.write_all(reply).await;
                            return;
                        }
                    }
                });
            }
        });
        host
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";

    /// Answers a complete HTTP head with 200; anything else (a ClientHello) never.
    fn plain_http_only(got: &[u8]) -> Option<&'static [u8]> {
        got.windows(4).any(|w| w == b"\r\n\r\n").then_some(OK)
    }

    fn client(host: &str, transport: Transport) -> Client {
        let mut cfg = Config::new(host);
        cfg.transport = transport;
        cfg.timeout = Duration::from_secs(1);
        cfg.retries = 0;
        Client::new(cfg).unwrap()
    }

    #[tokio::test]
    async fn loopback_falls_back_to_plain_http_when_the_port_answers_tls_with_http() {
        // Go's net/http answers a ClientHello with 400 at its first line feed.
        let host = server(|_| {
            Some(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n400 Bad Request")
        })
        .await;
        let c = client(&host, Transport::HttpsThenHttp);
        assert_eq!(c.base().await.unwrap(), format!("http://{host}"));
    }

    #[tokio::test]
    async fn loopback_falls_back_to_plain_http_when_the_handshake_is_not_answered() {
        let host = server(plain_http_only).await;
        let c = client(&host, Transport::HttpsThenHttp);
        assert_eq!(c.base().await.unwrap(), format!("http://{host}"));
        c.check_access(None).await.unwrap();
    }

    #[tokio::test]
    async fn a_probe_that_reached_nothing_is_made_again() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = client(&format!("127.0.0.1:{port}"), Transport::HttpsThenHttp);
        let e = c.base().await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert!(c.base.get().is_none());
    }

    #[tokio::test]
    async fn forced_https_to_a_plain_port_says_to_pass_plain_http() {
        let host = server(|_| Some(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")).await;
        let c = client(&host, Transport::Https);
        let e = c.check_access(None).await.unwrap_err();
        assert!(matches!(e, Error::NotTls { .. }), "{e:?}");
        assert!(e.to_string().contains("--plain-http"), "{e}");
    }

    #[tokio::test]
    async fn plain_http_to_a_tls_port_says_to_use_https() {
        // What Go's crypto/tls answers a plain HTTP request with.
        let host = server(|_| {
            Some(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
        })
        .await;
        let e = client(&host, Transport::Http)
            .check_access(None)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::WantsHttps { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("speaks HTTPS") && msg.contains("drop --plain-http"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg:?}");
        // A TLS alert (what other TLS servers answer) is not HTTP.
        let host = server(|_| Some(b"\x15\x03\x01\x00\x02\x02\x46")).await;
        let e = client(&host, Transport::Http)
            .check_access(None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("drop --plain-http"), "{e}");
    }

    #[tokio::test]
    async fn other_400_answers_reach_the_caller_whole() {
        let host = server(|_| {
            Some(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 35\r\nConnection: close\r\n\r\n{\"errors\":[{\"code\":\"TAG_INVALID\"}]}")
        })
        .await;
        let c = client(&host, Transport::Http);
        let e = c
            .put_manifest("a", "v1", "application/json", b"{}")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("TAG_INVALID"), "{e}");
    }
}
