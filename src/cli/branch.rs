//! `dot branch [-d NAME] [--json] [DOT]` and `dot checkout [-b] BRANCH [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

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
    #[arg(long)]
    json: bool,
    /// On a mounted dot: switch even while files on it are open.
    #[arg(long)]
    force: bool,
    /// Refuse while running containers use the dot, instead of stopping
    /// them and starting them again.
    #[arg(long)]
    no_restart: bool,
    branch: String,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(s: &Session, a: BranchArgs, progress: &dyn Progress) -> Result<()> {
    if let Some(branch) = a.delete {
        let request = Request::DeleteBranch { dot: a.dot, branch };
        let Response::BranchDeleted { dot, branch } = s.call(request, progress)? else {
            anyhow::bail!("unexpected response");
        };
        println!("Deleted branch {branch} of {dot}");
        return Ok(());
    }
    let branches = reply!(
        s.call(Request::Branches { dot: a.dot }, progress)?,
        Response::Branches
    );
    if a.json {
        return super::print_json(&branches);
    }
    for b in branches {
        println!("{} {}", if b.current { '*' } else { ' ' }, b.name);
    }
    Ok(())
}

pub fn checkout(s: &Session, a: CheckoutArgs, progress: &dyn Progress) -> Result<()> {
    let request = Request::Checkout {
        dot: a.dot,
        branch: a.branch,
        create: a.create,
        force: a.force,
        no_restart: a.no_restart,
    };
    let r = reply!(s.call(request, progress)?, Response::Checkout);
    if a.json {
        return super::print_json(&r);
    }
    if r.created {
        println!("Switched {} to a new branch {}", r.dot, r.branch);
    } else {
        println!("Switched {} to branch {}", r.dot, r.branch);
    }
    super::say_restarted(&r.restarted);
    Ok(())
}
