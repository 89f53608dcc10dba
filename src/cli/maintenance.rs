//! `dot rm`, `dot gc`, `dot fsck`, `dot config`

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use dot::repo::{human_bytes, Repo};

#[derive(Args)]
pub struct RmArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    name: String,
}

pub fn rm(repo: &Repo, a: RmArgs) -> Result<()> {
    let cfg = repo.resolve_dot(Some(&a.name))?;
    if !a.force {
        if !std::io::stdin().is_terminal() {
            usage!(
                "refusing to remove dot {} without confirmation; use dot rm -f {}",
                cfg.name,
                cfg.name
            );
        }
        eprint!(
            "Remove dot {} with all its branches and commits? [y/N] ",
            cfg.name
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            usage!("dot {} was not removed", cfg.name);
        }
    }
    let cfg = repo.remove(&cfg.name)?;
    println!("Removed dot {}", cfg.name);
    for s in cfg.subdots.values().filter(|s| s.adopted) {
        eprintln!(
            "dot: kept {}: it was yours before dot init --path",
            s.path.display()
        );
    }
    Ok(())
}

pub fn gc(repo: &Repo) -> Result<()> {
    let stats = repo.gc()?;
    println!(
        "removed {} unreachable objects, freed {}",
        stats.objects_removed,
        human_bytes(stats.bytes_freed)
    );
    Ok(())
}

pub fn fsck(repo: &Repo) -> Result<ExitCode> {
    let report = repo.fsck()?;
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
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "dot: fsck found {} problem(s); restore the damaged objects from a copy of the store, or reset the affected branches to undamaged commits",
            report.errors.len()
        );
        Ok(ExitCode::from(1))
    }
}

#[derive(Args)]
pub struct ConfigArgs {
    /// A setting of this dot (allowSpecialFiles) instead of a user setting.
    #[arg(long)]
    dot: Option<String>,
    key: String,
    value: Option<String>,
}

pub fn config(repo: &Repo, a: ConfigArgs) -> Result<ExitCode> {
    if let Some(dot) = &a.dot {
        let cfg = repo.resolve_dot(Some(dot))?;
        match &a.value {
            Some(v) => repo.dot_config_set(&cfg, &a.key, v)?,
            None => println!("{}", repo.dot_config_get(&cfg, &a.key)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match a.value.as_deref() {
        Some(v) => {
            repo.config_set(&a.key, v)?;
            Ok(ExitCode::SUCCESS)
        }
        None => match repo.config_get(&a.key)? {
            Some(v) => {
                println!("{v}");
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(ExitCode::from(1)),
        },
    }
}
