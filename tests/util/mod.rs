//! Shared helpers for integration tests: each test gets its own DOT_HOME in
//! a temp directory and runs the real `dot` binary.
#![allow(dead_code)]

pub mod craft;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    /// Whether a daemon serves `home` (DOT_TEST_DAEMON=1: the whole suite
    /// runs again through daemons, with the same assertions).
    pub daemon: bool,
}

/// Whether this run of the suite goes through daemons.
pub fn through_daemon() -> bool {
    std::env::var("DOT_TEST_DAEMON").is_ok_and(|v| v == "1")
}

impl Drop for Env {
    /// Stops the daemon serving this home, whether the test started it or
    /// a command did (`dot mount` starts one).
    fn drop(&mut self) {
        if self.daemon || self.home.join("daemon.sock").exists() {
            let _ = self.cmd(&["daemon", "stop", "--force"]).output();
        }
    }
}

pub struct Run {
    pub out: String,
    pub err: String,
    pub code: i32,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.out, self.err
        );
        self
    }
    pub fn fails(self) -> Run {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout: {}\nstderr: {}",
            self.out, self.err
        );
        assert!(
            self.err.starts_with("dot: "),
            "error must start with 'dot: ': {:?}",
            self.err
        );
        self
    }
    /// Failed with the exit code of an error kind (README): not 1 (an
    /// unforeseen error), not a panic (101), not a signal (-1).
    pub fn typed(self) -> Run {
        let r = self.fails();
        assert!(
            (2..=10).contains(&r.code) || r.code == 130,
            "expected an error kind's exit code, got {}: {}",
            r.code,
            r.err
        );
        r
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.out))
    }
}

pub fn dot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dot"))
}

impl Env {
    /// A name no other Env of this run has (its temporary directory's),
    /// for a directory of its own on a shared server.
    pub fn unique_name(&self) -> String {
        self.tmp
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    /// A fresh home, served by a daemon when the suite runs through
    /// daemons.
    pub fn new() -> Env {
        let mut env = Env::plain();
        if through_daemon() {
            env.start_daemon();
        }
        env
    }

    /// A fresh home that no daemon serves, whatever the run.
    pub fn plain() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("dot-test")
            .tempdir_in(scratch())
            .expect("tempdir");
        let home = tmp.path().join("home");
        Env {
            tmp,
            home,
            daemon: false,
        }
    }

    /// The pid of the daemon serving this home.
    pub fn daemon_pid(&self) -> u32 {
        let st = to_run(self.cmd(&["daemon", "status", "--json"]).output().unwrap()).ok();
        st.json()["pid"].as_u64().unwrap() as u32
    }

    /// Kills the daemon serving this home with SIGKILL and waits until its
    /// socket is dead.
    pub fn kill_daemon(&self) {
        let pid = self.daemon_pid();
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        self.wait_daemon_gone();
    }

    fn wait_daemon_gone(&self) {
        while self
            .cmd(&["daemon", "status"])
            .output()
            .unwrap()
            .status
            .success()
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// After the daemon was killed: waits until its socket is dead, then
    /// starts a new one.
    pub fn restart_daemon(&self) {
        self.wait_daemon_gone();
        let r = to_run(self.cmd(&["daemon", "start"]).output().expect("run dot"));
        assert_eq!(r.code, 0, "daemon start: {}", r.err);
    }

    /// Starts a daemon serving this home.
    pub fn start_daemon(&mut self) {
        self.start_daemon_with(&[]);
    }

    /// Starts a daemon with `env` added to its environment (debug-build
    /// test hooks the daemon reads itself). None may run yet: `daemon
    /// start` would leave it running without `env` (use `Env::plain`).
    pub fn start_daemon_with(&mut self, env: &[(&str, &str)]) {
        let running = self.cmd(&["daemon", "status"]).output().unwrap();
        assert!(
            env.is_empty() || !running.status.success(),
            "a daemon already serves this home: its environment lacks {env:?}"
        );
        let mut c = self.cmd(&["daemon", "start"]);
        c.envs(env.iter().copied());
        let r = to_run(c.output().expect("run dot"));
        assert_eq!(r.code, 0, "daemon start: {}", r.err);
        self.daemon = true;
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(dot_bin());
        c.args(args)
            .env("DOT_HOME", &self.home)
            .env("DOT_AUTHOR_NAME", "Test Author")
            .env("DOT_AUTHOR_EMAIL", "test@example.com")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("DOT_HTTP_USER")
            .env_remove("DOT_HTTP_PASSWORD")
            .env_remove("DOT_HTTP_TOKEN")
            // Only the Docker tests' daemons serve Docker.
            .env("DOT_DOCKER_PLUGIN", "off")
            .stdin(Stdio::null());
        c
    }

    pub fn dot(&self, args: &[&str]) -> Run {
        to_run(self.cmd(args).output().expect("run dot"))
    }

    pub fn path(&self, spec: &str) -> PathBuf {
        PathBuf::from(self.dot(&["path", spec]).ok().out.trim())
    }

    pub fn head(&self, dot: &str) -> Option<String> {
        let log = self.dot(&["log", "--json", dot]).ok().json();
        log.as_array()
            .unwrap()
            .first()
            .map(|c| c["commit"].as_str().unwrap().to_string())
    }

    /// How many commits `dot log` shows for the dot's current branch.
    pub fn commits(&self, dot: &str) -> usize {
        self.dot(&["log", "--json", dot])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len()
    }

    pub fn fsck_ok(&self) {
        let r = self.dot(&["fsck"]);
        assert_eq!(
            r.code, 0,
            "fsck failed\nstdout: {}\nstderr: {}",
            r.out, r.err
        );
    }
}

pub fn to_run(o: Output) -> Run {
    Run {
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code().unwrap_or(-1),
    }
}

/// Where test data goes: a real disk (not tmpfs), so holes and mmap behave
/// as on users' machines.
pub fn scratch() -> PathBuf {
    let p = std::env::var_os("DOT_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&p).expect("scratch dir");
    p
}

pub fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// When running as root, makes `path` (recursively) belong to `nobody`, the
/// user permission tests run dot as.
pub fn give_to_nobody(path: &Path) {
    if is_root() {
        let st = std::process::Command::new("chown")
            .args(["-R", "nobody"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A recursive listing of a directory: (relative path, kind, mode, uid,
/// gid, mtime ns, size, content hash or link target) for comparisons.
pub fn snapshot(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if md.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_file() {
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string()
            } else {
                String::new()
            };
            let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
            out.push(format!(
                "{rel} {:o} {} {} {} {} {what}",
                md.mode(),
                md.uid(),
                md.gid(),
                if md.is_dir() { 0 } else { mtime },
                if md.is_dir() { 0 } else { md.size() }
            ));
            if md.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// A server started once per test binary, on a free port of 127.0.0.1,
/// killed when the test process exits.
pub struct Server {
    pub port: u16,
    pub root: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start(mut cmd: Command, port: u16, what: &str) {
    // SAFETY: prctl is async-signal-safe; it asks the kernel to kill the
    // server when the thread that started it dies, and that thread lives
    // as long as the test process. (Linux only: elsewhere a server can
    // outlive an aborted test run.)
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        let ok = child.is_ok();
        tx.send(child).unwrap();
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    let mut child = rx
        .recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot start {what} (run scripts/deps.sh): {e}"));
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::mem::forget(child);
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what} did not start listening on port {port}");
}

/// moto's S3 server (from PyPI). It does not check signatures, so any key
/// works.
pub fn s3() -> &'static Server {
    static S3: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
    S3.get_or_init(|| {
        let port = free_port();
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        start(c, port, "the S3 server (python3 -m moto.server)");
        Server {
            port,
            root: PathBuf::new(),
        }
    })
}

/// Creates an S3 bucket on the test server and returns its name.
pub fn s3_bucket() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "dots-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let resp = s3_request("PUT", &format!("/{name}"));
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    name
}

/// One unsigned request to the test S3 server (moto checks no
/// signatures); returns the whole response.
pub fn s3_request(method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let port = s3().port;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

/// Removes `dir` when the test process exits (a server's root lives in a
/// static, which is never dropped).
fn remove_at_exit(dir: PathBuf) {
    static DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn remove_all() {
        let dirs = DIRS.lock().map(|d| d.clone()).unwrap_or_default();
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let mut dirs = DIRS.lock().unwrap();
    if dirs.is_empty() {
        // SAFETY: registers a plain function without arguments; exit()
        // runs it once, after the tests (passed or failed).
        unsafe { libc::atexit(remove_all) };
    }
    dirs.push(dir);
}

/// `rclone serve webdav` over a scratch directory; with `auth`, it asks for
/// user "pete", password "s3cret".
pub fn webdav(auth: bool) -> &'static Server {
    static PLAIN: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
    static AUTH: std::sync::OnceLock<Server> = std::sync::OnceLock::new();
    let cell = if auth { &AUTH } else { &PLAIN };
    cell.get_or_init(|| {
        let port = free_port();
        let root = tempfile::Builder::new()
            .prefix("dot-dav")
            .tempdir_in(scratch())
            .expect("tempdir")
            .keep();
        remove_at_exit(root.clone());
        let mut c = Command::new("rclone");
        c.args(["serve", "webdav"])
            .arg(&root)
            .args(["--addr", &format!("127.0.0.1:{port}")]);
        if auth {
            c.args(["--user", "pete", "--pass", "s3cret"]);
        }
        start(c, port, "the WebDAV server (rclone serve webdav)");
        Server { port, root }
    })
}

/// A loopback HTTP/1.1 proxy in front of 127.0.0.1:`target` that drops
/// the request headers named in `drop` (lowercase): the same server, as
/// one that ignores them would behave. Returns the proxy's port.
pub fn dropping_proxy(target: u16, drop: &'static [&'static str]) -> u16 {
    dropping_proxy_at(0, target, drop)
}

/// `dropping_proxy` on a given port (0: any free one).
pub fn dropping_proxy_at(port: u16, target: u16, drop: &'static [&'static str]) -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("proxy port");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = relay(client, target, drop);
            });
        }
    });
    port
}

/// Copies responses back as they are, and requests forward one at a time,
/// without the dropped headers.
fn relay(client: std::net::TcpStream, target: u16, drop: &[&str]) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut server = std::net::TcpStream::connect(("127.0.0.1", target))?;
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let (mut length, mut chunked) = (0u64, false);
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let lower = String::from_utf8_lossy(&line).to_ascii_lowercase();
            if drop.iter().any(|h| lower.starts_with(&format!("{h}:"))) {
                continue;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            let end = line == b"\r\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        server.write_all(&head)?;
        if chunked {
            loop {
                let mut size_line = Vec::new();
                reader.read_until(b'\n', &mut size_line)?;
                server.write_all(&size_line)?;
                let text = String::from_utf8_lossy(&size_line);
                let size = u64::from_str_radix(text.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut body = (&mut reader).take(size + 2);
                std::io::copy(&mut body, &mut server)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = (&mut reader).take(length);
            std::io::copy(&mut body, &mut server)?;
        }
    }
}
