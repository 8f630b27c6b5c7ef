//! The idempotency table stays bounded however long the log runs: a
//! replaying engine (the server's snapshot shadow, or a start-up replay)
//! evicts entries by its records' own times and never holds more than its
//! bound, and a snapshot leaves out entries past retention, so restoring it
//! brings none of them back. Driven through the public API with records
//! spanning more than two retention periods.

use redeem_engine::idempotency::{RETENTION_MS, SCOPE_SHARE_DIVISOR};
use redeem_engine::{
    Begin, Config, Effect, Engine, IdemKey, MemoryJournal, NullJournal, Record, Renderer, Timestamp,
};

const ENTRIES_MAX: usize = 8;
/// Keys stored over the run: five times the bound.
const KEYS: u64 = 40;
const T0: Timestamp = Timestamp(1_800_000_000_000);
/// Keys stored within one retention period: fewer than the bound, so the
/// live engine never refuses one.
const RETAINED: u64 = 6;
/// Record time between two keys: the run spans more than six days.
const STEP_MS: u64 = RETENTION_MS / RETAINED;

fn renderer() -> Renderer {
    Box::new(|effect: &Effect<'_>| (200, effect.lsn.to_string().into_bytes()))
}

fn config(entries_max: usize) -> Config {
    Config {
        idempotency_entries_max: entries_max,
        ..Config::default()
    }
}

fn shadow(entries_max: usize) -> Engine<NullJournal> {
    Engine::new(NullJournal::default(), config(entries_max), renderer())
}

/// The keyed refusals a live engine stores, one every `STEP_MS`, from a
/// few tokens; returns the journal's records.
fn live_log() -> Vec<(u64, u8, Vec<u8>)> {
    let live = Engine::new(MemoryJournal::default(), config(ENTRIES_MAX), renderer());
    for i in 0..KEYS {
        let key = format!("token{}:key{i}", i % SCOPE_SHARE_DIVISOR as u64);
        let idem = IdemKey {
            key: &key,
            fingerprint: u128::from(i),
        };
        let now = Timestamp(T0.0 + i * STEP_MS);
        assert_eq!(
            live.begin_idempotent(idem, now),
            Ok(Begin::Fresh),
            "key {i}"
        );
        live.store_response(idem, 409, b"{}", now).unwrap();
        assert!(live.idempotency().len() <= ENTRIES_MAX);
    }
    live.journal().records()
}

fn replay(engine: &Engine<NullJournal>, records: &[(u64, u8, Vec<u8>)]) {
    for (lsn, kind, payload) in records {
        engine.apply_encoded(*lsn, *kind, payload).unwrap();
        assert!(
            engine.idempotency().len() <= ENTRIES_MAX,
            "{} entries after LSN {lsn}",
            engine.idempotency().len()
        );
    }
}

/// The keys a snapshot holds.
fn snapshot_keys(blob: &[u8]) -> Vec<String> {
    // Restored into an engine large enough to keep whatever it holds.
    let restored = shadow(usize::MAX / 2);
    restored.restore(blob).unwrap();
    let mut keys = Vec::new();
    let records = restored.snapshot(0, T0);
    // Walk the re-taken snapshot's entries through a journal-free decode:
    // the engine's own format, read with its public record decoder.
    let mut rest = &records[1..];
    while !rest.is_empty() {
        let kind = rest[0];
        let len = u32::from_le_bytes(rest[9..13].try_into().unwrap()) as usize;
        let payload = &rest[13..13 + len];
        if let Ok(Record::IdempotentResponse { key, .. }) = Record::decode(kind, payload) {
            keys.push(key.to_owned());
        }
        rest = &rest[13 + len..];
    }
    keys
}

#[test]
fn a_replaying_engine_stays_bounded_over_days_of_records() {
    let records = live_log();
    let engine = shadow(ENTRIES_MAX);
    replay(&engine, &records);
    assert_eq!(engine.idempotency().len(), RETAINED as usize);
    // The newest keys are the ones kept, and they still replay.
    let last = KEYS - 1;
    let key = format!("token{}:key{last}", last % SCOPE_SHARE_DIVISOR as u64);
    let end = Timestamp(T0.0 + last * STEP_MS);
    assert!(matches!(
        engine.begin_idempotent(
            IdemKey {
                key: &key,
                fingerprint: u128::from(last)
            },
            end
        ),
        Ok(Begin::Replay(_))
    ));
}

#[test]
fn entries_past_retention_leave_snapshots_and_restored_state() {
    let records = live_log();
    let engine = shadow(ENTRIES_MAX);
    replay(&engine, &records);
    let end = Timestamp(T0.0 + (KEYS - 1) * STEP_MS);
    let lsn = records.last().unwrap().0;

    let young = engine.snapshot(lsn, end);
    let kept = snapshot_keys(&young);
    assert_eq!(kept.len(), RETAINED as usize, "{kept:?}");
    assert!(!kept.contains(&"token0:key0".to_owned()));

    // A retention period after the last record, every key has expired.
    let old = engine.snapshot(lsn, Timestamp(end.0 + RETENTION_MS));
    assert_eq!(snapshot_keys(&old), Vec::<String>::new());
    let restored = shadow(ENTRIES_MAX);
    restored.restore(&old).unwrap();
    assert!(restored.idempotency().is_empty());
}

#[test]
fn a_restore_into_a_smaller_table_keeps_its_bound() {
    let records = live_log();
    let engine = shadow(ENTRIES_MAX);
    replay(&engine, &records);
    let end = Timestamp(T0.0 + (KEYS - 1) * STEP_MS);
    let blob = engine.snapshot(records.last().unwrap().0, end);
    let smaller = shadow(ENTRIES_MAX / 2);
    smaller.restore(&blob).unwrap();
    assert_eq!(smaller.idempotency().len(), ENTRIES_MAX / 2);
}
