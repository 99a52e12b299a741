//! scripts/install.sh into a temporary DESTDIR, with the binary under test
//! (`REGFS_BIN`, so no release build is needed): every file where its tool
//! looks for it, the same bytes as man/ and completions/, and each
//! completion script loaded by its shell where that shell is installed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;
use crate::tmpdir;

#[test]
fn install_sh_puts_binary_man_pages_and_completions_under_destdir_and_prefix() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = tmpdir();
    let out = run(Command::new("bash")
        .arg(repo.join("scripts/install.sh"))
        .env("DESTDIR", dest.path())
        .env("PREFIX", "/opt/regfs")
        .env("REGFS_BIN", regfs_bin()));
    let root = dest.path().join("opt/regfs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&root.join("bin").display().to_string()),
        "{stdout}"
    );

    let bin = root.join("bin/regfs");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(regfs_bin()).unwrap());
    assert_eq!(
        fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let version = run_stdout(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("regfs {}", env!("CARGO_PKG_VERSION"))
    );

    // every committed man page, and nothing else
    let mut pages: Vec<String> = fs::read_dir(repo.join("man"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(pages.contains(&"regfs-mount.1".to_string()), "{pages:?}");
    assert_eq!(ls(&root.join("share/man/man1")), pages);
    for p in &pages {
        let installed = root.join("share/man/man1").join(p);
        assert_eq!(
            fs::read(&installed).unwrap(),
            fs::read(repo.join("man").join(p)).unwrap()
        );
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    // completions, where bash-completion, zsh and fish look for them
    for (installed, committed) in [
        ("share/bash-completion/completions/regfs", "regfs.bash"),
        ("share/zsh/site-functions/_regfs", "_regfs"),
        ("share/fish/vendor_completions.d/regfs.fish", "regfs.fish"),
    ] {
        assert_eq!(
            fs::read(root.join(installed)).unwrap(),
            fs::read(repo.join("completions").join(committed)).unwrap(),
            "{installed}"
        );
    }
    let bash = root.join("share/bash-completion/completions/regfs");
    let words = run_stdout(Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(regfs commit --d); COMP_CWORD=2; _regfs regfs --d commit; \
         echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    assert_eq!(words.trim(), "--dry-run");
    for (shell, file) in [
        ("zsh", "share/zsh/site-functions/_regfs"),
        ("fish", "share/fish/vendor_completions.d/regfs.fish"),
    ] {
        if Command::new(shell).arg("--version").output().is_ok() {
            run(Command::new(shell).arg("-n").arg(root.join(file)));
        }
    }
}
