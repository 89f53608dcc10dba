//! `dot mount` of a dot with uncommitted changes: what its plain
//! directory holds beyond the branch's commit is carried into the
//! overlay, so the mount shows the same content (docs/design.md 16.6).
//!
//! The plain directory was built as a tree in memory; the walk compares
//! it with the commit's tree, skips every subtree whose id is equal, and
//! makes the overlay hold what differs: entries removed, files copied
//! from the plain directory, attributes set.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::FileType;

use super::overlay::Overlay;
use crate::tree::commit::Top;
use crate::tree::dir::{read_dir, Content, DirEntry, EntryKind};
use crate::tree::Objects;

/// Bytes copied per write into the overlay.
const PIECE: usize = 1 << 20;

/// Makes subdot `sub` of `overlay` (showing `base`) show `now`, the tree
/// of the plain directory `plain`, whose objects `objects` holds.
pub fn carry_in(
    overlay: &Overlay,
    objects: &dyn Objects,
    sub: &str,
    plain: &Path,
    base: &Top,
    now: &Top,
) -> io::Result<()> {
    let walk = Walk {
        overlay,
        objects,
        sub,
        plain,
    };
    if base.mode != now.mode {
        overlay.set_mode(sub, &[], now.mode)?;
    }
    if (base.uid, base.gid) != (now.uid, now.gid) {
        overlay.set_owner(sub, &[], Some(now.uid), Some(now.gid))?;
    }
    walk.dir(&mut Vec::new(), Some(&base.tree), &now.tree)
}

struct Walk<'a> {
    overlay: &'a Overlay,
    objects: &'a dyn Objects,
    sub: &'a str,
    plain: &'a Path,
}

impl Walk<'_> {
    fn entries(&self, tree: Option<&crate::id::TreeId>) -> io::Result<Vec<DirEntry>> {
        match tree {
            Some(t) => read_dir(self.objects, t).map_err(io::Error::other),
            None => Ok(Vec::new()),
        }
    }

    /// Makes the directory at `rel` (which shows tree `was`) show `now`.
    fn dir(
        &self,
        rel: &mut Vec<Vec<u8>>,
        was: Option<&crate::id::TreeId>,
        now: &crate::id::TreeId,
    ) -> io::Result<()> {
        if was == Some(now) {
            return Ok(());
        }
        let (old, new) = (self.entries(was)?, self.entries(Some(now))?);
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let order = match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) => a.name.cmp(&b.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            let (a, b) = match order {
                std::cmp::Ordering::Less => (old.get(i), None),
                std::cmp::Ordering::Greater => (None, new.get(j)),
                std::cmp::Ordering::Equal => (old.get(i), new.get(j)),
            };
            i += usize::from(a.is_some());
            j += usize::from(b.is_some());
            rel.push(a.or(b).expect("an entry").name.clone());
            let done = self.entry(rel, a, b);
            rel.pop();
            done?;
        }
        Ok(())
    }

    /// Makes the name at `rel` show `b` (absent: nothing) instead of `a`.
    fn entry(
        &self,
        rel: &mut Vec<Vec<u8>>,
        a: Option<&DirEntry>,
        b: Option<&DirEntry>,
    ) -> io::Result<()> {
        if a == b {
            return Ok(());
        }
        let same_kind = a.zip(b).is_some_and(|(a, b)| a.kind == b.kind);
        let (Some(b), true) = (b, same_kind) else {
            if let Some(a) = a {
                self.remove(rel, a)?;
            }
            return match b {
                Some(b) => self.add(rel, b),
                None => Ok(()),
            };
        };
        let a = a.expect("same kind");
        match (&a.content, &b.content) {
            (Content::Dir(x), Content::Dir(y)) => {
                self.attrs(rel, a, b)?;
                self.dir(rel, Some(x), y)
            }
            (Content::File(x), Content::File(y)) if x == y => self.attrs(rel, a, b),
            _ => {
                self.remove(rel, a)?;
                self.add(rel, b)
            }
        }
    }

    fn path(rel: &[Vec<u8>]) -> Vec<&[u8]> {
        rel.iter().map(Vec::as_slice).collect()
    }

    fn remove(&self, rel: &mut Vec<Vec<u8>>, e: &DirEntry) -> io::Result<()> {
        let Content::Dir(t) = &e.content else {
            return self.overlay.unlink(self.sub, &Self::path(rel));
        };
        for child in self.entries(Some(t))? {
            rel.push(child.name.clone());
            let done = self.remove(rel, &child);
            rel.pop();
            done?;
        }
        self.overlay.rmdir(self.sub, &Self::path(rel))
    }

    // (mode_t is narrower than u32 on macOS)
    #[allow(clippy::unnecessary_cast)]
    fn add(&self, rel: &mut Vec<Vec<u8>>, e: &DirEntry) -> io::Result<()> {
        let (o, sub) = (self.overlay, self.sub);
        let at = Self::path(rel);
        match &e.content {
            Content::Dir(t) => {
                // Attributes last: a mode without write permission would
                // keep a daemon that is not root from filling it.
                o.mkdir(sub, &at, 0o700)?;
                self.dir(rel, None, t)?;
            }
            Content::File(_) => {
                o.create(sub, &at, e.mode)?;
                self.copy(rel)?;
            }
            Content::Symlink(target) => o.symlink(sub, &at, target)?,
            Content::Device(rdev) => {
                let kind = match e.kind {
                    EntryKind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::CharacterDevice,
                };
                o.mknod(sub, &at, e.mode | kind.as_raw_mode() as u32, *rdev)?;
            }
            Content::Fifo => o.mknod(sub, &at, e.mode | FileType::Fifo.as_raw_mode() as u32, 0)?,
        }
        self.set_attrs(rel, e)
    }

    /// Copies the plain file at `rel` into the overlay's new file there.
    fn copy(&self, rel: &[Vec<u8>]) -> io::Result<()> {
        let mut path = self.plain.to_path_buf();
        for name in rel {
            path.push(std::ffi::OsStr::from_bytes(name));
        }
        let mut f = File::open(&path)?;
        let mut buf = vec![0; PIECE];
        let mut off = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.overlay
                .write(self.sub, &Self::path(rel), off, &buf[..n], None)?;
            off += n as u64;
        }
    }

    /// Attributes of `b` that differ from `a`'s.
    fn attrs(&self, rel: &[Vec<u8>], a: &DirEntry, b: &DirEntry) -> io::Result<()> {
        let at = Self::path(rel);
        let o = self.overlay;
        if a.mode != b.mode {
            o.set_mode(self.sub, &at, b.mode)?;
        }
        if (a.uid, a.gid) != (b.uid, b.gid) {
            o.set_owner(self.sub, &at, Some(b.uid), Some(b.gid))?;
        }
        if a.xattrs != b.xattrs {
            for (name, _) in &a.xattrs {
                if !b.xattrs.iter().any(|(n, _)| n == name) {
                    o.remove_xattr(self.sub, &at, name)?;
                }
            }
            for (name, value) in &b.xattrs {
                o.set_xattr(self.sub, &at, name, value)?;
            }
        }
        if b.kind != EntryKind::Dir && a.mtime_ns != b.mtime_ns {
            o.set_mtime(self.sub, &at, b.mtime_ns)?;
        }
        Ok(())
    }

    /// Every attribute of `e` on the entry the overlay just made for it
    /// (with the daemon's owner and no extended attributes).
    fn set_attrs(&self, rel: &[Vec<u8>], e: &DirEntry) -> io::Result<()> {
        let at = Self::path(rel);
        let o = self.overlay;
        let is_link = e.kind == EntryKind::Symlink;
        if !is_link {
            o.set_mode(self.sub, &at, e.mode)?;
        }
        let made = o
            .stat(self.sub, &at)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if (made.uid, made.gid) != (e.uid, e.gid) {
            o.set_owner(self.sub, &at, Some(e.uid), Some(e.gid))?;
        }
        for (name, value) in &e.xattrs {
            o.set_xattr(self.sub, &at, name, value)?;
        }
        if e.kind != EntryKind::Dir && !is_link {
            o.set_mtime(self.sub, &at, e.mtime_ns)?;
        }
        Ok(())
    }
}
