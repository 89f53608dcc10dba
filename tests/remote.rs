//! Push, pull and clone through real storage on 127.0.0.1: an S3 server
//! (moto), a WebDAV server (rclone serve webdav) and plain directories.

mod util;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use util::{noise, snapshot, write, Env, Run};

/// One remote location and how to add it.
struct Remote {
    url: String,
    args: Vec<String>,
    /// Where its files are on this machine (directory and WebDAV remotes).
    files: Option<std::path::PathBuf>,
}

impl Remote {
    fn file(t: &Env) -> Remote {
        let dir = t.tmp.path().join("remote");
        Remote {
            url: dir.to_str().unwrap().to_string(),
            args: vec![],
            files: Some(dir),
        }
    }
    fn s3() -> Remote {
        Remote {
            url: format!("s3://{}/team", util::s3_bucket()),
            args: vec![
                "--endpoint".into(),
                format!("http://127.0.0.1:{}", util::s3().port),
            ],
            files: None,
        }
    }
    fn webdav(t: &Env) -> Remote {
        let dav = util::webdav(false);
        let name = t.unique_name();
        Remote {
            url: format!("http://127.0.0.1:{}/{name}/dots", dav.port),
            args: vec![],
            files: Some(dav.root.join(&name).join("dots")),
        }
    }
    fn add(&self, t: &Env, name: &str) {
        let mut args = vec!["remote", "add", name, &self.url];
        args.extend(self.args.iter().map(String::as_str));
        t.dot(&args).ok();
    }
}

/// Numbers in a summary line, in order: "3 objects sent (1.2 MiB ...".
fn number_before(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("no {word:?} in {text:?}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {word:?} in {text:?}"))
}

fn same_tree(a: &Env, b: &Env, dot_a: &str, dot_b: &str) {
    assert_eq!(snapshot(&a.path(dot_a)), snapshot(&b.path(dot_b)));
}

/// `a` commits `content` as file `f` of dot app and pushes it to `remote`
/// (added as hub); `b` adds the remote and clones the dot.
fn published(remote: &Remote, a: &Env, b: &Env, content: &[u8]) {
    a.dot(&["init", "app"]).ok();
    write(&a.path("app").join("f"), content);
    a.dot(&["commit", "-m", "published"]).ok();
    remote.add(a, "hub");
    a.dot(&["push", "hub", "app"]).ok();
    remote.add(b, "hub");
    b.dot(&["clone", "hub", "app"]).ok();
}

/// Push, clone into a fresh DOT_HOME, push a small change, pull it.
fn round_trip(make: impl Fn(&Env) -> Remote) {
    let a = Env::new();
    let b = Env::new();
    let remote = make(&a);
    a.dot(&["init", "app"]).ok();
    let dir = a.path("app");
    let mut big = noise(3 << 20, 1);
    write(&dir.join("base/big"), &big);
    write(&dir.join("conf"), b"port = 5432\n");
    a.dot(&["commit", "-m", "one"]).ok();
    remote.add(&a, "hub");
    let first = a.dot(&["push", "hub", "app"]).ok().out;
    assert!(first.contains("pushed"), "{first}");

    remote.add(&b, "hub");
    let cloned = b.dot(&["clone", "hub", "app"]).ok().out;
    assert!(
        cloned.contains("cloned hub app master into dot app"),
        "{cloned}"
    );
    same_tree(&a, &b, "app", "app");
    assert_eq!(b.head("app"), a.head("app"));

    // A one-page change travels as about one chunk, not the file.
    big[1 << 20..(1 << 20) + 8192].fill(7);
    write(&dir.join("base/big"), &big);
    a.dot(&["commit", "-m", "two"]).ok();
    let second = a.dot(&["push"]).ok().out;
    let sent = number_before(&second, "objects sent");
    assert!(sent <= 8, "{second}");
    assert!(second.contains("skipped"), "{second}");

    let pulled = b.dot(&["pull"]).ok().out;
    assert!(pulled.contains("pulled hub app master"), "{pulled}");
    assert!(number_before(&pulled, "objects received") <= 8, "{pulled}");
    same_tree(&a, &b, "app", "app");
    assert_eq!(b.commits("app"), 2);
    assert!(b.dot(&["pull"]).ok().out.contains("up to date"));
    assert!(a.dot(&["push"]).ok().out.contains("up to date"));
    a.fsck_ok();
    b.fsck_ok();
}

#[test]
fn round_trip_through_a_directory() {
    round_trip(Remote::file);
}

#[test]
fn round_trip_through_s3() {
    round_trip(|_| Remote::s3());
}

#[test]
fn round_trip_through_webdav() {
    round_trip(Remote::webdav);
}

#[test]
fn subdots_and_branches_travel_together() {
    let a = Env::new();
    let b = Env::new();
    let remote = Remote::s3();
    a.dot(&["init", "shop.orders"]).ok();
    a.dot(&["init", "shop.catalog"]).ok();
    write(&a.path("shop.orders").join("t"), b"order 1\n");
    write(&a.path("shop.catalog").join("t"), &noise(200_000, 2));
    a.dot(&["commit", "-m", "both"]).ok();
    a.dot(&["checkout", "-b", "bug-16637"]).ok();
    write(&a.path("shop.orders").join("t"), b"order 1\norder 2\n");
    a.dot(&["commit", "-m", "bug"]).ok();
    remote.add(&a, "hub");
    a.dot(&[
        "push",
        "hub",
        "shop",
        "--remote-name",
        "pete/shop",
        "--branch",
        "bug-16637",
    ])
    .ok();
    a.dot(&[
        "push",
        "hub",
        "shop",
        "--remote-name",
        "pete/shop",
        "--branch",
        "master",
    ])
    .ok();

    remote.add(&b, "hub");
    b.dot(&["clone", "hub", "pete/shop"]).ok();
    assert_eq!(
        fs::read(b.path("pete/shop.orders").join("t")).unwrap(),
        b"order 1\n"
    );
    assert_eq!(b.commits("pete/shop"), 1);
    let second = b
        .dot(&[
            "clone",
            "hub",
            "pete/shop",
            "--local-name",
            "bug",
            "--branch",
            "bug-16637",
        ])
        .ok()
        .out;
    same_tree(&a, &b, "shop.orders", "bug.orders");
    same_tree(&a, &b, "shop.catalog", "bug.catalog");
    // The catalog came with the first clone, into another local dot: only
    // the new commit and what changed in orders travel.
    assert!(
        number_before(&second, "objects already here") >= 2,
        "{second}"
    );
    assert!(number_before(&second, "objects received") <= 6, "{second}");
    assert_eq!(b.commits("bug"), 2);
    b.fsck_ok();
}

#[test]
fn non_fast_forward_is_refused_unless_forced() {
    let a = Env::new();
    let b = Env::new();
    let remote = Remote::file(&a);
    published(&remote, &a, &b, b"base\n");

    write(&b.path("app").join("f"), b"theirs\n");
    b.dot(&["commit", "-m", "theirs"]).ok();
    b.dot(&["push"]).ok();
    write(&a.path("app").join("f"), b"mine\n");
    let mine = a.dot(&["commit", "-m", "mine"]).ok().out.trim().to_string();

    let r = a.dot(&["push"]).fails();
    assert!(r.err.contains("dot pull"), "{}", r.err);
    let r = a.dot(&["pull"]).fails();
    assert!(
        r.err.contains("has commits that remote hub lacks"),
        "{}",
        r.err
    );
    assert_eq!(a.head("app").unwrap(), mine, "a refused pull moves nothing");
    assert_eq!(fs::read(a.path("app").join("f")).unwrap(), b"mine\n");

    a.dot(&["push", "--force"]).ok();
    let c = Env::new();
    remote.add(&c, "hub");
    c.dot(&["clone", "hub", "app"]).ok();
    assert_eq!(c.head("app").unwrap(), mine);
    a.fsck_ok();
}

#[test]
fn pull_is_refused_while_the_branch_has_uncommitted_changes() {
    let a = Env::new();
    let b = Env::new();
    let remote = Remote::file(&a);
    published(&remote, &a, &b, b"one\n");
    write(&a.path("app").join("f"), b"two\n");
    a.dot(&["commit", "-m", "two"]).ok();
    a.dot(&["push"]).ok();

    write(&b.path("app").join("scratch"), b"work in progress\n");
    let r = b.dot(&["pull"]).fails();
    assert!(r.err.contains("uncommitted"), "{}", r.err);
    assert_eq!(fs::read(b.path("app").join("f")).unwrap(), b"one\n");
    fs::remove_file(b.path("app").join("scratch")).unwrap();
    b.dot(&["pull"]).ok();
    assert_eq!(fs::read(b.path("app").join("f")).unwrap(), b"two\n");
}

#[test]
fn racing_pushes_one_wins_and_nothing_is_lost() {
    let remote = Remote::s3();
    let envs: Vec<Env> = (0..2).map(|_| Env::new()).collect();
    let base = Env::new();
    base.dot(&["init", "app"]).ok();
    write(&base.path("app").join("f"), b"base\n");
    base.dot(&["commit", "-m", "base"]).ok();
    remote.add(&base, "hub");
    base.dot(&["push", "hub", "app"]).ok();
    let mut heads = Vec::new();
    for (i, t) in envs.iter().enumerate() {
        remote.add(t, "hub");
        t.dot(&["clone", "hub", "app"]).ok();
        write(&t.path("app").join("f"), &noise(300_000, 10 + i as u64));
        heads.push(
            t.dot(&["commit", "-m", "racer"])
                .ok()
                .out
                .trim()
                .to_string(),
        );
    }
    let children: Vec<_> = envs
        .iter()
        .map(|t| {
            t.cmd(&["push"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| util::to_run(c.wait_with_output().unwrap()))
        .collect();
    let winners: Vec<usize> = (0..2).filter(|&i| runs[i].code == 0).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one push wins: {:?}",
        runs.iter().map(|r| &r.err).collect::<Vec<_>>()
    );
    let (winner, loser) = (winners[0], 1 - winners[0]);
    let loser_run = runs.into_iter().nth(loser).unwrap().fails();
    assert!(loser_run.err.contains("dot pull"), "{}", loser_run.err);

    let c = Env::new();
    remote.add(&c, "hub");
    c.dot(&["clone", "hub", "app"]).ok();
    assert_eq!(
        c.head("app").unwrap(),
        heads[winner],
        "the winner's commit is on the remote"
    );
    // The loser keeps its commit and can still publish it on a branch.
    let l = &envs[loser];
    assert_eq!(l.head("app").unwrap(), heads[loser]);
    l.dot(&["checkout", "-b", "mine"]).ok();
    l.dot(&["push", "hub", "app", "--branch", "mine"]).ok();
    c.dot(&[
        "clone",
        "hub",
        "app",
        "--branch",
        "mine",
        "--local-name",
        "theirs",
    ])
    .ok();
    assert_eq!(c.head("theirs").unwrap(), heads[loser]);
}

/// Lists keys under a prefix of the test S3 server (moto does not check
/// signatures, so a plain GET lists).
fn s3_keys(url: &str, prefix: &str) -> usize {
    let rest = url.strip_prefix("s3://").unwrap();
    let (bucket, root) = rest.split_once('/').unwrap();
    util::s3_request(
        "GET",
        &format!("/{bucket}?list-type=2&prefix={root}/{prefix}"),
    )
    .matches("<Key>")
    .count()
}

#[test]
fn a_push_killed_midway_resumes_without_sending_again() {
    let a = Env::new();
    let remote = Remote::s3();
    a.dot(&["init", "app"]).ok();
    for i in 0..4 {
        write(
            &a.path("app").join(format!("f{i}")),
            &noise(12 << 20, 20 + i),
        );
    }
    a.dot(&["commit", "-m", "big"]).ok();
    remote.add(&a, "hub");
    let mut child = a
        .cmd(&["push", "hub", "app"])
        .env("DOT_PUSH_PACK_BYTES", "1048576")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while s3_keys(&remote.url, "packs/") < 6 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no packs appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    if a.daemon {
        // Through a daemon, the daemon is what dies mid-push.
        a.kill_daemon();
        child.wait().unwrap();
        a.restart_daemon();
    } else {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert_eq!(s3_keys(&remote.url, "refs/"), 0, "no ref before the data");
    assert_eq!(s3_keys(&remote.url, "index/"), 0);

    let b = Env::new();
    remote.add(&b, "hub");
    let r = b.dot(&["clone", "hub", "app"]).fails();
    assert!(
        r.err.contains("has no branch master of dot app"),
        "{}",
        r.err
    );

    let out = a.dot(&["push"]).fails().err;
    assert!(
        out.contains("no upstream"),
        "the killed push set no upstream: {out}"
    );
    let out = a.dot(&["push", "hub", "app"]).ok().out;
    assert!(number_before(&out, "objects reused") >= 5, "{out}");
    // 48 MiB of incompressible data; at least 5 MiB had arrived before.
    let sent_mib: f64 = out
        .split("objects sent (")
        .nth(1)
        .and_then(|r| r.split(" MiB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MiB sent in {out}"));
    assert!(sent_mib < 43.5, "{out}");
    b.dot(&["clone", "hub", "app"]).ok();
    same_tree(&a, &b, "app", "app");
    b.fsck_ok();
}

#[test]
fn a_clone_killed_midway_resumes_without_fetching_again() {
    let a = Env::new();
    let remote = Remote::s3();
    a.dot(&["init", "app"]).ok();
    for i in 0..3 {
        write(
            &a.path("app").join(format!("f{i}")),
            &noise(16 << 20, 40 + i),
        );
    }
    a.dot(&["commit", "-m", "big"]).ok();
    remote.add(&a, "hub");
    a.dot(&["push", "hub", "app"]).ok();

    // A clone stores what it receives in sealed batches of 32 MiB. Once
    // more than that is in its packs, the first batch is durable: the
    // clone is killed there, and the next one skips that batch.
    let pack_bytes = |home: &std::path::Path| -> u64 {
        fs::read_dir(home.join("packs"))
            .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
            .unwrap_or(0)
    };
    let mut resumed = false;
    for _ in 0..5 {
        let b = Env::new();
        remote.add(&b, "hub");
        let mut child = b
            .cmd(&["clone", "hub", "app"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while pack_bytes(&b.home) <= 33 << 20 && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_some() {
            continue; // Finished first.
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if b.dot(&["path", "app"]).code == 0 {
            continue; // A daemon finished it regardless.
        }
        let out = b.dot(&["clone", "hub", "app"]).ok().out;
        same_tree(&a, &b, "app", "app");
        b.fsck_ok();
        if number_before(&out, "objects already here") >= 100 {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "no interrupted clone kept what it had received");
}

#[test]
fn a_tampered_remote_object_fails_the_pull_and_changes_nothing() {
    let a = Env::new();
    let b = Env::new();
    let remote = Remote::webdav(&a);
    published(&remote, &a, &b, &noise(500_000, 3));
    let before = b.head("app");

    write(&a.path("app").join("f"), &noise(500_000, 4));
    a.dot(&["commit", "-m", "two"]).ok();
    let packs_before: Vec<_> = fs::read_dir(remote.files.as_ref().unwrap().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    a.dot(&["push"]).ok();
    // Flip one byte in the middle of every pack the second push added.
    for e in fs::read_dir(remote.files.as_ref().unwrap().join("packs")).unwrap() {
        let p = e.unwrap().path();
        if !packs_before.contains(&p) {
            let mut bytes = fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            fs::write(&p, bytes).unwrap();
        }
    }
    let r = b.dot(&["pull"]).fails();
    assert!(r.err.contains("is damaged"), "{}", r.err);
    assert!(
        r.err.contains("packs/"),
        "the error names the pack: {}",
        r.err
    );
    assert!(
        r.err.contains("object "),
        "the error names the object: {}",
        r.err
    );
    assert_eq!(b.head("app"), before);
    b.dot(&["diff"]).ok();
    assert_eq!(
        b.dot(&["diff", "--json"]).ok().json()["changes"]
            .as_array()
            .map(|a| a.len()),
        Some(0)
    );
    b.fsck_ok();
}

#[test]
fn credentials_unreachable_and_missing_remotes() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"x\n");
    t.dot(&["commit", "-m", "x"]).ok();

    // Secrets are refused in URLs, and never shown.
    let r = t
        .dot(&[
            "remote",
            "add",
            "bad",
            "https://pete:s3cret@example.com/dots",
        ])
        .fails();
    assert!(r.err.contains("never stores secrets"), "{}", r.err);
    assert!(!r.err.contains("s3cret"));

    // A location where a remote's name belongs says how to add it.
    let r = t.dot(&["clone", "/tmp/dots", "app2"]).fails();
    assert_eq!(r.code, 2);
    assert!(r.err.contains("dot remote add NAME /tmp/dots"), "{}", r.err);

    // WebDAV with basic auth: wrong password, then right.
    let dav = util::webdav(true);
    let url = format!("http://127.0.0.1:{}/auth-{}", dav.port, std::process::id());
    t.dot(&["remote", "add", "web", &url]).ok();
    let r = t
        .cmd(&["push", "web", "app"])
        .env("DOT_HTTP_USER", "pete")
        .env("DOT_HTTP_PASSWORD", "wrong")
        .output()
        .unwrap();
    let r = util::to_run(r).fails();
    assert!(r.err.contains("access denied"), "{}", r.err);
    assert!(!r.err.contains("wrong"), "no secret in errors: {}", r.err);
    let creds = t.home.join("credentials");
    fs::write(&creds, "[web]\nusername = pete\npassword = s3cret\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o644)).unwrap();
    let r = t.dot(&["push", "web", "app"]).fails();
    assert!(r.err.contains("chmod 600"), "{}", r.err);
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
    t.dot(&["push", "web", "app"]).ok();
    let listing = t.dot(&["remote", "-v"]).ok().out;
    assert!(
        listing.contains(&url) && !listing.contains("s3cret"),
        "{listing}"
    );

    // Nothing listens on port 1.
    t.dot(&[
        "remote",
        "add",
        "dead",
        "s3://b/p",
        "--endpoint",
        "http://127.0.0.1:1",
    ])
    .ok();
    let start = Instant::now();
    let r = t.dot(&["push", "dead", "app"]).fails();
    assert!(r.err.contains("cannot reach"), "{}", r.err);
    assert!(start.elapsed() < Duration::from_secs(60));

    // A bucket that does not exist, a directory that does not exist yet.
    t.dot(&[
        "remote",
        "add",
        "nobucket",
        "s3://no-such-bucket/p",
        "--endpoint",
        &format!("http://127.0.0.1:{}", util::s3().port),
    ])
    .ok();
    let r = t.dot(&["push", "nobucket", "app"]).fails();
    assert!(r.err.to_lowercase().contains("bucket"), "{}", r.err);
    let fresh = t.tmp.path().join("new/remote");
    t.dot(&["remote", "add", "fresh", fresh.to_str().unwrap()])
        .ok();
    let r = t
        .dot(&["clone", "fresh", "app", "--local-name", "other"])
        .fails();
    assert!(r.err.contains("does not exist"), "{}", r.err);
    t.dot(&["push", "fresh", "app"]).ok();
    let r = t.dot(&["clone", "fresh", "nothere"]).fails();
    assert!(
        r.err.contains("has no branch master of dot nothere"),
        "{}",
        r.err
    );
    let r = t.dot(&["clone", "fresh", "app"]).fails();
    assert!(r.err.contains("already exists"), "{}", r.err);

    t.dot(&["remote", "rm", "fresh"]).ok();
    let r = t.dot(&["push", "fresh", "app"]).fails();
    assert!(r.err.contains("no remote named fresh"), "{}", r.err);
    assert!(!t.dot(&["remote"]).ok().out.contains("fresh"));
    t.fsck_ok();
}

/// Bytes and files under a directory remote's `sub`.
fn dir_usage(root: &std::path::Path, sub: &str) -> (u64, usize) {
    let Ok(entries) = fs::read_dir(root.join(sub)) else {
        return (0, 0);
    };
    let sizes: Vec<u64> = entries
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    (sizes.iter().sum(), sizes.len())
}

/// gc --remote: force-pushed-away history (whose chunks share packs with
/// live ones), an unfinished push's pack and old ref generations go, in
/// two phases; the index files pushes left merge into one; every branch
/// still clones whole; a push between the phases keeps its data.
#[test]
fn gc_remote_frees_what_no_branch_reaches_in_two_phases() {
    let a = Env::new();
    let remote = Remote::file(&a);
    let root = remote.files.clone().unwrap();
    a.dot(&["init", "app"]).ok();
    let dir = a.path("app");
    write(&dir.join("keep"), &noise(1 << 20, 1));
    a.dot(&["commit", "-m", "keep"]).ok();
    remote.add(&a, "hub");
    a.dot(&["checkout", "-b", "feature"]).ok();
    for i in 0..3 {
        write(&dir.join("f"), format!("feature {i}\n").as_bytes());
        a.dot(&["commit", "-m", "feature"]).ok();
        a.dot(&["push", "hub", "app", "--branch", "feature"]).ok();
    }
    // master gets "keep2" and "gone" in one push: they share packs.
    a.dot(&["checkout", "master"]).ok();
    write(&dir.join("keep2"), &noise(2 << 20, 6));
    write(&dir.join("gone"), &noise(3 << 20, 2));
    a.dot(&["commit", "-m", "both"]).ok();
    a.dot(&["push", "hub", "app"]).ok();
    // Another dot with "keep" and "keep2" replaces app's master: "gone"
    // is dead, and its packs hold "keep2", which is not.
    a.dot(&["init", "other"]).ok();
    write(&a.path("other").join("keep"), &noise(1 << 20, 1));
    write(&a.path("other").join("keep2"), &noise(2 << 20, 6));
    a.dot(&["commit", "-m", "keep only", "other"]).ok();
    a.dot(&["push", "hub", "other", "--remote-name", "app", "--force"])
        .ok();
    let master = a.head("other");
    a.dot(&["switch", "app"]).ok();
    a.dot(&["checkout", "feature"]).ok();
    // An unfinished push's pack.
    let debris = noise(100_000, 3);
    let debris_name = blake3::hash(&debris).to_hex().to_string();
    write(
        &root.join("packs").join(format!("{debris_name}.pack")),
        &debris,
    );
    let (packs_before, _) = dir_usage(&root, "packs");
    let (_, indexes_before) = dir_usage(&root, "index");
    assert!(indexes_before >= 5, "{indexes_before}");

    // Phase one marks; nothing is deleted while the grace runs.
    let out = a.dot(&["gc", "--remote", "hub"]).ok().out;
    assert!(out.contains("marked") && out.contains("86400 s"), "{out}");
    assert!(dir_usage(&root, "packs").0 >= packs_before);
    a.fsck_ok();
    let r = a.dot(&["fsck", "--remote", "hub"]).ok();
    assert!(r.err.contains("wait for their sweep"), "{}", r.err);
    // A push between the phases.
    write(&dir.join("f"), &noise(500_000, 4));
    a.dot(&["commit", "-m", "between"]).ok();
    a.dot(&["push", "hub", "app", "--branch", "feature"]).ok();
    let out = a.dot(&["gc", "--remote", "hub"]).ok().out;
    assert!(
        out.contains("is deleted by a dot gc --remote hub run in"),
        "{out}"
    );
    assert!(
        !out.contains("deleted 1") && !out.contains("freed"),
        "{out}"
    );

    // Phase two, once the grace has passed.
    a.dot(&["config", "gc.remoteGrace", "1s"]).ok();
    std::thread::sleep(Duration::from_millis(1200));
    let st = a.dot(&["gc", "--remote", "hub", "--json"]).ok().json();
    assert_eq!(st["marks_swept"], 1, "{st}");
    // The first mark copied keep2 out of gone's packs; this run marks
    // again (the push between made a second index file) and waits.
    assert_eq!(st["sweep_refused"], false, "{st}");
    let (packs_after, _) = dir_usage(&root, "packs");
    assert!(
        packs_after + (3 << 20) <= packs_before + 600_000,
        "{packs_before} -> {packs_after}"
    );
    assert!(!root
        .join("packs")
        .join(format!("{debris_name}.pack"))
        .exists());
    // The merged index, the push's between the phases, and the merge the
    // run marked again for (pending).
    let (_, indexes_after) = dir_usage(&root, "index");
    assert!(indexes_after <= 3, "{indexes_after} index files");
    a.dot(&["fsck", "--remote", "hub", "--read-data"]).ok();

    // Every branch clones whole, from scratch.
    let b = Env::new();
    remote.add(&b, "hub");
    b.dot(&["clone", "hub", "app"]).ok();
    assert_eq!(b.head("app"), master);
    assert!(fs::read(b.path("app").join("keep")).unwrap() == noise(1 << 20, 1));
    assert!(fs::read(b.path("app").join("keep2")).unwrap() == noise(2 << 20, 6));
    assert!(!b.path("app").join("gone").exists());
    b.dot(&[
        "clone",
        "hub",
        "app",
        "--local-name",
        "feat",
        "--branch",
        "feature",
    ])
    .ok();
    same_tree(&a, &b, "app", "feat");
    b.fsck_ok();
    // --prune=now sweeps at once: one index file is left, and then there
    // is nothing more to do.
    a.dot(&["gc", "--remote", "hub", "--prune=now"]).ok();
    assert_eq!(dir_usage(&root, "index").1, 1);
    let out = a.dot(&["gc", "--remote", "hub", "--prune=now"]).ok().out;
    assert!(out.contains("nothing to free"), "{out}");
    a.dot(&["fsck", "--remote", "hub", "--read-data"]).ok();
}

#[test]
fn fsck_remote_names_missing_and_damaged_packs() {
    let a = Env::new();
    let remote = Remote::file(&a);
    let root = remote.files.clone().unwrap();
    a.dot(&["init", "app"]).ok();
    write(&a.path("app").join("big"), &noise(1 << 20, 5));
    a.dot(&["commit", "-m", "one"]).ok();
    remote.add(&a, "hub");
    a.dot(&["push", "hub", "app"]).ok();
    a.dot(&["fsck", "--remote", "hub", "--read-data"]).ok();
    // The largest pack holds the file's chunks.
    let mut packs: Vec<_> = fs::read_dir(root.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let chunks = packs.last().unwrap().clone();
    let good = fs::read(&chunks).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    fs::write(&chunks, &bad).unwrap();
    // Only reading the data finds a damaged chunk.
    a.dot(&["fsck", "--remote", "hub"]).ok();
    let r = a.dot(&["fsck", "--remote", "hub", "--read-data"]);
    assert_eq!(r.code, 1, "{} {}", r.out, r.err);
    assert!(r.out.contains("is damaged"), "{}", r.out);
    // A missing pack is found without reading data.
    fs::remove_file(&chunks).unwrap();
    let r = a.dot(&["fsck", "--remote", "hub", "--json"]);
    assert_eq!(r.code, 1, "{} {}", r.out, r.err);
    assert!(r.out.contains("missing"), "{}", r.out);
    // gc refuses to delete anything on a damaged remote.
    let r = a.dot(&["gc", "--remote", "hub"]).typed();
    assert!(r.err.contains("dot fsck --remote hub"), "{}", r.err);
    fs::write(&chunks, &good).unwrap();
    a.dot(&["fsck", "--remote", "hub", "--read-data"]).ok();
}

/// A gc of the remote racing pushes on the S3 server: a machine runs
/// gc --remote (grace 1 s, so marks and sweeps interleave with the pushes)
/// while another pushes and force-pushes; afterwards fsck of the remote
/// passes and every branch clones with its content.
#[test]
fn gc_remote_racing_pushes_on_s3_loses_nothing() {
    let remote = Remote::s3();
    let a = Env::new();
    let g = Env::new();
    remote.add(&a, "hub");
    remote.add(&g, "hub");
    g.dot(&["config", "gc.remoteGrace", "1s"]).ok();
    a.dot(&["init", "app"]).ok();
    let dir = a.path("app");
    write(&dir.join("base"), &noise(1 << 20, 10));
    a.dot(&["commit", "-m", "base"]).ok();
    a.dot(&["push", "hub", "app"]).ok();
    a.dot(&["checkout", "-b", "exp"]).ok();
    a.dot(&["push", "hub", "app", "--branch", "exp"]).ok();

    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the gc loop however the pushing side ends (a failed assertion
    /// included), so the scope never waits for ever.
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let gcs = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut sweeps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let st = g.dot(&["gc", "--remote", "hub", "--json"]).ok().json();
                sweeps += st["marks_swept"].as_u64().unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
            sweeps
        });
        let _stop = Stop(&stop);
        let mut on = "exp";
        let mut exp_commits: Vec<String> = Vec::new();
        let started = Instant::now();
        for i in 0.. {
            if i >= 12 && started.elapsed() > Duration::from_secs(8) {
                break;
            }
            // exp is rewritten (its old commits die), master grows.
            let branch = if i % 2 == 0 { "exp" } else { "master" };
            if on != branch {
                a.dot(&["checkout", branch]).ok();
                on = branch;
            }
            if branch == "exp" && i % 4 == 0 && exp_commits.len() >= 2 {
                // Back to a commit force-pushed away earlier: its data is
                // dead on the remote, perhaps marked, perhaps swept, and
                // the push must not count on what a sweep deletes.
                let old = exp_commits[exp_commits.len() - 2].clone();
                a.dot(&["reset", "--hard", &old]).ok();
                exp_commits.push(old);
            } else {
                if branch == "exp" {
                    a.dot(&["reset", "--hard", "master"]).ok();
                }
                write(&dir.join(branch), &noise(600_000, 100 + i));
                a.dot(&["commit", "-m", &format!("{branch} {i}")]).ok();
                if branch == "exp" {
                    exp_commits.push(a.head("app").unwrap());
                }
            }
            let mut args = vec!["push", "hub", "app", "--branch", branch];
            if branch == "exp" {
                args.push("--force");
            }
            // A push a gc kept busy says so and is run again, as its
            // message asks, after that gc's sweep (grace 1 s, a gc every
            // 200 ms or so): it then goes through.
            let refused = Instant::now();
            loop {
                let r = a.dot(&args);
                if r.code == 0 {
                    break;
                }
                assert!(
                    r.code == 5 && refused.elapsed() < Duration::from_secs(20),
                    "{args:?}: {}",
                    r.err
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        drop(_stop);
        gc.join().unwrap()
    });
    // Sweeps deleted data while pushes ran.
    assert!(gcs >= 2, "only {gcs} sweeps");
    // One more sweep after the last push, then everything must hold.
    std::thread::sleep(Duration::from_millis(1100));
    g.dot(&["gc", "--remote", "hub"]).ok();
    g.dot(&["fsck", "--remote", "hub", "--read-data"]).ok();
    for branch in ["master", "exp"] {
        let c = Env::new();
        remote.add(&c, "hub");
        c.dot(&["clone", "hub", "app", "--branch", branch]).ok();
        let r = a.dot(&["checkout", branch]);
        assert!(
            r.code == 0 || r.err.contains("already on branch"),
            "{}",
            r.err
        );
        assert_eq!(c.head("app"), a.head("app"), "{branch}");
        same_tree(&a, &c, "app", "app");
        c.fsck_ok();
    }
}
