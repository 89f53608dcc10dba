//! HTTP/1.1 framing for the daemon's socket: the one place its bytes are
//! parsed. Requests and responses are read with limits on the head (64 KiB)
//! and the body (16 MiB), with Content-Length or chunked bodies; anything
//! else is an error, never a panic or an unbounded allocation.

use std::io::{self, BufRead, Read, Write};

/// The most bytes a request or response head may take.
pub const MAX_HEAD: usize = 64 << 10;
/// The most bytes a body may take.
pub const MAX_BODY: usize = 16 << 20;
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed HTTP: {0}")]
    Malformed(String),
}

fn malformed(why: impl Into<String>) -> HttpError {
    HttpError::Malformed(why.into())
}

/// A parsed head: the request line or status line, and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Request: method; response: empty.
    pub method: String,
    /// Request: path; response: empty.
    pub path: String,
    /// Response: status code; request: 0.
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value (names compare case-insensitively).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Result<Option<usize>, HttpError> {
        match self.header("content-length") {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| malformed(format!("bad Content-Length {v:?}"))),
        }
    }
}

/// Reads the bytes of a head, up to and including the blank line. None on
/// a clean end of input before any byte.
fn read_head_bytes(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, HttpError> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(malformed("the head ends early"))
            };
        }
        head.extend_from_slice(&line);
        if head.len() > MAX_HEAD {
            return Err(malformed("the head is too large"));
        }
        if !line.ends_with(b"\n") {
            return Err(malformed("the head ends early"));
        }
        if line == b"\r\n" || line == b"\n" {
            if head.len() == line.len() {
                // Blank lines before a request are ignored (RFC 9112 2.2).
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
    }
}

fn headers_of(parsed: &[httparse::Header]) -> Result<Vec<(String, String)>, HttpError> {
    parsed
        .iter()
        .map(|h| {
            let v = std::str::from_utf8(h.value).map_err(|_| malformed("a header is not UTF-8"))?;
            Ok((h.name.to_string(), v.to_string()))
        })
        .collect()
}

/// Reads one request: its head and body. None when the client closed the
/// connection between requests.
pub(crate) fn read_request(r: &mut impl BufRead) -> Result<Option<(Head, Vec<u8>)>, HttpError> {
    let Some(bytes) = read_head_bytes(r)? else {
        return Ok(None);
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete request head")),
        Err(e) => return Err(malformed(e.to_string())),
    }
    let head = Head {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        status: 0,
        headers: headers_of(req.headers)?,
    };
    let body = read_body(r, &head, true)?;
    Ok(Some((head, body)))
}

/// Reads a response head (the body is read with `read_body` or streamed
/// with `ChunkedReader`).
pub(crate) fn read_response_head(r: &mut impl BufRead) -> Result<Head, HttpError> {
    let bytes = read_head_bytes(r)?.ok_or_else(|| malformed("no response"))?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(malformed("incomplete response head")),
        Err(e) => return Err(malformed(e.to_string())),
    }
    Ok(Head {
        method: String::new(),
        path: String::new(),
        status: resp.code.unwrap_or(0),
        headers: headers_of(resp.headers)?,
    })
}

/// Reads a whole body, chunked or of Content-Length bytes (a request
/// without either has none), at most `MAX_BODY`.
pub(crate) fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    request: bool,
) -> Result<Vec<u8>, HttpError> {
    if head.chunked() {
        let mut body = Vec::new();
        let mut chunks = ChunkedReader::new(r);
        while let Some(chunk) = chunks.next_chunk()? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(malformed("the body is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(body);
    }
    let len = match head.content_length()? {
        Some(n) => n,
        None if request => 0,
        None => {
            let mut body = Vec::new();
            r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
            if body.len() > MAX_BODY {
                return Err(malformed("the body is too large"));
            }
            return Ok(body);
        }
    };
    if len > MAX_BODY {
        return Err(malformed("the body is too large"));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Reads a chunked body one chunk at a time.
pub struct ChunkedReader<'a, R> {
    r: &'a mut R,
    done: bool,
}

impl<'a, R: BufRead> ChunkedReader<'a, R> {
    pub(crate) fn new(r: &'a mut R) -> Self {
        ChunkedReader { r, done: false }
    }

    /// The next chunk's bytes; None after the last.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        if self.done {
            return Ok(None);
        }
        let mut line = Vec::new();
        self.r.take(1024).read_until(b'\n', &mut line)?;
        let text = std::str::from_utf8(&line).map_err(|_| malformed("bad chunk size"))?;
        let size_text = text.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| malformed(format!("bad chunk size {size_text:?}")))?;
        if size > MAX_BODY {
            return Err(malformed("a chunk is too large"));
        }
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                let mut t = Vec::new();
                let n = self.r.take(MAX_HEAD as u64).read_until(b'\n', &mut t)?;
                if n == 0 || t == b"\r\n" || t == b"\n" {
                    break;
                }
            }
            self.done = true;
            return Ok(None);
        }
        let mut chunk = vec![0; size];
        self.r.read_exact(&mut chunk)?;
        let mut end = [0u8; 2];
        self.r.read_exact(&mut end)?;
        if &end != b"\r\n" {
            return Err(malformed("a chunk does not end with CRLF"));
        }
        Ok(Some(chunk))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a whole response with a body of known length.
pub(crate) fn write_response(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let start = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    write_message(w, start, headers, body)
}

/// Writes a request with a body of known length.
pub(crate) fn write_request(
    w: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let start = format!("{method} {path} HTTP/1.1\r\nHost: dot\r\n");
    write_message(w, start, headers, body)
}

/// Writes a start line (and any fixed headers) in `out`, then `headers`
/// and a body of known length.
fn write_message(
    w: &mut impl Write,
    mut out: String,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    w.write_all(out.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Starts a chunked response; write chunks with `write_chunk` and end with
/// `end_chunks`.
pub(crate) fn start_chunked(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("Transfer-Encoding: chunked\r\n\r\n");
    w.write_all(out.as_bytes())?;
    w.flush()
}

pub(crate) fn write_chunk(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    w.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
    w.write_all(bytes)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

pub(crate) fn end_chunks(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_track::largest_allocation;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip() {
        let mut wire = Vec::new();
        write_request(
            &mut wire,
            "POST",
            "/v1/call",
            &[("X-Dot-Version", "1")],
            b"{}",
        )
        .unwrap();
        let (head, body) = read_request(&mut &wire[..]).unwrap().unwrap();
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("POST", "/v1/call")
        );
        assert_eq!(head.header("x-dot-version"), Some("1"));
        assert_eq!(body, b"{}");
        assert!(read_request(&mut &b""[..]).unwrap().is_none());
    }

    #[test]
    fn chunked_responses_round_trip() {
        let mut wire = Vec::new();
        start_chunked(&mut wire, 200, &[("Content-Type", "application/x-ndjson")]).unwrap();
        write_chunk(&mut wire, b"one\n").unwrap();
        write_chunk(&mut wire, b"two\n").unwrap();
        end_chunks(&mut wire).unwrap();
        let mut r = &wire[..];
        let head = read_response_head(&mut r).unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(read_body(&mut r, &head, false).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn limits_hold() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read_request(&mut big.as_bytes()).is_err());
        let body = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(read_request(&mut body.as_bytes()).is_err());
        let chunk = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n";
        assert!(read_request(&mut chunk.as_bytes()).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let (_, largest) = largest_allocation(|| {
                let _ = read_request(&mut &bytes[..]);
                let mut r = &bytes[..];
                if let Ok(head) = read_response_head(&mut r) {
                    let _ = read_body(&mut r, &head, false);
                }
            });
            prop_assert!(largest <= MAX_HEAD * 2 + 64 * bytes.len());
        }

        #[test]
        fn any_chunked_body_parses_or_fails_cleanly(body in "[0-9a-fA-F;\r\n xyz]{0,200}") {
            let wire = format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
            let (_, largest) = largest_allocation(|| read_request(&mut wire.as_bytes()));
            prop_assert!(largest <= MAX_BODY + 1024);
        }
    }
}
