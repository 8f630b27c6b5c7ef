//! Recovery scan: lists the directory, validates every segment and record,
//! classifies the first failure as torn tail or corruption, finds snapshots.
//!
//! Read-only: open, verify and dump all start here; only open then repairs.

use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{Corruption, CorruptionReason, IoFailure, TornTail};
use crate::format::{
    self, FRAME_ALIGN_BYTES, FrameKind, Lsn, SEGMENT_HEADER_BYTES, SegmentHeader, SnapshotProblem,
    crc_seed, parse_frame,
};
use crate::storage::{PAGE_BYTES, map_read_only};
use crate::sync::map_indices;
use crate::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SNAPSHOT_BYTES_MAX};

/// What is in a data directory, by file name.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// `LSN.wal` files, sorted by LSN.
    pub(crate) segments: Vec<(Lsn, PathBuf)>,
    /// `snapshot-LSN.snap` files, sorted by LSN.
    pub(crate) snapshots: Vec<(Lsn, PathBuf)>,
    /// Spares and snapshot temp files: never part of the log.
    pub(crate) leftovers: Vec<PathBuf>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing, IoFailure> {
    let mut listing = Listing::default();
    let entries = fs::read_dir(dir).map_err(|e| IoFailure::new("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| IoFailure::new("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(lsn) = format::parse_segment_name(name) {
            listing.segments.push((lsn, path));
        } else if let Some(lsn) = format::parse_snapshot_name(name) {
            listing.snapshots.push((lsn, path));
        } else if (name.starts_with(format::SPARE_PREFIX) && name.ends_with(format::SEGMENT_SUFFIX))
            || (name.starts_with(format::SNAPSHOT_PREFIX)
                && name.ends_with(format::SNAPSHOT_TEMP_SUFFIX))
        {
            listing.leftovers.push(path);
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// One validated segment.
#[derive(Debug)]
pub(crate) struct ScannedSegment {
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    pub(crate) map: Mmap,
    /// Offset just past the last valid frame (the seal, if sealed).
    pub(crate) end: usize,
    pub(crate) sealed: bool,
}

/// The whole log as found on disk.
#[derive(Debug)]
pub(crate) struct Scan {
    pub(crate) epoch: u64,
    pub(crate) segments: Vec<ScannedSegment>,
    pub(crate) first_lsn: Lsn,
    /// The LSN the next record gets.
    pub(crate) next_lsn: Lsn,
    /// CRC of the last record (the chain value the next record continues).
    pub(crate) last_crc: u32,
    pub(crate) torn: Option<TornTail>,
    /// Bytes of the newest segment from the torn offset up to here are not
    /// zero and must be cleared before appending.
    pub(crate) dirty_end: usize,
}

impl Scan {
    pub(crate) fn records(&self) -> u64 {
        self.next_lsn - self.first_lsn
    }
}

/// Why the scan stopped.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(IoFailure),
    Corrupt(Corruption),
}

/// How the bytes after the first bad frame of the newest segment look.
enum Tail {
    /// All zero: the log simply ends there.
    Clean,
    /// Nonzero bytes up to `dirty_end`, none of them proof of durability.
    Torn { dirty_end: usize },
    /// A later, valid frame at `offset` (LSN `lsn`) was appended when the bad
    /// one was already durable (`durable_mark`).
    Corrupt {
        offset: u64,
        lsn: Lsn,
        durable_mark: Lsn,
    },
}

/// One segment walked on its own, from its own header, before the chain
/// across segments is checked: the walks of all segments can then run at
/// once, and the checks in LSN order afterwards find the same first failure
/// a walk of the whole log in order would.
struct Walked {
    header: SegmentHeader,
    map: Mmap,
    /// The segment's declared size, if it does not fit the file.
    bad_size: Option<CorruptionReason>,
    /// Offset just past the last valid frame (the seal, if sealed).
    end: usize,
    sealed: bool,
    /// The LSN after the last valid record, and that record's CRC: the
    /// header's own values when there is none.
    next_lsn: Lsn,
    last_crc: u32,
    /// Why the walk stopped at `end`, unless at a seal.
    failure: Option<CorruptionReason>,
}

/// Why a segment could not be walked at all.
enum Unwalked {
    Io(IoFailure),
    Header(CorruptionReason),
}

/// Maps one segment and checks each frame from its header's first LSN and
/// chain value: checksum, LSN sequence and chain, up to a seal or the first
/// failure.
fn walk(path: &Path, newest: bool) -> Result<Walked, Unwalked> {
    let map =
        map_read_only(path).map_err(|e| Unwalked::Io(IoFailure::new("map segment", path, e)))?;
    let header = SegmentHeader::decode(&map).map_err(Unwalked::Header)?;
    let file_bytes = map.len() as u64;
    let size_ok = (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&header.segment_bytes)
        && header.segment_bytes.is_multiple_of(PAGE_BYTES as u64)
        && (file_bytes == header.segment_bytes || (newest && file_bytes < header.segment_bytes));
    let mut walked = Walked {
        header,
        map,
        bad_size: None,
        end: SEGMENT_HEADER_BYTES,
        sealed: false,
        next_lsn: header.first_lsn,
        last_crc: header.prev_crc,
        failure: None,
    };
    if !size_ok {
        walked.bad_size = Some(CorruptionReason::SegmentBytes {
            expected: file_bytes,
            found: header.segment_bytes,
        });
        return Ok(walked);
    }
    let capacity = header.segment_bytes as usize;
    let seed = crc_seed(header.epoch);
    walked.failure = loop {
        let frame = match parse_frame(&walked.map, capacity, walked.end, &seed) {
            Ok(frame) => frame,
            Err(problem) => break Some(CorruptionReason::from(problem)),
        };
        if frame.header.lsn != walked.next_lsn {
            break Some(CorruptionReason::LsnOutOfSequence {
                expected: walked.next_lsn,
                found: frame.header.lsn,
            });
        }
        if frame.header.prev_crc != walked.last_crc {
            break Some(CorruptionReason::ChainBroken {
                expected: walked.last_crc,
                found: frame.header.prev_crc,
            });
        }
        walked.end = frame.end;
        match frame.header.kind {
            FrameKind::Record => {
                walked.last_crc = frame.header.crc;
                walked.next_lsn += 1;
            }
            FrameKind::Seal => {
                walked.sealed = true;
                break None;
            }
        }
    };
    Ok(walked)
}

/// Validates every segment in `listing`. `Ok(None)` means there are none.
///
/// Segments are walked at once on several threads ([`walk`]), then checked
/// in order: the header chain (epoch, number, first LSN, chain value), the
/// size, then the walk's own result. A segment's first failure is thus
/// reported exactly as a walk of the whole log in order would report it.
pub(crate) fn scan(listing: &Listing) -> Result<Option<Scan>, ScanError> {
    let Some(((first_name_lsn, _), _)) = listing.segments.split_first() else {
        return Ok(None);
    };
    let count = listing.segments.len();
    let walks = map_indices(count, |index| {
        walk(&listing.segments[index].1, index + 1 == count)
    });
    let mut segments = Vec::with_capacity(count);
    let mut log: Option<(u64, crc32fast::Hasher)> = None;
    let mut expected_number = 0;
    let mut expected_lsn = *first_name_lsn;
    let mut first_lsn = *first_name_lsn;
    let mut prev_crc = 0;
    let mut torn = None;
    let mut dirty_end = 0;

    for (index, ((name_lsn, path), walked)) in listing.segments.iter().zip(walks).enumerate() {
        let newest = index + 1 == count;
        let corrupt = |offset: usize, lsn: Lsn, reason: CorruptionReason| {
            ScanError::Corrupt(Corruption {
                segment: path.clone(),
                offset: offset as u64,
                lsn,
                reason,
            })
        };
        let walked = match walked {
            Ok(walked) => walked,
            Err(Unwalked::Io(failure)) => return Err(ScanError::Io(failure)),
            Err(Unwalked::Header(reason)) => return Err(corrupt(0, expected_lsn, reason)),
        };
        let header = walked.header;
        let (epoch, seed) = match &log {
            Some((epoch, seed)) => (*epoch, seed.clone()),
            None => {
                expected_number = header.number;
                expected_lsn = header.first_lsn;
                first_lsn = header.first_lsn;
                prev_crc = header.prev_crc;
                log = Some((header.epoch, crc_seed(header.epoch)));
                (header.epoch, crc_seed(header.epoch))
            }
        };
        let checks = [
            (
                header.epoch != epoch,
                CorruptionReason::EpochMismatch {
                    expected: epoch,
                    found: header.epoch,
                },
            ),
            (
                header.number != expected_number,
                CorruptionReason::SegmentNumber {
                    expected: expected_number,
                    found: header.number,
                },
            ),
            (
                header.first_lsn != expected_lsn || header.first_lsn != *name_lsn,
                CorruptionReason::FirstLsn {
                    expected: expected_lsn,
                    found: header.first_lsn,
                },
            ),
            (
                header.prev_crc != prev_crc,
                CorruptionReason::HeaderChain {
                    expected: prev_crc,
                    found: header.prev_crc,
                },
            ),
        ];
        if let Some((_, reason)) = checks.into_iter().find(|(failed, _)| *failed) {
            return Err(corrupt(0, expected_lsn, reason));
        }
        if let Some(reason) = walked.bad_size {
            return Err(corrupt(0, expected_lsn, reason));
        }
        // The header continues the chain, so the walk started where the
        // chain stood: its end is where the log stands now.
        let offset = walked.end;
        expected_lsn = walked.next_lsn;
        prev_crc = walked.last_crc;
        if let Some(reason) = walked.failure {
            if !newest {
                return Err(corrupt(offset, expected_lsn, reason));
            }
            let capacity = header.segment_bytes as usize;
            match classify_tail(&walked.map, capacity, offset, expected_lsn, &seed) {
                Tail::Clean => {}
                Tail::Torn { dirty_end: end } => {
                    dirty_end = end;
                    torn = Some(TornTail {
                        segment: path.clone(),
                        offset: offset as u64,
                        lsn: expected_lsn,
                        reason,
                    });
                }
                Tail::Corrupt {
                    offset: evidence_offset,
                    lsn: evidence_lsn,
                    durable_mark,
                } => {
                    let evidence = CorruptionReason::DamagedDurableRecord {
                        problem: Box::new(reason),
                        evidence_offset,
                        evidence_lsn,
                        durable_mark,
                    };
                    return Err(corrupt(offset, expected_lsn, evidence));
                }
            }
        }
        segments.push(ScannedSegment {
            path: path.clone(),
            header,
            map: walked.map,
            end: offset,
            sealed: walked.sealed,
        });
        expected_number += 1;
    }
    let (epoch, _) = log.expect("at least one segment was scanned");
    Ok(Some(Scan {
        epoch,
        segments,
        first_lsn,
        next_lsn: expected_lsn,
        last_crc: prev_crc,
        torn,
        dirty_end,
    }))
}

/// Looks at every 8-byte word after the failure at `from` in the newest
/// segment. A frame there that validates on its own and carries a durable
/// mark at or past `expected_lsn` proves the failed record was acknowledged.
fn classify_tail(
    bytes: &[u8],
    capacity: usize,
    from: usize,
    expected_lsn: Lsn,
    seed: &crc32fast::Hasher,
) -> Tail {
    let end = bytes.len().min(capacity);
    let mut dirty_end = from;
    let mut at = from;
    while at < end {
        // Zero words first, many at a time: after a clean end the rest of
        // a preallocated segment (up to all of it) is zero.
        at += zero_prefix(&bytes[at..end]) / FRAME_ALIGN_BYTES * FRAME_ALIGN_BYTES;
        if at >= end {
            break;
        }
        let word_end = (at + FRAME_ALIGN_BYTES).min(end);
        if bytes[at..word_end].iter().all(|&b| b == 0) {
            at = word_end;
            continue;
        }
        dirty_end = word_end;
        if let Ok(frame) = parse_frame(bytes, capacity, at, seed) {
            if frame.header.durable_mark >= expected_lsn {
                return Tail::Corrupt {
                    offset: at as u64,
                    lsn: frame.header.lsn,
                    durable_mark: frame.header.durable_mark,
                };
            }
            dirty_end = dirty_end.max(frame.payload.end);
            at = frame.end;
            continue;
        }
        at = word_end;
    }
    if dirty_end == from {
        Tail::Clean
    } else {
        Tail::Torn { dirty_end }
    }
}

/// How many bytes at the start of `bytes` are zero. Whole blocks are
/// tested with an OR over their bytes, which the compiler vectorises; the
/// first block with a nonzero byte is then searched byte by byte.
fn zero_prefix(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut zeros = 0;
    for block in bytes.chunks(BLOCK) {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return zeros + block.iter().position(|&b| b != 0).expect("a nonzero byte");
        }
        zeros += block.len();
    }
    zeros
}

/// A snapshot found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The last LSN the blob covers; replay starts at `lsn + 1`.
    pub lsn: Lsn,
    pub blob: Vec<u8>,
}

/// Snapshot files that failed validation, with why.
pub(crate) type IgnoredSnapshots = Vec<(PathBuf, SnapshotProblem)>;

/// The newest valid snapshot, and the newer ones that failed validation.
pub(crate) fn load_snapshot(
    listing: &Listing,
    epoch: Option<u64>,
) -> Result<(Option<Snapshot>, IgnoredSnapshots), IoFailure> {
    let mut ignored = Vec::new();
    for (name_lsn, path) in listing.snapshots.iter().rev() {
        let file_bytes = fs::metadata(path)
            .map_err(|e| IoFailure::new("stat snapshot", path, e))?
            .len();
        if file_bytes > SNAPSHOT_BYTES_MAX + format::SNAPSHOT_HEADER_BYTES as u64 {
            ignored.push((
                path.clone(),
                SnapshotProblem::Length {
                    stored: 0,
                    actual: file_bytes,
                },
            ));
            continue;
        }
        let bytes = fs::read(path).map_err(|e| IoFailure::new("read snapshot", path, e))?;
        let problem = match format::decode_snapshot(&bytes) {
            Err(problem) => problem,
            Ok((_, stored, _)) if stored != *name_lsn => SnapshotProblem::LsnMismatch {
                name: *name_lsn,
                stored,
            },
            Ok((found, _, _)) if epoch.is_some_and(|expected| expected != found) => {
                SnapshotProblem::EpochMismatch {
                    expected: epoch.unwrap_or_default(),
                    found,
                }
            }
            Ok((_, lsn, blob)) => {
                return Ok((
                    Some(Snapshot {
                        lsn,
                        blob: bytes[blob].to_vec(),
                    }),
                    ignored,
                ));
            }
        };
        ignored.push((path.clone(), problem));
    }
    Ok((None, ignored))
}

/// Checks that the snapshot, if any, and the segments fit together: the
/// oldest segment must continue right after the snapshot, or start at LSN 1
/// when there is none. Open and verify both call this, so they agree.
pub(crate) fn check_start(scan: &Scan, snapshot: Option<&Snapshot>) -> Result<(), Corruption> {
    let newest = scan.segments.last().expect("a scan has segments");
    let oldest = scan.segments.first().expect("a scan has segments");
    let last = scan.next_lsn - 1;
    let covered = snapshot.map_or(0, |snapshot| snapshot.lsn);
    if covered > last {
        return Err(Corruption {
            segment: newest.path.clone(),
            offset: newest.end as u64,
            lsn: scan.next_lsn,
            reason: CorruptionReason::SnapshotBeyondLog {
                snapshot: covered,
                last,
            },
        });
    }
    if scan.first_lsn > covered + 1 {
        return Err(Corruption {
            segment: oldest.path.clone(),
            offset: 0,
            lsn: covered + 1,
            reason: CorruptionReason::RecordsMissing {
                snapshot: covered,
                first: scan.first_lsn,
            },
        });
    }
    Ok(())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::zero_prefix;

    #[test]
    fn zero_prefix_counts_the_leading_zero_bytes_across_blocks() {
        assert_eq!(zero_prefix(&[]), 0);
        assert_eq!(zero_prefix(&[1]), 0);
        let mut bytes = vec![0u8; 3 * 4096 + 100];
        assert_eq!(zero_prefix(&bytes), bytes.len());
        for at in [0, 7, 4095, 4096, 4097, 2 * 4096 + 3, bytes.len() - 1] {
            bytes[at] = 0x80;
            assert_eq!(zero_prefix(&bytes), at, "nonzero at {at}");
            bytes[at] = 0;
        }
    }
}
