//! `redeemd assign`: posts a recipient file to a server's bulk-assign route
//! and copies the answer (`recipient,code,status`) to stdout as it arrives.
//!
//! The client is a small blocking HTTP/1.1 one over `std::net::TcpStream`:
//! one request with `Content-Length`, the file streamed from disk on its
//! own thread while the answer is read (the server answers rows while it
//! still reads the file, so writing the whole file first could stall both
//! ends once the buffers between them fill), and the chunked answer decoded
//! and written out chunk by chunk. Each chunk the server sends is durable,
//! so whatever reached stdout stays assigned; running the command again
//! answers `existing` for those recipients with the same codes.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::routes::bulk::Recipients;

/// How long the command waits for the server to send anything. An
/// all-or-nothing file is read and counted whole before the head comes,
/// so this is generous.
const READ_TIMEOUT_SECONDS: u64 = 300;
/// How long a write of the file may block (the server reads as it assigns).
const WRITE_TIMEOUT_SECONDS: u64 = 300;
/// The longest line of a response head, in bytes.
const HEAD_LINE_BYTES_MAX: u64 = 64 << 10;
/// Header lines accepted in a response head.
const HEAD_LINES_MAX: usize = 100;
/// The most of an error answer's body that is read, in bytes.
const ERROR_BODY_BYTES_MAX: u64 = 1 << 20;
/// Progress is redrawn at most this often.
const PROGRESS_INTERVAL_MILLIS: u64 = 200;

/// What `redeemd assign` was asked to do.
#[derive(Debug)]
pub struct AssignArgs<'a> {
    /// The server's base URL, `http://host[:port][/prefix]`.
    pub url: &'a str,
    /// An issuer or admin token.
    pub token: &'a str,
    /// The campaign id.
    pub campaign: &'a str,
    /// The recipient file.
    pub file: &'a Path,
    /// Refuse the whole file unless the pool holds a code for every line.
    pub all_or_nothing: bool,
    /// Show progress on stderr even when it is not a terminal.
    pub progress: bool,
}

/// Where to connect and what to send as `Host` and the path prefix.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port` to connect to and to send as `Host`.
    authority: String,
    /// The URL's path without its trailing `/` (empty for none).
    prefix: String,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    if url.starts_with("https://") {
        bail!(
            "{url}: https is not supported by this client; reach the server over http (say, through an SSH tunnel or on its own host)"
        );
    }
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: the URL must start with http://");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains('@') {
        bail!("{url}: expected http://host[:port][/path]");
    }
    // A port-less authority gets HTTP's default; an IPv6 literal keeps its
    // brackets either way.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !port.is_empty() && !port.contains(']') && !host.is_empty());
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        prefix: path.trim_end_matches('/').to_owned(),
    })
}

/// `value` with every byte outside RFC 3986's unreserved set escaped, for
/// a path segment.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counts the recipients the server will see in a file, by the server's
/// own reading of it, so that an answer cut short can be told apart from
/// a complete one.
fn count_recipients(path: &Path) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut recipients = Recipients::new(BufReader::new(file));
    let mut n = 0u64;
    while recipients
        .next_recipient()
        .with_context(|| format!("cannot read {}", path.display()))?
        .is_some()
    {
        n += 1;
    }
    Ok(n)
}

/// `redeemd assign`. Returns once the whole answer is on stdout; an error
/// says what went wrong and how many rows arrived before it.
pub fn assign(args: &AssignArgs<'_>) -> anyhow::Result<()> {
    let target = parse_url(args.url)?;
    let lines = count_recipients(args.file)?;
    let mut file =
        File::open(args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let length = file
        .metadata()
        .with_context(|| format!("cannot read {}", args.file.display()))?
        .len();
    let addr = target
        .authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", target.authority))?
        .next()
        .with_context(|| format!("{} resolves to no address", target.authority))?;
    let stream = TcpStream::connect(addr)
        .with_context(|| format!("cannot connect to {} ({addr})", target.authority))?;
    stream.set_read_timeout(Some(Duration::from_secs(READ_TIMEOUT_SECONDS)))?;
    stream.set_write_timeout(Some(Duration::from_secs(WRITE_TIMEOUT_SECONDS)))?;
    stream.set_nodelay(true)?;
    let query = if args.all_or_nothing {
        "?all_or_nothing=true"
    } else {
        ""
    };
    let head = format!(
        "POST {}/v1/campaigns/{}/assignments/bulk{query} HTTP/1.1\r\n\
         Host: {}\r\nAuthorization: Bearer {}\r\nContent-Type: text/csv\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        target.prefix,
        percent_encode(args.campaign),
        target.authority,
        args.token,
    );
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        writer.write_all(head.as_bytes())?;
        let sent = std::io::copy(&mut file, &mut writer)?;
        writer.flush()?;
        Ok(sent)
    });
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).context("no answer from the server")?;
    if head.status != 200 {
        // The server may answer before reading the file (401, 413, 409);
        // the answer says why, whatever became of the upload.
        let body = read_body_bounded(&mut reader, &head);
        drop(sender);
        bail!("{}", describe_error(head.status, &body));
    }
    let mut progress = Progress::new(lines, args.progress || std::io::stderr().is_terminal());
    let stdout = std::io::stdout().lock();
    let mut out = RowCounter::new(stdout, &mut progress);
    let copied = copy_body(&mut reader, &head, &mut out);
    let rows = out.records.saturating_sub(1);
    out.inner.flush().context("cannot write to stdout")?;
    progress.finish(rows);
    if let Err(e) = copied {
        bail!(
            "the answer broke off after {rows} of {lines} rows ({e:#}); the rows received are durable: run the command again to resume (they come back as `existing`)"
        );
    }
    // The uploading thread is not joined: a server that stopped early may
    // never read the rest of the file, and the row count is the judge.
    drop(sender);
    if rows < lines {
        bail!(
            "the server stopped after {rows} of {lines} rows (see its log); the rows received are durable: run the command again to resume (they come back as `existing`)"
        );
    }
    Ok(())
}

/// A response's status and the headers that frame its body.
#[derive(Debug)]
struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<u64>,
}

fn read_line(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(HEAD_LINE_BYTES_MAX)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        bail!("the connection closed (or a line ran too long) in the middle of the answer's head");
    }
    let line = String::from_utf8(line).context("the answer's head is not UTF-8")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads a response head, skipping `1xx` interim responses.
fn read_head(reader: &mut impl BufRead) -> anyhow::Result<Head> {
    loop {
        let status_line = read_line(reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let status = match (parts.next(), parts.next()) {
            (Some(v), Some(s)) if v.starts_with("HTTP/1.") => s.parse::<u16>().ok(),
            _ => None,
        }
        .with_context(|| format!("not an HTTP/1.1 status line: {status_line:?}"))?;
        let mut head = Head {
            status,
            chunked: false,
            content_length: None,
        };
        for _ in 0..=HEAD_LINES_MAX {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .with_context(|| format!("bad header line {line:?}"))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("content-length") {
                head.content_length = Some(
                    value
                        .parse()
                        .with_context(|| format!("bad content-length {value:?}"))?,
                );
            }
        }
        if !(100..200).contains(&status) {
            return Ok(head);
        }
    }
}

/// Copies a body framed by `head` into `out`: chunked, by length, or up
/// to the end of the connection. `Err` when it ends before its framing
/// says it is complete.
fn copy_body(reader: &mut impl BufRead, head: &Head, out: &mut impl Write) -> anyhow::Result<()> {
    if head.chunked {
        loop {
            let line = read_line(reader)?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !read_line(reader)?.is_empty() {}
                return Ok(());
            }
            let copied = std::io::copy(&mut reader.by_ref().take(size), out)?;
            if copied < size {
                bail!("the connection closed in the middle of a chunk");
            }
            out.flush()?;
            if !read_line(reader)?.is_empty() {
                bail!("a chunk not followed by CRLF");
            }
        }
    } else if let Some(length) = head.content_length {
        let copied = std::io::copy(&mut reader.by_ref().take(length), out)?;
        if copied < length {
            bail!("the connection closed after {copied} of {length} bytes");
        }
        Ok(())
    } else {
        std::io::copy(reader, out)?;
        Ok(())
    }
}

fn read_body_bounded(reader: &mut impl BufRead, head: &Head) -> Vec<u8> {
    let mut body = Vec::new();
    // An answer cut short still shows what arrived of it.
    let _ = copy_body(
        &mut reader.by_ref().take(ERROR_BODY_BYTES_MAX),
        head,
        &mut body,
    );
    body
}

/// The message for a non-200 answer: the API's error `code` and `message`
/// when the body is the API's error JSON, else the body as text.
fn describe_error(status: u16, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error.and_then(|e| Some((e["code"].as_str()?, e["message"].as_str()?))) {
        Some((code, message)) => {
            let mut text = format!("the server answered {status} {code}: {message}");
            // Context fields (`needed`, `available`, `limit`, ...) matter
            // to whoever reads this.
            if let Some(fields) = error.and_then(|e| e.as_object()) {
                for (k, v) in fields {
                    if k != "code" && k != "message" {
                        text.push_str(&format!(" {k}={v}"));
                    }
                }
            }
            text
        }
        None => format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(body).trim()
        ),
    }
}

/// Counts the CSV records written through it (a newline outside quotes
/// ends one; the server writes no blank lines), for progress and for the
/// completeness check.
struct RowCounter<'p, W: Write> {
    inner: W,
    /// Records seen so far, the header included.
    records: u64,
    /// Whether the bytes so far leave us inside a quoted field.
    quoted: bool,
    progress: &'p mut Progress,
}

impl<'p, W: Write> RowCounter<'p, W> {
    fn new(inner: W, progress: &'p mut Progress) -> RowCounter<'p, W> {
        RowCounter {
            inner,
            records: 0,
            quoted: false,
            progress,
        }
    }
}

impl<W: Write> Write for RowCounter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        // RFC 4180 escapes a quote by doubling it, which toggles twice.
        for &b in &buf[..n] {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => self.records += 1,
                _ => {}
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()?;
        self.progress.update(self.records.saturating_sub(1));
        Ok(())
    }
}

/// Progress on stderr: rows received of the file's lines, and the rate.
struct Progress {
    /// Recipients in the file.
    lines: u64,
    /// Whether to draw at all.
    shown: bool,
    started: Instant,
    /// When it was last drawn.
    drawn: Instant,
}

impl Progress {
    fn new(lines: u64, shown: bool) -> Progress {
        let now = Instant::now();
        Progress {
            lines,
            shown,
            started: now,
            drawn: now,
        }
    }

    fn update(&mut self, rows: u64) {
        if self.shown && self.drawn.elapsed() >= Duration::from_millis(PROGRESS_INTERVAL_MILLIS) {
            self.drawn = Instant::now();
            self.draw(rows, "\r");
        }
    }

    fn draw(&self, rows: u64, end: &str) {
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = rows as f64 / seconds.max(1e-3);
        eprint!(
            "\rassign: {rows} / {} rows, {rate:.0} rows/s, {seconds:.1} s   {end}",
            self.lines
        );
    }

    fn finish(&self, rows: u64) {
        if self.shown {
            self.draw(rows, "\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_url(url: &str, expected: Result<(&str, &str), &str>) {
        match (parse_url(url), expected) {
            (Ok(t), Ok((authority, prefix))) => {
                assert_eq!(
                    (t.authority.as_str(), t.prefix.as_str()),
                    (authority, prefix)
                );
            }
            (Err(e), Err(wanted)) => assert!(e.to_string().contains(wanted), "{e}"),
            (got, wanted) => panic!("{url}: got {got:?}, wanted {wanted:?}"),
        }
    }

    #[test]
    fn urls() {
        check_url("http://127.0.0.1:8080", Ok(("127.0.0.1:8080", "")));
        check_url("http://localhost:8080/", Ok(("localhost:8080", "")));
        check_url("http://example.com/api/", Ok(("example.com:80", "/api")));
        check_url("http://[::1]:9000/x", Ok(("[::1]:9000", "/x")));
        check_url("http://[::1]", Ok(("[::1]:80", "")));
        check_url("https://example.com", Err("https is not supported"));
        check_url("example.com", Err("must start with http://"));
        check_url("http://", Err("expected http://host"));
    }

    #[track_caller]
    fn check_rows(chunks: &[&[u8]], expected: u64) {
        let mut progress = Progress::new(0, false);
        let mut counter = RowCounter::new(Vec::new(), &mut progress);
        for chunk in chunks {
            counter.write_all(chunk).unwrap();
        }
        assert_eq!(counter.records, expected);
    }

    #[test]
    fn rows_are_counted_by_csv_records_across_chunks() {
        check_rows(&[b"recipient,code,status\n"], 1);
        check_rows(&[b"a,X,created\n", b"b,Y,existing\n"], 2);
        check_rows(&[b"\"multi\nline\",X,created\n"], 1);
        check_rows(&[b"\"multi\n", b"line\",X,created\n"], 1);
        check_rows(
            &[b"\"say \"\"hi\"\"\n\",X,created\n", b"c,,pool_exhausted\n"],
            2,
        );
        check_rows(&[b"a,X,created"], 0);
    }

    #[test]
    fn error_answers_name_code_message_and_context() {
        let body = br#"{"error":{"code":"pool_exhausted","message":"too few codes","needed":4,"available":3}}"#;
        assert_eq!(
            describe_error(409, body),
            "the server answered 409 pool_exhausted: too few codes available=3 needed=4"
        );
        assert_eq!(
            describe_error(502, b"bad gateway\n"),
            "the server answered 502: bad gateway"
        );
    }

    #[test]
    fn campaign_ids_are_escaped_in_the_path() {
        assert_eq!(percent_encode("spring-2025_a.b~"), "spring-2025_a.b~");
        assert_eq!(percent_encode("a/b c?"), "a%2Fb%20c%3F");
    }
}
