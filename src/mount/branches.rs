//! Each branch of a mounted dot keeps its own uncommitted changes
//! (docs/design.md 16.9): the overlay directory `DIR` holds the current
//! branch's changes in `DIR/upper`, every other branch's in
//! `DIR/kept/<hex of its name>`, and `DIR/branch` names the branch whose
//! changes `upper` holds (empty: the current branch, whichever it is).
//! A checkout stashes `upper`, moves the head (its commit point), then
//! `reconcile` brings the new branch's changes back; `reconcile` also runs
//! whenever a mount opens, so a crash at any step is finished there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

fn unhex(s: &str) -> Option<String> {
    String::from_utf8(hex::decode(s).ok()?).ok()
}

fn upper(dir: &Path) -> PathBuf {
    dir.join("upper")
}

fn marker(dir: &Path) -> PathBuf {
    dir.join("branch")
}

/// Where `branch`'s changes are kept while another branch shows.
pub fn kept(dir: &Path, branch: &str) -> PathBuf {
    dir.join("kept").join(hex::encode(branch))
}

/// The branches whose changes are kept aside.
pub fn kept_branches(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    match fs::read_dir(dir.join("kept")) {
        Ok(d) => {
            for e in d {
                if let Some(name) = e?.file_name().to_str().and_then(unhex) {
                    out.push(name);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

fn is_empty_dir(p: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(p)?.next().is_none())
}

fn sync_dir(p: &Path) -> io::Result<()> {
    fs::File::open(p)?.sync_all()
}

/// Records which branch `upper` belongs to (None: the current one),
/// durably.
pub fn mark(dir: &Path, branch: Option<&str>) -> io::Result<()> {
    let tmp = dir.join("branch.tmp");
    fs::write(&tmp, branch.unwrap_or(""))?;
    fs::File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, marker(dir))?;
    sync_dir(dir)
}

/// Before a switch away from `branch`: its changes go aside (nothing
/// when it has none), so `upper` is absent until `reconcile`.
pub fn stash(dir: &Path, branch: &str) -> io::Result<()> {
    let up = upper(dir);
    if !up.exists() {
        return Ok(());
    }
    if is_empty_dir(&up)? {
        fs::remove_dir(&up)?;
    } else {
        let to = kept(dir, branch);
        fs::create_dir_all(dir.join("kept"))?;
        if to.exists() {
            return Err(io::Error::other(format!(
                "{} already holds changes of branch {branch}",
                to.display()
            )));
        }
        fs::rename(&up, &to)?;
        sync_dir(&dir.join("kept"))?;
    }
    sync_dir(dir)
}

/// Makes `upper` hold `head`'s changes: what belongs to another branch
/// goes aside, `head`'s come back (or an empty `upper` is made), and the
/// marker names `head`. Each step can be interrupted and run again.
pub fn reconcile(dir: &Path, head: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let owner = match fs::read_to_string(marker(dir)) {
        Ok(s) if !s.is_empty() => s,
        Ok(_) => head.to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => head.to_string(),
        Err(e) => return Err(e),
    };
    if owner != head {
        stash(dir, &owner)?;
    }
    let up = upper(dir);
    if !up.exists() {
        let from = kept(dir, head);
        if from.exists() {
            fs::rename(&from, &up)?;
        } else {
            fs::create_dir(&up)?;
        }
        sync_dir(dir)?;
    }
    mark(dir, Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, rel: &str, what: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, what).unwrap();
    }

    fn read(dir: &Path, rel: &str) -> Option<String> {
        fs::read_to_string(dir.join(rel)).ok()
    }

    #[test]
    fn each_branch_gets_its_changes_back() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        reconcile(d, "master").unwrap();
        put(d, "upper/s/f", "on master");
        // A switch to exp: stash, head moves, reconcile.
        stash(d, "master").unwrap();
        reconcile(d, "team/exp").unwrap();
        assert_eq!(read(d, "upper/s/f"), None);
        put(d, "upper/s/g", "on exp");
        stash(d, "team/exp").unwrap();
        reconcile(d, "master").unwrap();
        assert_eq!(read(d, "upper/s/f").as_deref(), Some("on master"));
        assert_eq!(kept_branches(d).unwrap(), ["team/exp"]);
        stash(d, "master").unwrap();
        reconcile(d, "team/exp").unwrap();
        assert_eq!(read(d, "upper/s/g").as_deref(), Some("on exp"));
        assert_eq!(kept_branches(d).unwrap(), ["master"]);
    }

    #[test]
    fn a_switch_interrupted_anywhere_is_finished_by_reconcile() {
        // Interrupted after the stash, before the head moved: the branch
        // gets its own changes back.
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        reconcile(d, "master").unwrap();
        put(d, "upper/s/f", "m");
        stash(d, "master").unwrap();
        reconcile(d, "master").unwrap();
        assert_eq!(read(d, "upper/s/f").as_deref(), Some("m"));
        // Interrupted after the head moved, before reconcile ran: the
        // next open finishes the switch, twice or once alike.
        stash(d, "master").unwrap();
        reconcile(d, "exp").unwrap();
        reconcile(d, "exp").unwrap();
        assert_eq!(read(d, "upper/s/f"), None);
        // A new branch (-b) takes the changes along: the marker is
        // cleared before the head moves.
        put(d, "upper/s/h", "carried");
        mark(d, None).unwrap();
        reconcile(d, "exp2").unwrap();
        assert_eq!(read(d, "upper/s/h").as_deref(), Some("carried"));
        // Upper left by the marker's owner while the head moved: kept.
        mark(d, Some("exp2")).unwrap();
        reconcile(d, "master").unwrap();
        assert_eq!(read(d, "upper/s/f").as_deref(), Some("m"));
        assert_eq!(kept_branches(d).unwrap(), ["exp2"]);
    }

    #[test]
    fn names_round_trip_through_hex() {
        for n in ["master", "team/exp", "ü"] {
            assert_eq!(unhex(&hex::encode(n)).as_deref(), Some(n));
        }
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
