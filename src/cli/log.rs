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

/// `Sun Nov 22 18:40:50 2026 +0100`, git's default date format.
fn format_date(time: i64, tz_minutes: i32) -> String {
    let local = time + i64::from(tz_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    let tz = tz_minutes.unsigned_abs();
    format!(
        "{} {} {} {:02}:{:02}:{:02} {} {sign}{:02}{:02}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        year,
        tz / 60,
        tz % 60
    )
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
