//! Materializing a tree into a working directory, touching only what
//! differs: entries already right on disk (known through the stat cache)
//! are left alone, files whose old content is known are patched chunk by
//! chunk, and only missing or different entries are written. Entries are
//! processed in parallel.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;

use super::cache::{Stat, StatCache};
use super::fsmeta::{is_root, mknod, set_mtime, sync_filesystem, write_xattrs, zero_range};
use super::{join_rel, read_err, write_err, Result};
use crate::progress::Progress;
use crate::tree::chunks::{chunk_bytes, for_each_leaf_group, ContentRef, Leaf};
use crate::tree::commit::Top;
use crate::tree::dir::{read_dir, Content, DirEntry, EntryKind};
use crate::tree::Objects;

/// A change to the stat cache: put an entry, or delete a path and
/// everything under it.
pub enum CacheOp {
    Put(Vec<u8>, Vec<u8>),
    DeleteTree(Vec<u8>),
}

pub struct Materializer<'a> {
    objects: &'a dyn Objects,
    cache: &'a StatCache<'a>,
    progress: &'a dyn Progress,
    as_root: bool,
    ops: Mutex<Vec<CacheOp>>,
}

impl<'a> Materializer<'a> {
    pub fn new(
        objects: &'a dyn Objects,
        cache: &'a StatCache<'a>,
        progress: &'a dyn Progress,
    ) -> Materializer<'a> {
        Materializer {
            objects,
            cache,
            progress,
            as_root: is_root(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Makes the directory `root` hold exactly `top` (or be empty when
    /// `top` is None). Returns the stat cache changes to record.
    pub fn apply(self, root: &Path, top: Option<&Top>) -> Result<Vec<CacheOp>> {
        super::pool().install(|| self.apply_here(root, top))
    }

    fn apply_here(self, root: &Path, top: Option<&Top>) -> Result<Vec<CacheOp>> {
        fs::create_dir_all(root).map_err(write_err(root))?;
        match top {
            Some(top) => {
                self.sync_dir(root, b"", &top.tree, 0)?;
                self.set_attrs(root, top.mode, top.uid, top.gid, &[])?;
                set_mtime(root, top.mtime_ns).map_err(write_err(root))?;
            }
            None => {
                self.ensure_writable(root)?;
                for entry in fs::read_dir(root).map_err(read_err(root))? {
                    let entry = entry.map_err(read_err(root))?;
                    remove(&entry.path())?;
                }
                self.ops
                    .lock()
                    .expect("ops lock")
                    .push(CacheOp::DeleteTree(Vec::new()));
            }
        }
        // The stat cache entries returned vouch for what is on disk: make it
        // so before anyone records them.
        sync_filesystem(root).map_err(write_err(root))?;
        Ok(self.ops.into_inner().expect("ops lock"))
    }

    /// A directory whose entries change must be writable by its owner while
    /// they do; its own mode is set again once its entries are done.
    fn ensure_writable(&self, dir: &Path) -> Result<()> {
        if self.as_root {
            return Ok(());
        }
        let mode = fs::metadata(dir).map_err(read_err(dir))?.mode();
        if mode & 0o300 != 0o300 {
            fs::set_permissions(dir, fs::Permissions::from_mode((mode | 0o700) & 0o7777))
                .map_err(write_err(dir))?;
        }
        Ok(())
    }

    fn sync_dir(
        &self,
        abs: &Path,
        rel: &[u8],
        tree: &crate::id::TreeId,
        depth: usize,
    ) -> Result<()> {
        super::check_depth(depth, abs)?;
        let target = read_dir(self.objects, tree)?;
        self.ensure_writable(abs)?;
        let wanted: HashSet<&[u8]> = target.iter().map(|e| e.name.as_slice()).collect();
        let mut on_disk = HashMap::new();
        for entry in fs::read_dir(abs).map_err(read_err(abs))? {
            let entry = entry.map_err(read_err(abs))?;
            let name = entry.file_name();
            let path = entry.path();
            if wanted.contains(name.as_bytes()) {
                let md = fs::symlink_metadata(&path).map_err(read_err(&path))?;
                on_disk.insert(name.as_bytes().to_vec(), md);
            } else {
                remove(&path)?;
                self.forget(join_rel(rel, name.as_bytes()));
            }
        }
        target.par_iter().try_for_each(|e| {
            self.sync_entry(
                &abs.join(std::ffi::OsStr::from_bytes(&e.name)),
                &join_rel(rel, &e.name),
                e,
                on_disk.get(&e.name),
                depth,
            )
        })
    }

    fn forget(&self, rel: Vec<u8>) {
        self.ops
            .lock()
            .expect("ops lock")
            .push(CacheOp::DeleteTree(rel));
    }

    fn sync_entry(
        &self,
        path: &Path,
        rel: &[u8],
        e: &DirEntry,
        md: Option<&Metadata>,
        depth: usize,
    ) -> Result<()> {
        let ft = md.map(|m| m.file_type());
        let same_kind = match (e.kind, ft) {
            (_, None) => false,
            (EntryKind::Dir, Some(t)) => t.is_dir(),
            (EntryKind::File, Some(t)) => t.is_file(),
            (EntryKind::Symlink, Some(t)) => t.is_symlink(),
            (EntryKind::Fifo, Some(t)) => t.is_fifo(),
            (EntryKind::CharDevice, Some(t)) => t.is_char_device(),
            (EntryKind::BlockDevice, Some(t)) => t.is_block_device(),
        };
        let md = if same_kind { md } else { None };
        if ft.is_some() && !same_kind {
            remove(path)?;
            self.forget(rel.to_vec());
        }
        match &e.content {
            Content::Dir(tree) => {
                if md.is_none() {
                    fs::create_dir(path).map_err(write_err(path))?;
                }
                self.sync_dir(path, rel, tree, depth + 1)?;
                self.set_attrs(path, e.mode, e.uid, e.gid, &e.xattrs)?;
            }
            Content::File(content) => return self.sync_file(path, rel, e, content, md),
            Content::Symlink(target) => {
                let current = md.and_then(|_| fs::read_link(path).ok());
                if current.as_deref().map(|p| p.as_os_str().as_bytes()) != Some(target.as_slice()) {
                    if md.is_some() {
                        remove(path)?;
                    }
                    symlink(std::ffi::OsStr::from_bytes(target), path).map_err(write_err(path))?;
                }
                if self.as_root {
                    std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))
                        .map_err(write_err(path))?;
                }
                write_xattrs(path, &e.xattrs).map_err(write_err(path))?;
            }
            Content::Fifo | Content::Device(_) => {
                let rdev = if let Content::Device(r) = e.content {
                    r
                } else {
                    0
                };
                if md.is_some_and(|m| m.rdev() != rdev) {
                    remove(path)?;
                }
                if md.is_none() || md.is_some_and(|m| m.rdev() != rdev) {
                    let kind = match e.kind {
                        EntryKind::Fifo => rustix::fs::FileType::Fifo,
                        EntryKind::CharDevice => rustix::fs::FileType::CharacterDevice,
                        _ => rustix::fs::FileType::BlockDevice,
                    };
                    mknod(path, kind, e.mode, rdev).map_err(write_err(path))?;
                }
                self.set_attrs(path, e.mode, e.uid, e.gid, &e.xattrs)?;
            }
        }
        set_mtime(path, e.mtime_ns).map_err(write_err(path))
    }

    fn sync_file(
        &self,
        path: &Path,
        rel: &[u8],
        e: &DirEntry,
        content: &ContentRef,
        md: Option<&Metadata>,
    ) -> Result<()> {
        // What the file on disk holds, when the stat cache knows.
        let known = match md {
            Some(m) => self.cache.lookup(rel, &Stat::of(m))?,
            None => None,
        };
        let known = match known {
            Some(k) if k.object().map_or(Ok(true), |id| self.objects.has(&id))? => Some(k),
            _ => None,
        };
        if known == Some(*content) && md.is_some_and(|m| m.size() == e.size) {
            let m = md.expect("checked");
            if (m.mode() & 0o7777, m.uid(), m.gid(), Stat::of(m).mtime_ns)
                == (e.mode, e.uid, e.gid, e.mtime_ns)
            {
                self.progress.advance(e.size);
                return Ok(());
            }
        }
        let file = match (known, md) {
            (Some(old), Some(_)) if old != *content => {
                match OpenOptions::new().write(true).open(path) {
                    Ok(f) => {
                        self.patch(&f, path, &old, md.expect("checked").size(), content, e.size)?;
                        f
                    }
                    Err(_) => self.rewrite(path, content, e.size)?,
                }
            }
            // Content is right; only attributes change, which needs no write access.
            (Some(_), Some(_)) => File::open(path).map_err(write_err(path))?,
            _ => self.rewrite(path, content, e.size)?,
        };
        if self.as_root {
            std::os::unix::fs::fchown(&file, Some(e.uid), Some(e.gid)).map_err(write_err(path))?;
        }
        file.set_permissions(fs::Permissions::from_mode(e.mode))
            .map_err(write_err(path))?;
        write_xattrs(path, &e.xattrs).map_err(write_err(path))?;
        set_mtime(path, e.mtime_ns).map_err(write_err(path))?;
        let st = Stat::of(&file.metadata().map_err(read_err(path))?);
        self.ops.lock().expect("ops lock").push(CacheOp::Put(
            self.cache.key(rel),
            StatCache::entry(&st, content),
        ));
        Ok(())
    }

    /// Writes a file from scratch; zero runs stay holes.
    fn rewrite(&self, path: &Path, content: &ContentRef, size: u64) -> Result<File> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_err(path)(e)),
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(write_err(path))?;
        self.write_leaves(&file, path, content, size, &|_, _| true)?;
        file.set_len(size).map_err(write_err(path))?;
        Ok(file)
    }

    /// Rewrites only the leaves of `new` that differ from `old` at the same
    /// offset.
    fn patch(
        &self,
        file: &File,
        path: &Path,
        old: &ContentRef,
        old_size: u64,
        new: &ContentRef,
        size: u64,
    ) -> Result<()> {
        let mut before: HashMap<u64, Leaf> = HashMap::new();
        for_each_leaf_group(self.objects, old, old_size, &mut |mut off,
                                                               leaves|
         -> Result<()> {
            for l in leaves {
                before.insert(off, *l);
                off += l.len();
            }
            Ok(())
        })?;
        if size < old_size {
            file.set_len(size).map_err(write_err(path))?;
        }
        self.write_leaves(file, path, new, size, &|off, leaf| {
            before.get(&off) != Some(leaf)
        })?;
        file.set_len(size).map_err(write_err(path))
    }

    fn write_leaves(
        &self,
        file: &File,
        path: &Path,
        content: &ContentRef,
        size: u64,
        wanted: &(dyn Fn(u64, &Leaf) -> bool + Sync),
    ) -> Result<()> {
        let fresh = file.metadata().map(|m| m.len() == 0).unwrap_or(false);
        for_each_leaf_group(self.objects, content, size, &mut |off,
                                                               leaves|
         -> Result<()> {
            let mut at = Vec::with_capacity(leaves.len());
            let mut pos = off;
            for l in leaves {
                at.push((pos, *l));
                pos += l.len();
            }
            at.par_iter().try_for_each(|(pos, leaf)| {
                if wanted(*pos, leaf) {
                    match leaf {
                        Leaf::Chunk(id, n) => {
                            let data = chunk_bytes(self.objects, id, u64::from(*n))?;
                            file.write_all_at(&data, *pos).map_err(write_err(path))?;
                        }
                        // A fresh file already reads zeros there, as a hole.
                        Leaf::Zero(n) if !fresh => {
                            zero_range(file, *pos, *n).map_err(write_err(path))?
                        }
                        Leaf::Zero(_) => {}
                    }
                }
                self.progress.advance(leaf.len());
                Ok(())
            })
        })
    }

    fn set_attrs(
        &self,
        path: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<()> {
        if self.as_root {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(write_err(path))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_err(path))?;
        write_xattrs(path, xattrs).map_err(write_err(path))
    }
}

fn remove(path: &Path) -> Result<()> {
    let md = fs::symlink_metadata(path).map_err(read_err(path))?;
    if md.is_dir() {
        // A read-only directory cannot have its entries removed.
        make_writable(path);
        fs::remove_dir_all(path).map_err(write_err(path))
    } else {
        fs::remove_file(path).map_err(write_err(path))
    }
}

/// Makes a directory and every directory below it writable, so that
/// their entries can be removed (iteratively: trees may be deep).
fn make_writable(dir: &Path) {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    todo.push(e.path());
                }
            }
        }
    }
}
