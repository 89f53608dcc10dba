//! `dot reset --hard REF [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::Repo;

#[derive(Args)]
pub struct ResetArgs {
    /// Discard uncommitted changes (required: reset always does).
    #[arg(long)]
    hard: bool,
    /// HEAD, HEAD^, HEAD~N, a branch or a commit id prefix.
    #[arg(value_name = "REF")]
    refspec: String,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(repo: &Repo, a: ResetArgs, progress: &dyn Progress) -> Result<()> {
    if !a.hard {
        usage!("dot reset discards uncommitted changes in the working directory; say so with dot reset --hard {}", a.refspec);
    }
    let cfg = repo.resolve_dot(a.dot.as_deref())?;
    progress.start("resetting", 0);
    let id = repo.reset_hard(&cfg, &a.refspec, progress);
    progress.finish();
    println!(
        "HEAD of {} (branch {}) is now {}",
        cfg.name,
        cfg.head,
        id?.short()
    );
    Ok(())
}
