//! Pack files: append-only while open, immutable once sealed, and
//! self-describing, so the index can be rebuilt from packs alone.
//!
//! Layout (all integers little-endian; docs/design.md has the full spec):
//!
//! ```text
//! header  "DOTPACK\0" | version u32 = 1 | kind u8 | 3 zero bytes        16 bytes
//! record  id [32] | codec u8 | stored_len u32 | raw_len u32 | stored bytes
//! trailer count u32 | count x (id [32] | offset u64 | stored_len u32 | raw_len u32 | codec u8)
//! footer  trailer_offset u64 | blake3(trailer) [32] | "DOTPEND\0"       48 bytes
//! ```
//!
//! `offset` is where a record's stored bytes begin. The slot (offset,
//! stored length, raw length, codec) is encoded and checked here only: pack
//! trailers, the local index and remote index files all carry it, and
//! `Slot::check` holds every rule a slot read from disk or a remote must
//! meet before anything is allocated for it.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::Kind;
use crate::codec::DecodeError;
use crate::id::{Id, ID_LEN};

pub const MAGIC: &[u8; 8] = b"DOTPACK\0";
pub const END_MAGIC: &[u8; 8] = b"DOTPEND\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = ID_LEN as u64 + 1 + 4 + 4;
/// Bytes of an encoded slot: offset u64, stored_len u32, raw_len u32, codec u8.
pub const SLOT_LEN: usize = 8 + 4 + 4 + 1;
const TRAILER_ENTRY_LEN: usize = ID_LEN + SLOT_LEN;
pub const FOOTER_LEN: u64 = 8 + 32 + 8;

/// The largest chunk any dot can cut (fastcdc's upper bound on `max`).
pub const MAX_CHUNK: u32 = 16 << 20;
/// The largest metadata object (DESIGN.md section 3).
pub const MAX_META: u32 = 1 << 20;
/// No pack is larger: every offset and end a slot names lies below this.
pub const MAX_PACK_BYTES: u64 = 4 << 30;
/// No pack holds more objects; writers seal before they would.
pub const MAX_PACK_OBJECTS: usize = 1 << 20;

/// Stored bytes are raw.
pub const CODEC_RAW: u8 = 0;
/// Stored bytes are one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// The largest raw object of a kind.
pub(crate) fn max_raw_len(kind: Kind) -> u32 {
    match kind {
        Kind::Chunk => MAX_CHUNK,
        Kind::Meta => MAX_META,
    }
}

fn invalid(what: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(what.into())
}

/// Where one object lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: u8,
}

impl Slot {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.push(self.codec);
    }

    /// Decodes the `SLOT_LEN` bytes at the start of `b` (unchecked: call
    /// `check` before using it).
    pub(crate) fn decode(b: &[u8]) -> Result<Slot, DecodeError> {
        let b = b.get(..SLOT_LEN).ok_or(DecodeError::Truncated(b.len()))?;
        Ok(Slot {
            offset: le_u64(&b[..8]),
            stored_len: le_u32(&b[8..12]),
            raw_len: le_u32(&b[12..16]),
            codec: b[16],
        })
    }

    /// The rules every slot read from a pack trailer, the index or a
    /// remote meets: a known codec, a raw length within the kind's limit,
    /// stored bytes no longer than the raw ones (exactly as long when raw),
    /// and bytes that begin after the first record header and end by
    /// `end` (the pack's trailer, or `MAX_PACK_BYTES`), with checked
    /// arithmetic.
    pub(crate) fn check(&self, kind: Kind, end: u64) -> Result<(), DecodeError> {
        let max = max_raw_len(kind);
        if self.raw_len == 0 || self.raw_len > max {
            return Err(invalid(format!(
                "raw length {} is outside 1..={max}",
                self.raw_len
            )));
        }
        match self.codec {
            CODEC_RAW if self.stored_len == self.raw_len => {}
            CODEC_ZSTD if self.stored_len > 0 && self.stored_len <= self.raw_len => {}
            CODEC_RAW | CODEC_ZSTD => {
                return Err(invalid(format!(
                    "stored length {} does not fit raw length {}",
                    self.stored_len, self.raw_len
                )))
            }
            other => return Err(invalid(format!("unknown codec {other}"))),
        }
        let stored_end = self.offset.checked_add(u64::from(self.stored_len));
        if self.offset < HEADER_LEN + RECORD_HEADER_LEN
            || stored_end.is_none_or(|e| e > end.min(MAX_PACK_BYTES))
        {
            return Err(invalid(format!(
                "offset {} and length {} lie outside the pack",
                self.offset, self.stored_len
            )));
        }
        Ok(())
    }

    /// Where the stored bytes end (only for checked slots).
    pub(crate) fn end(&self) -> u64 {
        self.offset + u64::from(self.stored_len)
    }
}

/// Fault injection at pack writes, for the model-based store test: the
/// armed write fails as on a full disk (`Fail`, the store cleans up as it
/// would), or the process "dies" there (`Crash`: half the bytes are
/// written, nothing is cleaned up, and every later pack write fails until
/// the test drops the store as a kill would).
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Fault {
        Fail,
        Crash,
    }

    thread_local! {
        static ARMED: Cell<Option<(u32, Fault)>> = const { Cell::new(None) };
        static CRASHED: Cell<bool> = const { Cell::new(false) };
    }

    /// The `n`-th pack write from now (0: the next) meets `f`.
    pub(crate) fn arm(n: u32, f: Fault) {
        ARMED.set(Some((n, f)));
        CRASHED.set(false);
    }

    pub(crate) fn disarm() {
        ARMED.set(None);
        CRASHED.set(false);
    }

    pub(crate) fn crashed() -> bool {
        CRASHED.get()
    }

    /// Called before each pack write.
    pub(crate) fn hit() -> Option<Fault> {
        if CRASHED.get() {
            return Some(Fault::Crash);
        }
        match ARMED.get() {
            Some((0, f)) => {
                ARMED.set(None);
                CRASHED.set(f == Fault::Crash);
                Some(f)
            }
            Some((n, f)) => {
                ARMED.set(Some((n - 1, f)));
                None
            }
            None => None,
        }
    }
}

/// Writes `bytes` at `at`, through the test's fault layer.
fn write_at(file: &File, bytes: &[u8], at: u64) -> io::Result<bool> {
    #[cfg(test)]
    match fault::hit() {
        Some(fault::Fault::Fail) => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        Some(fault::Fault::Crash) => {
            let _ = file.write_all_at(&bytes[..bytes.len() / 2], at);
            return Ok(false);
        }
        None => {}
    }
    file.write_all_at(bytes, at).map(|()| true)
}

/// Whether the test's fault layer has "killed" the process.
fn dead() -> bool {
    #[cfg(test)]
    return fault::crashed();
    #[cfg(not(test))]
    false
}

/// An error for a write the test's fault layer "crashed" in: the caller
/// must not clean up (a dead process would not).
fn crashed() -> io::Error {
    io::Error::other("the process crashed here (fault injection)")
}

/// Syncs `file`, through the test's fault layer.
fn sync(file: &File, all: bool) -> io::Result<()> {
    #[cfg(test)]
    match fault::hit() {
        Some(fault::Fault::Fail) => return Err(io::Error::from_raw_os_error(libc::EIO)),
        Some(fault::Fault::Crash) => return Err(crashed()),
        None => {}
    }
    if all {
        file.sync_all()
    } else {
        file.sync_data()
    }
}

/// An open pack being appended to. Writes are unbuffered so that readers
/// see an object as soon as `append` returns.
pub struct PackWriter {
    file: File,
    len: u64,
    /// Bytes the kernel was asked to start writing out (`start_writeback`).
    started: u64,
    entries: Vec<(Id, Slot)>,
}

/// Once this many appended bytes wait in the page cache, the kernel is
/// asked to start writing them out, so that the sync of a commit point
/// finds little left to write.
const WRITEBACK_STEP: u64 = 1 << 20;

/// Asks the kernel to start writing `len` bytes of `file` at `at` to disk,
/// without waiting. A hint: durability still comes from `sync`.
fn start_writeback(file: &File, at: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range only reads the descriptor and numbers.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), at, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, at, len);
}

impl PackWriter {
    pub(crate) fn create(file: File, kind: u8) -> io::Result<PackWriter> {
        if !write_at(&file, &encode_header(kind), 0)? {
            return Err(crashed());
        }
        Ok(PackWriter {
            file,
            len: HEADER_LEN,
            started: 0,
            entries: Vec::new(),
        })
    }

    pub(crate) fn append(
        &mut self,
        id: &Id,
        codec: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> io::Result<Slot> {
        let (rec, slot) = encode_record(self.len, id, codec, raw_len, stored)?;
        match write_at(&self.file, &rec, self.len) {
            Ok(true) => {}
            Ok(false) => return Err(crashed()),
            Err(e) => {
                // A record cut short (a full disk) is given back at once.
                let _ = self.file.set_len(self.len);
                return Err(e);
            }
        }
        self.len += rec.len() as u64;
        self.entries.push((*id, slot));
        if self.len - self.started >= WRITEBACK_STEP {
            start_writeback(&self.file, self.started, self.len - self.started);
            self.started = self.len;
        }
        Ok(slot)
    }

    /// Whether the pack has reached `target` bytes or the object limit.
    pub(crate) fn is_full(&self, target: u64) -> bool {
        self.len >= target || self.entries.len() >= MAX_PACK_OBJECTS
    }

    /// Makes the records appended so far durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        sync(&self.file, false)
    }

    /// Writes the trailer and footer and makes the pack durable. On
    /// failure (a full disk) the partial tail is cut off again and the pack
    /// stays open, to be sealed later.
    pub(crate) fn seal(&self) -> io::Result<()> {
        let done = match write_at(&self.file, &encode_tail(&self.entries, self.len), self.len) {
            Ok(true) => sync(&self.file, true),
            Ok(false) => return Err(crashed()),
            Err(e) => Err(e),
        };
        if done.is_err() && !dead() {
            let _ = self.file.set_len(self.len);
        }
        done
    }

    /// The records appended so far, in order.
    pub(crate) fn entries(&self) -> &[(Id, Slot)] {
        &self.entries
    }

    /// Drops every record from the `keep`-th on, giving their bytes back.
    pub(crate) fn cut(&mut self, keep: usize) -> io::Result<()> {
        let len = match keep.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some((_, slot)) => slot.end(),
            None => HEADER_LEN,
        };
        self.file.set_len(len)?;
        self.entries.truncate(keep);
        self.len = len;
        Ok(())
    }
}

/// A pack built in memory, byte for byte what `PackWriter` writes to a
/// file: remotes hold packs in the same format.
pub struct PackBuf {
    bytes: Vec<u8>,
    entries: Vec<(Id, Slot)>,
}

impl PackBuf {
    pub(crate) fn new(kind: u8) -> PackBuf {
        PackBuf {
            bytes: encode_header(kind).to_vec(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn append(
        &mut self,
        id: &Id,
        codec: u8,
        raw_len: u32,
        stored: &[u8],
    ) -> io::Result<Slot> {
        let (rec, slot) = encode_record(self.bytes.len() as u64, id, codec, raw_len, stored)?;
        self.bytes.extend_from_slice(&rec);
        self.entries.push((*id, slot));
        Ok(slot)
    }

    /// Whether the pack has reached `target` bytes or the object limit.
    pub(crate) fn is_full(&self, target: usize) -> bool {
        self.bytes.len() >= target || self.entries.len() >= MAX_PACK_OBJECTS
    }

    /// Appends the trailer and footer.
    pub(crate) fn seal(mut self) -> (Vec<u8>, Vec<(Id, Slot)>) {
        let tail = encode_tail(&self.entries, self.bytes.len() as u64);
        self.bytes.extend_from_slice(&tail);
        (self.bytes, self.entries)
    }
}

/// The records of a sealed pack (`bytes`, with `entries`) in the other
/// order: the same objects in a pack of another content, and so another
/// name.
pub(crate) fn reversed(kind: u8, bytes: &[u8], entries: &[(Id, Slot)]) -> io::Result<PackBuf> {
    let mut buf = PackBuf::new(kind);
    for (id, slot) in entries.iter().rev() {
        let stored = usize::try_from(slot.offset)
            .ok()
            .and_then(|at| bytes.get(at..at + slot.stored_len as usize))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "slot outside the pack"))?;
        buf.append(id, slot.codec, slot.raw_len, stored)?;
    }
    Ok(buf)
}

fn encode_header(kind: u8) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12] = kind;
    h
}

/// One record placed at `at`, and the slot of its stored bytes.
fn encode_record(
    at: u64,
    id: &Id,
    codec: u8,
    raw_len: u32,
    stored: &[u8],
) -> io::Result<(Vec<u8>, Slot)> {
    let stored_len = u32::try_from(stored.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "object over 4 GiB"))?;
    let mut rec = Vec::with_capacity(RECORD_HEADER_LEN as usize + stored.len());
    rec.extend_from_slice(&id.0);
    rec.push(codec);
    rec.extend_from_slice(&stored_len.to_le_bytes());
    rec.extend_from_slice(&raw_len.to_le_bytes());
    rec.extend_from_slice(stored);
    let slot = Slot {
        offset: at + RECORD_HEADER_LEN,
        stored_len,
        raw_len,
        codec,
    };
    Ok((rec, slot))
}

/// The trailer and footer of a pack whose records end at `len`.
fn encode_tail(entries: &[(Id, Slot)], len: u64) -> Vec<u8> {
    let trailer = encode_trailer(entries);
    let mut tail = trailer.clone();
    tail.extend_from_slice(&len.to_le_bytes());
    tail.extend_from_slice(blake3::hash(&trailer).as_bytes());
    tail.extend_from_slice(END_MAGIC);
    tail
}

thread_local! {
    /// One zstd context per thread for each direction: making one per
    /// object cost a few percent of re-chunking a database's pages.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `raw` compressed with zstd at `level`, in this thread's context.
pub(crate) fn zstd(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(level)?),
        };
        c.set_compression_level(level)?;
        c.compress(raw)
    })
}

/// A zstd frame of at most `capacity` bytes decompressed, in this
/// thread's context.
fn unzstd(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        let d = match d {
            Some(d) => d,
            None => d.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(stored, capacity)
    })
}

/// Recovers an object's raw bytes from its stored form (borrowed when
/// stored raw). Nothing larger than the biggest object of any kind is
/// allocated, whatever `raw_len` claims. The caller checks the id.
pub(crate) fn decode_stored(
    codec: u8,
    raw_len: u32,
    stored: &[u8],
) -> Result<Cow<'_, [u8]>, DecodeError> {
    if raw_len > MAX_CHUNK {
        return Err(invalid(format!("raw length {raw_len} is over the limit")));
    }
    let raw = match codec {
        CODEC_RAW => Cow::Borrowed(stored),
        CODEC_ZSTD => Cow::Owned(
            unzstd(stored, raw_len as usize)
                .map_err(|e| invalid(format!("cannot decompress: {e}")))?,
        ),
        other => return Err(invalid(format!("unknown codec {other}"))),
    };
    if raw.len() != raw_len as usize {
        return Err(invalid("length does not match the record"));
    }
    Ok(raw)
}

/// Decodes an object's stored bytes (as `decode_stored`) and checks that
/// they hash to `id`: every read of an object, local or remote, ends here.
pub(crate) fn decode_checked<'a>(
    id: &Id,
    slot: &Slot,
    stored: &'a [u8],
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let raw = decode_stored(slot.codec, slot.raw_len, stored)?;
    if Id::of(&raw) != *id {
        return Err(invalid("content does not match its id"));
    }
    Ok(raw)
}

fn encode_trailer(entries: &[(Id, Slot)]) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + entries.len() * TRAILER_ENTRY_LEN);
    t.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, s) in entries {
        t.extend_from_slice(&id.0);
        s.encode(&mut t);
    }
    t
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// Why a pack file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Damaged(#[from] DecodeError),
}

/// The kind a pack header names, after checking magic and version.
pub(crate) fn decode_header(header: &[u8]) -> Result<Kind, DecodeError> {
    if header.len() < HEADER_LEN as usize || &header[..8] != MAGIC {
        return Err(invalid("bad magic"));
    }
    let version = le_u32(&header[8..12]);
    if version != VERSION {
        return Err(invalid(format!("unknown pack version {version}")));
    }
    Kind::from_u8(header[12]).ok_or_else(|| invalid(format!("unknown pack kind {}", header[12])))
}

/// Reads and checks a sealed pack's header, footer and trailer, and that
/// every trailer entry matches the record header in front of its bytes.
/// Returns the pack's kind and its objects.
pub(crate) fn read_trailer(file: &File) -> Result<(Kind, Vec<(Id, Slot)>), PackError> {
    let size = file.metadata()?.len();
    if size < HEADER_LEN + FOOTER_LEN {
        return Err(invalid("too short to be a sealed pack").into());
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    let kind = decode_header(&header)?;
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut footer, size - FOOTER_LEN)?;
    let trailer_at = footer_trailer_offset(&footer, size)?;
    let mut trailer = vec![0u8; (size - FOOTER_LEN - trailer_at) as usize];
    file.read_exact_at(&mut trailer, trailer_at)?;
    let entries = decode_trailer(kind, &footer, &trailer, trailer_at)?;
    for (id, slot) in &entries {
        let mut rec = [0u8; RECORD_HEADER_LEN as usize];
        file.read_exact_at(&mut rec, slot.offset - RECORD_HEADER_LEN)?;
        if rec[..ID_LEN] != id.0
            || rec[32] != slot.codec
            || le_u32(&rec[33..37]) != slot.stored_len
            || le_u32(&rec[37..41]) != slot.raw_len
        {
            return Err(invalid(format!(
                "record header of {} disagrees with the trailer",
                id.short()
            ))
            .into());
        }
    }
    Ok((kind, entries))
}

/// Seals a pack a killed process left open: keeps the records from the
/// header on while they are whole (an object `trusted` names at its slot
/// was synced before it was indexed and is kept as it is; any other must
/// decode to its id), cuts the file after the last one kept, and writes the
/// trailer and footer. Returns the objects kept. With `give_back`, records
/// after the last trusted one are not kept either: no commit point
/// recorded them, so nothing refers to them.
pub(crate) fn recover(
    file: &File,
    trusted: &dyn Fn(&Id, &Slot) -> bool,
    give_back: bool,
) -> Result<Vec<(Id, Slot)>, PackError> {
    let size = file.metadata()?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)?;
    let kind = decode_header(&header)?;
    let mut entries = Vec::new();
    let mut last_trusted = 0;
    let mut pos = HEADER_LEN;
    while pos + RECORD_HEADER_LEN <= size && entries.len() < MAX_PACK_OBJECTS {
        let mut rec = [0u8; RECORD_HEADER_LEN as usize];
        file.read_exact_at(&mut rec, pos)?;
        let id = Id::from_slice(&rec[..ID_LEN]).expect("id bytes");
        let slot = Slot {
            offset: pos + RECORD_HEADER_LEN,
            stored_len: le_u32(&rec[33..37]),
            raw_len: le_u32(&rec[37..41]),
            codec: rec[32],
        };
        if slot.check(kind, size).is_err() {
            break;
        }
        if trusted(&id, &slot) {
            last_trusted = entries.len() + 1;
        } else {
            let mut stored = vec![0u8; slot.stored_len as usize];
            file.read_exact_at(&mut stored, slot.offset)?;
            if decode_checked(&id, &slot, &stored).is_err() {
                break;
            }
        }
        entries.push((id, slot));
        pos = slot.end();
    }
    if give_back {
        entries.truncate(last_trusted);
        pos = entries.last().map_or(HEADER_LEN, |(_, slot)| slot.end());
    }
    file.set_len(pos)?;
    file.write_all_at(&encode_tail(&entries, pos), pos)?;
    file.sync_all()?;
    Ok(entries)
}

/// Where the trailer of a pack of `size` bytes begins, from its footer.
/// A trailer longer than `MAX_PACK_OBJECTS` entries is refused before it
/// is read.
pub(crate) fn footer_trailer_offset(footer: &[u8], size: u64) -> Result<u64, DecodeError> {
    if footer.len() != FOOTER_LEN as usize || &footer[40..] != END_MAGIC {
        return Err(invalid("no trailer: the pack was never sealed"));
    }
    let trailer_at = le_u64(&footer[..8]);
    let max_trailer = 4 + (MAX_PACK_OBJECTS * TRAILER_ENTRY_LEN) as u64;
    if size > MAX_PACK_BYTES
        || trailer_at < HEADER_LEN
        || trailer_at > size - FOOTER_LEN
        || size - FOOTER_LEN - trailer_at > max_trailer
    {
        return Err(invalid("trailer offset out of range"));
    }
    Ok(trailer_at)
}

/// Checks a trailer against its footer's checksum and decodes its entries,
/// each checked (`Slot::check`) to lie before `trailer_at`.
pub(crate) fn decode_trailer(
    kind: Kind,
    footer: &[u8],
    trailer: &[u8],
    trailer_at: u64,
) -> Result<Vec<(Id, Slot)>, DecodeError> {
    if footer.len() != FOOTER_LEN as usize || blake3::hash(trailer).as_bytes() != &footer[8..40] {
        return Err(invalid("trailer checksum mismatch"));
    }
    let count = trailer
        .get(..4)
        .map(le_u32)
        .ok_or_else(|| invalid("trailer truncated"))? as usize;
    if count > MAX_PACK_OBJECTS || trailer.len() != 4 + count * TRAILER_ENTRY_LEN {
        return Err(invalid("trailer length does not match its entry count"));
    }
    let mut entries = Vec::with_capacity(count);
    for e in trailer[4..].chunks_exact(TRAILER_ENTRY_LEN) {
        let id = Id::from_slice(&e[..ID_LEN]).expect("id bytes");
        let slot = Slot::decode(&e[ID_LEN..])?;
        slot.check(kind, trailer_at)
            .map_err(|why| invalid(format!("entry {}: {why}", id.short())))?;
        entries.push((id, slot));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_track::largest_allocation;
    use proptest::prelude::*;

    #[test]
    fn sealed_pack_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut w = PackWriter::create(File::create(&path).unwrap(), 0).unwrap();
        let a = Id::of(b"a");
        let s = w.append(&a, CODEC_RAW, 1, b"a").unwrap();
        w.seal().unwrap();
        let f = File::open(&path).unwrap();
        let (kind, entries) = read_trailer(&f).unwrap();
        assert_eq!(kind, Kind::Chunk);
        assert_eq!(entries, vec![(a, s)]);
        let mut buf = [0u8; 1];
        f.read_exact_at(&mut buf, s.offset).unwrap();
        assert_eq!(&buf, b"a");
    }

    #[test]
    fn golden_pack_bytes() {
        // Pins the pack layout byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut w = PackWriter::create(File::create(&path).unwrap(), 1).unwrap();
        w.append(&Id::of(b"x"), CODEC_RAW, 1, b"x").unwrap();
        w.seal().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 16 + 41 + 1 + 4 + 49 + 48);
        assert_eq!(&bytes[..16], b"DOTPACK\0\x01\0\0\0\x01\0\0\0");
        assert_eq!(&bytes[16..48], &Id::of(b"x").0);
        assert_eq!(&bytes[48..57], &[0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(bytes[57], b'x');
        assert_eq!(&bytes[bytes.len() - 8..], b"DOTPEND\0");
        assert_eq!(crate::id::Id::of(&bytes).short(), "c1b681c9f1ea");
    }

    #[test]
    fn tampered_trailer_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let mut w = PackWriter::create(File::create(&path).unwrap(), 0).unwrap();
        w.append(&Id::of(b"a"), CODEC_RAW, 1, b"a").unwrap();
        w.seal().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 60] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_trailer(&File::open(&path).unwrap()).is_err());
    }

    fn slot(offset: u64, stored_len: u32, raw_len: u32, codec: u8) -> Slot {
        Slot {
            offset,
            stored_len,
            raw_len,
            codec,
        }
    }

    #[test]
    fn slot_rules() {
        let at = HEADER_LEN + RECORD_HEADER_LEN;
        assert!(slot(at, 6, 6, CODEC_RAW).check(Kind::Chunk, 100).is_ok());
        assert!(slot(at, 5, 9, CODEC_ZSTD).check(Kind::Meta, 100).is_ok());
        // A raw length of 4 GiB, or over the kind's limit.
        assert!(slot(at, 5, u32::MAX, CODEC_ZSTD)
            .check(Kind::Chunk, u64::MAX)
            .is_err());
        assert!(slot(at, 5, MAX_META + 1, CODEC_ZSTD)
            .check(Kind::Meta, u64::MAX)
            .is_err());
        assert!(slot(at, 5, MAX_META + 1, CODEC_ZSTD)
            .check(Kind::Chunk, u64::MAX)
            .is_ok());
        // An offset near 2^64 does not wrap.
        assert!(slot(u64::MAX - 2, 6, 6, CODEC_RAW)
            .check(Kind::Chunk, u64::MAX)
            .is_err());
        assert!(slot(at, 6, 6, CODEC_RAW)
            .check(Kind::Chunk, at + 5)
            .is_err());
        assert!(slot(0, 6, 6, CODEC_RAW).check(Kind::Chunk, 100).is_err());
        assert!(slot(at, 5, 6, CODEC_RAW).check(Kind::Chunk, 100).is_err());
        assert!(slot(at, 7, 6, CODEC_ZSTD).check(Kind::Chunk, 100).is_err());
        assert!(slot(at, 6, 6, 2).check(Kind::Chunk, 100).is_err());
        assert!(slot(at, 0, 0, CODEC_RAW).check(Kind::Chunk, 100).is_err());
        let mut b = Vec::new();
        let s = slot(at, 5, 9, CODEC_ZSTD);
        s.encode(&mut b);
        assert_eq!(b.len(), SLOT_LEN);
        assert_eq!(Slot::decode(&b).unwrap(), s);
    }

    #[test]
    fn a_zstd_bomb_stops_at_the_claimed_length() {
        let raw = vec![0u8; 8 << 20];
        let z = zstd::bulk::compress(&raw, 3).unwrap();
        assert!(decode_stored(CODEC_ZSTD, 1000, &z).is_err());
        let (r, largest) = largest_allocation(|| decode_stored(CODEC_ZSTD, u32::MAX, &z));
        assert!(r.is_err());
        assert!(largest < 1 << 20, "allocated {largest} bytes");
    }

    proptest! {
        #[test]
        fn decoders_never_panic_or_overallocate(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            raw_len: u32,
            codec in 0u8..3,
            at: u64,
        ) {
            let (_, largest) = largest_allocation(|| {
                let _ = decode_stored(codec, raw_len, &bytes);
                let _ = decode_header(&bytes);
                let _ = Slot::decode(&bytes).map(|s| s.check(Kind::Meta, at));
                if bytes.len() >= FOOTER_LEN as usize {
                    let (trailer, footer) = bytes.split_at(bytes.len() - FOOTER_LEN as usize);
                    let _ = footer_trailer_offset(footer, at);
                    let _ = decode_trailer(Kind::Chunk, footer, trailer, at);
                }
            });
            prop_assert!(largest <= (MAX_CHUNK as usize).max(4 * bytes.len() + 1024));
        }

        #[test]
        fn any_pack_file_reads_or_fails_cleanly(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            count: u32,
            trailer_at: u64,
        ) {
            // A pack-shaped file whose trailer count and offset are arbitrary,
            // with a footer whose checksum matches the bytes it points at.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            let mut bytes = encode_header(0).to_vec();
            bytes.extend_from_slice(&body);
            let t_at = (trailer_at % (bytes.len() as u64 + 1)).max(HEADER_LEN);
            let mut trailer = count.to_le_bytes().to_vec();
            trailer.extend_from_slice(&body[..body.len().min(98)]);
            bytes.truncate(t_at as usize);
            bytes.resize(t_at as usize, 0);
            bytes.extend_from_slice(&trailer);
            bytes.extend_from_slice(&t_at.to_le_bytes());
            bytes.extend_from_slice(blake3::hash(&trailer).as_bytes());
            bytes.extend_from_slice(END_MAGIC);
            std::fs::write(&path, &bytes).unwrap();
            let (_, largest) = largest_allocation(|| read_trailer(&File::open(&path).unwrap()));
            prop_assert!(largest < 1 << 16);
        }
    }
}
