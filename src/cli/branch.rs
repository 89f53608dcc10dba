//! `dot branch [-d NAME] [--json] [DOT]` and `dot checkout [-b] BRANCH [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::Repo;

#[derive(Args)]
pub struct BranchArgs {
    /// Delete this branch.
    #[arg(short = 'd', long = "delete", value_name = "NAME")]
    delete: Option<String>,
    #[arg(long)]
    json: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

#[derive(Args)]
pub struct CheckoutArgs {
    /// Create the branch at the current commit.
    #[arg(short = 'b')]
    create: bool,
    branch: String,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(repo: &Repo, a: BranchArgs) -> Result<()> {
    let cfg = repo.resolve_dot(a.dot.as_deref())?;
    if let Some(name) = a.delete {
        repo.delete_branch(&cfg, &name)?;
        println!("Deleted branch {name} of {}", cfg.name);
        return Ok(());
    }
    let branches = repo.branches(&cfg)?;
    if a.json {
        let out: Vec<_> = branches
            .iter()
            .map(|b| {
                serde_json::json!({
                    "name": b.name,
                    "commit": b.commit.map(|c| c.to_string()),
                    "current": b.current,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    for b in branches {
        println!("{} {}", if b.current { '*' } else { ' ' }, b.name);
    }
    Ok(())
}

pub fn checkout(repo: &Repo, a: CheckoutArgs, progress: &dyn Progress) -> Result<()> {
    let cfg = repo.resolve_dot(a.dot.as_deref())?;
    progress.start("checking out", 0);
    let r = repo.checkout(&cfg, &a.branch, a.create, progress);
    progress.finish();
    r?;
    if a.create {
        println!("Switched {} to a new branch {}", cfg.name, a.branch);
    } else {
        println!("Switched {} to branch {}", cfg.name, a.branch);
    }
    Ok(())
}
