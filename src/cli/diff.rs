//! `dot diff [-v] [--json] [DOT]` and `dot status [--json] [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::human_bytes;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

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

#[derive(Args)]
pub struct StatusArgs {
    #[arg(long)]
    json: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(s: &Session, a: DiffArgs, progress: &dyn Progress) -> Result<()> {
    let r = reply!(
        s.call(Request::Diff { dot: a.dot }, progress)?,
        Response::Diff
    );
    if a.json {
        return super::print_json(&r);
    }
    if r.clean {
        println!("no changes since HEAD of {} (branch {})", r.dot, r.branch);
        return Ok(());
    }
    if a.verbose {
        for c in &r.changes {
            println!("{} {}", c.change.letter(), c.path);
        }
    }
    println!(
        "{} changed since HEAD: {} added, {} modified, {} deleted; {} of new data",
        r.dot,
        r.added,
        r.modified,
        r.deleted,
        human_bytes(r.new_bytes)
    );
    Ok(())
}

pub fn status(s: &Session, a: StatusArgs, progress: &dyn Progress) -> Result<()> {
    let r = reply!(
        s.call(Request::Status { dot: a.dot }, progress)?,
        Response::Status
    );
    if a.json {
        return super::print_json(&r);
    }
    println!("dot {} on branch {}", r.dot, r.branch);
    match r.head {
        Some(c) => println!("HEAD:          {}", c.short()),
        None => println!("HEAD:          no commits yet"),
    }
    if r.clean {
        println!("changes:       none");
    } else {
        println!(
            "changes:       {} added, {} modified, {} deleted; {} of new data",
            r.added,
            r.modified,
            r.deleted,
            human_bytes(r.new_bytes)
        );
    }
    println!(
        "working state: {} ({})",
        r.working_state,
        human_bytes(r.size)
    );
    for (sub, path) in &r.subdots {
        println!("  {sub}: {}", path.display());
    }
    println!("containers:    {}", super::containers_cell(&r.containers));
    match &r.upstream {
        Some(u) => println!("upstream:      {} {} {}", u.remote, u.dot, u.branch),
        None => println!("upstream:      none"),
    }
    Ok(())
}
