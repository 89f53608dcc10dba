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
//! `offset` is where a record's stored bytes begin.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::id::{Id, ID_LEN};

pub const MAGIC: &[u8; 8] = b"DOTPACK\0";
pub const END_MAGIC: &[u8; 8] = b"DOTPEND\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = ID_LEN as u64 + 1 + 4 + 4;
const TRAILER_ENTRY_LEN: usize = ID_LEN + 8 + 4 + 4 + 1;
pub const FOOTER_LEN: u64 = 8 + 32 + 8;

/// Stored bytes are raw.
pub const CODEC_RAW: u8 = 0;
/// Stored bytes are one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// Where one object lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub codec: u8,
}

/// An open pack being appended to. Writes are unbuffered so that readers
/// see an object as soon as `append` returns.
pub struct PackWriter {
    pub file: File,
    pub len: u64,
    entries: Vec<(Id, Slot)>,
}

impl PackWriter {
    pub fn create(file: File, kind: u8) -> io::Result<PackWriter> {
        file.write_all_at(&encode_header(kind), 0)?;
        Ok(PackWriter {
            file,
            len: HEADER_LEN,
            entries: Vec::new(),
        })
    }

    pub fn append(&mut self, id: &Id, codec: u8, raw_len: u32, stored: &[u8]) -> io::Result<Slot> {
        let (rec, slot) = encode_record(self.len, id, codec, raw_len, stored)?;
        self.file.write_all_at(&rec, self.len)?;
        self.len += rec.len() as u64;
        self.entries.push((*id, slot));
        Ok(slot)
    }

    /// Writes the trailer and footer and makes the pack durable.
    pub fn seal(self) -> io::Result<()> {
        self.file
            .write_all_at(&encode_tail(&self.entries, self.len), self.len)?;
        self.file.sync_all()
    }
}

/// A pack built in memory, byte for byte what `PackWriter` writes to a
/// file: remotes hold packs in the same format.
pub struct PackBuf {
    pub bytes: Vec<u8>,
    pub entries: Vec<(Id, Slot)>,
}

impl PackBuf {
    pub fn new(kind: u8) -> PackBuf {
        PackBuf {
            bytes: encode_header(kind).to_vec(),
            entries: Vec::new(),
        }
    }

    pub fn append(&mut self, id: &Id, codec: u8, raw_len: u32, stored: &[u8]) -> io::Result<Slot> {
        let (rec, slot) = encode_record(self.bytes.len() as u64, id, codec, raw_len, stored)?;
        self.bytes.extend_from_slice(&rec);
        self.entries.push((*id, slot));
        Ok(slot)
    }

    /// Appends the trailer and footer.
    pub fn seal(mut self) -> (Vec<u8>, Vec<(Id, Slot)>) {
        let tail = encode_tail(&self.entries, self.bytes.len() as u64);
        self.bytes.extend_from_slice(&tail);
        (self.bytes, self.entries)
    }
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

/// Recovers an object's raw bytes from its stored form (borrowed when
/// stored raw). The caller checks the id.
pub fn decode_stored(codec: u8, raw_len: u32, stored: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let raw = match codec {
        CODEC_RAW => Cow::Borrowed(stored),
        CODEC_ZSTD => Cow::Owned(
            zstd::bulk::decompress(stored, raw_len as usize)
                .map_err(|e| format!("cannot decompress: {e}"))?,
        ),
        other => return Err(format!("unknown codec {other}")),
    };
    if raw.len() != raw_len as usize {
        return Err("length does not match the record".into());
    }
    Ok(raw)
}

fn encode_trailer(entries: &[(Id, Slot)]) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + entries.len() * TRAILER_ENTRY_LEN);
    t.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, s) in entries {
        t.extend_from_slice(&id.0);
        t.extend_from_slice(&s.offset.to_le_bytes());
        t.extend_from_slice(&s.stored_len.to_le_bytes());
        t.extend_from_slice(&s.raw_len.to_le_bytes());
        t.push(s.codec);
    }
    t
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("8 bytes"))
}

/// Reads and checks a sealed pack's header, footer and trailer, and that
/// every trailer entry matches the record header in front of its bytes.
/// Returns the pack's kind byte and its objects.
pub fn read_trailer(file: &File) -> Result<(u8, Vec<(Id, Slot)>), String> {
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    if size < HEADER_LEN + FOOTER_LEN {
        return Err("too short to be a sealed pack".into());
    }
    let mut header = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| e.to_string())?;
    if &header[..8] != MAGIC {
        return Err("bad magic".into());
    }
    if le_u32(&header[8..12]) != VERSION {
        return Err(format!("unknown pack version {}", le_u32(&header[8..12])));
    }
    let kind = header[12];
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact_at(&mut footer, size - FOOTER_LEN)
        .map_err(|e| e.to_string())?;
    let trailer_at = footer_trailer_offset(&footer, size)?;
    let mut trailer = vec![0u8; (size - FOOTER_LEN - trailer_at) as usize];
    file.read_exact_at(&mut trailer, trailer_at)
        .map_err(|e| e.to_string())?;
    let entries = decode_trailer(&footer, &trailer, trailer_at)?;
    for (id, slot) in &entries {
        let mut rec = [0u8; RECORD_HEADER_LEN as usize];
        file.read_exact_at(&mut rec, slot.offset - RECORD_HEADER_LEN)
            .map_err(|e| e.to_string())?;
        if rec[..ID_LEN] != id.0
            || rec[32] != slot.codec
            || le_u32(&rec[33..37]) != slot.stored_len
            || le_u32(&rec[37..41]) != slot.raw_len
        {
            return Err(format!(
                "record header of {} disagrees with the trailer",
                id.short()
            ));
        }
    }
    Ok((kind, entries))
}

/// Where the trailer of a pack of `size` bytes begins, from its footer.
pub fn footer_trailer_offset(footer: &[u8], size: u64) -> Result<u64, String> {
    if footer.len() != FOOTER_LEN as usize || &footer[40..] != END_MAGIC {
        return Err("no trailer: the pack was never sealed".into());
    }
    let trailer_at = le_u64(&footer[..8]);
    if trailer_at < HEADER_LEN || trailer_at > size - FOOTER_LEN {
        return Err("trailer offset out of range".into());
    }
    Ok(trailer_at)
}

/// Checks a trailer against its footer's checksum and decodes its entries,
/// which must all lie before `trailer_at`.
pub fn decode_trailer(
    footer: &[u8],
    trailer: &[u8],
    trailer_at: u64,
) -> Result<Vec<(Id, Slot)>, String> {
    if blake3::hash(trailer).as_bytes() != &footer[8..40] {
        return Err("trailer checksum mismatch".into());
    }
    if trailer.len() < 4 {
        return Err("trailer truncated".into());
    }
    let count = le_u32(&trailer[..4]) as usize;
    if trailer.len() != 4 + count * TRAILER_ENTRY_LEN {
        return Err("trailer length does not match its entry count".into());
    }
    let mut entries = Vec::with_capacity(count);
    for e in trailer[4..].chunks_exact(TRAILER_ENTRY_LEN) {
        let id = Id::from_slice(&e[..ID_LEN]).expect("id bytes");
        let slot = Slot {
            offset: le_u64(&e[32..40]),
            stored_len: le_u32(&e[40..44]),
            raw_len: le_u32(&e[44..48]),
            codec: e[48],
        };
        if slot.offset < HEADER_LEN + RECORD_HEADER_LEN
            || slot.offset + u64::from(slot.stored_len) > trailer_at
        {
            return Err(format!("entry {} points outside the pack", id.short()));
        }
        entries.push((id, slot));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(kind, 0);
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
}
