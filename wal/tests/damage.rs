//! Proves recovery tells an unacknowledged torn tail from corruption by
//! really cutting, flipping, zeroing and replacing bytes on disk:
//! - truncating (or zeroing) the newest segment at every byte offset of the
//!   last few records recovers exactly the complete prefix;
//! - a flipped bit or zeroed 512-byte sector in the last record, or garbage
//!   after it, is a torn tail: reported with its offset and cut off;
//! - the same damage in a middle record, or anywhere in an older segment,
//!   makes open and verify refuse, naming segment, offset, LSN and reason;
//! - a segment file from another log (another epoch) is refused.
//!
//! Logs here are appended one record at a time, each waited durable, so
//! every record carries the durable mark that proves its predecessors were
//! acknowledged.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use redeem_wal::{Corruption, CorruptionReason, OpenError, VerifyError, Wal, verify};

/// Where a record's frame sits in its segment file.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: u64,
    len: u64,
}

impl Frame {
    fn payload_end(&self) -> u64 {
        self.offset + FRAME_HEADER_BYTES + self.len
    }

    fn end(&self) -> u64 {
        self.offset + frame_bytes(self.len)
    }
}

/// Appends one record per size (record `i` has LSN `i + 1`), waiting for
/// each to be durable; returns the frames if they all fit in one segment.
fn build_log(dir: &Path, sizes: &[usize]) -> Vec<Frame> {
    let (wal, _) = Wal::open(dir, small_options()).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut frames = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let lsn = wal.append(i as u8, &payload(i as u64 + 1, size)).unwrap();
        wal.wait_durable(lsn).unwrap();
        frames.push(Frame {
            offset,
            len: size as u64,
        });
        offset += frame_bytes(size as u64);
    }
    wal.close().unwrap();
    frames
}

#[track_caller]
fn check_prefix(wal: &Wal, count: u64) {
    let records = all_records(wal);
    assert_eq!(records.len() as u64, count);
    for record in records {
        assert_eq!(record.payload, payload(record.lsn, record.payload.len()));
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The file ends at the offset.
    Truncate,
    /// The file keeps its length; bytes from the offset on are zero.
    Zero,
}

#[test]
fn cutting_the_last_records_at_every_byte_recovers_exactly_the_complete_prefix() {
    let sizes = [10, 50, 3, 100, 0, 64, 17, 200, 9];
    let pristine = tempfile::tempdir().unwrap();
    let frames = build_log(pristine.path(), &sizes);
    let segment_name = segment_paths(pristine.path())[0]
        .file_name()
        .unwrap()
        .to_owned();
    let original = fs::read(pristine.path().join(&segment_name)).unwrap();
    let first_cut = frames[sizes.len() - 4].offset;
    let last_cut = frames.last().unwrap().payload_end();
    for cut in first_cut..=last_cut {
        for mode in [Cut::Truncate, Cut::Zero] {
            check_cut(
                pristine.path(),
                &segment_name,
                &original,
                &frames,
                cut,
                mode,
            );
        }
    }
}

#[track_caller]
fn check_cut(
    pristine: &Path,
    segment: &std::ffi::OsStr,
    original: &[u8],
    frames: &[Frame],
    cut: u64,
    mode: Cut,
) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(pristine, dir.path());
    let path = dir.path().join(segment);
    match mode {
        Cut::Truncate => OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut)
            .unwrap(),
        Cut::Zero => {
            let mut bytes = original.to_vec();
            bytes[cut as usize..].fill(0);
            fs::write(&path, bytes).unwrap();
        }
    }
    let complete = frames.iter().filter(|f| f.payload_end() <= cut).count() as u64;
    let prefix_end = frames[..complete as usize]
        .last()
        .map_or(SEGMENT_HEADER_BYTES, Frame::end);
    let torn = original[prefix_end.min(cut) as usize..cut as usize]
        .iter()
        .any(|&b| b != 0);
    let context = format!("cut at {cut} ({mode:?})");

    let report = verify(dir.path()).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(report.last_lsn, complete, "{context}");
    assert_eq!(
        report.torn_tail.as_ref().map(|t| (t.offset, t.lsn)),
        torn.then_some((prefix_end, complete + 1)),
        "{context}"
    );

    let (wal, recovered) =
        Wal::open(dir.path(), small_options()).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(recovered.last_lsn, complete, "{context}");
    assert_eq!(recovered.torn_tail.is_some(), torn, "{context}");
    check_prefix(&wal, complete);
    let next = wal.append(1, &payload(complete + 1, 5)).unwrap();
    assert_eq!(next, complete + 1, "{context}");
    wal.close().unwrap();
    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(
        (recovered.last_lsn, recovered.torn_tail),
        (complete + 1, None),
        "{context}"
    );
    check_prefix(&wal, complete + 1);
}

/// Damage done to a log's newest segment.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// XOR 0x01 into the byte at `at` bytes into record `record`'s frame.
    FlipBit { record: usize, at: u64 },
    /// Zero the first 512-byte-aligned sector wholly inside record `record`.
    ZeroSector { record: usize },
    /// Write nonzero garbage right after the last frame.
    GarbageAfterTail,
}

/// What open must make of the damage.
#[derive(Debug)]
enum Expect {
    /// Torn tail at the frame of this LSN; records before it survive.
    Torn { lsn: u64 },
    /// Refused at the frame of this LSN.
    Corrupt {
        lsn: u64,
        reason: fn(&CorruptionReason) -> bool,
    },
}

const DAMAGE_SIZES: [usize; 12] = [40, 40, 40, 2000, 40, 40, 40, 40, 40, 40, 40, 2000];

#[test]
fn damage_in_the_last_record_is_a_torn_tail_and_elsewhere_is_refused() {
    let last = DAMAGE_SIZES.len() - 1;
    let lsn_field = 8;
    let payload_byte = FRAME_HEADER_BYTES + 17;
    check_damage(
        Damage::FlipBit {
            record: last,
            at: payload_byte,
        },
        Expect::Torn {
            lsn: last as u64 + 1,
        },
    );
    check_damage(
        Damage::FlipBit {
            record: last,
            at: lsn_field,
        },
        Expect::Torn {
            lsn: last as u64 + 1,
        },
    );
    check_damage(
        Damage::FlipBit {
            record: last,
            at: 0,
        },
        Expect::Torn {
            lsn: last as u64 + 1,
        },
    );
    check_damage(
        Damage::ZeroSector { record: last },
        Expect::Torn {
            lsn: last as u64 + 1,
        },
    );
    check_damage(
        Damage::GarbageAfterTail,
        Expect::Torn {
            lsn: last as u64 + 2,
        },
    );
    check_damage(
        Damage::FlipBit {
            record: 3,
            at: payload_byte,
        },
        Expect::Corrupt {
            lsn: 4,
            reason: |r| matches!(r, CorruptionReason::RecordChecksum { .. }),
        },
    );
    check_damage(
        Damage::ZeroSector { record: 3 },
        Expect::Corrupt {
            lsn: 4,
            reason: |r| matches!(r, CorruptionReason::RecordChecksum { .. }),
        },
    );
    check_damage(
        Damage::FlipBit {
            record: 0,
            at: lsn_field,
        },
        Expect::Corrupt {
            lsn: 1,
            reason: |r| matches!(r, CorruptionReason::RecordChecksum { .. }),
        },
    );
    check_damage(
        Damage::FlipBit {
            record: last - 1,
            at: payload_byte,
        },
        Expect::Corrupt {
            lsn: last as u64,
            reason: |r| matches!(r, CorruptionReason::RecordChecksum { .. }),
        },
    );
}

#[track_caller]
fn check_damage(damage: Damage, expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let frames = build_log(dir.path(), &DAMAGE_SIZES);
    let path = segment_paths(dir.path())[0].clone();
    let mut bytes = fs::read(&path).unwrap();
    match damage {
        Damage::FlipBit { record, at } => bytes[(frames[record].offset + at) as usize] ^= 0x01,
        Damage::ZeroSector { record } => {
            let start = frames[record].offset.next_multiple_of(512) as usize;
            assert!(
                start as u64 + 512 <= frames[record].payload_end(),
                "sector inside the record"
            );
            bytes[start..start + 512].fill(0);
        }
        Damage::GarbageAfterTail => {
            let end = frames.last().unwrap().end() as usize;
            bytes[end..end + 300]
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i as u8).wrapping_mul(37) | 0x80);
        }
    }
    fs::write(&path, &bytes).unwrap();
    let context = format!("{damage:?}");
    let offset_of = |lsn: u64| {
        frames
            .get(lsn as usize - 1)
            .map_or(frames.last().unwrap().end(), |f| f.offset)
    };
    match expect {
        Expect::Torn { lsn } => {
            let report = verify(dir.path()).unwrap_or_else(|e| panic!("{context}: {e}"));
            let torn = report.torn_tail.expect("torn tail reported");
            assert_eq!(
                (torn.segment.clone(), torn.offset, torn.lsn),
                (path.clone(), offset_of(lsn), lsn),
                "{context}"
            );
            assert_eq!(report.last_lsn, lsn - 1);
            let (wal, recovered) =
                Wal::open(dir.path(), small_options()).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(recovered.torn_tail, Some(torn), "{context}");
            assert_eq!(recovered.last_lsn, lsn - 1);
            check_prefix(&wal, lsn - 1);
            drop(wal);
            let after = fs::read(&path).unwrap();
            assert!(
                after[offset_of(lsn) as usize..].iter().all(|&b| b == 0),
                "{context}: tail zeroed"
            );
            let (_wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
            assert_eq!(
                (recovered.torn_tail, recovered.last_lsn),
                (None, lsn - 1),
                "{context}"
            );
        }
        Expect::Corrupt { lsn, reason } => {
            let found = match Wal::open(dir.path(), small_options()) {
                Err(OpenError::Corrupt(corruption)) => corruption,
                other => panic!("{context}: expected corruption, got {other:?}"),
            };
            check_corruption(&found, &path, offset_of(lsn), lsn, reason, &context);
            match verify(dir.path()) {
                Err(VerifyError::Corrupt(again)) => assert_eq!(again, found, "{context}"),
                other => panic!("{context}: verify said {other:?}"),
            }
            // Nothing was changed by the refused open.
            assert_eq!(fs::read(&path).unwrap(), bytes, "{context}");
        }
    }
}

#[track_caller]
fn check_corruption(
    found: &Corruption,
    segment: &Path,
    offset: u64,
    lsn: u64,
    reason: fn(&CorruptionReason) -> bool,
    context: &str,
) {
    assert_eq!(
        (found.segment.as_path(), found.offset, found.lsn),
        (segment, offset, lsn),
        "{context}: {found}"
    );
    assert!(reason(found.reason.problem()), "{context}: {found}");
    let message = found.to_string();
    assert!(
        message.contains(&segment.display().to_string()) && message.contains(&format!("LSN {lsn}")),
        "{message}"
    );
}

/// Appends equal-sized records (LSN = index + 1) until the log spans three
/// segments, each waited durable; returns the segment paths.
fn build_multi_segment_log(dir: &Path) -> Vec<std::path::PathBuf> {
    build_log_of_segments(dir, 3)
}

/// As [`build_multi_segment_log`], with `count` segments.
fn build_log_of_segments(dir: &Path, count: usize) -> Vec<std::path::PathBuf> {
    let (wal, _) = Wal::open(dir, small_options()).unwrap();
    let mut lsn = 0;
    while segment_paths(dir).len() < count {
        lsn = wal.append(1, &payload(lsn + 1, 200)).unwrap();
        wal.wait_durable(lsn).unwrap();
    }
    wal.close().unwrap();
    segment_paths(dir)
}

#[test]
fn damage_anywhere_in_an_older_segment_is_refused() {
    let frame = frame_bytes(200);
    for victim in [Victim::First, Victim::LastOfSegment] {
        let dir = tempfile::tempdir().unwrap();
        let segments = build_multi_segment_log(dir.path());
        let second_first_lsn: u64 = segments[1]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let lsn = match victim {
            Victim::First => 1,
            Victim::LastOfSegment => second_first_lsn - 1,
        };
        let offset = SEGMENT_HEADER_BYTES + (lsn - 1) * frame;
        let mut bytes = fs::read(&segments[0]).unwrap();
        bytes[(offset + FRAME_HEADER_BYTES + 3) as usize] ^= 0x40;
        fs::write(&segments[0], bytes).unwrap();
        match Wal::open(dir.path(), small_options()) {
            Err(OpenError::Corrupt(found)) => check_corruption(
                &found,
                &segments[0],
                offset,
                lsn,
                |r| matches!(r, CorruptionReason::RecordChecksum { .. }),
                &format!("{victim:?}"),
            ),
            other => panic!("{victim:?}: expected corruption, got {other:?}"),
        }
    }
}

/// The first LSN of a segment, from its file name.
fn first_lsn_of(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Flips a payload byte of the first record of `segment`.
fn flip_first_record(segment: &Path) {
    let mut bytes = fs::read(segment).unwrap();
    bytes[(SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 3) as usize] ^= 0x40;
    fs::write(segment, bytes).unwrap();
}

/// Segments are walked on several threads at once; whichever walk ends
/// first, the damage reported is the oldest, as a walk in order finds it.
#[test]
fn with_damage_in_several_segments_the_oldest_is_reported() {
    for (older, newer) in [(0, 3), (1, 2), (0, 1), (2, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let segments = build_log_of_segments(dir.path(), 5);
        flip_first_record(&segments[newer]);
        flip_first_record(&segments[older]);
        let context = format!("damage in segments {older} and {newer}");
        let is_checksum =
            |r: &CorruptionReason| matches!(r, CorruptionReason::RecordChecksum { .. });
        let lsn = first_lsn_of(&segments[older]);
        // Opening and verifying must both name the older damage.
        let check = |found: &Corruption| {
            check_corruption(
                found,
                &segments[older],
                SEGMENT_HEADER_BYTES,
                lsn,
                is_checksum,
                &context,
            )
        };
        match Wal::open(dir.path(), small_options()) {
            Err(OpenError::Corrupt(found)) => check(&found),
            other => panic!("{context}: expected corruption, got {other:?}"),
        }
        match verify(dir.path()) {
            Err(VerifyError::Corrupt(found)) => check(&found),
            other => panic!("{context}: expected corruption, got {other:?}"),
        }
    }
    // A segment's header is checked before its records: with the segment
    // before it gone, its number is reported, not its damaged record, nor
    // a newer segment's.
    let dir = tempfile::tempdir().unwrap();
    let segments = build_log_of_segments(dir.path(), 4);
    flip_first_record(&segments[2]);
    flip_first_record(&segments[3]);
    fs::remove_file(&segments[1]).unwrap();
    match Wal::open(dir.path(), small_options()) {
        Err(OpenError::Corrupt(found)) => check_corruption(
            &found,
            &segments[2],
            0,
            first_lsn_of(&segments[1]),
            |r| matches!(r, CorruptionReason::SegmentNumber { .. }),
            "a missing segment before a damaged one",
        ),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    First,
    LastOfSegment,
}

#[test]
fn a_segment_from_another_log_is_refused() {
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let our_segments = build_multi_segment_log(ours.path());
    let their_segments = build_multi_segment_log(theirs.path());
    // Same workload, so the same names; only the epoch differs.
    assert_eq!(our_segments[1].file_name(), their_segments[1].file_name());
    fs::copy(&their_segments[1], &our_segments[1]).unwrap();
    let first_lsn: u64 = our_segments[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    match Wal::open(ours.path(), small_options()) {
        Err(OpenError::Corrupt(found)) => check_corruption(
            &found,
            &our_segments[1],
            0,
            first_lsn,
            |r| matches!(r, CorruptionReason::EpochMismatch { .. }),
            "foreign segment",
        ),
        other => panic!("expected corruption, got {other:?}"),
    }
    // Deleting a middle segment breaks the sequence, too.
    fs::remove_file(&our_segments[1]).unwrap();
    assert!(matches!(verify(ours.path()), Err(VerifyError::Corrupt(_))));
}

#[test]
fn losing_the_oldest_segment_without_a_snapshot_is_refused_by_verify_and_open() {
    // Found by fuzz/ (wal_recovery): verify passed such a log, with
    // first_lsn past 1, while open refused it.
    let dir = tempfile::tempdir().unwrap();
    let segments = build_multi_segment_log(dir.path());
    fs::remove_file(&segments[0]).unwrap();
    let is_missing = |r: &CorruptionReason| {
        matches!(
            r,
            CorruptionReason::RecordsMissing { snapshot: 0, first } if *first > 1
        )
    };
    match verify(dir.path()) {
        Err(VerifyError::Corrupt(found)) => {
            check_corruption(&found, &segments[1], 0, 1, is_missing, "verify")
        }
        other => panic!("verify: expected corruption, got {other:?}"),
    }
    match Wal::open(dir.path(), small_options()) {
        Err(OpenError::Corrupt(found)) => {
            check_corruption(&found, &segments[1], 0, 1, is_missing, "open")
        }
        other => panic!("open: expected corruption, got {other:?}"),
    }
}

/// Flips one payload byte of the record that starts at `end` (the end of
/// the frame before it) in the first segment file; the mapping shares the
/// page cache, so readers see it.
fn flip_payload_byte_after(dir: &Path, end: u64) {
    use std::os::unix::fs::FileExt;
    let at = end + FRAME_HEADER_BYTES + 5;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment_paths(dir)[0])
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
}

#[track_caller]
fn assert_checksum_failure_at(
    results: &[Result<redeem_wal::Record, redeem_wal::ReadError>],
    lsn: u64,
) {
    let at = (lsn - 1) as usize;
    assert_eq!(
        results.len(),
        at + 1,
        "the reader stops at the damaged record"
    );
    assert!(results[..at].iter().all(|r| r.is_ok()));
    match &results[at] {
        Err(redeem_wal::ReadError::Corrupt(Corruption {
            lsn: got, reason, ..
        })) => {
            assert_eq!(*got, lsn);
            assert!(
                matches!(reason, CorruptionReason::RecordChecksum { .. }),
                "{reason:?}"
            );
        }
        other => panic!("expected a checksum failure at LSN {lsn}, got {other:?}"),
    }
}

/// The replay right after open skips the CRC only of records the recovery
/// scan checked; a record appended since is checked as it is read, so
/// damage to it in the file is refused with its LSN.
#[test]
fn a_record_appended_since_open_is_checksummed_as_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let frames = build_log(dir.path(), &[40, 40, 40]);
    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(recovered.last_lsn, 3);
    let lsn = wal.append(9, &payload(4, 40)).unwrap();
    wal.wait_durable(lsn).unwrap();
    assert_eq!(lsn, 4);
    check_prefix(&wal, 4);
    flip_payload_byte_after(dir.path(), frames[2].end());
    let results: Vec<_> = wal.read_recovered_from(1).unwrap().collect();
    assert_checksum_failure_at(&results, 4);
    let results: Vec<_> = wal.read_from(1).unwrap().collect();
    assert_checksum_failure_at(&results, 4);
    wal.close().unwrap();
}

/// Readers other than the replay after open (events, webhooks, the
/// snapshotter) check every CRC: a record the open's scan found intact and
/// that is damaged on disk afterwards is refused, not served.
#[test]
fn a_record_damaged_after_open_is_refused_by_a_later_reader() {
    let dir = tempfile::tempdir().unwrap();
    let frames = build_log(dir.path(), &[40, 40, 40]);
    let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
    assert_eq!(recovered.last_lsn, 3);
    check_prefix(&wal, 3);
    flip_payload_byte_after(dir.path(), frames[0].end());
    let results: Vec<_> = wal.read_from(1).unwrap().collect();
    assert_checksum_failure_at(&results, 2);
    wal.close().unwrap();
}
