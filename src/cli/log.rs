//! `dot log [--json] [DOT]`

use anyhow::Result;
use clap::Args;
use dot::progress::Progress;
use dot::serve::api::{Request, Response};

use super::{reply, Session};

#[derive(Args)]
pub struct LogArgs {
    #[arg(long)]
    json: bool,
    /// The dot (default: the current dot).
    dot: Option<String>,
}

pub fn run(s: &Session, a: LogArgs, progress: &dyn Progress) -> Result<()> {
    let log = reply!(
        s.call(Request::Log { dot: a.dot }, progress)?,
        Response::Log
    );
    if a.json {
        return super::print_json(&log);
    }
    for c in &log {
        println!("commit {}", c.commit);
        println!("Author: {} <{}>", c.author, c.email);
        println!("Date:   {}", format_date(c.time, c.tz_minutes));
        for (k, v) in &c.metadata {
            println!("Meta:   {k}={v}");
        }
        println!();
        for line in c.message.lines() {
            println!("    {line}");
        }
        println!();
    }
    Ok(())
}

/// `dot reflog [--json] [DOT]`
pub fn reflog(s: &Session, a: LogArgs, progress: &dyn Progress) -> Result<()> {
    let moves = reply!(
        s.call(Request::Reflog { dot: a.dot }, progress)?,
        Response::Reflog
    );
    if a.json {
        return super::print_json(&moves);
    }
    let short = |c: &Option<dot::id::CommitId>| c.map_or("-".to_string(), |c| c.short());
    let rows: Vec<Vec<String>> = moves
        .iter()
        .map(|m| {
            let secs = i64::try_from(m.time_ns / 1_000_000_000).unwrap_or(i64::MAX);
            vec![
                format_date(secs, 0),
                m.branch.clone(),
                short(&m.old),
                short(&m.new),
                m.command.clone(),
            ]
        })
        .collect();
    super::print_table(&["TIME", "BRANCH", "FROM", "TO", "COMMAND"], &rows);
    Ok(())
}

/// `Sun Nov 22 18:40:50 2026 +0100`, git's default date format.
fn format_date(time: i64, tz_minutes: i32) -> String {
    let zone = chrono::FixedOffset::east_opt(tz_minutes.saturating_mul(60))
        .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("UTC"));
    match chrono::DateTime::from_timestamp(time, 0) {
        Some(t) => t
            .with_timezone(&zone)
            .format("%a %b %-d %H:%M:%S %Y %z")
            .to_string(),
        None => format!("{time} (seconds since 1970)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::format_date(0, 0), "Thu Jan 1 00:00:00 1970 +0000");
        assert_eq!(
            super::format_date(1_795_365_650, 60),
            "Sun Nov 22 17:40:50 2026 +0100"
        );
        assert_eq!(
            super::format_date(1_795_365_650, -300),
            "Sun Nov 22 11:40:50 2026 -0500"
        );
    }
}
