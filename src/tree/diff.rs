//! Merkle diff of directory trees: subtrees with equal ids are skipped
//! without being read, so a diff costs what changed, not the tree's size.

use super::dir::{read_dir, Content, DirEntry, EntryKind};
use super::{Objects, Result};
use crate::id::TreeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn letter(&self) -> char {
        match self {
            Change::Added => 'A',
            Change::Modified => 'M',
            Change::Deleted => 'D',
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// Path relative to the tree's top, `/`-separated; directories end in `/`.
    pub path: String,
    pub change: Change,
    pub size_before: u64,
    pub size_after: u64,
}

/// The changes that turn tree `a` into tree `b` (either may be absent:
/// an absent tree is empty). Directory mtimes alone do not count as a
/// change: creating and deleting a file changes them and nothing else.
pub fn diff(
    objects: &dyn Objects,
    a: Option<&TreeId>,
    b: Option<&TreeId>,
    prefix: &str,
    out: &mut Vec<Changed>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ea = match a {
        Some(t) => read_dir(objects, t)?,
        None => Vec::new(),
    };
    let eb = match b {
        Some(t) => read_dir(objects, t)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ea.len() || j < eb.len() {
        let order = match (ea.get(i), eb.get(j)) {
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                removed(objects, &ea[i], prefix, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added(objects, &eb[j], prefix, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                changed(objects, &ea[i], &eb[j], prefix, out)?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn path_of(prefix: &str, e: &DirEntry) -> String {
    let name = String::from_utf8_lossy(&e.name);
    if e.kind == EntryKind::Dir {
        format!("{prefix}{name}/")
    } else {
        format!("{prefix}{name}")
    }
}

fn added(objects: &dyn Objects, e: &DirEntry, prefix: &str, out: &mut Vec<Changed>) -> Result<()> {
    let path = path_of(prefix, e);
    out.push(Changed {
        path: path.clone(),
        change: Change::Added,
        size_before: 0,
        size_after: e.size,
    });
    if let Content::Dir(t) = &e.content {
        diff(objects, None, Some(t), &path, out)?;
    }
    Ok(())
}

fn removed(
    objects: &dyn Objects,
    e: &DirEntry,
    prefix: &str,
    out: &mut Vec<Changed>,
) -> Result<()> {
    let path = path_of(prefix, e);
    out.push(Changed {
        path: path.clone(),
        change: Change::Deleted,
        size_before: e.size,
        size_after: 0,
    });
    if let Content::Dir(t) = &e.content {
        diff(objects, Some(t), None, &path, out)?;
    }
    Ok(())
}

fn changed(
    objects: &dyn Objects,
    a: &DirEntry,
    b: &DirEntry,
    prefix: &str,
    out: &mut Vec<Changed>,
) -> Result<()> {
    if a.kind != b.kind {
        removed(objects, a, prefix, out)?;
        return added(objects, b, prefix, out);
    }
    if let (Content::Dir(ta), Content::Dir(tb)) = (&a.content, &b.content) {
        if (a.mode, a.uid, a.gid, &a.xattrs) != (b.mode, b.uid, b.gid, &b.xattrs) {
            out.push(Changed {
                path: path_of(prefix, b),
                change: Change::Modified,
                size_before: 0,
                size_after: 0,
            });
        }
        return diff(objects, Some(ta), Some(tb), &path_of(prefix, b), out);
    }
    if a != b {
        out.push(Changed {
            path: path_of(prefix, b),
            change: Change::Modified,
            size_before: a.size,
            size_after: b.size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::tree::chunks::ContentRef;
    use crate::tree::dir::write_dir;

    fn entry(name: &str, content: Content, mtime: i64) -> DirEntry {
        let kind = match content {
            Content::Dir(_) => EntryKind::Dir,
            _ => EntryKind::File,
        };
        DirEntry {
            name: name.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: mtime,
            size: 0,
            content,
            xattrs: vec![],
        }
    }

    #[test]
    fn reports_added_modified_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let sub_a = write_dir(&s, &[entry("x", Content::File(ContentRef::Empty), 1)]).unwrap();
        let sub_b = write_dir(&s, &[entry("x", Content::File(ContentRef::Empty), 2)]).unwrap();
        let a = write_dir(
            &s,
            &[
                entry("d", Content::Dir(sub_a), 1),
                entry("gone", Content::File(ContentRef::Zero), 1),
            ],
        )
        .unwrap();
        let b = write_dir(
            &s,
            &[
                entry("d", Content::Dir(sub_b), 5),
                entry("new", Content::File(ContentRef::Empty), 1),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        diff(&s, Some(&a), Some(&b), "", &mut out).unwrap();
        let got: Vec<(char, &str)> = out
            .iter()
            .map(|c| (c.change.letter(), c.path.as_str()))
            .collect();
        assert_eq!(got, vec![('M', "d/x"), ('D', "gone"), ('A', "new")]);
        let mut none = Vec::new();
        diff(&s, Some(&a), Some(&a), "", &mut none).unwrap();
        assert!(none.is_empty());
    }
}
