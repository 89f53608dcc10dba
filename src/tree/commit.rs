//! Subdot roots and commits.
//!
//! Root encoding: header `d r 1`, count varint, then per subdot, sorted by
//! name: name bytes, tree id, and the subdot's top directory's mode varint,
//! uid varint, gid varint and mtime_ns zigzag varint (PostgreSQL refuses a
//! data directory that is not 0700 and owned by its user, so the top
//! directory's own attributes travel too). Commit encoding: header `d c 1`, root id, parent
//! count varint, parent ids, author name bytes, author email bytes, time
//! (seconds since the epoch, zigzag varint), timezone offset in minutes
//! (zigzag varint), message bytes, metadata count varint, (key bytes, value
//! bytes) sorted by key.

use std::collections::BTreeMap;

use super::{decode_err, header, open_object, Objects, Result, KIND_COMMIT, KIND_ROOT};
use crate::codec::Writer;
use crate::id::{CommitId, RootId, TreeId};

/// A subdot's top directory: its tree and its own attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Top {
    pub tree: TreeId,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
}

/// Subdot name -> top directory.
pub type Root = BTreeMap<String, Top>;

/// The one naming rule of dots (per `/`-separated part), subdots, branches
/// and remotes: 1 to 64 ASCII letters, digits, `_` and `-`. A subdot name
/// becomes a directory name, so a root that breaks it is damaged.
pub(crate) fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn write_root(objects: &dyn Objects, root: &Root) -> Result<RootId> {
    let mut w = Writer::new();
    w.raw(&header(KIND_ROOT)).varint(root.len() as u64);
    for (name, top) in root {
        w.bytes(name.as_bytes())
            .id(&top.tree.0)
            .varint(u64::from(top.mode))
            .varint(u64::from(top.uid))
            .varint(u64::from(top.gid))
            .ivarint(top.mtime_ns);
    }
    Ok(RootId(objects.put_meta(&w.buf)?))
}

pub(crate) fn read_root(objects: &dyn Objects, id: &RootId) -> Result<Root> {
    decode_root(id, &objects.get(&id.0)?)
}

/// Decodes a root and checks it: subdot names that follow `valid_name`,
/// strictly sorted; top modes of permission bits only.
pub(crate) fn decode_root(id: &RootId, bytes: &[u8]) -> Result<Root> {
    let mut r = open_object(&id.0, bytes, KIND_ROOT)?;
    let de = decode_err(&id.0);
    let mut root = Root::new();
    for _ in 0..r.varint().map_err(&de)? {
        let raw = r.bytes().map_err(&de)?;
        let name = std::str::from_utf8(raw)
            .ok()
            .filter(|n| valid_name(n))
            .ok_or_else(|| {
                super::corrupt(
                    &id.0,
                    format!(
                        "invalid subdot name {:?}: subdot names are 1 to 64 letters, digits, '_' and '-'",
                        String::from_utf8_lossy(&raw[..raw.len().min(100)])
                    ),
                )
            })?
            .to_string();
        let top = Top {
            tree: TreeId(r.id().map_err(&de)?),
            mode: r.u32v().map_err(&de)?,
            uid: r.u32v().map_err(&de)?,
            gid: r.u32v().map_err(&de)?,
            mtime_ns: r.ivarint().map_err(&de)?,
        };
        if top.mode & !0o7777 != 0 {
            return Err(super::corrupt(&id.0, "a top mode has bits beyond 0o7777"));
        }
        if root.keys().next_back().is_some_and(|last| *last >= name) {
            return Err(super::corrupt(&id.0, "subdot names are not sorted"));
        }
        root.insert(name, top);
    }
    r.finish().map_err(&de)?;
    Ok(root)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub root: RootId,
    pub parents: Vec<CommitId>,
    pub author: String,
    pub email: String,
    pub time: i64,
    pub tz_minutes: i32,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
}

impl Commit {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&header(KIND_COMMIT)).id(&self.root.0);
        w.varint(self.parents.len() as u64);
        for p in &self.parents {
            w.id(&p.0);
        }
        w.bytes(self.author.as_bytes())
            .bytes(self.email.as_bytes())
            .ivarint(self.time)
            .ivarint(i64::from(self.tz_minutes))
            .bytes(self.message.as_bytes())
            .varint(self.metadata.len() as u64);
        for (k, v) in &self.metadata {
            w.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        w.buf
    }

    pub(crate) fn write(&self, objects: &dyn Objects) -> Result<CommitId> {
        Ok(CommitId(objects.put_meta(&self.encode())?))
    }

    pub(crate) fn read(objects: &dyn Objects, id: &CommitId) -> Result<Commit> {
        let bytes = objects.get(&id.0)?;
        Commit::decode(id, &bytes)
    }

    pub(crate) fn decode(id: &CommitId, bytes: &[u8]) -> Result<Commit> {
        let mut r = open_object(&id.0, bytes, KIND_COMMIT)?;
        let de = decode_err(&id.0);
        let text = |b: &[u8]| {
            String::from_utf8(b.to_vec()).map_err(|_| super::corrupt(&id.0, "text is not UTF-8"))
        };
        let root = RootId(r.id().map_err(&de)?);
        let mut parents = Vec::new();
        for _ in 0..r.varint().map_err(&de)? {
            parents.push(CommitId(r.id().map_err(&de)?));
        }
        let author = text(r.bytes().map_err(&de)?)?;
        let email = text(r.bytes().map_err(&de)?)?;
        let time = r.ivarint().map_err(&de)?;
        let tz_minutes = i32::try_from(r.ivarint().map_err(&de)?)
            .map_err(|_| super::corrupt(&id.0, "timezone out of range"))?;
        let message = text(r.bytes().map_err(&de)?)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..r.varint().map_err(&de)? {
            let k = text(r.bytes().map_err(&de)?)?;
            let v = text(r.bytes().map_err(&de)?)?;
            if metadata.keys().next_back().is_some_and(|last| *last >= k) {
                return Err(super::corrupt(
                    &id.0,
                    "metadata keys are not sorted and unique",
                ));
            }
            metadata.insert(k, v);
        }
        r.finish().map_err(&de)?;
        Ok(Commit {
            root,
            parents,
            author,
            email,
            time,
            tz_minutes,
            message,
            metadata,
        })
    }
}

/// Whether stored bytes are a commit (for resolving short ids).
pub(crate) fn is_commit(bytes: &[u8]) -> bool {
    bytes.starts_with(&header(KIND_COMMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    #[test]
    fn golden_commit() {
        let c = Commit {
            root: RootId(Id::of(b"root")),
            parents: vec![CommitId(Id::of(b"parent"))],
            author: "Ada".into(),
            email: "ada@example.com".into(),
            time: 1_700_000_000,
            tz_minutes: 60,
            message: "added hello".into(),
            metadata: [("ticket".to_string(), "a=b".to_string())].into(),
        };
        let bytes = c.encode();
        assert_eq!(&bytes[..3], b"dc\x01");
        let id = CommitId(Id::of(&bytes));
        assert_eq!(Commit::decode(&id, &bytes).unwrap(), c);
        assert_eq!(id.short(), "3e22285ad0d5");
    }

    #[test]
    fn golden_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path(), "test").unwrap();
        let top = Top {
            tree: TreeId(Id::of(b"tree")),
            mode: 0o700,
            uid: 105,
            gid: 106,
            mtime_ns: 1_700_000_000_123_456_789,
        };
        let root: Root = [
            ("orders-db".to_string(), top),
            ("__default__".to_string(), top),
        ]
        .into();
        let id = write_root(&store, &root).unwrap();
        let bytes = store.get(&id.0).unwrap();
        assert_eq!(&bytes[..5], b"dr\x01\x02\x0b");
        assert_eq!(&bytes[5..16], b"__default__");
        assert_eq!(read_root(&store, &id).unwrap(), root);
        assert_eq!(id.short(), "9496bd9ae06d");
    }

    #[test]
    fn truncated_commit_is_an_error() {
        let c = Commit {
            root: RootId(Id::of(b"r")),
            parents: vec![],
            author: String::new(),
            email: String::new(),
            time: 0,
            tz_minutes: 0,
            message: String::new(),
            metadata: BTreeMap::new(),
        };
        let bytes = c.encode();
        let id = CommitId(Id::of(&bytes));
        for n in 0..bytes.len() {
            assert!(Commit::decode(&id, &bytes[..n]).is_err());
        }
    }
}
