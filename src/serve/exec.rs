//! Carrying out a request on the store: the one place that turns a
//! `Request` into calls on the library and its results into a `Response`,
//! the same for a command run in-process and one served by the daemon.
//!
//! Concurrency (docs/design.md, "Serving"): requests that change a dot hold
//! that dot's lock, so operations on one dot are serialized and none is
//! lost; requests that write objects (or rely on objects no ref names yet)
//! share a gate that gc takes alone, so gc never deletes what a running
//! commit, pull or reset needs (fsck holds it too, as it reads every
//! object). Other reads take neither and answer at once.
//! A request that names no dot acts on the current dot as it was when the
//! request took its lock, even if `dot switch` runs meanwhile.
//!
//! Interrupted resets, checkouts, pulls and clones are finished before a
//! request runs (unless gc holds the gate). One that could not be
//! finished is retried only by a request that changes its dot (and by
//! each new process), so that a failing journal does not make every read
//! redo its work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::api::*;
use super::mounts::{Mounts, OpenFiles};
use crate::docker::engine::{Container, Engine};
use crate::env::ClientEnv;
use crate::mount::working::Working;
use crate::progress::Progress;
use crate::repo::names::parse_spec;
use crate::repo::remote::{CloneOptions, Target};
use crate::repo::{Repo, RepoError, Result, Status};

pub struct Executor {
    repo: Repo,
    dots: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    gate: RwLock<()>,
    /// The views this process serves: only a daemon serves any.
    mounts: Option<Mounts>,
}

impl Executor {
    /// An executor for one command in this process.
    pub fn new(repo: Repo) -> Executor {
        Executor {
            repo,
            dots: Mutex::new(HashMap::new()),
            gate: RwLock::new(()),
            mounts: None,
        }
    }

    /// The daemon's executor: it serves mounts, and mounts again those
    /// recorded, logging through `log`.
    pub fn serving(repo: Repo, log: crate::serve::mounts::Log) -> Executor {
        let mounts = Mounts::new(log);
        mounts.restore(&repo);
        Executor {
            mounts: Some(mounts),
            ..Executor::new(repo)
        }
    }

    /// The mount serving `cfg`'s working state, if it is mounted. A dot
    /// recorded as mounted that no daemon serves here is refused: its
    /// directory is a dead mount.
    fn working(&self, cfg: &crate::repo::DotConfig) -> Result<Option<(&Mounts, Arc<Working>)>> {
        if let Some(m) = &self.mounts {
            if let Some(w) = m.working(&cfg.name) {
                return Ok(Some((m, w)));
            }
        }
        if self.repo.mounted_dot(&cfg.name)?.is_some() {
            return Err(RepoError::Refused(format!(
                "dot {} is mounted and no dot daemon serves it; start one with dot daemon start (or dot unmount {})",
                cfg.name, cfg.name
            )));
        }
        Ok(None)
    }

    /// `dot init DOT.SUB` of a mounted dot: the subdot is added to the
    /// mount. None when `spec` names no mounted dot.
    fn mounted_init(&self, spec: &str, made_here: bool) -> Result<Option<(String, String)>> {
        let (dot, Some(sub)) = parse_spec(spec)? else {
            return Ok(None);
        };
        let Ok(cfg) = self.repo.dot(&dot) else {
            return Ok(None);
        };
        let Some((m, w)) = self.working(&cfg)? else {
            return Ok(None);
        };
        if !made_here {
            return Err(RepoError::Refused(format!(
                "dot {dot} is mounted; a subdot of a directory of yours (--path) cannot be added to a mount"
            )));
        }
        m.add_subdot(&self.repo, &w, &cfg, &sub)?;
        Ok(Some((dot, sub)))
    }

    /// How `cfg`'s working state differs from its branch: read from the
    /// overlay when it is mounted here, else by scanning its directories.
    fn status(&self, cfg: &crate::repo::DotConfig, progress: &dyn Progress) -> Result<Status> {
        if let Some((m, w)) = self.working(cfg)? {
            return m.status(&self.repo, &w, cfg);
        }
        progress.start("scanning", 0);
        let st = self.repo.status(cfg, progress);
        progress.finish();
        st
    }

    /// The store this executor serves.
    pub(crate) fn repo(&self) -> &Repo {
        &self.repo
    }

    /// Paths of the views this process serves.
    pub fn mounted(&self) -> Vec<std::path::PathBuf> {
        self.mounts.as_ref().map_or_else(Vec::new, Mounts::mounted)
    }

    fn dot_lock(&self, dot: &str) -> Arc<Mutex<()>> {
        self.dots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(dot.to_string())
            .or_default()
            .clone()
    }

    /// Finishes interrupted resets, checkouts, pulls and clones whose dot
    /// no request holds, saying so through `progress`. A journal that
    /// failed before is tried again, as each command run in-process does:
    /// once its cause is gone, the next command of any kind finishes it.
    fn recover(&self, progress: &dyn Progress) -> Result<()> {
        for dot in self.repo.pending_journals()? {
            let lock = self.dot_lock(&dot);
            let _held = match lock.try_lock() {
                Ok(held) => held,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue, // Being carried out now.
            };
            match self.repo.finish_journal(&dot, progress) {
                Ok(true) => progress.note(&format!(
                    "finished an interrupted reset, checkout, pull or clone of dot {dot}"
                )),
                Ok(false) => {}
                Err(e) => progress.note(&e.to_string()),
            }
        }
        Ok(())
    }

    /// Carries out one request, holding the locks it needs. A reset or
    /// switch of a mounted dot that running containers use stops them
    /// first and starts them again after (docs/design.md 17.3), outside
    /// the dot's lock: dockerd calls the plugin meanwhile.
    pub fn execute(&self, call: &Call, progress: &dyn Progress) -> Result<Response> {
        let (dot, no_restart) = match &call.request {
            Request::Reset {
                dot, no_restart, ..
            }
            | Request::Checkout {
                dot,
                no_restart,
                create: false,
                ..
            } => (dot, *no_restart),
            _ => return self.execute_locked(call, progress),
        };
        let name = match dot {
            Some(spec) => parse_spec(spec)?.0,
            None => match self.repo.current()? {
                Some(name) => name,
                None => return self.execute_locked(call, progress),
            },
        };
        let running = match self.repo.mounted_dot(&name)? {
            Some(_) => containers(&call.env),
            None => Vec::new(),
        };
        let users: Vec<&Container> = running.iter().filter(|c| c.uses(&name)).collect();
        if users.is_empty() {
            return self.execute_locked(call, progress);
        }
        let listed = names(&users);
        if no_restart {
            return Err(RepoError::Busy(format!(
                "containers {listed} use dot {name}; stop them first, or leave out --no-restart and dot stops them and starts them again"
            )));
        }
        progress.note(&format!(
            "stopping {listed} (using dot {name}) for the switch"
        ));
        let engine = Engine::from_env(&call.env).expect("containers came from it");
        let (outcome, restarted) =
            with_stopped(&engine, &users, || self.execute_locked(call, progress))?;
        Ok(match outcome {
            Response::Reset(r) => Response::Reset(ResetReport { restarted, ..r }),
            Response::Checkout(r) => Response::Checkout(CheckoutReport { restarted, ..r }),
            other => other,
        })
    }

    fn execute_locked(&self, call: &Call, progress: &dyn Progress) -> Result<Response> {
        let req = &call.request;
        // The dot the request changes, resolved once.
        let written = match req.dot_written() {
            None => None,
            Some(Some(spec)) => Some(parse_spec(spec)?.0),
            Some(None) => self.repo.current()?,
        };
        // Journals need their targets alive: not while gc runs (and reads
        // do not wait for gc).
        if let Ok(_writes) = self.gate.try_read() {
            self.recover(progress)?;
        }
        // A request that panicked (a bug, reported as such by the daemon)
        // leaves its locks poisoned; what they guard holds no data, so the
        // next request goes on.
        let _gc = matches!(req, Request::Gc { .. })
            .then(|| self.gate.write().unwrap_or_else(PoisonError::into_inner));
        let _writes = req
            .excludes_gc()
            .then(|| self.gate.read().unwrap_or_else(PoisonError::into_inner));
        let lock = written.as_deref().map(|dot| self.dot_lock(dot));
        let _dot: Option<MutexGuard<()>> = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner));
        self.run(call, written.as_deref(), progress)
    }

    /// Runs a request; `held` is the dot it changes (locked by the caller),
    /// which stands for the current dot when the request names none.
    fn run(&self, call: &Call, held: Option<&str>, progress: &dyn Progress) -> Result<Response> {
        let repo = &self.repo;
        let env = &call.env;
        let dot = |spec: &Option<String>| match (spec, held) {
            (None, Some(name)) => repo.dot(name),
            _ => repo.resolve_dot(spec.as_deref()),
        };
        let open = |force| OpenFiles {
            force,
            client: call.client,
        };
        Ok(match &call.request {
            Request::Init {
                spec,
                path,
                chunking,
            } => {
                let (dot, subdot) = match self.mounted_init(spec, path.is_none())? {
                    Some(added) => added,
                    None => repo.init(spec, path.as_deref(), *chunking)?,
                };
                let branch = repo.dot(&dot)?.head;
                Response::Init(InitReport {
                    dot,
                    subdot,
                    branch,
                })
            }
            Request::Path { spec } => Response::Path(repo.path(spec.as_deref())?),
            Request::Commit {
                dot: d,
                message,
                metadata,
            } => {
                let cfg = dot(d)?;
                let (commit, pause_ms, frozen_ms) = match self.working(&cfg)? {
                    Some((m, w)) => {
                        let (id, pause, frozen) =
                            m.commit(repo, &w, &cfg, message, metadata.clone(), env)?;
                        (id, Some(pause), Some(frozen))
                    }
                    None => {
                        progress.start("committing", 0);
                        let commit = repo.commit(&cfg, message, metadata.clone(), env, progress);
                        progress.finish();
                        let commit = commit.map_err(|e| {
                            e.needing("the commit's new data needs", || repo.commit_room(&cfg))
                        });
                        (commit?, None, None)
                    }
                };
                Response::Commit(CommitReport {
                    dot: cfg.name,
                    branch: cfg.head,
                    commit,
                    pause_ms,
                    frozen_ms,
                })
            }
            Request::Diff { dot: d } => {
                let cfg = dot(d)?;
                let st = self.status(&cfg, progress)?;
                Response::Diff(DiffReport::new(
                    &cfg.name,
                    &cfg.head,
                    st.changes,
                    st.new_bytes,
                ))
            }
            Request::Status { dot: d } => {
                let cfg = dot(d)?;
                let mounted = self.working(&cfg)?.is_some();
                let st = self.status(&cfg, progress)?;
                let diff = DiffReport::new(&cfg.name, &cfg.head, st.changes, st.new_bytes);
                Response::Status(StatusReport {
                    head: repo.branch_commit(&cfg.name, &cfg.head)?,
                    upstream: repo.upstream(&cfg.name, &cfg.head)?,
                    working_state: if mounted { "mounted" } else { "plain" }.into(),
                    subdots: cfg
                        .subdots
                        .iter()
                        .map(|(k, v)| (k.clone(), v.path.clone()))
                        .collect(),
                    size: st.size,
                    clean: diff.clean,
                    added: diff.added,
                    modified: diff.modified,
                    deleted: diff.deleted,
                    new_bytes: diff.new_bytes,
                    allow_special_files: cfg.allow_special_files,
                    containers: names_of(&containers(env), &cfg.name),
                    dot: cfg.name,
                    branch: cfg.head,
                })
            }
            Request::Reset {
                dot: d,
                refspec,
                force,
                ..
            } => {
                let cfg = dot(d)?;
                let commit = match self.working(&cfg)? {
                    Some((m, w)) => m.reset(repo, &w, &cfg, refspec, open(*force)),
                    None => {
                        progress.start("resetting", 0);
                        let commit = repo.reset_hard(&cfg, refspec, progress);
                        progress.finish();
                        commit.map_err(|e| {
                            e.needing("the reset's files need", || {
                                repo.switch_room(&cfg, refspec, false)
                            })
                        })
                    }
                };
                Response::Reset(ResetReport {
                    commit: commit?,
                    dot: cfg.name,
                    branch: cfg.head,
                    restarted: Vec::new(),
                })
            }
            Request::Log { dot: d } => {
                let cfg = dot(d)?;
                Response::Log(
                    repo.log(&cfg)?
                        .into_iter()
                        .map(|(commit, c)| LogEntry {
                            commit,
                            parents: c.parents,
                            author: c.author,
                            email: c.email,
                            time: c.time,
                            tz_minutes: c.tz_minutes,
                            message: c.message,
                            metadata: c.metadata,
                        })
                        .collect(),
                )
            }
            Request::Checkout {
                dot: d,
                branch,
                create,
                force,
                ..
            } => {
                let cfg = dot(d)?;
                match self.working(&cfg)? {
                    Some((m, w)) => m.checkout(repo, &w, &cfg, branch, *create, open(*force))?,
                    None => {
                        progress.start("checking out", 0);
                        let r = repo.checkout(&cfg, branch, *create, progress);
                        progress.finish();
                        r.map_err(|e| {
                            e.needing("the checkout's files need", || {
                                repo.switch_room(&cfg, branch, true)
                            })
                        })?;
                    }
                }
                Response::Checkout(CheckoutReport {
                    dot: cfg.name,
                    branch: branch.clone(),
                    created: *create,
                    restarted: Vec::new(),
                })
            }
            Request::Branches { dot: d } => Response::Branches(repo.branches(&dot(d)?)?),
            Request::DeleteBranch { dot: d, branch } => {
                let cfg = dot(d)?;
                repo.delete_branch(&cfg, branch)?;
                Response::BranchDeleted {
                    dot: cfg.name,
                    branch: branch.clone(),
                }
            }
            Request::List => {
                let dots = repo.list(&|cfg| self.status(cfg, progress));
                let running = containers(env);
                Response::List(
                    dots?
                        .into_iter()
                        .map(|d| ListEntry {
                            current: d.current,
                            branch: d.branch,
                            size: d.size,
                            commits: d.commits,
                            dirty: !d.status.changes.is_empty(),
                            dirty_bytes: d.status.new_bytes,
                            changes: d.status.changes.len(),
                            mounted: d.mounted,
                            unread: d.unread,
                            containers: names_of(&running, &d.name),
                            name: d.name,
                        })
                        .collect(),
                )
            }
            Request::Switch { dot: d } => {
                repo.switch(d)?;
                Response::Switched {
                    dot: repo.resolve_dot(Some(d))?.name,
                }
            }
            Request::Resolve { dot: d } => Response::Resolved { dot: dot(d)?.name },
            Request::Remove { dot: d } => {
                let cfg = repo.remove(d)?;
                Response::Removed(RemoveReport {
                    kept: cfg
                        .subdots
                        .values()
                        .filter(|s| s.adopted)
                        .map(|s| s.path.clone())
                        .collect(),
                    dot: cfg.name,
                })
            }
            Request::Gc { prune_now } => Response::Gc(repo.gc(*prune_now)?),
            Request::Reflog { dot: d } => Response::Reflog(repo.reflog(&dot(d)?.name)?),
            Request::Fsck => Response::Fsck(repo.fsck()?),
            Request::GcRemote { remote, prune_now } => {
                Response::GcRemote(repo.gc_remote(remote, *prune_now, env, progress)?)
            }
            Request::FsckRemote { remote, read_data } => {
                Response::FsckRemote(repo.fsck_remote(remote, *read_data, env, progress)?)
            }
            Request::Mount { spec, at } => match &self.mounts {
                Some(m) => Response::Mounted(m.mount(repo, spec, at)?),
                None => {
                    return Err(RepoError::Refused(
                        "views are served by the dot daemon; start it with dot daemon start".into(),
                    ))
                }
            },
            // Without a daemon, a view a dead daemon left is detached and
            // forgotten.
            Request::Unmount { at } => Response::Unmounted(match &self.mounts {
                Some(m) => m.unmount(repo, at, call.client)?,
                None => Mounts::new(Arc::new(|_| {})).unmount(repo, at, call.client)?,
            }),
            Request::Mounts => Response::Mounts(repo.mounts()?),
            Request::MountDot { dot: d } => {
                let cfg = dot(d)?;
                let Some(m) = &self.mounts else {
                    return Err(RepoError::Refused(
                        "mounts are served by the dot daemon; start it with dot daemon start"
                            .into(),
                    ));
                };
                Response::MountedDot(m.mount_dot(repo, &cfg, progress)?)
            }
            Request::UnmountDot { dot: d } => {
                let cfg = repo.dot(d)?;
                let m = match &self.mounts {
                    Some(m) => m,
                    // Without a daemon: the mount a dead daemon left.
                    None => &Mounts::new(Arc::new(|_| {})),
                };
                Response::UnmountedDot(m.unmount_dot(repo, &cfg, call.client, progress)?)
            }
            Request::ConfigGet { key } => Response::Config(repo.config_get(key)?),
            Request::ConfigSet { key, value } => {
                repo.config_set(key, value)?;
                Response::Done
            }
            Request::DotConfigGet { dot: d, key } => {
                let cfg = repo.resolve_dot(Some(d))?;
                Response::Config(Some(repo.dot_config_get(&cfg, key)?))
            }
            Request::DotConfigSet { dot: d, key, value } => {
                let cfg = repo.resolve_dot(Some(d))?;
                repo.dot_config_set(&cfg, key, value)?;
                Response::Done
            }
            Request::RemoteAdd {
                name,
                url,
                endpoint,
                region,
                single_writer,
            } => {
                let check = repo.remote_add(
                    name,
                    url,
                    endpoint.as_deref(),
                    region.as_deref(),
                    *single_writer,
                    env,
                )?;
                Response::RemoteAdded(RemoteAddReport {
                    name: name.clone(),
                    single_writer: *single_writer,
                    check_error: check.as_ref().err().map(ToString::to_string),
                    check: check.ok(),
                })
            }
            Request::RemoteRemove { name } => {
                repo.remote_remove(name)?;
                Response::Done
            }
            Request::Remotes => Response::Remotes(repo.remotes()?),
            Request::Push {
                dot: d,
                target,
                force,
            } => {
                let cfg = dot(d)?;
                Response::Push(repo.push(&cfg, &target.as_target(), *force, env, progress)?)
            }
            Request::Pull { dot: d, target } => {
                let cfg = match dot(d) {
                    Err(RepoError::NoSuchDot(name)) => {
                        return Err(RepoError::NotFound(format!(
                            "dot {name} does not exist here; to fetch it, run dot clone {} {name}",
                            target.remote.as_deref().unwrap_or("REMOTE")
                        )))
                    }
                    r => r?,
                };
                let working = self.working(&cfg)?;
                let switch = working.as_ref().map(|(m, w)| {
                    |b, to, why: &str| m.pull(repo, w, &cfg, b, to, why, open(false))
                });
                let mounted = switch
                    .as_ref()
                    .map(|f| f as crate::repo::remote::MountedSwitch);
                Response::Pull(repo.pull(&cfg, &target.as_target(), env, progress, mounted)?)
            }
            Request::Clone {
                remote,
                remote_dot,
                local_name,
                branch,
                allow_special_files,
            } => Response::Clone(repo.clone_dot(
                &CloneOptions {
                    remote,
                    remote_dot,
                    local_name: local_name.as_deref(),
                    branch: branch.as_deref(),
                    allow_special_files: *allow_special_files,
                },
                env,
                progress,
            )?),
        })
    }
}

impl TargetArgs {
    fn as_target(&self) -> Target<'_> {
        Target {
            remote: self.remote.as_deref(),
            remote_dot: self.remote_dot.as_deref(),
            branch: self.branch.as_deref(),
        }
    }
}

/// The running containers that use dot volumes, from the Docker `env`
/// names; none when Docker does not answer.
pub(crate) fn containers(env: &ClientEnv) -> Vec<Container> {
    Engine::from_env(env)
        .and_then(|e| e.containers().ok())
        .unwrap_or_default()
}

/// The names of those of `running` that use dot `dot`.
fn names_of(running: &[Container], dot: &str) -> Vec<String> {
    running
        .iter()
        .filter(|c| c.uses(dot))
        .map(|c| c.name.clone())
        .collect()
}

fn names(containers: &[&Container]) -> String {
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stops `users`, runs `run`, and starts again those it stopped, whether
/// `run` succeeded or not; `run`'s outcome and the containers started
/// again. The first failure is the error.
fn with_stopped(
    engine: &Engine,
    users: &[&Container],
    run: impl FnOnce() -> Result<Response>,
) -> Result<(Response, Vec<String>)> {
    let mut stopped = Vec::new();
    let mut outcome = Ok(None);
    for c in users {
        if let Err(e) = engine.stop(c) {
            outcome = Err(RepoError::io(
                format!("cannot stop container {}", c.name),
                e,
            ));
            break;
        }
        stopped.push(*c);
    }
    if outcome.is_ok() {
        outcome = run().map(Some);
    }
    let mut restarted = Vec::new();
    for c in stopped {
        match engine.start(c) {
            Ok(()) => restarted.push(c.name.clone()),
            Err(e) if outcome.is_ok() => {
                outcome = Err(RepoError::io(
                    format!(
                        "cannot start container {} again (start it with docker start {})",
                        c.name,
                        c.name.trim_start_matches('/')
                    ),
                    e,
                ))
            }
            Err(_) => {}
        }
    }
    Ok((outcome?.expect("ran"), restarted))
}
