//! Dots, subdots and branches, and the operations the command line offers:
//! init, commit, log, diff, reset, checkout, branch, list, switch, rm, gc,
//! fsck (and, in `remote`, push, pull and clone). This is the library API;
//! the CLI only parses and prints.
//!
//! Index keys (docs/design.md): `meta` holds `dot/<name>` (JSON
//! `DotConfig`), `current`, `config/<key>` and `journal/<dot>`; `refs` holds
//! `<dot>\0<branch>` -> 32-byte commit id, or empty for a branch without
//! commits; `cache` holds `<dot>\0<subdot>\0<path>` stat cache entries.

mod error;
mod journal;
mod maintenance;
pub(crate) mod names;
pub mod remote;
mod revision;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chunker::{ChunkParams, Chunker};
use crate::env::ClientEnv;
use crate::id::{CommitId, Id};
use crate::progress::Progress;
use crate::store::{Batch, Space, Store};
use crate::tree::commit::{read_root, write_root, Commit, Root};
use crate::tree::diff::{diff, Changed};
use crate::tree::DryRun;
use crate::workspace::cache::StatCache;
use crate::workspace::scan::Scanner;
use crate::workspace::WorkspaceError;
pub use maintenance::FsckReport;
pub use names::DEFAULT_SUBDOT;
use names::{check_branch, check_dot, check_subdot, parse_spec};

pub use error::{ErrorKind, RepoError, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubdotConfig {
    /// The working directory.
    pub path: PathBuf,
    /// Whether the directory was the user's before `dot init --path`; dot
    /// never deletes such a directory.
    pub adopted: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DotConfig {
    pub name: String,
    /// The current branch.
    pub head: String,
    pub subdots: BTreeMap<String, SubdotConfig>,
    pub chunking: ChunkParams,
    /// Whether device nodes, setuid and setgid files and `security.*`
    /// attributes from remotes may be created in its working directories.
    #[serde(default)]
    pub allow_special_files: bool,
}

impl DotConfig {
    /// Parses a stored configuration and checks the names and paths in
    /// it: the dot, its current branch, each subdot (a directory name),
    /// absolute working directories, and chunk sizes fastcdc accepts.
    fn decode(key: &str, bytes: &[u8]) -> Result<DotConfig> {
        let bad = |why: String| RepoError::Config(key.to_string(), why);
        let cfg: DotConfig = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        check_dot(&cfg.name).map_err(|e| bad(e.to_string()))?;
        check_branch(&cfg.head).map_err(|e| bad(e.to_string()))?;
        for (sub, s) in &cfg.subdots {
            check_subdot(sub).map_err(|e| bad(e.to_string()))?;
            if !s.path.is_absolute() {
                return Err(bad(format!("{} is not an absolute path", s.path.display())));
            }
        }
        cfg.chunking.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// Subdot names are shown as path prefixes unless the dot has only the
    /// default subdot.
    fn display_prefix(&self, subdot: &str) -> String {
        if self.subdots.len() == 1 && subdot == DEFAULT_SUBDOT {
            String::new()
        } else {
            format!("{subdot}/")
        }
    }
}

/// How a working state differs from its branch's last commit.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Status {
    pub changes: Vec<Changed>,
    /// Bytes of chunk data a commit would add to the store.
    pub new_bytes: u64,
    /// Total bytes of files in the working state.
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DotSummary {
    pub name: String,
    pub branch: String,
    pub current: bool,
    pub size: u64,
    pub commits: usize,
    pub status: Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BranchInfo {
    pub name: String,
    pub commit: Option<CommitId>,
    pub current: bool,
}

pub struct Repo {
    store: Store,
    /// Why each unfinished journal could not be finished, by dot, as last
    /// tried.
    unfinished: std::sync::Mutex<BTreeMap<String, String>>,
}

fn ref_key(dot: &str, branch: &str) -> Vec<u8> {
    format!("{dot}\0{branch}").into_bytes()
}
fn cache_prefix(dot: &str, subdot: &str) -> Vec<u8> {
    format!("{dot}\0{subdot}\0").into_bytes()
}
fn dot_key(dot: &str) -> Vec<u8> {
    format!("dot/{dot}").into_bytes()
}
fn journal_key(dot: &str) -> Vec<u8> {
    format!("journal/{dot}").into_bytes()
}

/// Human-readable byte counts, as `dot list` and `dot diff` show them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

impl Repo {
    /// Opens the store at `home`, as `who` (shown to other processes
    /// that find the store in use). Interrupted resets, checkouts, pulls
    /// and clones are finished by `finish_journal`, which the caller runs.
    pub fn open(home: &Path, who: &str) -> Result<Repo> {
        fs::create_dir_all(home).map_err(|e| {
            RepoError::io(
                format!(
                    "cannot create the dot home {} (set DOT_HOME to a writable directory)",
                    home.display()
                ),
                e,
            )
        })?;
        utf8_path(home)?;
        Ok(Repo {
            store: Store::open(home, who)?,
            unfinished: Default::default(),
        })
    }

    /// Dots with an interrupted reset, checkout, pull or clone.
    pub(crate) fn pending_journals(&self) -> Result<Vec<String>> {
        Ok(self.journals()?.into_iter().map(|(dot, _)| dot).collect())
    }

    /// Finishes `dot`'s interrupted operation, if it has one (the caller
    /// holds the dot). Ok(false): there was none. A journal that cannot be
    /// finished must not lock the user out of every command (dot rm, dot
    /// fsck, another reset): its error says how to drop it, and fsck
    /// reports it.
    pub(crate) fn finish_journal(&self, dot: &str) -> Result<bool> {
        let Some(bytes) = self.store.get_kv(Space::Meta, &journal_key(dot))? else {
            return Ok(false);
        };
        let done = journal::Journal::decode(dot, &bytes)
            .and_then(|j| self.replay(dot, &j, &crate::progress::Silent));
        let mut unfinished = self.unfinished.lock().expect("unfinished");
        match done {
            Ok(()) => {
                unfinished.remove(dot);
                Ok(true)
            }
            Err(e) => {
                unfinished.insert(dot.to_string(), e.to_string());
                Err(RepoError::Unfinished {
                    what: format!(
                        "could not finish an interrupted reset, checkout, pull or clone of dot {dot}"
                    ),
                    source: Box::new(e),
                    hint: self.unfinished_hint(dot),
                })
            }
        }
    }

    /// Why `dot`'s journal could not be finished, as last tried.
    pub(crate) fn unfinished_reason(&self, dot: &str) -> Option<String> {
        self.unfinished
            .lock()
            .expect("unfinished")
            .get(dot)
            .cloned()
    }

    fn home(&self) -> &Path {
        self.store.home()
    }

    // ---- configuration ----

    pub(crate) fn dot(&self, name: &str) -> Result<DotConfig> {
        check_dot(name)?;
        match self.store.get_kv(Space::Meta, &dot_key(name))? {
            Some(v) => DotConfig::decode(&format!("dot/{name}"), &v),
            None => Err(RepoError::NoSuchDot(name.to_string())),
        }
    }

    fn put_dot(batch: &mut Batch, cfg: &DotConfig) {
        batch.put(
            Space::Meta,
            dot_key(&cfg.name),
            serde_json::to_vec(cfg).expect("config serializes"),
        );
    }

    pub(crate) fn current(&self) -> Result<Option<String>> {
        Ok(self
            .store
            .get_kv(Space::Meta, b"current")?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The dot named by `spec` (a `dot` or `dot.subdot`; the subdot is
    /// ignored), or the current dot.
    pub(crate) fn resolve_dot(&self, spec: Option<&str>) -> Result<DotConfig> {
        match spec {
            Some(s) => self.dot(&parse_spec(s)?.0),
            None => match self.current()? {
                Some(name) => self.dot(&name),
                None => Err(RepoError::NoCurrentDot),
            },
        }
    }

    pub(crate) fn dots(&self) -> Result<Vec<DotConfig>> {
        let mut raw = Vec::new();
        self.store.scan_kv(Space::Meta, b"dot/", |k, v| {
            raw.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            Ok(true)
        })?;
        raw.iter().map(|(k, v)| DotConfig::decode(k, v)).collect()
    }

    pub(crate) fn config_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .get_kv(Space::Meta, format!("config/{key}").as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// A setting of one dot: `allowSpecialFiles` (true or false).
    pub(crate) fn dot_config_get(&self, cfg: &DotConfig, key: &str) -> Result<String> {
        match key {
            DOT_SETTING_SPECIAL => Ok(cfg.allow_special_files.to_string()),
            _ => Err(unknown_dot_setting(key)),
        }
    }

    pub(crate) fn dot_config_set(&self, cfg: &DotConfig, key: &str, value: &str) -> Result<()> {
        let mut cfg = cfg.clone();
        match key {
            DOT_SETTING_SPECIAL => {
                cfg.allow_special_files = value.parse().map_err(|_| {
                    RepoError::Usage(format!("{key} is true or false, not {value:?}"))
                })?
            }
            _ => return Err(unknown_dot_setting(key)),
        }
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        Ok(self.store.write(b)?)
    }

    pub(crate) fn config_set(&self, key: &str, value: &str) -> Result<()> {
        if !matches!(key, "user.name" | "user.email") {
            return Err(RepoError::Usage(format!(
                "unknown setting {key:?}; known settings: user.name, user.email"
            )));
        }
        let mut b = Batch::default();
        b.put(
            Space::Meta,
            format!("config/{key}").into_bytes(),
            value.as_bytes().to_vec(),
        );
        Ok(self.store.write(b)?)
    }

    // ---- refs ----

    /// The commit a branch points at; Ok(None) for a branch without commits.
    pub(crate) fn branch_commit(&self, dot: &str, branch: &str) -> Result<Option<CommitId>> {
        match self.store.get_kv(Space::Refs, &ref_key(dot, branch))? {
            None => Err(RepoError::NoSuchBranch {
                dot: dot.into(),
                branch: branch.into(),
            }),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Id::from_slice(&v)
                .map(|id| Some(CommitId(id)))
                .ok_or_else(|| {
                    RepoError::Config(format!("ref {dot} {branch}"), "not a commit id".into())
                }),
        }
    }

    pub(crate) fn branches(&self, cfg: &DotConfig) -> Result<Vec<BranchInfo>> {
        let prefix = format!("{}\0", cfg.name).into_bytes();
        let mut out = Vec::new();
        self.store.scan_kv(Space::Refs, &prefix, |k, v| {
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push(BranchInfo {
                current: name == cfg.head,
                commit: Id::from_slice(v).map(CommitId),
                name,
            });
            Ok(true)
        })?;
        Ok(out)
    }

    // ---- dots ----

    /// `dot init NAME[.SUBDOT] [--path DIR]`: creates a dot (or adds a
    /// subdot to an existing one) and makes it current.
    pub(crate) fn init(
        &self,
        spec: &str,
        path: Option<&Path>,
        chunking: Option<ChunkParams>,
    ) -> Result<(String, String)> {
        let (dot, sub) = parse_spec(spec)?;
        let sub = sub.unwrap_or_else(|| DEFAULT_SUBDOT.to_string());
        if let Some(c) = chunking {
            c.validate().map_err(RepoError::Usage)?;
        }
        let mut cfg = match self.dot(&dot) {
            Ok(cfg) => {
                if chunking.is_some_and(|c| c != cfg.chunking) {
                    return Err(RepoError::Usage(format!(
                        "dot {dot} already chunks with min {} avg {} max {}; chunk sizes are fixed when a dot is created",
                        cfg.chunking.min, cfg.chunking.avg, cfg.chunking.max
                    )));
                }
                if cfg.subdots.contains_key(&sub) {
                    return Err(RepoError::Usage(if sub == DEFAULT_SUBDOT {
                        format!("dot {dot} already exists; pick another name, or remove it with dot rm {dot}")
                    } else {
                        format!("subdot {dot}.{sub} already exists")
                    }));
                }
                cfg
            }
            Err(RepoError::NoSuchDot(_)) => DotConfig {
                name: dot.clone(),
                head: "master".into(),
                subdots: BTreeMap::new(),
                chunking: chunking.unwrap_or_default(),
                allow_special_files: false,
            },
            Err(e) => return Err(e),
        };
        let sub_cfg = match path {
            Some(p) => {
                let path = adopt_path(p)?;
                // A volume holding the store would commit the store itself.
                let home =
                    fs::canonicalize(self.home()).unwrap_or_else(|_| self.home().to_path_buf());
                if home.starts_with(&path) || path.starts_with(&home) {
                    return Err(RepoError::Usage(format!(
                        "{} overlaps dot's own store {}; adopt a directory outside it (or set DOT_HOME elsewhere)",
                        path.display(),
                        home.display()
                    )));
                }
                SubdotConfig {
                    path,
                    adopted: true,
                }
            }
            None => {
                let p = self.work_dir(&dot).join(&sub);
                // Debris of an interrupted `dot rm`: the dot is gone, so is its data.
                if p.exists() {
                    fs::remove_dir_all(&p)
                        .map_err(|e| RepoError::io(format!("cannot clear {}", p.display()), e))?;
                }
                fs::create_dir_all(&p)
                    .map_err(|e| RepoError::io(format!("cannot create {}", p.display()), e))?;
                SubdotConfig {
                    path: p,
                    adopted: false,
                }
            }
        };
        if let Some(other) = self
            .dots()?
            .iter()
            .flat_map(|d| d.subdots.iter().map(move |(s, c)| (d, s, c)))
            .find(|(_, _, c)| {
                c.path.starts_with(&sub_cfg.path) || sub_cfg.path.starts_with(&c.path)
            })
        {
            return Err(RepoError::Usage(format!(
                "{} overlaps the working directory of {}.{}; give each subdot a directory of its own",
                sub_cfg.path.display(),
                other.0.name,
                other.1
            )));
        }
        let new_dot = cfg.subdots.is_empty();
        cfg.subdots.insert(sub.clone(), sub_cfg);
        let mut b = Batch::default();
        Self::put_dot(&mut b, &cfg);
        if new_dot {
            b.put(Space::Refs, ref_key(&dot, &cfg.head), Vec::new());
        }
        b.put(Space::Meta, b"current".to_vec(), dot.as_bytes().to_vec());
        self.store.write(b)?;
        Ok((dot, sub))
    }

    /// The working directory of `spec` (`dot` with one subdot, or `dot.subdot`).
    pub(crate) fn path(&self, spec: Option<&str>) -> Result<PathBuf> {
        let (cfg, sub) = match spec {
            Some(s) => {
                let (dot, sub) = parse_spec(s)?;
                (self.dot(&dot)?, sub)
            }
            None => (self.resolve_dot(None)?, None),
        };
        let sub = match sub {
            Some(s) => s,
            None if cfg.subdots.contains_key(DEFAULT_SUBDOT) => DEFAULT_SUBDOT.to_string(),
            None if cfg.subdots.len() == 1 => cfg.subdots.keys().next().expect("one").clone(),
            None => {
                return Err(RepoError::Usage(format!(
                    "dot {} has subdots {}; name one, as in dot path {}.{}",
                    cfg.name,
                    cfg.subdots.keys().cloned().collect::<Vec<_>>().join(", "),
                    cfg.name,
                    cfg.subdots.keys().next().expect("subdots")
                )))
            }
        };
        cfg.subdots
            .get(&sub)
            .map(|s| s.path.clone())
            .ok_or_else(|| {
                RepoError::Usage(format!(
                    "dot {} has no subdot {sub}; see dot list",
                    cfg.name
                ))
            })
    }

    pub(crate) fn switch(&self, name: &str) -> Result<()> {
        let cfg = self.resolve_dot(Some(name))?;
        let mut b = Batch::default();
        b.put(Space::Meta, b"current".to_vec(), cfg.name.into_bytes());
        Ok(self.store.write(b)?)
    }

    /// Deletes a dot: its configuration, branches and cache atomically, then
    /// the working directories dot created. `dot gc` frees its data.
    pub(crate) fn remove(&self, name: &str) -> Result<DotConfig> {
        let (dot, sub) = parse_spec(name)?;
        if let Some(sub) = sub {
            return Err(RepoError::Usage(format!(
                "dot rm removes whole dots; to remove subdot {sub}, remove the dot {dot}"
            )));
        }
        // A damaged configuration must not keep a dot from being removed;
        // only its directories are then left in place.
        let cfg = match self.dot(&dot) {
            Err(RepoError::Config(..)) => None,
            other => Some(other?),
        };
        let mut b = Batch::default();
        b.delete(Space::Meta, dot_key(&dot));
        b.delete(Space::Meta, journal_key(&dot));
        b.delete_prefix(Space::Refs, format!("{dot}\0").into_bytes());
        b.delete_prefix(Space::Cache, format!("{dot}\0").into_bytes());
        b.delete_prefix(Space::Meta, format!("upstream/{dot}\0").into_bytes());
        if self.current()?.as_deref() == Some(dot.as_str()) {
            b.delete(Space::Meta, b"current".to_vec());
        }
        self.store.write(b)?;
        let work = self.work_dir(&dot);
        let cfg = cfg.unwrap_or_else(|| DotConfig {
            name: dot.clone(),
            head: "master".into(),
            subdots: BTreeMap::new(),
            chunking: ChunkParams::default(),
            allow_special_files: false,
        });
        // Only directories dot made for the dot, where it makes them.
        for (sub, s) in cfg.subdots.iter().filter(|(_, s)| !s.adopted) {
            if s.path == work.join(sub) {
                let _ = fs::remove_dir_all(&s.path);
            }
        }
        let _ = fs::remove_dir(&work);
        Ok(cfg)
    }

    // ---- working states ----

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

    /// Compares each subdot's working directory with the branch's last
    /// commit, without writing anything.
    pub(crate) fn status(&self, cfg: &DotConfig, progress: &dyn Progress) -> Result<Status> {
        let head = self.head_root(cfg)?.map(|(_, r)| r).unwrap_or_default();
        let dry = DryRun::new(&self.store);
        let chunker = Chunker::new(cfg.chunking);
        let mut status = Status::default();
        for sub in cfg.subdots.keys() {
            let dir = Self::working_dir(cfg, sub)?;
            let cache = StatCache::new(&self.store, cache_prefix(&cfg.name, sub));
            let scanned = Scanner::new(&dry, chunker, &cache, false, progress).scan(&dir)?;
            status.size += scanned.bytes;
            let prefix = cfg.display_prefix(sub);
            // The top directory's own attributes matter too (PostgreSQL
            // insists on 0700); its mtime, like any directory's, does not.
            let t = &scanned.top;
            if head
                .get(sub)
                .is_some_and(|h| (h.mode, h.uid, h.gid) != (t.mode, t.uid, t.gid))
            {
                status.changes.push(Changed {
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
                &dry,
                head.get(sub).map(|t| &t.tree),
                Some(&scanned.top.tree),
                &prefix,
                &mut status.changes,
            )?;
        }
        for (sub, top) in &head {
            if !cfg.subdots.contains_key(sub) {
                diff(
                    &dry,
                    Some(&top.tree),
                    None,
                    &format!("{sub}/"),
                    &mut status.changes,
                )?;
            }
        }
        status.new_bytes = dry.new_bytes();
        Ok(status)
    }

    fn require_clean(&self, cfg: &DotConfig, progress: &dyn Progress) -> Result<()> {
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
        if cfg!(debug_assertions) {
            if let Some(ms) = env
                .get("DOT_TEST_COMMIT_PAUSE_MS")
                .and_then(|v| v.parse().ok())
            {
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
        }
        if progress.cancelled() {
            return Err(WorkspaceError::Cancelled.into());
        }
        let (author, email) = self.author(env)?;
        let (time, tz_minutes) = now_and_tz();
        let commit = Commit {
            root: write_root(&self.store, &root)?,
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

    pub(crate) fn delete_branch(&self, cfg: &DotConfig, branch: &str) -> Result<()> {
        if branch == cfg.head {
            return Err(RepoError::Usage(format!(
                "cannot delete branch {branch}: it is the current branch of dot {}; dot checkout another branch first",
                cfg.name
            )));
        }
        self.branch_commit(&cfg.name, branch)?;
        let mut b = Batch::default();
        b.delete(Space::Refs, ref_key(&cfg.name, branch));
        Ok(self.store.write(b)?)
    }

    pub(crate) fn list(&self, progress: &dyn Progress) -> Result<Vec<DotSummary>> {
        let current = self.current()?;
        let mut out = Vec::new();
        for cfg in self.dots()? {
            let status = self.status(&cfg, progress)?;
            out.push(DotSummary {
                current: current.as_deref() == Some(cfg.name.as_str()),
                branch: cfg.head.clone(),
                size: status.size,
                commits: self.log(&cfg)?.len(),
                name: cfg.name,
                status,
            });
        }
        Ok(out)
    }
}

/// The per-dot setting that allows special files from remotes.
pub const DOT_SETTING_SPECIAL: &str = "allowSpecialFiles";

fn unknown_dot_setting(key: &str) -> RepoError {
    RepoError::Usage(format!(
        "unknown dot setting {key:?}; the setting of a dot is {DOT_SETTING_SPECIAL}"
    ))
}

/// Checks a directory given to `dot init --path` and makes it absolute.
fn adopt_path(p: &Path) -> Result<PathBuf> {
    let md = fs::metadata(p).map_err(|e| {
        RepoError::Usage(format!(
            "cannot use {} as a working directory: {e}",
            p.display()
        ))
    })?;
    if !md.is_dir() {
        return Err(RepoError::Usage(format!(
            "{} is not a directory; give --path a directory",
            p.display()
        )));
    }
    fs::read_dir(p).map_err(|e| {
        RepoError::Usage(format!(
            "cannot read {}: {e}; fix its permissions",
            p.display()
        ))
    })?;
    let abs = fs::canonicalize(p)
        .map_err(|e| RepoError::Usage(format!("cannot resolve {}: {e}", p.display())))?;
    utf8_path(&abs)?;
    Ok(abs)
}

/// Paths are kept in the dot configuration as text.
fn utf8_path(p: &Path) -> Result<()> {
    match p.to_str() {
        Some(_) => Ok(()),
        None => Err(RepoError::Usage(format!(
            "the path {} is not valid UTF-8; use a directory whose path is",
            p.display()
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_dot_config_parses_or_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = DotConfig::decode("dot/x", &bytes);
        }

        #[test]
        fn dot_config_names_are_checked(sub in ".{0,70}", path in "/?[a-z/]{0,10}") {
            let j = serde_json::json!({
                "name": "app", "head": "master",
                "subdots": {sub.clone(): {"path": path.clone(), "adopted": false}},
                "chunking": {"min": 16384, "avg": 65536, "max": 262144},
            });
            let parsed = DotConfig::decode("dot/app", j.to_string().as_bytes());
            let legal = check_subdot(&sub).is_ok() && path.starts_with('/');
            prop_assert_eq!(parsed.is_ok(), legal);
        }
    }
}
