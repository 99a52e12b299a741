//! Man pages from the clap definition: `regfs.1` and `regfs-<command>.1`.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

pub fn generate(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, page) in pages()? {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Every page as (file name, contents).
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    out.push(("regfs.1".to_string(), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("regfs-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(sub).render(&mut buf)?;
        out.push((format!("{name}.1"), buf));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// man/ is generated: it must match the CLI definition.
    #[test]
    fn man_pages_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        for (name, page) in pages().unwrap() {
            let on_disk = std::fs::read(dir.join(&name)).unwrap_or_default();
            assert!(
                on_disk == page,
                "man/{name} is stale: run `cargo run -- generate-man man`"
            );
        }
    }
}
