//! HTTP/2 floods against the real binary, each on one connection, while an
//! honest HTTP/1.1 client keeps asking `/healthz`:
//!
//! - many streams, each sending a large request body it never finishes:
//!   the server's resident memory grows by the per-connection bound
//!   (streams × body limit), not by what the client chooses;
//! - the "rapid reset" pattern (open a stream, reset it at once, repeat):
//!   the server cuts the connection off (GOAWAY) within a bounded number
//!   of streams;
//! - streams opened past the advertised `SETTINGS_MAX_CONCURRENT_STREAMS`
//!   as fast as one write carries them: they are refused, and the
//!   connection is cut off.
//!
//! After each flood the server is still up and answering. The well-behaved
//! floods use the `h2` crate's client (hyper's own HTTP/2 implementation);
//! the one that breaks the protocol writes raw frames.

mod common;

use std::future::Future as _;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Server;

/// Streams the body flood tries to open on its one connection.
const STREAMS_TRIED: usize = 256;
/// The server's request body limit (the default), in bytes.
const BODY_BYTES_MAX: usize = 1 << 20;
/// Bytes each flooding stream sends: all but one of the limit, so the
/// handler buffers them and waits for the rest.
const BODY_BYTES_SENT: usize = BODY_BYTES_MAX - 1;
/// Growth of the server's resident memory the body flood may cause: the
/// bound is 32 streams × 1 MiB, plus allocator slack.
const RSS_GROWTH_KIB_MAX: u64 = 80 << 10;
/// Streams the reset flood may open before it must have been cut off.
const RESETS_MAX: usize = 20_000;
/// Streams the raw flood opens in one write.
const RAW_STREAMS: u32 = 4_000;
/// Honest requests made while one flood runs, at most.
const HONEST_REQUESTS_MAX: usize = 10_000;
/// How long any phase may take before the test fails instead of hanging.
const PHASE_SECONDS: u64 = 30;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An `h2` client connection; the connection task records the server's
/// stream limit as it learns it, and yields the connection's end.
struct H2 {
    client: h2::client::SendRequest<Bytes>,
    streams_max: Arc<AtomicUsize>,
    connection: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

async fn connect(addr: SocketAddr) -> H2 {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let streams_max = Arc::new(AtomicUsize::new(usize::MAX));
    let seen = streams_max.clone();
    let connection = tokio::spawn(std::future::poll_fn(move |cx| {
        let polled = std::pin::Pin::new(&mut connection).poll(cx);
        // Relaxed: a value polled by the test until it is set; nothing
        // else is published through it.
        seen.store(connection.max_concurrent_send_streams(), Ordering::Relaxed);
        polled
    }));
    let mut h2 = H2 {
        client,
        streams_max,
        connection,
    };
    // The server's SETTINGS come before its first response.
    let status = h2.get("/healthz").await;
    assert_eq!(status, 200);
    // The connection task stores the limit after the poll that delivered
    // the response, and this task may run first: wait for the store.
    let start = Instant::now();
    while h2.streams_max.load(Ordering::Relaxed) == usize::MAX {
        assert!(
            start.elapsed() < Duration::from_secs(PHASE_SECONDS),
            "the server's stream limit never reached the client"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    h2
}

impl H2 {
    async fn get(&mut self, path: &str) -> u16 {
        let request = http::Request::get(path).body(()).unwrap();
        let mut client = self.client.clone().ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        response.await.unwrap().status().as_u16()
    }
}

/// An honest `/healthz` over HTTP/1.1 must get `200`, within a bound.
#[track_caller]
fn served(server: &Server) -> Duration {
    let start = Instant::now();
    let r = common::request(server.addr, "GET", "/healthz", &[], b"")
        .unwrap_or_else(|e| panic!("an honest client was not served: {e}"));
    assert_eq!(r.status, 200);
    start.elapsed()
}

/// Runs `flood` while another thread asks `/healthz` over HTTP/1.1 again
/// and again (each answer required, at most `HONEST_REQUESTS_MAX`); returns
/// the flood's result, the honest requests served and the slowest one.
fn honest_meanwhile<T>(server: &Server, flood: impl FnOnce() -> T) -> (T, usize, Duration) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let honest = s.spawn(|| {
            let (mut count, mut slowest) = (0, Duration::ZERO);
            // Relaxed: a flag polled between requests; nothing else is
            // published through it.
            while !done.load(Ordering::Relaxed) && count < HONEST_REQUESTS_MAX {
                slowest = slowest.max(served(server));
                count += 1;
            }
            (count, slowest)
        });
        let result = flood();
        done.store(true, Ordering::Relaxed);
        let (count, slowest) = honest.join().expect("the honest client was always served");
        (result, count, slowest)
    })
}

/// Opens a stream of `client` that sends `BODY_BYTES_SENT` bytes of a
/// redemption body, as fast as flow control lets it, and never ends it.
/// Signals `sent` once every byte went out; then holds the stream open.
async fn large_unfinished_body(
    client: h2::client::SendRequest<Bytes>,
    token: String,
    sent: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<(), h2::Error> {
    let request = http::Request::post("/v1/redemptions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let mut client = client.ready().await?;
    let (response, mut body) = client.send_request(request, false)?;
    let mut left = BODY_BYTES_SENT;
    while left > 0 {
        body.reserve_capacity(left.min(64 << 10));
        let granted = match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
            Some(granted) => granted?,
            None => return Ok(()),
        };
        let n = granted.min(left);
        // Leading whitespace: valid JSON so far, never complete.
        body.send_data(Bytes::from(vec![b' '; n]), false)?;
        left -= n;
    }
    let _ = sent.send(());
    // Hold the stream open; the server's request timeout would end it.
    let _ = response.await;
    drop(body);
    Ok(())
}

#[test]
fn many_large_unfinished_bodies_on_one_connection_stay_bounded() {
    let server = Server::start();
    let rt = runtime();
    let before = server.rss_kib();
    let ((limit, opened, took), honest, slowest) = honest_meanwhile(&server, || {
        rt.block_on(async {
            let h2 = connect(server.addr).await;
            let limit = h2.streams_max.load(Ordering::Relaxed);
            let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..STREAMS_TRIED {
                tokio::spawn(large_unfinished_body(
                    h2.client.clone(),
                    server.checkout.clone(),
                    sent_tx.clone(),
                ));
            }
            // Streams past the server's limit wait for a free one, which never
            // comes: every open stream is still sending its body.
            let expected = STREAMS_TRIED.min(limit);
            let start = Instant::now();
            let deadline = Duration::from_secs(PHASE_SECONDS);
            let mut opened = 0;
            while opened < expected {
                match tokio::time::timeout(deadline, sent_rx.recv()).await {
                    Ok(Some(())) => opened += 1,
                    _ => panic!("only {opened} of {expected} streams sent their bodies"),
                }
            }
            (limit, opened, start.elapsed())
        })
    });
    // The streams are still open (the runtime holds them): measured now.
    let during = server.rss_kib();
    let latency = served(&server);
    eprintln!(
        "body flood: the server allows {limit} streams; {opened} sent {} KiB each in {took:?}; \
         VmRSS {before} KiB before, {during} KiB during; {honest} honest requests meanwhile, \
         the slowest {slowest:?}, then one in {latency:?}",
        BODY_BYTES_SENT >> 10
    );
    drop(rt);
    assert!(
        during < before + RSS_GROWTH_KIB_MAX,
        "one connection grew the server by {} KiB",
        during - before
    );
    served(&server);
}

#[test]
fn rapid_reset_flood_is_cut_off() {
    let server = Server::start();
    let rt = runtime();
    let before = server.rss_kib();
    let ((opened, ended), honest, slowest) = honest_meanwhile(&server, || {
        rt.block_on(async {
            let h2 = connect(server.addr).await;
            let mut client = h2.client.clone();
            let mut opened = 0;
            while opened < RESETS_MAX {
                client = match client.ready().await {
                    Ok(client) => client,
                    Err(_) => break,
                };
                let request = http::Request::get("/healthz").body(()).unwrap();
                match client.send_request(request, false) {
                    Ok((_response, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                    Err(_) => break,
                }
                opened += 1;
            }
            let ended = tokio::time::timeout(Duration::from_secs(PHASE_SECONDS), h2.connection)
                .await
                .map(|joined| joined.unwrap());
            (opened, ended)
        })
    });
    let after = server.rss_kib();
    served(&server);
    eprintln!(
        "reset flood: cut off after {opened} streams: {ended:?}; VmRSS {before} KiB before, \
         {after} KiB after; {honest} honest requests meanwhile, the slowest {slowest:?}"
    );
    assert!(
        opened < RESETS_MAX,
        "{RESETS_MAX} streams opened and reset at once, and the connection is still open"
    );
    // The server ends the connection with GOAWAY ENHANCE_YOUR_CALM; on a
    // loaded machine the client may see the socket close (broken pipe,
    // reset) before it reads that frame. Either way the flood was cut off.
    match ended {
        Ok(Err(e)) if e.is_io() => {}
        Ok(Err(e)) => assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e}"),
        other => panic!("the flooding connection did not end in an error: {other:?}"),
    }
    assert!(
        after < before + RSS_GROWTH_KIB_MAX,
        "{before} -> {after} KiB"
    );
}

// ---- raw frames, for a client that ignores the server's settings --------

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const REFUSED_STREAM: u32 = 0x7;

/// `GET /healthz` in HPACK without the dynamic table: indexed `:method GET`
/// and `:scheme http`, literal `:path` and `:authority` by static index.
fn healthz_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 1, b'x']);
    block
}

#[test]
fn streams_past_the_advertised_limit_are_refused_and_the_flood_cut_off() {
    let server = Server::start();
    let before = server.rss_kib();
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(PHASE_SECONDS)))
        .unwrap();
    let mut bytes = common::H2_PREFACE.to_vec();
    bytes.extend(common::h2_frame(SETTINGS, 0, 0, &[]));
    let block = healthz_block();
    for i in 0..RAW_STREAMS {
        bytes.extend(common::h2_frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * i + 1,
            &block,
        ));
    }
    let mut writer = stream.try_clone().unwrap();
    let flood = || {
        // The server may cut the connection off before reading it all.
        let writing = std::thread::spawn(move || writer.write_all(&bytes));
        let mut reader = BufReader::new(stream);
        let (mut answered, mut refused, mut goaway) = (0, 0, None);
        loop {
            let mut head = [0u8; 9];
            if reader.read_exact(&mut head).is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0; len];
            if reader.read_exact(&mut payload).is_err() {
                break;
            }
            match head[3] {
                HEADERS => answered += 1,
                RST_STREAM if payload[..4] == REFUSED_STREAM.to_be_bytes() => refused += 1,
                GOAWAY => goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
                _ => {}
            }
        }
        let _ = writing.join();
        (answered, refused, goaway)
    };
    let ((answered, refused, goaway), honest, slowest) = honest_meanwhile(&server, flood);
    let after = server.rss_kib();
    served(&server);
    eprintln!(
        "raw flood of {RAW_STREAMS} streams: {answered} answered, {refused} refused, GOAWAY \
         {goaway:?}; VmRSS {before} KiB before, {after} KiB after; {honest} honest requests \
         meanwhile, the slowest {slowest:?}"
    );
    assert!(refused > 0, "no stream past the limit was refused");
    assert_eq!(
        goaway,
        Some(u32::from(h2::Reason::ENHANCE_YOUR_CALM)),
        "the flood was not cut off"
    );
    assert!(
        answered + refused < RAW_STREAMS as usize,
        "every stream was handled"
    );
    assert!(
        after < before + RSS_GROWTH_KIB_MAX,
        "{before} -> {after} KiB"
    );
}
