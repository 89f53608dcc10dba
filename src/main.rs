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
            eprintln!("dot: {err:#}");
            let kind = match err.downcast_ref::<dot::repo::RepoError>() {
                Some(e) => Some(e.kind()),
                None => err
                    .downcast_ref::<dot::serve::api::ErrorReport>()
                    .map(|e| e.kind),
            };
            let code = kind.map_or(1, |k| k.exit_code());
            ExitCode::from(code)
        }
    }
}

fn install_signal_handlers() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        // A file mapped for reading was truncated under us. Only
        // async-signal-safe calls here: write(2) and _exit(2). The store is
        // as a kill at this instant would leave it: consistent.
        const MSG: &[u8] = b"dot: a file shrank while it was being read; stop the program writing to the volume (a plain directory cannot be snapshotted while a database runs) and try again\n";
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(1);
        }
    }
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
        libc::signal(libc::SIGBUS, on_sigbus as *const () as libc::sighandler_t);
    }
}
