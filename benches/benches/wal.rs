//! WAL benchmarks: append plus group commit with `SyncMode::Always` at 1, 2,
//! 8 and 64 concurrent appenders (each appends a 64-byte record and waits
//! for it to be durable), the raw fsync latency of this machine for
//! comparison, and the replay rate of small records (reading an open log,
//! and a full open with recovery scan).
//!
//! Records per sync for each contention level are printed to stderr.
//!
//! `storage_sync` isolates what one group commit costs the storage layer:
//! store a 96-byte frame into a mapped segment and make it durable, on one
//! thread with no flusher handoff, by `msync` of the dirty pages (what the
//! log does) and by `fdatasync` of the file, on a `posix_fallocate`d segment
//! (unwritten extents, as the log creates them) and on one already written
//! with zeros. Comparing it with `wal_append_commit_always/appenders/1`
//! separates the cost of the sync call from the cost of waking threads.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use redeem_wal::{Options, OsStorage, Storage, SyncMode, Wal};

const PAYLOAD_BYTES: usize = 64;
const APPENDERS: [u64; 4] = [1, 2, 8, 64];
const REPLAY_RECORDS: u64 = 1_000_000;
const REPLAY_PAYLOAD_BYTES: usize = 16;
/// A 64-byte payload behind a 32-byte frame header.
const SYNC_FRAME_BYTES: usize = 96;
const SYNC_SEGMENT_BYTES: u64 = 64 << 20;
const SYNC_PAGE_BYTES: usize = 4096;
/// Where frames start after the segment header.
const SYNC_FIRST_OFFSET: usize = 64;

fn append_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_commit_always");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for appenders in APPENDERS {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), Options::default()).unwrap();
        let wal = Arc::new(wal);
        let before = wal.stats();
        group.bench_function(BenchmarkId::new("appenders", appenders), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(appenders);
                let start = Instant::now();
                thread::scope(|scope| {
                    for _ in 0..appenders {
                        scope.spawn(|| {
                            let payload = [7u8; PAYLOAD_BYTES];
                            for _ in 0..per_thread {
                                let lsn = wal.append(1, &payload).unwrap();
                                wal.wait_durable(lsn).unwrap();
                            }
                        });
                    }
                });
                let done = per_thread * appenders;
                start.elapsed().mul_f64(iters as f64 / done as f64)
            })
        });
        let after = wal.stats();
        let records = after.last_lsn - before.last_lsn;
        let syncs = (after.syncs - before.syncs).max(1);
        eprintln!(
            "wal_append_commit_always/{appenders}: {records} records, {syncs} msyncs, \
             {:.1} records per sync",
            records as f64 / syncs as f64
        );
    }
    group.finish();
}

fn fsync_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("fsync_latency");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    let dir = tempfile::tempdir().unwrap();
    let mut file = File::create(dir.path().join("probe")).unwrap();
    let page = [1u8; 4096];
    group.bench_function("write_4k_fdatasync", |b| {
        b.iter(|| {
            file.write_all(&page).unwrap();
            file.sync_data().unwrap();
        })
    });
    group.finish();
}

/// How a `storage_sync` case makes the frame durable.
#[derive(Clone, Copy)]
enum SyncCall {
    /// `SegmentMap::sync` of the page-aligned dirty range: `msync(MS_SYNC)`.
    Msync,
    /// `fdatasync` of the whole file through a second descriptor.
    Fdatasync,
}

/// Writes `bytes` of zeros to a new file at `path` and fsyncs it, so every
/// block is allocated and written (no unwritten extents).
fn write_zeros(path: &Path, bytes: u64) {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..bytes / chunk.len() as u64 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
}

fn storage_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("storage_sync");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for zeroed in [false, true] {
        for call in [SyncCall::Msync, SyncCall::Fdatasync] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("segment");
            let map = if zeroed {
                write_zeros(&path, SYNC_SEGMENT_BYTES);
                OsStorage.open_segment(&path, SYNC_SEGMENT_BYTES).unwrap()
            } else {
                OsStorage.create_segment(&path, SYNC_SEGMENT_BYTES).unwrap()
            };
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            let name = match (call, zeroed) {
                (SyncCall::Msync, false) => "msync_fallocated",
                (SyncCall::Fdatasync, false) => "fdatasync_fallocated",
                (SyncCall::Msync, true) => "msync_zero_written",
                (SyncCall::Fdatasync, true) => "fdatasync_zero_written",
            };
            let frame = [7u8; SYNC_FRAME_BYTES];
            let mut offset = SYNC_FIRST_OFFSET;
            group.bench_function(name, |b| {
                b.iter(|| {
                    if offset + SYNC_FRAME_BYTES > map.len() {
                        offset = SYNC_FIRST_OFFSET;
                    }
                    // SAFETY: in bounds (checked above) of a live mapping
                    // that only this thread touches.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            frame.as_ptr(),
                            map.as_ptr().add(offset),
                            frame.len(),
                        )
                    };
                    let start = offset - offset % SYNC_PAGE_BYTES;
                    offset += SYNC_FRAME_BYTES;
                    match call {
                        SyncCall::Msync => map.sync(start, offset - start).unwrap(),
                        SyncCall::Fdatasync => file.sync_data().unwrap(),
                    }
                })
            });
        }
    }
    group.finish();
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        sync: SyncMode::None,
        ..Options::default()
    };
    {
        let (wal, _) = Wal::open(dir.path(), options()).unwrap();
        let payload = [3u8; REPLAY_PAYLOAD_BYTES];
        for _ in 0..REPLAY_RECORDS {
            wal.append(2, &payload).unwrap();
        }
        wal.close().unwrap();
    }
    let mut group = c.benchmark_group("wal_replay");
    group.throughput(Throughput::Elements(REPLAY_RECORDS));
    group.sample_size(10);
    let (wal, _) = Wal::open(dir.path(), options()).unwrap();
    group.bench_function("read_from_1", |b| {
        b.iter(|| {
            let mut records = wal.read_from(1).unwrap();
            let mut bytes = 0usize;
            while let Some(record) = records.next_record() {
                bytes += record.unwrap().payload.len();
            }
            assert_eq!(bytes as u64, REPLAY_RECORDS * REPLAY_PAYLOAD_BYTES as u64);
        })
    });
    drop(wal);
    group.bench_function("open_with_recovery_scan", |b| {
        b.iter(|| {
            let (wal, recovered) = Wal::open(dir.path(), options()).unwrap();
            assert_eq!(recovered.records, REPLAY_RECORDS);
            drop(wal);
        })
    });
    group.finish();
}

criterion_group!(benches, append_commit, fsync_latency, storage_sync, replay);
criterion_main!(benches);
