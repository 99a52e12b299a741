//! The test suite's fault proxy (`tests/support/proxy.rs`) as a program, so
//! `scripts/bench.sh` can put it in front of a registry:
//!
//! ```sh
//! fault_proxy 127.0.0.1:5000 corrupt-ranges-every=10
//! ```
//!
//! prints the address to use instead of the registry's (`127.0.0.1:PORT`)
//! and serves until it is killed. Modes: `pass`, `corrupt` (every blob
//! answer), `corrupt-ranges-every=N` (every N-th Range answer),
//! `slow-link=RTT_MS,BYTES_PER_SEC` (a distant registry: a round trip
//! before every request, each connection's blob answers capped).

#[allow(dead_code)]
#[path = "../tests/support/proxy.rs"]
mod proxy;

use std::io::Write;

fn mode(s: &str) -> Result<proxy::Mode, String> {
    match s.split_once('=') {
        None if s == "pass" => Ok(proxy::Mode::Pass),
        None if s == "corrupt" => Ok(proxy::Mode::CorruptBlobs),
        Some(("corrupt-ranges-every", n)) => n
            .parse()
            .map(proxy::Mode::CorruptRangesEvery)
            .map_err(|e| format!("corrupt-ranges-every={n}: {e}")),
        Some(("slow-link", v)) => {
            // slow-link=RTT_MS,BYTES_PER_SEC
            let (rtt, bps) = v
                .split_once(',')
                .ok_or_else(|| format!("slow-link={v}: expected RTT_MS,BYTES_PER_SEC"))?;
            Ok(proxy::Mode::SlowLink {
                rtt_ms: rtt.parse().map_err(|e| format!("slow-link RTT {rtt}: {e}"))?,
                bytes_per_sec: bps.parse().map_err(|e| format!("slow-link rate {bps}: {e}"))?,
            })
        }
        _ => Err(format!(
            "unknown mode {s:?} (pass, corrupt, corrupt-ranges-every=N, slow-link=RTT_MS,BYTES_PER_SEC)"
        )),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (upstream, m) = match args.as_slice() {
        [u] => (u.clone(), Ok(proxy::Mode::Pass)),
        [u, m] => (u.clone(), mode(m)),
        _ => (
            String::new(),
            Err("usage: fault_proxy UPSTREAM [MODE]".to_string()),
        ),
    };
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            eprintln!("fault_proxy: {e}");
            std::process::exit(2);
        }
    };
    let p = proxy::FaultProxy::start(&upstream, m);
    println!("{}", p.host());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
