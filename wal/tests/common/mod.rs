//! Helpers shared by the integration tests: small logs, deterministic
//! payloads, a fault-injecting `Storage`, and a minimal `block_on`.
#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use redeem_wal::{Options, OsStorage, Record, SegmentMap, Storage, SyncMode, Wal};

/// Small segments so tests roll over often.
pub const TEST_SEGMENT_BYTES: u64 = 64 << 10;
pub const TEST_RECORD_BYTES_MAX: u32 = 4096;
/// Bytes of a segment header and of a frame header (docs/wal-format.md).
pub const SEGMENT_HEADER_BYTES: u64 = 64;
pub const FRAME_HEADER_BYTES: u64 = 32;

pub fn small_options() -> Options {
    Options {
        segment_bytes: TEST_SEGMENT_BYTES,
        sync: SyncMode::Always,
        record_bytes_max: Some(TEST_RECORD_BYTES_MAX),
        storage: Box::new(OsStorage),
        ..Options::default()
    }
}

pub fn options_with(storage: Box<dyn Storage>) -> Options {
    Options {
        storage,
        ..small_options()
    }
}

/// Bytes a frame with `len` payload bytes occupies (8-byte aligned).
pub fn frame_bytes(len: u64) -> u64 {
    (FRAME_HEADER_BYTES + len).next_multiple_of(8)
}

/// A payload that identifies `key` and has `len` bytes, so a misplaced or
/// damaged record never compares equal.
pub fn payload(key: u64, len: usize) -> Vec<u8> {
    let mut state = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub fn all_records(wal: &Wal) -> Vec<Record> {
    wal.read_from(1)
        .expect("read")
        .map(|r| r.expect("valid record"))
        .collect()
}

/// The path of the only `.wal` segment, or the newest if `newest`.
pub fn segment_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.ends_with(".wal") && !name.starts_with("spare-")
        })
        .collect();
    paths.sort();
    paths
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Switches that make [`FaultyStorage`] fail.
#[derive(Debug, Default)]
pub struct Faults {
    /// Every `msync` fails with EIO.
    pub fail_sync: AtomicBool,
    /// Creating or growing a segment fails with ENOSPC.
    pub no_space: AtomicBool,
    pub syncs: AtomicU64,
}

/// [`OsStorage`] with switchable failures.
#[derive(Debug)]
pub struct FaultyStorage {
    pub faults: Arc<Faults>,
}

impl FaultyStorage {
    pub fn new() -> (FaultyStorage, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (
            FaultyStorage {
                faults: faults.clone(),
            },
            faults,
        )
    }
}

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

#[derive(Debug)]
struct FaultyMap {
    inner: Box<dyn SegmentMap>,
    faults: Arc<Faults>,
}

// SAFETY: delegates the pointer and length of a valid mapping unchanged.
unsafe impl SegmentMap for FaultyMap {
    fn as_ptr(&self) -> *mut u8 {
        self.inner.as_ptr()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
        self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.inner.sync(offset, len)
    }
}

impl Storage for FaultyStorage {
    fn create_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        if self.faults.no_space.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let inner = OsStorage.create_segment(path, bytes)?;
        Ok(Box::new(FaultyMap {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        let inner = OsStorage.open_segment(path, bytes)?;
        Ok(Box::new(FaultyMap {
            inner,
            faults: self.faults.clone(),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        OsStorage.sync_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        OsStorage.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        OsStorage.remove_file(path)
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        OsStorage.write_file_synced(path, bytes)
    }
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}
