//! Micro-benchmarks of each stage of a commit and a checkout: chunking,
//! hashing, compression, index lookups, tree building and diff. The
//! side-by-side comparison with peer tools is benches/compare.sh.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dot::chunker::{ChunkParams, Chunker};
use dot::id::{ChunkId, Id};
use dot::store::{Kind, Store};
use dot::tree::chunks::{ChunkTreeBuilder, ContentRef, Leaf};
use dot::tree::diff::diff;
use dot::tree::dir::{write_dir, Content, DirEntry, EntryKind};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes that look like database pages: mostly structured, partly random.
fn pagey(len: usize) -> Vec<u8> {
    let random = noise(len, 9);
    (0..len)
        .map(|i| {
            if i % 8192 < 2048 {
                random[i]
            } else {
                (i % 251) as u8
            }
        })
        .collect()
}

fn chunking(c: &mut Criterion) {
    let data = noise(16 << 20, 1);
    let chunker = Chunker::new(ChunkParams::default());
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc 16 MiB", |b| {
        b.iter(|| black_box(chunker.cuts(&data, true).len()))
    });
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let data = noise(64 << 10, 2);
    let mut g = c.benchmark_group("hashing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3 64 KiB chunk", |b| {
        b.iter(|| black_box(Id::of(&data)))
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let data = pagey(64 << 10);
    let compressed = zstd::bulk::compress(&data, 3).unwrap();
    let mut g = c.benchmark_group("compression");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("zstd-3 compress 64 KiB", |b| {
        b.iter(|| black_box(zstd::bulk::compress(&data, 3).unwrap()))
    });
    g.bench_function("zstd decompress 64 KiB", |b| {
        b.iter(|| black_box(zstd::bulk::decompress(&compressed, data.len()).unwrap()))
    });
    g.finish();
}

fn index_lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    let ids: Vec<Id> = (0..100_000u64)
        .map(|i| {
            let bytes = i.to_le_bytes();
            let id = Id::of(&bytes);
            store.put(Kind::Chunk, &id, &bytes).unwrap();
            id
        })
        .collect();
    store.flush().unwrap();
    let absent: Vec<Id> = (0..1000u64)
        .map(|i| Id::of(&(i + 1_000_000).to_le_bytes()))
        .collect();
    let mut g = c.benchmark_group("index");
    let mut i = 0;
    g.bench_function("has, present (100k objects)", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            black_box(store.has(&ids[i]).unwrap())
        })
    });
    let mut j = 0;
    g.bench_function("has, absent (100k objects)", |b| {
        b.iter(|| {
            j = (j + 1) % absent.len();
            black_box(store.has(&absent[j]).unwrap())
        })
    });
    g.finish();
}

fn file_entry(i: usize, content: ContentRef) -> DirEntry {
    DirEntry {
        name: format!("file{i:07}").into_bytes(),
        kind: EntryKind::File,
        mode: 0o600,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_700_000_000_000_000_000 + i as i64,
        size: 8192,
        content: Content::File(content),
        xattrs: Vec::new(),
    }
}

fn tree_build(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    let leaves: Vec<Leaf> = (0..16_384u64)
        .map(|i| Leaf::Chunk(ChunkId(Id::of(&i.to_le_bytes())), 65_536))
        .collect();
    let mut g = c.benchmark_group("tree build");
    g.bench_function("chunk tree, 16k leaves (1 GiB file)", |b| {
        b.iter(|| {
            let mut builder = ChunkTreeBuilder::new(&store);
            for l in &leaves {
                builder.push(*l).unwrap();
            }
            black_box(builder.finish().unwrap())
        })
    });
    let entries: Vec<DirEntry> = (0..10_000)
        .map(|i| file_entry(i, ContentRef::Zero))
        .collect();
    g.bench_function("directory, 10k entries", |b| {
        b.iter(|| black_box(write_dir(&store, &entries).unwrap()))
    });
    g.finish();
}

fn tree_diff(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test").unwrap();
    // 100 directories of 1000 files; 10 files changed in one directory.
    let mut a = Vec::new();
    let mut b = Vec::new();
    for d in 0..100 {
        let files: Vec<DirEntry> = (0..1000).map(|i| file_entry(i, ContentRef::Zero)).collect();
        let mut changed = files.clone();
        if d == 42 {
            for f in changed.iter_mut().take(10) {
                f.size = 4096;
            }
        }
        let sub = |t| DirEntry {
            name: format!("dir{d:03}").into_bytes(),
            kind: EntryKind::Dir,
            content: Content::Dir(t),
            size: 0,
            ..file_entry(0, ContentRef::Empty)
        };
        a.push(sub(write_dir(&store, &files).unwrap()));
        b.push(sub(write_dir(&store, &changed).unwrap()));
    }
    let (ta, tb) = (
        write_dir(&store, &a).unwrap(),
        write_dir(&store, &b).unwrap(),
    );
    let mut g = c.benchmark_group("diff");
    g.bench_function("100k files, 10 changed", |bch| {
        bch.iter_batched(
            Vec::new,
            |mut out| {
                diff(&store, Some(&ta), Some(&tb), "", &mut out).unwrap();
                assert_eq!(out.len(), 10);
                out
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    chunking,
    hashing,
    compression,
    index_lookups,
    tree_build,
    tree_diff
);
criterion_main!(benches);
