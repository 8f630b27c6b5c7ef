//! Proves the log keeps every acknowledged record through a power loss at
//! any moment, and that recovery always rebuilds exactly a prefix of what
//! the engine did, including while a snapshot is written and old segments
//! are deleted.
//!
//! How: the log runs on [`power::PowerStorage`], which keeps a written and a
//! durable image of every file and of the directory. An `Engine` journals
//! into the log (encoded records, as the server's `WalJournal` does) under a
//! seeded random mix of create campaign, generate, assign, reserve, confirm,
//! release, redeem, rollback, void, sweep and pause, some with idempotency
//! keys; every operation that appended records waits for them to be durable
//! and counts as acknowledged. Every few dozen operations it snapshots a
//! shadow engine and removes the segments the snapshot covers, as the
//! server's snapshotter does.
//!
//! Crash points: *every* storage step of the run (each msync, directory
//! fsync, create, rename, unlink, file write and fsync), just before it takes
//! effect, plus the end of the run. At each, four disks are materialized:
//! durable bytes only (power loss), everything written (process crash), a
//! seeded torn mix (each unsynced page old or new, a prefix of the pending
//! directory operations, as a journaling file system keeps them), and the
//! same with each pending directory operation surviving independently (as
//! POSIX allows without an fsync between them). On each the log is
//! reopened and must: open
//! without corruption; hold every LSN acknowledged before the crash; hold a
//! dense run of records, each byte-equal to what was appended at its LSN;
//! replay (snapshot, then the records after it) without a replay error; end
//! with the same `dump_state` as an engine that replayed exactly that prefix
//! of the original records, and per campaign as many redeemed codes as the
//! prefix redeemed and did not roll back; and take and make durable a new
//! record.
//!
//! The snapshot test crashes before every step of `write_snapshot` (temp
//! file write, its fsync, rename, directory fsync, old snapshot unlink,
//! directory fsync) and of `remove_segments_before` (each unlink, directory
//! fsync), and separately makes each step fail with EIO, then keeps working
//! and crashes; recovery must always give the state before the attempt (plus
//! whatever was acknowledged after it).
//!
//! Seeds: `POWER_SEED=n` runs one seed (printed on every failure, with the
//! step, the disk variant and a kept copy of the materialized directory);
//! `POWER_SEEDS=n` runs seeds 1..=n (CI runs 3); `POWER_OPS=n` sets the
//! operations per seed. The workload and every torn choice follow from the
//! seed; which storage steps happen in which order also depends on the log's
//! flusher thread (group commit, spare creation), so a seed replays the same
//! operations and the same crash classes, not always the identical step list.

mod power;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use power::{Crash, PowerStorage, Step, Survivors, mix};
use redeem_engine::{
    Begin, CampaignPatch, CampaignSpec, Config, Effect, Engine, IdemKey, Journal, JournalError,
    Lsn, NullJournal, Record, Renderer, Slot, Timestamp,
};
use redeem_wal::{Options, Recovered, SyncMode, Wal};

/// Small segments so a run rolls over and removes segments several times.
const SEGMENT_BYTES: u64 = 64 << 10;
const RECORD_BYTES_MAX: u32 = 8192;
const SEEDS_DEFAULT: u64 = 3;
const OPS_DEFAULT: u64 = 450;
/// Torn variants materialized per crash point.
const TORN_VARIANTS: u64 = 1;
/// Variants with directory operations surviving out of order, per crash point.
const UNORDERED_VARIANTS: u64 = 1;
const T0: Timestamp = Timestamp(1_800_000_000_000);

fn options(storage: &PowerStorage) -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        sync: SyncMode::Always,
        record_bytes_max: Some(RECORD_BYTES_MAX),
        storage: Box::new(storage.clone()),
        ..Options::default()
    }
}

/// A temp dir for a materialized disk: in memory when `/dev/shm` exists,
/// since thousands are written and deleted.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| {
        (
            201,
            format!(
                "{}:{}:{:?}",
                effect.lsn,
                effect.record.kind().event_name(),
                effect.status.map(|s| &s.code)
            )
            .into_bytes(),
        )
    })
}

fn engine<J: Journal>(journal: J) -> Engine<J> {
    Engine::new(journal, Config::default(), renderer())
}

/// Every record appended, as (type, payload); index `LSN - 1`.
type History = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// The server's `WalJournal`, also remembering what it appended.
struct LogJournal {
    wal: Arc<Wal>,
    history: History,
}

impl Journal for LogJournal {
    fn append(&self, record: &Record<'_>) -> Result<Lsn, JournalError> {
        let mut payload = Vec::new();
        record.encode(&mut payload);
        // Held across the append so the history's order is the log's order.
        let mut history = self.history.lock().unwrap();
        let lsn = self
            .wal
            .append(record.kind() as u8, &payload)
            .map_err(|e| JournalError {
                message: e.to_string(),
            })?;
        assert_eq!(lsn, history.len() as u64 + 1, "LSNs are dense");
        history.push((record.kind() as u8, payload));
        Ok(lsn)
    }
}

/// A tiny deterministic generator.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, limit: u64) -> u64 {
        self.next() % limit
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const PREFIXES: [&str; 4] = ["A", "B", "C", "D"];
const RECIPIENTS: [&str; 3] = ["r0", "r1", "qa"];

/// The seeded operation mix, driven against a live engine.
#[derive(Clone)]
struct Workload {
    rng: Rng,
    now: Timestamp,
    op_no: u64,
    /// Campaign ids and how many generated codes each has.
    campaigns: Vec<(String, u64)>,
    reservations: Vec<redeem_engine::ReservationId>,
    redeemed: Vec<String>,
    /// Operations that appended records and were acknowledged.
    acked_ops: u64,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng(mix(seed)),
            now: T0,
            op_no: 0,
            campaigns: Vec::new(),
            reservations: Vec::new(),
            redeemed: Vec::new(),
            acked_ops: 0,
        }
    }

    /// Long names, so records are a few hundred bytes and segments fill.
    fn user(&mut self) -> String {
        format!("user-{}-{}", self.rng.below(4), "u".repeat(200))
    }

    /// "qa" and up to 24 long names.
    fn test_recipients(&mut self) -> Vec<String> {
        let count = self.rng.below(25);
        let mut names = vec!["qa".to_owned()];
        names.extend((0..count).map(|i| format!("qa-{i}-{}", "q".repeat(200))));
        names
    }

    fn code<J: Journal>(&mut self, engine: &Engine<J>) -> Option<String> {
        if self.campaigns.is_empty() {
            return None;
        }
        let (id, count) = &self.campaigns[self.rng.below(self.campaigns.len() as u64) as usize];
        // Half the time one of a few hot codes, so operations collide.
        let index = if self.rng.chance(2) {
            self.rng.below(4)
        } else {
            self.rng.below(*count)
        };
        Some(engine.campaign(id)?.code_of(Slot::generated(index)))
    }

    /// Runs one operation; returns whether it was refused.
    fn step<J: Journal>(&mut self, engine: &Engine<J>) {
        self.op_no += 1;
        self.now = Timestamp(self.now.0 + 200 + self.rng.below(3000));
        let now = self.now;
        let key_string = format!("key-{}-{}", self.op_no, "k".repeat(200));
        let idem = self.rng.chance(3).then(|| IdemKey {
            key: &key_string,
            fingerprint: u128::from(self.op_no),
        });
        if let Some(key) = idem {
            match engine.begin_idempotent(key, now) {
                Ok(Begin::Fresh) => {}
                other => panic!("a fresh key begins fresh, got {other:?}"),
            }
        }
        let pick = if self.campaigns.is_empty() {
            0
        } else {
            self.rng.below(15)
        };
        let outcome: Result<(), redeem_engine::Refusal> = match pick {
            0 if self.campaigns.len() < PREFIXES.len() => {
                let n = self.campaigns.len();
                let generate = 20 + self.rng.below(30);
                let spec = CampaignSpec {
                    id: format!("c{n}"),
                    generate,
                    prefix: PREFIXES[n].into(),
                    per_user_limit: self.rng.below(3) as u32,
                    per_recipient_limit: 1 + self.rng.below(2) as u32,
                    reservation_ttl_seconds: 3 + self.rng.below(20),
                    low_stock_threshold: if self.rng.chance(2) { 15 } else { 0 },
                    test_recipients: self.test_recipients(),
                    ..CampaignSpec::default()
                };
                let key = redeem_engine::codec::CodeKey::from_bytes([n as u8 + 1; 16]);
                let result = engine.create_campaign(spec, key, now, idem);
                if result.is_ok() {
                    self.campaigns.push((format!("c{n}"), generate));
                }
                result.map(|_| ())
            }
            0 => {
                let i = self.rng.below(self.campaigns.len() as u64) as usize;
                let count = 1 + self.rng.below(8);
                let result = engine.generate(&self.campaigns[i].0, count, now, idem);
                if result.is_ok() {
                    self.campaigns[i].1 += count;
                }
                result.map(|_| ())
            }
            1..=3 => {
                let code = self.code(engine).expect("a campaign exists");
                let user = self.user();
                let order = self
                    .rng
                    .chance(2)
                    .then(|| format!("order-{}-{}", self.op_no, "o".repeat(200)));
                let result = engine.redeem(&code, &user, order.as_deref(), now, idem);
                if result.is_ok() {
                    self.redeemed.push(code);
                }
                result.map(|_| ())
            }
            4 | 5 => {
                let code = self.code(engine).expect("a campaign exists");
                let user = self.user();
                let ttl = self.rng.chance(2).then(|| 1 + self.rng.below(20));
                engine.reserve(&code, &user, ttl, now, idem).map(|r| {
                    self.reservations.push(r.reservation);
                })
            }
            6 | 7 if !self.reservations.is_empty() => {
                let i = self.rng.below(self.reservations.len() as u64) as usize;
                let id = self.reservations.swap_remove(i);
                if pick == 6 {
                    engine.confirm(id, None, now, idem).map(|_| ())
                } else {
                    engine.release(id, now, idem).map(|_| ())
                }
            }
            8 if !self.redeemed.is_empty() => {
                let i = self.rng.below(self.redeemed.len() as u64) as usize;
                let code = self.redeemed.swap_remove(i);
                engine.rollback(&code, now, idem).map(|_| ())
            }
            9 => {
                let code = self.code(engine).expect("a campaign exists");
                engine.void(&code, now, idem).map(|_| ())
            }
            10..=12 => {
                let i = self.rng.below(self.campaigns.len() as u64) as usize;
                let recipient = RECIPIENTS[self.rng.below(3) as usize];
                engine
                    .assign(&self.campaigns[i].0, recipient, now, idem)
                    .map(|_| ())
            }
            13 => {
                let i = self.rng.below(self.campaigns.len() as u64) as usize;
                // Some updates carry a long recipient list: a few KiB that
                // fill segments, so runs roll over and remove segments.
                let recipients = self.rng.chance(2).then(|| self.test_recipients());
                let patch = CampaignPatch {
                    paused: Some(self.rng.chance(3)),
                    test_recipients: recipients,
                    ..CampaignPatch::default()
                };
                engine
                    .update_campaign(&self.campaigns[i].0, patch, now, idem)
                    .map(|_| ())
            }
            _ => engine.sweep(now).map(|_| ()),
        };
        if let (Err(refusal), Some(key)) = (outcome, idem) {
            engine
                .store_response(key, 409, refusal.to_string().as_bytes(), now)
                .expect("the journal takes a stored refusal");
        }
    }
}

/// Runs `ops` operations, acknowledging each that appended; snapshots and
/// removes segments every `snapshot_every` operations (0: never).
fn drive(
    engine: &Engine<LogJournal>,
    workload: &mut Workload,
    storage: &PowerStorage,
    ops: u64,
    snapshot_every: u64,
    shadow: &mut Shadow,
) {
    let journal = engine.journal();
    for _ in 0..ops {
        let before = journal.history.lock().unwrap().len() as u64;
        workload.step(engine);
        let after = journal.history.lock().unwrap().len() as u64;
        if after > before {
            journal.wal.wait_durable(after).expect("durable");
            storage.note_acked(after);
            workload.acked_ops += 1;
        }
        if snapshot_every > 0 && workload.op_no.is_multiple_of(snapshot_every) {
            let durable = journal.wal.durable_lsn();
            shadow.catch_up(&journal.history.lock().unwrap(), durable);
            let blob = shadow.engine.snapshot(durable, workload.now);
            journal
                .wal
                .write_snapshot(durable, &blob)
                .expect("snapshot");
            journal
                .wal
                .remove_segments_before(durable + 1)
                .expect("remove segments");
        }
    }
}

/// The server's shadow engine: replays the durable log to snapshot it.
struct Shadow {
    engine: Engine<NullJournal>,
    lsn: Lsn,
}

impl Shadow {
    fn new() -> Shadow {
        Shadow {
            engine: engine(NullJournal::default()),
            lsn: 0,
        }
    }

    fn catch_up(&mut self, history: &[(u8, Vec<u8>)], through: Lsn) {
        for lsn in self.lsn + 1..=through {
            let (kind, payload) = &history[lsn as usize - 1];
            let record = Record::decode(*kind, payload).expect("decodes");
            self.engine.apply_replayed(lsn, &record).expect("applies");
        }
        self.lsn = through;
    }
}

/// What an engine holds after exactly a prefix of a history.
struct Expected {
    dump: String,
    /// Redeemed codes per campaign number - 1.
    redeemed: Vec<u64>,
}

/// [`Expected`] for every prefix length `0..=history.len()`.
fn expected_prefixes(history: &[(u8, Vec<u8>)]) -> Vec<Expected> {
    let reference = engine(NullJournal::default());
    let mut redeemed_codes = HashSet::new();
    let mut redeemed = Vec::new();
    let mut out = vec![Expected {
        dump: reference.dump_state(),
        redeemed: Vec::new(),
    }];
    for (index, (kind, payload)) in history.iter().enumerate() {
        let lsn = index as Lsn + 1;
        let record = Record::decode(*kind, payload).expect("decodes");
        reference.apply_replayed(lsn, &record).expect("applies");
        match record {
            Record::CampaignCreated { .. } => redeemed.push(0u64),
            Record::Redeemed { campaign, slot, .. } => {
                assert!(
                    redeemed_codes.insert((campaign, slot)),
                    "LSN {lsn} redeems a redeemed code"
                );
                redeemed[campaign as usize - 1] += 1;
            }
            Record::RolledBack { campaign, slot, .. } => {
                assert!(redeemed_codes.remove(&(campaign, slot)));
                redeemed[campaign as usize - 1] -= 1;
            }
            _ => {}
        }
        out.push(Expected {
            dump: reference.dump_state(),
            redeemed: redeemed.clone(),
        });
    }
    out
}

/// The one [`Expected`] for `history[..len]`.
fn expected_at(history: &[(u8, Vec<u8>)], len: usize) -> Expected {
    let reference = engine(NullJournal::default());
    let mut redeemed = Vec::new();
    for (index, (kind, payload)) in history[..len].iter().enumerate() {
        let record = Record::decode(*kind, payload).expect("decodes");
        reference
            .apply_replayed(index as Lsn + 1, &record)
            .expect("applies");
        match record {
            Record::CampaignCreated { .. } => redeemed.push(0u64),
            Record::Redeemed { campaign, .. } => redeemed[campaign as usize - 1] += 1,
            Record::RolledBack { campaign, .. } => redeemed[campaign as usize - 1] -= 1,
            _ => {}
        }
    }
    Expected {
        dump: reference.dump_state(),
        redeemed,
    }
}

/// Opens the log in `dir` through a fresh (non-recording) power storage.
fn open(dir: &Path) -> Result<(PowerStorage, Arc<Wal>, Recovered), String> {
    let storage = PowerStorage::adopt(dir);
    let (wal, recovered) =
        Wal::open(dir, options(&storage)).map_err(|e| format!("open fails: {e}"))?;
    Ok((storage, Arc::new(wal), recovered))
}

/// Checks the recovered log against the history and replays it into
/// `engine` (fresh); returns the last recovered LSN.
fn replay<J: Journal>(
    engine: &Engine<J>,
    wal: &Wal,
    recovered: &Recovered,
    history: &[(u8, Vec<u8>)],
    acked: Lsn,
) -> Result<Lsn, String> {
    let last = recovered.last_lsn;
    if last < acked {
        return Err(format!(
            "acknowledged LSN {acked} lost: the log ends at {last}"
        ));
    }
    if last as usize > history.len() {
        return Err(format!(
            "the log ends at {last}, only {} were appended",
            history.len()
        ));
    }
    let snapshot_lsn = recovered.snapshot.as_ref().map_or(0, |s| s.lsn);
    if recovered.first_lsn > snapshot_lsn + 1 || snapshot_lsn > last {
        return Err(format!(
            "records {}..={last} with a snapshot at {snapshot_lsn}",
            recovered.first_lsn
        ));
    }
    let mut expect = recovered.first_lsn;
    let records = wal
        .read_from(recovered.first_lsn)
        .map_err(|e| e.to_string())?;
    for record in records {
        let record = record.map_err(|e| format!("read: {e}"))?;
        if record.lsn != expect {
            return Err(format!("LSN {} where {expect} was due", record.lsn));
        }
        let (kind, payload) = &history[record.lsn as usize - 1];
        if record.record_type != *kind || record.payload != *payload {
            return Err(format!("LSN {} differs from what was appended", record.lsn));
        }
        expect += 1;
    }
    if expect != last + 1 {
        return Err(format!("read ends before {expect}, the log claims {last}"));
    }
    if let Some(snapshot) = &recovered.snapshot {
        engine
            .restore(&snapshot.blob)
            .map_err(|e| format!("snapshot at {} does not restore: {e}", snapshot.lsn))?;
    }
    for lsn in snapshot_lsn + 1..=last {
        let (kind, payload) = &history[lsn as usize - 1];
        let record = Record::decode(*kind, payload).map_err(|e| e.to_string())?;
        engine
            .apply_replayed(lsn, &record)
            .map_err(|e| format!("replay: {e}"))?;
    }
    Ok(last)
}

fn check_engine<J: Journal>(engine: &Engine<J>, expected: &Expected) -> Result<(), String> {
    let dump = engine.dump_state();
    if dump != expected.dump {
        return Err(format!(
            "recovered state is no prefix:\n--- recovered\n{dump}\n--- expected\n{}",
            expected.dump
        ));
    }
    let redeemed: Vec<u64> = engine
        .campaigns()
        .map(|c| c.stats(Timestamp(0)).redeemed)
        .collect();
    if redeemed != expected.redeemed {
        return Err(format!(
            "redeemed counts {redeemed:?}, the records say {:?}",
            expected.redeemed
        ));
    }
    Ok(())
}

/// Materializes `crash` as `survivors`, recovers it and checks it.
fn check_crash(
    crash: &Crash,
    survivors: Survivors,
    history: &[(u8, Vec<u8>)],
    expected: &dyn Fn(Lsn) -> Expected,
) -> Result<(), (String, tempfile::TempDir)> {
    let dir = scratch_dir();
    crash.image.materialize(dir.path(), survivors);
    let result = (|| {
        let (_storage, wal, recovered) = open(dir.path())?;
        let fresh = engine(NullJournal::default());
        let last = replay(&fresh, &wal, &recovered, history, crash.acked)?;
        check_engine(&fresh, &expected(last))?;
        // The recovered log takes and makes durable a new record.
        let lsn = wal
            .append(200, b"after recovery")
            .map_err(|e| e.to_string())?;
        if lsn != last + 1 {
            return Err(format!("appended {lsn} after recovering {last}"));
        }
        wal.wait_durable(lsn).map_err(|e| e.to_string())?;
        Arc::into_inner(wal)
            .expect("one owner")
            .close()
            .map_err(|e| e.to_string())
    })();
    result.map_err(|e| (e, dir))
}

/// Checks `crash` under every [`variants`]; panics with `label` (which
/// names the seed) and a kept copy of the disk on the first failure.
/// Returns how many disks were checked.
fn check_variants(
    label: &str,
    seed: u64,
    crash: &Crash,
    history: &[(u8, Vec<u8>)],
    expected: &dyn Fn(Lsn) -> Expected,
) -> u64 {
    let variants = variants(seed, crash.step_no);
    for &survivors in &variants {
        if let Err((error, dir)) = check_crash(crash, survivors, history, expected) {
            let step = crash
                .step
                .as_ref()
                .map_or_else(|| "the end".to_owned(), Step::to_string);
            let kept = dir.keep();
            panic!(
                "{label}: crash before step {} ({step}), {survivors:?} survivors \
                 (acked {}, unsynced pages and dir ops {:?}): {error}\n\
                 materialized disk kept at {}",
                crash.step_no,
                crash.acked,
                crash.image.unsynced(),
                kept.display()
            );
        }
    }
    variants.len() as u64
}

/// Crash variants checked at every crash point.
fn variants(seed: u64, step_no: u64) -> Vec<Survivors> {
    let mut out = vec![Survivors::Durable, Survivors::Written];
    out.extend((0..TORN_VARIANTS).map(|v| Survivors::Torn(mix(seed ^ mix(step_no << 8 | v)))));
    out.extend(
        (0..UNORDERED_VARIANTS)
            .map(|v| Survivors::Unordered(mix(seed ^ mix(step_no << 8 | v | 0x80)))),
    );
    out
}

#[derive(Debug, Default)]
struct Totals {
    seeds: u64,
    crash_points: u64,
    disks: u64,
    acked_ops: u64,
    acked_records: u64,
    records: u64,
    /// Segments that entered the log (renamed from a spare) and were removed.
    segments_entered: u64,
    segments_removed: u64,
    snapshots: u64,
}

fn run_seed(seed: u64, ops: u64, totals: &mut Totals) {
    let dir = tempfile::tempdir().unwrap();
    let storage = PowerStorage::adopt(dir.path());
    storage.record_crashes(true);
    let (wal, recovered) = Wal::open(dir.path(), options(&storage)).unwrap();
    assert!(recovered.created);
    let history: History = Arc::default();
    let live = engine(LogJournal {
        wal: Arc::new(wal),
        history: history.clone(),
    });
    let mut workload = Workload::new(seed);
    let mut rng = Rng(mix(seed ^ 0x5eed));
    let snapshot_every = 60 + rng.below(60);
    drive(
        &live,
        &mut workload,
        &storage,
        ops,
        snapshot_every,
        &mut Shadow::new(),
    );
    let mut crashes = storage.take_crashes();
    crashes.push(storage.crash_now());
    storage.record_crashes(false);
    drop(live);

    let history = history.lock().unwrap().clone();
    let expected = expected_prefixes(&history);
    let snapshot_steps = crashes
        .iter()
        .filter(|c| matches!(&c.step, Some(Step::WriteFile(_))))
        .count();
    assert_eq!(
        snapshot_steps as u64,
        ops / snapshot_every,
        "the run took its snapshots"
    );
    let expected = |last: Lsn| Expected {
        dump: expected[last as usize].dump.clone(),
        redeemed: expected[last as usize].redeemed.clone(),
    };
    let label = format!("POWER_SEED={seed}");
    for crash in &crashes {
        totals.disks += check_variants(&label, seed, crash, &history, &expected);
    }
    totals.seeds += 1;
    totals.crash_points += crashes.len() as u64;
    totals.acked_ops += workload.acked_ops;
    totals.acked_records += crashes.last().expect("final").acked;
    totals.records += history.len() as u64;
    for step in storage.history() {
        match step {
            Step::Rename { from, .. } if from.starts_with("spare-") => totals.segments_entered += 1,
            Step::Remove(name) if name.ends_with(".wal") && !name.starts_with("spare-") => {
                totals.segments_removed += 1
            }
            Step::Rename { to, .. } if to.ends_with(".snap") => totals.snapshots += 1,
            _ => {}
        }
    }
}

#[test]
fn power_loss_at_every_step_keeps_acknowledged_records_and_a_prefix_state() {
    let start = Instant::now();
    let seeds: Vec<u64> = match env_u64("POWER_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_u64("POWER_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    let ops = env_u64("POWER_OPS").unwrap_or(OPS_DEFAULT);
    let mut totals = Totals::default();
    for seed in seeds {
        run_seed(seed, ops, &mut totals);
    }
    eprintln!(
        "power loss: {totals:?} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// Segment files in a directory that belong to the log (not spares).
fn log_segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wal") && !n.starts_with("spare-"))
        .collect();
    names.sort();
    names
}

/// A log with a snapshot, several segments after it, every record
/// acknowledged, and nothing unsynced: the disk before a snapshot attempt.
struct Base {
    image: Crash,
    history: Vec<(u8, Vec<u8>)>,
    workload: Workload,
}

fn base(seed: u64) -> Base {
    let dir = tempfile::tempdir().unwrap();
    let storage = PowerStorage::adopt(dir.path());
    let (wal, _) = Wal::open(dir.path(), options(&storage)).unwrap();
    let history: History = Arc::default();
    let live = engine(LogJournal {
        wal: Arc::new(wal),
        history: history.clone(),
    });
    let mut workload = Workload::new(seed);
    let mut shadow = Shadow::new();
    drive(&live, &mut workload, &storage, 150, 150, &mut shadow);
    let entered = |storage: &PowerStorage| {
        storage
            .history()
            .iter()
            .filter(|s| matches!(s, Step::Rename { from, .. } if from.starts_with("spare-")))
            .count()
    };
    let after_snapshot = entered(&storage);
    for _ in 0..40 {
        if entered(&storage) >= after_snapshot + 3 {
            break;
        }
        drive(&live, &mut workload, &storage, 50, 0, &mut shadow);
    }
    assert!(
        entered(&storage) >= after_snapshot + 3,
        "three segments after the snapshot"
    );
    let image = storage.crash_now();
    let history = history.lock().unwrap().clone();
    assert_eq!(image.acked, history.len() as u64, "all acknowledged");
    Base {
        image,
        history,
        workload,
    }
}

/// A log opened on a copy of the base disk, replayed into a live engine.
struct Reopened {
    storage: PowerStorage,
    wal: Arc<Wal>,
    engine: Engine<LogJournal>,
    last: Lsn,
    _dir: tempfile::TempDir,
}

fn reopen(base: &Base, before: &Expected) -> Reopened {
    let dir = scratch_dir();
    base.image.image.materialize(dir.path(), Survivors::Durable);
    let (storage, wal, recovered) = open(dir.path()).unwrap();
    storage.note_acked(base.history.len() as u64);
    let engine = engine(LogJournal {
        wal: wal.clone(),
        history: Arc::new(Mutex::new(base.history.clone())),
    });
    let last = replay(
        &engine,
        &wal,
        &recovered,
        &base.history,
        base.history.len() as u64,
    )
    .unwrap();
    check_engine(&engine, before).unwrap();
    Reopened {
        storage,
        wal,
        engine,
        last,
        _dir: dir,
    }
}

/// The server's snapshotter, once: snapshot at `lsn`, then remove the
/// segments it covers. Returns which of the two failed, if one did.
fn snapshot_and_remove(live: &Reopened, lsn: Lsn, at: Timestamp) -> Result<usize, String> {
    let blob = live.engine.snapshot(lsn, at);
    live.wal
        .write_snapshot(lsn, &blob)
        .map_err(|e| format!("write_snapshot: {e}"))?;
    live.wal
        .remove_segments_before(lsn + 1)
        .map_err(|e| format!("remove_segments_before: {e}"))
}

#[test]
fn snapshot_and_segment_removal_survive_a_crash_or_failure_at_every_step() {
    let start = Instant::now();
    let seed = env_u64("POWER_SEED").unwrap_or(7);
    let base = base(seed);
    let before = expected_at(&base.history, base.history.len());
    let at = Timestamp(base.workload.now.0 + 1000);

    // Crash before each step of one attempt, and after the last.
    let live = reopen(&base, &before);
    live.storage.record_crashes(true);
    let removed = snapshot_and_remove(&live, live.last, at).expect("the dry run succeeds");
    live.storage.record_crashes(false);
    let mut crashes = live.storage.take_crashes();
    crashes.push(live.storage.crash_now());
    let steps: Vec<Step> = crashes.iter().filter_map(|c| c.step.clone()).collect();
    assert!(removed >= 2, "removed {removed} segments");
    assert!(
        steps.contains(&Step::Remove(format!("snapshot-{:020}.snap", 150))) || {
            // The base snapshot's LSN is the durable LSN at operation 150.
            steps
                .iter()
                .any(|s| matches!(s, Step::Remove(n) if n.ends_with(".snap")))
        },
        "the attempt deletes the older snapshot: {steps:?}"
    );
    let same_as_before = |_: Lsn| Expected {
        dump: before.dump.clone(),
        redeemed: before.redeemed.clone(),
    };
    let mut disks = 0;
    for crash in &crashes {
        let label = format!("POWER_SEED={seed} snapshot attempt");
        disks += check_variants(&label, seed, crash, &base.history, &same_as_before);
    }
    drop(live);

    // Each step failing with EIO; then the log keeps working, a later
    // snapshot succeeds, and crashes before and after lose nothing.
    for (n, step) in steps.iter().enumerate() {
        let n = n as u64 + 1;
        let label = format!("POWER_SEED={seed} step {n} ({step}) failing");
        let live = reopen(&base, &before);
        live.storage.fail_nth_step_from_now(n);
        let result = snapshot_and_remove(&live, live.last, at);
        let failed = live.storage.failed();
        assert_eq!(failed.len(), 1, "{label}: {failed:?}");
        assert_eq!(&failed[0].1, step, "{label}: the same steps as the dry run");
        assert!(result.is_err(), "{label}: the failure is reported");
        disks += check_variants(
            &label,
            seed,
            &live.storage.crash_now(),
            &base.history,
            &same_as_before,
        );

        let mut workload = base.workload.clone();
        drive(
            &live.engine,
            &mut workload,
            &live.storage,
            20,
            0,
            &mut Shadow::new(),
        );
        let durable = live.wal.durable_lsn();
        snapshot_and_remove(&live, durable, workload.now)
            .unwrap_or_else(|e| panic!("{label}: the next snapshot fails: {e}"));
        let history = live.engine.journal().history.lock().unwrap().clone();
        assert_eq!(durable, history.len() as u64);
        // Segments wholly covered by the new snapshot that are still there.
        let segments = log_segments(&live.storage.dir());
        let covered = segments
            .windows(2)
            .filter(|pair| pair[1][..20].parse::<u64>().unwrap() <= durable + 1)
            .count();
        assert_eq!(
            covered, 0,
            "{label}: segments covered by the snapshot left behind: {segments:?}"
        );
        let crash = live.storage.crash_now();
        let expected = |last: Lsn| expected_at(&history, last as usize);
        disks += check_variants(&label, seed, &crash, &history, &expected);
    }
    eprintln!(
        "snapshot crashes: seed {seed}, {} records, {} steps {steps:?}, {disks} disks checked in {:.1} s",
        base.history.len(),
        steps.len(),
        start.elapsed().as_secs_f64()
    );
}
