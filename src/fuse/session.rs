//! The kernel mount and its session: how the mount is made, serving it,
//! and the handles a shutdown uses from other threads (`Stopper` answers
//! the requests in flight, `Unmounter` unmounts).

use std::sync::Arc;

use super::interrupt::Requests;
use super::{FuseFs, Settings};
use crate::fs::Fs;

/// How the kernel mount is made.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Shown as the source in /proc/mounts.
    pub fsname: String,
    pub read_only: bool,
    pub allow_other: bool,
    /// `--request-spin`.
    pub request_spin: std::time::Duration,
}

/// A live kernel mount, not yet serving.
pub struct Mounted {
    session: fuser::Session<FuseFs>,
    requests: Arc<Requests>,
    invalidator: Invalidator,
}

/// Makes the kernel forget what follows the registry's tags, after a
/// commit or discard by another process changed it: the names it holds
/// in repositories, tag folders, `referrers/` and staged folders (kept
/// for `--tag-ttl` otherwise), and those folders' attributes and cached
/// listings. Blocks on the kernel: never call it on a FUSE thread.
#[derive(Clone)]
pub struct Invalidator {
    fs: Arc<Fs>,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl Invalidator {
    /// Returns how many names the kernel was told to forget.
    pub fn forget_changeable(&self) -> usize {
        use std::ffi::OsStr;
        let Some(n) = self.notifier.get() else {
            return 0;
        };
        let (names, folders) = self.fs.changeable_names();
        for (parent, name) in &names {
            // ENOENT: the kernel had already let it go.
            let _ = n.inval_entry(fuser::INodeNo(*parent), OsStr::new(name));
        }
        for f in &folders {
            let _ = n.inval_inode(fuser::INodeNo(*f), 0, 0);
        }
        names.len()
    }
}

/// Stops every request in flight (answered with EIO) and refuses new ones:
/// the first step of a shutdown, so that no reader holds the mount.
#[derive(Clone)]
pub struct Stopper(Arc<Requests>);

impl Stopper {
    /// Returns how many requests were stopped.
    pub fn stop_all(&self) -> usize {
        self.0.shutdown()
    }
}

/// Unmounts a `Mounted` from another thread (on a signal).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    pub fn unmount(&mut self) -> std::io::Result<()> {
        self.0.unmount()
    }
}

impl Mounted {
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.requests.clone())
    }

    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> std::io::Result<()> {
        self.session.run()
    }
}

/// Mounts `fs` at `mountpoint`; returns once the kernel mount is live.
pub fn mount(
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    settings: Settings,
    mountpoint: &std::path::Path,
    mc: &MountConfig,
) -> std::io::Result<Mounted> {
    use fuser::{MountOption, SessionACL};
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(mc.fsname.clone()),
        MountOption::Subtype("regfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        if mc.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if mc.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // Handlers answer what needs no waiting and hand the rest to the
    // runtime; two threads keep the queue drained.
    config.n_threads = Some(2);
    config.clone_fd = true;
    config.request_spin = mc.request_spin;
    let ffs = FuseFs::new(fs.clone(), rt, settings);
    let requests = ffs.requests.clone();
    let notifier = ffs.notifier.clone();
    let session = fuser::Session::new(ffs, mountpoint, &config)?;
    let _ = notifier.set(session.notifier());
    let invalidator = Invalidator { fs, notifier };
    Ok(Mounted {
        session,
        requests,
        invalidator,
    })
}
