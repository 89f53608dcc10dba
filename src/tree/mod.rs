//! Merkle objects: file chunk trees, directory trees, subdot roots and
//! commits; their canonical encodings, building, reading and diff.
//!
//! Every metadata object starts with a three-byte header, `d`, a kind letter
//! and a format version, so no two kinds of object share an encoding. The
//! byte layouts are specified in docs/design.md and pinned by golden vectors
//! in tests. This layer reads and writes objects only through `Objects`, so
//! the same code builds trees into the store or, for a dry run, in memory.

pub mod chunks;
pub(crate) mod commit;
pub mod diff;
pub mod dir;
pub mod read;
pub mod rechunk;
pub(crate) mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::codec::{DecodeError, Reader};
use crate::id::Id;
use crate::store::{Kind, Store, StoreError};

pub const VERSION: u8 = 1;
/// Kind letters of the metadata object header.
pub const KIND_CHUNK_NODE: u8 = b'n';
pub const KIND_DIR_NODE: u8 = b't';
pub const KIND_ROOT: u8 = b'r';
pub const KIND_COMMIT: u8 = b'c';

/// No metadata object may be larger than this (DESIGN.md section 3).
pub const MAX_OBJECT: usize = crate::store::pack::MAX_META as usize;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a directory entry needs {0} bytes of metadata (most likely extended attributes); dot stores at most 1 MiB per entry")]
    TooLarge(usize),
    #[error("object {id} is corrupt: {what}; run dot fsck")]
    Corrupt { id: Id, what: String },
}

pub type Result<T> = std::result::Result<T, TreeError>;

pub(crate) fn header(kind: u8) -> [u8; 3] {
    [b'd', kind, VERSION]
}

/// Checks an object's header and returns a reader positioned after it.
pub(crate) fn open_object<'a>(id: &Id, bytes: &'a [u8], kind: u8) -> Result<Reader<'a>> {
    if bytes.len() < 3 || bytes[0] != b'd' || bytes[1] != kind {
        return Err(corrupt(id, format!("not a '{}' object", kind as char)));
    }
    if bytes[2] != VERSION {
        return Err(corrupt(
            id,
            format!(
                "format version {} is newer than this dot understands; upgrade dot",
                bytes[2]
            ),
        ));
    }
    Ok(Reader::new(&bytes[3..]))
}

pub(crate) fn corrupt(id: &Id, what: impl Into<String>) -> TreeError {
    TreeError::Corrupt {
        id: *id,
        what: what.into(),
    }
}

pub(crate) fn decode_err(id: &Id) -> impl Fn(DecodeError) -> TreeError + '_ {
    move |e| corrupt(id, e.to_string())
}

/// Where objects go and come from: the store itself, or a dry run that
/// keeps new metadata in memory and only counts new chunk bytes.
pub trait Objects: Sync {
    /// Records an object whose id is `Id::of(raw)`.
    fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<()>;
    fn get(&self, id: &Id) -> Result<Vec<u8>>;
    fn has(&self, id: &Id) -> Result<bool>;

    /// Records a metadata object and returns its id.
    fn put_meta(&self, bytes: &[u8]) -> Result<Id> {
        if bytes.len() > MAX_OBJECT {
            // Nodes split near 512 KiB; only one giant entry gets here.
            return Err(TreeError::TooLarge(bytes.len()));
        }
        let id = Id::of(bytes);
        self.put(Kind::Meta, &id, bytes)?;
        Ok(id)
    }
}

impl Objects for Store {
    fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<()> {
        Store::put(self, kind, id, raw)?;
        Ok(())
    }
    fn get(&self, id: &Id) -> Result<Vec<u8>> {
        Ok(Store::get(self, id)?)
    }
    fn has(&self, id: &Id) -> Result<bool> {
        Ok(Store::has(self, id)?)
    }
}

/// A shared store (the daemon's mounts share the repository's).
impl<T: Objects + Send> Objects for std::sync::Arc<T> {
    fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<()> {
        (**self).put(kind, id, raw)
    }
    fn get(&self, id: &Id) -> Result<Vec<u8>> {
        (**self).get(id)
    }
    fn has(&self, id: &Id) -> Result<bool> {
        (**self).has(id)
    }
}

/// One reference from an object to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub id: Id,
    pub kind: Kind,
    /// File bytes the target stands for, where the reference says (file
    /// contents and chunk-tree children); 0 for directories and commits.
    pub size: u64,
}

impl Link {
    /// A reference to a metadata object.
    pub(crate) fn meta(id: Id, size: u64) -> Link {
        Link {
            id,
            kind: Kind::Meta,
            size,
        }
    }
}

/// The objects one object refers to directly: what a transfer must move
/// along with it. Decoding checks every rule the object's own bytes must
/// meet, so this is also the check of a single object (fetch, fsck).
/// Chunks refer to nothing.
pub(crate) fn links(id: &Id, kind: Kind, bytes: &[u8]) -> Result<Vec<Link>> {
    if kind == Kind::Chunk {
        return Ok(Vec::new());
    }
    match bytes.get(1).copied() {
        Some(KIND_COMMIT) => {
            let c = commit::Commit::decode(&crate::id::CommitId(*id), bytes)?;
            let mut out: Vec<_> = c.parents.iter().map(|p| Link::meta(p.0, 0)).collect();
            out.push(Link::meta(c.root.0, 0));
            Ok(out)
        }
        Some(KIND_ROOT) => Ok(commit::decode_root(&crate::id::RootId(*id), bytes)?
            .values()
            .map(|t| Link::meta(t.tree.0, 0))
            .collect()),
        Some(KIND_DIR_NODE) => dir::node_links(id, bytes),
        Some(KIND_CHUNK_NODE) => chunks::node_links(id, bytes),
        _ => Err(corrupt(id, "not a dot metadata object")),
    }
}

/// Builds trees without writing anything: metadata stays in memory so the
/// result can be read back (for diff), chunks are only counted.
pub struct DryRun<'a> {
    store: &'a Store,
    meta: Mutex<HashMap<Id, Vec<u8>>>,
    seen_chunks: Mutex<HashSet<Id>>,
    new_bytes: AtomicU64,
}

impl<'a> DryRun<'a> {
    pub(crate) fn new(store: &'a Store) -> DryRun<'a> {
        DryRun {
            store,
            meta: Mutex::new(HashMap::new()),
            seen_chunks: Mutex::new(HashSet::new()),
            new_bytes: AtomicU64::new(0),
        }
    }

    /// Bytes of chunk data a real commit would add to the store.
    pub(crate) fn new_bytes(&self) -> u64 {
        self.new_bytes.load(Ordering::Relaxed)
    }
}

impl Objects for DryRun<'_> {
    fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<()> {
        match kind {
            Kind::Meta => {
                self.meta
                    .lock()
                    .expect("dry run lock")
                    .insert(*id, raw.to_vec());
            }
            Kind::Chunk => {
                if !self.store.has(id)?
                    && self.seen_chunks.lock().expect("dry run lock").insert(*id)
                {
                    self.new_bytes
                        .fetch_add(raw.len() as u64, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
    fn get(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(b) = self.meta.lock().expect("dry run lock").get(id) {
            return Ok(b.clone());
        }
        Ok(self.store.get(id)?)
    }
    fn has(&self, id: &Id) -> Result<bool> {
        Ok(self.meta.lock().expect("dry run lock").contains_key(id) || self.store.has(id)?)
    }
}

/// Whether an id ends a content-defined node: about one id in `mask + 1`.
pub(crate) fn is_boundary(id: &Id, mask: u32) -> bool {
    u32::from_le_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]) & mask == 0
}
