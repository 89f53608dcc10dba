//! Two pushers racing for one branch, round after round, through servers
//! that keep conditional creates exclusive and through the same servers
//! behind a proxy that drops the headers they rest on (If-None-Match and
//! If-Match for S3, Overwrite for WebDAV). No push reported done may be
//! missing from the remote afterwards; an honest server has exactly one
//! winner per round; a careless one gets no push at all unless the remote
//! was added for a single writer.

mod util;

use std::process::Stdio;

use util::{noise, write, Env, Run};

/// How a remote is reached: its URL and `dot remote add` options.
#[derive(Clone)]
struct Target {
    url: String,
    args: Vec<String>,
}

impl Target {
    fn add(&self, t: &Env, extra: &[&str]) -> Run {
        let mut args = vec!["remote", "add", "hub", &self.url];
        args.extend(self.args.iter().map(String::as_str));
        args.extend_from_slice(extra);
        t.dot(&args)
    }
}

/// The same S3 bucket, directly and through a proxy dropping `drop`.
fn s3(drop: &'static [&'static str]) -> (Target, Target) {
    let bucket = util::s3_bucket();
    let via = |port: u16| Target {
        url: format!("s3://{bucket}/team"),
        args: vec!["--endpoint".into(), format!("http://127.0.0.1:{port}")],
    };
    let direct = util::s3().port;
    (via(direct), via(util::dropping_proxy(direct, drop)))
}

/// The same WebDAV directory, directly and through a proxy dropping `drop`.
fn webdav(t: &Env, drop: &'static [&'static str]) -> (Target, Target) {
    let dav = util::webdav(false);
    let name = t.unique_name();
    let via = |port: u16| Target {
        url: format!("http://127.0.0.1:{port}/{name}/dots"),
        args: vec![],
    };
    (via(dav.port), via(util::dropping_proxy(dav.port, drop)))
}

const S3_CONDITIONS: &[&str] = &["if-none-match", "if-match"];
const WEBDAV_CONDITIONS: &[&str] = &["overwrite"];

/// A base commit pushed directly, and two racers that clone it through
/// `racers_via` (added with `extra` options).
struct Race {
    checker: Env,
    racers: Vec<Env>,
}

impl Race {
    fn new(base: &Env, direct: &Target, racers_via: &Target, extra: &[&str]) -> Race {
        base.dot(&["init", "app"]).ok();
        write(&base.path("app").join("f"), b"base\n");
        base.dot(&["commit", "-m", "base"]).ok();
        direct.add(base, &[]).ok();
        base.dot(&["push", "hub", "app"]).ok();
        let racers: Vec<Env> = (0..2).map(|_| Env::new()).collect();
        for r in &racers {
            racers_via.add(r, extra).ok();
            r.dot(&["clone", "hub", "app"]).ok();
        }
        let checker = Env::new();
        direct.add(&checker, &[]).ok();
        checker.dot(&["clone", "hub", "app"]).ok();
        Race { checker, racers }
    }

    /// One round: both racers commit something of their own and push at
    /// once. Returns the commits whose pushes were reported done, and the
    /// failed runs.
    fn round(&self, round: u64) -> (Vec<String>, Vec<Run>) {
        let mut heads = Vec::new();
        for (i, r) in self.racers.iter().enumerate() {
            write(
                &r.path("app").join("f"),
                &noise(100_000, round * 10 + i as u64),
            );
            heads.push(
                r.dot(&["commit", "-m", "racer"])
                    .ok()
                    .out
                    .trim()
                    .to_string(),
            );
        }
        let children: Vec<_> = self
            .racers
            .iter()
            .map(|r| {
                r.cmd(&["push"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for (child, head) in children.into_iter().zip(heads) {
            let run = util::to_run(child.wait_with_output().unwrap());
            if run.code == 0 {
                done.push(head);
            } else {
                failed.push(run.fails());
            }
        }
        // Everyone catches up with the remote for the next round; a loser
        // drops its commit first.
        let remote = self.remote_head();
        for r in &self.racers {
            if r.head("app") != remote && !self.on_remote(&r.head("app")) {
                r.dot(&["reset", "--hard", "HEAD^"]).ok();
            }
            r.dot(&["pull"]).ok();
        }
        (done, failed)
    }

    /// Whether the remote branch's history holds `commit`.
    fn on_remote(&self, commit: &Option<String>) -> bool {
        let log = self.checker.dot(&["log", "--json"]).ok().json();
        log.as_array()
            .unwrap()
            .iter()
            .any(|c| Some(c["commit"].as_str().unwrap()) == commit.as_deref())
    }

    fn remote_head(&self) -> Option<String> {
        self.checker.dot(&["pull"]).ok();
        self.checker.head("app")
    }

    /// Every commit whose push was reported done is in the remote branch.
    fn nothing_lost(&self, done: &[String]) {
        self.checker.dot(&["pull"]).ok();
        let log = self.checker.dot(&["log", "--json"]).ok().json();
        let history: Vec<&str> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["commit"].as_str().unwrap())
            .collect();
        for c in done {
            assert!(
                history.contains(&c.as_str()),
                "push of {c} was reported done but is not on the remote"
            );
        }
    }
}

const ROUNDS: u64 = 4;

fn honest_races(direct: &Target, via: &Target, base: &Env) {
    let race = Race::new(base, direct, via, &[]);
    let mut done = Vec::new();
    for round in 0..ROUNDS {
        let (won, lost) = race.round(round);
        assert_eq!(
            won.len(),
            1,
            "exactly one winner per round: {:?}",
            lost.iter().map(|r| &r.err).collect::<Vec<_>>()
        );
        for l in &lost {
            assert!(l.err.contains("dot pull"), "{}", l.err);
        }
        assert_eq!(race.remote_head().as_ref(), won.first());
        done.extend(won);
    }
    race.nothing_lost(&done);
}

fn careless_races(direct: &Target, careless: &Target, base: &Env, feature: &str) {
    let race = Race::new(base, direct, careless, &[]);
    let before = race.remote_head();
    for round in 0..ROUNDS {
        let (won, lost) = race.round(round);
        assert!(won.is_empty(), "a push went to a careless server");
        for l in &lost {
            assert!(
                l.err.contains("conditional create") && l.err.contains(feature),
                "{}",
                l.err
            );
            assert!(l.err.contains("--single-writer"), "{}", l.err);
        }
    }
    assert_eq!(race.remote_head(), before, "nothing was pushed");
    // Pull and clone keep working through it.
    let reader = Env::new();
    careless.add(&reader, &[]).ok();
    reader.dot(&["clone", "hub", "app"]).ok();
    let verbose = reader.dot(&["remote", "-v"]).ok().out;
    assert!(verbose.contains("push refused"), "{verbose}");
    let json = reader.dot(&["remote", "--json"]).ok().json();
    assert_eq!(json[0]["create_check"]["answer"], "ignored");

    // A single writer may push there, knowingly.
    let solo = Env::new();
    let added = careless.add(&solo, &["--single-writer"]).ok().out;
    assert!(added.contains("single writer"), "{added}");
    solo.dot(&["clone", "hub", "app"]).ok();
    write(&solo.path("app").join("f"), b"solo\n");
    let head = solo
        .dot(&["commit", "-m", "solo"])
        .ok()
        .out
        .trim()
        .to_string();
    solo.dot(&["push"]).ok();
    assert_eq!(race.remote_head(), Some(head));
    assert!(solo
        .dot(&["remote", "-v"])
        .ok()
        .out
        .contains("single writer"));
}

#[test]
fn s3_honouring_conditional_writes_has_one_winner_per_round() {
    let (direct, via) = s3(&[]);
    let base = Env::new();
    honest_races(&direct, &via, &base);
    let verbose = base.dot(&["remote", "-v"]).ok().out;
    assert!(verbose.contains("exclusive creates"), "{verbose}");
}

#[test]
fn s3_ignoring_conditional_writes_gets_no_push() {
    let (direct, careless) = s3(S3_CONDITIONS);
    careless_races(&direct, &careless, &Env::new(), "If-None-Match");
}

#[test]
fn webdav_honouring_overwrite_has_one_winner_per_round() {
    let base = Env::new();
    let (direct, via) = webdav(&base, &[]);
    honest_races(&direct, &via, &base);
}

#[test]
fn webdav_ignoring_overwrite_gets_no_push() {
    let base = Env::new();
    let (direct, careless) = webdav(&base, WEBDAV_CONDITIONS);
    careless_races(&direct, &careless, &base, "Overwrite: F");
}

#[test]
fn directories_have_one_winner_per_round() {
    let base = Env::new();
    let dir = Target {
        url: base.tmp.path().join("remote").to_str().unwrap().to_string(),
        args: vec![],
    };
    honest_races(&dir, &dir, &base);
}

#[test]
fn a_remote_unreachable_when_added_is_checked_before_the_first_push() {
    let t = Env::new();
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let bucket = util::s3_bucket();
    let r = t
        .dot(&[
            "remote",
            "add",
            "hub",
            &format!("s3://{bucket}/x"),
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
        ])
        .ok();
    assert!(r.err.contains("could not check"), "{}", r.err);
    assert!(t
        .dot(&["remote", "-v"])
        .ok()
        .out
        .contains("not checked yet"));
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"x\n");
    t.dot(&["commit", "-m", "x"]).ok();
    // The server comes up, ignoring conditional writes: the first push
    // checks before it writes anything, and refuses.
    util::dropping_proxy_at(port, util::s3().port, S3_CONDITIONS);
    let r = t.dot(&["push", "hub", "app"]).fails();
    assert!(r.err.contains("conditional create"), "{}", r.err);
    assert!(t.dot(&["remote", "-v"]).ok().out.contains("push refused"));
    let listing = util::s3_request("GET", &format!("/{bucket}?list-type=2&prefix=x/"));
    assert!(listing.contains("<KeyCount>0</KeyCount>"), "{listing}");
}
