//! `dot gc` and `dot fsck`: what is live, and whether what is stored is
//! whole. Both walk what branches reach with `tree::verify`; fsck also
//! reads every stored object, reachable or not, and reports unfinished
//! journals.

use std::collections::HashSet;

use rayon::prelude::*;

use super::{Repo, RepoError, Result};
use crate::id::{CommitId, Id};
use crate::store::{Entry, GcStats, Kind, Space};
use crate::tree::commit::Top;
use crate::tree::verify::{Contents, Verifier};

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct FsckReport {
    /// Stored objects read and checked.
    pub objects_checked: usize,
    /// Objects branches reach.
    pub objects_reachable: usize,
    pub refs_checked: usize,
    /// (where, what): damage that loses data, or an operation that could
    /// not be finished.
    pub errors: Vec<(String, String)>,
    /// Harmless debris, reclaimed by gc.
    pub notes: Vec<String>,
}

impl Repo {
    /// Every commit named by a branch of any dot.
    pub(super) fn all_heads(&self) -> Result<Vec<(String, CommitId)>> {
        let mut heads = Vec::new();
        self.store.scan_kv(Space::Refs, b"", |k, v| {
            if let Some(id) = Id::from_slice(v) {
                heads.push((
                    String::from_utf8_lossy(k).replace('\0', " branch "),
                    CommitId(id),
                ));
            }
            Ok(true)
        })?;
        Ok(heads)
    }

    /// Walks every branch, every commit the reflog keeps (`reflog`), and
    /// every unfinished journal's target.
    fn walk_live(&self, v: &mut Verifier, reflog: &[(String, CommitId)]) -> Result<usize> {
        let heads = self.all_heads()?;
        for (name, head) in &heads {
            v.commit(*head, &format!("dot {name}"), &|_| false);
        }
        for (at, commit) in reflog {
            v.commit(*commit, at, &|_| false);
        }
        // A view shows its commit for as long as it is recorded.
        for m in self.mounts()? {
            v.commit(
                m.commit,
                &format!("the view at {}", m.at.display()),
                &|_| false,
            );
        }
        // An unfinished reset or checkout still needs what it is moving to.
        for (dot, journal) in self.journals()? {
            let Ok(journal) = journal else { continue };
            let at = format!("journal of dot {dot}");
            if let Some(id) = journal.commit.as_deref().and_then(Id::from_hex) {
                v.commit(CommitId(id), &at, &|_| false);
            }
            for top in journal.targets.values().flatten() {
                v.top(&Top::from(*top), &at);
            }
        }
        // A mounted dot shows more than its branch: a file removed while
        // open, the commit it came from, after a switch moved past it.
        for m in self.mounted_dots()? {
            let dir = self.overlay_dir(&m.dot);
            let shown = crate::mount::overlay::shown_from_store(&dir)
                .map_err(|e| RepoError::io(format!("cannot read {}", dir.display()), e))?;
            let at = format!("the overlay of dot {}", m.dot);
            for tree in shown.trees {
                v.tree(tree, &at);
            }
            for (content, size) in shown.contents {
                v.content(&content, size, &at);
            }
        }
        Ok(heads.len())
    }

    /// Frees the space of objects no branch of any dot reaches, nor the
    /// reflog within `gc.reflogExpire` (`prune_now`: the reflog keeps
    /// nothing, and its entries are dropped).
    pub(crate) fn gc(&self, prune_now: bool) -> Result<GcStats> {
        if let Some((dot, Err(e))) = self.journals()?.into_iter().find(|(_, j)| j.is_err()) {
            return Err(RepoError::Damaged {
                what: format!("the journal of dot {dot}"),
                why: format!("{e}; gc stopped without deleting anything"),
            });
        }
        let expire = if prune_now {
            Some(std::time::Duration::ZERO)
        } else {
            self.reflog_expire()?
        };
        let reflog = self.reflog_live(expire)?;
        if !reflog.expired.is_empty() {
            let mut b = crate::store::Batch::default();
            for k in reflog.expired {
                b.delete(Space::Meta, k);
            }
            self.store.write(b)?;
        }
        let mut walker = Verifier::new(&self.store, Contents::Reach, true);
        self.walk_live(&mut walker, &reflog.kept)?;
        if let Some((at, what)) = walker.problems.first() {
            return Err(RepoError::Damaged {
                what: at.clone(),
                why: format!("{what}; gc stopped without deleting anything"),
            });
        }
        let live: HashSet<Id> = walker.seen;
        Ok(self.store.gc(&|id| live.contains(id))?)
    }

    /// Reads and checks every stored object (its hash, its length, and a
    /// metadata object's own format), then verifies everything every
    /// branch reaches across objects, every pack, and that no journal is
    /// left unfinished.
    pub(crate) fn fsck(&self) -> Result<FsckReport> {
        let mut report = FsckReport::default();
        let mut entries: Vec<(Id, Entry)> = Vec::new();
        self.store.for_each_entry(|id, e| {
            match e {
                Ok(e) => entries.push((id, e)),
                Err(e) => report
                    .errors
                    .push((format!("index entry of {}", id.short()), e.to_string())),
            }
            Ok(())
        })?;
        entries.sort_by_key(|(_, e)| (e.pack, e.slot.offset));
        report.objects_checked = entries.len();
        let damaged: Vec<(Id, String)> = entries
            .par_iter()
            .filter_map(|(id, e)| {
                let checked = self.store.read_entry(id, e).map_err(|e| e.to_string());
                let checked = checked.and_then(|raw| match e.kind {
                    Kind::Chunk => Ok(()),
                    Kind::Meta => crate::tree::links(id, Kind::Meta, &raw)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                });
                checked.err().map(|why| (*id, why))
            })
            .collect();
        // Every stored chunk was read above, so lengths come from the index.
        let mut walker = Verifier::new(&self.store, Contents::Lengths, false);
        walker.known_damaged(damaged.iter().map(|(id, _)| *id));
        report.errors.extend(
            damaged
                .into_iter()
                .map(|(id, why)| (format!("object {}", id.short()), why)),
        );
        let kept = self.reflog_live(self.reflog_expire()?)?.kept;
        report.refs_checked = self.walk_live(&mut walker, &kept)?;
        report.objects_reachable = walker.seen.len();
        report.errors.extend(walker.problems);

        for p in self.store.verify_packs()? {
            if p.stray {
                report.notes.push(format!(
                    "pack {}: {} (unused; dot gc removes it)",
                    p.pack, p.what
                ));
            } else {
                report.errors.push((format!("pack {}", p.pack), p.what));
            }
        }
        let differ = self.store.state_log_disagreements()?;
        if !differ.is_empty() {
            report.errors.push((
                "the state log".into(),
                format!(
                    "it disagrees with the index on {} key(s) ({}), so dot fsck --repair would not bring back this state; please report it",
                    differ.len(),
                    differ.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for (dot, journal) in self.journals()? {
            let why = match journal {
                Err(e) => e.to_string(),
                Ok(_) => self
                    .unfinished_reason(&dot)
                    .unwrap_or_else(|| "it is still pending".to_string()),
            };
            report.errors.push((
                format!("dot {dot}"),
                format!(
                    "an interrupted reset, checkout, pull or clone could not be finished: {why}; {}",
                    self.unfinished_hint(&dot)
                ),
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Writer;

    #[test]
    fn fsck_checks_objects_no_branch_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::open(dir.path(), "test").unwrap();
        // A directory node holding an entry named "..", stored as an older
        // dot or a damaged disk might have left it.
        let mut w = Writer::new();
        w.raw(b"dt\x01").u8(0).varint(1);
        w.bytes(b"..").u8(0).varint(0o644).varint(0).varint(0);
        w.ivarint(0).varint(0).u8(0).varint(0);
        let id = Id::of(&w.buf);
        repo.store.put(Kind::Meta, &id, &w.buf).unwrap();
        repo.store.flush().unwrap();
        let report = repo.fsck().unwrap();
        assert_eq!(report.objects_checked, 1);
        assert_eq!(report.objects_reachable, 0);
        assert!(
            report
                .errors
                .iter()
                .any(|(at, what)| at.contains(&id.short()) && what.contains("invalid entry name")),
            "{:?}",
            report.errors
        );
    }
}
