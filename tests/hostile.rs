//! Hostile remotes: objects crafted with correct ids, packs, index files and
//! refs (tests/util/craft.rs), then cloned and pulled. For each case the
//! command fails with a clear error (or succeeds where the content is
//! legal), nothing outside the dot's own directories changes, no device
//! node or setuid file appears, nothing panics or aborts, and the store
//! still opens with `dot fsck` passing.

mod util;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use util::craft::{self, chunk, commit, dir, node, root, Child, Content, Entry, Kind, Obj};
use util::{snapshot, write, Env, Run};

/// A user with a dot of their own and a directory that must not change,
/// who adds a hostile remote as `hub`.
struct Victim {
    t: Env,
    bait: PathBuf,
    bait_before: Vec<String>,
    other_before: Vec<String>,
    remote: craft::Remote,
}

impl Victim {
    fn new() -> Victim {
        let t = Env::new();
        let bait = t.tmp.path().join("bait");
        write(&bait.join("precious"), b"keep me\n");
        write(&bait.join("sub/also"), b"and me\n");
        t.dot(&["init", "other"]).ok();
        write(&t.path("other").join("data"), b"other dot's data\n");
        t.dot(&["commit", "-m", "other"]).ok();
        let remote = craft::Remote::new(&t.tmp.path().join("remote"));
        t.dot(&["remote", "add", "hub", remote.dir.to_str().unwrap()])
            .ok();
        Victim {
            bait_before: snapshot(&bait),
            other_before: snapshot(&t.path("other")),
            t,
            bait,
            remote,
        }
    }

    /// Publishes a commit of `subdots` (with every object in `objects`)
    /// as generation `generation` of app/master; returns the commit.
    fn publish(
        &self,
        subdots: &[(&[u8], &Obj)],
        objects: Vec<Obj>,
        parents: &[craft::Id],
        generation: u64,
    ) -> craft::Id {
        let r = root(subdots);
        let c = commit(&r, parents);
        let mut all = objects;
        all.extend(subdots.iter().map(|(_, t)| (*t).clone()));
        all.push(r);
        all.push(c.clone());
        self.remote.publish(&all);
        self.remote.set_ref("app", "master", generation, &c.id());
        c.id()
    }

    /// Publishes one subdot holding `entries`, with `objects` beside, as
    /// generation `generation`.
    fn publish_entries(&self, entries: &[Entry], objects: Vec<Obj>, generation: u64) -> craft::Id {
        let tree = dir(entries);
        self.publish(&[(b"__default__", &tree)], objects, &[], generation)
    }

    fn publish_dir(&self, entries: Vec<Entry>, objects: Vec<Obj>) -> craft::Id {
        self.publish_entries(&entries, objects, 1)
    }

    fn clone_app(&self, extra: &[&str]) -> Run {
        let mut args = vec!["clone", "hub", "app"];
        args.extend_from_slice(extra);
        self.t.dot(&args)
    }

    /// Nothing outside the dot's directories changed, nothing special
    /// appeared, and the store is whole.
    fn intact(&self) {
        assert_eq!(snapshot(&self.bait), self.bait_before, "the bait changed");
        assert_eq!(
            snapshot(&self.t.path("other")),
            self.other_before,
            "another dot's data changed"
        );
        no_special_files(self.t.tmp.path());
        self.t.dot(&["list"]).ok();
        self.t.fsck_ok();
    }

    /// The command failed cleanly, saying `words`, and left no dot app.
    fn refused(&self, r: Run, words: &[&str]) -> Run {
        let r = r.typed();
        for w in words {
            assert!(r.err.contains(w), "expected {w:?} in: {}", r.err);
        }
        let list = self.t.dot(&["list", "--json"]).ok().out;
        assert!(
            !list.contains("\"app\""),
            "a half-cloned dot remains: {list}"
        );
        assert!(
            !self.t.home.join("work/app").exists(),
            "its working directory remains"
        );
        self.intact();
        r
    }
}

/// Fails if any device node, or setuid or setgid file, is under `root`.
fn no_special_files(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            assert!(
                !ft.is_char_device() && !ft.is_block_device(),
                "device node {}",
                p.display()
            );
            assert!(
                ft.is_dir() || md.mode() & 0o6000 == 0,
                "setuid or setgid file {}",
                p.display()
            );
            if ft.is_dir() {
                todo.push(p);
            }
        }
    }
}

fn file(name: &str, data: &[u8]) -> (Entry, Obj) {
    let c = chunk(data);
    (
        Entry::file(name, Content::Chunk(c.id()), data.len() as u64),
        c,
    )
}

#[test]
fn subdot_names_cannot_leave_the_dot() {
    let v = Victim::new();
    let (f, c) = file("payload", b"owned\n");
    let tree = dir(&[f]);
    let bait = v.bait.to_str().unwrap().to_string();
    let names: Vec<Vec<u8>> = vec![
        bait.into_bytes(),
        b"../..".to_vec(),
        b"../other".to_vec(),
        b"..".to_vec(),
        b"".to_vec(),
        b"a/b".to_vec(),
        b".".to_vec(),
        vec![b'x'; 65],
        "é".as_bytes().to_vec(),
        b"a\0b".to_vec(),
    ];
    for (i, name) in names.iter().enumerate() {
        v.publish(&[(name, &tree)], vec![c.clone()], &[], i as u64 + 1);
        v.refused(v.clone_app(&[]), &["invalid subdot name", "hub"]);
    }
}

#[test]
fn entry_names_and_order_are_checked() {
    let v = Victim::new();
    let (_, c) = file("x", b"data\n");
    let named = |n: &[u8]| Entry::new(n, Kind::File(Content::Chunk(c.id()))).tap_size(5);
    let cases: Vec<Vec<Entry>> = vec![
        vec![named(b"..")],
        vec![named(b".")],
        vec![named(b"a/b")],
        vec![named(b"a\0b")],
        vec![named(b"")],
        vec![named(&[b'n'; 256])],
        vec![named(b"b"), named(b"a")],
        vec![named(b"a"), named(b"a")],
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        v.publish_entries(&entries, vec![c.clone()], i as u64 + 1);
        let r = v.refused(v.clone_app(&[]), &["damaged", "hub"]);
        assert_eq!(r.code, 6, "damaged");
    }
}

trait TapSize {
    fn tap_size(self, n: u64) -> Entry;
}
impl TapSize for Entry {
    fn tap_size(mut self, n: u64) -> Entry {
        self.size = n;
        self
    }
}

#[test]
fn special_files_need_the_dots_permission() {
    let v = Victim::new();
    let (setuid, c) = file("su", b"#!/bin/sh\n");
    let cases: Vec<(Entry, &str)> = vec![
        (
            Entry::new(b"sda", Kind::Char(8 << 8)).mode(0o666),
            "a device node",
        ),
        (
            Entry::new(b"sdb", Kind::Block(8 << 8)).mode(0o666),
            "a device node",
        ),
        (setuid.mode(0o4755), "a setuid file"),
        (
            Entry::file("sg", Content::Chunk(c.id()), 10).mode(0o2755),
            "a setgid file",
        ),
        (
            Entry::file("cap", Content::Chunk(c.id()), 10)
                .xattr("security.capability", "\x01\x00\x00\x02"),
            "security.capability",
        ),
    ];
    for (i, (e, what)) in cases.into_iter().enumerate() {
        v.publish_entries(&[e], vec![c.clone()], i as u64 + 1);
        let r = v.refused(
            v.clone_app(&[]),
            &[what, "allowSpecialFiles", "--allow-special-files"],
        );
        assert_eq!(r.code, 10, "refused for safety");
    }
    // The user who trusts the remote can have them (mknod needs root).
    if util::is_root() {
        let null = Entry::new(b"null", Kind::Char((1 << 8) | 3)).mode(0o666);
        v.publish_entries(&[null], vec![], 10);
        v.clone_app(&["--allow-special-files"]).ok();
        let md = fs::symlink_metadata(v.t.path("app").join("null")).unwrap();
        assert!(md.file_type().is_char_device());
        v.t.dot(&["rm", "-f", "app"]).ok();
    }
}

#[test]
fn special_files_one_dot_allows_do_not_reach_another() {
    let v = Victim::new();
    let (su, c) = file("su", b"#!/bin/sh\n");
    let id = v.publish_entries(&[su.mode(0o4755)], vec![c], 1);
    v.clone_app(&["--allow-special-files"]).ok();
    let md = fs::symlink_metadata(v.t.path("app").join("su")).unwrap();
    assert_eq!(
        md.mode() & 0o4000,
        0o4000,
        "allowed, the setuid bit comes back"
    );
    // The same commit, now in the store, is still judged by each dot.
    let r =
        v.t.dot(&["clone", "hub", "app", "--local-name", "app2"])
            .typed();
    assert!(r.err.contains("a setuid file"), "{}", r.err);
    assert!(!v.t.dot(&["list"]).ok().out.contains("app2"));
    let r =
        v.t.dot(&["reset", "--hard", &craft::hex(&id), "other"])
            .typed();
    assert!(r.err.contains("allowSpecialFiles"), "{}", r.err);
    v.t.dot(&["rm", "-f", "app"]).ok();
    v.intact();
}

#[test]
fn legal_content_comes_back_and_symlinks_are_not_followed() {
    let v = Victim::new();
    let (f, c) = file("data", b"legal data\n");
    let bait = v.bait.to_str().unwrap().as_bytes().to_vec();
    let entries = vec![
        f.mode(0o751).owner(1234, 5678),
        Entry::new(b"fifo", Kind::Fifo).mode(0o600),
        Entry::new(b"link", Kind::Symlink(bait.clone())),
        Entry::new(b"passwd", Kind::Symlink(b"/etc/passwd".to_vec())),
    ];
    let first = v.publish_dir(entries, vec![c.clone()]);
    v.clone_app(&[]).ok();
    let dir_ = v.t.path("app");
    let md = fs::metadata(dir_.join("data")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o751);
    if util::is_root() {
        assert_eq!((md.uid(), md.gid()), (1234, 5678));
    }
    assert!(fs::symlink_metadata(dir_.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read_link(dir_.join("link")).unwrap(), v.bait);
    v.intact();

    // The next commit makes "link" a directory with a file in it: the
    // symlink is replaced, not written through.
    let (g, c2) = file("planted", b"not in the bait\n");
    let sub = dir(&[g]);
    let tree = dir(&[Entry::dir("link", &sub)]);
    v.publish(
        &[(b"__default__", &tree)],
        vec![sub.clone(), c2],
        &[first],
        2,
    );
    v.t.dot(&["pull"]).ok();
    assert!(fs::symlink_metadata(dir_.join("link")).unwrap().is_dir());
    assert!(dir_.join("link/planted").exists());
    assert!(!v.bait.join("planted").exists());
    v.intact();
}

#[test]
fn lying_sizes_and_lengths_are_refused() {
    let v = Victim::new();
    let six = chunk(b"sixsix");
    let leaf = node(0, &[Child::Chunk(six.id(), 6), Child::Zero(10)]);
    let lying_leaf = node(0, &[Child::Chunk(six.id(), 100), Child::Zero(10)]);
    let short_inner = node(1, &[Child::Node(leaf.id(), 20)]);
    let skipping_inner = node(2, &[Child::Node(leaf.id(), 16)]);
    let file = |c: &Obj, size| Entry::file("f", Content::Node(c.id()), size);
    // 50,000 nodes of level 1, each naming the next as its child: a
    // descent that never reaches level 0 unless levels are checked first.
    let mut chain = vec![leaf.clone()];
    for _ in 0..50_000 {
        let next = node(1, &[Child::Node(chain.last().unwrap().id(), 16)]);
        chain.push(next);
    }
    let cases: Vec<(Entry, Vec<Obj>, &str)> = vec![
        // A file entry saying 100 bytes over a 6-byte chunk.
        (
            Entry::file("f", Content::Chunk(six.id()), 100),
            vec![],
            "6 bytes",
        ),
        // A chunk-tree leaf saying 100 bytes over the same chunk.
        (file(&lying_leaf, 110), vec![lying_leaf.clone()], "6 bytes"),
        // Inner-node lengths that do not add up.
        (
            file(&short_inner, 20),
            vec![leaf.clone(), short_inner.clone()],
            "damaged",
        ),
        // A level that does not drop by one.
        (
            file(&skipping_inner, 16),
            vec![leaf.clone(), skipping_inner.clone()],
            "damaged",
        ),
        // A declared size of 2^62 over 16 bytes.
        (file(&leaf, 1 << 62), vec![leaf.clone()], "damaged"),
        // A chain of nodes whose levels never drop.
        (file(chain.last().unwrap(), 16), chain.clone(), "damaged"),
    ];
    for (i, (e, mut objects, word)) in cases.into_iter().enumerate() {
        objects.push(six.clone());
        v.publish_entries(&[e], objects, i as u64 + 1);
        v.refused(v.clone_app(&[]), &[word, "hub"]);
    }

    // A zero run of 4 GiB is legal, and stays a hole.
    v.publish_entries(&[Entry::file("f", Content::Zero, 1 << 32)], vec![], 7);
    v.clone_app(&[]).ok();
    let md = fs::metadata(v.t.path("app").join("f")).unwrap();
    assert_eq!(md.len(), 1 << 32);
    assert!(md.blocks() < 64, "a hole, not {} blocks", md.blocks());
    v.intact();
}

#[test]
fn malformed_entries_are_refused() {
    let v = Victim::new();
    let (_, c) = file("x", b"12345");
    let ok = |name: &str| Entry::file(name, Content::Chunk(c.id()), 5);
    let cases: Vec<Entry> = vec![
        ok("mode").mode(0o170777),
        ok("xattrs").xattr("user.b", "1").xattr("user.a", "2"),
        ok("dup").xattr("user.a", "1").xattr("user.a", "2"),
        Entry::new(b"empty-link", Kind::Symlink(vec![])),
        Entry::new(b"nul-link", Kind::Symlink(b"a\0b".to_vec())),
        Entry::new(b"long-link", Kind::Symlink(vec![b'a'; 5000])),
        Entry::new(b"kind", Kind::Raw(9, vec![])),
        Entry::file("sized-dir", Content::Empty, 7),
    ];
    for (i, e) in cases.into_iter().enumerate() {
        v.publish_entries(&[e], vec![c.clone()], i as u64 + 1);
        v.refused(v.clone_app(&[]), &["damaged", "hub"]);
    }
}

#[test]
fn split_directories_are_checked() {
    let v = Victim::new();
    let (_, c) = file("x", b"12345");
    let e = |name: &str| Entry::file(name, Content::Chunk(c.id()), 5);
    let left = dir(&[e("a"), e("b")]);
    let right = dir(&[e("c")]);
    let cases = vec![
        // Wrong entry count, wrong first name, a child listed twice (which
        // would multiply entries without end), wrong level.
        craft::dir_inner(1, &[(b"a", left.id(), 3), (b"c", right.id(), 1)]),
        craft::dir_inner(1, &[(b"a", left.id(), 2), (b"d", right.id(), 1)]),
        craft::dir_inner(1, &[(b"a", left.id(), 2), (b"a", left.id(), 2)]),
        craft::dir_inner(2, &[(b"a", left.id(), 2), (b"c", right.id(), 1)]),
    ];
    for (i, inner) in cases.into_iter().enumerate() {
        v.publish(
            &[(b"__default__", &inner)],
            vec![c.clone(), left.clone(), right.clone()],
            &[],
            i as u64 + 1,
        );
        v.refused(v.clone_app(&[]), &["damaged", "hub"]);
    }
    // And the right one clones.
    let inner = craft::dir_inner(1, &[(b"a", left.id(), 2), (b"c", right.id(), 1)]);
    v.publish(&[(b"__default__", &inner)], vec![c, left, right], &[], 9);
    v.clone_app(&[]).ok();
    assert!(v.t.path("app").join("c").exists());
    v.intact();
}

/// A chain of directories `depth` deep, each named `name`, with a file at
/// the bottom; returns (top tree, every object).
fn chain(depth: usize, name: &str) -> (Obj, Vec<Obj>) {
    let (f, c) = file("bottom", b"deep\n");
    let mut t = dir(&[f]);
    let mut all = vec![c];
    for _ in 1..depth {
        all.push(t.clone());
        t = dir(&[Entry::dir(name, &t)]);
    }
    (t, all)
}

#[test]
fn a_thousand_deep_chain_clones_and_resets_and_deeper_fails_cleanly() {
    let v = Victim::new();
    let (top, all) = chain(1000, "d");
    v.publish(&[(b"__default__", &top)], all, &[], 1);
    v.clone_app(&[]).ok();
    let bottom = v.t.path("app").join("d/".repeat(999)).join("bottom");
    assert_eq!(fs::read(&bottom).unwrap(), b"deep\n");
    fs::remove_file(&bottom).unwrap();
    assert!(v.t.dot(&["diff", "-v"]).ok().out.contains("bottom"));
    v.t.dot(&["reset", "--hard", "HEAD"]).ok();
    assert_eq!(fs::read(&bottom).unwrap(), b"deep\n");
    v.t.dot(&["commit", "-m", "deep"]).ok();
    v.intact();
    v.t.dot(&["rm", "-f", "app"]).ok();

    // Near the deepest a path can go: the walks do not run out of stack.
    let (top, all) = chain(2000, "d");
    v.publish(&[(b"__default__", &top)], all, &[], 2);
    v.clone_app(&[]).ok();
    assert!(v.t.dot(&["diff"]).ok().out.contains("no changes"));
    v.intact();
    v.t.dot(&["rm", "-f", "app"]).ok();

    for (depth, generation) in [(3000, 3), (10_000, 4)] {
        let (top, all) = chain(depth, "d");
        v.publish(&[(b"__default__", &top)], all, &[], generation);
        v.refused(v.clone_app(&[]), &["deeper than 2048"]);
    }
}

#[test]
fn paths_longer_than_the_system_allows_fail_before_anything_is_written() {
    let v = Victim::new();
    // 1500 levels of 3-byte names: within the depth limit, but over
    // PATH_MAX.
    let (top, all) = chain(1500, "ddd");
    v.publish(&[(b"__default__", &top)], all, &[], 1);
    v.refused(v.clone_app(&[]), &["4095"]);
}

#[test]
fn index_entries_that_lie_are_refused_without_large_allocations() {
    let v = Victim::new();
    let (f, c) = file("f", b"small chunk\n");
    let tree = dir(&[f]);
    let r = root(&[(b"__default__", &tree)]);
    let cm = commit(&r, &[]);
    let objects = vec![c.clone(), tree.clone(), r.clone(), cm.clone()];
    let cid = c.id();
    type Tweak = Box<dyn Fn(&craft::Id, &mut craft::Slot)>;
    let tweaks: Vec<Tweak> = vec![
        // A raw length of 4 GiB.
        Box::new(move |id, s| {
            if *id == cid {
                s.raw_len = u32::MAX;
                s.codec = 1;
            }
        }),
        // An offset near 2^64.
        Box::new(move |id, s| {
            if *id == cid {
                s.offset = u64::MAX - 3;
            }
        }),
        // An unknown codec.
        Box::new(move |id, s| {
            if *id == cid {
                s.codec = 7;
            }
        }),
    ];
    for (i, tweak) in tweaks.into_iter().enumerate() {
        // Each case in a remote of its own (index files accumulate).
        let remote = craft::Remote::new(&v.t.tmp.path().join(format!("remote{i}")));
        remote.publish_with(&objects, &*tweak);
        remote.set_ref("app", "master", 1, &cm.id());
        let name = format!("bad{i}");
        v.t.dot(&["remote", "add", &name, remote.dir.to_str().unwrap()])
            .ok();
        let r = v.t.dot(&["clone", &name, "app"]);
        v.refused(r, &["damaged", &name]);
    }
}

#[test]
fn a_zstd_bomb_is_refused() {
    let v = Victim::new();
    // 64 MiB of zeros in a frame of a few KiB, claiming the largest chunk.
    let zeros = vec![0u8; 64 << 20];
    let frame = zstd::bulk::compress(&zeros, 3).unwrap();
    let fake = chunk(b"twelve bytes");
    v.remote
        .publish_stored(0, &[(fake.id(), 1, 16 << 20, frame)]);
    let tree = dir(&[Entry::file("f", Content::Chunk(fake.id()), 12)]);
    v.publish(&[(b"__default__", &tree)], vec![], &[], 1);
    v.refused(v.clone_app(&[]), &["damaged", "hub"]);
}

#[test]
fn refs_that_lie_are_refused() {
    let v = Victim::new();
    let (f, c) = file("f", b"data\n");
    // A ref naming a chunk instead of a commit.
    v.publish_dir(vec![f], vec![c.clone()]);
    v.remote.set_ref("app", "master", 2, &c.id());
    v.refused(v.clone_app(&[]), &["hub"]);
    // A ref that is not a dot ref.
    fs::write(
        v.remote.dir.join("refs/app/master/00000000000000000003"),
        b"dot ref 1\ncommit zz\n",
    )
    .unwrap();
    v.refused(v.clone_app(&[]), &["not a dot ref"]);
}

#[test]
fn a_ref_generation_at_the_limit_fails_cleanly() {
    let v = Victim::new();
    let (f, c) = file("f", b"data\n");
    let first = v.publish_dir(vec![f], vec![c]);
    fs::remove_dir_all(v.remote.dir.join("refs")).unwrap();
    v.remote.set_ref("app", "master", u64::MAX, &first);
    v.clone_app(&[]).ok();
    write(&v.t.path("app").join("more"), b"more\n");
    v.t.dot(&["commit", "-m", "more"]).ok();
    let r = v.t.dot(&["push"]).typed();
    assert!(r.err.contains("cannot grow"), "{}", r.err);
    v.intact();
}

#[test]
fn a_refused_pull_changes_nothing() {
    let v = Victim::new();
    let (f, c) = file("f", b"version one\n");
    let first = v.publish_dir(vec![f], vec![c]);
    v.clone_app(&[]).ok();
    let dir_ = v.t.path("app");
    let before = snapshot(&dir_);
    let head = v.t.head("app");

    let cases: Vec<Vec<Entry>> = vec![
        vec![Entry::new(b"sda", Kind::Char(8 << 8)).mode(0o666)],
        vec![Entry::new(b"..", Kind::Fifo)],
        vec![Entry::file("f", Content::Chunk(chunk(b"6bytes").id()), 100)],
    ];
    for (i, entries) in cases.into_iter().enumerate() {
        let tree = dir(&entries);
        v.publish(
            &[(b"__default__", &tree)],
            vec![chunk(b"6bytes")],
            &[first],
            i as u64 + 2,
        );
        v.t.dot(&["pull"]).typed();
        assert_eq!(snapshot(&dir_), before);
        assert_eq!(v.t.head("app"), head);
        assert!(v.t.dot(&["diff"]).ok().out.contains("no changes"));
        v.intact();
    }
    // A new subdot named to escape, in a pull.
    let (g, c2) = file("g", b"x\n");
    let tree = dir(&[g]);
    v.publish(
        &[(b"__default__", &tree), (b"../other", &tree)],
        vec![c2],
        &[first],
        9,
    );
    v.t.dot(&["pull"]).fails();
    assert_eq!(snapshot(&dir_), before);
    v.intact();
    // Allowed, the device comes in (as root, where mknod works).
    if util::is_root() {
        let tree = dir(&[Entry::new(b"null", Kind::Char((1 << 8) | 3)).mode(0o666)]);
        v.publish(&[(b"__default__", &tree)], vec![], &[first], 10);
        v.t.dot(&["config", "--dot", "app", "allowSpecialFiles", "true"])
            .ok();
        v.t.dot(&["pull"]).ok();
        assert!(fs::symlink_metadata(dir_.join("null"))
            .unwrap()
            .file_type()
            .is_char_device());
        fs::remove_file(dir_.join("null")).unwrap();
    }
}

#[test]
fn a_failed_clone_is_undone_and_the_current_dot_stays() {
    let v = Victim::new();
    // A file where the working directory would go makes materializing fail
    // after the dot is recorded.
    let (f, c) = file("f", b"data\n");
    v.publish_dir(vec![f], vec![c]);
    fs::create_dir_all(v.t.home.join("work")).unwrap();
    fs::write(v.t.home.join("work/app"), b"in the way").unwrap();
    v.clone_app(&[]).typed();
    fs::remove_file(v.t.home.join("work/app")).unwrap();
    let list = v.t.dot(&["list", "--json"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["other"]);
    assert!(list[0]["current"].as_bool().unwrap());
    v.intact();
    // Nothing blocks the next attempt.
    v.clone_app(&[]).ok();
    v.intact();
}

#[test]
fn a_read_only_file_in_the_bait_is_untouched_by_permission_changes() {
    // Materializing sets modes and owners only on what it created: a
    // symlink to the bait with a mode in the commit changes nothing there.
    let v = Victim::new();
    fs::set_permissions(v.bait.join("precious"), fs::Permissions::from_mode(0o444)).unwrap();
    let bait_before = snapshot(&v.bait);
    let target = v
        .bait
        .join("precious")
        .to_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    let entries = vec![Entry::new(b"l", Kind::Symlink(target))
        .mode(0o777)
        .owner(4321, 4321)];
    v.publish_dir(entries, vec![]);
    v.clone_app(&[]).ok();
    assert_eq!(snapshot(&v.bait), bait_before);
}
