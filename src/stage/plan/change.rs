//! Changes to an existing tag: titled layers added, replaced or removed in
//! a manifest; platform folders added, removed or changed in an index.
//! Everything else in the manifest is kept exactly.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::*;

impl<R: Resolver> Planner<'_, R> {
    /// An existing manifest with titled layers added, replaced or removed.
    pub(super) fn change_manifest(
        &mut self,
        path: &str,
        dir: &StagedDir,
        base: &Base,
        mut m: Map<String, Value>,
    ) -> Result<Made, PlanError> {
        let old = m.clone();
        let old_layers = m
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut titles = BTreeSet::new();
        let mut layers = Vec::new();
        for layer in old_layers {
            let Value::Object(mut l) = layer else {
                continue;
            };
            let title = l
                .get("annotations")
                .and_then(|a| a.get(TITLE_ANNOTATION))
                .and_then(Value::as_str)
                .map(str::to_string);
            let Some(title) = title.filter(|t| title_components(t).is_ok()) else {
                layers.push(Value::Object(l));
                continue;
            };
            titles.insert(title.clone());
            let lpath = join(path, &title);
            if self.is_removed(&lpath) {
                continue;
            }
            let unpack = l
                .get("annotations")
                .and_then(|a| a.get(UNPACK_ANNOTATION))
                .and_then(Value::as_str)
                == Some("true");
            if let Some(f) = dir.file(&title) {
                self.file_blob(f, &title);
                l.insert("digest".into(), json!(f.digest.to_string()));
                l.insert("size".into(), json!(f.size));
            } else if let (true, Some(d)) = (unpack, staged_dir(dir, &title)) {
                let new = self.dir_layer(d, &title, &lpath)?;
                if let Value::Object(n) = new {
                    for k in ["digest", "size", "annotations"] {
                        if let Some(v) = n.get(k) {
                            l.insert(k.into(), v.clone());
                        }
                    }
                }
            } else if unpack && self.has_changes_below(&lpath) {
                return Err(invalid(
                    &lpath,
                    "changing single files inside a directory layer is not supported; replace the whole folder",
                ));
            }
            let extra = self.xattr_annotations(&lpath);
            set_annotations(&mut l, &extra);
            layers.push(Value::Object(l));
        }
        // Files and folders that are not a title yet become new layers.
        let mut added = Vec::new();
        for (rel, f) in dir.walk() {
            let first = rel.split('/').next().unwrap_or("");
            if titles.contains(&rel) || NOT_LAYERS.contains(&first) || rel == MANIFEST_JSON {
                continue;
            }
            if rel == CONFIG_JSON {
                let c = m.get("config").cloned().unwrap_or_default();
                if let Value::Object(mut c) = c {
                    self.file_blob(f, CONFIG_JSON);
                    c.insert("digest".into(), json!(f.digest.to_string()));
                    c.insert("size".into(), json!(f.size));
                    m.insert("config".into(), Value::Object(c));
                }
                continue;
            }
            let inside_title_dir = titles.iter().any(|t| rel.starts_with(&format!("{t}/")));
            let under_title_parent = titles.iter().any(|t| t.starts_with(&format!("{first}/")));
            if inside_title_dir {
                continue; // part of a directory layer, handled above
            }
            if rel.contains('/') && !under_title_parent {
                continue; // part of a new directory layer, added below
            }
            added.push(self.file_layer(f, &rel, &join(path, &rel)));
        }
        for (name, d) in &dir.dirs {
            let is_title_parent = titles.iter().any(|t| t.starts_with(&format!("{name}/")));
            if titles.contains(name)
                || is_title_parent
                || NOT_LAYERS.contains(&name.as_str())
                || d.is_empty()
            {
                continue;
            }
            added.push(self.dir_layer(d, name, &join(path, name))?);
        }
        layers.extend(added);
        let before: BTreeSet<Digest> = old
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|l| l.get("digest")?.as_str()?.parse().ok())
            .collect();
        self.chunk_lists(&mut layers, &before);
        if layers.is_empty() {
            return Err(invalid(
                path,
                "removing every layer would leave an empty artifact",
            ));
        }
        m.insert("layers".into(), Value::Array(layers));
        let extra = self.xattr_annotations(path);
        set_annotations(&mut m, &extra);
        if let Some(t) = self.artifact_type_of(path) {
            m.insert("artifactType".into(), json!(t));
        }
        // The config and untitled layers are kept: they are in the registry.
        if let Some(c) = m.get("config") {
            let d = digest_field(c, path)?;
            let size = c.get("size").and_then(Value::as_u64).unwrap_or(0);
            let name = c
                .get("mediaType")
                .and_then(Value::as_str)
                .unwrap_or("config")
                .to_string();
            self.plan.add_blob(Blob {
                digest: d,
                size,
                source: Source::Registry,
                name,
            });
        }
        let media_type = m
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| base.media_type.clone())
            .unwrap_or_else(|| MANIFEST_MEDIA_TYPE.to_string());
        let artifact_type = m
            .get("artifactType")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(self.emit_change(path, base, &old, m, &media_type, artifact_type))
    }

    /// An existing index with platform folders added, removed or changed.
    pub(super) fn change_index(
        &mut self,
        path: &str,
        dir: &StagedDir,
        base: &Base,
        m: Map<String, Value>,
        depth: usize,
    ) -> Result<Made, PlanError> {
        let view = View::parse(&base.bytes, base.media_type.as_deref())
            .map_err(|e| invalid(path, e.to_string()))?;
        // Folder name of each child, as the tree shows it.
        let mut names: BTreeMap<Digest, String> = BTreeMap::new();
        for (name, e) in &view.root {
            if let crate::tree::view::Entry::Child(i) = e {
                if let Some(c) = view.children.get(*i) {
                    names
                        .entry(c.digest.clone())
                        .or_insert_with(|| name.clone());
                }
            }
        }
        let old = m
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut manifests = Vec::new();
        let mut seen = BTreeSet::new();
        for child in old {
            let Value::Object(c) = child else { continue };
            let d = digest_field(&Value::Object(c.clone()), path)?;
            let Some(name) = names.get(&d).cloned() else {
                manifests.push(Value::Object(c));
                continue;
            };
            seen.insert(name.clone());
            let cpath = join(path, &name);
            if self.is_removed(&cpath) {
                continue;
            }
            let staged = dir.dirs.get(&name);
            if staged.is_some() || self.has_changes_below(&cpath) {
                let empty = StagedDir::default();
                let child_base = self.resolver.manifest(&d)?;
                let made = self.folder(
                    &cpath,
                    staged.unwrap_or(&empty),
                    Some(child_base),
                    depth + 1,
                )?;
                manifests.push(self.child_descriptor(&made, None, Some(&c)));
            } else {
                self.plan.add_manifest(Manifest {
                    digest: d,
                    media_type: c
                        .get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    bytes: Vec::new(),
                    path: cpath,
                    existing: true,
                });
                manifests.push(Value::Object(c));
            }
        }
        for (name, sub) in &dir.dirs {
            if seen.contains(name) || NOT_LAYERS.contains(&name.as_str()) {
                continue;
            }
            let Some(platform) = Platform::from_folder_name(name) else {
                return Err(invalid(
                    &join(path, name),
                    "an index folder holds only platform folders (like linux-amd64)",
                ));
            };
            let made = self.platform_folder(&join(path, name), sub, &platform, depth + 1)?;
            manifests.push(self.child_descriptor(&made, Some(&platform), None));
        }
        if let Some(name) = dir.files.keys().find(|n| n.as_str() != MANIFEST_JSON) {
            return Err(invalid(
                &join(path, name),
                "files belong inside a platform folder of an index",
            ));
        }
        self.index_manifest(path, manifests, Some((m, base)))
    }
}
