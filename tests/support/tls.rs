//! TLS material for test registries, made with `openssl` per test: a CA of
//! its own (no system trust store knows it) and server certificates it
//! signs, for `127.0.0.1` or for a name the tests do not connect with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::cmd::run;

/// A certificate authority in a temporary folder: `ca.pem`, `ca.key`.
pub struct TestCa {
    dir: TempDir,
}

/// A server certificate and its key, as `docker-registry` takes them.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `openssl ARGS...` in `dir`, checked.
fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").args(args).current_dir(dir));
}

impl TestCa {
    /// A new CA (P-256, valid two days).
    pub fn new() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("regfs-ca-")
            .tempdir()
            .expect("CA tempdir");
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=regfs test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        TestCa { dir }
    }

    /// The CA certificate (PEM), for `--ca-file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate signed by this CA, valid for the names in
    /// `san` (`IP:127.0.0.1,DNS:localhost`), stored as `NAME.pem` and
    /// `NAME.key`.
    pub fn issue(&self, name: &str, san: &str) -> ServerCert {
        let d = self.dir.path();
        let (key, csr, cert, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        fs::write(
            d.join(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write extensions");
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
        ServerCert {
            cert: d.join(cert),
            key: d.join(key),
        }
    }

    /// A certificate for `127.0.0.1` and `localhost`.
    pub fn loopback_cert(&self) -> ServerCert {
        self.issue("loopback", "IP:127.0.0.1,DNS:localhost")
    }
}
