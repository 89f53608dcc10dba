//! `dot daemon start|stop|status|run`

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use dot::repo::RepoError;
use dot::serve::client::Client;
use dot::serve::server;

#[derive(Args)]
pub struct DaemonArgs {
    #[command(subcommand)]
    command: DaemonCommand,
}

#[derive(Subcommand)]
enum DaemonCommand {
    /// Serve this DOT_HOME in the background; returns once it answers.
    Start,
    /// Stop the daemon once its running operations finish.
    Stop {
        /// Cancel running operations instead of waiting for them.
        #[arg(long)]
        force: bool,
    },
    /// Show the daemon's pid, socket, version, uptime and requests.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Serve in the foreground, logging to stderr (for systemd and
    /// containers).
    Run,
}

/// How long `start` waits for a new daemon to answer, and `stop` for one
/// to go.
const START_WAIT: Duration = Duration::from_secs(60);

pub fn run(home: &Path, a: DaemonArgs) -> Result<ExitCode> {
    match a.command {
        DaemonCommand::Run => {
            bound_heap();
            let log = |line: String| eprintln!("dot daemon: {line}");
            server::serve(home, &log)?;
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Start => start(home),
        DaemonCommand::Stop { force } => stop(home, force),
        DaemonCommand::Status { json } => {
            let Some(client) = Client::find(home)? else {
                return Err(not_running(home).into());
            };
            let st = client.status()?;
            if json {
                super::print_json(&st)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("pid:       {}", st.pid);
            println!("version:   {}", st.version);
            println!("home:      {}", st.home.display());
            println!("socket:    {}", st.socket.display());
            println!("uptime:    {} s", st.uptime_seconds);
            println!("served:    {} requests", st.requests_served);
            if st.running.is_empty() {
                println!("running:   nothing");
            }
            for r in &st.running {
                println!("running:   {} ({} s)", r.op, r.seconds);
            }
            for m in &st.mounts {
                println!("mounted:   {}", m.display());
            }
            if st.stopping {
                println!("stopping");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Keeps a long-running daemon's heap near what it uses: glibc keeps
/// freed blocks in one arena per thread (up to eight per core), which for
/// a daemon serving mounts on many threads grows into hundreds of MiB.
/// Four arenas, and the heap trimmed after each commit and switch
/// (`serve::mounts`). (A low mmap threshold would bound it too, but makes
/// every re-chunking window a fresh mapping: commits took 1.8x as long.)
fn bound_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters, before any
    // other thread runs.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

fn not_running(home: &Path) -> RepoError {
    RepoError::NotFound(format!(
        "no dot daemon serves {}; start one with dot daemon start",
        home.display()
    ))
}

fn start(home: &Path) -> Result<ExitCode> {
    match ensure_running(home)? {
        Started::Already(pid) => {
            println!("a dot daemon already serves {} (pid {pid})", home.display())
        }
        Started::Now(pid) => println!(
            "started a dot daemon serving {} (pid {pid})",
            home.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) enum Started {
    Already(u32),
    Now(u32),
}

/// Starts a daemon serving `home` unless one does; returns once it
/// answers.
pub(super) fn ensure_running(home: &Path) -> Result<Started> {
    if let Some(client) = Client::find(home)? {
        return Ok(Started::Already(client.status()?.pid));
    }
    std::fs::create_dir_all(home)
        .with_context(|| format!("cannot create the dot home {}", home.display()))?;
    let log_path = home.join("daemon.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["daemon", "run"])
        .env("DOT_HOME", home)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the daemon leaves the terminal's
    // session, so a Ctrl-C there does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let deadline = Instant::now() + START_WAIT;
    while Instant::now() < deadline {
        if let Some(client) = Client::find(home)? {
            if let Ok(st) = client.status() {
                return Ok(Started::Now(st.pid));
            }
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow::bail!(
                "the daemon exited at start ({status}): {}",
                tail.join(" / ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "the daemon did not answer within {} s; see {}",
        START_WAIT.as_secs(),
        log_path.display()
    )
}

fn stop(home: &Path, force: bool) -> Result<ExitCode> {
    let Some(client) = Client::find(home)? else {
        println!("no dot daemon serves {}", home.display());
        return Ok(ExitCode::SUCCESS);
    };
    let st = client.stop(force)?;
    if !st.running.is_empty() && !force {
        eprintln!(
            "dot: waiting for {} running operation(s) to finish (dot daemon stop --force cancels them)",
            st.running.len()
        );
    }
    // Gone once its socket no longer answers and it has let go of the
    // store: a command right after may then take the store (or remove it).
    while Client::find(home)?.is_some() {
        std::thread::sleep(Duration::from_millis(50));
    }
    dot::store::wait_released(home)
        .with_context(|| format!("cannot wait for the daemon to let go of {}", home.display()))?;
    println!("stopped the dot daemon (pid {})", st.pid);
    Ok(ExitCode::SUCCESS)
}
