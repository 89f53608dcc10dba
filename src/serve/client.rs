//! The CLI's side of the daemon's socket: finds a daemon serving a
//! DOT_HOME, sends it calls and turns the streamed events back into
//! progress and a response or an error of the same kind.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::api::*;
use super::http;
use super::server::socket_path;
use crate::progress::Progress;
use crate::repo::ErrorKind;

pub struct Client {
    socket: PathBuf,
}

/// An error from the daemon or from talking to it.
pub type Result<T> = std::result::Result<T, ErrorReport>;

fn io_err(socket: &Path, e: impl std::fmt::Display) -> ErrorReport {
    ErrorReport::new(
        ErrorKind::Io,
        format!("the dot daemon on {} failed: {e}", socket.display()),
    )
}

impl Client {
    /// The daemon serving `home`, if one answers. A socket nobody answers
    /// on (a daemon that was killed) means none; one this user may not
    /// open is an error.
    pub fn find(home: &Path) -> Result<Option<Client>> {
        let socket = socket_path(home);
        match UnixStream::connect(&socket) {
            Ok(_) => Ok(Some(Client { socket })),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(ErrorReport::new(
                ErrorKind::Permission,
                format!(
                    "a dot daemon serves {} but this user may not use its socket {}; run dot as the store's owner",
                    home.display(),
                    socket.display()
                ),
            )),
            Err(_) => Ok(None),
        }
    }

    fn connect(&self) -> Result<UnixStream> {
        UnixStream::connect(&self.socket).map_err(|e| io_err(&self.socket, e))
    }

    /// A GET or POST with a JSON answer.
    fn simple<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<T> {
        let mut s = self.connect()?;
        http::write_request(&mut s, method, path, &[("X-Dot-Version", VERSION)], body)
            .map_err(|e| io_err(&self.socket, e))?;
        let mut r = BufReader::new(s);
        let head = http::read_response_head(&mut r).map_err(|e| io_err(&self.socket, e))?;
        let body = http::read_body(&mut r, &head, false).map_err(|e| io_err(&self.socket, e))?;
        if head.status != 200 {
            return Err(serde_json::from_slice(&body)
                .unwrap_or_else(|_| io_err(&self.socket, format!("status {}", head.status))));
        }
        serde_json::from_slice(&body).map_err(|e| io_err(&self.socket, e))
    }

    pub fn status(&self) -> Result<DaemonStatus> {
        self.simple("GET", "/v1/status", b"")
    }

    /// Asks the daemon to stop; it answers at once and exits once its
    /// running requests are done (or cancelled, with `force`).
    pub fn stop(&self, force: bool) -> Result<DaemonStatus> {
        let body = serde_json::to_vec(&StopRequest { force }).expect("serializes");
        self.simple("POST", "/v1/stop", &body)
    }

    /// Carries out a call on the daemon, drawing its progress on
    /// `progress`. When `progress.cancelled()` turns true, a watcher shuts
    /// down the write half of the connection; the daemon sees it, cancels
    /// the call, and its outcome still arrives here.
    pub fn call(&self, call: &Call, progress: &dyn Progress) -> Result<Response> {
        let mut s = self.connect()?;
        let body = serde_json::to_vec(call).expect("calls serialize");
        http::write_request(
            &mut s,
            "POST",
            "/v1/call",
            &[
                ("X-Dot-Version", VERSION),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .map_err(|e| io_err(&self.socket, e))?;
        // Interrupted, the client stops sending: the daemon sees the
        // connection's end, cancels the call and reports that.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let writer = s.try_clone().map_err(|e| io_err(&self.socket, e))?;
        std::thread::scope(|scope| {
            scope.spawn(move || loop {
                match finished.recv_timeout(std::time::Duration::from_millis(20)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if progress.cancelled() {
                            let _ = writer.shutdown(std::net::Shutdown::Write);
                            return;
                        }
                    }
                    _ => return,
                }
            });
            let outcome = self.read_events(s, progress);
            let _ = done.send(());
            outcome
        })
    }

    fn read_events(&self, s: UnixStream, progress: &dyn Progress) -> Result<Response> {
        let mut r = BufReader::new(s);
        let head = http::read_response_head(&mut r).map_err(|e| io_err(&self.socket, e))?;
        if head.status != 200 {
            let body =
                http::read_body(&mut r, &head, false).map_err(|e| io_err(&self.socket, e))?;
            return Err(serde_json::from_slice(&body)
                .unwrap_or_else(|_| io_err(&self.socket, format!("status {}", head.status))));
        }
        let mut chunks = http::ChunkedReader::new(&mut r);
        let mut line = Vec::new();
        while let Some(chunk) = chunks.next_chunk().map_err(|e| io_err(&self.socket, e))? {
            line.extend_from_slice(&chunk);
            while let Some(end) = line.iter().position(|b| *b == b'\n') {
                let event: Event =
                    serde_json::from_slice(&line[..end]).map_err(|e| io_err(&self.socket, e))?;
                line.drain(..=end);
                match event {
                    Event::Start { what, total } => progress.start(&what, total),
                    Event::Advance { n } => progress.advance(n),
                    Event::Finish => progress.finish(),
                    Event::Note { text } => progress.note(&text),
                    Event::Ok(r) => return Ok(*r),
                    Event::Err(e) => return Err(e),
                }
            }
        }
        Err(io_err(
            &self.socket,
            "the connection closed before the outcome",
        ))
    }
}
