//! Connections that are open but unused, against the real binary: idle
//! HTTP/2 connections (the preface, then nothing) filling
//! `--connections-max`, idle HTTP/1.1 keep-alive connections, HTTP/2 peers
//! that stop answering pings, and one address opening more than
//! `--connections-per-address-max`. Each test checks that the server closes
//! what it should within a bound (and not what it should not), and that an
//! honest client gets through.
//!
//! The HTTP/2 clients here write and read raw frames, so they can behave in
//! ways a real client library would not (never open a stream, never answer
//! a ping).

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Server;

/// Slack on top of a timeout before a connection counts as not closed.
const SLACK_SECONDS: u64 = 3;

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// Reads one frame: `(type, flags, payload)`.
fn read_frame(reader: &mut impl Read) -> std::io::Result<(u8, u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    reader.read_exact(&mut payload)?;
    Ok((head[3], head[4], payload))
}

/// What a raw HTTP/2 connection saw before the server closed it.
#[derive(Debug, Default)]
struct Seen {
    pings: usize,
    goaway: bool,
    /// From the end of the handshake to the close.
    lasted: Option<Duration>,
}

/// A raw HTTP/2 connection that never opens a stream: it sends the preface
/// and its (empty) settings, acknowledges the server's, answers pings if
/// `answer_pings`, and reads until the server closes it or `bound` passes.
/// `ready` is sent once the server has answered the handshake.
fn idle_h2(addr: SocketAddr, answer_pings: bool, bound: Duration, ready: mpsc::Sender<()>) -> Seen {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(bound)).unwrap();
    stream.write_all(common::H2_PREFACE).unwrap();
    stream
        .write_all(&common::h2_frame(SETTINGS, 0, 0, &[]))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut seen = Seen::default();
    let mut started = None;
    loop {
        if started.is_some_and(|s: Instant| s.elapsed() > bound) {
            return seen;
        }
        match read_frame(&mut reader) {
            Ok((SETTINGS, flags, _)) if flags & ACK == 0 => {
                let _ = stream.write_all(&common::h2_frame(SETTINGS, ACK, 0, &[]));
                started = Some(Instant::now());
                let _ = ready.send(());
            }
            Ok((PING, flags, payload)) if flags & ACK == 0 => {
                seen.pings += 1;
                if answer_pings {
                    let _ = stream.write_all(&common::h2_frame(PING, ACK, 0, &payload));
                }
            }
            Ok((GOAWAY, ..)) => seen.goaway = true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return seen;
            }
            Err(_) => {
                seen.lasted = started.map(|s| s.elapsed());
                return seen;
            }
        }
    }
}

/// An honest `/healthz` on a fresh connection; its status and latency.
fn healthz(addr: SocketAddr) -> std::io::Result<(u16, Duration)> {
    let start = Instant::now();
    common::request(addr, "GET", "/healthz", &[], b"").map(|r| (r.status, start.elapsed()))
}

#[test]
fn idle_http2_connections_at_the_limit_are_closed_after_the_idle_timeout() {
    const LIMIT: usize = 5;
    const IDLE_SECONDS: u64 = 3;
    // A long header timeout, so no ping and no header timer is what closes
    // the connections: only the idle timeout.
    let server = Server::start_with(&[
        "--connections-max",
        &LIMIT.to_string(),
        "--idle-timeout-seconds",
        &IDLE_SECONDS.to_string(),
        "--header-timeout-seconds",
        "30",
    ]);
    let bound = Duration::from_secs(IDLE_SECONDS + SLACK_SECONDS);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|s| {
        let idle: Vec<_> = (0..LIMIT)
            .map(|_| {
                let ready = ready_tx.clone();
                s.spawn(move || idle_h2(server.addr, true, bound + bound, ready))
            })
            .collect();
        for _ in 0..LIMIT {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the server answers each HTTP/2 handshake");
        }
        // Every permit is held by an idle HTTP/2 connection: the honest
        // client waits in the accept queue until the idle timeout frees one.
        let (status, waited) = healthz(server.addr).unwrap_or_else(|e| {
            panic!("{LIMIT} idle HTTP/2 connections starved an honest client: {e}")
        });
        assert_eq!(status, 200);
        eprintln!("an honest client behind {LIMIT} idle HTTP/2 connections waited {waited:?}");
        assert!(waited <= bound, "waited {waited:?}, over {bound:?}");
        for conn in idle {
            let seen = conn.join().unwrap();
            let lasted = seen.lasted.unwrap_or_else(|| {
                panic!("an idle HTTP/2 connection was not closed within {bound:?}: {seen:?}")
            });
            assert!(seen.goaway, "closed without a GOAWAY: {seen:?}");
            assert!(
                lasted >= Duration::from_secs(IDLE_SECONDS) - Duration::from_millis(500),
                "closed before the idle timeout: {seen:?}"
            );
            assert!(lasted <= bound, "{seen:?}");
        }
    });
    let (status, _) = healthz(server.addr).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn idle_http1_keep_alive_connections_close_after_the_idle_timeout() {
    const IDLE_SECONDS: u64 = 2;
    // The header timer also runs between keep-alive requests; make it long
    // so that what closes the connection is the idle timeout.
    let server = Server::start_with(&[
        "--idle-timeout-seconds",
        &IDLE_SECONDS.to_string(),
        "--header-timeout-seconds",
        "30",
    ]);
    let stream = TcpStream::connect(server.addr).unwrap();
    let bound = Duration::from_secs(IDLE_SECONDS + SLACK_SECONDS);
    stream.set_read_timeout(Some(bound + bound)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    for _ in 0..3 {
        writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let r = common::read_response(&mut reader, false).unwrap();
        assert_eq!(r.status, 200);
    }
    let idle_since = Instant::now();
    let mut rest = Vec::new();
    let outcome = reader.read_to_end(&mut rest);
    let lasted = idle_since.elapsed();
    eprintln!("an idle keep-alive connection was closed after {lasted:?}: {outcome:?}");
    assert!(
        !matches!(&outcome, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "an idle keep-alive connection was still open {lasted:?} later"
    );
    assert!(
        lasted >= Duration::from_secs(IDLE_SECONDS) - Duration::from_millis(500),
        "closed after {lasted:?}, before the idle timeout"
    );
    assert!(lasted <= bound, "closed after {lasted:?}, over {bound:?}");
}

#[test]
fn http2_peers_that_stop_answering_pings_are_dropped() {
    const HEADER_SECONDS: u64 = 1;
    // A long idle timeout: what closes the silent peer must be the ping.
    let server = Server::start_with(&[
        "--idle-timeout-seconds",
        "60",
        "--header-timeout-seconds",
        &HEADER_SECONDS.to_string(),
    ]);
    // Pinged after a header timeout of silence, and dropped a header
    // timeout later if it has not answered.
    let bound = Duration::from_secs(2 * HEADER_SECONDS + SLACK_SECONDS);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (deaf, answering) = std::thread::scope(|s| {
        let deaf = {
            let ready = ready_tx.clone();
            s.spawn(move || idle_h2(server.addr, false, bound, ready))
        };
        // The answering peer is watched for longer than the deaf one may
        // last: it must see several pings and stay open throughout.
        let answering = {
            let ready = ready_tx.clone();
            s.spawn(move || idle_h2(server.addr, true, bound + bound, ready))
        };
        for _ in 0..2 {
            ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        (deaf.join().unwrap(), answering.join().unwrap())
    });
    eprintln!("deaf peer: {deaf:?}; answering peer: {answering:?}");
    assert!(deaf.pings >= 1, "the server never pinged: {deaf:?}");
    assert!(
        deaf.lasted.is_some_and(|l| l <= bound),
        "a peer that does not answer pings was not dropped within {bound:?}: {deaf:?}"
    );
    assert!(answering.pings >= 2, "{answering:?}");
    assert_eq!(
        answering.lasted, None,
        "a peer that answers its pings was dropped before the idle timeout"
    );
}

/// A connection to `addr` from local address `from` (any loopback address
/// works on Linux), as a blocking std stream.
fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    });
    let stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    stream
}

/// Waits (bounded) for the server to close `stream`; whether it did.
fn closed_within(mut stream: &TcpStream, bound: Duration) -> bool {
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn one_address_holds_at_most_its_connections() {
    const PER_ADDRESS: usize = 3;
    let server = Server::start_with(&[
        "--connections-per-address-max",
        &PER_ADDRESS.to_string(),
        "--header-timeout-seconds",
        "30",
    ]);
    // Silent connections: only the header timeout (30 s) would close them.
    // From 127.0.0.3, which the start-up's readiness checks (127.0.0.1)
    // did not use, so none of those can still count against it.
    const FROM: &str = "127.0.0.3";
    let mut held: Vec<TcpStream> = (0..PER_ADDRESS)
        .map(|_| connect_from(FROM, server.addr))
        .collect();
    // The server accepts in order, so these come after the held ones. "At
    // once" is well under the header timeout, with room for a busy machine.
    let at_once = Duration::from_secs(10);
    for _ in 0..3 {
        let extra = connect_from(FROM, server.addr);
        assert!(
            closed_within(&extra, at_once),
            "connection {} from one address was not closed at once",
            PER_ADDRESS + 1
        );
    }
    // Another address is not affected.
    let other = connect_from("127.0.0.2", server.addr);
    let mut w = other.try_clone().unwrap();
    w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = common::read_response(&mut BufReader::new(other), false).unwrap();
    assert_eq!(r.status, 200);
    // A closed connection gives its place back (once the server has seen
    // the close, hence the bounded retry).
    drop(held.pop());
    let served = common::wait_until(Duration::from_secs(5), || {
        let s = connect_from(FROM, server.addr);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_ok()
            && common::read_response(&mut BufReader::new(s), false).is_ok_and(|r| r.status == 200)
    });
    assert!(
        served,
        "the address's count was not given back when a connection closed"
    );
    drop(held);
}
