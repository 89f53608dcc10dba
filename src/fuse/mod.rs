//! The kernel side of a view (docs/design.md 16.1, 16.3): fuser requests
//! translated into calls on `mount::View`, answers and errors translated
//! back. No policy lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request, SessionACL,
};

use crate::mount::overlay::Change;
use crate::mount::working::{Dropping, Stale};
use crate::mount::{Attr, Fault, View};
use crate::tree::dir::EntryKind;

/// A view never changes: the kernel may keep what it learns.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// Threads serving one mount's requests: one per core, and one more to
/// serve while a request waits for the disk (an fsync). Measured on two
/// cores under pgbench -c 4 (design 16.10): 3 threads gave 10% more TPS
/// than 4 and 3% more than 2; 8 gave about what 2 did.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get().saturating_add(1).min(16))
}

mod rw;
pub use rw::mount_working;

/// A mount; dropping it unmounts.
pub struct Mounted {
    session: Option<BackgroundSession>,
    pub at: PathBuf,
}

impl Mounted {
    /// Tells the kernel to forget what it cached of `stale` (inode,
    /// parent, name) after the state under a read-write mount was
    /// switched: names and attributes now, and pages now for files open
    /// at the switch; the pages of the others on a thread of its own,
    /// telling `dropping` as each is done. The name of a file no program
    /// has open that changed wholesale goes on that thread too, last,
    /// when the kernel's entry for it has lapsed: the kernel asks again
    /// before it uses such an entry, and dropping the entry drops the
    /// file's pages with it, inside the notification (16.7).
    pub fn invalidate(&self, stale: Vec<Stale>, dropping: Arc<Dropping>) {
        let Some(s) = &self.session else {
            dropping.done_all(&stale);
            return;
        };
        let n = s.notifier();
        let (mut pages, mut names) = (Vec::new(), Vec::new());
        for st in stale {
            if st.later && st.change == Change::Whole && lapsed(st.given) {
                // Renumbered, and the kernel holds no entry it would use
                // without asking: nothing can open it, so no open waits
                // for it (dropping its name takes the lock of its
                // directory, which a request waiting to be served may
                // hold).
                dropping.done(st.ino);
                names.push(st);
                continue;
            }
            forget_names(&n, &st);
            match st.later {
                true => pages.push(st),
                false => drop_pages(&n, &st),
            }
        }
        let later = Mutex::new(Some(Later {
            n,
            pages,
            names,
            dropping,
        }));
        let later = Arc::new(later);
        let on_thread = Arc::clone(&later);
        let spawned = std::thread::Builder::new()
            .name("dot-drop-pages".into())
            .spawn(move || Later::run(&on_thread));
        if spawned.is_err() {
            // No thread to be had: the switch waits for it instead.
            Later::run(&later);
        }
    }
}

/// Whether the kernel's entry given at `given` has lapsed: it keeps one
/// `rw::TTL` from the answer, rounded up to its clock's tick.
fn lapsed(given: Option<std::time::Instant>) -> bool {
    given.is_some_and(|t| t.elapsed() > rw::TTL + Duration::from_millis(50))
}

/// What a switch does after it returned: drop the pages of `pages`,
/// then the names of `names`.
struct Later {
    n: fuser::Notifier,
    pages: Vec<Stale>,
    names: Vec<Stale>,
    dropping: Arc<Dropping>,
}

impl Later {
    fn run(later: &Mutex<Option<Later>>) {
        let Some(l) = later.lock().unwrap_or_else(PoisonError::into_inner).take() else {
            return;
        };
        // Test hook (debug builds, the daemon's own environment): drop
        // them this much later, so tests can open the files meanwhile.
        if cfg!(debug_assertions) {
            if let Some(ms) = std::env::var("DOT_TEST_DROP_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        for st in &l.pages {
            drop_pages(&l.n, st);
            l.dropping.done(st.ino);
        }
        // Last: these may wait for requests, and opens may wait for the
        // pages above.
        for st in &l.names {
            forget_names(&l.n, st);
            drop_pages(&l.n, st);
        }
    }
}

/// Has the kernel forget the entry of what `st` changed wholesale, and
/// its attributes. What stays a file or a directory keeps its name and
/// inode: only its attributes go (its pages: `drop_pages`).
fn forget_names(n: &fuser::Notifier, st: &Stale) {
    if st.change == Change::Whole && st.ino != crate::mount::ROOT {
        let _ = n.inval_entry(INodeNo(st.parent), OsStr::from_bytes(&st.name));
    }
    let _ = n.inval_inode(INodeNo(st.ino), -1, 0);
}

/// Has the kernel drop the cached pages of what `st` changed.
fn drop_pages(n: &fuser::Notifier, st: &Stale) {
    let ino = INodeNo(st.ino);
    match &st.change {
        Change::Kept(ranges) => {
            for &(a, b) in ranges {
                let (Ok(off), len) = (i64::try_from(a), i64::try_from(b - a)) else {
                    continue;
                };
                // A length of 0: to the end.
                let _ = n.inval_inode(ino, off, len.unwrap_or(0));
            }
        }
        Change::Whole => {
            let _ = n.inval_inode(ino, 0, -1);
        }
    }
}

impl Mounted {
    /// Has the kernel forget what it knows of `name` in directory
    /// `parent` (a name that did not exist and now does) and the
    /// directory's listing.
    pub fn forget_name(&self, parent: u64, name: &[u8]) {
        let Some(s) = &self.session else { return };
        let n = s.notifier();
        let _ = n.inval_entry(INodeNo(parent), OsStr::from_bytes(name));
        let _ = n.inval_inode(INodeNo(parent), 0, -1);
    }
}

impl Drop for Mounted {
    /// Detaches the mount without waiting: its threads end once the
    /// kernel lets the session go (at once when nothing uses the view;
    /// `dot unmount` makes sure of that), or when the daemon exits.
    fn drop(&mut self) {
        detach_stale(&self.at);
        if let Some(session) = self.session.take() {
            std::mem::forget(session);
        }
    }
}

/// Mounts `view` read-only at `at`, named `name` in the mount table.
pub fn mount(view: Arc<View>, at: &Path, name: &str, log: Log) -> std::io::Result<Mounted> {
    let config = config(name, true);
    let fs = Fs { view, log };
    let session = fuser::Session::new(fs, at, &config)?.spawn()?;
    widen_readahead(at);
    Ok(Mounted {
        session: Some(session),
        at: at.to_path_buf(),
    })
}

/// Mount options for a mount called `name`: nodev, nosuid, permissions
/// checked by the kernel, usable by any user they allow (PostgreSQL runs
/// as postgres; without root that needs user_allow_other in
/// /etc/fuse.conf), served by several threads.
fn config(name: &str, read_only: bool) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("dot:{name}")),
        MountOption::Subtype("dot".into()),
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    config.acl = if rustix::process::geteuid().is_root() {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(threads());
    config.clone_fd = true;
    config
}

/// How far the kernel may read ahead of a sequential reader of a mount.
const READAHEAD: u32 = 1 << 20;

/// Has the kernel read as far ahead on the view at `at` (just made,
/// served) as the daemon asks at init (`READAHEAD`): it caps a FUSE
/// mount's read-ahead at its default for devices, 128 KiB, whatever the
/// daemon asks, and only the mount's entry in /sys raises it (root;
/// design 16.2). Not for a mounted dot: pgbench lost TPS with it.
/// Without root it stays as it is.
fn widen_readahead(at: &Path) {
    let Ok(st) = rustix::fs::stat(at) else {
        return;
    };
    let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let _ = std::fs::write(
        format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"),
        (READAHEAD / 1024).to_string(),
    );
}

/// Detaches whatever is mounted at `at` (a view a killed daemon left,
/// which answers nothing). Errors are ignored: there may be nothing.
pub fn detach_stale(at: &Path) {
    let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH);
}

/// Where the file system's own complaints go (the daemon's log).
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

struct Fs {
    view: Arc<View>,
    log: Log,
}

impl Fs {
    fn errno(&self, f: Fault) -> Errno {
        match f {
            Fault::NoEntry => Errno::ENOENT,
            Fault::NotDir => Errno::ENOTDIR,
            Fault::IsDir => Errno::EISDIR,
            Fault::NotLink => Errno::EINVAL,
            Fault::NoAttr => Errno::NO_XATTR,
            Fault::Damaged(why) => {
                let what = format!("view of commit {}", self.view.commit.short());
                (self.log)(damage_note(&what, &why));
                Errno::EIO
            }
        }
    }
}

/// The log line for damage met serving `what`: says what to run.
pub(crate) fn damage_note(what: &str, why: &str) -> String {
    if why.contains("dot fsck") {
        format!("{what}: {why}")
    } else {
        format!("{what}: {why}; run dot fsck")
    }
}

pub(crate) fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::CharDevice => FileType::CharDevice,
        EntryKind::BlockDevice => FileType::BlockDevice,
    }
}

pub(crate) fn file_attr(a: &Attr) -> FileAttr {
    let secs = a.mtime_ns.div_euclid(1_000_000_000);
    let nanos = a.mtime_ns.rem_euclid(1_000_000_000) as u32;
    let mtime = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        flags: 0,
        blksize: 64 * 1024,
    }
}

/// Answers a readdir with as many of `items` as its buffer holds.
pub(crate) fn reply_items(mut reply: ReplyDirectory, items: Vec<crate::mount::Item>) {
    for item in items {
        let name = OsStr::from_bytes(&item.name);
        if reply.add(INodeNo(item.ino), item.next, file_type(item.kind), name) {
            break;
        }
    }
    reply.ok();
}

/// Attribute names as listxattr returns them: each followed by a NUL.
pub(crate) fn name_list(names: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut list = Vec::new();
    for n in names {
        list.extend_from_slice(&n);
        list.push(0);
    }
    list
}

/// Answers an xattr request as the kernel asks: size 0 means "how big".
pub(crate) fn reply_xattr(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_readahead(READAHEAD);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.view.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.view.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Pages read once stay valid: the content never changes.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.view.read(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        match self.view.readdir(ino.0, offset, 256) {
            Ok(items) => reply_items(reply, items),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 64 * 1024, 255, 64 * 1024);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.view.xattr(ino.0, name.as_bytes()) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(f) => reply.error(self.errno(f)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.view.xattr_names(ino.0) {
            Ok(names) => reply_xattr(reply, &name_list(names), size),
            Err(f) => reply.error(self.errno(f)),
        }
    }
}
