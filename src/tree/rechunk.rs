//! Chunking a file again after some of its bytes changed, reading only
//! around what changed (docs/design.md 16.6): from the start of the old
//! leaf holding the first changed byte (or ending right before it: a cut
//! is decided by the byte after it), until a new cut lands on an old cut
//! past the change. FastCDC's cut points depend only on the bytes since the
//! previous cut, so from such a meeting point on the old leaves are what a
//! full chunking would give; a write never moves bytes (only the end of
//! the file moves), so old and new offsets agree. The result is id for id
//! what chunking the whole new content gives (`chunk_all`).

use std::collections::HashSet;

use rayon::prelude::*;

use super::chunks::{for_each_leaf_group, ChunkTreeBuilder, ContentRef, Leaf};
use super::{Objects, TreeError};
use crate::chunker::Chunker;
use crate::id::{ChunkId, Id};
use crate::store::Kind;

/// Bytes read at a time, at most; cuts are the same whatever the window.
/// Re-chunking starts with a window reaching a couple of average chunks
/// past the change and doubles it, so a change whose chunks meet the old
/// cuts again soon reads little.
const WINDOW: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RechunkError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The new content could not be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, RechunkError>;

/// Reads `buf.len()` bytes of the new content at an offset.
pub type ReadAt<'a> = dyn FnMut(u64, &mut [u8]) -> std::io::Result<()> + 'a;

/// The leaves of `cuts` of `data`, their chunks stored (hashed in
/// parallel); an all-zero chunk is a zero run.
pub(crate) fn store_cuts(
    objects: &dyn Objects,
    data: &[u8],
    cuts: &[(usize, usize)],
) -> std::result::Result<Vec<Leaf>, TreeError> {
    cuts.par_iter()
        .map(|&(off, n)| {
            let chunk = &data[off..off + n];
            if is_zero(chunk) {
                return Ok(Leaf::Zero(n as u64));
            }
            let id = Id::of(chunk);
            objects.put(Kind::Chunk, &id, chunk)?;
            Ok(Leaf::Chunk(ChunkId(id), n as u32))
        })
        .collect()
}

pub(crate) fn is_zero(data: &[u8]) -> bool {
    let (words, rest) = data.as_chunks::<16>();
    words.iter().all(|w| u128::from_ne_bytes(*w) == 0) && rest.iter().all(|b| *b == 0)
}

/// Chunks content from offset `from` (a cut point) on, pushing leaves into
/// `out`, until `stop(end of a cut)` says a cut is where to stop, or the
/// end (`size`). Reads `first` bytes first, then windows twice as large
/// each time. Returns where it stopped and the bytes it read.
#[allow(clippy::too_many_arguments)]
fn chunk_from(
    objects: &dyn Objects,
    chunker: &Chunker,
    size: u64,
    from: u64,
    first: usize,
    read: &mut ReadAt,
    window: &mut Vec<u8>,
    out: &mut Vec<Leaf>,
    stop: &mut dyn FnMut(u64) -> bool,
) -> Result<(u64, u64)> {
    let mut start = from;
    let mut read_bytes = 0u64;
    let mut want = first.clamp(1, WINDOW);
    while start < size {
        let len = (want as u64).min(size - start) as usize;
        want = (want * 2).min(WINDOW);
        let eof = start + len as u64 == size;
        window.resize(len, 0);
        read(start, &mut window[..])?;
        read_bytes += len as u64;
        // Cut by cut, stopping at the first that meets an old one: what
        // lies past it is not hashed.
        let mut cuts = Vec::new();
        let mut at = 0;
        let mut met = None;
        while let Some(n) = chunker.next_cut(&window[at..], eof) {
            cuts.push((at, n));
            at += n;
            let end = start + at as u64;
            if end < size && stop(end) {
                met = Some(end);
                break;
            }
        }
        out.extend(store_cuts(objects, window, &cuts)?);
        if let Some(end) = met {
            return Ok((end, read_bytes));
        }
        start += at as u64;
    }
    Ok((size, read_bytes))
}

/// Chunks all `size` bytes of a content, as a plain-directory commit does.
pub fn chunk_all(
    objects: &dyn Objects,
    chunker: &Chunker,
    size: u64,
    read: &mut ReadAt,
) -> Result<ContentRef> {
    let mut leaves = Vec::new();
    let first = chunker.max_len() * 2;
    chunk_from(
        objects,
        chunker,
        size,
        0,
        first,
        read,
        &mut Vec::new(),
        &mut leaves,
        &mut |_| false,
    )?;
    let mut b = ChunkTreeBuilder::new(objects);
    for leaf in leaves {
        b.push(leaf)?;
    }
    Ok(b.finish()?)
}

/// The new content of a file that was `old` (`old_size` bytes), is now
/// `new_size` bytes, and differs from `old` only within `dirty` (offsets
/// in the new content, any order; past the old end counts as changed).
/// Returns the content and how many bytes were read to make it.
pub fn rechunk(
    objects: &dyn Objects,
    chunker: &Chunker,
    old: &ContentRef,
    old_size: u64,
    new_size: u64,
    dirty: &[(u64, u64)],
    read: &mut ReadAt,
) -> Result<(ContentRef, u64)> {
    // The old leaves and where each starts.
    let mut old_leaves: Vec<(u64, Leaf)> = Vec::new();
    for_each_leaf_group(objects, old, old_size, &mut |at, leaves| {
        let mut at = at;
        for l in leaves {
            old_leaves.push((at, *l));
            at += l.len();
        }
        Ok::<(), TreeError>(())
    })?;
    // Old cuts, not counting the old end: a forced cut, not a content one.
    let starts: HashSet<u64> = old_leaves.iter().map(|(at, _)| *at).collect();
    let mut ranges: Vec<(u64, u64)> = dirty
        .iter()
        .map(|&(a, b)| (a.min(new_size), b.min(new_size)))
        .filter(|(a, b)| a < b)
        .collect();
    // A file that grew changed from its old last byte on (the old end was
    // a forced cut); one that shrank, at its new last byte.
    if new_size > old_size {
        ranges.push((old_size.saturating_sub(1), new_size));
    } else if new_size < old_size && new_size > 0 {
        ranges.push((new_size - 1, new_size));
    }
    ranges.sort_unstable();
    let mut leaves: Vec<Leaf> = Vec::new();
    // One buffer for every stretch: zeroed only where it grows.
    let mut window = Vec::new();
    let mut read_bytes = 0;
    let mut pos = 0u64; // Where the next leaf starts.
    let mut next_old = 0usize; // The old leaf starting at `pos`, if aligned.
    let mut r = 0usize; // The next dirty range not yet covered.
    while pos < new_size {
        // Old leaves up to the one that holds the next change, or ends
        // right before it: FastCDC decides a cut by the byte after it (a
        // chunk ends before the byte whose hash matched), so a change at
        // an old leaf's first byte can move the cut in front of it.
        let change = ranges.get(r).map_or(u64::MAX, |&(a, _)| a);
        while next_old < old_leaves.len() {
            let (at, leaf) = old_leaves[next_old];
            if at + leaf.len() >= change || at + leaf.len() > new_size {
                break;
            }
            leaves.push(leaf);
            pos = at + leaf.len();
            next_old += 1;
        }
        if pos >= new_size {
            break;
        }
        // Chunk anew until a cut meets an old one past every change met.
        let mut need = pos;
        let reach = ranges.get(r).map_or(pos, |&(_, b)| b.max(pos)) - pos;
        let first = usize::try_from(reach).unwrap_or(WINDOW) + 2 * chunker.avg_len();
        let (end, n) = chunk_from(
            objects,
            chunker,
            new_size,
            pos,
            first,
            read,
            &mut window,
            &mut leaves,
            &mut |end| {
                while let Some(&(a, b)) = ranges.get(r) {
                    if a >= end {
                        break;
                    }
                    need = need.max(b);
                    r += 1;
                }
                end >= need && end < old_size && starts.contains(&end)
            },
        )?;
        read_bytes += n;
        pos = end;
        // Skip the ranges this stretch covered, and find the old leaf there.
        while ranges.get(r).is_some_and(|&(_, b)| b <= pos) {
            r += 1;
        }
        next_old = old_leaves.partition_point(|(at, _)| *at < pos);
    }
    let mut b = ChunkTreeBuilder::new(objects);
    for leaf in leaves {
        b.push(leaf)?;
    }
    Ok((b.finish()?, read_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::store::Store;
    use proptest::prelude::*;

    fn reader(data: &[u8]) -> impl FnMut(u64, &mut [u8]) -> std::io::Result<()> + '_ {
        move |at, buf| {
            let at = at as usize;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            Ok(())
        }
    }

    /// Noise with runs of zeros, so zero leaves are met.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut b = crate::noise(len, seed);
        for (i, x) in b.iter_mut().enumerate() {
            if (i / 40_000) % 5 == 3 {
                *x = 0;
            }
        }
        b
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => (any::<u64>(), prop::collection::vec(any::<u8>(), 1..3000), any::<bool>())
                .prop_map(|(at, mut data, zero)| {
                    if zero {
                        data.fill(0);
                    }
                    Edit::Write(at, data)
                }),
            1 => any::<u64>().prop_map(Edit::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Whatever was written, truncated or extended, re-chunking around
        /// the changes gives exactly the content a full chunking gives.
        #[test]
        fn rechunking_around_changes_equals_chunking_everything(
            len in 0usize..600_000,
            seed in any::<u64>(),
            edits in prop::collection::vec(edit(), 0..8),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(tmp.path(), "test").unwrap();
            let chunker = Chunker::new(ChunkParams { min: 2048, avg: 8192, max: 32768 });
            let old = bytes(len, seed);
            let old_ref = chunk_all(&store, &chunker, old.len() as u64, &mut reader(&old)).unwrap();
            let mut new = old.clone();
            let mut dirty = Vec::new();
            for e in edits {
                match e {
                    Edit::Write(at, data) => {
                        let at = (at % (new.len() as u64 + 50_000)) as usize;
                        if new.len() < at + data.len() {
                            // Extending: the gap reads as zeros and is new.
                            dirty.push((new.len() as u64, at as u64));
                            new.resize(at + data.len(), 0);
                        }
                        new[at..at + data.len()].copy_from_slice(&data);
                        dirty.push((at as u64, (at + data.len()) as u64));
                    }
                    Edit::Truncate(to) => {
                        let to = (to % (new.len() as u64 + 50_000)) as usize;
                        if to > new.len() {
                            dirty.push((new.len() as u64, to as u64));
                        }
                        new.resize(to, 0);
                    }
                }
            }
            let want = chunk_all(&store, &chunker, new.len() as u64, &mut reader(&new)).unwrap();
            let (got, read) = rechunk(
                &store, &chunker, &old_ref, old.len() as u64, new.len() as u64,
                &dirty, &mut reader(&new),
            ).unwrap();
            prop_assert_eq!(got, want);
            let _ = read;
        }
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[3] = 1;
        assert!(!is_zero(&v[1..]));
    }

    #[test]
    fn a_small_write_reads_little_of_a_large_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "test").unwrap();
        let chunker = Chunker::new(ChunkParams::default());
        let old = bytes(64 << 20, 7);
        let old_ref = chunk_all(&store, &chunker, old.len() as u64, &mut reader(&old)).unwrap();
        let mut new = old.clone();
        let dirty: Vec<(u64, u64)> = [3u64 << 20, 40 << 20, 63 << 20]
            .iter()
            .map(|&at| {
                new[at as usize..at as usize + 8192].fill(0xAB);
                (at, at + 8192)
            })
            .collect();
        let want = chunk_all(&store, &chunker, new.len() as u64, &mut reader(&new)).unwrap();
        let (got, read) = rechunk(
            &store,
            &chunker,
            &old_ref,
            old.len() as u64,
            new.len() as u64,
            &dirty,
            &mut reader(&new),
        )
        .unwrap();
        assert_eq!(got, want);
        // A window of two largest chunks (256 KiB each) around each page,
        // not 64 MiB.
        assert!(read <= 3 << 20, "read {read} bytes");
    }
}
