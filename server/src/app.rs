//! The server's shared state: the engine over the WAL, tokens, metrics, and
//! start-up (open the log, replay it with progress, then serve).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redeem_engine::{Config as EngineConfig, Engine, Journal, JournalError, Lsn, Record};
use redeem_wal::{Options, SyncMode, Wal};

use crate::metrics::Metrics;
use crate::render;
use crate::tokens::TokenStore;

/// Where the log lives inside the data dir.
pub const WAL_DIR: &str = "wal";

/// Everything `serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub sync: SyncMode,
    /// Accept every request without a token (local load tests only).
    pub no_auth: bool,
    /// Largest JSON request body.
    pub body_bytes_max: usize,
    /// Largest code import body.
    pub import_bytes_max: usize,
    /// Open connections at most; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout_seconds: u64,
    /// Time a request may take, long-polls included.
    pub request_timeout_seconds: u64,
    /// Time in-flight requests get to finish after a shutdown signal.
    pub drain_seconds: u64,
    /// WAL segment size.
    pub segment_bytes: u64,
    pub failed_lookups_per_minute: u32,
    /// Take a snapshot once this many records follow the last one.
    pub snapshot_records: u64,
    /// Or once this many seconds passed with any record since the last one.
    pub snapshot_seconds: u64,
}

impl ServeConfig {
    pub fn new(data_dir: PathBuf) -> ServeConfig {
        ServeConfig {
            data_dir,
            sync: SyncMode::Always,
            no_auth: false,
            body_bytes_max: 1 << 20,
            import_bytes_max: 64 << 20,
            connections_max: 10_000,
            header_timeout_seconds: 10,
            request_timeout_seconds: 60,
            drain_seconds: 10,
            segment_bytes: redeem_wal::SEGMENT_BYTES_DEFAULT,
            failed_lookups_per_minute: redeem_engine::limiter::FAILURES_PER_WINDOW_DEFAULT,
            snapshot_records: 1_000_000,
            snapshot_seconds: 600,
        }
    }
}

/// The engine's journal: each record is encoded once into a per-thread
/// buffer and appended to the WAL, which never waits for `msync` here.
#[derive(Debug)]
pub struct WalJournal {
    pub wal: Arc<Wal>,
}

thread_local! {
    static ENCODE_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Journal for WalJournal {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError> {
        ENCODE_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            record.encode(&mut buf);
            self.wal.append(record.kind() as u8, &buf).map_err(|e| {
                // The full error names files of the data dir: logged, not
                // sent to clients.
                tracing::error!(error = %e, "the log refused a record");
                let message = match &e {
                    redeem_wal::AppendError::Storage(io) if io.is_no_space() => {
                        "no space left on the disk holding the log".to_owned()
                    }
                    redeem_wal::AppendError::Storage(_) => "the log's storage failed".to_owned(),
                    redeem_wal::AppendError::Poisoned => {
                        "the log failed to sync and accepts nothing more".to_owned()
                    }
                    other => other.to_string(),
                };
                JournalError { message }
            })
        })
    }
}

/// The shared state of a running server.
pub struct App {
    pub engine: Engine<WalJournal>,
    pub wal: Arc<Wal>,
    pub tokens: TokenStore,
    pub config: ServeConfig,
    pub metrics: Metrics,
    /// False until the log has been replayed.
    ready: AtomicBool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn is_ready(&self) -> bool {
        // Acquire pairs with the Release in `replay`: a ready server sees the
        // replayed state.
        self.ready.load(Ordering::Acquire)
    }

    /// Waits until `lsn` is durable; an error means the log failed.
    pub async fn durable(&self, lsn: Lsn) -> Result<(), redeem_wal::DurabilityError> {
        if lsn == 0 {
            return Ok(());
        }
        let start = Instant::now();
        let result = self.wal.durable(lsn).await;
        self.metrics.observe_commit_wait(start.elapsed());
        result
    }
}

/// Opens the data dir: the token file (creating the first admin token on a
/// fresh dir, returned to be printed) and the WAL.
pub fn open(
    config: ServeConfig,
) -> anyhow::Result<(Arc<App>, Option<String>, redeem_wal::Recovered)> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("cannot create data dir {}: {e}", config.data_dir.display())
    })?;
    let mut first_token = None;
    let tokens = TokenStore::open(&config.data_dir)?;
    if !tokens.has_admin() {
        first_token = Some(crate::tokens::add(
            &config.data_dir,
            crate::tokens::Role::Admin,
            "admin",
        )?);
    }
    // The store sees the new token: it re-reads a changed file on a miss.
    let wal_dir = wal_dir(&config.data_dir);
    let options = Options {
        segment_bytes: config.segment_bytes,
        sync: config.sync,
        ..Options::default()
    };
    let (wal, recovered) = Wal::open(&wal_dir, options)?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(%torn, "truncated a torn tail at the end of the log");
    }
    let wal = Arc::new(wal);
    let engine = Engine::new(
        WalJournal { wal: wal.clone() },
        EngineConfig {
            failed_lookups_per_minute: config.failed_lookups_per_minute,
            ..EngineConfig::default()
        },
        render::renderer(),
    );
    let app = Arc::new(App {
        engine,
        wal,
        tokens,
        config,
        metrics: Metrics::default(),
        ready: AtomicBool::new(false),
    });
    Ok((app, first_token, recovered))
}

/// Replays the log into the engine, logging progress every second. Any
/// record that does not decode or apply stops the start.
pub fn replay(app: &App, recovered: &redeem_wal::Recovered) -> anyhow::Result<ReplaySummary> {
    let first = restore_snapshot(&app.engine, recovered)?;
    let summary = replay_into(&app.engine, &app.wal, first, recovered.last_lsn, true)?;
    // Release: see `is_ready`.
    app.ready.store(true, Ordering::Release);
    Ok(summary)
}

/// Restores the recovered snapshot, if any, into a fresh engine; returns the
/// first LSN to replay after it.
pub fn restore_snapshot<J: Journal>(
    engine: &Engine<J>,
    recovered: &redeem_wal::Recovered,
) -> anyhow::Result<Lsn> {
    match &recovered.snapshot {
        None => Ok(recovered.first_lsn),
        Some(snapshot) => {
            let start = Instant::now();
            engine.restore(&snapshot.blob).map_err(|e| {
                anyhow::anyhow!("snapshot at LSN {} does not restore: {e}", snapshot.lsn)
            })?;
            tracing::info!(
                lsn = snapshot.lsn,
                bytes = snapshot.blob.len(),
                seconds = start.elapsed().as_secs_f64(),
                "restored snapshot"
            );
            Ok(snapshot.lsn + 1)
        }
    }
}

/// Keeps a shadow engine that replays the durable log and snapshots it, so
/// requests never stall for a snapshot. Runs on its own thread until `stop`.
pub fn snapshotter(
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
        let due = durable.saturating_sub(last_snapshot_lsn) >= app.config.snapshot_records
            || (durable > last_snapshot_lsn
                && last_snapshot_at.elapsed() >= Duration::from_secs(app.config.snapshot_seconds));
        if !due {
            continue;
        }
        let start = Instant::now();
        match replay_into(&shadow, &app.wal, shadow_lsn + 1, durable, false) {
            Ok(_) => shadow_lsn = durable,
            Err(e) => {
                tracing::error!(error = %e, "snapshots disabled: the shadow replay failed");
                return;
            }
        }
        let blob = shadow.snapshot(durable, crate::timefmt::now());
        if let Err(e) = app.wal.write_snapshot(durable, &blob) {
            tracing::error!(error = %e, lsn = durable, "writing a snapshot failed");
            continue;
        }
        let removed = app.wal.remove_segments_before(durable + 1);
        tracing::info!(lsn = durable, bytes = blob.len(), removed_segments = ?removed.ok(), seconds = start.elapsed().as_secs_f64(), "snapshot written");
        last_snapshot_lsn = durable;
        last_snapshot_at = Instant::now();
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySummary {
    pub records: u64,
    pub elapsed: Duration,
}

impl ReplaySummary {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Applies records `first..=last` of `wal` to `engine`.
pub fn replay_into<J: Journal>(
    engine: &Engine<J>,
    wal: &Wal,
    first: Lsn,
    last: Lsn,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let mut records = wal.read_from(first)?;
    apply_records(engine, &mut records, last, progress)
}

/// Applies `records` through `last` to `engine`, logging progress every
/// second when asked. Any record that does not decode or apply is an error.
pub fn apply_records<J: Journal>(
    engine: &Engine<J>,
    records: &mut redeem_wal::Records,
    last: Lsn,
    progress: bool,
) -> anyhow::Result<ReplaySummary> {
    let start = Instant::now();
    let mut last_report = start;
    let mut count = 0u64;
    while let Some(next) = records.next_record() {
        let record = next?;
        if record.lsn > last {
            break;
        }
        engine.apply_encoded(record.lsn, record.record_type, record.payload)?;
        count += 1;
        if progress && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            tracing::info!(lsn = record.lsn, last, records = count, "replaying the log");
        }
    }
    Ok(ReplaySummary {
        records: count,
        elapsed: start.elapsed(),
    })
}

/// Where the WAL of a data dir lives.
pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_DIR)
}
