//! `dot reset --hard REF [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct ResetArgs {
    /// Discard uncommitted changes (required: reset always does).
    #[arg(long)]
    hard: bool,
    /// HEAD, HEAD^, HEAD~N, a branch or a commit id prefix.
    #[arg(value_name = "REF")]
    refspec: String,
    #[arg(long)]
    json: bool,
    /// On a mounted dot: switch even while files on it are open.
    #[arg(long)]
    force: bool,
    /// Refuse while running containers use the dot, instead of stopping
    /// them and starting them again.
    #[arg(long)]
    no_restart: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(s: &Session, a: ResetArgs, progress: &dyn Progress) -> Result<()> {
    if !a.hard {
        usage!("dot reset discards uncommitted changes in the working directory; say so with dot reset --hard {}", a.refspec);
    }
    let request = Request::Reset {
        dot: a.dot,
        refspec: a.refspec,
        force: a.force,
        no_restart: a.no_restart,
    };
    let r = reply!(s.call(request, progress)?, Response::Reset);
    if a.json {
        return super::print_json(&r);
    }
    println!(
        "HEAD of {} (branch {}) is now {}",
        r.dot,
        r.branch,
        r.commit.short()
    );
    super::say_restarted(&r.restarted);
    Ok(())
}
