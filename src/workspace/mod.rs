//! Working states on a plain directory: scan a directory into a tree (reading
//! only files whose stat data changed, via the stat cache) and materialize a
//! tree into a directory (rewriting only what differs).
//!
//! A plain directory cannot be snapshotted atomically while a program
//! writes to it: a file that changes while it is read is an error, and the
//! FUSE mount (a later part) is the answer for running databases.

pub mod cache;
pub(crate) mod fsmeta;
pub mod materialize;
pub mod scan;

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::store::StoreError;
use crate::tree::TreeError;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(
        "cannot read {path}: {source}; fix its permissions (or run dot as its owner) and try again"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} changed while it was being read; stop the program writing to the volume (a plain directory cannot be snapshotted while a database runs) and try again")]
    Changed { path: PathBuf },
    #[error(
        "{path} is deeper than {} directory levels, more than dot handles",
        crate::tree::dir::MAX_DEPTH
    )]
    TooDeep { path: PathBuf },
    /// The user interrupted the operation; nothing it did is recorded.
    #[error("cancelled; nothing was changed")]
    Cancelled,
}

impl From<StoreError> for WorkspaceError {
    fn from(e: StoreError) -> Self {
        WorkspaceError::Tree(TreeError::Store(e))
    }
}

pub type Result<T> = std::result::Result<T, WorkspaceError>;

pub(crate) fn read_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WorkspaceError {
    let path = path.into();
    move |source| WorkspaceError::Read { path, source }
}

pub(crate) fn write_err(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> WorkspaceError {
    let path = path.into();
    move |source| WorkspaceError::Write { path, source }
}

/// A relative path inside a working directory, `/`-joined bytes.
pub(crate) fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        out.extend_from_slice(rel);
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// Stack of each thread that scans or materializes: directories are
/// walked recursively, each level taking a few KiB of stack (with rayon's
/// frames), and a tree may be `MAX_DEPTH` levels deep. Only the pages a
/// walk touches are ever backed by memory.
const TREE_STACK: usize = 256 << 20;

/// The threads scans and materializations run on, whatever thread calls
/// them: a caller's stack (2 MiB for rayon's own threads) would not hold
/// a tree `MAX_DEPTH` levels deep.
pub(crate) fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .stack_size(TREE_STACK)
            .thread_name(|i| format!("dot-tree-{i}"))
            .build()
            .expect("cannot start the tree threads")
    })
}

/// Errors when a directory `depth` levels below its top is too deep.
pub(crate) fn check_depth(depth: usize, path: &std::path::Path) -> Result<()> {
    if depth > crate::tree::dir::MAX_DEPTH {
        Err(WorkspaceError::TooDeep {
            path: path.to_path_buf(),
        })
    } else {
        Ok(())
    }
}
