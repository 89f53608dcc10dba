//! `dot remote`, `dot push`, `dot pull` and `dot clone`.

use anyhow::Result;
use clap::{Args, Subcommand};
use dot::progress::Progress;
use dot::repo::human_bytes;
use dot::repo::remote::PullReport;
use dot::serve::api::{self, Request, Response};
use dot::sync::CreateCheck;

use super::{reply, Session};

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
    fn split(self) -> (Option<String>, api::TargetArgs) {
        (
            self.dot,
            api::TargetArgs {
                remote: self.remote,
                remote_dot: self.remote_name,
                branch: self.branch,
            },
        )
    }
}

#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Replace the remote branch even if that drops commits it has.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PullArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[arg(long)]
    json: bool,
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
    /// Make the new dot's working state a read-write FUSE mount (see dot
    /// mount).
    #[arg(long)]
    pub mount: bool,
    #[arg(long)]
    json: bool,
}

pub fn remote(s: &Session, a: RemoteArgs, progress: &dyn Progress) -> Result<()> {
    match a.command {
        Some(RemoteCommand::Add {
            name,
            url,
            endpoint,
            region,
            single_writer,
        }) => {
            // A directory given relative to here.
            let url = if url.contains("://") {
                url
            } else {
                let abs = super::absolute(std::path::Path::new(&url))?;
                match abs.to_str() {
                    Some(u) => u.to_string(),
                    None => usage!("the remote path {} is not UTF-8", abs.display()),
                }
            };
            let request = Request::RemoteAdd {
                name,
                url,
                endpoint,
                region,
                single_writer,
            };
            let r = reply!(s.call(request, progress)?, Response::RemoteAdded);
            let name = &r.name;
            match (r.check, &r.check_error) {
                (Some(CreateCheck::Honoured), _) => {
                    println!("added remote {name}: its storage keeps conditional creates exclusive")
                }
                (Some(CreateCheck::Ignored), _) if r.single_writer => println!(
                    "added remote {name} for a single writer: its storage does not keep conditional creates exclusive, so only this machine may push there"
                ),
                (Some(CreateCheck::Ignored), _) => {
                    println!("added remote {name}");
                    eprintln!(
                        "dot: remote {name}'s storage does not keep conditional creates exclusive: dot will refuse to push there (pull and clone work); see dot remote add --help for --single-writer"
                    );
                }
                (None, e) => {
                    println!("added remote {name}");
                    eprintln!(
                        "dot: could not check remote {name} yet ({}); dot push checks it before it writes anything",
                        e.as_deref().unwrap_or("no answer")
                    );
                }
            }
        }
        Some(RemoteCommand::Rm { name }) => {
            s.call(Request::RemoteRemove { name }, progress)?;
        }
        None => {
            let remotes = reply!(s.call(Request::Remotes, progress)?, Response::Remotes);
            if a.json {
                return super::print_json(&remotes);
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

pub fn push(s: &Session, a: PushArgs, progress: &dyn Progress) -> Result<()> {
    let (dot, target) = a.target.split();
    let request = Request::Push {
        dot,
        target,
        force: a.force,
    };
    let r = reply!(s.call(request, progress)?, Response::Push);
    if a.json {
        return super::print_json(&r);
    }
    let to = format!("{} {} {}", r.to.remote, r.to.dot, r.to.branch);
    if r.up_to_date {
        println!("{to} is up to date at {}", r.commit.short());
        return Ok(());
    }
    let st = r.stats;
    let mut line = format!(
        "pushed {} to {to}: {} objects sent ({} in {} packs)",
        r.commit.short(),
        st.objects_sent,
        human_bytes(st.bytes_sent),
        st.packs_sent
    );
    if st.objects_reused > 0 {
        line.push_str(&format!(
            ", {} objects reused from an interrupted push",
            st.objects_reused
        ));
    }
    line.push_str(&format!(
        "; skipped {} already there ({} of files)",
        plural(st.objects_skipped, "object"),
        human_bytes(st.bytes_skipped)
    ));
    println!("{line}");
    Ok(())
}

pub fn pull(s: &Session, a: PullArgs, progress: &dyn Progress) -> Result<()> {
    let (dot, target) = a.target.split();
    let r = reply!(
        s.call(Request::Pull { dot, target }, progress)?,
        Response::Pull
    );
    if a.json {
        return super::print_json(&r);
    }
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

pub fn clone(s: &Session, a: CloneArgs, progress: &dyn Progress) -> Result<()> {
    let request = Request::Clone {
        remote: a.remote,
        remote_dot: a.dot,
        local_name: a.local_name,
        branch: a.branch,
        allow_special_files: a.allow_special_files,
    };
    let r = reply!(s.call(request, progress)?, Response::Clone);
    if a.json {
        if a.mount {
            super::mount::mount_dot(s, &r.dot, false)?;
        }
        return super::print_json(&r);
    }
    println!(
        "cloned {} {} {} into dot {} at {}; {}",
        r.from.remote,
        r.from.dot,
        r.from.branch,
        r.dot,
        r.new.short(),
        received(&r)
    );
    if a.mount {
        super::mount::mount_dot(s, &r.dot, true)?;
    }
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
