//! `dot mount [DOT]`, `dot mount DOT@REF --at DIR`, `dot mount --list`,
//! `dot unmount DOT|DIR`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct MountArgs {
    /// DOT (its working state becomes a read-write mount at its path;
    /// default: the current dot), or with --at, DOT@REF: a branch, HEAD~N
    /// or a commit id shown read-only.
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
    /// A mounted dot, or the directory a view is mounted at.
    dir: PathBuf,
    #[arg(long)]
    json: bool,
}

/// Whether this `dot mount` needs the daemon (which serves mounts): then
/// it is started first.
pub fn needs_daemon(a: &MountArgs) -> bool {
    !a.list
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
    let Some(at) = a.at else {
        if a.spec.as_deref().is_some_and(|s| s.contains('@')) {
            usage!(
                "a commit is shown read-only at a directory of its own: dot mount DOT@REF --at DIR"
            );
        }
        let r = reply!(
            s.call(Request::MountDot { dot: a.spec }, progress)?,
            Response::MountedDot
        );
        if a.json {
            return super::print_json(&r);
        }
        print_mounted(&r);
        return Ok(());
    };
    let Some(spec) = a.spec else {
        usage!(
            "say what to show at {}: dot mount DOT@REF --at DIR",
            at.display()
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

fn print_mounted(r: &dot::repo::MountedDot) {
    println!(
        "dot {} is mounted at {}: commit, reset and checkout work on it while programs write",
        r.dot,
        r.at.display()
    );
}

/// Mounts `dot` after `dot init --mount` or `dot clone --mount`, saying
/// so when `say`.
pub fn mount_dot(s: &Session, dot: &str, say: bool) -> Result<()> {
    let request = Request::MountDot {
        dot: Some(dot.to_string()),
    };
    let r = reply!(
        s.call(request, &dot::progress::Silent)?,
        Response::MountedDot
    );
    if say {
        print_mounted(&r);
    }
    Ok(())
}

pub fn unmount(s: &Session, a: UnmountArgs, progress: &dyn Progress) -> Result<()> {
    // A dot's name (no '/') unmounts that dot when it is mounted.
    if let Some(dot) = a.dir.to_str().filter(|d| !d.contains('/')) {
        let request = Request::UnmountDot {
            dot: dot.to_string(),
        };
        match s.call(request, progress) {
            Ok(Response::UnmountedDot(r)) => {
                if a.json {
                    return super::print_json(&r);
                }
                println!(
                    "dot {} is a plain directory again at {}",
                    r.dot,
                    r.at.display()
                );
                return Ok(());
            }
            Ok(other) => anyhow::bail!("unexpected response {other:?}"),
            Err(e) if !a.dir.exists() => return Err(e),
            // Not a mounted dot: a directory with a view, then.
            Err(_) => {}
        }
    }
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
