//! Referrers staged under a manifest folder's `referrers/` (docs/commit.md,
//! "Referrers and attach"). Each subfolder is an artifact whose subject is
//! that manifest folder's manifest, planned into `Plan::referrers` (pushed
//! by digest after the manifests, never tagged):
//!
//! - a folder holding `manifest.json` (an rsync mirror of
//!   `referrers/sha256:<hex>/`) is pushed verbatim, its subject as it says;
//! - a folder named after a digest (`sha256:<hex>`, an existing referrer
//!   seen through the mount) without one is a change of that referrer, so
//!   a copy of it that changes nothing plans its own bytes again;
//! - any other folder with files is a new artifact with `subject` set, as
//!   `oras attach` pushes it (artifactType from `user.oci.artifactType` on
//!   the folder, else `--artifact-type`, else ORAS's default);
//! - a folder with nothing in it is left alone.
//!
//! Referrers nest (`referrers/a/referrers/b/`): a subject is planned before
//! its referrers.

use super::*;

impl<R: Resolver> Planner<'_, R> {
    /// Plans the referrers staged under the manifest folder `path`, whose
    /// manifest is `subject`.
    pub(super) fn referrers(
        &mut self,
        path: &str,
        dir: &StagedDir,
        subject: &Made,
        depth: usize,
    ) -> Result<(), PlanError> {
        let rpath = join(path, REFERRERS);
        let prefix = format!("{rpath}/");
        if let Some(gone) = self.input.removed.iter().find(|p| {
            p.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        }) {
            return Err(invalid(
                gone,
                "removing a referrer is not supported; discard this change",
            ));
        }
        let Some(refs) = dir.dirs.get(REFERRERS) else {
            return Ok(());
        };
        if let Some(name) = refs.files.keys().next() {
            return Err(invalid(
                &join(&rpath, name),
                "referrers/ holds folders, one per artifact: put the file in a folder",
            ));
        }
        for (name, d) in &refs.dirs {
            let p = join(&rpath, name);
            if d.is_empty() && !self.has_changes_below(&p) {
                continue;
            }
            // What the referrer plans goes to `Plan::referrers`, before the
            // referrers of its own it planned on the way.
            let at = self.plan.referrers.len();
            let first = self.plan.manifests.len();
            if d.files.contains_key(MANIFEST_JSON) {
                self.folder(&p, d, None, depth + 1)?;
            } else if let Ok(digest) = name.parse::<Digest>() {
                let base = self.resolver.manifest(&digest)?;
                self.folder(&p, d, Some(base), depth + 1)?;
            } else {
                let made = self.new_manifest(&p, d, None, Some(subject))?;
                self.referrers(&p, d, &made, depth + 1)?;
            }
            let mine: Vec<Manifest> = self.plan.manifests.drain(first..).collect();
            let mine: Vec<Manifest> = mine
                .into_iter()
                .filter(|m| !self.plan.referrers.iter().any(|r| r.digest == m.digest))
                .collect();
            self.plan.referrers.splice(at..at, mine);
        }
        Ok(())
    }
}
