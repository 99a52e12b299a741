use std::process::ExitCode;

use clap::Parser;
use regfs::cli::{self, Cli};

fn main() -> ExitCode {
    let args = cli::normalize_args(std::env::args().collect());
    let cli = Cli::parse_from(args);
    // Rust starts with SIGPIPE ignored; mount and commit keep it so.
    if cli.command.may_die_of_sigpipe() {
        // SAFETY: restoring the default disposition of a signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_tracing(cli.verbose);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("regfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "regfs=warn",
        1 => "regfs=info",
        2 => "regfs=debug",
        _ => "regfs=trace,fuser=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
