//! Records of the read-only views the daemon serves (docs/design.md
//! 16.1): which commit of which dot is shown where. A record is written
//! before the kernel mount is made and deleted after it is gone, so a
//! daemon that starts again mounts again what was mounted, and gc keeps
//! every recorded commit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dots::utf8_path;
use super::journal::{Journal, Origin, TopJson};
use super::names::{check_branch, check_dot, check_subdot};
use super::reflog::log_move;
use super::{ref_key, DotConfig, Repo, RepoError, Result, DEFAULT_SUBDOT};
use crate::id::CommitId;
use crate::progress::Progress;
use crate::store::{Batch, Space};
use crate::tree::commit::{read_root, Commit, Root, Top};
use crate::tree::dir::write_dir;

/// One read-only view: `commit` of `dot` (named `rev` when mounted),
/// shown at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub dot: String,
    pub rev: String,
    pub commit: CommitId,
    pub at: PathBuf,
}

const MOUNT_PREFIX: &str = "mount/";

fn mount_key(at: &Path) -> Result<Vec<u8>> {
    utf8_path(at)?;
    Ok(format!("{MOUNT_PREFIX}{}", at.display()).into_bytes())
}

/// Splits `DOT@REF` (REF as `dot reset` takes it); `DOT` alone is its
/// current branch.
fn parse_view(spec: &str) -> Result<(&str, &str)> {
    let (dot, rev) = spec.split_once('@').unwrap_or((spec, "HEAD"));
    check_dot(dot)?;
    if rev.is_empty() {
        return Err(RepoError::Usage(format!(
            "{spec}: say which commit after @ (a branch, HEAD~N or a commit id)"
        )));
    }
    Ok((dot, rev))
}

impl Repo {
    /// Every recorded view, in path order. A record that does not decode
    /// is damage in the index.
    pub(crate) fn mounts(&self) -> Result<Vec<MountRecord>> {
        self.records(MOUNT_PREFIX, |r: &MountRecord, k| {
            mount_key(&r.at).is_ok_and(|key| key == k)
        })
    }

    /// The records stored under `prefix`, each checked to sit at its own
    /// key; one that does not decode, or sits elsewhere, is damage.
    fn records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
        at_own_key: impl Fn(&T, &[u8]) -> bool,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut bad = None;
        self.store.scan_kv(Space::Meta, prefix.as_bytes(), |k, v| {
            match serde_json::from_slice::<T>(v) {
                Ok(r) if at_own_key(&r, k) => out.push(r),
                _ => bad = Some(String::from_utf8_lossy(k).into_owned()),
            }
            Ok(true)
        })?;
        if let Some(key) = bad {
            return Err(RepoError::Damaged {
                what: format!("the mount record {key}"),
                why: "it does not decode or is not at its own key".into(),
            });
        }
        Ok(out)
    }

    /// Checks that `spec` (`DOT@REF`) can be shown at `at` and says what
    /// would be: the commit is resolved (and verified when no branch of
    /// the dot reaches it) and `at` is an absolute path outside DOT_HOME,
    /// an empty directory or a new one under an existing directory, and
    /// not already a view.
    pub(crate) fn plan_view(&self, spec: &str, at: &Path) -> Result<(DotConfig, MountRecord)> {
        let (dot, rev) = parse_view(spec)?;
        let cfg = self.dot(dot)?;
        let (commit, origin) = self.resolve_with_origin(&cfg, rev)?;
        if origin == Origin::Unverified {
            self.verify_commit(commit, &cfg, None)?;
        }
        if !at.is_absolute() {
            return Err(RepoError::Usage(format!(
                "{}: give the directory to mount at as an absolute path",
                at.display()
            )));
        }
        utf8_path(at)?;
        if at.starts_with(self.home()) {
            return Err(RepoError::Usage(format!(
                "{} is inside DOT_HOME ({}); mount views somewhere else",
                at.display(),
                self.home().display()
            )));
        }
        if let Some(other) = self.mounts()?.into_iter().find(|m| m.at == at) {
            return Err(RepoError::Conflict(format!(
                "{} already shows {}@{}; dot unmount {} first",
                at.display(),
                other.dot,
                other.rev,
                at.display()
            )));
        }
        match std::fs::read_dir(at) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(RepoError::Usage(format!(
                        "{} is not empty; mount views on an empty or new directory",
                        at.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(at).map_err(|e| {
                    RepoError::io(
                        format!(
                            "cannot create {} (its parent directory must exist)",
                            at.display()
                        ),
                        e,
                    )
                })?;
            }
            Err(e) => {
                return Err(RepoError::io(
                    format!("cannot mount at {}; it must be a directory", at.display()),
                    e,
                ))
            }
        }
        let record = MountRecord {
            dot: cfg.name.clone(),
            rev: rev.to_string(),
            commit,
            at: at.to_path_buf(),
        };
        Ok((cfg, record))
    }

    pub(crate) fn record_mount(&self, record: &MountRecord) -> Result<()> {
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            mount_key(&record.at)?,
            serde_json::to_vec(record).expect("a record serializes"),
        );
        Ok(self.store.commit(b)?)
    }

    pub(crate) fn drop_mount(&self, at: &Path) -> Result<()> {
        let mut b = Batch::default();
        b.delete(Space::Meta, mount_key(at)?);
        Ok(self.store.commit(b)?)
    }

    /// The store, for a mount that reads from it while the daemon runs.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn shared_store(&self) -> std::sync::Arc<crate::store::Store> {
        self.store.clone()
    }
}

/// A dot whose working state is a read-write mount at `at`. Its base is
/// always its branch's commit: a commit or a reset moves the branch first
/// and empties the overlay after, so a crash between the two shows the
/// same state again (docs/design.md 16.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountedDot {
    pub dot: String,
    pub at: PathBuf,
}

const MOUNTED_PREFIX: &str = "mounted/";

fn mounted_key(dot: &str) -> Vec<u8> {
    format!("{MOUNTED_PREFIX}{dot}").into_bytes()
}

impl Repo {
    /// Every dot whose working state is a mount.
    pub(crate) fn mounted_dots(&self) -> Result<Vec<MountedDot>> {
        self.records(MOUNTED_PREFIX, |m: &MountedDot, k| mounted_key(&m.dot) == k)
    }

    pub(crate) fn mounted_dot(&self, dot: &str) -> Result<Option<MountedDot>> {
        Ok(self.mounted_dots()?.into_iter().find(|m| m.dot == dot))
    }

    /// Where `cfg`'s working state is mounted: its one default subdot's
    /// directory, or the dot's directory holding its subdots. Subdots
    /// adopted with `dot init --path` cannot be mounted yet.
    pub(crate) fn mount_point(&self, cfg: &DotConfig) -> Result<PathBuf> {
        if let Some((sub, _)) = cfg.subdots.iter().find(|(_, s)| s.adopted) {
            return Err(RepoError::Refused(format!(
                "{}.{sub} is a directory of yours (dot init --path); only dots whose directories dot made can be mounted",
                cfg.name
            )));
        }
        let single = cfg.subdots.len() == 1 && cfg.subdots.contains_key(DEFAULT_SUBDOT);
        Ok(if single {
            cfg.subdots[DEFAULT_SUBDOT].path.clone()
        } else {
            self.work_dir(&cfg.name)
        })
    }

    /// Where the overlay of a mounted dot keeps its changes.
    pub(crate) fn overlay_dir(&self, dot: &str) -> PathBuf {
        self.home().join("overlay").join(dot.replace('/', "+"))
    }

    /// The base of a mounted dot: its branch's commit, with an empty top
    /// directory for every subdot the commit lacks.
    pub(crate) fn working_base(&self, cfg: &DotConfig) -> Result<(Option<CommitId>, Root)> {
        let head = self.branch_commit(&cfg.name, &cfg.head)?;
        let mut root = match head {
            Some(c) => read_root(&self.store, &Commit::read(&self.store, &c)?.root)?,
            None => Root::new(),
        };
        for sub in cfg.subdots.keys() {
            if !root.contains_key(sub) {
                root.insert(
                    sub.clone(),
                    Top {
                        tree: write_dir(&self.store, &[])?,
                        mode: 0o755,
                        uid: rustix::process::geteuid().as_raw(),
                        gid: rustix::process::getegid().as_raw(),
                        mtime_ns: 0,
                    },
                );
            }
        }
        Ok((head, root))
    }

    pub(crate) fn record_mounted_dot(&self, m: &MountedDot) -> Result<()> {
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            mounted_key(&m.dot),
            serde_json::to_vec(m).expect("a record serializes"),
        );
        Ok(self.store.commit(b)?)
    }

    /// The commit point of `dot unmount`: one batch drops the mount
    /// record and records the journal that makes the plain directories
    /// hold `root` (what the mount showed), leaving the branch where it
    /// is; the next command finishes it after a crash.
    pub(crate) fn unmount_to(
        &self,
        cfg: &DotConfig,
        root: &Root,
        progress: &dyn Progress,
    ) -> Result<()> {
        let journal = Journal {
            branch: cfg.head.clone(),
            commit: None,
            set_head: false,
            command: String::new(),
            targets: cfg
                .subdots
                .keys()
                .map(|sub| (sub.clone(), root.get(sub).map(|t| TopJson::from(*t))))
                .collect(),
        };
        let mut b = Batch::default();
        b.delete(Space::Meta, mounted_key(&cfg.name));
        self.run_with(cfg, journal, b, progress)
    }

    /// Refuses to move `branch`, which is not the current branch, while
    /// a mount keeps uncommitted changes for it over its commit.
    pub(crate) fn refuse_if_kept(&self, cfg: &DotConfig, branch: &str) -> Result<()> {
        let kept = crate::mount::branches::kept(&self.overlay_dir(&cfg.name), branch);
        if !kept.exists() {
            return Ok(());
        }
        Err(RepoError::Conflict(format!(
            "branch {branch} of dot {} has uncommitted changes kept on its mount; check it out and commit them (or drop them with dot reset --hard HEAD) first",
            cfg.name
        )))
    }

    /// Records a new subdot of mounted dot `cfg`: its directory lies under
    /// the mount, where the caller's overlay shows it, so none is made.
    pub(crate) fn add_mounted_subdot(&self, cfg: &DotConfig, sub: &str) -> Result<DotConfig> {
        check_subdot(sub)?;
        if cfg.subdots.contains_key(sub) {
            return Err(RepoError::Usage(format!(
                "subdot {}.{sub} already exists",
                cfg.name
            )));
        }
        let mut cfg = cfg.clone();
        let path = self.work_dir(&cfg.name).join(sub);
        cfg.subdots.insert(
            sub.to_string(),
            super::SubdotConfig {
                path,
                adopted: false,
            },
        );
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        self.store.write(b)?;
        Ok(cfg)
    }

    /// `dot reset --hard REF` on a mount: only the branch moves; the
    /// caller then shows its commit. Returns the commit.
    pub(crate) fn move_branch(&self, cfg: &DotConfig, spec: &str) -> Result<CommitId> {
        let (target, origin) = self.resolve_with_origin(cfg, spec)?;
        if origin == Origin::Unverified {
            self.verify_commit(target, cfg, None)?;
        }
        self.move_branch_with(
            cfg,
            Batch::default(),
            target,
            &format!("reset --hard {spec}"),
        )?;
        Ok(target)
    }

    /// Moves the current branch of mounted dot `cfg` to `target`, unless
    /// another command moved it first, with `b` in the same write.
    pub(crate) fn move_branch_with(
        &self,
        cfg: &DotConfig,
        mut b: Batch,
        target: CommitId,
        command: &str,
    ) -> Result<()> {
        let key = ref_key(&cfg.name, &cfg.head);
        let old = self.branch_commit(&cfg.name, &cfg.head)?;
        b.expect(
            Space::Refs,
            key.clone(),
            Some(old.map(|c| c.0 .0.to_vec()).unwrap_or_default()),
        );
        b.put(Space::Refs, key, target.0 .0.to_vec());
        log_move(&mut b, &cfg.name, &cfg.head, old, Some(target), command);
        Ok(self.store.commit(b)?)
    }

    /// Refuses a checkout that cannot be: a new branch that exists, a
    /// switch to one that does not, or to the current one.
    pub(super) fn check_switch(&self, cfg: &DotConfig, branch: &str, create: bool) -> Result<()> {
        check_branch(branch)?;
        let exists = self
            .store
            .get_kv(Space::Refs, &ref_key(&cfg.name, branch))?
            .is_some();
        if create && exists {
            return Err(RepoError::Usage(format!(
                "branch {branch} already exists in dot {}; switch to it with dot checkout {branch}",
                cfg.name
            )));
        }
        if !create && !exists {
            return Err(RepoError::Usage(format!(
                "dot {} has no branch {branch}; create it with dot checkout -b {branch}",
                cfg.name
            )));
        }
        if !create && branch == cfg.head {
            return Err(RepoError::Conflict(format!("already on branch {branch}")));
        }
        Ok(())
    }

    /// Moves the head to `branch` (made at the current commit with
    /// `create`) and nothing else: a mount's checkout, and any `checkout
    /// -b`. The caller checked what must be uncommitted or kept; returns
    /// the new configuration.
    pub(crate) fn switch_branch(
        &self,
        cfg: &DotConfig,
        branch: &str,
        create: bool,
    ) -> Result<DotConfig> {
        self.check_switch(cfg, branch, create)?;
        let key = ref_key(&cfg.name, branch);
        let mut b = Batch::default();
        if create {
            let head = self.branch_commit(&cfg.name, &cfg.head)?;
            b.expect(Space::Refs, key.clone(), None);
            b.put(
                Space::Refs,
                key,
                head.map(|c| c.0 .0.to_vec()).unwrap_or_default(),
            );
            log_move(
                &mut b,
                &cfg.name,
                branch,
                None,
                head,
                &format!("checkout -b {branch}"),
            );
        }
        let mut cfg = cfg.clone();
        cfg.head = branch.to_string();
        Self::put_dot(&mut b, &cfg);
        self.store.commit(b)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_specs() {
        assert_eq!(parse_view("app@HEAD~2").unwrap(), ("app", "HEAD~2"));
        assert_eq!(parse_view("app").unwrap(), ("app", "HEAD"));
        assert!(parse_view("app@").is_err());
        assert!(parse_view("../x@HEAD").is_err());
        assert!(parse_view("@HEAD").is_err());
    }
}
