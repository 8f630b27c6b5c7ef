//! One hand-written error enum per operation. A limit error carries
//! `{given, limit}`; corruption names segment, byte offset, LSN and reason.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::format::{FrameProblem, Lsn};

/// A system call that failed, with what was being done and to which path.
#[derive(Debug)]
pub struct IoFailure {
    /// What the WAL was doing, e.g. "preallocate segment".
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl IoFailure {
    pub(crate) fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> IoFailure {
        IoFailure {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the failure is a full disk (`ENOSPC`).
    pub fn is_no_space(&self) -> bool {
        self.source.raw_os_error() == Some(libc::ENOSPC)
            || self.source.kind() == io::ErrorKind::StorageFull
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for IoFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Where the log is damaged and how. Open refuses a log with corruption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub segment: PathBuf,
    pub offset: u64,
    /// The LSN expected at `offset`.
    pub lsn: Lsn,
    pub reason: CorruptionReason,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt WAL: segment {}, byte offset {}, LSN {}: {}",
            self.segment.display(),
            self.offset,
            self.lsn,
            self.reason
        )
    }
}

impl std::error::Error for Corruption {}

/// What is wrong at a corrupt or torn place.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionReason {
    FileTooShort {
        given: u64,
        limit: u64,
    },
    BadMagic,
    HeaderChecksum {
        stored: u32,
        computed: u32,
    },
    UnsupportedVersion {
        found: u32,
    },
    /// The segment belongs to another log (or a recycled file of one).
    EpochMismatch {
        expected: u64,
        found: u64,
    },
    SegmentNumber {
        expected: u64,
        found: u64,
    },
    FirstLsn {
        expected: Lsn,
        found: Lsn,
    },
    SegmentBytes {
        expected: u64,
        found: u64,
    },
    HeaderChain {
        expected: u32,
        found: u32,
    },
    /// No frame was written where one must be.
    Unwritten,
    /// The frame runs past the end of the file.
    Truncated,
    BadKind(u8),
    BadLength(u32),
    RecordChecksum {
        stored: u32,
        computed: u32,
    },
    /// The record's previous-CRC field does not match the record before it.
    ChainBroken {
        expected: u32,
        found: u32,
    },
    LsnOutOfSequence {
        expected: Lsn,
        found: Lsn,
    },
    /// `problem` hit a record that was already durable, so it cannot be a
    /// torn tail: the later frame at `evidence_offset` (LSN `evidence_lsn`)
    /// was appended when `durable_mark` was durable.
    DamagedDurableRecord {
        problem: Box<CorruptionReason>,
        evidence_offset: u64,
        evidence_lsn: Lsn,
        durable_mark: Lsn,
    },
    /// The newest snapshot covers records the log does not reach.
    SnapshotBeyondLog {
        snapshot: Lsn,
        last: Lsn,
    },
    /// Records between the snapshot and the oldest segment are gone.
    RecordsMissing {
        snapshot: Lsn,
        first: Lsn,
    },
    /// Snapshots exist but no segment does.
    NoSegments,
}

impl CorruptionReason {
    /// The underlying problem, looking through `DamagedDurableRecord`.
    pub fn problem(&self) -> &CorruptionReason {
        match self {
            CorruptionReason::DamagedDurableRecord { problem, .. } => problem.problem(),
            other => other,
        }
    }
}

impl From<FrameProblem> for CorruptionReason {
    fn from(problem: FrameProblem) -> CorruptionReason {
        match problem {
            FrameProblem::Unwritten => CorruptionReason::Unwritten,
            FrameProblem::Truncated => CorruptionReason::Truncated,
            FrameProblem::BadKind(kind) => CorruptionReason::BadKind(kind),
            FrameProblem::BadLength(length) => CorruptionReason::BadLength(length),
            FrameProblem::Checksum { stored, computed } => {
                CorruptionReason::RecordChecksum { stored, computed }
            }
        }
    }
}

impl fmt::Display for CorruptionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CorruptionReason::*;
        match self {
            FileTooShort { given, limit } => {
                write!(f, "file is {given} bytes, shorter than {limit}")
            }
            BadMagic => write!(f, "bad segment magic"),
            HeaderChecksum { stored, computed } => write!(
                f,
                "segment header checksum {stored:#010x} != computed {computed:#010x}"
            ),
            UnsupportedVersion { found } => write!(f, "unsupported format version {found}"),
            EpochMismatch { expected, found } => write!(
                f,
                "segment epoch {found:#018x} is not the log's {expected:#018x} (stale or foreign file)"
            ),
            SegmentNumber { expected, found } => {
                write!(f, "segment number {found}, expected {expected}")
            }
            FirstLsn { expected, found } => {
                write!(f, "segment starts at LSN {found}, expected {expected}")
            }
            SegmentBytes { expected, found } => {
                write!(f, "segment header says {found} bytes, expected {expected}")
            }
            HeaderChain { expected, found } => write!(
                f,
                "segment's previous CRC {found:#010x} does not continue the log ({expected:#010x})"
            ),
            Unwritten => write!(f, "no record where one must be (zero bytes)"),
            Truncated => write!(f, "record runs past the end of the file"),
            BadKind(kind) => write!(f, "bad frame kind {kind}"),
            BadLength(length) => write!(f, "bad record length {length}"),
            RecordChecksum { stored, computed } => {
                write!(
                    f,
                    "record checksum {stored:#010x} != computed {computed:#010x}"
                )
            }
            ChainBroken { expected, found } => write!(
                f,
                "checksum chain broken: previous CRC {found:#010x}, expected {expected:#010x}"
            ),
            LsnOutOfSequence { expected, found } => {
                write!(f, "record has LSN {found}, expected {expected}")
            }
            DamagedDurableRecord {
                problem,
                evidence_offset,
                evidence_lsn,
                durable_mark,
            } => write!(
                f,
                "{problem}, in a record that was already durable: the record at \
                 byte offset {evidence_offset} (LSN {evidence_lsn}) was appended \
                 when LSN {durable_mark} was durable"
            ),
            SnapshotBeyondLog { snapshot, last } => {
                write!(
                    f,
                    "snapshot covers LSN {snapshot} but the log ends at {last}"
                )
            }
            RecordsMissing { snapshot, first } => write!(
                f,
                "snapshot covers up to LSN {snapshot} but the oldest segment starts at {first}"
            ),
            NoSegments => write!(f, "snapshots exist but no segment does"),
        }
    }
}

/// An incomplete tail in the newest segment that was never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Byte offset of the first byte that is not part of the log.
    pub offset: u64,
    /// The LSN the first missing record would have had.
    pub lsn: Lsn,
    pub reason: CorruptionReason,
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail: segment {}, byte offset {}, LSN {}: {}",
            self.segment.display(),
            self.offset,
            self.lsn,
            self.reason
        )
    }
}

/// Invalid [`Options`](crate::Options).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptionsError {
    SegmentBytesNotPageMultiple {
        given: u64,
    },
    SegmentBytesTooSmall {
        given: u64,
        limit: u64,
    },
    SegmentBytesTooLarge {
        given: u64,
        limit: u64,
    },
    /// `record_bytes_max` does not fit in a segment.
    RecordBytesMaxTooLarge {
        given: u64,
        limit: u64,
    },
}

impl fmt::Display for OptionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionsError::SegmentBytesNotPageMultiple { given } => {
                write!(f, "segment_bytes {given} is not a multiple of 4096")
            }
            OptionsError::SegmentBytesTooSmall { given, limit } => {
                write!(f, "segment_bytes {given} is below the minimum {limit}")
            }
            OptionsError::SegmentBytesTooLarge { given, limit } => {
                write!(f, "segment_bytes {given} is above the maximum {limit}")
            }
            OptionsError::RecordBytesMaxTooLarge { given, limit } => {
                write!(
                    f,
                    "record_bytes_max {given} exceeds what a segment holds, {limit}"
                )
            }
        }
    }
}

/// Why [`Wal::open`](crate::Wal::open) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    Options(OptionsError),
    /// Another process (or `Wal`) holds the directory's lock.
    Locked {
        dir: PathBuf,
    },
    Io(IoFailure),
    Corrupt(Corruption),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Options(e) => write!(f, "invalid WAL options: {e}"),
            OpenError::Locked { dir } => {
                write!(
                    f,
                    "WAL directory {} is locked by another process",
                    dir.display()
                )
            }
            OpenError::Io(e) => write!(f, "WAL open failed: {e}"),
            OpenError::Corrupt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io(e) => Some(e),
            OpenError::Corrupt(e) => Some(e),
            _ => None,
        }
    }
}

impl From<IoFailure> for OpenError {
    fn from(e: IoFailure) -> OpenError {
        OpenError::Io(e)
    }
}

/// Why [`Wal::append`](crate::Wal::append) failed. Nothing was appended.
#[derive(Debug)]
#[non_exhaustive]
pub enum AppendError {
    TooLarge {
        given: u64,
        limit: u64,
    },
    /// A sync failed earlier; the log accepts nothing more.
    Poisoned,
    /// A new segment could not be created (for example, the disk is full).
    Storage(IoFailure),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::TooLarge { given, limit } => {
                write!(
                    f,
                    "record payload of {given} bytes exceeds the limit {limit}"
                )
            }
            AppendError::Poisoned => write!(f, "WAL is poisoned by an earlier sync failure"),
            AppendError::Storage(e) => write!(f, "WAL append failed: {e}"),
        }
    }
}

impl std::error::Error for AppendError {}

/// Why waiting for durability failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurabilityError {
    /// A sync failed; this LSN will never be acknowledged.
    Poisoned,
    /// The LSN was never appended.
    NotAppended { given: Lsn, last: Lsn },
    /// The log shut down before the LSN became durable.
    Closed,
}

impl fmt::Display for DurabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurabilityError::Poisoned => {
                write!(f, "WAL is poisoned by a sync failure; record not durable")
            }
            DurabilityError::NotAppended { given, last } => {
                write!(f, "LSN {given} was never appended (last is {last})")
            }
            DurabilityError::Closed => write!(f, "WAL closed before the record was durable"),
        }
    }
}

impl std::error::Error for DurabilityError {}

/// Why [`Wal::write_snapshot`](crate::Wal::write_snapshot) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotError {
    TooLarge {
        given: u64,
        limit: u64,
    },
    /// Snapshots must move forward.
    Stale {
        given: Lsn,
        newest: Lsn,
    },
    Durability(DurabilityError),
    Io(IoFailure),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::TooLarge { given, limit } => {
                write!(f, "snapshot of {given} bytes exceeds the limit {limit}")
            }
            SnapshotError::Stale { given, newest } => {
                write!(
                    f,
                    "snapshot at LSN {given} is not newer than the existing {newest}"
                )
            }
            SnapshotError::Durability(e) => write!(f, "snapshot LSN not durable: {e}"),
            SnapshotError::Io(e) => write!(f, "snapshot write failed: {e}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Why [`Wal::remove_segments_before`](crate::Wal::remove_segments_before) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RemoveError {
    /// No durable snapshot covers the records that would be removed.
    NotCovered {
        given: Lsn,
        covered: Lsn,
    },
    Io(IoFailure),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::NotCovered { given, covered } => write!(
                f,
                "cannot remove records before LSN {given}: snapshots cover only up to {covered}"
            ),
            RemoveError::Io(e) => write!(f, "segment removal failed: {e}"),
        }
    }
}

impl std::error::Error for RemoveError {}

/// Why reading records failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The records before `first` were removed after a snapshot.
    Removed {
        given: Lsn,
        first: Lsn,
    },
    Corrupt(Corruption),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Removed { given, first } => {
                write!(f, "LSN {given} was removed; the oldest record is {first}")
            }
            ReadError::Corrupt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// Why [`verify`](crate::verify) could not vouch for a log.
#[derive(Debug)]
#[non_exhaustive]
pub enum VerifyError {
    Locked { dir: PathBuf },
    Io(IoFailure),
    Corrupt(Corruption),
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Locked { dir } => {
                write!(
                    f,
                    "WAL directory {} is open in another process",
                    dir.display()
                )
            }
            VerifyError::Io(e) => write!(f, "WAL verify failed: {e}"),
            VerifyError::Corrupt(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for VerifyError {}

impl From<IoFailure> for VerifyError {
    fn from(e: IoFailure) -> VerifyError {
        VerifyError::Io(e)
    }
}

/// Why [`Wal::close`](crate::Wal::close) could not make everything durable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseError {
    /// A sync failed; records after `durable` were never acknowledged.
    Poisoned { durable: Lsn, last: Lsn },
}

impl fmt::Display for CloseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseError::Poisoned { durable, last } => write!(
                f,
                "WAL poisoned: records {}..={last} were never made durable",
                durable + 1
            ),
        }
    }
}

impl std::error::Error for CloseError {}
