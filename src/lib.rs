//! dot: git for data volumes.
//!
//! Layers, each depending only on the ones before it (docs/design.md):
//! `chunker` (pure content-defined chunking) -> `store` (packs, RocksDB index,
//! refs) -> `tree` (Merkle objects: chunk trees, directory trees, subdot roots,
//! commits) -> `workspace` (scan a directory into a tree, materialize a tree
//! into a directory) and `sync` (remotes: push and fetch of objects through
//! blob storage) -> `repo` (dots, branches, remotes and the operations the
//! CLI calls) -> `mount` (a commit as a file system serves it) and, on
//! Linux, `fuse` (the kernel side of a mount) -> `serve` (the daemon).
//! Only the binary (`src/main.rs`, `src/cli/`) prints.

pub mod chunker;
pub(crate) mod codec;
pub mod docker;
pub mod env;
#[cfg(target_os = "linux")]
pub mod fuse;
pub mod id;
pub mod mount;
pub mod progress;
pub mod repo;
pub mod serve;
pub mod store;
pub mod sync;
pub mod tree;
pub(crate) mod workspace;

/// Test support: deterministic bytes (xorshift) that do not compress.
#[cfg(test)]
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
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

/// Test support: the largest single allocation a closure makes on its
/// thread, so property tests can prove decoders allocate within the
/// format's limits whatever a header claims.
#[cfg(test)]
pub(crate) mod alloc_track {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Tracking;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|l| {
            if size > l.get() {
                l.set(size)
            }
        });
    }

    // SAFETY: every call is passed on to the system allocator unchanged.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc(layout)
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            System.alloc_zeroed(layout)
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            System.realloc(ptr, layout, new_size)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static ALLOCATOR: Tracking = Tracking;

    /// Runs `f` and returns its result with the largest allocation it made.
    pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        let r = f();
        (r, LARGEST.with(Cell::get))
    }
}
