//! The walkthroughs of the issue, run through the real `dot` binary.

mod util;

use std::fs;
use util::{noise, read, write, Env};

#[test]
fn dvol_style_walkthrough() {
    let t = Env::new();
    t.dot(&["init", "frob_mysql"]).ok();
    let dir = t.path("frob_mysql");
    assert!(dir.is_dir());
    write(&dir.join("file"), b"hello\n");
    let id = t
        .dot(&["commit", "-m", "added hello", "frob_mysql"])
        .ok()
        .out
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "commit prints the new id: {id:?}");
    write(&dir.join("file"), b"world\n");

    let diff = t.dot(&["diff"]).ok().out;
    assert!(diff.contains("1 modified"), "{diff}");
    let diff = t.dot(&["diff", "-v"]).ok().out;
    assert!(diff.lines().any(|l| l == "M file"), "{diff}");

    t.dot(&["reset", "--hard", "HEAD", "frob_mysql"]).ok();
    assert_eq!(read(&dir.join("file")), "hello\n");
    assert!(t.dot(&["diff"]).ok().out.contains("no changes"));

    let log = t.dot(&["log"]).ok().out;
    assert!(
        log.starts_with(&format!(
            "commit {id}\nAuthor: Test Author <test@example.com>\nDate:   "
        )),
        "{log}"
    );
    assert!(log.contains("\n    added hello\n"), "{log}");

    // Refused while there are uncommitted changes, with a clear message.
    write(&dir.join("extra"), b"x");
    let r = t.dot(&["checkout", "-b", "schema-tweaks"]).fails();
    assert!(
        r.err.contains("uncommitted") && r.err.contains("dot reset --hard HEAD"),
        "{}",
        r.err
    );
    fs::remove_file(dir.join("extra")).unwrap();

    t.dot(&["checkout", "-b", "schema-tweaks"]).ok();
    write(&dir.join("file"), b"tweaked\n");
    fs::create_dir(dir.join("new-dir")).unwrap();
    t.dot(&["commit", "-m", "tweak"]).ok();
    let branches = t.dot(&["branch"]).ok().out;
    assert_eq!(branches, "  master\n* schema-tweaks\n");

    t.dot(&["checkout", "master"]).ok();
    assert_eq!(read(&dir.join("file")), "hello\n");
    assert!(!dir.join("new-dir").exists());
    t.dot(&["checkout", "schema-tweaks"]).ok();
    assert_eq!(read(&dir.join("file")), "tweaked\n");
    assert!(dir.join("new-dir").is_dir());
    t.dot(&["checkout", "master"]).ok();

    t.dot(&["init", "other"]).ok();
    let list = t.dot(&["list"]).ok().out;
    let lines: Vec<&str> = list.lines().collect();
    assert!(
        lines[0].contains("DOT")
            && lines[0].contains("BRANCH")
            && lines[0].contains("SIZE")
            && lines[0].contains("COMMITS")
            && lines[0].contains("DIRTY"),
        "{list}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('*') && l.contains("other")),
        "{list}"
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.starts_with('*') && l.contains("frob_mysql") && l.contains("master")),
        "{list}"
    );

    t.dot(&["switch", "frob_mysql"]).ok();
    let list = t.dot(&["ls", "--json"]).ok().json();
    let frob = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "frob_mysql")
        .unwrap();
    assert_eq!(frob["current"], true);
    assert_eq!(frob["commits"], 1);
    assert_eq!(frob["dirty"], false);

    // Without -f and without a terminal to ask on, rm refuses.
    t.dot(&["rm", "frob_mysql"]).fails();
    assert!(dir.exists());
    t.dot(&["rm", "-f", "frob_mysql"]).ok();
    assert!(!dir.exists());
    t.dot(&["path", "frob_mysql"]).fails();
    let list = t.dot(&["list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    t.fsck_ok();
}

#[test]
fn rm_asks_for_confirmation_on_a_terminal_answer() {
    // `script` gives dot a terminal as stdin, so it asks; "n" keeps the dot.
    let t = Env::new();
    t.dot(&["init", "keep"]).ok();
    let script = format!(
        "echo n | DOT_HOME={} script -qec '{} rm keep' /dev/null",
        t.home.display(),
        util::dot_bin().display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    if out.status.code() == Some(127) {
        panic!("the `script` command (util-linux) is needed for this test");
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[y/N]"),
        "{:?}",
        out
    );
    t.dot(&["path", "keep"]).ok();
}

#[test]
fn subdots_are_committed_reset_and_checked_out_together() {
    let t = Env::new();
    t.dot(&["init", "myapp.orders-db"]).ok();
    t.dot(&["init", "myapp.catalog-db"]).ok();
    let orders = t.path("myapp.orders-db");
    let catalog = t.path("myapp.catalog-db");
    assert_ne!(orders, catalog);
    let r = t.dot(&["path", "myapp"]).fails();
    assert!(
        r.err.contains("myapp.catalog-db") || r.err.contains("name one"),
        "{}",
        r.err
    );

    write(&orders.join("orders"), b"1 order");
    write(&catalog.join("catalog"), b"1 item");
    t.dot(&["commit", "-m", "one"]).ok();
    write(&orders.join("orders"), b"2 orders");
    write(&catalog.join("catalog"), b"2 items");
    t.dot(&["commit", "-m", "two"]).ok();
    assert_eq!(t.commits("myapp"), 2);

    write(&orders.join("orders"), b"junk");
    let diff = t.dot(&["diff", "-v"]).ok().out;
    assert!(diff.contains("M orders-db/orders"), "{diff}");

    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    assert_eq!(read(&orders.join("orders")), "1 order");
    assert_eq!(read(&catalog.join("catalog")), "1 item");

    t.dot(&["checkout", "-b", "exp", "myapp"]).ok();
    write(&catalog.join("catalog"), b"experiment");
    t.dot(&["commit", "-m", "exp", "myapp"]).ok();
    t.dot(&["checkout", "master", "myapp"]).ok();
    assert_eq!(read(&catalog.join("catalog")), "1 item");
    t.fsck_ok();
}

#[test]
fn metadata_author_and_json() {
    let t = Env::new();
    t.dot(&["init", "meta"]).ok();
    t.dot(&["config", "user.name", "Ada Lovelace"]).ok();
    t.dot(&["config", "user.email", "ada@example.com"]).ok();
    assert_eq!(t.dot(&["config", "user.name"]).ok().out, "Ada Lovelace\n");
    t.dot(&["config", "core.bogus", "x"]).fails();
    write(&t.path("meta").join("f"), b"x");
    t.dot(&[
        "commit",
        "-m",
        "with data",
        "-d",
        "ticket=DB-42",
        "-d",
        "query=a=b=c",
    ])
    .ok();
    let log = t.dot(&["log", "--json"]).ok().json();
    let c = &log[0];
    assert_eq!(c["author"], "Ada Lovelace");
    assert_eq!(c["email"], "ada@example.com");
    assert_eq!(c["metadata"]["ticket"], "DB-42");
    assert_eq!(c["metadata"]["query"], "a=b=c");
    assert!(c["time"].as_i64().unwrap() > 1_700_000_000);
    let text = t.dot(&["log"]).ok().out;
    assert!(
        text.contains("Author: Ada Lovelace <ada@example.com>"),
        "{text}"
    );
    t.dot(&["commit", "-m", "bad", "-d", "novalue"]).fails();
    t.dot(&["commit", "-m", "bad", "-d", "=v"]).fails();

    let b = t.dot(&["branch", "--json"]).ok().json();
    assert_eq!(b[0]["name"], "master");
    assert_eq!(b[0]["current"], true);
    write(&t.path("meta").join("g"), b"new");
    let d = t.dot(&["diff", "--json"]).ok().json();
    assert_eq!(d["clean"], false);
    assert_eq!(d["added"], 1);
    assert_eq!(d["changes"][0]["path"], "g");
    assert_eq!(d["new_bytes"], 3);
}

#[test]
fn reset_takes_refs_and_gc_reclaims_unreachable_commits() {
    let t = Env::new();
    t.dot(&["init", "refs"]).ok();
    let dir = t.path("refs");
    let mut ids = Vec::new();
    for i in 0..4 {
        // Incompressible data, so space given back is measurable.
        write(&dir.join(format!("f{i}")), &util::noise(3 << 20, i));
        ids.push(
            t.dot(&["commit", "-m", &format!("c{i}")])
                .ok()
                .out
                .trim()
                .to_string(),
        );
    }
    t.dot(&["reset", "HEAD"]).fails();
    t.dot(&["reset", "--hard", "HEAD~1"]).ok();
    assert_eq!(t.head("refs").unwrap(), ids[2]);
    assert!(!dir.join("f3").exists());
    t.dot(&["reset", "--hard", &ids[3][..10]]).ok();
    assert!(dir.join("f3").exists());
    t.dot(&["reset", "--hard", "HEAD^^"]).ok();
    assert_eq!(t.head("refs").unwrap(), ids[1]);
    t.dot(&["checkout", "-b", "side"]).ok();
    t.dot(&["reset", "--hard", "master"]).ok();
    t.dot(&["checkout", "master"]).ok();
    t.dot(&["branch", "-d", "side"]).ok();
    t.dot(&["branch", "-d", "master"]).fails();
    t.dot(&["branch", "-d", "nope"]).fails();

    for bad in ["HEAD~9", "nope", "abc", "HEAD^2", "HEAD~x", "zzzz"] {
        let r = t.dot(&["reset", "--hard", bad]).fails();
        assert!(r.err.len() > 10, "{bad}: {}", r.err);
    }

    // Commits 2 and 3 are unreachable now: gone from the log, and gc
    // --prune=now (the reflog keeps nothing) frees the 6 MiB only they
    // hold.
    let log = t.dot(&["log", "--json"]).ok().json();
    assert_eq!(log.as_array().unwrap().len(), 2);
    let before = dir_size(&t.home.join("packs"));
    let out = t.dot(&["gc", "--prune=now"]).ok().out;
    let after = dir_size(&t.home.join("packs"));
    assert!(
        before - after > 5 << 20,
        "gc freed {} bytes: {out}",
        before - after
    );
    t.fsck_ok();
    assert!(t.dot(&["diff"]).ok().out.contains("no changes"));
    // The reachable commits are intact and restorable.
    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    assert_eq!(fs::read(dir.join("f0")).unwrap(), util::noise(3 << 20, 0));
    // A short id of a commit gc removed is unknown now.
    t.dot(&["reset", "--hard", &ids[3][..12]]).fails();
}

pub fn dir_size(p: &std::path::Path) -> u64 {
    fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn init_adopts_an_existing_directory() {
    let t = Env::new();
    let data = t.tmp.path().join("pgdata");
    write(&data.join("PG_VERSION"), b"15\n");
    write(&data.join("base/1/1259"), &util::noise(100_000, 1));
    t.dot(&["init", "pg", "--path", data.to_str().unwrap()])
        .ok();
    assert_eq!(t.path("pg"), fs::canonicalize(&data).unwrap());
    let d = t.dot(&["diff", "--json"]).ok().json();
    assert_eq!(d["added"], 4, "{d}");
    t.dot(&["commit", "-m", "adopted"]).ok();
    write(&data.join("PG_VERSION"), b"16\n");
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(read(&data.join("PG_VERSION")), "15\n");
    // An adopted directory is the user's: rm keeps it.
    t.dot(&["rm", "-f", "pg"]).ok();
    assert!(data.join("PG_VERSION").exists());
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let t = Env::new();
    t.dot(&["init", "good"]).ok();
    write(&t.path("good").join("f"), b"1");
    t.dot(&["commit", "-m", "one"]).ok();
    let adopted = t.tmp.path().join("outside/data");
    fs::create_dir_all(adopted.join("inner")).unwrap();
    t.dot(&["init", "ad", "--path", adopted.to_str().unwrap()])
        .ok();
    t.dot(&["switch", "good"]).ok();
    let inner = adopted.join("inner");
    let work = t.home.join("work");
    let snapshot = || {
        (
            t.dot(&["list", "--json"]).ok().out,
            t.dot(&["log", "--json", "good"]).ok().out,
            t.dot(&["branch", "--json", "good"]).ok().out,
        )
    };
    let before = snapshot();

    let file = t.tmp.path().join("a-file");
    write(&file, b"x");
    let long = "x".repeat(65);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["init", "bad name"], "invalid dot name"),
        (vec!["init", "a.b.c"], "invalid subdot name"),
        (vec!["init", &long], "invalid dot name"),
        (vec!["init", "good"], "already exists"),
        (
            vec!["init", "x", "--path", file.to_str().unwrap()],
            "not a directory",
        ),
        (
            vec!["init", "x", "--path", "/nonexistent/dir"],
            "cannot use",
        ),
        (vec!["init", "x", "--chunk-min", "3"], "invalid chunk sizes"),
        (vec!["path", "nope"], "does not exist"),
        (vec!["switch", "nope"], "does not exist"),
        (vec!["log", "nope"], "does not exist"),
        (vec!["commit", "-m", "x", "nope"], "does not exist"),
        (vec!["checkout", "nope", "good"], "no branch nope"),
        (vec!["checkout", "-b", "master", "good"], "already exists"),
        (
            vec!["checkout", "-b", "bad name", "good"],
            "invalid branch name",
        ),
        (vec!["checkout", "master", "good"], "already on branch"),
        (vec!["reset", "--hard", "nope", "good"], "neither a branch"),
        (
            vec!["reset", "--hard", "abcd", "good"],
            "no commit or branch",
        ),
        (vec!["branch", "-d", "nope", "good"], "no branch nope"),
        (vec!["rm", "-f", "nope"], "does not exist"),
        (vec!["path", "good.nosub"], "no subdot nosub"),
        (
            vec!["init", "good.more", "--chunk-avg", "32768"],
            "chunk sizes are fixed",
        ),
        (
            vec!["init", "x", "--path", adopted.to_str().unwrap()],
            "overlaps the working directory of ad",
        ),
        (
            vec!["init", "x", "--path", inner.to_str().unwrap()],
            "overlaps the working directory of ad",
        ),
        (
            vec![
                "init",
                "x",
                "--path",
                adopted.parent().unwrap().to_str().unwrap(),
            ],
            "overlaps the working directory of ad",
        ),
        (
            vec!["init", "x", "--path", work.to_str().unwrap()],
            "overlaps dot's own store",
        ),
        (
            vec!["init", "x", "--path", t.tmp.path().to_str().unwrap()],
            "overlaps dot's own store",
        ),
    ];
    for (args, msg) in cases {
        let r = t.dot(&args).fails();
        assert!(
            r.err.contains(msg),
            "dot {args:?}: expected {msg:?} in {:?}",
            r.err
        );
    }
    assert_eq!(snapshot(), before);
    t.fsck_ok();

    // No current dot: a clear hint.
    let fresh = Env::new();
    let r = fresh.dot(&["log"]).fails();
    assert!(r.err.contains("no current dot"), "{}", r.err);
}

#[test]
fn missing_working_directory_is_reported() {
    let t = Env::new();
    t.dot(&["init", "w"]).ok();
    write(&t.path("w").join("f"), b"1");
    t.dot(&["commit", "-m", "one"]).ok();
    fs::remove_dir_all(t.path("w")).unwrap();
    let r = t.dot(&["commit", "-m", "two"]).fails();
    assert!(r.err.contains("missing"), "{}", r.err);
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(read(&t.path("w").join("f")), "1");
}

#[test]
fn an_unfinished_reset_is_reported_with_how_to_drop_it() {
    let t = Env::new();
    t.dot(&["init", "j"]).ok();
    let dir = t.path("j");
    write(&dir.join("f"), b"one");
    let first = t.dot(&["commit", "-m", "one"]).ok().out.trim().to_string();
    write(&dir.join("f"), b"two");
    t.dot(&["commit", "-m", "two"]).ok();
    // A file where the working directory should be: the reset is recorded,
    // then cannot be carried out.
    fs::remove_dir_all(&dir).unwrap();
    fs::write(&dir, b"in the way").unwrap();
    let r = t.dot(&["reset", "--hard", "HEAD^"]).fails();
    assert!(
        r.err.contains("cannot") && r.err.contains("dot reset --hard HEAD j"),
        "{}",
        r.err
    );

    let r = t.dot(&["fsck"]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(
        r.out.contains("could not be finished") && r.out.contains("dot reset --hard HEAD j"),
        "{}",
        r.out
    );
    let r = t.dot(&["log"]).ok();
    assert!(r.err.contains("dot reset --hard HEAD j"), "{}", r.err);

    // Once the cause is gone, the next command finishes it.
    fs::remove_file(&dir).unwrap();
    let r = t.dot(&["log"]).ok();
    assert!(r.err.contains("finished an interrupted"), "{}", r.err);
    assert_eq!(t.head("j").unwrap(), first);
    assert_eq!(read(&dir.join("f")), "one");
    t.fsck_ok();
}

#[test]
fn errors_exit_with_the_code_of_their_kind() {
    let t = Env::new();
    t.dot(&["init", "k"]).ok();
    write(&t.path("k").join("f"), b"1");
    t.dot(&["commit", "-m", "one"]).ok();
    write(&t.path("k").join("f"), b"2");
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["init", "bad name"], 2),
        (vec!["reset", "HEAD"], 2),
        (vec!["log", "nope"], 3),
        (vec!["reset", "--hard", "HEAD~5"], 2),
        (vec!["checkout", "-b", "x"], 4),
        (vec!["push", "nowhere", "k"], 3),
        (vec!["reset", "--hard", "abcdef12"], 3),
    ];
    for (args, code) in cases {
        let r = t.dot(&args).fails();
        assert_eq!(r.code, code, "dot {args:?}: {}", r.err);
    }
}

#[test]
fn a_reset_away_commit_is_in_the_reflog_kept_by_gc_and_restored_by_id() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("a"), b"first\n");
    t.dot(&["commit", "-m", "one"]).ok();
    let one = t.head("app").unwrap();
    write(&dir.join("b"), &noise(300_000, 5));
    t.dot(&["commit", "-m", "two\n\nmore words"]).ok();
    let two = t.head("app").unwrap();
    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    t.dot(&["checkout", "-b", "exp"]).ok();
    t.dot(&["branch", "-d", "master"]).ok();

    // Every move, newest first, with what moved it.
    let moves = t.dot(&["reflog", "--json"]).ok().json();
    let moves = moves.as_array().unwrap();
    let summary: Vec<(String, String, String, String)> = moves
        .iter()
        .map(|m| {
            let id = |k: &str| m[k].as_str().unwrap_or("-").to_string();
            (
                m["branch"].as_str().unwrap().to_string(),
                id("old"),
                id("new"),
                m["command"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        summary,
        [
            (s("master"), one.clone(), s("-"), s("branch -d master")),
            (s("exp"), s("-"), one.clone(), s("checkout -b exp")),
            (
                s("master"),
                two.clone(),
                one.clone(),
                s("reset --hard HEAD^")
            ),
            (s("master"), one.clone(), two.clone(), s("commit: two")),
            (s("master"), s("-"), one.clone(), s("commit: one")),
        ]
    );
    let shown = t.dot(&["reflog"]).ok().out;
    assert!(shown.contains("reset --hard HEAD^"), "{shown}");

    // gc keeps what the reflog names; the commit comes back by its id.
    t.dot(&["gc"]).ok();
    t.fsck_ok();
    t.dot(&["reset", "--hard", &two[..12]]).ok();
    assert_eq!(fs::read(dir.join("b")).unwrap(), noise(300_000, 5));

    // --prune=now frees it at once.
    t.dot(&["reset", "--hard", &one]).ok();
    let r = t.dot(&["gc", "--prune=now", "--json"]).ok().json();
    assert!(r["bytes_freed"].as_u64().unwrap() > 100_000, "{r}");
    assert_eq!(
        t.dot(&["reflog", "--json"]).ok().json(),
        serde_json::json!([])
    );
    let r = t.dot(&["reset", "--hard", &two]).typed();
    assert_ne!(r.code, 0);
    t.fsck_ok();
}

#[test]
fn the_reflog_keeps_commits_for_gc_reflog_expire() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("a"), &noise(200_000, 1));
    t.dot(&["commit", "-m", "one"]).ok();
    write(&dir.join("a"), &noise(200_000, 2));
    t.dot(&["commit", "-m", "two"]).ok();
    let two = t.head("app").unwrap();
    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    let r = t.dot(&["config", "gc.reflogExpire", "a while"]).typed();
    assert_eq!(r.code, 2, "{}", r.err);
    t.dot(&["config", "gc.reflogExpire", "1s"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r = t.dot(&["gc", "--json"]).ok().json();
    assert!(r["bytes_freed"].as_u64().unwrap() > 100_000, "{r}");
    assert_ne!(t.dot(&["reset", "--hard", &two]).typed().code, 0);
    let r = t.dot(&["gc", "--prune=soon"]).typed();
    assert_eq!(r.code, 2, "{}", r.err);
    t.fsck_ok();
}
