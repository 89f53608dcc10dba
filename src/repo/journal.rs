//! Reset, checkout, and the roll-forward journal behind them (and behind
//! pull and clone): a plan is checked before anything is written, recorded
//! in one synced batch, carried out, and finished in one more. An
//! interrupted run is finished by the next command (`replay`).
//!
//! Key: `meta` `journal/<dot>` -> JSON `Journal` (docs/design.md 10.2).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::names::{check_branch, check_subdot};
use super::reflog::log_move;
use super::{cache_prefix, journal_key, ref_key, DotConfig, Repo, RepoError, Result, SubdotConfig};
use crate::id::{CommitId, Id, TreeId};
use crate::progress::Progress;
use crate::store::{Batch, Space};
use crate::tree::commit::{read_root, Commit, Root, Top};
use crate::tree::verify::{Contents, Verifier};
use crate::workspace::cache::StatCache;
use crate::workspace::materialize::{CacheOp, Materializer};

/// The longest path the system's calls take (PATH_MAX less its NUL).
const MAX_PATH: usize = 4095;

/// An interrupted reset or checkout, replayed by the next command.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Journal {
    pub branch: String,
    /// Move `branch` to this commit (reset); None leaves it (checkout).
    pub commit: Option<String>,
    /// Make `branch` the dot's current branch (checkout).
    pub set_head: bool,
    /// What each subdot's working directory must hold; None is empty.
    pub targets: BTreeMap<String, Option<TopJson>>,
    /// The command, for the reflog entry of the branch's move.
    #[serde(default)]
    pub command: String,
}

impl Journal {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal serializes")
    }

    /// Parses a journal and checks every name in it: the branch, the
    /// commit id and each subdot, which becomes a directory name.
    pub(crate) fn decode(dot: &str, bytes: &[u8]) -> Result<Journal> {
        let bad = |why: String| RepoError::Config(format!("journal/{dot}"), why);
        let j: Journal = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        check_branch(&j.branch).map_err(|e| bad(e.to_string()))?;
        if j.commit
            .as_deref()
            .is_some_and(|c| Id::from_hex(c).is_none())
        {
            return Err(bad("bad commit id".into()));
        }
        for sub in j.targets.keys() {
            check_subdot(sub).map_err(|e| bad(e.to_string()))?;
        }
        Ok(j)
    }

    fn commit(&self) -> Option<CommitId> {
        self.commit.as_deref().and_then(Id::from_hex).map(CommitId)
    }
}

#[derive(Debug, Serialize, Deserialize, Clone, Copy)]
pub(super) struct TopJson {
    tree: [u8; 32],
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
}

impl From<Top> for TopJson {
    fn from(t: Top) -> Self {
        TopJson {
            tree: t.tree.0 .0,
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            mtime_ns: t.mtime_ns,
        }
    }
}
impl From<TopJson> for Top {
    fn from(t: TopJson) -> Self {
        Top {
            tree: TreeId(Id(t.tree)),
            mode: t.mode,
            uid: t.uid,
            gid: t.gid,
            mtime_ns: t.mtime_ns,
        }
    }
}

/// Whether a target commit was checked where it came from: commits local
/// branches reach were made here or verified when they arrived; any other
/// commit (an id no branch reaches) is verified whole before it is
/// materialized, and its special entries need the dot's permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Verified,
    Unverified,
}

impl Repo {
    /// Every unfinished reset or checkout, by dot.
    pub(super) fn journals(&self) -> Result<Vec<(String, Result<Journal>)>> {
        let mut out = Vec::new();
        self.store.scan_kv(Space::Meta, b"journal/", |k, v| {
            let dot = String::from_utf8_lossy(&k[b"journal/".len()..]).into_owned();
            out.push((dot.clone(), Journal::decode(&dot, v)));
            Ok(true)
        })?;
        Ok(out)
    }

    /// How to get past an operation that could not be finished.
    pub(crate) fn unfinished_hint(&self, dot: &str) -> String {
        let unborn = self
            .dot(dot)
            .and_then(|cfg| self.branch_commit(&cfg.name, &cfg.head))
            .map_or(true, |c| c.is_none());
        if unborn {
            format!("fix that and run dot again, or remove the unfinished dot with dot rm -f {dot}")
        } else {
            format!("fix that and run dot again, or drop the unfinished operation and go back to the last commit with dot reset --hard HEAD {dot}")
        }
    }

    /// `dot reset --hard REF`: moves the branch to REF and makes every
    /// working directory match it, discarding uncommitted changes.
    pub(crate) fn reset_hard(
        &self,
        cfg: &DotConfig,
        spec: &str,
        progress: &dyn Progress,
    ) -> Result<CommitId> {
        let (target, origin) = self.resolve_with_origin(cfg, spec)?;
        if origin == Origin::Unverified {
            self.verify_commit(target, cfg, None)?;
        }
        let mut journal = self.plan(cfg, cfg.head.clone(), Some(target), false, origin)?;
        journal.command = format!("reset --hard {spec}");
        self.run(cfg, journal, progress)?;
        Ok(target)
    }

    /// `dot checkout [-b] BRANCH`: refused while there are uncommitted
    /// changes; with `create`, starts a new branch at the current commit.
    pub(crate) fn checkout(
        &self,
        cfg: &DotConfig,
        branch: &str,
        create: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.check_switch(cfg, branch, create)?;
        self.require_clean(cfg, progress)?;
        if create {
            // Only the head moves: the working directories stay as they are.
            return self.switch_branch(cfg, branch, true).map(|_| ());
        }
        let journal = self.plan(cfg, branch.to_string(), None, true, Origin::Verified)?;
        self.run(cfg, journal, progress)
    }

    /// The working directory a subdot has, or will have once a journal
    /// adds it.
    pub(super) fn subdot_dir(&self, cfg: &DotConfig, sub: &str) -> PathBuf {
        match cfg.subdots.get(sub) {
            Some(s) => s.path.clone(),
            None => self.work_dir(&cfg.name).join(sub),
        }
    }

    /// Plans making the dot's working directories hold `commit` (or
    /// `branch`'s commit), and checks that they can before anything is
    /// written: every target tree is within the depth limit, fits the
    /// system's path length under its directory, and, unless its commit
    /// was verified where it came from or the dot allows them, holds no
    /// device node, setuid or setgid file or `security.*` attribute.
    pub(super) fn plan(
        &self,
        cfg: &DotConfig,
        branch: String,
        commit: Option<CommitId>,
        set_head: bool,
        origin: Origin,
    ) -> Result<Journal> {
        let target = match commit {
            Some(c) => Some(c),
            None => self.branch_commit(&cfg.name, &branch)?,
        };
        let root = match target {
            Some(c) => read_root(&self.store, &Commit::read(&self.store, &c)?.root)?,
            None => Root::new(),
        };
        let mut verifier = Verifier::new(&self.store, Contents::Skip, true);
        for (sub, top) in &root {
            let at = format!(
                "commit {} {sub}:",
                target.map_or(String::new(), |c| c.short())
            );
            let facts = verifier.top(top, &at);
            if let Some((where_, why)) = verifier.problems.first() {
                return Err(RepoError::Damaged {
                    what: where_.clone(),
                    why: why.clone(),
                });
            }
            let facts = facts.expect("no problems");
            let dir = self.subdot_dir(cfg, sub);
            let longest = dir.as_os_str().len() + 1 + facts.longest;
            if longest > MAX_PATH {
                return Err(RepoError::Refused(format!(
                    "{at} holds a path of {longest} bytes under {}, longer than the {MAX_PATH} this system allows; nothing was changed",
                    dir.display()
                )));
            }
            if let (Origin::Unverified, Some((path, what))) = (origin, &facts.special) {
                if !cfg.allow_special_files {
                    return Err(special_refused(
                        &cfg.name,
                        &format!("{at}/{path}"),
                        what,
                        None,
                    ));
                }
            }
        }
        let mut targets = BTreeMap::new();
        for sub in cfg.subdots.keys().chain(root.keys()) {
            targets.insert(sub.clone(), root.get(sub).map(|t| TopJson::from(*t)));
        }
        Ok(Journal {
            branch,
            commit: commit.map(|c| c.0.to_hex()),
            set_head,
            targets,
            command: String::new(),
        })
    }

    /// Records the journal durably, then carries it out.
    pub(super) fn run(
        &self,
        cfg: &DotConfig,
        journal: Journal,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.run_with(cfg, journal, Batch::default(), progress)
    }

    /// `run`, recording the changes in `b` atomically with the journal.
    /// Objects put so far are made durable first.
    pub(super) fn run_with(
        &self,
        cfg: &DotConfig,
        journal: Journal,
        mut b: Batch,
        progress: &dyn Progress,
    ) -> Result<()> {
        // The last moment to stop: once the journal is written, the
        // operation is finished, by this run or the next command.
        if progress.cancelled() {
            return Err(crate::workspace::WorkspaceError::Cancelled.into());
        }
        b.put(Space::Meta, journal_key(&cfg.name), journal.encode());
        self.store.commit(b)?;
        self.replay(&cfg.name, &journal, progress)
            .map_err(|e| RepoError::Unfinished {
                what: format!(
                    "could not finish updating the working directories of dot {}",
                    cfg.name
                ),
                source: Box::new(e),
                hint: self.unfinished_hint(&cfg.name),
            })
    }

    /// Materializes a journal's targets, then in one batch moves the ref or
    /// HEAD, records the stat cache and drops the journal. Idempotent, so an
    /// interrupted run is finished by running it again.
    pub(super) fn replay(
        &self,
        dot: &str,
        journal: &Journal,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut cfg = self.dot(dot)?;
        let mut b = Batch::default();
        for (sub, top) in &journal.targets {
            if !cfg.subdots.contains_key(sub) {
                let path = self.subdot_dir(&cfg, sub);
                cfg.subdots.insert(
                    sub.clone(),
                    SubdotConfig {
                        path,
                        adopted: false,
                    },
                );
            }
            let dir = &cfg.subdots[sub].path;
            let cache = StatCache::new(&self.store, cache_prefix(dot, sub));
            let top = top.map(Top::from);
            let ops = Materializer::new(&self.store, &cache, progress).apply(dir, top.as_ref())?;
            for op in ops {
                match op {
                    CacheOp::Put(k, v) => b.put(Space::Cache, k, v),
                    CacheOp::DeleteTree(rel) => {
                        let mut exact = cache.key(&rel);
                        if rel.is_empty() {
                            b.delete_prefix(Space::Cache, exact);
                        } else {
                            b.delete(Space::Cache, exact.clone());
                            exact.push(b'/');
                            b.delete_prefix(Space::Cache, exact);
                        }
                    }
                }
            }
        }
        if let Some(id) = journal.commit() {
            let old = self.branch_commit(dot, &journal.branch).unwrap_or(None);
            b.put(Space::Refs, ref_key(dot, &journal.branch), id.0 .0.to_vec());
            log_move(
                &mut b,
                dot,
                &journal.branch,
                old,
                Some(id),
                &journal.command,
            );
        }
        if journal.set_head {
            cfg.head = journal.branch.clone();
        }
        Self::put_dot(&mut b, &cfg);
        b.delete(Space::Meta, journal_key(dot));
        Ok(self.store.write(b)?)
    }

    /// Verifies everything `commit` reaches that the branches of `cfg`'s
    /// dot do not (see `tree::verify`), reading chunk lengths from the
    /// index. With `remote`, problems name it and special entries are
    /// refused unless the dot allows them.
    pub(super) fn verify_commit(
        &self,
        commit: CommitId,
        cfg: &DotConfig,
        remote: Option<&str>,
    ) -> Result<()> {
        let trusted = self.complete_commits(Some(&cfg.name))?;
        let mut v = Verifier::new(&self.store, Contents::Lengths, true);
        let at = format!("commit {}", commit.short());
        v.commit(commit, &at, &|c| trusted.contains(c));
        if let Some((where_, why)) = v.problems.into_iter().next() {
            return Err(match remote {
                Some(name) => crate::sync::SyncError::Damaged {
                    remote: name.to_string(),
                    what: where_,
                    why,
                }
                .into(),
                None => RepoError::Damaged { what: where_, why },
            });
        }
        match (remote, v.special) {
            (Some(name), Some((where_, what))) if !cfg.allow_special_files => {
                Err(special_refused(&cfg.name, &where_, &what, Some(name)))
            }
            _ => Ok(()),
        }
    }

    /// `$DOT_HOME/work/<dot>`, where the directories dot creates for a dot
    /// live ('/' in the name becomes '+').
    pub(super) fn work_dir(&self, dot: &str) -> PathBuf {
        self.home().join("work").join(dot.replace('/', "+"))
    }
}

/// The refusal of an entry dot creates only where the dot allows it.
fn special_refused(dot: &str, at: &str, what: &str, remote: Option<&str>) -> RepoError {
    let from = remote.map_or("a commit no branch reaches".to_string(), |r| {
        format!("remote {r}")
    });
    RepoError::Refused(format!(
        "{at} is {what}, from {from}; dot does not create device nodes, setuid or setgid files or security.* attributes from a remote unless the dot allows them. If you trust everyone who can write to it, allow them with dot config --dot {dot} allowSpecialFiles true (or dot clone --allow-special-files) and run the command again; nothing was changed"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_journal_parses_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Journal::decode("d", &bytes);
        }

        #[test]
        fn journal_names_are_checked(sub in ".{0,70}", branch in ".{0,70}") {
            let j = serde_json::json!({
                "branch": branch, "commit": null, "set_head": true,
                "targets": {sub.clone(): null},
            });
            let parsed = Journal::decode("d", j.to_string().as_bytes());
            let legal = check_subdot(&sub).is_ok() && check_branch(&branch).is_ok();
            prop_assert_eq!(parsed.is_ok(), legal);
        }
    }

    #[test]
    fn a_journal_cannot_name_a_path() {
        for sub in ["../x", "/etc", "..", "a/b", ""] {
            let j = format!(
                r#"{{"branch":"master","commit":null,"set_head":false,"targets":{{"{sub}":null}}}}"#
            );
            assert!(Journal::decode("d", j.as_bytes()).is_err(), "{sub}");
        }
    }
}
