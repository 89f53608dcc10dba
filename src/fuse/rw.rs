//! The kernel side of a mounted dot's working state: fuser requests
//! translated into calls on `mount::working::Working`, each holding its
//! barrier shared, so a commit or a switch sees no request half done.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};

use super::{
    config, damage_note, file_attr, name_list, reply_items, reply_xattr, Log, Mounted, READAHEAD,
};
use crate::mount::working::Working;

/// What the kernel may cache of names and attributes; a switch (reset,
/// checkout) also invalidates what it holds.
pub(super) const TTL: Duration = Duration::from_secs(1);

/// Mounts `working` read-write at `at`, named `name` in the mount table.
pub fn mount_working(
    working: Arc<Working>,
    upper: &Path,
    at: &Path,
    name: &str,
    log: Log,
) -> io::Result<Mounted> {
    let fs = RwFs {
        w: working,
        upper: upper.to_path_buf(),
        log,
        drops_suid: false,
    };
    let session = fuser::Session::new(fs, at, &config(name, false))?.spawn()?;
    Ok(Mounted {
        session: Some(session),
        at: at.to_path_buf(),
    })
}

struct RwFs {
    w: Arc<Working>,
    upper: std::path::PathBuf,
    log: Log,
    /// The kernel left dropping set-ID bits to the daemon
    /// (`FUSE_HANDLE_KILLPRIV_V2`, 16.4).
    drops_suid: bool,
}

impl RwFs {
    /// After a truncation or fallocate by `req`'s process: drops the
    /// file's set-ID bits as a local filesystem does for a process without
    /// CAP_FSETID. The kernel says which for writes only; for these the
    /// process's /proc status does. Whether any bit went.
    fn dropped_suid(&self, req: &Request, ino: INodeNo) -> io::Result<bool> {
        match self.drops_suid && !crate::mount::has_fsetid(req.pid()) {
            true => self.w.drop_suid(ino.0, &|g| in_group(req, g)),
            false => Ok(false),
        }
    }

    /// Answers with `a`'s entry, noting when: the kernel keeps it `TTL`
    /// from its answer, which a switch needs to know (16.7).
    fn entry(&self, reply: ReplyEntry, a: &crate::mount::Attr) {
        reply.entry(&TTL, &file_attr(a), Generation(0));
        self.w.entry_given(a.ino);
    }

    /// fsync and fsyncdir: what to flush is found under the barrier and
    /// flushed outside it, so that a commit's freeze never waits for a
    /// flush (16.5).
    fn make_durable(&self, reply: ReplyEmpty, ino: INodeNo, datasync: bool) {
        let found = {
            let _s = self.w.shared();
            self.w.to_flush(ino.0, datasync)
        };
        // Test hook (debug builds, the daemon's own environment): a flush
        // this much slower, as of a file with many dirty pages.
        if cfg!(debug_assertions) {
            if let Some(ms) = std::env::var("DOT_TEST_FLUSH_PAUSE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        match found.and_then(|f| self.w.overlay.flush(f)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn errno(&self, e: io::Error) -> Errno {
        match e.raw_os_error() {
            Some(n) => Errno::from_i32(n),
            None => {
                (self.log)(damage_note("mount", &e.to_string()));
                Errno::EIO
            }
        }
    }
}

fn in_group(req: &Request, group: u32) -> bool {
    crate::mount::in_group(req.pid(), req.gid(), group)
}

fn ns(t: TimeOrNow) -> i64 {
    let t = match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    };
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

impl Filesystem for RwFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(READAHEAD);
        // Else the kernel asks for security.capability before every write.
        self.drops_suid = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _s = self.w.shared();
        match self.w.lookup(parent.0, name.as_bytes()) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.w.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _s = self.w.shared();
        match self.w.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _s = self.w.changing();
        let set = self.w.setattr(ino.0, mode, uid, gid, size, mtime.map(ns));
        match set.and_then(|a| match size.is_some() && self.dropped_suid(req, ino)? {
            true => self.w.getattr(ino.0),
            false => Ok(a),
        }) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _s = self.w.shared();
        match self.w.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _s = self.w.changing();
        let mode = mode & !umask;
        match self.w.mknod(
            parent.0,
            name.as_bytes(),
            mode,
            u64::from(rdev),
            req.uid(),
            req.gid(),
        ) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _s = self.w.changing();
        match self.w.mkdir(
            parent.0,
            name.as_bytes(),
            mode & !umask,
            req.uid(),
            req.gid(),
        ) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = self.w.changing();
        match self.w.unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = self.w.changing();
        match self.w.rmdir(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _s = self.w.changing();
        match self.w.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            req.uid(),
            req.gid(),
        ) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _s = self.w.changing();
        match self.w.rename_with(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Everything changes through this mount (every name of a file is
        // one inode), and a switch invalidates what the kernel cached: its
        // pages stay valid across opens.
        self.w.opened(ino.0);
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _s = self.w.changing();
        match self.w.link(ino.0, newparent.0, newname.as_bytes()) {
            Ok(a) => self.entry(reply, &a),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _s = self.w.changing();
        let done = self.w.fallocate(ino.0, offset, length, mode);
        match done.and_then(|()| self.dropped_suid(req, ino).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        // The kernel sends only SEEK_DATA and SEEK_HOLE.
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let _s = self.w.shared();
        match self.w.seek(ino.0, off, data) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(self.errno(e)),
        }
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
        let _s = self.w.shared();
        match self.w.read(ino.0, offset, size as usize) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = self.w.shared();
        // The kernel says whether the writer has CAP_FSETID.
        let kill = self.drops_suid && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let in_group = |g| in_group(req, g);
        let drop_suid = kill.then_some(&in_group as &dyn Fn(u32) -> bool);
        match self.w.write(ino.0, offset, data, drop_suid) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(self.errno(e)),
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

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.w.released(ino.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.make_durable(reply, ino, datasync);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _s = self.w.shared();
        match self.w.readdir(ino.0, offset, 512) {
            Ok(items) => reply_items(reply, items),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.make_durable(reply, ino, false);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.upper) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(self.errno(e.into())),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _s = self.w.changing();
        match self.w.set_xattr(ino.0, name.as_bytes(), value) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _s = self.w.shared();
        match self.w.xattrs(ino.0) {
            Ok(x) => match x.iter().find(|(k, _)| k == name.as_bytes()) {
                Some((_, v)) => reply_xattr(reply, v, size),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _s = self.w.shared();
        match self.w.xattrs(ino.0) {
            Ok(x) => reply_xattr(reply, &name_list(x.into_iter().map(|(k, _)| k)), size),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _s = self.w.changing();
        match self.w.remove_xattr(ino.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _s = self.w.changing();
        match self.w.create(
            parent.0,
            name.as_bytes(),
            mode & !umask,
            req.uid(),
            req.gid(),
        ) {
            Ok(a) => {
                self.w.opened(a.ino);
                reply.created(
                    &TTL,
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::FOPEN_KEEP_CACHE,
                );
                self.w.entry_given(a.ino);
            }
            Err(e) => reply.error(self.errno(e)),
        }
    }
}
