//! The server's shared state: the engine over the WAL, tokens, metrics;
//! opening a data dir and replaying its log (with progress).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redeem_engine::{Config as EngineConfig, Engine, Journal, JournalError, Lsn, Record};
use redeem_wal::{Options, Wal};

use crate::config::ServeConfig;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::render;
use crate::tokens::TokenStore;

/// Where the log lives inside the data dir.
pub const WAL_DIR: &str = "wal";

/// The engine's journal: each record is encoded once into a per-thread
/// buffer and appended to the WAL, which never waits for `msync` here.
#[derive(Debug)]
pub struct WalJournal {
    /// The same log `App::wal` waits on for durability.
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
    /// All coupon state; every change it makes is appended to `wal`.
    pub engine: Engine<WalJournal>,
    /// The log: answers wait on its durable LSN, `/v1/events` reads it,
    /// the snapshotter replays it.
    pub wal: Arc<Wal>,
    /// Hashes of the API tokens, for `Authorization: Bearer`.
    pub tokens: TokenStore,
    /// The flags `serve` was started with.
    pub config: ServeConfig,
    /// Request and commit-wait histograms for `/metrics`.
    pub metrics: Metrics,
    /// Failed attempts per token, user and client address, against guessing.
    pub limiter: Limiter,
    /// Webhook deliveries' runtime state (failures, backoff, metrics) and
    /// the workers' clock; the subscriptions themselves are in `engine`.
    pub hooks: crate::webhooks::Registry,
    /// False until the log has been replayed: `/readyz` and every `/v1`
    /// route answer 503 until then.
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

/// Opens the data dir: its modes (created `0700`/`0600`, tightened when
/// looser), the token file, the WAL, and then, on a dir with no admin
/// token, creates the first one, returned to be printed.
///
/// The admin token comes last, once nothing else can fail: a start that
/// fails before it creates none, so a later start still creates (and
/// prints) one, and none is ever stored without being printed.
pub fn open(
    config: ServeConfig,
) -> anyhow::Result<(Arc<App>, Option<String>, redeem_wal::Recovered)> {
    let tightened = crate::datadir::prepare(&config.data_dir)?;
    for path in &tightened {
        tracing::warn!(
            path = %path.display(),
            "tightened modes: the data dir holds campaign keys and is for its owner alone"
        );
    }
    let mut tokens = TokenStore::open(&config.data_dir)?;
    let wal_dir = wal_dir(&config.data_dir);
    let options = Options {
        segment_bytes: config.segment_bytes,
        sync: config.sync,
        commit_interval: std::time::Duration::from_micros(config.commit_interval_micros),
        ..Options::default()
    };
    let (wal, recovered) = Wal::open(&wal_dir, options)?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(%torn, "truncated a torn tail at the end of the log");
    }
    let first_token = if tokens.has_admin() {
        None
    } else {
        let token =
            crate::tokens::add(&config.data_dir, crate::tokens::Role::Admin, "admin", None)?;
        // Read again so the new token works at once, not at the store's
        // next rate-limited check of the file.
        tokens = TokenStore::open(&config.data_dir)?;
        Some(token)
    };
    let wal = Arc::new(wal);
    let engine = Engine::new(
        WalJournal { wal: wal.clone() },
        EngineConfig {
            reservation_ids: Some(random_reservation_ids()),
            ..EngineConfig::default()
        },
        render::renderer(),
    );
    let limiter = Limiter::new(config.guess_budgets())?;
    let hooks =
        crate::webhooks::Registry::new(crate::webhooks::Clock::new(config.webhook_test_time_scale));
    let app = Arc::new(App {
        hooks,
        engine,
        wal,
        tokens,
        config,
        metrics: Metrics::default(),
        limiter,
        ready: AtomicBool::new(false),
    });
    Ok((app, first_token, recovered))
}

/// Replays the log into the engine, logging progress every second. Any
/// record that does not decode or apply stops the start.
pub fn replay(app: &App, recovered: &redeem_wal::Recovered) -> anyhow::Result<ReplaySummary> {
    let first = restore_snapshot(&app.engine, recovered)?;
    // Right after open: the records its recovery scan checked skip their CRC.
    let mut records = app.wal.read_recovered_from(first)?;
    let summary = apply_records(&app.engine, &mut records, recovered.last_lsn, true)?;
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
        // The clock only every 4,096 records: it is not free on a hot loop.
        if progress && count.is_multiple_of(4096) && last_report.elapsed() >= Duration::from_secs(1)
        {
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

/// The random part of reservation ids: the OS's randomness, so that one
/// hold's id tells nothing about another's (API.md: at least 96 random
/// bits). Linux's `getrandom` does not fail once the process has started.
fn random_reservation_ids() -> redeem_engine::RandomIds {
    redeem_engine::RandomIds(Arc::new(|| {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the OS's randomness is available");
        u128::from_le_bytes(bytes)
    }))
}
