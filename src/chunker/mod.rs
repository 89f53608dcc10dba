//! Content-defined chunking: FastCDC 2020 over byte slices.
//!
//! Pure functions of bytes and parameters: no I/O, no hashing for storage.
//! The cut points define every chunk id, so the fastcdc crate is pinned
//! exactly in Cargo.toml and golden vectors below pin its output.

use fastcdc::v2020::{self, Normalization};
use serde::{Deserialize, Serialize};

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
