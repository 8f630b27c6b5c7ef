//! Running the server: open the data dir, replay the log while `/readyz`
//! answers 503, then accept connections until shutdown; the background
//! tasks (the reservation sweeper and the snapshotter) start once the log
//! is replayed and stop before the log is closed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use redeem_engine::{Config as EngineConfig, Engine};
use tokio::net::TcpListener;

use crate::app::{self, App, replay_into};
use crate::config::ServeConfig;
use crate::{conn, http, render, retention, timefmt};

/// How often expired reservations are swept: well within the promised second.
const SWEEP_INTERVAL_MS: u64 = 200;
/// Most concurrent HTTP/2 streams per connection. Each may hold a request
/// body up to the body limit in its handler, so this times the body limit
/// bounds the request bytes one connection buffers in handlers.
const H2_STREAMS_MAX: u32 = 32;
/// HTTP/2 flow-control window of one stream, in bytes: what a client may
/// send on it before its handler reads any (a handler that answers without
/// reading, such as a 401, lets it go unread).
const H2_STREAM_WINDOW_BYTES: u32 = 64 << 10;
/// HTTP/2 flow-control window of a whole connection, in bytes: what a
/// client may have sent, unread, over all its streams together.
const H2_CONNECTION_WINDOW_BYTES: u32 = 256 << 10;
/// Response bytes buffered for one HTTP/2 stream before its body is polled
/// again, so a client that stops reading holds no more than this a stream.
const H2_SEND_BUF_BYTES: usize = 64 << 10;
/// Largest request head, in bytes.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Streams a client may reset before hyper accepted them, at once, before
/// its connection is cut off (the "rapid reset" flood). h2's default, named.
const H2_PENDING_RESETS_MAX: usize = 20;
/// Streams the server may reset for a client's errors (refused past the
/// concurrency limit, malformed) before its connection is cut off.
const H2_ERROR_RESETS_MAX: usize = 1024;
/// HTTP/2's prior-knowledge preface, which the protocol sniffing looks for.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often a client that has sent part of the HTTP/2 preface is checked
/// for more (peeking again at once would return the same bytes).
const PREFACE_POLL_MS: u64 = 20;

/// Opens the data dir, replays the log (serving `/readyz` 503 meanwhile),
/// then serves `listener` until `shutdown` resolves; then stops accepting,
/// drains in-flight requests for at most `drain_seconds`, and closes the log.
/// On a fresh data dir the first admin token is printed to stdout, once.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Before anything else, so a bad --webhook-ca-file stops the start
    // before the data dir is touched.
    let webhook_tls = crate::webhooks::tls::client_config(config.webhook_ca_file.as_deref())?;
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
    let mut base_snapshot = recovered.snapshot.clone();
    let mut replayer = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app::replay(&app, &recovered))
    };
    let serving = serve(app.clone(), listener, shutdown);
    tokio::pin!(serving);
    let mut background = None;
    let mut webhook_tls = Some(webhook_tls);
    loop {
        tokio::select! {
            result = &mut replayer, if background.is_none() => {
                let summary = result??;
                tracing::info!(records = summary.records, seconds = summary.elapsed.as_secs_f64(), rate = summary.rate() as u64, "replay done; serving");
                let tls = webhook_tls.take().expect("the replay finishes once");
                background = Some(Background::start(&app, base_snapshot.take(), tls)?);
            }
            result = &mut serving => {
                result?;
                break;
            }
        }
    }
    match background {
        Some(background) => background.stop().await,
        // Stopped during replay: let it finish so the log closes cleanly.
        None => drop(replayer.await??),
    }
    close(app)
}

/// The tasks that run beside the server once the log is replayed.
struct Background {
    /// Releases expired reservations.
    sweeper: tokio::task::JoinHandle<()>,
    /// Starts a delivery task per webhook subscription.
    webhooks: tokio::task::JoinHandle<()>,
    /// The delivery tasks, stopped and awaited before the log closes.
    webhook_workers: crate::webhooks::Workers,
    /// Dropping it tells the snapshotter to stop.
    stop_snapshots: std::sync::mpsc::Sender<()>,
    /// Replays the durable log into a shadow engine and snapshots it.
    snapshotter: std::thread::JoinHandle<()>,
}

impl Background {
    fn start(
        app: &Arc<App>,
        base: Option<redeem_wal::Snapshot>,
        webhook_tls: rustls::ClientConfig,
    ) -> std::io::Result<Background> {
        let (stop_snapshots, stop_rx) = std::sync::mpsc::channel::<()>();
        let snapshotter = {
            let app = app.clone();
            std::thread::Builder::new()
                .name("snapshotter".into())
                .spawn(move || snapshot_loop(app, base, stop_rx))?
        };
        let webhook_workers = crate::webhooks::Workers::default();
        Ok(Background {
            webhooks: tokio::spawn(crate::webhooks::supervise(
                app.clone(),
                webhook_workers.clone(),
                webhook_tls,
            )),
            webhook_workers,
            sweeper: spawn_sweeper(app.clone()),
            stop_snapshots,
            snapshotter,
        })
    }

    async fn stop(self) {
        self.sweeper.abort();
        let _ = self.sweeper.await;
        self.webhooks.abort();
        let _ = self.webhooks.await;
        self.webhook_workers.stop().await;
        drop(self.stop_snapshots);
        let snapshotter = self.snapshotter;
        let _ = tokio::task::spawn_blocking(move || snapshotter.join()).await;
    }
}

/// Closes the log once nothing else holds the state: flush and join the
/// flusher.
fn close(app: Arc<App>) -> anyhow::Result<()> {
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
    let header_timeout = Duration::from_secs(app.config.header_timeout_seconds);
    let idle_timeout = Duration::from_secs(app.config.idle_timeout_seconds);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also runs while a keep-alive connection waits for its next
        // request, so an idle HTTP/1.1 connection closes after the shorter
        // of this and the idle timeout.
        .header_read_timeout(header_timeout)
        .max_buf_size(HEAD_BYTES_MAX)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_STREAMS_MAX)
        .initial_stream_window_size(H2_STREAM_WINDOW_BYTES)
        .initial_connection_window_size(H2_CONNECTION_WINDOW_BYTES)
        .max_send_buf_size(H2_SEND_BUF_BYTES)
        .max_pending_accept_reset_streams(H2_PENDING_RESETS_MAX)
        .max_local_error_reset_streams(H2_ERROR_RESETS_MAX)
        .max_header_list_size(HEAD_BYTES_MAX as u32)
        // A peer that has sent nothing for a header timeout is pinged and
        // has another to answer; one that does not is dropped.
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    let builder = Arc::new(builder);
    // Each connection task holds a receiver: a send asks them all to shut
    // down gracefully, and `closed` resolves when every one has finished.
    let (stop_connections, stop_rx) = tokio::sync::watch::channel(());
    let connections = Arc::new(tokio::sync::Semaphore::new(app.config.connections_max));
    let addresses = conn::AddressSlots::new(app.config.connections_per_address_max);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
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
        let Some(slot) = addresses.take(peer.ip()) else {
            // Closed at once: one address may not take every connection.
            tracing::debug!(ip = %peer.ip(), "connection refused: too many from this address");
            drop((stream, permit));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = conn::Activity::new();
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            hyper::service::service_fn(move |req| {
                let handling = activity.begin();
                let (app, activity) = (app.clone(), activity.clone());
                async move {
                    let response = http::handle(app, req).await?;
                    drop(handling);
                    Ok::<_, std::convert::Infallible>(
                        response.map(|body| conn::Watched::new(body, activity)),
                    )
                }
            })
        };
        let (builder, mut stop_rx) = (builder.clone(), stop_rx.clone());
        tokio::spawn(async move {
            // hyper-util sniffs the protocol from the first bytes with no
            // deadline, and hyper's header timeout starts only after it: a
            // client that connects and sends nothing (or trickles the
            // HTTP/2 preface) would hold its permit forever.
            match tokio::time::timeout(header_timeout, first_bytes(&stream)).await {
                Ok(Ok(true)) => {}
                _ => return drop((permit, slot)),
            }
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::pin!(conn);
            // After a graceful shutdown was asked for, the connection gets a
            // header timeout of idleness to finish; then it is dropped.
            let mut closing = false;
            loop {
                let quiet = if closing {
                    header_timeout
                } else {
                    idle_timeout
                };
                tokio::select! {
                    _ = conn.as_mut() => break,
                    () = activity.idle(quiet) => {
                        if closing {
                            break;
                        }
                        conn.as_mut().graceful_shutdown();
                        activity.touch();
                        closing = true;
                    }
                    _ = stop_rx.changed(), if !closing => {
                        conn.as_mut().graceful_shutdown();
                        activity.touch();
                        closing = true;
                    }
                }
            }
            drop((permit, slot, stop_rx));
        });
    }
    drop((listener, stop_rx));
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_connections.send(());
    tokio::select! {
        () = stop_connections.closed() => {}
        () = tokio::time::sleep(Duration::from_secs(app.config.drain_seconds)) => {
            tracing::warn!("drain timed out; closing the remaining connections");
        }
    }
    Ok(())
}

/// Keeps a shadow engine that replays the durable log and snapshots it, so
/// requests never stall for a snapshot, and deletes the log segments that
/// the retention policy lets go (`retention`). Runs on its own thread
/// until `stop`.
fn snapshot_loop(
    app: Arc<App>,
    base: Option<redeem_wal::Snapshot>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    use redeem_engine::NullJournal;
    let check = Duration::from_millis(500);
    let shadow = Engine::new(
        NullJournal::default(),
        EngineConfig::default(),
        render::renderer(),
    );
    let mut shadow_lsn = 0;
    if let Some(snapshot) = &base {
        if let Err(e) = shadow.restore(&snapshot.blob) {
            tracing::error!(error = %e, "snapshots disabled: the base snapshot does not restore");
            return;
        }
        shadow_lsn = snapshot.lsn;
    }
    let mut last_snapshot_lsn = shadow_lsn;
    let mut last_snapshot_at = Instant::now();
    loop {
        match stop.recv_timeout(check) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let durable = app.wal.durable_lsn();
        let due = durable.saturating_sub(last_snapshot_lsn) >= app.config.snapshot_every_records
            || (durable > last_snapshot_lsn
                && last_snapshot_at.elapsed()
                    >= Duration::from_secs(app.config.snapshot_every_seconds));
        if due {
            let start = Instant::now();
            match replay_into(&shadow, &app.wal, shadow_lsn + 1, durable, false) {
                Ok(_) => shadow_lsn = durable,
                Err(e) => {
                    tracing::error!(error = %e, "snapshots disabled: the shadow replay failed");
                    return;
                }
            }
            let blob = shadow.snapshot(durable, timefmt::now());
            match app.wal.write_snapshot(durable, &blob) {
                Ok(()) => {
                    tracing::info!(
                        lsn = durable,
                        bytes = blob.len(),
                        seconds = start.elapsed().as_secs_f64(),
                        "snapshot written"
                    );
                    last_snapshot_lsn = durable;
                    last_snapshot_at = Instant::now();
                }
                Err(e) => tracing::error!(error = %e, lsn = durable, "writing a snapshot failed"),
            }
        }
        // Every tick, not only after a snapshot: segments age meanwhile.
        if last_snapshot_lsn > 0 {
            match retention::apply(&app, last_snapshot_lsn, timefmt::now()) {
                Ok(0) => {}
                Ok(removed) => {
                    tracing::info!(
                        removed_segments = removed,
                        first_lsn = app.wal.first_lsn(),
                        "log segments past retention deleted"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "deleting log segments failed"),
            }
        }
    }
}
