//! Branches and revisions: `HEAD`, a branch or a commit id prefix, each followed by
//! any sequence of `^`, `^N`, `~`, `~N` (docs/design.md section 12).

use serde::{Deserialize, Serialize};

use super::journal::Origin;
use super::{ref_key, DotConfig, Repo, RepoError, Result};
use crate::id::{CommitId, Id};
use crate::store::{Batch, Space};
use crate::tree::commit::Commit;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BranchInfo {
    pub name: String,
    pub commit: Option<CommitId>,
    pub current: bool,
}

impl Repo {
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

    pub(crate) fn delete_branch(&self, cfg: &DotConfig, branch: &str) -> Result<()> {
        if branch == cfg.head {
            return Err(RepoError::Usage(format!(
                "cannot delete branch {branch}: it is the current branch of dot {}; dot checkout another branch first",
                cfg.name
            )));
        }
        let old = self.branch_commit(&cfg.name, branch)?;
        self.refuse_if_kept(cfg, branch)?;
        let mut b = Batch::default();
        b.delete(Space::Refs, ref_key(&cfg.name, branch));
        super::reflog::log_move(
            &mut b,
            &cfg.name,
            branch,
            old,
            None,
            &format!("branch -d {branch}"),
        );
        Ok(self.store.write(b)?)
    }

    /// Resolves `HEAD`, `HEAD^`, `HEAD~N`, a branch (with the same
    /// suffixes) or a unique commit id prefix, and tells whether the commit
    /// was verified where it came from: HEAD and branches (and their
    /// ancestors) were; a commit id prefix may name a commit no branch
    /// reaches, such as one a refused pull left behind.
    pub(super) fn resolve_with_origin(
        &self,
        cfg: &DotConfig,
        spec: &str,
    ) -> Result<(CommitId, Origin)> {
        let cut = spec.find(['^', '~']).unwrap_or(spec.len());
        let (base, mut rest) = spec.split_at(cut);
        let unborn = |branch: &str| {
            RepoError::Usage(format!(
                "branch {branch} of dot {} has no commits yet",
                cfg.name
            ))
        };
        let mut origin = Origin::Verified;
        let mut id = if base == "HEAD" {
            self.branch_commit(&cfg.name, &cfg.head)?
                .ok_or_else(|| unborn(&cfg.head))?
        } else if self
            .store
            .get_kv(Space::Refs, &ref_key(&cfg.name, base))?
            .is_some()
        {
            self.branch_commit(&cfg.name, base)?
                .ok_or_else(|| unborn(base))?
        } else {
            let id = self.resolve_prefix(cfg, base)?;
            if !self.complete_commits(Some(&cfg.name))?.contains(&id) {
                origin = Origin::Unverified;
            }
            id
        };
        while let Some(op) = rest.chars().next().filter(|c| matches!(c, '^' | '~')) {
            let r = &rest[1..];
            let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let steps = match digits {
                0 => 1,
                _ => parse_steps(spec, &r[..digits])?,
            };
            if op == '^' && steps > 1 {
                return Err(RepoError::Usage(format!(
                    "{spec}: commits have one parent; use HEAD~N to go back N commits"
                )));
            }
            rest = &r[digits..];
            for _ in 0..steps {
                let c = Commit::read(&self.store, &id)?;
                id = *c.parents.first().ok_or_else(|| {
                    RepoError::Usage(format!(
                        "{spec} goes back past the first commit of dot {}",
                        cfg.name
                    ))
                })?;
            }
        }
        if !rest.is_empty() {
            return Err(RepoError::Usage(format!(
                "cannot parse the ref {spec:?}; use HEAD, HEAD^, HEAD~N, a branch or a commit id"
            )));
        }
        Ok((id, origin))
    }

    fn resolve_prefix(&self, cfg: &DotConfig, hex: &str) -> Result<CommitId> {
        let lower = hex.to_ascii_lowercase();
        if lower.len() < 4 || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RepoError::Usage(format!(
                "{hex:?} is neither a branch of dot {} nor a commit id (give at least 4 hex digits); see dot branch and dot log",
                cfg.name
            )));
        }
        // (An odd last digit is matched below, on the whole id.)
        let bytes = hex::decode(&lower[..lower.len() & !1]).expect("hex checked");
        let mut found = Vec::new();
        for (id, entry) in self.store.ids_with_prefix(&bytes)? {
            if entry.kind != crate::store::Kind::Meta || !id.to_hex().starts_with(&lower) {
                continue;
            }
            if crate::tree::commit::is_commit(&self.store.read_entry(&id, &entry)?) {
                found.push(CommitId(id));
            }
        }
        match found.len() {
            0 => Err(RepoError::NotFound(format!(
                "no commit or branch {hex:?} in dot {}; see dot log and dot branch",
                cfg.name
            ))),
            1 => Ok(found[0]),
            _ => Err(RepoError::Usage(format!(
                "commit id prefix {hex:?} is ambiguous: it matches {}; give more digits",
                found
                    .iter()
                    .map(|c| c.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

fn parse_steps(spec: &str, digits: &str) -> Result<u32> {
    digits.parse().map_err(|_| {
        RepoError::Usage(format!(
            "cannot parse the ref {spec:?}: {digits} is too large"
        ))
    })
}

/// Ambiguous id prefixes are refused with the candidates named. Through
/// the library, because finding two commits that share a 4-digit prefix
/// takes a few hundred commits.
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::progress::Silent;

    #[test]
    fn ambiguous_prefixes_are_refused_and_unique_ones_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repo::open(&tmp.path().join("home"), "test").unwrap();
        repo.init("amb", None, None).unwrap();
        let dir = repo.path(Some("amb")).unwrap();
        let mut by_prefix: HashMap<String, Vec<String>> = HashMap::new();
        let clash = loop {
            let cfg = repo.dot("amb").unwrap();
            std::fs::write(dir.join("n"), by_prefix.len().to_string()).unwrap();
            let id = repo
                .commit(
                    &cfg,
                    "c",
                    BTreeMap::new(),
                    &crate::env::ClientEnv::default(),
                    &Silent,
                )
                .unwrap()
                .to_string();
            let ids = by_prefix.entry(id[..4].to_string()).or_default();
            ids.push(id);
            if ids.len() == 2 {
                break ids.clone();
            }
            assert!(by_prefix.len() < 5000, "no 4-digit clash in 5000 commits");
        };
        let cfg = repo.dot("amb").unwrap();
        match repo.resolve_with_origin(&cfg, &clash[0][..4]).map(|r| r.0) {
            Err(RepoError::Usage(msg)) => {
                assert!(
                    msg.contains("ambiguous")
                        && msg.contains(&clash[0][..12])
                        && msg.contains(&clash[1][..12]),
                    "{msg}"
                );
            }
            other => panic!("expected an ambiguity error, got {other:?}"),
        }
        for id in &clash {
            let n = (4..64)
                .find(|&n| id[..n] != clash[0][..n] || id[..n] != clash[1][..n])
                .unwrap();
            assert_eq!(
                repo.resolve_with_origin(&cfg, &id[..n + 1])
                    .unwrap()
                    .0
                    .to_string(),
                *id
            );
            assert_eq!(
                repo.resolve_with_origin(&cfg, &id.to_uppercase())
                    .unwrap()
                    .0
                    .to_string(),
                *id
            );
        }
    }
}
