//! Random sequences of file operations applied to a mounted dot (a real
//! FUSE mount) and to a directory on the local file system, compared after
//! every step and across commit, reset and checkout. proptest shrinks a
//! failing sequence to a minimal one. `DOT_DIFF_CASES` sets how many
//! sequences run (default 64). Linux only, as mounts are.
#![cfg(target_os = "linux")]

mod util;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use util::{noise, write, Env};

type P = Vec<&'static str>;

#[derive(Clone, Debug)]
enum Op {
    Create(P),
    Write(P, u64, usize, u64),
    Append(P, usize, u64),
    Truncate(P, u64),
    Mkdir(P),
    Unlink(P),
    Rmdir(P),
    Rename(P, P),
    RenameNoReplace(P, P),
    Exchange(P, P),
    Link(P, P),
    Symlink(P),
    Chmod(P, u32),
    /// fallocate(2) with a mode of `FALLOC_MODES`.
    Fallocate(P, usize, u64, u64),
    /// A shared writable mapping written and synced, as SQLite's WAL
    /// index is.
    MmapWrite(P, u64, usize, u64),
    /// `dot commit`.
    Commit,
    /// `dot reset --hard` to one of the current branch's commits.
    Reset(usize),
    /// `dot checkout -b`: a new branch that keeps what is uncommitted.
    Branch,
    /// `dot checkout` of one of the branches, after a commit when the
    /// number is even: each branch keeps its own uncommitted changes.
    Switch(usize),
}

const FALLOC_MODES: [i32; 4] = [
    0,
    libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    libc::FALLOC_FL_ZERO_RANGE,
];

fn path() -> impl Strategy<Value = P> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => path().prop_map(Op::Create),
        5 => (path(), 0u64..300_000, 1usize..40_000, any::<u64>())
            .prop_map(|(p, o, n, s)| Op::Write(p, o, n, s)),
        1 => (path(), 1usize..10_000, any::<u64>()).prop_map(|(p, n, s)| Op::Append(p, n, s)),
        1 => (path(), 0u64..300_000).prop_map(|(p, n)| Op::Truncate(p, n)),
        1 => path().prop_map(Op::Mkdir),
        1 => path().prop_map(Op::Unlink),
        1 => path().prop_map(Op::Rmdir),
        1 => (path(), path()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path(), path()).prop_map(|(a, b)| Op::RenameNoReplace(a, b)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Exchange(a, b)),
        1 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => path().prop_map(Op::Symlink),
        // With set-ID bits at times: copying them up must keep them.
        1 => (path(), 0u32..0o100, 0u32..4).prop_map(|(p, m, s)| Op::Chmod(p, 0o600 | m | s << 10)),
        2 => (path(), 0..FALLOC_MODES.len(), 0u64..300_000, 1u64..80_000)
            .prop_map(|(p, m, o, n)| Op::Fallocate(p, m, o, n)),
        1 => (path(), 0u64..200_000, 1usize..20_000, any::<u64>())
            .prop_map(|(p, o, n, s)| Op::MmapWrite(p, o, n, s)),
        1 => Just(Op::Commit),
        1 => any::<usize>().prop_map(Op::Reset),
        1 => Just(Op::Branch),
        1 => any::<usize>().prop_map(Op::Switch),
    ]
}

fn at(dir: &Path, p: &P) -> PathBuf {
    p.iter().fold(dir.to_path_buf(), |d, c| d.join(c))
}

fn mmap_write(path: &Path, off: u64, data: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let end = off + data.len() as u64;
    if f.metadata()?.len() < end {
        f.set_len(end)?;
    }
    let page = 4096u64;
    let start = off / page * page;
    let len = (end - start) as usize;
    // SAFETY: a fresh shared mapping of `len` bytes of an open file,
    // written within its bounds and unmapped before it is dropped.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as libc::off_t,
        );
        if m == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let dst = (m as *mut u8).add((off - start) as usize);
        std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        let synced = libc::msync(m, len, libc::MS_SYNC);
        libc::munmap(m, len);
        if synced != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Applies a file operation to `dir` (the mount or the local directory).
fn apply(dir: &Path, op: &Op) -> io::Result<()> {
    let p = |x: &P| at(dir, x);
    match op {
        Op::Create(x) => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(p(x))
            .map(drop),
        Op::Write(x, off, n, seed) => OpenOptions::new()
            .write(true)
            .open(p(x))?
            .write_all_at(&noise(*n, *seed), *off),
        Op::Append(x, n, seed) => {
            use std::io::Write;
            OpenOptions::new()
                .append(true)
                .open(p(x))?
                .write_all(&noise(*n, *seed))
        }
        Op::Truncate(x, n) => OpenOptions::new().write(true).open(p(x))?.set_len(*n),
        Op::Mkdir(x) => fs::create_dir(p(x)),
        Op::Unlink(x) => fs::remove_file(p(x)),
        Op::Rmdir(x) => fs::remove_dir(p(x)),
        Op::Rename(a, b) => fs::rename(p(a), p(b)),
        Op::RenameNoReplace(a, b) => Ok(rustix::fs::renameat_with(
            rustix::fs::CWD,
            p(a),
            rustix::fs::CWD,
            p(b),
            rustix::fs::RenameFlags::NOREPLACE,
        )?),
        Op::Exchange(a, b) => Ok(rustix::fs::renameat_with(
            rustix::fs::CWD,
            p(a),
            rustix::fs::CWD,
            p(b),
            rustix::fs::RenameFlags::EXCHANGE,
        )?),
        Op::Link(a, b) => fs::hard_link(p(a), p(b)),
        Op::Symlink(x) => std::os::unix::fs::symlink("target", p(x)),
        Op::Chmod(x, m) => {
            if fs::symlink_metadata(p(x))?.is_symlink() {
                return Ok(());
            }
            fs::set_permissions(p(x), fs::Permissions::from_mode(*m))
        }
        Op::Fallocate(x, m, off, len) => {
            let f = OpenOptions::new().write(true).open(p(x))?;
            let flags = rustix::fs::FallocateFlags::from_bits_retain(FALLOC_MODES[*m] as u32);
            Ok(rustix::fs::fallocate(&f, flags, *off, *len)?)
        }
        Op::MmapWrite(x, off, n, seed) => mmap_write(&p(x), *off, &noise(*n, *seed)),
        Op::Commit | Op::Reset(_) | Op::Branch | Op::Switch(_) => Ok(()),
    }
}

/// What a directory shows: per path its kind, mode, size, links and
/// content (times aside: a copy's differ).
fn shown(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let what = if md.is_dir() {
                todo.push(p.clone());
                "dir".to_string()
            } else if md.is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                let data = fs::read(&p).unwrap();
                format!(
                    "{} links {} {}",
                    data.len(),
                    md.nlink(),
                    blake3::hash(&data).to_hex()
                )
            };
            out.push(format!("{rel} {:o} {what}", md.mode() & 0o7777));
        }
    }
    out.sort();
    out
}

/// Checks SEEK_DATA and SEEK_HOLE on every file under `dir`: they walk
/// the file from 0 to its size, and every hole reads as zeros.
fn holes_read_as_zeros(dir: &Path) -> Result<(), TestCaseError> {
    use rustix::fs::SeekFrom;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p);
                continue;
            }
            if !md.is_file() {
                continue;
            }
            let bytes = fs::read(&p).unwrap();
            let f = fs::File::open(&p).unwrap();
            let size = bytes.len() as u64;
            let mut at = 0;
            while at < size {
                let data = match rustix::fs::seek(&f, SeekFrom::Data(at)) {
                    Ok(n) => n,
                    Err(rustix::io::Errno::NXIO) => size,
                    Err(e) => panic!("{p:?}: SEEK_DATA: {e}"),
                };
                prop_assert!(data >= at && data <= size, "{p:?}: data {data} at {at}");
                prop_assert!(
                    bytes[at as usize..data as usize].iter().all(|b| *b == 0),
                    "{p:?}: the hole {at}..{data} holds data"
                );
                if data == size {
                    break;
                }
                let hole = rustix::fs::seek(&f, SeekFrom::Hole(data)).unwrap();
                prop_assert!(hole > data && hole <= size, "{p:?}: hole {hole} at {data}");
                at = hole;
            }
        }
    }
    Ok(())
}

/// A copy of `from` at `to` as a commit holds it: each name a file of its
/// own (a commit records no hard links).
fn copy(from: &Path, to: &Path) {
    cp(from, to, &["-dR", "--preserve=mode", "--no-preserve=links"]);
}

/// A copy of `from` at `to` with its hard links, as a branch's kept
/// uncommitted changes are.
fn copy_linked(from: &Path, to: &Path) {
    cp(from, to, &["-dR", "--preserve=mode,links"]);
}

fn cp(from: &Path, to: &Path, how: &[&str]) {
    let _ = fs::remove_dir_all(to);
    let st = Command::new("cp")
        .args(how)
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

struct World<'a> {
    t: &'a Env,
    mount: PathBuf,
    local: PathBuf,
    /// Each commit's content, as a local copy.
    snaps: PathBuf,
    /// The commits of each branch, oldest first.
    branches: BTreeMap<String, Vec<String>>,
    current: String,
    /// Where the branches not checked out keep what they showed.
    kept: PathBuf,
}

/// Branches made so far, by every sequence: each gets a new name.
static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl World<'_> {
    fn snap(&self, id: &str) -> PathBuf {
        self.snaps.join(id)
    }

    fn commit(&mut self) -> Result<(), TestCaseError> {
        let r = self.t.dot(&["commit", "-m", "step"]);
        prop_assert!(r.code == 0, "commit: {}", r.err);
        let id = self.t.head("app").unwrap();
        copy(&self.local, &self.snap(&id));
        self.branches.get_mut(&self.current).unwrap().push(id);
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Commit => self.commit()?,
            Op::Reset(i) => {
                let ids = &self.branches[&self.current];
                let id = ids[i % ids.len()].clone();
                let r = self.t.dot(&["reset", "--hard", &id]);
                prop_assert!(r.code == 0, "reset: {}", r.err);
                copy(&self.snap(&id), &self.local);
                // What follows the commit on this branch is gone.
                let ids = self.branches.get_mut(&self.current).unwrap();
                let keep = ids.iter().position(|x| *x == id).unwrap() + 1;
                ids.truncate(keep);
            }
            Op::Branch => {
                let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!("b{n}");
                let r = self.t.dot(&["checkout", "-b", &name]);
                prop_assert!(r.code == 0, "checkout -b: {}", r.err);
                let ids = self.branches[&self.current].clone();
                self.branches.insert(name.clone(), ids);
                self.current = name;
            }
            Op::Switch(i) => {
                if i % 2 == 0 {
                    self.commit()?;
                }
                let names: Vec<String> = self.branches.keys().cloned().collect();
                let name = names[(i / 2) % names.len()].clone();
                if name != self.current {
                    let r = self.t.dot(&["checkout", &name]);
                    prop_assert!(r.code == 0, "checkout: {}", r.err);
                    copy_linked(&self.local, &self.kept.join(&self.current));
                    let back = self.kept.join(&name);
                    if back.exists() {
                        copy_linked(&back, &self.local);
                        fs::remove_dir_all(&back).unwrap();
                    } else {
                        let id = self.branches[&name].last().unwrap().clone();
                        copy(&self.snap(&id), &self.local);
                    }
                    self.current = name;
                }
            }
            _ => {
                let want = apply(&self.local, op);
                let got = apply(&self.mount, op);
                prop_assert_eq!(
                    got.is_ok(),
                    want.is_ok(),
                    "{:?}: mount {:?}, local {:?}",
                    op,
                    got,
                    want
                );
            }
        }
        prop_assert_eq!(shown(&self.mount), shown(&self.local), "after {:?}", op);
        holes_read_as_zeros(&self.mount)
    }
}

#[test]
fn random_operations_on_a_mount_match_a_local_directory() {
    let t = Env::new();
    t.dot(&["init", "app"]).ok();
    let dir = t.path("app");
    write(&dir.join("a"), &noise(250_000, 1));
    fs::create_dir(dir.join("b")).unwrap();
    write(&dir.join("b/a"), &noise(120_000, 2));
    write(&dir.join("b/c"), b"small\n");
    t.dot(&["commit", "-m", "seed"]).ok();
    let first = t.head("app").unwrap();
    let snaps = t.tmp.path().join("snaps");
    fs::create_dir(&snaps).unwrap();
    copy(&dir, &snaps.join(&first));
    t.dot(&["mount", "app"]).ok();

    let cases = std::env::var("DOT_DIFF_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    // A failure names its seed; DOT_DIFF_SEED runs the same sequences.
    let seed: u64 = std::env::var("DOT_DIFF_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let result = runner.run(&prop::collection::vec(op(), 1..30), |ops| {
        // Each sequence starts on master at the seed commit.
        let r = t.dot(&["reset", "--hard", "HEAD"]);
        prop_assert!(r.code == 0, "{}", r.err);
        let r = t.dot(&["checkout", "master"]);
        prop_assert!(r.code == 0 || r.err.contains("already on"), "{}", r.err);
        let r = t.dot(&["reset", "--hard", &first]);
        prop_assert!(r.code == 0, "{}", r.err);
        let mut w = World {
            t: &t,
            mount: dir.clone(),
            local: t.tmp.path().join("local"),
            snaps: snaps.clone(),
            branches: BTreeMap::from([("master".to_string(), vec![first.clone()])]),
            current: "master".into(),
            kept: t.tmp.path().join("kept"),
        };
        let _ = fs::remove_dir_all(&w.kept);
        fs::create_dir_all(&w.kept).unwrap();
        copy(&snaps.join(&first), &w.local);
        prop_assert_eq!(shown(&w.mount), shown(&w.local), "at the start");
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = w.step(op) {
                eprintln!("failed at step {i} of {ops:?}");
                return Err(e);
            }
        }
        // What every branch keeps is dropped.
        let r = t.dot(&["reset", "--hard", "HEAD"]);
        prop_assert!(r.code == 0, "{}", r.err);
        for e in fs::read_dir(&w.kept).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            for args in [vec!["checkout", &name], vec!["reset", "--hard", "HEAD"]] {
                let r = t.dot(&args);
                prop_assert!(r.code == 0, "{args:?}: {}", r.err);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        let log = fs::read_to_string(t.home.join("daemon.log")).unwrap_or_default();
        panic!("{e} (DOT_DIFF_SEED={seed})\ndaemon log:\n{log}");
    }
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    t.dot(&["unmount", "app"]).ok();
    t.fsck_ok();
}
