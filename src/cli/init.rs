//! `dot init NAME[.SUBDOT] [--path DIR]`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dot::chunker::ChunkParams;
use dot::repo::Repo;

#[derive(Args)]
pub struct InitArgs {
    /// DOT or DOT.SUBDOT.
    name: String,
    /// Adopt an existing directory (such as a database's data directory) as
    /// the working directory; its content becomes the first uncommitted state.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Minimum chunk size in bytes, fixed for the dot's lifetime [default: 16384].
    #[arg(long)]
    chunk_min: Option<u32>,
    /// Average chunk size in bytes [default: 65536].
    #[arg(long)]
    chunk_avg: Option<u32>,
    /// Maximum chunk size in bytes [default: 262144].
    #[arg(long)]
    chunk_max: Option<u32>,
}

pub fn run(repo: &Repo, a: InitArgs) -> Result<()> {
    let given = a.chunk_min.is_some() || a.chunk_avg.is_some() || a.chunk_max.is_some();
    let d = ChunkParams::default();
    let params = given.then(|| ChunkParams {
        min: a.chunk_min.unwrap_or(d.min),
        avg: a.chunk_avg.unwrap_or(d.avg),
        max: a.chunk_max.unwrap_or(d.max),
    });
    let (dot, sub) = repo.init(&a.name, a.path.as_deref(), params)?;
    let cfg = repo.dot(&dot)?;
    if sub == dot::repo::DEFAULT_SUBDOT {
        println!("Created dot {dot} on branch {}", cfg.head);
    } else {
        println!("Created subdot {dot}.{sub} on branch {}", cfg.head);
    }
    Ok(())
}
