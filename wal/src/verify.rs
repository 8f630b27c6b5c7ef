//! Read-only inspection for operators: `redeemd wal verify` and dumps.

use std::path::{Path, PathBuf};

use crate::error::{IoFailure, TornTail, VerifyError};
use crate::format::{Lsn, SnapshotProblem, crc_seed};
use crate::read::Records;
use crate::scan::{self, ScanError};
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
    pub ignored_snapshots: Vec<(PathBuf, SnapshotProblem)>,
}

/// Checks every segment, record and snapshot in `dir` without changing
/// anything. `Err(VerifyError::Corrupt)` names segment, offset, LSN and
/// reason; a torn tail is reported in the [`Report`], not as an error.
/// Fails with [`VerifyError::Locked`] while a `Wal` has the directory open.
pub fn verify(dir: &Path) -> Result<Report, VerifyError> {
    dump(dir).map(|(report, _)| report)
}

/// Like [`verify`], and also returns every record in the log, read-only.
pub fn dump(dir: &Path) -> Result<(Report, Records), VerifyError> {
    let lock = storage::lock_dir(dir, false)
        .map_err(|e| IoFailure::new("lock directory", dir, e))?
        .ok_or_else(|| VerifyError::Locked {
            dir: dir.to_path_buf(),
        })?;
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
            snapshot_lsn: snapshot.map(|s| s.lsn),
            ignored_snapshots,
        };
        return Ok((
            report,
            Records::new(Vec::new(), 1, 0, crc_seed(0)).expect("empty"),
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
        snapshot_lsn: snapshot.map(|s| s.lsn),
        ignored_snapshots,
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
    )
    .expect("the oldest segment holds the first LSN");
    Ok((report, records))
}
