//! The local object store: pack files plus a RocksDB index, refs and
//! configuration under one home directory.
//!
//! Objects are appended to open packs; at a commit point
//! (`Store::commit`) the open packs are fsynced, then one synced RocksDB
//! batch records their new objects' index entries and moves refs. Packs
//! are sealed when full, by gc, and when the store is dropped. A crash at any instant leaves the refs at
//! their old or their new values and never pointing at missing data; pack
//! bytes no index entry names are reclaimed by `gc`. The store knows nothing
//! of trees, dots or the command line, and no RocksDB type leaves this module.

mod db;
#[cfg(test)]
mod model_test;
pub(crate) mod pack;
mod repair;
mod statelog;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::id::Id;
pub use db::{Batch, Space};
use pack::{PackWriter, Slot, CODEC_RAW, CODEC_ZSTD};
pub use repair::{repair, RepairReport};

/// Packs are sealed once they reach this size: large enough to keep the
/// file count low, small enough that a crash loses little work.
const PACK_TARGET: u64 = 64 << 20;
/// zstd level for chunks and metadata: fast, and still most of the gain.
const ZSTD_LEVEL: i32 = 3;

/// Which pack family an object lives in: file data and metadata are packed
/// apart so metadata stays dense and cheap to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Chunk = 0,
    Meta = 1,
}

impl Kind {
    pub(crate) fn from_u8(v: u8) -> Option<Kind> {
        match v {
            0 => Some(Kind::Chunk),
            1 => Some(Kind::Meta),
            _ => None,
        }
    }
}

/// Where an object is: its pack and slot, and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub pack: u64,
    pub slot: Slot,
    pub kind: Kind,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {home} is in use by {holder}; wait for it to finish and try again")]
    Locked { home: PathBuf, holder: String },
    #[error("cannot open the store index at {path}: {msg}; if it is damaged, dot fsck --repair rebuilds it from the packs")]
    Open { path: PathBuf, msg: String },
    #[error("the store index at {0} is missing; dot fsck --repair rebuilds it from the packs")]
    IndexLost(PathBuf),
    #[error("object {0} is missing from the store; run dot fsck")]
    Missing(Id),
    #[error("object {id} in pack {pack} is damaged ({why}); run dot fsck")]
    Damaged { id: Id, pack: String, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the store index is damaged: {0}; run dot fsck, and dot fsck --repair to rebuild it from the packs")]
    Index(String),
    /// A conditional batch found another value than it expected.
    #[error("{0} changed meanwhile; nothing was changed, run the command again")]
    Conflict(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Whether a full disk caused it.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// The open packs of one kind. An append takes one free slot's lock (so
/// concurrent operations write packs of their own); lookups read only
/// `pending`, so they never wait behind an append.
struct Writer {
    slots: Vec<Mutex<Option<(u64, PackWriter)>>>,
    /// Objects in open packs, not yet in the index, with their pack.
    pending: RwLock<HashMap<Id, (u64, Slot)>>,
}

impl Default for Writer {
    fn default() -> Self {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        Writer {
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            pending: RwLock::default(),
        }
    }
}

impl Writer {
    /// A free slot, or (all busy) the first one, waited for.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(u64, PackWriter)>> {
        for s in &self.slots {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        self.slots[0].lock().expect("writer lock")
    }
}

/// A pack's live objects and dead ids (gc).
type Split = (Vec<(Id, Entry)>, Vec<Id>);

/// Meta keys naming packs that are open (unsealed) and may hold indexed
/// objects: after a crash, `Store::open` seals them.
fn open_pack_key(seq: u64) -> Vec<u8> {
    format!("pack-open/{seq:016x}").into_bytes()
}

pub struct Store {
    home: PathBuf,
    db: db::Db,
    writers: [Writer; 2],
    next_pack: AtomicU64,
    readers: Mutex<HashMap<u64, Arc<File>>>,
    /// Cleared by tests to leave open packs behind as a kill would.
    seal_on_drop: std::sync::atomic::AtomicBool,
    /// The home's lock, held while the store is open. Last, so that it
    /// is let go only once the index is closed and the packs sealed:
    /// fields drop in order, and whoever waits for it (`dot daemon stop`,
    /// the next command) may then open or remove what they left.
    _lock: File,
}

/// Counts from a garbage collection.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct GcStats {
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub packs_rewritten: u64,
    /// Packs holding dead objects that were left as they are because
    /// copying their live objects needed more free space than the disk
    /// had, and how much more.
    #[serde(default)]
    pub packs_left: u64,
    #[serde(default)]
    pub space_needed: u64,
}

/// One problem `verify_packs` found.
#[derive(Debug, Clone)]
pub struct PackProblem {
    pub pack: String,
    pub what: String,
    /// True when no index entry uses the pack: it is debris of an
    /// interrupted command, harmless, and `dot gc` removes it.
    pub stray: bool,
}

impl Store {
    /// Opens (creating if needed) the store under `home`, taking its lock (`who` says who holds
    /// it, for others to see). Fails at once, with the holder, when
    /// another process holds it.
    pub fn open(home: &Path, who: &str) -> Result<Store> {
        let lock = lock_home(home, who)?;
        let seqs = pack_seqs(home)?;
        let max_seq = seqs.iter().copied().max().unwrap_or(0);
        let index = home.join("index");
        let log = statelog::StateLog::in_home(home);
        // A store with packs or a state log has had an index: creating an
        // empty one would hide every branch.
        if !index.exists() && (!seqs.is_empty() || log.exists()) {
            return Err(StoreError::IndexLost(index));
        }
        // RocksDB needs a little space to open: on a full disk the reserve
        // is given up, so that gc, fsck and log still run.
        let db = match db::Db::open(&index, Some(&log)) {
            Err(e) if e.is_disk_full() && fs::remove_file(home.join(RESERVE)).is_ok() => {
                db::Db::open(&index, Some(&log))?
            }
            other => other?,
        };
        keep_reserve(home);
        let store = Store {
            _lock: lock,
            home: home.to_path_buf(),
            db,
            writers: Default::default(),
            next_pack: AtomicU64::new(max_seq + 1),
            readers: Mutex::new(HashMap::new()),
            seal_on_drop: std::sync::atomic::AtomicBool::new(true),
        };
        store.recover_open_packs()?;
        Ok(store)
    }

    /// Seals the packs a killed process left open (their indexed objects
    /// were synced at a commit point; anything after is kept only if
    /// whole), so that every pack on disk is sealed again.
    fn recover_open_packs(&self) -> Result<()> {
        let mut open = Vec::new();
        self.db.scan(Space::Meta, b"pack-open/", |k, _| {
            let seq = std::str::from_utf8(&k[b"pack-open/".len()..])
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok());
            open.extend(seq.map(|s| (s, k.to_vec())));
            Ok(true)
        })?;
        for (seq, key) in open {
            let path = self.pack_path(seq);
            if let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) {
                let len = file.metadata().map_err(io_err("cannot read a pack"))?.len();
                if len < pack::HEADER_LEN {
                    // Killed before its header was written: it never held
                    // an object, indexed or not.
                    fs::remove_file(&path)
                        .map_err(io_err(format!("cannot remove {}", path.display())))?;
                    sync_dir(&self.home.join("packs"))?;
                } else if pack::read_trailer(&file).is_err() {
                    let trusted = |id: &Id, slot: &Slot| {
                        self.db
                            .get_object(id)
                            .ok()
                            .flatten()
                            .is_some_and(|e| e.pack == seq && e.slot == *slot)
                    };
                    match pack::recover(&file, &trusted, true) {
                        Ok(_) => {}
                        Err(pack::PackError::Io(e)) => {
                            return Err(StoreError::Io {
                                context: format!("cannot recover pack {}", path.display()),
                                source: e,
                            })
                        }
                        // A damaged header: left as it is, for dot fsck to
                        // name, so that the store still opens.
                        Err(_) => {}
                    }
                }
            }
            let mut b = Batch::default();
            b.delete(Space::Meta, key);
            self.db.write(b)?;
        }
        Ok(())
    }

    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    fn pack_path(&self, seq: u64) -> PathBuf {
        pack_file(&self.home, seq)
    }

    /// Looks an object up in the open packs, then in the index.
    pub(crate) fn entry(&self, id: &Id) -> Result<Option<Entry>> {
        for (k, w) in self.writers.iter().enumerate() {
            if let Some((seq, slot)) = w.pending.read().expect("pending").get(id) {
                return Ok(Some(Entry {
                    pack: *seq,
                    slot: *slot,
                    kind: Kind::from_u8(k as u8).expect("kind"),
                }));
            }
        }
        self.db.get_object(id)
    }

    pub fn has(&self, id: &Id) -> Result<bool> {
        Ok(self.entry(id)?.is_some())
    }

    /// Stores `raw` under `id` (which must be `Id::of(raw)`) unless the store
    /// already holds it. Returns whether it was new. Safe to call from many
    /// threads; compression happens outside any lock.
    pub fn put(&self, kind: Kind, id: &Id, raw: &[u8]) -> Result<bool> {
        debug_assert_eq!(*id, Id::of(raw));
        if self.has(id)? {
            return Ok(false);
        }
        let raw_len = u32::try_from(raw.len())
            .ok()
            .filter(|n| (1..=pack::max_raw_len(kind)).contains(n))
            .ok_or_else(|| StoreError::Io {
                context: format!("cannot store object {}", id.short()),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} bytes is outside the format's limits", raw.len()),
                ),
            })?;
        let compressed = pack::zstd(raw, ZSTD_LEVEL).map_err(io_err("zstd compression failed"))?;
        // Raw when compression does not pay for the decompression it costs.
        let (codec, stored) = if compressed.len() + compressed.len() / 32 < raw.len() {
            (CODEC_ZSTD, &compressed[..])
        } else {
            (CODEC_RAW, raw)
        };
        self.put_stored(kind, id, codec, raw_len, stored)
    }

    /// Appends an already-encoded object; the caller has checked that the
    /// store lacks it (or is gc moving it to a new pack). Two threads
    /// putting one new object at once may both append it: the index names
    /// one copy, and gc drops the other.
    fn put_stored(
        &self,
        kind: Kind,
        id: &Id,
        codec: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<bool> {
        let w = &self.writers[kind as usize];
        let mut open = w.slot();
        if open.is_none() {
            let seq = self.next_pack.fetch_add(1, Ordering::SeqCst);
            // Recorded before the file exists, so no pack that may come to
            // hold indexed objects escapes recovery.
            self.db.put_meta_unsynced(&open_pack_key(seq), b"")?;
            let path = self.pack_path(seq);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io_err(format!("cannot create pack {}", path.display())))?;
            let writer = PackWriter::create(file, kind as u8)
                .map_err(io_err(format!("cannot write pack {}", path.display())))?;
            *open = Some((seq, writer));
        }
        let (seq, writer) = open.as_mut().expect("open pack");
        let seq = *seq;
        let slot = writer
            .append(id, codec, raw_len, stored)
            .map_err(io_err(format!(
                "cannot write pack {}",
                self.pack_path(seq).display()
            )))?;
        let full = writer.is_full(PACK_TARGET);
        w.pending.write().expect("pending").insert(*id, (seq, slot));
        if full {
            self.seal(kind, &mut open)?;
        }
        Ok(true)
    }

    /// Seals an open pack and records its pending objects in the index.
    /// The entries name durable bytes, so recording them before any ref
    /// moves is safe: at worst they name objects nothing refers to.
    fn seal(&self, kind: Kind, open: &mut Option<(u64, PackWriter)>) -> Result<()> {
        let Some((seq, writer)) = open.as_ref() else {
            return Ok(());
        };
        let seq = *seq;
        writer.seal().map_err(io_err(format!(
            "cannot seal pack {}",
            self.pack_path(seq).display()
        )))?;
        *open = None;
        sync_dir(&self.home.join("packs"))?;
        let entries = self.pending_entries(kind, Some(seq));
        // In the index before they leave `pending`: a lookup always finds
        // them in one or the other.
        self.db.put_objects(&entries, Some(&open_pack_key(seq)))?;
        self.indexed(kind, &entries);
        Ok(())
    }

    /// `give_back` for every open pack.
    fn give_back_all(&self) -> Result<()> {
        for kind in [Kind::Chunk, Kind::Meta] {
            for slot in &self.writers[kind as usize].slots {
                let mut open = slot.lock().expect("writer lock");
                self.give_back(kind, &mut open)?;
            }
        }
        Ok(())
    }

    /// When no operation that stores objects is in flight (gc, the end of
    /// the process): cuts an open pack before its first record no commit
    /// point indexed (the objects of an operation that failed or was cut
    /// short, a full disk among the causes: nothing durable names them,
    /// and the records a commit point indexed always come first), then
    /// seals what is left, or removes the pack when nothing is.
    fn give_back(&self, kind: Kind, open: &mut Option<(u64, PackWriter)>) -> Result<()> {
        let Some((seq, writer)) = open.as_mut() else {
            return Ok(());
        };
        let seq = *seq;
        let path = self.pack_path(seq);
        {
            let mut pending = self.writers[kind as usize]
                .pending
                .write()
                .expect("pending");
            let is_pending = |(id, slot): &(Id, Slot)| pending.get(id) == Some(&(seq, *slot));
            let keep = writer
                .entries()
                .iter()
                .position(is_pending)
                .unwrap_or(writer.entries().len());
            for (id, _) in &writer.entries()[keep..] {
                if pending.get(id).is_some_and(|(s, _)| *s == seq) {
                    pending.remove(id);
                }
            }
            writer
                .cut(keep)
                .map_err(io_err(format!("cannot cut pack {}", path.display())))?;
        }
        if !writer.entries().is_empty() {
            return self.seal(kind, open);
        }
        *open = None;
        fs::remove_file(&path).map_err(io_err(format!("cannot remove {}", path.display())))?;
        sync_dir(&self.home.join("packs"))?;
        let mut b = Batch::default();
        b.delete(Space::Meta, open_pack_key(seq));
        self.db.write(b)
    }

    /// Drops from `pending` the entries of `kind` now in the index (unless
    /// the object was put again meanwhile, in another pack).
    fn indexed(&self, kind: Kind, entries: &[(Id, Entry)]) {
        let mut p = self.writers[kind as usize]
            .pending
            .write()
            .expect("pending");
        for (id, e) in entries.iter().filter(|(_, e)| e.kind == kind) {
            if p.get(id).is_some_and(|(s, _)| *s == e.pack) {
                p.remove(id);
            }
        }
    }

    /// The pending objects of `kind` (of one pack, or all), as index entries.
    fn pending_entries(&self, kind: Kind, pack: Option<u64>) -> Vec<(Id, Entry)> {
        self.writers[kind as usize]
            .pending
            .read()
            .expect("pending")
            .iter()
            .filter(|(_, (p, _))| pack.is_none_or(|want| *p == want))
            .map(|(id, (pack, slot))| {
                (
                    *id,
                    Entry {
                        pack: *pack,
                        slot: *slot,
                        kind,
                    },
                )
            })
            .collect()
    }

    /// Seals every open pack (gc, and the end of the process).
    pub(crate) fn seal_all(&self) -> Result<()> {
        for kind in [Kind::Chunk, Kind::Meta] {
            for slot in &self.writers[kind as usize].slots {
                let mut open = slot.lock().expect("writer lock");
                self.seal(kind, &mut open)?;
            }
        }
        Ok(())
    }

    /// Makes every object put so far durable and indexed, without sealing
    /// its pack: open packs fill up across commit points, so frequent
    /// commits do not leave one small pack each.
    pub fn flush(&self) -> Result<()> {
        self.commit(Batch::default())
    }

    /// The commit point: makes every object put so far durable (the open
    /// packs and their directory synced), then in one synced batch records
    /// their index entries with `batch` (ref moves, configuration).
    pub(crate) fn commit(&self, mut batch: Batch) -> Result<()> {
        // Pending first, then the syncs: a sync covers every record
        // appended before it, and so every object taken here.
        let entries: Vec<(Id, Entry)> = [Kind::Chunk, Kind::Meta]
            .into_iter()
            .flat_map(|k| self.pending_entries(k, None))
            .collect();
        let packs: HashSet<u64> = entries.iter().map(|(_, e)| e.pack).collect();
        for kind in [Kind::Chunk, Kind::Meta] {
            for slot in &self.writers[kind as usize].slots {
                let open = slot.lock().expect("writer lock");
                if let Some((seq, writer)) = open.as_ref().filter(|(s, _)| packs.contains(s)) {
                    writer.sync().map_err(io_err(format!(
                        "cannot sync pack {}",
                        self.pack_path(*seq).display()
                    )))?;
                }
            }
        }
        if !packs.is_empty() {
            sync_dir(&self.home.join("packs"))?;
        }
        for (id, e) in &entries {
            batch.put_object(id, e);
        }
        self.db.write(batch)?;
        for kind in [Kind::Chunk, Kind::Meta] {
            self.indexed(kind, &entries);
        }
        Ok(())
    }

    /// Reads an object and checks that its bytes hash to `id`.
    pub(crate) fn get(&self, id: &Id) -> Result<Vec<u8>> {
        let entry = self.entry(id)?.ok_or(StoreError::Missing(*id))?;
        match self.read_entry(id, &entry) {
            // A gc running meanwhile may have moved the object and deleted
            // the pack it was in: look it up again.
            Err(e) => match self.entry(id)? {
                Some(again) if again != entry => self.read_entry(id, &again),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    pub(crate) fn read_entry(&self, id: &Id, entry: &Entry) -> Result<Vec<u8>> {
        let damaged = |why: String| StoreError::Damaged {
            id: *id,
            pack: format!("{:016x}", entry.pack),
            why,
        };
        let stored = self
            .read_stored(entry.pack, &entry.slot)
            .map_err(|e| damaged(e.to_string()))?;
        let raw = match pack::decode_checked(id, &entry.slot, &stored)
            .map_err(|e| damaged(e.to_string()))?
        {
            std::borrow::Cow::Owned(raw) => raw,
            std::borrow::Cow::Borrowed(_) => stored,
        };
        Ok(raw)
    }

    /// Stores an object received in stored form. The caller has decoded it
    /// and checked that it hashes to `id`.
    pub(crate) fn put_verified(
        &self,
        kind: Kind,
        id: &Id,
        codec: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> Result<bool> {
        if self.has(id)? {
            return Ok(false);
        }
        self.put_stored(kind, id, codec, raw_len, stored)
    }

    fn reader(&self, seq: u64) -> io::Result<Arc<File>> {
        let mut readers = self.readers.lock().expect("readers lock");
        if let Some(f) = readers.get(&seq) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.pack_path(seq))?);
        // Bound open descriptors; reopening is cheap.
        if readers.len() >= 256 {
            readers.clear();
        }
        readers.insert(seq, f.clone());
        Ok(f)
    }

    /// Ids that begin with the given bytes (for resolving short ids).
    pub(crate) fn ids_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Id, Entry)>> {
        self.db.objects_with_prefix(prefix)
    }

    /// Every indexed object; a malformed index entry is an error.
    pub(crate) fn for_each_object(&self, mut f: impl FnMut(Id, Entry) -> Result<()>) -> Result<()> {
        self.db.for_each_entry(|id, e| f(id, e?))
    }

    /// Every index entry, a malformed one passed as its error (fsck).
    pub(crate) fn for_each_entry(
        &self,
        f: impl FnMut(Id, Result<Entry>) -> Result<()>,
    ) -> Result<()> {
        self.db.for_each_entry(f)
    }

    // Key-value spaces for refs, configuration and the stat cache.

    pub(crate) fn get_kv(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get(space, key)
    }

    /// Calls `f` for each key with `prefix`, in key order, until it returns false.
    pub(crate) fn scan_kv(
        &self,
        space: Space,
        prefix: &[u8],
        f: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        self.db.scan(space, prefix, f)
    }

    /// Writes a batch of key-value changes (synced), without indexing
    /// pending objects or syncing packs: only for changes that refer to no
    /// new objects.
    pub(crate) fn write(&self, batch: Batch) -> Result<()> {
        self.db.write(batch)
    }

    /// Removes every object `live` rejects and gives its space back:
    /// packs holding dead objects are rewritten with their live ones, and
    /// packs no index entry names (debris of interrupted commands) are
    /// deleted. Crash-safe: new packs are sealed and indexed before one
    /// synced batch drops the dead entries, and old packs are deleted last.
    /// Not safe against concurrent puts (one could dedupe against an object
    /// gc drops, or seal a pack gc has not listed): the caller keeps other
    /// writers out, as the executor's gc gate does.
    pub(crate) fn gc(&self, live: &dyn Fn(&Id) -> bool) -> Result<GcStats> {
        // No operation that stores objects runs beside gc, so what no
        // commit point recorded (a failed commit's, on a full disk) is
        // given back rather than sealed.
        self.give_back_all()?;
        let mut stats = GcStats::default();
        let size_before = self.packs_size()?;
        let by_pack = self.split_by_pack(live)?;
        let dead_ids = self.copy_live(&by_pack, &mut stats)?;
        self.seal_all()?;
        let mut batch = Batch::default();
        for id in &dead_ids {
            batch.delete_object(id);
        }
        self.db.write(batch)?;
        self.delete_unused_packs()?;
        stats.bytes_freed = size_before.saturating_sub(self.packs_size()?);
        Ok(stats)
    }

    /// Every pack's live objects and dead ids, by `live`.
    fn split_by_pack(&self, live: &dyn Fn(&Id) -> bool) -> Result<HashMap<u64, Split>> {
        let mut by_pack: HashMap<u64, Split> = HashMap::new();
        self.for_each_object(|id, e| {
            let slot = by_pack.entry(e.pack).or_default();
            if live(&id) {
                slot.0.push((id, e));
            } else {
                slot.1.push(id);
            }
            Ok(())
        })?;
        Ok(by_pack)
    }

    /// gc step 2: copies the live objects of packs holding dead ones, and
    /// of small packs when several of a kind can merge (each process
    /// leaves its own), into new packs, within the room the disk has.
    /// Returns the dead objects of the packs it copied.
    fn copy_live(&self, by_pack: &HashMap<u64, Split>, stats: &mut GcStats) -> Result<Vec<Id>> {
        let small = |n: u64| n < PACK_TARGET / 8;
        let pack_len = |seq: u64| {
            fs::metadata(self.pack_path(seq))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        // Only packs of the same kind can merge; a pack's live objects say
        // its kind (a pack without any is rewritten for its dead ones).
        let kind_of = |live: &[(Id, Entry)]| live.first().map(|(_, e)| e.kind);
        let mut small_by_kind: HashMap<Kind, usize> = HashMap::new();
        for (seq, (live, _)) in by_pack {
            if let (Some(kind), true) = (kind_of(live), small(pack_len(*seq))) {
                *small_by_kind.entry(kind).or_default() += 1;
            }
        }
        let mut dead_ids = Vec::new();
        // Copies need room: on a nearly full disk, packs whose live
        // objects do not fit are left for a later gc, and packs with no
        // live object (which cost nothing to drop) go first.
        let mut room = self.room().unwrap_or(u64::MAX).saturating_sub(GC_MARGIN);
        let mut skipped = 0;
        let mut order: Vec<_> = by_pack.iter().collect();
        order.sort_by_key(|(seq, (live, _))| (!live.is_empty(), **seq));
        for (seq, (live_objs, dead)) in order {
            let merge = small(pack_len(*seq))
                && kind_of(live_objs)
                    .is_some_and(|k| small_by_kind.get(&k).is_some_and(|n| *n > 1));
            if dead.is_empty() && !merge {
                continue;
            }
            let copy: u64 = live_objs
                .iter()
                .map(|(_, e)| u64::from(e.slot.stored_len) + 2 * pack::RECORD_HEADER_LEN)
                .sum();
            if copy > room {
                if !dead.is_empty() {
                    stats.packs_left += 1;
                    skipped += copy;
                }
                continue;
            }
            room -= copy;
            for (id, e) in live_objs {
                let stored = self.read_stored(*seq, &e.slot)?;
                self.put_stored(e.kind, id, e.slot.codec, e.slot.raw_len, &stored)?;
            }
            stats.objects_removed += dead.len() as u64;
            dead_ids.extend_from_slice(dead);
            if !live_objs.is_empty() {
                stats.packs_rewritten += 1;
            }
        }
        stats.space_needed = skipped.saturating_sub(room);
        Ok(dead_ids)
    }

    /// gc step 4: deletes every pack file no index entry names and that
    /// is not open.
    fn delete_unused_packs(&self) -> Result<()> {
        let mut used: HashSet<u64> = HashSet::new();
        self.for_each_object(|_, e| {
            used.insert(e.pack);
            Ok(())
        })?;
        self.readers.lock().expect("readers lock").clear();
        let packs = self.home.join("packs");
        for entry in fs::read_dir(&packs).map_err(io_err("cannot read the pack directory"))? {
            let entry = entry.map_err(io_err("cannot read the pack directory"))?;
            let Some(seq) = pack_seq(&entry.file_name()) else {
                continue;
            };
            if used.contains(&seq) || self.is_open_pack(seq) {
                continue;
            }
            fs::remove_file(entry.path())
                .map_err(io_err(format!("cannot remove {}", entry.path().display())))?;
        }
        sync_dir(&packs)
    }

    /// Raw bytes of the chunks appended that no commit point recorded yet
    /// (a failed operation's, until they are given back).
    pub(crate) fn pending_chunk_bytes(&self) -> u64 {
        self.writers[Kind::Chunk as usize]
            .pending
            .read()
            .expect("pending")
            .values()
            .map(|(_, slot)| u64::from(slot.raw_len))
            .sum()
    }

    /// Keys on which the state log and the index disagree (fsck).
    pub(crate) fn state_log_disagreements(&self) -> Result<Vec<String>> {
        self.db.state_log_disagreements()
    }

    /// Bytes free on the disk holding the packs (None when unknown).
    pub(crate) fn room(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(self.home.join("packs")).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Total bytes of pack files.
    pub(crate) fn packs_size(&self) -> Result<u64> {
        let packs = self.home.join("packs");
        let mut total = 0;
        for entry in fs::read_dir(&packs).map_err(io_err("cannot read the pack directory"))? {
            let entry = entry.map_err(io_err("cannot read the pack directory"))?;
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Ok(total)
    }

    fn is_open_pack(&self, seq: u64) -> bool {
        self.writers
            .iter()
            .flat_map(|w| &w.slots)
            .any(|s| matches!(&*s.lock().expect("writer lock"), Some((open, _)) if *open == seq))
    }

    /// An object's bytes as stored (compressed or raw, per the slot's
    /// codec), unchecked.
    pub(crate) fn read_stored(&self, seq: u64, slot: &Slot) -> Result<Vec<u8>> {
        let file = self
            .reader(seq)
            .map_err(io_err(format!("cannot open pack {seq:016x}")))?;
        let mut buf = vec![0u8; slot.stored_len as usize];
        file.read_exact_at(&mut buf, slot.offset)
            .map_err(io_err(format!("cannot read pack {seq:016x}")))?;
        Ok(buf)
    }

    /// Checks every pack's structure and that every index entry names a
    /// record its pack's trailer lists.
    pub(crate) fn verify_packs(&self) -> Result<Vec<PackProblem>> {
        let mut problems = Vec::new();
        let mut index: HashMap<u64, Vec<(Id, Entry)>> = HashMap::new();
        self.for_each_object(|id, e| {
            index.entry(e.pack).or_default().push((id, e));
            Ok(())
        })?;
        let packs = self.home.join("packs");
        let mut on_disk = HashSet::new();
        for entry in fs::read_dir(&packs).map_err(io_err("cannot read the pack directory"))? {
            let entry = entry.map_err(io_err("cannot read the pack directory"))?;
            let Some(seq) = pack_seq(&entry.file_name()) else {
                continue;
            };
            on_disk.insert(seq);
            if self.is_open_pack(seq) {
                // Being filled; sealed when full or at the end.
                continue;
            }
            let name = format!("{seq:016x}");
            let indexed = index.get(&seq);
            let trailer = File::open(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|f| pack::read_trailer(&f).map_err(|e| e.to_string()));
            match trailer {
                Err(what) => problems.push(PackProblem {
                    pack: name,
                    what,
                    stray: indexed.is_none(),
                }),
                Ok((_, entries)) if indexed.is_none() => problems.push(PackProblem {
                    pack: name,
                    what: format!(
                        "sealed, with {} objects no index entry names",
                        entries.len()
                    ),
                    stray: true,
                }),
                Ok((_, entries)) => {
                    let listed: HashMap<Id, Slot> = entries.into_iter().collect();
                    for (id, e) in indexed.into_iter().flatten() {
                        if listed.get(id) != Some(&e.slot) {
                            problems.push(PackProblem {
                                pack: name.clone(),
                                what: format!(
                                    "index entry for {} does not match the pack",
                                    id.short()
                                ),
                                stray: false,
                            });
                        }
                    }
                }
            }
        }
        for (seq, entries) in &index {
            if !on_disk.contains(seq) {
                problems.push(PackProblem {
                    pack: format!("{seq:016x}"),
                    what: format!(
                        "missing, but the index names {} objects in it",
                        entries.len()
                    ),
                    stray: false,
                });
            }
        }
        Ok(problems)
    }
}

/// Takes `home/lock` (flock, released when the process ends however it
/// ends) and writes `who` into it.
fn lock_home(home: &Path, who: &str) -> Result<File> {
    use std::io::{Read, Seek, Write};
    fs::create_dir_all(home).map_err(io_err(format!("cannot create {}", home.display())))?;
    let path = home.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(StoreError::Locked {
            home: home.to_path_buf(),
            holder: if holder.is_empty() {
                "another dot process".into()
            } else {
                holder.to_string()
            },
        });
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(who.as_bytes());
    Ok(file)
}

/// Waits until no process holds `home/lock`: a stopping daemon has let
/// go of the store (closed the index, sealed its packs) once it returns.
pub fn wait_released(home: &Path) -> std::io::Result<()> {
    match File::open(home.join("lock")) {
        Ok(file) => rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(std::io::Error::from),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Store {
    /// A clean end gives back what no commit point recorded and seals the
    /// rest; after a kill, the next open does the same.
    fn drop(&mut self) {
        if self.seal_on_drop.load(Ordering::Relaxed) {
            let _ = self.give_back_all();
        }
    }
}

fn pack_seq(name: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let hex = name.strip_suffix(".pack")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Room gc leaves free on the disk when it copies live objects.
const GC_MARGIN: u64 = 1 << 20;

/// A file of zeros kept under the home so that a full disk still leaves
/// room to open the index (`Store::open` deletes it when it must).
const RESERVE: &str = "reserve";
const RESERVE_BYTES: u64 = 4 << 20;

/// Makes the reserve when it is missing and the disk has room for it
/// (written through a temporary name, so a reserve is always whole).
fn keep_reserve(home: &Path) {
    let path = home.join(RESERVE);
    if path.exists() {
        return;
    }
    let tmp = home.join("reserve.tmp");
    let made = File::create(&tmp).and_then(|f| {
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)?;
        fs::rename(&tmp, &path)
    });
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Where pack `seq` of the store at `home` is.
fn pack_file(home: &Path, seq: u64) -> PathBuf {
    home.join("packs").join(format!("{seq:016x}.pack"))
}

/// The sequence numbers of the pack files under `home` (creating
/// `packs/` when missing).
fn pack_seqs(home: &Path) -> Result<Vec<u64>> {
    let packs = home.join("packs");
    fs::create_dir_all(&packs).map_err(io_err(format!("cannot create {}", packs.display())))?;
    let mut seqs = Vec::new();
    for entry in fs::read_dir(&packs).map_err(io_err(format!("cannot read {}", packs.display())))? {
        let entry = entry.map_err(io_err("cannot read the pack directory"))?;
        seqs.extend(pack_seq(&entry.file_name()));
    }
    seqs.sort_unstable();
    Ok(seqs)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("cannot sync {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise;

    #[test]
    fn put_get_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let id = Id::of(&data);
        {
            let s = Store::open(dir.path(), "test").unwrap();
            assert!(s.put(Kind::Chunk, &id, &data).unwrap());
            assert!(!s.put(Kind::Chunk, &id, &data).unwrap());
            assert_eq!(s.get(&id).unwrap(), data);
            s.commit(Batch::default()).unwrap();
        }
        let s = Store::open(dir.path(), "test").unwrap();
        assert_eq!(s.get(&id).unwrap(), data);
        assert!(s.verify_packs().unwrap().is_empty());
    }

    #[test]
    fn what_no_commit_point_recorded_is_given_back_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let count = || fs::read_dir(dir.path().join("packs")).unwrap().count();
        let kept = noise(50_000, 1);
        let failed = noise(300_000, 2);
        {
            let s = Store::open(dir.path(), "test").unwrap();
            s.put(Kind::Chunk, &Id::of(&kept), &kept).unwrap();
            s.commit(Batch::default()).unwrap();
            // An operation that failed before its commit point.
            s.put(Kind::Chunk, &Id::of(&failed), &failed).unwrap();
            s.put(Kind::Meta, &Id::of(b"meta"), b"meta").unwrap();
        }
        let s = Store::open(dir.path(), "test").unwrap();
        assert_eq!(s.get(&Id::of(&kept)).unwrap(), kept);
        assert!(!s.has(&Id::of(&failed)).unwrap());
        assert!(!s.has(&Id::of(b"meta")).unwrap());
        // The chunk pack gave the 300 KB back; the metadata pack held
        // nothing else and is gone.
        assert_eq!(count(), 1);
        let size = fs::metadata(s.pack_path(1)).unwrap().len();
        assert!(size < 60_000, "{size}");
        assert!(s.verify_packs().unwrap().is_empty());
    }

    /// Whoever waits for the store (`dot daemon stop`, then a command)
    /// finds the index closed and the packs sealed once the lock is free.
    #[test]
    fn the_lock_is_let_go_last() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(dir.path(), "test").unwrap();
            for i in 0..200u64 {
                let data = noise(3000, i + round);
                s.put(Kind::Chunk, &Id::of(&data), &data).unwrap();
            }
            s.commit(Batch::default()).unwrap();
            let home = dir.path().to_path_buf();
            let next = std::thread::spawn(move || {
                wait_released(&home).unwrap();
                Store::open(&home, "next").map(drop)
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            drop(s);
            next.join().unwrap().unwrap();
        }
    }

    #[test]
    fn second_process_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _s = Store::open(dir.path(), "test").unwrap();
        assert!(matches!(
            Store::open(dir.path(), "test"),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let data = b"some object bytes".to_vec();
        let id = Id::of(&data);
        s.put(Kind::Meta, &id, &data).unwrap();
        s.flush().unwrap();
        let e = s.entry(&id).unwrap().unwrap();
        let path = s.pack_path(e.pack);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"X", e.slot.offset).unwrap();
        s.readers.lock().unwrap().clear();
        assert!(matches!(s.get(&id), Err(StoreError::Damaged { .. })));
    }

    #[test]
    fn gc_drops_dead_objects_and_keeps_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let keep = vec![1u8; 50_000];
        let drop = noise(50_000, 0x9e37_79b9_7f4a_7c15);
        let (k, d) = (Id::of(&keep), Id::of(&drop));
        s.put(Kind::Chunk, &k, &keep).unwrap();
        s.put(Kind::Chunk, &d, &drop).unwrap();
        s.seal_all().unwrap();
        let before = s.packs_size().unwrap();
        let stats = s.gc(&|id| *id == k).unwrap();
        assert_eq!(stats.objects_removed, 1);
        assert_eq!(stats.packs_rewritten, 1);
        // The dead object's bytes are gone, not just its index entry.
        assert!(
            s.packs_size().unwrap() < before - 40_000,
            "{} -> {}",
            before,
            s.packs_size().unwrap()
        );
        assert_eq!(stats.bytes_freed, before - s.packs_size().unwrap());
        assert!(!s.has(&d).unwrap());
        assert_eq!(s.get(&k).unwrap(), keep);
        assert!(s.verify_packs().unwrap().is_empty());
    }

    #[test]
    fn gc_merges_small_packs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let mut ids = Vec::new();
        for i in 0..5u32 {
            let data = format!("object {i}").into_bytes();
            let id = Id::of(&data);
            s.put(Kind::Meta, &id, &data).unwrap();
            s.seal_all().unwrap();
            ids.push((id, data));
        }
        let count = || fs::read_dir(dir.path().join("packs")).unwrap().count();
        assert_eq!(count(), 5);
        s.gc(&|_| true).unwrap();
        assert_eq!(count(), 1);
        // One small pack per kind: nothing to merge, so nothing is rewritten.
        let chunk = b"a chunk".to_vec();
        s.put(Kind::Chunk, &Id::of(&chunk), &chunk).unwrap();
        s.seal_all().unwrap();
        assert_eq!(count(), 2);
        assert_eq!(s.gc(&|_| true).unwrap().packs_rewritten, 0);
        assert_eq!(count(), 2);
        for (id, data) in &ids {
            assert_eq!(&s.get(id).unwrap(), data);
        }
        assert!(s.verify_packs().unwrap().is_empty());
    }

    #[test]
    fn commit_points_do_not_seal_packs_and_a_killed_process_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let count = || fs::read_dir(dir.path().join("packs")).unwrap().count();
        let mut ids = Vec::new();
        {
            let s = Store::open(dir.path(), "test").unwrap();
            for i in 0..5u32 {
                let data = format!("committed {i}").into_bytes();
                ids.push(Id::of(&data));
                s.put(Kind::Meta, &Id::of(&data), &data).unwrap();
                s.commit(Batch::default()).unwrap();
            }
            assert_eq!(count(), 1, "five commit points, one open pack");
            // Killed: nothing sealed, and a record torn mid-write.
            s.seal_on_drop.store(false, Ordering::Relaxed);
            let data = b"never committed".to_vec();
            s.put(Kind::Meta, &Id::of(&data), &data).unwrap();
        }
        let pack = fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let f = OpenOptions::new().append(true).open(&pack).unwrap();
        use std::io::Write;
        (&f).write_all(&[7u8; 30]).unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        for id in &ids {
            assert!(s.get(id).is_ok());
        }
        assert!(s.verify_packs().unwrap().is_empty());
        // Sealed, with every committed record in its trailer; the object
        // no commit point recorded is given back.
        let (_, entries) = pack::read_trailer(&File::open(&pack).unwrap()).unwrap();
        assert_eq!(entries.len(), 5);
        assert!(!s.has(&Id::of(b"never committed")).unwrap());
        drop(s);

        // Killed between creating a pack and writing its header: the empty
        // file goes, and the store opens.
        let seq = 0x99;
        {
            let s = Store::open(dir.path(), "test").unwrap();
            s.db.put_meta_unsynced(&open_pack_key(seq), b"").unwrap();
            s.db.write(Batch::default()).unwrap();
            File::create(s.pack_path(seq)).unwrap();
        }
        let s = Store::open(dir.path(), "test").unwrap();
        assert!(!s.pack_path(seq).exists());
        assert!(s.verify_packs().unwrap().is_empty());
        assert_eq!(count(), 1);
    }

    #[test]
    fn repair_indexes_sealed_and_killed_packs_and_keeps_damaged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let put = |s: &Store, data: &[u8]| {
            s.put(Kind::Chunk, &Id::of(data), data).unwrap();
            Id::of(data)
        };
        let sealed;
        let open;
        {
            let s = Store::open(dir.path(), "test").unwrap();
            sealed = put(&s, b"in a sealed pack");
            s.seal_all().unwrap();
        }
        // A third pack, sealed, then damaged in its trailer.
        let damaged_pack;
        {
            let s = Store::open(dir.path(), "test").unwrap();
            put(&s, b"in a damaged pack");
            s.seal_all().unwrap();
            damaged_pack = s.pack_path(s.next_pack.load(Ordering::SeqCst) - 1);
        }
        let mut bytes = fs::read(&damaged_pack).unwrap();
        let n = bytes.len();
        bytes[n - 60] ^= 0xff;
        fs::write(&damaged_pack, bytes).unwrap();
        {
            let s = Store::open(dir.path(), "test").unwrap();
            open = put(&s, b"in a pack a kill left open");
            s.seal_on_drop.store(false, Ordering::Relaxed);
        }
        fs::remove_dir_all(dir.path().join("index")).unwrap();
        assert!(matches!(
            Store::open(dir.path(), "test"),
            Err(StoreError::IndexLost(_))
        ));

        let report = repair(dir.path(), "test").unwrap();
        assert_eq!(report.packs, 3, "{report:?}");
        assert_eq!(report.packs_sealed, 2, "{report:?}");
        assert!(damaged_pack.with_extension("pack.damaged").exists());
        let s = Store::open(dir.path(), "test").unwrap();
        assert_eq!(s.get(&sealed).unwrap(), b"in a sealed pack");
        assert_eq!(s.get(&open).unwrap(), b"in a pack a kill left open");
        assert_eq!(
            s.get(&Id::of(b"in a damaged pack")).unwrap(),
            b"in a damaged pack"
        );
        assert!(s.verify_packs().unwrap().is_empty());
    }

    #[test]
    fn reads_succeed_while_gc_moves_objects() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let mut ids = Vec::new();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let put = |s: &Store, i: u32, ids: &mut Vec<Id>| {
            let data = format!("object {i}").into_bytes();
            let id = Id::of(&data);
            s.put(Kind::Meta, &id, &data).unwrap();
            s.flush().unwrap();
            ids.push(id);
        };
        for i in 0..50 {
            put(&s, i, &mut ids);
        }
        let ids = Mutex::new(ids);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut n = 0usize;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let id = {
                            let ids = ids.lock().unwrap();
                            ids[n % ids.len()]
                        };
                        s.get(&id).expect("a read during gc");
                        n += 7;
                    }
                });
            }
            // Each round adds small packs, and gc merges them all into a
            // new one, deleting the old packs under the readers.
            for round in 0..40 {
                for i in 0..5 {
                    put(&s, 1000 + round * 5 + i, &mut ids.lock().unwrap());
                }
                s.gc(&|_| true).unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(s.verify_packs().unwrap().is_empty());
    }

    #[test]
    fn gc_keeps_big_packs_of_a_kind_without_small_ones() {
        // A data pack too big to merge, beside small metadata packs only.
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "test").unwrap();
        let big = noise((PACK_TARGET / 8 + (1 << 20)) as usize, 7);
        for piece in big.chunks(1 << 20) {
            s.put(Kind::Chunk, &Id::of(piece), piece).unwrap();
        }
        s.seal_all().unwrap();
        for i in 0..2u32 {
            let m = format!("meta {i}").into_bytes();
            s.put(Kind::Meta, &Id::of(&m), &m).unwrap();
            s.seal_all().unwrap();
        }
        let stats = s.gc(&|_| true).unwrap();
        assert_eq!(
            stats.packs_rewritten, 2,
            "the two small metadata packs merge"
        );
        assert_eq!(fs::read_dir(dir.path().join("packs")).unwrap().count(), 2);
        for piece in big.chunks(1 << 20) {
            assert_eq!(s.get(&Id::of(piece)).unwrap(), piece);
        }
        assert!(s.verify_packs().unwrap().is_empty());
    }
}
