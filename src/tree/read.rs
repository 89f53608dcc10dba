//! Reading trees a piece at a time, for mounts (docs/design.md 16.2): a
//! name looked up, a page of a directory, bytes at an offset of a file,
//! each reading only the nodes on one path down, through bounded caches.
//!
//! Every node is decoded and checked as anywhere else (`DirNode::decode`,
//! `chunks::Node::decode`); what a descent adds is checked here: levels
//! drop by one per step, an inner record's counts and lengths agree with
//! what is found below it, and names are in their node's range.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::chunks::{Child, ContentRef, Leaf, Node};
use super::dir::{DirEntry, DirNode};
use super::{corrupt, Objects, Result};
use crate::id::{ChunkId, Id, NodeId, TreeId};

/// Bytes of encoded nodes and of chunks each cache keeps by default.
pub const CACHE_BYTES: usize = 64 << 20;

/// A bounded map with second-chance (CLOCK) eviction: an entry used since
/// the hand last passed it is kept one more round.
struct Clock<V> {
    map: HashMap<Id, (Arc<V>, usize, bool)>,
    ring: VecDeque<Id>,
    used: usize,
    limit: usize,
}

impl<V> Clock<V> {
    fn new(limit: usize) -> Clock<V> {
        Clock {
            map: HashMap::new(),
            ring: VecDeque::new(),
            used: 0,
            limit,
        }
    }

    fn get(&mut self, id: &Id) -> Option<Arc<V>> {
        let e = self.map.get_mut(id)?;
        e.2 = true;
        Some(e.0.clone())
    }

    fn insert(&mut self, id: Id, v: Arc<V>, cost: usize) {
        if self.map.contains_key(&id) {
            return;
        }
        while self.used + cost > self.limit {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            let e = self.map.get_mut(&old).expect("ring and map agree");
            if e.2 {
                e.2 = false;
                self.ring.push_back(old);
            } else {
                self.used -= e.1;
                self.map.remove(&old);
            }
        }
        self.used += cost;
        self.map.insert(id, (v, cost, false));
        self.ring.push_back(id);
    }
}

/// Decoded nodes and chunk bytes recently read, each bounded in bytes.
pub struct Cache {
    dirs: Mutex<Clock<DirNode>>,
    nodes: Mutex<Clock<Node>>,
    chunks: Mutex<Clock<Vec<u8>>>,
}

impl Cache {
    pub fn new(bytes: usize) -> Cache {
        Cache {
            dirs: Mutex::new(Clock::new(bytes / 2)),
            nodes: Mutex::new(Clock::new(bytes / 2)),
            chunks: Mutex::new(Clock::new(bytes)),
        }
    }
}

fn cached<V>(
    clock: &Mutex<Clock<V>>,
    id: &Id,
    load: impl FnOnce() -> Result<(V, usize)>,
) -> Result<Arc<V>> {
    if let Some(v) = clock.lock().unwrap_or_else(PoisonError::into_inner).get(id) {
        return Ok(v);
    }
    let (v, cost) = load()?;
    let v = Arc::new(v);
    clock
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(*id, v.clone(), cost);
    Ok(v)
}

/// Reads trees through a cache.
pub struct TreeReader<'a> {
    pub objects: &'a dyn Objects,
    pub cache: &'a Cache,
}

impl TreeReader<'_> {
    fn dir_node(&self, id: &Id, expect_level: Option<u8>) -> Result<Arc<DirNode>> {
        let node = cached(&self.cache.dirs, id, || {
            let bytes = self.objects.get(id)?;
            Ok((DirNode::decode(id, &bytes)?, bytes.len()))
        })?;
        if expect_level.is_some_and(|l| l != node.level()) {
            return Err(corrupt(id, "node level does not match its parent"));
        }
        Ok(node)
    }

    fn chunk_node(&self, id: &NodeId, expect_level: Option<u8>) -> Result<Arc<Node>> {
        let node = cached(&self.cache.nodes, &id.0, || {
            let bytes = self.objects.get(&id.0)?;
            Ok((Node::decode(id, &bytes)?, bytes.len()))
        })?;
        if expect_level.is_some_and(|l| l != node.level) {
            return Err(corrupt(&id.0, "node level does not match its parent"));
        }
        Ok(node)
    }

    fn chunk(&self, id: &ChunkId, len: u64) -> Result<Arc<Vec<u8>>> {
        let data = cached(&self.cache.chunks, &id.0, || {
            let data = self.objects.get(&id.0)?;
            let n = data.len();
            Ok((data, n))
        })?;
        if data.len() as u64 != len {
            return Err(corrupt(
                &id.0,
                format!("chunk is {} bytes, its reference says {len}", data.len()),
            ));
        }
        Ok(data)
    }

    /// The byte ranges of content `to` whose leaves are not leaves of
    /// `from` at the same offset (`chunks::changed_ranges`), through the
    /// cache.
    pub fn changed_ranges(
        &self,
        from: &ContentRef,
        from_size: u64,
        to: &ContentRef,
        to_size: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let read = |id: &NodeId, level| self.chunk_node(id, level);
        super::chunks::changed_ranges(&read, from, from_size, to, to_size)
    }

    /// The entry called `name` in directory `tree`, reading one node per
    /// level.
    pub fn lookup(&self, tree: &TreeId, name: &[u8]) -> Result<Option<DirEntry>> {
        let mut id = tree.0;
        let mut expect = None;
        loop {
            let node = self.dir_node(&id, expect)?;
            match &*node {
                DirNode::Entries(entries) => {
                    return Ok(entries
                        .binary_search_by(|e| e.name.as_slice().cmp(name))
                        .ok()
                        .map(|i| entries[i].clone()));
                }
                DirNode::Children(level, children) => {
                    // The last child whose first name is at most `name`.
                    let i = children.partition_point(|(first, _, _)| first.as_slice() <= name);
                    let Some(i) = i.checked_sub(1) else {
                        return Ok(None);
                    };
                    id = children[i].1 .0;
                    expect = Some(level - 1);
                }
            }
        }
    }

    /// Up to `max` entries of directory `tree` from index `from` on, in
    /// name order; fewer only at the end. Descends by the inner records'
    /// entry counts, so a page costs one path down plus its own nodes.
    pub fn entries(&self, tree: &TreeId, from: u64, max: usize) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        // (node, its expected level, index of the first wanted entry in it)
        let mut stack = vec![(tree.0, None, from)];
        while let Some((id, expect, skip)) = stack.pop() {
            if out.len() >= max {
                break;
            }
            let node = self.dir_node(&id, expect)?;
            match &*node {
                DirNode::Entries(entries) => {
                    if let (Some(last), Some(first)) = (out.last(), entries.first()) {
                        let last: &DirEntry = last;
                        if last.name >= first.name {
                            return Err(corrupt(&id, "entries are not sorted and unique"));
                        }
                    }
                    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
                    let room = max - out.len();
                    out.extend(entries.iter().skip(skip).take(room).cloned());
                }
                DirNode::Children(level, children) => {
                    let mut skip = skip;
                    let mut below = Vec::new();
                    for (_, child, count) in children {
                        if skip >= *count {
                            skip -= count;
                            continue;
                        }
                        below.push((child.0, Some(level - 1), skip));
                        skip = 0;
                    }
                    // Children in order: the stack pops the first one first.
                    stack.extend(below.into_iter().rev());
                }
            }
        }
        Ok(out)
    }

    /// Reads up to `buf.len()` bytes at `offset` of a file of `size` bytes
    /// with `content`; returns how many (0 at or past the end).
    pub fn read_at(
        &self,
        content: &ContentRef,
        size: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let want = (buf.len() as u64).min(size.saturating_sub(offset)) as usize;
        let buf = &mut buf[..want];
        let mut done = 0;
        while done < want {
            let at = offset + done as u64;
            done += match content {
                ContentRef::Empty => {
                    return Err(corrupt(&Id([0; 32]), "an empty file with a size"))
                }
                ContentRef::Zero => {
                    buf.fill(0);
                    want
                }
                ContentRef::Chunk(id) => copy_leaf(self, &Leaf::Chunk(*id, 0), size, at, buf)?,
                ContentRef::Node(root) => self.read_node_at(root, at, &mut buf[done..])?,
            };
        }
        Ok(want)
    }

    /// Reads from the one leaf that holds `offset`; returns bytes read
    /// (at least one).
    fn read_node_at(&self, root: &NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (mut id, mut expect, mut offset) = (*root, None, offset);
        loop {
            let node = self.chunk_node(&id, expect)?;
            let mut pos = 0u64;
            let mut next = None;
            for c in &node.children {
                let len = c.len();
                if offset - pos < len {
                    next = Some((c, offset - pos));
                    break;
                }
                pos += len;
            }
            let Some((child, inner)) = next else {
                return Err(corrupt(&id.0, "offset beyond the node's content"));
            };
            match child {
                Child::Node(cid, _) => {
                    id = *cid;
                    expect = Some(node.level - 1);
                    offset = inner;
                }
                Child::Leaf(leaf) => return copy_leaf(self, leaf, leaf.len(), inner, buf),
            }
        }
    }
}

/// Copies from `leaf` (of `len` bytes) at `inner` into `buf`; returns how
/// many bytes (at least one when `inner < len`).
fn copy_leaf(r: &TreeReader, leaf: &Leaf, len: u64, inner: u64, buf: &mut [u8]) -> Result<usize> {
    let n = usize::try_from(len - inner)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    match leaf {
        Leaf::Zero(_) => buf[..n].fill(0),
        Leaf::Chunk(cid, _) => {
            let data = r.chunk(cid, len)?;
            let start = inner as usize;
            buf[..n].copy_from_slice(&data[start..start + n]);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::tree::chunks::ChunkTreeBuilder;
    use crate::tree::dir::{read_dir, write_dir, Content, EntryKind};
    use proptest::prelude::*;

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::Fifo,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            content: Content::Fifo,
            xattrs: vec![],
        }
    }

    #[test]
    fn lookups_and_pages_agree_with_reading_the_whole_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "test").unwrap();
        // Enough names for several leaf nodes and an inner level.
        let names: Vec<String> = (0..20_000).map(|i| format!("file-{i:06}")).collect();
        let entries: Vec<DirEntry> = names.iter().map(|n| entry(n)).collect();
        let tree = write_dir(&store, &entries).unwrap();
        let cache = Cache::new(1 << 20);
        let r = TreeReader {
            objects: &store,
            cache: &cache,
        };
        assert!(matches!(
            *r.dir_node(&tree.0, None).unwrap(),
            DirNode::Children(..)
        ));
        for n in names.iter().step_by(997).chain([&names[19_999]]) {
            assert_eq!(
                r.lookup(&tree, n.as_bytes()).unwrap().unwrap().name,
                n.as_bytes()
            );
        }
        for absent in ["a", "file-", "file-0000005", "zzz"] {
            assert!(r.lookup(&tree, absent.as_bytes()).unwrap().is_none());
        }
        let all = read_dir(&store, &tree).unwrap();
        let mut paged = Vec::new();
        while paged.len() < all.len() {
            let page = r.entries(&tree, paged.len() as u64, 333).unwrap();
            assert!(!page.is_empty());
            paged.extend(page);
        }
        assert_eq!(paged, all);
        assert!(r.entries(&tree, 20_000, 10).unwrap().is_empty());
        assert_eq!(r.entries(&tree, 19_999, 10).unwrap().len(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Bytes read at any offset are the file's bytes, for trees of
        /// chunks and zero runs of any shape.
        #[test]
        fn reads_at_any_offset_match_the_content(
            lens in prop::collection::vec((1u32..3000, any::<bool>()), 1..400),
            reads in prop::collection::vec((any::<u64>(), 0usize..9000), 1..20),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(tmp.path(), "test").unwrap();
            let mut whole = Vec::new();
            let mut b = ChunkTreeBuilder::new(&store);
            for (i, (len, zero)) in lens.iter().enumerate() {
                if *zero {
                    whole.extend(std::iter::repeat_n(0u8, *len as usize));
                    b.push(Leaf::Zero(u64::from(*len))).unwrap();
                } else {
                    let data: Vec<u8> = (0..*len).map(|j| (i as u32 * 7 + j) as u8).collect();
                    let id = Id::of(&data);
                    store.put(crate::store::Kind::Chunk, &id, &data).unwrap();
                    whole.extend(&data);
                    b.push(Leaf::Chunk(ChunkId(id), *len)).unwrap();
                }
            }
            let content = b.finish().unwrap();
            let cache = Cache::new(64 << 10);
            let r = TreeReader { objects: &store, cache: &cache };
            let size = whole.len() as u64;
            for (off, n) in reads {
                let off = off % (size + 10);
                let mut buf = vec![0xAA; n];
                let got = r.read_at(&content, size, off, &mut buf).unwrap();
                let start = (off as usize).min(whole.len());
                let end = (start + n).min(whole.len());
                prop_assert_eq!(&buf[..got], &whole[start..end]);
            }
        }

        /// A directory of any names: every name is found, others are not,
        /// and pages of any size give back the whole directory.
        #[test]
        fn lookups_and_pages_of_any_directory(
            names in prop::collection::btree_set("[a-z0-9]{1,12}", 0..3000),
            page in 1usize..500,
            probes in prop::collection::vec("[a-z0-9]{1,12}", 0..50),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(tmp.path(), "test").unwrap();
            let entries: Vec<DirEntry> = names.iter().map(|n| entry(n)).collect();
            let tree = write_dir(&store, &entries).unwrap();
            let cache = Cache::new(256 << 10);
            let r = TreeReader { objects: &store, cache: &cache };
            for p in &probes {
                prop_assert_eq!(
                    r.lookup(&tree, p.as_bytes()).unwrap().is_some(),
                    names.contains(p)
                );
            }
            let mut paged = Vec::new();
            loop {
                let got = r.entries(&tree, paged.len() as u64, page).unwrap();
                if got.is_empty() {
                    break;
                }
                paged.extend(got);
            }
            prop_assert_eq!(paged, entries);
        }
    }
}
