//! `dot mount DOT@REF --at DIR`, `dot mount --list`, `dot unmount DIR`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct MountArgs {
    /// DOT@REF: a branch, HEAD~N or a commit id of a dot (DOT alone is its
    /// current branch).
    spec: Option<String>,
    /// The directory to show it at, read-only (an empty or new directory).
    #[arg(long)]
    at: Option<PathBuf>,
    /// List the views mounted now.
    #[arg(long)]
    list: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UnmountArgs {
    /// The directory a view is mounted at.
    dir: PathBuf,
    #[arg(long)]
    json: bool,
}

/// Whether this `dot mount` needs the daemon (which serves views): then
/// it is started first.
pub fn needs_daemon(a: &MountArgs) -> bool {
    !a.list && a.at.is_some()
}

pub fn mount(s: &Session, a: MountArgs, progress: &dyn Progress) -> Result<()> {
    if a.list {
        let views = reply!(s.call(Request::Mounts, progress)?, Response::Mounts);
        if a.json {
            return super::print_json(&views);
        }
        let rows: Vec<Vec<String>> = views
            .iter()
            .map(|m| {
                vec![
                    m.at.display().to_string(),
                    m.dot.clone(),
                    m.rev.clone(),
                    m.commit.short(),
                ]
            })
            .collect();
        super::print_table(&["DIR", "DOT", "REF", "COMMIT"], &rows);
        return Ok(());
    }
    let (Some(spec), Some(at)) = (a.spec, a.at) else {
        usage!(
            "read-write mounts of a dot's working state are not available yet; show a commit read-only with dot mount DOT@REF --at DIR (see dot mount --list)"
        );
    };
    let at = super::absolute(&at)?;
    let r = reply!(
        s.call(Request::Mount { spec, at }, progress)?,
        Response::Mounted
    );
    if a.json {
        return super::print_json(&r);
    }
    println!(
        "{}@{} (commit {}) is mounted read-only at {}",
        r.dot,
        r.rev,
        r.commit.short(),
        r.at.display()
    );
    Ok(())
}

pub fn unmount(s: &Session, a: UnmountArgs, progress: &dyn Progress) -> Result<()> {
    let at = super::absolute(&a.dir)?;
    let r = reply!(
        s.call(Request::Unmount { at }, progress)?,
        Response::Unmounted
    );
    if a.json {
        return super::print_json(&r);
    }
    println!("unmounted {}@{} from {}", r.dot, r.rev, r.at.display());
    Ok(())
}
