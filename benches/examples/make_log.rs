//! Writes a data dir whose log holds about N records, for measuring replay
//! (`redeemd wal replay`, the server's start-up), then replays it here with
//! the same calls the server makes (scan, `read_from`, `apply_encoded`) and
//! prints the rate.
//!
//! ```sh
//! cargo run --release -p redeem-benches --example make_log -- /tmp/replay-10m 10000000
//! cargo run --release -p redeem-benches --example make_log -- /tmp/replay-10m --replay-only
//! ```
//!
//! The log is what a busy shop writes: one campaign of N generated codes;
//! every tenth code assigned to a recipient before it is redeemed, the rest
//! redeemed directly, each redemption with a user (ten codes a user) and an
//! order reference. Records go through a real engine, so replay re-validates
//! a log the live paths wrote. Written with `SyncMode::None`: only the
//! bytes matter here, not their durability.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use redeem_engine::codec::CodeKey;
use redeem_engine::{
    CampaignSpec, Config, Effect, Engine, Journal, JournalError, Lsn, NullJournal, Record,
    Renderer, Slot, Timestamp,
};
use redeem_wal::{Options, SyncMode, Wal};

/// Appends each record to the log, as the server's journal does.
struct LogJournal {
    wal: Arc<Wal>,
}

impl Journal for LogJournal {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError> {
        let mut buf = Vec::with_capacity(128);
        record.encode(&mut buf);
        self.wal
            .append(record.kind() as u8, &buf)
            .map_err(|e| JournalError {
                message: e.to_string(),
            })
    }
}

fn renderer() -> Renderer {
    Box::new(|_: &Effect<'_>| (200, Vec::new()))
}

fn write(data_dir: &Path, records: u64) -> anyhow::Result<()> {
    let wal_dir = data_dir.join("wal");
    std::fs::create_dir_all(&wal_dir)?;
    let (wal, recovered) = Wal::open(
        &wal_dir,
        Options {
            sync: SyncMode::None,
            ..Options::default()
        },
    )?;
    anyhow::ensure!(
        recovered.last_lsn == 0,
        "{} already holds a log",
        wal_dir.display()
    );
    let wal = Arc::new(wal);
    let engine = Engine::new(
        LogJournal { wal: wal.clone() },
        Config::default(),
        renderer(),
    );
    let now = Timestamp(1_800_000_000_000);
    // Each assigned code writes two records; nine of ten codes one.
    let codes = records * 10 / 11;
    engine
        .create_campaign(
            CampaignSpec {
                id: "replay".into(),
                prefix: "R".into(),
                generate: codes,
                per_user_limit: 0,
                ..CampaignSpec::default()
            },
            CodeKey::from_bytes([7; 16]),
            now,
            None,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let campaign = engine.campaign("replay").expect("just created");
    let start = Instant::now();
    let mut direct = 0;
    for i in 0..codes {
        let at = Timestamp(now.0 + i / 1000);
        // Assignment takes the next available code, so direct redemptions
        // start from the top of the campaign and assignments from the
        // bottom, and neither walks over the other's codes.
        let code = if i % 10 == 0 {
            engine
                .assign("replay", &format!("recipient-{i:09}@example.com"), at, None)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .code
        } else {
            direct += 1;
            campaign.code_of(Slot::generated(codes - direct))
        };
        let user = format!("customer-{:08}", i / 10);
        let order = format!("ORD-2026-{i:010}");
        engine
            .redeem(&code, &user, Some(&order), at, None)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let last = wal.last_lsn();
    wal.wait_durable(last)?;
    drop(engine);
    Arc::into_inner(wal).expect("the engine is gone").close()?;
    println!(
        "wrote {last} records to {} in {:.1} s",
        wal_dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Replays the log as `redeemd wal replay` does: the recovery scan, then
/// every record read again, checked, decoded and applied.
fn replay(data_dir: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let (report, mut records) = redeem_wal::dump(&data_dir.join("wal"))?;
    let scanned = start.elapsed();
    let engine = Engine::new(NullJournal::default(), Config::default(), renderer());
    let mut count = 0u64;
    while let Some(next) = records.next_record() {
        let record = next?;
        engine.apply_encoded(record.lsn, record.record_type, record.payload)?;
        count += 1;
    }
    let total = start.elapsed();
    let applied = total - scanned;
    println!(
        "{count} records ({} segments): scan {:.3} s, read+apply {:.3} s ({:.2} M records/s), \
         total {:.3} s ({:.2} M records/s)",
        report.segments,
        scanned.as_secs_f64(),
        applied.as_secs_f64(),
        count as f64 / applied.as_secs_f64() / 1e6,
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64() / 1e6,
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        anyhow::bail!("usage: make_log DATA_DIR [RECORDS | --replay-only]");
    };
    let data_dir = PathBuf::from(dir);
    match args.get(1).map(String::as_str) {
        Some("--replay-only") => {}
        other => {
            let records = match other {
                Some(n) => n.parse()?,
                None => 10_000_000,
            };
            write(&data_dir, records)?;
        }
    }
    replay(&data_dir)
}
