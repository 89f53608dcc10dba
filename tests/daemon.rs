//! The daemon: its life cycle, concurrency through it (reads during a long
//! commit, commits of different dots at once, ten commits of one dot, a
//! commit racing a reset), who it serves, version checks; and without a
//! daemon, a second process waiting for the first.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{noise, write, Env, Run};

fn daemon_env() -> Env {
    let mut t = Env::plain();
    t.start_daemon();
    t
}

fn spawn(t: &Env, args: &[&str]) -> Child {
    spawn_paused(t, args, 0)
}

/// Spawns `dot args`; a commit pauses `ms` after its scan (a debug-build
/// test hook), so that it is still running while the test acts.
fn spawn_paused(t: &Env, args: &[&str], ms: u64) -> Child {
    t.cmd(args)
        .env("DOT_TEST_COMMIT_PAUSE_MS", ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> Run {
    util::to_run(c.wait_with_output().unwrap())
}

/// A dot whose next commit takes a while: `mib` MiB of new data.
fn big_dot(t: &Env, name: &str, mib: usize) {
    t.dot(&["init", name]).ok();
    let dir = t.path(name);
    for i in 0..mib / 8 {
        write(&dir.join(format!("f{i}")), &noise(8 << 20, i as u64 + 7));
    }
}

/// Waits until the daemon is carrying out an `op` request.
fn wait_running(t: &Env, op: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let st = t.dot(&["daemon", "status", "--json"]).ok().json();
        if st["running"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["op"] == op)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {op} started");
}

#[test]
fn start_status_stop() {
    let t = daemon_env();
    let again = t.dot(&["daemon", "start"]).ok();
    assert!(again.out.contains("already serves"), "{}", again.out);
    let st = t.dot(&["daemon", "status", "--json"]).ok().json();
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["pid"].as_u64().unwrap() > 0);
    assert!(st["socket"].as_str().unwrap().ends_with("daemon.sock"));
    let text = t.dot(&["daemon", "status"]).ok().out;
    assert!(text.contains("uptime"), "{text}");
    // The socket is the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.home.join("daemon.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    t.dot(&["init", "a"]).ok();
    t.dot(&["daemon", "stop"]).ok();
    assert!(!t.home.join("daemon.sock").exists());
    let r = t.dot(&["daemon", "status"]).fails();
    assert_eq!(r.code, 3, "{}", r.err);
    // Without it, commands open the store themselves.
    assert!(t.dot(&["list"]).ok().out.contains(" a "));
}

#[test]
fn stop_returns_once_the_daemon_has_let_go_of_the_store() {
    let mut t = Env::plain();
    // The daemon closes its store 1 s after its socket went (debug builds).
    t.start_daemon_with(&[("DOT_TEST_STOP_PAUSE_MS", "1000")]);
    t.dot(&["init", "a"]).ok();
    let started = Instant::now();
    t.dot(&["daemon", "stop"]).ok();
    t.daemon = false;
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Another process may take the store at once (dot fsck --repair, or a
    // test removing the index).
    let lock = std::fs::File::open(t.home.join("lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .expect("the stopped daemon still holds the store");
}

#[test]
fn reads_answer_at_once_while_a_long_commit_runs() {
    let t = daemon_env();
    t.dot(&["init", "small"]).ok();
    write(&t.path("small").join("f"), b"small\n");
    t.dot(&["commit", "-m", "small"]).ok();
    big_dot(&t, "big", 64);
    let commit = spawn_paused(&t, &["commit", "-m", "big", "big"], 5000);
    wait_running(&t, "commit");
    let reads: &[&[&str]] = &[
        &["list"],
        &["log", "small"],
        &["branch", "big"],
        &["path", "big"],
        &["remote", "-v"],
        &["status", "small"],
        &["diff", "small"],
        &["log", "big"],
    ];
    for args in reads {
        let start = Instant::now();
        t.dot(args).ok();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "dot {args:?} took {:?} during a commit",
            start.elapsed()
        );
    }
    let st = t.dot(&["daemon", "status", "--json"]).ok().json();
    let running: Vec<&str> = st["running"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["op"].as_str().unwrap())
        .collect();
    assert!(
        running.contains(&"commit"),
        "the commit was still running while the reads answered: {st}"
    );
    finish(commit).ok();
    assert_eq!(t.commits("big"), 1);
}

#[test]
fn commits_of_different_dots_run_in_parallel() {
    let t = daemon_env();
    big_dot(&t, "slow", 64);
    t.dot(&["init", "quick"]).ok();
    write(&t.path("quick").join("f"), b"quick\n");
    let slow = spawn_paused(&t, &["commit", "-m", "slow", "slow"], 5000);
    wait_running(&t, "commit");
    let start = Instant::now();
    t.dot(&["commit", "-m", "quick", "quick"]).ok();
    let quick = start.elapsed();
    let st = t.dot(&["daemon", "status", "--json"]).ok().json();
    assert!(
        st["running"].as_array().unwrap().len() == 1,
        "the quick commit finished while the slow one still ran ({quick:?}): {st}"
    );
    finish(slow).ok();
    assert_eq!(t.commits("slow"), 1);
    assert_eq!(t.commits("quick"), 1);
    t.fsck_ok();
}

#[test]
fn a_call_that_panics_fails_alone_and_the_daemon_goes_on() {
    let t = daemon_env();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"one\n");
    let r = util::to_run(
        t.cmd(&["commit", "-m", "boom"])
            .env("DOT_TEST_COMMIT_PANIC", "1")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 1, "a bug exits 1: {}", r.err);
    assert!(r.err.contains("internal error"), "{}", r.err);
    // The dot it held is usable, and the daemon stops when asked.
    t.dot(&["commit", "-m", "one"]).ok();
    assert_eq!(t.commits("app"), 1);
    t.fsck_ok();
    t.dot(&["daemon", "stop"]).ok();
}

#[test]
fn ten_concurrent_commits_on_one_dot_give_ten_commits() {
    let t = daemon_env();
    t.dot(&["init", "one"]).ok();
    write(&t.path("one").join("f"), &noise(1 << 20, 3));
    let children: Vec<Child> = (0..10)
        .map(|i| spawn(&t, &["commit", "-m", &format!("c{i}"), "one"]))
        .collect();
    for c in children {
        finish(c).ok();
    }
    assert_eq!(t.commits("one"), 10);
    t.fsck_ok();
}

#[test]
fn a_commit_racing_a_reset_leaves_a_consistent_dot() {
    let t = daemon_env();
    t.dot(&["init", "race"]).ok();
    let dir = t.path("race");
    write(&dir.join("f"), &noise(20 << 20, 1));
    t.dot(&["commit", "-m", "one"]).ok();
    write(&dir.join("f"), &noise(20 << 20, 2));
    t.dot(&["commit", "-m", "two"]).ok();
    for round in 0..3 {
        write(&dir.join("g"), &noise(8 << 20, 10 + round));
        let commit = spawn(&t, &["commit", "-m", "racer", "race"]);
        let reset = spawn(&t, &["reset", "--hard", "HEAD^", "race"]);
        finish(commit).ok();
        let r = finish(reset);
        assert!(r.code == 0 || r.code == 3, "{}", r.err);
        t.fsck_ok();
        let diff = t.dot(&["diff", "--json", "race"]).ok().json();
        assert_eq!(
            diff["clean"], true,
            "the working directory matches HEAD: {diff}"
        );
    }
}

#[test]
fn without_a_daemon_a_second_process_waits() {
    let t = Env::plain();
    big_dot(&t, "big", 64);
    let commit = spawn_paused(&t, &["commit", "-m", "big", "big"], 3000);
    // Until it holds the store, a second process would get it first.
    while !t.home.join("lock").exists()
        || !std::fs::read_to_string(t.home.join("lock"))
            .unwrap_or_default()
            .contains("commit")
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = t.dot(&["log", "big"]).ok();
    assert!(
        r.err.contains("waiting for pid") && r.err.contains("dot commit"),
        "{}",
        r.err
    );
    finish(commit).ok();
    assert_eq!(t.commits("big"), 1);
}

/// One raw call on the daemon's socket; returns the response text.
fn raw_call(t: &Env, version: &str) -> String {
    let mut s = UnixStream::connect(t.home.join("daemon.sock")).unwrap();
    let body = r#"{"env":{},"request":{"op":"list"}}"#;
    write!(
        s,
        "POST /v1/call HTTP/1.1\r\nHost: dot\r\nX-Dot-Version: {version}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn other_versions_are_refused() {
    let t = daemon_env();
    let out = raw_call(&t, "0.0.1");
    assert!(out.starts_with("HTTP/1.1 409"), "{out}");
    assert!(
        out.contains("dot daemon stop") && out.contains("0.0.1"),
        "the message says what to do: {out}"
    );
    let ok = raw_call(&t, env!("CARGO_PKG_VERSION"));
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Garbage gets an error, and the daemon keeps serving.
    let mut s = UnixStream::connect(t.home.join("daemon.sock")).unwrap();
    s.write_all(b"\x00\x01 nonsense\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    t.dot(&["list"]).ok();
}

#[test]
fn only_the_owner_and_root_are_served() {
    if !util::is_root() {
        return; // Needs another user.
    }
    let t = daemon_env();
    t.dot(&["init", "mine"]).ok();
    // Even with the socket opened to everyone, the daemon checks who asks.
    use std::os::unix::fs::PermissionsExt;
    for dir in [t.tmp.path(), &t.home] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sock = t.home.join("daemon.sock");
    let list_as_nobody = || {
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(util::dot_bin())
            .arg("list")
            .env("DOT_HOME", &t.home)
            .output()
            .unwrap();
        util::to_run(out)
    };
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = list_as_nobody();
    assert_eq!(r.code, 9, "refused as a permission error: {}", r.err);
    assert!(r.err.contains("serves only its owner"), "{}", r.err);
    // With the socket owner-only again, another user cannot even connect.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = list_as_nobody();
    assert_eq!(r.code, 9, "{}", r.err);
    t.dot(&["list"]).ok();
}

/// Interrupts a paused commit with Ctrl-C: it stops cleanly, exit 130.
fn ctrl_c_cancels(t: &Env) {
    big_dot(t, "c", 16);
    let commit = spawn_paused(t, &["commit", "-m", "never", "c"], 3000);
    if t.daemon {
        wait_running(t, "commit");
    } else {
        while !std::fs::read_to_string(t.home.join("lock"))
            .unwrap_or_default()
            .contains("commit")
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(commit.id() as i32, libc::SIGINT) };
    let r = finish(commit);
    assert_eq!(r.code, 130, "{}", r.err);
    assert!(r.err.contains("cancelled"), "{}", r.err);
    assert_eq!(t.commits("c"), 0, "nothing was committed");
    t.fsck_ok();
    t.dot(&["commit", "-m", "after", "c"]).ok();
}

#[test]
fn ctrl_c_cancels_cleanly_through_the_daemon() {
    let t = daemon_env();
    ctrl_c_cancels(&t);
    t.dot(&["daemon", "status"]).ok();
}

#[test]
fn ctrl_c_cancels_cleanly_in_process() {
    ctrl_c_cancels(&Env::plain());
}

#[test]
fn a_file_truncated_under_a_commit_fails_the_commit_not_the_daemon() {
    let t = daemon_env();
    t.dot(&["init", "trunc"]).ok();
    let f = t.path("trunc").join("shrinking");
    write(&f, &noise(128 << 20, 9));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let (stop, f) = (stop.clone(), f.clone());
        std::thread::spawn(move || {
            let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            // Never small enough to be read whole between two cuts.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.set_len(96 << 20).unwrap();
                std::thread::sleep(Duration::from_millis(2));
                file.set_len(128 << 20).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let r = t.dot(&["commit", "-m", "racy", "trunc"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    cutter.join().unwrap();
    let r = r.typed();
    assert!(
        r.err.contains("changed while it was being read"),
        "{}",
        r.err
    );
    t.dot(&["daemon", "status"]).ok();
    assert_eq!(t.commits("trunc"), 0);
    t.fsck_ok();
}
