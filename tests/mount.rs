//! Read-only views through a real FUSE mount (/dev/fuse; as root the
//! daemon mounts directly, otherwise through fusermount3): what a view
//! shows, reads at any offset, several views at once, a daemon killed
//! under them, gc and dot rm while they are mounted, and the refusals.

mod util;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use util::{noise, snapshot, write, Env};

fn commit(t: &Env, msg: &str) -> String {
    t.dot(&["commit", "-m", msg]).ok();
    t.head("app").unwrap()
}

/// Writes `data` at `off` of `path` (created if missing) and fsyncs it.
fn write_synced(path: &Path, off: u64, data: &[u8]) {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.write_all_at(data, off).unwrap();
    f.sync_all().unwrap();
}

fn unmount(t: &Env, at: &Path) {
    t.dot(&["unmount", at.to_str().unwrap()]).ok();
}

#[test]
fn a_view_shows_each_commit_as_committed() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    let big = noise(3 << 20, 1);
    write(&dir.join("big"), &big);
    write(&dir.join("small"), b"one\n");
    // Enough names that the directory is split into several nodes.
    for i in 0..5000 {
        write(
            &dir.join(format!("many/f{i:05}")),
            format!("{i}\n").as_bytes(),
        );
    }
    std::os::unix::fs::symlink("small", dir.join("link")).unwrap();
    fs::set_permissions(
        dir.join("small"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .unwrap();
    rustix::fs::setxattr(
        dir.join("small").as_path(),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let first_state = snapshot(&dir);
    let first = commit(&t, "one");

    let mut edited = big.clone();
    edited[1_000_000..1_000_100].copy_from_slice(&[7u8; 100]);
    write(&dir.join("big"), &edited);
    write(&dir.join("small"), b"two\n");
    fs::remove_file(dir.join("many/f00042")).unwrap();
    let second_state = snapshot(&dir);
    commit(&t, "two");

    let v1 = t.tmp.path().join("v1");
    let v2 = t.tmp.path().join("v2");
    let r = t
        .dot(&[
            "mount",
            &format!("app@{first}"),
            "--at",
            v1.to_str().unwrap(),
        ])
        .ok();
    assert!(r.out.contains("mounted read-only"), "{}", r.out);
    t.dot(&["mount", "app", "--at", v2.to_str().unwrap()]).ok();

    // Everything as committed: bytes, modes, owners, times, links.
    assert_eq!(snapshot(&v1), first_state);
    assert_eq!(snapshot(&v2), second_state);
    let xattr = xattr_of(&v1.join("small"), "user.note");
    assert_eq!(xattr, b"kept");

    // Reads at any offset, across chunk boundaries and the end.
    let f = fs::File::open(v2.join("big")).unwrap();
    for (i, off) in [0usize, 1, 65_535, 999_990, 1_000_050, (3 << 20) - 10]
        .into_iter()
        .enumerate()
    {
        let mut buf = vec![0u8; 70_000 + i];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        let end = (off + buf.len()).min(edited.len());
        assert_eq!(&buf[..n], &edited[off..end], "at {off}");
    }
    drop(f);

    // Read-only, for everyone.
    let e = fs::write(v1.join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let list = t.dot(&["mount", "--list", "--json"]).ok().out;
    assert!(list.contains(&first) && list.contains("\"HEAD\""), "{list}");
    assert!(t.dot(&["daemon", "status"]).ok().out.contains("v1"));

    unmount(&t, &v1);
    unmount(&t, &v2);
    assert_eq!(
        fs::read_dir(&v1).unwrap().count(),
        0,
        "an empty directory again"
    );
    assert!(!t.dot(&["mount", "--list"]).ok().out.contains("v1"));
}

fn xattr_of(p: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::getxattr(p, name, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_view_outlives_its_branch_a_killed_daemon_and_gc() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("f"), b"base\n");
    commit(&t, "base");
    let gone = noise(1 << 20, 2);
    write(&dir.join("f"), &gone);
    let second = commit(&t, "second");
    let v = t.tmp.path().join("v");
    t.dot(&[
        "mount",
        &format!("app@{second}"),
        "--at",
        v.to_str().unwrap(),
    ])
    .ok();
    // No branch reaches the view's commit any more (nor the reflog, with
    // --prune=now); gc keeps it.
    t.dot(&["reset", "--hard", "HEAD~1"]).ok();
    t.dot(&["gc", "--prune=now"]).ok();
    assert_eq!(fs::read(v.join("f")).unwrap(), gone);

    // Killed, the daemon leaves a dead mount; started again, it mounts
    // the view again.
    t.kill_daemon();
    t.restart_daemon();
    assert_eq!(fs::read(v.join("f")).unwrap(), gone);

    // The dot cannot be removed from under its view.
    let r = t.dot(&["rm", "-f", "app"]).typed();
    assert!(r.err.contains("dot unmount"), "{}", r.err);
    assert_eq!(r.code, 4);

    // A view in use is not unmounted; the message names who uses it.
    let mut user = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(&v)
        .spawn()
        .unwrap();
    let r = t.dot(&["unmount", v.to_str().unwrap()]).typed();
    assert_eq!(r.code, 5, "{}", r.err);
    assert!(
        r.err.contains(&format!("pid {} (sleep)", user.id())),
        "{}",
        r.err
    );
    user.kill().unwrap();
    user.wait().unwrap();
    unmount(&t, &v);

    // Unmounted, nothing keeps the commit: gc --prune=now frees it.
    t.dot(&["gc", "--prune=now"]).ok();
    let r = t
        .dot(&[
            "mount",
            &format!("app@{second}"),
            "--at",
            v.to_str().unwrap(),
        ])
        .typed();
    assert!(r.err.contains("no commit or branch"), "{}", r.err);
    assert_eq!(r.code, 3);
    t.fsck_ok();
}

#[test]
fn a_dead_view_is_dropped_without_a_daemon() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"x\n");
    commit(&t, "one");
    let v = t.tmp.path().join("v");
    t.dot(&["mount", "app", "--at", v.to_str().unwrap()]).ok();
    t.kill_daemon();
    if util::through_daemon() {
        t.restart_daemon();
    }
    unmount(&t, &v);
    assert_eq!(fs::read_dir(&v).unwrap().count(), 0);
    assert!(!t.dot(&["mount", "--list"]).ok().out.contains("app"));
}

#[test]
fn views_refuse_what_they_cannot_show() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"x\n");
    // No commit yet.
    let v = t.tmp.path().join("v");
    let at = v.to_str().unwrap();
    t.dot(&["mount", "app", "--at", at]).typed();
    commit(&t, "one");
    let full = t.tmp.path().join("full");
    write(&full.join("keep"), b"mine\n");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec!["nope@HEAD".into(), at.into()], 3, "does not exist"),
        (
            vec!["app@nobranch".into(), at.into()],
            2,
            "neither a branch",
        ),
        (vec!["app@".into(), at.into()], 2, "after @"),
        (
            vec!["app".into(), full.to_str().unwrap().into()],
            2,
            "not empty",
        ),
        (
            vec!["app".into(), t.home.join("x").to_str().unwrap().into()],
            2,
            "inside DOT_HOME",
        ),
        (
            vec![
                "app".into(),
                t.tmp.path().join("no/such/dir").to_str().unwrap().into(),
            ],
            7,
            "parent directory must exist",
        ),
    ];
    for (args, code, words) in cases {
        let r = t.dot(&["mount", &args[0], "--at", &args[1]]).typed();
        assert_eq!(r.code, code, "{args:?}: {}", r.err);
        assert!(r.err.contains(words), "{args:?}: {}", r.err);
    }
    assert_eq!(fs::read(full.join("keep")).unwrap(), b"mine\n");
    // A commit is shown at a directory of its own, never at the dot's.
    let r = t.dot(&["mount", "app@HEAD"]).typed();
    assert!(r.err.contains("--at DIR"), "{}", r.err);
    let r = t.dot(&["unmount", t.tmp.path().to_str().unwrap()]).typed();
    assert_eq!(r.code, 3, "{}", r.err);
    // Twice at one place is refused; a relative path is the same place.
    t.dot(&["mount", "app", "--at", at]).ok();
    let r = t.dot(&["mount", "app", "--at", at]).typed();
    assert!(r.err.contains("already shows"), "{}", r.err);
    let rel = t
        .cmd(&["unmount", "v/"])
        .current_dir(t.tmp.path())
        .output()
        .unwrap();
    assert!(
        rel.status.success(),
        "{}",
        String::from_utf8_lossy(&rel.stderr)
    );
}

/// One change, made the same way to a mounted dot and to a plain
/// directory beside it.
fn change(dir: &Path, step: usize) {
    use std::os::unix::fs::PermissionsExt;
    let p = |name: &str| dir.join(name);
    match step % 9 {
        0 => write(
            &p(&format!("new{step}")),
            &noise(70_000 + step, step as u64),
        ),
        1 => {
            // A page in the middle of a large file, as a database writes.
            let f = fs::OpenOptions::new().write(true).open(p("big")).unwrap();
            f.write_all_at(
                &noise(8192, step as u64),
                (step as u64 * 37_000) % 3_000_000,
            )
            .unwrap();
        }
        2 => fs::rename(p("small"), p("renamed")).unwrap_or_else(|_| {
            fs::rename(p("renamed"), p("small")).unwrap();
        }),
        3 => {
            fs::create_dir_all(p("dir/sub")).unwrap();
            write(&p(&format!("dir/sub/f{step}")), b"in a new directory\n");
        }
        4 => {
            let f = fs::OpenOptions::new().write(true).open(p("big")).unwrap();
            f.set_len(3_000_000 - step as u64 * 100).unwrap();
        }
        5 => fs::set_permissions(
            p("big"),
            fs::Permissions::from_mode(0o600 + step as u32 % 7),
        )
        .unwrap(),
        6 => {
            let _ = fs::remove_file(p("link"));
            std::os::unix::fs::symlink(format!("target{step}"), p("link")).unwrap();
        }
        7 => {
            let f = fs::OpenOptions::new().append(true).open(p("big")).unwrap();
            f.write_all_at(b"appended", f.metadata().unwrap().len())
                .unwrap();
        }
        _ => {
            for e in fs::read_dir(dir).unwrap() {
                let e = e.unwrap().path();
                if e.file_name().unwrap().to_str().unwrap().starts_with("new") {
                    fs::remove_file(e).unwrap();
                    break;
                }
            }
        }
    }
}

/// Content, modes and links, without times (a copy's differ).
fn content(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // path mode uid gid mtime size hash: drop the time.
            format!("{} {} {} {}", f[0], f[1], f[5], f[6..].join(" "))
        })
        .collect()
}

#[test]
fn a_mounted_dot_commits_resets_and_switches_without_copying() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("big"), &noise(3_000_000, 9));
    write(&dir.join("small"), b"small\n");
    let first = commit(&t, "first");
    let plain = t.tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    for f in ["big", "small"] {
        fs::copy(dir.join(f), plain.join(f)).unwrap();
    }

    let r = t.dot(&["mount", "app"]).ok();
    assert!(r.out.contains("is mounted at"), "{}", r.out);
    assert_eq!(t.path("app"), dir, "dot path is unchanged");
    let st = t.dot(&["status", "--json"]).ok().out;
    assert!(st.contains("\"working_state\": \"mounted\""), "{st}");
    let list = t.dot(&["list"]).ok().out;
    assert!(list.contains("STATE") && list.contains("mounted"), "{list}");
    assert_eq!(content(&dir), content(&plain));
    // What it holds uncommitted counts in bytes, not in disk blocks.
    write(&dir.join("tiny"), b"abc");
    let d = t.dot(&["diff", "app", "--json"]).ok().json();
    assert_eq!(d["new_bytes"], 3, "{d}");
    let row = t.dot(&["list"]).ok().out;
    assert!(row.contains(" 3 B "), "{row}");
    fs::remove_file(dir.join("tiny")).unwrap();

    // Changes show as on a plain directory, and commit as one.
    let mut commits = vec![(first, content(&plain))];
    for step in 0..18 {
        change(&dir, step);
        change(&plain, step);
        assert_eq!(content(&dir), content(&plain), "after step {step}");
        if step % 6 == 5 {
            let r = t
                .dot(&["commit", "-m", &format!("step {step}"), "--json"])
                .ok();
            assert!(r.out.contains("\"pause_ms\""), "{}", r.out);
            commits.push((t.head("app").unwrap(), content(&plain)));
            assert!(t.dot(&["diff"]).ok().out.contains("no changes"));
        }
    }

    // Back to every commit, and forward again: no copy, same bytes.
    for (id, want) in commits.iter().rev() {
        t.dot(&["reset", "--hard", id]).ok();
        assert_eq!(&content(&dir), want, "at {id}");
    }
    let (last, want) = commits.last().unwrap();
    t.dot(&["reset", "--hard", last]).ok();
    assert_eq!(&content(&dir), want);
    let moves = t.dot(&["reflog", "--json"]).ok().json();
    assert_eq!(moves[0]["command"], format!("reset --hard {last}"));
    assert_eq!(moves[0]["new"].as_str(), Some(last.as_str()));

    // Branches: a new one takes what is uncommitted along; each branch
    // keeps its own uncommitted changes across switches.
    change(&dir, 0);
    t.dot(&["checkout", "-b", "exp"]).ok();
    commit(&t, "on exp");
    let on_exp = content(&dir);
    t.dot(&["checkout", "master"]).ok();
    assert_eq!(&content(&dir), want);
    change(&dir, 3);
    let master_dirty = content(&dir);
    t.dot(&["checkout", "exp"]).ok();
    assert_eq!(content(&dir), on_exp);
    change(&dir, 6);
    let exp_dirty = content(&dir);
    t.dot(&["checkout", "master"]).ok();
    assert_eq!(content(&dir), master_dirty);
    // What a branch keeps aside holds it where it is.
    let r = t.dot(&["unmount", "app"]).typed();
    assert_eq!(r.code, 4, "{}", r.err);
    assert!(r.err.contains("exp"), "{}", r.err);
    let r = t.dot(&["branch", "-d", "exp"]).typed();
    assert_eq!(r.code, 4, "{}", r.err);
    t.dot(&["checkout", "exp"]).ok();
    assert_eq!(content(&dir), exp_dirty);
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(content(&dir), on_exp);
    t.dot(&["checkout", "master"]).ok();
    assert_eq!(content(&dir), master_dirty);
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(&content(&dir), want);
    t.dot(&["checkout", "exp"]).ok();
    assert_eq!(content(&dir), on_exp);

    // A switch is refused while a file is open, naming who has it.
    let f = fs::File::open(dir.join("big")).unwrap();
    let r = t.dot(&["checkout", "master"]).typed();
    assert_eq!(r.code, 5, "{}", r.err);
    assert!(r.err.contains("--force"), "{}", r.err);
    drop(f);
    // A shell holding a file names the shell, not the dot it runs (which
    // inherited the descriptor).
    let mut sh = std::process::Command::new("sh");
    let asked = t.cmd(&["checkout", "master"]);
    sh.envs(asked.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg("-c")
        .arg(r#"exec 3<"$0"; echo "sh $$" >&2; "$@" & echo "dot $!" >&2; wait $!"#)
        .arg(dir.join("big"))
        .arg(util::dot_bin())
        .args(["checkout", "master"]);
    let out = sh.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = |who: &str| {
        err.lines()
            .find_map(|l| l.strip_prefix(who))
            .unwrap_or_else(|| panic!("no {who}pid in {err}"))
            .trim()
            .to_string()
    };
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains(&format!("pid {} (sh)", pid("sh "))), "{err}");
    assert!(!err.contains(&format!("pid {} ", pid("dot "))), "{err}");
    t.dot(&["checkout", "master"]).ok();

    // Unmounted, the same content is a plain directory again.
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(&content(&dir), want);
    let st = t.dot(&["status", "--json"]).ok().out;
    assert!(st.contains("\"working_state\": \"plain\""), "{st}");
    assert!(t.dot(&["diff"]).ok().out.contains("no changes"));
    t.fsck_ok();
}

/// A mounted commit holds writes only to freeze what shows: while it
/// builds that, data is written on (into files it holds, past their end,
/// into files copied up meanwhile), and changes of names wait. The commit
/// holds exactly what showed at the freeze; the mount shows everything,
/// and the next commit holds the rest.
#[test]
fn writes_go_on_while_a_mounted_commit_builds_what_showed_at_its_freeze() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("big"), &noise(3_000_000, 11));
    write(&dir.join("other"), &noise(500_000, 12));
    fs::create_dir(dir.join("sub")).unwrap();
    write(&dir.join("sub/kept"), b"kept\n");
    commit(&t, "one");
    t.dot(&["mount", "app"]).ok();
    // Changed before the freeze: a write, a new file, a removal, a
    // second name of a file.
    write_synced(&dir.join("big"), 100_000, &noise(10_000, 13));
    write(&dir.join("sub/new"), b"new before\n");
    fs::remove_file(dir.join("sub/kept")).unwrap();
    fs::hard_link(dir.join("big"), dir.join("sub/link")).unwrap();
    let at_freeze = snapshot(&dir);

    let committing = t
        .cmd(&["commit", "-m", "frozen", "--json"])
        .env("DOT_TEST_COMMIT_PAUSE_MS", "3000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // Data goes on at once: over what was written before the freeze,
    // elsewhere in the file, past its end, into a file not yet copied up.
    let quick = std::time::Instant::now();
    write_synced(&dir.join("big"), 105_000, &noise(20_000, 14));
    write_synced(&dir.join("big"), 2_000_000, &noise(5_000, 15));
    write_synced(&dir.join("big"), 3_000_000, &noise(70_000, 16));
    write_synced(&dir.join("other"), 4096, &noise(8192, 17));
    write_synced(&dir.join("sub/new"), 0, b"new after\n");
    assert!(
        quick.elapsed() < std::time::Duration::from_millis(1500),
        "writes waited {:?}",
        quick.elapsed()
    );
    // A new name waits for the commit.
    let made = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            write(&dir.join("sub/late"), b"late\n");
            std::time::Instant::now()
        })
    };
    let out = committing.wait_with_output().unwrap();
    let done = std::time::Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["frozen_ms"].as_u64().unwrap() >= 2000, "{r}");
    assert!(made.join().unwrap() + std::time::Duration::from_millis(100) >= done);
    let now = snapshot(&dir);

    // The commit holds what showed at the freeze.
    let view = t.tmp.path().join("view");
    t.dot(&["mount", "app@HEAD", "--at", view.to_str().unwrap()])
        .ok();
    assert_eq!(snapshot(&view), at_freeze);
    t.dot(&["unmount", view.to_str().unwrap()]).ok();
    // The mount shows everything, and says what the commit lacks.
    assert_eq!(snapshot(&dir), now);
    let diff = t.dot(&["diff", "-v"]).ok().out;
    for f in ["M big", "M other", "M sub/new", "A sub/late", "M sub/link"] {
        assert!(diff.contains(f), "{f} in {diff}");
    }
    assert!(!diff.contains("kept"), "{diff}");
    commit(&t, "after");
    assert!(t.dot(&["diff"]).ok().out.contains("no changes"));
    t.dot(&["mount", "app@HEAD", "--at", view.to_str().unwrap()])
        .ok();
    assert_eq!(snapshot(&view), now);
    t.dot(&["unmount", view.to_str().unwrap()]).ok();
    // Across a restart of the daemon and back to a plain directory.
    t.kill_daemon();
    t.restart_daemon();
    assert_eq!(snapshot(&dir), now);
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(snapshot(&dir), now);
    t.fsck_ok();
}

/// A switch returns before the kernel has dropped the cached pages of
/// what it changed (that costs milliseconds per 10 MiB cached); a file
/// opened meanwhile waits for its pages to go and shows the new content.
#[test]
fn a_switch_returns_before_cached_pages_are_dropped_and_an_open_waits_for_them() {
    let mut t = Env::plain();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    let one = noise(4_000_000, 5);
    write(&dir.join("big"), &one);
    let first = commit(&t, "one");
    // The daemon drops pages 3 s after each switch (debug builds).
    t.start_daemon_with(&[("DOT_TEST_DROP_PAUSE_MS", "3000")]);
    t.dot(&["mount", "app"]).ok();
    let mut two = one.clone();
    two[1_000_000..1_100_000].copy_from_slice(&noise(100_000, 6));
    fs::File::options()
        .write(true)
        .open(dir.join("big"))
        .unwrap()
        .write_all_at(&two[1_000_000..1_100_000], 1_000_000)
        .unwrap();
    let second = commit(&t, "two");
    // Every page of the file is in the kernel's cache.
    assert!(fs::read(dir.join("big")).unwrap() == two);

    let started = std::time::Instant::now();
    t.dot(&["reset", "--hard", &first]).ok();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(2500),
        "reset took {took:?}"
    );
    assert!(
        fs::read(dir.join("big")).unwrap() == one,
        "read before its pages went"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(3000));
    // And back, while the pages of the first switch may still be going.
    t.dot(&["reset", "--hard", &second]).ok();
    assert!(
        fs::read(dir.join("big")).unwrap() == two,
        "after switching back"
    );
    t.dot(&["unmount", "app"]).ok();
    t.fsck_ok();
}

/// A switch leaves the names of files no program has open to the same
/// later thread when the kernel's entries for them have lapsed (dropping
/// such an entry drops the file's cached pages inside the notification):
/// the kernel asks again before it uses a lapsed entry, so every name
/// shows the new state at once; entries it may still use without asking
/// go before the switch returns.
#[test]
fn names_a_switch_drops_later_show_the_new_state_at_once() {
    let mut t = Env::plain();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("kind"), b"a file first\n");
    write(&dir.join("kept"), b"kept\n");
    let first = commit(&t, "one");
    // The daemon's later thread waits 5 s after each switch (debug
    // builds).
    t.start_daemon_with(&[("DOT_TEST_DROP_PAUSE_MS", "5000")]);
    t.dot(&["mount", "app"]).ok();
    write(&dir.join("late"), &noise(2_000_000, 7));
    fs::remove_file(dir.join("kind")).unwrap();
    fs::create_dir(dir.join("kind")).unwrap();
    fs::create_dir(dir.join("gone")).unwrap();
    write(&dir.join("gone/child"), b"child\n");
    write(&dir.join("fresh"), b"fresh\n");
    for name in ["late", "kind", "gone", "gone/child", "fresh", "kept"] {
        fs::metadata(dir.join(name)).unwrap();
    }
    assert!(fs::read(dir.join("late")).unwrap().len() == 2_000_000);
    // Every entry but the last one looked up lapses.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    fs::metadata(dir.join("fresh")).unwrap();

    let names = || {
        let mut v: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let started = std::time::Instant::now();
    t.dot(&["reset", "--hard", &first]).ok();
    for name in ["late", "gone", "gone/child", "fresh"] {
        let r = fs::symlink_metadata(dir.join(name));
        assert!(r.is_err(), "{name} still shows after the reset");
    }
    assert_eq!(fs::read(dir.join("kind")).unwrap(), b"a file first\n");
    assert_eq!(fs::read(dir.join("kept")).unwrap(), b"kept\n");
    assert_eq!(names(), ["kept", "kind"]);
    // All of that before the later thread ran.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(5000),
        "checked too late: {:?}",
        started.elapsed()
    );
    write(&dir.join("late"), b"again\n");
    std::thread::sleep(std::time::Duration::from_millis(5500));
    assert_eq!(fs::read(dir.join("late")).unwrap(), b"again\n");
    assert_eq!(names(), ["kept", "kind", "late"]);
    t.dot(&["unmount", "app"]).ok();
    t.fsck_ok();
}

/// A sequential reader of a view gets the read-ahead the daemon asks
/// for (1 MiB), not the kernel's default for a FUSE mount (128 KiB).
#[cfg(target_os = "linux")]
#[test]
fn views_read_ahead_a_mebibyte() {
    use std::os::unix::fs::MetadataExt;
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"x");
    commit(&t, "one");
    let view = t.tmp.path().join("view");
    t.dot(&["mount", "app@HEAD", "--at", view.to_str().unwrap()])
        .ok();
    let dev = fs::metadata(&view).unwrap().dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let kb = fs::read_to_string(format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb"));
    assert_eq!(kb.unwrap().trim(), "1024");
    t.dot(&["unmount", view.to_str().unwrap()]).ok();
}

#[test]
fn what_was_fsynced_on_a_mount_survives_a_killed_daemon() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("big"), &noise(1_000_000, 3));
    commit(&t, "one");
    t.dot(&["mount", "app"]).ok();
    let data = noise(100_000, 4);
    write_synced(&dir.join("big"), 500_000, &data);
    write_synced(&dir.join("new"), 0, b"fsynced\n");
    let want = content(&dir);
    // Without its daemon the dot says what to do.
    t.kill_daemon();
    if !util::through_daemon() {
        let r = t.dot(&["commit", "-m", "x"]).typed();
        assert!(r.err.contains("dot daemon start"), "{}", r.err);
        // dot list still lists it, unread: what it holds is not known.
        let list = t.dot(&["list"]).ok().out;
        let row = list.lines().find(|l| l.contains(" app ")).unwrap();
        assert!(row.contains("mounted (no daemon"), "{list}");
        assert!(!row.contains(" 0 B "), "{list}");
        let json = t.dot(&["list", "--json"]).ok().json();
        assert_eq!(json[0]["unread"], true, "{json}");
    }
    t.restart_daemon();
    assert_eq!(content(&dir), want);
    commit(&t, "two");
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(content(&dir), want);
    t.fsck_ok();
}

/// A commit's freeze does not wait for an fsync in progress: the flush
/// (made 3 s slow here, as of a file with many dirty pages; a debug-build
/// hook) runs outside the barrier, so writes are held only for an
/// instant, and what the fsync covered is in the commit and survives a
/// killed daemon.
#[test]
fn a_commit_does_not_wait_for_an_fsync_in_progress() {
    let mut t = Env::plain();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("big"), &noise(1_000_000, 3));
    commit(&t, "one");
    t.start_daemon_with(&[("DOT_TEST_FLUSH_PAUSE_MS", "3000")]);
    t.dot(&["mount", "app"]).ok();
    let path = dir.join("big");
    let syncing = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        write_synced(&path, 500_000, &noise(100_000, 4));
        started.elapsed()
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = t.dot(&["commit", "-m", "two", "--json"]).ok().json();
    assert!(
        !syncing.is_finished(),
        "the fsync ended before the commit did: nothing was measured"
    );
    let pause = r["pause_ms"].as_u64().unwrap();
    assert!(pause < 1000, "writes were held {pause} ms: {r}");
    let synced = syncing.join().unwrap();
    assert!(synced.as_millis() >= 3000, "{synced:?}");
    // The write was acknowledged before the commit: it is in it.
    let d = t.dot(&["diff", "-v"]).ok().out;
    assert!(!d.contains("M big"), "{d}");
    let want = content(&dir);
    t.kill_daemon();
    t.restart_daemon();
    assert_eq!(content(&dir), want);
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(content(&dir), want);
    t.fsck_ok();
}

/// What `dot diff` lists, which must not change when a working state
/// moves between a plain directory and a mount (the bytes a commit would
/// add may: what the mount showed was stored).
fn diff_lines(t: &Env) -> String {
    let d = t.dot(&["diff", "app", "--json"]).ok().json();
    d["changes"].to_string()
}

#[test]
fn mount_and_unmount_carry_uncommitted_changes() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("big"), &noise(3_000_000, 9));
    write(&dir.join("small"), b"small\n");
    fs::create_dir_all(dir.join("d/e")).unwrap();
    write(&dir.join("d/e/deep"), b"deep\n");
    write(&dir.join("d/kept"), b"kept\n");
    commit(&t, "one");
    // Every kind of change a plain directory can hold.
    for step in 0..9 {
        change(&dir, step);
    }
    fs::remove_dir_all(dir.join("d/e")).unwrap();
    fs::set_permissions(dir.join("d"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::remove_file(dir.join("small")).ok();
    fs::create_dir(dir.join("small")).unwrap(); // a file became a directory
    write(&dir.join("small/inside"), b"inside\n");
    write(
        &dir.join(std::ffi::OsStr::from_bytes(b"name-\xff-not-utf8")),
        b"bytes\n",
    );
    rustix::fs::setxattr(
        dir.join("d/kept"),
        "user.note",
        b"an attribute",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let want = content(&dir);
    let want_diff = diff_lines(&t);
    assert!(want_diff.len() > 100, "{want_diff}");

    // Mounted: the same content, the same uncommitted changes.
    t.dot(&["mount", "app"]).ok();
    let st = t.dot(&["status", "--json"]).ok().json();
    assert_eq!(st["working_state"], "mounted");
    assert_eq!(content(&dir), want);
    assert_eq!(diff_lines(&t), want_diff);
    assert_eq!(xattr_of(&dir.join("d/kept"), "user.note"), b"an attribute");

    // Changed on the mount, then unmounted: a plain directory with the
    // same content and changes, which commits as one.
    change(&dir, 0);
    change(&dir, 1);
    let want = content(&dir);
    let want_diff = diff_lines(&t);
    let r = t.dot(&["rm", "-f", "app"]).typed();
    assert!(r.err.contains("unmount"), "{}", r.err);
    let f = fs::File::open(dir.join("big")).unwrap();
    let r = t.dot(&["unmount", "app"]).typed();
    assert_eq!(r.code, 5, "{}", r.err);
    drop(f);
    t.dot(&["unmount", "app"]).ok();
    let st = t.dot(&["status", "--json"]).ok().json();
    assert_eq!(st["working_state"], "plain");
    assert_eq!(content(&dir), want);
    assert_eq!(diff_lines(&t), want_diff);
    assert_eq!(xattr_of(&dir.join("d/kept"), "user.note"), b"an attribute");
    let r = t.dot(&["unmount", "app"]).typed();
    assert!(r.err.contains("not mounted"), "{}", r.err);
    commit(&t, "two");
    assert_eq!(diff_lines(&t), "[]");
    // And round again, clean: nothing to carry.
    t.dot(&["mount", "app"]).ok();
    assert_eq!(content(&dir), want);
    assert_eq!(diff_lines(&t), "[]");
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(content(&dir), want);
    t.fsck_ok();
}

#[test]
fn a_never_committed_dot_is_mounted_and_unmounted_with_its_files() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("f"), b"before any commit\n");
    t.dot(&["mount", "app"]).ok();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"before any commit\n");
    write(&dir.join("g"), b"on the mount\n");
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(fs::read(dir.join("g")).unwrap(), b"on the mount\n");
    assert_eq!(t.commits("app"), 0);
    commit(&t, "one");
    t.fsck_ok();
}

#[test]
fn init_and_clone_make_mounted_dots() {
    let t = Env::new();
    let r = t.dot(&["init", "app", "--mount"]).ok();
    assert!(r.out.contains("is mounted at"), "{}", r.out);
    let dir = t.path("app");
    write(&dir.join("f"), b"on a new mount\n");
    commit(&t, "one");
    let remote = t.tmp.path().join("remote");
    t.dot(&["remote", "add", "hub", remote.to_str().unwrap()])
        .ok();
    t.dot(&["push", "hub", "app"]).ok();
    let r = t
        .dot(&["clone", "hub", "app", "--local-name", "copy", "--mount"])
        .ok();
    assert!(
        r.out.contains("cloned") && r.out.contains("is mounted at"),
        "{}",
        r.out
    );
    let st = t.dot(&["status", "copy", "--json"]).ok().json();
    assert_eq!(st["working_state"], "mounted");
    assert_eq!(
        fs::read(t.path("copy").join("f")).unwrap(),
        b"on a new mount\n"
    );
    t.dot(&["unmount", "copy"]).ok();
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(
        fs::read(t.path("copy").join("f")).unwrap(),
        b"on a new mount\n"
    );
}

#[test]
fn pull_into_a_mounted_dot_shows_what_it_fetched() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("f"), b"one\n");
    commit(&t, "one");
    let remote = t.tmp.path().join("remote");
    t.dot(&["remote", "add", "hub", remote.to_str().unwrap()])
        .ok();
    t.dot(&["push", "hub", "app"]).ok();
    t.dot(&["clone", "hub", "app", "--local-name", "copy", "--mount"])
        .ok();
    let copy = t.path("copy");
    let seen = fs::read(copy.join("f")).unwrap(); // cached by the kernel
    assert_eq!(seen, b"one\n");

    write(&dir.join("f"), b"two\n");
    write(&dir.join("g"), b"new\n");
    t.dot(&["commit", "-m", "two", "app"]).ok();
    t.dot(&["push", "hub", "app"]).ok();
    // Refused while a file is open, or something is uncommitted.
    let open = fs::File::open(copy.join("f")).unwrap();
    let r = t.dot(&["pull", "hub", "copy"]).typed();
    assert_eq!(r.code, 5, "{}", r.err);
    drop(open);
    write(&copy.join("local"), b"uncommitted\n");
    let r = t.dot(&["pull", "hub", "copy"]).typed();
    assert_eq!(r.code, 4, "{}", r.err);
    fs::remove_file(copy.join("local")).unwrap();

    t.dot(&["pull", "hub", "copy"]).ok();
    assert_eq!(t.head("copy"), t.head("app"));
    let moves = t.dot(&["reflog", "copy", "--json"]).ok().json();
    let commands: Vec<&str> = moves
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["command"].as_str().unwrap())
        .collect();
    assert_eq!(commands, ["pull hub app master", "clone hub app master"]);
    assert_eq!(fs::read(copy.join("f")).unwrap(), b"two\n");
    assert_eq!(fs::read(copy.join("g")).unwrap(), b"new\n");
    let st = t.dot(&["status", "copy", "--json"]).ok().json();
    assert_eq!(st["working_state"], "mounted");
    assert_eq!(st["clean"], true);
    t.dot(&["unmount", "copy"]).ok();
    assert_eq!(fs::read(copy.join("g")).unwrap(), b"new\n");
    t.fsck_ok();
}

/// SQLite in WAL mode writing transactions on a mounted dot while it is
/// committed: every commit passes integrity_check and holds only whole
/// transactions.
#[test]
fn sqlite_in_wal_mode_is_committed_while_it_writes() {
    let t = Env::new();
    t.dot(&["init", "app", "--mount"]).ok();
    let dir = t.path("app");
    let db = dir.join("app.db");
    let stop = t.tmp.path().join("stop");
    let writer = r#"
import os, sqlite3, sys
db, stop = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS batches (n INTEGER PRIMARY KEY)")
c.execute("CREATE TABLE IF NOT EXISTS rows (batch INTEGER, v BLOB)")
n = 0
while not os.path.exists(stop):
    n += 1
    c.execute("BEGIN")
    c.executemany("INSERT INTO rows VALUES (?, randomblob(300))", [(n,)] * 50)
    c.execute("INSERT INTO batches VALUES (?)", (n,))
    c.execute("COMMIT")
print(n)
"#;
    let child = std::process::Command::new("python3")
        .args(["-c", writer, db.to_str().unwrap(), stop.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut commits = Vec::new();
    for i in 0..4 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let r = t
            .dot(&["commit", "-m", &format!("live {i}"), "--json"])
            .ok()
            .json();
        commits.push(r["commit"].as_str().unwrap().to_string());
    }
    fs::write(&stop, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let written: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let query = |sql: &str| {
        let r = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(sql)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        String::from_utf8_lossy(&r.stdout).trim().to_string()
    };
    let mut seen = Vec::new();
    for id in &commits {
        t.dot(&["reset", "--hard", id]).ok();
        assert_eq!(query("PRAGMA integrity_check"), "ok", "at {id}");
        // Whole transactions only: every batch has its 50 rows.
        let batches: u64 = query("SELECT count(*) FROM batches").parse().unwrap();
        let rows: u64 = query("SELECT count(*) FROM rows").parse().unwrap();
        assert_eq!(rows, batches * 50, "at {id}");
        seen.push(batches);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(*seen.last().unwrap() <= written);
    assert!(*seen.last().unwrap() > 0, "{seen:?}");
}

/// Flips one byte in the records of the largest pack of `t`'s store.
fn damage_largest_pack(t: &Env) {
    let mut packs: Vec<_> = fs::read_dir(t.home.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(packs.last().unwrap())
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100_000).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 100_000).unwrap();
}

/// A damaged chunk read through a mount fails the read with EIO, never
/// wrong bytes, and the daemon's log says what is damaged and what to run.
#[test]
fn a_damaged_chunk_reads_as_an_error_through_a_mount() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("data"), &noise(1_000_000, 1));
    commit(&t, "one");
    write(&dir.join("small"), b"intact\n");
    commit(&t, "two");
    t.dot(&["mount", "app"]).ok();
    damage_largest_pack(&t);
    let err = fs::read(dir.join("data")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(dir.join("small")).unwrap(), b"intact\n");
    let log = fs::read_to_string(t.home.join("daemon.log")).unwrap();
    assert!(
        log.contains("damaged") && log.contains("dot fsck"),
        "the log must name the damage: {log}"
    );
}

/// A small tmpfs mounted (as root) at `at` for the life of the value.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        assert!(util::is_root(), "mounting a small tmpfs needs root");
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// On a full disk a write to the mount fails with ENOSPC; what was there
/// stays, and once space is freed writes and commits work again.
#[test]
fn a_full_disk_fails_writes_on_a_mount_and_loses_nothing() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    let kept = noise(300_000, 1);
    write(&dir.join("kept"), &kept);
    commit(&t, "one");
    // The overlays live on a disk of 8 MiB.
    let _disk = Tmpfs::mount(&t.home.join("overlay"), "8m");
    t.dot(&["mount", "app"]).ok();
    let page = noise(8192, 2);
    write_synced(&dir.join("kept"), 4096, &page);
    let mut want = kept.clone();
    want[4096..4096 + 8192].copy_from_slice(&page);

    let mut big = fs::File::create(dir.join("big")).unwrap();
    let block = noise(1 << 20, 3);
    let err = (0..32)
        .find_map(|_| std::io::Write::write_all(&mut big, &block).err())
        .expect("the disk fills up");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(big);
    assert_eq!(fs::read(dir.join("kept")).unwrap(), want);

    fs::remove_file(dir.join("big")).unwrap();
    write(&dir.join("after"), b"space again\n");
    commit(&t, "two");
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(fs::read(dir.join("kept")).unwrap(), want);
    assert_eq!(fs::read(dir.join("after")).unwrap(), b"space again\n");
    assert!(!dir.join("big").exists());
    t.fsck_ok();
}

/// Runs fio in `dir` with `args`, failing the test with its output.
fn fio(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("fio")
        .arg(format!("--directory={}", dir.display()))
        .args(args)
        .output()
        .expect("fio runs (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "fio {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// fio's own verification on a mount: random writes, buffered and
/// O_DIRECT, with fsyncs, each block checked as it is read back; then
/// committed, reset to and verified again from the store.
#[test]
fn fio_verifies_what_it_wrote_on_a_mount() {
    let t = Env::new();
    t.dot(&["init", "app", "--mount"]).ok();
    let dir = t.path("app");
    let job = |direct: &str| {
        vec![
            "--name=verify".to_string(),
            "--rw=randwrite".into(),
            "--bs=4k".into(),
            "--size=24m".into(),
            "--numjobs=2".into(),
            "--ioengine=psync".into(),
            "--fsync=64".into(),
            format!("--direct={direct}"),
            "--verify=crc32c".into(),
            "--verify_fatal=1".into(),
            "--verify_state_save=0".into(),
        ]
    };
    for direct in ["0", "1"] {
        let args = job(direct);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fio(&dir, &args);
    }
    commit(&t, "fio");
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    // The files as committed: read back and checked once more.
    let mut args = job("0");
    args.push("--verify_only".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fio(&dir, &args);
    t.dot(&["unmount", "app"]).ok();
    t.fsck_ok();
}

/// kill -9 of the daemon in the middle of a mounted commit, before its
/// commit point and after it (before the overlay is emptied): after a
/// restart the mount shows every fsynced write, the branch is where the
/// commit point left it, and committing again works.
#[test]
fn a_daemon_killed_during_a_mounted_commit_loses_nothing() {
    for (pause, committed) in [
        ("DOT_TEST_COMMIT_PAUSE_MS", false),
        ("DOT_TEST_REBASE_PAUSE_MS", true),
    ] {
        let t = Env::new();
        t.dot(&["init", "app"]).ok();
        let dir = t.path("app");
        write(&dir.join("big"), &noise(2_000_000, 1));
        let before = commit(&t, "one");
        t.dot(&["mount", "app"]).ok();
        write_synced(&dir.join("big"), 700_000, &noise(50_000, 2));
        write_synced(&dir.join("new"), 0, b"fsynced\n");
        let want = content(&dir);
        let committing = t
            .cmd(&["commit", "-m", "killed"])
            .env(pause, "5000")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The commit reaches its pause (its passes are quick here).
        std::thread::sleep(std::time::Duration::from_millis(1500));
        t.kill_daemon();
        let out = committing.wait_with_output().unwrap();
        // The daemon died under it: the commit never answered.
        assert!(!out.status.success(), "{pause}");
        t.restart_daemon();
        assert_eq!(content(&dir), want, "{pause}");
        let head = t.head("app").unwrap();
        if committed {
            // The commit point was passed: the branch has the commit,
            // and the old overlay over it shows the same content.
            assert_ne!(head, before, "{pause}");
            assert!(t.dot(&["diff"]).ok().out.contains("no changes"), "{pause}");
        } else {
            assert_eq!(head, before, "{pause}");
        }
        commit(&t, "again");
        t.dot(&["reset", "--hard", "HEAD"]).ok();
        assert_eq!(content(&dir), want, "{pause}");
        t.dot(&["unmount", "app"]).ok();
        assert_eq!(content(&dir), want, "{pause}");
        t.fsck_ok();
    }
}

/// A capability set (CAP_NET_RAW, effective) as `security.capability`
/// holds it: revision 2, little-endian.
const NET_RAW_CAPS: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn caps_of(path: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(path, "security.capability", &mut buf).ok()?;
    Some(buf[..n].to_vec())
}

#[test]
fn set_id_bits_and_capabilities_drop_on_a_mount_as_on_a_local_filesystem() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    assert!(util::is_root(), "writing as another user needs root");
    let t = Env::new();
    t.dot(&["init", "app", "--mount"]).ok();
    let mount = t.path("app");
    let local = t.tmp.path().join("local");
    fs::create_dir(&local).unwrap();
    for p in [
        t.tmp.path(),
        &t.home,
        &t.home.join("work"),
        &t.home.join("work/app"),
    ] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    // (file, its mode, run as nobody (no CAP_FSETID) or as root, command)
    let cases: &[(&str, u32, bool, &str)] = &[
        ("write", 0o6777, true, "printf x >> \"$1\""),
        ("write-locking", 0o2666, true, "printf x >> \"$1\""),
        ("write-as-root", 0o6777, false, "printf x >> \"$1\""),
        ("truncate", 0o6777, true, "truncate -s 1 \"$1\""),
        ("truncate-as-root", 0o6777, false, "truncate -s 1 \"$1\""),
        (
            "truncate-without-fsetid",
            0o6777,
            false,
            "setpriv --bounding-set -fsetid --inh-caps -fsetid -- truncate -s 1 \"$1\"",
        ),
        (
            "fallocate-without-fsetid",
            0o6777,
            false,
            "setpriv --bounding-set -fsetid --inh-caps -fsetid -- fallocate -l 8192 \"$1\"",
        ),
        ("fallocate", 0o6777, true, "fallocate -l 8192 \"$1\""),
        ("chown", 0o6777, false, "chown 65534 \"$1\""),
        ("caps", 0o755, false, "printf x >> \"$1\""),
    ];
    for dir in [&local, &mount] {
        for (name, mode, _, _) in cases {
            let f = dir.join(name);
            write(&f, b"abc");
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let f = dir.join("caps");
        rustix::fs::setxattr(
            &f,
            "security.capability",
            &NET_RAW_CAPS,
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert!(caps_of(&f).is_some());
    }
    // A set-group-ID directory of group nobody.
    for dir in [&local, &mount] {
        let shared = dir.join("shared");
        fs::create_dir(&shared).unwrap();
        std::os::unix::fs::chown(&shared, None, Some(65534)).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o2775)).unwrap();
    }
    // The mount's files come from the store, copied up by the change.
    commit(&t, "files with set-ID bits");
    for dir in [&local, &mount] {
        for (name, _, nobody, script) in cases {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", script, "sh"]).arg(dir.join(name));
            if *nobody {
                cmd.uid(65534).gid(65534);
            }
            assert!(cmd.status().unwrap().success(), "{name} in {dir:?}");
        }
    }
    // What is made in it takes its group; a directory, its bit too.
    for dir in [&local, &mount] {
        fs::create_dir(dir.join("shared/sub")).unwrap();
        write(&dir.join("shared/f"), b"made in a set-group-ID directory");
        std::os::unix::fs::symlink("f", dir.join("shared/l")).unwrap();
    }
    let made = ["shared", "shared/sub", "shared/f", "shared/l"];
    for name in cases.iter().map(|c| c.0).chain(made) {
        let (l, m) = (local.join(name), mount.join(name));
        let (lm, mm) = (
            fs::symlink_metadata(&l).unwrap(),
            fs::symlink_metadata(&m).unwrap(),
        );
        assert_eq!(
            format!("{:o} {}:{}", mm.mode(), mm.uid(), mm.gid()),
            format!("{:o} {}:{}", lm.mode(), lm.uid(), lm.gid()),
            "{name}: the mount's mode and owner against the local file's"
        );
        assert_eq!(caps_of(&m), caps_of(&l), "{name}");
    }
    assert_eq!(
        fs::metadata(mount.join("shared/sub")).unwrap().mode() & 0o2000,
        0o2000
    );
    assert_eq!(caps_of(&local.join("caps")), None);
    // What a commit holds is what the mount shows.
    let shown = snapshot(&mount);
    commit(&t, "after");
    t.dot(&["unmount", "app"]).ok();
    assert_eq!(snapshot(&t.path("app")), shown);
}

/// What a program sees through descriptors of files whose names go while
/// they are open, in `dir`: a new file and a committed one removed, and
/// a committed one replaced by a rename.
fn use_after_removal(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut seen = Vec::new();
    let mut see = |what: &str, r: std::io::Result<String>| {
        seen.push(format!(
            "{what}: {}",
            r.unwrap_or_else(|e| format!("error {e}"))
        ))
    };
    let read = |f: &fs::File| -> std::io::Result<String> {
        let mut buf = vec![0u8; 64];
        let n = f.read_at(&mut buf, 0)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let stat = |f: &fs::File| -> std::io::Result<String> {
        let m = f.metadata()?;
        Ok(format!(
            "size {} links {} mode {:o}",
            m.len(),
            m.nlink(),
            m.mode()
        ))
    };

    let new = fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join("scratch"))
        .unwrap();
    new.write_all_at(b"before", 0).unwrap();
    fs::remove_file(dir.join("scratch")).unwrap();
    see(
        "write",
        new.write_all_at(b" after", 6).map(|()| String::new()),
    );
    see("read", read(&new));
    see("stat", stat(&new));
    see("truncate", new.set_len(3).map(|()| String::new()));
    see("read", read(&new));
    see("fsync", new.sync_all().map(|()| String::new()));
    see(
        "chmod",
        new.set_permissions(fs::Permissions::from_mode(0o640))
            .map(|()| String::new()),
    );
    see("stat", stat(&new));
    see("name", Ok(dir.join("scratch").exists().to_string()));
    drop(new);

    let base = fs::File::options()
        .read(true)
        .write(true)
        .open(dir.join("committed"))
        .unwrap();
    fs::remove_file(dir.join("committed")).unwrap();
    see("read", read(&base));
    see("write", base.write_all_at(b"X", 0).map(|()| String::new()));
    see("read", read(&base));
    see("stat", stat(&base));
    drop(base);

    let old = fs::File::open(dir.join("replaced")).unwrap();
    write(&dir.join("replacement"), b"the new one\n");
    fs::rename(dir.join("replacement"), dir.join("replaced")).unwrap();
    see("read", read(&old));
    see("by name", fs::read_to_string(dir.join("replaced")));
    drop(old);
    seen
}

/// A file removed while open reads from the commit it was copied up
/// over; gc keeps that commit's contents while the file is open, even
/// when nothing else reaches them any more.
#[cfg(target_os = "linux")]
#[test]
fn gc_keeps_what_a_file_removed_while_open_still_shows() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    write(&t.path("app").join("f"), b"first\n");
    commit(&t, "first");
    let gone = noise(3 << 20, 4);
    write(&t.path("app").join("f"), &gone);
    commit(&t, "second");
    t.dot(&["mount", "app"]).ok();
    let mount = t.path("app");
    let open = fs::File::open(mount.join("f")).unwrap();
    fs::remove_file(mount.join("f")).unwrap();
    // Neither a branch nor the reflog (--prune=now) reaches the second
    // commit any more; only the open file shows it.
    t.dot(&["reset", "--hard", "--force", "HEAD~1"]).ok();
    t.dot(&["gc", "--prune=now"]).ok();
    let mut got = vec![0u8; gone.len()];
    open.read_exact_at(&mut got, 0).unwrap();
    assert!(got == gone, "the removed file reads other bytes");
    drop(open);
    t.fsck_ok();
}

#[test]
fn a_file_removed_while_open_stays_usable_until_it_is_closed() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let mount = t.path("app");
    let local = t.tmp.path().join("local");
    fs::create_dir(&local).unwrap();
    for dir in [&local, &mount] {
        write(&dir.join("committed"), b"committed content\n");
        write(&dir.join("replaced"), b"the old one\n");
    }
    commit(&t, "files");
    t.dot(&["mount", "app"]).ok();
    let want = use_after_removal(&local);
    assert_eq!(use_after_removal(&mount), want);
    let orphans = t.home.join("overlay/app/orphans");
    // The kernel tells the daemon of a last close after close returns.
    let kept = || fs::read_dir(&orphans).unwrap().count();
    let started = std::time::Instant::now();
    while kept() > 0 && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(kept(), 0, "kept after close");

    // A commit while a removed file is open does not have it.
    let open = fs::File::open(mount.join("replaced")).unwrap();
    fs::remove_file(mount.join("replaced")).unwrap();
    commit(&t, "removed");
    let mut buf = [0u8; 11];
    open.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"the new one");
    assert_eq!(kept(), 1);
    // A daemon that starts again keeps none: no program has them open.
    drop(open);
    t.kill_daemon();
    fs::write(orphans.join("99"), b"left by a killed daemon").unwrap();
    t.restart_daemon();
    assert_eq!(kept(), 0);
    t.dot(&["unmount", "app"]).ok();
    let names: Vec<_> = fs::read_dir(t.path("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "{names:?}");
    t.fsck_ok();
}
