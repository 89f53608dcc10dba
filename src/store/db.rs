//! The RocksDB index: object locations, refs, configuration and the stat
//! cache, each in its own column family. RocksDB types stay in this file.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use super::pack::{Slot, SLOT_LEN};
use super::statelog::{self, StateLog};
use super::{Entry, Kind, Result, StoreError};
use crate::id::Id;

const OBJECTS: &str = "objects";

/// A key-value space of the index other than object locations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// Branch heads.
    Refs,
    /// Dot and user configuration, journals.
    Meta,
    /// The stat cache of plain working directories.
    Cache,
}

impl Space {
    fn cf(self) -> &'static str {
        match self {
            Space::Refs => "refs",
            Space::Meta => "meta",
            Space::Cache => "cache",
        }
    }
}

enum Op {
    /// The key must hold this value (None: be absent) when the batch is
    /// applied, or nothing is.
    Expect(Space, Vec<u8>, Option<Vec<u8>>),
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
    DeletePrefix(Space, Vec<u8>),
    DeleteObject(Id),
    PutObject(Id, Entry),
}

/// Changes applied atomically by `Store::commit` or `Store::write`.
#[derive(Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// Makes the batch conditional: `key` must hold `value` (None: be
    /// absent), else `Db::write` applies nothing and reports a conflict.
    /// This is how refs move by compare-and-swap.
    pub(crate) fn expect(&mut self, space: Space, key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) {
        self.ops.push(Op::Expect(space, key.into(), value));
    }
    pub(crate) fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(space, key.into(), value.into()));
    }
    pub(crate) fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(space, key.into()));
    }
    /// Deletes every key that starts with `prefix`.
    pub(crate) fn delete_prefix(&mut self, space: Space, prefix: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeletePrefix(space, prefix.into()));
    }
    pub(super) fn delete_object(&mut self, id: &Id) {
        self.ops.push(Op::DeleteObject(*id));
    }
    pub(super) fn put_object(&mut self, id: &Id, e: &Entry) {
        self.ops.push(Op::PutObject(*id, *e));
    }
}

/// The smallest key greater than every key starting with `prefix`, or None
/// when no such key exists (the prefix is all 0xff).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub struct Db {
    db: DB,
    /// Held from checking a batch's expectations to applying it; holds
    /// the state log every synced batch is copied to first (none while
    /// `dot fsck --repair` rebuilds an index).
    writing: std::sync::Mutex<Option<StateLog>>,
}

fn index_err(e: rocksdb::Error) -> StoreError {
    let msg = e.into_string();
    disk_full(&msg, "cannot write the index".into()).unwrap_or(StoreError::Index(msg))
}

/// RocksDB's error text for a full disk, as the I/O error it was: a full
/// disk is not damage (the write failed and nothing changed).
fn disk_full(msg: &str, context: String) -> Option<StoreError> {
    msg.contains("No space left on device")
        .then(|| StoreError::Io {
            context,
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        })
}

/// An index entry: pack u64le, the slot (`pack::Slot`), kind u8.
const ENTRY_LEN: usize = 8 + SLOT_LEN + 1;

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_LEN);
    v.extend_from_slice(&e.pack.to_le_bytes());
    e.slot.encode(&mut v);
    v.push(e.kind as u8);
    v
}

/// Decodes and checks an index entry: a well-formed slot (`Slot::check`)
/// of a known kind.
fn decode_entry(id: &Id, v: &[u8]) -> Result<Entry> {
    let bad = |why: String| {
        StoreError::Index(format!(
            "entry for object {} is malformed: {why}",
            id.short()
        ))
    };
    if v.len() != ENTRY_LEN {
        return Err(bad(format!("{} bytes", v.len())));
    }
    let kind = Kind::from_u8(v[ENTRY_LEN - 1]).ok_or_else(|| bad("unknown kind".into()))?;
    let slot = Slot::decode(&v[8..]).map_err(|e| bad(e.to_string()))?;
    slot.check(kind, u64::MAX).map_err(|e| bad(e.to_string()))?;
    Ok(Entry {
        pack: u64::from_le_bytes(v[..8].try_into().expect("8 bytes")),
        slot,
        kind,
    })
}

impl Db {
    /// Opens the index at `path`; `log` is the state log to keep (read
    /// and checked against the index, or written from it when absent).
    pub(crate) fn open(path: &Path, log: Option<&Path>) -> Result<Db> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_log_file_size(4 << 20);
        opts.set_max_open_files(256);
        // No preallocated manifest (4 MiB by default): on
        // a nearly full disk the index must still open and write.
        opts.set_manifest_preallocation_size(0);
        let mut table = BlockBasedOptions::default();
        // Lookups of chunks the store lacks are the common case on commit:
        // bloom filters answer them without touching disk.
        table.set_bloom_filter(10.0, false);
        // Damage in the middle of the write-ahead log is an error to
        // repair, not history silently dropped; a record torn at its end
        // (an unsynced write cut by a power loss) is not.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        let cfs = [OBJECTS, "refs", "meta", "cache"]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, cf_opts.clone()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| {
            let msg = e.into_string();
            // RocksDB: "IO error: While lock file: <path>/LOCK: Resource temporarily unavailable"
            if msg.contains("While lock file") || msg.contains("lock hold by current process") {
                StoreError::Locked {
                    home: path.parent().unwrap_or(path).to_path_buf(),
                    holder: "another dot process".into(),
                }
            } else if let Some(full) =
                disk_full(&msg, format!("cannot open the index at {}", path.display()))
            {
                full
            } else {
                StoreError::Open {
                    path: path.to_path_buf(),
                    msg: msg.trim_end_matches(['.', ' ']).to_string(),
                }
            }
        })?;
        let mut db = Db {
            db,
            writing: std::sync::Mutex::new(None),
        };
        if let Some(log) = log {
            let log = db.open_log(log)?;
            *db.writing.get_mut().expect("db write lock") = Some(log);
        }
        Ok(db)
    }

    /// Opens the state log, cutting off a torn last record and a last
    /// record whose batch never reached the index (killed in between);
    /// writes it from the index when it is missing or unreadable.
    fn open_log(&self, path: &Path) -> Result<StateLog> {
        let log_err = |e: std::io::Error| StoreError::Io {
            context: "cannot keep the state log".into(),
            source: e,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(log_err(e)),
        };
        let Ok(records) = statelog::records(&bytes) else {
            statelog::write_snapshot(path, self.logged_state()?).map_err(log_err)?;
            let len = std::fs::metadata(path).map_err(log_err)?.len();
            return StateLog::open(path, len).map_err(log_err);
        };
        let mut end = records.end;
        if let Some((at, payload)) = records.payloads.last() {
            let applied = match statelog::decode_ops(payload) {
                Ok(ops) => self.shows(&ops)?,
                Err(_) => false,
            };
            if !applied {
                end = *at;
            }
        }
        StateLog::open(path, end).map_err(log_err)
    }

    /// Whether the index holds what `ops` leave behind (each key's last
    /// put or delete; a snapshot always counts as applied).
    fn shows(&self, ops: &[statelog::Op]) -> Result<bool> {
        let mut seen = std::collections::HashSet::new();
        for op in ops.iter().rev() {
            let (space, key, want) = match op {
                statelog::Op::Clear => return Ok(true),
                statelog::Op::DeletePrefix(..) => continue,
                statelog::Op::Put(s, k, v) => (*s, k, Some(v)),
                statelog::Op::Delete(s, k) => (*s, k, None),
            };
            if seen.insert((space.cf(), key)) && self.get(space, key)?.as_ref() != want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Where the state log and the index disagree (fsck): the log's
    /// records replayed in memory must give exactly the index's logged
    /// keys and values. Writes wait meanwhile.
    pub(crate) fn state_log_disagreements(&self) -> Result<Vec<String>> {
        let log = self.writing.lock().expect("db write lock");
        let Some(log) = log.as_ref() else {
            return Ok(Vec::new());
        };
        let unreadable = |why: String| StoreError::Io {
            context: "cannot read the state log".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        };
        let bytes = std::fs::read(log.path()).map_err(|e| unreadable(e.to_string()))?;
        let replayed = statelog::replay(&statelog::records(&bytes).map_err(unreadable)?.payloads);
        if let Some(why) = replayed.stopped {
            return Err(unreadable(why));
        }
        let mut state = replayed.state;
        let mut differ = Vec::new();
        let show = |k: &[u8]| String::from_utf8_lossy(k).replace('\0', " ");
        for (s, k, v) in self.logged_state()? {
            if state.remove(&(s, k.clone())).as_ref() != Some(&v) {
                differ.push(show(&k));
            }
        }
        differ.extend(state.keys().map(|(_, k)| show(k)));
        Ok(differ)
    }

    /// Every logged key of `refs` and `meta` with its value.
    pub(crate) fn logged_state(&self) -> Result<statelog::State> {
        let mut out = Vec::new();
        for space in [Space::Refs, Space::Meta] {
            self.scan(space, b"", |k, v| {
                if statelog::logged(space, k) {
                    out.push((space, k.to_vec(), v.to_vec()));
                }
                Ok(true)
            })?;
        }
        Ok(out)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    pub(crate) fn get_object(&self, id: &Id) -> Result<Option<Entry>> {
        match self
            .db
            .get_pinned_cf(self.cf(OBJECTS), id.0)
            .map_err(index_err)?
        {
            Some(v) => Ok(Some(decode_entry(id, &v)?)),
            None => Ok(None),
        }
    }

    /// Records index entries of durable (sealed) objects, and forgets an
    /// open-pack key, in one unsynced write: a later synced write makes it
    /// durable too.
    pub(crate) fn put_objects(&self, entries: &[(Id, Entry)], forget: Option<&[u8]>) -> Result<()> {
        let mut wb = WriteBatch::default();
        let cf = self.cf(OBJECTS);
        for (id, e) in entries {
            wb.put_cf(cf, id.0, encode_entry(e));
        }
        if let Some(key) = forget {
            wb.delete_cf(self.cf(Space::Meta.cf()), key);
        }
        self.db.write(wb).map_err(index_err)
    }

    /// An unsynced write of one meta key (made durable by the next synced
    /// write, which the WAL orders after it).
    pub(crate) fn put_meta_unsynced(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_cf(self.cf(Space::Meta.cf()), key, value)
            .map_err(index_err)
    }

    pub(crate) fn objects_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Id, Entry)>> {
        let mut out = Vec::new();
        self.scan_cf(OBJECTS, prefix, |k, v| {
            let id = Id::from_slice(k)
                .ok_or_else(|| StoreError::Index("malformed object key".into()))?;
            out.push((id, decode_entry(&id, v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every index entry in id order; a malformed one is passed as an error
    /// so that fsck can report it and go on.
    pub(crate) fn for_each_entry(
        &self,
        mut f: impl FnMut(Id, Result<Entry>) -> Result<()>,
    ) -> Result<()> {
        self.scan_cf(OBJECTS, &[], |k, v| {
            let id = Id::from_slice(k)
                .ok_or_else(|| StoreError::Index("malformed object key".into()))?;
            f(id, decode_entry(&id, v))?;
            Ok(true)
        })
    }

    pub(crate) fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(space.cf()), key).map_err(index_err)
    }

    pub(crate) fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.scan_cf(space.cf(), prefix, f)
    }

    fn scan_cf(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let iter = self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item.map_err(index_err)?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Applies a batch atomically and waits until it is durable; a batch
    /// whose expectations do not hold applies nothing.
    pub(crate) fn write(&self, batch: Batch) -> Result<()> {
        let mut log = self.writing.lock().expect("db write lock");
        let mut wb = WriteBatch::default();
        let mut logged = Vec::new();
        for op in batch.ops {
            match &op {
                Op::Put(s, k, v) if statelog::logged(*s, k) => {
                    logged.push(statelog::Op::Put(*s, k.clone(), v.clone()))
                }
                Op::Delete(s, k) if statelog::logged(*s, k) => {
                    logged.push(statelog::Op::Delete(*s, k.clone()))
                }
                Op::DeletePrefix(s, p) if *s != Space::Cache => {
                    logged.push(statelog::Op::DeletePrefix(*s, p.clone()))
                }
                _ => {}
            }
            match op {
                Op::Expect(s, k, v) => {
                    if self.get(s, &k)? != v {
                        return Err(StoreError::Conflict(
                            String::from_utf8_lossy(&k).replace('\0', " "),
                        ));
                    }
                }
                Op::Put(s, k, v) => wb.put_cf(self.cf(s.cf()), k, v),
                Op::Delete(s, k) => wb.delete_cf(self.cf(s.cf()), k),
                Op::DeletePrefix(s, p) => match prefix_end(&p) {
                    Some(end) => wb.delete_range_cf(self.cf(s.cf()), p, end),
                    None => {
                        let mut keys = Vec::new();
                        self.scan(s, &p, |k, _| {
                            keys.push(k.to_vec());
                            Ok(true)
                        })?;
                        for k in keys {
                            wb.delete_cf(self.cf(s.cf()), k);
                        }
                    }
                },
                Op::DeleteObject(id) => wb.delete_cf(self.cf(OBJECTS), id.0),
                Op::PutObject(id, e) => wb.put_cf(self.cf(OBJECTS), id.0, encode_entry(&e)),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let Some(log) = log.as_mut().filter(|_| !logged.is_empty()) else {
            return self.db.write_opt(wb, &wo).map_err(index_err);
        };
        // The log first: it may be ahead of the index (a kill in between,
        // which the next open undoes), never behind it.
        let before = log.len();
        log.append(&logged).map_err(|e| StoreError::Io {
            context: "cannot write the state log".into(),
            source: e,
        })?;
        if let Err(e) = self.db.write_opt(wb, &wo) {
            let _ = log.cut_to(before);
            return Err(index_err(e));
        }
        if log.wants_snapshot() {
            // Best effort: the old log stays whole until the new one
            // replaces it.
            if let Ok(state) = self.logged_state() {
                let _ = log.rewrite(state);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_index_entry_decodes_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(e) = decode_entry(&Id::of(b""), &bytes) {
                prop_assert!(e.slot.check(e.kind, u64::MAX).is_ok());
                prop_assert_eq!(encode_entry(&e), bytes);
            }
        }
    }

    #[test]
    fn prefix_end_bounds_the_range() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
    }

    #[test]
    fn entry_round_trips() {
        let e = Entry {
            pack: 3,
            slot: Slot {
                offset: 57,
                stored_len: 9,
                raw_len: 12,
                codec: 1,
            },
            kind: Kind::Meta,
        };
        assert_eq!(decode_entry(&Id::of(b""), &encode_entry(&e)).unwrap(), e);
    }

    #[test]
    fn expectations_make_a_batch_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), None).unwrap();
        let set = |old: Option<&[u8]>, new: &[u8]| {
            let mut b = Batch::default();
            b.expect(Space::Refs, b"r".to_vec(), old.map(<[u8]>::to_vec));
            b.put(Space::Refs, b"r".to_vec(), new.to_vec());
            db.write(b)
        };
        set(None, b"1").unwrap();
        assert!(matches!(set(None, b"2"), Err(StoreError::Conflict(_))));
        assert!(matches!(
            set(Some(b"0"), b"2"),
            Err(StoreError::Conflict(_))
        ));
        set(Some(b"1"), b"2").unwrap();
        assert_eq!(db.get(Space::Refs, b"r").unwrap(), Some(b"2".to_vec()));
    }

    /// What replaying `log` gives (as repair does).
    fn replayed(log: &Path) -> std::collections::BTreeMap<(Space, Vec<u8>), Vec<u8>> {
        let bytes = std::fs::read(log).unwrap();
        let r = statelog::replay(&statelog::records(&bytes).unwrap().payloads);
        assert!(r.stopped.is_none());
        r.state
    }

    #[test]
    fn the_state_log_copies_refs_and_meta_and_never_runs_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("state.log");
        {
            let db = Db::open(&dir.path().join("index"), Some(&log)).unwrap();
            let mut b = Batch::default();
            b.put(Space::Refs, b"r".to_vec(), b"1".to_vec());
            b.put(Space::Meta, b"dot/x".to_vec(), b"{}".to_vec());
            b.put(Space::Cache, b"c".to_vec(), b"stat".to_vec());
            db.write(b).unwrap();
            db.put_meta_unsynced(b"pack-open/0000000000000001", b"")
                .unwrap();
            let mut b = Batch::default();
            b.delete_prefix(Space::Meta, b"dot/".to_vec());
            db.write(b).unwrap();
        }
        // A kill between appending a record and applying its batch.
        {
            let bytes = std::fs::read(&log).unwrap();
            let mut l = StateLog::open(&log, statelog::records(&bytes).unwrap().end).unwrap();
            l.append(&[statelog::Op::Put(Space::Refs, b"r".to_vec(), b"2".to_vec())])
                .unwrap();
        }
        let db = Db::open(&dir.path().join("index"), Some(&log)).unwrap();
        assert_eq!(db.get(Space::Refs, b"r").unwrap(), Some(b"1".to_vec()));
        drop(db);
        // Only the ref: the configuration was deleted, the stat cache and
        // the open pack are not logged, and the last record was cut.
        let state = replayed(&log);
        assert_eq!(
            state.into_iter().collect::<Vec<_>>(),
            [((Space::Refs, b"r".to_vec()), b"1".to_vec())]
        );
    }

    #[test]
    fn fsck_finds_a_change_the_state_log_missed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            &dir.path().join("index"),
            Some(&dir.path().join("state.log")),
        )
        .unwrap();
        let mut b = Batch::default();
        b.put(Space::Refs, b"r".to_vec(), b"1".to_vec());
        b.delete_prefix(Space::Meta, b"x/".to_vec());
        db.write(b).unwrap();
        assert!(db.state_log_disagreements().unwrap().is_empty());
        // A write that bypasses the log.
        db.db
            .put_cf(db.cf(Space::Meta.cf()), b"dot/sneaky", b"{}")
            .unwrap();
        assert_eq!(db.state_log_disagreements().unwrap(), ["dot/sneaky"]);
    }

    #[test]
    fn a_state_log_is_written_for_an_index_without_one_and_rewritten_when_grown() {
        let dir = tempfile::tempdir().unwrap();
        let index = dir.path().join("index");
        let log = dir.path().join("state.log");
        {
            let db = Db::open(&index, None).unwrap();
            let mut b = Batch::default();
            b.put(Space::Refs, b"old".to_vec(), b"1".to_vec());
            db.write(b).unwrap();
        }
        let db = Db::open(&index, Some(&log)).unwrap();
        let mut lens = Vec::new();
        for i in 0..40u8 {
            let mut b = Batch::default();
            b.put(Space::Meta, b"big".to_vec(), vec![i; 100_000]);
            db.write(b).unwrap();
            lens.push(std::fs::metadata(&log).unwrap().len());
        }
        assert!(
            lens.windows(2).any(|w| w[1] < w[0]),
            "never rewritten: {lens:?}"
        );
        assert!(*lens.iter().max().unwrap() < 3 << 20, "{lens:?}");
        drop(db);
        let state = replayed(&log);
        assert_eq!(state[&(Space::Refs, b"old".to_vec())], b"1");
        assert_eq!(state[&(Space::Meta, b"big".to_vec())], vec![39; 100_000]);
    }

    #[test]
    fn batch_delete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), None).unwrap();
        let mut b = Batch::default();
        b.put(Space::Cache, b"a/x".to_vec(), b"1".to_vec());
        b.put(Space::Cache, b"a/y".to_vec(), b"2".to_vec());
        b.put(Space::Cache, b"b".to_vec(), b"3".to_vec());
        db.write(b).unwrap();
        let mut b = Batch::default();
        b.delete_prefix(Space::Cache, b"a/".to_vec());
        db.write(b).unwrap();
        let mut keys = Vec::new();
        db.scan(Space::Cache, b"", |k, _| {
            keys.push(k.to_vec());
            Ok(true)
        })
        .unwrap();
        assert_eq!(keys, vec![b"b".to_vec()]);
    }
}
