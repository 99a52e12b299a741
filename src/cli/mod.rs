//! Commands: the wiring of each subcommand, and all user-facing output.

pub mod args;
mod commit;
mod completions;
mod man;
mod mount;
pub mod records;
mod status;
mod verify;

use std::path::PathBuf;

use anyhow::Context;

pub use args::{Cli, Command};

/// Subcommand names, so `regfs SOURCE MOUNTPOINT -o ...` (as mount.fuse3
/// runs it for an fstab line) can be told from a subcommand.
pub const SUBCOMMANDS: &[&str] = &[
    "mount",
    "umount",
    "commit",
    "discard",
    "status",
    "verify",
    "generate-man",
    "generate-completions",
    "help",
];

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mount(args) => mount::run(args, cli.verbose),
        Command::Umount(args) => mount::umount(&args.mountpoint),
        Command::Commit(args) => commit::run(args),
        Command::Discard(args) => commit::discard(args),
        Command::Status(args) => status::run(args),
        Command::Verify(args) => verify::run(args),
        Command::GenerateMan { dir } => man::generate(&dir),
        Command::GenerateCompletions { dir } => completions::generate(&dir),
    }
}

/// The async runtime of a command (mount and commit build theirs here):
/// `worker_threads` workers, named `regfs-worker`.
pub fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(worker_threads)
        // Disk reads and writes run on blocking threads; a few suffice, and
        // every extra thread keeps its own allocator arena (resident memory).
        .max_blocking_threads(16)
        .thread_name("regfs-worker")
        .build()
        .context("cannot start the async runtime")
}

/// The default cache folder: `$XDG_CACHE_HOME/regfs`, else `~/.cache/regfs`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("regfs");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/regfs"),
        None => PathBuf::from("/var/cache/regfs"),
    }
}

/// Puts `mount` in front of `SOURCE MOUNTPOINT ...` when no subcommand is named.
/// Only words that look like a source count (`host:port`, `a.b`, `oci:..`,
/// `host/prefix`, `localhost`), so a mistyped subcommand is an error, not a mount.
pub fn normalize_args(mut args: Vec<String>) -> Vec<String> {
    if let Some(first) = args.get(1) {
        let looks_like_source = first.contains([':', '.', '/']) || first == "localhost";
        if looks_like_source
            && !first.starts_with('-')
            && !SUBCOMMANDS.contains(&first.as_str())
            && args.len() >= 3
        {
            args.insert(1, "mount".to_string());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_style_invocation_becomes_mount() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_args(v(&["regfs", "localhost:5000", "/mnt", "-o", "ro"])),
            v(&["regfs", "mount", "localhost:5000", "/mnt", "-o", "ro"])
        );
        assert_eq!(
            normalize_args(v(&["regfs", "status"])),
            v(&["regfs", "status"])
        );
        assert_eq!(
            normalize_args(v(&["regfs", "--help"])),
            v(&["regfs", "--help"])
        );
    }
}
