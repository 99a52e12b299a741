//! The dependency rule of the crate doc (`src/lib.rs`), checked.
//!
//! The rule is read from the doc itself, so the arrows written there are
//! the arrows enforced: every file of a module may name (by a `crate::`
//! path, in a `use` or anywhere in code) only the modules its arrow lists,
//! and the arrows must not make a cycle. Paths through `super::` stay
//! inside their module and are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module -> the modules it may name.
type Rule = BTreeMap<String, BTreeSet<String>>;

/// Files that belong to no module of the rule.
const NOT_MODULES: [&str; 3] = ["lib.rs", "main.rs", "deps_test.rs"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The arrows of the crate doc: lines ``//! - `a -> {b, c}` ``.
fn written_rule(lib: &str) -> Rule {
    let mut rule = Rule::new();
    for line in lib.lines() {
        let Some(arrow) = line
            .strip_prefix("//! - `")
            .and_then(|l| l.trim_end().strip_suffix('`'))
        else {
            continue;
        };
        let Some((from, to)) = arrow.split_once(" -> ") else {
            continue;
        };
        let to = to
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_else(|| panic!("arrow {arrow:?}: write the targets as {{a, b}}"));
        let targets = to
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        let from = from.trim().to_string();
        assert!(
            rule.insert(from.clone(), targets).is_none(),
            "{from} has two arrows"
        );
    }
    rule
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Code without its comment lines (`//`, `///`, `//!`), line numbers kept.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::` path in `text`, with its line:
/// `crate::a::b` gives `a`, `crate::{a, b::c}` gives `a` and `b`.
fn crate_paths(text: &str) -> Vec<(String, usize)> {
    let text = code(text);
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(|c: char| is_ident(c) || c == '$') {
            continue;
        }
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                let end = match c {
                    '{' => {
                        depth += 1;
                        false
                    }
                    '}' if depth == 0 => true,
                    '}' => {
                        depth -= 1;
                        false
                    }
                    ',' => depth == 0,
                    _ => false,
                };
                if end {
                    let item = &group[start..i];
                    let name: String = item
                        .trim_start()
                        .chars()
                        .take_while(|&c| is_ident(c))
                        .collect();
                    if !name.is_empty() {
                        let offset =
                            at + "crate::{".len() + start + (item.len() - item.trim_start().len());
                        out.push((name, line_of(offset)));
                    }
                    start = i + 1;
                }
                if c == '}' && end {
                    break;
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                out.push((name, line_of(at)));
            }
        }
    }
    out
}

/// Where `token` appears in code (not comments), as line numbers; `token`
/// must not be the tail of a longer name.
fn uses_of(text: &str, token: &str) -> Vec<usize> {
    let text = code(text);
    text.match_indices(token)
        .filter(|(at, _)| !text[..*at].ends_with(is_ident))
        .map(|(at, _)| text[..at].matches('\n').count() + 1)
        .collect()
}

/// Every `.rs` file of module `m`: `src/m.rs`, or everything below `src/m/`.
fn files_of(m: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    let file = src().join(format!("{m}.rs"));
    if file.is_file() {
        out.push(file);
    }
    walk(&src().join(m), &mut out);
    out.sort();
    out
}

/// A cycle of the rule (`[a, b, a]`), if it has one.
fn cycle(rule: &Rule) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        rule: &Rule,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_string());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for to in rule.get(m).into_iter().flatten() {
            if let Some(c) = visit(to, rule, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    rule.keys()
        .find_map(|m| visit(m, rule, &mut Vec::new(), &mut done))
}

fn rule() -> Rule {
    let rule = written_rule(&read(&src().join("lib.rs")));
    assert!(
        rule.len() > 5,
        "no dependency rule found in the crate doc: {rule:?}"
    );
    rule
}

fn relative(p: &Path) -> String {
    p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(p)
        .display()
        .to_string()
}

#[test]
fn the_rule_covers_every_module_and_names_only_modules() {
    let rule = rule();
    let lib = read(&src().join("lib.rs"));
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("pub mod ")
                .or_else(|| l.trim().strip_prefix("mod "))
        })
        .filter_map(|l| l.strip_suffix(';'))
        .filter(|m| !NOT_MODULES.contains(&format!("{m}.rs").as_str()))
        .map(String::from)
        .collect();
    let ruled: BTreeSet<String> = rule.keys().cloned().collect();
    assert_eq!(declared, ruled, "modules of lib.rs vs modules of the rule");
    for (m, to) in &rule {
        for t in to {
            assert!(rule.contains_key(t), "{m} -> {t}: {t} is not a module");
            assert_ne!(m, t, "{m} -> {m}");
        }
    }
    for e in fs::read_dir(src()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let module = name.strip_suffix(".rs").unwrap_or(&name);
        assert!(
            NOT_MODULES.contains(&name.as_str()) || rule.contains_key(module),
            "src/{name} belongs to no module of the rule"
        );
    }
}

#[test]
fn the_rule_has_no_cycle() {
    if let Some(c) = cycle(&rule()) {
        panic!("the dependency rule has a cycle: {}", c.join(" -> "));
    }
}

#[test]
fn every_module_names_only_what_the_rule_allows() {
    let rule = rule();
    let mut broken = Vec::new();
    for (m, allowed) in &rule {
        let files = files_of(m);
        assert!(!files.is_empty(), "module {m} has no files");
        for f in files {
            for (name, line) in crate_paths(&read(&f)) {
                if rule.contains_key(&name) && name != *m && !allowed.contains(&name) {
                    broken.push(format!(
                        "{}:{line}: {m} -> {name} (the rule allows {m} -> {allowed:?})",
                        relative(&f)
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "arrows the dependency rule of src/lib.rs forbids:\n{}",
        broken.join("\n")
    );
}

#[test]
fn only_fuse_names_fuser_only_registry_and_auth_name_reqwest_only_cli_prints() {
    let owners: [(&str, &[&str]); 9] = [
        ("fuser::", &["fuse"]),
        ("reqwest::", &["registry", "auth"]),
        ("hyper::", &["registry"]),
        ("rustls::", &["registry"]),
        ("println!", &["cli"]),
        ("eprintln!", &["cli"]),
        ("print!", &["cli"]),
        ("eprint!", &["cli"]),
        ("dbg!", &[]),
    ];
    let mut broken = Vec::new();
    for m in rule().keys() {
        for f in files_of(m) {
            let text = read(&f);
            for (token, allowed) in owners {
                if allowed.contains(&m.as_str()) {
                    continue;
                }
                for line in uses_of(&text, token) {
                    broken.push(format!("{}:{line}: {token} in {m}", relative(&f)));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn crate_paths_are_found_in_code_only() {
    let text = "use crate::digest::Digest;\n\
                use crate::{cache, registry::{self, Backend}};\n\
                // crate::fuse in a comment\n\
                /// crate::fuse in a doc\n\
                let x = crate::oci::parse_rfc3339(s);\n\
                use crate::{\n    tree::view,\n    stage,\n};\n\
                $crate::auth::x; mycrate::auth::y;";
    let paths = crate_paths(text);
    let got: Vec<(&str, usize)> = paths.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    assert_eq!(
        got,
        [
            ("digest", 1),
            ("cache", 2),
            ("registry", 2),
            ("oci", 5),
            ("tree", 7),
            ("stage", 8)
        ]
    );
    assert_eq!(
        uses_of("a();\nprintln!(x);\n// println!\neprintln!(y)", "println!"),
        [2]
    );
}

#[test]
fn written_arrows_are_read_and_cycles_found() {
    let doc = "//! - `cli`       the commands\n\
               //! - `a -> {b, c}`\n\
               //! - `b -> {c}`\n\
               //! - `c -> {}`\n";
    let rule = written_rule(doc);
    assert_eq!(rule.len(), 3);
    assert_eq!(
        rule["a"],
        BTreeSet::from(["b".to_string(), "c".to_string()])
    );
    assert!(rule["c"].is_empty());
    assert_eq!(cycle(&rule), None);
    let cyclic = written_rule("//! - `a -> {b}`\n//! - `b -> {c}`\n//! - `c -> {a}`\n");
    assert_eq!(
        cycle(&cyclic),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
