//! Chunking a file again after some of its bytes changed, reading only
//! around what changed (docs/design.md 16.6): from the start of the old
//! leaf holding the first changed byte (or ending right before it: a cut
//! is decided by the byte after it), until a new cut lands on an old cut
//! past the change. FastCDC's cut points depend only on the bytes since the
//! previous cut, so from such a meeting point on the old leaves are what a
//! full chunking would give; a write never moves bytes (only the end of
//! the file moves), so old and new offsets agree. The result is id for id
//! what chunking the whole new content gives (`chunk_all`). Stretches of
//! changes far apart are chunked in parallel and joined in order. Within
//! a chunk that starts where an old one started, only the positions a
//! change can decide anew are hashed (`Hint`).

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

/// Reads `buf.len()` bytes of the new content at an offset; called from
/// several threads at once.
pub type ReadAt<'a> = dyn Fn(u64, &mut [u8]) -> std::io::Result<()> + Sync + 'a;

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
///
/// A chunk starting where `hint` knows the old chunking (`Hint`) is cut
/// hashing only around what changed, and its end needs no byte past it.
#[allow(clippy::too_many_arguments)]
fn chunk_from(
    objects: &dyn Objects,
    chunker: &Chunker,
    size: u64,
    from: u64,
    first: usize,
    read: &ReadAt,
    window: &mut Vec<u8>,
    out: &mut Vec<Leaf>,
    stop: &mut dyn FnMut(u64) -> bool,
    hint: &dyn Fn(u64) -> Option<Hint>,
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
        loop {
            let here = start + at as u64;
            let hinted = hint(here)
                .filter(|h| h.end <= (len - at) as u64)
                .map(|h| h.cut(chunker, &window[at..], size - here));
            let Some(n) = hinted.or_else(|| chunker.next_cut(&window[at..], eof)) else {
                break;
            };
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
    read: &ReadAt,
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
        &|_| None,
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
///
/// Changes far apart are chunked in parallel, each from the old cut before
/// it until new and old cuts meet after it; then, in order, a stretch that
/// starts before the one in front of it ended (the two met in between) is
/// chunked again from that end, which is a cut of both chunkings.
pub fn rechunk(
    objects: &dyn Objects,
    chunker: &Chunker,
    old: &ContentRef,
    old_size: u64,
    new_size: u64,
    dirty: &[(u64, u64)],
    read: &ReadAt,
) -> Result<(ContentRef, u64)> {
    let apart = chunker.max_len() as u64;
    rechunk_apart(
        objects, chunker, old, old_size, new_size, dirty, read, apart,
    )
}

/// `rechunk`, with changes more than `apart` bytes apart chunked as
/// separate stretches (tests use 0, so that stretches run into each other).
#[allow(clippy::too_many_arguments)]
fn rechunk_apart(
    objects: &dyn Objects,
    chunker: &Chunker,
    old: &ContentRef,
    old_size: u64,
    new_size: u64,
    dirty: &[(u64, u64)],
    read: &ReadAt,
    apart: u64,
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
    let old = Old {
        leaves: old_leaves,
        size: old_size,
        changed: merged(&ranges),
    };
    // Changes at most `apart` from each other are one stretch's.
    let mut groups: Vec<&[(u64, u64)]> = Vec::new();
    let mut first = 0;
    let mut reach = 0u64;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        if i > first && a > reach.saturating_add(apart) {
            groups.push(&ranges[first..i]);
            first = i;
        }
        reach = if i == first { b } else { reach.max(b) };
    }
    if first < ranges.len() {
        groups.push(&ranges[first..]);
    }
    let stretch = |window: &mut Vec<u8>, from: u64, group: &[(u64, u64)]| {
        old.stretch(objects, chunker, new_size, from, group, read, window)
    };
    let ahead: Vec<Result<Stretch>> = groups
        .par_iter()
        .map_init(Vec::new, |window, group| {
            stretch(window, old.seed(group[0].0, new_size), group)
        })
        .collect();
    let mut leaves: Vec<Leaf> = Vec::new();
    let mut read_bytes = 0;
    let mut pos = 0u64; // Where the next leaf starts: a cut of both.
    let mut window = Vec::new();
    for (group, done) in groups.iter().zip(ahead) {
        let mut done = done?;
        read_bytes += done.read;
        if done.from < pos {
            // The stretch in front ran past this one's start: every change
            // of this one it passed is chunked; the rest are chunked from
            // where it ended.
            let rest: Vec<(u64, u64)> = group.iter().copied().filter(|r| r.1 > pos).collect();
            if rest.is_empty() {
                continue;
            }
            done = stretch(&mut window, pos, &rest)?;
            read_bytes += done.read;
        }
        // Unchanged old leaves up to the stretch.
        let i = old.leaves.partition_point(|(at, _)| *at < pos);
        leaves.extend(
            old.leaves[i..]
                .iter()
                .take_while(|(at, _)| *at < done.from)
                .map(|(_, l)| *l),
        );
        leaves.extend(done.leaves);
        pos = done.to;
    }
    // Past the last change: the old leaves (a file that changed size had
    // its end in a change).
    if pos < new_size {
        let i = old.leaves.partition_point(|(at, _)| *at < pos);
        leaves.extend(old.leaves[i..].iter().map(|(_, l)| *l));
    }
    let mut b = ChunkTreeBuilder::new(objects);
    for leaf in leaves {
        b.push(leaf)?;
    }
    Ok((b.finish()?, read_bytes))
}

/// Sorted ranges joined where they overlap or touch.
fn merged(sorted: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for &(a, b) in sorted {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// How many bytes before a cut FastCDC's decision of it depends on: its
/// gear hash moves one bit per byte, so a byte is forgotten 64 bytes
/// on; bytes are tested in pairs, so the decision at the byte before
/// the cut (that it is not one) counts too.
const DECIDED_BY: u64 = 66;

/// A new chunk that starts where an old chunk started, and whose end the
/// old chunking decided (its deciding bytes are unchanged): a position
/// whose deciding bytes are unchanged is decided as before, so only the
/// positions `anew` (offsets from the chunk's start) are hashed; without
/// a cut there, the chunk ends where the old leaf did, `end`.
pub(crate) struct Hint {
    end: u64,
    anew: Vec<(usize, usize)>,
}

impl Hint {
    /// The chunk's length; `data` starts with it and holds `end` bytes
    /// at least, and `remaining` bytes of the content are left from its
    /// start.
    fn cut(&self, chunker: &Chunker, data: &[u8], remaining: u64) -> usize {
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        self.anew
            .iter()
            .find_map(|&(from, to)| chunker.cut_in(data, remaining, from, to))
            .unwrap_or(self.end as usize)
    }
}

/// The old chunking of a content being chunked again.
struct Old {
    leaves: Vec<(u64, Leaf)>,
    size: u64,
    /// What may differ from the old content: the changes, joined.
    changed: Vec<(u64, u64)>,
}

/// New leaves for `from..to`, where `from` and `to` are cuts of both the
/// old and the new chunking, and how many bytes were read for them.
struct Stretch {
    from: u64,
    to: u64,
    leaves: Vec<Leaf>,
    read: u64,
}

impl Old {
    /// Where chunking anew must start for a change at `change`: the start
    /// of the old leaf that holds it or ends right before it (FastCDC
    /// decides a cut by the byte after it: a chunk ends before the byte
    /// whose hash matched, so a change at an old leaf's first byte can move
    /// the cut in front of it), or of one past the new end.
    fn seed(&self, change: u64, new_size: u64) -> u64 {
        let i = self
            .leaves
            .partition_point(|(at, l)| at + l.len() < change && at + l.len() <= new_size);
        self.leaves.get(i).map_or(self.size, |(at, _)| *at)
    }

    /// Whether no byte a decision of the old cut `cut` depended on (the
    /// bytes before it and the one after it) changed.
    fn unchanged_around(&self, cut: u64) -> bool {
        let i = self.changed.partition_point(|(a, _)| *a <= cut);
        i == 0 || self.changed[i - 1].1 <= cut.saturating_sub(DECIDED_BY)
    }

    /// What the old chunking tells of a new chunk starting at `start` of
    /// a content of `size` bytes: when an old chunk started there too and
    /// the bytes deciding its end are unchanged, where it ended and which
    /// positions before may be decided anew.
    fn hint(&self, start: u64, size: u64) -> Option<Hint> {
        let i = self.leaves.partition_point(|(at, _)| *at < start);
        let (at, leaf) = self.leaves.get(i)?;
        let end = at + leaf.len();
        // A run of zeros is one leaf for all the chunks it was cut into.
        if !matches!(leaf, Leaf::Chunk(..))
            || *at != start
            || end >= self.size
            || end >= size
            || !self.unchanged_around(end)
        {
            return None;
        }
        let j = self
            .changed
            .partition_point(|(_, b)| b.saturating_add(DECIDED_BY) <= start);
        let anew = self.changed[j..]
            .iter()
            .take_while(|(a, _)| *a < end)
            .map(|&(a, b)| {
                let from = a.max(start) - start;
                let to = b.saturating_add(DECIDED_BY).min(end) - start;
                (from as usize, to as usize)
            })
            .collect();
        Some(Hint {
            end: end - start,
            anew,
        })
    }

    /// The old cut at or after `at`, if any before the old end.
    fn cut_from(&self, at: u64) -> Option<u64> {
        let i = self.leaves.partition_point(|(start, _)| *start < at);
        self.leaves.get(i).map(|(start, _)| *start)
    }

    /// Chunks the new content (`size` bytes) from `from`, an old cut (or
    /// the old end), until a cut meets an old one past every change in
    /// `group`.
    #[allow(clippy::too_many_arguments)]
    fn stretch(
        &self,
        objects: &dyn Objects,
        chunker: &Chunker,
        size: u64,
        from: u64,
        group: &[(u64, u64)],
        read: &ReadAt,
        window: &mut Vec<u8>,
    ) -> Result<Stretch> {
        // The first window reaches the old cut after the last change,
        // where the cuts most likely meet. When the bytes deciding that
        // cut are unchanged, a hint decides it (`Hint`); otherwise two
        // bytes past it, since FastCDC tests a cut only with the pair of
        // bytes after it in hand (one byte past, the cut is not final and
        // the window doubles). Past the old end, a couple of average
        // chunks.
        let last = group.iter().map(|r| r.1).max().unwrap_or(from).max(from);
        let first = match self.cut_from(last) {
            Some(cut) if self.unchanged_around(cut) => cut - from,
            Some(cut) => cut - from + 2,
            None => last - from + 2 * chunker.avg_len() as u64,
        };
        let mut need = from;
        let mut r = 0;
        let mut leaves = Vec::new();
        let (to, read) = chunk_from(
            objects,
            chunker,
            size,
            from,
            usize::try_from(first).unwrap_or(WINDOW),
            read,
            window,
            &mut leaves,
            &mut |end| {
                while let Some(&(a, b)) = group.get(r) {
                    if a >= end {
                        break;
                    }
                    need = need.max(b);
                    r += 1;
                }
                r == group.len() && end >= need && self.cut_from(end) == Some(end)
            },
            &|start| self.hint(start, size),
        )?;
        Ok(Stretch {
            from,
            to,
            leaves,
            read,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkParams;
    use crate::store::Store;
    use proptest::prelude::*;

    fn reader(data: &[u8]) -> impl Fn(u64, &mut [u8]) -> std::io::Result<()> + Sync + '_ {
        move |at, buf| {
            let at = at as usize;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            Ok(())
        }
    }

    /// Noise with runs of zeros, so zero leaves are met, some of them
    /// several largest chunks long (at the test's sizes).
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut b = crate::noise(len, seed);
        for (i, x) in b.iter_mut().enumerate() {
            if (i / 40_000) % 5 == 3 || (100_000..220_000).contains(&(i % 400_000)) {
                *x = 0;
            }
        }
        b
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Write(u64, Vec<u8>),
        Truncate(u64),
        /// Written with the bytes it held: dirty, unchanged (a database
        /// writing a page back as it was).
        Touch(u64, u64),
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
            2 => (any::<u64>(), 1..200_000u64).prop_map(|(at, len)| Edit::Touch(at, len)),
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
            let chunker = small();
            let old = bytes(len, seed);
            let old_ref = chunk_all(&store, &chunker, old.len() as u64, &reader(&old)).unwrap();
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
                    Edit::Touch(at, len) => {
                        let at = at % (new.len() as u64 + 1);
                        dirty.push((at, (at + len).min(new.len() as u64)));
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
            let want = chunk_all(&store, &chunker, new.len() as u64, &reader(&new)).unwrap();
            let (got, _) = rechunk(
                &store, &chunker, &old_ref, old.len() as u64, new.len() as u64,
                &dirty, &reader(&new),
            ).unwrap();
            prop_assert_eq!(got, want);
            // Every change a stretch of its own: stretches run into the
            // next one's start and are chunked again from where they met.
            let (got, _) = rechunk_apart(
                &store, &chunker, &old_ref, old.len() as u64, new.len() as u64,
                &dirty, &reader(&new), 0,
            ).unwrap();
            prop_assert_eq!(got, want);
        }
    }

    /// The chunker of these tests: small chunks, so that cuts are many.
    fn small() -> Chunker {
        Chunker::new(ChunkParams {
            min: 2048,
            avg: 8192,
            max: 32768,
        })
    }

    /// `old` (chunked as `old_ref`) with byte `at` set to `v`, re-chunked
    /// around that byte, and chunked whole.
    fn byte_set(
        store: &Store,
        old: &[u8],
        old_ref: &ContentRef,
        at: usize,
        v: u8,
    ) -> (Vec<u8>, ContentRef, ContentRef) {
        let mut new = old.to_vec();
        new[at] = v;
        let len = new.len() as u64;
        let dirty = [(at as u64, at as u64 + 1)];
        let (got, _) = rechunk(store, &small(), old_ref, len, len, &dirty, &reader(&new)).unwrap();
        let want = chunk_all(store, &small(), len, &reader(&new)).unwrap();
        (new, got, want)
    }

    /// A changed byte just before an old cut can move it; one further
    /// back cannot, and then the cut is kept without reading past it. At
    /// every distance, re-chunking gives what a full chunking gives.
    #[test]
    fn a_change_right_before_a_cut_is_decided_anew() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "test").unwrap();
        let old = crate::noise(200_000, 11);
        let old_ref = chunk_all(&store, &small(), old.len() as u64, &reader(&old)).unwrap();
        let cuts = small().cuts(&old, true);
        let mut moved = 0;
        for &(cut, _) in &cuts[2..6] {
            for back in 0..=80 {
                let at = cut - back;
                let (new, got, want) = byte_set(&store, &old, &old_ref, at, old[at] ^ 0x5A);
                assert_eq!(got, want, "a byte {back} before the cut at {cut}");
                moved += usize::from(!small().cuts(&new, true).iter().any(|c| c.0 == cut));
            }
        }
        // The changes did move cuts: the test exercises deciding anew.
        assert!(moved > 0);
    }

    /// A run of zeros is one leaf however many chunks it was cut into,
    /// so its start and end tell nothing of the cuts within: a byte
    /// written into it is chunked as everything is.
    #[test]
    fn a_byte_written_into_a_run_of_zeros_is_chunked_as_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "test").unwrap();
        let mut old = vec![0u8; 98_305];
        old[98_304] = 7;
        let old_ref = chunk_all(&store, &small(), old.len() as u64, &reader(&old)).unwrap();
        let (_, got, want) = byte_set(&store, &old, &old_ref, 29_447, 7);
        assert_eq!(got, want);
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
        let old_ref = chunk_all(&store, &chunker, old.len() as u64, &reader(&old)).unwrap();
        let mut new = old.clone();
        let dirty: Vec<(u64, u64)> = [3u64 << 20, 40 << 20, 63 << 20]
            .iter()
            .map(|&at| {
                new[at as usize..at as usize + 8192].fill(0xAB);
                (at, at + 8192)
            })
            .collect();
        let want = chunk_all(&store, &chunker, new.len() as u64, &reader(&new)).unwrap();
        let (got, read) = rechunk(
            &store,
            &chunker,
            &old_ref,
            old.len() as u64,
            new.len() as u64,
            &dirty,
            &reader(&new),
        )
        .unwrap();
        assert_eq!(got, want);
        // A window of two largest chunks (256 KiB each) around each page,
        // not 64 MiB.
        assert!(read <= 3 << 20, "read {read} bytes");
    }
}
