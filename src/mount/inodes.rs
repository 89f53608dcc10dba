//! Inode numbers handed to the kernel, shared by views and mounted dots:
//! each names a (parent, name) and carries what its file system keeps for
//! it; the kernel's lookups are counted and `forget` drops an inode when
//! none is left, so memory follows what the kernel holds.

use std::collections::HashMap;

use super::ROOT;

pub(crate) struct Inode<T> {
    pub parent: u64,
    pub name: Vec<u8>,
    pub value: T,
    lookups: u64,
}

pub(crate) struct Inodes<T> {
    next: u64,
    table: HashMap<u64, Inode<T>>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
}

/// The parent of an inode whose name was removed: any use of it fails as
/// a removed file's.
pub(crate) const DETACHED: u64 = u64::MAX;

impl<T> Inodes<T> {
    /// A table holding the root, which is never forgotten.
    pub fn new(root: T) -> Inodes<T> {
        let mut table = HashMap::new();
        table.insert(
            ROOT,
            Inode {
                parent: ROOT,
                name: Vec::new(),
                value: root,
                lookups: 1,
            },
        );
        Inodes {
            next: ROOT + 1,
            table,
            by_name: HashMap::new(),
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode<T>> {
        self.table.get(&ino)
    }

    /// The inode of `name` in `parent` (made with `value` if new), with
    /// one more lookup counted.
    pub fn remember(&mut self, parent: u64, name: &[u8], value: impl FnOnce() -> T) -> u64 {
        let key = (parent, name.to_vec());
        let ino = match self.by_name.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.table.insert(
                    ino,
                    Inode {
                        parent,
                        name: name.to_vec(),
                        value: value(),
                        lookups: 0,
                    },
                );
                self.by_name.insert(key, ino);
                ino
            }
        };
        self.table.get_mut(&ino).expect("present").lookups += 1;
        ino
    }

    /// One more lookup of an inode the kernel already has (`.`, `..`).
    pub fn count(&mut self, ino: u64) -> Option<&Inode<T>> {
        let i = self.table.get_mut(&ino)?;
        i.lookups += 1;
        Some(i)
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(i) = self.table.get_mut(&ino) else {
            return;
        };
        i.lookups = i.lookups.saturating_sub(n);
        if i.lookups == 0 {
            let i = self.table.remove(&ino).expect("present");
            if self.by_name.get(&(i.parent, i.name.clone())) == Some(&ino) {
                self.by_name.remove(&(i.parent, i.name));
            }
        }
    }

    /// The inode named `name` in `parent` now, if the kernel holds one.
    pub fn named(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.by_name.get(&(parent, name.to_vec())).copied()
    }

    /// The name `name` in `parent` is gone (unlinked, or replaced).
    pub fn unname(&mut self, parent: u64, name: &[u8]) {
        if let Some(ino) = self.by_name.remove(&(parent, name.to_vec())) {
            if let Some(i) = self.table.get_mut(&ino) {
                i.parent = DETACHED;
            }
        }
    }

    /// The inode named `name` in `parent` is now `to_name` in `to_parent`.
    pub fn rename(&mut self, parent: u64, name: &[u8], to_parent: u64, to_name: &[u8]) {
        self.unname(to_parent, to_name);
        if let Some(ino) = self.by_name.remove(&(parent, name.to_vec())) {
            if let Some(i) = self.table.get_mut(&ino) {
                i.parent = to_parent;
                i.name = to_name.to_vec();
            }
            self.by_name.insert((to_parent, to_name.to_vec()), ino);
        }
    }

    /// Every inode held, with its parent and name.
    pub fn all(&self) -> impl Iterator<Item = (u64, &Inode<T>)> {
        self.table.iter().map(|(ino, i)| (*ino, i))
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }
}
