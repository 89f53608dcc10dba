//! Working states: how a dot's directories differ from its branch, and
//! commits of them.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::reflog::log_move;
use super::{cache_prefix, human_bytes, ref_key, DotConfig, Repo, RepoError, Result};
use crate::chunker::Chunker;
use crate::env::ClientEnv;
use crate::id::CommitId;
use crate::progress::Progress;
use crate::store::{Batch, Space};
use crate::tree::commit::{read_root, write_root, Commit, Root};
use crate::tree::diff::{diff, Changed};
use crate::tree::DryRun;
use crate::workspace::cache::StatCache;
use crate::workspace::scan::Scanner;
use crate::workspace::WorkspaceError;

/// How a working state differs from its branch's last commit.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Status {
    pub changes: Vec<Changed>,
    /// Bytes of chunk data a commit would add to the store.
    pub new_bytes: u64,
    /// Total bytes of files in the working state.
    pub size: u64,
}

impl Repo {
    fn head_root(&self, cfg: &DotConfig) -> Result<Option<(CommitId, Root)>> {
        match self.branch_commit(&cfg.name, &cfg.head)? {
            Some(id) => {
                let c = Commit::read(&self.store, &id)?;
                Ok(Some((id, read_root(&self.store, &c.root)?)))
            }
            None => Ok(None),
        }
    }

    fn working_dir(cfg: &DotConfig, sub: &str) -> Result<PathBuf> {
        let s = &cfg.subdots[sub];
        match fs::metadata(&s.path) {
            Ok(m) if m.is_dir() => Ok(s.path.clone()),
            _ => Err(RepoError::Usage(format!(
                "the working directory {} of {}.{sub} is missing; recreate it (mkdir) or restore it with dot reset --hard HEAD",
                s.path.display(),
                cfg.name
            ))),
        }
    }

    /// Builds each subdot's working directory as a tree in memory (nothing
    /// is written) and hands `f` what it built, beside the branch's last
    /// commit: the trees read back from `objects`, and the bytes of files.
    pub(crate) fn with_working_trees<T>(
        &self,
        cfg: &DotConfig,
        progress: &dyn Progress,
        f: impl FnOnce(&DryRun, &Root, &Root, u64) -> Result<T>,
    ) -> Result<T> {
        let head = self.head_tops(cfg)?;
        let dry = DryRun::new(&self.store);
        let chunker = Chunker::new(cfg.chunking);
        let mut now = Root::new();
        let mut size = 0;
        for sub in cfg.subdots.keys() {
            let dir = Self::working_dir(cfg, sub)?;
            let cache = StatCache::new(&self.store, cache_prefix(&cfg.name, sub));
            let scanned = Scanner::new(&dry, chunker, &cache, false, progress).scan(&dir)?;
            size += scanned.bytes;
            now.insert(sub.clone(), scanned.top);
        }
        f(&dry, &head, &now, size)
    }

    /// Compares each subdot's working directory with the branch's last
    /// commit, without writing anything.
    pub(crate) fn status(&self, cfg: &DotConfig, progress: &dyn Progress) -> Result<Status> {
        self.with_working_trees(cfg, progress, |dry, head, now, size| {
            Ok(Status {
                changes: changes_between(cfg, dry, head, now)?,
                new_bytes: dry.new_bytes(),
                size,
            })
        })
    }

    /// The branch's last commit's root (empty before the first commit).
    pub(crate) fn head_tops(&self, cfg: &DotConfig) -> Result<Root> {
        Ok(self.head_root(cfg)?.map(|(_, r)| r).unwrap_or_default())
    }

    pub(crate) fn require_clean(&self, cfg: &DotConfig, progress: &dyn Progress) -> Result<()> {
        let st = self.status(cfg, progress)?;
        if st.changes.is_empty() {
            Ok(())
        } else {
            Err(RepoError::Dirty {
                dot: cfg.name.clone(),
                changes: st.changes.len(),
                bytes: human_bytes(st.new_bytes),
            })
        }
    }

    /// After a reset or checkout to `target` (a ref spec of the dot, or a
    /// branch) failed on a full disk: how much its files need, the sizes
    /// of the files the target adds or changes against the branch's
    /// commit.
    pub(crate) fn switch_room(&self, cfg: &DotConfig, target: &str, branch: bool) -> Option<u64> {
        let id = if branch {
            self.branch_commit(&cfg.name, target).ok()??
        } else {
            self.resolve_with_origin(cfg, target).ok()?.0
        };
        let to = read_root(&self.store, &Commit::read(&self.store, &id).ok()?.root).ok()?;
        let from = self
            .head_root(cfg)
            .ok()?
            .map(|(_, r)| r)
            .unwrap_or_default();
        let changes = changes_between(cfg, &self.store, &from, &to).ok()?;
        Some(
            changes
                .iter()
                .filter(|c| {
                    c.change != crate::tree::diff::Change::Deleted && !c.path.ends_with('/')
                })
                .map(|c| c.size_after)
                .sum(),
        )
    }

    /// After a commit failed on a full disk: how much its new data takes,
    /// what a dry run finds missing (as dot status counts it) and what the
    /// failed commit had stored, which is given back.
    pub(crate) fn commit_room(&self, cfg: &DotConfig) -> Option<u64> {
        let st = self.status(cfg, &crate::progress::Silent).ok()?;
        Some(st.new_bytes + self.store.pending_chunk_bytes())
    }

    /// Commits every subdot of the dot at once and moves its branch.
    pub(crate) fn commit(
        &self,
        cfg: &DotConfig,
        message: &str,
        metadata: BTreeMap<String, String>,
        env: &ClientEnv,
        progress: &dyn Progress,
    ) -> Result<CommitId> {
        let parent = self.branch_commit(&cfg.name, &cfg.head)?;
        let chunker = Chunker::new(cfg.chunking);
        let mut root = Root::new();
        let mut batch = Batch::default();
        for sub in cfg.subdots.keys() {
            let dir = Self::working_dir(cfg, sub)?;
            let cache = StatCache::new(&self.store, cache_prefix(&cfg.name, sub));
            let scanned = Scanner::new(&self.store, chunker, &cache, true, progress).scan(&dir)?;
            for (k, v) in scanned.cache_updates {
                batch.put(Space::Cache, k, v);
            }
            root.insert(sub.clone(), scanned.top);
        }
        env.test_pause("DOT_TEST_COMMIT_PAUSE_MS");
        if cfg!(debug_assertions) && env.get("DOT_TEST_COMMIT_PANIC").is_some() {
            panic!("DOT_TEST_COMMIT_PANIC is set");
        }
        if progress.cancelled() {
            return Err(WorkspaceError::Cancelled.into());
        }
        self.commit_root(cfg, parent, &root, batch, message, metadata, env)
    }

    /// The commit point: records a commit of `root` over `parent` and
    /// moves the branch to it (unless another commit moved it first),
    /// with `batch` in the same atomic write.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_root(
        &self,
        cfg: &DotConfig,
        parent: Option<CommitId>,
        root: &Root,
        mut batch: Batch,
        message: &str,
        metadata: BTreeMap<String, String>,
        env: &ClientEnv,
    ) -> Result<CommitId> {
        let (author, email) = self.author(env)?;
        let (time, tz_minutes) = now_and_tz();
        let commit = Commit {
            root: write_root(&self.store, root)?,
            parents: parent.into_iter().collect(),
            author,
            email,
            time,
            tz_minutes,
            message: message.to_string(),
            metadata,
        };
        let id = commit.write(&self.store)?;
        let key = ref_key(&cfg.name, &cfg.head);
        batch.expect(
            Space::Refs,
            key.clone(),
            Some(parent.map(|p| p.0 .0.to_vec()).unwrap_or_default()),
        );
        batch.put(Space::Refs, key, id.0 .0.to_vec());
        let summary = message.lines().next().unwrap_or_default();
        log_move(
            &mut batch,
            &cfg.name,
            &cfg.head,
            parent,
            Some(id),
            &format!("commit: {summary}"),
        );
        self.store.commit(batch)?;
        Ok(id)
    }

    /// Who commits: `user.name` and `user.email`, else the caller's
    /// DOT_AUTHOR_NAME, DOT_AUTHOR_EMAIL and USER.
    fn author(&self, env: &ClientEnv) -> Result<(String, String)> {
        let name = match self.config_get("user.name")? {
            Some(n) => n,
            None => env
                .get("DOT_AUTHOR_NAME")
                .or_else(|| env.get("USER"))
                .map(str::to_string)
                .or_else(login_name)
                .unwrap_or_else(|| "unknown".into()),
        };
        let email = match self.config_get("user.email")? {
            Some(e) => e,
            None => env
                .get("DOT_AUTHOR_EMAIL")
                .map(str::to_string)
                .unwrap_or_else(|| format!("{name}@{}", hostname())),
        };
        Ok((name, email))
    }

    /// The branch's commits, newest first.
    pub(crate) fn log(&self, cfg: &DotConfig) -> Result<Vec<(CommitId, Commit)>> {
        let mut out = Vec::new();
        let mut next = self.branch_commit(&cfg.name, &cfg.head)?;
        while let Some(id) = next {
            let c = Commit::read(&self.store, &id)?;
            next = c.parents.first().copied();
            out.push((id, c));
        }
        Ok(out)
    }
}

/// The name of the effective user, from the password database.
fn login_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf`, whose sizes are
    // given, and `pw_name` points into `buf` when it succeeds.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        let r = libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        );
        if r != 0 || out.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// This machine's name (uname's nodename).
fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Now, in seconds since the epoch, and the local timezone offset.
fn now_and_tz() -> (i64, i32) {
    let now = chrono::Local::now();
    (now.timestamp(), now.offset().local_minus_utc() / 60)
}

/// What turns the branch's commit `head` into working state `now`, both
/// readable from `objects`: each subdot's changes, its top directory's
/// own attributes included (PostgreSQL insists on 0700; its mtime, like
/// any directory's, does not count), and the subdots the commit has that
/// the dot no longer does.
pub(crate) fn changes_between(
    cfg: &DotConfig,
    objects: &dyn crate::tree::Objects,
    head: &Root,
    now: &Root,
) -> Result<Vec<Changed>> {
    let mut changes = Vec::new();
    for (sub, t) in now {
        let prefix = cfg.display_prefix(sub);
        if head
            .get(sub)
            .is_some_and(|h| (h.mode, h.uid, h.gid) != (t.mode, t.uid, t.gid))
        {
            changes.push(Changed {
                path: if prefix.is_empty() {
                    "./".into()
                } else {
                    prefix.clone()
                },
                change: crate::tree::diff::Change::Modified,
                size_before: 0,
                size_after: 0,
            });
        }
        diff(
            objects,
            head.get(sub).map(|t| &t.tree),
            Some(&t.tree),
            &prefix,
            &mut changes,
        )?;
    }
    for (sub, top) in head {
        if !cfg.subdots.contains_key(sub) {
            diff(
                objects,
                Some(&top.tree),
                None,
                &format!("{sub}/"),
                &mut changes,
            )?;
        }
    }
    Ok(changes)
}
