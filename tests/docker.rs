//! The Docker volume plugin against a real dockerd (started here with the
//! vfs storage driver when none answers) and an image built locally from
//! the host's PostgreSQL (scripts/docker-image.sh): the seeds' walkthrough
//! and what it leans on. Docker has one plugin named dot, so these tests
//! take turns.
#![cfg(target_os = "linux")]

mod util;

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use util::*;

const PLUGIN: &str = "/run/docker/plugins/dot.sock";
const IMAGE: &str = "dot-postgres:15";

/// Runs docker; its stdout, or a panic with what it said.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker runs (scripts/deps.sh installs docker.io)");
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs docker expecting a failure; what it said.
fn docker_fails(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(!out.status.success(), "docker {} succeeded", args.join(" "));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A dockerd and the test image, once per run; then this test's turn.
fn turn() -> MutexGuard<'static, ()> {
    static READY: OnceLock<()> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    READY.get_or_init(|| {
        let up = || {
            Command::new("docker")
                .args(["info"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !up() {
            // In the background, outliving the tests, as a system's
            // dockerd does.
            let log = std::env::temp_dir().join("dot-test-dockerd.log");
            let started = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none >{} 2>&1 </dev/null &",
                    log.display()
                ))
                .status()
                .expect("sh runs");
            assert!(started.success(), "dockerd did not start");
            let since = Instant::now();
            while !up() {
                assert!(
                    since.elapsed() < Duration::from_secs(60),
                    "dockerd did not start (scripts/deps.sh installs docker.io); see {}",
                    log.display()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-image.sh");
        let built = Command::new(script).status().unwrap();
        assert!(built.success(), "{script} failed");
    });
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// A dot home whose daemon serves Docker's plugin, and the containers and
/// volumes a test made, removed when it ends (before the daemon stops).
struct Scene {
    t: Env,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Scene {
    fn new() -> Scene {
        let t = Env::plain();
        let s = Scene {
            t,
            containers: Vec::new(),
            volumes: Vec::new(),
        };
        s.start_daemon();
        s
    }

    fn start_daemon(&self) {
        let r = self
            .t
            .cmd(&["daemon", "start"])
            .env("DOT_DOCKER_PLUGIN", PLUGIN)
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }

    /// Starts PostgreSQL in container `name` on volume `volume`, and
    /// waits until it answers.
    fn postgres(&mut self, name: &str, volume: &str) {
        self.start(name, volume, false);
        ready(name);
    }

    /// A container on `volume` (at /data) that only sleeps.
    fn sleeper(&mut self, name: &str, volume: &str) {
        self.start(name, volume, true);
    }

    fn start(&mut self, name: &str, volume: &str, sleeping: bool) {
        self.containers.push(name.into());
        self.volumes.push(volume.into());
        let args = run_args(name, volume, sleeping);
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn dot(&self, args: &[&str]) -> Run {
        self.t.dot(args)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", v])
                .output();
        }
    }
}

/// `docker run` in the background of container `name` on dot volume
/// `volume`: PostgreSQL on it as its data directory, or (`sleeping`) only
/// `sleep` with the volume at /data.
fn run_args(name: &str, volume: &str, sleeping: bool) -> Vec<String> {
    let mut args: Vec<String> = ["run", "-d", "--network", "none", "--name", name]
        .map(String::from)
        .to_vec();
    let at = if sleeping {
        args.extend(["--entrypoint", "sleep"].map(String::from));
        "/data"
    } else {
        "/var/lib/postgresql/data"
    };
    args.extend(["--volume-driver".into(), "dot".into(), "-v".into()]);
    args.push(format!("{volume}:{at}"));
    args.push(IMAGE.into());
    if sleeping {
        args.push("3600".into());
    }
    args
}

/// Waits until PostgreSQL in `container` accepts connections.
fn ready(container: &str) {
    let since = Instant::now();
    loop {
        let ok = Command::new("docker")
            .args(["exec", container, "pg_isready", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        if since.elapsed() > Duration::from_secs(90) {
            let logs = Command::new("docker").args(["logs", container]).output();
            panic!(
                "PostgreSQL in {container} did not start: {:?}",
                logs.map(|o| String::from_utf8_lossy(&o.stderr).to_string())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sql(container: &str, query: &str) -> String {
    docker(&["exec", container, "psql", "-qtAc", query])
}

fn started_at(container: &str) -> String {
    docker(&["inspect", "-f", "{{.State.StartedAt}}", container])
}

fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
}

/// The containers `dot list --json` shows for `dot`.
fn listed_containers(s: &Scene, dot: &str) -> Vec<String> {
    let list = s.dot(&["list", "--json"]).ok().json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == dot)
        .map(|d| {
            d["containers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn amcheck(container: &str) {
    docker(&[
        "exec",
        container,
        "pg_amcheck",
        "--install-missing",
        "--heapallindexed",
        "postgres",
    ]);
}

#[test]
fn the_seeds_postgres_walkthrough() {
    let _turn = turn();
    let mut s = Scene::new();
    s.postgres("walk-pg", "walk");
    assert_eq!(listed_containers(&s, "walk"), ["/walk-pg"]);
    let st = s.dot(&["status", "walk", "--json"]).ok().json();
    assert_eq!(st["working_state"], "mounted");
    assert_eq!(st["containers"][0], "/walk-pg");

    // Committed while the container runs: nothing is stopped.
    sql(
        "walk-pg",
        "create table t (x int primary key); insert into t values (1)",
    );
    let since = started_at("walk-pg");
    s.dot(&["commit", "-m", "one row", "walk"]).ok();
    sql("walk-pg", "insert into t values (2)");
    s.dot(&["commit", "-m", "two rows", "walk"]).ok();
    assert_eq!(
        started_at("walk-pg"),
        since,
        "a commit stopped the container"
    );
    sql("walk-pg", "insert into t values (3)");

    // --no-restart refuses while the container runs.
    let r = s
        .dot(&["reset", "--hard", "HEAD^", "--no-restart", "walk"])
        .typed();
    assert_eq!(r.code, 5, "{}", r.err);
    assert!(r.err.contains("/walk-pg"), "{}", r.err);
    assert_eq!(sql("walk-pg", "select count(*) from t"), "3");

    // Reset: the container is stopped, the data rolled back, the
    // container started again on it.
    let r = s.dot(&["reset", "--hard", "HEAD^", "walk"]).ok();
    assert!(r.out.contains("Stopped /walk-pg"), "{}", r.out);
    assert_ne!(started_at("walk-pg"), since);
    ready("walk-pg");
    assert_eq!(
        sql("walk-pg", "select string_agg(x::text, ',') from t"),
        "1"
    );
    amcheck("walk-pg");

    // A branch, and switches between branches.
    s.dot(&["checkout", "-b", "experiment", "walk"]).ok();
    sql("walk-pg", "insert into t values (40)");
    s.dot(&["commit", "-m", "on experiment", "walk"]).ok();
    let r = s.dot(&["checkout", "master", "walk"]).ok();
    assert!(r.out.contains("started it again"), "{}", r.out);
    ready("walk-pg");
    assert_eq!(sql("walk-pg", "select count(*) from t"), "1");
    s.dot(&["checkout", "experiment", "walk"]).ok();
    ready("walk-pg");
    assert_eq!(
        sql("walk-pg", "select string_agg(x::text, ',') from t"),
        "1,40"
    );
    amcheck("walk-pg");

    // docker volume inspect shows where the dot is.
    let v: serde_json::Value =
        serde_json::from_str(&docker(&["volume", "inspect", "walk"])).unwrap();
    let status = &v[0]["Status"];
    assert_eq!(status["branch"], "experiment");
    assert_eq!(status["head"].as_str().unwrap(), s.t.head("walk").unwrap());
    assert!(status["size"].as_u64().unwrap() > 10 << 20, "{status}");
    assert!(status["dirty_bytes"].is_u64(), "{status}");
    assert_eq!(v[0]["Driver"], "dot");
    s.t.fsck_ok();
}

#[test]
fn subdots_are_volumes_and_several_containers_share_a_dot() {
    let _turn = turn();
    let mut s = Scene::new();
    s.postgres("shop-orders", "shop.orders");
    s.postgres("shop-catalog", "shop.catalog");
    s.sleeper("shop-reader", "shop.orders");
    let mut users = listed_containers(&s, "shop");
    users.sort();
    assert_eq!(users, ["/shop-catalog", "/shop-orders", "/shop-reader"]);
    let ls = docker(&["volume", "ls", "-q", "--filter", "driver=dot"]);
    assert!(
        ls.contains("shop.orders") && ls.contains("shop.catalog"),
        "{ls}"
    );
    // The same files, seen from the second container on the subdot.
    let seen = docker(&["exec", "shop-reader", "cat", "/data/PG_VERSION"]);
    assert_eq!(seen, "15");

    // One commit holds both databases.
    sql(
        "shop-orders",
        "create table o (x int); insert into o values (1)",
    );
    sql(
        "shop-catalog",
        "create table c (x int); insert into c values (1)",
    );
    s.dot(&["commit", "-m", "both", "shop"]).ok();
    assert_eq!(s.t.commits("shop"), 1);
    sql("shop-orders", "insert into o values (2)");
    sql("shop-catalog", "insert into c values (2)");

    // A reset stops and starts every container using the dot.
    let r = s.dot(&["reset", "--hard", "HEAD", "shop"]).ok();
    for c in ["/shop-orders", "/shop-catalog", "/shop-reader"] {
        assert!(r.out.contains(c), "{}", r.out);
    }
    ready("shop-orders");
    ready("shop-catalog");
    assert!(running("shop-reader"));
    assert_eq!(sql("shop-orders", "select count(*) from o"), "1");
    assert_eq!(sql("shop-catalog", "select count(*) from c"), "1");
    amcheck("shop-orders");
    amcheck("shop-catalog");
}

#[test]
fn docker_volume_create_ls_inspect_and_rm() {
    let _turn = turn();
    let mut s = Scene::new();
    s.volumes.extend(["vol-new".into(), "vol-kept".into()]);
    docker(&["volume", "create", "-d", "dot", "vol-new"]);
    let st = s.dot(&["status", "vol-new", "--json"]).ok().json();
    assert_eq!(st["working_state"], "mounted");
    assert!(docker(&["volume", "ls", "-q"])
        .lines()
        .any(|l| l == "vol-new"));
    let v: serde_json::Value =
        serde_json::from_str(&docker(&["volume", "inspect", "vol-new"])).unwrap();
    assert_eq!(v[0]["Status"]["branch"], "master");
    assert!(v[0]["Status"]["head"].is_null());
    // Never committed: removed with its dot.
    docker(&["volume", "rm", "vol-new"]);
    let r = s.dot(&["status", "vol-new"]).typed();
    assert_ne!(r.code, 0);

    // With commits: refused, naming dot rm, and nothing is lost.
    s.sleeper("kept-writer", "vol-kept");
    docker(&["exec", "kept-writer", "sh", "-c", "echo kept > /data/f"]);
    s.dot(&["commit", "-m", "one", "vol-kept"]).ok();
    docker(&["rm", "-f", "kept-writer"]);
    let err = docker_fails(&["volume", "rm", "vol-kept"]);
    assert!(err.contains("dot rm vol-kept"), "{err}");
    assert_eq!(s.t.commits("vol-kept"), 1);
    let path = s.t.path("vol-kept");
    assert_eq!(std::fs::read(path.join("f")).unwrap(), b"kept\n");

    // Options dot does not know are refused, not ignored.
    let err = docker_fails(&["volume", "create", "-d", "dot", "-o", "size=1G", "vol-opt"]);
    assert!(err.contains("size"), "{err}");
}

#[test]
fn a_killed_daemon_comes_back_under_running_containers() {
    let _turn = turn();
    let mut s = Scene::new();
    s.postgres("crash-pg", "crash");
    sql("crash-pg", "create table t (x int)");
    for i in 0..50 {
        sql("crash-pg", &format!("insert into t values ({i})"));
    }
    s.t.kill_daemon();
    // The container's mount died with the daemon; a new daemon mounts
    // the dot again and restarts the container on it.
    s.start_daemon();
    let since = Instant::now();
    while !(running("crash-pg") && listed_containers(&s, "crash") == ["/crash-pg"]) {
        assert!(since.elapsed() < Duration::from_secs(60), "not restarted");
        std::thread::sleep(Duration::from_millis(200));
    }
    ready("crash-pg");
    // Every acknowledged transaction is there.
    assert_eq!(sql("crash-pg", "select count(*) from t"), "50");
    amcheck("crash-pg");
    s.dot(&["commit", "-m", "after the crash", "crash"]).ok();
    s.t.fsck_ok();
}

#[test]
fn a_stopped_container_is_left_stopped() {
    let _turn = turn();
    let mut s = Scene::new();
    s.postgres("idle-pg", "idle");
    sql("idle-pg", "create table t (x int)");
    s.dot(&["commit", "-m", "one", "idle"]).ok();
    sql("idle-pg", "insert into t values (1)");
    docker(&["stop", "idle-pg"]);
    assert!(listed_containers(&s, "idle").is_empty());
    let r = s.dot(&["reset", "--hard", "HEAD", "idle"]).ok();
    assert!(!r.out.contains("Stopped"), "{}", r.out);
    assert!(!running("idle-pg"));
    // Docker keeps the volume of a stopped container.
    let err = docker_fails(&["volume", "rm", "idle"]);
    assert!(err.contains("in use"), "{err}");
    docker(&["start", "idle-pg"]);
    ready("idle-pg");
    assert_eq!(sql("idle-pg", "select count(*) from t"), "0");
}

/// One request to the plugin socket, as dockerd sends it; the answer's
/// body.
fn ask_plugin(path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(PLUGIN).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[test]
fn the_plugin_answers_while_the_daemon_starts() {
    let _turn = turn();
    let t = Env::plain();
    t.dot(&["init", "slow"]).ok();
    write(&t.path("slow").join("f"), b"x\n");
    // A command holding the store for a while: the daemon started
    // meanwhile waits for it before it can serve.
    let commit = t
        .cmd(&["commit", "-m", "one", "slow"])
        .env("DOT_TEST_COMMIT_PAUSE_MS", "4000")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let daemon = t
        .cmd(&["daemon", "start"])
        .env("DOT_DOCKER_PLUGIN", PLUGIN)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let since = Instant::now();
    while std::os::unix::net::UnixStream::connect(PLUGIN).is_err() {
        assert!(since.elapsed() < Duration::from_secs(3), "no plugin socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Activate is answered at once, while the store is still held.
    let asked = Instant::now();
    let answer = ask_plugin("/Plugin.Activate", "");
    assert!(answer.contains("VolumeDriver"), "{answer}");
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert!(
        t.dot(&["daemon", "status"]).code != 0,
        "the daemon serves already"
    );
    // A volume request waits for the daemon, then is answered.
    let answer = ask_plugin("/VolumeDriver.List", "{}");
    assert!(answer.contains(r#""Name":"slow""#), "{answer}");
    assert!(util::to_run(commit.wait_with_output().unwrap()).code == 0);
    assert!(daemon.wait_with_output().unwrap().status.success());
}

#[test]
fn containers_started_at_once_on_subdots_of_a_new_dot_all_start() {
    let _turn = turn();
    let mut s = Scene::new();
    let subs = ["a", "b", "c"];
    for sub in subs {
        s.containers.push(format!("burst-{sub}"));
        s.volumes.push(format!("burst.{sub}"));
    }
    // As Docker Compose starts an application's containers.
    let started: Vec<_> = subs
        .into_iter()
        .map(|sub| {
            std::thread::spawn(move || {
                Command::new("docker")
                    .args(run_args(
                        &format!("burst-{sub}"),
                        &format!("burst.{sub}"),
                        true,
                    ))
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for (sub, t) in subs.iter().zip(started) {
        let out = t.join().unwrap();
        assert!(
            out.status.success(),
            "{sub}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let st = s.dot(&["status", "burst", "--json"]).ok().json();
    assert_eq!(st["subdots"].as_object().unwrap().len(), 3, "{st}");
    let mut users = listed_containers(&s, "burst");
    users.sort();
    assert_eq!(users, ["/burst-a", "/burst-b", "/burst-c"]);
    docker(&["exec", "burst-a", "sh", "-c", "echo a > /data/f"]);
    s.dot(&["commit", "-m", "three subdots", "burst"]).ok();
    assert_eq!(
        std::fs::read(s.t.path("burst.a").join("f")).unwrap(),
        b"a\n"
    );
}
