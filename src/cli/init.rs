//! `dot init NAME[.SUBDOT] [--path DIR]`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use dot::chunker::ChunkParams;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

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
    /// Make the working state a read-write FUSE mount at the same path
    /// (see dot mount).
    #[arg(long)]
    pub mount: bool,
}

pub fn run(s: &Session, a: InitArgs) -> Result<()> {
    let given = a.chunk_min.is_some() || a.chunk_avg.is_some() || a.chunk_max.is_some();
    let d = ChunkParams::default();
    let chunking = given.then(|| ChunkParams {
        min: a.chunk_min.unwrap_or(d.min),
        avg: a.chunk_avg.unwrap_or(d.avg),
        max: a.chunk_max.unwrap_or(d.max),
    });
    let path = a.path.as_deref().map(super::absolute).transpose()?;
    let request = Request::Init {
        spec: a.name,
        path,
        chunking,
    };
    let r = reply!(s.call(request, &dot::progress::Silent)?, Response::Init);
    if r.subdot == dot::repo::DEFAULT_SUBDOT {
        println!("Created dot {} on branch {}", r.dot, r.branch);
    } else {
        println!(
            "Created subdot {}.{} on branch {}",
            r.dot, r.subdot, r.branch
        );
    }
    if a.mount {
        super::mount::mount_dot(s, &r.dot, true)?;
    }
    Ok(())
}
