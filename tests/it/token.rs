//! Bearer token auth (distribution's `auth: token:`) against a real
//! `docker-registry` and the token service of `tests/support/token.rs`
//! (RS256 JWTs, tokens living 3 s): pull through a mount with
//! `DOCKER_CONFIG` credentials, the catalog (`registry:catalog:*`), push
//! with `regfs commit`, reads after the tokens expired, and a pull-only
//! user whose commit fails with no tag moved.

use std::fs;
use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::support::*;
use crate::tmpdir;

const LIFETIME: Duration = Duration::from_secs(3);
const ALICE: (&str, &str) = ("alice", "alice-Pa55");
const READER: (&str, &str) = ("reader", "reader-Pa55");

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `oras ARGS... --plain-http -u USER -p PASS` in `dir`, checked; stdout.
fn oras_as(dir: &Path, who: (&str, &str), args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--plain-http", "-u", who.0, "-p", who.1]);
    oras_in(dir, &all)
}

/// What `host/reference` points at, asked as alice.
fn resolve(host: &str, reference: &str) -> String {
    let w = tmpdir();
    oras_as(
        w.path(),
        ALICE,
        &["resolve", &format!("{host}/{reference}")],
    )
    .trim()
    .to_string()
}

/// A docker config folder whose `auths` hold `who` for `host`.
fn docker_config(host: &str, who: (&str, &str)) -> tempfile::TempDir {
    let d = tmpdir();
    let auth = crate::support::http::base64(format!("{}:{}", who.0, who.1).as_bytes());
    write_file(
        d.path(),
        "config.json",
        json!({"auths": {host: {"auth": auth}}}).to_string(),
    );
    d
}

/// `regfs commit PATH` with `DOCKER_CONFIG=cfg`, whatever its exit status.
fn commit(path: &Path, cfg: &Path, home: &Path) -> Output {
    let mut c = regfs();
    c.arg("commit")
        .arg(path)
        .env("DOCKER_CONFIG", cfg)
        .env("HOME", home);
    run_unchecked_timeout(&mut c, Duration::from_secs(120))
}

fn write_through(path: std::path::PathBuf, data: &'static str) {
    bounded("write", OP, move || fs::write(path, data)).unwrap();
}

#[test]
fn bearer_tokens_pull_push_list_and_expire_and_a_pull_only_token_cannot_commit() {
    let tokens = TokenServer::start(
        &[
            (ALICE.0, ALICE.1, Grant::ALL),
            (READER.0, READER.1, Grant::PULL),
        ],
        LIFETIME,
    );
    let reg = Registry::start_with_token_auth(&tokens);
    let host = reg.host();
    let w = tmpdir();
    write_file(w.path(), "a.txt", "first file\n");
    write_file(w.path(), "b.txt", "second file\n");
    oras_as(
        w.path(),
        ALICE,
        &["push", &format!("{host}/team/app:v1"), "a.txt", "b.txt"],
    );
    let v1 = resolve(&host, "team/app:v1");
    // Without credentials the registry is refused: it needs the tokens.
    let anon = http_get(&host, "/v2/team/app/tags/list").unwrap();
    assert_eq!(anon.status, 401);
    assert!(
        anon.header("WWW-Authenticate")
            .unwrap_or("")
            .starts_with("Bearer "),
        "{:?}",
        anon.headers
    );

    // Pull, and the catalog, with alice's credentials.
    let home = tmpdir();
    let alice = docker_config(&host, ALICE);
    let envs = [("DOCKER_CONFIG", alice.path()), ("HOME", home.path())];
    let m = Mount::try_with_env(&host, &["--timeout", "5"], &envs)
        .unwrap_or_else(|f| panic!("mount with bearer tokens failed\n{}", f.report));
    assert_eq!(ls(m.path()), ["team"]);
    assert_eq!(read(&m.join("team/app/v1/a.txt")), b"first file\n");
    let asked: Vec<String> = tokens
        .issued()
        .iter()
        .flat_map(|i| i.scopes.clone())
        .collect();
    assert!(asked.iter().any(|s| s == "registry:catalog:*"), "{asked:?}");
    assert!(
        asked.iter().any(|s| s == "repository:team/app:pull"),
        "{asked:?}"
    );
    assert!(tokens
        .issued()
        .iter()
        .all(|i| i.user.as_deref() != Some(READER.0)));

    // The tokens expire after 3 s: reads 5 s later still work, with new ones.
    let before = tokens.issued().len();
    thread::sleep(Duration::from_secs(5));
    assert_eq!(read(&m.join("team/app/v1/b.txt")), b"second file\n");
    assert!(
        tokens.issued().len() > before,
        "no new token after the old ones expired: {:?}",
        tokens.issued()
    );

    // Push: a new tag, committed with alice's push token.
    let v2 = m.join("team/app/v2");
    bounded("mkdir", OP, {
        let v2 = v2.clone();
        move || fs::create_dir(v2)
    })
    .unwrap();
    write_through(v2.join("notes.md"), "# pushed with a bearer token\n");
    let out = commit(&v2, alice.path(), home.path());
    assert!(out.status.success(), "commit as alice: {out:?}");
    let pulled = tmpdir();
    oras_as(
        pulled.path(),
        ALICE,
        &[
            "pull",
            &format!("{host}/team/app:v2"),
            "-o",
            s(pulled.path()),
        ],
    );
    assert_eq!(
        fs::read(pulled.path().join("notes.md")).unwrap(),
        b"# pushed with a bearer token\n"
    );
    let pushed = tokens.issued();
    assert!(
        pushed.iter().any(|i| i
            .granted
            .iter()
            .any(|g| g == "repository:team/app:pull,push")),
        "{pushed:?}"
    );
    finish(m);

    // The reader's token grants pull only: reads work, a commit fails and
    // moves no tag.
    let reader = docker_config(&host, READER);
    let envs = [("DOCKER_CONFIG", reader.path()), ("HOME", home.path())];
    let m = Mount::try_with_env(&host, &["--timeout", "5"], &envs)
        .unwrap_or_else(|f| panic!("mount as the reader failed\n{}", f.report));
    assert_eq!(read(&m.join("team/app/v1/a.txt")), b"first file\n");
    write_through(m.join("team/app/v1/c.txt"), "not allowed\n");
    let v3 = m.join("team/app/v3");
    bounded("mkdir", OP, {
        let v3 = v3.clone();
        move || fs::create_dir(v3)
    })
    .unwrap();
    write_through(v3.join("d.txt"), "not allowed either\n");
    for tag in [m.join("team/app/v1"), v3] {
        let out = commit(&tag, reader.path(), home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("commit as the reader: {}", err.trim());
        assert!(
            !out.status.success(),
            "a pull-only user committed {}",
            tag.display()
        );
        assert!(err.contains(&host), "{err}");
    }
    assert_eq!(resolve(&host, "team/app:v1"), v1, "v1 moved");
    let tags = oras_as(
        tmpdir().path(),
        ALICE,
        &["repo", "tags", &format!("{host}/team/app")],
    );
    assert_eq!(tags.lines().collect::<Vec<_>>(), ["v1", "v2"], "{tags}");
    finish(m);
}
