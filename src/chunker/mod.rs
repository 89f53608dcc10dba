//! Content-defined chunking: FastCDC 2020 over byte slices.
//!
//! Pure functions of bytes and parameters: no I/O, no hashing for storage.
//! The cut points define every chunk id, so the fastcdc crate is pinned
//! exactly in Cargo.toml and golden vectors below pin its output.

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

/// Bytes hashed before the first tested by `Chunker::cut_in`: the gear
/// hash moves two bits a pair of bytes, so after 31 pairs a byte no longer
/// counts and the hash is what hashing from the chunk's start gives.
const WARM_UP: usize = 64;

/// Chunk size bounds, fixed per dot at `dot init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        }
    }
}

impl ChunkParams {
    /// Checks the bounds fastcdc accepts, so a bad configuration is an error
    /// at `dot init` rather than a panic later.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let ok = (v2020::MINIMUM_MIN as u32..=v2020::MINIMUM_MAX as u32).contains(&self.min)
            && (v2020::AVERAGE_MIN as u32..=v2020::AVERAGE_MAX as u32).contains(&self.avg)
            && (v2020::MAXIMUM_MIN as u32..=v2020::MAXIMUM_MAX as u32).contains(&self.max)
            && self.min <= self.avg
            && self.avg <= self.max
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid chunk sizes min {} avg {} max {}: need even sizes with {}..={} <= avg <= max <= {}",
                self.min,
                self.avg,
                self.max,
                v2020::MINIMUM_MIN,
                v2020::MINIMUM_MAX,
                v2020::MAXIMUM_MAX
            ))
        }
    }
}

/// A configured chunker. Cheap to copy; holds only the derived masks.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    params: ChunkParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    pub fn new(params: ChunkParams) -> Chunker {
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
        }
    }

    /// Length of the next chunk at the start of `data`, if it is final.
    ///
    /// `eof` says that `data` runs to the end of the input. Without it, a cut
    /// that only ended because `data` ran out is not final: the caller must
    /// offer more bytes from the same start. This lets a large file be chunked
    /// through a window that slides over it, with the same cut points as a
    /// single pass over the whole file.
    pub(crate) fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        let (_, len) = v2020::cut(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let final_cut = eof || len < data.len() || len >= self.params.max as usize;
        final_cut.then_some(len)
    }

    /// The first cut in `from..to` of a chunk starting at the start of
    /// `data`, where `remaining` bytes of the input are left from there
    /// (`data` holds at least `to` of them): the cut `next_cut` would give
    /// if it is there, but found hashing only from `WARM_UP` bytes before
    /// `from`, not from the chunk's start. Decisions before `from` are the
    /// caller's to know.
    pub(crate) fn cut_in(
        &self,
        data: &[u8],
        remaining: usize,
        from: usize,
        to: usize,
    ) -> Option<usize> {
        self.cut_in_from(data, remaining, from, to, from.saturating_sub(WARM_UP))
    }

    /// `cut_in`, hashing from offset `hashed` on (at most `from`).
    ///
    /// The loop is FastCDC 2020's (`fastcdc::v2020::cut_gear`, pinned):
    /// from `min` on, bytes in pairs, the hash shifted two bits a pair and
    /// tested after each byte against the masks shifted left by one
    /// (first byte of a pair) or not (second), the small masks before
    /// `avg` (or before the end when less than `avg` is left), pairs only
    /// while both bytes are within `remaining` (capped at `max`). A cut at
    /// `p` ends the chunk before byte `p`, the byte that matched.
    fn cut_in_from(
        &self,
        data: &[u8],
        remaining: usize,
        from: usize,
        to: usize,
        hashed: usize,
    ) -> Option<usize> {
        let (min, avg, max) = (
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
        );
        if remaining <= min {
            return None;
        }
        let remaining = remaining.min(max);
        let center = avg.min(remaining);
        let to = to.min(remaining / 2 * 2);
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        let mut hash = 0u64;
        let mut index = (hashed / 2).max(min / 2);
        while index * 2 < to {
            let a = index * 2;
            let (mask, mask_ls) = if index < center / 2 {
                (self.mask_s, self.mask_s << 1)
            } else {
                (self.mask_l, self.mask_l << 1)
            };
            hash = (hash << 2).wrapping_add(gear_ls[data[a] as usize]);
            if a >= from && hash & mask_ls == 0 {
                return Some(a);
            }
            if a + 1 >= to {
                break;
            }
            hash = hash.wrapping_add(gear[data[a + 1] as usize]);
            if a + 1 >= from && hash & mask == 0 {
                return Some(a + 1);
            }
            index += 1;
        }
        None
    }

    /// The largest chunk it makes.
    pub fn max_len(&self) -> usize {
        self.params.max as usize
    }

    pub fn avg_len(&self) -> usize {
        self.params.avg as usize
    }

    /// All final cuts at the start of `data`: (offset, length) pairs that tile
    /// a prefix of it (all of it when `eof`).
    pub fn cuts(&self, data: &[u8], eof: bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some(len) = self.next_cut(&data[pos..], eof) {
            out.push((pos, len));
            pos += len;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        // xorshift64*: deterministic bytes without a dependency.
        let mut x = seed.max(1);
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn golden_cut_points() {
        // Pins fastcdc 5.0.0's v2020 output for the default parameters. If this
        // changes, every chunk id changes: do not upgrade fastcdc.
        let data = pseudo_random(1 << 20, 42);
        let cuts = Chunker::new(ChunkParams::default()).cuts(&data, true);
        let lens: Vec<usize> = cuts.iter().map(|c| c.1).collect();
        assert_eq!(lens.iter().sum::<usize>(), 1 << 20);
        assert_eq!(
            crate::id::Id::of(format!("{lens:?}").as_bytes()).short(),
            GOLDEN_CUTS,
            "cut lengths {lens:?}"
        );
    }
    const GOLDEN_CUTS: &str = "7ef7419b7781";

    #[test]
    fn windowed_matches_one_pass() {
        let data = pseudo_random(3 << 20, 7);
        let chunker = Chunker::new(ChunkParams::default());
        let whole = chunker.cuts(&data, true);
        let mut windowed = Vec::new();
        let mut start = 0;
        let window = 300_000;
        while start < data.len() {
            let end = (start + window).min(data.len());
            let eof = end == data.len();
            let cuts = chunker.cuts(&data[start..end], eof);
            assert!(!cuts.is_empty(), "a window of max size always yields a cut");
            for (off, len) in &cuts {
                windowed.push((start + off, *len));
            }
            let (off, len) = cuts.last().unwrap();
            start += off + len;
        }
        assert_eq!(whole, windowed);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn chunks_tile_the_input(len in 0usize..600_000, seed: u64) {
            let data = pseudo_random(len, seed);
            let params = ChunkParams::default();
            let cuts = Chunker::new(params).cuts(&data, true);
            let mut pos = 0;
            for (i, (off, l)) in cuts.iter().enumerate() {
                prop_assert_eq!(*off, pos);
                prop_assert!(*l <= params.max as usize);
                if i + 1 < cuts.len() {
                    prop_assert!(*l >= params.min as usize);
                }
                pos += l;
            }
            prop_assert_eq!(pos, len);
        }
    }

    /// Parameters FastCDC accepts, small enough that cuts are many.
    fn small_params() -> impl Strategy<Value = ChunkParams> {
        (6u32..14, 0u32..3, 0u32..3).prop_map(|(min, up, up2)| ChunkParams {
            min: 1 << min,
            avg: 1 << (min + up + 1),
            max: 1 << (min + up + up2 + 2),
        })
    }

    /// Noise with runs of one byte and of a short pattern: data on which
    /// the gear hash repeats, as in database pages.
    fn lumpy(len: usize, seed: u64) -> Vec<u8> {
        let mut b = pseudo_random(len, seed);
        for (i, x) in b.iter_mut().enumerate() {
            match (i / 3000) % 4 {
                1 => *x = b' ',
                2 => *x = (i % 7) as u8,
                _ => {}
            }
        }
        b
    }

    /// Every position of a chunk starting at `data[0]` whose byte makes
    /// FastCDC's hash match, hashing from the start: the test oracle, the
    /// loop of `cut_in_from` without stopping at the first match.
    fn all_matches(chunker: &Chunker, data: &[u8], remaining: usize) -> Vec<usize> {
        let (min, avg, max) = (
            chunker.params.min as usize,
            chunker.params.avg as usize,
            chunker.params.max as usize,
        );
        if remaining <= min {
            return Vec::new();
        }
        let remaining = remaining.min(max);
        let to = data.len().min(remaining / 2 * 2);
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        let mut out = Vec::new();
        let mut hash = 0u64;
        for a in (min..to).step_by(2) {
            let mask = if a < avg.min(remaining) / 2 * 2 {
                chunker.mask_s
            } else {
                chunker.mask_l
            };
            hash = (hash << 2).wrapping_add(gear_ls[data[a] as usize]);
            if hash & (mask << 1) == 0 {
                out.push(a);
            }
            if a + 1 < to {
                hash = hash.wrapping_add(gear[data[a + 1] as usize]);
                if hash & mask == 0 {
                    out.push(a + 1);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The first match of the oracle is FastCDC's cut, and `cut_in`
        /// finds, from every position, the oracle's first match from there
        /// (so hashing from `WARM_UP` bytes before is hashing from the start).
        #[test]
        fn cut_in_is_fastcdc_from_anywhere(
            params in small_params(),
            len in 0usize..20_000,
            extra in 0usize..3,
            seed: u64,
            span in 1usize..300,
        ) {
            let data = lumpy(len, seed);
            let chunker = Chunker::new(params);
            // The input may go on past what `data` holds.
            let remaining = len + extra;
            let matches = all_matches(&chunker, &data, remaining);
            if extra == 0 {
                let (_, cut) = v2020::cut(
                    &data, params.min as usize, params.avg as usize, params.max as usize,
                    chunker.mask_s, chunker.mask_l, chunker.mask_s << 1, chunker.mask_l << 1,
                );
                let content = cut < len.min(params.max as usize);
                prop_assert_eq!(matches.first().copied(), content.then_some(cut));
            }
            for from in 0..len {
                let to = (from + span).min(len);
                let i = matches.partition_point(|m| *m < from);
                let want = matches.get(i).copied().filter(|m| *m < to);
                prop_assert_eq!(chunker.cut_in(&data, remaining, from, to), want, "from {}", from);
            }
        }
    }

    #[test]
    fn params_are_validated() {
        assert!(ChunkParams::default().validate().is_ok());
        let bad = ChunkParams {
            min: 10,
            avg: 5,
            max: 3,
        };
        assert!(bad.validate().is_err());
    }
}
