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

    fn decode(r: &mut Reader, id: &Id) -> Result<DirEntry> {
        let de = decode_err(id);
        let name = r.bytes().map_err(&de)?.to_vec();
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            return Err(corrupt(
                id,
                format!("invalid entry name {:?}", String::from_utf8_lossy(&name)),
            ));
        }
        let kind = EntryKind::from_u8(r.u8().map_err(&de)?)
            .ok_or_else(|| corrupt(id, "unknown entry kind"))?;
        let mode = r.u32v().map_err(&de)?;
        let uid = r.u32v().map_err(&de)?;
        let gid = r.u32v().map_err(&de)?;
        let mtime_ns = r.ivarint().map_err(&de)?;
        let size = r.varint().map_err(&de)?;
        let content = match kind {
            EntryKind::File => Content::File(ContentRef::decode(r).map_err(&de)?),
            EntryKind::Dir => Content::Dir(TreeId(r.id().map_err(&de)?)),
            EntryKind::Symlink => Content::Symlink(r.bytes().map_err(&de)?.to_vec()),
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                Content::Device(r.varint().map_err(&de)?)
            }
            EntryKind::Fifo => Content::Fifo,
        };
        let n = r.varint().map_err(&de)?;
        let mut xattrs = Vec::new();
        for _ in 0..n {
            xattrs.push((
                r.bytes().map_err(&de)?.to_vec(),
                r.bytes().map_err(&de)?.to_vec(),
            ));
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
    let id = objects.put_meta(&with_count(w, count))?;
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

/// Reads every entry of a directory, in name order.
pub fn read_dir(objects: &dyn Objects, tree: &TreeId) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    read_node(objects, &tree.0, None, &mut out)?;
    if !out.windows(2).all(|w| w[0].name < w[1].name) {
        return Err(corrupt(&tree.0, "entries are not sorted and unique"));
    }
    Ok(out)
}

fn read_node(
    objects: &dyn Objects,
    id: &Id,
    expect_level: Option<u8>,
    out: &mut Vec<DirEntry>,
) -> Result<()> {
    let bytes = objects.get(id)?;
    let mut r = open_object(id, &bytes, KIND_DIR_NODE)?;
    let de = decode_err(id);
    let level = r.u8().map_err(&de)?;
    if expect_level.is_some_and(|l| l != level) {
        return Err(corrupt(id, "node level does not match its parent"));
    }
    let n = r.varint().map_err(&de)?;
    if level == 0 {
        for _ in 0..n {
            out.push(DirEntry::decode(&mut r, id)?);
        }
    } else {
        for _ in 0..n {
            let _first = r.bytes().map_err(&de)?;
            let child = r.id().map_err(&de)?;
            let count = r.varint().map_err(&de)?;
            let before = out.len();
            read_node(objects, &child, Some(level - 1), out)?;
            if (out.len() - before) as u64 != count {
                return Err(corrupt(id, "child entry count does not match"));
            }
        }
    }
    r.finish().map_err(&de)
}

/// What one directory node names directly: child nodes, subdirectories and
/// file contents (see `super::links`).
pub(super) fn node_links(id: &Id, bytes: &[u8]) -> Result<Vec<super::Link>> {
    let mut r = open_object(id, bytes, KIND_DIR_NODE)?;
    let de = decode_err(id);
    let level = r.u8().map_err(&de)?;
    let n = r.varint().map_err(&de)?;
    let mut out = Vec::new();
    for _ in 0..n {
        if level > 0 {
            let _first = r.bytes().map_err(&de)?;
            out.push(super::Link::meta(r.id().map_err(&de)?, 0));
            r.varint().map_err(&de)?;
            continue;
        }
        let e = DirEntry::decode(&mut r, id)?;
        let (target, kind, size) = match e.content {
            Content::Dir(t) => (t.0, Kind::Meta, 0),
            Content::File(ContentRef::Node(n)) => (n.0, Kind::Meta, e.size),
            Content::File(ContentRef::Chunk(c)) => (c.0, Kind::Chunk, e.size),
            _ => continue,
        };
        out.push(super::Link {
            id: target,
            kind,
            size,
        });
    }
    r.finish().map_err(&de)?;
    Ok(out)
}

/// The node objects a directory tree is made of (not its entries' content).
pub fn node_ids(objects: &dyn Objects, tree: &TreeId) -> Result<Vec<Id>> {
    let mut out = vec![tree.0];
    let mut i = 0;
    while i < out.len() {
        let id = out[i];
        let bytes = objects.get(&id)?;
        let mut r = open_object(&id, &bytes, KIND_DIR_NODE)?;
        let de = decode_err(&id);
        if r.u8().map_err(&de)? > 0 {
            for _ in 0..r.varint().map_err(&de)? {
                r.bytes().map_err(&de)?;
                out.push(r.id().map_err(&de)?);
                r.varint().map_err(&de)?;
            }
        }
        i += 1;
    }
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
        let store = Store::open(dir.path()).unwrap();
        let entries: Vec<DirEntry> = (0..30_000).map(|i| file(&format!("f{i:06}"), i)).collect();
        let t = write_dir(&store, &entries).unwrap();
        assert!(node_ids(&store, &t).unwrap().len() > 10);
        assert_eq!(read_dir(&store, &t).unwrap(), entries);
    }

    #[test]
    fn golden_dir_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
