//! Replay: iterating records in LSN order over mapped segments.

use crate::error::{Corruption, CorruptionReason, ReadError};
use crate::format::{
    FRAME_HEADER_BYTES, FrameKind, Lsn, SEGMENT_HEADER_BYTES, frame_bytes, parse_checked_frame,
    parse_frame, peek_frame,
};
use crate::segment::Segment;
use crate::sync::Arc;

/// A record borrowed from the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub lsn: Lsn,
    pub record_type: u8,
    pub payload: &'a [u8],
}

impl RecordRef<'_> {
    pub fn to_owned(&self) -> Record {
        Record {
            lsn: self.lsn,
            record_type: self.record_type,
            payload: self.payload.to_vec(),
        }
    }
}

/// An owned record, as the [`Iterator`] impl of [`Records`] yields them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub record_type: u8,
    pub payload: Vec<u8>,
}

/// Records from some LSN through a fixed last LSN, each checked again
/// (kind, length, chain, sequence) as it is read, and its CRC too unless
/// the recovery scan that produced these mappings has checked it already
/// (records through `crc_checked_through`: the log never rewrites a complete
/// frame, so computing it again would only repeat the scan's answer).
///
/// [`Records::next_record`] lends each payload from the mapping without
/// copying; the `Iterator` impl copies it into a [`Record`]. The segments
/// stay mapped while this exists, even if they are removed meanwhile.
#[derive(Debug)]
pub struct Records {
    segments: Vec<Arc<Segment>>,
    index: usize,
    offset: usize,
    next_lsn: Lsn,
    /// Last LSN to yield; never read past it (later bytes may be in flight).
    through: Lsn,
    /// CRC of the record before `next_lsn`, once known.
    prev_crc: Option<u32>,
    seed: crc32fast::Hasher,
    /// Records up to this LSN had their CRC checked by the recovery scan of
    /// these same mappings; only later ones (appended since) compute it.
    crc_checked_through: Lsn,
    failed: bool,
}

/// Where a reader stopped, so that a later read from there need not walk
/// its segment's frames from the beginning (a follower of the log, such as
/// a webhook worker, reads from near the end again and again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPosition {
    /// The first LSN of the segment the reader was in: names the segment.
    segment_first_lsn: Lsn,
    /// The byte offset of the next frame in that segment.
    offset: usize,
    /// The LSN of that frame's record.
    next_lsn: Lsn,
}

impl Records {
    /// Where the next record would be read from.
    pub fn position(&self) -> ReadPosition {
        ReadPosition {
            segment_first_lsn: self.segments[self.index].first_lsn,
            offset: self.offset,
            next_lsn: self.next_lsn,
        }
    }

    pub(crate) fn new(
        segments: Vec<Arc<Segment>>,
        from: Lsn,
        through: Lsn,
        seed: crc32fast::Hasher,
        crc_checked_through: Lsn,
        hint: Option<ReadPosition>,
    ) -> Result<Records, ReadError> {
        let from = from.max(1);
        let first = segments.first().map_or(1, |s| s.first_lsn);
        let mut records = Records {
            index: 0,
            offset: SEGMENT_HEADER_BYTES,
            next_lsn: from,
            through,
            prev_crc: None,
            seed,
            crc_checked_through,
            failed: false,
            segments,
        };
        if from > through {
            return Ok(records);
        }
        if from < first {
            return Err(ReadError::Removed { given: from, first });
        }
        records.index = records
            .segments
            .iter()
            .rposition(|s| s.first_lsn <= from)
            .expect("from >= first");
        // Skip the frames before `from`: they are durable, so their headers
        // can be trusted for lengths; the records yielded are fully checked.
        let segment = &records.segments[records.index];
        let mut lsn = segment.first_lsn;
        // A position in the same segment at or before `from` was reached by
        // a reader that checked every frame up to it: start there.
        if let Some(hint) = hint
            && hint.segment_first_lsn == segment.first_lsn
            && (lsn..=from).contains(&hint.next_lsn)
        {
            lsn = hint.next_lsn;
            records.offset = hint.offset;
        }
        while lsn < from {
            let (kind, length, found) = records.peek(records.index, records.offset)?;
            if kind != FrameKind::Record as u8 || found != lsn {
                return Err(records.corrupt(CorruptionReason::LsnOutOfSequence {
                    expected: lsn,
                    found,
                }));
            }
            records.offset += frame_bytes(length as usize);
            lsn += 1;
        }
        Ok(records)
    }

    fn corrupt(&self, reason: CorruptionReason) -> ReadError {
        ReadError::Corrupt(Corruption {
            segment: self.segments[self.index].path.clone(),
            offset: self.offset as u64,
            lsn: self.next_lsn,
            reason,
        })
    }

    fn peek(&self, index: usize, offset: usize) -> Result<(u8, u32, Lsn), ReadError> {
        let segment = &self.segments[index];
        if offset + FRAME_HEADER_BYTES > segment.len().min(segment.capacity) {
            return Err(self.corrupt(CorruptionReason::Truncated));
        }
        // SAFETY: frames up to `through` are complete and never rewritten.
        let head = unsafe { segment.slice(offset, FRAME_HEADER_BYTES) };
        Ok(peek_frame(head))
    }

    /// The next record, borrowed from the mapping.
    pub fn next_record(&mut self) -> Option<Result<RecordRef<'_>, ReadError>> {
        loop {
            if self.failed || self.next_lsn > self.through {
                return None;
            }
            match self.step() {
                Ok(None) => continue,
                Ok(Some((payload_offset, length, record_type))) => {
                    let segment = &self.segments[self.index];
                    // SAFETY: the frame is complete and durable (checked in
                    // `step`) and never rewritten while mapped.
                    let payload = unsafe { segment.slice(payload_offset, length) };
                    return Some(Ok(RecordRef {
                        lsn: self.next_lsn - 1,
                        record_type,
                        payload,
                    }));
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Validates the frame at the cursor and moves past it. `Ok(None)` after
    /// crossing a seal into the next segment.
    fn step(&mut self) -> Result<Option<(usize, usize, u8)>, ReadError> {
        let (_, length, _) = self.peek(self.index, self.offset)?;
        let segment = &self.segments[self.index];
        let room = segment.len().min(segment.capacity) - self.offset;
        let span = FRAME_HEADER_BYTES.saturating_add(length as usize);
        if span > room {
            return Err(self.corrupt(CorruptionReason::BadLength(length)));
        }
        // SAFETY: as in `peek`; the span is in bounds (checked above).
        let bytes = unsafe { segment.slice(self.offset, span) };
        let capacity = segment.capacity - self.offset;
        let frame = if self.next_lsn <= self.crc_checked_through {
            parse_checked_frame(bytes, capacity, 0)
        } else {
            parse_frame(bytes, capacity, 0, &self.seed)
        }
        .map_err(|problem| self.corrupt(problem.into()))?;
        if frame.header.lsn != self.next_lsn {
            return Err(self.corrupt(CorruptionReason::LsnOutOfSequence {
                expected: self.next_lsn,
                found: frame.header.lsn,
            }));
        }
        if let Some(expected) = self.prev_crc
            && frame.header.prev_crc != expected
        {
            return Err(self.corrupt(CorruptionReason::ChainBroken {
                expected,
                found: frame.header.prev_crc,
            }));
        }
        match frame.header.kind {
            FrameKind::Seal => {
                let Some(next) = self.segments.get(self.index + 1) else {
                    return Err(self.corrupt(CorruptionReason::Truncated));
                };
                if next.first_lsn != self.next_lsn {
                    return Err(self.corrupt(CorruptionReason::FirstLsn {
                        expected: self.next_lsn,
                        found: next.first_lsn,
                    }));
                }
                self.index += 1;
                self.offset = SEGMENT_HEADER_BYTES;
                Ok(None)
            }
            FrameKind::Record => {
                let payload_offset = self.offset + frame.payload.start;
                self.offset += frame.end;
                self.prev_crc = Some(frame.header.crc);
                self.next_lsn += 1;
                Ok(Some((
                    payload_offset,
                    length as usize,
                    frame.header.record_type,
                )))
            }
        }
    }
}

impl Iterator for Records {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().map(|r| r.map(|r| r.to_owned()))
    }
}
