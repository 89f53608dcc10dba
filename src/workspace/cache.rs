//! The stat cache: for each file of a plain working directory, the stat
//! data it had when dot last read or wrote it and the content it had then.
//! A file whose stat data still match is not read again.
//!
//! Same-timestamp races (a write in the same clock tick as dot's read leaves
//! mtime unchanged) are handled as git does: an entry is trusted only if the
//! file's mtime or ctime is older than the moment the entry was recorded by
//! more than the timestamp granularity. Any later write moves both to the
//! present, so it cannot go unnoticed.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::codec::{Reader, Writer};
use crate::store::{Space, Store};
use crate::tree::chunks::ContentRef;

const ENTRY_VERSION: u8 = 1;

/// The stat fields that identify a file's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Stat {
    pub fn of(md: &Metadata) -> Stat {
        Stat {
            size: md.size(),
            mtime_ns: ns(md.mtime(), md.mtime_nsec()),
            ctime_ns: ns(md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
        }
    }
}

/// Seconds and nanoseconds as nanoseconds since the epoch, saturating
/// for times past the year 2262 (a file may carry any timestamp).
pub fn ns(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// How far apart two writes must be to get different timestamps. Files with
/// sub-second timestamps live on filesystems with (coarse) nanosecond clocks;
/// whole-second ones may be on filesystems with 1 or 2 second granularity.
fn granularity_ns(st: &Stat) -> i64 {
    if st.mtime_ns % 1_000_000_000 == 0 && st.ctime_ns % 1_000_000_000 == 0 {
        2_000_000_000
    } else {
        100_000_000
    }
}

/// The cache of one subdot's working directory.
pub struct StatCache<'a> {
    store: &'a Store,
    prefix: Vec<u8>,
}

impl<'a> StatCache<'a> {
    /// `prefix` must be unique to the working directory and end in a byte
    /// that cannot start a path (dot uses `<dot>\0<subdot>\0`).
    pub fn new(store: &'a Store, prefix: Vec<u8>) -> StatCache<'a> {
        StatCache { store, prefix }
    }

    pub fn key(&self, rel: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(rel);
        k
    }

    /// The content a file had when recorded, if its stat data still match
    /// and the entry is not racy.
    pub fn lookup(&self, rel: &[u8], st: &Stat) -> crate::store::Result<Option<ContentRef>> {
        let Some(v) = self.store.get_kv(Space::Cache, &self.key(rel))? else {
            return Ok(None);
        };
        // A malformed entry is only a cache miss.
        Ok(decode(&v).and_then(|(cached, recorded, content)| {
            let settled = recorded.saturating_sub(granularity_ns(st));
            let safe = st.mtime_ns < settled || st.ctime_ns < settled;
            (cached == *st && safe).then_some(content)
        }))
    }

    /// The value recording that a file with `st` holds `content`, as of now.
    pub fn entry(st: &Stat, content: &ContentRef) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(ENTRY_VERSION)
            .varint(st.size)
            .ivarint(st.mtime_ns)
            .ivarint(st.ctime_ns)
            .varint(st.ino)
            .varint(u64::from(st.mode))
            .varint(u64::from(st.uid))
            .varint(u64::from(st.gid))
            .ivarint(now_ns());
        content.encode(&mut w);
        w.buf
    }
}

fn decode(v: &[u8]) -> Option<(Stat, i64, ContentRef)> {
    let mut r = Reader::new(v);
    if r.u8().ok()? != ENTRY_VERSION {
        return None;
    }
    let st = Stat {
        size: r.varint().ok()?,
        mtime_ns: r.ivarint().ok()?,
        ctime_ns: r.ivarint().ok()?,
        ino: r.varint().ok()?,
        mode: r.u32v().ok()?,
        uid: r.u32v().ok()?,
        gid: r.u32v().ok()?,
    };
    let recorded = r.ivarint().ok()?;
    let content = ContentRef::decode(&mut r).ok()?;
    r.finish().ok()?;
    content.check_size(st.size).ok()?;
    Some((st, recorded, content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_entry_decodes_or_is_a_miss(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn entries_round_trip(size in 1u64..1 << 40, mtime: i64, ctime: i64, ino: u64) {
            let st = Stat { size, mtime_ns: mtime, ctime_ns: ctime, ino, mode: 0o100600, uid: 1, gid: 2 };
            let (got, _, content) = decode(&StatCache::entry(&st, &ContentRef::Zero)).unwrap();
            prop_assert_eq!(got, st);
            prop_assert_eq!(content, ContentRef::Zero);
        }
    }

    #[test]
    fn racy_entries_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        let cache = StatCache::new(&store, b"d\0s\0".to_vec());
        let now = now_ns();
        let old = Stat {
            size: 1,
            mtime_ns: now - 10_000_000_123,
            ctime_ns: now - 10_000_000_123,
            ino: 1,
            mode: 0o100644,
            uid: 0,
            gid: 0,
        };
        let fresh = Stat {
            mtime_ns: now - 1_000,
            ctime_ns: now - 1_000,
            ..old
        };
        let mut b = Batch::default();
        b.put(
            Space::Cache,
            cache.key(b"old"),
            StatCache::entry(&old, &ContentRef::Zero),
        );
        b.put(
            Space::Cache,
            cache.key(b"fresh"),
            StatCache::entry(&fresh, &ContentRef::Zero),
        );
        store.write(b).unwrap();
        assert_eq!(cache.lookup(b"old", &old).unwrap(), Some(ContentRef::Zero));
        assert_eq!(
            cache.lookup(b"old", &Stat { size: 2, ..old }).unwrap(),
            None
        );
        assert_eq!(cache.lookup(b"fresh", &fresh).unwrap(), None);
        assert_eq!(cache.lookup(b"missing", &old).unwrap(), None);
    }
}
