//! `dot list [--json]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::{human_bytes, Repo};

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

pub fn run(repo: &Repo, a: ListArgs, progress: &dyn Progress) -> Result<()> {
    progress.start("scanning", 0);
    let dots = repo.list(progress);
    progress.finish();
    let dots = dots?;
    if a.json {
        let out: Vec<_> = dots
            .iter()
            .map(|d| {
                serde_json::json!({
                    "name": d.name,
                    "current": d.current,
                    "branch": d.branch,
                    "size": d.size,
                    "commits": d.commits,
                    "dirty": !d.status.changes.is_empty(),
                    "dirty_bytes": d.status.new_bytes,
                    "changes": d.status.changes.len(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = dots
        .iter()
        .map(|d| {
            vec![
                if d.current { "*".into() } else { String::new() },
                d.name.clone(),
                d.branch.clone(),
                human_bytes(d.size),
                d.commits.to_string(),
                if d.status.changes.is_empty() {
                    "-".into()
                } else {
                    human_bytes(d.status.new_bytes)
                },
            ]
        })
        .collect();
    super::print_table(&["", "DOT", "BRANCH", "SIZE", "COMMITS", "DIRTY"], &rows);
    Ok(())
}
