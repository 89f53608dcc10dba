//! What can go wrong, by kind. Every error the library returns has a kind
//! (`RepoError::kind`), and each kind a stable exit code (README), so that
//! scripts, the daemon's clients and the Docker plugin can tell a refusal
//! from damage or a network failure without reading the message.

use std::io;

use crate::store::StoreError;
use crate::sync::{BackendError, SyncError};
use crate::tree::TreeError;
use crate::workspace::WorkspaceError;

/// The kinds of error, with their exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad input: a name, a ref, an option; the message says what to give.
    Usage,
    /// A dot, branch, remote or commit that does not exist.
    NotFound,
    /// The state is not what the operation needs: uncommitted changes, a
    /// non-fast-forward push or pull, a lost push race.
    Conflict,
    /// Another process holds what the operation needs.
    Busy,
    /// Stored data or a remote's data breaks the format's rules.
    Damaged,
    /// A local file could not be read or written (a full disk included).
    Io,
    /// The remote or the network failed.
    Remote,
    /// Not allowed: file permissions, credentials.
    Permission,
    /// Refused for safety: what a remote holds would need the user's
    /// permission, or could not be materialized here.
    Refused,
    /// Cancelled by the user (Ctrl-C).
    Cancelled,
    /// A bug in dot (the daemon caught a panic); exits 1, as any
    /// unforeseen error.
    Internal,
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::Conflict => 4,
            ErrorKind::Busy => 5,
            ErrorKind::Damaged => 6,
            ErrorKind::Io => 7,
            ErrorKind::Remote => 8,
            ErrorKind::Permission => 9,
            ErrorKind::Refused => 10,
            ErrorKind::Cancelled => 130,
            ErrorKind::Internal => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// Bad input from the user; the message says what to do.
    #[error("{0}")]
    Usage(String),
    #[error("dot {0} does not exist; see dot list, or create it with dot init {0}")]
    NoSuchDot(String),
    #[error("no current dot; name one, or pick one with dot switch NAME (see dot list)")]
    NoCurrentDot,
    #[error("dot {dot} has no branch {branch}; see dot branch")]
    NoSuchBranch { dot: String, branch: String },
    /// Another thing that does not exist (a remote, a commit, a remote
    /// branch); the message names it and where to look.
    #[error("{0}")]
    NotFound(String),
    #[error("dot {dot} has {changes} uncommitted change(s) ({bytes} of new data); commit them or run dot reset --hard HEAD")]
    Dirty {
        dot: String,
        changes: usize,
        bytes: String,
    },
    #[error("the dot configuration {0} is damaged: {1}")]
    Config(String, String),
    /// Stored objects that break the format's rules.
    #[error("{what} is damaged: {why}; run dot fsck")]
    Damaged { what: String, why: String },
    /// An operation refused because carrying it out could harm the
    /// system or the store; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The state is not what the operation needs (a push that lost a
    /// race, a non-fast-forward push or pull).
    #[error("{0}")]
    Conflict(String),
    /// Something is in use; the message names what uses it.
    #[error("{0}")]
    Busy(String),
    /// A local file or directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// A full disk stopped an operation that knows how much room it
    /// needed (`RepoError::needing`).
    #[error("{source}; {what} {} on this disk", crate::repo::human_bytes(*.needed))]
    NoRoom {
        what: String,
        needed: u64,
        source: Box<RepoError>,
    },
    /// An operation recorded in a journal that could not be finished.
    #[error("{what}: {source}; {hint}")]
    Unfinished {
        what: String,
        source: Box<RepoError>,
        hint: String,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl From<StoreError> for RepoError {
    fn from(e: StoreError) -> Self {
        RepoError::Workspace(e.into())
    }
}
impl From<TreeError> for RepoError {
    fn from(e: TreeError) -> Self {
        RepoError::Workspace(e.into())
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        _ => ErrorKind::Io,
    }
}

fn store_kind(e: &StoreError) -> ErrorKind {
    match e {
        StoreError::Locked { .. } => ErrorKind::Busy,
        StoreError::Open { msg, .. } if msg.starts_with("Corruption") => ErrorKind::Damaged,
        StoreError::Open { .. } => ErrorKind::Io,
        StoreError::Missing(_)
        | StoreError::Damaged { .. }
        | StoreError::Index(_)
        | StoreError::IndexLost(_) => ErrorKind::Damaged,
        StoreError::Io { source, .. } => io_kind(source),
        StoreError::Conflict(_) => ErrorKind::Conflict,
    }
}

fn tree_kind(e: &TreeError) -> ErrorKind {
    match e {
        TreeError::Store(s) => store_kind(s),
        TreeError::TooLarge(_) => ErrorKind::Usage,
        TreeError::Corrupt { .. } => ErrorKind::Damaged,
    }
}

impl RepoError {
    pub fn io(context: impl Into<String>, source: io::Error) -> RepoError {
        RepoError::Io {
            context: context.into(),
            source,
        }
    }

    /// Who holds the store, when this error is that another process does.
    pub fn store_holder(&self) -> Option<&str> {
        match self {
            RepoError::Workspace(WorkspaceError::Tree(TreeError::Store(StoreError::Locked {
                holder,
                ..
            }))) => Some(holder),
            _ => None,
        }
    }

    /// When a full disk caused this error: the error, saying that `what`
    /// (as "the commit's new data needs") `needed()` bytes (asked only
    /// then; None leaves it as is).
    pub fn needing(self, what: &str, needed: impl FnOnce() -> Option<u64>) -> RepoError {
        if !self.disk_full() {
            return self;
        }
        match needed() {
            Some(needed) => RepoError::NoRoom {
                what: what.to_string(),
                needed,
                source: Box::new(self),
            },
            None => self,
        }
    }

    /// Whether a full disk caused this error (ENOSPC anywhere in its
    /// causes).
    pub fn disk_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::StorageFull)
            {
                return true;
            }
            cause = e.source();
        }
        // Only local I/O counts (RocksDB's errors are turned into I/O
        // errors where they arise): a remote's full disk is the remote's.
        false
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RepoError::Workspace(w) => match w {
                WorkspaceError::Tree(t) => tree_kind(t),
                WorkspaceError::Read { source, .. } | WorkspaceError::Write { source, .. } => {
                    io_kind(source)
                }
                WorkspaceError::Changed { .. } => ErrorKind::Conflict,
                WorkspaceError::TooDeep { .. } => ErrorKind::Refused,
                WorkspaceError::Cancelled => ErrorKind::Cancelled,
            },
            RepoError::Usage(_) => ErrorKind::Usage,
            RepoError::NoSuchDot(_)
            | RepoError::NoCurrentDot
            | RepoError::NoSuchBranch { .. }
            | RepoError::NotFound(_) => ErrorKind::NotFound,
            RepoError::Dirty { .. } | RepoError::Conflict(_) => ErrorKind::Conflict,
            RepoError::Busy(_) => ErrorKind::Busy,
            RepoError::Config(..) | RepoError::Damaged { .. } => ErrorKind::Damaged,
            RepoError::Refused(_) => ErrorKind::Refused,
            RepoError::Io { source, .. } => io_kind(source),
            RepoError::Unfinished { source, .. } | RepoError::NoRoom { source, .. } => {
                source.kind()
            }
            RepoError::Sync(s) => match s {
                SyncError::Backend { error, .. } => match error {
                    BackendError::Denied(_) => ErrorKind::Permission,
                    BackendError::NotFound(_) => ErrorKind::NotFound,
                    BackendError::Damaged(_) => ErrorKind::Damaged,
                    BackendError::Unreachable(_) | BackendError::Other(_) => ErrorKind::Remote,
                },
                SyncError::Damaged { .. } | SyncError::Incomplete { .. } => ErrorKind::Damaged,
                SyncError::Cancelled => ErrorKind::Cancelled,
                SyncError::GcPending(_) => ErrorKind::Busy,
                SyncError::Store(e) => store_kind(e),
                SyncError::Tree(e) => tree_kind(e),
            },
        }
    }
}
