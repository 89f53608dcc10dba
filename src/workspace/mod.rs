//! Working states on a plain directory: scan a directory into a tree (reading
//! only files whose stat data changed, via the stat cache) and materialize a
//! tree into a directory (rewriting only what differs).
//!
//! A plain directory cannot be snapshotted atomically while a program
//! writes to it: a file that changes while it is read is an error, and the
//! FUSE mount (a later part) is the answer for running databases.

pub mod cache;
mod fsmeta;
pub mod materialize;
pub mod scan;

use std::io;
use std::path::PathBuf;

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
