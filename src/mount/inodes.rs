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
    /// Further names of the same file (hard links); one replaces `name`
    /// when that is removed.
    pub aliases: Vec<(u64, Vec<u8>)>,
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
                aliases: Vec::new(),
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

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Inode<T>> {
        self.table.get_mut(&ino)
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
                        aliases: Vec::new(),
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
            for key in std::iter::once((i.parent, i.name)).chain(i.aliases) {
                if self.by_name.get(&key) == Some(&ino) {
                    self.by_name.remove(&key);
                }
            }
        }
    }

    /// `name` in `parent` is a further name of `ino` (a hard link), with
    /// one more lookup counted.
    pub fn alias(&mut self, ino: u64, parent: u64, name: &[u8]) {
        let Some(i) = self.table.get_mut(&ino) else {
            return;
        };
        i.lookups += 1;
        i.aliases.push((parent, name.to_vec()));
        self.by_name.insert((parent, name.to_vec()), ino);
    }

    /// Replaces the name `old` of `ino` (its name or an alias) with
    /// `new`; None drops it. Leaves `by_name` alone.
    fn rename_in(&mut self, ino: u64, old: &(u64, Vec<u8>), new: Option<(u64, Vec<u8>)>) {
        let Some(i) = self.table.get_mut(&ino) else {
            return;
        };
        if (i.parent, &i.name) == (old.0, &old.1) {
            let (parent, name) = match new.or_else(|| i.aliases.pop()) {
                Some(n) => n,
                None => (DETACHED, i.name.clone()),
            };
            i.parent = parent;
            i.name = name;
        } else if let Some(a) = i.aliases.iter().position(|a| a == old) {
            match new {
                Some(n) => i.aliases[a] = n,
                None => {
                    i.aliases.swap_remove(a);
                }
            }
        }
    }

    /// The inode named `name` in `parent` now, if the kernel holds one.
    pub fn named(&self, parent: u64, name: &[u8]) -> Option<u64> {
        self.by_name.get(&(parent, name.to_vec())).copied()
    }

    /// The name `name` in `parent` is gone (unlinked, or replaced).
    pub fn unname(&mut self, parent: u64, name: &[u8]) {
        let key = (parent, name.to_vec());
        if let Some(ino) = self.by_name.remove(&key) {
            self.rename_in(ino, &key, None);
        }
    }

    /// The inode named `name` in `parent` is now `to_name` in `to_parent`.
    pub fn rename(&mut self, parent: u64, name: &[u8], to_parent: u64, to_name: &[u8]) {
        self.unname(to_parent, to_name);
        let key = (parent, name.to_vec());
        if let Some(ino) = self.by_name.remove(&key) {
            let to = (to_parent, to_name.to_vec());
            self.rename_in(ino, &key, Some(to.clone()));
            self.by_name.insert(to, ino);
        }
    }

    /// The inodes named `a` in `pa` and `b` in `pb` swapped names.
    #[cfg(target_os = "linux")]
    pub fn exchange(&mut self, pa: u64, a: &[u8], pb: u64, b: &[u8]) {
        let ka = (pa, a.to_vec());
        let kb = (pb, b.to_vec());
        let ia = self.by_name.remove(&ka);
        let ib = self.by_name.remove(&kb);
        for (ino, from, to) in [(ia, &ka, &kb), (ib, &kb, &ka)] {
            if let Some(ino) = ino {
                self.rename_in(ino, from, Some(to.clone()));
                self.by_name.insert(to.clone(), ino);
            }
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
