//! A lost or damaged index: `dot fsck --repair` rebuilds it from the packs
//! and the state log, and every branch, commit, reflog entry, dot
//! configuration, remote and upstream comes back.

mod util;

use std::fs;
use std::path::Path;

use util::{noise, write, Env};

/// A home with several dots and everything repair must bring back: two
/// branches, a reset-away commit only the reflog names, subdots, an
/// adopted directory, custom chunk sizes, a remote with an upstream,
/// user and dot settings.
fn populated() -> Env {
    let t = Env::new();
    t.dot(&["init", "app", "--chunk-avg", "32768"]).ok();
    let app = t.path("app");
    write(&app.join("a"), b"first\n");
    t.dot(&["commit", "-m", "one"]).ok();
    write(&app.join("big"), &noise(400_000, 1));
    t.dot(&["commit", "-m", "two"]).ok();
    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    t.dot(&["checkout", "-b", "exp"]).ok();
    write(&app.join("e"), b"on exp\n");
    t.dot(&["commit", "-m", "three"]).ok();

    t.dot(&["init", "shop.orders"]).ok();
    t.dot(&["init", "shop.catalog"]).ok();
    write(&t.path("shop.orders").join("o"), &noise(100_000, 2));
    write(&t.path("shop.catalog").join("c"), b"catalog\n");
    t.dot(&["commit", "-m", "shop"]).ok();

    let own = t.tmp.path().join("own");
    fs::create_dir(&own).unwrap();
    write(&own.join("mine"), b"adopted\n");
    t.dot(&["init", "own", "--path", own.to_str().unwrap()])
        .ok();
    t.dot(&["commit", "-m", "adopted"]).ok();

    let remote = t.tmp.path().join("remote");
    t.dot(&["remote", "add", "origin", remote.to_str().unwrap()])
        .ok();
    t.dot(&["push", "origin", "own"]).ok();
    t.dot(&["config", "user.name", "Repair Tester"]).ok();
    t.dot(&["config", "--dot", "app", "allowSpecialFiles", "true"])
        .ok();
    t.dot(&["switch", "app"]).ok();
    t
}

/// What a user sees of the home, command by command.
fn observed(t: &Env) -> Vec<String> {
    let mut seen = Vec::new();
    let mut see = |args: &[&str]| {
        let r = t.dot(args).ok();
        seen.push(format!("dot {}:\n{}", args.join(" "), r.out));
    };
    see(&["list", "--json"]);
    for dot in ["app", "shop", "own"] {
        see(&["branch", dot]);
        see(&["log", "--json", dot]);
        see(&["reflog", "--json", dot]);
        see(&["status", dot]);
    }
    see(&["remote"]);
    see(&["config", "user.name"]);
    see(&["config", "--dot", "app", "allowSpecialFiles"]);
    see(&["path", "own"]);
    see(&["path", "shop.catalog"]);
    seen
}

/// Every branch's content, materialized by checking each branch out in
/// turn (and back).
fn check_content(t: &Env) {
    let app = t.path("app");
    t.dot(&["checkout", "master", "app"]).ok();
    assert_eq!(fs::read(app.join("a")).unwrap(), b"first\n");
    assert!(!app.join("e").exists());
    t.dot(&["checkout", "exp", "app"]).ok();
    assert_eq!(fs::read(app.join("e")).unwrap(), b"on exp\n");
    // The commit a reset left behind, which only the reflog names.
    let moves = t.dot(&["reflog", "--json", "app"]).ok().json();
    let two = moves
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["command"] == "commit: two")
        .unwrap()["new"]
        .as_str()
        .unwrap()
        .to_string();
    t.dot(&["reset", "--hard", &two, "app"]).ok();
    assert_eq!(fs::read(app.join("big")).unwrap(), noise(400_000, 1));
    fs::remove_dir_all(t.path("shop.orders")).unwrap();
    t.dot(&["reset", "--hard", "HEAD", "shop"]).ok();
    assert_eq!(
        fs::read(t.path("shop.orders").join("o")).unwrap(),
        noise(100_000, 2)
    );
    // The upstream came back: push knows where own goes.
    write(&t.path("own").join("more"), b"more\n");
    t.dot(&["commit", "-m", "more", "own"]).ok();
    t.dot(&["switch", "own"]).ok();
    t.dot(&["push"]).ok();
    t.dot(&["switch", "app"]).ok();
    t.fsck_ok();
}

/// The daemon (in the suite's daemon pass) must let go of the store
/// before the index is damaged and repaired.
fn stop_daemon(t: &mut Env) {
    if t.daemon {
        t.dot(&["daemon", "stop"]).ok();
        t.daemon = false;
    }
}

fn repair_and_check(t: &Env, before: &[String]) {
    let r = t.dot(&["fsck", "--repair"]).ok();
    assert!(r.out.contains("Rebuilt the index"), "{}", r.out);
    assert!(r.out.contains("ok: "), "{}", r.out);
    assert_eq!(observed(t), before);
    check_content(t);
}

#[test]
fn a_deleted_index_is_rebuilt_with_every_branch_and_setting() {
    let mut t = populated();
    let before = observed(&t);
    stop_daemon(&mut t);
    fs::remove_dir_all(t.home.join("index")).unwrap();

    // Commands say what to do instead of starting over with an empty
    // store.
    for args in [&["list"][..], &["log"], &["commit", "-m", "x"], &["gc"]] {
        let r = t.dot(args).typed();
        assert!(r.err.contains("dot fsck --repair"), "{args:?}: {}", r.err);
    }
    assert!(!t.home.join("index").exists());
    repair_and_check(&t, &before);
}

#[test]
fn a_damaged_index_is_rebuilt_and_kept_aside() {
    let mut t = populated();
    let before = observed(&t);
    stop_daemon(&mut t);
    let index = t.home.join("index");
    damage_every_table(&index);
    let r = t.dot(&["list"]).typed();
    assert!(r.err.contains("dot fsck --repair"), "{}", r.err);

    let r = t.dot(&["fsck", "--repair", "--json"]).ok().json();
    let kept = r["repair"]["old_index"].as_str().unwrap().to_string();
    assert!(Path::new(&kept).join("CURRENT").exists(), "{kept}");
    assert!(r["repair"]["state_log"].as_bool().unwrap());
    assert!(r["fsck"]["errors"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(observed(&t), before);
    check_content(&t);
    // A second repair of a healthy index changes nothing a user sees,
    // and in the same second as an earlier one (names taken for the next
    // few seconds here) keeps the index it replaces beside the others.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for s in now..now + 5 {
        let taken = t.home.join(format!("index.damaged-{s}"));
        if !taken.exists() {
            fs::create_dir(&taken).unwrap();
            fs::write(taken.join("CURRENT"), b"taken\n").unwrap();
        }
    }
    let before = observed(&t);
    let r = t.dot(&["fsck", "--repair", "--json"]).ok().json();
    let again = r["repair"]["old_index"].as_str().unwrap().to_string();
    assert!(again.ends_with("-1"), "{again}");
    assert!(Path::new(&again).join("CURRENT").exists(), "{again}");
    assert!(Path::new(&kept).join("CURRENT").exists(), "{kept}");
    assert_eq!(observed(&t), before);
}

/// Garbage in the middle of the manifest and of every table and log.
fn damage_every_table(index: &Path) {
    for entry in fs::read_dir(index).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !(name.starts_with("MANIFEST") || name.ends_with(".sst") || name.ends_with(".log")) {
            continue;
        }
        let mut bytes = fs::read(&path).unwrap();
        if bytes.len() < 64 {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid..mid + 16].copy_from_slice(b"garbage garbage!");
        fs::write(&path, bytes).unwrap();
    }
}

#[test]
fn repair_is_refused_while_a_daemon_serves_the_home() {
    let mut t = Env::plain();
    t.dot(&["init", "app"]).ok();
    t.start_daemon();
    let r = t.dot(&["fsck", "--repair"]).typed();
    assert!(r.err.contains("dot daemon stop"), "{}", r.err);
    t.dot(&["daemon", "stop"]).ok();
    t.daemon = false;
    t.dot(&["fsck", "--repair"]).ok();
}
