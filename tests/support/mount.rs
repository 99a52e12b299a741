//! Mounting the built `regfs` binary for a test, unmounting on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::cmd::{describe, run_unchecked_timeout, try_run};

/// Bound on `regfs mount` returning (it returns once the mount is live).
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The built binary under test.
pub fn regfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_regfs")
}

/// `Command` for the regfs binary, stdin from /dev/null.
pub fn regfs() -> Command {
    Command::new(regfs_bin())
}

/// A `regfs mount` that exited non-zero.
#[derive(Debug)]
pub struct MountFailure {
    pub output: Output,
    /// Command line, status, stdout and stderr, for messages.
    pub report: String,
}

impl MountFailure {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

pub struct Mount {
    // Declared before the tempdirs: unmount happens in Drop::drop, before
    // the fields (and the directories) go away.
    mountpoint: PathBuf,
    cache_dir: PathBuf,
    mounted: bool,
    _mount_tmp: Option<TempDir>,
    _cache_tmp: Option<TempDir>,
    /// stdout+stderr of the `regfs mount` command.
    pub mount_output: Output,
}

impl Mount {
    /// `regfs mount SOURCE <tmp mountpoint> --cache-dir <tmp cache> EXTRA...`;
    /// panics (with regfs's output) unless it exits 0.
    pub fn new(source: &str, extra_args: &[&str]) -> Mount {
        let cache = tempfile::Builder::new()
            .prefix("regfs-cache-")
            .tempdir()
            .expect("cache tempdir");
        let path = cache.path().to_path_buf();
        let mut m = Self::with_cache(source, &path, extra_args);
        m._cache_tmp = Some(cache);
        m
    }

    /// Same, with a cache folder the caller owns (warm-cache remounts,
    /// two mounts sharing a cache).
    pub fn with_cache(source: &str, cache_dir: &Path, extra_args: &[&str]) -> Mount {
        match Self::try_with_cache(source, cache_dir, extra_args) {
            Ok(m) => m,
            Err(f) => panic!("regfs mount failed\n{}", f.report),
        }
    }

    /// Like [`Mount::with_cache`], but a failing mount returns its output
    /// (to test error messages and exit codes) instead of panicking.
    pub fn try_with_cache(
        source: &str,
        cache_dir: &Path,
        extra_args: &[&str],
    ) -> Result<Mount, MountFailure> {
        Self::try_with_cache_env(source, cache_dir, extra_args, &[])
    }

    /// Like [`Mount::new`], with environment variables for regfs
    /// (`DOCKER_CONFIG`, `HOME`), and a failing mount returned.
    pub fn try_with_env(
        source: &str,
        extra_args: &[&str],
        envs: &[(&str, &Path)],
    ) -> Result<Mount, MountFailure> {
        let cache = tempfile::Builder::new()
            .prefix("regfs-cache-")
            .tempdir()
            .expect("cache tempdir");
        let path = cache.path().to_path_buf();
        let mut m = Self::try_with_cache_env(source, &path, extra_args, envs)?;
        m._cache_tmp = Some(cache);
        Ok(m)
    }

    fn try_with_cache_env(
        source: &str,
        cache_dir: &Path,
        extra_args: &[&str],
        envs: &[(&str, &Path)],
    ) -> Result<Mount, MountFailure> {
        let mnt = tempfile::Builder::new()
            .prefix("regfs-mnt-")
            .tempdir()
            .expect("mountpoint tempdir");
        let mut cmd = regfs();
        cmd.arg("mount")
            .arg(source)
            .arg(mnt.path())
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(extra_args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = run_unchecked_timeout(&mut cmd, MOUNT_TIMEOUT);
        if !out.status.success() {
            return Err(MountFailure {
                report: describe(&cmd, &out),
                output: out,
            });
        }
        Ok(Mount {
            mountpoint: mnt.path().to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            mounted: true,
            _mount_tmp: Some(mnt),
            _cache_tmp: None,
            mount_output: out,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// `self.path().join(rel)`
    pub fn join(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// Whether the kernel lists this mountpoint in /proc/self/mountinfo.
    pub fn is_mounted(&self) -> bool {
        is_mountpoint(&self.mountpoint)
    }

    /// The mount was ended by other means (the test checked it is gone).
    pub fn forget_mounted(&mut self) {
        self.mounted = false;
    }

    /// `fusermount3 -u`, asserting success (use in tests of unmounting; Drop
    /// does it quietly otherwise).
    pub fn unmount(&mut self) {
        let mut cmd = Command::new("fusermount3");
        cmd.arg("-u").arg(&self.mountpoint);
        let out = run_unchecked_timeout(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "unmount failed\n{}",
            describe(&cmd, &out)
        );
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let ok = try_run(
            Command::new("fusermount3").arg("-u").arg(&self.mountpoint),
            Duration::from_secs(30),
        )
        .map(|o| o.status.success())
        .unwrap_or(false);
        if !ok && is_mountpoint(&self.mountpoint) {
            let _ = try_run(
                Command::new("umount").arg("-l").arg(&self.mountpoint),
                Duration::from_secs(30),
            );
        }
        if is_mountpoint(&self.mountpoint) {
            // Leave the directory rather than recurse into a live mount.
            eprintln!(
                "warning: {} still mounted; leaving it",
                self.mountpoint.display()
            );
            if let Some(t) = self._mount_tmp.take() {
                let _ = t.keep();
            }
        }
    }
}

/// Whether `path` is a mountpoint (per /proc/self/mountinfo).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Processes running the regfs binary with `mnt` among their arguments.
pub fn daemon_pids(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_encoded_bytes().to_vec();
    let mut pids = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_regfs = args
            .first()
            .is_some_and(|a| a.ends_with(b"/regfs") || *a == b"regfs");
        if is_regfs && args.contains(&want.as_slice()) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (bounded) until no regfs daemon serves `mnt`.
pub fn wait_daemon_gone(mnt: &Path) {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if daemon_pids(mnt).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "regfs daemon for {} still running after unmount: pids {:?}",
        mnt.display(),
        daemon_pids(mnt)
    );
}

/// Unmounts `m` (Mount's Drop) and checks that its daemon exited.
pub fn finish(m: Mount) {
    let p = m.path().to_path_buf();
    drop(m);
    assert!(!is_mountpoint(&p), "{} still mounted", p.display());
    wait_daemon_gone(&p);
}
