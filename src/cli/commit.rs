//! `dot commit -m MSG [-d key=value]... [DOT]`

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
#[command(
    after_help = "A plain working directory cannot be snapshotted atomically while a database writes to it: stop the database before committing, or mount the dot (dot mount): a mounted dot is committed atomically while programs keep writing, with writes held only for an instant (pause_ms in --json)."
)]
pub struct CommitArgs {
    /// The commit message.
    #[arg(short, long)]
    message: String,
    /// Metadata to record, as key=value (repeatable).
    #[arg(short = 'd', long = "data", value_name = "KEY=VALUE")]
    data: Vec<String>,
    #[arg(long)]
    json: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(s: &Session, a: CommitArgs, progress: &dyn Progress) -> Result<()> {
    let mut metadata = BTreeMap::new();
    for kv in &a.data {
        let Some((k, v)) = kv.split_once('=') else {
            usage!("metadata {kv:?} is not key=value; write it as -d key=value");
        };
        if k.is_empty() {
            usage!("metadata {kv:?} has an empty key; write it as -d key=value");
        }
        metadata.insert(k.to_string(), v.to_string());
    }
    let request = Request::Commit {
        dot: a.dot,
        message: a.message,
        metadata,
    };
    let r = reply!(s.call(request, progress)?, Response::Commit);
    if a.json {
        return super::print_json(&r);
    }
    println!("{}", r.commit);
    Ok(())
}
