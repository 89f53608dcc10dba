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
    /// Minimum chunk size in bytes (fixed for the dot's lifetime).
    #[arg(long, default_value_t = ChunkParams::default().min)]
    chunk_min: u32,
    /// Average chunk size in bytes.
    #[arg(long, default_value_t = ChunkParams::default().avg)]
    chunk_avg: u32,
    /// Maximum chunk size in bytes.
    #[arg(long, default_value_t = ChunkParams::default().max)]
    chunk_max: u32,
}

pub fn run(repo: &Repo, a: InitArgs) -> Result<()> {
    let params = ChunkParams {
        min: a.chunk_min,
        avg: a.chunk_avg,
        max: a.chunk_max,
    };
    let (dot, sub) = repo.init(&a.name, a.path.as_deref(), params)?;
    let cfg = repo.dot(&dot)?;
    if sub == dot::repo::DEFAULT_SUBDOT {
        println!("Created dot {dot} on branch {}", cfg.head);
    } else {
        println!("Created subdot {dot}.{sub} on branch {}", cfg.head);
    }
    Ok(())
}
