//! `dot diff [-v] [--json] [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::{human_bytes, Repo};
use dot::tree::diff::Change;

#[derive(Args)]
pub struct DiffArgs {
    /// List every added (A), modified (M) and deleted (D) path.
    #[arg(short, long)]
    verbose: bool,
    #[arg(long)]
    json: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(repo: &Repo, a: DiffArgs, progress: &dyn Progress) -> Result<()> {
    let cfg = repo.resolve_dot(a.dot.as_deref())?;
    progress.start("scanning", 0);
    let st = repo.status(&cfg, progress);
    progress.finish();
    let st = st?;
    let count = |c: Change| st.changes.iter().filter(|x| x.change == c).count();
    if a.json {
        let changes: Vec<_> = st
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "path": c.path,
                    "change": c.change.letter().to_string(),
                    "size_before": c.size_before,
                    "size_after": c.size_after,
                })
            })
            .collect();
        let out = serde_json::json!({
            "dot": cfg.name,
            "branch": cfg.head,
            "clean": st.changes.is_empty(),
            "added": count(Change::Added),
            "modified": count(Change::Modified),
            "deleted": count(Change::Deleted),
            "new_bytes": st.new_bytes,
            "changes": changes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if st.changes.is_empty() {
        println!(
            "no changes since HEAD of {} (branch {})",
            cfg.name, cfg.head
        );
        return Ok(());
    }
    if a.verbose {
        for c in &st.changes {
            println!("{} {}", c.change.letter(), c.path);
        }
    }
    println!(
        "{} changed since HEAD: {} added, {} modified, {} deleted; {} of new data",
        cfg.name,
        count(Change::Added),
        count(Change::Modified),
        count(Change::Deleted),
        human_bytes(st.new_bytes)
    );
    Ok(())
}
