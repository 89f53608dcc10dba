//! Remotes of this store: their configuration, the upstream of each
//! branch, and push, pull and clone of dots.
//!
//! Keys (docs/design.md): `meta` holds `remote/<name>` (JSON
//! `RemoteConfig`, never a secret) and `upstream/<dot>\0<branch>` (JSON
//! `Upstream`). Credentials come from the environment or the 0600 file
//! `$DOT_HOME/credentials`, read at each use.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde::{Deserialize, Serialize};

use super::journal::Origin;
use super::names::{check_branch, check_dot, check_remote};
use super::reflog::log_move;
use super::{ref_key, DotConfig, Repo, RepoError, Result};
use crate::env::ClientEnv;
use crate::id::CommitId;
use crate::progress::Progress;
use crate::store::{Batch, Space};
use crate::sync::{
    self, CreateCheck, Credentials, FetchStats, Known, Location, ObjectBackend, PushStats,
    RefWrite, Remote, RemoteRef,
};
use crate::tree::commit::Commit;

/// Packs a push uploads are sealed at this size, unless DOT_PUSH_PACK_BYTES
/// says otherwise: big enough that requests are few, small enough that an
/// interrupted push loses little and four uploads fit in memory.
const PUSH_PACK_BYTES: usize = 32 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoteConfig {
    pub name: String,
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Only one machine pushes here: pushes go ahead even where the
    /// storage does not keep a conditional create exclusive.
    #[serde(default)]
    pub single_writer: bool,
    /// What the storage was found to do with a conditional create.
    #[serde(default)]
    pub create_check: Option<Checked>,
}

/// An answer of `Remote::check_create`, and when it was found.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Checked {
    pub answer: CreateCheck,
    /// Seconds since the epoch.
    pub at: i64,
}

impl RemoteConfig {
    /// What exclusive creates rest on for this kind of storage.
    pub(crate) fn create_feature(&self) -> &'static str {
        if self.url.starts_with("s3://") {
            "conditional PUT (If-None-Match: *)"
        } else if self.url.starts_with("http") {
            "WebDAV COPY with Overwrite: F"
        } else {
            "link(2) on the remote's filesystem"
        }
    }
}

/// Where a branch is pushed to and pulled from by default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upstream {
    pub remote: String,
    pub dot: String,
    pub branch: String,
}

/// What a push or pull names. Each part left out defaults: the remote to
/// the branch's upstream, the remote dot to the upstream's or the local
/// name, the branch to the dot's current branch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub remote: Option<&'a str>,
    pub remote_dot: Option<&'a str>,
    pub branch: Option<&'a str>,
}

/// What `dot clone` makes: the remote dot's branch (default master) as a
/// new local dot (default: the remote name).
#[derive(Clone, Copy, Debug)]
pub struct CloneOptions<'a> {
    pub remote: &'a str,
    pub remote_dot: &'a str,
    pub local_name: Option<&'a str>,
    pub branch: Option<&'a str>,
    /// Let device nodes, setuid/setgid files and security.* attributes in.
    pub allow_special_files: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushReport {
    pub to: Upstream,
    pub commit: CommitId,
    pub up_to_date: bool,
    pub stats: PushStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullReport {
    pub from: Upstream,
    /// The local dot, which differs from `from.dot` after a clone with
    /// --local-name.
    pub dot: String,
    pub old: Option<CommitId>,
    pub new: CommitId,
    pub up_to_date: bool,
    pub stats: FetchStats,
}

fn remote_key(name: &str) -> Vec<u8> {
    format!("remote/{name}").into_bytes()
}

fn upstream_key(dot: &str, branch: &str) -> Vec<u8> {
    format!("upstream/{dot}\0{branch}").into_bytes()
}

/// Checks a remote URL.
fn normalize_url(url: &str) -> Result<String> {
    let usage = |why: &str| RepoError::Usage(format!("bad remote URL {url:?}: {why}"));
    if let Some((scheme, rest)) = url.split_once("://") {
        let host = rest.split('/').next().unwrap_or("");
        match scheme {
            "s3" | "http" | "https" => {
                if let Some((_, after)) = host.rsplit_once('@') {
                    return Err(RepoError::Usage(format!(
                        "bad remote URL {scheme}://***@{after}/...: it holds credentials, and dot never stores secrets; put them in the environment or in $DOT_HOME/credentials"
                    )));
                }
                if host.is_empty() {
                    return Err(usage("no bucket or host"));
                }
                Ok(url.trim_end_matches('/').to_string())
            }
            "file" if rest.starts_with('/') => Ok(url.to_string()),
            "file" => Err(usage(
                "a file:// URL needs an absolute path, as in file:///srv/dots",
            )),
            _ => Err(usage(
                "use s3://BUCKET/PREFIX, http(s)://HOST/PATH, file:///PATH or a directory path",
            )),
        }
    } else {
        if !url.starts_with('/') {
            // The caller resolves relative paths against its own directory.
            return Err(usage("a directory remote needs an absolute path"));
        }
        Ok(url.to_string())
    }
}

/// How `dot pull` moves and shows the current branch of a mounted dot:
/// given the batch to write with the move, the commit, and the command
/// for the reflog.
pub(crate) type MountedSwitch<'a> = &'a dyn Fn(Batch, CommitId, &str) -> Result<()>;

/// How long a remote gc marker waits before its sweep deletes anything:
/// longer than any push that started before it takes (docs 18.4).
pub const REMOTE_GRACE_SETTING: &str = "gc.remoteGrace";
const DEFAULT_REMOTE_GRACE: std::time::Duration = std::time::Duration::from_secs(86_400);

/// `gc.remoteGrace`: a number and a unit, as `gc.reflogExpire` takes them
/// (`never` is not a grace).
pub fn parse_grace(value: &str) -> std::result::Result<std::time::Duration, String> {
    match super::reflog::parse_expire(value) {
        Ok(Some(d)) => Ok(d),
        _ => Err(format!(
            "{REMOTE_GRACE_SETTING} is a number and a unit (s, m, h, d or w) such as 1d, not {value:?}"
        )),
    }
}

impl Repo {
    // ---- configuration ----

    /// `dot remote add`: records a remote, then checks that its storage
    /// keeps conditional creates exclusive (`Remote::check_create`). The
    /// check's answer, or why it could not be made (the push checks again
    /// before it writes a ref), is returned.
    pub(crate) fn remote_add(
        &self,
        name: &str,
        url: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        single_writer: bool,
        env: &ClientEnv,
    ) -> Result<std::result::Result<CreateCheck, RepoError>> {
        check_remote(name)?;
        if self.remote_config(name).is_ok() {
            return Err(RepoError::Usage(format!(
                "remote {name} already exists; remove it first with dot remote rm {name}"
            )));
        }
        let url = normalize_url(url)?;
        if let Some(e) = endpoint {
            if !url.starts_with("s3://") {
                return Err(RepoError::Usage(
                    "--endpoint is for s3:// remotes only".into(),
                ));
            }
            if !(e.starts_with("http://") || e.starts_with("https://")) || e.contains('@') {
                return Err(RepoError::Usage(format!(
                    "bad endpoint {e:?}: give http(s)://HOST[:PORT], without credentials"
                )));
            }
        }
        let mut cfg = RemoteConfig {
            name: name.to_string(),
            url,
            endpoint: endpoint.map(|e| e.trim_end_matches('/').to_string()),
            region: region.map(str::to_string),
            single_writer,
            create_check: None,
        };
        self.put_remote(&cfg)?;
        // A directory that does not exist yet is made by the first push,
        // which checks it then.
        Ok(self
            .open_remote(name, false, env)
            .and_then(|r| self.record_check(&mut cfg, &r)))
    }

    fn put_remote(&self, cfg: &RemoteConfig) -> Result<()> {
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            remote_key(&cfg.name),
            serde_json::to_vec(cfg).expect("config serializes"),
        );
        Ok(self.store.write(b)?)
    }

    /// Checks the remote's conditional create and remembers the answer.
    fn record_check(&self, cfg: &mut RemoteConfig, r: &Remote) -> Result<CreateCheck> {
        let answer = r.check_create()?;
        cfg.create_check = Some(Checked {
            answer,
            at: crate::workspace::cache::now_ns() / 1_000_000_000,
        });
        self.put_remote(cfg)?;
        Ok(answer)
    }

    /// Pushes rest on exclusive creates: the storage is checked once (when
    /// the remote is added, else here, before anything is written), and a
    /// push is refused where it does not keep them exclusive, unless the
    /// remote has a single writer.
    fn require_exclusive_creates(&self, name: &str, r: &Remote) -> Result<()> {
        let mut cfg = self.remote_config(name)?;
        let answer = match cfg.create_check {
            Some(c) => c.answer,
            None => self.record_check(&mut cfg, r)?,
        };
        if answer == CreateCheck::Ignored && !cfg.single_writer {
            return Err(RepoError::Refused(format!(
                "remote {name} ({}) does not keep a conditional create exclusive: its storage ignores {}, so two pushes racing for a branch could both be told they succeeded while one of them is lost. Push to storage that honours it (S3 with conditional writes, a directory, a WebDAV server that honours Overwrite: F); or, if this is the only machine that ever pushes there, add the remote with --single-writer (dot remote rm {name}, then dot remote add {name} URL --single-writer), accepting that a push from anywhere else could silently replace yours. Nothing was pushed",
                cfg.url,
                cfg.create_feature()
            )));
        }
        Ok(())
    }

    /// Removes a remote, what this store remembers of its contents, and
    /// the upstreams that named it.
    pub(crate) fn remote_remove(&self, name: &str) -> Result<()> {
        self.remote_config(name)?;
        let mut b = Batch::default();
        b.delete(Space::Meta, remote_key(name));
        b.delete_prefix(Space::Cache, sync::known::cache_prefix(name));
        self.store.scan_kv(Space::Meta, b"upstream/", |k, v| {
            if serde_json::from_slice::<Upstream>(v).is_ok_and(|u| u.remote == name) {
                b.delete(Space::Meta, k.to_vec());
            }
            Ok(true)
        })?;
        Ok(self.store.write(b)?)
    }

    pub(crate) fn remotes(&self) -> Result<Vec<RemoteConfig>> {
        let mut raw = Vec::new();
        self.store.scan_kv(Space::Meta, b"remote/", |k, v| {
            raw.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            Ok(true)
        })?;
        raw.iter()
            .map(|(k, v)| {
                serde_json::from_slice(v).map_err(|e| RepoError::Config(k.clone(), e.to_string()))
            })
            .collect()
    }

    fn remote_config(&self, name: &str) -> Result<RemoteConfig> {
        check_remote(name)?;
        match self.store.get_kv(Space::Meta, &remote_key(name))? {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| RepoError::Config(format!("remote/{name}"), e.to_string())),
            None => Err(RepoError::NotFound(format!(
                "no remote named {name}; see dot remote -v, or add one with dot remote add {name} URL"
            ))),
        }
    }

    /// Connects to a remote. `create` makes a directory remote's directory
    /// (push); pull and clone want it to exist.
    /// `dot gc --remote NAME` (docs 18.4): sweeps markers older than
    /// `gc.remoteGrace` (a day unless set), then marks what no branch on
    /// the remote reaches. `prune_now` sweeps at once.
    pub(crate) fn gc_remote(
        &self,
        name: &str,
        prune_now: bool,
        env: &ClientEnv,
        progress: &dyn Progress,
    ) -> Result<sync::RemoteGcStats> {
        let grace = if prune_now {
            std::time::Duration::ZERO
        } else {
            self.remote_grace()?
        };
        let r = self.open_remote(name, false, env)?;
        Ok(sync::maintain::gc(&r, grace, progress)?)
    }

    /// How long a gc marker waits before its sweep: `gc.remoteGrace`.
    fn remote_grace(&self) -> Result<std::time::Duration> {
        match self.config_get(REMOTE_GRACE_SETTING)? {
            None => Ok(DEFAULT_REMOTE_GRACE),
            Some(v) => {
                parse_grace(&v).map_err(|why| RepoError::Config(REMOTE_GRACE_SETTING.into(), why))
            }
        }
    }

    /// `dot fsck --remote NAME [--read-data]`.
    pub(crate) fn fsck_remote(
        &self,
        name: &str,
        read_data: bool,
        env: &ClientEnv,
        progress: &dyn Progress,
    ) -> Result<sync::RemoteFsckReport> {
        let r = self.open_remote(name, false, env)?;
        Ok(sync::maintain::fsck(&r, read_data, progress)?)
    }

    fn open_remote(&self, name: &str, create: bool, env: &ClientEnv) -> Result<Remote> {
        let cfg = self.remote_config(name)?;
        let creds = self.credentials(name, env)?;
        let region = cfg
            .region
            .as_deref()
            .or_else(|| env.get("AWS_REGION"))
            .or_else(|| env.get("AWS_DEFAULT_REGION"));
        let loc = Location {
            url: cfg.url.clone(),
            endpoint: cfg.endpoint.clone(),
            region: region.map(str::to_string),
        };
        let backend = ObjectBackend::open(&loc, &creds, create).map_err(|error| {
            sync::SyncError::Backend {
                remote: name.to_string(),
                error,
            }
        })?;
        Ok(Remote {
            name: name.to_string(),
            backend: Box::new(backend),
        })
    }

    /// Credentials of a remote: the caller's environment's, overridden by
    /// the remote's section of the credentials file.
    fn credentials(&self, remote: &str, client: &ClientEnv) -> Result<Credentials> {
        let env = |k: &str| client.get(k).map(str::to_string);
        let mut c = Credentials {
            access_key_id: env("AWS_ACCESS_KEY_ID"),
            secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            session_token: env("AWS_SESSION_TOKEN"),
            username: env("DOT_HTTP_USER"),
            password: env("DOT_HTTP_PASSWORD"),
            bearer_token: env("DOT_HTTP_TOKEN"),
        };
        let path = env("DOT_CREDENTIALS")
            .map(Into::into)
            .unwrap_or_else(|| self.home().join("credentials"));
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(_) => return Ok(c),
        };
        let shown = path.display();
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(RepoError::Usage(format!(
                "the credentials file {shown} can be read by others (mode {:o}); run chmod 600 {shown}",
                meta.permissions().mode() & 0o777
            )));
        }
        let text = fs::read_to_string(&path)
            .map_err(|e| RepoError::io(format!("cannot read {shown}"), e))?;
        apply_credentials_file(&text, remote, &mut c)
            .map_err(|e| RepoError::Usage(format!("{shown}: {e}")))?;
        Ok(c)
    }

    pub(crate) fn upstream(&self, dot: &str, branch: &str) -> Result<Option<Upstream>> {
        match self.store.get_kv(Space::Meta, &upstream_key(dot, branch))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| {
                RepoError::Config(format!("upstream of {dot} {branch}"), e.to_string())
            })?)),
            None => Ok(None),
        }
    }

    fn put_upstream(b: &mut Batch, dot: &str, branch: &str, up: &Upstream) {
        b.put(
            Space::Meta,
            upstream_key(dot, branch),
            serde_json::to_vec(up).expect("upstream serializes"),
        );
    }

    /// The local branch a push or pull moves, and where it goes: the
    /// arguments, else the branch's upstream.
    fn resolve_target(
        &self,
        cfg: &DotConfig,
        t: &Target,
        verb: &str,
    ) -> Result<(String, Upstream)> {
        let branch = t.branch.unwrap_or(&cfg.head);
        check_branch(branch)?;
        let (remote, remote_dot) = (t.remote, t.remote_dot);
        let up = self.upstream(&cfg.name, branch)?;
        let target = match (remote, up) {
            (Some(r), up) => Upstream {
                remote: r.to_string(),
                dot: remote_dot
                    .map(str::to_string)
                    .or_else(|| up.filter(|u| u.remote == r).map(|u| u.dot))
                    .unwrap_or_else(|| cfg.name.clone()),
                branch: branch.to_string(),
            },
            (None, Some(mut up)) => {
                if let Some(d) = remote_dot {
                    up.dot = d.to_string();
                }
                up
            }
            (None, None) => {
                return Err(RepoError::Usage(format!(
                    "branch {branch} of dot {} has no upstream; name the remote once, as in dot {verb} REMOTE {} (see dot remote -v)",
                    cfg.name, cfg.name
                )))
            }
        };
        check_dot(&target.dot)?;
        Ok((branch.to_string(), target))
    }

    // ---- history ----

    /// Whether `ancestor` is `commit` or one of its ancestors, as far as
    /// the local store knows.
    fn is_ancestor(&self, ancestor: CommitId, commit: CommitId) -> Result<bool> {
        let mut seen = HashSet::new();
        let mut next = vec![commit];
        while let Some(c) = next.pop() {
            if c == ancestor {
                return Ok(true);
            }
            if seen.insert(c) && self.store.has(&c.0)? {
                next.extend(Commit::read(&self.store, &c)?.parents);
            }
        }
        Ok(false)
    }

    /// Commits the store holds in full and verified: those local branches
    /// reach, or with `dot`, those its own branches reach. What a dot may
    /// materialize (special files) is judged per dot, so trust in that
    /// sense never crosses from one dot to another.
    pub(super) fn complete_commits(&self, dot: Option<&str>) -> Result<HashSet<CommitId>> {
        let mut seen = HashSet::new();
        let mut next: Vec<CommitId> = match dot {
            None => self.all_heads()?.into_iter().map(|(_, c)| c).collect(),
            Some(dot) => {
                let mut heads = Vec::new();
                self.store.scan_kv(Space::Refs, &ref_key(dot, ""), |_, v| {
                    heads.extend(crate::id::Id::from_slice(v).map(CommitId));
                    Ok(true)
                })?;
                heads
            }
        };
        while let Some(c) = next.pop() {
            if seen.insert(c) {
                next.extend(Commit::read(&self.store, &c)?.parents);
            }
        }
        Ok(seen)
    }

    // ---- transfer ----

    /// `dot push`: sends a branch and everything it needs that the remote
    /// lacks, then moves the remote branch if that is a fast-forward (or
    /// `force`). Remembers the target as the branch's upstream.
    pub(crate) fn push(
        &self,
        cfg: &DotConfig,
        target: &Target,
        force: bool,
        env: &ClientEnv,
        progress: &dyn Progress,
    ) -> Result<PushReport> {
        let (branch, to) = self.resolve_target(cfg, target, "push")?;
        let branch = branch.as_str();
        let head = self.branch_commit(&cfg.name, branch)?.ok_or_else(|| {
            RepoError::Usage(format!(
                "branch {branch} of dot {} has no commits yet; commit first",
                cfg.name
            ))
        })?;
        let r = self.open_remote(&to.remote, true, env)?;
        let current = r.read_ref(&to.dot, &to.branch)?;
        let mut report = PushReport {
            to: to.clone(),
            commit: head,
            up_to_date: false,
            stats: PushStats::default(),
        };
        if let Some((_, cur)) = &current {
            if cur.commit == head {
                report.up_to_date = true;
            } else if !force && !self.is_ancestor(cur.commit, head)? {
                return Err(RepoError::Conflict(format!(
                    "remote {} has commits on branch {} of dot {} that this dot lacks (it is at {}); run dot pull first, or dot push --force to replace them",
                    to.remote, to.branch, to.dot, cur.commit.short()
                )));
            }
        }
        if !report.up_to_date {
            self.require_exclusive_creates(&to.remote, &r)?;
            let pack = env
                .get("DOT_PUSH_PACK_BYTES")
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0 && n <= 1 << 30)
                .unwrap_or(PUSH_PACK_BYTES);
            // A gc of the remote that marks or sweeps while this push runs
            // may doom or delete what the push found there: walk again
            // (sending what is now lacking) until its state holds still,
            // before the ref names the commit (docs 18.4).
            let mut gc = sync::maintain::gc_state(&r)?;
            for round in 0.. {
                let known = Known::refresh(&self.store, &r)?;
                let sent = sync::push_objects(&self.store, &r, &known, &gc, head, pack, progress)?;
                if round == 0 {
                    report.stats = sent;
                } else {
                    report.stats.objects_sent += sent.objects_sent;
                    report.stats.bytes_sent += sent.bytes_sent;
                    report.stats.packs_sent += sent.packs_sent;
                }
                let now = sync::maintain::gc_state(&r)?;
                if now == gc {
                    break;
                }
                if round == 5 {
                    return Err(RepoError::Busy(format!(
                        "a gc of remote {} kept changing what it holds while this push ran; push again (what was sent stays there)",
                        to.remote
                    )));
                }
                gc = now;
            }
            let value = RemoteRef {
                commit: head,
                chunking: cfg.chunking,
            };
            let lost = |how: &str| {
                RepoError::Conflict(format!(
                    "someone else pushed to branch {} of dot {} on remote {} meanwhile{how}; run dot pull, then push again (the data already sent stays there)",
                    to.branch, to.dot, to.remote
                ))
            };
            if progress.cancelled() {
                return Err(sync::SyncError::Cancelled.into());
            }
            match r.write_ref(&to.dot, &to.branch, current.map(|c| c.0), &value)? {
                RefWrite::Written => {}
                RefWrite::Lost => return Err(lost(", and nothing was overwritten")),
                RefWrite::Replaced => {
                    // The create was not exclusive after all: check again.
                    let mut rc = self.remote_config(&to.remote)?;
                    let answer = self.record_check(&mut rc, &r)?;
                    return Err(lost(&format!(
                        " and replaced your push, so it is not on the remote (the storage {} conditional creates)",
                        if answer == CreateCheck::Ignored { "ignores" } else { "did not keep to" }
                    )));
                }
            }
        }
        let mut b = Batch::default();
        Self::put_upstream(&mut b, &cfg.name, branch, &to);
        self.store.write(b)?;
        Ok(report)
    }

    /// `dot pull`: fetches a remote branch and fast-forwards the local one
    /// to it, updating the working directories when it is the current
    /// branch. Refused when that would lose local commits or uncommitted
    /// changes. The current branch of a mounted dot is moved and shown by
    /// `mounted` (given the batch to write with the move) instead.
    pub(crate) fn pull(
        &self,
        cfg: &DotConfig,
        target: &Target,
        env: &ClientEnv,
        progress: &dyn Progress,
        mounted: Option<MountedSwitch>,
    ) -> Result<PullReport> {
        let (branch, from) = self.resolve_target(cfg, target, "pull")?;
        let branch = branch.as_str();
        // The branch as it is now: it moves only from this value.
        let old_value = self
            .store
            .get_kv(Space::Refs, &ref_key(&cfg.name, branch))?;
        let old = match self.branch_commit(&cfg.name, branch) {
            Ok(c) => c,
            Err(RepoError::NoSuchBranch { .. }) => None,
            Err(e) => return Err(e),
        };
        let r = self.open_remote(&from.remote, false, env)?;
        let want = self.remote_head(&r, &from)?;
        let mut report = PullReport {
            from: from.clone(),
            dot: cfg.name.clone(),
            old,
            new: want.commit,
            up_to_date: false,
            stats: FetchStats::default(),
        };
        if let Some(old) = old {
            if old == want.commit || self.is_ancestor(want.commit, old)? {
                report.up_to_date = true;
                report.new = old;
                return Ok(report);
            }
        }
        // (A mount's own switch checks, with writes held.)
        if branch == cfg.head && mounted.is_none() {
            self.require_clean(cfg, progress)?;
        }
        report.stats = self.fetch_commit(&r, want.commit, cfg, progress)?;
        if let Some(old) = old {
            if !self.is_ancestor(old, want.commit)? {
                return Err(RepoError::Conflict(format!(
                    "branch {branch} of dot {} has commits that remote {} lacks; push them first, or keep them on another branch (dot checkout -b NAME) and reset this one",
                    cfg.name, from.remote
                )));
            }
        }
        let mut b = Batch::default();
        if self.upstream(&cfg.name, branch)?.is_none() {
            Self::put_upstream(&mut b, &cfg.name, branch, &from);
        }
        let command = format!("pull {} {} {}", from.remote, from.dot, from.branch);
        if let (true, Some(switch)) = (branch == cfg.head, mounted) {
            switch(b, want.commit, &command)?;
        } else if branch == cfg.head {
            let mut journal = self.plan(
                cfg,
                branch.to_string(),
                Some(want.commit),
                false,
                Origin::Verified,
            )?;
            journal.command = command;
            self.run_with(cfg, journal, b, progress)?;
        } else {
            self.refuse_if_kept(cfg, branch)?;
            let key = ref_key(&cfg.name, branch);
            b.expect(Space::Refs, key.clone(), old_value);
            b.put(Space::Refs, key, want.commit.0 .0.to_vec());
            log_move(&mut b, &cfg.name, branch, old, Some(want.commit), &command);
            self.store.commit(b)?;
        }
        Ok(report)
    }

    /// `dot clone`: a new local dot from a remote branch, with its working
    /// directories materialized. A clone that fails leaves no trace but
    /// the objects it fetched (which gc reclaims).
    pub(crate) fn clone_dot(
        &self,
        what: &CloneOptions,
        env: &ClientEnv,
        progress: &dyn Progress,
    ) -> Result<PullReport> {
        let CloneOptions {
            remote,
            remote_dot,
            local_name,
            branch,
            allow_special_files,
        } = *what;
        check_dot(remote_dot)?;
        let name = local_name.unwrap_or(remote_dot);
        check_dot(name)?;
        let branch = branch.unwrap_or("master");
        check_branch(branch)?;
        if self.dot(name).is_ok() {
            return Err(RepoError::Usage(format!(
                "dot {name} already exists here; clone under another name with --local-name NAME"
            )));
        }
        let from = Upstream {
            remote: remote.to_string(),
            dot: remote_dot.to_string(),
            branch: branch.to_string(),
        };
        let r = self.open_remote(remote, false, env)?;
        let want = self.remote_head(&r, &from)?;
        let cfg = DotConfig {
            name: name.to_string(),
            head: branch.to_string(),
            subdots: Default::default(),
            chunking: want.chunking,
            allow_special_files,
        };
        let stats = self.fetch_commit(&r, want.commit, &cfg, progress)?;
        let mut journal = self.plan(
            &cfg,
            branch.to_string(),
            Some(want.commit),
            false,
            Origin::Verified,
        )?;
        journal.command = format!("clone {remote} {remote_dot} {branch}");
        // The dot, its upstream and the journal that fills its working
        // directories are recorded at once: a clone killed after this is
        // finished by the next dot command. One that fails is undone.
        let previous = self.current()?;
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        // The branch exists, without a commit, until the journal moves it.
        b.put(Space::Refs, ref_key(name, branch), Vec::new());
        Self::put_upstream(&mut b, name, branch, &from);
        b.put(Space::Meta, b"current".to_vec(), name.as_bytes().to_vec());
        if let Err(e) = self.run_with(&cfg, journal, b, progress) {
            // Undone, the clone leaves nothing to finish or drop.
            let e = match e {
                RepoError::Unfinished { source, .. } => *source,
                e => e,
            };
            return Err(match self.undo_clone(name, previous.as_deref()) {
                Ok(()) => e,
                Err(u) => RepoError::Unfinished {
                    what: format!("the clone failed ({e}), and could not be undone"),
                    source: Box::new(u),
                    hint: format!("remove it with dot rm -f {name}"),
                },
            });
        }
        Ok(PullReport {
            from,
            dot: name.to_string(),
            old: None,
            new: want.commit,
            up_to_date: false,
            stats,
        })
    }

    /// Removes what a failed clone recorded and created, and makes the dot
    /// that was current before it current again.
    fn undo_clone(&self, name: &str, previous: Option<&str>) -> Result<()> {
        self.remove(name)?;
        let work = self.work_dir(name);
        if fs::symlink_metadata(&work).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(&work)
                .map_err(|e| RepoError::io(format!("cannot remove {}", work.display()), e))?;
        }
        if let Some(prev) = previous.filter(|p| *p != name) {
            let mut b = Batch::default();
            b.put(Space::Meta, b"current".to_vec(), prev.as_bytes().to_vec());
            self.store.write(b)?;
        }
        Ok(())
    }

    fn remote_head(&self, r: &Remote, from: &Upstream) -> Result<RemoteRef> {
        match r.read_ref(&from.dot, &from.branch)? {
            Some((_, v)) => Ok(v),
            None => Err(RepoError::NotFound(format!(
                "remote {} has no branch {} of dot {}; check the names, or push it there first",
                from.remote, from.branch, from.dot
            ))),
        }
    }

    /// Fetches what `want` needs and verifies all of it that local
    /// branches do not reach (`tree::verify`) before anything refers to
    /// it: a remote's objects are hostile input. Special entries are
    /// refused unless the dot allows them.
    fn fetch_commit(
        &self,
        r: &Remote,
        want: CommitId,
        cfg: &DotConfig,
        progress: &dyn Progress,
    ) -> Result<FetchStats> {
        let complete = self.complete_commits(None)?;
        let known = Known::refresh(&self.store, r)?;
        let stats = sync::fetch(&self.store, r, &known, want, &complete, progress)?;
        self.verify_commit(want, cfg, Some(&r.name))?;
        Ok(stats)
    }
}

/// Applies the `[remote]` section of a credentials file (INI, as AWS's own
/// credentials file) to `c`. Values are taken literally: no quotes, escapes
/// or inline comments, so any password can be written as it is.
fn apply_credentials_file(
    text: &str,
    remote: &str,
    c: &mut Credentials,
) -> std::result::Result<(), String> {
    let options = ini::ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        ..Default::default()
    };
    let file = ini::Ini::load_from_str_opt(text, options).map_err(|e| {
        format!(
            "line {}: {}; expected [remote] or key = value",
            e.line + 1,
            e.msg
        )
    })?;
    let Some(section) = file.section(Some(remote)) else {
        return Ok(());
    };
    for (key, value) in section.iter() {
        let slot = match key {
            "aws_access_key_id" => &mut c.access_key_id,
            "aws_secret_access_key" => &mut c.secret_access_key,
            "aws_session_token" => &mut c.session_token,
            "username" => &mut c.username,
            "password" => &mut c.password,
            "bearer_token" => &mut c.bearer_token,
            other => {
                return Err(format!(
                    "unknown key {other:?} in [{remote}]; known keys: aws_access_key_id, aws_secret_access_key, aws_session_token, username, password, bearer_token"
                ))
            }
        };
        *slot = Some(value.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn credentials_file_values_are_literal_and_sections_separate() {
        let text = "# comment\n[other]\npassword = wrong\n\n[backup]\nusername = ann\npassword = a#b;c\\d\"e' f\naws_access_key_id=AKID\n";
        let mut c = Credentials::default();
        apply_credentials_file(text, "backup", &mut c).unwrap();
        assert_eq!(c.username.as_deref(), Some("ann"));
        assert_eq!(c.password.as_deref(), Some("a#b;c\\d\"e' f"));
        assert_eq!(c.access_key_id.as_deref(), Some("AKID"));
        let mut none = Credentials::default();
        apply_credentials_file(text, "absent", &mut none).unwrap();
        assert!(none.password.is_none());
    }

    #[test]
    fn credentials_file_errors_name_the_line_or_key() {
        let mut c = Credentials::default();
        let e = apply_credentials_file("[r]\npasword = x\n", "r", &mut c).unwrap_err();
        assert!(e.contains("unknown key \"pasword\""), "{e}");
        let e = apply_credentials_file("[r\nusername = x\n", "r", &mut c).unwrap_err();
        assert!(e.starts_with("line "), "{e}");
    }

    proptest! {
        #[test]
        fn credentials_file_parser_takes_any_text(text in "\\PC*", bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut c = Credentials::default();
            let _ = apply_credentials_file(&text, "r", &mut c);
            let _ = apply_credentials_file(&String::from_utf8_lossy(&bytes), "r", &mut c);
        }
    }
}
