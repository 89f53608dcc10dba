//! The daemon: owns a DOT_HOME's store and serves every `dot` command over
//! a unix socket in it (`daemon.sock`, mode 0600, never TCP), HTTP/1.1 with
//! JSON bodies (docs/design.md, "Serving").
//!
//! Routes: `GET /v1/version`; `GET /v1/status`; `POST /v1/stop` with a
//! `StopRequest`; `POST /v1/call` with a `Call`, answered with a chunked
//! stream of `Event`s as JSON lines (progress, then the outcome), one call
//! per connection. A call must carry `X-Dot-Version` equal to the daemon's.
//! Only the owner of DOT_HOME and root are served. Each connection has a
//! thread; a call's connection closing (the client was interrupted)
//! cancels it.
//!
//! A daemon running as root also serves Docker's volume plugin protocol on
//! a second socket (docs/design.md 17; `serve::plugin` says what each
//! request does), bound before the store opens so that dockerd is answered
//! while the daemon starts.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api::*;
use super::exec::Executor;
use super::http;
use super::plugin::Plugin;
use crate::docker::plugin::{self, Answer, Request as Asked};
use crate::progress::Progress;
use crate::repo::{ErrorKind, Repo, RepoError};

/// The daemon's socket in a DOT_HOME.
pub(crate) fn socket_path(home: &Path) -> PathBuf {
    home.join("daemon.sock")
}

/// Set by SIGTERM and SIGINT: stop accepting, finish, exit.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

/// How long a client may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// What the daemon logs, as lines on stderr.
pub type Log = dyn Fn(String) + Sync;

/// A call in flight: from its arrival until its response is sent. Its
/// operation is done (and no longer shown as running) before the
/// response goes out, so a client that has its answer never sees it
/// still running; a stopping daemon waits for the response too.
struct Running {
    op: String,
    since: Instant,
    cancel: Arc<AtomicBool>,
    done: bool,
}

pub struct Server {
    exec: Executor,
    home: PathBuf,
    socket: PathBuf,
    owner: u32,
    started: Instant,
    served: AtomicU64,
    next: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
    stopping: AtomicBool,
    plugin: Plugin,
}

/// Serves `home` until stopped (`POST /v1/stop`, SIGTERM or SIGINT). The
/// store is opened first (so the socket answers only once it can serve),
/// then the socket is bound.
pub fn serve(home: &Path, log: &Log) -> Result<(), RepoError> {
    install_signal_handlers();
    // Docker's plugin socket answers while the store opens (17.1).
    let plugin = plugin_socket().and_then(|path| match bind_plugin(&path) {
        Ok(listener) => Some((path, listener)),
        Err(e) => {
            log(format!(
                "not serving Docker's volume plugin on {}: {e}",
                path.display()
            ));
            None
        }
    });
    let early = plugin
        .as_ref()
        .map(|(_, l)| Early::start(l.try_clone().expect("a listener clones")));
    let who = format!("the dot daemon (pid {})", std::process::id());
    let mut waiting = false;
    let repo = loop {
        match Repo::open(home, &who) {
            Ok(repo) => break repo,
            Err(e) if e.kind() == ErrorKind::Busy => {
                if !waiting {
                    log(format!("waiting for the store: {e}"));
                    waiting = true;
                }
                if SIGNALLED.load(Ordering::SeqCst) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    };
    let socket = socket_path(home);
    let listener = bind(&socket)?;
    let owner = std::fs::metadata(home)
        .map_err(|e| RepoError::io(format!("cannot read {}", home.display()), e))?
        .uid();
    // Mounts log from their own threads, after this call's `log` is gone:
    // to stderr, which is the daemon's log as `log` is.
    let mount_log: crate::serve::mounts::Log =
        std::sync::Arc::new(|line| eprintln!("dot daemon: {line}"));
    let server = Server {
        exec: Executor::serving(repo, mount_log),
        home: home.to_path_buf(),
        socket: socket.clone(),
        owner,
        started: Instant::now(),
        served: AtomicU64::new(0),
        next: AtomicU64::new(0),
        running: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        plugin: Plugin::default(),
    };
    log(format!(
        "dot {VERSION} serving {} on {} (pid {})",
        home.display(),
        socket.display(),
        std::process::id()
    ));
    if let Some((path, _)) = &plugin {
        log(format!(
            "serving Docker's volume plugin dot on {}",
            path.display()
        ));
    }
    let parked = early.map(Early::finish).unwrap_or_default();
    std::thread::scope(|s| {
        for (stream, asked) in parked {
            let server = &server;
            s.spawn(move || server.answer_plugin(stream, asked));
        }
        // Containers a killed or stopped daemon left on dead mounts get
        // the new ones (17.4).
        if plugin.is_some() && !server.exec.mounted().is_empty() {
            let server = &server;
            s.spawn(move || server.restart_containers(log));
        }
        // Stopping, the daemon keeps answering (status; calls are refused)
        // until its running calls are done, then the socket goes.
        loop {
            if SIGNALLED.swap(false, Ordering::SeqCst) {
                log("stopping on a signal".into());
                server.stopping.store(true, Ordering::SeqCst);
            }
            if server.stopping.load(Ordering::SeqCst)
                && server.running.lock().expect("running").is_empty()
            {
                break;
            }
            let (ours, docker) = readable(&listener, plugin.as_ref().map(|(_, l)| l), 100);
            if ours {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let server = &server;
                        s.spawn(move || server.handle(stream, log));
                    }
                    Err(e) => log(format!("accept failed: {e}")),
                }
            }
            if let (true, Some((_, l))) = (docker, &plugin) {
                if let Ok((stream, _)) = l.accept() {
                    let server = &server;
                    s.spawn(move || server.handle_plugin(stream));
                }
            }
        }
    });
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    if let Some((path, _)) = plugin {
        let _ = std::fs::remove_file(path);
    }
    // Test hook (debug builds, the daemon's own environment): let go of
    // the store this much after the socket went, as a slow close would.
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var("DOT_TEST_STOP_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    drop(server);
    log("stopped".into());
    Ok(())
}

/// Binds the socket, owner-only. A socket file nobody answers on is the
/// debris of a killed daemon and is replaced; one that answers is refused.
fn bind(socket: &Path) -> Result<UnixListener, RepoError> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(RepoError::Conflict(format!(
                "a dot daemon already serves this DOT_HOME on {}; see dot daemon status",
                socket.display()
            )));
        }
        let _ = std::fs::remove_file(socket);
    }
    // Created owner-only, then the mask is restored.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(socket);
    rustix::process::umask(old);
    let listener = bound.map_err(|e| {
        RepoError::io(
            format!(
                "cannot listen on {} (a socket path must be under 108 bytes; set DOT_HOME to a shorter path if it is longer)",
                socket.display()
            ),
            e,
        )
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| RepoError::io(format!("cannot protect {}", socket.display()), e))?;
    Ok(listener)
}

/// Whether a connection is waiting on `ours`, and on `docker`, within
/// `ms` milliseconds.
fn readable(ours: &UnixListener, docker: Option<&UnixListener>, ms: i64) -> (bool, bool) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = vec![PollFd::new(ours, PollFlags::IN)];
    if let Some(d) = docker {
        fds.push(PollFd::new(d, PollFlags::IN));
    }
    let wait = Timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    if !poll(&mut fds, Some(&wait)).is_ok_and(|n| n > 0) {
        return (false, false);
    }
    let ready = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
    (ready(0), ready(1))
}

/// Where the daemon serves Docker's volume plugin: `DOT_DOCKER_PLUGIN`
/// (a socket path, or `off`), else Docker's plugin directory when the
/// daemon runs as root on Linux.
fn plugin_socket() -> Option<PathBuf> {
    match std::env::var("DOT_DOCKER_PLUGIN") {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => (cfg!(target_os = "linux") && rustix::process::geteuid().is_root())
            .then(|| PathBuf::from("/run/docker/plugins/dot.sock")),
    }
}

/// Binds the plugin socket, making Docker's plugin directory if needed.
fn bind_plugin(path: &Path) -> Result<UnixListener, RepoError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| RepoError::io(format!("cannot create {}", dir.display()), e))?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(RepoError::Conflict(
            "another dot daemon serves it (Docker has one plugin named dot)".into(),
        ));
    }
    bind(path)
}

/// Reads one plugin request from a connection (whose peer must be root
/// or the home's owner); None when there is nothing to answer.
fn read_plugin_request(stream: &mut UnixStream, owner: u32) -> Option<Result<Asked, String>> {
    let allowed = peer(stream).uid.is_some_and(|u| u == owner || u == 0);
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let asked = match http::read_request(&mut reader) {
        Ok(Some((head, body))) if allowed => plugin::parse(&head.method, &head.path, &body),
        Ok(Some(_)) => Err("the dot daemon serves only root and its owner".into()),
        Ok(None) => return None,
        Err(e) => Err(e.to_string()),
    };
    let _ = stream.set_read_timeout(None);
    Some(asked)
}

fn plugin_response(stream: &mut UnixStream, answer: &Answer) {
    let body = serde_json::to_vec(answer).expect("answers serialize");
    let _ = http::write_response(
        stream,
        200,
        &[
            ("Content-Type", "application/vnd.docker.plugins.v1+json"),
            ("Connection", "close"),
        ],
        &body,
    );
}

/// Docker's plugin socket while the daemon starts: Plugin.Activate is
/// answered at once; other requests wait, parked, for the daemon.
struct Early {
    ready: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(UnixStream, Asked)>>,
}

impl Early {
    fn start(listener: UnixListener) -> Early {
        let ready = Arc::new(AtomicBool::new(false));
        let done = ready.clone();
        let owner = rustix::process::geteuid().as_raw();
        let thread = std::thread::spawn(move || {
            let mut parked = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if !readable(&listener, None, 50).0 {
                    continue;
                }
                let Ok((mut stream, _)) = listener.accept() else {
                    continue;
                };
                match read_plugin_request(&mut stream, owner) {
                    Some(Ok(Asked::Activate)) => {
                        plugin_response(&mut stream, &Plugin::default().answer_early())
                    }
                    Some(Ok(asked)) => parked.push((stream, asked)),
                    Some(Err(why)) => plugin_response(&mut stream, &Answer::error(why)),
                    None => {}
                }
            }
            parked
        });
        Early { ready, thread }
    }

    /// The requests that waited, once the daemon can answer them.
    fn finish(self) -> Vec<(UnixStream, Asked)> {
        self.ready.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

/// The process at the other end of a connection: its uid, and its pid
/// where the system says.
struct Peer {
    uid: Option<u32>,
    pid: Option<u32>,
}

fn peer(stream: &UnixStream) -> Peer {
    #[cfg(target_os = "linux")]
    {
        let cred = rustix::net::sockopt::socket_peercred(stream).ok();
        Peer {
            uid: cred.as_ref().map(|c| c.uid.as_raw()),
            pid: cred.map(|c| c.pid.as_raw_nonzero().get() as u32),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere only the socket's mode (0600) keeps other users out.
        let _ = stream;
        Peer {
            uid: Some(rustix::process::geteuid().as_raw()),
            pid: None,
        }
    }
}

fn install_signal_handlers() {
    extern "C" fn on_signal(_: libc::c_int) {
        SIGNALLED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        // A client or a log reader that went away is an error to handle,
        // not a reason to die.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

fn json_response(stream: &mut UnixStream, status: u16, body: &impl serde::Serialize) {
    let body = serde_json::to_vec(body).expect("reports serialize");
    let _ = http::write_response(
        stream,
        status,
        &[
            ("Content-Type", "application/json"),
            ("X-Dot-Version", VERSION),
        ],
        &body,
    );
}

fn error_response(stream: &mut UnixStream, status: u16, kind: ErrorKind, message: String) {
    json_response(stream, status, &ErrorReport::new(kind, message));
}

impl Server {
    /// A connection on Docker's plugin socket.
    fn handle_plugin(&self, mut stream: UnixStream) {
        match read_plugin_request(&mut stream, self.owner) {
            Some(Ok(asked)) => self.answer_plugin(stream, asked),
            Some(Err(why)) => plugin_response(&mut stream, &Answer::error(why)),
            None => {}
        }
    }

    fn answer_plugin(&self, mut stream: UnixStream, asked: Asked) {
        let answer = self.plugin.answer(&self.exec, asked);
        plugin_response(&mut stream, &answer);
    }

    /// Restarts the running containers that use dot volumes, whose mounts
    /// died with the daemon that served them.
    fn restart_containers(&self, log: &Log) {
        let env = crate::env::ClientEnv::capture();
        let Some(engine) = crate::docker::engine::Engine::from_env(&env) else {
            return;
        };
        for c in crate::serve::exec::containers(&env) {
            match engine.restart(&c) {
                Ok(()) => log(format!(
                    "restarted container {} on the new mount of {}",
                    c.name,
                    c.volumes.join(", ")
                )),
                Err(e) => log(format!("cannot restart container {}: {e}", c.name)),
            }
        }
    }

    fn handle(&self, mut stream: UnixStream, log: &Log) {
        let peer = peer(&stream);
        let allowed = peer.uid.is_some_and(|u| u == self.owner || u == 0);
        let mut reader = BufReader::new(match stream.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        });
        // The request is read whole (within limits) before any answer, so
        // that the client is not cut off mid-write; a client that sends
        // nothing for REQUEST_WAIT is dropped, so none can hold a stopping
        // daemon up.
        let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
        let (head, body) = match http::read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                error_response(&mut stream, 400, ErrorKind::Usage, e.to_string());
                return;
            }
        };
        let _ = stream.set_read_timeout(None);
        if !allowed {
            error_response(
                &mut stream,
                403,
                ErrorKind::Permission,
                format!(
                    "the dot daemon serving {} serves only its owner (uid {}) and root",
                    self.home.display(),
                    self.owner
                ),
            );
            return;
        }
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/v1/version") => json_response(
                &mut stream,
                200,
                &serde_json::json!({"version": VERSION, "pid": std::process::id()}),
            ),
            ("GET", "/v1/status") => json_response(&mut stream, 200, &self.status()),
            ("POST", "/v1/stop") => {
                let stop: StopRequest = serde_json::from_slice(&body).unwrap_or_default();
                self.stopping.store(true, Ordering::SeqCst);
                if stop.force {
                    for r in self.running.lock().expect("running").values() {
                        r.cancel.store(true, Ordering::SeqCst);
                    }
                }
                log(format!(
                    "stopping{}",
                    if stop.force {
                        ", cancelling running requests"
                    } else {
                        ""
                    }
                ));
                json_response(&mut stream, 200, &self.status());
            }
            ("POST", "/v1/call") => self.call(stream, reader, &head, &body, peer.pid, log),
            _ => error_response(
                &mut stream,
                404,
                ErrorKind::NotFound,
                format!("no route {} {}", head.method, head.path),
            ),
        }
    }

    fn status(&self) -> DaemonStatus {
        DaemonStatus {
            pid: std::process::id(),
            version: VERSION.into(),
            home: self.home.clone(),
            socket: self.socket.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            requests_served: self.served.load(Ordering::Relaxed),
            running: self
                .running
                .lock()
                .expect("running")
                .values()
                .filter(|r| !r.done)
                .map(|r| RunningRequest {
                    op: r.op.clone(),
                    seconds: r.since.elapsed().as_secs(),
                })
                .collect(),
            mounts: self.exec.mounted(),
            stopping: self.stopping.load(Ordering::SeqCst),
        }
    }

    fn call(
        &self,
        mut stream: UnixStream,
        mut reader: BufReader<UnixStream>,
        head: &http::Head,
        body: &[u8],
        client: Option<u32>,
        log: &Log,
    ) {
        if head.header("x-dot-version") != Some(VERSION) {
            let theirs = head.header("x-dot-version").unwrap_or("unknown");
            return error_response(
                &mut stream,
                409,
                ErrorKind::Usage,
                format!(
                    "this dot is version {theirs}, but the daemon serving {} is version {VERSION}; stop it with dot daemon stop and start the one you want with dot daemon start",
                    self.home.display()
                ),
            );
        }
        let call = match serde_json::from_slice(body) {
            Ok(c) => Call { client, ..c },
            Err(e) => {
                return error_response(&mut stream, 400, ErrorKind::Usage, format!("bad call: {e}"))
            }
        };
        if self.stopping.load(Ordering::SeqCst) {
            return error_response(
                &mut stream,
                503,
                ErrorKind::Busy,
                "the dot daemon is stopping; run the command again once it has (or start it again with dot daemon start)".into(),
            );
        }
        let out = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                let message = format!("the dot daemon cannot serve a call: {e}");
                log(message.clone());
                return error_response(&mut stream, 503, ErrorKind::Io, message);
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.running.lock().expect("running").insert(
            id,
            Running {
                op: call.request.op(),
                since: Instant::now(),
                cancel: cancel.clone(),
                done: false,
            },
        );
        // The client sends nothing more: a read that returns means it went
        // away (interrupted), which cancels the call.
        let watcher = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                let _ = reader.read(&mut b);
                cancel.store(true, Ordering::SeqCst);
            })
        };
        let _ = http::start_chunked(
            &mut stream,
            200,
            &[
                ("Content-Type", "application/x-ndjson"),
                ("X-Dot-Version", VERSION),
            ],
        );
        let progress = Stream {
            out: Mutex::new(out),
            pending: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            cancel,
        };
        // A panic is a bug: it fails this call, and the daemon goes on
        // serving the others.
        let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.exec.execute(&call, &progress)
        })) {
            Ok(Ok(r)) => Event::Ok(Box::new(r)),
            Ok(Err(e)) => Event::Err(ErrorReport::from(&e)),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Event::Err(ErrorReport::new(
                    ErrorKind::Internal,
                    format!(
                        "internal error in the dot daemon ({what}); this is a bug in dot, please report it with the daemon's log. The daemon goes on serving"
                    ),
                ))
            }
        };
        if let Some(r) = self.running.lock().expect("running").get_mut(&id) {
            r.done = true;
        }
        self.served.fetch_add(1, Ordering::Relaxed);
        progress.flush();
        progress.send(&outcome);
        let _ = http::end_chunks(&mut stream);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        let _ = watcher.join();
        self.running.lock().expect("running").remove(&id);
        if let Event::Err(e) = &outcome {
            log(format!(
                "{}: {:?}: {}",
                call.request.op(),
                e.kind,
                e.message
            ));
        }
    }
}

/// Progress sent to the client as events; advances are batched so that a
/// chunk-per-call stream stays small.
struct Stream {
    out: Mutex<UnixStream>,
    pending: AtomicU64,
    last: Mutex<Instant>,
    cancel: Arc<AtomicBool>,
}

impl Stream {
    fn send(&self, e: &Event) {
        let mut line = serde_json::to_vec(e).expect("events serialize");
        line.push(b'\n');
        let mut out = self.out.lock().expect("stream");
        if http::write_chunk(&mut *out, &line).is_err() {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }

    fn flush(&self) {
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n > 0 {
            self.send(&Event::Advance { n });
        }
    }
}

impl Progress for Stream {
    fn start(&self, what: &str, total: u64) {
        self.flush();
        self.send(&Event::Start {
            what: what.into(),
            total,
        });
    }
    fn advance(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        let mut last = self.last.lock().expect("last");
        if last.elapsed() >= Duration::from_millis(50) {
            *last = Instant::now();
            drop(last);
            self.flush();
        }
    }
    fn finish(&self) {
        self.flush();
        self.send(&Event::Finish);
    }
    fn note(&self, text: &str) {
        self.send(&Event::Note { text: text.into() });
    }
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}
