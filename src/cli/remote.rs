//! `dot remote`, `dot push`, `dot pull` and `dot clone`.

use anyhow::Result;
use clap::{Args, Subcommand};
use dot::progress::Progress;
use dot::repo::remote::{PullReport, Target};
use dot::repo::{human_bytes, Repo, RepoError};
use dot::sync::CreateCheck;

#[derive(Args)]
pub struct RemoteArgs {
    /// Show URLs, endpoints and what was found about each remote (never
    /// secrets).
    #[arg(long, short)]
    verbose: bool,
    /// All of that as JSON.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Option<RemoteCommand>,
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add a remote: s3://BUCKET/PREFIX, http(s)://HOST/PATH, file:///PATH or
    /// a directory. Credentials come from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY (S3), DOT_HTTP_USER and DOT_HTTP_PASSWORD or
    /// DOT_HTTP_TOKEN (HTTP), or the remote's [NAME] section of the 0600
    /// file $DOT_HOME/credentials; they are never stored with the remote.
    Add {
        name: String,
        url: String,
        /// The S3 endpoint, for S3-compatible storage (MinIO, Ceph...).
        #[arg(long)]
        endpoint: Option<String>,
        /// The S3 region (default: AWS_REGION, else us-east-1).
        #[arg(long)]
        region: Option<String>,
        /// Only this machine ever pushes here: push even if the storage
        /// does not keep a conditional create exclusive (a push from
        /// anywhere else could then silently replace yours).
        #[arg(long)]
        single_writer: bool,
    },
    /// Remove a remote (the data on it stays).
    #[command(alias = "remove")]
    Rm { name: String },
}

/// What a push or pull moves, and where.
#[derive(Args)]
pub struct TargetArgs {
    /// The remote (default: the branch's upstream).
    remote: Option<String>,
    /// The dot (default: the current dot).
    dot: Option<String>,
    /// The dot's name on the remote (default: its local name).
    #[arg(long)]
    remote_name: Option<String>,
    /// The branch (default: the dot's current branch).
    #[arg(long)]
    branch: Option<String>,
}

impl TargetArgs {
    fn target(&self) -> Target<'_> {
        Target {
            remote: self.remote.as_deref(),
            remote_dot: self.remote_name.as_deref(),
            branch: self.branch.as_deref(),
        }
    }
}

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Replace the remote branch even if that drops commits it has.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct CloneArgs {
    remote: String,
    /// The dot's name on the remote.
    dot: String,
    /// The name of the new local dot (default: the remote name).
    #[arg(long)]
    local_name: Option<String>,
    /// The branch to clone (default: master).
    #[arg(long)]
    branch: Option<String>,
    /// Create device nodes, setuid and setgid files and security.*
    /// attributes the remote holds (refused otherwise): only for remotes
    /// everyone who can write to is trusted.
    #[arg(long)]
    allow_special_files: bool,
}

pub fn remote(repo: &Repo, a: RemoteArgs) -> Result<()> {
    match a.command {
        Some(RemoteCommand::Add {
            name,
            url,
            endpoint,
            region,
            single_writer,
        }) => {
            let check = repo.remote_add(
                &name,
                &url,
                endpoint.as_deref(),
                region.as_deref(),
                single_writer,
            )?;
            match check {
                Ok(CreateCheck::Honoured) => {
                    println!("added remote {name}: its storage keeps conditional creates exclusive")
                }
                Ok(CreateCheck::Ignored) if single_writer => println!(
                    "added remote {name} for a single writer: its storage does not keep conditional creates exclusive, so only this machine may push there"
                ),
                Ok(CreateCheck::Ignored) => {
                    println!("added remote {name}");
                    eprintln!(
                        "dot: remote {name}'s storage does not keep conditional creates exclusive: dot will refuse to push there (pull and clone work); see dot remote add --help for --single-writer"
                    );
                }
                Err(e) => {
                    println!("added remote {name}");
                    eprintln!(
                        "dot: could not check remote {name} yet ({e}); dot push checks it before it writes anything"
                    );
                }
            }
        }
        Some(RemoteCommand::Rm { name }) => repo.remote_remove(&name)?,
        None => {
            let remotes = repo.remotes()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&remotes)?);
            } else if a.verbose {
                let rows: Vec<Vec<String>> = remotes
                    .into_iter()
                    .map(|r| {
                        let check = match (r.create_check.map(|c| c.answer), r.single_writer) {
                            (None, _) => "not checked yet".to_string(),
                            (Some(CreateCheck::Honoured), _) => "exclusive creates".to_string(),
                            (Some(CreateCheck::Ignored), true) => {
                                "creates not exclusive; single writer".to_string()
                            }
                            (Some(CreateCheck::Ignored), false) => {
                                "creates not exclusive; push refused".to_string()
                            }
                        };
                        vec![
                            r.name,
                            r.url,
                            r.endpoint.unwrap_or_default(),
                            r.region.unwrap_or_default(),
                            check,
                        ]
                    })
                    .collect();
                super::print_table(&["NAME", "URL", "ENDPOINT", "REGION", "CHECK"], &rows);
            } else {
                for r in remotes {
                    println!("{}", r.name);
                }
            }
        }
    }
    Ok(())
}

pub fn push(repo: &Repo, a: PushArgs, progress: &dyn Progress) -> Result<()> {
    let cfg = repo.resolve_dot(a.target.dot.as_deref())?;
    let r = repo.push(&cfg, &a.target.target(), a.force, progress)?;
    let to = format!("{} {} {}", r.to.remote, r.to.dot, r.to.branch);
    if r.up_to_date {
        println!("{to} is up to date at {}", r.commit.short());
        return Ok(());
    }
    let s = r.stats;
    let mut line = format!(
        "pushed {} to {to}: {} objects sent ({} in {} packs)",
        r.commit.short(),
        s.objects_sent,
        human_bytes(s.bytes_sent),
        s.packs_sent
    );
    if s.objects_reused > 0 {
        line.push_str(&format!(
            ", {} objects reused from an interrupted push",
            s.objects_reused
        ));
    }
    line.push_str(&format!(
        "; skipped {} already there ({} of files)",
        plural(s.objects_skipped, "object"),
        human_bytes(s.bytes_skipped)
    ));
    println!("{line}");
    Ok(())
}

pub fn pull(repo: &Repo, a: TargetArgs, progress: &dyn Progress) -> Result<()> {
    let cfg = match repo.resolve_dot(a.dot.as_deref()) {
        Err(RepoError::NoSuchDot(name)) => usage!(
            "dot {name} does not exist here; to fetch it, run dot clone {} {name}",
            a.remote.as_deref().unwrap_or("REMOTE")
        ),
        r => r?,
    };
    let r = repo.pull(&cfg, &a.target(), progress)?;
    if r.up_to_date {
        println!(
            "branch {} of dot {} is up to date with {} ({})",
            r.from.branch,
            r.dot,
            r.from.remote,
            r.new.short()
        );
        return Ok(());
    }
    let old = r.old.map_or("nothing".to_string(), |c| c.short());
    println!(
        "pulled {} {} {}: {old} -> {}; {}",
        r.from.remote,
        r.from.dot,
        r.from.branch,
        r.new.short(),
        received(&r)
    );
    Ok(())
}

pub fn clone(repo: &Repo, a: CloneArgs, progress: &dyn Progress) -> Result<()> {
    let r = repo.clone_dot(
        &a.remote,
        &a.dot,
        a.local_name.as_deref(),
        a.branch.as_deref(),
        a.allow_special_files,
        progress,
    )?;
    println!(
        "cloned {} {} {} into dot {} at {}; {}",
        r.from.remote,
        r.from.dot,
        r.from.branch,
        r.dot,
        r.new.short(),
        received(&r)
    );
    Ok(())
}

fn received(r: &PullReport) -> String {
    let s = r.stats;
    format!(
        "{} received ({} in {}); skipped {} already here ({} of files)",
        plural(s.objects_received, "object"),
        human_bytes(s.bytes_received),
        plural(s.requests, "request"),
        plural(s.objects_local, "object"),
        human_bytes(s.bytes_skipped)
    )
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
