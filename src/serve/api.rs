//! The requests a `dot` command makes and the reports it gets back: one set
//! of serde types for `--json`, for the CLI run in-process, and for the
//! daemon's socket (docs/design.md, "Serving").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkParams;
use crate::env::ClientEnv;
use crate::id::CommitId;
use crate::repo::remote::{PullReport, PushReport, RemoteConfig, Upstream};
use crate::repo::{BranchInfo, ErrorKind, FsckReport, MountRecord, MountedDot, RepoError};
use crate::store::GcStats;
use crate::sync::CreateCheck;
use crate::tree::diff::{Change, Changed};

/// Client and daemon refuse each other unless these match exactly.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One command: what to do, and the environment it was asked in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    pub env: ClientEnv,
    pub request: Request,
    /// The process that asked: the daemon takes it from the socket; a
    /// process that runs its own command is its own client.
    #[serde(skip)]
    pub client: Option<u32>,
}

/// Where a push or pull goes; parts left out default as in `repo::remote::Target`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetArgs {
    pub remote: Option<String>,
    pub remote_dot: Option<String>,
    pub branch: Option<String>,
}

/// What a command asks. Paths are absolute: the client resolves them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Init {
        spec: String,
        path: Option<PathBuf>,
        chunking: Option<ChunkParams>,
    },
    Path {
        spec: Option<String>,
    },
    Commit {
        dot: Option<String>,
        message: String,
        metadata: BTreeMap<String, String>,
    },
    Diff {
        dot: Option<String>,
    },
    Status {
        dot: Option<String>,
    },
    Reset {
        dot: Option<String>,
        refspec: String,
        /// On a mounted dot: even while files on it are open.
        #[serde(default)]
        force: bool,
        /// Refuse while running containers use the dot, instead of
        /// stopping them and starting them again.
        #[serde(default)]
        no_restart: bool,
    },
    Log {
        dot: Option<String>,
    },
    Checkout {
        dot: Option<String>,
        branch: String,
        create: bool,
        /// On a mounted dot: even while files on it are open.
        #[serde(default)]
        force: bool,
        /// Refuse while running containers use the dot, instead of
        /// stopping them and starting them again.
        #[serde(default)]
        no_restart: bool,
    },
    Branches {
        dot: Option<String>,
    },
    DeleteBranch {
        dot: Option<String>,
        branch: String,
    },
    List,
    Switch {
        dot: String,
    },
    /// The dot a name (or the current dot) resolves to, before `dot rm`
    /// asks for confirmation.
    Resolve {
        dot: Option<String>,
    },
    Remove {
        dot: String,
    },
    Gc {
        /// Keep nothing for the reflog: free what only it names now.
        #[serde(default)]
        prune_now: bool,
    },
    Reflog {
        dot: Option<String>,
    },
    Fsck,
    /// `dot gc --remote`: free what no branch on the remote reaches.
    GcRemote {
        remote: String,
        #[serde(default)]
        prune_now: bool,
    },
    /// `dot fsck --remote`.
    FsckRemote {
        remote: String,
        #[serde(default)]
        read_data: bool,
    },
    ConfigGet {
        key: String,
    },
    ConfigSet {
        key: String,
        value: String,
    },
    DotConfigGet {
        dot: String,
        key: String,
    },
    DotConfigSet {
        dot: String,
        key: String,
        value: String,
    },
    RemoteAdd {
        name: String,
        url: String,
        endpoint: Option<String>,
        region: Option<String>,
        single_writer: bool,
    },
    RemoteRemove {
        name: String,
    },
    Remotes,
    Push {
        dot: Option<String>,
        target: TargetArgs,
        force: bool,
    },
    Pull {
        dot: Option<String>,
        target: TargetArgs,
    },
    Clone {
        remote: String,
        remote_dot: String,
        local_name: Option<String>,
        branch: Option<String>,
        allow_special_files: bool,
    },
    /// A read-only view of `spec` (`DOT@REF`) at `at` (absolute).
    Mount {
        spec: String,
        at: PathBuf,
    },
    Unmount {
        at: PathBuf,
    },
    Mounts,
    /// The dot's working state becomes a read-write mount.
    MountDot {
        dot: Option<String>,
    },
    UnmountDot {
        dot: String,
    },
}

impl Request {
    /// The dot a request changes (and so must have to itself), if any.
    pub(crate) fn dot_written(&self) -> Option<Option<&str>> {
        use Request::*;
        match self {
            Commit { dot, .. }
            | Reset { dot, .. }
            | Checkout { dot, .. }
            | DeleteBranch { dot, .. }
            | Push { dot, .. }
            | Pull { dot, .. } => Some(dot.as_deref()),
            Remove { dot } | DotConfigSet { dot, .. } => Some(Some(dot.as_str())),
            // Held against dot rm; and gc must not take a commit only the
            // view is about to keep.
            Mount { spec, .. } => Some(Some(spec.split('@').next().unwrap_or(spec))),
            MountDot { dot } => Some(dot.as_deref()),
            UnmountDot { dot } => Some(Some(dot.as_str())),
            Init { spec, .. } => Some(Some(spec.split('.').next().unwrap_or(spec))),
            Clone {
                local_name,
                remote_dot,
                ..
            } => Some(Some(local_name.as_deref().unwrap_or(remote_dot))),
            _ => None,
        }
    }

    /// Whether a request writes objects, depends on objects no ref names
    /// yet, or reads every stored object (fsck), so that gc must not run
    /// meanwhile.
    pub(crate) fn excludes_gc(&self) -> bool {
        // Status, diff and list of a mounted dot store the trees they
        // build, which gc would give back (`Store::gc`).
        self.dot_written().is_some()
            || matches!(
                self,
                Request::Fsck | Request::Status { .. } | Request::Diff { .. } | Request::List
            )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitReport {
    pub dot: String,
    pub subdot: String,
    pub branch: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitReport {
    pub dot: String,
    pub branch: String,
    pub commit: CommitId,
    /// On a mounted dot: how long writes were held, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_ms: Option<u64>,
    /// On a mounted dot: how long changes of names and attributes
    /// waited (the build of what showed at the commit's freeze; writes of
    /// data went on), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResetReport {
    pub dot: String,
    pub branch: String,
    pub commit: CommitId,
    /// Containers stopped for the switch and started again.
    #[serde(default)]
    pub restarted: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckoutReport {
    pub dot: String,
    pub branch: String,
    pub created: bool,
    /// Containers stopped for the switch and started again.
    #[serde(default)]
    pub restarted: Vec<String>,
}

/// One commit of `dot log`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    pub commit: CommitId,
    pub parents: Vec<CommitId>,
    pub author: String,
    pub email: String,
    pub time: i64,
    pub tz_minutes: i32,
    pub message: String,
    pub metadata: BTreeMap<String, String>,
}

/// How a dot's working state differs from its branch's last commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiffReport {
    pub dot: String,
    pub branch: String,
    pub clean: bool,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    /// Bytes of data a commit would add.
    pub new_bytes: u64,
    pub changes: Vec<Changed>,
}

impl DiffReport {
    pub(crate) fn new(
        dot: &str,
        branch: &str,
        changes: Vec<Changed>,
        new_bytes: u64,
    ) -> DiffReport {
        let count = |c: Change| changes.iter().filter(|x| x.change == c).count();
        DiffReport {
            dot: dot.to_string(),
            branch: branch.to_string(),
            clean: changes.is_empty(),
            added: count(Change::Added),
            modified: count(Change::Modified),
            deleted: count(Change::Deleted),
            new_bytes,
            changes,
        }
    }
}

/// One row of `dot list`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListEntry {
    pub name: String,
    pub current: bool,
    pub branch: String,
    pub size: u64,
    pub commits: usize,
    pub dirty: bool,
    pub dirty_bytes: u64,
    pub changes: usize,
    /// Whether its working state is a mount.
    #[serde(default)]
    pub mounted: bool,
    /// A mount no daemon serves: size, dirty and changes are unknown.
    #[serde(default)]
    pub unread: bool,
    /// Running containers that use it, as Docker names them.
    #[serde(default)]
    pub containers: Vec<String>,
}

/// `dot status`: where a dot is and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub dot: String,
    pub branch: String,
    pub head: Option<CommitId>,
    /// `plain` (a directory per subdot) or `mounted` (a FUSE mount).
    pub working_state: String,
    pub subdots: BTreeMap<String, PathBuf>,
    pub size: u64,
    pub clean: bool,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    pub new_bytes: u64,
    pub upstream: Option<Upstream>,
    /// Whether special files from remotes are allowed.
    pub allow_special_files: bool,
    /// Running containers that use it, as Docker names them.
    #[serde(default)]
    pub containers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteAddReport {
    pub name: String,
    pub single_writer: bool,
    /// What the storage was found to do, or why it could not be checked.
    pub check: Option<CreateCheck>,
    pub check_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveReport {
    pub dot: String,
    /// Adopted directories, which dot never deletes.
    pub kept: Vec<PathBuf>,
}

/// What a command reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Init(InitReport),
    Path(PathBuf),
    Commit(CommitReport),
    Diff(DiffReport),
    Status(StatusReport),
    Reset(ResetReport),
    Log(Vec<LogEntry>),
    Reflog(Vec<crate::repo::reflog::RefMove>),
    Checkout(CheckoutReport),
    Branches(Vec<BranchInfo>),
    BranchDeleted { dot: String, branch: String },
    List(Vec<ListEntry>),
    Switched { dot: String },
    Resolved { dot: String },
    Removed(RemoveReport),
    Gc(GcStats),
    Fsck(FsckReport),
    GcRemote(crate::sync::RemoteGcStats),
    FsckRemote(crate::sync::RemoteFsckReport),
    Config(Option<String>),
    Done,
    RemoteAdded(RemoteAddReport),
    Remotes(Vec<RemoteConfig>),
    Push(PushReport),
    Pull(PullReport),
    Clone(PullReport),
    Mounted(MountRecord),
    Unmounted(MountRecord),
    Mounts(Vec<MountRecord>),
    MountedDot(MountedDot),
    UnmountedDot(MountedDot),
}

/// An error as it crosses the socket: its kind (and so its exit code)
/// and its message, unchanged.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub message: String,
    /// A full disk caused it (`RepoError::disk_full`).
    #[serde(default)]
    pub disk_full: bool,
}

impl ErrorReport {
    pub fn new(kind: ErrorKind, message: String) -> ErrorReport {
        ErrorReport {
            kind,
            message,
            disk_full: false,
        }
    }
}

impl From<&RepoError> for ErrorReport {
    fn from(e: &RepoError) -> Self {
        ErrorReport {
            kind: e.kind(),
            message: e.to_string(),
            disk_full: e.disk_full(),
        }
    }
}

/// What travels on the socket while a command runs: progress, then the
/// outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Start {
        what: String,
        total: u64,
    },
    Advance {
        n: u64,
    },
    Finish,
    /// A warning for stderr (such as a finished interrupted reset).
    Note {
        text: String,
    },
    Ok(Box<Response>),
    Err(ErrorReport),
}

/// `dot daemon status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    pub home: PathBuf,
    pub socket: PathBuf,
    pub uptime_seconds: u64,
    pub requests_served: u64,
    /// Requests being carried out now.
    pub running: Vec<RunningRequest>,
    /// Directories where it serves views.
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    pub stopping: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunningRequest {
    pub op: String,
    pub seconds: u64,
}

/// What `POST /v1/stop` asks.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StopRequest {
    /// Cancel running requests instead of letting them finish.
    pub force: bool,
}

impl Request {
    /// The request's name, as `dot daemon status` shows it.
    pub(crate) fn op(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_string))
            .unwrap_or_default()
    }
}
