//! Protocol abuse against the real binary: clients that never finish their
//! headers (slowloris, in HTTP/1 and as a trickled HTTP/2 preface), thousands
//! of idle connections, connections that never send a byte while the server
//! is at its connection limit, oversized heads, and pipelined garbage. Each
//! test checks that the abusive connections are cut or refused within a
//! bound, that an honest client is served meanwhile, and that the server's
//! resident memory (`VmRSS` from `/proc/PID/status`, printed with
//! `--nocapture`) stays bounded before, during and after.
//!
//! The servers run with `--header-timeout-seconds 2` so the timeouts are
//! seen in seconds, not the default ten.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Role, Server};
use serde_json::json;

/// Header timeout the servers under test run with.
const HEADER_TIMEOUT_SECONDS: u64 = 2;
/// Header timeout of the server holding thousands of idle connections.
const IDLE_HEADER_TIMEOUT_SECONDS: u64 = 15;
/// Slack on top of the header timeout before a connection counts as not cut.
const CUT_SLACK_SECONDS: u64 = 3;
/// Idle connections held open at once.
const IDLE_CONNECTIONS: usize = 2000;
/// Threads opening the idle connections.
const OPENERS: usize = 8;
/// Slow clients.
const SLOW_CONNECTIONS: usize = 40;
/// Growth of resident memory allowed while abused, in KiB.
const RSS_GROWTH_KIB_MAX: u64 = 256 << 10;

fn server() -> Server {
    Server::start_with(&[
        "--header-timeout-seconds",
        &HEADER_TIMEOUT_SECONDS.to_string(),
    ])
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `wanted` (bounded
/// by the hard limit) so thousands of client sockets fit.
fn raise_fd_limit(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls with a valid pointer to a local.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
    }
    assert!(
        limit.rlim_cur >= wanted,
        "RLIMIT_NOFILE is {} (hard {}), need {wanted}",
        limit.rlim_cur,
        limit.rlim_max
    );
}

/// Whether the server closed (or reset) `stream`: any bytes it sent (a 408
/// or 400 answer) are read and ignored; `WouldBlock` means still open.
fn is_closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// An honest request, bounded in time, must get `200`.
#[track_caller]
fn served(server: &Server) -> Duration {
    let start = Instant::now();
    let r = common::request(server.addr, "GET", "/healthz", &[], b"")
        .unwrap_or_else(|e| panic!("an honest client was not served: {e}"));
    assert_eq!(r.status, 200);
    start.elapsed()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends each slow connection one more byte of its request a second until
/// the server cuts it; returns how long each lasted.
fn trickle(server: &Server, starts: &[&[u8]]) -> Vec<Duration> {
    let start = Instant::now();
    let mut conns: Vec<(TcpStream, &[u8], usize, Option<Duration>)> = starts
        .iter()
        .map(|bytes| (connect(server.addr), *bytes, 0, None))
        .collect();
    let bound = Duration::from_secs(HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS + 2);
    while start.elapsed() < bound && conns.iter().any(|c| c.3.is_none()) {
        for (stream, bytes, sent, cut) in conns.iter_mut().filter(|c| c.3.is_none()) {
            // The header never ends: after the given start, more of a header.
            let byte = bytes.get(*sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).is_err() || is_closed(stream) {
                *cut = Some(start.elapsed());
            }
            *sent += 1;
        }
        // One byte a second per connection, the slowloris rate.
        std::thread::sleep(Duration::from_secs(1));
        served(server);
    }
    conns
        .into_iter()
        .map(|c| c.3.unwrap_or(Duration::MAX))
        .collect()
}

#[test]
fn slow_headers_are_cut_after_the_header_timeout() {
    let server = server();
    let before = server.rss_kib();
    let h1: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    // A client trickling the HTTP/2 prior-knowledge preface never leaves
    // the server's protocol sniffing.
    let h2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let starts: Vec<&[u8]> = (0..SLOW_CONNECTIONS)
        .map(|i| if i % 2 == 0 { h1 } else { h2 })
        .collect();
    let lasted = trickle(&server, &starts);
    let after = server.rss_kib();
    eprintln!(
        "slowloris: {} connections, lasted {:?}..{:?}; VmRSS {before} KiB before, {after} KiB after",
        lasted.len(),
        lasted.iter().min().unwrap(),
        lasted.iter().max().unwrap()
    );
    let bound = Duration::from_secs(HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS);
    for (i, lasted) in lasted.iter().enumerate() {
        let kind = if i % 2 == 0 {
            "HTTP/1"
        } else {
            "HTTP/2 preface"
        };
        assert!(
            *lasted <= bound,
            "slow {kind} connection {i} not cut within {bound:?} (lasted {lasted:?})"
        );
    }
    assert!(
        after < before + RSS_GROWTH_KIB_MAX,
        "{before} -> {after} KiB"
    );
}

#[test]
fn thousands_of_idle_connections_neither_starve_others_nor_stay_open() {
    raise_fd_limit(IDLE_CONNECTIONS as u64 + 512);
    // A longer header timeout: opening thousands of connections takes
    // seconds (the listen queue overflows and SYNs are retried), and they
    // must all be open at once.
    // All of them come from 127.0.0.1: the per-address limit is raised so
    // that the server holds them all (tests/connections.rs covers it).
    let server = Server::start_with(&[
        "--header-timeout-seconds",
        &IDLE_HEADER_TIMEOUT_SECONDS.to_string(),
        "--connections-per-address-max",
        &(2 * IDLE_CONNECTIONS).to_string(),
    ]);
    server.create_campaign(json!({"id": "idle", "generate": 4, "code": {"prefix": "IDL"}}));
    let code = server.codes("idle", None)[0].0.clone();
    let before = server.rss_kib();
    let opened = Instant::now();
    let idle: Vec<TcpStream> = std::thread::scope(|s| {
        let openers: Vec<_> = (0..OPENERS)
            .map(|_| {
                s.spawn(|| {
                    (0..IDLE_CONNECTIONS / OPENERS)
                        .map(|_| connect(server.addr))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        openers
            .into_iter()
            .flat_map(|o| o.join().unwrap())
            .collect()
    });
    // Every idle connection is accepted before the honest client comes.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            common::fd_count(server.pid()).unwrap_or(0) >= IDLE_CONNECTIONS
        }),
        "the server did not accept {IDLE_CONNECTIONS} connections"
    );
    let during = server.rss_kib();
    let latency = served(&server);
    server.redeem(&code, "honest").expect(201, None);
    eprintln!(
        "idle: {IDLE_CONNECTIONS} connections open in {:?}; an honest request took {latency:?}; VmRSS {before} KiB before, {during} KiB during",
        opened.elapsed()
    );
    // Nothing was sent on them: after the header timeout they are closed.
    let bound = Duration::from_secs(IDLE_HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS);
    let all_closed = common::wait_until(bound, || idle.iter().all(is_closed));
    let open = idle.iter().filter(|s| !is_closed(s)).count();
    drop(idle);
    let settled = common::wait_until(Duration::from_secs(5), || {
        common::fd_count(server.pid()).unwrap_or(usize::MAX) < 100
    });
    let after = server.rss_kib();
    eprintln!(
        "idle: {open} of {IDLE_CONNECTIONS} still open after {bound:?}; VmRSS {after} KiB after"
    );
    assert!(
        all_closed,
        "{open} of {IDLE_CONNECTIONS} connections that never sent a byte are still open {bound:?} later"
    );
    assert!(settled, "the server still holds its sockets");
    assert!(
        during < before + RSS_GROWTH_KIB_MAX,
        "{before} -> {during} KiB"
    );
    served(&server);
}

#[test]
fn silent_connections_at_the_limit_give_way_to_honest_clients() {
    const LIMIT: usize = 16;
    let server = Server::start_with(&[
        "--header-timeout-seconds",
        &HEADER_TIMEOUT_SECONDS.to_string(),
        "--connections-max",
        &LIMIT.to_string(),
    ]);
    let silent: Vec<TcpStream> = (0..LIMIT).map(|_| connect(server.addr)).collect();
    // The honest client waits in the accept queue until a permit frees up:
    // that must happen within the header timeout, not never.
    let waited = std::thread::scope(|s| {
        let honest = s.spawn(|| {
            let stream = connect(server.addr);
            stream
                .set_read_timeout(Some(Duration::from_secs(
                    HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS,
                )))
                .unwrap();
            let start = Instant::now();
            let mut w = stream.try_clone().unwrap();
            w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            common::read_response(&mut BufReader::new(stream), false)
                .map(|r| (r.status, start.elapsed()))
        });
        honest.join().unwrap()
    });
    drop(silent);
    match waited {
        Ok((status, took)) => {
            eprintln!("at the limit: the honest client was served after {took:?}");
            assert_eq!(status, 200);
        }
        Err(e) => panic!(
            "{LIMIT} silent connections at --connections-max {LIMIT} starved an honest client for over {} s: {e}",
            HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS
        ),
    }
}

#[test]
fn oversized_heads_are_refused_and_the_server_stays_healthy() {
    let server = server();
    let before = server.rss_kib();
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "one 70 KiB header",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70 << 10)
            )
            .into_bytes(),
        ),
        (
            "4000 small headers (1 MiB)",
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..4000)
                    .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(250)))
                    .collect::<String>()
            )
            .into_bytes(),
        ),
        (
            "a 100 KiB request line",
            format!(
                "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "q".repeat(100 << 10)
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in &cases {
        for _ in 0..20 {
            let stream = connect(server.addr);
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut w = stream.try_clone().unwrap();
            let writer = {
                let bytes = bytes.clone();
                std::thread::spawn(move || {
                    // The server may close before reading it all.
                    let _ = w.write_all(&bytes);
                })
            };
            let outcome = common::read_response(&mut BufReader::new(stream), false);
            let _ = writer.join();
            match outcome {
                Ok(r) => assert_eq!(r.status, 431, "{what}: {}", r.text()),
                // Closed or reset without an answer is also a refusal.
                Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "{what}: hung: {e}"),
            }
        }
        served(&server);
    }
    let after = server.rss_kib();
    eprintln!("oversized heads: VmRSS {before} KiB before, {after} KiB after");
    assert!(
        after < before + RSS_GROWTH_KIB_MAX,
        "{before} -> {after} KiB"
    );
}

#[test]
fn pipelined_garbage_ends_the_connection_not_the_server() {
    let server = server();
    // Many valid requests pipelined in one write get as many answers.
    let mut stream = connect(server.addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let one = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    stream.write_all(one.repeat(100).as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..100 {
        let r = common::read_response(&mut reader, false).expect("a pipelined answer");
        assert_eq!(r.status, 200);
    }
    // Then garbage after a valid request: the valid one is answered, the
    // garbage gets a 400 or a close, and nothing after it is served.
    let mut bytes = one.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x00\xff\xfeNOT HTTP AT ALL\r\n\x01\x02\r\n\r\n");
    bytes.extend_from_slice(one.as_bytes());
    stream.write_all(&bytes).unwrap();
    let first = common::read_response(&mut reader, false).expect("the valid request's answer");
    assert_eq!(first.status, 200);
    match common::read_response(&mut reader, false) {
        Ok(r) => assert_eq!(r.status, 400, "{}", r.text()),
        Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "hung: {e}"),
    }
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 200"),
        "a request after garbage was served: {}",
        String::from_utf8_lossy(&rest)
    );
    // Random bytes on fresh connections: each is refused, none hangs.
    let mut rng = common::Rng::new(common::Rng::seed_from_env("ABUSE_SEED"));
    for _ in 0..50 {
        let mut stream = connect(server.addr);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let junk: Vec<u8> = (0..rng.below(8192) + 1)
            .map(|_| rng.next_u64() as u8)
            .collect();
        // A prefix of the HTTP/2 preface would wait for more; these are
        // finished with blank lines so any parser sees an end.
        let _ = stream.write_all(&junk);
        let _ = stream.write_all(b"\r\n\r\n");
        let mut out = Vec::new();
        let started = Instant::now();
        let _ = stream.read_to_end(&mut out);
        assert!(
            started.elapsed() < Duration::from_secs(HEADER_TIMEOUT_SECONDS + CUT_SLACK_SECONDS),
            "junk connection not closed"
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 4"),
            "junk answered {text}"
        );
    }
    served(&server);
    server.get(Role::Admin, "/v1/campaigns").expect(200, None);
}
