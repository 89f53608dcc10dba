//! The state log: a copy, outside RocksDB, of every change to the index's
//! `refs` and `meta` families (branches, the reflog, each dot's
//! configuration, remotes, upstreams, journals, mounts), so that
//! `dot fsck --repair` can bring them back when the index directory is
//! lost or damaged. Object locations are not logged (the packs' trailers
//! hold them), nor the stat cache (it is rebuilt by the next scan), nor the
//! `pack-open/` records (repair seals every pack it finds).
//!
//! File `$DOT_HOME/state.log`: a 12-byte header (`"DOTSTATE"`, version
//! `u32le` = 1), then records: payload length `u32le` · BLAKE3(payload) ·
//! payload. A payload is a sequence of operations (`Op`, encoded by
//! `encode_ops`); one record is one synced batch of the index. A record is
//! appended and fsynced before its batch is applied to RocksDB, and cut
//! off again when the batch fails, so the log never lags the index; a
//! record whose batch a crash kept from applying is recognised at the next
//! open (`Db::open` compares the last record with the index) and cut off
//! too. When the log outgrows its last snapshot it is rewritten as one
//! snapshot (`Clear`, then a put of every key), into a new file renamed
//! over the old one.
//!
//! `decode_ops` and `records` are the only readers; both check every
//! length with checked arithmetic against the limits below.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::db::Space;

const MAGIC: &[u8; 8] = b"DOTSTATE";
const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 12;
/// Record header: payload length `u32le` and its BLAKE3.
const RECORD_HEADER_LEN: u64 = 36;
/// The largest payload: snapshots are split into records below this.
const MAX_PAYLOAD: usize = 64 << 20;
/// The largest key and value an operation may carry.
const MAX_KEY: usize = 64 << 10;
const MAX_VALUE: usize = 16 << 20;
/// A snapshot record is closed once it holds this many bytes.
const SNAPSHOT_RECORD: usize = 8 << 20;

/// One logged change, in the order it was applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
    DeletePrefix(Space, Vec<u8>),
    /// Every key of `refs` and `meta` is deleted (a snapshot follows).
    Clear,
}

/// Every logged key with its value: what a snapshot holds.
pub(crate) type State = Vec<(Space, Vec<u8>, Vec<u8>)>;

/// Whether a key of `space` is logged: refs and meta, except the records
/// of open packs.
pub(crate) fn logged(space: Space, key: &[u8]) -> bool {
    match space {
        Space::Refs => true,
        Space::Meta => !key.starts_with(b"pack-open/"),
        Space::Cache => false,
    }
}

fn space_byte(s: Space) -> u8 {
    match s {
        Space::Refs => 0,
        Space::Meta => 1,
        Space::Cache => unreachable!("the stat cache is not logged"),
    }
}

pub(crate) fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes = |out: &mut Vec<u8>, b: &[u8]| {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    };
    for op in ops {
        match op {
            Op::Put(s, k, v) => {
                out.extend_from_slice(&[0, space_byte(*s)]);
                bytes(&mut out, k);
                bytes(&mut out, v);
            }
            Op::Delete(s, k) => {
                out.extend_from_slice(&[1, space_byte(*s)]);
                bytes(&mut out, k);
            }
            Op::DeletePrefix(s, p) => {
                out.extend_from_slice(&[2, space_byte(*s)]);
                bytes(&mut out, p);
            }
            Op::Clear => out.push(3),
        }
    }
    out
}

/// Decodes a record's payload, refusing unknown tags and spaces, lengths
/// past the payload or over the limits.
pub(crate) fn decode_ops(mut p: &[u8]) -> Result<Vec<Op>, String> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if p.len() < n {
            return Err("an operation runs past its record".into());
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Ok(head)
    }
    fn sized(p: &mut &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let n = u32::from_le_bytes(take(p, 4)?.try_into().expect("4 bytes")) as usize;
        if n > limit {
            return Err(format!(
                "a length of {n} bytes is over the limit of {limit}"
            ));
        }
        Ok(take(p, n)?.to_vec())
    }
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        if tag == 3 {
            ops.push(Op::Clear);
            continue;
        }
        let space = match take(&mut p, 1)?[0] {
            0 => Space::Refs,
            1 => Space::Meta,
            s => return Err(format!("unknown space {s}")),
        };
        let op = match tag {
            0 => {
                let k = sized(&mut p, MAX_KEY)?;
                Op::Put(space, k, sized(&mut p, MAX_VALUE)?)
            }
            1 => Op::Delete(space, sized(&mut p, MAX_KEY)?),
            2 => Op::DeletePrefix(space, sized(&mut p, MAX_KEY)?),
            t => return Err(format!("unknown operation {t}")),
        };
        ops.push(op);
    }
    Ok(ops)
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn record(payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(payload.len() + RECORD_HEADER_LEN as usize);
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(blake3::hash(payload).as_bytes());
    r.extend_from_slice(payload);
    r
}

/// What reading a log found: its whole records' payloads with where each
/// begins, and where the whole records end (bytes after that are a record
/// torn by a crash, or damage).
pub(crate) struct Records<'a> {
    pub payloads: Vec<(u64, &'a [u8])>,
    pub end: u64,
    pub len: u64,
}

/// Reads the header and every whole record of `bytes`, stopping at the
/// first record that is cut short or fails its hash.
pub(crate) fn records(bytes: &[u8]) -> Result<Records<'_>, String> {
    if bytes.len() < HEADER_LEN as usize || bytes[..8] != MAGIC[..] {
        return Err("not a dot state log".into());
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("state log version {version} is not supported"));
    }
    let mut at = HEADER_LEN as usize;
    let mut payloads = Vec::new();
    while let Some(head) = bytes.get(at..at + RECORD_HEADER_LEN as usize) {
        let n = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let start = at + RECORD_HEADER_LEN as usize;
        let Some(payload) = start.checked_add(n).and_then(|end| bytes.get(start..end)) else {
            break;
        };
        if n > MAX_PAYLOAD || blake3::hash(payload).as_bytes()[..] != head[4..] {
            break;
        }
        payloads.push((at as u64, payload));
        at = start + n;
    }
    Ok(Records {
        payloads,
        end: at as u64,
        len: bytes.len() as u64,
    })
}

/// The state a log's records leave, replayed in memory (`replay`).
pub(crate) struct Replayed {
    pub state: std::collections::BTreeMap<(Space, Vec<u8>), Vec<u8>>,
    /// Records applied.
    pub records: u64,
    /// Why replaying stopped before the last record (one that does not
    /// decode ends what can be trusted, as a torn one does).
    pub stopped: Option<String>,
}

/// Applies `payloads` (from `records`) in order, in memory: the one
/// meaning of the operations, for repair and for fsck.
pub(crate) fn replay(payloads: &[(u64, &[u8])]) -> Replayed {
    let mut r = Replayed {
        state: Default::default(),
        records: 0,
        stopped: None,
    };
    for (at, payload) in payloads {
        let ops = match decode_ops(payload) {
            Ok(ops) => ops,
            Err(why) => {
                r.stopped = Some(format!("the record at byte {at}: {why}"));
                break;
            }
        };
        for op in ops {
            match op {
                Op::Put(s, k, v) => {
                    r.state.insert((s, k), v);
                }
                Op::Delete(s, k) => {
                    r.state.remove(&(s, k));
                }
                Op::DeletePrefix(s, p) => r
                    .state
                    .retain(|(space, k), _| *space != s || !k.starts_with(&p)),
                Op::Clear => r.state.clear(),
            }
        }
        r.records += 1;
    }
    r
}

/// The open log, appended to under the index's write lock.
pub(crate) struct StateLog {
    path: PathBuf,
    file: File,
    len: u64,
    /// The length after the last snapshot: the log is rewritten once it
    /// grows past four times this plus 1 MiB.
    base: u64,
}

fn io_context(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let what = format!("cannot {what} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl StateLog {
    pub(crate) fn in_home(home: &Path) -> PathBuf {
        home.join("state.log")
    }

    /// Opens the log at `path` whose whole records end at `end` (from
    /// `records`), cutting off anything after them.
    pub(crate) fn open(path: &Path, end: u64) -> io::Result<StateLog> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_context("open", path))?;
        if file.metadata()?.len() != end {
            file.set_len(end).map_err(io_context("cut", path))?;
            file.sync_all()?;
        }
        Ok(StateLog {
            path: path.to_path_buf(),
            file,
            len: end,
            base: end,
        })
    }

    /// Appends one record and makes it durable.
    pub(crate) fn append(&mut self, ops: &[Op]) -> io::Result<()> {
        let r = record(&encode_ops(ops));
        let done = self
            .file
            .write_all_at(&r, self.len)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = done {
            // A partly written record is given back (it would be cut at
            // the next open anyway).
            let _ = self.file.set_len(self.len);
            return Err(io_context("write", &self.path)(e));
        }
        self.len += r.len() as u64;
        Ok(())
    }

    /// Cuts off the last record, whose batch was not applied.
    pub(crate) fn cut_to(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.sync_data()?;
        self.len = len;
        Ok(())
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn wants_snapshot(&self) -> bool {
        self.len > self.base.saturating_mul(4).saturating_add(1 << 20)
    }

    /// Replaces the log by a snapshot of `state` (every logged key and its
    /// value, in one or more records starting with `Clear`): written to a
    /// new file, synced, renamed over the old one.
    pub(crate) fn rewrite(&mut self, state: State) -> io::Result<()> {
        let file = write_snapshot(&self.path, state)?;
        self.len = file.metadata()?.len();
        self.base = self.len;
        self.file = file;
        Ok(())
    }
}

/// Writes a snapshot log at `path` (through a temporary file renamed over
/// it, then the directory synced) and returns it open.
pub(crate) fn write_snapshot(path: &Path, state: State) -> io::Result<File> {
    let tmp = path.with_extension("log.tmp");
    let written = write_records(&tmp, state)
        .and_then(|()| fs::rename(&tmp, path).map_err(io_context("replace", path)));
    if let Err(e) = written {
        // A snapshot that could not be written whole (a full disk) is
        // given back; the old log stays as it was.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().read(true).write(true).open(path)
}

/// Writes a snapshot log to `at` and syncs it.
fn write_records(at: &Path, state: State) -> io::Result<()> {
    let mut out = io::BufWriter::new(File::create(at).map_err(io_context("create", at))?);
    out.write_all(&header())?;
    let mut ops = vec![Op::Clear];
    let mut size = 0;
    for (s, k, v) in state {
        size += k.len() + v.len() + 10;
        ops.push(Op::Put(s, k, v));
        if size >= SNAPSHOT_RECORD {
            out.write_all(&record(&encode_ops(&ops)))?;
            ops.clear();
            size = 0;
        }
    }
    out.write_all(&record(&encode_ops(&ops)))?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().map_err(io_context("write", at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op() -> impl Strategy<Value = Op> {
        let space = prop_oneof![Just(Space::Refs), Just(Space::Meta)];
        let bytes = || proptest::collection::vec(any::<u8>(), 0..20);
        prop_oneof![
            (space.clone(), bytes(), bytes()).prop_map(|(s, k, v)| Op::Put(s, k, v)),
            (space.clone(), bytes()).prop_map(|(s, k)| Op::Delete(s, k)),
            (space, bytes()).prop_map(|(s, k)| Op::DeletePrefix(s, k)),
            Just(Op::Clear),
        ]
    }

    proptest! {
        #[test]
        fn ops_round_trip(ops in proptest::collection::vec(op(), 0..8)) {
            prop_assert_eq!(decode_ops(&encode_ops(&ops)).unwrap(), ops);
        }

        #[test]
        fn any_payload_decodes_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(ops) = decode_ops(&bytes) {
                prop_assert_eq!(encode_ops(&ops), bytes);
            }
        }

        #[test]
        fn any_log_reads_its_whole_records_only(bytes in proptest::collection::vec(any::<u8>(), 0..300), cut in 0usize..300) {
            let mut log = header().to_vec();
            log.extend_from_slice(&record(b"ab"));
            log.extend_from_slice(&bytes);
            let _ = records(&bytes);
            let r = records(&log).unwrap();
            prop_assert!(r.end <= r.len);
            prop_assert_eq!(r.payloads[0].1, b"ab");
            // A log cut anywhere keeps the records before the cut.
            let cut = cut.min(log.len());
            if let Ok(r) = records(&log[..cut]) {
                prop_assert!(r.end as usize <= cut);
            }
        }
    }

    #[test]
    fn golden_record() {
        let ops = [Op::Put(Space::Refs, b"k".to_vec(), b"v".to_vec())];
        assert_eq!(encode_ops(&ops), [0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v']);
        assert_eq!(&header(), b"DOTSTATE\x01\x00\x00\x00");
        let r = record(&encode_ops(&ops));
        assert_eq!(&r[..4], &[12, 0, 0, 0]);
        assert_eq!(r.len(), 36 + 12);
    }

    #[test]
    fn a_torn_record_is_not_read() {
        let mut log = header().to_vec();
        log.extend_from_slice(&record(b"one"));
        let whole = log.len() as u64;
        log.extend_from_slice(&record(b"two")[..20]);
        let r = records(&log).unwrap();
        assert_eq!(r.payloads.len(), 1);
        assert_eq!(r.end, whole);
        log[HEADER_LEN as usize + 5] ^= 1;
        assert_eq!(records(&log).unwrap().payloads.len(), 0);
        assert!(records(b"DOTSTATE\x02\x00\x00\x00").is_err());
    }
}
