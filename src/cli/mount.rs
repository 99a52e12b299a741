//! `regfs mount` and `regfs umount`.
//!
//! `mount` checks what it can up front, then starts itself again as a
//! daemon (`--foreground`, in a new session, logging to a file) and waits
//! for one line on a pipe: `ready` once the kernel mount is live, or the
//! reason it could not mount. So `regfs mount` returns only when the mount
//! works, and fails with a one-line reason when it cannot.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::args::MountArgs;
use crate::cache::Cache;
use crate::fs::{Fs, Options};
use crate::reference::Source;
use crate::registry::mirrors::{self, conf};
use crate::registry::{self, layout::Layout, Backend, Client};
use crate::stage::Staging;

const DAEMON_ENV: &str = "REGFS_DAEMON";

pub fn run(mut args: MountArgs, _verbose: u8) -> anyhow::Result<()> {
    args.apply_options().map_err(|e| anyhow!(e))?;
    let daemon = std::env::var_os(DAEMON_ENV).is_some();
    let result = preflight(&args).and_then(|()| {
        if args.foreground || daemon {
            serve(&args, daemon)
        } else {
            spawn_daemon(&args)
        }
    });
    if daemon {
        if let Err(e) = &result {
            // The parent waits for this line; stdout is our pipe to it.
            let mut out = std::io::stdout();
            let _ = writeln!(out, "error: {e:#}");
            let _ = out.flush();
        }
    }
    result
}

/// What can be checked before anything starts: a source that parses, a
/// mountpoint that is a free folder, a FUSE device.
fn preflight(args: &MountArgs) -> anyhow::Result<()> {
    args.source.parse::<Source>()?;
    let mp = &args.mountpoint;
    let meta = std::fs::metadata(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a folder", mp.display());
    }
    if is_mountpoint(mp) {
        bail!(
            "mountpoint {} is busy: something is already mounted there",
            mp.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse does not exist: load the fuse module (modprobe fuse) or run where FUSE is available");
    }
    Ok(())
}

/// Whether `p` is listed as a mount point in /proc/self/mountinfo.
fn is_mountpoint(p: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(p) else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|m| Path::new(&m) == canon)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn cache_dir(args: &MountArgs) -> PathBuf {
    args.cache_dir
        .clone()
        .unwrap_or_else(super::default_cache_dir)
}

fn spawn_daemon(args: &MountArgs) -> anyhow::Result<()> {
    let cache = cache_dir(args);
    Cache::create_dir(&cache)
        .with_context(|| format!("cannot create cache folder {}", cache.display()))?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| cache.join("regfs.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the regfs executable")?;
    let argv: Vec<String> = super::normalize_args(std::env::args().collect());
    let mut cmd = Command::new(exe);
    cmd.args(argv.iter().skip(1))
        .env(DAEMON_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe and touches no memory of ours; the
    // daemon leaves the terminal's session so ^C there does not unmount.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no pipe to the mount daemon"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let limit = Duration::from_secs(args.timeout.saturating_mul(6).saturating_add(30));
    match rx.recv_timeout(limit) {
        Ok(line) if line.trim() == "ready" => Ok(()),
        Ok(line) if line.starts_with("error: ") => {
            let _ = child.wait();
            bail!("{}", line.trim_end().trim_start_matches("error: "))
        }
        Ok(_) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            bail!(
                "the mount daemon stopped before the mount was live ({status}); see {}",
                log_path.display()
            )
        }
        Err(_) => {
            let _ = child.kill();
            bail!(
                "the mount did not come up within {limit:?}; see {}",
                log_path.display()
            )
        }
    }
}

/// Mounts and serves until unmounted. As a daemon, says `ready` on stdout
/// once the kernel mount is live.
fn serve(args: &MountArgs, daemon: bool) -> anyhow::Result<()> {
    let source: Source = args.source.parse()?;
    for r in &args.repos {
        if !crate::reference::is_repository(r) {
            bail!("--repo {r:?} is not a valid repository name");
        }
    }
    let cache_dir = cache_dir(args);
    let cache = Arc::new(Cache::open(&cache_dir, args.cache_size)?);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let backend = match &source {
        Source::Registry { host, .. } => {
            let mut cfg = registry::Config::with_flags(
                host,
                args.plain_http,
                args.https,
                args.insecure,
                args.ca_file.clone(),
            )?;
            cfg.timeout = timeout;
            Backend::Registry(Client::new(cfg)?)
        }
        Source::Layout(p) => Backend::Layout(Layout::open(p)?),
    };
    let prefix = source.prefix();
    let backend = Arc::new(backend);
    let reads = reads_through_mirrors(args, &source, &backend, timeout)?;
    // Each thread that allocates gets a glibc arena of its own that keeps
    // freed memory; a few arenas keep a long-running daemon's memory flat.
    // SAFETY: mallopt only tunes the allocator; called before our threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let rt = super::runtime(4)?;
    // Wrong or missing credentials fail the mount here, in one line, rather
    // than mount a tree whose every read is refused.
    match rt.block_on(backend.check_access(args.repos.first().map(String::as_str))) {
        Ok(()) => {}
        Err(e) if e.is_unreachable() && cache.knows_host(backend.host()) => {
            tracing::warn!("{e}; serving what the cache knows until it answers");
        }
        Err(e) => return Err(e.into()),
    }
    // SAFETY: getuid/getgid cannot fail and have no side effects.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let opts = Options {
        prefix,
        repos: args.repos.clone(),
        tag_ttl: Duration::from_secs(args.tag_ttl),
        read_only: args.read_only,
        verify: args.verify,
        parallel_ranges: args.parallel_ranges.map(usize::from),
        metadata_cache: usize::try_from(args.metadata_cache).unwrap_or(usize::MAX),
        timeout,
        uid,
        gid,
    };
    let staging_root = args
        .staging_dir
        .clone()
        .unwrap_or_else(|| cache_dir.join("staging"))
        .join(super::records::source_key(&source.to_string()));
    let staging = Arc::new(Staging::open(&staging_root)?);
    let fs = Arc::new(Fs::new(reads, cache, staging, opts));
    let settings = crate::fuse::Settings {
        op_timeout: timeout.saturating_mul(4) + Duration::from_secs(5),
        // Short: staged changes and commits by other processes show within a second.
        ttl: Duration::from_secs(1),
        // What is inside a manifest folder found by digest never changes.
        stable_ttl: Duration::from_secs(24 * 3600),
        // Tags and what follows them: trusted as regfs trusts them; a
        // commit or discard makes the kernel forget them (SIGUSR1 below).
        tag_ttl: Duration::from_secs(args.tag_ttl),
    };
    // Resolved before mounting: afterwards the path leads into ourselves.
    let canonical_mountpoint =
        std::fs::canonicalize(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone());
    let fs_for_signal = fs.clone();
    let mut mount = crate::fuse::mount(
        fs,
        rt.handle().clone(),
        settings,
        &args.mountpoint,
        &crate::fuse::MountConfig {
            fsname: source.to_string(),
            read_only: args.read_only,
            allow_other: args.allow_other,
            request_spin: std::time::Duration::from_micros(args.request_spin.min(100_000)),
        },
    )
    .with_context(|| format!("cannot mount on {}", args.mountpoint.display()))?;
    raise_read_ahead(&canonical_mountpoint);
    let record = super::records::Record {
        mountpoint: canonical_mountpoint,
        source: source.to_string(),
        pid: std::process::id(),
        cache_dir: cache_dir.clone(),
        staging_root: staging_root.clone(),
        plain_http: args.plain_http == Some(true),
        https: args.https || args.plain_http == Some(false),
        insecure: args.insecure,
        ca_file: args.ca_file.clone(),
        timeout: args.timeout,
        read_only: args.read_only,
    };
    let record_path = record.write()?;
    // `regfs commit` and `discard` run in other processes: SIGUSR1 tells us
    // to forget tags and staged state we remember, so the tree shows theirs.
    let refresh_fs = fs_for_signal.clone();
    let invalidator = mount.invalidator();
    let ack = super::records::ack_file(&record_path);
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            return;
        };
        let mut n = 0u64;
        while usr1.recv().await.is_some() {
            tracing::info!("refreshing after a commit or discard");
            refresh_fs.refresh();
            // The kernel keeps tags and what follows them for --tag-ttl:
            // it must forget them before the committer is told we are done.
            let inv = invalidator.clone();
            match tokio::task::spawn_blocking(move || inv.forget_changeable()).await {
                Ok(n) => tracing::debug!("the kernel was told to forget {n} names"),
                Err(e) => tracing::warn!("could not tell the kernel to forget names: {e}"),
            }
            n += 1;
            // Tells the committing process we now show the new state.
            let _ = std::fs::write(&ack, n.to_string());
        }
    });
    let mut unmounter = mount.unmounter();
    let stopper = mount.stopper();
    let mountpoint_for_signal = record.mountpoint.clone();
    let record_for_signal = record_path.clone();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
        shut_down(
            &stopper,
            &mut unmounter,
            &mountpoint_for_signal,
            &record_for_signal,
        );
    });
    tracing::info!(source = %source, mountpoint = %args.mountpoint.display(), "mounted");
    if daemon {
        let mut out = std::io::stdout();
        writeln!(out, "ready").context("cannot tell the parent the mount is live")?;
        out.flush()?;
        detach_stdout();
    }
    let served = mount.run().context("the FUSE session failed");
    let _ = std::fs::remove_file(&record_path);
    let _ = std::fs::remove_file(super::records::ack_file(&record_path));
    served?;
    tracing::info!("unmounted");
    Ok(())
}

/// What the filesystem reads through: the registry's mirrors (`--mirror`,
/// then registries.conf) in front of it where it has any, else the
/// registry or layout itself.
fn reads_through_mirrors(
    args: &MountArgs,
    source: &Source,
    backend: &Arc<Backend>,
    timeout: Duration,
) -> anyhow::Result<Arc<dyn crate::fs::Source>> {
    let Source::Registry { host, .. } = source else {
        if !args.mirrors.is_empty() {
            bail!("--mirror is for registries; {source} is an OCI layout");
        }
        return Ok(backend.clone());
    };
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let files = conf::files(
        args.registries_conf.as_deref(),
        home.as_deref(),
        Path::exists,
    );
    let conf = conf::load(&files)
        .map_err(|e| anyhow!("cannot read registry mirrors: {e} (see containers-registries.conf(5); --registries-conf FILE reads another file)"))?;
    if args.mirrors.is_empty() && !conf.has_mirrors_for(host) {
        return Ok(backend.clone());
    }
    let (plain_http, https, insecure, ca_file) = (
        args.plain_http,
        args.https,
        args.insecure,
        args.ca_file.clone(),
    );
    let make_client: mirrors::MakeClient = Box::new(move |t: &mirrors::Target| {
        let mut cfg = if t.from_flag {
            // `--mirror`: spoken to as the registry is.
            registry::Config::with_flags(&t.host, plain_http, https, insecure, ca_file.clone())?
        } else {
            // registries.conf: `insecure = true` allows plain HTTP and
            // certificates that do not verify.
            let mut c = registry::Config::new(&t.host);
            if t.insecure {
                c.transport = registry::Transport::HttpsThenHttp;
                c.insecure = true;
            }
            c.ca_file = ca_file.clone();
            c
        };
        cfg.timeout = timeout;
        // A mirror that fails is passed over for the next source: little
        // is gained by insisting.
        cfg.retries = 1;
        Client::new(cfg)
    });
    tracing::info!(flags = ?args.mirrors, conf = %files.main.display(), "reading through mirrors");
    Ok(Arc::new(registry::Mirrored::new(
        backend.clone(),
        args.mirrors.clone(),
        conf,
        make_client,
    )))
}

/// Ends the mount within a few seconds even while readers wait on the
/// registry: every request in flight is answered (EIO) and new ones are
/// refused, then the mount is unmounted, lazily if a reader still holds a
/// file open. If the session has not ended 4 s later (a process keeps a
/// folder of the mount as its working directory), the daemon exits, which
/// ends the FUSE connection.
fn shut_down(
    stopper: &crate::fuse::Stopper,
    unmounter: &mut crate::fuse::Unmounter,
    mountpoint: &Path,
    record: &Path,
) {
    let stopped = stopper.stop_all();
    tracing::info!(stopped, "signal received; unmounting");
    // Give the answered readers a moment to close their files.
    if stopped > 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Err(e) = unmounter.unmount() {
        tracing::info!("unmount: {e}; detaching the mount instead");
        detach(mountpoint);
    }
    let (record, ack) = (record.to_path_buf(), super::records::ack_file(record));
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        tracing::warn!("the mount is still held open; ending the FUSE connection");
        let _ = std::fs::remove_file(&record);
        let _ = std::fs::remove_file(&ack);
        std::process::exit(0);
    });
}

/// A lazy unmount: the mount leaves the namespace now and goes away when
/// its last user lets go.
fn detach(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid NUL-terminated path; no memory is shared.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        // Not root: the setuid helper can detach too.
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(mountpoint)
            .output();
    }
}

/// Buffered FUSE reads follow the device's read-ahead window, 128 KiB by
/// default; a larger one makes reads of 1 MiB and more, and on FUSE the
/// request size matters more than the thread count. Found through
/// /proc/self/mountinfo: touching the mount itself would ask us, and we
/// are not serving yet.
fn raise_read_ahead(mountpoint: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let dev = info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && Path::new(&unescape_mountinfo(f[4])) == mountpoint)
            .then(|| f[2].to_string())
    });
    if let Some(dev) = dev {
        let p = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        if let Err(e) = std::fs::write(&p, "1024") {
            tracing::debug!("cannot raise {p}: {e}");
        }
    }
}

/// Points stdout at /dev/null so the parent's pipe closes.
fn detach_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto fd 1 with a valid descriptor we own.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// `regfs umount`: a regfs daemon is asked to shut down (SIGTERM), which
/// answers readers still waiting on the registry and unmounts within 5 s
/// even while files are open; other FUSE mounts go through `fusermount3 -u`.
pub fn umount(mountpoint: &Path) -> anyhow::Result<()> {
    let abs = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    if let Some(r) = super::records::Record::all()
        .into_iter()
        .find(|r| r.mountpoint == abs || r.mountpoint == mountpoint)
    {
        // SAFETY: kill with a signal number has no memory effects; the PID
        // was alive when the record was read.
        unsafe {
            libc::kill(r.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        while std::time::Instant::now() < deadline {
            if !is_mounted(&r.mountpoint) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    unmount_with_helpers(mountpoint)
}

/// Whether `/proc/self/mountinfo` lists a mount at `p`.
fn is_mounted(p: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4 && Path::new(&unescape_mountinfo(f[4])) == p
    })
}

fn unmount_with_helpers(mountpoint: &Path) -> anyhow::Result<()> {
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => {
            // fusermount3 refuses mounts not in its mtab when we mounted as
            // root with mount(2); umount(8) handles those.
            let fallback = Command::new("umount").arg(mountpoint).output();
            if let Ok(f) = fallback {
                if f.status.success() {
                    return Ok(());
                }
                bail!(
                    "cannot unmount {}: {}",
                    mountpoint.display(),
                    String::from_utf8_lossy(&f.stderr).trim()
                );
            }
            bail!(
                "cannot unmount {}: {}",
                mountpoint.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Err(_) => {
            let f = Command::new("umount")
                .arg(mountpoint)
                .output()
                .context("cannot run umount")?;
            if !f.status.success() {
                bail!(
                    "cannot unmount {}: {}",
                    mountpoint.display(),
                    String::from_utf8_lossy(&f.stderr).trim()
                );
            }
            Ok(())
        }
    }
}
