//! Directory trees: entries sorted by name bytes, each with kind, mode,
//! ownership, mtime, size, content and extended attributes.
//!
//! A directory is one node when small. A large one is split the way chunk
//! trees are: a leaf node ends after an entry whose name hashes to a
//! boundary, or when it nears `MAX_NODE_BYTES`; inner nodes list (first
//! name, child id, entry count). So a directory of a million entries is many
//! objects under 1 MiB, and adding one file rewrites one path.
//!
//! Node encoding: header `d t 1`, level u8, count varint, then entries. A
//! level-0 entry is: name bytes, kind u8, mode varint, uid varint, gid
//! varint, mtime_ns zigzag varint, size varint, kind-specific content (file:
//! content ref; dir: tree id; symlink: target bytes; device: rdev varint;
//! fifo: nothing), xattr count varint and (name bytes, value bytes) pairs
//! sorted by name. An inner entry is: first name bytes, child id, entry
//! count varint.

use super::chunks::ContentRef;
use super::{
    corrupt, decode_err, header, is_boundary, open_object, Objects, Result, KIND_DIR_NODE,
};
use crate::codec::{Reader, Writer};
use crate::id::{Id, TreeId};
use crate::store::Kind;

/// Longest entry name (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Longest symlink target (PATH_MAX less its NUL).
pub const MAX_SYMLINK: usize = 4095;
/// Longest extended attribute name (XATTR_NAME_MAX) and value (XATTR_SIZE_MAX).
pub const MAX_XATTR_NAME: usize = 255;
pub const MAX_XATTR_VALUE: usize = 65536;
/// Deepest directory tree: a path of more levels cannot fit in PATH_MAX
/// (4096 bytes), so no filesystem path can hold one.
pub const MAX_DEPTH: usize = 2048;

const NAME_MASK: u32 = 1023;
const CHILD_MASK: u32 = 63;
const MAX_NODE_BYTES: usize = 512 * 1024;
const MAX_CHILDREN: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    Fifo = 3,
    CharDevice = 4,
    BlockDevice = 5,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<EntryKind> {
        Some(match v {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::Fifo,
            4 => EntryKind::CharDevice,
            5 => EntryKind::BlockDevice,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    File(ContentRef),
    Dir(TreeId),
    Symlink(Vec<u8>),
    Device(u64),
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// Byte size of a file's content or a symlink's target; 0 otherwise.
    pub size: u64,
    pub content: Content,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DirEntry {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.name)
            .u8(self.kind as u8)
            .varint(u64::from(self.mode))
            .varint(u64::from(self.uid))
            .varint(u64::from(self.gid))
            .ivarint(self.mtime_ns)
            .varint(self.size);
        match &self.content {
            Content::File(c) => c.encode(w),
            Content::Dir(t) => {
                w.id(&t.0);
            }
            Content::Symlink(target) => {
                w.bytes(target);
            }
            Content::Device(rdev) => {
                w.varint(*rdev);
            }
            Content::Fifo => {}
        }
        w.varint(self.xattrs.len() as u64);
        for (k, v) in &self.xattrs {
            w.bytes(k).bytes(v);
        }
    }

    /// Decodes one entry and checks every rule of the format (docs/design.md
    /// 6.1): a legal name, a known kind, permission bits only, a size that
    /// fits the kind and content, and sorted, bounded xattrs.
    fn decode(r: &mut Reader, id: &Id) -> Result<DirEntry> {
        let de = decode_err(id);
        let name = r.bytes().map_err(&de)?.to_vec();
        check_name(&name).map_err(|what| corrupt(id, what))?;
        let bad = |what: &str| {
            corrupt(
                id,
                format!("entry {:?}: {what}", String::from_utf8_lossy(&name)),
            )
        };
        let kind = EntryKind::from_u8(r.u8().map_err(&de)?).ok_or_else(|| bad("unknown kind"))?;
        let mode = r.u32v().map_err(&de)?;
        if mode & !0o7777 != 0 {
            return Err(bad("mode has bits beyond 0o7777"));
        }
        let uid = r.u32v().map_err(&de)?;
        let gid = r.u32v().map_err(&de)?;
        let mtime_ns = r.ivarint().map_err(&de)?;
        let size = r.varint().map_err(&de)?;
        let content = match kind {
            EntryKind::File => {
                let c = ContentRef::decode(r).map_err(&de)?;
                c.check_size(size).map_err(|e| bad(&e))?;
                Content::File(c)
            }
            EntryKind::Dir => Content::Dir(TreeId(r.id().map_err(&de)?)),
            EntryKind::Symlink => {
                let target = r.bytes().map_err(&de)?.to_vec();
                if target.is_empty() || target.len() > MAX_SYMLINK || target.contains(&0) {
                    return Err(bad("symlink target is empty, too long or holds NUL"));
                }
                if size != target.len() as u64 {
                    return Err(bad("size is not the symlink target's length"));
                }
                Content::Symlink(target)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                Content::Device(r.varint().map_err(&de)?)
            }
            EntryKind::Fifo => Content::Fifo,
        };
        if !matches!(kind, EntryKind::File | EntryKind::Symlink) && size != 0 {
            return Err(bad("size must be 0 for this kind"));
        }
        let n = r.varint().map_err(&de)?;
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for _ in 0..n {
            let k = r.bytes().map_err(&de)?;
            let v = r.bytes().map_err(&de)?;
            if k.is_empty() || k.len() > MAX_XATTR_NAME || k.contains(&0) {
                return Err(bad("bad extended attribute name"));
            }
            if v.len() > MAX_XATTR_VALUE {
                return Err(bad("extended attribute value too long"));
            }
            if xattrs.last().is_some_and(|(last, _)| last.as_slice() >= k) {
                return Err(bad("extended attributes are not sorted and unique"));
            }
            xattrs.push((k.to_vec(), v.to_vec()));
        }
        Ok(DirEntry {
            name,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            size,
            content,
            xattrs,
        })
    }

    /// What makes this entry one dot does not create from a remote unless
    /// the dot allows it: a device node, a setuid or setgid file, or a
    /// `security.*` extended attribute (file capabilities, labels).
    pub(crate) fn special(&self) -> Option<String> {
        match self.kind {
            EntryKind::CharDevice | EntryKind::BlockDevice => return Some("a device node".into()),
            EntryKind::Dir => {}
            _ if self.mode & 0o4000 != 0 => return Some("a setuid file".into()),
            _ if self.mode & 0o2000 != 0 => return Some("a setgid file".into()),
            _ => {}
        }
        self.xattrs
            .iter()
            .find(|(k, _)| k.starts_with(b"security."))
            .map(|(k, _)| format!("the extended attribute {}", String::from_utf8_lossy(k)))
    }
}

/// An entry name: 1 to `MAX_NAME` bytes, not `.` or `..`, no `/` or NUL.
pub(crate) fn check_name(name: &[u8]) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || name == b"."
        || name == b".."
        || name.contains(&b'/')
        || name.contains(&0)
    {
        Err(format!(
            "invalid entry name {:?}",
            String::from_utf8_lossy(&name[..name.len().min(300)])
        ))
    } else {
        Ok(())
    }
}

struct Child {
    first: Vec<u8>,
    id: Id,
    count: u64,
}

/// Writes a directory's entries (sorted by name, unique) as a tree of
/// nodes and returns its id.
pub fn write_dir(objects: &dyn Objects, entries: &[DirEntry]) -> Result<TreeId> {
    debug_assert!(entries.windows(2).all(|w| w[0].name < w[1].name));
    let mut children = Vec::new();
    let mut w = node_writer(0);
    let (mut count, mut first) = (0u64, None);
    for (i, e) in entries.iter().enumerate() {
        first.get_or_insert_with(|| e.name.clone());
        e.encode(&mut w);
        count += 1;
        let last = i + 1 == entries.len();
        let boundary = is_boundary(&Id::of(&e.name), NAME_MASK) || w.len() >= MAX_NODE_BYTES;
        if boundary && !last {
            children.push(finish_node(
                objects,
                w,
                count,
                first.take().expect("first name"),
            )?);
            w = node_writer(0);
            count = 0;
        }
    }
    let tail = finish_node(objects, w, count, first.unwrap_or_default())?;
    if children.is_empty() {
        return Ok(TreeId(tail.id));
    }
    children.push(tail);
    let mut level = 1u8;
    loop {
        let mut parents = Vec::new();
        let mut w = node_writer(level);
        let (mut count, mut n, mut first) = (0u64, 0u64, None);
        for (i, c) in children.iter().enumerate() {
            first.get_or_insert_with(|| c.first.clone());
            w.bytes(&c.first).id(&c.id).varint(c.count);
            count += c.count;
            n += 1;
            let last = i + 1 == children.len();
            if (is_boundary(&c.id, CHILD_MASK) || n as usize >= MAX_CHILDREN) && !last {
                parents.push(finish_inner(
                    objects,
                    w,
                    n,
                    count,
                    first.take().expect("first"),
                )?);
                w = node_writer(level);
                count = 0;
                n = 0;
            }
        }
        parents.push(finish_inner(
            objects,
            w,
            n,
            count,
            first.unwrap_or_default(),
        )?);
        if parents.len() == 1 {
            return Ok(TreeId(parents[0].id));
        }
        children = parents;
        level += 1;
    }
}

/// A node's header and level; `with_count` splices the entry count in
/// after them once the entries are written.
fn node_writer(level: u8) -> Writer {
    let mut w = Writer::new();
    w.raw(&header(KIND_DIR_NODE)).u8(level);
    w
}

fn with_count(w: Writer, n: u64) -> Vec<u8> {
    let mut out = Writer::new();
    out.raw(&w.buf[..4]).varint(n).raw(&w.buf[4..]);
    out.buf
}

fn finish_node(objects: &dyn Objects, w: Writer, count: u64, first: Vec<u8>) -> Result<Child> {
    let bytes = with_count(w, count);
    // What dot writes, it must read back: a writer bug would otherwise
    // make commits that every reader refuses.
    debug_assert!(
        DirNode::decode(&Id::of(&bytes), &bytes).is_ok(),
        "{:?}",
        DirNode::decode(&Id::of(&bytes), &bytes).err()
    );
    let id = objects.put_meta(&bytes)?;
    Ok(Child { first, id, count })
}

fn finish_inner(
    objects: &dyn Objects,
    w: Writer,
    n: u64,
    count: u64,
    first: Vec<u8>,
) -> Result<Child> {
    let id = objects.put_meta(&with_count(w, n))?;
    Ok(Child { first, id, count })
}

/// One directory node as stored: its level and entries, or (level >= 1)
/// its children as (first name, node id, entry count).
pub(super) enum DirNode {
    Entries(Vec<DirEntry>),
    Children(u8, Vec<(Vec<u8>, TreeId, u64)>),
}

impl DirNode {
    /// Decodes a node and checks what it says about itself: each entry's
    /// rules, names sorted and unique within it, inner nodes with 1 to
    /// `MAX_CHILDREN` children of at least one entry each.
    pub(crate) fn decode(id: &Id, bytes: &[u8]) -> Result<DirNode> {
        let mut r = open_object(id, bytes, KIND_DIR_NODE)?;
        let de = decode_err(id);
        let level = r.u8().map_err(&de)?;
        let n = r.varint().map_err(&de)?;
        let node = if level == 0 {
            let mut entries: Vec<DirEntry> = Vec::new();
            for _ in 0..n {
                let e = DirEntry::decode(&mut r, id)?;
                if entries.last().is_some_and(|last| last.name >= e.name) {
                    return Err(corrupt(id, "entries are not sorted and unique"));
                }
                entries.push(e);
            }
            DirNode::Entries(entries)
        } else {
            if n == 0 || n > MAX_CHILDREN as u64 {
                return Err(corrupt(id, format!("inner node with {n} children")));
            }
            let mut children: Vec<(Vec<u8>, TreeId, u64)> = Vec::new();
            for _ in 0..n {
                let first = r.bytes().map_err(&de)?.to_vec();
                check_name(&first).map_err(|what| corrupt(id, what))?;
                let child = TreeId(r.id().map_err(&de)?);
                let count = r.varint().map_err(&de)?;
                if count == 0 {
                    return Err(corrupt(id, "a child node without entries"));
                }
                if children.last().is_some_and(|(last, _, _)| *last >= first) {
                    return Err(corrupt(id, "children are not sorted"));
                }
                children.push((first, child, count));
            }
            DirNode::Children(level, children)
        };
        r.finish().map_err(&de)?;
        Ok(node)
    }

    pub(super) fn level(&self) -> u8 {
        match self {
            DirNode::Entries(_) => 0,
            DirNode::Children(level, _) => *level,
        }
    }
}

/// Reads every entry of a directory, in name order.
/// The bytes of every file under `tree` (a directory walk; no file's
/// chunks are read).
pub(crate) fn tree_bytes(objects: &dyn Objects, tree: &TreeId) -> Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![*tree];
    while let Some(t) = stack.pop() {
        for e in read_dir(objects, &t)? {
            match e.content {
                Content::Dir(sub) => stack.push(sub),
                Content::File(_) => total = total.saturating_add(e.size),
                _ => {}
            }
        }
    }
    Ok(total)
}

pub(crate) fn read_dir(objects: &dyn Objects, tree: &TreeId) -> Result<Vec<DirEntry>> {
    Ok(read_dir_nodes(objects, tree)?.0)
}

/// Reads every entry of a directory and lists the node objects it is made
/// of. Checks the whole split structure: levels drop by one per step down
/// (so no descent is deeper than 256 nodes), each inner record's first
/// name and entry count match its child, and entries are sorted and unique
/// across nodes, checked as they are read so that a node listed twice
/// fails at once instead of multiplying.
pub(crate) fn read_dir_nodes(
    objects: &dyn Objects,
    tree: &TreeId,
) -> Result<(Vec<DirEntry>, Vec<Id>)> {
    let mut out = Vec::new();
    let mut nodes = Vec::new();
    read_node(objects, &tree.0, None, &mut out, &mut nodes)?;
    Ok((out, nodes))
}

fn read_node(
    objects: &dyn Objects,
    id: &Id,
    expect_level: Option<u8>,
    out: &mut Vec<DirEntry>,
    nodes: &mut Vec<Id>,
) -> Result<()> {
    let node = DirNode::decode(id, &objects.get(id)?)?;
    if expect_level.is_some_and(|l| l != node.level()) {
        return Err(corrupt(id, "node level does not match its parent"));
    }
    nodes.push(*id);
    match node {
        DirNode::Entries(entries) => {
            if let (Some(last), Some(first)) = (out.last(), entries.first()) {
                if last.name >= first.name {
                    return Err(corrupt(id, "entries are not sorted and unique"));
                }
            }
            out.extend(entries);
        }
        DirNode::Children(level, children) => {
            for (first, child, count) in children {
                let before = out.len();
                read_node(objects, &child.0, Some(level - 1), out, nodes)?;
                if (out.len() - before) as u64 != count || out[before].name != first {
                    return Err(corrupt(
                        id,
                        "a child's first name or entry count does not match",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What one directory node names directly: child nodes, subdirectories and
/// file contents (see `super::links`).
pub(super) fn node_links(id: &Id, bytes: &[u8]) -> Result<Vec<super::Link>> {
    let out = match DirNode::decode(id, bytes)? {
        DirNode::Children(_, children) => children
            .into_iter()
            .map(|(_, child, _)| super::Link::meta(child.0, 0))
            .collect(),
        DirNode::Entries(entries) => entries
            .into_iter()
            .filter_map(|e| {
                let (target, kind, size) = match e.content {
                    Content::Dir(t) => (t.0, Kind::Meta, 0),
                    Content::File(ContentRef::Node(n)) => (n.0, Kind::Meta, e.size),
                    Content::File(ContentRef::Chunk(c)) => (c.0, Kind::Chunk, e.size),
                    _ => return None,
                };
                Some(super::Link {
                    id: target,
                    kind,
                    size,
                })
            })
            .collect(),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn file(name: &str, i: u64) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            size: 0,
            content: Content::File(ContentRef::Empty),
            xattrs: vec![],
        }
    }

    #[test]
    fn big_directories_split_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let entries: Vec<DirEntry> = (0..30_000).map(|i| file(&format!("f{i:06}"), i)).collect();
        let t = write_dir(&store, &entries).unwrap();
        assert!(read_dir_nodes(&store, &t).unwrap().1.len() > 10);
        assert_eq!(read_dir(&store, &t).unwrap(), entries);
    }

    #[test]
    fn golden_dir_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let mut link = file("l", 0);
        link.kind = EntryKind::Symlink;
        link.mode = 0o777;
        link.size = 1;
        link.content = Content::Symlink(b"f".to_vec());
        link.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
        let t = write_dir(&store, &[file("f", 0), link]).unwrap();
        let bytes = store.get(&t.0).unwrap();
        assert_eq!(&bytes[..5], b"dt\x01\x00\x02");
        assert_eq!(t.0.short(), "f9493a3e8adf");
        let empty = write_dir(&store, &[]).unwrap();
        assert_eq!(store.get(&empty.0).unwrap(), b"dt\x01\x00\x00");
    }
}
