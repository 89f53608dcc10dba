//! `dot rm`, `dot gc`, `dot fsck`, `dot config`

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::human_bytes;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct RmArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    name: String,
}

pub fn rm(s: &Session, a: RmArgs, progress: &dyn Progress) -> Result<()> {
    let Response::Resolved { dot } = s.call(
        Request::Resolve {
            dot: Some(a.name.clone()),
        },
        progress,
    )?
    else {
        anyhow::bail!("unexpected response");
    };
    if !a.force {
        if !std::io::stdin().is_terminal() {
            usage!("refusing to remove dot {dot} without confirmation; use dot rm -f {dot}");
        }
        eprint!("Remove dot {dot} with all its branches and commits? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            usage!("dot {dot} was not removed");
        }
    }
    let r = reply!(
        s.call(Request::Remove { dot: a.name }, progress)?,
        Response::Removed
    );
    println!("Removed dot {}", r.dot);
    for path in &r.kept {
        eprintln!(
            "dot: kept {}: it was yours before dot init --path",
            path.display()
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long)]
    json: bool,
    /// `now`: the reflog keeps nothing; what only it names is freed at
    /// once. With --remote: delete at once instead of after
    /// gc.remoteGrace (only while nobody pushes to the remote).
    #[arg(long, value_name = "WHEN")]
    prune: Option<String>,
    /// Free what no branch on this remote reaches, in two phases (the
    /// second at a run gc.remoteGrace later: a day unless set).
    #[arg(long, value_name = "NAME")]
    remote: Option<String>,
}

pub fn gc(s: &Session, a: GcArgs, progress: &dyn Progress) -> Result<()> {
    let prune_now = match a.prune.as_deref() {
        None => false,
        Some("now") => true,
        Some(other) => usage!(
            "dot gc --prune takes now, not {other:?}; how long the reflog keeps commits is set with dot config gc.reflogExpire 30d"
        ),
    };
    if let Some(remote) = a.remote {
        return gc_remote(s, remote, prune_now, a.json, progress);
    }
    let stats = reply!(s.call(Request::Gc { prune_now }, progress)?, Response::Gc);
    if a.json {
        return super::print_json(&stats);
    }
    println!(
        "removed {} unreachable objects, freed {}",
        stats.objects_removed,
        human_bytes(stats.bytes_freed)
    );
    if stats.packs_left > 0 {
        eprintln!(
            "dot: the disk is too full to copy the live objects of {} packs that also hold dead ones: that needs {} more free space; free some and run dot gc again",
            stats.packs_left,
            human_bytes(stats.space_needed)
        );
    }
    Ok(())
}

fn gc_remote(
    s: &Session,
    remote: String,
    prune_now: bool,
    json: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let request = Request::GcRemote {
        remote: remote.clone(),
        prune_now,
    };
    let st = reply!(s.call(request, progress)?, Response::GcRemote);
    if json {
        return super::print_json(&st);
    }
    if st.sweep_refused {
        eprintln!("dot: a push relied on data this gc meant to free, so nothing was deleted; the next dot gc --remote {remote} marks afresh");
    }
    if st.marked {
        println!(
            "remote {remote}: marked what no branch reaches (copied {} live objects, {}, out of packs that also held dead ones; wrote {} merged index files)",
            st.objects_copied,
            human_bytes(st.bytes_copied),
            st.index_files_written
        );
    }
    if st.marks_swept > 0 {
        println!(
            "remote {remote}: deleted {} packs and merged {} index files, freed {}",
            st.packs_deleted,
            st.index_files_merged,
            human_bytes(st.bytes_freed)
        );
    }
    match st.pending_secs {
        Some(secs) => println!(
            "remote {remote}: what is marked is deleted by a dot gc --remote {remote} run in {secs} s or later (gc.remoteGrace), so that pushes running now are not harmed"
        ),
        None if !st.marked && st.marks_swept == 0 => {
            println!("remote {remote}: nothing to free")
        }
        None => {}
    }
    Ok(())
}

#[derive(Args)]
pub struct FsckArgs {
    #[arg(long)]
    json: bool,
    /// Verify a remote instead of the local store.
    #[arg(long, value_name = "NAME", conflicts_with = "repair")]
    remote: Option<String>,
    /// With --remote: read and check every object's bytes too.
    #[arg(long, requires = "remote")]
    read_data: bool,
    /// Rebuild the index from the packs and the state log first (when
    /// it is lost or damaged); the old one is kept beside it.
    #[arg(long)]
    pub repair: bool,
}

/// `dot fsck --repair`'s first step, run on the store directly (before
/// any session: a damaged index cannot be opened).
pub fn repair(home: &std::path::Path) -> Result<dot::store::RepairReport> {
    if dot::serve::client::Client::find(home)?.is_some() {
        usage!("a dot daemon holds the store of {}; stop it with dot daemon stop, then run dot fsck --repair", home.display());
    }
    let who = format!("pid {} (dot fsck --repair)", std::process::id());
    Ok(dot::store::repair(home, &who).map_err(dot::repo::RepoError::from)?)
}

fn print_repair(r: &dot::store::RepairReport) {
    println!(
        "Rebuilt the index from {} packs ({} objects) and {} records of the state log",
        r.packs, r.objects, r.records
    );
    if r.packs_sealed > 0 {
        eprintln!(
            "dot: sealed {} packs a killed process had left open",
            r.packs_sealed
        );
    }
    for pack in &r.packs_unreadable {
        eprintln!("dot: pack {pack} cannot be read and was left out of the index");
    }
    if !r.state_log {
        eprintln!("dot: there is no readable state log (state.log): the objects are back, but branches and dots are not");
    } else if r.log_torn_bytes > 0 {
        eprintln!(
            "dot: note: the state log's last {} bytes were not a whole record (a change a crash cut short) and were left out",
            r.log_torn_bytes
        );
    }
    if let Some(why) = &r.log_stopped {
        eprintln!(
            "dot: the state log could not be replayed past {why}; what came after it is not back"
        );
    }
    if let Some(old) = &r.old_index {
        eprintln!(
            "dot: the old index is kept at {}; delete it once you are content",
            old.display()
        );
    }
}

pub fn fsck(
    s: &Session,
    a: FsckArgs,
    repaired: Option<dot::store::RepairReport>,
    progress: &dyn Progress,
) -> Result<ExitCode> {
    if let Some(remote) = a.remote {
        return fsck_remote(s, remote, a.read_data, a.json, progress);
    }
    let report = reply!(s.call(Request::Fsck, progress)?, Response::Fsck);
    let code = if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.json {
        /// `dot fsck --repair --json`: what the repair did, then the check.
        #[derive(serde::Serialize)]
        struct Repaired {
            repair: dot::store::RepairReport,
            fsck: dot::repo::FsckReport,
        }
        match repaired {
            Some(repair) => super::print_json(&Repaired {
                repair,
                fsck: report,
            })?,
            None => super::print_json(&report)?,
        }
        return Ok(code);
    }
    if let Some(r) = &repaired {
        print_repair(r);
    }
    for note in &report.notes {
        eprintln!("dot: note: {note}");
    }
    for (at, what) in &report.errors {
        println!("damaged: {at}: {what}");
    }
    if report.errors.is_empty() {
        println!(
            "ok: {} objects verified, {} of them reachable from {} branches",
            report.objects_checked, report.objects_reachable, report.refs_checked
        );
    } else {
        eprintln!(
            "dot: fsck found {} problem(s); restore the damaged objects from a copy of the store, or reset the affected branches to undamaged commits",
            report.errors.len()
        );
    }
    Ok(code)
}

#[derive(Args)]
pub struct ConfigArgs {
    /// A setting of this dot (allowSpecialFiles) instead of a user setting.
    #[arg(long)]
    dot: Option<String>,
    key: String,
    value: Option<String>,
}

pub fn config(s: &Session, a: ConfigArgs, progress: &dyn Progress) -> Result<ExitCode> {
    let request = match (a.dot, a.value) {
        (Some(dot), Some(value)) => Request::DotConfigSet {
            dot,
            key: a.key,
            value,
        },
        (Some(dot), None) => Request::DotConfigGet { dot, key: a.key },
        (None, Some(value)) => Request::ConfigSet { key: a.key, value },
        (None, None) => Request::ConfigGet { key: a.key },
    };
    match s.call(request, progress)? {
        Response::Config(Some(v)) => println!("{v}"),
        Response::Config(None) => return Ok(ExitCode::from(1)),
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn fsck_remote(
    s: &Session,
    remote: String,
    read_data: bool,
    json: bool,
    progress: &dyn Progress,
) -> Result<ExitCode> {
    let request = Request::FsckRemote {
        remote: remote.clone(),
        read_data,
    };
    let r = reply!(s.call(request, progress)?, Response::FsckRemote);
    let code = if r.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if json {
        super::print_json(&r)?;
        return Ok(code);
    }
    for note in &r.notes {
        eprintln!("dot: note: {note}");
    }
    for e in &r.errors {
        println!("damaged: remote {remote}: {e}");
    }
    if r.errors.is_empty() {
        let read = if read_data {
            format!(", {} objects read and checked", r.objects_read)
        } else {
            String::new()
        };
        println!(
            "ok: remote {remote}: {} refs, {} index files, {} packs, {} objects reachable{read}",
            r.refs, r.index_files, r.packs, r.objects_reachable
        );
    } else {
        eprintln!(
            "dot: fsck found {} problem(s) on remote {remote}; push the affected branches again from a complete copy",
            r.errors.len()
        );
    }
    Ok(code)
}
