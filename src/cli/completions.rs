//! Shell completions from the clap definition, as the man pages are made
//! (`man.rs`): `regfs.bash`, `_regfs` (zsh) and `regfs.fish`, committed
//! under completions/ and installed by scripts/install.sh.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The shells, with the file each one's script is kept in.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "regfs.bash"),
    (Shell::Zsh, "_regfs"),
    (Shell::Fish, "regfs.fish"),
];

pub fn generate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, script) in scripts() {
        let path = dir.join(name);
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Every script as (file name, contents).
pub fn scripts() -> Vec<(&'static str, Vec<u8>)> {
    SHELLS
        .iter()
        .map(|(shell, name)| {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut visible_command(), "regfs", &mut buf);
            (*name, buf)
        })
        .collect()
}

/// The CLI without its hidden subcommands (`generate-man`,
/// `generate-completions`), which clap_complete 4.6 would offer: the same
/// name, version, top-level options and visible subcommands.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    clap::Command::new(full.get_name().to_string())
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .subcommand_required(true)
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// completions/ is generated: it must match the CLI definition.
    #[test]
    fn completions_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
        for (name, script) in scripts() {
            let on_disk = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                on_disk == script,
                "completions/{name} is stale: run `cargo run -- generate-completions completions`"
            );
        }
    }

    #[test]
    fn the_completed_cli_is_the_visible_cli() {
        let full = Cli::command();
        let shown = visible_command();
        let names = |c: &clap::Command| -> Vec<String> {
            c.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_string())
                .collect()
        };
        assert_eq!(names(&shown), names(&full));
        assert!(shown.get_subcommands().all(|s| !s.is_hide_set()));
        let ids = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(ids(&shown), ids(&full));
    }

    #[test]
    fn every_shell_completes_the_commands_and_their_options() {
        for (name, script) in scripts() {
            let s = String::from_utf8(script).unwrap();
            for word in ["mount", "commit", "cache-dir", "dry-run", "repair"] {
                assert!(s.contains(word), "{name} lacks {word}");
            }
            assert!(
                !s.contains("generate-man"),
                "{name} offers a hidden command"
            );
        }
    }
}
