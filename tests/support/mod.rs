//! Shared helpers for the integration tests (`mod support;` in
//! tests/integration.rs): a real registry per test, a fault-injecting proxy,
//! ORAS / skopeo / OCI-layout / ModelPack fixtures, a regfs mount helper, and command
//! runners that fail loudly and never hang.
//!
//! External tools come from scripts/install-deps.sh: docker-registry,
//! skopeo, fuse3 (fusermount3), apache2-utils (htpasswd), openssl (test
//! CAs and certificates, `tls`; token signing keys, `token`), python3 +
//! oras (the ORAS Python SDK), and the ORAS CLI and crane (`peers`).
//! go-containerregistry's registry, the one with the referrers API
//! (`ggcr`), is built from tests/ggcr-registry/ on first use.
#![allow(dead_code, unused_imports)]

pub mod cmd;
pub mod fixtures;
pub mod fsops;
pub mod ggcr;
pub mod http;
pub mod kinds;
pub mod model;
pub mod mount;
pub mod peers;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod token;

pub use cmd::{
    assert_one_line_error, command_line, run, run_stdout, run_timeout, run_unchecked,
    run_unchecked_timeout, try_run, wait_for, wait_until,
};
pub use fixtures::*;
pub use fsops::*;
pub use ggcr::GgcrRegistry;
pub use http::{basic_auth, http_get, http_request, HttpResponse, MANIFEST_ACCEPT};
pub use kinds::{AnyRegistry, RegistryKind};
pub use mount::{daemon_pids, finish, regfs, regfs_bin, wait_daemon_gone, Mount, MountFailure};
pub use peers::{crane, oras, oras_digest, oras_in, peer_bin, CRANE_VERSION, ORAS_VERSION};
pub use proxy::{FaultProxy, Mode, ProxyHandle, RequestRecord, Rule, RuleAction};
pub use registry::Registry;
pub use tls::{ServerCert, TestCa};
pub use token::{Grant, Issued, TokenServer};
