//! The views a daemon serves (docs/design.md 16.1): mounted on request,
//! recorded in the store first, mounted again when the daemon starts, and
//! unmounted only when nothing uses them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::repo::{MountRecord, Repo, RepoError, Result};

/// Where the daemon logs what happens to mounts outside any request.
pub type Log = Arc<dyn Fn(String) + Send + Sync>;

/// The mounts of one daemon.
pub struct Mounts {
    #[cfg(target_os = "linux")]
    live: Mutex<BTreeMap<PathBuf, crate::fuse::Mounted>>,
    #[cfg(not(target_os = "linux"))]
    live: Mutex<BTreeMap<PathBuf, ()>>,
    log: Log,
}

fn linux_only() -> RepoError {
    RepoError::Refused("mounts need Linux's FUSE; on this system dots are plain directories".into())
}

impl Mounts {
    pub fn new(log: Log) -> Mounts {
        Mounts {
            live: Mutex::new(BTreeMap::new()),
            log,
        }
    }

    /// Mounts again every recorded view (after a restart, or a crash that
    /// left dead mounts behind); failures are logged and the record kept.
    pub fn restore(&self, repo: &Repo) {
        let records = match repo.mounts() {
            Ok(r) => r,
            Err(e) => return (self.log)(format!("cannot read the mount records: {e}")),
        };
        for r in records {
            #[cfg(target_os = "linux")]
            crate::fuse::detach_stale(&r.at);
            match self.attach(repo, &r) {
                Ok(()) => (self.log)(format!(
                    "mounted {}@{} ({}) at {} again",
                    r.dot,
                    r.rev,
                    r.commit.short(),
                    r.at.display()
                )),
                Err(e) => (self.log)(format!(
                    "cannot mount {}@{} at {} again: {e}; dot unmount {} drops it",
                    r.dot,
                    r.rev,
                    r.at.display(),
                    r.at.display()
                )),
            }
        }
    }

    /// `dot mount DOT@REF --at DIR`.
    pub fn mount(&self, repo: &Repo, spec: &str, at: &Path) -> Result<MountRecord> {
        if !cfg!(target_os = "linux") {
            return Err(linux_only());
        }
        let (_, record) = repo.plan_view(spec, at)?;
        repo.record_mount(&record)?;
        if let Err(e) = self.attach(repo, &record) {
            repo.drop_mount(at)?;
            return Err(e);
        }
        Ok(record)
    }

    #[cfg(target_os = "linux")]
    fn attach(&self, repo: &Repo, r: &MountRecord) -> Result<()> {
        let view = crate::mount::View::new(repo.shared_store(), r.commit).map_err(|f| {
            RepoError::Damaged {
                what: format!("commit {} of dot {}", r.commit.short(), r.dot),
                why: format!("{f:?}"),
            }
        })?;
        let log = self.log.clone();
        let mounted = crate::fuse::mount(
            Arc::new(view),
            &r.at,
            &format!("{}@{}", r.dot, r.rev),
            log,
        )
        .map_err(|e| {
            RepoError::io(
                format!(
                    "cannot mount at {} (FUSE needs /dev/fuse, and fusermount3 unless the daemon runs as root)",
                    r.at.display()
                ),
                e,
            )
        })?;
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(r.at.clone(), mounted);
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn attach(&self, _repo: &Repo, _r: &MountRecord) -> Result<()> {
        Err(linux_only())
    }

    /// `dot unmount DIR`: refused while a process uses the view, naming
    /// it. A view a dead daemon left is detached and forgotten.
    pub fn unmount(&self, repo: &Repo, at: &Path) -> Result<MountRecord> {
        let Some(record) = repo.mounts()?.into_iter().find(|m| m.at == at) else {
            return Err(RepoError::NotFound(format!(
                "{} is not a dot view; dot daemon status lists them",
                at.display()
            )));
        };
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        #[cfg(target_os = "linux")]
        {
            if live.contains_key(at) {
                if let Err(e) = rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty()) {
                    if e == rustix::io::Errno::BUSY {
                        return Err(RepoError::Busy(format!(
                            "{} is in use by {}; close what uses it and run dot unmount again",
                            at.display(),
                            crate::mount::users_of(at).join(", ")
                        )));
                    }
                    return Err(RepoError::io(
                        format!("cannot unmount {}", at.display()),
                        e.into(),
                    ));
                }
            } else {
                crate::fuse::detach_stale(at);
            }
        }
        live.remove(at);
        drop(live);
        repo.drop_mount(at)?;
        Ok(record)
    }

    /// Paths of the views mounted now.
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }
}
