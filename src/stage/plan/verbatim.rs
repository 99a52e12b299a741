//! A staged folder holding `manifest.json` is pushed as those exact bytes,
//! with the blobs it names found in the folder (any file with the right
//! digest) or left to the registry, and the children of an index from
//! their own folders.

use super::*;

impl<R: Resolver> Planner<'_, R> {
    /// Pushes `manifest.json` as it is, with the blobs and children it names.
    pub(super) fn verbatim(
        &mut self,
        path: &str,
        dir: &StagedDir,
        file: &StagedFile,
        depth: usize,
    ) -> Result<Made, PlanError> {
        let bytes = self.resolver.read(file)?;
        let obj = parse_json(&bytes, path)?;
        let index = is_index(&obj, None);
        let media_type = obj
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if index {
                    INDEX_MEDIA_TYPE
                } else {
                    MANIFEST_MEDIA_TYPE
                }
                .to_string()
            });
        // The folder must show what the manifest names, unchanged.
        let view =
            View::parse(&bytes, Some(&media_type)).map_err(|e| invalid(path, e.to_string()))?;
        let staged = dir.walk();
        let find = |d: &Digest| {
            staged
                .iter()
                .find(|(_, f)| f.digest == *d)
                .map(|(_, f)| f.path.clone())
        };
        if index {
            for child in &view.children {
                let sub = dir.dirs.iter().find(|(_, s)| {
                    s.files
                        .get(MANIFEST_JSON)
                        .is_some_and(|m| m.digest == child.digest)
                });
                match sub {
                    Some((name, s)) => {
                        let made = self.folder(&join(path, name), s, None, depth + 1)?;
                        if made.digest != child.digest {
                            return Err(invalid(&join(path, name), "child manifest changed"));
                        }
                    }
                    None => self.plan.add_manifest(Manifest {
                        digest: child.digest.clone(),
                        media_type: child.media_type.clone(),
                        bytes: Vec::new(),
                        path: join(path, &child.digest.to_string()),
                        existing: true,
                    }),
                }
            }
        } else {
            for (i, b) in view.blobs.iter().enumerate() {
                if let Some(t) = b.title() {
                    if let Some(f) = dir.file(t) {
                        if f.digest != b.digest {
                            return Err(invalid(
                                &join(path, t),
                                "this titled file differs from the layer manifest.json names; \
                                 remove manifest.json to build a new manifest from the files",
                            ));
                        }
                    }
                }
                let source = if let Some(p) = find(&b.digest) {
                    Source::File(p)
                } else if i == 0 && b.digest.to_string() == EMPTY_JSON_DIGEST {
                    Source::Bytes(EMPTY_JSON.to_vec())
                } else {
                    Source::Registry
                };
                self.plan.add_blob(Blob {
                    digest: b.digest.clone(),
                    size: b.size,
                    source,
                    name: b
                        .title()
                        .map(str::to_string)
                        .unwrap_or_else(|| b.media_type.clone()),
                });
            }
        }
        let digest = file.digest.clone();
        self.plan.add_manifest(Manifest {
            digest: digest.clone(),
            media_type: media_type.clone(),
            bytes,
            path: path.to_string(),
            existing: false,
        });
        Ok(Made {
            digest,
            size: file.size,
            media_type,
            artifact_type: view.artifact_type,
        })
    }
}
