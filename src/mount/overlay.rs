//! A dot's working state as a commit (the base) plus what was changed
//! since, kept in an upper directory on local disk (docs/design.md 16.4):
//! the library side of a read-write mount. Paths are relative to a
//! subdot's top, as byte components.
//!
//! The upper directory `upper/<subdot>/...` mirrors only what changed:
//!
//! - a directory there continues the base directory named by its
//!   `user.dot.origin` attribute (a tree id), or is new without it;
//! - a regular file with `user.dot.base` (a content reference, the base
//!   size and the limit below which base bytes show) is *partial*: its own
//!   bytes are the written blocks (allocated, found with SEEK_DATA), and
//!   its holes show the base below the limit and zeros above; without it
//!   the file is whole;
//! - an empty regular file with `user.dot.whiteout` hides a base entry.
//!
//! Writes to a partial file are whole blocks (the rest of a block is
//! filled from the base first), so every allocated block holds the true
//! content. Attributes under `user.dot.` are the overlay's own and are not
//! shown or committed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};

use rayon::prelude::*;

use crate::chunker::Chunker;
use crate::codec::{Reader, Writer};
use crate::id::{Id, TreeId};
use crate::store::Store;
use crate::tree::chunks::ContentRef;
use crate::tree::commit::{Root, Top};
use crate::tree::dir::{read_dir, write_dir, Content, DirEntry, EntryKind};
use crate::tree::read::{Cache, TreeReader, CACHE_BYTES};
use crate::tree::rechunk::{chunk_all, rechunk, RechunkError};
use crate::workspace::fsmeta::{self, read_xattrs, set_mtime};

use super::freeze::{Freeze, BLOCK};

const ORIGIN: &str = "user.dot.origin";
const BASE: &str = "user.dot.base";
const WHITEOUT: &str = "user.dot.whiteout";
const OWN_PREFIX: &[u8] = b"user.dot.";

/// The pseudo-subdot of files removed while open (`Overlay::orphan`):
/// not a subdot name (those never start with a dot), and never built.
pub const ORPHANS: &str = ".orphans";

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn damaged(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{e}"))
}

/// What a path shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub rdev: u64,
    /// Names the file has on the mount (hard links); 1 for what only the
    /// base holds, which records no links.
    pub links: u64,
    /// The upper file's device and inode when it has several names: what
    /// tells that two names are one file.
    pub file: Option<(u64, u64)>,
}

/// Where a path's current state is.
enum Found {
    /// In the upper directory (its metadata).
    Upper(fs::Metadata, Option<PartialBase>),
    /// Only in the base.
    Base(DirEntry),
    Absent,
}

/// What a partial file shows in its holes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PartialBase {
    content: ContentRef,
    size: u64,
    /// Base bytes show below this offset (a truncation lowers it).
    limit: u64,
}

impl PartialBase {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.content.encode(&mut w);
        w.varint(self.size).varint(self.limit);
        w.buf
    }

    fn decode(bytes: &[u8]) -> io::Result<PartialBase> {
        let mut r = Reader::new(bytes);
        let content = ContentRef::decode(&mut r).map_err(damaged)?;
        let size = r.varint().map_err(damaged)?;
        let limit = r.varint().map_err(damaged)?;
        r.finish().map_err(damaged)?;
        Ok(PartialBase {
            content,
            size,
            limit,
        })
    }
}

fn get_attr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The tree upper directory `dir` continues (its `ORIGIN`), if any.
fn origin_attr(dir: &Path) -> io::Result<Option<TreeId>> {
    match get_attr(dir, ORIGIN)? {
        Some(hex) => Ok(Some(TreeId(
            Id::from_hex(std::str::from_utf8(&hex).map_err(damaged)?)
                .ok_or_else(|| damaged("a bad origin"))?,
        ))),
        None => Ok(None),
    }
}

/// Objects an overlay shows from the store (`shown_from_store`).
pub struct Shown {
    /// Trees upper directories continue.
    pub trees: Vec<TreeId>,
    /// Contents partial files show in their holes, with their sizes.
    pub contents: Vec<(ContentRef, u64)>,
}

/// What the overlay directory `dir` of a mounted dot shows from the store
/// besides its branch's commit, for gc to keep: the trees its upper
/// directories continue and the contents its partial files show in their
/// holes (with the content's size), in `upper/`, every kept branch (16.9)
/// and every file removed while open. Entries removed while this runs
/// are skipped, and so is debris nothing shows (`upper.old.*`).
pub fn shown_from_store(dir: &Path) -> io::Result<Shown> {
    let (mut trees, mut contents) = (Vec::new(), Vec::new());
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let mut stack = ["upper", "kept", "orphans"]
        .map(|shown| dir.join(shown))
        .to_vec();
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let path = e?.path();
            let found = fs::symlink_metadata(&path).and_then(|md| {
                if md.is_dir() {
                    trees.extend(origin_attr(&path)?);
                    stack.push(path.clone());
                } else if md.is_file() {
                    if let Some(b) = get_attr(&path, BASE)? {
                        let p = PartialBase::decode(&b)?;
                        contents.push((p.content, p.size));
                    }
                }
                Ok(())
            });
            match found {
                Err(e) if !gone(&e) => return Err(e),
                _ => {}
            }
        }
    }
    Ok(Shown { trees, contents })
}

fn set_attr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::lsetxattr(
        path,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

fn stat_of(md: &fs::Metadata) -> Stat {
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        EntryKind::CharDevice
    } else if ft.is_block_device() {
        EntryKind::BlockDevice
    } else {
        EntryKind::File
    };
    Stat {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        size: if kind == EntryKind::Dir { 0 } else { md.size() },
        rdev: md.rdev(),
        links: if kind == EntryKind::Dir {
            1
        } else {
            md.nlink()
        },
        file: (kind != EntryKind::Dir && md.nlink() > 1).then(|| (md.dev(), md.ino())),
    }
}

fn stat_of_entry(e: &DirEntry) -> Stat {
    Stat {
        kind: e.kind,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime_ns: e.mtime_ns,
        size: e.size,
        rdev: match e.content {
            Content::Device(r) => r,
            _ => 0,
        },
        links: 1,
        file: None,
    }
}

fn join(base: &Path, rel: &[&[u8]]) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in rel {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// The base of a working state: a commit's root, or nothing yet.
pub struct Base {
    pub root: Root,
}

/// A working state of base plus upper directory.
pub struct Overlay {
    store: Arc<Store>,
    cache: Cache,
    upper: PathBuf,
    /// Files removed while open, by name (`ORPHANS`); beside the upper
    /// directory, so switches and commits leave them alone.
    orphans: PathBuf,
    base: RwLock<Base>,
    /// Upper files kept open for reads and writes, by path; forgotten
    /// whenever names change.
    files: Mutex<HashMap<PathBuf, Arc<OpenFile>>>,
    /// Upper entries made by copying up (not by a program's own create or
    /// rename, whose directory it fsyncs itself): their directory is
    /// fsynced with the first fsync below it.
    fresh: Mutex<std::collections::HashSet<PathBuf>>,
    /// Upper files whose own attributes the overlay set (`user.dot.base`)
    /// since their last full flush: an fdatasync of one flushes them too.
    meta: Mutex<std::collections::HashSet<PathBuf>>,
    /// What a commit's passes built for each upper file, as (size,
    /// content), and the byte ranges written to it since. A later build
    /// re-chunks only the ranges written since the one before, so each
    /// pass reads only what changed while the one before ran.
    built: Mutex<Built>,
    /// While a commit builds what showed at its freeze (16.6): what
    /// writes changed since, and the entries they made.
    freeze: Mutex<Option<Arc<Freeze>>>,
    /// Told when a freeze ends.
    thawed: Condvar,
}

#[derive(Default)]
struct Built {
    content: HashMap<PathBuf, (u64, ContentRef)>,
    since: HashMap<PathBuf, Vec<(u64, u64)>>,
    /// The files a build is reading now...
    building: std::collections::HashSet<PathBuf>,
    /// ...and those of them whose name came to stand for another file
    /// meanwhile: their build records nothing.
    voided: std::collections::HashSet<PathBuf>,
}

impl Built {
    /// Forgets what was built for `up` and everything below it.
    fn forget(&mut self, up: &Path) {
        self.content.retain(|p, _| !p.starts_with(up));
        self.since.retain(|p, _| !p.starts_with(up));
        let hit: Vec<PathBuf> = self
            .building
            .iter()
            .filter(|p| p.starts_with(up))
            .cloned()
            .collect();
        self.voided.extend(hit);
    }
}

/// An upper regular file, open, and what its holes show.
struct OpenFile {
    file: File,
    partial: Option<PartialBase>,
}

/// What an fsync makes durable (`Overlay::to_flush`).
pub struct Flush {
    up: PathBuf,
    file: Option<File>,
    full: bool,
    /// Upper directories above it that copying up created.
    dirs: Vec<File>,
}

impl Overlay {
    /// An overlay over `root` whose changes live in `upper` (created when
    /// missing; what it holds is kept).
    pub fn open(store: Arc<Store>, upper: &Path, root: Root) -> io::Result<Overlay> {
        // What rebases left: already superseded.
        if let (Some(dir), Some(name)) = (upper.parent(), upper.file_name()) {
            let prefix = format!("{}.old", name.to_string_lossy());
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        fs::create_dir_all(upper)?;
        // Files a previous daemon's programs had open: none are now.
        let orphans = upper.with_file_name("orphans");
        match fs::remove_dir_all(&orphans) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => fs::create_dir(&orphans)?,
        }
        Ok(Overlay {
            store,
            cache: Cache::new(CACHE_BYTES),
            upper: upper.to_path_buf(),
            orphans,
            base: RwLock::new(Base { root }),
            files: Mutex::new(HashMap::new()),
            fresh: Mutex::new(Default::default()),
            meta: Mutex::new(Default::default()),
            built: Mutex::new(Built::default()),
            freeze: Mutex::new(None),
            thawed: Condvar::new(),
        })
    }

    /// Freezes what shows for a commit to build while writes go on: from
    /// now on writes keep what they change, and changes of names and
    /// attributes must wait (`wait_thawed`) until `thaw`. The caller
    /// holds writes.
    pub fn freeze(&self) -> io::Result<()> {
        let dir = self.upper.parent().unwrap_or(&self.upper);
        let z = Freeze::new(dir)?;
        *self.freeze.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(z));
        Ok(())
    }

    fn frozen(&self) -> Option<Arc<Freeze>> {
        self.freeze
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen().is_some()
    }

    /// Waits until no freeze is on.
    pub fn wait_thawed(&self) {
        let mut z = self.freeze.lock().unwrap_or_else(PoisonError::into_inner);
        while z.is_some() {
            z = self.thawed.wait(z).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Ends a freeze. With the root a commit made of what showed at the
    /// freeze, that root becomes the base: when nothing was written since,
    /// the overlay starts empty (`rebase`); else what the commit holds as
    /// it shows leaves the upper directory (`settle`) and what was
    /// written since stays over it. The caller holds writes.
    pub fn thaw(&self, committed: Option<Root>) -> io::Result<()> {
        let z = self
            .freeze
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.thawed.notify_all();
        let Some(z) = z else { return Ok(()) };
        let result = match committed {
            None => Ok(()),
            Some(root) if !z.touched() => return self.rebase(root, true),
            Some(root) => self.settle(root, &z),
        };
        // What was written since the freeze is built again by the next
        // commit's passes.
        let mut b = self.built();
        for (path, ranges) in z.written() {
            if let Some(since) = b.since.get_mut(&path) {
                since.extend(ranges);
            }
        }
        result
    }

    /// After a commit of what showed at a freeze, with writes since: the
    /// commit becomes the base, and the upper entries it holds as they
    /// show leave (files and others not written since, whiteouts), while
    /// upper directories continue its directories. Each step shows what
    /// showed before, so a crash anywhere leaves the same content.
    fn settle(&self, root: Root, z: &Freeze) -> io::Result<()> {
        let trash = self.old_dir();
        let mut moved = 0u64;
        let result = fs::create_dir(&trash).and_then(|()| {
            root.iter().try_for_each(|(sub, top)| {
                let up = self.upper.join(sub);
                if !up.is_dir() || z.is_made(&up) {
                    return Ok(());
                }
                self.settle_dir(&up, top.tree, z, &trash, &mut moved)
            })
        });
        *self.base.write().unwrap_or_else(PoisonError::into_inner) = Base { root };
        self.forget_files();
        std::thread::spawn(move || fs::remove_dir_all(trash));
        result
    }

    /// A new name for what leaves the upper directory (`upper.old.<time>`:
    /// deleted in the background, and at the next open if left).
    fn old_dir(&self) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        self.upper.with_extension(format!("old.{stamp}"))
    }

    fn settle_dir(
        &self,
        dir: &Path,
        tree: TreeId,
        z: &Freeze,
        trash: &Path,
        moved: &mut u64,
    ) -> io::Result<()> {
        // First the committed directory shows under what stays...
        set_attr(dir, ORIGIN, tree.0.to_hex().as_bytes())?;
        let committed: HashMap<Vec<u8>, DirEntry> = read_dir(&self.store, &tree)
            .map_err(damaged)?
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        for d in fs::read_dir(dir)? {
            let path = d?.path();
            if z.is_made(&path) {
                continue;
            }
            let md = path.symlink_metadata()?;
            if md.is_dir() {
                let name = path.file_name().map(|n| n.as_bytes().to_vec());
                if let Some(DirEntry {
                    content: Content::Dir(t),
                    ..
                }) = name.and_then(|n| committed.get(&n))
                {
                    self.settle_dir(&path, *t, z, trash, moved)?;
                }
                continue;
            }
            // Written since the freeze, or one of several names: stays.
            if md.is_file() && (z.metadata(&md).is_some() || md.nlink() > 1) {
                continue;
            }
            // ...then what it holds as it shows leaves.
            *moved += 1;
            fs::rename(&path, trash.join(moved.to_string()))?;
            self.untrack(&path);
            self.fresh().remove(&path);
            self.meta().remove(&path);
        }
        Ok(())
    }

    fn reader(&self) -> TreeReader<'_> {
        TreeReader {
            objects: &self.store,
            cache: &self.cache,
        }
    }

    fn base(&self) -> RwLockReadGuard<'_, Base> {
        self.base.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn upper_path(&self, sub: &str, rel: &[&[u8]]) -> PathBuf {
        match sub {
            ORPHANS => join(&self.orphans, rel),
            _ => join(&self.upper.join(sub), rel),
        }
    }

    /// Keeps file `rel` as `ORPHANS`/`ino` before its last name goes
    /// while programs have it open: as on a local file system, they go
    /// on reading and writing it until they close it (`drop_orphan`).
    /// A base file is copied up first (partial: nothing is copied).
    /// False for what is not a regular file.
    pub fn orphan(&self, sub: &str, rel: &[&[u8]], ino: u64) -> io::Result<bool> {
        match self.stat(sub, rel)? {
            Some(s) if s.kind == EntryKind::File => {}
            _ => return Ok(false),
        }
        self.copy_up(sub, rel)?;
        fs::hard_link(
            self.upper_path(sub, rel),
            self.orphans.join(ino.to_string()),
        )?;
        Ok(true)
    }

    /// The last program that had orphan `ino` open closed it.
    pub fn drop_orphan(&self, ino: u64) -> io::Result<()> {
        let p = self.orphans.join(ino.to_string());
        self.files().remove(&p);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The base entry at `rel` of subdot `sub`: looked up in the tree of
    /// its parent, which is the origin of the parent's upper directory
    /// where there is one (a moved directory continues its origin), else
    /// found the same way one level up.
    fn base_entry(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Option<DirEntry>> {
        let Some((name, parent)) = rel.split_last() else {
            return Ok(None);
        };
        let parent_up = self.upper_path(sub, parent);
        match fs::symlink_metadata(&parent_up) {
            // A file, symlink or whiteout there: nothing of the base below.
            Ok(md) if !md.is_dir() => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let tree = match self.origin(&parent_up)? {
            Some(origin) => origin,
            None if parent.is_empty() => self.base().root.get(sub).map(|top| top.tree),
            None => match self.base_entry(sub, parent)? {
                Some(DirEntry {
                    content: Content::Dir(t),
                    ..
                }) => Some(t),
                _ => None,
            },
        };
        match tree {
            Some(t) => self.reader().lookup(&t, name).map_err(damaged),
            None => Ok(None),
        }
    }

    /// For an upper directory: Some(origin tree or None if new); None when
    /// there is no upper directory there.
    fn origin(&self, upper: &Path) -> io::Result<Option<Option<TreeId>>> {
        match fs::symlink_metadata(upper) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(origin_attr(upper)?))
    }

    fn find(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Found> {
        let up = self.upper_path(sub, rel);
        match fs::symlink_metadata(&up) {
            Ok(md) => {
                if md.is_file() && md.len() == 0 && get_attr(&up, WHITEOUT)?.is_some() {
                    return Ok(Found::Absent);
                }
                let partial = if md.is_file() {
                    get_attr(&up, BASE)?
                        .map(|b| PartialBase::decode(&b))
                        .transpose()?
                } else {
                    None
                };
                return Ok(Found::Upper(md, partial));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if rel.is_empty() {
            return Ok(match self.base().root.get(sub) {
                Some(top) => Found::Base(super::top_entry(sub, top)),
                None => Found::Absent,
            });
        }
        Ok(match self.base_entry(sub, rel)? {
            Some(e) => Found::Base(e),
            None => Found::Absent,
        })
    }

    /// What `rel` shows, or None.
    pub fn stat(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Option<Stat>> {
        Ok(match self.find(sub, rel)? {
            Found::Upper(md, _) => Some(stat_of(&md)),
            Found::Base(e) => Some(stat_of_entry(&e)),
            Found::Absent => None,
        })
    }

    /// The names in directory `rel`, sorted, with their kinds.
    pub fn list(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Vec<(Vec<u8>, EntryKind)>> {
        let mut names: std::collections::BTreeMap<Vec<u8>, EntryKind> = Default::default();
        let up = self.upper_path(sub, rel);
        let base_tree = match self.find(sub, rel)? {
            Found::Absent => return Err(errno(libc::ENOENT)),
            Found::Base(e) => match e.content {
                Content::Dir(t) => Some(t),
                _ => return Err(errno(libc::ENOTDIR)),
            },
            Found::Upper(md, _) if md.is_dir() => self.origin(&up)?.flatten(),
            Found::Upper(..) => return Err(errno(libc::ENOTDIR)),
        };
        if let Some(t) = base_tree {
            for e in read_dir(&self.store, &t).map_err(damaged)? {
                names.insert(e.name, e.kind);
            }
        }
        if let Ok(entries) = fs::read_dir(&up) {
            for e in entries {
                let e = e?;
                let name = e.file_name().as_bytes().to_vec();
                let md = e.path().symlink_metadata()?;
                if md.is_file() && md.len() == 0 && get_attr(&e.path(), WHITEOUT)?.is_some() {
                    names.remove(&name);
                } else {
                    names.insert(name, stat_of(&md).kind);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The upper regular file at `rel`, open (kept open for the next
    /// request), or None when `rel` is not one.
    fn open_upper(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Option<Arc<OpenFile>>> {
        let up = self.upper_path(sub, rel);
        if let Some(f) = self.files().get(&up) {
            return Ok(Some(f.clone()));
        }
        let Found::Upper(md, partial) = self.find(sub, rel)? else {
            return Ok(None);
        };
        if !md.is_file() {
            return Ok(None);
        }
        let file = match OpenOptions::new().read(true).write(true).open(&up) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(&up)?,
            Err(e) => return Err(e),
        };
        let f = Arc::new(OpenFile { file, partial });
        self.files().insert(up, f.clone());
        Ok(Some(f))
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<OpenFile>>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets every open upper file (names changed).
    fn forget_files(&self) {
        self.files().clear();
    }

    fn built(&self) -> std::sync::MutexGuard<'_, Built> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what was built for `up` and everything below it: its names
    /// now stand for other files (created, removed, truncated).
    fn untrack(&self, up: &Path) {
        self.built().forget(up);
    }

    /// What was built for `from` and below it follows them to `to` (a
    /// rename: the same files under other names), except for files a
    /// build is reading now, which are forgotten.
    fn track_rename(&self, from: &Path, to: &Path) {
        let mut b = self.built();
        b.forget(to);
        let moved: Vec<PathBuf> = b
            .content
            .keys()
            .chain(b.since.keys())
            .filter(|p| p.starts_with(from))
            .cloned()
            .collect();
        for p in moved {
            let content = b.content.remove(&p);
            let since = b.since.remove(&p);
            if b.building.contains(&p) {
                b.voided.insert(p);
                continue;
            }
            let Ok(rest) = p.strip_prefix(from) else {
                continue;
            };
            let q = to.join(rest);
            if let Some(c) = content {
                b.content.insert(q.clone(), c);
            }
            if let Some(s) = since {
                b.since.insert(q, s);
            }
        }
        b.forget(from);
    }

    /// Records that bytes `from..to` of `up` were just written, if a
    /// build has taken (or is taking) the file.
    fn written(&self, up: &Path, from: u64, to: u64) {
        let mut b = self.built();
        if b.since.contains_key(up) {
            b.since
                .entry(up.to_path_buf())
                .or_default()
                .push((from, to));
        }
    }

    /// Reads up to `len` bytes at `off` of file `rel`.
    pub fn read(&self, sub: &str, rel: &[&[u8]], off: u64, len: usize) -> io::Result<Vec<u8>> {
        if let Some(o) = self.open_upper(sub, rel)? {
            let size = o.file.metadata()?.len();
            let mut buf = vec![0u8; len.min(size.saturating_sub(off) as usize)];
            self.read_merged(&o.file, o.partial.as_ref(), off, &mut buf)?;
            return Ok(buf);
        }
        match self.find(sub, rel)? {
            Found::Absent => Err(errno(libc::ENOENT)),
            Found::Base(e) => {
                let Content::File(c) = &e.content else {
                    return Err(errno(libc::EISDIR));
                };
                let n = len.min(e.size.saturating_sub(off) as usize);
                let mut buf = vec![0u8; n];
                self.reader()
                    .read_at(c, e.size, off, &mut buf)
                    .map_err(damaged)?;
                Ok(buf)
            }
            Found::Upper(..) => Err(errno(libc::EISDIR)),
        }
    }

    /// Fills `buf` from `off` of an upper file: its data where it has
    /// any, the base (or zeros) in its holes.
    fn read_merged(
        &self,
        f: &File,
        partial: Option<&PartialBase>,
        off: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let Some(p) = partial else {
            return f.read_exact_at(buf, off);
        };
        let end = off + buf.len() as u64;
        let mut at = off;
        while at < end {
            let data = seek(f, at, rustix::fs::SeekFrom::Data)?
                .unwrap_or(end)
                .min(end);
            if data > at {
                // A hole from `at` to `data`.
                let hole = &mut buf[(at - off) as usize..(data - off) as usize];
                hole.fill(0);
                let below = p.limit.min(data);
                if below > at {
                    self.reader()
                        .read_at(&p.content, p.size, at, &mut hole[..(below - at) as usize])
                        .map_err(damaged)?;
                }
                at = data;
                continue;
            }
            let hole = seek(f, at, rustix::fs::SeekFrom::Hole)?
                .unwrap_or(end)
                .min(end);
            f.read_exact_at(&mut buf[(at - off) as usize..(hole - off) as usize], at)?;
            at = hole;
        }
        Ok(())
    }

    /// Makes sure the parent directories of `rel` exist in the upper
    /// directory, continuing their base directories.
    fn copy_up_parents(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        for i in 0..rel.len() {
            self.copy_up_dir(sub, &rel[..i])?;
        }
        Ok(())
    }

    fn copy_up_dir(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        let up = self.upper_path(sub, rel);
        if self.origin(&up)?.is_some() {
            return Ok(());
        }
        if !rel.is_empty() {
            self.copy_up_dir(sub, &rel[..rel.len() - 1])?;
        }
        let (tree, stat, xattrs) = if rel.is_empty() {
            let base = self.base();
            match base.root.get(sub) {
                Some(top) => (Some(top.tree), top_stat(top), Vec::new()),
                None => (None, None, Vec::new()),
            }
        } else {
            match self.base_entry(sub, rel)? {
                Some(e) => match e.content {
                    Content::Dir(t) => (Some(t), Some(stat_of_entry(&e)), e.xattrs),
                    _ => return Err(errno(libc::ENOTDIR)),
                },
                None => return Err(errno(libc::ENOENT)),
            }
        };
        // A whiteout in the way (the directory was removed, then this is
        // a new one) is replaced.
        let _ = fs::remove_file(&up);
        unseen_in_parent(&up, || fs::create_dir(&up))?;
        self.fresh().insert(up.clone());
        if let Some(z) = self.frozen() {
            z.made(&up);
        }
        if let Some(t) = tree {
            set_attr(&up, ORIGIN, t.0.to_hex().as_bytes())?;
        }
        match stat {
            Some(s) => apply_stat(&up, &s, &xattrs),
            None => set_xattrs(&up, &xattrs),
        }
    }

    /// Makes `rel` an upper entry: a file becomes partial over its base
    /// content, a directory continues its base, others are copied.
    fn copy_up(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        let up = self.upper_path(sub, rel);
        match self.find(sub, rel)? {
            Found::Upper(..) => Ok(()),
            Found::Absent => Err(errno(libc::ENOENT)),
            Found::Base(e) if e.kind == EntryKind::Dir => self.copy_up_dir(sub, rel),
            Found::Base(e) => {
                self.copy_up_parents(sub, rel)?;
                self.untrack(&up);
                unseen_in_parent(&up, || self.copy_up_entry(&up, &e))
            }
        }
    }

    /// Makes the upper entry `up` continue base entry `e`, not a
    /// directory.
    fn copy_up_entry(&self, up: &Path, e: &DirEntry) -> io::Result<()> {
        let _ = fs::remove_file(up);
        match &e.content {
            Content::Dir(_) => return Err(errno(libc::EISDIR)),
            Content::File(c) => {
                let f = OpenOptions::new().write(true).create_new(true).open(up)?;
                f.set_len(e.size)?;
                if e.size > 0 {
                    let p = PartialBase {
                        content: *c,
                        size: e.size,
                        limit: e.size,
                    };
                    self.set_base(up, &p)?;
                }
            }
            Content::Symlink(t) => std::os::unix::fs::symlink(OsStr::from_bytes(t), up)?,
            Content::Fifo => fsmeta::mknod(up, rustix::fs::FileType::Fifo, e.mode, 0)?,
            Content::Device(rdev) => {
                let kind = if e.kind == EntryKind::CharDevice {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                fsmeta::mknod(up, kind, e.mode, *rdev)?;
            }
        }
        self.fresh().insert(up.to_path_buf());
        if let Some(z) = self.frozen() {
            z.made(up);
        }
        apply_stat(up, &stat_of_entry(e), &e.xattrs)
    }

    /// Writes `data` at `off` of file `rel`; when `drop_suid` is given, by
    /// a process without CAP_FSETID in the groups it says
    /// (`without_set_ids`).
    pub fn write(
        &self,
        sub: &str,
        rel: &[&[u8]],
        off: u64,
        data: &[u8],
        drop_suid: Option<&dyn Fn(u32) -> bool>,
    ) -> io::Result<()> {
        let o = match self.open_upper(sub, rel)? {
            Some(o) => o,
            None => {
                self.copy_up(sub, rel)?;
                self.open_upper(sub, rel)?
                    .ok_or_else(|| errno(libc::EISDIR))?
            }
        };
        let up = self.upper_path(sub, rel);
        let end = off + data.len() as u64;
        // A removed file is in no commit.
        let frozen = self.frozen().filter(|_| sub != ORPHANS);
        let keep = |from: u64, to: u64| match &frozen {
            Some(z) => z.keep(&up, &o.file, from, to, &mut |at, buf| {
                self.read_merged(&o.file, o.partial.as_ref(), at, buf)
            }),
            None => Ok(()),
        };
        let md = match (&o.partial, drop_suid) {
            (None, None) => None,
            _ => Some(o.file.metadata()?),
        };
        // After the write, which kept (under a freeze) the attributes the
        // file had before it.
        let dropped = |md: &fs::Metadata| match drop_suid.and_then(|g| without_set_ids(md, g)) {
            Some(mode) => o.file.set_permissions(fs::Permissions::from_mode(mode)),
            None => Ok(()),
        };
        let Some(p) = &o.partial else {
            keep(off, end)?;
            o.file.write_all_at(data, off)?;
            self.written(&up, off, end);
            return md.as_ref().map_or(Ok(()), dropped);
        };
        // Whole blocks: the rest of the first and last block comes from
        // what shows now, so every allocated block holds true bytes.
        let size = md.as_ref().map_or(0, fs::Metadata::len);
        let a = off / BLOCK * BLOCK;
        let b = (end.div_ceil(BLOCK) * BLOCK).min(size.max(end));
        let mut block = vec![0u8; (b - a) as usize];
        let head = off.min(size);
        if head > a {
            self.read_merged(&o.file, Some(p), a, &mut block[..(head - a) as usize])?;
        }
        let tail = b.min(size);
        if tail > end {
            self.read_merged(
                &o.file,
                Some(p),
                end,
                &mut block[(end - a) as usize..(tail - a) as usize],
            )?;
        }
        block[(off - a) as usize..(end - a) as usize].copy_from_slice(data);
        keep(a, b)?;
        o.file.write_all_at(&block, a)?;
        self.written(&up, a, b);
        md.as_ref().map_or(Ok(()), dropped)
    }

    /// Sets the size of file `rel`.
    pub fn truncate(&self, sub: &str, rel: &[&[u8]], size: u64) -> io::Result<()> {
        self.copy_up(sub, rel)?;
        let up = self.upper_path(sub, rel);
        // Every name of the file (hard links) shows the new limit.
        self.forget_files();
        if let Found::Upper(_, Some(mut p)) = self.find(sub, rel)? {
            if size < p.limit {
                p.limit = size;
                self.set_base(&up, &p)?;
            }
        }
        OpenOptions::new().write(true).open(&up)?.set_len(size)?;
        self.untrack(&up);
        Ok(())
    }

    fn create_at(
        &self,
        sub: &str,
        rel: &[&[u8]],
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        if rel.is_empty() {
            return Err(errno(libc::EEXIST));
        }
        let parent = &rel[..rel.len() - 1];
        match self.stat(sub, parent)? {
            Some(s) if s.kind == EntryKind::Dir => {}
            Some(_) => return Err(errno(libc::ENOTDIR)),
            None => return Err(errno(libc::ENOENT)),
        }
        if self.stat(sub, rel)?.is_some() {
            return Err(errno(libc::EEXIST));
        }
        self.copy_up_dir(sub, parent)?;
        let up = self.upper_path(sub, rel);
        self.forget_files();
        self.untrack(&up);
        let _ = fs::remove_file(&up); // a whiteout
        make(&up)
    }

    pub fn create(&self, sub: &str, rel: &[&[u8]], mode: u32) -> io::Result<()> {
        self.create_at(sub, rel, |up| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode & 0o7777)
                .open(up)?
                .set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        })
    }

    pub fn mkdir(&self, sub: &str, rel: &[&[u8]], mode: u32) -> io::Result<()> {
        self.create_at(sub, rel, |up| {
            fs::create_dir(up)?;
            fs::set_permissions(up, fs::Permissions::from_mode(mode & 0o7777))
        })
    }

    pub fn symlink(&self, sub: &str, rel: &[&[u8]], target: &[u8]) -> io::Result<()> {
        self.create_at(sub, rel, |up| {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), up)
        })
    }

    /// A fifo or device node (`mode` carries the file type bits).
    pub fn mknod(&self, sub: &str, rel: &[&[u8]], mode: u32, rdev: u64) -> io::Result<()> {
        let kind = match rustix::fs::FileType::from_raw_mode(mode as _) {
            rustix::fs::FileType::Fifo => rustix::fs::FileType::Fifo,
            rustix::fs::FileType::CharacterDevice => rustix::fs::FileType::CharacterDevice,
            rustix::fs::FileType::BlockDevice => rustix::fs::FileType::BlockDevice,
            rustix::fs::FileType::RegularFile => return self.create(sub, rel, mode),
            _ => return Err(errno(libc::EPERM)),
        };
        self.create_at(sub, rel, |up| fsmeta::mknod(up, kind, mode, rdev))
    }

    pub fn readlink(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Vec<u8>> {
        match self.find(sub, rel)? {
            Found::Absent => Err(errno(libc::ENOENT)),
            Found::Base(DirEntry {
                content: Content::Symlink(t),
                ..
            }) => Ok(t),
            Found::Upper(md, _) if md.is_symlink() => Ok(fs::read_link(self.upper_path(sub, rel))?
                .as_os_str()
                .as_bytes()
                .to_vec()),
            _ => Err(errno(libc::EINVAL)),
        }
    }

    pub fn remove_xattr(&self, sub: &str, rel: &[&[u8]], name: &[u8]) -> io::Result<()> {
        if name.starts_with(OWN_PREFIX) {
            return Err(errno(libc::EPERM));
        }
        self.copy_up(sub, rel)?;
        Ok(rustix::fs::lremovexattr(
            self.upper_path(sub, rel),
            OsStr::from_bytes(name),
        )?)
    }

    /// Hides what `rel` showed: removes its upper entry and, when the base
    /// has one, leaves a whiteout.
    fn remove(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        let up = self.upper_path(sub, rel);
        self.forget_files();
        self.untrack(&up);
        match fs::symlink_metadata(&up) {
            Ok(md) if md.is_dir() => fs::remove_dir_all(&up)?,
            Ok(_) => fs::remove_file(&up)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // What the base has here (unless a parent is new) stays hidden.
        let in_base = self.base_entry(sub, rel)?.is_some();
        if in_base {
            self.copy_up_parents(sub, rel)?;
            File::create(&up)?;
            set_attr(&up, WHITEOUT, b"1")?;
        }
        Ok(())
    }

    pub fn unlink(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        match self.stat(sub, rel)? {
            None => Err(errno(libc::ENOENT)),
            Some(s) if s.kind == EntryKind::Dir => Err(errno(libc::EISDIR)),
            Some(_) => self.remove(sub, rel),
        }
    }

    pub fn rmdir(&self, sub: &str, rel: &[&[u8]]) -> io::Result<()> {
        match self.stat(sub, rel)? {
            None => Err(errno(libc::ENOENT)),
            Some(s) if s.kind != EntryKind::Dir => Err(errno(libc::ENOTDIR)),
            Some(_) => {
                if !self.list(sub, rel)?.is_empty() {
                    return Err(errno(libc::ENOTEMPTY));
                }
                self.remove(sub, rel)
            }
        }
    }

    /// Moves `from` to `to` (replacing a file, or an empty directory, there).
    pub fn rename(&self, sub: &str, from: &[&[u8]], to: &[&[u8]]) -> io::Result<()> {
        let Some(src) = self.stat(sub, from)? else {
            return Err(errno(libc::ENOENT));
        };
        if to.starts_with(from) && to.len() > from.len() {
            return Err(errno(libc::EINVAL));
        }
        if from == to || self.same_file(sub, from, to)? {
            // Two names of one file: rename(2) leaves both.
            return Ok(());
        }
        if let Some(dst) = self.stat(sub, to)? {
            match (src.kind == EntryKind::Dir, dst.kind == EntryKind::Dir) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if !self.list(sub, to)?.is_empty() => {
                    return Err(errno(libc::ENOTEMPTY))
                }
                _ => {}
            }
            self.remove(sub, to)?;
        } else {
            match self.stat(sub, &to[..to.len() - 1])? {
                Some(s) if s.kind == EntryKind::Dir => {}
                Some(_) => return Err(errno(libc::ENOTDIR)),
                None => return Err(errno(libc::ENOENT)),
            }
        }
        self.copy_up(sub, from)?;
        self.copy_up_dir(sub, &to[..to.len() - 1])?;
        let up_to = self.upper_path(sub, to);
        let _ = fs::remove_file(&up_to); // a whiteout
        self.forget_files();
        let up_from = self.upper_path(sub, from);
        self.track_rename(&up_from, &up_to);
        fs::rename(&up_from, &up_to)?;
        // What the base had at `from` stays hidden.
        self.remove(sub, from)
    }

    /// Whether `a` and `b` are names of one upper file (hard links).
    fn same_file(&self, sub: &str, a: &[&[u8]], b: &[&[u8]]) -> io::Result<bool> {
        match (self.find(sub, a)?, self.find(sub, b)?) {
            (Found::Upper(x, _), Found::Upper(y, _)) => {
                Ok(x.dev() == y.dev() && x.ino() == y.ino())
            }
            _ => Ok(false),
        }
    }

    /// Swaps what `a` and `b` show (rename with RENAME_EXCHANGE): both
    /// must exist, and neither may be inside the other.
    #[cfg(target_os = "linux")]
    pub fn exchange(&self, sub: &str, a: &[&[u8]], b: &[&[u8]]) -> io::Result<()> {
        if self.stat(sub, a)?.is_none() || self.stat(sub, b)?.is_none() {
            return Err(errno(libc::ENOENT));
        }
        if a == b {
            return Ok(());
        }
        if a.starts_with(b) || b.starts_with(a) {
            return Err(errno(libc::EINVAL));
        }
        self.copy_up(sub, a)?;
        self.copy_up(sub, b)?;
        let (up_a, up_b) = (self.upper_path(sub, a), self.upper_path(sub, b));
        self.forget_files();
        self.untrack(&up_a);
        self.untrack(&up_b);
        // A directory carries its origin along: its base entries follow.
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &up_a,
            rustix::fs::CWD,
            &up_b,
            rustix::fs::RenameFlags::EXCHANGE,
        )?;
        Ok(())
    }

    /// Gives file `from` the further name `to` (a hard link): both show
    /// the same bytes and attributes from now on. A commit records each
    /// name as a file; the link holds on the mount until a switch
    /// (docs/design.md 16.4).
    pub fn link(&self, sub: &str, from: &[&[u8]], to: &[&[u8]]) -> io::Result<()> {
        match self.stat(sub, from)? {
            None => return Err(errno(libc::ENOENT)),
            Some(s) if s.kind == EntryKind::Dir => return Err(errno(libc::EPERM)),
            Some(_) => {}
        }
        self.copy_up(sub, from)?;
        let up_from = self.upper_path(sub, from);
        // What a build kept for the old name no longer follows its writes.
        self.untrack(&up_from);
        self.create_at(sub, to, |up| fs::hard_link(&up_from, up))
    }

    /// fallocate(2) of file `rel`: with mode 0 or KEEP_SIZE it reserves
    /// space (mode 0 grows the file to `off + len`); PUNCH_HOLE (with
    /// KEEP_SIZE) and ZERO_RANGE make the range read as zeros.
    #[cfg(target_os = "linux")]
    pub fn fallocate(
        &self,
        sub: &str,
        rel: &[&[u8]],
        off: u64,
        len: u64,
        mode: i32,
    ) -> io::Result<()> {
        use libc::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE};
        let end = off.checked_add(len).ok_or_else(|| errno(libc::EFBIG))?;
        let zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0;
        let keep = mode & FALLOC_FL_KEEP_SIZE != 0;
        if len == 0
            || mode & !(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0
            || (mode & FALLOC_FL_PUNCH_HOLE != 0 && !keep)
        {
            return Err(errno(libc::EOPNOTSUPP));
        }
        match self.stat(sub, rel)? {
            None => return Err(errno(libc::ENOENT)),
            Some(s) if s.kind == EntryKind::Dir => return Err(errno(libc::EISDIR)),
            Some(s) if s.kind != EntryKind::File => return Err(errno(libc::ENODEV)),
            Some(_) => {}
        }
        self.copy_up(sub, rel)?;
        let o = self
            .open_upper(sub, rel)?
            .ok_or_else(|| errno(libc::ENODEV))?;
        let up = self.upper_path(sub, rel);
        let size = o.file.metadata()?.len();
        let grown = if keep { size } else { size.max(end) };
        let stop = end.min(size);
        match (&o.partial, zero) {
            (None, false) => {
                let flags = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
                rustix::fs::fallocate(&o.file, flags, off, len)?;
            }
            (None, true) => {
                if stop > off {
                    punch(&o.file, off, stop - off)?;
                }
            }
            // A partial file's holes below its limit show the base: only
            // what lies above the limit is left to the upper file system.
            (Some(p), false) => {
                let above = off.max(p.limit);
                if end > above {
                    let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
                    rustix::fs::fallocate(&o.file, flags, above, end - above)?;
                }
            }
            (Some(p), true) if off < p.limit && end >= p.limit => {
                // The range reaches the limit: from now on base bytes
                // show only below `off`.
                let lowered = PartialBase {
                    limit: off,
                    ..p.clone()
                };
                self.set_base(&up, &lowered)?;
                self.forget_files();
                self.untrack(&up);
                punch(&o.file, off, stop - off)?;
            }
            (Some(p), true) if off < stop => {
                if off < p.limit {
                    // Within what the base shows: written as zeros.
                    let mut at = off;
                    while at < stop {
                        let n = (stop - at).min(1 << 20);
                        self.write(sub, rel, at, &vec![0u8; n as usize], None)?;
                        at += n;
                    }
                } else {
                    punch(&o.file, off, stop - off)?;
                }
            }
            (Some(_), true) => {}
        }
        if grown > size {
            o.file.set_len(grown)?;
        }
        self.written(&up, off, end.min(grown));
        Ok(())
    }

    /// Where the next data (`data`) or hole at or after `off` of file
    /// `rel` is, as lseek(2) SEEK_DATA and SEEK_HOLE answer; None past the
    /// end. What the base shows counts as data.
    pub fn seek(&self, sub: &str, rel: &[&[u8]], off: u64, data: bool) -> io::Result<Option<u64>> {
        let Some(o) = self.open_upper(sub, rel)? else {
            let s = self.stat(sub, rel)?.ok_or_else(|| errno(libc::ENOENT))?;
            return Ok((off < s.size).then_some(if data { off } else { s.size }));
        };
        let size = o.file.metadata()?.len();
        if off >= size {
            return Ok(None);
        }
        let limit = o.partial.as_ref().map_or(0, |p| p.limit);
        if off < limit {
            if data {
                return Ok(Some(off));
            }
            // The next hole at or after the limit.
            return Ok(Some(
                seek(&o.file, limit, rustix::fs::SeekFrom::Hole)?.unwrap_or(size),
            ));
        }
        let how = if data {
            rustix::fs::SeekFrom::Data
        } else {
            rustix::fs::SeekFrom::Hole
        };
        seek(&o.file, off, how)
    }

    pub fn set_mode(&self, sub: &str, rel: &[&[u8]], mode: u32) -> io::Result<()> {
        self.copy_up(sub, rel)?;
        fs::set_permissions(
            self.upper_path(sub, rel),
            fs::Permissions::from_mode(mode & 0o7777),
        )
    }

    /// Drops the set-ID bits of upper file `rel` (`without_set_ids`);
    /// whether any went.
    pub fn drop_suid(
        &self,
        sub: &str,
        rel: &[&[u8]],
        in_group: &dyn Fn(u32) -> bool,
    ) -> io::Result<bool> {
        let up = self.upper_path(sub, rel);
        match without_set_ids(&fs::symlink_metadata(&up)?, in_group) {
            Some(mode) => fs::set_permissions(&up, fs::Permissions::from_mode(mode)).map(|()| true),
            None => Ok(false),
        }
    }

    pub fn set_owner(
        &self,
        sub: &str,
        rel: &[&[u8]],
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<()> {
        self.copy_up(sub, rel)?;
        std::os::unix::fs::lchown(self.upper_path(sub, rel), uid, gid)
    }

    pub fn set_mtime(&self, sub: &str, rel: &[&[u8]], mtime_ns: i64) -> io::Result<()> {
        self.copy_up(sub, rel)?;
        set_mtime(&self.upper_path(sub, rel), mtime_ns)
    }

    pub fn set_xattr(&self, sub: &str, rel: &[&[u8]], name: &[u8], value: &[u8]) -> io::Result<()> {
        if name.starts_with(OWN_PREFIX) {
            return Err(errno(libc::EPERM));
        }
        self.copy_up(sub, rel)?;
        Ok(rustix::fs::lsetxattr(
            self.upper_path(sub, rel),
            OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::empty(),
        )?)
    }

    pub fn xattrs(&self, sub: &str, rel: &[&[u8]]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(match self.find(sub, rel)? {
            Found::Absent => return Err(errno(libc::ENOENT)),
            Found::Base(e) => e.xattrs,
            Found::Upper(..) => own_filtered(read_xattrs(&self.upper_path(sub, rel))?),
        })
    }

    fn fresh(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes upper file `up` partial over `p`, for an fsync to flush.
    fn set_base(&self, up: &Path, p: &PartialBase) -> io::Result<()> {
        set_attr(up, BASE, &p.encode())?;
        self.meta().insert(up.to_path_buf());
        Ok(())
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What makes `rel` durable as on a local filesystem: its own data and
    /// attributes (fsync of a directory: its entries). The upper entries
    /// copying up made above it are made durable too, since the program
    /// never created them. Found under the barrier, flushed outside it
    /// (`flush`): a flush takes as long as the file has dirty pages, and
    /// a commit's freeze waits for every request under the barrier.
    ///
    /// With `datasync` (fdatasync) only the data and what finding it needs
    /// are flushed, unless the overlay changed the file's own attributes
    /// (its partial base, its limit) since its last full flush.
    pub fn to_flush(&self, sub: &str, rel: &[&[u8]], datasync: bool) -> io::Result<Flush> {
        let up = self.upper_path(sub, rel);
        let cached = self.files().get(&up).cloned();
        let file = match cached {
            Some(o) => Some(o.file.try_clone()?),
            // Nothing in the upper tree: nothing of it to flush.
            None => File::open(&up).ok(),
        };
        let full = file.is_some() && (!datasync || self.meta().remove(&up));
        let mut dirs = Vec::new();
        let mut child = up.clone();
        while child != self.upper {
            let Some(parent) = child.parent().map(Path::to_path_buf) else {
                break;
            };
            if self.fresh().remove(&child) {
                dirs.push(File::open(&parent)?);
            }
            child = parent;
        }
        Ok(Flush {
            up,
            file,
            full,
            dirs,
        })
    }

    /// Makes what `to_flush` found durable, holding no lock reads and
    /// writes need. A commit or a switch may have moved the files
    /// meanwhile: what they held is then in the commit (durable before any
    /// file moves) or was dropped by the switch.
    pub fn flush(&self, f: Flush) -> io::Result<()> {
        if let Some(file) = &f.file {
            let flushed = if f.full {
                file.sync_all()
            } else {
                file.sync_data()
            };
            if let Err(e) = flushed {
                if f.full {
                    self.meta().insert(f.up);
                }
                return Err(e);
            }
        }
        f.dirs.iter().try_for_each(File::sync_all)
    }

    /// The tree of subdot `sub` as it shows now, and how many file bytes
    /// were read to build it. Unchanged directories keep their tree ids;
    /// a partial file is re-chunked only around its written blocks.
    pub fn build_top(&self, sub: &str, chunker: &Chunker) -> io::Result<(TreeId, u64)> {
        let mut read = 0u64;
        let tree = self.build_dir(sub, &mut Vec::new(), chunker, &mut read)?;
        Ok((tree, read))
    }

    fn build_dir(
        &self,
        sub: &str,
        rel: &mut Vec<Vec<u8>>,
        chunker: &Chunker,
        read: &mut u64,
    ) -> io::Result<TreeId> {
        let parts: Vec<&[u8]> = rel.iter().map(Vec::as_slice).collect();
        let up = self.upper_path(sub, &parts);
        let origin = self.origin(&up)?;
        let base_tree = match origin {
            Some(o) => o,
            // Not in the upper directory: unchanged, as in the base.
            None => {
                return match self.find(sub, &parts)? {
                    Found::Base(DirEntry {
                        content: Content::Dir(t),
                        ..
                    }) => Ok(t),
                    _ if parts.is_empty() => match self.base().root.get(sub) {
                        Some(top) => Ok(top.tree),
                        None => write_dir(&self.store, &[]).map_err(damaged),
                    },
                    _ => Err(errno(libc::ENOENT)),
                };
            }
        };
        let mut entries: std::collections::BTreeMap<Vec<u8>, DirEntry> = Default::default();
        if let Some(t) = base_tree {
            for e in read_dir(&self.store, &t).map_err(damaged)? {
                entries.insert(e.name.clone(), e);
            }
        }
        // Files are built in parallel (one large file's re-chunking need
        // not wait for another's), directories depth first.
        let mut files = Vec::new();
        let frozen = self.frozen();
        for d in fs::read_dir(&up)? {
            let d = d?;
            let name = d.file_name().as_bytes().to_vec();
            let path = d.path();
            let mut md = path.symlink_metadata()?;
            if let Some(z) = &frozen {
                // What was made since the freeze does not show yet; what
                // was written since shows as it was.
                if z.is_made(&path) {
                    continue;
                }
                md = z.metadata(&md).unwrap_or(md);
            }
            if md.is_file() && md.len() == 0 && get_attr(&path, WHITEOUT)?.is_some() {
                entries.remove(&name);
                continue;
            }
            let content = match stat_of(&md).kind {
                EntryKind::File => {
                    files.push((name, path, md));
                    continue;
                }
                EntryKind::Dir => {
                    rel.push(name.clone());
                    let tree = self.build_dir(sub, rel, chunker, read);
                    rel.pop();
                    Content::Dir(tree?)
                }
                EntryKind::Symlink => {
                    Content::Symlink(fs::read_link(&path)?.as_os_str().as_bytes().to_vec())
                }
                EntryKind::Fifo => Content::Fifo,
                EntryKind::CharDevice | EntryKind::BlockDevice => Content::Device(md.rdev()),
            };
            entries.insert(name.clone(), upper_entry(name, &path, &md, content)?);
        }
        let built: Vec<(DirEntry, u64)> = files
            .into_par_iter()
            .map(|(name, path, md)| {
                let partial = get_attr(&path, BASE)?
                    .map(|b| PartialBase::decode(&b))
                    .transpose()?;
                let mut n = 0;
                let c = self.build_file(&path, &md, partial.as_ref(), chunker, &mut n)?;
                Ok((upper_entry(name, &path, &md, Content::File(c))?, n))
            })
            .collect::<io::Result<_>>()?;
        for (e, n) in built {
            *read += n;
            entries.insert(e.name.clone(), e);
        }
        let list: Vec<DirEntry> = entries.into_values().collect();
        write_dir(&self.store, &list).map_err(damaged)
    }

    fn build_file(
        &self,
        path: &Path,
        md: &fs::Metadata,
        partial: Option<&PartialBase>,
        chunker: &Chunker,
        read: &mut u64,
    ) -> io::Result<ContentRef> {
        let size = md.len();
        if md.nlink() > 1 {
            // Written through another name perhaps: what was built under
            // this one proves nothing.
            let mut b = self.built();
            b.content.remove(path);
            b.since.remove(path);
            drop(b);
            return self.chunk_file(path, size, partial, chunker, read);
        }
        // What was built before, and what was written since, taken before
        // the bytes are read: a write landing during the read is recorded
        // again for the next build.
        let (before, since) = {
            let mut b = self.built();
            // From now on writes to the file are recorded, including those
            // that land while this build reads it.
            let since = b
                .since
                .insert(path.to_path_buf(), Vec::new())
                .unwrap_or_default();
            b.building.insert(path.to_path_buf());
            (b.content.get(path).copied(), since)
        };
        let result = self.build_from(path, size, partial, before, &since, chunker, read);
        let mut b = self.built();
        b.building.remove(path);
        match &result {
            Ok(content) if !b.voided.remove(path) => {
                b.content.insert(path.to_path_buf(), (size, *content));
            }
            // What was built before no longer goes with what is recorded
            // since: the next build starts afresh.
            _ => {
                b.voided.remove(path);
                b.content.remove(path);
            }
        }
        result
    }

    /// The content of `path` (of `size` bytes) from what was built before
    /// and the ranges written since, or read afresh.
    #[allow(clippy::too_many_arguments)]
    fn build_from(
        &self,
        path: &Path,
        size: u64,
        partial: Option<&PartialBase>,
        before: Option<(u64, ContentRef)>,
        since: &[(u64, u64)],
        chunker: &Chunker,
        read: &mut u64,
    ) -> io::Result<ContentRef> {
        Ok(match before {
            Some((was, content)) if was == size && since.is_empty() => content,
            Some((was, content)) => {
                let f = File::open(path)?;
                let reader = |at: u64, buf: &mut [u8]| self.read_built(&f, partial, at, buf);
                let (c, n) = rechunk(&self.store, chunker, &content, was, size, since, &reader)
                    .map_err(rechunk_err)?;
                *read += n;
                c
            }
            None => self.chunk_file(path, size, partial, chunker, read)?,
        })
    }

    /// What upper file `f` shows at `at` for a build:
    /// during a freeze, what it showed then.
    fn read_built(
        &self,
        f: &File,
        partial: Option<&PartialBase>,
        at: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        self.read_merged(f, partial, at, buf)?;
        match self.frozen() {
            Some(z) => z.patch(&f.metadata()?, at, buf),
            None => Ok(()),
        }
    }

    fn chunk_file(
        &self,
        path: &Path,
        size: u64,
        partial: Option<&PartialBase>,
        chunker: &Chunker,
        read: &mut u64,
    ) -> io::Result<ContentRef> {
        let f = File::open(path)?;
        let reader = |at: u64, buf: &mut [u8]| self.read_built(&f, partial, at, buf);
        let result = match partial {
            None => {
                *read += size;
                chunk_all(&self.store, chunker, size, &reader)
            }
            Some(p) => {
                let mut dirty = allocated(&f, size)?;
                if p.limit < p.size.min(size) {
                    dirty.push((p.limit, size));
                }
                rechunk(
                    &self.store,
                    chunker,
                    &p.content,
                    p.size,
                    size,
                    &dirty,
                    &reader,
                )
                .map(|(c, n)| {
                    *read += n;
                    c
                })
            }
        };
        result.map_err(rechunk_err)
    }

    /// A new base, with nothing changed over it (after a commit of what
    /// showed, or a reset). After a commit (`keep_links`) files with
    /// several names keep them. The caller holds writes.
    pub fn rebase(&self, root: Root, keep_links: bool) -> io::Result<()> {
        self.forget_state();
        let old = self.old_dir();
        fs::rename(&self.upper, &old)?;
        fs::create_dir(&self.upper)?;
        *self.base.write().unwrap_or_else(PoisonError::into_inner) = Base { root };
        if keep_links {
            // Shows what it showed either way (the commit holds each
            // name's bytes): failing, the names only stop being linked.
            let _ = self.carry_links(&old);
        }
        // Deleting what was changed takes time in proportion to it; no
        // request waits for it (a crash leaves it for the next open).
        std::thread::spawn(move || fs::remove_dir_all(old));
        Ok(())
    }

    /// Shows `root` under the upper directory as it now is on disk (a
    /// checkout put another branch's changes there, mount::branches).
    pub fn reload(&self, root: Root) {
        self.forget_state();
        *self.base.write().unwrap_or_else(PoisonError::into_inner) = Base { root };
    }

    /// Drops what is held in memory about the upper directory's files.
    fn forget_state(&self) {
        self.forget_files();
        self.fresh().clear();
        self.meta().clear();
        *self.built() = Built::default();
    }

    /// Moves the entries of the `old` upper directory that have several
    /// names (hard links, of files or symlinks) into the new one under the same names: a partial file keeps
    /// its base, whose bytes the new base also holds.
    fn carry_links(&self, old: &Path) -> io::Result<()> {
        let mut todo = vec![old.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in fs::read_dir(&d)? {
                let p = e?.path();
                let md = p.symlink_metadata()?;
                if md.is_dir() {
                    todo.push(p);
                    continue;
                }
                if md.nlink() < 2 {
                    continue;
                }
                let rel: Vec<&[u8]> = p
                    .strip_prefix(old)
                    .map_err(damaged)?
                    .iter()
                    .map(|c| c.as_bytes())
                    .collect();
                let Some((sub, rel)) = rel.split_first() else {
                    continue;
                };
                let sub = std::str::from_utf8(sub).map_err(damaged)?;
                self.copy_up_parents(sub, rel)?;
                let to = self.upper_path(sub, rel);
                unseen_in_parent(&to, || fs::rename(&p, &to))?;
                // Its base attribute may not have been flushed yet.
                self.meta().insert(to);
            }
        }
        Ok(())
    }

    /// What differs between what shows now and `root`, by path (`sub/a/b`,
    /// with every parent): what a rebase to `root` changes for the
    /// kernel's caches. None when it cannot tell (a name that is not
    /// UTF-8): then everything may have changed.
    pub fn changes_to(&self, root: &Root) -> io::Result<Option<HashMap<String, Change>>> {
        let Some(paths) = self.changed_paths(root)? else {
            return Ok(None);
        };
        let mut out = HashMap::new();
        for p in paths {
            let c = self.change_at(root, &p)?;
            out.insert(p, c);
        }
        Ok(Some(out))
    }

    /// How the file or directory at `path` (`sub/a/b`) changes when `root`
    /// shows instead: a file that stays a file changes only in the byte
    /// ranges written over the base and those where the two bases' chunks
    /// differ.
    fn change_at(&self, root: &Root, path: &str) -> io::Result<Change> {
        match self.kept_at(root, path) {
            // A file where the path's parent was (what shows has no such
            // path): all of it changes.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Change::Whole),
            r => r,
        }
    }

    fn kept_at(&self, root: &Root, path: &str) -> io::Result<Change> {
        let mut parts = path.split('/');
        let sub = parts.next().unwrap_or_default();
        let rel: Vec<&[u8]> = parts.map(str::as_bytes).collect();
        let Some((name, parent)) = rel.split_last() else {
            // A subdot's top.
            return Ok(Change::Kept(vec![(0, u64::MAX)]));
        };
        let new = self.root_entry(root, sub, parent, name)?;
        let (to, to_size) = match new {
            Some(DirEntry {
                content: Content::File(c),
                size,
                ..
            }) => (c, size),
            // A directory that stays one, and shows what the base had at
            // its path (not a directory moved there), keeps its inode and
            // the inodes below it: only its attributes and listing go.
            // What below it changes is listed on its own.
            Some(DirEntry {
                content: Content::Dir(_),
                ..
            }) if self.dir_in_place(sub, parent, name)? => {
                return Ok(Change::Kept(vec![(0, u64::MAX)]));
            }
            _ => return Ok(Change::Whole),
        };
        let (from, from_size, shown, mut ranges) = match self.find(sub, &rel)? {
            Found::Base(DirEntry {
                content: Content::File(c),
                size,
                ..
            }) => (c, size, size, Vec::new()),
            Found::Upper(md, Some(p)) if md.is_file() => {
                let shown = md.len();
                let mut dirty = allocated(&File::open(self.upper_path(sub, &rel))?, shown)?;
                if p.limit < shown {
                    dirty.push((p.limit, shown));
                }
                (p.content, p.size, shown, dirty)
            }
            // A whole upper file: any of its bytes may differ.
            Found::Upper(md, None) if md.is_file() => {
                return Ok(Change::Kept(vec![(0, u64::MAX)]));
            }
            _ => return Ok(Change::Whole),
        };
        if from != to {
            ranges.extend(
                self.reader()
                    .changed_ranges(&from, from_size, &to, to_size)
                    .map_err(damaged)?,
            );
        }
        if shown != to_size {
            ranges.push((shown.min(to_size), u64::MAX));
        }
        Ok(Change::Kept(merge_ranges(ranges)))
    }

    /// The entry `name` in directory `parent` of subdot `sub` of `root`.
    fn root_entry(
        &self,
        root: &Root,
        sub: &str,
        parent: &[&[u8]],
        name: &[u8],
    ) -> io::Result<Option<DirEntry>> {
        let mut tree = root.get(sub).map(|t| t.tree);
        for c in parent {
            tree = match tree {
                Some(t) => match self.reader().lookup(&t, c).map_err(damaged)? {
                    Some(DirEntry {
                        content: Content::Dir(t),
                        ..
                    }) => Some(t),
                    _ => None,
                },
                None => None,
            };
        }
        match tree {
            Some(t) => self.reader().lookup(&t, name).map_err(damaged),
            None => Ok(None),
        }
    }

    /// Whether directory `parent/name` shows a directory whose entries
    /// not in the upper tree are the base's at that same path: it is
    /// only in the base, or new, or continues the base's own directory
    /// there (not one moved there from elsewhere).
    fn dir_in_place(&self, sub: &str, parent: &[&[u8]], name: &[u8]) -> io::Result<bool> {
        let mut rel = parent.to_vec();
        rel.push(name);
        if !self
            .stat(sub, &rel)?
            .is_some_and(|s| s.kind == EntryKind::Dir)
        {
            return Ok(false);
        }
        Ok(match self.origin(&self.upper_path(sub, &rel))? {
            None | Some(None) => true,
            Some(Some(origin)) => matches!(
                self.root_entry(&self.base().root, sub, parent, name)?,
                Some(DirEntry { content: Content::Dir(t), .. }) if t == origin
            ),
        })
    }

    /// The paths (`sub/a/b`, with every parent) whose content or entries
    /// differ between what shows now and `root`, or None when it cannot
    /// tell.
    fn changed_paths(&self, root: &Root) -> io::Result<Option<std::collections::HashSet<String>>> {
        let mut out = std::collections::HashSet::new();
        let mut add = |sub: &str, path: &str| -> bool {
            if path.contains('\u{FFFD}') {
                return false;
            }
            let mut at = sub.to_string();
            out.insert(at.clone());
            for part in path
                .trim_end_matches('/')
                .split('/')
                .filter(|p| !p.is_empty())
            {
                at.push('/');
                at.push_str(part);
                out.insert(at.clone());
            }
            true
        };
        let base = self.base();
        let subs: std::collections::BTreeSet<&String> =
            base.root.keys().chain(root.keys()).collect();
        for sub in subs {
            let mut changed = Vec::new();
            crate::tree::diff::diff(
                &self.store,
                base.root.get(sub).map(|t| &t.tree),
                root.get(sub).map(|t| &t.tree),
                "",
                &mut changed,
            )
            .map_err(damaged)?;
            for c in changed {
                if !add(sub, &c.path) {
                    return Ok(None);
                }
            }
            // What was changed over the base goes too.
            let top = self.upper.join(sub);
            let mut todo = vec![top.clone()];
            while let Some(d) = todo.pop() {
                let Ok(entries) = fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let p = e.path();
                    let rel = p.strip_prefix(&top).map_err(damaged)?;
                    let Some(rel) = rel.to_str() else {
                        return Ok(None);
                    };
                    if !add(sub, rel) {
                        return Ok(None);
                    }
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        todo.push(p);
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Whether what shows is exactly the base (nothing changed, or only
    /// changed back). Builds the trees of changed subdots to tell.
    pub fn is_clean(&self, chunker: &Chunker) -> io::Result<bool> {
        if fs::read_dir(&self.upper)?.next().is_none() {
            return Ok(true);
        }
        for sub in self.subdots() {
            let (tree, _) = self.build_top(&sub, chunker)?;
            if self.base().root.get(&sub).map(|t| t.tree) != Some(tree) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The top directory of `sub` as it shows now, with its tree built.
    pub fn top(&self, sub: &str, chunker: &Chunker) -> io::Result<Top> {
        let (tree, _) = self.build_top(sub, chunker)?;
        let s = self.stat(sub, &[])?.ok_or_else(|| errno(libc::ENOENT))?;
        Ok(Top {
            tree,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            mtime_ns: s.mtime_ns,
        })
    }

    /// Bytes of data written over the base and not committed: what the
    /// upper directory's files hold (their allocated blocks, so a page
    /// written into a large base file counts as a page, and at most their
    /// size, so a 3-byte file counts 3 bytes, not a block).
    pub fn written_bytes(&self) -> io::Result<u64> {
        let mut total = 0u64;
        let mut stack = vec![self.upper.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                let md = e.metadata()?;
                if md.is_dir() {
                    stack.push(e.path());
                } else if md.is_file() {
                    let held = md.blocks().saturating_mul(512).min(md.len());
                    total = total.saturating_add(held);
                }
            }
        }
        Ok(total)
    }

    /// Shows a new subdot, empty as `top` (a dot's subdots are the base's
    /// top directories).
    pub fn add_subdot(&self, sub: &str, top: Top) {
        self.base
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .root
            .entry(sub.to_string())
            .or_insert(top);
    }

    /// The subdots the base has.
    pub fn subdots(&self) -> Vec<String> {
        self.base().root.keys().cloned().collect()
    }
}

fn rechunk_err(e: RechunkError) -> io::Error {
    match e {
        RechunkError::Read(e) => e,
        RechunkError::Tree(e) => damaged(e),
    }
}

fn top_stat(top: &Top) -> Option<Stat> {
    Some(Stat {
        kind: EntryKind::Dir,
        mode: top.mode,
        uid: top.uid,
        gid: top.gid,
        mtime_ns: top.mtime_ns,
        size: 0,
        rdev: 0,
        links: 1,
        file: None,
    })
}

fn own_filtered(x: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    x.into_iter()
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX))
        .collect()
}

/// Runs `f`, which adds `up` to its directory, keeping that directory's
/// modification time: copying up is no change a program made there.
fn unseen_in_parent<R>(up: &Path, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
    let Some(parent) = up.parent() else {
        return f();
    };
    let md = fs::symlink_metadata(parent)?;
    let r = f()?;
    set_mtime(parent, md.mtime() * 1_000_000_000 + md.mtime_nsec())?;
    Ok(r)
}

/// The entry of tree `name` for upper entry `path` (of metadata `md`)
/// holding `content`.
fn upper_entry(
    name: Vec<u8>,
    path: &Path,
    md: &fs::Metadata,
    content: Content,
) -> io::Result<DirEntry> {
    let st = stat_of(md);
    let size = match &content {
        Content::Symlink(t) => t.len() as u64,
        Content::File(_) => md.len(),
        _ => 0,
    };
    Ok(DirEntry {
        name,
        kind: st.kind,
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime_ns: st.mtime_ns,
        size,
        content,
        xattrs: own_filtered(read_xattrs(path)?),
    })
}

/// What a switch changes at a path, for the kernel's caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The entry itself (added, removed, another kind) or all of it.
    Whole,
    /// An entry that stays what it is (a file, a directory): its
    /// attributes and these byte ranges (an end of u64::MAX: to the end).
    Kept(Vec<(u64, u64)>),
}

/// What changed in either of two sets of changes (None: anything may
/// have).
pub fn either(
    a: Option<HashMap<String, Change>>,
    b: Option<HashMap<String, Change>>,
) -> Option<HashMap<String, Change>> {
    let (mut a, b) = (a?, b?);
    for (path, c) in b {
        match (a.get_mut(&path), c) {
            (None, c) => {
                a.insert(path, c);
            }
            (Some(Change::Kept(x)), Change::Kept(y)) => x.extend(y),
            (Some(w), _) => *w = Change::Whole,
        }
    }
    Some(a)
}

/// The allocated (written) byte ranges of upper file `f` below `size`.
fn allocated(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(data) = seek(f, at, rustix::fs::SeekFrom::Data)?.filter(|d| *d < size) else {
            break;
        };
        let hole = seek(f, data, rustix::fs::SeekFrom::Hole)?
            .unwrap_or(size)
            .min(size);
        out.push((data, hole));
        at = hole;
    }
    Ok(out)
}

/// Ranges sorted and joined where they overlap or lie within 64 KiB of
/// each other (one invalidation costs more than the pages between).
fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    const GAP: u64 = 64 << 10;
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(GAP) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Gives an upper entry the attributes of the base entry it continues.
fn set_xattrs(path: &Path, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    for (k, v) in xattrs {
        rustix::fs::lsetxattr(
            path,
            OsStr::from_bytes(k),
            v,
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    Ok(())
}

/// Frees `len` bytes at `off` of an upper file; they read as zeros.
#[cfg(target_os = "linux")]
fn punch(f: &File, off: u64, len: u64) -> io::Result<()> {
    let flags = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
    Ok(rustix::fs::fallocate(f, flags, off, len)?)
}

fn seek(f: &File, at: u64, how: fn(u64) -> rustix::fs::SeekFrom) -> io::Result<Option<u64>> {
    match rustix::fs::seek(f, how(at)) {
        Ok(p) => Ok(Some(p)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The permission bits a regular file with `md` keeps when a process
/// without CAP_FSETID changes it, as on a local filesystem, if they
/// change: it drops set-user-ID, and set-group-ID when the file is
/// group-executable or the process is not in its group (`in_group`).
fn without_set_ids(md: &fs::Metadata, in_group: &dyn Fn(u32) -> bool) -> Option<u32> {
    use super::{GROUP_EXEC, SET_GID, SET_UID};
    let mode = md.mode();
    let mut kept = mode & !SET_UID;
    if mode & SET_GID != 0 && (mode & GROUP_EXEC != 0 || !in_group(md.gid())) {
        kept &= !SET_GID;
    }
    (md.is_file() && kept != mode).then_some(kept & 0o7777)
}

/// Gives an upper entry the owner, mode, extended attributes and time of
/// what it continues.
fn apply_stat(path: &Path, s: &Stat, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
    // In this order: a chown drops set-ID bits and file capabilities
    // (security.capability), even root's.
    if fsmeta::is_root() {
        std::os::unix::fs::lchown(path, Some(s.uid), Some(s.gid))?;
    }
    if s.kind != EntryKind::Symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(s.mode))?;
    }
    set_xattrs(path, xattrs)?;
    set_mtime(path, s.mtime_ns)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::noise;
    use crate::progress::Silent;
    use crate::workspace::cache::StatCache;
    use crate::workspace::scan::Scanner;
    use proptest::prelude::*;

    const SUB: &str = "s";

    fn chunker() -> Chunker {
        Chunker::new(ChunkParams {
            min: 2048,
            avg: 8192,
            max: 32768,
        })
    }

    /// A path of one or two components from a small set of names.
    fn path() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let name = prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        prop::collection::vec(name, 1..3)
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(Vec<Vec<u8>>),
        Write(Vec<Vec<u8>>, u64, usize, u64),
        Truncate(Vec<Vec<u8>>, u64),
        Mkdir(Vec<Vec<u8>>),
        Unlink(Vec<Vec<u8>>),
        Rmdir(Vec<Vec<u8>>),
        Rename(Vec<Vec<u8>>, Vec<Vec<u8>>),
        Symlink(Vec<Vec<u8>>),
        Chmod(Vec<Vec<u8>>, u32),
        SetXattr(Vec<Vec<u8>>, u8),
        Link(Vec<Vec<u8>>, Vec<Vec<u8>>),
        Exchange(Vec<Vec<u8>>, Vec<Vec<u8>>),
        /// fallocate(2) with a mode of `FALLOC_MODES`.
        Fallocate(Vec<Vec<u8>>, usize, u64, u64),
        /// A commit: the tree built, then the overlay rebased on it.
        Commit,
    }

    const FALLOC_MODES: [i32; 4] = [
        0,
        libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_ZERO_RANGE,
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => path().prop_map(Op::Create),
            4 => (path(), 0u64..200_000, 1usize..20_000, any::<u64>())
                .prop_map(|(p, o, n, s)| Op::Write(p, o, n, s)),
            1 => (path(), 0u64..200_000).prop_map(|(p, n)| Op::Truncate(p, n)),
            1 => path().prop_map(Op::Mkdir),
            1 => path().prop_map(Op::Unlink),
            1 => path().prop_map(Op::Rmdir),
            1 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
            1 => path().prop_map(Op::Symlink),
            1 => (path(), 0u32..0o100).prop_map(|(p, m)| Op::Chmod(p, 0o700 | m)),
            1 => (path(), any::<u8>()).prop_map(|(p, v)| Op::SetXattr(p, v)),
            1 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
            1 => (path(), path()).prop_map(|(a, b)| Op::Exchange(a, b)),
            2 => (path(), 0..FALLOC_MODES.len(), 0u64..200_000, 1u64..60_000)
                .prop_map(|(p, m, o, n)| Op::Fallocate(p, m, o, n)),
            1 => Just(Op::Commit),
        ]
    }

    fn parts(p: &[Vec<u8>]) -> Vec<&[u8]> {
        p.iter().map(Vec::as_slice).collect()
    }

    fn real(dir: &Path, op: &Op) -> io::Result<()> {
        let at = |p: &[Vec<u8>]| join(dir, &parts(p));
        match op {
            Op::Create(p) => OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(at(p))
                .map(drop),
            Op::Write(p, off, n, seed) => {
                let f = OpenOptions::new().write(true).open(at(p))?;
                f.write_all_at(&noise(*n, *seed), *off)
            }
            Op::Truncate(p, n) => OpenOptions::new().write(true).open(at(p))?.set_len(*n),
            Op::Mkdir(p) => fs::create_dir(at(p)),
            Op::Unlink(p) => fs::remove_file(at(p)),
            Op::Rmdir(p) => fs::remove_dir(at(p)),
            Op::Rename(a, b) => fs::rename(at(a), at(b)),
            Op::Symlink(p) => std::os::unix::fs::symlink("target", at(p)),
            Op::Chmod(p, m) => {
                if fs::symlink_metadata(at(p))?.is_symlink() {
                    return Err(errno(libc::EPERM));
                }
                fs::set_permissions(at(p), fs::Permissions::from_mode(*m))
            }
            Op::SetXattr(p, v) => Ok(rustix::fs::lsetxattr(
                at(p),
                "user.t",
                &[*v],
                rustix::fs::XattrFlags::empty(),
            )?),
            Op::Link(a, b) => fs::hard_link(at(a), at(b)),
            Op::Exchange(a, b) => Ok(rustix::fs::renameat_with(
                rustix::fs::CWD,
                at(a),
                rustix::fs::CWD,
                at(b),
                rustix::fs::RenameFlags::EXCHANGE,
            )?),
            Op::Fallocate(p, m, off, len) => {
                let f = OpenOptions::new().write(true).open(at(p))?;
                let flags = rustix::fs::FallocateFlags::from_bits_retain(FALLOC_MODES[*m] as u32);
                Ok(rustix::fs::fallocate(&f, flags, *off, *len)?)
            }
            Op::Commit => Ok(()),
        }
    }

    fn overlay(o: &Overlay, op: &Op) -> io::Result<()> {
        match op {
            Op::Create(p) => o.create(SUB, &parts(p), 0o644),
            Op::Write(p, off, n, seed) => {
                match o.stat(SUB, &parts(p))? {
                    None => return Err(errno(libc::ENOENT)),
                    Some(s) if s.kind == EntryKind::Dir => return Err(errno(libc::EISDIR)),
                    _ => {}
                }
                o.write(SUB, &parts(p), *off, &noise(*n, *seed), None)
            }
            Op::Truncate(p, n) => {
                match o.stat(SUB, &parts(p))? {
                    None => return Err(errno(libc::ENOENT)),
                    Some(s) if s.kind == EntryKind::Dir => return Err(errno(libc::EISDIR)),
                    _ => {}
                }
                o.truncate(SUB, &parts(p), *n)
            }
            Op::Mkdir(p) => o.mkdir(SUB, &parts(p), 0o755),
            Op::Unlink(p) => o.unlink(SUB, &parts(p)),
            Op::Rmdir(p) => o.rmdir(SUB, &parts(p)),
            Op::Rename(a, b) => o.rename(SUB, &parts(a), &parts(b)),
            Op::Symlink(p) => o.symlink(SUB, &parts(p), b"target"),
            Op::Chmod(p, m) => match o.stat(SUB, &parts(p))? {
                None => Err(errno(libc::ENOENT)),
                Some(s) if s.kind == EntryKind::Symlink => Err(errno(libc::EPERM)),
                _ => o.set_mode(SUB, &parts(p), *m),
            },
            Op::SetXattr(p, v) => match o.stat(SUB, &parts(p))? {
                None => Err(errno(libc::ENOENT)),
                Some(s) if s.kind == EntryKind::Symlink => Err(errno(libc::EPERM)),
                _ => o.set_xattr(SUB, &parts(p), b"user.t", &[*v]),
            },
            Op::Link(a, b) => o.link(SUB, &parts(a), &parts(b)),
            Op::Exchange(a, b) => o.exchange(SUB, &parts(a), &parts(b)),
            Op::Fallocate(p, m, off, len) => {
                o.fallocate(SUB, &parts(p), *off, *len, FALLOC_MODES[*m])
            }
            Op::Commit => {
                let mut root = o.base().root.clone();
                let top = o.top(SUB, &chunker())?;
                root.insert(SUB.into(), top);
                o.rebase(root, true)
            }
        }
    }

    /// Everything a directory shows, as lines, through the real file
    /// system or the overlay.
    fn shown_real(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![(dir.to_path_buf(), String::new())];
        while let Some((d, rel)) = todo.pop() {
            let mut names: Vec<_> = fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                let p = d.join(&n);
                let md = fs::symlink_metadata(&p).unwrap();
                let st = stat_of(&md);
                let r = format!("{rel}/{}", n.to_string_lossy());
                let what = match st.kind {
                    EntryKind::File => blake3::hash(&fs::read(&p).unwrap()).to_hex().to_string(),
                    EntryKind::Symlink => fs::read_link(&p).unwrap().display().to_string(),
                    _ => String::new(),
                };
                let x = own_filtered(read_xattrs(&p).unwrap());
                out.push(format!(
                    "{r} {:?} {:o} {} {} {what} {x:?}",
                    st.kind, st.mode, st.size, st.links
                ));
                if st.kind == EntryKind::Dir {
                    todo.push((p, r));
                }
            }
        }
        out.sort();
        out
    }

    fn shown_overlay(o: &Overlay) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo: Vec<Vec<Vec<u8>>> = vec![vec![]];
        while let Some(dir) = todo.pop() {
            for (name, _) in o.list(SUB, &parts(&dir)).unwrap() {
                let mut p = dir.clone();
                p.push(name);
                let st = o.stat(SUB, &parts(&p)).unwrap().unwrap();
                let r: String = p
                    .iter()
                    .map(|c| format!("/{}", String::from_utf8_lossy(c)))
                    .collect();
                let what = match st.kind {
                    EntryKind::File => {
                        let data = o.read(SUB, &parts(&p), 0, st.size as usize).unwrap();
                        blake3::hash(&data).to_hex().to_string()
                    }
                    EntryKind::Symlink => "target".into(),
                    _ => String::new(),
                };
                let x = o.xattrs(SUB, &parts(&p)).unwrap();
                out.push(format!(
                    "{r} {:?} {:o} {} {} {what} {x:?}",
                    st.kind, st.mode, st.size, st.links
                ));
                if st.kind == EntryKind::Dir {
                    todo.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// The same tree with every time set to zero, to compare contents.
    fn timeless(store: &Store, tree: TreeId) -> TreeId {
        let entries: Vec<DirEntry> = read_dir(store, &tree)
            .unwrap()
            .into_iter()
            .map(|mut e| {
                e.mtime_ns = 0;
                if let Content::Dir(t) = e.content {
                    e.content = Content::Dir(timeless(store, t));
                }
                e
            })
            .collect();
        write_dir(store, &entries).unwrap()
    }

    fn scan(store: &Store, dir: &Path) -> TreeId {
        let cache = StatCache::new(store, b"t\0s\0".to_vec());
        let scanned = Scanner::new(store, chunker(), &cache, false, &Silent)
            .scan(dir)
            .unwrap();
        scanned.top.tree
    }

    /// A file built by a commit's first pass and written again before the
    /// pass under the barrier: the second build re-chunks what was
    /// written in between, and equals a scan.
    #[test]
    fn a_second_build_sees_what_was_written_since_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&tmp.path().join("home"), "test").unwrap());
        let dir = tmp.path().join("real");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f"), noise(200_000, 1)).unwrap();
        let mut root = Root::new();
        root.insert(
            SUB.into(),
            Top {
                tree: scan(&store, &dir),
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
            },
        );
        let o = Overlay::open(store.clone(), &tmp.path().join("upper"), root).unwrap();
        for (i, at) in [1000u64, 150_000, 5].into_iter().enumerate() {
            let data = noise(3000, 10 + i as u64);
            o.write(SUB, &[b"f"], at, &data, None).unwrap();
            let f = OpenOptions::new().write(true).open(dir.join("f")).unwrap();
            f.write_all_at(&data, at).unwrap();
            let (built, _) = o.build_top(SUB, &chunker()).unwrap();
            prop_assert_eq_plain(&store, built, scan(&store, &dir));
        }
    }

    /// Builds racing writes, truncations and renames (as a commit's free
    /// passes race a database) leave what they kept such that a build
    /// with nothing racing equals a build from scratch.
    #[test]
    fn builds_racing_changes_keep_only_what_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&tmp.path().join("home"), "test").unwrap());
        let dir = tmp.path().join("real");
        fs::create_dir(&dir).unwrap();
        for i in 0..4 {
            fs::write(dir.join(format!("f{i}")), noise(300_000, i)).unwrap();
        }
        let mut root = Root::new();
        let top = Top {
            tree: scan(&store, &dir),
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
        };
        root.insert(SUB.into(), top);
        let upper = tmp.path().join("upper");
        let o = Arc::new(Overlay::open(store.clone(), &upper, root.clone()).unwrap());
        for round in 0..12u64 {
            let writer = {
                let o = o.clone();
                std::thread::spawn(move || {
                    let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..300 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let f = format!("f{}", x % 4);
                        let g = format!("f{}", (x >> 8) % 4);
                        let at = (x >> 16) % 320_000;
                        let _ = match (x >> 40) % 8 {
                            0 => o.rename(SUB, &[f.as_bytes()], &[b"tmp"]).and_then(|()| {
                                o.rename(SUB, &[g.as_bytes()], &[f.as_bytes()])?;
                                o.rename(SUB, &[b"tmp"], &[g.as_bytes()])
                            }),
                            1 => o.truncate(SUB, &[f.as_bytes()], at),
                            _ => o.write(SUB, &[f.as_bytes()], at, &noise(3000, x), None),
                        };
                    }
                })
            };
            while !writer.is_finished() {
                // A file renamed away mid-build fails it, as it may a
                // commit's free pass, which then leaves the rest to the
                // next.
                let _ = o.build_top(SUB, &chunker());
            }
            writer.join().unwrap();
            let (kept, _) = o.build_top(SUB, &chunker()).unwrap();
            let fresh = Overlay::open(store.clone(), &upper, root.clone()).unwrap();
            let (scratch, _) = fresh.build_top(SUB, &chunker()).unwrap();
            assert_eq!(kept, scratch, "round {round}");
        }
    }

    fn prop_assert_eq_plain(store: &Store, a: TreeId, b: TreeId) {
        assert_eq!(timeless(store, a), timeless(store, b));
    }

    proptest! {
        /// The partial-file attribute read back from disk decodes or fails
        /// cleanly whatever it holds, and round-trips what was written.
        #[test]
        fn partial_bases_decode_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..80), size in any::<u64>(), limit in any::<u64>()) {
            let _ = PartialBase::decode(&bytes);
            let p = PartialBase { content: ContentRef::Chunk(crate::id::ChunkId(Id::of(&bytes))), size, limit };
            prop_assert_eq!(PartialBase::decode(&p.encode()).unwrap(), p);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any sequence of changes shows through the overlay as on a local
        /// directory, after every step; and the tree built from the overlay
        /// is the tree a scan of that directory gives, id for id.
        #[test]
        fn the_overlay_behaves_as_a_local_directory(
            files in prop::collection::vec((path(), 0usize..150_000, any::<u64>()), 0..6),
            ops in prop::collection::vec(op(), 1..25),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(&tmp.path().join("home"), "test").unwrap());
            let dir = tmp.path().join("real");
            fs::create_dir(&dir).unwrap();
            for (p, len, seed) in &files {
                let at = join(&dir, &parts(p));
                if let Some(parent) = at.parent() {
                    if fs::create_dir_all(parent).is_err() {
                        continue;
                    }
                }
                if at.exists() {
                    continue;
                }
                fs::write(&at, noise(*len, *seed)).unwrap();
            }
            let base = scan(&store, &dir);
            let mut root = Root::new();
            let md = fs::metadata(&dir).unwrap();
            root.insert(SUB.into(), Top {
                tree: base,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: 0,
            });
            let o = Overlay::open(store.clone(), &tmp.path().join("upper"), root).unwrap();
            prop_assert_eq!(shown_overlay(&o), shown_real(&dir));
            for (i, op) in ops.iter().enumerate() {
                // Builds along the way, as a commit's first pass does, so
                // that later ones may reuse what they built.
                if i % 3 == 2 {
                    o.build_top(SUB, &chunker()).unwrap();
                }
                let want = real(&dir, op);
                let got = overlay(&o, op);
                prop_assert_eq!(got.is_ok(), want.is_ok(), "{:?}: overlay {:?}, local {:?}", op, got, want);
                prop_assert_eq!(shown_overlay(&o), shown_real(&dir), "after {:?}", op);
            }
            let (built, _) = o.build_top(SUB, &chunker()).unwrap();
            let scanned = scan(&store, &dir);
            prop_assert_eq!(timeless(&store, built), timeless(&store, scanned));
        }
    }
}
