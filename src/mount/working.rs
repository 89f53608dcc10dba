//! A mounted dot's working state as a file system serves it: inode
//! numbers over an `Overlay`'s paths, the barrier that holds writes while a
//! commit or a switch happens, and the count of open files (docs/design.md
//! 16.6, 16.7). `crate::fuse` translates.

use std::collections::HashMap;
use std::time::Instant;

use super::inodes::{Inodes, DETACHED};
use std::io;
use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use super::overlay::{Change, Flush, Overlay, Stat, ORPHANS};
use super::{Attr, Item, ROOT, SET_GID, SET_UID};
use crate::repo::DEFAULT_SUBDOT;
use crate::tree::dir::EntryKind;

/// Where an inode is: the root listing subdots, or a path in a subdot.
enum Place {
    Subdots,
    In(String, Vec<Vec<u8>>),
}

/// An inode the kernel holds that a switch changed, and how.
pub struct Stale {
    pub ino: u64,
    pub parent: u64,
    pub name: Vec<u8>,
    pub change: Change,
    /// When the kernel was last given its entry (`Working::entry_given`);
    /// None when never since it was numbered.
    pub given: Option<Instant>,
    /// No file had it open at the switch: its cached pages are dropped
    /// after the switch returns, and opening it waits for that
    /// (`Dropping`).
    pub later: bool,
}

/// Inodes whose cached pages the kernel is still being told to drop after
/// a switch, each with how many switches still drop them (docs/design.md
/// 16.7). Dropping the pages of large files costs milliseconds per 10
/// MiB cached, which a switch need not wait for: nothing reads a file's
/// pages without opening it first, and an open of one of these waits.
#[derive(Default)]
pub struct Dropping {
    left: Mutex<HashMap<u64, u32>>,
    gone: Condvar,
}

impl Dropping {
    fn left(&self) -> MutexGuard<'_, HashMap<u64, u32>> {
        self.left.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `ino`'s pages are dropped (or the kernel refused to).
    pub fn done(&self, ino: u64) {
        let mut left = self.left();
        if let Some(n) = left.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                left.remove(&ino);
                self.gone.notify_all();
            }
        }
    }

    /// What a switch dropped later is dropped (or is not, the mount being
    /// gone).
    pub fn done_all(&self, stale: &[Stale]) {
        for st in stale.iter().filter(|st| st.later) {
            self.done(st.ino);
        }
    }

    /// Waits until nothing is left to drop of `ino`.
    fn wait(&self, ino: u64) {
        let mut left = self.left();
        while left.contains_key(&ino) {
            left = self.gone.wait(left).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

pub struct Working {
    pub overlay: Overlay,
    /// Whether the root is the default subdot's top (else it lists
    /// subdots).
    single: bool,
    /// Each with when the kernel was last given its entry.
    inodes: Mutex<Inodes<Option<Instant>>>,
    /// Every request that reads or changes the state holds it shared; a
    /// commit or a switch holds it alone.
    barrier: RwLock<()>,
    /// Files open now, by inode.
    open: Mutex<HashMap<u64, u64>>,
    dropping: Arc<Dropping>,
    /// The inode given to each upper file with several names, by its
    /// device and inode there: every name of it is that one inode.
    linked: Mutex<HashMap<(u64, u64), u64>>,
    /// Files whose last name went while they were open: kept as
    /// `ORPHANS`/ino until their last close.
    orphans: Mutex<std::collections::HashSet<u64>>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// A name the kernel hands over is one path component; anything else
/// (which it never sends) must not reach the upper directory's paths.
fn check_name(name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(errno(libc::EINVAL));
    }
    Ok(())
}

impl Working {
    pub fn new(overlay: Overlay) -> Working {
        let subs = overlay.subdots();
        let single = subs.is_empty() || (subs.len() == 1 && subs[0] == DEFAULT_SUBDOT);
        Working {
            overlay,
            single,
            inodes: Mutex::new(Inodes::new(None)),
            barrier: RwLock::new(()),
            open: Mutex::new(HashMap::new()),
            dropping: Arc::default(),
            linked: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Default::default()),
        }
    }

    fn orphans(&self) -> MutexGuard<'_, std::collections::HashSet<u64>> {
        self.orphans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `remove`, which takes the name `name` in `parent` (`rel` of
    /// `sub`) away: when that is the last name of a file programs have
    /// open, the file is kept for them until they close it
    /// (`Overlay::orphan`).
    fn removing(
        &self,
        parent: u64,
        name: &[u8],
        (sub, rel): (&str, &[&[u8]]),
        remove: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let last = {
            let inodes = self.inodes();
            inodes
                .named(parent, name)
                .filter(|&ino| inodes.get(ino).is_some_and(|i| i.aliases.is_empty()))
        };
        let open = last.filter(|ino| {
            self.open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(ino)
        });
        let kept = match open {
            Some(ino) if self.overlay.orphan(sub, rel, ino)? => Some(ino),
            _ => None,
        };
        match (remove(), kept) {
            (Err(e), Some(ino)) => {
                let _ = self.overlay.drop_orphan(ino);
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), kept) => {
                self.orphans().extend(kept);
                Ok(())
            }
        }
    }

    /// Whether the mount's root is the one default subdot's top
    /// directory (else it lists subdots).
    pub fn single(&self) -> bool {
        self.single
    }

    fn inodes(&self) -> MutexGuard<'_, Inodes<Option<Instant>>> {
        self.inodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by every request.
    pub fn shared(&self) -> RwLockReadGuard<'_, ()> {
        self.barrier.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by every request that changes names or attributes: also
    /// waits while a commit builds what showed at its freeze (writes of
    /// data go on meanwhile).
    pub fn changing(&self) -> RwLockReadGuard<'_, ()> {
        loop {
            let s = self.shared();
            if !self.overlay.is_frozen() {
                return s;
            }
            drop(s);
            self.overlay.wait_thawed();
        }
    }

    /// Held by a commit or a switch: no request runs meanwhile.
    pub fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        self.barrier.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn place(&self, ino: u64) -> io::Result<Place> {
        if self.orphans().contains(&ino) {
            return Ok(Place::In(
                ORPHANS.into(),
                vec![ino.to_string().into_bytes()],
            ));
        }
        let inodes = self.inodes();
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let i = inodes.get(at).ok_or_else(|| errno(libc::ENOENT))?;
            names.push(i.name.clone());
            at = i.parent;
        }
        names.reverse();
        if self.single {
            return Ok(Place::In(DEFAULT_SUBDOT.into(), names));
        }
        let mut names = names.into_iter();
        Ok(match names.next() {
            None => Place::Subdots,
            Some(sub) => Place::In(
                String::from_utf8(sub).map_err(|_| errno(libc::ENOENT))?,
                names.collect(),
            ),
        })
    }

    /// Runs `f` on the subdot and path of `ino`.
    fn on<R>(&self, ino: u64, f: impl FnOnce(&str, &[&[u8]]) -> io::Result<R>) -> io::Result<R> {
        let (sub, path) = self.path(ino)?;
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        f(&sub, &parts)
    }

    fn path(&self, ino: u64) -> io::Result<(String, Vec<Vec<u8>>)> {
        match self.place(ino)? {
            Place::In(sub, path) => Ok((sub, path)),
            Place::Subdots => Err(errno(libc::EPERM)),
        }
    }

    fn attr(ino: u64, s: &Stat) -> Attr {
        Attr {
            ino,
            kind: s.kind,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            mtime_ns: s.mtime_ns,
            size: s.size,
            rdev: s.rdev,
            nlink: if s.kind == EntryKind::Dir {
                2
            } else {
                s.links.min(u64::from(u32::MAX)) as u32
            },
        }
    }

    pub fn getattr(&self, ino: u64) -> io::Result<Attr> {
        match self.place(ino)? {
            Place::Subdots => Ok(Attr::subdots(ino, self.overlay.subdots().len())),
            Place::In(sub, path) => {
                let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                let mut s = self
                    .overlay
                    .stat(&sub, &parts)?
                    .ok_or_else(|| errno(libc::ENOENT))?;
                if sub == ORPHANS {
                    // Not counting its name among the orphans.
                    s.links = s.links.saturating_sub(1);
                }
                Ok(Self::attr(ino, &s))
            }
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> io::Result<Attr> {
        check_name(name)?;
        match self.place(parent)? {
            Place::Subdots => {
                if !self.overlay.subdots().iter().any(|s| s.as_bytes() == name) {
                    return Err(errno(libc::ENOENT));
                }
                let ino = self.inodes().remember(parent, name, || None);
                self.getattr(ino)
            }
            Place::In(sub, mut path) => {
                path.push(name.to_vec());
                let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                let s = self
                    .overlay
                    .stat(&sub, &parts)?
                    .ok_or_else(|| errno(libc::ENOENT))?;
                Ok(Self::attr(self.name_inode(parent, name, s.file), &s))
            }
        }
    }

    /// The inode for `name` in `parent`, one more lookup counted: the one
    /// its file already has when it is a further name (`file`) of it.
    fn name_inode(&self, parent: u64, name: &[u8], file: Option<(u64, u64)>) -> u64 {
        let mut inodes = self.inodes();
        let Some(id) = file.filter(|_| inodes.named(parent, name).is_none()) else {
            return inodes.remember(parent, name, || None);
        };
        let mut linked = self.linked.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&ino) = linked.get(&id) {
            if inodes.get(ino).is_some_and(|i| i.parent != DETACHED) {
                inodes.alias(ino, parent, name);
                return ino;
            }
        }
        let ino = inodes.remember(parent, name, || None);
        linked.insert(id, ino);
        ino
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes().forget(ino, n);
    }

    /// The kernel was just given the entry of `ino` (a lookup's or a
    /// create's answer): it may use that entry without asking for as
    /// long as the answer said.
    pub fn entry_given(&self, ino: u64) {
        if let Some(i) = self.inodes().get_mut(ino) {
            i.value = Some(Instant::now());
        }
    }

    fn child(&self, parent: u64, name: &[u8]) -> io::Result<(String, Vec<Vec<u8>>)> {
        check_name(name)?;
        let (sub, mut path) = self.path(parent)?;
        path.push(name.to_vec());
        Ok((sub, path))
    }

    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> io::Result<Vec<Item>> {
        let listing: Vec<(Vec<u8>, EntryKind)> = match self.place(ino)? {
            Place::Subdots => self
                .overlay
                .subdots()
                .into_iter()
                .map(|s| (s.into_bytes(), EntryKind::Dir))
                .collect(),
            Place::In(sub, path) => {
                let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
                self.overlay.list(&sub, &parts)?
            }
        };
        let parent = self.inodes().get(ino).map_or(ROOT, |i| i.parent);
        let mut out = Vec::new();
        let all = [
            (b".".to_vec(), EntryKind::Dir),
            (b"..".to_vec(), EntryKind::Dir),
        ]
        .into_iter()
        .chain(listing);
        for (i, (name, kind)) in all.enumerate().skip(offset as usize).take(max) {
            let ino = match i {
                0 => ino,
                1 => parent,
                _ => self.inodes().named(ino, &name).unwrap_or(u64::MAX),
            };
            out.push(Item {
                ino,
                kind,
                name,
                next: i as u64 + 1,
            });
        }
        Ok(out)
    }

    pub fn read(&self, ino: u64, off: u64, len: usize) -> io::Result<Vec<u8>> {
        self.on(ino, |sub, rel| self.overlay.read(sub, rel, off, len))
    }

    /// Writes `data` at `off` (`Overlay::write`).
    pub fn write(
        &self,
        ino: u64,
        off: u64,
        data: &[u8],
        drop_suid: Option<&dyn Fn(u32) -> bool>,
    ) -> io::Result<()> {
        self.on(ino, |sub, rel| {
            self.overlay.write(sub, rel, off, data, drop_suid)
        })
    }

    /// `Overlay::drop_suid`.
    pub fn drop_suid(&self, ino: u64, in_group: &dyn Fn(u32) -> bool) -> io::Result<bool> {
        self.on(ino, |sub, rel| self.overlay.drop_suid(sub, rel, in_group))
    }

    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        self.on(ino, |sub, rel| self.overlay.readlink(sub, rel))
    }

    /// Creates `name` in `parent` with `make`, owned by `uid`:`gid`, with
    /// permission bits `mode` (not for symlinks).
    fn make(
        &self,
        parent: u64,
        name: &[u8],
        uid: u32,
        gid: u32,
        mode: Option<u32>,
        make: impl FnOnce(&str, &[&[u8]]) -> io::Result<()>,
    ) -> io::Result<Attr> {
        let (sub, path) = self.child(parent, name)?;
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        make(&sub, &parts)?;
        if crate::workspace::fsmeta::is_root() {
            self.overlay.set_owner(&sub, &parts, Some(uid), Some(gid))?;
            // A chown drops set-ID bits.
            if let Some(m) = mode.filter(|m| m & (SET_UID | SET_GID) != 0) {
                self.overlay.set_mode(&sub, &parts, m)?;
            }
        }
        let ino = self.inodes().remember(parent, name, || None);
        self.getattr(ino)
    }

    /// The group and permission bits of an entry made in `parent` by a
    /// process of group `gid` with `mode`: as on a local filesystem, a
    /// set-group-ID directory gives what is made in it its own group, and a
    /// directory made in it its set-group-ID bit too.
    fn inherit(&self, parent: u64, gid: u32, mode: u32, dir: bool) -> io::Result<(u32, u32)> {
        let p = self.getattr(parent)?;
        Ok(match p.mode & SET_GID != 0 {
            true if dir => (p.gid, mode | SET_GID),
            true => (p.gid, mode),
            false => (gid, mode),
        })
    }

    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Attr> {
        let (gid, mode) = self.inherit(parent, gid, mode, false)?;
        self.make(parent, name, uid, gid, Some(mode), |s, p| {
            self.overlay.create(s, p, mode)
        })
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Attr> {
        let (gid, mode) = self.inherit(parent, gid, mode, true)?;
        self.make(parent, name, uid, gid, Some(mode), |s, p| {
            self.overlay.mkdir(s, p, mode)
        })
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> io::Result<Attr> {
        let (gid, _) = self.inherit(parent, gid, 0, false)?;
        self.make(parent, name, uid, gid, None, |s, p| {
            self.overlay.symlink(s, p, target)
        })
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        uid: u32,
        gid: u32,
    ) -> io::Result<Attr> {
        let (gid, mode) = self.inherit(parent, gid, mode, false)?;
        self.make(parent, name, uid, gid, Some(mode), |s, p| {
            self.overlay.mknod(s, p, mode, rdev)
        })
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let (sub, path) = self.child(parent, name)?;
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        self.removing(parent, name, (&sub, &parts), || {
            self.overlay.unlink(&sub, &parts)
        })?;
        self.inodes().unname(parent, name);
        Ok(())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> io::Result<()> {
        let (sub, path) = self.child(parent, name)?;
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        self.overlay.rmdir(&sub, &parts)?;
        self.inodes().unname(parent, name);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        to_parent: u64,
        to_name: &[u8],
    ) -> io::Result<()> {
        let (sub, from) = self.child(parent, name)?;
        let (to_sub, to) = self.child(to_parent, to_name)?;
        if sub != to_sub {
            return Err(errno(libc::EXDEV));
        }
        let f: Vec<&[u8]> = from.iter().map(Vec::as_slice).collect();
        let t: Vec<&[u8]> = to.iter().map(Vec::as_slice).collect();
        // What it replaces goes (a name of its own file has an alias, so
        // nothing is kept for that).
        self.removing(to_parent, to_name, (&sub, &t), || {
            self.overlay.rename(&sub, &f, &t)
        })?;
        self.inodes().rename(parent, name, to_parent, to_name);
        Ok(())
    }

    /// rename(2) with its flags: RENAME_NOREPLACE fails when `to_name`
    /// exists, RENAME_EXCHANGE swaps the two.
    #[cfg(target_os = "linux")]
    pub fn rename_with(
        &self,
        parent: u64,
        name: &[u8],
        to_parent: u64,
        to_name: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        const NOREPLACE: u32 = libc::RENAME_NOREPLACE;
        const EXCHANGE: u32 = libc::RENAME_EXCHANGE;
        match flags {
            0 => self.rename(parent, name, to_parent, to_name),
            NOREPLACE => {
                let (sub, to) = self.child(to_parent, to_name)?;
                let t: Vec<&[u8]> = to.iter().map(Vec::as_slice).collect();
                if self.overlay.stat(&sub, &t)?.is_some() {
                    return Err(errno(libc::EEXIST));
                }
                self.rename(parent, name, to_parent, to_name)
            }
            EXCHANGE => {
                let (sub, a) = self.child(parent, name)?;
                let (to_sub, b) = self.child(to_parent, to_name)?;
                if sub != to_sub {
                    return Err(errno(libc::EXDEV));
                }
                let pa: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
                let pb: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
                self.overlay.exchange(&sub, &pa, &pb)?;
                self.inodes().exchange(parent, name, to_parent, to_name);
                Ok(())
            }
            _ => Err(errno(libc::EINVAL)),
        }
    }

    /// A further name `to_name` in `to_parent` for file `ino`.
    pub fn link(&self, ino: u64, to_parent: u64, to_name: &[u8]) -> io::Result<Attr> {
        let (sub, from) = self.path(ino)?;
        if sub == ORPHANS {
            // A removed file gets no name again (as without O_TMPFILE).
            return Err(errno(libc::ENOENT));
        }
        let (to_sub, to) = self.child(to_parent, to_name)?;
        if sub != to_sub {
            return Err(errno(libc::EXDEV));
        }
        let f: Vec<&[u8]> = from.iter().map(Vec::as_slice).collect();
        let t: Vec<&[u8]> = to.iter().map(Vec::as_slice).collect();
        self.overlay.link(&sub, &f, &t)?;
        let s = self
            .overlay
            .stat(&sub, &t)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        if let Some(id) = s.file {
            // The new name is this inode, as on a local file system.
            self.linked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, ino);
        }
        Ok(Self::attr(self.name_inode(to_parent, to_name, s.file), &s))
    }

    #[cfg(target_os = "linux")]
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, mode: i32) -> io::Result<()> {
        self.on(ino, |sub, rel| {
            self.overlay.fallocate(sub, rel, off, len, mode)
        })
    }

    /// lseek(2) with SEEK_DATA (`data`) or SEEK_HOLE; ENXIO past the end.
    pub fn seek(&self, ino: u64, off: u64, data: bool) -> io::Result<u64> {
        self.on(ino, |sub, rel| self.overlay.seek(sub, rel, off, data))?
            .ok_or_else(|| errno(libc::ENXIO))
    }

    /// chmod, chown, truncate and utimens, in that order.
    pub fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        mtime_ns: Option<i64>,
    ) -> io::Result<Attr> {
        let (sub, path) = self.path(ino)?;
        let parts: Vec<&[u8]> = path.iter().map(Vec::as_slice).collect();
        if let Some(m) = mode {
            self.overlay.set_mode(&sub, &parts, m)?;
        }
        if uid.is_some() || gid.is_some() {
            self.overlay.set_owner(&sub, &parts, uid, gid)?;
        }
        if let Some(n) = size {
            self.overlay.truncate(&sub, &parts, n)?;
        }
        if let Some(t) = mtime_ns {
            self.overlay.set_mtime(&sub, &parts, t)?;
        }
        self.getattr(ino)
    }

    /// What fsync(2), or fdatasync(2) with `datasync`, makes durable:
    /// found under the barrier, flushed (`Overlay::flush`) outside it.
    pub fn to_flush(&self, ino: u64, datasync: bool) -> io::Result<Flush> {
        self.on(ino, |sub, rel| self.overlay.to_flush(sub, rel, datasync))
    }

    pub fn xattrs(&self, ino: u64) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.on(ino, |sub, rel| self.overlay.xattrs(sub, rel))
    }

    pub fn set_xattr(&self, ino: u64, name: &[u8], value: &[u8]) -> io::Result<()> {
        self.on(ino, |sub, rel| {
            self.overlay.set_xattr(sub, rel, name, value)
        })
    }

    pub fn remove_xattr(&self, ino: u64, name: &[u8]) -> io::Result<()> {
        self.on(ino, |sub, rel| self.overlay.remove_xattr(sub, rel, name))
    }

    /// A file is opened: once the kernel has dropped what it cached of
    /// the file before the last switch.
    pub fn opened(&self, ino: u64) {
        self.dropping.wait(ino);
        *self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(ino)
            .or_default() += 1;
    }

    pub fn released(&self, ino: u64) {
        let orphan_closed = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            match open.get_mut(&ino) {
                Some(n) if *n <= 1 => {
                    open.remove(&ino);
                    self.orphans().remove(&ino)
                }
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        };
        // Removing a large file takes a while: not under the lock every
        // open takes.
        if orphan_closed {
            let _ = self.overlay.drop_orphan(ino);
        }
    }

    /// How many files are open on the mount now.
    pub fn open_files(&self) -> u64 {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// The inodes the kernel holds that `changes` (by path `sub/a/b`; all
    /// of them with None) touch, with how: what to invalidate after a
    /// switch.
    pub fn known_in(&self, changes: Option<&HashMap<String, Change>>) -> Vec<Stale> {
        self.known()
            .into_iter()
            .filter_map(|(ino, parent, name, given)| {
                let whole = Some(Stale {
                    ino,
                    parent,
                    name: name.clone(),
                    change: Change::Whole,
                    given,
                    later: false,
                });
                let Some(changes) = changes else { return whole };
                if ino == ROOT
                    || self
                        .inodes()
                        .get(ino)
                        .is_some_and(|i| !i.aliases.is_empty())
                {
                    // A file with several names: each may have changed.
                    return whole;
                }
                let Ok(Place::In(sub, path)) = self.place(ino) else {
                    return whole;
                };
                let mut p = sub;
                for c in path {
                    p.push('/');
                    p.push_str(&String::from_utf8_lossy(&c));
                }
                changes.get(&p).map(|c| Stale {
                    ino,
                    parent,
                    name,
                    change: c.clone(),
                    given,
                    later: false,
                })
            })
            .collect()
    }

    /// Under the barrier of a switch: the pages of what no file has open
    /// are dropped later (`Stale::later`); opening one waits until the
    /// returned `Dropping` is told they are gone.
    pub fn drop_later(&self, stale: &mut [Stale]) -> Arc<Dropping> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut left = self.dropping.left();
        for st in stale.iter_mut().filter(|st| !open.contains_key(&st.ino)) {
            st.later = true;
            *left.entry(st.ino).or_default() += 1;
        }
        self.dropping.clone()
    }

    /// After a switch: names whose entry changed wholesale get a new inode
    /// at their next lookup. The kernel may keep the old inode a while
    /// (until it forgets it), and a new entry of another kind under the
    /// old number would make it refuse the inode (EIO).
    pub fn renumber(&self, stale: &[Stale]) {
        let mut inodes = self.inodes();
        for st in stale {
            if st.ino != ROOT && st.change == Change::Whole {
                inodes.unname(st.parent, &st.name);
            }
        }
    }

    /// The inodes the kernel holds, once with each parent and name it was
    /// found under (for invalidating its caches), and when it was last
    /// given the entry.
    fn known(&self) -> Vec<(u64, u64, Vec<u8>, Option<Instant>)> {
        self.inodes()
            .all()
            .flat_map(|(ino, i)| {
                let given = i.value;
                std::iter::once((i.parent, i.name.clone()))
                    .chain(i.aliases.iter().cloned())
                    .map(move |(parent, name)| (ino, parent, name, given))
            })
            .collect()
    }
}
