//! The live log: open and recovery, append, group commit, snapshots,
//! segment removal and shutdown.

use std::collections::VecDeque;
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::commit::Commit;
use crate::error::{
    AppendError, CloseError, Corruption, CorruptionReason, DurabilityError, IoFailure, OpenError,
    OptionsError, ReadError, RemoveError, SnapshotError, TornTail,
};
use crate::format::{
    self, FRAME_HEADER_BYTES, FrameHeader, FrameKind, Lsn, SEAL_BYTES, SEGMENT_HEADER_BYTES,
    SegmentHeader, SnapshotProblem, crc_seed, frame_bytes,
};
use crate::publish::{self, FlushSignal, Position};
use crate::read::Records;
use crate::scan::{self, ScanError, Snapshot};
use crate::segment::{Segment, SegmentBytes};
use crate::storage::{self, DirLock, OsStorage, PAGE_BYTES, SegmentMap, Storage};
use crate::sync::{Arc, AtomicU64, JoinHandle, Mutex, MutexGuard, Ordering, spawn_named};
use crate::{
    RECORD_BYTES_MAX_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN,
    SNAPSHOT_BYTES_MAX,
};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `msync` before acknowledging: an acknowledged record survives power
    /// loss. The default, and the only mode for production.
    #[default]
    Always,
    /// BENCHMARKS ONLY. Never `msync`s segment data: records are
    /// "durable" once written to the mapping, so they survive a process
    /// crash but not a power loss or kernel crash.
    None,
}

/// How to open a log.
#[derive(Debug)]
pub struct Options {
    /// Size of every new segment file; a multiple of 4096 between
    /// [`SEGMENT_BYTES_MIN`] and [`SEGMENT_BYTES_MAX`].
    pub segment_bytes: u64,
    pub sync: SyncMode,
    /// Largest payload `append` accepts. `None` means
    /// [`RECORD_BYTES_MAX_DEFAULT`] or whatever fits in a segment, if less.
    pub record_bytes_max: Option<u32>,
    /// The file system; tests substitute a fault-injecting one.
    pub storage: Box<dyn Storage>,
    /// Least time from the start of one sync to the start of the next.
    /// Zero syncs as soon as anything is appended. Under load a longer
    /// interval gathers more records into each sync, which costs less CPU
    /// a record; a lone append after a quiet spell is never delayed.
    pub commit_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            sync: SyncMode::Always,
            record_bytes_max: None,
            storage: Box::new(OsStorage),
            commit_interval: Duration::ZERO,
        }
    }
}

/// What open found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// The newest valid snapshot; replay records from `lsn + 1`.
    pub snapshot: Option<Snapshot>,
    /// Oldest record still in the log (older ones were removed after a
    /// snapshot); `last_lsn + 1` when the log holds none.
    pub first_lsn: Lsn,
    /// Highest record recovered; 0 for an empty log.
    pub last_lsn: Lsn,
    /// Records in the log, `last_lsn + 1 - first_lsn`.
    pub records: u64,
    /// An unacknowledged incomplete tail that open cut off.
    pub torn_tail: Option<TornTail>,
    /// Snapshots newer than the one used that failed validation.
    pub ignored_snapshots: Vec<(PathBuf, SnapshotProblem)>,
    /// True when the directory held no log and a new one was created.
    pub created: bool,
}

/// One segment of the log, from [`Wal::segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of its first record; its last is the next segment's `first_lsn`
    /// minus one.
    pub first_lsn: Lsn,
    /// Its file's size.
    pub bytes: u64,
}

/// Counters for benchmarks and monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Group commits that advanced the durable LSN.
    pub commits: u64,
    /// `msync` calls on segment data.
    pub syncs: u64,
    pub durable_lsn: Lsn,
    pub last_lsn: Lsn,
}

/// A segmented, memory-mapped write-ahead log. Share it in an `Arc`.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    /// Held for the Wal's lifetime so no other process opens the directory.
    _lock: DirLock,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    storage: Box<dyn Storage>,
    sync: SyncMode,
    /// `Options::commit_interval`.
    commit_interval: Duration,
    /// Size of segments this process creates.
    segment_bytes: usize,
    record_bytes_max: u32,
    epoch: u64,
    /// CRC state after absorbing the epoch; cloned for every frame.
    seed: crc32fast::Hasher,
    /// The last LSN the recovery scan at open found (0 for a new log): its
    /// CRC and those before it were checked then, so the replay right after
    /// open ([`Wal::read_recovered_from`]) skips them.
    scanned_through: Lsn,
    /// The append reservation: held only to assign LSN, offset and CRC.
    tail: Mutex<Tail>,
    /// Every segment of the log, oldest first, for readers and removal.
    /// Lock order: `tail` before `segments`.
    segments: Mutex<Vec<Arc<Segment>>>,
    commit: Commit,
    /// The flusher sleeps here until an append or shutdown signals it.
    signal: FlushSignal,
    /// LSN of the newest durable snapshot, 0 if none; also serializes
    /// snapshot writers.
    snapshot_lsn: Mutex<Lsn>,
    /// Why the log was poisoned, for operators.
    failure: Mutex<Option<String>>,
    commits: AtomicU64,
    syncs: AtomicU64,
}

/// The append position; protected by `Shared::tail`.
#[derive(Debug)]
struct Tail {
    /// Next LSN, next free byte in `current`, and whether the flusher has
    /// been signalled since it last looked.
    position: Position,
    /// CRC of the last reserved record: the chain value for the next one.
    prev_crc: u32,
    current: Arc<Segment>,
    /// A preallocated segment ready for the next rollover.
    spare: Option<Spare>,
    /// Set when creating a spare failed; cleared at rollover so a full disk
    /// costs one attempt per segment, not one per commit.
    spare_failed: bool,
    spare_counter: u64,
    /// Segments entered since the flusher last looked, oldest first.
    rolled: Vec<Rolled>,
}

impl AsMut<Position> for Tail {
    fn as_mut(&mut self) -> &mut Position {
        &mut self.position
    }
}

#[derive(Debug)]
struct Spare {
    path: PathBuf,
    map: Box<dyn SegmentMap>,
}

#[derive(Debug)]
struct Rolled {
    segment: Arc<Segment>,
    /// Still named `spare-N.wal` until the flusher renames it.
    spare_path: PathBuf,
}

/// Where the flusher has looked and synced up to.
struct Cursor {
    segment: Arc<Segment>,
    /// Next frame whose commit word the flusher has not seen.
    offset: usize,
    /// First byte not yet synced.
    synced: usize,
    /// The segment is still a spare that must be renamed once synced.
    rename_from: Option<PathBuf>,
}

fn validate(options: &Options) -> Result<u32, OptionsError> {
    let given = options.segment_bytes;
    if !given.is_multiple_of(PAGE_BYTES as u64) {
        return Err(OptionsError::SegmentBytesNotPageMultiple { given });
    }
    if given < SEGMENT_BYTES_MIN {
        return Err(OptionsError::SegmentBytesTooSmall {
            given,
            limit: SEGMENT_BYTES_MIN,
        });
    }
    if given > SEGMENT_BYTES_MAX {
        return Err(OptionsError::SegmentBytesTooLarge {
            given,
            limit: SEGMENT_BYTES_MAX,
        });
    }
    // A record must fit in an empty segment together with the seal after it.
    let limit = given - (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + SEAL_BYTES) as u64;
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    match options.record_bytes_max {
        Some(max) if max > limit => Err(OptionsError::RecordBytesMaxTooLarge {
            given: u64::from(max),
            limit: u64::from(limit),
        }),
        Some(max) => Ok(max),
        None => Ok(RECORD_BYTES_MAX_DEFAULT.min(limit)),
    }
}

fn io_failure<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoFailure + 'a {
    move |e| IoFailure::new(op, path, e)
}

/// Creates a spare, writes a segment header into it, syncs it, and renames
/// it into the log: used when open needs a segment before the flusher runs.
fn install_segment(
    storage: &dyn Storage,
    dir: &Path,
    spare_name: String,
    header: SegmentHeader,
) -> Result<Segment, IoFailure> {
    let spare = dir.join(spare_name);
    let map = storage
        .create_segment(&spare, header.segment_bytes)
        .map_err(io_failure("preallocate segment", &spare))?;
    let path = dir.join(format::segment_file_name(header.first_lsn));
    let segment = Segment::new(
        header.number,
        header.first_lsn,
        path.clone(),
        header.segment_bytes as usize,
        SegmentBytes::Writable(map),
    );
    // SAFETY: a fresh mapping nobody else has seen yet.
    unsafe { segment.write_bytes(0, &header.encode()) };
    let map = segment.map().expect("writable");
    map.sync(0, PAGE_BYTES)
        .map_err(io_failure("sync segment header", &spare))?;
    storage
        .rename(&spare, &path)
        .map_err(io_failure("rename segment", &path))?;
    storage
        .sync_dir(dir)
        .map_err(io_failure("sync directory", dir))?;
    Ok(segment)
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering what is there.
    ///
    /// Holds an exclusive lock on `dir` until the `Wal` is dropped. Fails
    /// with [`OpenError::Corrupt`] naming segment, offset, LSN and reason if
    /// anything but an unacknowledged tail is damaged.
    pub fn open(dir: &Path, options: Options) -> Result<(Wal, Recovered), OpenError> {
        let record_bytes_max = validate(&options).map_err(OpenError::Options)?;
        let Options {
            segment_bytes,
            sync,
            storage,
            commit_interval,
            ..
        } = options;
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(storage::DIR_MODE)
                .create(dir)
                .map_err(io_failure("create directory", dir))?;
        }
        let lock = storage::lock_dir(dir, true)
            .map_err(io_failure("lock directory", dir))?
            .ok_or_else(|| OpenError::Locked {
                dir: dir.to_path_buf(),
            })?;
        let listing = scan::list(dir)?;
        for leftover in &listing.leftovers {
            storage
                .remove_file(leftover)
                .map_err(io_failure("remove leftover", leftover))?;
        }
        // Also makes renames from before a crash durable.
        storage
            .sync_dir(dir)
            .map_err(io_failure("sync directory", dir))?;

        let scanned = scan::scan(&listing).map_err(|e| match e {
            ScanError::Io(e) => OpenError::Io(e),
            ScanError::Corrupt(c) => OpenError::Corrupt(c),
        })?;
        let (snapshot, ignored_snapshots) =
            scan::load_snapshot(&listing, scanned.as_ref().map(|s| s.epoch))?;

        let epoch;
        let mut segments = Vec::new();
        let (next_lsn, prev_crc, mut offset, mut sealed);
        let mut recovered = Recovered {
            snapshot: None,
            first_lsn: 1,
            last_lsn: 0,
            records: 0,
            torn_tail: None,
            ignored_snapshots,
            created: false,
        };
        match scanned {
            None => {
                if let Some((_, path)) = listing.snapshots.first() {
                    return Err(OpenError::Corrupt(Corruption {
                        segment: path.clone(),
                        offset: 0,
                        lsn: 0,
                        reason: CorruptionReason::NoSegments,
                    }));
                }
                epoch = getrandom::u64().map_err(|e| {
                    IoFailure::new("choose epoch", dir, io::Error::other(e.to_string()))
                })?;
                let header = SegmentHeader {
                    epoch,
                    number: 1,
                    first_lsn: 1,
                    segment_bytes,
                    prev_crc: 0,
                };
                let segment =
                    install_segment(storage.as_ref(), dir, format::spare_file_name(0), header)?;
                segments.push(Arc::new(segment));
                (next_lsn, prev_crc, offset, sealed) = (1, 0, SEGMENT_HEADER_BYTES, false);
                recovered.created = true;
            }
            Some(scan) => {
                scan::check_start(&scan, snapshot.as_ref()).map_err(OpenError::Corrupt)?;
                epoch = scan.epoch;
                recovered.first_lsn = scan.first_lsn;
                recovered.last_lsn = scan.next_lsn - 1;
                recovered.records = scan.records();
                recovered.torn_tail = scan.torn.clone();
                (next_lsn, prev_crc) = (scan.next_lsn, scan.last_crc);
                let newest_index = scan.segments.len() - 1;
                (offset, sealed) = (
                    scan.segments[newest_index].end,
                    scan.segments[newest_index].sealed,
                );
                let dirty_end = scan.dirty_end;
                for (index, found) in scan.segments.into_iter().enumerate() {
                    let header = found.header;
                    let capacity = header.segment_bytes as usize;
                    let bytes = if index < newest_index {
                        SegmentBytes::ReadOnly(found.map)
                    } else {
                        drop(found.map);
                        let map = storage
                            .open_segment(&found.path, header.segment_bytes)
                            .map_err(io_failure("map newest segment", &found.path))?;
                        SegmentBytes::Writable(map)
                    };
                    segments.push(Arc::new(Segment::new(
                        header.number,
                        header.first_lsn,
                        found.path,
                        capacity,
                        bytes,
                    )));
                }
                let newest = segments.last().expect("scan has segments");
                let map = newest.map().expect("newest segment is writable");
                if let Some(torn) = &recovered.torn_tail {
                    let from =
                        usize::try_from(torn.offset).expect("offset within a mapped segment");
                    let zeros = vec![0u8; dirty_end - from];
                    // SAFETY: no writer or reader exists yet; the range is
                    // inside the newest segment's mapping.
                    unsafe { newest.write_bytes(from, &zeros) };
                    let (start, len) = storage::page_range(from, dirty_end);
                    map.sync(start, len)
                        .map_err(io_failure("sync truncated tail", &newest.path))?;
                }
                // A crashed process may have left recovered records in the
                // page cache only; they are acknowledged from now on.
                let (start, len) = storage::page_range(0, offset);
                map.sync(start, len)
                    .map_err(io_failure("sync recovered segment", &newest.path))?;
            }
        }
        recovered.snapshot = snapshot;

        if sealed {
            // The previous process sealed the newest segment but crashed before
            // its successor was renamed in: start that successor now.
            let newest = segments.last().expect("at least one segment");
            let header = SegmentHeader {
                epoch,
                number: newest.number + 1,
                first_lsn: next_lsn,
                segment_bytes,
                prev_crc,
            };
            let segment =
                install_segment(storage.as_ref(), dir, format::spare_file_name(0), header)?;
            segments.push(Arc::new(segment));
            offset = SEGMENT_HEADER_BYTES;
            sealed = false;
        }
        debug_assert!(!sealed);
        let current = Arc::clone(segments.last().expect("at least one segment"));
        let snapshot_lsn = recovered.snapshot.as_ref().map_or(0, |s| s.lsn);
        let durable = next_lsn - 1;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            storage,
            sync,
            commit_interval,
            segment_bytes: segment_bytes as usize,
            record_bytes_max,
            epoch,
            seed: crc_seed(epoch),
            scanned_through: recovered.last_lsn,
            tail: Mutex::new(Tail {
                position: Position::new(next_lsn, offset),
                prev_crc,
                current: Arc::clone(&current),
                spare: None,
                spare_failed: false,
                spare_counter: 0,
                rolled: Vec::new(),
            }),
            segments: Mutex::new(segments),
            commit: Commit::new(durable),
            signal: FlushSignal::new(),
            snapshot_lsn: Mutex::new(snapshot_lsn),
            failure: Mutex::new(None),
            commits: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        });
        // A full disk here is not fatal: appends fail only when they need it.
        shared.replenish_spare();
        let cursor = Cursor {
            segment: current,
            offset,
            synced: offset,
            rename_from: None,
        };
        let flusher = {
            let shared = Arc::clone(&shared);
            spawn_named("wal-flusher", move || shared.run_flusher(cursor))
        };
        Ok((
            Wal {
                shared,
                flusher: Some(flusher),
                _lock: lock,
            },
            recovered,
        ))
    }

    /// Appends a record and returns its LSN. Never waits for a sync; call
    /// [`wait_durable`](Wal::wait_durable) or [`durable`](Wal::durable) before
    /// acknowledging anything that depends on it.
    pub fn append(&self, record_type: u8, payload: &[u8]) -> Result<Lsn, AppendError> {
        let shared = &*self.shared;
        let limit = shared.record_bytes_max;
        if payload.len() as u64 > u64::from(limit) {
            return Err(AppendError::TooLarge {
                given: payload.len() as u64,
                limit: u64::from(limit),
            });
        }
        if shared.commit.is_poisoned() {
            return Err(AppendError::Poisoned);
        }
        let bytes = frame_bytes(payload.len());
        let mut payload_crc = shared.seed.clone();
        payload_crc.update(payload);

        let mut tail = shared.tail.lock();
        if tail.position.offset + bytes + SEAL_BYTES > tail.current.capacity {
            shared.roll(&mut tail)?;
        }
        let (mut tail, reserved) = publish::reserve(&shared.tail, tail, bytes);
        let lsn = reserved.lsn;
        let mut header = FrameHeader {
            length: payload.len() as u32,
            record_type,
            kind: FrameKind::Record,
            lsn,
            durable_mark: shared.commit.durable(),
            prev_crc: tail.prev_crc,
            crc: 0,
        };
        let head = header.encode_sealed_crc(&payload_crc);
        tail.prev_crc = header.crc;
        shared.commit.set_last(lsn);
        let segment = Arc::clone(&tail.current);
        drop(tail);

        // SAFETY: `offset..offset + bytes` was reserved for this call alone
        // under the tail lock, and segment bytes past the tail are zero.
        unsafe { publish::write_frame(&*segment, reserved.offset, &head, payload) };
        if reserved.signal {
            shared.signal.request();
        }
        Ok(lsn)
    }

    /// Blocks until `lsn` is durable. Returns at once if it already is.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), DurabilityError> {
        self.shared.commit.wait(lsn)
    }

    /// A future that resolves when `lsn` is durable.
    pub fn durable(&self, lsn: Lsn) -> Durable {
        Durable {
            shared: Arc::clone(&self.shared),
            lsn,
            id: None,
        }
    }

    /// Every LSN up to this one is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.commit.durable()
    }

    /// The highest LSN appended so far (durable or not).
    pub fn last_lsn(&self) -> Lsn {
        self.shared.commit.last()
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.commit.is_poisoned()
    }

    /// Why the log was poisoned, if it was.
    pub fn poison_cause(&self) -> Option<String> {
        self.shared.failure.lock().clone()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            // Relaxed: monitoring counters, no ordering with anything.
            commits: self.shared.commits.load(Ordering::Relaxed),
            syncs: self.shared.syncs.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            last_lsn: self.last_lsn(),
        }
    }

    /// The oldest record the log still holds (older ones were removed
    /// after a snapshot); `last_lsn + 1` when it holds none.
    pub fn first_lsn(&self) -> Lsn {
        let segments = self.shared.segments.lock();
        segments.first().map_or(1, |s| s.first_lsn)
    }

    /// The segments of the log, oldest first: where each starts and its
    /// size on disk, for retention decisions.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .segments
            .lock()
            .iter()
            .map(|s| SegmentInfo {
                first_lsn: s.first_lsn,
                bytes: s.capacity as u64,
            })
            .collect()
    }

    /// Reads durable records from `from` on, as of now. Records appended
    /// later are not included; call again to continue.
    pub fn read_from(&self, from: Lsn) -> Result<Records, ReadError> {
        self.read_from_position(from, None)
    }

    /// [`Wal::read_from`], starting at `hint` (a [`Records::position`] of
    /// an earlier reader of this log) when it is in `from`'s segment and not
    /// past `from`, rather than at the segment's first frame.
    pub fn read_from_position(
        &self,
        from: Lsn,
        hint: Option<crate::read::ReadPosition>,
    ) -> Result<Records, ReadError> {
        self.records(from, hint, 0)
    }

    /// [`Wal::read_from`] for the replay that follows [`Wal::open`]: records
    /// its recovery scan just checked skip their CRC (every other frame
    /// check still runs; later records are checksummed). Only for that
    /// replay: a reader that lives on (events, webhooks, the snapshotter)
    /// checks every CRC, so bytes that change on disk while the server runs
    /// are refused rather than served.
    pub fn read_recovered_from(&self, from: Lsn) -> Result<Records, ReadError> {
        self.records(from, None, self.shared.scanned_through)
    }

    fn records(
        &self,
        from: Lsn,
        hint: Option<crate::read::ReadPosition>,
        crc_checked_through: Lsn,
    ) -> Result<Records, ReadError> {
        let through = self.shared.commit.durable();
        let segments = self.shared.segments.lock().clone();
        Records::new(
            segments,
            from,
            through,
            self.shared.seed.clone(),
            crc_checked_through,
            hint,
        )
    }

    /// Writes a snapshot covering every record up to `lsn`, after waiting for
    /// `lsn` to be durable: temp file, fsync, rename, fsync directory. Older
    /// snapshot files are then deleted.
    pub fn write_snapshot(&self, lsn: Lsn, blob: &[u8]) -> Result<(), SnapshotError> {
        let shared = &*self.shared;
        if blob.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge {
                given: blob.len() as u64,
                limit: SNAPSHOT_BYTES_MAX,
            });
        }
        self.wait_durable(lsn).map_err(SnapshotError::Durability)?;
        let mut newest = shared.snapshot_lsn.lock();
        if lsn <= *newest {
            return Err(SnapshotError::Stale {
                given: lsn,
                newest: *newest,
            });
        }
        let bytes = format::encode_snapshot(shared.epoch, lsn, blob);
        let temp = shared.dir.join(format::snapshot_temp_name(lsn));
        let path = shared.dir.join(format::snapshot_file_name(lsn));
        let storage = &shared.storage;
        storage
            .write_file_synced(&temp, &bytes)
            .map_err(|e| SnapshotError::Io(IoFailure::new("write snapshot", &temp, e)))?;
        storage
            .rename(&temp, &path)
            .map_err(|e| SnapshotError::Io(IoFailure::new("rename snapshot", &path, e)))?;
        storage
            .sync_dir(&shared.dir)
            .map_err(|e| SnapshotError::Io(IoFailure::new("sync directory", &shared.dir, e)))?;
        let previous = std::mem::replace(&mut *newest, lsn);
        if previous > 0 {
            let old = shared.dir.join(format::snapshot_file_name(previous));
            match storage.remove_file(&old) {
                Ok(()) => storage.sync_dir(&shared.dir).map_err(|e| {
                    SnapshotError::Io(IoFailure::new("sync directory", &shared.dir, e))
                })?,
                // Gone already (say, the snapshot recovered at open was an
                // older one's successor): nothing to delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SnapshotError::Io(IoFailure::new(
                        "remove old snapshot",
                        &old,
                        e,
                    )));
                }
            }
        }
        Ok(())
    }

    /// Deletes segments whose records all precede `lsn`. Every such record
    /// must be covered by a durable snapshot (`lsn <= snapshot LSN + 1`).
    /// Returns how many segments were deleted.
    pub fn remove_segments_before(&self, lsn: Lsn) -> Result<usize, RemoveError> {
        let shared = &*self.shared;
        let covered = *shared.snapshot_lsn.lock();
        if lsn > covered + 1 {
            return Err(RemoveError::NotCovered {
                given: lsn,
                covered,
            });
        }
        let durable = shared.commit.durable();
        let victims: Vec<Arc<Segment>> = {
            let mut segments = shared.segments.lock();
            // A successor holding a durable record has been renamed into the
            // log, so removing its predecessor never leaves the log headless.
            let count = segments
                .windows(2)
                .take_while(|pair| pair[1].first_lsn <= lsn && pair[1].first_lsn <= durable)
                .count();
            segments.drain(..count).collect()
        };
        // Oldest first, each unlink made durable before the next: a crash
        // then leaves a suffix of the log, never a gap (which open refuses
        // as corruption). Unlinks no fsync orders may reach the disk in any
        // order.
        for (index, victim) in victims.iter().enumerate() {
            let removed = match shared.storage.remove_file(&victim.path) {
                // Already gone is what removal wants.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                removed => removed.map_err(|e| IoFailure::new("remove segment", &victim.path, e)),
            }
            .and_then(|()| {
                shared
                    .storage
                    .sync_dir(&shared.dir)
                    .map_err(|e| IoFailure::new("sync directory", &shared.dir, e))
            });
            if let Err(failure) = removed {
                // Put back the ones not known removed, so a later call
                // removes them instead of leaving them until a restart.
                let mut segments = shared.segments.lock();
                segments.splice(0..0, victims[index..].iter().cloned());
                return Err(RemoveError::Io(failure));
            }
        }
        Ok(victims.len())
    }

    /// Makes everything appended durable, stops the flusher and releases
    /// the directory. Fails if the log was poisoned.
    pub fn close(mut self) -> Result<(), CloseError> {
        self.stop();
        let (durable, last) = (self.durable_lsn(), self.last_lsn());
        if self.is_poisoned() || durable < last {
            return Err(CloseError::Poisoned { durable, last });
        }
        Ok(())
    }

    fn stop(&mut self) {
        let Some(flusher) = self.flusher.take() else {
            return;
        };
        self.shared.signal.shut_down();
        if flusher.join().is_err() && !std::thread::panicking() {
            panic!("WAL flusher thread panicked");
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resolves when its LSN is durable; from [`Wal::durable`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Durable {
    shared: Arc<Shared>,
    lsn: Lsn,
    /// Registration among the waiters, once pending.
    id: Option<u64>,
}

impl Future for Durable {
    type Output = Result<(), DurabilityError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.shared.commit.poll(this.lsn, &mut this.id, cx.waker())
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.shared.commit.cancel(id);
        }
    }
}

impl Shared {
    fn create_spare(&self, counter: u64) -> Result<Spare, IoFailure> {
        let path = self.dir.join(format::spare_file_name(counter));
        let map = self
            .storage
            .create_segment(&path, self.segment_bytes as u64)
            .map_err(io_failure("preallocate segment", &path))?;
        self.storage
            .sync_dir(&self.dir)
            .map_err(io_failure("sync directory", &self.dir))?;
        Ok(Spare { path, map })
    }

    /// Seals the current segment and moves the tail into the spare. Runs
    /// under the tail lock; creates the spare itself only if the flusher has
    /// not had one ready.
    fn roll(&self, tail: &mut MutexGuard<'_, Tail>) -> Result<(), AppendError> {
        let spare = match tail.spare.take() {
            Some(spare) => spare,
            None => {
                tail.spare_counter += 1;
                self.create_spare(tail.spare_counter)
                    .map_err(AppendError::Storage)?
            }
        };
        let mut seal = FrameHeader {
            length: 0,
            record_type: 0,
            kind: FrameKind::Seal,
            lsn: tail.position.next_lsn,
            durable_mark: self.commit.durable(),
            prev_crc: tail.prev_crc,
            crc: 0,
        };
        let head = seal.encode_sealed_crc(&self.seed);
        // SAFETY: the seal's bytes were kept free by every reservation in
        // this segment and are reserved now under the tail lock.
        unsafe { publish::write_frame(&*tail.current, tail.position.offset, &head, &[]) };

        let header = SegmentHeader {
            epoch: self.epoch,
            number: tail.current.number + 1,
            first_lsn: tail.position.next_lsn,
            segment_bytes: self.segment_bytes as u64,
            prev_crc: tail.prev_crc,
        };
        let path = self.dir.join(format::segment_file_name(header.first_lsn));
        let segment = Segment::new(
            header.number,
            header.first_lsn,
            path,
            self.segment_bytes,
            SegmentBytes::Writable(spare.map),
        );
        // SAFETY: the spare was never handed to anyone; the flusher sees the
        // header only after taking the tail lock we hold.
        unsafe { segment.write_bytes(0, &header.encode()) };
        let segment = Arc::new(segment);
        self.segments.lock().push(Arc::clone(&segment));
        tail.rolled.push(Rolled {
            segment: Arc::clone(&segment),
            spare_path: spare.path,
        });
        tail.current = segment;
        tail.position.offset = SEGMENT_HEADER_BYTES;
        tail.spare_failed = false;
        Ok(())
    }

    /// Keeps one preallocated segment ready so appends rarely wait on
    /// `posix_fallocate`.
    fn replenish_spare(&self) {
        let counter = {
            let mut tail = self.tail.lock();
            if tail.spare.is_some() || tail.spare_failed {
                return;
            }
            tail.spare_counter += 1;
            tail.spare_counter
        };
        match self.create_spare(counter) {
            Ok(spare) => {
                let mut tail = self.tail.lock();
                if tail.spare.is_none() {
                    tail.spare = Some(spare);
                } else {
                    drop(tail);
                    // A rollover made its own meanwhile; this one is surplus
                    // and open deletes spares anyway if this fails.
                    let _ = self.storage.remove_file(&spare.path);
                }
            }
            Err(_) => self.tail.lock().spare_failed = true,
        }
    }

    fn run_flusher(&self, mut cursor: Cursor) {
        let mut queue = VecDeque::new();
        let mut last_sync: Option<Instant> = None;
        loop {
            let shutdown = self.signal.wait();
            // Under load, let more records gather before the next sync; a
            // shutdown flushes at once.
            if let Some(last) = last_sync
                && !shutdown
            {
                let next = last + self.commit_interval;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
            }
            let (target, end_segment, end_offset) = {
                let mut tail = self.tail.lock();
                let (target, end_offset) = tail.position.flush_target();
                queue.extend(tail.rolled.drain(..));
                (target, Arc::clone(&tail.current), end_offset)
            };
            if target > self.commit.durable() {
                if !self.commit_interval.is_zero() {
                    last_sync = Some(Instant::now());
                }
                if let Err(failure) = self.flush(&mut cursor, &mut queue, &end_segment, end_offset)
                {
                    // fsyncgate: after a failed sync the page cache may claim
                    // clean pages that never reached the disk. Never retry.
                    *self.failure.lock() = Some(failure.to_string());
                    self.commit.poison();
                    break;
                }
                // Relaxed: a monitoring counter.
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.commit.advance(target);
            }
            self.replenish_spare();
            if shutdown {
                break;
            }
        }
        self.commit.close();
    }

    /// Waits for every frame before `end_offset` of `end_segment` to be
    /// written, syncs them, and renames newly entered segments into the log.
    fn flush(
        &self,
        cursor: &mut Cursor,
        queue: &mut VecDeque<Rolled>,
        end_segment: &Arc<Segment>,
        end_offset: usize,
    ) -> Result<(), IoFailure> {
        loop {
            let last = Arc::ptr_eq(&cursor.segment, end_segment);
            let limit = if last {
                end_offset
            } else {
                cursor.segment.capacity
            };
            let walked = publish::walk_written(&*cursor.segment, cursor.offset, limit);
            cursor.offset = walked.offset;
            let sealed = walked.sealed;
            assert!(sealed != last, "the flusher must end on the tail or a seal");
            assert!(cursor.offset <= limit);
            self.sync_range(&cursor.segment, cursor.synced, cursor.offset)?;
            cursor.synced = cursor.offset;
            if let Some(spare) = cursor.rename_from.take() {
                let path = &cursor.segment.path;
                self.storage
                    .rename(&spare, path)
                    .map_err(io_failure("rename segment", path))?;
                self.storage
                    .sync_dir(&self.dir)
                    .map_err(io_failure("sync directory", &self.dir))?;
            }
            if !sealed {
                return Ok(());
            }
            let next = queue.pop_front().expect("a sealed segment has a successor");
            *cursor = Cursor {
                segment: next.segment,
                offset: SEGMENT_HEADER_BYTES,
                synced: 0,
                rename_from: Some(next.spare_path),
            };
        }
    }

    fn sync_range(&self, segment: &Segment, start: usize, end: usize) -> Result<(), IoFailure> {
        if self.sync == SyncMode::None || start == end {
            return Ok(());
        }
        let map = segment.map().expect("segments being written are writable");
        let (start, len) = storage::page_range(start, end);
        // Relaxed: a monitoring counter.
        self.syncs.fetch_add(1, Ordering::Relaxed);
        map.sync(start, len)
            .map_err(io_failure("msync segment", &segment.path))
    }
}
