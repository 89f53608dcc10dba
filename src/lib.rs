//! dot: git for data volumes.
//!
//! Layers, each depending only on the ones before it (docs/design.md):
//! `chunker` (pure content-defined chunking) -> `store` (packs, RocksDB index,
//! refs) -> `tree` (Merkle objects: chunk trees, directory trees, subdot roots,
//! commits) -> `workspace` (scan a directory into a tree, materialize a tree
//! into a directory) and `sync` (remotes: push and fetch of objects through
//! blob storage) -> `repo` (dots, branches, remotes and the operations the
//! CLI calls). Only the binary (`src/main.rs`, `src/cli/`) prints.

pub mod chunker;
pub mod codec;
pub mod id;
pub mod progress;
pub mod repo;
pub mod store;
pub mod sync;
pub mod tree;
pub mod workspace;
