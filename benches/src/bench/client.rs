//! A minimal HTTP/1.1 keep-alive client: one request at a time per
//! connection, written and read by the task that sends it.
//!
//! A load generator competes with the server for the same two cores, so
//! the client's own cost per request is part of the measurement. hyper's
//! client runs each connection as a separate task and wakes it per
//! request; this one writes the request and parses the answer (with
//! httparse) inline, reusing its buffers, and allocates nothing per
//! request once warm.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most response headers a reply may carry.
const RESPONSE_HEADERS_MAX: usize = 32;
/// Largest response body accepted (the CSV export of a big campaign).
const RESPONSE_BODY_BYTES_MAX: usize = 1 << 30;
/// Bytes reserved ahead of each socket read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The part of a response the harness looks at; the body is in
/// [`HttpClient::body`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// `Idempotent-Replayed: true` was present.
    pub replayed: bool,
}

/// One keep-alive connection to one server.
pub struct HttpClient {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// `Authorization` header value, when a token was given.
    auth: Option<String>,
    /// `None` after an error or a `Connection: close`: the next request
    /// reconnects.
    stream: Option<TcpStream>,
    /// The request being built.
    wbuf: Vec<u8>,
    /// Bytes read from the socket and not yet consumed.
    rbuf: Vec<u8>,
    /// Scratch for JSON bodies, so their length is known before the headers.
    scratch: String,
    /// The last response's body.
    pub body: Vec<u8>,
    /// Connections opened after the first one.
    pub reconnects: u64,
    connected_once: bool,
}

impl HttpClient {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> Self {
        HttpClient {
            addr,
            host: addr.to_string(),
            auth: token.map(|t| format!("Bearer {t}")),
            stream: None,
            wbuf: Vec::with_capacity(1024),
            rbuf: Vec::with_capacity(READ_CHUNK_BYTES),
            scratch: String::with_capacity(256),
            body: Vec::with_capacity(1024),
            reconnects: 0,
            connected_once: false,
        }
    }

    /// Opens the connection now rather than on the first request.
    pub async fn connect(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.rbuf.clear();
            self.stream = Some(stream);
            if self.connected_once {
                self.reconnects += 1;
            }
            self.connected_once = true;
        }
        Ok(())
    }

    /// Drops the connection, e.g. after a timeout left an answer in flight.
    pub fn disconnect(&mut self) {
        self.stream = None;
    }

    /// Starts a request: request line, `Host`, `Authorization`.
    pub fn start(&mut self, method: &str, path: &str) {
        self.wbuf.clear();
        self.wbuf.extend_from_slice(method.as_bytes());
        self.wbuf.push(b' ');
        self.wbuf.extend_from_slice(path.as_bytes());
        self.wbuf.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.wbuf.extend_from_slice(self.host.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
        if let Some(auth) = &self.auth {
            self.wbuf.extend_from_slice(b"Authorization: ");
            self.wbuf.extend_from_slice(auth.as_bytes());
            self.wbuf.extend_from_slice(b"\r\n");
        }
    }

    pub fn header(&mut self, name: &str, value: &str) {
        self.wbuf.extend_from_slice(name.as_bytes());
        self.wbuf.extend_from_slice(b": ");
        self.wbuf.extend_from_slice(value.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Ends the headers with a JSON body formatted from `args`.
    pub fn json(&mut self, args: std::fmt::Arguments<'_>) {
        self.scratch.clear();
        let _ = self.scratch.write_fmt(args);
        let mut len = itoa_buf();
        self.wbuf
            .extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        self.wbuf
            .extend_from_slice(format_usize(&mut len, self.scratch.len()));
        self.wbuf.extend_from_slice(b"\r\n\r\n");
        self.wbuf.extend_from_slice(self.scratch.as_bytes());
    }

    /// Ends the headers of a request without a body.
    pub fn no_body(&mut self) {
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Sends the request built so far and reads the whole response.
    /// Any error leaves the connection closed; the next request reconnects.
    pub async fn send(&mut self) -> io::Result<Head> {
        let result = self.exchange().await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self) -> io::Result<Head> {
        self.connect().await?;
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(&self.wbuf).await?;
        loop {
            let (head, header_len, framing, close) = loop {
                if let Some(parsed) = parse_head(&self.rbuf)? {
                    break parsed;
                }
                read_more(stream, &mut self.rbuf).await?;
            };
            if (100..200).contains(&head.status) {
                self.rbuf.drain(..header_len);
                continue;
            }
            self.body.clear();
            let consumed = match framing {
                Framing::Length(len) => {
                    if len > RESPONSE_BODY_BYTES_MAX {
                        return Err(invalid("response body too large"));
                    }
                    while self.rbuf.len() < header_len + len {
                        read_more(stream, &mut self.rbuf).await?;
                    }
                    self.body
                        .extend_from_slice(&self.rbuf[header_len..header_len + len]);
                    header_len + len
                }
                Framing::Chunked => {
                    let mut at = header_len;
                    loop {
                        match httparse::parse_chunk_size(&self.rbuf[at..])
                            .map_err(|_| invalid("bad chunk size"))?
                        {
                            httparse::Status::Partial => {
                                read_more(stream, &mut self.rbuf).await?;
                            }
                            httparse::Status::Complete((skip, size)) => {
                                let size = usize::try_from(size)
                                    .ok()
                                    .filter(|s| self.body.len() + s <= RESPONSE_BODY_BYTES_MAX)
                                    .ok_or_else(|| invalid("response body too large"))?;
                                // The chunk's data and its closing CRLF.
                                while self.rbuf.len() < at + skip + size + 2 {
                                    read_more(stream, &mut self.rbuf).await?;
                                }
                                if size == 0 {
                                    // No trailers are expected; the CRLF ends the body.
                                    break at + skip + 2;
                                }
                                self.body
                                    .extend_from_slice(&self.rbuf[at + skip..at + skip + size]);
                                at += skip + size + 2;
                                // Keep the buffer from holding the whole export.
                                if at > READ_CHUNK_BYTES * 4 {
                                    self.rbuf.drain(..at);
                                    at = 0;
                                }
                            }
                        }
                    }
                }
                Framing::UntilClose => {
                    loop {
                        self.rbuf.reserve(READ_CHUNK_BYTES);
                        if stream.read_buf(&mut self.rbuf).await? == 0 {
                            break;
                        }
                    }
                    self.body.extend_from_slice(&self.rbuf[header_len..]);
                    self.rbuf.len()
                }
            };
            self.rbuf.drain(..consumed);
            if close || matches!(framing, Framing::UntilClose) {
                self.stream = None;
            }
            return Ok(head);
        }
    }
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

type ParsedHead = (Head, usize, Framing, bool);

fn parse_head(buf: &[u8]) -> io::Result<Option<ParsedHead>> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response
        .parse(buf)
        .map_err(|e| invalid(&format!("bad response: {e}")))?
    {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let status = response.code.unwrap_or(0);
    let mut framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let mut close = response.version == Some(0);
    let mut replayed = false;
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid("bad content-length"))?;
            framing = Framing::Length(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("idempotent-replayed") {
            replayed = h.value.eq_ignore_ascii_case(b"true");
        }
    }
    Ok(Some((
        Head { status, replayed },
        header_len,
        framing,
        close,
    )))
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(READ_CHUNK_BYTES);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn format_usize(buf: &mut [u8; 20], mut n: usize) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// The string value of `"field"` in a flat JSON object, without a full
/// parse: codes, ids and error codes never contain escapes.
pub fn json_str_field<'a>(body: &'a [u8], field: &str) -> Option<&'a str> {
    let mut at = 0;
    while let Some(found) = find(&body[at..], field.as_bytes()) {
        let start = at + found;
        at = start + field.len();
        if start == 0 || body[start - 1] != b'"' || body.get(at) != Some(&b'"') {
            continue;
        }
        let rest = &body[at + 1..];
        let rest = trim_start(rest).strip_prefix(b":")?;
        let rest = trim_start(rest).strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        return std::str::from_utf8(&rest[..end]).ok();
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &b[skip..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, field: &str, expected: Option<&str>) {
        assert_eq!(json_str_field(body.as_bytes(), field), expected);
    }

    #[test]
    fn fields() {
        check(
            r#"{"error":{"code":"already_redeemed","message":"x"}}"#,
            "code",
            Some("already_redeemed"),
        );
        check(
            r#"{"reservation": "rsv_12", "code":"A"}"#,
            "reservation",
            Some("rsv_12"),
        );
        check(r#"{"codes":"x","code":"B"}"#, "code", Some("B"));
        check(r#"{"code":1}"#, "code", None);
        check(r#"{}"#, "code", None);
    }

    #[test]
    fn heads() {
        let raw =
            b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nIdempotent-Replayed: true\r\n\r\nabc";
        let (head, len, framing, close) = parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head,
            Head {
                status: 201,
                replayed: true
            }
        );
        assert_eq!(len, raw.len() - 3);
        assert!(matches!(framing, Framing::Length(3)));
        assert!(!close);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn numbers() {
        let mut buf = itoa_buf();
        assert_eq!(format_usize(&mut buf, 0), b"0");
        let mut buf = itoa_buf();
        assert_eq!(format_usize(&mut buf, 1234), b"1234");
    }
}
