//! What the daemon does for each request of Docker's volume plugin
//! protocol (docs/design.md 17.2): a volume is a dot or a subdot, served
//! by the dot's mount. Every change goes through the executor, so it
//! holds the same locks as the same `dot` command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde_json::json;

use super::api::{Call, Request, Response};
use super::exec::Executor;
use crate::docker::plugin::{Answer, Request as Asked, Volume, VolumeInfo};
use crate::env::ClientEnv;
use crate::progress::Silent;
use crate::repo::{DotConfig, RepoError, Result, DEFAULT_SUBDOT};

/// The plugin's state: which mount IDs Docker holds on each volume.
#[derive(Default)]
pub struct Plugin {
    ids: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

impl Plugin {
    /// The answer to one request; a failure is its `Err`.
    pub fn answer(&self, exec: &Executor, asked: Asked) -> Answer {
        self.run(exec, asked)
            .unwrap_or_else(|e| Answer::error(format!("dot: {e}")))
    }

    /// The answer to Plugin.Activate, which needs no store.
    pub fn answer_early(&self) -> Answer {
        Answer {
            implements: Some(vec!["VolumeDriver".into()]),
            ..Answer::default()
        }
    }

    fn run(&self, exec: &Executor, asked: Asked) -> Result<Answer> {
        Ok(match asked {
            Asked::Activate => self.answer_early(),
            Asked::Capabilities => Answer {
                capabilities: Some(json!({"Scope": "local"})),
                ..Answer::default()
            },
            Asked::Create(v) => {
                self.ensure(exec, &v, false)?;
                Answer::default()
            }
            Asked::Mount(v, id) => {
                let path = self.ensure(exec, &v, true)?;
                self.ids().entry(v.name()).or_default().insert(id);
                Answer {
                    mountpoint: Some(path.display().to_string()),
                    ..Answer::default()
                }
            }
            Asked::Unmount(v, id) => {
                let mut ids = self.ids();
                if let Some(set) = ids.get_mut(&v.name()) {
                    set.remove(&id);
                    if set.is_empty() {
                        ids.remove(&v.name());
                    }
                }
                Answer::default()
            }
            Asked::Path(v) => {
                let cfg = existing(exec, &v)?;
                Answer {
                    mountpoint: Some(mountpoint(exec, &cfg, &v)?),
                    ..Answer::default()
                }
            }
            Asked::Get(v) => {
                let cfg = existing(exec, &v)?;
                Answer {
                    volume: Some(VolumeInfo {
                        name: v.name(),
                        mountpoint: mountpoint(exec, &cfg, &v)?,
                        status: Some(self.status(exec, &v)?),
                    }),
                    ..Answer::default()
                }
            }
            Asked::List => {
                let mut volumes = Vec::new();
                for cfg in exec.repo().dots()? {
                    for sub in cfg.subdots.keys() {
                        let v = Volume {
                            dot: cfg.name.clone(),
                            subdot: (sub != DEFAULT_SUBDOT).then(|| sub.clone()),
                        };
                        volumes.push(VolumeInfo {
                            name: v.name(),
                            mountpoint: mountpoint(exec, &cfg, &v)?,
                            status: None,
                        });
                    }
                }
                Answer {
                    volumes: Some(volumes),
                    ..Answer::default()
                }
            }
            Asked::Remove(v) => {
                self.remove(exec, &v)?;
                Answer::default()
            }
        })
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<String>>> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates the volume's dot or subdot when it does not exist (a new
    /// dot is mounted), mounts the dot when `mount` asks, and returns
    /// the volume's path.
    fn ensure(&self, exec: &Executor, v: &Volume, mount: bool) -> Result<PathBuf> {
        let repo = exec.repo();
        let sub = v.subdot.as_deref().unwrap_or(DEFAULT_SUBDOT);
        let exists = || {
            repo.dot(&v.dot)
                .is_ok_and(|cfg| cfg.subdots.contains_key(sub))
        };
        let mut created = false;
        if !exists() {
            let init = Request::Init {
                spec: v.name(),
                path: None,
                chunking: None,
            };
            // Docker starts a Compose file's containers at once: another
            // request may have made it meanwhile.
            match call(exec, init) {
                Ok(_) => created = true,
                Err(_) if exists() => {}
                Err(e) => return Err(e),
            }
        }
        let mounted = || repo.mounted_dot(&v.dot).is_ok_and(|m| m.is_some());
        if (mount || created) && !mounted() {
            let dot = Some(v.dot.clone());
            match call(exec, Request::MountDot { dot }) {
                Ok(_) => {}
                Err(_) if mounted() => {}
                Err(e) => return Err(e),
            }
        }
        volume_path(exec, &repo.dot(&v.dot)?, v)
    }

    /// Get's Status: where the dot is and what is uncommitted.
    fn status(&self, exec: &Executor, v: &Volume) -> Result<BTreeMap<String, serde_json::Value>> {
        let Response::Status(st) = call(
            exec,
            Request::Status {
                dot: Some(v.dot.clone()),
            },
        )?
        else {
            unreachable!("a status request answers a status");
        };
        let mounts = self.ids().get(&v.name()).map_or(0, BTreeSet::len);
        Ok([
            ("branch", json!(st.branch)),
            ("head", json!(st.head.map(|c| c.0.to_hex()))),
            ("size", json!(st.size)),
            ("dirty_bytes", json!(st.new_bytes)),
            ("changes", json!(st.added + st.modified + st.deleted)),
            ("working_state", json!(st.working_state)),
            ("containers", json!(st.containers)),
            ("mounts", json!(mounts)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }

    /// `docker volume rm`: a dot without commits is removed (unmounted
    /// first); one with commits keeps its history, and the answer names
    /// `dot rm`.
    fn remove(&self, exec: &Executor, v: &Volume) -> Result<()> {
        let repo = exec.repo();
        let cfg = match repo.dot(&v.dot) {
            Ok(cfg) => cfg,
            Err(RepoError::NoSuchDot(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sub = v.subdot.as_deref().unwrap_or(DEFAULT_SUBDOT);
        if !cfg.subdots.contains_key(sub) {
            return Ok(());
        }
        let committed = repo.branches(&cfg)?.iter().any(|b| b.commit.is_some());
        if committed {
            return Err(RepoError::Refused(format!(
                "dot {} has commits, and docker volume rm does not delete history; remove the dot with dot rm {} (or keep it: the volume comes back with its data)",
                cfg.name, cfg.name
            )));
        }
        if cfg.subdots.len() > 1 {
            return Err(RepoError::Refused(format!(
                "dot {} has other subdots ({}); remove the whole dot with dot rm {}",
                cfg.name,
                cfg.subdots.keys().cloned().collect::<Vec<_>>().join(", "),
                cfg.name
            )));
        }
        if repo.mounted_dot(&cfg.name)?.is_some() {
            call(
                exec,
                Request::UnmountDot {
                    dot: cfg.name.clone(),
                },
            )?;
        }
        call(
            exec,
            Request::Remove {
                dot: cfg.name.clone(),
            },
        )?;
        self.ids().remove(&v.name());
        Ok(())
    }
}

/// One request through the executor, with the daemon's environment.
fn call(exec: &Executor, request: Request) -> Result<Response> {
    exec.execute(
        &Call {
            env: ClientEnv::capture(),
            request,
            client: None,
        },
        &Silent,
    )
}

/// The dot of an existing volume.
fn existing(exec: &Executor, v: &Volume) -> Result<DotConfig> {
    let cfg = exec.repo().dot(&v.dot)?;
    let sub = v.subdot.clone().unwrap_or_else(|| DEFAULT_SUBDOT.into());
    if !cfg.subdots.contains_key(&sub) {
        return Err(RepoError::NotFound(format!(
            "dot {} has no subdot {sub}; using the volume {} creates it",
            cfg.name,
            v.name()
        )));
    }
    Ok(cfg)
}

/// Where a volume shows: the dot's mount point when it has one default
/// subdot, else the mount's directory of the subdot.
fn volume_path(exec: &Executor, cfg: &DotConfig, v: &Volume) -> Result<PathBuf> {
    let at = exec.repo().mount_point(cfg)?;
    let single = cfg.subdots.len() == 1 && cfg.subdots.contains_key(DEFAULT_SUBDOT);
    Ok(if single {
        at
    } else {
        at.join(v.subdot.as_deref().unwrap_or(DEFAULT_SUBDOT))
    })
}

/// A volume's path while its dot is mounted; empty otherwise.
fn mountpoint(exec: &Executor, cfg: &DotConfig, v: &Volume) -> Result<String> {
    if exec.repo().mounted_dot(&cfg.name)?.is_none() {
        return Ok(String::new());
    }
    Ok(volume_path(exec, cfg, v)?.display().to_string())
}
