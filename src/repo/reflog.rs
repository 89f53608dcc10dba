//! The reflog (docs/design.md 18): every move of every branch (commit,
//! reset, checkout -b, pull, clone, branch -d), written in the same batch
//! as the move, so a commit a reset left behind can be found and brought
//! back; gc keeps the commits it names for `gc.reflogExpire`.
//!
//! Key: `meta` `reflog/<dot>\0<time in ns, 16 hex digits>` -> JSON `RefMove`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Repo, RepoError, Result};
use crate::id::CommitId;
use crate::store::{Batch, Space};

/// How long the reflog keeps commits alive when `gc.reflogExpire` is not
/// set.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The setting that says how long.
pub const EXPIRE_SETTING: &str = "gc.reflogExpire";

/// One move of a branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefMove {
    pub branch: String,
    /// The commit it named before (None: it did not exist or had none).
    pub old: Option<CommitId>,
    /// The commit it names after (None: deleted).
    pub new: Option<CommitId>,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// What moved it, as the user typed it (`reset --hard HEAD^`).
    pub command: String,
}

fn prefix(dot: &str) -> Vec<u8> {
    format!("reflog/{dot}\0").into_bytes()
}

/// Now, in nanoseconds, strictly later than any earlier call in this
/// process: each move has a key of its own.
fn stamp() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Records a move of `branch` of `dot` in `b`, the batch that moves it.
pub(crate) fn log_move(
    b: &mut Batch,
    dot: &str,
    branch: &str,
    old: Option<CommitId>,
    new: Option<CommitId>,
    command: &str,
) {
    let time_ns = stamp();
    let mut key = prefix(dot);
    key.extend_from_slice(format!("{time_ns:016x}").as_bytes());
    let entry = RefMove {
        branch: branch.to_string(),
        old,
        new,
        time_ns,
        command: command.to_string(),
    };
    b.put(
        Space::Meta,
        key,
        serde_json::to_vec(&entry).expect("a move serializes"),
    );
}

/// `gc.reflogExpire`: `never`, `now`, or a number and a unit (`s`, `m`,
/// `h`, `d`, `w`), as in `30d`. None is never.
pub fn parse_expire(value: &str) -> std::result::Result<Option<Duration>, String> {
    let bad = || {
        format!("{EXPIRE_SETTING} is never, now, or a number and a unit (s, m, h, d or w) such as 30d, not {value:?}")
    };
    match value {
        "never" => return Ok(None),
        "now" => return Ok(Some(Duration::ZERO)),
        _ => {}
    }
    let split = value.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = value.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(Some(Duration::from_secs(
        n.checked_mul(secs).ok_or_else(bad)?,
    )))
}

/// What gc learns from the reflog.
pub(super) struct ReflogLive {
    /// The commits it keeps, with where each is named.
    pub kept: Vec<(String, CommitId)>,
    /// The keys of moves older than the expiry.
    pub expired: Vec<Vec<u8>>,
}

impl Repo {
    /// The moves of `dot`'s branches, newest first.
    pub(crate) fn reflog(&self, dot: &str) -> Result<Vec<RefMove>> {
        let mut out = Vec::new();
        self.scan_reflog(dot, |_, m| out.push(m))?;
        out.reverse();
        Ok(out)
    }

    fn scan_reflog(&self, dot: &str, mut f: impl FnMut(&[u8], RefMove)) -> Result<()> {
        let mut bad = None;
        self.store.scan_kv(Space::Meta, &prefix(dot), |k, v| {
            match serde_json::from_slice::<RefMove>(v) {
                Ok(m) => f(k, m),
                Err(e) => bad = Some(e.to_string()),
            }
            Ok(bad.is_none())
        })?;
        match bad {
            Some(why) => Err(RepoError::Damaged {
                what: format!("the reflog of dot {dot}"),
                why,
            }),
            None => Ok(()),
        }
    }

    /// How long the reflog keeps commits: `gc.reflogExpire`, else 30 days
    /// (None: for ever).
    pub(crate) fn reflog_expire(&self) -> Result<Option<Duration>> {
        match self.config_get(EXPIRE_SETTING)? {
            None => Ok(Some(DEFAULT_EXPIRE)),
            Some(v) => {
                parse_expire(&v).map_err(|why| RepoError::Config(EXPIRE_SETTING.into(), why))
            }
        }
    }

    /// For gc: the commits the reflog keeps alive (moves newer than
    /// `expire`, None for ever), and the keys of the moves that expired.
    pub(super) fn reflog_live(&self, expire: Option<Duration>) -> Result<ReflogLive> {
        let cutoff =
            expire.map(|e| stamp().saturating_sub(u64::try_from(e.as_nanos()).unwrap_or(u64::MAX)));
        let mut live = Vec::new();
        let mut expired = Vec::new();
        let mut dots: Vec<String> = Vec::new();
        self.store.scan_kv(Space::Meta, b"reflog/", |k, _| {
            if let Some(end) = k.iter().position(|&c| c == 0) {
                let dot = String::from_utf8_lossy(&k[b"reflog/".len()..end]).into_owned();
                if dots.last() != Some(&dot) {
                    dots.push(dot);
                }
            }
            Ok(true)
        })?;
        for dot in dots {
            self.scan_reflog(&dot, |k, m| {
                if cutoff.is_some_and(|c| m.time_ns < c) {
                    expired.push(k.to_vec());
                } else {
                    let at = format!("the reflog of dot {dot} ({})", m.command);
                    live.extend(m.old.into_iter().chain(m.new).map(|c| (at.clone(), c)));
                }
            })?;
        }
        Ok(ReflogLive {
            kept: live,
            expired,
        })
    }

    /// Drops the reflog of a removed dot (in `b`, its removal).
    pub(super) fn drop_reflog(b: &mut Batch, dot: &str) {
        b.delete_prefix(Space::Meta, prefix(dot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expiries() {
        assert_eq!(parse_expire("never"), Ok(None));
        assert_eq!(parse_expire("now"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_expire("30d"), Ok(Some(DEFAULT_EXPIRE)));
        assert_eq!(
            parse_expire("2w"),
            Ok(Some(Duration::from_secs(14 * 86_400)))
        );
        for bad in ["", "d", "30", "30 d", "-1d", "1y", "99999999999999999999w"] {
            assert!(parse_expire(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stamps_increase() {
        let a = stamp();
        let b = stamp();
        assert!(b > a);
    }

    proptest! {
        #[test]
        fn any_expiry_parses_or_fails_cleanly(s in ".{0,30}") {
            let _ = parse_expire(&s);
        }
    }
}
