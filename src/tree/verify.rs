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
}

impl<'a> Verifier<'a> {
    pub fn new(store: &'a Store, contents: Contents, stop_at_first: bool) -> Verifier<'a> {
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
    pub fn known_damaged(&mut self, ids: impl IntoIterator<Item = Id>) {
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
    pub fn commit(&mut self, id: CommitId, at: &str, trusted: &dyn Fn(&CommitId) -> bool) {
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
    pub fn top(&mut self, top: &Top, at: &str) -> Option<TreeFacts> {
        self.tree(top.tree, at)
    }

    /// Verifies a directory tree and returns its facts.
    pub fn tree(&mut self, root: TreeId, at: &str) -> Option<TreeFacts> {
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
                self.trees.insert(done.tree, facts.clone());
                let Some(parent) = stack.last_mut() else {
                    return facts;
                };
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
                })
            }
            Err(e) => {
                self.note_err(&at, e);
                self.trees.insert(tree, None);
                None
            }
        }
    }

    fn content(&mut self, c: &ContentRef, size: u64, at: &str) {
        if self.contents == Contents::Skip {
            return;
        }
        match c {
            ContentRef::Empty | ContentRef::Zero => {}
            ContentRef::Chunk(id) => self.chunk(id, size, at),
            ContentRef::Node(n) => {
                if let Some((_, total)) = self.node(n, at) {
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
    fn node(&mut self, id: &NodeId, at: &str) -> Option<(u8, u64)> {
        if let Some(v) = self.nodes.get(id) {
            return *v;
        }
        self.seen.insert(id.0);
        let node = match read_node(self.store, id, None) {
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
                Child::Node(cid, len) => match self.node(cid, at) {
                    Some((level, total)) if level + 1 == node.level && total == *len => {}
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
