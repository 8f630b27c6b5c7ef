//! The byte format of segments, frames and snapshots (`docs/wal-format.md`).
//!
//! Every offset is derived from the previous field's offset and size, in the
//! order the document's tables list them. Nothing here does I/O.

use std::ops::Range;

use crate::error::CorruptionReason;

/// A log sequence number: the first record is 1, and they are dense.
pub type Lsn = u64;

/// Alignment of every frame in a segment, in bytes.
pub(crate) const FRAME_ALIGN_BYTES: usize = 8;

// ---- Segment header -------------------------------------------------------

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RDMWAL\r\n";
pub(crate) const FORMAT_VERSION: u32 = 1;

const HEADER_MAGIC_OFFSET: usize = 0;
const HEADER_VERSION_OFFSET: usize = HEADER_MAGIC_OFFSET + SEGMENT_MAGIC.len();
const HEADER_RESERVED_OFFSET: usize = HEADER_VERSION_OFFSET + 4;
const HEADER_EPOCH_OFFSET: usize = HEADER_RESERVED_OFFSET + 4;
const HEADER_NUMBER_OFFSET: usize = HEADER_EPOCH_OFFSET + 8;
const HEADER_FIRST_LSN_OFFSET: usize = HEADER_NUMBER_OFFSET + 8;
const HEADER_SEGMENT_BYTES_OFFSET: usize = HEADER_FIRST_LSN_OFFSET + 8;
const HEADER_PREV_CRC_OFFSET: usize = HEADER_SEGMENT_BYTES_OFFSET + 8;
const HEADER_CRC_OFFSET: usize = HEADER_PREV_CRC_OFFSET + 4;
const HEADER_END: usize = HEADER_CRC_OFFSET + 4;
/// Bytes before the first frame of a segment.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 64;
const _: () = assert!(HEADER_END <= SEGMENT_HEADER_BYTES);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) epoch: u64,
    pub(crate) number: u64,
    pub(crate) first_lsn: Lsn,
    pub(crate) segment_bytes: u64,
    pub(crate) prev_crc: u32,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(&mut bytes, HEADER_VERSION_OFFSET, FORMAT_VERSION);
        put_u64(&mut bytes, HEADER_EPOCH_OFFSET, self.epoch);
        put_u64(&mut bytes, HEADER_NUMBER_OFFSET, self.number);
        put_u64(&mut bytes, HEADER_FIRST_LSN_OFFSET, self.first_lsn);
        put_u64(&mut bytes, HEADER_SEGMENT_BYTES_OFFSET, self.segment_bytes);
        put_u32(&mut bytes, HEADER_PREV_CRC_OFFSET, self.prev_crc);
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        put_u32(&mut bytes, HEADER_CRC_OFFSET, crc);
        bytes
    }

    /// Decodes and checks a header's own consistency (not its place in the log).
    pub(crate) fn decode(bytes: &[u8]) -> Result<SegmentHeader, CorruptionReason> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(CorruptionReason::FileTooShort {
                given: bytes.len() as u64,
                limit: SEGMENT_HEADER_BYTES as u64,
            });
        }
        if bytes[HEADER_MAGIC_OFFSET..HEADER_VERSION_OFFSET] != SEGMENT_MAGIC {
            return Err(CorruptionReason::BadMagic);
        }
        let stored = get_u32(bytes, HEADER_CRC_OFFSET);
        let computed = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        if stored != computed {
            return Err(CorruptionReason::HeaderChecksum { stored, computed });
        }
        let version = get_u32(bytes, HEADER_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(CorruptionReason::UnsupportedVersion { found: version });
        }
        Ok(SegmentHeader {
            epoch: get_u64(bytes, HEADER_EPOCH_OFFSET),
            number: get_u64(bytes, HEADER_NUMBER_OFFSET),
            first_lsn: get_u64(bytes, HEADER_FIRST_LSN_OFFSET),
            segment_bytes: get_u64(bytes, HEADER_SEGMENT_BYTES_OFFSET),
            prev_crc: get_u32(bytes, HEADER_PREV_CRC_OFFSET),
        })
    }
}

// ---- Frames ---------------------------------------------------------------

const FRAME_LENGTH_OFFSET: usize = 0;
const FRAME_TYPE_OFFSET: usize = FRAME_LENGTH_OFFSET + 4;
const FRAME_KIND_OFFSET: usize = FRAME_TYPE_OFFSET + 1;
const FRAME_RESERVED_OFFSET: usize = FRAME_KIND_OFFSET + 1;
const FRAME_LSN_OFFSET: usize = FRAME_RESERVED_OFFSET + 2;
const FRAME_DURABLE_OFFSET: usize = FRAME_LSN_OFFSET + 8;
const FRAME_PREV_CRC_OFFSET: usize = FRAME_DURABLE_OFFSET + 8;
const FRAME_CRC_OFFSET: usize = FRAME_PREV_CRC_OFFSET + 4;
/// Bytes of a frame before its payload.
pub(crate) const FRAME_HEADER_BYTES: usize = FRAME_CRC_OFFSET + 4;
/// The leading bytes of a frame that are stored last, atomically.
pub(crate) const COMMIT_WORD_BYTES: usize = FRAME_LSN_OFFSET;
/// Bytes of the seal frame that ends every segment but the newest.
pub(crate) const SEAL_BYTES: usize = FRAME_HEADER_BYTES;
const _: () = assert!(COMMIT_WORD_BYTES == 8);
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Record = 1,
    Seal = 2,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Record),
            2 => Some(FrameKind::Seal),
            _ => None,
        }
    }
}

/// The fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) length: u32,
    pub(crate) record_type: u8,
    pub(crate) kind: FrameKind,
    pub(crate) lsn: Lsn,
    pub(crate) durable_mark: Lsn,
    pub(crate) prev_crc: u32,
    pub(crate) crc: u32,
}

/// A CRC state that has absorbed the log's epoch; every frame CRC starts here.
pub(crate) fn crc_seed(epoch: u64) -> crc32fast::Hasher {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher
}

impl FrameHeader {
    /// Encodes the header, computing the CRC from `payload_crc` (the seed after
    /// absorbing the payload). Returns the bytes with the CRC filled in.
    pub(crate) fn encode_sealed_crc(
        &mut self,
        payload_crc: &crc32fast::Hasher,
    ) -> [u8; FRAME_HEADER_BYTES] {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        put_u32(&mut bytes, FRAME_LENGTH_OFFSET, self.length);
        bytes[FRAME_TYPE_OFFSET] = self.record_type;
        bytes[FRAME_KIND_OFFSET] = self.kind as u8;
        put_u64(&mut bytes, FRAME_LSN_OFFSET, self.lsn);
        put_u64(&mut bytes, FRAME_DURABLE_OFFSET, self.durable_mark);
        put_u32(&mut bytes, FRAME_PREV_CRC_OFFSET, self.prev_crc);
        let mut hasher = payload_crc.clone();
        hasher.update(&bytes[..FRAME_CRC_OFFSET]);
        self.crc = hasher.finalize();
        put_u32(&mut bytes, FRAME_CRC_OFFSET, self.crc);
        bytes
    }
}

/// Splits a commit word back into (kind byte, payload length).
pub(crate) fn commit_word_fields(word: u64) -> (u8, u32) {
    let bytes = word.to_ne_bytes();
    (
        bytes[FRAME_KIND_OFFSET],
        get_u32(&bytes, FRAME_LENGTH_OFFSET),
    )
}

/// Reads (kind byte, payload length, LSN) from the first bytes of a frame
/// without validating anything; for skipping over known-good frames.
pub(crate) fn peek_frame(head: &[u8]) -> (u8, u32, Lsn) {
    (
        head[FRAME_KIND_OFFSET],
        get_u32(head, FRAME_LENGTH_OFFSET),
        get_u64(head, FRAME_LSN_OFFSET),
    )
}

/// Bytes a frame with `payload_bytes` of payload occupies, padding included.
pub(crate) fn frame_bytes(payload_bytes: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_bytes).next_multiple_of(FRAME_ALIGN_BYTES)
}

/// A frame that validated on its own (CRC, kind, bounds), not yet in the chain.
#[derive(Debug, Clone)]
pub(crate) struct ParsedFrame {
    pub(crate) header: FrameHeader,
    pub(crate) payload: Range<usize>,
    /// Offset just past this frame's padding.
    pub(crate) end: usize,
}

/// Why bytes at an offset are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameProblem {
    /// The commit word is zero: nothing was written here.
    Unwritten,
    /// The frame runs past the end of the bytes available.
    Truncated,
    BadKind(u8),
    BadLength(u32),
    Checksum {
        stored: u32,
        computed: u32,
    },
}

/// Parses the frame at `offset` of `segment`, checking kind, bounds and CRC.
/// `capacity` is the segment size the header promises (frames never cross
/// it even if the file is shorter).
pub(crate) fn parse_frame(
    segment: &[u8],
    capacity: usize,
    offset: usize,
    seed: &crc32fast::Hasher,
) -> Result<ParsedFrame, FrameProblem> {
    parse(segment, capacity, offset, Some(seed))
}

/// [`parse_frame`] without computing the CRC, for a frame whose CRC a
/// recovery scan of this same mapping has already checked (the log never
/// rewrites a complete frame): every other check still runs, and the stored
/// CRC is still returned for the chain check of the next frame.
pub(crate) fn parse_checked_frame(
    segment: &[u8],
    capacity: usize,
    offset: usize,
) -> Result<ParsedFrame, FrameProblem> {
    parse(segment, capacity, offset, None)
}

fn parse(
    segment: &[u8],
    capacity: usize,
    offset: usize,
    seed: Option<&crc32fast::Hasher>,
) -> Result<ParsedFrame, FrameProblem> {
    debug_assert!(offset.is_multiple_of(FRAME_ALIGN_BYTES));
    if offset + COMMIT_WORD_BYTES > segment.len() {
        return Err(FrameProblem::Truncated);
    }
    let head = &segment[offset..];
    if head[..COMMIT_WORD_BYTES].iter().all(|&b| b == 0) {
        return Err(FrameProblem::Unwritten);
    }
    let kind_byte = head[FRAME_KIND_OFFSET];
    let Some(kind) = FrameKind::from_byte(kind_byte) else {
        return Err(FrameProblem::BadKind(kind_byte));
    };
    let length = get_u32(head, FRAME_LENGTH_OFFSET);
    let end = offset as u64 + frame_bytes(length as usize) as u64;
    if end > capacity as u64 || (kind == FrameKind::Seal && length != 0) {
        return Err(FrameProblem::BadLength(length));
    }
    let payload = offset + FRAME_HEADER_BYTES..offset + FRAME_HEADER_BYTES + length as usize;
    if payload.end > segment.len() {
        return Err(FrameProblem::Truncated);
    }
    let stored = get_u32(head, FRAME_CRC_OFFSET);
    if let Some(seed) = seed {
        let mut hasher = seed.clone();
        hasher.update(&segment[payload.clone()]);
        hasher.update(&head[..FRAME_CRC_OFFSET]);
        let computed = hasher.finalize();
        if stored != computed {
            return Err(FrameProblem::Checksum { stored, computed });
        }
    }
    if head[FRAME_RESERVED_OFFSET..FRAME_LSN_OFFSET] != [0, 0] {
        return Err(FrameProblem::BadKind(kind_byte));
    }
    Ok(ParsedFrame {
        header: FrameHeader {
            length,
            record_type: head[FRAME_TYPE_OFFSET],
            kind,
            lsn: get_u64(head, FRAME_LSN_OFFSET),
            durable_mark: get_u64(head, FRAME_DURABLE_OFFSET),
            prev_crc: get_u32(head, FRAME_PREV_CRC_OFFSET),
            crc: stored,
        },
        payload,
        end: end as usize,
    })
}

// ---- Snapshots ------------------------------------------------------------

pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"RDMSNAP\n";

const SNAP_MAGIC_OFFSET: usize = 0;
const SNAP_VERSION_OFFSET: usize = SNAP_MAGIC_OFFSET + SNAPSHOT_MAGIC.len();
const SNAP_RESERVED_OFFSET: usize = SNAP_VERSION_OFFSET + 4;
const SNAP_EPOCH_OFFSET: usize = SNAP_RESERVED_OFFSET + 4;
const SNAP_LSN_OFFSET: usize = SNAP_EPOCH_OFFSET + 8;
const SNAP_BLOB_BYTES_OFFSET: usize = SNAP_LSN_OFFSET + 8;
const SNAP_CRC_OFFSET: usize = SNAP_BLOB_BYTES_OFFSET + 8;
const SNAP_RESERVED2_OFFSET: usize = SNAP_CRC_OFFSET + 4;
/// Bytes of a snapshot file before its blob.
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = SNAP_RESERVED2_OFFSET + 4;

/// Encodes a whole snapshot file.
pub(crate) fn encode_snapshot(epoch: u64, lsn: Lsn, blob: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; SNAPSHOT_HEADER_BYTES + blob.len()];
    bytes[SNAP_MAGIC_OFFSET..SNAP_VERSION_OFFSET].copy_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut bytes, SNAP_VERSION_OFFSET, FORMAT_VERSION);
    put_u64(&mut bytes, SNAP_EPOCH_OFFSET, epoch);
    put_u64(&mut bytes, SNAP_LSN_OFFSET, lsn);
    put_u64(&mut bytes, SNAP_BLOB_BYTES_OFFSET, blob.len() as u64);
    bytes[SNAPSHOT_HEADER_BYTES..].copy_from_slice(blob);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..SNAP_CRC_OFFSET]);
    hasher.update(blob);
    put_u32(&mut bytes, SNAP_CRC_OFFSET, hasher.finalize());
    bytes
}

/// Why a snapshot file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotProblem {
    BadMagic,
    UnsupportedVersion { found: u32 },
    Length { stored: u64, actual: u64 },
    Checksum { stored: u32, computed: u32 },
    LsnMismatch { name: Lsn, stored: Lsn },
    EpochMismatch { expected: u64, found: u64 },
}

impl std::fmt::Display for SnapshotProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotProblem::BadMagic => write!(f, "bad magic"),
            SnapshotProblem::UnsupportedVersion { found } => {
                write!(f, "unsupported format version {found}")
            }
            SnapshotProblem::Length { stored, actual } => {
                write!(f, "header says {stored} blob bytes, file holds {actual}")
            }
            SnapshotProblem::Checksum { stored, computed } => {
                write!(f, "checksum {stored:#010x} != computed {computed:#010x}")
            }
            SnapshotProblem::LsnMismatch { name, stored } => {
                write!(f, "file name says LSN {name}, header says {stored}")
            }
            SnapshotProblem::EpochMismatch { expected, found } => {
                write!(f, "epoch {found:#018x} is not the log's {expected:#018x}")
            }
        }
    }
}

/// Decodes a snapshot file; returns (epoch, lsn, blob range).
pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Lsn, Range<usize>), SnapshotProblem> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES
        || bytes[SNAP_MAGIC_OFFSET..SNAP_VERSION_OFFSET] != SNAPSHOT_MAGIC
    {
        return Err(SnapshotProblem::BadMagic);
    }
    let version = get_u32(bytes, SNAP_VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(SnapshotProblem::UnsupportedVersion { found: version });
    }
    let stored_len = get_u64(bytes, SNAP_BLOB_BYTES_OFFSET);
    let actual = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if stored_len != actual {
        return Err(SnapshotProblem::Length {
            stored: stored_len,
            actual,
        });
    }
    let blob = SNAPSHOT_HEADER_BYTES..bytes.len();
    let stored = get_u32(bytes, SNAP_CRC_OFFSET);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..SNAP_CRC_OFFSET]);
    hasher.update(&bytes[blob.clone()]);
    let computed = hasher.finalize();
    if stored != computed {
        return Err(SnapshotProblem::Checksum { stored, computed });
    }
    Ok((
        get_u64(bytes, SNAP_EPOCH_OFFSET),
        get_u64(bytes, SNAP_LSN_OFFSET),
        blob,
    ))
}

// ---- File names -----------------------------------------------------------

pub(crate) const SEGMENT_SUFFIX: &str = ".wal";
pub(crate) const SPARE_PREFIX: &str = "spare-";
pub(crate) const SNAPSHOT_PREFIX: &str = "snapshot-";
pub(crate) const SNAPSHOT_SUFFIX: &str = ".snap";
pub(crate) const SNAPSHOT_TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn spare_file_name(counter: u64) -> String {
    format!("{SPARE_PREFIX}{counter}{SEGMENT_SUFFIX}")
}

pub(crate) fn snapshot_file_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{lsn:020}{SNAPSHOT_SUFFIX}")
}

pub(crate) fn snapshot_temp_name(lsn: Lsn) -> String {
    format!("{SNAPSHOT_PREFIX}{lsn:020}{SNAPSHOT_TEMP_SUFFIX}")
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.wal` into its first LSN.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    parse_lsn_digits(digits)
}

/// Parses `snapshot-NNNNNNNNNNNNNNNNNNNN.snap` into its LSN.
pub(crate) fn parse_snapshot_name(name: &str) -> Option<Lsn> {
    let digits = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    parse_lsn_digits(digits)
}

fn parse_lsn_digits(digits: &str) -> Option<Lsn> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

// ---- Integer helpers: the one place persisted integers are converted --------

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn get_u64(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_document() {
        assert_eq!(HEADER_EPOCH_OFFSET, 16);
        assert_eq!(HEADER_FIRST_LSN_OFFSET, 32);
        assert_eq!(HEADER_CRC_OFFSET, 52);
        assert_eq!(FRAME_LSN_OFFSET, 8);
        assert_eq!(FRAME_DURABLE_OFFSET, 16);
        assert_eq!(FRAME_CRC_OFFSET, 28);
        assert_eq!(FRAME_HEADER_BYTES, 32);
        assert_eq!(SNAP_CRC_OFFSET, 40);
        assert_eq!(SNAPSHOT_HEADER_BYTES, 48);
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            epoch: 0x1234_5678_9abc_def0,
            number: 3,
            first_lsn: 77,
            segment_bytes: 1 << 20,
            prev_crc: 0xdead_beef,
        };
        let mut bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        bytes[HEADER_FIRST_LSN_OFFSET] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bytes),
            Err(CorruptionReason::HeaderChecksum { .. })
        ));
    }

    /// What parsing a (possibly damaged) frame should report.
    enum Expect {
        Valid,
        ChecksumMismatch,
        Problem(FrameProblem),
    }

    #[track_caller]
    fn check_frame(payload: &[u8], damage: Option<(usize, u8)>, expected: Expect) {
        let seed = crc_seed(42);
        let mut payload_crc = seed.clone();
        payload_crc.update(payload);
        let mut header = FrameHeader {
            length: payload.len() as u32,
            record_type: 7,
            kind: FrameKind::Record,
            lsn: 5,
            durable_mark: 3,
            prev_crc: 9,
            crc: 0,
        };
        let head = header.encode_sealed_crc(&payload_crc);
        let mut segment = vec![0u8; 4096];
        segment[64..64 + FRAME_HEADER_BYTES].copy_from_slice(&head);
        segment[64 + FRAME_HEADER_BYTES..64 + FRAME_HEADER_BYTES + payload.len()]
            .copy_from_slice(payload);
        if let Some((at, mask)) = damage {
            segment[64 + at] ^= mask;
        }
        let parsed = parse_frame(&segment, segment.len(), 64, &seed);
        match expected {
            Expect::Valid => {
                let parsed = parsed.expect("frame parses");
                assert_eq!(parsed.header, header);
                assert_eq!(&segment[parsed.payload], payload);
                assert_eq!(parsed.end, 64 + frame_bytes(payload.len()));
            }
            Expect::ChecksumMismatch => {
                assert!(
                    matches!(parsed, Err(FrameProblem::Checksum { .. })),
                    "{parsed:?}"
                )
            }
            Expect::Problem(problem) => assert_eq!(parsed.map(|_| ()), Err(problem)),
        }
    }

    #[test]
    fn frames_parse_and_damage_is_caught() {
        check_frame(b"", None, Expect::Valid);
        check_frame(b"hello", None, Expect::Valid);
        check_frame(&[0xab; 300], None, Expect::Valid);
        check_frame(
            b"hello",
            Some((FRAME_HEADER_BYTES + 1, 0x10)),
            Expect::ChecksumMismatch,
        );
        check_frame(
            b"hello",
            Some((FRAME_LSN_OFFSET, 0x01)),
            Expect::ChecksumMismatch,
        );
        check_frame(
            b"hello",
            Some((FRAME_KIND_OFFSET, 0x01)),
            Expect::Problem(FrameProblem::BadKind(0)),
        );
        check_frame(
            b"hello",
            Some((FRAME_LENGTH_OFFSET + 3, 0x40)),
            Expect::Problem(FrameProblem::BadLength(0x4000_0005)),
        );
    }
}
