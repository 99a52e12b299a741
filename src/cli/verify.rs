//! `regfs verify`: the cache hashed again, each damaged file reported (and
//! with `--repair` dropped).

use anyhow::bail;

use super::args::VerifyArgs;
use crate::cache::Cache;

pub fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(super::default_cache_dir);
    if !dir.join("blobs").is_dir() {
        bail!("no regfs cache at {}", dir.display());
    }
    let cache = Cache::open(&dir, u64::MAX)?;
    let verb = if args.repair { "dropped" } else { "damaged" };
    let checked = cache.check(args.repair, |d| match &d.found {
        Ok(actual) => println!(
            "{verb}  {} {}: its bytes hash to {actual}",
            d.kind, d.digest
        ),
        Err(why) => println!("{verb}  {} {}: unreadable: {why}", d.kind, d.digest),
    })?;
    let n = checked.damaged.len();
    println!(
        "checked {} blobs and {} manifests in {}: {n} damaged{}",
        checked.blobs,
        checked.manifests,
        dir.display(),
        if args.repair && n > 0 {
            " (dropped: a mount fetches them again)"
        } else {
            ""
        }
    );
    if n > 0 && !args.repair {
        bail!(
            "{n} damaged file{} in the cache {}; `regfs verify --repair` drops them",
            if n == 1 { "" } else { "s" },
            dir.display()
        );
    }
    Ok(())
}
