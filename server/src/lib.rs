//! redeemd: the server and operator CLI over `redeem-engine` and
//! `redeem-wal`. A thin hyper front end: every transition is appended to the
//! WAL and durable before the client gets its answer.
//!
//! # Layout
//! - `app`: shared state, the WAL-backed journal, start-up and replay.
//! - `http`: routing, auth, limits, idempotency keys, every route.
//! - `events`: `GET /v1/events`, the log as NDJSON with long-polling.
//! - `render`: JSON bodies, and the engine's renderer for stored responses.
//! - `metrics`: Prometheus text format.
//! - `tokens`: hashed API tokens in the data dir.
//! - `timefmt`: RFC 3339 in and out.
//! - `cli`: `wal verify|dump|replay` and `token add`.

pub mod app;
pub mod cli;
pub mod events;
pub mod http;
pub mod metrics;
pub mod render;
pub mod timefmt;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use app::{App, ServeConfig};

/// How often expired reservations are swept: well within the promised second.
const SWEEP_INTERVAL_MS: u64 = 200;
/// Most concurrent HTTP/2 streams per connection.
const H2_STREAMS_MAX: u32 = 256;
/// Largest request head, in bytes.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// HTTP/2's prior-knowledge preface, which the protocol sniffing looks for.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often a client that has sent part of the HTTP/2 preface is checked
/// for more (peeking again at once would return the same bytes).
const PREFACE_POLL_MS: u64 = 20;

/// Opens the data dir, replays the log (serving `/readyz` 503 meanwhile),
/// then serves `listener` until `shutdown` resolves; then stops accepting,
/// drains in-flight requests for at most `drain_seconds`, and closes the log.
/// `on_start` gets the first admin token on a fresh data dir.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (app, first_token, recovered) = app::open(config)?;
    if let Some(token) = first_token {
        // Printed once; only its hash is kept.
        println!("admin token: {token}");
    }
    if app.config.no_auth {
        tracing::warn!(
            "--no-auth: every request is accepted without a token; for local load tests only"
        );
    }
    tracing::info!(
        first_lsn = recovered.first_lsn,
        last_lsn = recovered.last_lsn,
        snapshot = ?recovered.snapshot.as_ref().map(|s| s.lsn),
        "replaying the log"
    );
    let base_snapshot = recovered.snapshot.clone();
    let replayer = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app::replay(&app, &recovered))
    };
    let (stop_snapshots, stop_rx) = std::sync::mpsc::channel::<()>();
    let mut stop_rx_slot = Some(stop_rx);
    let mut base_snapshot = base_snapshot;
    let mut snapshotter = None;
    let serving = serve(app.clone(), listener, shutdown);
    tokio::pin!(serving);
    let mut replay_done = false;
    let mut replayer = replayer;
    let mut sweeper = None;
    loop {
        tokio::select! {
            result = &mut replayer, if !replay_done => {
                replay_done = true;
                let summary = result??;
                tracing::info!(records = summary.records, seconds = summary.elapsed.as_secs_f64(), rate = summary.rate() as u64, "replay done; serving");
                sweeper = Some(spawn_sweeper(app.clone()));
                let (app, base) = (app.clone(), base_snapshot.take());
                let stop_rx = stop_rx_slot.take();
                if let Some(stop_rx) = stop_rx {
                    snapshotter = Some(std::thread::Builder::new().name("snapshotter".into()).spawn(move || app::snapshotter(app, base, stop_rx))?);
                }
            }
            result = &mut serving => {
                result?;
                break;
            }
        }
    }
    if let Some(sweeper) = sweeper {
        sweeper.abort();
        let _ = sweeper.await;
    }
    drop(stop_snapshots);
    if let Some(snapshotter) = snapshotter {
        let _ = tokio::task::spawn_blocking(move || snapshotter.join()).await;
    }
    if !replay_done {
        // Stopped during replay: let it finish so the log closes cleanly.
        replayer.await??;
    }
    let app = Arc::try_unwrap(app)
        .map_err(|_| anyhow::anyhow!("requests still hold the state after the drain"));
    match app {
        Ok(app) => {
            drop(app.engine);
            match Arc::try_unwrap(app.wal) {
                Ok(wal) => wal.close()?,
                Err(wal) => wal.wait_durable(wal.last_lsn())?,
            }
        }
        Err(e) => tracing::warn!("{e}; the log was flushed by its own shutdown"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Waits until the client has sent enough for its protocol to be known:
/// bytes that are not a prefix of the HTTP/2 preface, or the whole preface.
/// `Ok(false)` if it closed first. Only peeks: hyper reads the bytes again.
async fn first_bytes(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(PREFACE_POLL_MS)).await;
    }
}

fn spawn_sweeper(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_INTERVAL_MS));
        loop {
            tick.tick().await;
            match app.engine.sweep(timefmt::now()) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(released = n, "expired reservations released"),
                Err(e) => tracing::error!(error = %e, "sweeping reservations failed"),
            }
        }
    })
}

async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(app.config.header_timeout_seconds))
        .max_buf_size(HEAD_BYTES_MAX)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_MAX)
        .max_header_list_size(HEAD_BYTES_MAX as u32);
    let builder = Arc::new(builder);
    let header_timeout = Duration::from_secs(app.config.header_timeout_seconds);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(tokio::sync::Semaphore::new(app.config.connections_max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |req| http::handle(app.clone(), req));
        let (builder, watcher) = (builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            // hyper-util sniffs the protocol from the first bytes with no
            // deadline, and hyper's header timeout starts only after it: a
            // client that connects and sends nothing (or trickles the
            // HTTP/2 preface) would hold its permit forever.
            match tokio::time::timeout(header_timeout, first_bytes(&stream)).await {
                Ok(Ok(true)) => {}
                _ => return drop(permit),
            }
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(app.config.drain_seconds)) => {
            tracing::warn!("drain timed out; closing the remaining connections");
        }
    }
    Ok(())
}
