//! Content must come back exactly: bytes, permission bits, ownership (as
//! root), mtimes, symlinks, empty directories, hard links (as copies), sparse
//! files, and files of 0 bytes and of many GiB. And damage, unreadable files
//! and files changing under a commit get clear errors.

mod util;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use util::{noise, snapshot, write, Env};

fn build_tree(dir: &Path) {
    write(&dir.join("plain"), b"plain bytes\n");
    write(&dir.join("empty-file"), b"");
    write(&dir.join("deep/a/b/c/leaf"), &noise(300_000, 3));
    fs::create_dir_all(dir.join("empty-dir/inner-empty")).unwrap();
    write(&dir.join("big"), &noise(5_000_000, 4));
    std::os::unix::fs::symlink("plain", dir.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", dir.join("dangling")).unwrap();
    write(&dir.join("secret"), b"0600");
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&dir.join("script"), b"#!/bin/sh\n");
    fs::set_permissions(dir.join("script"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(dir.join("deep/a"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::hard_link(dir.join("plain"), dir.join("hardlink")).unwrap();
    let _ = std::process::Command::new("mkfifo")
        .arg(dir.join("fifo"))
        .status();
    xattr_set(&dir.join("plain"), "user.origin", "test")
        .expect("setfattr (Debian package attr) is needed");
    xattr_set(&dir.join("deep"), "user.dir", "yes").unwrap();
    if util::is_root() {
        std::os::unix::fs::chown(dir.join("secret"), Some(70), Some(71)).unwrap();
        std::os::unix::fs::lchown(dir.join("link"), Some(72), Some(73)).unwrap();
        std::os::unix::fs::chown(dir.join("deep"), Some(74), Some(75)).unwrap();
    }
    // Distinct, old mtimes (the order matters: setting a child's changes its
    // directory's).
    set_mtime_tree(dir);
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
}

fn xattr_set(path: &Path, name: &str, value: &str) -> std::io::Result<()> {
    let st = std::process::Command::new("setfattr")
        .args(["-n", name, "-v", value])
        .arg(path)
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("setfattr failed"))
    }
}

fn xattrs(path: &Path) -> String {
    let out = std::process::Command::new("getfattr")
        .args(["-d", "--absolute-names"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn set_mtime_tree(dir: &Path) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("find . -depth -exec touch -h -d '2021-03-04 05:06:07.123456789' {} +")
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(out.success());
}

#[test]
fn everything_round_trips_through_commit_and_reset() {
    let t = Env::new();
    t.dot(&["init", "c"]).ok();
    let dir = t.path("c");
    build_tree(&dir);
    let before = snapshot(&dir);
    let top_before = fs::metadata(&dir).unwrap();
    t.dot(&["commit", "-m", "everything"]).ok();

    // Wreck it: change, delete, replace kinds, add.
    fs::remove_dir_all(dir.join("deep")).unwrap();
    fs::remove_file(dir.join("link")).unwrap();
    fs::create_dir(dir.join("link")).unwrap();
    write(&dir.join("plain"), b"changed");
    write(&dir.join("new-file"), b"new");
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("big"))
        .unwrap();
    f.write_all_at(b"patched in the middle", 2_500_000).unwrap();
    f.set_len(4_000_000).unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    xattr_set(&dir.join("script"), "user.added", "later").unwrap();
    assert!(
        t.dot(&["diff", "-v"]).ok().out.contains("M ./"),
        "top directory mode change shows"
    );

    t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(snapshot(&dir), before);
    assert_eq!(xattrs(&dir.join("plain")), "user.origin=\"test\"");
    assert_eq!(xattrs(&dir.join("deep")), "user.dir=\"yes\"");
    assert_eq!(
        xattrs(&dir.join("script")),
        "",
        "an xattr added after the commit is removed"
    );
    let top = fs::metadata(&dir).unwrap();
    assert_eq!(top.mode() & 0o7777, 0o700);
    assert_eq!((top.uid(), top.gid()), (top_before.uid(), top_before.gid()));
    assert!(t.dot(&["diff"]).ok().out.contains("no changes"));

    // And into a fresh directory: checkout of another branch and back.
    t.dot(&["checkout", "-b", "empty"]).ok();
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    t.dot(&["commit", "-m", "nothing"]).ok();
    assert!(fs::read_dir(&dir).unwrap().next().is_none());
    t.dot(&["checkout", "master"]).ok();
    assert_eq!(snapshot(&dir), before);
    t.fsck_ok();
}

#[test]
fn sparse_files_stay_sparse_and_huge_files_work() {
    let t = Env::new();
    t.dot(&["init", "sparse"]).ok();
    let dir = t.path("sparse");
    let path = dir.join("huge");
    let size: u64 = 6 << 30;
    {
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        for (i, off) in [0u64, 1 << 30, 3 << 30, size - 100_000].iter().enumerate() {
            f.write_all_at(&noise(100_000, i as u64), *off).unwrap();
        }
    }
    t.dot(&["commit", "-m", "6 GiB, mostly holes"]).ok();
    let packs: u64 = fs::read_dir(t.home.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        packs < 10 << 20,
        "holes must cost nothing in the store, packs are {packs} bytes"
    );

    fs::remove_file(&path).unwrap();
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    let md = fs::metadata(&path).unwrap();
    assert_eq!(md.len(), size);
    assert!(
        md.blocks() * 512 < 50 << 20,
        "restored file must keep its holes, uses {} bytes",
        md.blocks() * 512
    );
    let f = File::open(&path).unwrap();
    for (i, off) in [0u64, 1 << 30, 3 << 30, size - 100_000].iter().enumerate() {
        let mut buf = vec![0u8; 100_000];
        f.read_exact_at(&mut buf, *off).unwrap();
        assert_eq!(buf, noise(100_000, i as u64), "data at {off}");
    }
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, 2 << 30).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
    t.fsck_ok();
}

#[test]
fn only_changed_files_are_read_and_only_differences_rewritten() {
    let t = Env::new();
    t.dot(&["init", "inc"]).ok();
    let dir = t.path("inc");
    for i in 0..20 {
        write(&dir.join(format!("f{i}")), &noise(200_000, i));
    }
    set_mtime_tree(&dir);
    t.dot(&["commit", "-m", "one"]).ok();
    let ino_before = fs::metadata(dir.join("f3")).unwrap().ino();
    let untouched = fs::metadata(dir.join("f7")).unwrap();
    write(&dir.join("f3"), &noise(200_000, 99));
    // Older than the stat cache's racy window, so its entry is trusted.
    std::thread::sleep(std::time::Duration::from_millis(300));
    t.dot(&["commit", "-m", "two"]).ok();
    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    // f7 was never rewritten: same inode, same ctime.
    let after = fs::metadata(dir.join("f7")).unwrap();
    assert_eq!(
        (after.ino(), after.ctime(), after.ctime_nsec()),
        (untouched.ino(), untouched.ctime(), untouched.ctime_nsec())
    );
    // f3 was patched in place (its old content was known), not replaced.
    assert_eq!(fs::metadata(dir.join("f3")).unwrap().ino(), ino_before);
    assert_eq!(fs::read(dir.join("f3")).unwrap(), noise(200_000, 3));
}

#[test]
fn damaged_pack_is_reported_by_fsck_and_by_commands() {
    let t = Env::new();
    t.dot(&["init", "dmg"]).ok();
    let dir = t.path("dmg");
    write(&dir.join("data"), &noise(1_000_000, 1));
    t.dot(&["commit", "-m", "one"]).ok();
    t.fsck_ok();
    // Flip one byte inside the data pack's records (the largest pack).
    let mut packs: Vec<_> = fs::read_dir(t.home.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    packs.sort_by_key(|p| fs::metadata(p).unwrap().len());
    let victim = packs.last().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(victim)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100_000).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 100_000).unwrap();
    drop(f);

    let r = t.dot(&["fsck"]);
    assert_ne!(r.code, 0);
    assert!(
        r.out.contains("damaged") && r.out.contains("/data"),
        "fsck must name the damaged file: {}",
        r.out
    );
    fs::remove_file(dir.join("data")).unwrap();
    let r = t.dot(&["reset", "--hard", "HEAD"]).fails();
    assert!(
        r.err.contains("damaged") && r.err.contains("dot fsck"),
        "{}",
        r.err
    );
}

#[test]
fn damaged_index_entry_is_reported() {
    let t = Env::new();
    t.dot(&["init", "idx"]).ok();
    write(&t.path("idx").join("data"), &noise(500_000, 1));
    t.dot(&["commit", "-m", "one"]).ok();
    // Remove the packs: every index entry now names a missing pack.
    for e in fs::read_dir(t.home.join("packs")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    let r = t.dot(&["fsck"]);
    assert_ne!(r.code, 0);
    assert!(r.out.contains("missing"), "{}", r.out);
    t.dot(&["log"]).fails();
}

#[test]
fn a_file_changing_during_commit_is_an_error_and_nothing_moves() {
    let t = Env::new();
    t.dot(&["init", "busy"]).ok();
    let dir = t.path("busy");
    write(&dir.join("stable"), b"1");
    t.dot(&["commit", "-m", "one"]).ok();
    let head = t.head("busy");
    let big = dir.join("growing");
    write(&big, &noise(64 << 20, 5));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, big) = (stop.clone(), big.clone());
        std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&big).unwrap();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all_at(&i.to_le_bytes(), (i * 4096) % (64 << 20))
                    .unwrap();
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    let r = t.dot(&["commit", "-m", "racy"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_ne!(r.code, 0, "a commit racing a writer must fail: {}", r.out);
    assert!(
        r.err.contains("changed while it was being read"),
        "{}",
        r.err
    );
    assert_eq!(t.head("busy"), head);
    t.fsck_ok();
}

#[test]
fn unreadable_files_and_directories_are_errors() {
    // Permission checks do not apply to root: run dot as an unprivileged
    // user then, as users usually do (on its own, without a daemon: one
    // started by root would serve only root).
    let t = Env::plain();
    let as_user = |args: &[&str]| -> util::Run {
        let mut c = if util::is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(util::dot_bin());
            c
        } else {
            std::process::Command::new(util::dot_bin())
        };
        c.args(args)
            .env("DOT_HOME", &t.home)
            .stdin(std::process::Stdio::null());
        util::to_run(c.output().unwrap())
    };
    if util::is_root() {
        fs::set_permissions(t.tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
        std::process::Command::new("chmod")
            .args(["755", util::scratch().to_str().unwrap()])
            .status()
            .unwrap();
    }
    let data = t.tmp.path().join("data");
    fs::create_dir(&data).unwrap();
    write(&data.join("ok"), b"ok");
    write(&data.join("locked"), b"secret");
    util::give_to_nobody(&data);
    fs::set_permissions(data.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    as_user(&["init", "u", "--path", data.to_str().unwrap()]).ok();
    let r = as_user(&["commit", "-m", "x"]).fails();
    assert!(
        r.err.contains("cannot read") && r.err.contains("locked"),
        "{}",
        r.err
    );
    assert_eq!(as_user(&["log", "--json"]).ok().out.trim(), "[]");

    let closed = t.tmp.path().join("closed");
    fs::create_dir(&closed).unwrap();
    util::give_to_nobody(&closed);
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o000)).unwrap();
    let r = as_user(&["init", "v", "--path", closed.to_str().unwrap()]).fails();
    assert!(r.err.contains("cannot read"), "{}", r.err);

    // A read-only directory (as PostgreSQL never makes, but users do) still
    // gets its entries restored, and keeps its mode.
    let ro = t.tmp.path().join("ro");
    write(&ro.join("sub/keep"), b"keep");
    util::give_to_nobody(&ro);
    fs::set_permissions(ro.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
    as_user(&["init", "ro", "--path", ro.to_str().unwrap()]).ok();
    as_user(&["commit", "-m", "ro"]).ok();
    fs::set_permissions(ro.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&ro.join("sub/extra"), b"extra");
    fs::remove_file(ro.join("sub/keep")).unwrap();
    fs::set_permissions(ro.join("sub"), fs::Permissions::from_mode(0o555)).unwrap();
    as_user(&["reset", "--hard", "HEAD"]).ok();
    assert!(!ro.join("sub/extra").exists());
    assert_eq!(fs::read(ro.join("sub/keep")).unwrap(), b"keep");
    assert_eq!(fs::metadata(ro.join("sub")).unwrap().mode() & 0o7777, 0o555);
}
