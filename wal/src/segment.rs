//! One mapped segment file and the raw reads and writes into it.

use std::path::PathBuf;

use memmap2::Mmap;

use crate::format::{COMMIT_WORD_BYTES, FRAME_ALIGN_BYTES, Lsn};
use crate::publish::FrameBytes;
use crate::storage::SegmentMap;
use crate::sync::{load_commit_word, store_commit_word};

/// The bytes of a segment: writable for the live tail, read-only otherwise.
#[derive(Debug)]
pub(crate) enum SegmentBytes {
    Writable(Box<dyn SegmentMap>),
    ReadOnly(Mmap),
}

/// A segment that is part of the log.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) number: u64,
    pub(crate) first_lsn: Lsn,
    /// The segment's final name (`LSN.wal`), also while it is still a spare
    /// waiting for the flusher to rename it.
    pub(crate) path: PathBuf,
    /// Frames never cross this, even if the file is longer.
    pub(crate) capacity: usize,
    bytes: SegmentBytes,
}

impl Segment {
    pub(crate) fn new(
        number: u64,
        first_lsn: Lsn,
        path: PathBuf,
        capacity: usize,
        bytes: SegmentBytes,
    ) -> Segment {
        let segment = Segment {
            number,
            first_lsn,
            path,
            capacity,
            bytes,
        };
        assert!(segment.len() >= capacity || matches!(segment.bytes, SegmentBytes::ReadOnly(_)));
        assert!((segment.ptr() as usize).is_multiple_of(FRAME_ALIGN_BYTES));
        segment
    }

    fn ptr(&self) -> *mut u8 {
        match &self.bytes {
            SegmentBytes::Writable(map) => map.as_ptr(),
            SegmentBytes::ReadOnly(map) => map.as_ptr().cast_mut(),
        }
    }

    /// Bytes actually mapped.
    pub(crate) fn len(&self) -> usize {
        match &self.bytes {
            SegmentBytes::Writable(map) => map.len(),
            SegmentBytes::ReadOnly(map) => map.len(),
        }
    }

    pub(crate) fn map(&self) -> Option<&dyn SegmentMap> {
        match &self.bytes {
            SegmentBytes::Writable(map) => Some(map.as_ref()),
            SegmentBytes::ReadOnly(_) => None,
        }
    }

    /// Copies `bytes` to `offset` with plain stores.
    ///
    /// # Safety
    /// The segment must be writable, the range in bounds, and no other thread
    /// may access it until this call's effects are published (by the tail
    /// lock or a later commit word store).
    pub(crate) unsafe fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(matches!(self.bytes, SegmentBytes::Writable(_)));
        assert!(offset + bytes.len() <= self.len());
        // SAFETY: in bounds (asserted), writable mapping, and exclusive access
        // to the range is guaranteed by the caller.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr().add(offset), bytes.len())
        };
    }

    /// The commit word at `offset`; zero while the frame is not written.
    pub(crate) fn commit_word(&self, offset: usize) -> u64 {
        assert!(
            offset.is_multiple_of(FRAME_ALIGN_BYTES) && offset + COMMIT_WORD_BYTES <= self.len()
        );
        // SAFETY: aligned and in bounds (asserted); writers store it atomically.
        unsafe { load_commit_word(self.ptr().add(offset)) }
    }

    /// Borrows `offset..offset + len`.
    ///
    /// # Safety
    /// No thread may write the range while the borrow lives: it must be part
    /// of frames that are complete (durable, or scanned before any writer).
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len());
        // SAFETY: in bounds (asserted), mapped for the segment's lifetime, and
        // immutable for the borrow by the caller's guarantee.
        unsafe { std::slice::from_raw_parts(self.ptr().add(offset), len) }
    }
}

/// Frames are written into the mapping; `publish` decides the order.
impl FrameBytes for Segment {
    unsafe fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        // SAFETY: the trait's contract is the inherent method's.
        unsafe { Segment::write_bytes(self, offset, bytes) }
    }

    unsafe fn store_commit_word(&self, offset: usize, word: u64) {
        assert!(
            offset.is_multiple_of(FRAME_ALIGN_BYTES) && offset + COMMIT_WORD_BYTES <= self.len()
        );
        // SAFETY: 8-aligned (frames are, and the mapping is page-aligned), in
        // bounds (asserted), and readers access commit words only atomically
        // until the frame is durable.
        unsafe { store_commit_word(self.ptr().add(offset), word) };
    }

    fn commit_word(&self, offset: usize) -> u64 {
        Segment::commit_word(self, offset)
    }
}
