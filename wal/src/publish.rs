//! The append protocol without its I/O: reserving an LSN and bytes under the
//! tail lock, writing a frame with its commit word last, finding how far
//! frames are completely written, and waking the flusher.
//!
//! `wal` runs these on mapped segments, whose bytes loom cannot see. They
//! reach the bytes only through [`FrameBytes`] and take every lock and
//! atomic from `sync`, so the loom models at the bottom of this file run the
//! same code on an in-memory [`FrameBytes`] of loom cells and atomics, and
//! check the protocol together with `commit`'s durable advance and wakeup.

use crate::format::{
    COMMIT_WORD_BYTES, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, FrameKind, Lsn, SEAL_BYTES,
    commit_word_fields, frame_bytes,
};
use crate::sync::{Condvar, Mutex, MutexGuard, backoff};

/// Where frames are written: a mapped segment, or a model's words.
pub(crate) trait FrameBytes {
    /// Copies `bytes` to `offset` with plain stores.
    ///
    /// # Safety
    /// The range must be in bounds, reserved for the caller alone, and read
    /// by no other thread until a commit word store publishes it.
    unsafe fn write_bytes(&self, offset: usize, bytes: &[u8]);

    /// Stores the commit word of the frame at `offset`, with release
    /// ordering: whoever loads it also sees every byte written before.
    ///
    /// # Safety
    /// `offset` must start a frame reserved for the caller alone, 8-byte
    /// aligned and in bounds.
    unsafe fn store_commit_word(&self, offset: usize, word: u64);

    /// Loads the commit word at `offset` with acquire ordering; zero while
    /// the frame there is not written.
    fn commit_word(&self, offset: usize) -> u64;
}

/// The append position. It lives in the tail and is read and written only
/// under the tail lock (see [`reserve`]).
#[derive(Debug)]
pub(crate) struct Position {
    /// The LSN the next reservation gets.
    pub(crate) next_lsn: Lsn,
    /// The next free byte of the current segment.
    pub(crate) offset: usize,
    /// An append has signalled the flusher since the flusher last took a
    /// target, so later appends need not signal again.
    flush_requested: bool,
}

/// What one append reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reserved {
    pub(crate) lsn: Lsn,
    /// Where the frame starts in the current segment.
    pub(crate) offset: usize,
    /// This append must signal the flusher once its frame is written.
    pub(crate) signal: bool,
}

impl Position {
    pub(crate) fn new(next_lsn: Lsn, offset: usize) -> Position {
        Position {
            next_lsn,
            offset,
            flush_requested: false,
        }
    }

    fn take(&mut self, bytes: usize) -> Reserved {
        let reserved = Reserved {
            lsn: self.next_lsn,
            offset: self.offset,
            signal: !std::mem::replace(&mut self.flush_requested, true),
        };
        self.next_lsn += 1;
        self.offset += bytes;
        reserved
    }

    /// The flusher's next target: the last reserved LSN and the end of its
    /// frame. Appends after this signal the flusher again.
    pub(crate) fn flush_target(&mut self) -> (Lsn, usize) {
        self.flush_requested = false;
        (self.next_lsn - 1, self.offset)
    }
}

impl AsMut<Position> for Position {
    fn as_mut(&mut self) -> &mut Position {
        self
    }
}

/// Reserves the next LSN and `bytes` at the tail, holding `guard` (a lock
/// of `lock`) throughout, so LSNs are unique and dense and frames never
/// overlap. Returns the guard still held.
///
/// The real protocol never lets go of `lock`; it is a parameter only so
/// that a loom mutation can.
pub(crate) fn reserve<'a, T: AsMut<Position>>(
    lock: &'a Mutex<T>,
    mut guard: MutexGuard<'a, T>,
    bytes: usize,
) -> (MutexGuard<'a, T>, Reserved) {
    #[cfg(loom)]
    if crate::mutations::on(crate::mutations::Mutation::ReserveCheckThenIncrement) {
        return reserve_check_then_increment(lock, guard, bytes);
    }
    let _ = lock;
    let reserved = guard.as_mut().take(bytes);
    (guard, reserved)
}

/// [`Mutation::ReserveCheckThenIncrement`](crate::mutations::Mutation):
/// reads the position in one critical section and advances it in another.
#[cfg(loom)]
fn reserve_check_then_increment<'a, T: AsMut<Position>>(
    lock: &'a Mutex<T>,
    mut guard: MutexGuard<'a, T>,
    bytes: usize,
) -> (MutexGuard<'a, T>, Reserved) {
    let (lsn, offset) = {
        let position = guard.as_mut();
        (position.next_lsn, position.offset)
    };
    drop(guard);
    let mut guard = lock.lock();
    let position = guard.as_mut();
    position.next_lsn = lsn + 1;
    position.offset = offset + bytes;
    let signal = !std::mem::replace(&mut position.flush_requested, true);
    (
        guard,
        Reserved {
            lsn,
            offset,
            signal,
        },
    )
}

/// Writes a frame: header tail and payload first, then the commit word, so
/// whoever sees the commit word sees the whole frame.
///
/// # Safety
/// The range `offset..offset + FRAME_HEADER_BYTES + payload.len()` must be
/// in bounds, reserved for this caller alone, and still zero.
pub(crate) unsafe fn write_frame<B: FrameBytes + ?Sized>(
    bytes: &B,
    offset: usize,
    header: &[u8; FRAME_HEADER_BYTES],
    payload: &[u8],
) {
    assert!(offset.is_multiple_of(FRAME_ALIGN_BYTES));
    let word: [u8; COMMIT_WORD_BYTES] = header[..COMMIT_WORD_BYTES].try_into().expect("8 bytes");
    let word = u64::from_ne_bytes(word);
    #[cfg(loom)]
    if crate::mutations::on(crate::mutations::Mutation::CommitWordFirst) {
        // SAFETY: as below; the order is the bug.
        unsafe {
            bytes.store_commit_word(offset, word);
            bytes.write_bytes(offset + COMMIT_WORD_BYTES, &header[COMMIT_WORD_BYTES..]);
            bytes.write_bytes(offset + FRAME_HEADER_BYTES, payload);
        }
        return;
    }
    // SAFETY: the caller reserved the whole frame range for us.
    unsafe {
        bytes.write_bytes(offset + COMMIT_WORD_BYTES, &header[COMMIT_WORD_BYTES..]);
        bytes.write_bytes(offset + FRAME_HEADER_BYTES, payload);
    }
    assert_ne!(word, 0, "a written frame's commit word is never zero");
    // SAFETY: the frame at `offset` is ours (caller), aligned (asserted).
    unsafe { bytes.store_commit_word(offset, word) };
}

/// How far [`walk_written`] found frames completely written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Just past the last frame walked (a seal's, if `sealed`).
    pub(crate) offset: usize,
    /// The walk ended on a seal: the segment has no more frames.
    pub(crate) sealed: bool,
}

/// Follows frames from `from` up to `limit` or a seal, waiting for each
/// frame's commit word: every byte before the returned offset is written
/// and visible to the caller, so it may be synced and declared durable.
pub(crate) fn walk_written<B: FrameBytes + ?Sized>(bytes: &B, from: usize, limit: usize) -> Walked {
    let mut offset = from;
    while offset < limit {
        #[cfg(loom)]
        if crate::mutations::on(crate::mutations::Mutation::FlusherSkipsWait)
            && bytes.commit_word(offset) == 0
        {
            break;
        }
        let word = wait_for_commit_word(bytes, offset);
        let (kind, length) = commit_word_fields(word);
        if kind == FrameKind::Seal as u8 {
            return Walked {
                offset: offset + SEAL_BYTES,
                sealed: true,
            };
        }
        assert_eq!(kind, FrameKind::Record as u8, "frame kind at {offset}");
        offset += frame_bytes(length as usize);
    }
    Walked {
        offset,
        sealed: false,
    }
}

/// Waits for an appender that reserved the frame at `offset` to finish
/// copying it. Appenders never block while copying, so this ends soon.
fn wait_for_commit_word<B: FrameBytes + ?Sized>(bytes: &B, offset: usize) -> u64 {
    let mut round = 0u32;
    loop {
        let word = bytes.commit_word(offset);
        if word != 0 {
            return word;
        }
        backoff(round);
        round = round.saturating_add(1);
    }
}

/// Wakes the flusher: appends request a flush, closing requests shutdown.
#[derive(Debug)]
pub(crate) struct FlushSignal {
    state: Mutex<Signal>,
    /// The flusher sleeps here until `state` has something for it.
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Signal {
    requested: bool,
    shutdown: bool,
}

impl FlushSignal {
    pub(crate) fn new() -> FlushSignal {
        FlushSignal {
            state: Mutex::new(Signal::default()),
            wake: Condvar::new(),
        }
    }

    /// Asks for a flush of everything reserved so far.
    pub(crate) fn request(&self) {
        self.state.lock().requested = true;
        self.wake.notify_one();
    }

    /// Asks the flusher to flush once more and stop.
    pub(crate) fn shut_down(&self) {
        self.state.lock().shutdown = true;
        self.wake.notify_one();
    }

    /// Sleeps until a flush or shutdown is requested and takes the request.
    /// Returns whether to stop after this round.
    pub(crate) fn wait(&self) -> bool {
        let mut signal = self.state.lock();
        while !signal.requested && !signal.shutdown {
            signal = self.wake.wait(signal);
        }
        signal.requested = false;
        signal.shutdown
    }
}

/// Model checks of the append path: two appenders and the flusher on a
/// two-frame in-memory segment, with a blocking and an async waiter. Run
/// with `RUSTFLAGS="--cfg loom" cargo test -p redeem-wal --lib loom` (or
/// `loom-tests/run.sh`).
///
/// The appenders and the flusher below are `Wal::append` and the flusher's
/// loop with the I/O taken out: every step that orders anything (reserve,
/// `write_frame`, `FlushSignal`, `flush_target`, `walk_written`,
/// `Commit::advance` and the waits) is the real code.
#[cfg(all(test, loom))]
mod loom_tests {
    use std::ops::Range;

    use loom::cell::UnsafeCell;

    use super::*;
    use crate::commit::{Commit, WaitDurable};
    use crate::format::{FrameHeader, crc_seed, parse_frame};
    use crate::mutations::Mutation;
    use crate::mutations::harness::{block_on, check, check_caught};
    use crate::sync::{AtomicU64, Ordering, spawn};
    // std's, not loom's: a loom `Arc` dropped while a model unwinds from
    // the failure loom found panics again and aborts the test binary.
    use std::sync::Arc;

    const PAYLOAD_BYTES: usize = 8;
    const APPENDERS: usize = 2;

    /// An in-memory segment. Each 8-byte word is a loom atomic where a
    /// commit word goes and a loom cell elsewhere, so loom sees the
    /// release/acquire pairing a mapping hides from it and flags any plain
    /// read or write that races.
    struct Words {
        words: Vec<Word>,
    }

    struct Word {
        commit: AtomicU64,
        plain: UnsafeCell<[u8; 8]>,
    }

    // SAFETY: threads share the cells only through `FrameBytes`, whose
    // contract (one writer per reserved frame, reads after its commit word)
    // is what the models check; loom reports any access that breaks it.
    unsafe impl Sync for Words {}

    impl Words {
        fn new(bytes: usize) -> Words {
            let words = (0..bytes / 8)
                .map(|_| Word {
                    commit: AtomicU64::new(0),
                    plain: UnsafeCell::new([0; 8]),
                })
                .collect();
            Words { words }
        }

        /// What a sync of `range` hands the disk: loom checks that every
        /// plain word read happens after it was written.
        fn read(&self, range: Range<usize>) -> Vec<u8> {
            range
                .step_by(8)
                .flat_map(|offset| {
                    let word = &self.words[offset / 8];
                    // Acquire: as `commit_word`; a frame's first word is
                    // only ever stored atomically, the others only plainly.
                    match word.commit.load(Ordering::Acquire) {
                        0 => word.plain.with(|bytes| {
                            // SAFETY: loom checks this read against writes.
                            unsafe { *bytes }
                        }),
                        commit => commit.to_ne_bytes(),
                    }
                })
                .collect()
        }
    }

    impl FrameBytes for Words {
        unsafe fn write_bytes(&self, offset: usize, bytes: &[u8]) {
            assert!(offset.is_multiple_of(8));
            for (index, chunk) in bytes.chunks(8).enumerate() {
                self.words[offset / 8 + index].plain.with_mut(|word| {
                    // SAFETY: loom checks this write against other accesses.
                    unsafe { (&mut *word)[..chunk.len()].copy_from_slice(chunk) }
                });
            }
        }

        unsafe fn store_commit_word(&self, offset: usize, word: u64) {
            // Release: as `sync::store_commit_word` on a mapping.
            self.words[offset / 8].commit.store(word, Ordering::Release);
        }

        fn commit_word(&self, offset: usize) -> u64 {
            // Acquire: as `sync::load_commit_word` on a mapping.
            self.words[offset / 8].commit.load(Ordering::Acquire)
        }
    }

    /// The parts of `Wal`'s shared state that take part in appending.
    struct Log {
        tail: Mutex<Position>,
        bytes: Words,
        commit: Commit,
        signal: FlushSignal,
        seed: crc32fast::Hasher,
    }

    impl Log {
        fn new() -> Log {
            Log {
                tail: Mutex::new(Position::new(1, 0)),
                bytes: Words::new(APPENDERS * frame_bytes(PAYLOAD_BYTES)),
                commit: Commit::new(0),
                signal: FlushSignal::new(),
                seed: crc_seed(7),
            }
        }

        /// `Wal::append` of a record whose payload is its own LSN.
        fn append(&self) -> Lsn {
            let bytes = frame_bytes(PAYLOAD_BYTES);
            let tail = self.tail.lock();
            let (tail, reserved) = reserve(&self.tail, tail, bytes);
            let lsn = reserved.lsn;
            let payload = lsn.to_le_bytes();
            let mut payload_crc = self.seed.clone();
            payload_crc.update(&payload);
            let mut header = FrameHeader {
                length: PAYLOAD_BYTES as u32,
                record_type: 1,
                kind: FrameKind::Record,
                lsn,
                durable_mark: self.commit.durable(),
                prev_crc: 0,
                crc: 0,
            };
            let head = header.encode_sealed_crc(&payload_crc);
            self.commit.set_last(lsn);
            drop(tail);
            // SAFETY: reserved for this call alone; the words start zero.
            unsafe { write_frame(&self.bytes, reserved.offset, &head, &payload) };
            if reserved.signal {
                self.signal.request();
            }
            lsn
        }

        /// The flusher's loop: wait for a signal, take a target, walk the
        /// frames up to it, "sync" them to `disk`, advance.
        fn flusher(&self) {
            let mut disk = Vec::new();
            loop {
                let shutdown = self.signal.wait();
                let (target, end) = self.tail.lock().flush_target();
                if target > self.commit.durable() {
                    let walked = walk_written(&self.bytes, disk.len(), end);
                    assert!(!walked.sealed);
                    disk.extend(self.bytes.read(disk.len()..walked.offset));
                    check_on_disk(&disk, target, &self.seed);
                    self.commit.advance(target);
                }
                if shutdown {
                    break;
                }
            }
            self.commit.close();
        }
    }

    /// The property the flusher's walk exists for: every record up to the
    /// LSN about to be declared durable is on the disk, whole, with dense
    /// LSNs from 1.
    #[track_caller]
    fn check_on_disk(disk: &[u8], target: Lsn, seed: &crc32fast::Hasher) {
        let (mut offset, mut last) = (0, 0);
        while offset < disk.len() {
            let frame = parse_frame(disk, disk.len(), offset, seed)
                .unwrap_or_else(|problem| panic!("synced frame at {offset}: {problem:?}"));
            assert_eq!(frame.header.lsn, last + 1, "LSNs on disk are dense");
            assert_eq!(disk[frame.payload], frame.header.lsn.to_le_bytes());
            (offset, last) = (frame.end, frame.header.lsn);
        }
        assert!(
            last >= target,
            "durable LSN {target} passes the last whole record on disk, {last}"
        );
    }

    /// Two appenders (one here, one spawned) and the flusher. The spawned
    /// appender then blocks on its LSN, this one awaits its LSN as a
    /// future; both must be woken, or loom reports a deadlock.
    fn appenders_and_flusher() {
        let log = Arc::new(Log::new());
        let flusher = {
            let log = log.clone();
            spawn(move || log.flusher())
        };
        let other = {
            let log = log.clone();
            spawn(move || {
                let lsn = log.append();
                assert_eq!(log.commit.wait(lsn), Ok(()));
                lsn
            })
        };
        let mine = log.append();
        let waited = block_on(WaitDurable {
            commit: &log.commit,
            lsn: mine,
            id: None,
        });
        assert_eq!(waited, Ok(()));
        let theirs = other.join().unwrap();
        let mut lsns = [mine, theirs];
        lsns.sort();
        assert_eq!(lsns, [1, 2], "LSNs are unique and dense");
        log.signal.shut_down();
        flusher.join().unwrap();
        assert_eq!(log.commit.durable(), 2);
    }

    #[test]
    fn appenders_and_flusher_never_pass_an_incomplete_record() {
        check("append_flush", appenders_and_flusher);
    }

    #[test]
    fn loom_catches_a_reservation_in_two_critical_sections() {
        check_caught(
            "append_flush",
            Mutation::ReserveCheckThenIncrement,
            appenders_and_flusher,
        );
    }

    #[test]
    fn loom_catches_a_commit_word_stored_first() {
        check_caught(
            "append_flush",
            Mutation::CommitWordFirst,
            appenders_and_flusher,
        );
    }

    #[test]
    fn loom_catches_a_flusher_that_does_not_wait() {
        check_caught(
            "append_flush",
            Mutation::FlusherSkipsWait,
            appenders_and_flusher,
        );
    }

    #[test]
    fn loom_catches_a_lost_wakeup_of_the_append_path() {
        check_caught(
            "append_flush",
            Mutation::DurableStoreOutsideLock,
            appenders_and_flusher,
        );
        check_caught(
            "append_flush",
            Mutation::WakeBeforeDurableStore,
            appenders_and_flusher,
        );
    }
}
