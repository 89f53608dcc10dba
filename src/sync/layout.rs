//! What a remote holds, byte for byte (docs/design.md, "Remotes"):
//!
//! ```text
//! packs/<blake3 of the file, hex>.pack   packs in the local pack format
//! index/<blake3 of the file, hex>.idx    which objects a push added, and where
//! refs/<dot, / as +>/<branch>/<generation, 20 digits>   a branch's values
//! ```
//!
//! Packs and index files are immutable and named by their content, so a
//! reader verifies them by name. A branch is a sequence of ref objects,
//! each created only if absent: the newest generation is its value, and a
//! push that finds its generation taken has lost a race and changes nothing.

use crate::chunker::ChunkParams;
use crate::codec::DecodeError;
use crate::id::{CommitId, Id, ID_LEN};
use crate::store::pack::{Slot, MAX_PACK_BYTES, SLOT_LEN};
use crate::store::Kind;

pub const INDEX_MAGIC: &[u8; 8] = b"DOTRIDX\0";
pub const INDEX_VERSION: u32 = 1;
const INDEX_ENTRY_LEN: usize = ID_LEN + 4 + SLOT_LEN + 1;
const REF_HEADER: &str = "dot ref 1";
/// No index file names more objects or packs; a push writes several
/// when it adds more.
pub const MAX_INDEX_OBJECTS: usize = 1 << 20;
/// No index file is larger, so none is read past this.
pub const MAX_INDEX_BYTES: u64 =
    (20 + MAX_INDEX_OBJECTS * ID_LEN + MAX_INDEX_OBJECTS * INDEX_ENTRY_LEN) as u64;
/// No ref object is larger.
pub const MAX_REF_BYTES: u64 = 4096;

pub(crate) fn pack_path(id: &Id) -> String {
    format!("packs/{}.pack", id.to_hex())
}

pub(crate) fn index_path(id: &Id) -> String {
    format!("index/{}.idx", id.to_hex())
}

/// The id a `packs/` or `index/` path names, if it is one.
pub(crate) fn named_id(path: &str, dir: &str, ext: &str) -> Option<Id> {
    let name = path
        .strip_prefix(dir)?
        .strip_prefix('/')?
        .strip_suffix(ext)?;
    Id::from_hex(name).filter(|_| name.len() == 2 * ID_LEN)
}

pub(crate) fn ref_dir(dot: &str, branch: &str) -> String {
    format!("refs/{}/{branch}/", dot.replace('/', "+"))
}

pub(crate) fn ref_path(dot: &str, branch: &str, generation: u64) -> String {
    format!("{}{generation:020}", ref_dir(dot, branch))
}

/// The generation a ref object's name says: exactly 20 ASCII digits that
/// fit in a u64.
pub(crate) fn generation(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// A branch's value on a remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRef {
    pub commit: CommitId,
    /// The dot's chunk sizes, so a clone chunks new data the same way and
    /// its commits share chunks with the original's.
    pub chunking: ChunkParams,
}

impl RemoteRef {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let c = &self.chunking;
        format!(
            "{REF_HEADER}\ncommit {}\nchunking {} {} {}\n",
            self.commit.0.to_hex(),
            c.min,
            c.avg,
            c.max
        )
        .into_bytes()
    }

    /// Decodes a ref; only the exact bytes `encode` gives are accepted.
    pub(crate) fn decode(bytes: &[u8]) -> Option<RemoteRef> {
        let r = Self::parse(bytes)?;
        (r.encode() == bytes).then_some(r)
    }

    fn parse(bytes: &[u8]) -> Option<RemoteRef> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != REF_HEADER {
            return None;
        }
        let commit = CommitId(Id::from_hex(lines.next()?.strip_prefix("commit ")?)?);
        let sizes: Vec<u32> = lines
            .next()?
            .strip_prefix("chunking ")?
            .split(' ')
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        let [min, avg, max] = sizes[..] else {
            return None;
        };
        let chunking = ChunkParams { min, avg, max };
        chunking.validate().ok()?;
        Some(RemoteRef { commit, chunking })
    }
}

/// Where one object lives on a remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub pack: Id,
    pub slot: Slot,
    pub kind: Kind,
}

impl Located {
    pub const LEN: usize = ID_LEN + SLOT_LEN + 1;

    /// Where each of a pack's trailer entries lives: in pack `pack`.
    pub(crate) fn in_pack(
        pack: Id,
        kind: Kind,
        entries: Vec<(Id, Slot)>,
    ) -> impl Iterator<Item = (Id, Located)> {
        entries
            .into_iter()
            .map(move |(id, slot)| (id, Located { pack, slot, kind }))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.extend_from_slice(&self.pack.0);
        self.slot.encode(&mut v);
        v.push(self.kind as u8);
        v
    }

    /// Decodes and checks (`Slot::check`) a location.
    pub(crate) fn decode(b: &[u8]) -> Option<Located> {
        if b.len() != Self::LEN {
            return None;
        }
        let kind = Kind::from_u8(b[Self::LEN - 1])?;
        let slot = Slot::decode(&b[ID_LEN..]).ok()?;
        slot.check(kind, MAX_PACK_BYTES).ok()?;
        Some(Located {
            pack: Id::from_slice(&b[..ID_LEN])?,
            slot,
            kind,
        })
    }
}

/// An index file: the packs a push used and every object it added.
///
/// ```text
/// "DOTRIDX\0" | version u32 = 1 | pack count u32 | pack ids [32] each
/// object count u32 | per object, sorted by id:
///   id [32] | pack number u32 | offset u64 | stored_len u32 | raw_len u32 | codec u8 | kind u8
/// ```
pub(crate) fn encode_index(objects: &mut [(Id, Located)]) -> Vec<u8> {
    objects.sort_by_key(|(id, _)| *id);
    let mut packs: Vec<Id> = objects.iter().map(|(_, l)| l.pack).collect();
    packs.sort();
    packs.dedup();
    let mut out = Vec::with_capacity(20 + packs.len() * 32 + objects.len() * INDEX_ENTRY_LEN);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in &packs {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(&(objects.len() as u32).to_le_bytes());
    for (id, l) in objects.iter() {
        let n = packs.binary_search(&l.pack).expect("pack listed") as u32;
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&n.to_le_bytes());
        l.slot.encode(&mut out);
        out.push(l.kind as u8);
    }
    out
}

/// The packs an index file lists and the objects it names.
pub type Index = (Vec<Id>, Vec<(Id, Located)>);

/// Decodes an index file (whose name the caller has checked) and checks
/// it: at most `MAX_INDEX_OBJECTS` packs and objects, packs and objects
/// sorted and unique, every object in a listed pack, every slot within
/// the format's limits (`Slot::check`).
pub(crate) fn decode_index(b: &[u8]) -> Result<Index, DecodeError> {
    let invalid = |why: String| DecodeError::Invalid(why);
    let u32_at = |at: usize| -> Result<usize, DecodeError> {
        at.checked_add(4)
            .and_then(|end| b.get(at..end))
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
            .ok_or(DecodeError::Truncated(at))
    };
    if b.get(..8) != Some(INDEX_MAGIC) {
        return Err(invalid("not a dot index file".into()));
    }
    let version = u32_at(8)?;
    if version != INDEX_VERSION as usize {
        return Err(invalid(format!(
            "index format version {version} is newer than this dot understands; upgrade dot"
        )));
    }
    let npacks = u32_at(12)?;
    if npacks > MAX_INDEX_OBJECTS {
        return Err(invalid(format!("lists {npacks} packs")));
    }
    let packs_end = 16 + npacks * ID_LEN;
    let packs: Vec<Id> = b
        .get(16..packs_end)
        .ok_or(DecodeError::Truncated(16))?
        .chunks_exact(ID_LEN)
        .map(|c| Id::from_slice(c).expect("32 bytes"))
        .collect();
    if !packs.windows(2).all(|w| w[0] < w[1]) {
        return Err(invalid("packs are not sorted and unique".into()));
    }
    let n = u32_at(packs_end)?;
    let at = packs_end + 4;
    if n > MAX_INDEX_OBJECTS || b.len() != at + n * INDEX_ENTRY_LEN {
        return Err(invalid("length does not match its object count".into()));
    }
    let mut objects: Vec<(Id, Located)> = Vec::with_capacity(n);
    for e in b[at..].chunks_exact(INDEX_ENTRY_LEN) {
        let id = Id::from_slice(&e[..ID_LEN]).expect("32 bytes");
        if objects.last().is_some_and(|(last, _)| *last >= id) {
            return Err(invalid("objects are not sorted and unique".into()));
        }
        let pack = *packs
            .get(u32::from_le_bytes(e[32..36].try_into().expect("4")) as usize)
            .ok_or_else(|| invalid("object names a pack the file does not list".into()))?;
        let kind = Kind::from_u8(e[INDEX_ENTRY_LEN - 1])
            .ok_or_else(|| invalid("unknown object kind".into()))?;
        let slot = Slot::decode(&e[36..])?;
        slot.check(kind, MAX_PACK_BYTES)
            .map_err(|why| invalid(format!("object {}: {why}", id.short())))?;
        objects.push((id, Located { pack, slot, kind }));
    }
    Ok((packs, objects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_track::largest_allocation;
    use proptest::prelude::*;

    fn sample_index() -> Vec<u8> {
        let mut objects: Vec<(Id, Located)> = (0..5u8)
            .map(|i| {
                let loc = Located {
                    pack: Id::of(&[i % 2]),
                    slot: Slot {
                        offset: 57 + u64::from(i) * 100,
                        stored_len: 10,
                        raw_len: 20,
                        codec: 1,
                    },
                    kind: if i % 2 == 0 { Kind::Chunk } else { Kind::Meta },
                };
                (Id::of(&[i, 9]), loc)
            })
            .collect();
        encode_index(&mut objects)
    }

    proptest! {
        #[test]
        fn any_index_file_decodes_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (_, largest) = largest_allocation(|| decode_index(&bytes));
            prop_assert!(largest <= 64 * bytes.len() + 1024);
        }

        #[test]
        fn a_damaged_index_file_fails_cleanly(
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut b = sample_index();
            for (at, v) in flips {
                let i = at.index(b.len());
                b[i] = v;
            }
            let _ = decode_index(&b);
            let n = cut.index(b.len());
            prop_assert!(decode_index(&b[..n]).is_err());
        }

        #[test]
        fn any_ref_or_location_decodes_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(r) = RemoteRef::decode(&bytes) {
                prop_assert_eq!(r.encode(), bytes.clone());
            }
            let _ = Located::decode(&bytes);
        }

        #[test]
        fn refs_accept_only_their_encoding(text in "dot ref 1\ncommit [0-9a-f]{64}\nchunking [0-9]{1,8} [0-9]{1,8} [0-9]{1,8}\n?.{0,3}") {
            if let Some(r) = RemoteRef::decode(text.as_bytes()) {
                prop_assert_eq!(r.encode(), text.as_bytes().to_vec());
            }
        }
    }

    #[test]
    fn golden_ref_and_index_bytes() {
        let r = RemoteRef {
            commit: CommitId(Id::of(b"c")),
            chunking: ChunkParams::default(),
        };
        let bytes = r.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!(
                "dot ref 1\ncommit {}\nchunking 16384 65536 262144\n",
                Id::of(b"c").to_hex()
            )
        );
        assert_eq!(RemoteRef::decode(&bytes), Some(r));
        assert_eq!(RemoteRef::decode(b"dot ref 2\n"), None);

        let loc = Located {
            pack: Id::of(b"p"),
            slot: Slot {
                offset: 57,
                stored_len: 3,
                raw_len: 5,
                codec: 1,
            },
            kind: Kind::Meta,
        };
        let mut objects = vec![(Id::of(b"x"), loc)];
        let idx = encode_index(&mut objects);
        assert_eq!(idx.len(), 8 + 4 + 4 + 32 + 4 + INDEX_ENTRY_LEN);
        assert_eq!(&idx[..16], b"DOTRIDX\0\x01\0\0\0\x01\0\0\0");
        assert_eq!(Id::of(&idx).short(), "b6bc727ad760");
        assert_eq!(decode_index(&idx).unwrap(), (vec![loc.pack], objects));
        assert!(decode_index(&idx[..idx.len() - 1]).is_err());
        assert_eq!(Located::decode(&loc.encode()), Some(loc));
    }

    #[test]
    fn paths() {
        let id = Id::of(b"p");
        assert_eq!(named_id(&pack_path(&id), "packs", ".pack"), Some(id));
        assert_eq!(named_id("packs/xyz.pack", "packs", ".pack"), None);
        assert_eq!(
            ref_path("team/app", "master", 7),
            "refs/team+app/master/00000000000000000007"
        );
    }
}
