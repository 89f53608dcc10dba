//! The `dot` binary: parses arguments, runs one command, prints the result.
//! Errors are printed as `dot: ...` on stderr with the exit code of their
//! kind (`ErrorKind::exit_code`, listed in the README; 1 for anything
//! unforeseen; clap's usage errors exit 2).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    install_signal_handlers();
    let args = cli::Args::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let (kind, disk_full) = match err.downcast_ref::<dot::repo::RepoError>() {
                Some(e) => (Some(e.kind()), e.disk_full()),
                None => err
                    .downcast_ref::<dot::serve::api::ErrorReport>()
                    .map_or((None, false), |e| (Some(e.kind), e.disk_full)),
            };
            if disk_full {
                eprintln!("dot: the disk is full: {}", message(&err));
                eprintln!("dot: {}", cli::disk_full_advice());
            } else {
                eprintln!("dot: {}", message(&err));
            }
            let code = kind.map_or(1, |k| k.exit_code());
            ExitCode::from(code)
        }
    }
}

/// An error and its causes, each said once: most errors already name
/// their cause in their own text.
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn install_signal_handlers() {
    extern "C" fn on_sigint(_: libc::c_int) {
        // The operation stops cleanly at its next safe point; a second
        // Ctrl-C kills the process.
        cli::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: signal is async-signal-safe.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    }
    // SAFETY: installing handlers at startup, before any threads exist.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        // Exit quietly when the reader of our output goes away (dot log | head).
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        let e = dot::repo::RepoError::io("cannot write f", std::io::Error::other("disk full"));
        let err = anyhow::Error::new(e).context("committing");
        assert_eq!(
            super::message(&err),
            "committing: cannot write f: disk full"
        );
        let plain = anyhow::anyhow!("just this");
        assert_eq!(super::message(&plain), "just this");
    }
}
