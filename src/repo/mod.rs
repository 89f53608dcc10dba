//! Dots, subdots and branches, and the operations the command line offers,
//! by responsibility: `dots` (create, list, switch, remove, settings),
//! `revision` (branches and revision parsing), `work` (status and commit),
//! `journal` (reset, checkout and their crash recovery), `maintenance`
//! (gc, fsck), `remote` (push, pull, clone). The daemon's executor calls
//! them; the CLI only builds requests and prints responses.
//!
//! Index keys (docs/design.md): `meta` holds `dot/<name>` (JSON
//! `DotConfig`), `current`, `config/<key>` and `journal/<dot>`; `refs` holds
//! `<dot>\0<branch>` -> 32-byte commit id, or empty for a branch without
//! commits; `cache` holds `<dot>\0<subdot>\0<path>` stat cache entries.

mod dots;
mod error;
mod journal;
mod maintenance;
mod mounts;
pub(crate) mod names;
pub mod reflog;
pub mod remote;
mod revision;
mod work;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::progress::Progress;
use crate::store::{Space, Store};
use dots::utf8_path;
pub use dots::{DotConfig, DotSummary, SubdotConfig, DOT_SETTING_SPECIAL};
pub use error::{ErrorKind, RepoError, Result};
pub use maintenance::FsckReport;
pub use mounts::{MountRecord, MountedDot};
pub use names::DEFAULT_SUBDOT;
pub use revision::BranchInfo;
pub(crate) use work::changes_between;
pub use work::Status;

pub struct Repo {
    /// Shared with the mounts the daemon serves.
    store: std::sync::Arc<Store>,
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
            store: std::sync::Arc::new(Store::open(home, who)?),
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
    pub(crate) fn finish_journal(&self, dot: &str, progress: &dyn Progress) -> Result<bool> {
        let Some(bytes) = self.store.get_kv(Space::Meta, &journal_key(dot))? else {
            return Ok(false);
        };
        let done =
            journal::Journal::decode(dot, &bytes).and_then(|j| self.replay(dot, &j, progress));
        let mut unfinished = self.unfinished.lock().expect("unfinished");
        match done {
            Ok(()) => {
                unfinished.remove(dot);
                Ok(true)
            }
            // Cancelled by the user: not a failure to remember.
            Err(e) if e.kind() == ErrorKind::Cancelled => Err(e),
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
}
