//! Shared by the black-box tests: a small blocking HTTP/1.1 client over
//! `std::net::TcpStream`, and `Server`, the real `redeemd` binary run as a
//! child process on a temporary data dir and an ephemeral port.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for a response before failing instead of hanging.
const IO_TIMEOUT_SECONDS: u64 = 30;
/// How long a starting server may take to log its address and be ready.
const START_TIMEOUT_SECONDS: u64 = 20;
/// How long a terminated server may take to drain and exit.
const EXIT_TIMEOUT_SECONDS: u64 = 20;
/// Stderr lines kept for failure messages.
const LOG_LINES_MAX: usize = 200;
/// Longest response head we accept, in bytes.
const HEAD_BYTES_MAX: usize = 64 << 10;

// ---- HTTP client --------------------------------------------------------

/// A parsed response: status, headers (names lowercased), decoded body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the raw body when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// `error.code` of an error body, if the body is one.
    pub fn error_code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["error"]["code"].as_str().map(str::to_owned)
    }

    /// Asserts the status and, for errors, the `error.code`.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(
            (self.status, self.error_code().as_deref()),
            (status, code),
            "unexpected response; body: {}",
            self.text()
        );
        self
    }
}

/// One request on a fresh connection (`Connection: close`). The body is
/// written from its own thread while the response is read, so a server
/// that answers early (413) and closes is seen answering, not as a reset.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECONDS)))?;
    stream.set_write_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECONDS)))?;
    stream.set_nodelay(true)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let mut has_length = false;
    for (name, value) in headers {
        has_length |= name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone()?;
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    // Small requests go out inline; large ones from a thread (see above).
    let sender = if bytes.len() <= 64 << 10 {
        writer.write_all(&bytes)?;
        None
    } else {
        Some(std::thread::spawn(move || {
            // The server may close early; the response says why.
            let _ = writer.write_all(&bytes);
        }))
    };
    let response = read_response(&mut BufReader::new(stream), method == "HEAD");
    if let Some(sender) = sender {
        let _ = sender.join();
    }
    response
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(HEAD_BYTES_MAX as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(invalid(
            "connection closed or line too long in the response head",
        ));
    }
    let line = String::from_utf8(line).map_err(|_| invalid("response head is not UTF-8"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads one response, skipping `1xx` interim responses.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> std::io::Result<Response> {
    loop {
        let status_line = read_line(reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = read_chunked(reader)?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| invalid(format!("bad content-length {length:?}")))?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            response.body = body;
        } else {
            reader.read_to_end(&mut response.body)?;
        }
        return Ok(response);
    }
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

// ---- the server under test ----------------------------------------------

/// A role's token for `Client` calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Checkout,
    Issuer,
}

/// The real `redeemd serve` as a child process.
pub struct Server {
    /// Owns the data dir; dropped (deleted) with the server.
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: String,
    pub checkout: String,
    pub issuer: String,
    /// The last lines the current child wrote to stderr.
    log: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `addr=IP:PORT` of a `listening` log line.
pub fn parse_listening(line: &str) -> Option<SocketAddr> {
    let line = strip_ansi(line);
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_redeemd")
}

/// `redeemd token add`: a new token for `role` in `data_dir`.
pub fn add_token(data_dir: &Path, role: &str) -> String {
    let out = Command::new(bin())
        .args(["token", "add", "--data-dir"])
        .arg(data_dir)
        .args(["--role", role, "--name", &format!("test-{role}")])
        .output()
        .expect("redeemd token add runs");
    assert!(
        out.status.success(),
        "token add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("token is UTF-8");
    let token = token.trim().to_owned();
    assert!(!token.is_empty(), "token add printed nothing");
    token
}

struct Spawned {
    child: Child,
    addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
}

impl Server {
    /// A fresh data dir, checkout and issuer tokens, and a ready server.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like `start`, passing `extra_args` to `serve` (now and on restarts).
    pub fn start_with(extra_args: &[&str]) -> Server {
        Server::start_in(&std::env::temp_dir(), extra_args)
    }

    /// Like `start_with`, with the data dir in a new temporary directory
    /// under `parent` (a small file system, say).
    pub fn start_in(parent: &Path, extra_args: &[&str]) -> Server {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let data_dir = dir.path().join("data");
        let checkout = add_token(&data_dir, "checkout");
        let issuer = add_token(&data_dir, "issuer");
        let log = Arc::new(Mutex::new(Vec::new()));
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let spawned = spawn(&data_dir, &extra_args, &log);
        // Printed before the replay starts, so before /readyz says 200.
        let line = spawned
            .stdout
            .recv_timeout(Duration::from_secs(START_TIMEOUT_SECONDS))
            .expect("a fresh data dir prints an admin token");
        let admin = line
            .strip_prefix("admin token: ")
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"))
            .trim()
            .to_owned();
        Server {
            _dir: dir,
            data_dir,
            child: Some(spawned.child),
            addr: spawned.addr,
            admin,
            checkout,
            issuer,
            log,
            extra_args,
        }
    }

    pub fn token(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Checkout => &self.checkout,
            Role::Issuer => &self.issuer,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// The child's exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("server running")
            .try_wait()
            .expect("try_wait")
    }

    /// The child's resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("/proc/PID/status has VmRSS")
    }

    /// SIGKILL: no drain, no flush; only what was durable survives.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server running");
        child.kill().expect("SIGKILL delivered");
        child.wait().expect("child reaped");
    }

    /// SIGTERM, then waits (bounded) for the exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(EXIT_TIMEOUT_SECONDS);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {EXIT_TIMEOUT_SECONDS} s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data dir (after `kill9` or
    /// `terminate`) and waits until it is ready; it must print no token.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.log.lock().unwrap().clear();
        let spawned = spawn(&self.data_dir, &self.extra_args, &self.log);
        self.addr = spawned.addr;
        self.child = Some(spawned.child);
        if let Ok(line) = spawned.stdout.try_recv() {
            panic!("a restart printed {line:?}; only a fresh data dir gets an admin token");
        }
    }

    /// The last stderr lines, for failure messages.
    pub fn log_tail(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A request with `role`'s token.
    #[track_caller]
    pub fn call(&self, role: Role, method: &str, path: &str, body: Option<&Value>) -> Response {
        let body = body.map(|b| serde_json::to_vec(b).expect("serializes"));
        let mut headers = vec![];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.raw(
            Some(role),
            method,
            path,
            &headers,
            body.as_deref().unwrap_or(b""),
        )
    }

    /// A request with full control over headers and body bytes.
    #[track_caller]
    pub fn raw(
        &self,
        role: Option<Role>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let auth = role.map(|r| format!("Bearer {}", self.token(r)));
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(auth) = &auth {
            all.push(("Authorization", auth));
        }
        all.extend_from_slice(headers);
        request(self.addr, method, path, &all, body).unwrap_or_else(|e| {
            panic!(
                "{method} {path} failed: {e}\nserver log:\n{}",
                self.log_tail()
            )
        })
    }

    pub fn get(&self, role: Role, path: &str) -> Response {
        self.call(role, "GET", path, None)
    }

    pub fn post(&self, role: Role, path: &str, body: &Value) -> Response {
        self.call(role, "POST", path, Some(body))
    }

    /// Creates a campaign (admin) and asserts 201.
    #[track_caller]
    pub fn create_campaign(&self, body: Value) -> Value {
        let r = self.post(Role::Admin, "/v1/campaigns", &body);
        r.expect(201, None);
        r.json()
    }

    /// Every code of a campaign with its state, from the CSV export.
    #[track_caller]
    pub fn codes(&self, campaign: &str, state: Option<&str>) -> Vec<(String, String)> {
        let path = match state {
            Some(s) => format!("/v1/campaigns/{campaign}/codes?state={s}"),
            None => format!("/v1/campaigns/{campaign}/codes"),
        };
        let r = self.get(Role::Admin, &path);
        r.expect(200, None);
        parse_csv(&r.text())
    }

    /// A redemption by `user`.
    pub fn redeem(&self, code: &str, user: &str) -> Response {
        self.post(
            Role::Checkout,
            "/v1/redemptions",
            &serde_json::json!({"code": code, "user": user}),
        )
    }

    /// A code's status (checkout token).
    pub fn status(&self, code: &str) -> Response {
        self.get(Role::Checkout, &format!("/v1/codes/{code}"))
    }

    /// The campaign's `stats`.
    #[track_caller]
    pub fn stats(&self, campaign: &str) -> Value {
        let r = self.get(Role::Admin, &format!("/v1/campaigns/{campaign}"));
        r.expect(200, None);
        r.json()["stats"].clone()
    }
}

/// `code,state` lines after the header line.
#[track_caller]
pub fn parse_csv(text: &str) -> Vec<(String, String)> {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("code,state"),
        "CSV header first: {text:?}"
    );
    lines
        .map(|line| {
            let (code, state) = line
                .split_once(',')
                .unwrap_or_else(|| panic!("bad CSV line {line:?}"));
            (code.to_owned(), state.to_owned())
        })
        .collect()
}

fn spawn(data_dir: &Path, extra_args: &[String], log: &Arc<Mutex<Vec<String>>>) -> Spawned {
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra_args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,redeemd::routes=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redeemd serve starts");
    let stdout = forward_stdout(child.stdout.take().expect("piped"));
    let stderr = child.stderr.take().expect("piped");
    let (addr_tx, addr_rx) = mpsc::channel();
    let sink = log.clone();
    // Drains stderr for the child's whole life, so logging never blocks it.
    std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = parse_listening(&line)
                && let Some(tx) = addr_tx.take()
            {
                let _ = tx.send(addr);
            }
            let mut sink = sink.lock().unwrap();
            if sink.len() >= LOG_LINES_MAX {
                sink.remove(0);
            }
            sink.push(strip_ansi(&line));
        }
    });
    let addr = match addr_rx.recv_timeout(Duration::from_secs(START_TIMEOUT_SECONDS)) {
        Ok(addr) => addr,
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!(
                "redeemd did not log `listening addr=...` (exit: {status:?}); log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    };
    wait_ready(addr, &mut child, log);
    Spawned {
        child,
        addr,
        stdout,
    }
}

fn forward_stdout(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Polls `/readyz` until 200, within a bound.
fn wait_ready(addr: SocketAddr, child: &mut Child, log: &Arc<Mutex<Vec<String>>>) {
    let deadline = Instant::now() + Duration::from_secs(START_TIMEOUT_SECONDS);
    loop {
        if let Ok(r) = request(addr, "GET", "/readyz", &[], b"")
            && r.status == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "redeemd exited during start ({status}); log:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within {START_TIMEOUT_SECONDS} s; log:\n{}",
            log.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` of a process, in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// A small seeded generator (SplitMix64) so a failing run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The seed from environment variable `name`, else from the clock;
    /// printed either way so a failure can be replayed.
    pub fn seed_from_env(name: &str) -> u64 {
        let seed = std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_nanos() as u64
            });
        eprintln!("seed: {name}={seed}");
        seed
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the bias is negligible for small `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---- codes --------------------------------------------------------------

/// The code alphabet of API.md.
pub const ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// `code` with its symbol at `index` (counted among non-hyphen characters
/// after `prefix_len` prefix characters) replaced by another alphabet symbol.
pub fn substitute(code: &str, prefix_len: usize, index: usize) -> String {
    let mut seen = 0usize;
    let mut symbol = 0usize;
    code.chars()
        .map(|c| {
            if c == '-' {
                return c;
            }
            seen += 1;
            if seen <= prefix_len {
                return c;
            }
            symbol += 1;
            if symbol - 1 != index {
                return c;
            }
            ALPHABET
                .chars()
                .find(|&a| a != c)
                .expect("alphabet has 32 symbols")
        })
        .collect()
}

/// Polls `check` until it returns true or `bound` passes.
pub fn wait_until(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The failed-attempt limiter counts in calendar minutes, and a new minute
/// gives every identity its budget back. A test that throttles and then
/// checks the `429` must run inside one window: when less than `needed`
/// (under a minute) is left of this minute, this waits for the next one to
/// begin.
pub fn wait_for_a_limiter_window_with(needed: Duration) {
    assert!(needed < Duration::from_secs(60), "a window is one minute");
    let into = since_epoch().as_millis() % 60_000;
    let left = Duration::from_millis((60_000 - into) as u64);
    if left < needed {
        std::thread::sleep(left + Duration::from_millis(200));
    }
}

/// Time since the epoch on the system clock. The server reads the same
/// clock once at start and advances it by the monotonic clock, so the two
/// agree unless the system clock is stepped while a test runs.
pub fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
}

/// HTTP/2's client preface, for tests that speak raw frames.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One raw HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
