//! What a remote holds, as far as its index files say, cached in the local
//! store's cache space so that a push or pull lists the remote's index
//! once and downloads only index files it has not seen.
//!
//! Keys, under `+remote\0<name>\0` (`+` never begins a dot name):
//! `i<index id>` a seen index file, `p<pack id>` a pack some index names,
//! `o<object id>` -> `Located` of an object. If an index file seen before
//! is gone (the remote was wiped or rewritten), the cache starts over.

use std::collections::HashSet;

use super::layout::{self, Located};
use super::{Remote, Result, SyncError};
use crate::id::Id;
use crate::store::{Batch, Space, Store};

pub struct Known<'a> {
    store: &'a Store,
    remote: String,
    prefix: Vec<u8>,
}

pub(crate) fn cache_prefix(remote: &str) -> Vec<u8> {
    format!("+remote\0{remote}\0").into_bytes()
}

impl<'a> Known<'a> {
    /// Brings the cache up to date with the remote's index files.
    pub(crate) fn refresh(store: &'a Store, remote: &Remote) -> Result<Known<'a>> {
        let known = Known {
            store,
            remote: remote.name.clone(),
            prefix: cache_prefix(&remote.name),
        };
        let listed = remote.index_files()?;
        let mut seen = HashSet::new();
        store.scan_kv(Space::Cache, &known.key(b'i', &[]), |k, _| {
            if let Some(id) = Id::from_slice(&k[known.prefix.len() + 1..]) {
                seen.insert(id);
            }
            Ok(true)
        })?;
        if !seen.is_subset(&listed) {
            let mut b = Batch::default();
            b.delete_prefix(Space::Cache, known.prefix.clone());
            store.write(b)?;
            seen.clear();
        }
        let todo: Vec<Id> = listed.difference(&seen).copied().collect();
        super::parallel(&todo, 8, |id| known.load_index(remote, id))?;
        Ok(known)
    }

    fn key(&self, tag: u8, id: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.push(tag);
        k.extend_from_slice(id);
        k
    }

    fn load_index(&self, remote: &Remote, id: &Id) -> Result<()> {
        let path = layout::index_path(id);
        let Some(bytes) = remote
            .backend
            .get(&path, layout::MAX_INDEX_BYTES)
            .map_err(remote.err())?
        else {
            return Ok(()); // Removed since the listing; the next refresh notices.
        };
        if Id::of(&bytes) != *id {
            return Err(self.damaged(id, "its content does not match its name".into()));
        }
        self.record(id, &bytes)
    }

    fn damaged(&self, index: &Id, why: String) -> SyncError {
        SyncError::Damaged {
            remote: self.remote.clone(),
            what: format!("index file {}", layout::index_path(index)),
            why,
        }
    }

    /// Adds one index file's objects (an index file this process wrote, or
    /// one checked against its name).
    pub(crate) fn record(&self, id: &Id, bytes: &[u8]) -> Result<()> {
        let (packs, objects) =
            layout::decode_index(bytes).map_err(|why| self.damaged(id, why.to_string()))?;
        let mut b = Batch::default();
        for p in &packs {
            b.put(Space::Cache, self.key(b'p', &p.0), Vec::new());
        }
        for (oid, loc) in &objects {
            b.put(Space::Cache, self.key(b'o', &oid.0), loc.encode());
        }
        b.put(Space::Cache, self.key(b'i', &id.0), Vec::new());
        Ok(self.store.write(b)?)
    }

    /// Where the remote holds an object, if it does.
    pub(crate) fn get(&self, id: &Id) -> Result<Option<Located>> {
        Ok(self
            .store
            .get_kv(Space::Cache, &self.key(b'o', &id.0))?
            .and_then(|v| Located::decode(&v)))
    }

    pub(crate) fn has_pack(&self, id: &Id) -> Result<bool> {
        Ok(self
            .store
            .get_kv(Space::Cache, &self.key(b'p', &id.0))?
            .is_some())
    }
}
