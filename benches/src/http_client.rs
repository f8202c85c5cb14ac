//! The client of the `http` rows: blocking HTTP/1.1 on one keep-alive TCP connection,
//! written over `TcpStream`. The same client talks to `wn serve` and to the Python
//! server, so those rows compare the servers.
//!
//! Why not `ureq` 3 (in the lockfile): against `wn serve` on the same GET it took
//! ~32 µs p50 where this client takes ~24.5 µs (a scratch probe, 20 000 requests a round,
//! quiet rounds of a loaded 2-vCPU box), a third of the time measured being the client;
//! its agent keeps a pool, so "one connection" would be a hope rather than a fact; and its
//! timeouts bound a whole call or body, while an event stream never ends — here every
//! read has its own timeout ([`IO_TIMEOUT`]) and the connection is the one opened. It speaks only what the rows need: a request with
//! an optional JSON body, a response framed by `Content-Length` or chunked encoding, and
//! Server-Sent Events over a chunked body. Everything read is bounded: header lines,
//! header count, bodies, pending stream bytes.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Longest wait for any one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest header or chunk-size line.
const MAX_LINE: u64 = 8 * 1024;

/// Most header lines in one response.
const MAX_HEADERS: usize = 64;

/// Largest response body (and largest stream message).
const MAX_BODY: usize = 1 << 20;

/// How the body of a response is framed.
enum Framing {
    Length(usize),
    Chunked,
}

/// One SSE message: its `id:`, `event:` and `data:` fields.
#[derive(Debug, Default)]
pub struct SseMessage {
    /// `id:` (the ring sequence for `wn serve`).
    pub id: Option<u64>,
    /// `event:` (`event`, `lagged`, `error`).
    pub event: String,
    /// `data:` lines joined by newlines.
    pub data: String,
}

/// One keep-alive connection to one server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
    line: String,
    body: Vec<u8>,
    /// Decoded stream bytes not yet parsed into a message.
    pending: Vec<u8>,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Conn {
    /// Connects (TCP_NODELAY: a request is one write, and answers must not wait on
    /// delayed ACKs).
    pub fn connect(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(io("connect"))?;
        s.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io("read timeout"))?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io("write timeout"))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, s),
            host: addr.to_string(),
            line: String::new(),
            body: Vec::with_capacity(64 * 1024),
            pending: Vec::new(),
        })
    }

    fn send(&mut self, method: &str, path: &str, accept: &str, body: &[u8]) -> Result<(), String> {
        let mut req = Vec::with_capacity(256 + body.len());
        let _ = write!(
            req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        req.extend_from_slice(body);
        self.reader.get_mut().write_all(&req).map_err(io("send the request"))
    }

    /// One line (CRLF or LF ended), at most [`MAX_LINE`] bytes; without its ending.
    fn read_line(&mut self) -> Result<&str, String> {
        self.line.clear();
        let n = (&mut self.reader).take(MAX_LINE).read_line(&mut self.line).map_err(io("read"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        if !self.line.ends_with('\n') {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        Ok(self.line.trim_end_matches(['\r', '\n']))
    }

    /// Reads the status line and headers: the status and the body's framing.
    fn read_head(&mut self) -> Result<(u16, Framing), String> {
        let status_line = self.read_line()?.to_string();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let mut framing = None;
        for _ in 0..MAX_HEADERS {
            let l = self.read_line()?;
            if l.is_empty() {
                return framing.map(|f| (status, f)).ok_or_else(|| {
                    "a response without Content-Length or chunked encoding (it would end the connection)".into()
                });
            }
            let (name, value) = l.split_once(':').ok_or_else(|| format!("a malformed header line {l:?}"))?;
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.parse::<usize>().map_err(|_| format!("Content-Length {value:?}"))?;
                if n > MAX_BODY {
                    return Err(format!("a body of {n} bytes (at most {MAX_BODY})"));
                }
                framing = Some(Framing::Length(n));
            } else if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
                framing = Some(Framing::Chunked);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                return Err("the server closes the connection after this response (no keep-alive)".into());
            }
        }
        Err(format!("more than {MAX_HEADERS} header lines"))
    }

    /// Reads one chunk of a chunked body onto `out`; `false` at the last (empty) chunk.
    fn read_chunk(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        let size_line = self.read_line()?;
        let hex = size_line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(hex, 16).map_err(|_| format!("a bad chunk size {size_line:?}"))?;
        if out.len() + n > MAX_BODY {
            return Err(format!("a chunked body over {MAX_BODY} bytes"));
        }
        let at = out.len();
        out.resize(at + n, 0);
        self.reader.read_exact(&mut out[at..]).map_err(io("read a chunk"))?;
        if !self.read_line()?.is_empty() {
            return Err("a chunk not followed by CRLF".into());
        }
        Ok(n > 0)
    }

    /// One request and its response: the status and the body (valid until the next call).
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, &[u8]), String> {
        self.send(method, path, "application/json", body)?;
        let (status, framing) = self.read_head()?;
        let mut out = std::mem::take(&mut self.body);
        out.clear();
        let read = match framing {
            Framing::Length(n) => {
                out.resize(n, 0);
                self.reader.read_exact(&mut out).map_err(io("read the body"))
            }
            Framing::Chunked => loop {
                match self.read_chunk(&mut out) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            },
        };
        self.body = out;
        read?;
        Ok((status, &self.body))
    }

    /// A request whose answer must be a 2xx JSON document; that document.
    pub fn json(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Value, String> {
        let (status, b) = self.request(method, path, body)?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: HTTP {status}: {}", String::from_utf8_lossy(b)));
        }
        serde_json::from_slice(b).map_err(|e| format!("{method} {path}: not JSON: {e}"))
    }

    /// Opens an event stream (`Accept: text/event-stream`); read it with [`Conn::next_event`].
    pub fn open_stream(&mut self, path: &str) -> Result<(), String> {
        self.send("GET", path, "text/event-stream", b"")?;
        match self.read_head()? {
            (200, Framing::Chunked) => Ok(()),
            (200, Framing::Length(_)) => Err(format!("GET {path} answered a fixed-length body, not a stream")),
            (s, _) => Err(format!("GET {path} (event stream): HTTP {s}")),
        }
    }

    /// The next message of the stream (comments, such as keep-alives, are skipped).
    /// Waits at most [`IO_TIMEOUT`] per read.
    pub fn next_event(&mut self) -> Result<SseMessage, String> {
        // Bounded: each pass reads one chunk (or parses one message) and `pending` is
        // capped at MAX_BODY, so a server sending only comments ends in an error.
        for _ in 0..4096 {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let raw: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = std::str::from_utf8(&raw).map_err(|_| "a stream message that is not UTF-8")?;
                let mut m = SseMessage::default();
                let mut any = false;
                for l in text.lines() {
                    let (field, value) =
                        l.split_once(':').map_or((l, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
                    match field {
                        "" => {} // a comment
                        "id" => {
                            m.id = Some(value.parse().map_err(|_| format!("a stream id {value:?}"))?);
                            any = true;
                        }
                        "event" => {
                            m.event = value.to_string();
                            any = true;
                        }
                        "data" => {
                            if !m.data.is_empty() {
                                m.data.push('\n');
                            }
                            m.data.push_str(value);
                            any = true;
                        }
                        _ => {}
                    }
                }
                if any {
                    return Ok(m);
                }
                continue;
            }
            let mut pending = std::mem::take(&mut self.pending);
            let more = self.read_chunk(&mut pending);
            self.pending = pending;
            if !more? {
                return Err("the server ended the event stream".into());
            }
        }
        Err("no stream message within 4096 chunks".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that reads one request (up to its blank line) and answers `reply`.
    fn canned(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut s = s;
            s.write_all(reply).expect("write");
            // Keep the connection open until the client is done.
            let _ = r.read_line(&mut line);
        });
        addr
    }

    #[test]
    fn reads_a_length_framed_body() {
        let addr = canned(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":12}");
        let mut c = Conn::connect(addr).expect("connect");
        assert_eq!(c.json("GET", "/x", b"").expect("answer")["a"], 12);
    }

    #[test]
    fn decodes_a_chunked_body() {
        let addr =
            canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n4;x=y\r\n:12}\r\n0\r\n\r\n");
        let mut c = Conn::connect(addr).expect("connect");
        let (status, body) = c.request("GET", "/x", b"").expect("answer");
        assert_eq!((status, body), (200, &b"{\"a\":12}"[..]));
    }

    #[test]
    fn refuses_a_response_that_ends_the_connection() {
        let addr = canned(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
        let mut c = Conn::connect(addr).expect("connect");
        let e = c.request("GET", "/x", b"").expect_err("no keep-alive");
        assert!(e.contains("keep-alive"), "{e}");
    }

    #[test]
    fn an_error_status_is_an_error_with_the_body() {
        let addr = canned(b"HTTP/1.1 409 Conflict\r\nContent-Length: 13\r\n\r\nstale epoch!!");
        let mut c = Conn::connect(addr).expect("connect");
        let e = c.json("POST", "/c", b"{}").expect_err("409");
        assert!(e.contains("HTTP 409") && e.contains("stale epoch"), "{e}");
    }

    #[test]
    fn parses_server_sent_events_across_chunks_and_skips_comments() {
        let addr = canned(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\n:\n\n\r\n\
              f\r\nid: 7\nevent: ev\r\n\
              e\r\nent\ndata: {}\n\n\r\n\
              0\r\n\r\n",
        );
        let mut c = Conn::connect(addr).expect("connect");
        c.open_stream("/api/events").expect("stream");
        let m = c.next_event().expect("message");
        assert_eq!((m.id, m.event.as_str(), m.data.as_str()), (Some(7), "event", "{}"));
        let e = c.next_event().expect_err("the stream ended");
        assert!(e.contains("ended"), "{e}");
    }

    #[test]
    fn refuses_an_oversized_header_line() {
        static LONG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let reply = LONG.get_or_init(|| {
            let mut r = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
            r.resize(r.len() + 10_000, b'a');
            r.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            r
        });
        let addr = canned(reply);
        let mut c = Conn::connect(addr).expect("connect");
        let e = c.request("GET", "/x", b"").expect_err("too long");
        assert!(e.contains("longer than"), "{e}");
    }
}
