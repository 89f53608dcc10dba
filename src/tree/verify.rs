//! Verifying what commits reach, across objects. Each object's decoder
//! checks what its own bytes say; this walk checks what objects say about
//! each other: a child node's level and byte length, a subtree's entry
//! count and first name, a chunk's length against every leaf or entry that
//! names it, and that directory trees stay within `MAX_DEPTH` levels. It
//! also reports, per tree, the facts materializing needs before it writes
//! anything: the depth, the longest relative path, and the first entry dot
//! creates only where allowed (a device node, setuid or setgid file, or
//! `security.*` attribute).
//!
//! The same walk serves gc (which objects are live), fsck (everything,
//! going on past damage), a pull or clone (everything new, stopping at the
//! first problem) and reset or checkout (directories only). Directories
//! are walked with an explicit stack, so no tree can overflow the thread's
//! stack; chunk-tree descents are at most 256 levels (levels drop by one
//! per step). Every object is read once: trees and nodes are memoized by
//! id, and each reference is checked against the memo.

use std::collections::{HashMap, HashSet};

use super::chunks::{read_node, Child, ContentRef, Leaf};
use super::commit::{read_root, Commit, Top};
use super::dir::{read_dir_nodes, Content, DirEntry, MAX_DEPTH};
use super::TreeError;
use crate::id::{ChunkId, CommitId, Id, NodeId, TreeId};
use crate::store::Store;

/// How far file contents are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contents {
    /// Not at all: directories only (reset and checkout planning).
    Skip,
    /// Chunk-tree nodes are read and their lengths checked; chunks are
    /// only named (gc, which needs the live set).
    Reach,
    /// As `Reach`, and each chunk's length from its index entry must be
    /// what every reference to it says (a pull or clone, and fsck after it
    /// has read every stored object).
    Lengths,
    /// As `Lengths`, reading every chunk and checking its hash.
    Read,
}

/// What a directory tree holds, as far as materializing cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeFacts {
    /// Levels of entries below the top (0 for an empty directory).
    pub depth: usize,
    /// Bytes of the longest path relative to the top.
    pub longest: usize,
    /// The first special entry, as (relative path, what it is).
    pub special: Option<(String, String)>,
}

pub struct Verifier<'a> {
    store: &'a Store,
    contents: Contents,
    stop_at_first: bool,
    /// Every object reached.
    pub seen: HashSet<Id>,
    /// (where, what went wrong).
    pub problems: Vec<(String, String)>,
    /// The first special entry of any tree verified through `commit`, as
    /// (where, what).
    pub special: Option<(String, String)>,
    trees: HashMap<TreeId, Option<TreeFacts>>,
    nodes: HashMap<NodeId, Option<(u8, u64)>>,
    chunks: HashMap<Id, Option<u64>>,
    /// Chunks already found damaged, reported where they are used.
    damaged: HashSet<Id>,
}

/// A directory being walked: its entries, the next one to look at, and
/// what the ones before it added up to.
struct Frame {
    tree: TreeId,
    at: String,
    entries: Vec<DirEntry>,
    next: usize,
    facts: TreeFacts,
    ok: bool,
    /// Whether the walk stopped below it at the depth limit.
    cut: bool,
}

impl<'a> Verifier<'a> {
    pub(crate) fn new(store: &'a Store, contents: Contents, stop_at_first: bool) -> Verifier<'a> {
        Verifier {
            store,
            contents,
            stop_at_first,
            seen: HashSet::new(),
            problems: Vec::new(),
            special: None,
            trees: HashMap::new(),
            nodes: HashMap::new(),
            chunks: HashMap::new(),
            damaged: HashSet::new(),
        }
    }

    /// Objects found damaged by reading them (fsck's first pass): a walk
    /// that does not read chunks names the files that use them.
    pub(crate) fn known_damaged(&mut self, ids: impl IntoIterator<Item = Id>) {
        self.damaged.extend(ids);
    }

    fn stopped(&self) -> bool {
        self.stop_at_first && !self.problems.is_empty()
    }

    fn note(&mut self, at: &str, what: impl Into<String>) {
        self.problems.push((at.to_string(), what.into()));
    }

    fn note_err(&mut self, at: &str, e: TreeError) {
        self.note(at, e.to_string());
    }

    /// Verifies a commit and its ancestors, except those `trusted` says
    /// were verified before (their ancestors are not entered either).
    pub(crate) fn commit(&mut self, id: CommitId, at: &str, trusted: &dyn Fn(&CommitId) -> bool) {
        let mut next = vec![id];
        while let Some(id) = next.pop() {
            if self.stopped() || trusted(&id) || !self.seen.insert(id.0) {
                continue;
            }
            let here = format!("{at} commit {}", id.short());
            match Commit::read(self.store, &id) {
                Ok(c) => {
                    self.root(&c, &here);
                    next.extend(c.parents.iter().copied());
                }
                Err(e) => self.note_err(&here, e),
            }
        }
    }

    fn root(&mut self, c: &Commit, at: &str) {
        if !self.seen.insert(c.root.0) {
            return;
        }
        match read_root(self.store, &c.root) {
            Ok(root) => {
                for (name, top) in root {
                    let here = format!("{at} {name}:");
                    if let Some(facts) = self.top(&top, &here) {
                        if let (None, Some((path, what))) = (&self.special, facts.special) {
                            self.special = Some((format!("{here}/{path}"), what));
                        }
                    }
                }
            }
            Err(e) => self.note_err(at, e),
        }
    }

    /// Verifies a subdot's top directory; None when it is damaged (the
    /// problem is recorded).
    pub(crate) fn top(&mut self, top: &Top, at: &str) -> Option<TreeFacts> {
        self.tree(top.tree, at)
    }

    /// Verifies a directory tree and returns its facts.
    pub(crate) fn tree(&mut self, root: TreeId, at: &str) -> Option<TreeFacts> {
        if let Some(f) = self.trees.get(&root) {
            return f.clone();
        }
        let mut stack = vec![self.frame(root, at.to_string())?];
        loop {
            if self.stopped() {
                return None;
            }
            let frame = stack.last_mut().expect("a frame");
            let Some(e) = frame.entries.get(frame.next) else {
                let done = stack.pop().expect("a frame");
                let too_deep = done.facts.depth > MAX_DEPTH;
                if done.ok && too_deep {
                    self.note(
                        &done.at,
                        format!("the directory tree is deeper than {MAX_DEPTH} levels"),
                    );
                }
                let facts = (done.ok && !too_deep).then_some(done.facts);
                // A tree cut short by where it was met is not judged by it.
                if !done.cut {
                    self.trees.insert(done.tree, facts.clone());
                }
                let Some(parent) = stack.last_mut() else {
                    return facts;
                };
                parent.cut |= done.cut;
                let name = parent.entries[parent.next - 1].name.clone();
                parent.add_subtree(&name, facts.as_ref());
                continue;
            };
            frame.next += 1;
            let name = e.name.clone();
            let (content, size) = (e.content.clone(), e.size);
            let special = e.special();
            frame.add_entry(&name, special);
            let depth = stack.len();
            let frame = stack.last_mut().expect("a frame");
            let here = format!("{}/{}", frame.at, String::from_utf8_lossy(&name));
            match content {
                Content::Dir(child) => match self.trees.get(&child) {
                    Some(f) => {
                        let f = f.clone();
                        frame.add_subtree(&name, f.as_ref());
                    }
                    None if depth > MAX_DEPTH => {
                        frame.ok = false;
                        frame.cut = true;
                        self.note(
                            &here,
                            format!("the directory tree is deeper than {MAX_DEPTH} levels"),
                        );
                    }
                    None => match self.frame(child, here) {
                        Some(f) => stack.push(f),
                        None => stack.last_mut().expect("a frame").ok = false,
                    },
                },
                Content::File(c) => self.content(&c, size, &here),
                _ => {}
            }
        }
    }

    /// Reads a directory into a new frame; None (recorded) when damaged.
    fn frame(&mut self, tree: TreeId, at: String) -> Option<Frame> {
        match read_dir_nodes(self.store, &tree) {
            Ok((entries, nodes)) => {
                self.seen.extend(nodes);
                Some(Frame {
                    tree,
                    at,
                    entries,
                    next: 0,
                    facts: TreeFacts::default(),
                    ok: true,
                    cut: false,
                })
            }
            Err(e) => {
                self.note_err(&at, e);
                self.trees.insert(tree, None);
                None
            }
        }
    }

    pub(crate) fn content(&mut self, c: &ContentRef, size: u64, at: &str) {
        if self.contents == Contents::Skip {
            return;
        }
        match c {
            ContentRef::Empty | ContentRef::Zero => {}
            ContentRef::Chunk(id) => self.chunk(id, size, at),
            ContentRef::Node(n) => {
                if let Some((_, total)) = self.node(n, None, at) {
                    if total != size {
                        self.note(
                            at,
                            format!(
                                "content {} is {total} bytes, its entry says {size}",
                                n.short()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// A chunk-tree node's (level, byte length), checking its children.
    /// A child read here for the first time must have the level below its
    /// parent's before it is descended into, so descents are at most 256
    /// deep whatever a remote sends.
    fn node(&mut self, id: &NodeId, expect_level: Option<u8>, at: &str) -> Option<(u8, u64)> {
        if let Some(v) = self.nodes.get(id) {
            return *v;
        }
        self.seen.insert(id.0);
        let node = match read_node(self.store, id, expect_level) {
            Ok(n) => n,
            Err(e) => {
                self.note_err(at, e);
                self.nodes.insert(*id, None);
                return None;
            }
        };
        let mut ok = true;
        for c in &node.children {
            match c {
                Child::Leaf(Leaf::Chunk(cid, len)) => self.chunk(cid, u64::from(*len), at),
                Child::Leaf(Leaf::Zero(_)) => {}
                Child::Node(cid, len) => match self.node(cid, node.level.checked_sub(1), at) {
                    Some((level, total))
                        if node.level.checked_sub(1) == Some(level) && total == *len => {}
                    Some(_) => {
                        ok = false;
                        self.note(
                            at,
                            format!(
                                "node {} names child {} with a level or length it does not have",
                                id.short(),
                                cid.short()
                            ),
                        );
                    }
                    None => ok = false,
                },
            }
        }
        let v = ok.then_some((node.level, node.total));
        self.nodes.insert(*id, v);
        v
    }

    /// Checks that a chunk exists and is `len` bytes long.
    fn chunk(&mut self, id: &ChunkId, len: u64, at: &str) {
        self.seen.insert(id.0);
        if self.damaged.contains(&id.0) {
            self.note(at, format!("chunk {} is damaged", id.short()));
        }
        if self.contents == Contents::Reach {
            return;
        }
        let actual = match self.chunks.get(&id.0) {
            Some(a) => *a,
            None => {
                let found = if self.contents == Contents::Read {
                    self.store.get(&id.0).map(|d| d.len() as u64)
                } else {
                    self.store
                        .entry(&id.0)
                        .and_then(|e| e.ok_or(crate::store::StoreError::Missing(id.0)))
                        .map(|e| u64::from(e.slot.raw_len))
                };
                let a = match found {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.note(at, e.to_string());
                        None
                    }
                };
                self.chunks.insert(id.0, a);
                a
            }
        };
        if let Some(actual) = actual.filter(|a| *a != len) {
            self.note(
                at,
                format!(
                    "chunk {} is {actual} bytes, but is referenced as {len}",
                    id.short()
                ),
            );
        }
    }
}

impl Frame {
    /// Adds one entry of this directory (its own name and specialness).
    fn add_entry(&mut self, name: &[u8], special: Option<String>) {
        let f = &mut self.facts;
        f.depth = f.depth.max(1);
        f.longest = f.longest.max(name.len());
        if f.special.is_none() {
            f.special = special.map(|what| (String::from_utf8_lossy(name).into_owned(), what));
        }
    }

    /// Adds what the subdirectory `name` holds; None when it is damaged.
    fn add_subtree(&mut self, name: &[u8], child: Option<&TreeFacts>) {
        let Some(child) = child else {
            self.ok = false;
            return;
        };
        let f = &mut self.facts;
        if child.depth > 0 {
            f.depth = f.depth.max(child.depth + 1);
            f.longest = f.longest.max(name.len() + 1 + child.longest);
        }
        if f.special.is_none() {
            if let Some((path, what)) = &child.special {
                f.special = Some((
                    format!("{}/{path}", String::from_utf8_lossy(name)),
                    what.clone(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::alloc_track::largest_allocation;
    use crate::id::RootId;
    use crate::store::Kind;
    use crate::tree::chunks::{ChunkTreeBuilder, Node};
    use crate::tree::commit::{decode_root, write_root, Root};
    use crate::tree::dir::{write_dir, DirNode, EntryKind};
    use crate::tree::{links, Objects, Result};
    use proptest::prelude::*;

    /// Records every object put, in order: children before parents.
    struct Recorder<'a> {
        store: &'a Store,
        order: Mutex<Vec<(Kind, Vec<u8>)>>,
    }

    impl Objects for Recorder<'_> {
        fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<()> {
            self.order.lock().unwrap().push((kind, raw.to_vec()));
            Objects::put(self.store, kind, id, raw)
        }
        fn get(&self, id: &Id) -> Result<Vec<u8>> {
            Objects::get(self.store, id)
        }
        fn has(&self, id: &Id) -> Result<bool> {
            Objects::has(self.store, id)
        }
    }

    fn entry(name: &str, kind: EntryKind, size: u64, content: Content) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o640,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            size,
            content,
            xattrs: vec![(b"user.x".to_vec(), b"y".to_vec())],
        }
    }

    /// A small commit with a two-level chunk tree, a subdirectory and a
    /// symlink; returns every object in the order written.
    fn sample(store: &Store) -> Vec<(Kind, Vec<u8>)> {
        let rec = Recorder {
            store,
            order: Mutex::new(Vec::new()),
        };
        let mut b = ChunkTreeBuilder::new(&rec);
        let mut size = 0;
        for i in 0..300u32 {
            let data = format!("chunk {i}").into_bytes();
            let id = Id::of(&data);
            rec.put(Kind::Chunk, &id, &data).unwrap();
            b.push(Leaf::Chunk(ChunkId(id), data.len() as u32)).unwrap();
            b.push(Leaf::Zero(7)).unwrap();
            size += data.len() as u64 + 7;
        }
        let file = b.finish().unwrap();
        let sub = write_dir(
            &rec,
            &[entry(
                "s",
                EntryKind::Symlink,
                1,
                Content::Symlink(b"f".to_vec()),
            )],
        )
        .unwrap();
        let top = write_dir(
            &rec,
            &[
                entry("d", EntryKind::Dir, 0, Content::Dir(sub)),
                entry("f", EntryKind::File, size, Content::File(file)),
            ],
        )
        .unwrap();
        let mut root = Root::new();
        root.insert(
            "__default__".into(),
            Top {
                tree: top,
                mode: 0o700,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
            },
        );
        let r = write_root(&rec, &root).unwrap();
        Commit {
            root: r,
            parents: vec![],
            author: "a".into(),
            email: "e".into(),
            time: 0,
            tz_minutes: 0,
            message: "m".into(),
            metadata: Default::default(),
        }
        .write(&rec)
        .unwrap();
        rec.order.into_inner().unwrap()
    }

    fn header() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"dc\x01".to_vec()),
            Just(b"dr\x01".to_vec()),
            Just(b"dt\x01".to_vec()),
            Just(b"dt\x01\x00".to_vec()),
            Just(b"dt\x01\x01".to_vec()),
            Just(b"dn\x01".to_vec()),
            Just(b"dn\x01\x00".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..4),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn any_object_decodes_or_fails_cleanly(
            head in header(),
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = head;
            bytes.extend(body);
            let id = Id::of(&bytes);
            let (_, largest) = largest_allocation(|| {
                let _ = links(&id, Kind::Meta, &bytes);
                let _ = Commit::decode(&CommitId(id), &bytes);
                let _ = decode_root(&RootId(id), &bytes);
                let _ = DirNode::decode(&id, &bytes);
                let _ = Node::decode(&NodeId(id), &bytes);
            });
            // Counts are bounded by the format (1024 children), lists by
            // the bytes actually present.
            prop_assert!(largest <= 128 * 1024 + 64 * bytes.len());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// One object of a commit changed (bytes replaced, cut or added),
        /// with every id above it recomputed, as a hostile remote would:
        /// verifying, reading and diffing never panic.
        #[test]
        fn a_damaged_commit_is_reported_not_fatal(
            which in any::<proptest::sample::Index>(),
            at in any::<proptest::sample::Index>(),
            edit in prop_oneof![any::<u8>().prop_map(Some), Just(None)],
            grow in 0usize..3,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let good = Store::open(&dir.path().join("good"), "test").unwrap();
            let mut objects = sample(&good);
            let k = which.index(objects.len());
            let old_id = Id::of(&objects[k].1);
            let raw = &mut objects[k].1;
            let i = at.index(raw.len());
            match edit {
                Some(v) => raw[i] = v,
                None => raw.truncate(i.max(1)),
            }
            raw.extend(std::iter::repeat_n(0x80, grow));
            let mut renamed = vec![(old_id, Id::of(&objects[k].1))];
            for (_, raw) in objects.iter_mut().skip(k + 1) {
                let before = Id::of(raw);
                for (from, to) in &renamed {
                    if let Some(p) = raw.windows(32).position(|w| w == from.0) {
                        raw[p..p + 32].copy_from_slice(&to.0);
                    }
                }
                renamed.push((before, Id::of(raw)));
            }
            let bad = Store::open(&dir.path().join("bad"), "test").unwrap();
            for (kind, raw) in &objects {
                let _ = bad.put(*kind, &Id::of(raw), raw);
            }
            let head = CommitId(Id::of(&objects.last().unwrap().1));
            for contents in [Contents::Reach, Contents::Lengths, Contents::Read] {
                let mut v = Verifier::new(&bad, contents, false);
                v.commit(head, "c", &|_| false);
            }
            if let Ok(c) = Commit::read(&bad, &head) {
                if let Ok(root) = crate::tree::commit::read_root(&bad, &c.root) {
                    for top in root.values() {
                        let mut out = Vec::new();
                        let _ = crate::tree::diff::diff(&bad, None, Some(&top.tree), "", &mut out);
                        let cache = crate::tree::read::Cache::new(1 << 20);
                        let reader = crate::tree::read::TreeReader { objects: &bad, cache: &cache };
                        let _ = reader.entries(&top.tree, 1, 3);
                        let _ = reader.lookup(&top.tree, b"f");
                        if let Ok(entries) = crate::tree::dir::read_dir(&bad, &top.tree) {
                            for e in entries {
                                if let Content::File(c) = e.content {
                                    let mut buf = vec![0u8; 4096];
                                    let _ = reader.read_at(&c, e.size, 100, &mut buf);
                                    let _ = crate::tree::chunks::for_each_leaf_group(
                                        &bad, &c, e.size,
                                        &mut |_, _| -> std::result::Result<(), TreeError> { Ok(()) },
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_sample_verifies_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let objects = sample(&store);
        let head = CommitId(Id::of(&objects.last().unwrap().1));
        let mut v = Verifier::new(&store, Contents::Read, false);
        v.commit(head, "c", &|_| false);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.seen.len(), objects.len());
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let mut t = write_dir(&store, &[]).unwrap();
        for depth in 1..=MAX_DEPTH + 5 {
            t = write_dir(&store, &[entry("d", EntryKind::Dir, 0, Content::Dir(t))]).unwrap();
            if depth == MAX_DEPTH {
                // The deepest legal tree: MAX_DEPTH levels of entries.
                let mut v = Verifier::new(&store, Contents::Read, false);
                let facts = v.tree(t, "t").expect("legal");
                assert_eq!(facts.depth, MAX_DEPTH);
                assert_eq!(facts.longest, 2 * MAX_DEPTH - 1);
                let mut out = Vec::new();
                crate::tree::diff::diff(&store, None, Some(&t), "", &mut out).unwrap();
                assert_eq!(out.len(), MAX_DEPTH);
            }
        }
        let mut v = Verifier::new(&store, Contents::Read, false);
        assert!(v.tree(t, "t").is_none());
        assert!(v.problems[0].1.contains("deeper than"), "{:?}", v.problems);
        let mut out = Vec::new();
        assert!(crate::tree::diff::diff(&store, None, Some(&t), "", &mut out).is_err());
    }
}
