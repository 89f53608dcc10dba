//! A read-only view of one commit, as a file system serves it
//! (docs/design.md 16.3): inode numbers handed to the kernel, attributes,
//! names looked up, directories paged, file bytes read at an offset. It
//! reads through `tree::read` and decides nothing about the kernel;
//! `crate::fuse` translates.

pub mod branches;
pub mod carry;
mod freeze;
mod inodes;
pub mod overlay;
pub mod working;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::id::CommitId;
use crate::repo::DEFAULT_SUBDOT;
use crate::store::Store;
use crate::tree::commit::{read_root, Commit, Root};
use crate::tree::dir::{Content, DirEntry, EntryKind};
use crate::tree::read::{Cache, TreeReader, CACHE_BYTES};
use crate::tree::TreeError;
use inodes::Inodes;

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// Why a request cannot be answered, as the file system reports it.
#[derive(Debug)]
pub enum Fault {
    /// No such name, or an inode the kernel has forgotten.
    NoEntry,
    NotDir,
    IsDir,
    NotLink,
    NoAttr,
    /// What the store holds is damaged: the read fails (EIO) and the
    /// message, naming the object, goes to the daemon's log.
    Damaged(String),
}

impl From<TreeError> for Fault {
    fn from(e: TreeError) -> Fault {
        Fault::Damaged(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Fault>;

/// Set-user-ID and set-group-ID permission bits, and group execution.
pub(crate) const SET_UID: u32 = 0o4000;
pub(crate) const SET_GID: u32 = 0o2000;
pub(crate) const GROUP_EXEC: u32 = 0o0010;

/// What `stat` says about an inode.
#[derive(Clone, Debug)]
pub struct Attr {
    pub ino: u64,
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub rdev: u64,
    pub nlink: u32,
}

impl Attr {
    /// The root of a dot with named subdots: a directory listing them.
    pub(crate) fn subdots(ino: u64, subdots: usize) -> Attr {
        Attr {
            ino,
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            rdev: 0,
            nlink: 2 + subdots as u32,
        }
    }
}

/// One directory entry of a page: `next` is the offset to ask for to go
/// on after it.
#[derive(Clone, Debug)]
pub struct Item {
    pub ino: u64,
    pub kind: EntryKind,
    pub name: Vec<u8>,
    pub next: u64,
}

enum Node {
    /// The root of a dot with named subdots: one directory per subdot.
    Subdots,
    Entry(DirEntry),
}

/// A commit served read-only.
pub struct View {
    store: Arc<Store>,
    cache: Cache,
    root: Root,
    inodes: Mutex<Inodes<Arc<Node>>>,
    pub commit: CommitId,
}

/// A subdot's top directory as a directory entry.
fn top_entry(name: &str, top: &crate::tree::commit::Top) -> DirEntry {
    DirEntry {
        name: name.as_bytes().to_vec(),
        kind: EntryKind::Dir,
        mode: top.mode,
        uid: top.uid,
        gid: top.gid,
        mtime_ns: top.mtime_ns,
        size: 0,
        content: Content::Dir(top.tree),
        xattrs: Vec::new(),
    }
}

impl View {
    /// A view of `commit`; its root and commit objects are read and
    /// checked now, everything else as it is asked for.
    pub fn new(store: Arc<Store>, commit: CommitId) -> Result<View> {
        let c = Commit::read(&store, &commit)?;
        let root = read_root(&store, &c.root)?;
        let top = match root.iter().next() {
            Some((name, top)) if root.len() == 1 && name == DEFAULT_SUBDOT => {
                Node::Entry(top_entry(name, top))
            }
            _ => Node::Subdots,
        };
        Ok(View {
            store,
            cache: Cache::new(CACHE_BYTES),
            root,
            inodes: Mutex::new(Inodes::new(Arc::new(top))),
            commit,
        })
    }

    fn reader(&self) -> TreeReader<'_> {
        TreeReader {
            objects: &self.store,
            cache: &self.cache,
        }
    }

    fn inodes(&self) -> std::sync::MutexGuard<'_, Inodes<Arc<Node>>> {
        self.inodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node(&self, ino: u64) -> Result<(Arc<Node>, u64)> {
        let inodes = self.inodes();
        let i = inodes.get(ino).ok_or(Fault::NoEntry)?;
        Ok((i.value.clone(), i.parent))
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        match node {
            Node::Subdots => Attr::subdots(ino, self.root.len()),
            Node::Entry(e) => Attr {
                ino,
                kind: e.kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                mtime_ns: e.mtime_ns,
                size: e.size,
                rdev: match e.content {
                    Content::Device(rdev) => rdev,
                    _ => 0,
                },
                nlink: if e.kind == EntryKind::Dir { 2 } else { 1 },
            },
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (node, _) = self.node(ino)?;
        Ok(self.attr_of(ino, &node))
    }

    /// The entry `name` of directory `parent`; the kernel now holds one
    /// more lookup of the inode returned.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let (dir, grandparent) = self.node(parent)?;
        let node = match (&*dir, name) {
            (_, b".") => return self.getattr_counted(parent),
            (_, b"..") => return self.getattr_counted(grandparent),
            (Node::Subdots, _) => {
                let sub = std::str::from_utf8(name).map_err(|_| Fault::NoEntry)?;
                let top = self.root.get(sub).ok_or(Fault::NoEntry)?;
                Node::Entry(top_entry(sub, top))
            }
            (Node::Entry(e), _) => match &e.content {
                Content::Dir(tree) => {
                    Node::Entry(self.reader().lookup(tree, name)?.ok_or(Fault::NoEntry)?)
                }
                _ => return Err(Fault::NotDir),
            },
        };
        let mut inodes = self.inodes();
        let ino = inodes.remember(parent, name, || Arc::new(node));
        let node = inodes.get(ino).expect("remembered").value.clone();
        drop(inodes);
        Ok(self.attr_of(ino, &node))
    }

    fn getattr_counted(&self, ino: u64) -> Result<Attr> {
        let node = self
            .inodes()
            .count(ino)
            .ok_or(Fault::NoEntry)?
            .value
            .clone();
        Ok(self.attr_of(ino, &node))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes().forget(ino, n);
    }

    /// The inode number a directory listing shows for an entry: the one
    /// the kernel holds, or a stable number from its name (high bit set,
    /// so it never equals an allocated one).
    fn listed_ino(&self, parent: u64, name: &[u8]) -> u64 {
        if let Some(ino) = self.inodes().named(parent, name) {
            return ino;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (parent, name).hash(&mut h);
        h.finish() | (1 << 63)
    }

    /// Up to `max` entries of directory `ino` from `offset` on: 0 is `.`,
    /// 1 is `..`, entry i of the directory is at i + 2.
    pub fn readdir(&self, ino: u64, offset: u64, max: usize) -> Result<Vec<Item>> {
        let (node, parent) = self.node(ino)?;
        let mut out = Vec::new();
        for (i, name, at) in [(ino, &b"."[..], 0u64), (parent, &b".."[..], 1)] {
            if offset <= at && out.len() < max {
                out.push(Item {
                    ino: i,
                    kind: EntryKind::Dir,
                    name: name.to_vec(),
                    next: at + 1,
                });
            }
        }
        let from = offset.saturating_sub(2);
        let room = max - out.len();
        let entries: Vec<(EntryKind, Vec<u8>)> = match &*node {
            Node::Subdots => self
                .root
                .keys()
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .take(room)
                .map(|k| (EntryKind::Dir, k.as_bytes().to_vec()))
                .collect(),
            Node::Entry(e) => match &e.content {
                Content::Dir(tree) => self
                    .reader()
                    .entries(tree, from, room)?
                    .into_iter()
                    .map(|e| (e.kind, e.name))
                    .collect(),
                _ => return Err(Fault::NotDir),
            },
        };
        for (i, (kind, name)) in entries.into_iter().enumerate() {
            out.push(Item {
                ino: self.listed_ino(ino, &name),
                kind,
                name,
                next: from + i as u64 + 3,
            });
        }
        Ok(out)
    }

    /// Up to `size` bytes of file `ino` at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let (node, _) = self.node(ino)?;
        let Node::Entry(e) = &*node else {
            return Err(Fault::IsDir);
        };
        let Content::File(content) = &e.content else {
            return Err(if e.kind == EntryKind::Dir {
                Fault::IsDir
            } else {
                Fault::NoEntry
            });
        };
        let size = size.min(usize::try_from(e.size.saturating_sub(offset)).unwrap_or(usize::MAX));
        let mut buf = vec![0u8; size];
        let n = self.reader().read_at(content, e.size, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        match &*self.node(ino)?.0 {
            Node::Entry(DirEntry {
                content: Content::Symlink(target),
                ..
            }) => Ok(target.clone()),
            _ => Err(Fault::NotLink),
        }
    }

    /// Extended attribute names of `ino`.
    pub fn xattr_names(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        Ok(match &*self.node(ino)?.0 {
            Node::Entry(e) => e.xattrs.iter().map(|(k, _)| k.clone()).collect(),
            Node::Subdots => Vec::new(),
        })
    }

    pub fn xattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        match &*self.node(ino)?.0 {
            Node::Entry(e) => e
                .xattrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or(Fault::NoAttr),
            Node::Subdots => Err(Fault::NoAttr),
        }
    }

    /// Inodes the view holds now (bounded by what the kernel holds).
    pub fn inodes_held(&self) -> usize {
        self.inodes().len()
    }
}

/// Whether process `pid`, running as group `gid`, is in group `group`: as
/// its own or a supplementary one (from /proc; a process gone is in none).
pub fn in_group(pid: u32, gid: u32, group: u32) -> bool {
    gid == group || proc_status(pid).is_some_and(|s| s.groups.contains(&group))
}

/// Whether process `pid` has CAP_FSETID, which keeps set-ID bits through
/// its changes (from /proc; a process gone has not).
pub fn has_fsetid(pid: u32) -> bool {
    const CAP_FSETID: u32 = 4;
    proc_status(pid).is_some_and(|s| (s.caps >> CAP_FSETID) & 1 == 1)
}

/// What a process's /proc/PID/status says that a mount needs.
#[derive(Debug, Default, PartialEq)]
struct ProcStatus {
    /// Supplementary groups (`Groups:`).
    groups: Vec<u32>,
    /// Effective capabilities (`CapEff:`, hexadecimal).
    caps: u64,
}

fn proc_status(pid: u32) -> Option<ProcStatus> {
    std::fs::read(format!("/proc/{pid}/status"))
        .ok()
        .map(|s| parse_status(&s))
}

/// The lines of a /proc/PID/status that `ProcStatus` holds; a line that
/// is missing or not numbers counts as none (no groups, no capabilities).
fn parse_status(status: &[u8]) -> ProcStatus {
    let mut out = ProcStatus::default();
    fn words(rest: &[u8]) -> impl Iterator<Item = &str> {
        rest.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| std::str::from_utf8(w).unwrap_or(""))
    }
    for line in status.split(|&b| b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"Groups:") {
            out.groups = words(rest).map_while(|w| w.parse().ok()).collect();
        } else if let Some(rest) = line.strip_prefix(b"CapEff:") {
            out.caps = words(rest)
                .next()
                .and_then(|w| u64::from_str_radix(w, 16).ok())
                .unwrap_or(0);
        }
    }
    out
}

/// The processes with a file, directory or working directory under `dir`,
/// as "pid N (command)", found through /proc (Linux); not `client`, the
/// `dot` process that asked (it may have inherited a descriptor from its
/// shell, which is named).
pub fn users_of(dir: &std::path::Path, client: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if Some(pid) == client {
            continue;
        }
        let base = p.path();
        let mut links: Vec<PathBuf> = vec![base.join("cwd"), base.join("root")];
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        let uses = links
            .iter()
            .filter_map(|l| std::fs::read_link(l).ok())
            .any(|target| target.starts_with(dir));
        if uses {
            let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("pid {pid} ({})", comm.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn groups_and_capabilities_come_from_their_lines() {
        let status = b"Name:\tpostgres\nGid:\t5\t5\t5\t5\nGroups:\t4 24 1000 \nCapEff:\t000001fffeffffef\nNgid:\t0\n";
        assert_eq!(
            parse_status(status),
            ProcStatus {
                groups: vec![4, 24, 1000],
                caps: 0x1fffeffffef
            }
        );
        assert_eq!(
            parse_status(b"Groups:\t\nCapEff:\tzz\n"),
            ProcStatus::default()
        );
        assert_eq!(parse_status(b"Name:\tx\n"), ProcStatus::default());
        let me = std::process::id();
        assert!(in_group(me, 7, 7));
        assert!(!in_group(me, 7, u32::MAX - 1));
        // A process gone is in its own group only, and has no capability.
        assert!(!in_group(u32::MAX, 7, 0));
        assert!(!has_fsetid(u32::MAX));
    }

    proptest! {
        /// Any bytes: no panic, and only what the two lines say.
        #[test]
        fn any_status(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                      groups in proptest::collection::vec(any::<u32>(), 0..8),
                      caps in any::<u64>()) {
            let _ = parse_status(&bytes);
            let mut noise = bytes.clone();
            noise.retain(|&b| b != b'\n');
            let line = groups.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            let status = [
                b"X:\t".as_slice(), &noise,
                b"\nGroups:\t", line.as_bytes(),
                format!("\nCapEff:\t{caps:016x}\n").as_bytes(),
            ].concat();
            prop_assert_eq!(parse_status(&status), ProcStatus { groups, caps });
        }
    }
}
