//! A real PostgreSQL (Debian's packages) on a dot working directory: initdb,
//! load data, stop, commit, change data, reset, start again, and the first
//! state's rows are back.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::Env;

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("PostgreSQL server binaries not found under /usr/lib/postgresql; install Debian's postgresql package (the README's setup does)"))
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg(tool: &str, args: &[&str]) -> util::Run {
    let bin = pg_bin().join(tool);
    let mut c = if util::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(args);
    util::to_run(c.output().unwrap())
}

struct Server<'a> {
    data: &'a Path,
    sock: String,
    port: String,
}

impl Server<'_> {
    fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=''", self.port, self.sock);
        let log = format!("{}/pg.log", self.sock);
        let r = pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "start",
            ],
        );
        assert_eq!(
            r.code,
            0,
            "pg_ctl start failed: {}{}\n{}",
            r.out,
            r.err,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    /// Stops the server and waits until its postmaster has exited (pg_ctl
    /// returns once postmaster.pid is gone, a moment earlier): a commit of
    /// a running server holds that pid, and PostgreSQL started on it
    /// refuses while the pid lives.
    fn stop(&self) {
        let pid = self.postmaster();
        pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        )
        .ok();
        if let Some(pid) = pid {
            wait_gone(&pid);
        }
    }
    /// The postmaster's pid, from postmaster.pid.
    fn postmaster(&self) -> Option<String> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
    }
    fn sql(&self, sql: &str) -> String {
        psql(&self.sock, &self.port, sql)
            .ok()
            .out
            .trim()
            .to_string()
    }
    /// pg_amcheck --heapallindexed of the database `postgres`.
    fn amcheck(&self) -> util::Run {
        pg(
            "pg_amcheck",
            &[
                "-h",
                &self.sock,
                "-p",
                &self.port,
                "-U",
                "postgres",
                "--heapallindexed",
                "--install-missing",
                "postgres",
            ],
        )
    }
}

fn psql(sock: &str, port: &str, sql: &str) -> util::Run {
    pg(
        "psql",
        &[
            "-h", sock, "-p", port, "-U", "postgres", "-d", "postgres", "-Atqc", sql,
        ],
    )
}

/// Waits until process `pid` has exited.
fn wait_gone(pid: &str) {
    let proc_dir = Path::new("/proc").join(pid);
    while proc_dir.exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A dot `pg` (mounted, or a plain directory) initialized as a PostgreSQL
/// data directory: the directory and the socket directory.
fn cluster(t: &Env, mounted: bool) -> (PathBuf, PathBuf) {
    t.dot(&["init", "pg"]).ok();
    if mounted {
        t.dot(&["mount", "pg"]).ok();
    }
    let data = t.path("pg");
    let sock = postgres_may_use(t, &data);
    let data_arg = data.to_str().unwrap();
    let mut args = vec!["-D", data_arg, "-U", "postgres", "--auth=trust"];
    if !mounted {
        // What a plain directory holds is committed stopped: no need to
        // wait for flushes.
        args.push("--no-sync");
    }
    pg("initdb", &args).ok();
    (data, sock)
}

/// Lets PostgreSQL (run as postgres when we are root) use the dot's
/// directory `data` and a socket directory, which it returns.
fn postgres_may_use(t: &Env, data: &Path) -> PathBuf {
    let sock = t.tmp.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    if util::is_root() {
        for p in [
            t.tmp.path(),
            &t.home,
            &t.home.join("work"),
            &t.home.join("work/pg"),
        ] {
            Command::new("chmod").arg("755").arg(p).status().unwrap();
        }
        Command::new("chmod")
            .args(["1777", util::scratch().to_str().unwrap()])
            .status()
            .unwrap();
        let r = Command::new("chown")
            .args([
                "postgres:postgres",
                data.to_str().unwrap(),
                sock.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    sock
}

#[test]
fn postgres_state_comes_back_after_reset() {
    let t = Env::new();
    let (data, sock) = cluster(&t, false);
    let server = Server {
        data: &data,
        sock: sock.to_str().unwrap().to_string(),
        port: (20000 + std::process::id() % 20000).to_string(),
    };

    server.start();
    server.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts SELECT i, i * 10 FROM generate_series(1, 20000) i;");
    assert_eq!(
        server.sql("SELECT count(*), sum(balance) FROM accounts"),
        "20000|2000100000"
    );
    server.stop();
    t.dot(&["commit", "-m", "20000 accounts"]).ok();

    server.start();
    server.sql("DELETE FROM accounts WHERE id > 100; UPDATE accounts SET balance = 0; CREATE TABLE audit (x text); INSERT INTO audit VALUES ('changed');");
    assert_eq!(
        server.sql("SELECT count(*), sum(balance) FROM accounts"),
        "100|0"
    );
    server.stop();
    let diff = t.dot(&["diff", "--json"]).ok().json();
    assert_eq!(diff["clean"], false);
    let wrecked = t
        .dot(&["commit", "-m", "wrecked"])
        .ok()
        .out
        .trim()
        .to_string();

    t.dot(&["reset", "--hard", "HEAD^"]).ok();
    server.start();
    assert_eq!(
        server.sql("SELECT count(*), sum(balance) FROM accounts"),
        "20000|2000100000"
    );
    assert_eq!(
        server.sql("SELECT count(*) FROM pg_tables WHERE tablename = 'audit'"),
        "0"
    );
    server.stop();

    // The reset left the second commit out of the log; its id still
    // brings it back.
    assert_eq!(t.commits("pg"), 1);
    t.dot(&["reset", "--hard", &wrecked[..12]]).ok();
    server.start();
    assert_eq!(
        server.sql("SELECT count(*), sum(balance) FROM accounts"),
        "100|0"
    );
    server.stop();
    t.fsck_ok();
}

/// PostgreSQL under pgbench on a mounted dot, committed while it writes:
/// every commit, reset to and started, recovers and passes pg_amcheck
/// --heapallindexed with all its accounts.
#[test]
fn postgres_on_a_mount_is_committed_while_it_runs() {
    let t = Env::new();
    let (data, sock) = cluster(&t, true);
    let server = Server {
        data: &data,
        sock: sock.to_str().unwrap().to_string(),
        port: (20000 + (std::process::id() + 7) % 20000).to_string(),
    };
    server.start();
    let bench = |args: &[&str]| {
        let mut all = vec!["-h", &server.sock, "-p", &server.port, "-U", "postgres"];
        all.extend_from_slice(args);
        all.push("postgres");
        pg("pgbench", &all)
    };
    bench(&["-i", "-s", "2", "-q"]).ok();

    // pgbench runs while three commits are taken.
    let runner = {
        let sock = server.sock.clone();
        let port = server.port.clone();
        std::thread::spawn(move || {
            pg(
                "pgbench",
                &[
                    "-h", &sock, "-p", &port, "-U", "postgres", "-c", "4", "-j", "2", "-T", "6",
                    "postgres",
                ],
            )
        })
    };
    let mut commits = Vec::new();
    for i in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let r = t
            .dot(&["commit", "-m", &format!("live {i}"), "--json"])
            .ok()
            .json();
        assert!(r["pause_ms"].as_u64().is_some(), "{r}");
        commits.push(r["commit"].as_str().unwrap().to_string());
    }
    let r = runner.join().unwrap().ok();
    assert!(r.out.contains("tps"), "{}", r.out);
    server.stop();
    // Every transaction pgbench saw committed is on the mount (each adds
    // a history row), whatever the commits' freezes did meanwhile.
    let processed = r
        .out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or_else(|| panic!("{}", r.out))
        .to_string();
    server.start();
    assert_eq!(
        server.sql("SELECT count(*) FROM pgbench_history"),
        processed
    );
    let check = server.amcheck();
    assert_eq!(check.code, 0, "pg_amcheck now: {}{}", check.out, check.err);
    server.stop();

    for id in &commits {
        t.dot(&["reset", "--hard", id]).ok();
        server.start();
        assert_eq!(
            server.sql("SELECT count(*) FROM pgbench_accounts"),
            "200000",
            "at {id}"
        );
        let check = server.amcheck();
        assert_eq!(
            check.code, 0,
            "pg_amcheck at {id}: {}{}",
            check.out, check.err
        );
        server.stop();
    }
    t.dot(&["reset", "--hard", "HEAD"]).ok();
    t.dot(&["unmount", "pg"]).ok();
    t.fsck_ok();
}

/// kill -9 of the daemon while PostgreSQL writes on the mount, then a
/// restart: every transaction PostgreSQL acknowledged is there, and the
/// database recovers and passes pg_amcheck.
#[test]
fn postgres_keeps_what_it_acknowledged_when_the_daemon_is_killed() {
    let t = Env::new();
    let (data, sock) = cluster(&t, true);
    let server = Server {
        data: &data,
        sock: sock.to_str().unwrap().to_string(),
        port: (20000 + (std::process::id() + 13) % 20000).to_string(),
    };
    server.start();
    server.sql("CREATE TABLE acked (n int PRIMARY KEY, pad text)");
    t.dot(&["commit", "-m", "empty table"]).ok();

    // One transaction per psql: when psql succeeds, the row is durable.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (sock, port, acked) = (server.sock.clone(), server.port.clone(), acked.clone());
        std::thread::spawn(move || {
            for n in 1.. {
                let sql = format!("INSERT INTO acked VALUES ({n}, repeat('x', 2000))");
                if psql(&sock, &port, &sql).code != 0 {
                    return;
                }
                acked.store(n, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let postmaster = server.postmaster().unwrap();
    t.kill_daemon();
    // PostgreSQL meets a dead mount: it is stopped as a crash would.
    Command::new("pkill")
        .args(["-9", "-P", &postmaster])
        .status()
        .unwrap();
    Command::new("kill")
        .args(["-9", &postmaster])
        .status()
        .unwrap();
    writer.join().unwrap();
    let last = acked.load(std::sync::atomic::Ordering::SeqCst);
    wait_gone(&postmaster);

    t.restart_daemon();
    server.start();
    let max: u64 = server
        .sql("SELECT coalesce(max(n), 0) FROM acked")
        .parse()
        .unwrap();
    assert!(
        max >= last,
        "PostgreSQL acknowledged {last} rows, {max} came back"
    );
    assert_eq!(server.sql("SELECT count(*) = max(n) FROM acked"), "t");
    let check = server.amcheck();
    assert_eq!(check.code, 0, "pg_amcheck: {}{}", check.out, check.err);
    server.stop();
    t.dot(&["commit", "-m", "after the crash"]).ok();
    t.dot(&["unmount", "pg"]).ok();
    t.fsck_ok();
}
