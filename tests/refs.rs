//! Ref resolution through the library: ambiguous id prefixes are refused
//! with the candidates named. Uses the library directly because finding two
//! commits that share a 4-digit prefix takes a few hundred commits.

use std::collections::{BTreeMap, HashMap};

use dot::progress::Silent;
use dot::repo::{Repo, RepoError};

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
                &dot::env::ClientEnv::default(),
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
    match repo.resolve(&cfg, &clash[0][..4]) {
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
        assert_eq!(repo.resolve(&cfg, &id[..n + 1]).unwrap().to_string(), *id);
        assert_eq!(
            repo.resolve(&cfg, &id.to_uppercase()).unwrap().to_string(),
            *id
        );
    }
}
