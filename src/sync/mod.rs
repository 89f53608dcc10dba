//! Remotes: push, pull and clone of objects and branch values through plain
//! blob storage (S3, HTTP/WebDAV, a directory). Knows the store and the
//! Merkle objects, not dots' configuration or the command line; the repo
//! layer decides what to move and the CLI draws progress.
//!
//! Only missing data travels. A push walks the DAG from the branch head and
//! stops at objects the remote holds (the remote's index files say which,
//! and what they name is always complete, see `push`); a fetch walks from
//! the remote head and reads only objects the local store lacks, in
//! coalesced ranged reads, checking every id before storing anything.

pub mod backend;
mod fetch;
pub mod known;
pub mod layout;
mod push;

pub use backend::{Backend, BackendError, Credentials, Location, ObjectBackend};
pub use fetch::{fetch, FetchStats};
pub use known::Known;
pub use layout::RemoteRef;
pub use push::{push_objects, PushStats};

use crate::id::Id;
use crate::store::StoreError;
use crate::tree::TreeError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("remote {remote}: {error}")]
    Backend { remote: String, error: BackendError },
    #[error("{what} on remote {remote} is damaged ({why}); no branch or working directory was changed; push it again from a good copy")]
    Damaged {
        remote: String,
        what: String,
        why: String,
    },
    #[error("remote {remote} lacks object {id}, which the pushed commits need; push them to it again from a complete copy")]
    Incomplete { remote: String, id: Id },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

pub type Result<T> = std::result::Result<T, SyncError>;

/// A named remote and its storage.
pub struct Remote {
    pub name: String,
    pub backend: Box<dyn Backend>,
}

impl Remote {
    pub fn err(&self) -> impl Fn(BackendError) -> SyncError + '_ {
        move |error| SyncError::Backend {
            remote: self.name.clone(),
            error,
        }
    }

    /// The newest value of a branch on the remote, with its generation.
    pub fn read_ref(&self, dot: &str, branch: &str) -> Result<Option<(u64, RemoteRef)>> {
        // A reader can race a pusher pruning old generations: list again.
        for _ in 0..3 {
            let dir = layout::ref_dir(dot, branch);
            let newest = self
                .backend
                .list(&dir)
                .map_err(self.err())?
                .into_iter()
                .filter_map(|(p, _)| {
                    let g = p.strip_prefix(&dir)?;
                    (g.len() == 20).then(|| g.parse::<u64>().ok())?
                })
                .max();
            let Some(generation) = newest else {
                return Ok(None);
            };
            let path = layout::ref_path(dot, branch, generation);
            if let Some(bytes) = self.backend.get(&path).map_err(self.err())? {
                return match RemoteRef::decode(&bytes) {
                    Some(r) => Ok(Some((generation, r))),
                    None => Err(SyncError::Damaged {
                        remote: self.name.clone(),
                        what: format!("ref {path}"),
                        why: "not a dot ref".into(),
                    }),
                };
            }
        }
        Err(SyncError::Damaged {
            remote: self.name.clone(),
            what: format!("branch {branch} of dot {dot}"),
            why: "its newest ref keeps disappearing".into(),
        })
    }

    /// Sets a branch to `value` if its newest generation is still
    /// `previous` (None: the branch does not exist). Returns false, having
    /// changed nothing, when another push got there first.
    pub fn write_ref(
        &self,
        dot: &str,
        branch: &str,
        previous: Option<u64>,
        value: &RemoteRef,
    ) -> Result<bool> {
        let generation = previous.map_or(1, |g| g + 1);
        let path = layout::ref_path(dot, branch, generation);
        if !self
            .backend
            .create(&path, value.encode())
            .map_err(self.err())?
        {
            return Ok(false);
        }
        // Older generations are history nobody reads; keep one behind the
        // newest for readers that listed just before this push.
        if generation > 2 {
            let _ = self
                .backend
                .delete(&layout::ref_path(dot, branch, generation - 2));
        }
        Ok(true)
    }
}
