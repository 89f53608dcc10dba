//! Merkle diff of directory trees: subtrees with equal ids are skipped
//! without being read, so a diff costs what changed, not the tree's size.

use std::cmp::Ordering;

use super::dir::{read_dir, Content, DirEntry, EntryKind, MAX_DEPTH};
use super::{Objects, Result};
use crate::id::TreeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Change {
    #[serde(rename = "A")]
    Added,
    #[serde(rename = "M")]
    Modified,
    #[serde(rename = "D")]
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

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Changed {
    /// Path relative to the tree's top, `/`-separated; directories end in `/`.
    pub path: String,
    pub change: Change,
    pub size_before: u64,
    pub size_after: u64,
}

/// The changes that turn tree `a` into tree `b` (either may be absent:
/// an absent tree is empty), in path order. Directory mtimes alone do not
/// count as a change: creating and deleting a file changes them and
/// nothing else. Directories are walked with an explicit stack, so no
/// tree depth can overflow the thread's stack.
pub fn diff(
    objects: &dyn Objects,
    a: Option<&TreeId>,
    b: Option<&TreeId>,
    prefix: &str,
    out: &mut Vec<Changed>,
) -> Result<()> {
    let mut stack = vec![Pair::new(objects, a, b, prefix.to_string())?];
    // (the pair's `then` is emitted once its contents are listed)
    while let Some(top) = stack.last_mut() {
        let (x, y) = (top.a.get(top.i), top.b.get(top.j));
        let order = match (x, y) {
            (None, None) => {
                out.extend(stack.pop().and_then(|p| p.then));
                continue;
            }
            (Some(x), Some(y)) => x.name.cmp(&y.name),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        let (before, after) = match order {
            Ordering::Less => (x, None),
            Ordering::Greater => (None, y),
            Ordering::Equal => (x, y),
        };
        top.i += usize::from(before.is_some());
        top.j += usize::from(after.is_some());
        let (before, after) = (before.cloned(), after.cloned());
        let prefix = top.prefix.clone();
        if let Some(d) = step(before.as_ref(), after.as_ref(), &prefix, out) {
            if stack.len() > MAX_DEPTH {
                return Err(super::corrupt(
                    &d.b.or(d.a).expect("a tree").0,
                    format!("the directory tree is deeper than {MAX_DEPTH} levels"),
                ));
            }
            let mut pair = Pair::new(objects, d.a.as_ref(), d.b.as_ref(), d.path)?;
            pair.then = d.then;
            stack.push(pair);
        }
    }
    Ok(())
}

/// Two directories being compared, and how far.
struct Pair {
    a: Vec<DirEntry>,
    b: Vec<DirEntry>,
    i: usize,
    j: usize,
    prefix: String,
    /// A change listed after this pair's contents (an entry replacing a
    /// deleted directory).
    then: Option<Changed>,
}

/// Subtrees to descend into: before, after, their path, and a change to
/// list after them.
struct Descend {
    a: Option<TreeId>,
    b: Option<TreeId>,
    path: String,
    then: Option<Changed>,
}

impl Pair {
    fn new(
        objects: &dyn Objects,
        a: Option<&TreeId>,
        b: Option<&TreeId>,
        prefix: String,
    ) -> Result<Pair> {
        // Equal subtrees are skipped unread.
        let (a, b) = if a == b { (None, None) } else { (a, b) };
        let read = |t: Option<&TreeId>| t.map_or(Ok(Vec::new()), |t| read_dir(objects, t));
        Ok(Pair {
            a: read(a)?,
            b: read(b)?,
            i: 0,
            j: 0,
            prefix,
            then: None,
        })
    }
}

fn path_of(prefix: &str, e: &DirEntry) -> String {
    let name = String::from_utf8_lossy(&e.name);
    if e.kind == EntryKind::Dir {
        format!("{prefix}{name}/")
    } else {
        format!("{prefix}{name}")
    }
}

fn subtree(e: Option<&DirEntry>) -> Option<TreeId> {
    match e.map(|e| &e.content) {
        Some(Content::Dir(t)) => Some(*t),
        _ => None,
    }
}

/// Records the change of one name (`a` before, `b` after) and says which
/// subtrees to descend into, if any.
fn step(
    a: Option<&DirEntry>,
    b: Option<&DirEntry>,
    prefix: &str,
    out: &mut Vec<Changed>,
) -> Option<Descend> {
    let change = |change, e: &DirEntry, size_before, size_after| Changed {
        path: path_of(prefix, e),
        change,
        size_before,
        size_after,
    };
    let descend = |a: Option<TreeId>, b: Option<TreeId>, e: &DirEntry, then| {
        (a != b).then(|| Descend {
            a,
            b,
            path: path_of(prefix, e),
            then,
        })
    };
    match (a, b) {
        // A kind change is a deletion, with a directory's contents, then
        // an addition, with a directory's contents.
        (Some(a), Some(b)) if a.kind != b.kind => {
            out.push(change(Change::Deleted, a, a.size, 0));
            let added = change(Change::Added, b, 0, b.size);
            if a.kind == EntryKind::Dir {
                return descend(subtree(Some(a)), None, a, Some(added));
            }
            out.push(added);
            descend(None, subtree(Some(b)), b, None)
        }
        (Some(a), Some(b)) if a.kind == EntryKind::Dir => {
            if (a.mode, a.uid, a.gid, &a.xattrs) != (b.mode, b.uid, b.gid, &b.xattrs) {
                out.push(change(Change::Modified, b, 0, 0));
            }
            descend(subtree(Some(a)), subtree(Some(b)), b, None)
        }
        (Some(a), Some(b)) => {
            if a != b {
                out.push(change(Change::Modified, b, a.size, b.size));
            }
            None
        }
        (Some(a), None) => {
            out.push(change(Change::Deleted, a, a.size, 0));
            descend(subtree(Some(a)), None, a, None)
        }
        (None, Some(b)) => {
            out.push(change(Change::Added, b, 0, b.size));
            descend(None, subtree(Some(b)), b, None)
        }
        (None, None) => None,
    }
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
        let s = Store::open(dir.path(), "test").unwrap();
        let sub_a = write_dir(&s, &[entry("x", Content::File(ContentRef::Empty), 1)]).unwrap();
        let sub_b = write_dir(&s, &[entry("x", Content::File(ContentRef::Empty), 2)]).unwrap();
        let a = write_dir(
            &s,
            &[
                entry("d", Content::Dir(sub_a), 1),
                DirEntry {
                    size: 5,
                    ..entry("gone", Content::File(ContentRef::Zero), 1)
                },
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
