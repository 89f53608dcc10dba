//! Command-line parsing and output: the only place that prints. Each
//! subcommand lives in its own file; they share the helpers here.

/// Returns a usage error (bad input; exit code 2) from a command.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(dot::repo::RepoError::Usage(format!($($arg)*)).into())
    };
}

mod branch;
mod commit;
mod daemon;
mod diff;
mod init;
mod list;
mod log;
mod maintenance;
mod mount;
mod remote;
mod reset;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::path::Path;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dot::env::ClientEnv;
use dot::progress::Progress;
use dot::repo::Repo;
use dot::serve::api::{Call, Request, Response};
use dot::serve::client::Client;
use dot::serve::exec::Executor;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "dot",
    version,
    about = "git for data volumes: commit, branch, diff and roll back database data directories"
)]
pub struct Args {
    /// Hide progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a dot (or add a subdot, as in myapp.orders-db) and make it current.
    Init(init::InitArgs),
    /// Print a dot's working directory, for a Docker bind mount.
    Path {
        /// DOT or DOT.SUBDOT (default: the current dot).
        name: Option<String>,
    },
    /// Commit every subdot of a dot at once.
    Commit(commit::CommitArgs),
    /// Show how the working state differs from the branch's last commit.
    Diff(diff::DiffArgs),
    /// Show a dot's branch, HEAD, uncommitted changes, working state and upstream.
    Status(diff::StatusArgs),
    /// Move the branch to a commit and make the working state match it.
    Reset(reset::ResetArgs),
    /// Show the branch's commits, newest first.
    Log(log::LogArgs),
    /// Show every move of every branch of a dot, newest first: what a
    /// reset left behind can be brought back with dot reset --hard ID.
    Reflog(log::LogArgs),
    /// Switch branches, or create one with -b.
    Checkout(branch::CheckoutArgs),
    /// List branches, or delete one with -d.
    Branch(branch::BranchArgs),
    /// List dots.
    #[command(alias = "ls")]
    List(list::ListArgs),
    /// Make another dot current.
    Switch { name: String },
    /// Delete a dot and its branches (asks first unless -f).
    Rm(maintenance::RmArgs),
    /// Free the space of data no branch reaches any more (nor the reflog,
    /// for gc.reflogExpire: 30 days unless set); --remote NAME frees what
    /// no branch on a remote reaches.
    Gc(maintenance::GcArgs),
    /// Verify every stored object, everything every branch reaches, and
    /// every pack; --repair first rebuilds a lost or damaged index from
    /// the packs and the state log; --remote NAME verifies a remote.
    Fsck(maintenance::FsckArgs),
    /// Get or set user.name and user.email (recorded in commits), or with
    /// --dot a setting of one dot: allowSpecialFiles (true lets device
    /// nodes, setuid and setgid files and security.* attributes from
    /// remotes be created in its working directories).
    Config(maintenance::ConfigArgs),
    /// List remotes, or add or remove one.
    Remote(remote::RemoteArgs),
    /// Send a branch to a remote, moving only the data it lacks.
    Push(remote::PushArgs),
    /// Fetch a branch from a remote and fast-forward to it.
    Pull(remote::PullArgs),
    /// Make a new local dot from a remote one.
    Clone(remote::CloneArgs),
    /// Show a commit of a dot read-only at a directory, through FUSE
    /// (served by the daemon, which is started if needed); --list shows
    /// the views.
    Mount(mount::MountArgs),
    /// Remove a view made by dot mount.
    Unmount(mount::UnmountArgs),
    /// Run the daemon that owns this DOT_HOME's store and serves every dot
    /// command (start, stop, status, run).
    Daemon(daemon::DaemonArgs),
}

/// Where requests are carried out: by the daemon serving DOT_HOME, or in
/// this process on the store opened here.
pub struct Session {
    env: ClientEnv,
    via: Via,
}

enum Via {
    Daemon(Client),
    Local(Box<Executor>),
}

impl Session {
    fn open(home: &Path) -> Result<Session> {
        let env = ClientEnv::capture();
        let args: Vec<String> = std::env::args().skip(1).collect();
        let who = format!("pid {} (dot {})", std::process::id(), args.join(" "));
        let mut waiting = false;
        // Another process holding the store is waited for; a daemon that
        // starts meanwhile is used.
        loop {
            if let Some(client) = Client::find(home)? {
                let via = Via::Daemon(client);
                return Ok(Session { env, via });
            }
            let e = match Repo::open(home, &who) {
                Ok(repo) => {
                    let via = Via::Local(Box::new(Executor::new(repo)));
                    return Ok(Session { env, via });
                }
                Err(e) => e,
            };
            let Some(holder) = e.store_holder() else {
                return Err(e.into());
            };
            if !waiting {
                eprintln!("dot: waiting for {holder} to finish with the store");
                waiting = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Carries out one request.
    pub fn call(&self, request: Request, progress: &dyn Progress) -> Result<Response> {
        let call = Call {
            env: self.env.clone(),
            request,
            client: Some(std::process::id()),
        };
        Ok(match &self.via {
            Via::Local(executor) => executor.execute(&call, progress)?,
            Via::Daemon(client) => client.call(&call, progress)?,
        })
    }
}

/// Takes the expected variant out of a response.
macro_rules! reply {
    ($response:expr, $variant:path) => {
        match $response {
            $variant(r) => r,
            other => anyhow::bail!("unexpected response {other:?}"),
        }
    };
}
pub(crate) use reply;

pub fn run(args: Args) -> Result<ExitCode> {
    let home = dot_home()?;
    if let Command::Daemon(a) = args.command {
        return daemon::run(&home, a);
    }
    let mounts = match &args.command {
        Command::Mount(a) => mount::needs_daemon(a),
        Command::Init(a) => a.mount,
        Command::Clone(a) => a.mount,
        _ => false,
    };
    if mounts {
        if let daemon::Started::Now(pid) = daemon::ensure_running(&home)? {
            eprintln!("dot: started a dot daemon to serve the mount (pid {pid})");
        }
    }
    let repaired = match &args.command {
        Command::Fsck(a) if a.repair => Some(maintenance::repair(&home)?),
        _ => None,
    };
    let session = Session::open(&home)?;
    let progress = Bar::new(args.quiet);
    let s = &session;
    let p = &progress;
    let ok = ExitCode::SUCCESS;
    match args.command {
        Command::Init(a) => init::run(s, a).map(|_| ok),
        Command::Path { name } => {
            let path = reply!(s.call(Request::Path { spec: name }, p)?, Response::Path);
            println!("{}", path.display());
            Ok(ok)
        }
        Command::Commit(a) => commit::run(s, a, p).map(|_| ok),
        Command::Diff(a) => diff::run(s, a, p).map(|_| ok),
        Command::Status(a) => diff::status(s, a, p).map(|_| ok),
        Command::Reset(a) => reset::run(s, a, p).map(|_| ok),
        Command::Log(a) => log::run(s, a, p).map(|_| ok),
        Command::Reflog(a) => log::reflog(s, a, p).map(|_| ok),
        Command::Checkout(a) => branch::checkout(s, a, p).map(|_| ok),
        Command::Branch(a) => branch::run(s, a, p).map(|_| ok),
        Command::List(a) => list::run(s, a, p).map(|_| ok),
        Command::Switch { name } => {
            let Response::Switched { dot } = s.call(Request::Switch { dot: name }, p)? else {
                anyhow::bail!("unexpected response");
            };
            println!("Switched to dot {dot}");
            Ok(ok)
        }
        Command::Rm(a) => maintenance::rm(s, a, p).map(|_| ok),
        Command::Gc(a) => maintenance::gc(s, a, p).map(|_| ok),
        Command::Fsck(a) => maintenance::fsck(s, a, repaired, p),
        Command::Config(a) => maintenance::config(s, a, p),
        Command::Remote(a) => remote::remote(s, a, p).map(|_| ok),
        Command::Push(a) => remote::push(s, a, p).map(|_| ok),
        Command::Pull(a) => remote::pull(s, a, p).map(|_| ok),
        Command::Clone(a) => remote::clone(s, a, p).map(|_| ok),
        Command::Mount(a) => mount::mount(s, a, p).map(|_| ok),
        Command::Unmount(a) => mount::unmount(s, a, p).map(|_| ok),
        Command::Daemon(_) => unreachable!("handled above"),
    }
}

/// Prints a report as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A path given on the command line, made absolute against this
/// process's directory (requests carry absolute paths), without `.`
/// parts or a trailing `/`.
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    Ok(p.components().collect())
}

/// What to do about a full disk: how much the disk holding DOT_HOME has
/// free, and what gives space back.
pub fn disk_full_advice() -> String {
    let home = dot_home().unwrap_or_default();
    let free = rustix::fs::statvfs(&home)
        .map(|st| dot::repo::human_bytes(st.f_bavail.saturating_mul(st.f_frsize)))
        .unwrap_or_else(|_| "?".into());
    format!(
        "{free} is free on the disk holding {}; nothing was lost. Free some space (dot gc frees what no branch or reflog entry needs) and run the command again",
        home.display()
    )
}

fn dot_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os("DOT_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".dot")),
        None => usage!("neither DOT_HOME nor HOME is set; set DOT_HOME to the directory dot should keep its data in"),
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(quiet: bool) -> Bar {
        let show = !quiet && std::io::stderr().is_terminal();
        Bar {
            bar: show.then(ProgressBar::hidden),
        }
    }
}

/// Set by the first Ctrl-C: long work stops at its next safe point.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Progress for Bar {
    fn cancelled(&self) -> bool {
        INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn start(&self, what: &str, total: u64) {
        if let Some(b) = &self.bar {
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.reset();
            b.set_length(total);
            let template = if total > 0 {
                "{msg} {bytes} / {total_bytes} [{wide_bar}] {percent_precise}% {bytes_per_sec}"
            } else {
                "{msg} {bytes} {bytes_per_sec} {spinner}"
            };
            b.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_message(what.to_string());
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
    fn note(&self, text: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("dot: {text}")),
            None => eprintln!("dot: {text}"),
        }
    }
}

/// Prints rows as a left-aligned table, docker style.
/// Says which containers a reset or switch stopped and started again.
pub fn say_restarted(containers: &[String]) {
    if !containers.is_empty() {
        println!(
            "Stopped {} for the switch and started {} again",
            containers.join(", "),
            if containers.len() == 1 { "it" } else { "them" }
        );
    }
}

/// Containers as a column shows them.
pub fn containers_cell(containers: &[String]) -> String {
    if containers.is_empty() {
        "-".into()
    } else {
        containers.join(",")
    }
}

pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
