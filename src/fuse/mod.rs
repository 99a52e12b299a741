//! The FUSE adapter: decode a request, run the `fs` operation with a
//! timeout (answered on the FUSE thread when it needs no waiting, else on
//! the tokio runtime: `run_or_spawn`), reply. FUSE threads never wait on
//! the network, and a panic in an operation costs only that request (it is
//! caught, on the FUSE thread or by tokio; the reply is dropped, which
//! fuser answers with EIO).
//!
//! This is the only module that names fuser.
//!
//! - `mod.rs`      the `Filesystem` callbacks and the spawn/reply helpers
//! - `dirs`        folder listings being read, per handle or per folder
//! - `interrupt`   requests in flight: interrupts answer them with EINTR
//! - `pages`       what the kernel's page cache may keep across opens
//! - `passthrough` reads of verified cache files handed to the kernel
//! - `session`     the kernel mount, serving it, and shutting it down

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use crate::fs::{self, Attr, Fs, Kind};

mod dirs;
mod interrupt;
mod pages;
mod passthrough;
mod session;
use dirs::Dirs;
use interrupt::{Requests, Stop};
use pages::Pages;
use passthrough::Passthrough;
pub use session::{mount, Invalidator, MountConfig, Mounted, Stopper, Unmounter};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are single map operations: a poisoned map is whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mount settings the adapter needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Limit for one metadata operation (lookup, getattr, readdir, xattr).
    pub op_timeout: Duration,
    /// How long the kernel may trust names and attributes that can change.
    pub ttl: Duration,
    /// How long it may trust what never changes (inside a manifest
    /// folder found by digest).
    pub stable_ttl: Duration,
    /// How long it may trust what follows the registry's tags (`--tag-ttl`;
    /// a refresh after a commit makes it forget sooner).
    pub tag_ttl: Duration,
}

impl Settings {
    /// The timeout for an answer about `a` (`name_too`: an entry, whose
    /// one timeout covers its name and its attributes).
    fn ttl_of(&self, a: &Attr, name_too: bool) -> Duration {
        if a.cache.attr && (a.cache.name || !name_too) {
            self.stable_ttl
        } else if a.cache.tags {
            self.tag_ttl.max(self.ttl)
        } else {
            self.ttl
        }
    }
}

pub struct FuseFs {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    settings: Settings,
    passthrough: Arc<Passthrough>,
    requests: Arc<Requests>,
    pages: Arc<Pages>,
    dirs: Arc<Dirs>,
    trim: Arc<Trim>,
    /// The kernel opens folders without asking us (see `dirs`).
    no_opendir: bool,
    /// Set once the session exists (it is made from this value).
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle, settings: Settings) -> FuseFs {
        FuseFs {
            fs,
            rt,
            settings,
            passthrough: Arc::new(Passthrough::default()),
            requests: Arc::new(Requests::default()),
            pages: Arc::new(Pages::default()),
            dirs: Arc::new(Dirs::default()),
            trim: Arc::new(Trim::default()),
            no_opendir: false,
            notifier: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// Runs `fut` on the runtime with `limit`, then hands the result (or the
    /// errno) to `reply`. Errors are logged once here, at their own level.
    ///
    /// The operation is registered under the request's id: an interrupt
    /// from the kernel (the caller got a signal) answers it with `EINTR`
    /// at once, and a shutdown with `EIO`. Its future is then dropped;
    /// downloads it waited for go on in tasks of their own.
    fn spawn<T, F, R>(&self, req: &Request, op: &'static str, limit: Duration, fut: F, reply: R)
    where
        T: Send + 'static,
        F: Future<Output = Result<T, fs::Error>> + Send + 'static,
        R: FnOnce(Result<T, Errno>) + Send + 'static,
    {
        let unique = req.unique().0;
        let stop = match self.requests.register(unique) {
            Ok(rx) => rx,
            Err(why) => return reply(Err(stopped(op, why))),
        };
        let requests = self.requests.clone();
        let spawned = run_or_spawn(&self.rt, async move {
            match requests.guard(unique, stop, limit, fut).await {
                Ok(r) => reply(r.map_err(|e| errno_of(op, &e))),
                Err(why) => reply(Err(stopped(op, why))),
            }
        });
        self.answered(spawned);
    }

    /// After a request: whether the FUSE thread waits for the next one awake
    /// (`--request-spin`). Answered here, its caller's next request comes at
    /// once, unless other requests or fetches are at work (a cold walk):
    /// on two cores, a thread spinning beside them slows them more than a
    /// wake-up costs. Answered later from the runtime, its caller sends
    /// nothing more until then.
    fn answered(&self, spawned: bool) {
        if spawned || self.requests.in_flight() > 0 || self.fs.fetching_ahead() {
            fuser::wait_asleep();
        }
    }

    /// `spawn` for operations that answer with nothing but success.
    fn spawn_empty<F>(&self, req: &Request, op: &'static str, fut: F, reply: ReplyEmpty)
    where
        F: Future<Output = Result<(), fs::Error>> + Send + 'static,
    {
        self.spawn(req, op, self.settings.op_timeout, fut, move |r| match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        });
    }

    /// `spawn` for operations that answer with a directory entry.
    fn spawn_entry<F>(&self, req: &Request, op: &'static str, fut: F, reply: ReplyEntry)
    where
        F: Future<Output = Result<Attr, fs::Error>> + Send + 'static,
    {
        let settings = self.settings.clone();
        let this = self.attr_maker();
        self.spawn(req, op, self.settings.op_timeout, fut, move |r| match r {
            Ok(a) => reply.entry(&settings.ttl_of(&a, true), &this(&a), Generation(0)),
            Err(e) => reply.error(e),
        });
    }

    fn file_attr(&self, a: &Attr) -> FileAttr {
        let t = if a.mtime >= 0 {
            UNIX_EPOCH + Duration::new(a.mtime as u64, a.mtime_nsec.min(999_999_999))
        } else {
            UNIX_EPOCH
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind: kind(a.kind),
            perm: a.perm,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            flags: 0,
            blksize: 1 << 20,
        }
    }

    /// Reads wait for a whole blob to arrive and verify: allow for a slow
    /// link (100 KB/s) on top of the metadata limit, so a stalled registry
    /// still ends in EIO.
    fn read_limit(&self) -> Duration {
        self.settings.op_timeout.saturating_mul(20)
    }
}

/// The answer to an operation that failed, logged once here at the
/// error's own level.
fn errno_of(op: &'static str, e: &fs::Error) -> Errno {
    if e.is_quiet() {
        tracing::debug!(op, "{e}");
    } else {
        tracing::warn!(op, "{e}");
    }
    Errno::from_i32(e.errno())
}

/// The answer to an operation stopped before it finished.
fn stopped(op: &'static str, why: Stop) -> Errno {
    match why {
        Stop::Interrupted => {
            tracing::debug!(op, "interrupted by the caller");
            Errno::EINTR
        }
        Stop::Shutdown => {
            tracing::debug!(op, "stopped: the mount is going away");
            Errno::EIO
        }
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

fn name_str(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_string)
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Larger requests matter more than threads (measured: 1 MiB requests
        // ran 2-3x faster than 128 KiB ones): ask for 1 MiB
        // readahead; the kernel clamps what it cannot give.
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Names and attributes in one round trip when the kernel thinks it
        // pays (`ls -l`), plain readdir otherwise.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Folders opened without a request, their listings cached by the
        // kernel until they change (see `dirs`). REGFS_OPENDIR=1 keeps
        // opendir (for comparison).
        self.no_opendir = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            && std::env::var_os("REGFS_OPENDIR").is_none_or(|v| v != "1");
        // Reads of verified cache files can bypass us entirely.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough
                .enabled
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The caller of request `unique` got a signal: answer it with EINTR
    /// now (see `interrupt`).
    fn interrupt(&self, _req: &Request, unique: fuser::RequestId) {
        self.requests.interrupt(unique.0);
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        let notifier = self.notifier.clone();
        self.spawn_entry(
            req,
            "lookup",
            async move {
                let r = fs.lookup(parent.0, &name).await;
                drop_cached_later(&notifier, fs.take_changed_folders());
                r
            },
            reply,
        );
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        let settings = self.settings.clone();
        let this = self.attr_maker();
        self.spawn(
            req,
            "getattr",
            self.settings.op_timeout,
            async move { fs.getattr(ino.0).await },
            move |r| match r {
                Ok(a) => reply.attr(&settings.ttl_of(&a, false), &this(&a)),
                Err(e) => reply.error(e),
            },
        );
    }

    /// The listing of a folder that never changes (inside a manifest
    /// folder found by digest, nothing staged there) may be cached by the
    /// kernel: a warm `find` or `grep -r` then lists it without asking us.
    /// Every open folder gets a handle its listing is kept under (`dirs`).
    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            // Once: the kernel opens folders by itself from now on.
            return reply.error(Errno::ENOSYS);
        }
        let fs = self.fs.clone();
        let dirs = self.dirs.clone();
        let cached = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
        self.spawn(
            req,
            "opendir",
            self.settings.op_timeout,
            async move {
                if fs.names_are_stable(ino.0) {
                    return Ok((dirs.open(), cached));
                }
                if fs.names_follow_tags(ino.0) {
                    // Listed now: if the kernel has this very listing, it
                    // keeps it; else it drops its copy and caches this one.
                    let listing = Arc::new(fs.listing(ino.0).await?);
                    let (fh, unchanged) = dirs.open_listed(ino.0, listing);
                    let flags = if unchanged {
                        cached
                    } else {
                        FopenFlags::FOPEN_CACHE_DIR
                    };
                    return Ok((fh, flags));
                }
                Ok((dirs.open(), FopenFlags::empty()))
            },
            move |r| match r {
                Ok((fh, flags)) => reply.opened(FileHandle(fh), flags),
                Err(e) => reply.error(e),
            },
        );
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.release(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let fs = self.fs.clone();
        let dirs = self.dirs.clone();
        let dirs2 = self.dirs.clone();
        self.spawn(
            req,
            "readdir",
            self.settings.op_timeout,
            async move { listing_of(&fs, &dirs, ino.0, fh.0, offset).await },
            move |r| match r {
                Ok(entries) => {
                    let mut full = false;
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(e.ino), (i + 1) as u64, kind(e.kind), &e.name) {
                            full = true;
                            break;
                        }
                    }
                    if !full {
                        dirs2.read_to_end(ino.0);
                    }
                    reply.ok();
                }
                Err(e) => reply.error(e),
            },
        );
    }

    /// The kernel forgot inodes: so does the table (memory follows what
    /// the kernel holds). Local work only: done on the FUSE thread.
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forgotten(&[(ino.0, nlookup)]);
    }

    fn batch_forget(&self, _req: &Request, nodes: &[fuser::ForgetOne]) {
        let each: Vec<(u64, u64)> = nodes.iter().map(|n| (n.nodeid().0, n.nlookup())).collect();
        self.forgotten(&each);
    }

    /// Names with their attributes in one answer (`ls -l`, `ls -R`, `find`):
    /// attributes are computed only for the entries that fit, 16 at a time.
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let unique = req.unique().0;
        let stop = match self.requests.register(unique) {
            Ok(rx) => rx,
            Err(why) => return reply.error(stopped("readdirplus", why)),
        };
        let requests = self.requests.clone();
        let fs = self.fs.clone();
        let dirs = self.dirs.clone();
        let settings = self.settings.clone();
        let this = self.attr_maker();
        let limit = self.settings.op_timeout;
        let spawned = run_or_spawn(&self.rt, async move {
            let work = async {
                let all = listing_of(&fs, &dirs, ino.0, fh.0, offset).await?;
                let names_stable = fs.names_are_stable(ino.0);
                let names_follow_tags = fs.names_follow_tags(ino.0);
                let rest: Vec<(usize, &fs::DirEntry)> =
                    all.iter().enumerate().skip(offset as usize).collect();
                for batch in rest.chunks(16) {
                    let inos: Vec<u64> = batch.iter().map(|(_, e)| e.ino).collect();
                    let attrs = fs.attrs(&inos).await;
                    for ((i, e), attr) in batch.iter().zip(attrs) {
                        let (name, kind) = (&e.name, &e.kind);
                        let dot = name == "." || name == "..";
                        // Every other entry given counts as a lookup (the
                        // kernel forgets it later). One gone from the table
                        // since it was listed is looked up by name again.
                        let (child, attr) = if dot || fs.hold(e.ino) {
                            (e.ino, attr)
                        } else {
                            match fs.lookup(ino.0, name).await {
                                Ok(a) => (a.ino, Some(a)),
                                Err(_) => continue,
                            }
                        };
                        // An entry whose attributes cannot be had now (a tag
                        // whose manifest fails) is still listed, with
                        // placeholder attributes the kernel must not keep:
                        // its own lookup then reports the error.
                        let (a, t) = match attr {
                            Some(mut a) => {
                                a.cache.name = names_stable;
                                a.cache.tags = a.cache.tags && names_follow_tags;
                                (this(&a), settings.ttl_of(&a, true))
                            }
                            None => (this(&fs.placeholder_attr(child, *kind)), Duration::ZERO),
                        };
                        if reply.add(INodeNo(child), (*i + 1) as u64, name, &t, &a, Generation(0)) {
                            if !dot {
                                fs.forget(child, 1); // not given after all
                            }
                            return Ok(());
                        }
                    }
                }
                dirs.read_to_end(ino.0);
                Ok::<_, fs::Error>(())
            };
            // `work` borrows `reply`; `guard` drops it before returning.
            match requests.guard(unique, stop, limit, work).await {
                Ok(Ok(())) => reply.ok(),
                Ok(Err(e)) => reply.error(errno_of("readdirplus", &e)),
                Err(why) => reply.error(stopped("readdirplus", why)),
            }
        });
        self.answered(spawned);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        // A small verified blob: answered here, no task, no I/O.
        if !write {
            if let Some(fh) = self.fs.open_known_blob(ino.0) {
                let flags = if self.pages.open(ino.0, fh, false) && self.fs.keeps_cache(ino.0) {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                } else {
                    FopenFlags::FOPEN_NOFLUSH
                };
                return reply.opened(FileHandle(fh), flags);
            }
        }
        let fs = self.fs.clone();
        let pt = self.passthrough.clone();
        let pages = self.pages.clone();
        self.spawn(
            req,
            "open",
            self.read_limit(),
            async move {
                let opened = fs.open(ino.0, write, truncate).await?;
                let volatile = write || fs.is_staged(ino.0);
                let unverified = fs.serves_unverified(opened.0);
                Ok((opened, volatile, fs.keeps_cache(ino.0), unverified))
            },
            move |r| match r {
                // Staged files change: let the kernel drop its cache on open.
                Ok(((fh, _), true, _, _)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                // Blob bytes never change under a name: keep the page cache
                // across opens (unless this inode stood for other bytes
                // before, or its pages may hold unverified bytes), and pass
                // reads of verified files through.
                // A blob open for reading has nothing to flush at close:
                // the kernel need not ask (one round trip less per file).
                Ok(((fh, ready), false, keep, unverified)) => {
                    let flags = if pages.open(ino.0, fh, unverified) && keep {
                        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
                    } else {
                        FopenFlags::FOPEN_NOFLUSH
                    };
                    pt.reply_open(reply, ino.0, fh, ready, flags)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        let pages = self.pages.clone();
        let notifier = self.notifier.clone();
        self.spawn(
            req,
            "read",
            self.read_limit(),
            async move { fs.read(fh.0, offset, size).await },
            move |r| match r {
                Ok(b) => reply.data(&b),
                Err(e) => {
                    reply.error(e);
                    // Pages this handle's lazy reads put in the kernel's
                    // cache were never verified: drop them, now that the
                    // failed read is answered (the kernel waits for that).
                    if let Some(ino) = pages.failed(fh.0) {
                        drop_cached_later(&notifier, vec![ino]);
                    }
                }
            },
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.passthrough.release(fh.0);
        self.pages.release(fh.0);
        reply.ok();
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENODATA);
        };
        let fs = self.fs.clone();
        self.spawn(
            req,
            "getxattr",
            self.settings.op_timeout,
            async move { fs.getxattr(ino.0, &name).await },
            move |r| match r {
                Ok(v) => xattr_reply(reply, size, &v),
                Err(e) => reply.error(e),
            },
        );
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = self.fs.clone();
        self.spawn(
            req,
            "listxattr",
            self.settings.op_timeout,
            async move { fs.listxattr(ino.0).await },
            move |r| match r {
                Ok(attrs) => {
                    let mut buf = Vec::new();
                    for (k, _) in attrs {
                        buf.extend_from_slice(k.as_bytes());
                        buf.push(0);
                    }
                    xattr_reply(reply, size, &buf)
                }
                Err(e) => reply.error(e),
            },
        );
    }

    // Writes go to the staging area through `fs`; nothing here touches the
    // network except copying a registry file up before it is changed.
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let when = |t: Option<fuser::TimeOrNow>| {
            t.map(|t| match t {
                fuser::TimeOrNow::SpecificTime(t) => t,
                fuser::TimeOrNow::Now => SystemTime::now(),
            })
        };
        let set = fs::SetAttr {
            size,
            mode,
            uid,
            gid,
            mtime: when(mtime),
            atime: when(atime),
        };
        let fs = self.fs.clone();
        let ttl = self.settings.ttl;
        let this = self.attr_maker();
        self.spawn(
            req,
            "setattr",
            self.read_limit(),
            async move { fs.setattr(ino.0, set).await },
            move |r| match r {
                Ok(a) => reply.attr(&ttl, &this(&a)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        self.spawn_entry(
            req,
            "mkdir",
            async move { fs.mkdir(parent.0, &name, mode).await },
            reply,
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.spawn_empty(
            req,
            "unlink",
            async move { fs.unlink(parent.0, &name).await },
            reply,
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.spawn_empty(
            req,
            "rmdir",
            async move { fs.rmdir(parent.0, &name).await },
            reply,
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _t: &std::path::Path,
        reply: ReplyEntry,
    ) {
        // An artifact holds bytes: links have no place in one.
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let (Some(name), Some(newname)) = (name_str(name), name_str(newname)) else {
            return reply.error(Errno::ENOENT);
        };
        let fs = self.fs.clone();
        self.spawn_empty(
            req,
            "rename",
            async move { fs.rename(parent.0, &name, newparent.0, &newname).await },
            reply,
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let Some(newname) = name_str(newname) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        self.spawn_entry(
            req,
            "link",
            async move { fs.link(ino.0, newparent.0, &newname).await },
            reply,
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let fs = self.fs.clone();
        let ttl = self.settings.ttl;
        let this = self.attr_maker();
        self.spawn(
            req,
            "create",
            self.settings.op_timeout,
            async move { fs.create(parent.0, &name, mode).await },
            move |r| match r {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &this(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            },
        );
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        // Staged files are on local disk: written here, in order, without
        // a trip through the runtime.
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => {
                tracing::warn!(op = "write", "{e}");
                reply.error(Errno::from_i32(e.errno()))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e.errno())),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::EINVAL);
        };
        let value = value.to_vec();
        let fs = self.fs.clone();
        self.spawn_empty(
            req,
            "setxattr",
            async move { fs.setxattr(ino.0, &name, &value).await },
            reply,
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_str(name) else {
            return reply.error(Errno::ENODATA);
        };
        let fs = self.fs.clone();
        self.spawn_empty(
            req,
            "removexattr",
            async move { fs.removexattr(ino.0, &name).await },
            reply,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 1 << 20, 255, 1 << 20);
    }
}

impl FuseFs {
    /// The kernel forgot `n` references to each inode: the table, the
    /// listings kept for folders now gone, and the allocator follow.
    fn forgotten(&self, each: &[(u64, u64)]) {
        self.fs.forget_many(each);
        for (ino, _) in each {
            if !self.fs.knows(*ino) {
                self.dirs.forget(*ino);
            }
        }
        let known = self.fs.inode_count();
        tracing::debug!(forgotten = each.len(), known, "the kernel forgot inodes");
        self.trim.after_forget(known);
    }

    fn attr_maker(&self) -> impl Fn(&Attr) -> FileAttr + Send + 'static {
        let proto = FuseFs {
            fs: self.fs.clone(),
            rt: self.rt.clone(),
            settings: self.settings.clone(),
            passthrough: self.passthrough.clone(),
            requests: self.requests.clone(),
            pages: self.pages.clone(),
            dirs: self.dirs.clone(),
            trim: self.trim.clone(),
            no_opendir: self.no_opendir,
            notifier: self.notifier.clone(),
        };
        move |a| proto.file_attr(a)
    }
}

fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

/// The time `t` as seconds since the epoch (for tests and the CLI).
pub fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The listing a read of folder `ino` at `offset` reads from: the one kept
/// for its handle, or a fresh one (kept for the next reads).
async fn listing_of(
    fs: &Fs,
    dirs: &Dirs,
    ino: u64,
    fh: u64,
    offset: u64,
) -> Result<dirs::Listing, fs::Error> {
    if fh == 0 {
        // Opened by the kernel alone (see `dirs`).
        if let Some(l) = dirs.kept_by_ino(ino, offset) {
            return Ok(l);
        }
        let l = Arc::new(fs.listing(ino).await?);
        dirs.keep_by_ino(ino, l.clone());
        return Ok(l);
    }
    if let Some(l) = dirs.kept(fh, offset) {
        return Ok(l);
    }
    let l = Arc::new(fs.listing(ino).await?);
    dirs.keep(fh, ino, l.clone());
    Ok(l)
}

/// Runs `fut` to its end here, on the FUSE thread, when it can finish
/// without waiting (a warm lookup, getattr or listing: nearly all of a warm
/// `find`), and hands it to the runtime otherwise. A task for every
/// request cost two thread wake-ups each, most of a warm walk's time.
///
/// The first poll uses a waker that does nothing; a future still pending
/// after it is spawned, and the runtime polls a new task at once, so it
/// registers its real waker before anything can be missed.
///
/// True when the request goes on in a task (it is answered later).
fn run_or_spawn<F>(rt: &tokio::runtime::Handle, fut: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    let polled = {
        let _in_runtime = rt.enter();
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fut.as_mut().poll(&mut cx).is_pending()
        }))
    };
    match polled {
        Ok(true) => {
            rt.spawn(fut);
            true
        }
        Ok(false) => false,
        // The future (and the reply in it) is dropped: fuser answers EIO.
        Err(_) => {
            tracing::error!("a FUSE operation panicked; answered with EIO");
            false
        }
    }
}

/// Gives freed memory back to the system once the kernel has forgotten
/// most of what the inode table held (`echo 2 > /proc/sys/vm/drop_caches`,
/// or memory pressure): the allocator keeps freed pages otherwise, and the
/// daemon's resident size would stay at the largest walk it ever served.
#[derive(Default)]
struct Trim {
    /// The most inodes known since the last trim.
    peak: std::sync::atomic::AtomicUsize,
}

impl Trim {
    /// Below this many inodes freed, trimming is not worth its time.
    const MIN_FREED: usize = 4096;

    fn after_forget(&self, known: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let peak = self.peak.fetch_max(known, Relaxed).max(known);
        if peak >= known * 2 && peak - known >= Self::MIN_FREED {
            self.peak.store(known, Relaxed);
            // SAFETY: malloc_trim only releases free heap pages; it takes
            // the allocator's own locks and touches no memory of ours.
            #[cfg(target_env = "gnu")]
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

/// Tells the kernel to drop what it caches of `inos` (pages, attributes,
/// a folder's listing), from a thread of its own: the kernel may hold
/// locks until the request that found them out is answered.
fn drop_cached_later(notifier: &std::sync::OnceLock<fuser::Notifier>, inos: Vec<u64>) {
    let Some(n) = notifier.get().filter(|_| !inos.is_empty()) else {
        return;
    };
    let n = n.clone();
    std::thread::spawn(move || {
        for ino in inos {
            if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
                tracing::debug!("cannot drop the cached data of inode {ino}: {e}");
            }
        }
    });
}
