//! Walking everything reachable from commits: for gc (which objects are
//! live) and for fsck (is every reachable object present and intact).

use std::collections::HashSet;

use crate::id::{CommitId, Id, TreeId};
use crate::store::{Kind, Store};
use crate::tree::chunks;
use crate::tree::commit::{read_root, Commit, Top};
use crate::tree::dir::{node_ids, read_dir, Content};
use crate::tree::TreeError;

pub struct Walker<'a> {
    store: &'a Store,
    /// Read every chunk too, verifying its hash (fsck); otherwise only
    /// metadata is read (gc).
    verify_chunks: bool,
    pub seen: HashSet<Id>,
    /// (where, what went wrong); the walk goes on past damage.
    pub problems: Vec<(String, String)>,
}

impl<'a> Walker<'a> {
    pub fn new(store: &'a Store, verify_chunks: bool) -> Walker<'a> {
        Walker {
            store,
            verify_chunks,
            seen: HashSet::new(),
            problems: Vec::new(),
        }
    }

    fn note(&mut self, at: &str, e: TreeError) {
        self.problems.push((at.to_string(), e.to_string()));
    }

    /// Walks a commit and all its ancestors.
    pub fn commit(&mut self, id: CommitId, at: &str) {
        let mut next = vec![id];
        while let Some(id) = next.pop() {
            if !self.seen.insert(id.0) {
                continue;
            }
            match Commit::read(self.store, &id) {
                Ok(c) => {
                    self.root(&c, &format!("{at} commit {}", id.short()));
                    next.extend(c.parents.iter().copied());
                }
                Err(e) => self.note(&format!("{at} commit {}", id.short()), e),
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
                    self.top(&top, &format!("{at} {name}:"));
                }
            }
            Err(e) => self.note(at, e),
        }
    }

    pub fn top(&mut self, top: &Top, at: &str) {
        self.tree(&top.tree, at);
    }

    fn tree(&mut self, tree: &TreeId, at: &str) {
        if self.seen.contains(&tree.0) {
            return;
        }
        let nodes = match node_ids(self.store, tree) {
            Ok(n) => n,
            Err(e) => return self.note(at, e),
        };
        self.seen.extend(nodes);
        let entries = match read_dir(self.store, tree) {
            Ok(e) => e,
            Err(e) => return self.note(at, e),
        };
        for e in entries {
            let path = format!("{at}/{}", String::from_utf8_lossy(&e.name));
            match &e.content {
                Content::Dir(t) => self.tree(t, &path),
                Content::File(c) => self.content(c, e.size, &path),
                _ => {}
            }
        }
    }

    fn content(&mut self, c: &chunks::ContentRef, size: u64, at: &str) {
        let verify = self.verify_chunks;
        let store = self.store;
        let seen = &mut self.seen;
        let mut damaged = Vec::new();
        let r = chunks::for_each_object(store, c, &mut |id, kind| {
            if !seen.insert(id) {
                return Ok(false);
            }
            if kind == Kind::Chunk && verify {
                if let Err(e) = store.get(&id) {
                    damaged.push(TreeError::from(e));
                }
            }
            Ok(true)
        });
        for e in damaged {
            self.note(at, e);
        }
        if let Err(e) = r {
            self.note(at, e);
        }
        if verify {
            // Lengths must add up: a read at any offset depends on them.
            let r =
                chunks::for_each_leaf_group(store, c, size, &mut |_, _| -> Result<(), TreeError> {
                    Ok(())
                });
            if let Err(e) = r {
                self.note(at, e);
            }
        }
    }
}
