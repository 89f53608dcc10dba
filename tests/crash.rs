//! kill -9 at random moments of commit, reset and checkout: the store must
//! open, pass fsck, and show either the old or the new commit; after reset
//! and checkout, the working directory must match whatever HEAD shows.

mod util;

use std::process::Stdio;
use std::time::{Duration, Instant};

use util::{noise, write, Env};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs `dot args`, killing it with SIGKILL after `after` unless it ends
/// first. Returns whether it was killed. Through a daemon, the daemon is
/// what is killed (the client with it), and a new one is started.
fn run_and_kill(t: &Env, args: &[&str], after: Duration) -> bool {
    let daemon = t.daemon.then(|| t.daemon_pid());
    let mut child = t
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if start.elapsed() >= after {
            if let Some(pid) = daemon {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                child.wait().unwrap();
                t.restart_daemon();
            } else {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
            }
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn timed(t: &Env, args: &[&str]) -> Duration {
    let start = Instant::now();
    t.dot(args).ok();
    start.elapsed()
}

fn mutate(dir: &std::path::Path, seed: u64) {
    for i in 0..8 {
        write(
            &dir.join(format!("f{}", (seed + i) % 24)),
            &noise(1 << 20, seed * 100 + i),
        );
    }
    write(&dir.join("big"), &noise(24 << 20, seed));
}

fn is_clean(t: &Env) -> bool {
    t.dot(&["diff", "--json"]).ok().json()["clean"] == true
}

#[test]
fn kill_9_during_commit_reset_and_checkout() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let t = Env::new();
    t.dot(&["init", "crash"]).ok();
    let dir = t.path("crash");
    for i in 0..24 {
        write(&dir.join(format!("f{i}")), &noise(1 << 20, i));
    }
    mutate(&dir, 1);
    let commit_time = timed(&t, &["commit", "-m", "base"]);
    let base = t.head("crash").unwrap();
    t.dot(&["checkout", "-b", "other"]).ok();
    t.dot(&["checkout", "master"]).ok();
    // How long an uninterrupted reset of that much change takes, to pick
    // kill times inside it.
    mutate(&dir, 1000);
    let reset_time = timed(&t, &["reset", "--hard", "HEAD"]);

    let mut kills = 0;
    for round in 0..8u64 {
        // Commit, killed at a random moment.
        mutate(&dir, round + 2);
        let old = t.head("crash");
        let killed = run_and_kill(
            &t,
            &["commit", "-m", &format!("round {round}")],
            Duration::from_micros(rng.below(commit_time.as_micros() as u64 * 12 / 10)),
        );
        kills += killed as u32;
        t.fsck_ok();
        let new = t.head("crash");
        if new == old {
            assert!(killed, "a commit that ran to the end must move HEAD");
            t.dot(&["commit", "-m", "redo"]).ok();
        } else {
            assert!(
                is_clean(&t),
                "HEAD moved, so the working directory is that commit"
            );
        }
        let committed = t.head("crash").unwrap();

        // Reset to the base commit, killed at a random moment: HEAD is the
        // old or the new commit, and the working directory matches it.
        mutate(&dir, round + 50);
        let killed = run_and_kill(
            &t,
            &["reset", "--hard", &base[..16]],
            Duration::from_micros(rng.below(reset_time.as_micros() as u64 * 12 / 10)),
        );
        kills += killed as u32;
        t.fsck_ok();
        let head = t.head("crash").unwrap();
        assert!(
            head == base || head == committed,
            "HEAD is {head}, neither old nor new"
        );
        if head == committed {
            // Killed before the reset began: the edits are still there.
            t.dot(&["reset", "--hard", "HEAD"]).ok();
        }
        assert!(
            is_clean(&t),
            "after an interrupted reset the working directory matches HEAD"
        );

        // Checkout of the other branch, killed at a random moment.
        t.dot(&["reset", "--hard", &committed[..16]]).ok();
        let killed = run_and_kill(
            &t,
            &["checkout", "other"],
            Duration::from_micros(rng.below(reset_time.as_micros() as u64 * 12 / 10)),
        );
        kills += killed as u32;
        t.fsck_ok();
        let branches = t.dot(&["branch", "--json"]).ok().json();
        let current = branches
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["current"] == true)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(current == "master" || current == "other");
        assert!(
            is_clean(&t),
            "after an interrupted checkout the working directory matches its branch"
        );
        if current == "other" {
            t.dot(&["checkout", "master"]).ok();
        }
    }
    eprintln!("{kills} of 24 operations were killed mid-way");
    assert!(
        kills >= 8,
        "too few operations were interrupted ({kills}) for the test to mean anything"
    );
    t.fsck_ok();
    t.dot(&["gc"]).ok();
    t.fsck_ok();
}
