//! `dot list [--json]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::repo::human_bytes;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

pub fn run(s: &Session, a: ListArgs, progress: &dyn Progress) -> Result<()> {
    let dots = reply!(s.call(Request::List, progress)?, Response::List);
    if a.json {
        return super::print_json(&dots);
    }
    let rows: Vec<Vec<String>> = dots
        .iter()
        .map(|d| {
            vec![
                if d.current { "*".into() } else { String::new() },
                d.name.clone(),
                d.branch.clone(),
                super::containers_cell(&d.containers),
                if d.unread {
                    "?".into()
                } else {
                    human_bytes(d.size)
                },
                d.commits.to_string(),
                if d.unread {
                    "?".into()
                } else if d.dirty {
                    human_bytes(d.dirty_bytes)
                } else {
                    "-".into()
                },
                match (d.mounted, d.unread) {
                    (true, true) => "mounted (no daemon: dot daemon start)",
                    (true, false) => "mounted",
                    (false, _) => "plain",
                }
                .into(),
            ]
        })
        .collect();
    super::print_table(
        &[
            "",
            "DOT",
            "BRANCH",
            "CONTAINERS",
            "SIZE",
            "COMMITS",
            "DIRTY",
            "STATE",
        ],
        &rows,
    );
    Ok(())
}
