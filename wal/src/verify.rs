//! Read-only inspection for operators: `redeemd wal verify` and dumps.
//!
//! Both run beside a process that has the log open. They take the shared
//! directory lock when they can (then no writer runs meanwhile); when a
//! writer holds it they read anyway, which is safe because the log never
//! truncates or rewrites a file in place: segments are preallocated and
//! only appended to, snapshots are renamed into place, and a deleted file
//! stays mapped. What they then see is the log as of the moment each byte
//! was read: records still being written look like a torn tail, and a file
//! deleted between listing and reading fails the attempt, which `verify`
//! repeats.

use std::path::{Path, PathBuf};

use crate::error::{IoFailure, TornTail, VerifyError};
use crate::format::{Lsn, SnapshotProblem, crc_seed};
use crate::read::Records;
use crate::scan::{self, ScanError, Snapshot};
use crate::segment::{Segment, SegmentBytes};
use crate::storage;
use crate::sync::Arc;

/// What [`verify`] found in a log it can vouch for.
#[derive(Debug)]
pub struct Report {
    pub segments: usize,
    /// Oldest record; `last_lsn + 1` if the log holds none.
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
    pub records: u64,
    /// An unacknowledged incomplete tail (open would cut it off). Not
    /// corruption.
    pub torn_tail: Option<TornTail>,
    pub snapshot_lsn: Option<Lsn>,
    /// The newest valid snapshot: where the state starts when the log no
    /// longer holds its first records.
    pub snapshot: Option<Snapshot>,
    pub ignored_snapshots: Vec<(PathBuf, SnapshotProblem)>,
    /// Another process had the log open: it was read as it was being
    /// written, and a torn tail may be records still in flight.
    pub live: bool,
}

/// Times `verify` reads a log that a writer holds before it believes a
/// failure: a retention run or a rollover between listing and reading
/// fails one attempt, not three in a row.
const LIVE_ATTEMPTS_MAX: usize = 3;

/// Checks every segment, record and snapshot in `dir` without changing
/// anything. `Err(VerifyError::Corrupt)` names segment, offset, LSN and
/// reason; a torn tail is reported in the [`Report`], not as an error.
/// Works beside a `Wal` that has the directory open (see the module docs);
/// then a failure counts only if it repeats.
pub fn verify(dir: &Path) -> Result<Report, VerifyError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = dump(dir).map(|(report, _)| report);
        if result.is_ok() || attempts >= LIVE_ATTEMPTS_MAX || !held_by_writer(dir) {
            return result;
        }
    }
}

/// True when a process holds the directory's exclusive lock.
fn held_by_writer(dir: &Path) -> bool {
    matches!(storage::lock_dir(dir, false), Ok(None))
}

/// Like [`verify`], and also returns every record in the log, read-only;
/// one attempt.
pub fn dump(dir: &Path) -> Result<(Report, Records), VerifyError> {
    let lock =
        storage::lock_dir(dir, false).map_err(|e| IoFailure::new("lock directory", dir, e))?;
    let live = lock.is_none();
    let listing = scan::list(dir)?;
    let scanned = scan::scan(&listing).map_err(|e| match e {
        ScanError::Io(e) => VerifyError::Io(e),
        ScanError::Corrupt(c) => VerifyError::Corrupt(c),
    })?;
    let (snapshot, ignored_snapshots) =
        scan::load_snapshot(&listing, scanned.as_ref().map(|s| s.epoch))?;
    let Some(scan) = scanned else {
        let report = Report {
            segments: 0,
            first_lsn: 1,
            last_lsn: 0,
            records: 0,
            torn_tail: None,
            snapshot_lsn: snapshot.as_ref().map(|s| s.lsn),
            snapshot,
            ignored_snapshots,
            live,
        };
        return Ok((
            report,
            Records::new(Vec::new(), 1, 0, crc_seed(0), 0, None).expect("empty"),
        ));
    };
    scan::check_start(&scan, snapshot.as_ref()).map_err(VerifyError::Corrupt)?;
    drop(lock);
    let report = Report {
        segments: scan.segments.len(),
        first_lsn: scan.first_lsn,
        last_lsn: scan.next_lsn - 1,
        records: scan.records(),
        torn_tail: scan.torn.clone(),
        snapshot_lsn: snapshot.as_ref().map(|s| s.lsn),
        snapshot,
        ignored_snapshots,
        live,
    };
    let segments = scan
        .segments
        .into_iter()
        .map(|found| {
            let capacity = found.header.segment_bytes as usize;
            Arc::new(Segment::new(
                found.header.number,
                found.header.first_lsn,
                found.path,
                capacity,
                SegmentBytes::ReadOnly(found.map),
            ))
        })
        .collect();
    let records = Records::new(
        segments,
        report.first_lsn,
        report.last_lsn,
        crc_seed(scan.epoch),
        // The scan above checked every CRC through the last LSN.
        report.last_lsn,
        None,
    )
    .expect("the oldest segment holds the first LSN");
    Ok((report, records))
}
