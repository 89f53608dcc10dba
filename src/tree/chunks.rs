//! File contents as a Merkle tree over the chunk list.
//!
//! Leaves are chunks (id, length) or runs of zeros (length only, restored as
//! holes). Inner nodes list their children with each child's byte length, so
//! a read at any offset descends in O(log n). A node ends after a child whose
//! id matches a mask, or at `MAX_FANOUT` children, so node boundaries depend
//! on content and an edit rewrites only the path to the changed chunks.
//!
//! Node encoding: header `d n 1`, level u8, child count varint, then per
//! child at level 0: tag u8 (1 chunk: id, length varint; 2 zeros: length
//! varint); at level >= 1: node id, byte length varint.

use super::{decode_err, header, is_boundary, open_object, Objects, Result, KIND_CHUNK_NODE};
use crate::codec::{Reader, Writer};
use crate::id::{ChunkId, Id, NodeId};
use crate::store::pack::MAX_CHUNK;
use crate::store::Kind;

/// Children per node on average is `FANOUT_MASK + 1`.
const FANOUT_MASK: u32 = 63;
const MAX_FANOUT: usize = 1024;

const TAG_CHUNK: u8 = 1;
const TAG_ZERO: u8 = 2;

/// A leaf of a chunk tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leaf {
    Chunk(ChunkId, u32),
    Zero(u64),
}

impl Leaf {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Leaf::Chunk(_, n) => u64::from(*n),
            Leaf::Zero(n) => *n,
        }
    }
}

/// What a file entry points at. Small files usually need no tree node: a
/// file of one chunk names the chunk (unless that chunk's id ends a node,
/// which makes a one-child node), and an all-zero file names nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRef {
    Empty,
    Chunk(ChunkId),
    Zero,
    Node(NodeId),
}

impl ContentRef {
    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            ContentRef::Empty => {
                w.u8(0);
            }
            ContentRef::Chunk(id) => {
                w.u8(1).id(&id.0);
            }
            ContentRef::Zero => {
                w.u8(2);
            }
            ContentRef::Node(id) => {
                w.u8(3).id(&id.0);
            }
        }
    }

    pub(crate) fn decode(
        r: &mut Reader,
    ) -> std::result::Result<ContentRef, crate::codec::DecodeError> {
        Ok(match r.u8()? {
            0 => ContentRef::Empty,
            1 => ContentRef::Chunk(ChunkId(r.id()?)),
            2 => ContentRef::Zero,
            3 => ContentRef::Node(NodeId(r.id()?)),
            t => {
                return Err(crate::codec::DecodeError::Invalid(format!(
                    "unknown content tag {t}"
                )))
            }
        })
    }

    /// Whether a file entry of `size` bytes may point at this: nothing for
    /// 0 bytes, one chunk of at most `MAX_CHUNK` bytes, a zero run or a
    /// node for anything else.
    pub(crate) fn check_size(&self, size: u64) -> std::result::Result<(), String> {
        let ok = match self {
            ContentRef::Empty => size == 0,
            ContentRef::Chunk(_) => (1..=u64::from(MAX_CHUNK)).contains(&size),
            ContentRef::Zero | ContentRef::Node(_) => size > 0,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "a file of {size} bytes cannot have this content reference"
            ))
        }
    }

    /// The single object this reference names, if any.
    pub(crate) fn object(&self) -> Option<Id> {
        match self {
            ContentRef::Chunk(c) => Some(c.0),
            ContentRef::Node(n) => Some(n.0),
            ContentRef::Empty | ContentRef::Zero => None,
        }
    }
}

/// Receives `(offset of the first leaf, leaves)` for each level-0 node.
pub type LeafVisitor<'a, E> = dyn FnMut(u64, &[Leaf]) -> std::result::Result<(), E> + 'a;

#[derive(Clone, Copy, Debug)]
pub(super) enum Child {
    Leaf(Leaf),
    Node(NodeId, u64),
}

impl Child {
    pub(super) fn len(&self) -> u64 {
        match self {
            Child::Leaf(l) => l.len(),
            Child::Node(_, n) => *n,
        }
    }
    fn ends_node(&self) -> bool {
        match self {
            Child::Leaf(Leaf::Chunk(id, _)) => is_boundary(&id.0, FANOUT_MASK),
            Child::Leaf(Leaf::Zero(_)) => false,
            Child::Node(id, _) => is_boundary(&id.0, FANOUT_MASK),
        }
    }
}

/// Streams leaves into a chunk tree, writing nodes as they fill.
pub struct ChunkTreeBuilder<'a> {
    objects: &'a dyn Objects,
    levels: Vec<Vec<Child>>,
    zeros: u64,
    leaves: u64,
}

impl<'a> ChunkTreeBuilder<'a> {
    pub fn new(objects: &'a dyn Objects) -> ChunkTreeBuilder<'a> {
        ChunkTreeBuilder {
            objects,
            levels: vec![Vec::new()],
            zeros: 0,
            leaves: 0,
        }
    }

    /// Appends the next leaf. Adjacent zero runs merge into one leaf.
    pub fn push(&mut self, leaf: Leaf) -> Result<()> {
        match leaf {
            Leaf::Zero(n) => self.zeros += n,
            Leaf::Chunk(..) => {
                self.flush_zeros()?;
                self.push_child(0, Child::Leaf(leaf))?;
            }
        }
        Ok(())
    }

    fn flush_zeros(&mut self) -> Result<()> {
        if self.zeros > 0 {
            let n = std::mem::take(&mut self.zeros);
            self.push_child(0, Child::Leaf(Leaf::Zero(n)))?;
        }
        Ok(())
    }

    fn push_child(&mut self, level: usize, child: Child) -> Result<()> {
        if level == 0 {
            self.leaves += 1;
        }
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(child);
        if child.ends_node() || self.levels[level].len() >= MAX_FANOUT {
            self.emit(level)?;
        }
        Ok(())
    }

    fn emit(&mut self, level: usize) -> Result<()> {
        let children = std::mem::take(&mut self.levels[level]);
        let (id, len) = write_node(self.objects, level as u8, &children)?;
        self.push_child(level + 1, Child::Node(id, len))
    }

    /// Finishes the tree and returns what the file entry should point at.
    pub fn finish(mut self) -> Result<ContentRef> {
        self.flush_zeros()?;
        if self.leaves == 0 {
            return Ok(ContentRef::Empty);
        }
        if self.leaves == 1 && self.levels.len() == 1 {
            return Ok(match self.levels[0][0] {
                Child::Leaf(Leaf::Chunk(id, _)) => ContentRef::Chunk(id),
                Child::Leaf(Leaf::Zero(_)) => ContentRef::Zero,
                Child::Node(..) => unreachable!("level 0 holds leaves"),
            });
        }
        let mut level = 0;
        loop {
            let top = self.levels[level + 1..].iter().all(Vec::is_empty);
            if top && level > 0 && self.levels[level].len() == 1 {
                match self.levels[level][0] {
                    Child::Node(id, _) => return Ok(ContentRef::Node(id)),
                    Child::Leaf(_) => unreachable!("levels above 0 hold nodes"),
                }
            }
            if !self.levels[level].is_empty() {
                self.emit(level)?;
            }
            level += 1;
        }
    }
}

fn write_node(objects: &dyn Objects, level: u8, children: &[Child]) -> Result<(NodeId, u64)> {
    let mut w = Writer::new();
    w.raw(&header(KIND_CHUNK_NODE))
        .u8(level)
        .varint(children.len() as u64);
    let mut total = 0u64;
    for c in children {
        match c {
            Child::Leaf(Leaf::Chunk(id, n)) => {
                w.u8(TAG_CHUNK).id(&id.0).varint(u64::from(*n));
            }
            Child::Leaf(Leaf::Zero(n)) => {
                w.u8(TAG_ZERO).varint(*n);
            }
            Child::Node(id, n) => {
                w.id(&id.0).varint(*n);
            }
        }
        total += c.len();
    }
    let id = objects.put_meta(&w.buf)?;
    Ok((NodeId(id), total))
}

/// A decoded node: its level, children and the bytes they add up to.
pub(super) struct Node {
    pub level: u8,
    pub children: Vec<Child>,
    pub total: u64,
}

impl Node {
    /// Decodes a node and checks everything it says about itself: 1 to
    /// `MAX_FANOUT` children; chunk leaves of 1 to `MAX_CHUNK` bytes, zero
    /// runs and inner children of at least one byte; lengths whose sum
    /// fits in a u64; no trailing bytes.
    pub(crate) fn decode(id: &NodeId, bytes: &[u8]) -> Result<Node> {
        let mut r = open_object(&id.0, bytes, KIND_CHUNK_NODE)?;
        let de = decode_err(&id.0);
        let bad = |what: String| super::corrupt(&id.0, what);
        let level = r.u8().map_err(&de)?;
        let count = r.varint().map_err(&de)?;
        if count == 0 || count > MAX_FANOUT as u64 {
            return Err(bad(format!("node has {count} children")));
        }
        let mut children = Vec::with_capacity(count as usize);
        let mut total = 0u64;
        for _ in 0..count {
            let child = if level == 0 {
                match r.u8().map_err(&de)? {
                    TAG_CHUNK => {
                        let cid = ChunkId(r.id().map_err(&de)?);
                        let n = r.u32v().map_err(&de)?;
                        if n == 0 || n > MAX_CHUNK {
                            return Err(bad(format!("a chunk leaf of {n} bytes")));
                        }
                        Child::Leaf(Leaf::Chunk(cid, n))
                    }
                    TAG_ZERO => Child::Leaf(Leaf::Zero(r.varint().map_err(&de)?)),
                    t => return Err(bad(format!("unknown leaf tag {t}"))),
                }
            } else {
                Child::Node(NodeId(r.id().map_err(&de)?), r.varint().map_err(&de)?)
            };
            if child.len() == 0 {
                return Err(bad("a child of 0 bytes".into()));
            }
            total = total
                .checked_add(child.len())
                .ok_or_else(|| bad("child lengths overflow".into()))?;
            children.push(child);
        }
        r.finish().map_err(&de)?;
        Ok(Node {
            level,
            children,
            total,
        })
    }
}

/// Reads a node; `expect_level` is what its parent says (levels drop by
/// one per step down, so no descent is deeper than 256 nodes).
pub(super) fn read_node(
    objects: &dyn Objects,
    id: &NodeId,
    expect_level: Option<u8>,
) -> Result<Node> {
    let node = Node::decode(id, &objects.get(&id.0)?)?;
    if expect_level.is_some_and(|l| l != node.level) {
        return Err(super::corrupt(
            &id.0,
            "node level does not match its parent",
        ));
    }
    Ok(node)
}

/// A chunk's bytes, checked to be as long as the reference says.
pub(crate) fn chunk_bytes(objects: &dyn Objects, id: &ChunkId, len: u64) -> Result<Vec<u8>> {
    let data = objects.get(&id.0)?;
    if data.len() as u64 != len {
        return Err(super::corrupt(
            &id.0,
            format!("chunk is {} bytes, its reference says {len}", data.len()),
        ));
    }
    Ok(data)
}

/// Visits the leaves of `content` in order, one level-0 node at a time, as
/// `(offset of the first leaf, leaves)`. Checks that lengths add up to `size`.
pub(crate) fn for_each_leaf_group<E: From<super::TreeError>>(
    objects: &dyn Objects,
    content: &ContentRef,
    size: u64,
    f: &mut LeafVisitor<E>,
) -> std::result::Result<(), E> {
    content.check_size(size).map_err(|what| {
        E::from(super::corrupt(
            &content.object().unwrap_or(Id([0; 32])),
            what,
        ))
    })?;
    let total = match content {
        ContentRef::Empty => 0,
        ContentRef::Zero => {
            f(0, &[Leaf::Zero(size)])?;
            size
        }
        ContentRef::Chunk(id) => {
            f(0, &[Leaf::Chunk(*id, size as u32)])?;
            size
        }
        ContentRef::Node(id) => visit(objects, id, 0, None, f)?,
    };
    if total != size {
        let id = content.object().unwrap_or(Id([0; 32]));
        return Err(super::corrupt(
            &id,
            format!("content is {total} bytes, its entry says {size}"),
        )
        .into());
    }
    Ok(())
}

fn visit<E: From<super::TreeError>>(
    objects: &dyn Objects,
    id: &NodeId,
    offset: u64,
    expect_level: Option<u8>,
    f: &mut LeafVisitor<E>,
) -> std::result::Result<u64, E> {
    let node = read_node(objects, id, expect_level)?;
    if node.level == 0 {
        let leaves: Vec<Leaf> = node
            .children
            .iter()
            .map(|c| match c {
                Child::Leaf(l) => *l,
                Child::Node(..) => unreachable!("level 0 decodes leaves"),
            })
            .collect();
        f(offset, &leaves)?;
        return Ok(node.total);
    }
    let mut pos = offset;
    for c in &node.children {
        let Child::Node(cid, len) = c else {
            unreachable!("inner nodes decode nodes")
        };
        let got = visit(objects, cid, pos, Some(node.level - 1), f)?;
        if got != *len {
            return Err(super::corrupt(&id.0, "child length does not match its content").into());
        }
        pos += len;
    }
    Ok(node.total)
}

/// The byte ranges of content `to` (`to_size` bytes) whose leaves are not
/// leaves of `from` at the same offset: where the two may differ. Both
/// trees are walked at once, and a subtree that both have at the same
/// offset is not read (a few changed pages of a large file read the nodes
/// on their paths, not every node of both contents). Nodes are read by
/// `read` (id, the level the parent says).
pub(super) fn changed_ranges(
    read: &NodeReader,
    from: &ContentRef,
    from_size: u64,
    to: &ContentRef,
    to_size: u64,
) -> Result<Vec<(u64, u64)>> {
    let mut a = Cursor::new(from, from_size);
    let mut b = Cursor::new(to, to_size);
    let mut out = Vec::new();
    while let Some((bo, bc, _)) = b.head() {
        let be = bo + bc.len();
        let Some((ao, ac, _)) = a.head() else {
            out.push((bo, be));
            b.next();
            continue;
        };
        let ae = ao + ac.len();
        if ao == bo && same(&ac, &bc) {
            a.next();
            b.next();
        } else if ae <= bo {
            a.next();
        } else if be <= ao {
            // No leaf of `from` starts within it.
            out.push((bo, be));
            b.next();
        } else {
            match (ac, bc) {
                // The larger first, so that equal subtrees meet at one level.
                (Child::Node(_, al), Child::Node(_, bl)) if al > bl => a.expand(read)?,
                (_, Child::Node(..)) => b.expand(read)?,
                (Child::Node(..), _) => a.expand(read)?,
                _ if ao < bo => a.next(),
                _ => {
                    out.push((bo, be));
                    b.next();
                }
            }
        }
    }
    Ok(out)
}

/// Reads a chunk tree node: its id, and the level its parent says.
pub(super) type NodeReader<'a> = dyn Fn(&NodeId, Option<u8>) -> Result<std::sync::Arc<Node>> + 'a;

fn same(a: &Child, b: &Child) -> bool {
    match (a, b) {
        (Child::Node(x, m), Child::Node(y, n)) => x == y && m == n,
        (Child::Leaf(x), Child::Leaf(y)) => x == y,
        _ => false,
    }
}

/// A walk over a chunk tree in offset order that opens nodes only when
/// asked: (offset, child, the level a node child must have).
struct Cursor(Vec<(u64, Child, Option<u8>)>);

impl Cursor {
    fn new(content: &ContentRef, size: u64) -> Cursor {
        Cursor(match content {
            ContentRef::Empty => Vec::new(),
            ContentRef::Zero => vec![(0, Child::Leaf(Leaf::Zero(size)), None)],
            ContentRef::Chunk(id) => vec![(0, Child::Leaf(Leaf::Chunk(*id, size as u32)), None)],
            ContentRef::Node(id) => vec![(0, Child::Node(*id, size), None)],
        })
    }

    fn head(&self) -> Option<(u64, Child, Option<u8>)> {
        self.0.last().copied()
    }

    fn next(&mut self) {
        self.0.pop();
    }

    /// Replaces the node at the head by its children.
    fn expand(&mut self, read: &NodeReader) -> Result<()> {
        let Some((at, Child::Node(id, len), level)) = self.0.pop() else {
            return Ok(());
        };
        let node = read(&id, level)?;
        if node.total != len {
            return Err(super::corrupt(
                &id.0,
                "node length does not match its parent",
            ));
        }
        let below = node.level.checked_sub(1);
        let mut end = at + len;
        for c in node.children.iter().rev() {
            end -= c.len();
            self.0.push((end, *c, below));
        }
        Ok(())
    }
}

#[cfg(test)]
/// Every object a content reference reaches (for gc and fsck).
pub(crate) fn for_each_object(
    objects: &dyn Objects,
    content: &ContentRef,
    f: &mut dyn FnMut(Id, Kind) -> Result<bool>,
) -> Result<()> {
    match content {
        ContentRef::Empty | ContentRef::Zero => Ok(()),
        ContentRef::Chunk(c) => f(c.0, Kind::Chunk).map(|_| ()),
        ContentRef::Node(n) => walk_nodes(objects, n, None, f),
    }
}

#[cfg(test)]
fn walk_nodes(
    objects: &dyn Objects,
    id: &NodeId,
    expect_level: Option<u8>,
    f: &mut dyn FnMut(Id, Kind) -> Result<bool>,
) -> Result<()> {
    if !f(id.0, Kind::Meta)? {
        return Ok(());
    }
    let node = read_node(objects, id, expect_level)?;
    for c in &node.children {
        match c {
            Child::Node(cid, _) => walk_nodes(objects, cid, Some(node.level - 1), f)?,
            Child::Leaf(Leaf::Chunk(cid, _)) => {
                f(cid.0, Kind::Chunk)?;
            }
            Child::Leaf(Leaf::Zero(_)) => {}
        }
    }
    Ok(())
}

/// The children one chunk-tree node names (see `super::links`).
pub(super) fn node_links(id: &Id, bytes: &[u8]) -> Result<Vec<super::Link>> {
    Ok(Node::decode(&NodeId(*id), bytes)?
        .children
        .iter()
        .filter_map(|c| match c {
            Child::Node(n, len) => Some(super::Link::meta(n.0, *len)),
            Child::Leaf(Leaf::Chunk(c, len)) => Some(super::Link {
                id: c.0,
                kind: Kind::Chunk,
                size: u64::from(*len),
            }),
            Child::Leaf(Leaf::Zero(_)) => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn build(objects: &dyn Objects, leaves: &[Leaf]) -> ContentRef {
        let mut b = ChunkTreeBuilder::new(objects);
        for l in leaves {
            b.push(*l).unwrap();
        }
        b.finish().unwrap()
    }

    fn chunk(i: u32, objects: &Store) -> (Leaf, Vec<u8>) {
        let data = format!("chunk number {i}").into_bytes();
        let id = Id::of(&data);
        objects.put(Kind::Chunk, &id, &data).unwrap();
        (Leaf::Chunk(ChunkId(id), data.len() as u32), data)
    }

    #[test]
    fn many_leaves_round_trip_and_read_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let mut leaves = Vec::new();
        let mut content = Vec::new();
        for i in 0..5000 {
            let (l, d) = chunk(i, &store);
            leaves.push(l);
            content.extend_from_slice(&d);
            if i % 700 == 0 {
                leaves.push(Leaf::Zero(1000));
                content.extend(std::iter::repeat_n(0u8, 1000));
            }
        }
        let root = build(&store, &leaves);
        assert!(matches!(root, ContentRef::Node(_)));
        let mut seen = Vec::new();
        for_each_leaf_group(
            &store,
            &root,
            content.len() as u64,
            &mut |_, ls| -> Result<()> {
                seen.extend_from_slice(ls);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, leaves);
        for off in [0u64, 1, 17, 5000, 40_000, content.len() as u64 - 3] {
            let mut buf = [0u8; 100];
            let cache = crate::tree::read::Cache::new(1 << 20);
            let r = crate::tree::read::TreeReader {
                objects: &store,
                cache: &cache,
            };
            let n = r
                .read_at(&root, content.len() as u64, off, &mut buf)
                .unwrap();
            assert_eq!(
                &buf[..n],
                &content[off as usize..(off as usize + 100).min(content.len())]
            );
        }
    }

    #[test]
    fn an_edit_rewrites_only_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let leaves: Vec<Leaf> = (0..20_000).map(|i| chunk(i, &store).0).collect();
        let count_nodes = |root: &ContentRef| {
            let mut ids = std::collections::HashSet::new();
            for_each_object(&store, root, &mut |id, k| {
                if k == Kind::Meta {
                    ids.insert(id);
                }
                Ok(true)
            })
            .unwrap();
            ids
        };
        let a = count_nodes(&build(&store, &leaves));
        let mut edited = leaves.clone();
        edited[10_000] = chunk(999_999, &store).0;
        let b = count_nodes(&build(&store, &edited));
        let changed = b.difference(&a).count();
        assert!(
            changed <= 4,
            "an edit of one chunk rewrote {changed} nodes of {}",
            b.len()
        );
    }

    #[test]
    fn small_contents_need_no_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let (l, _) = chunk(1, &store);
        let Leaf::Chunk(id, _) = l else {
            unreachable!()
        };
        assert_eq!(build(&store, &[]), ContentRef::Empty);
        assert_eq!(build(&store, &[l]), ContentRef::Chunk(id));
        assert_eq!(
            build(&store, &[Leaf::Zero(5), Leaf::Zero(7)]),
            ContentRef::Zero
        );
    }

    #[test]
    fn golden_node_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let a = ChunkId(Id::of(b"a"));
        let root = build(&store, &[Leaf::Chunk(a, 1), Leaf::Zero(4096)]);
        let ContentRef::Node(n) = root else {
            panic!("{root:?}")
        };
        let bytes = store.get(&n.0).unwrap();
        let mut expect = b"dn\x01\x00\x02\x01".to_vec();
        expect.extend_from_slice(&a.0 .0);
        expect.extend_from_slice(&[0x01, 0x02, 0x80, 0x20]);
        assert_eq!(bytes, expect);
        assert_eq!(n.0.to_hex(), Id::of(&expect).to_hex());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Walking both trees at once finds exactly the leaves of the new
        /// content that the old one lacks at the same offset.
        #[test]
        fn changed_ranges_are_the_new_leaves_the_old_content_lacks(
            len in 0usize..3000,
            edits in proptest::collection::vec((0usize..3000, 0u8..4, 0u32..100_000), 0..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), "test").unwrap();
            let old: Vec<Leaf> = (0..len as u32).map(|i| chunk(i, &store).0).collect();
            let mut new = old.clone();
            for (at, what, n) in edits {
                let at = at % (new.len() + 1);
                match what {
                    0 => new.insert(at, chunk(1_000_000 + n, &store).0),
                    1 if at < new.len() => { new.remove(at); }
                    2 if at < new.len() => new[at] = chunk(1_000_000 + n, &store).0,
                    _ => new.insert(at, Leaf::Zero(u64::from(n % 5000) + 1)),
                }
            }
            let size = |l: &[Leaf]| l.iter().map(Leaf::len).sum::<u64>();
            let (from, to) = (build(&store, &old), build(&store, &new));
            let (fs, ts) = (size(&old), size(&new));
            // Every leaf of a tree with its offset.
            let leaves = |c: &ContentRef, n: u64| {
                let mut out = Vec::new();
                for_each_leaf_group(&store, c, n, &mut |at, group| {
                    let mut at = at;
                    for l in group {
                        out.push((at, *l));
                        at += l.len();
                    }
                    Ok::<(), crate::tree::TreeError>(())
                })
                .unwrap();
                out
            };
            let old_at: std::collections::HashSet<(u64, Leaf)> =
                leaves(&from, fs).into_iter().collect();
            let want: Vec<(u64, u64)> = leaves(&to, ts)
                .into_iter()
                .filter(|l| !old_at.contains(l))
                .map(|(at, l)| (at, at + l.len()))
                .collect();
            let read = |id: &NodeId, level| read_node(&store, id, level).map(std::sync::Arc::new);
            let got = changed_ranges(&read, &from, fs, &to, ts).unwrap();
            // The same bytes, however they are split.
            let bytes = |r: &[(u64, u64)]| {
                let mut v: Vec<u64> = r.iter().flat_map(|&(a, b)| a..b).collect();
                v.sort_unstable();
                v
            };
            proptest::prop_assert_eq!(bytes(&got), bytes(&want));
        }
    }
}
