//! Proves the log gives back exactly what was appended: many record sizes,
//! across reopen, across segment rollover under concurrent appenders (LSNs
//! unique and dense), through snapshots and segment removal, and through
//! the blocking and async durability APIs.

mod common;

use std::fs;
use std::sync::Arc;
use std::thread;

use common::*;
use redeem_wal::{
    AppendError, DurabilityError, OpenError, Options, ReadError, RemoveError, SnapshotError, Wal,
    dump, verify,
};

const SIZES: [usize; 16] = [
    0, 1, 7, 8, 9, 23, 24, 25, 31, 32, 33, 100, 255, 1000, 4000, 4096,
];

#[test]
fn records_of_many_sizes_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert!(recovered.created);
    assert_eq!(
        (recovered.first_lsn, recovered.last_lsn, recovered.records),
        (1, 0, 0)
    );
    let mut expected = Vec::new();
    for round in 0..20u64 {
        for (i, &size) in SIZES.iter().enumerate() {
            let key = round * 100 + i as u64;
            let lsn = wal.append(i as u8, &payload(key, size)).unwrap();
            expected.push((lsn, i as u8, payload(key, size)));
        }
    }
    let lsns: Vec<u64> = expected.iter().map(|e| e.0).collect();
    assert_eq!(
        lsns,
        (1..=expected.len() as u64).collect::<Vec<_>>(),
        "dense from 1"
    );
    wal.wait_durable(*lsns.last().unwrap()).unwrap();
    check_records(&wal, &expected);
    wal.close().unwrap();

    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert!(!recovered.created);
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(recovered.last_lsn, expected.len() as u64);
    assert_eq!(recovered.records, expected.len() as u64);
    check_records(&wal, &expected);
    // Appending continues the sequence.
    assert_eq!(wal.append(9, b"next").unwrap(), expected.len() as u64 + 1);
    drop(wal);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.last_lsn, expected.len() as u64 + 1);
    assert!(report.segments > 1, "{report:?}");
}

#[track_caller]
fn check_records(wal: &Wal, expected: &[(u64, u8, Vec<u8>)]) {
    let records = all_records(wal);
    assert_eq!(records.len(), expected.len());
    for (record, (lsn, record_type, bytes)) in records.iter().zip(expected) {
        assert_eq!(record.lsn, *lsn);
        assert_eq!(record.record_type, *record_type, "LSN {lsn}");
        assert_eq!(&record.payload, bytes, "LSN {lsn}");
    }
}

#[test]
fn concurrent_appenders_roll_over_segments_with_unique_dense_lsns() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let wal = Arc::new(wal);
    let appended: Vec<Vec<(u64, u64)>> = (0..THREADS)
        .map(|thread_id| {
            let wal = wal.clone();
            thread::spawn(move || {
                let mut mine = Vec::new();
                for seq in 0..PER_THREAD {
                    let key = thread_id << 32 | seq;
                    let lsn = wal
                        .append(thread_id as u8, &payload(key, (seq % 200) as usize))
                        .unwrap();
                    if seq % 100 == 99 {
                        wal.wait_durable(lsn).unwrap();
                    }
                    mine.push((lsn, key));
                }
                mine
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    let total = THREADS * PER_THREAD;
    let mut by_lsn = vec![None; total as usize + 1];
    for (lsn, key) in appended.iter().flatten() {
        assert!(
            by_lsn[*lsn as usize].replace(*key).is_none(),
            "LSN {lsn} handed out twice"
        );
    }
    assert!(by_lsn[1..].iter().all(Option::is_some), "LSNs are dense");
    // Each thread saw its own LSNs increase.
    for mine in &appended {
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
    }
    wal.wait_durable(total).unwrap();
    assert_eq!(wal.durable_lsn(), total);

    let check = |records: Vec<redeem_wal::Record>| {
        assert_eq!(records.len() as u64, total);
        for record in records {
            let key = by_lsn[record.lsn as usize].unwrap();
            assert_eq!(u64::from(record.record_type), key >> 32);
            assert_eq!(
                record.payload,
                payload(key, ((key & 0xffff_ffff) % 200) as usize)
            );
        }
    };
    check(all_records(&wal));
    let stats = wal.stats();
    assert!(stats.syncs > 0 && stats.commits > 0);
    Arc::into_inner(wal).unwrap().close().unwrap();
    assert!(
        segment_paths(dir.path()).len() > 5,
        "rolled over several times"
    );
    let (report, records) = dump(dir.path()).unwrap();
    assert_eq!((report.last_lsn, report.torn_tail), (total, None));
    check(records.map(Result::unwrap).collect());
    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(recovered.last_lsn, total);
    check(all_records(&wal));
}

#[test]
fn durability_waits_block_poll_and_return_at_once_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(wal.wait_durable(0), Ok(()));
    assert_eq!(
        wal.wait_durable(1),
        Err(DurabilityError::NotAppended { given: 1, last: 0 })
    );
    let first = wal.append(1, b"a").unwrap();
    let second = wal.append(1, b"b").unwrap();
    assert_eq!(block_on(wal.durable(second)), Ok(()));
    assert!(wal.durable_lsn() >= second);
    // Already durable: both APIs return without the flusher.
    assert_eq!(wal.wait_durable(first), Ok(()));
    assert_eq!(block_on(wal.durable(first)), Ok(()));
    assert_eq!(wal.last_lsn(), second);
    assert_eq!(
        block_on(wal.durable(second + 1)),
        Err(DurabilityError::NotAppended {
            given: second + 1,
            last: second
        })
    );
    // Live reads see exactly the durable records.
    let records = all_records(&wal);
    assert_eq!(
        records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let mut from_two = wal.read_from(2).unwrap();
    let record = from_two.next_record().unwrap().unwrap();
    assert_eq!((record.lsn, record.payload), (2, &b"b"[..]));
    assert!(from_two.next_record().is_none());
}

#[test]
fn limits_and_the_directory_lock_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let too_big = vec![0u8; TEST_RECORD_BYTES_MAX as usize + 1];
    match wal.append(1, &too_big) {
        Err(AppendError::TooLarge { given, limit }) => {
            assert_eq!(
                (given, limit),
                (too_big.len() as u64, u64::from(TEST_RECORD_BYTES_MAX))
            )
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(
        Wal::open(dir.path(), small_options()),
        Err(OpenError::Locked { .. })
    ));
    // Verify reads beside the open log, and says so.
    let report = verify(dir.path()).expect("verify beside an open log");
    assert!(report.live);
    let bad = Options {
        segment_bytes: 5000,
        ..small_options()
    };
    assert!(matches!(
        Wal::open(dir.path(), bad),
        Err(OpenError::Options(_))
    ));
    drop(wal);
    let (_wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(recovered.last_lsn, 0);
}

#[test]
fn snapshots_let_old_segments_go_and_recovery_resumes_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    for lsn in 1..=3000u64 {
        wal.append(2, &payload(lsn, 40)).unwrap();
    }
    // Durable means every segment holding a record was renamed into place.
    wal.wait_durable(3000).unwrap();
    let segments_before = segment_paths(dir.path()).len();
    assert!(matches!(
        wal.remove_segments_before(10),
        Err(RemoveError::NotCovered {
            given: 10,
            covered: 0
        })
    ));
    wal.write_snapshot(2000, b"state at 2000").unwrap();
    assert!(matches!(
        wal.write_snapshot(1500, b"older"),
        Err(SnapshotError::Stale {
            given: 1500,
            newest: 2000
        })
    ));
    assert!(matches!(
        wal.remove_segments_before(2002),
        Err(RemoveError::NotCovered { .. })
    ));
    let removed = wal.remove_segments_before(2001).unwrap();
    assert!(removed > 0);
    assert_eq!(segment_paths(dir.path()).len(), segments_before - removed);
    assert!(matches!(
        wal.read_from(1),
        Err(ReadError::Removed { given: 1, .. })
    ));
    let replayed: Vec<u64> = wal
        .read_from(2001)
        .unwrap()
        .map(|r| r.unwrap().lsn)
        .collect();
    assert_eq!(replayed, (2001..=3000).collect::<Vec<_>>());
    wal.close().unwrap();
    // A newer snapshot that fails its checksum is ignored, not trusted.
    fs::write(
        dir.path().join("snapshot-00000000000000002500.snap"),
        b"RDMSNAP\ngarbage",
    )
    .unwrap();

    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    let snapshot = recovered.snapshot.unwrap();
    assert_eq!(
        (snapshot.lsn, &snapshot.blob[..]),
        (2000, &b"state at 2000"[..])
    );
    assert_eq!(recovered.ignored_snapshots.len(), 1);
    assert!(recovered.first_lsn <= 2001);
    assert_eq!(recovered.last_lsn, 3000);
    for record in wal.read_from(snapshot.lsn + 1).unwrap() {
        let record = record.unwrap();
        assert_eq!(record.payload, payload(record.lsn, 40));
    }
    // Only the newest snapshot file is kept once a newer one is durable.
    wal.write_snapshot(3000, b"state at 3000").unwrap();
    assert!(
        !dir.path()
            .join("snapshot-00000000000000002000.snap")
            .exists()
    );
}

/// A follower that reads from where an earlier reader stopped gets exactly
/// the records a fresh read from that LSN gets, whichever segment it is in;
/// a position from another segment or past `from` is ignored, not trusted.
#[test]
fn reading_on_from_a_position_matches_a_fresh_read() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small_options()).unwrap();
    let mut position = None;
    let mut read = 0u64;
    for round in 0..30u64 {
        for (i, &size) in SIZES.iter().enumerate() {
            wal.append(i as u8, &payload(round * 100 + i as u64, size))
                .unwrap();
        }
        wal.wait_durable(wal.last_lsn()).unwrap();
        let mut follower = wal.read_from_position(read + 1, position).unwrap();
        let mut fresh = wal.read_from(read + 1).unwrap();
        loop {
            match (follower.next_record(), fresh.next_record()) {
                (None, None) => break,
                (Some(a), Some(b)) => {
                    let (a, b) = (a.unwrap(), b.unwrap());
                    assert_eq!(
                        (a.lsn, a.record_type, a.payload),
                        (b.lsn, b.record_type, b.payload)
                    );
                    read = a.lsn;
                }
                (a, b) => panic!(
                    "one reader ended first: {:?} {:?}",
                    a.is_some(),
                    b.is_some()
                ),
            }
        }
        position = Some(follower.position());
    }
    assert_eq!(read, wal.last_lsn());
    // A stale position (far behind `from`) and one past it are both safe.
    let early = wal.read_from(1).unwrap().position();
    let mut from_early = wal.read_from_position(5, Some(early)).unwrap();
    assert_eq!(from_early.next_record().unwrap().unwrap().lsn, 5);
    let mut past = wal.read_from_position(3, position).unwrap();
    assert_eq!(past.next_record().unwrap().unwrap().lsn, 3);
}

/// A commit interval gathers appends into fewer syncs, and loses none:
/// every record appended by concurrent threads is acknowledged durable and
/// reads back after a reopen.
#[test]
fn a_commit_interval_batches_syncs_and_acknowledges_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        commit_interval: std::time::Duration::from_millis(20),
        ..small_options()
    };
    let mut expected = Vec::new();
    {
        let (wal, _) = Wal::open(dir.path(), options()).unwrap();
        let wal = Arc::new(wal);
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let wal = wal.clone();
                thread::spawn(move || {
                    (0..50u8)
                        .map(|i| {
                            let payload = vec![t, i];
                            let lsn = wal.append(t, &payload).unwrap();
                            wal.wait_durable(lsn).unwrap();
                            (lsn, t, payload)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            expected.extend(thread.join().unwrap());
        }
        let stats = wal.stats();
        assert_eq!(stats.durable_lsn, 200);
        // Syncs start at least 20 ms apart, however slow the machine: the
        // bound grows with the time the run took.
        let bound = started.elapsed().as_millis() as u64 / 20 + 1;
        assert!(
            stats.commits <= bound,
            "{} commits in {:?}",
            stats.commits,
            started.elapsed()
        );
        Arc::try_unwrap(wal).unwrap().close().unwrap();
    }
    expected.sort();
    let (wal, _) = Wal::open(dir.path(), options()).unwrap();
    check_records(&wal, &expected);
}
