//! The system calls under the log, behind a trait tests can replace.
//!
//! [`Storage`] creates, preallocates, maps, syncs, renames and deletes files;
//! [`SegmentMap`] is one writable mapping. [`OsStorage`] is the real thing.
//! A fault-injecting implementation wraps it to make a sync fail or the disk
//! look full. Read-only scanning and the directory lock are plain functions:
//! they never write, so there is nothing to inject.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use memmap2::{Mmap, MmapMut, MmapOptions};

/// Bytes of a memory page; sync ranges are aligned to it.
pub const PAGE_BYTES: usize = 4096;
/// Mode of every file the log creates: records may hold secrets (the
/// server's hold campaign keys), so only the owner reads them.
pub const FILE_MODE: u32 = 0o600;
/// Mode of a log directory the log creates, for the same reason.
pub const DIR_MODE: u32 = 0o700;

/// A writable mapping of one segment file.
///
/// # Safety
/// Implementors promise that `as_ptr()` points to `len()` bytes that stay
/// mapped, readable and writable, at the same address, until the value is
/// dropped, and that the address is aligned to [`PAGE_BYTES`]. The log writes
/// disjoint ranges of it from several threads at once.
pub unsafe trait SegmentMap: Send + Sync + fmt::Debug {
    fn as_ptr(&self) -> *mut u8;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Makes `offset..offset + len` durable (`msync(MS_SYNC)`); the range is
    /// already aligned to [`PAGE_BYTES`] by the caller.
    ///
    /// On Linux `msync(MS_SYNC)` of a shared file mapping is
    /// `vfs_fsync_range(file, range, datasync)`: the same call as
    /// `fdatasync`, limited to the range, including the device cache flush.
    /// The two cost the same here (`storage_sync` bench), so the log keeps
    /// the call that names exactly the bytes it needs.
    fn sync(&self, offset: usize, len: usize) -> io::Result<()>;
}

/// File-system operations the log performs.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Creates `path` (which must not exist), allocates `bytes` with real
    /// blocks (never a sparse file), makes that durable, and maps it.
    fn create_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>>;
    /// Maps an existing segment, first allocating up to `bytes` if the file
    /// is shorter.
    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>>;
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Creates or truncates `path`, writes `bytes` and fsyncs the file.
    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
}

/// The real file system: `posix_fallocate`, `mmap`, `msync`, `fsync`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

/// A writable `mmap` of a segment file.
struct OsSegmentMap {
    map: MmapMut,
    /// Cached so writers never touch `map` mutably.
    ptr: *mut u8,
}

impl fmt::Debug for OsSegmentMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OsSegmentMap")
            .field("len", &self.map.len())
            .finish()
    }
}

// SAFETY: the mapping is plain memory owned by this value; the log
// coordinates concurrent access to disjoint ranges through it.
unsafe impl Send for OsSegmentMap {}
// SAFETY: as above; `sync` takes `&self` and msync is thread-safe.
unsafe impl Sync for OsSegmentMap {}

// SAFETY: `ptr` comes from a live `MmapMut` owned by this value, mmap returns
// page-aligned addresses, and the mapping is never remapped.
unsafe impl SegmentMap for OsSegmentMap {
    fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
        debug_assert!(offset.is_multiple_of(PAGE_BYTES));
        self.map.flush_range(offset, len)
    }
}

fn map_file(file: &File, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
    let len = usize::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the file is in the log's directory, which this process holds
    // the exclusive lock on; nothing else truncates or writes it while mapped.
    let mut map = unsafe { MmapOptions::new().len(len).map_mut(file)? };
    let ptr = map.as_mut_ptr();
    Ok(Box::new(OsSegmentMap { map, ptr }))
}

/// Allocates real blocks for `0..bytes` of `file`.
///
/// The blocks are unwritten extents. Writing zeros instead buys nothing on
/// ext4: with the pages faulted in through the mapping, a commit costs the
/// same into unwritten and written blocks (~0.1 ms, one 4 KiB write and a
/// flush). It costs a lot: 64 MiB of writes per segment, and buffered
/// writes leave the file cached as large folios, after which every sync of
/// one small commit writes back a whole folio (1 MiB here, 2-4x slower; the
/// `storage_sync` bench's `zero_written` cases show it).
fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on a valid, open file descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        // posix_fallocate returns the error number instead of setting errno.
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

impl Storage for OsStorage {
    fn create_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(path)?;
        let allocated = preallocate(&file, bytes).and_then(|()| file.sync_all());
        if let Err(e) = allocated {
            drop(file);
            // Leave no half-allocated file behind to fill the disk further.
            let _ = fs::remove_file(path);
            return Err(e);
        }
        map_file(&file, bytes)
    }

    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() < bytes {
            preallocate(&file, bytes)?;
            file.sync_all()?;
        }
        map_file(&file, bytes)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(path)?;
        // The mode above applies only to a file this call creates; one left
        // over with looser modes is tightened before the secret goes in.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(bytes)?;
        file.sync_all()
    }
}

/// Maps a file read-only for scanning. Empty files map to an empty slice.
pub(crate) fn map_read_only(path: &Path) -> io::Result<Mmap> {
    let file = File::open(path)?;
    // SAFETY: no cooperating process truncates a log file (segments are
    // preallocated and only appended to, snapshots are renamed into place),
    // so the mapping stays backed; a writer beside `verify` only changes
    // bytes past what was durable, which readers validate by CRC.
    unsafe { Mmap::map(&file) }
}

/// An `flock` on the data directory, released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the directory lock without blocking; `Ok(None)` if someone holds it.
pub(crate) fn lock_dir(dir: &Path, exclusive: bool) -> io::Result<Option<DirLock>> {
    let file = File::open(dir)?;
    let mode = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: plain syscall on a valid, open file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(DirLock { _file: file }));
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(error)
    }
}

/// Rounds a byte range outward to whole pages.
pub(crate) fn page_range(start: usize, end: usize) -> (usize, usize) {
    let aligned = start - start % PAGE_BYTES;
    (aligned, end - aligned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_page_range(start: usize, end: usize, expected: (usize, usize)) {
        assert_eq!(page_range(start, end), expected);
    }

    #[test]
    fn page_ranges_cover_the_bytes() {
        check_page_range(0, 64, (0, 64));
        check_page_range(4095, 4097, (0, 4097));
        check_page_range(4096, 8192, (4096, 4096));
        check_page_range(9000, 9001, (8192, 809));
    }

    #[test]
    fn a_second_exclusive_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path(), true).unwrap();
        assert!(held.is_some());
        assert!(lock_dir(dir.path(), true).unwrap().is_none());
        assert!(lock_dir(dir.path(), false).unwrap().is_none());
        drop(held);
        assert!(lock_dir(dir.path(), false).unwrap().is_some());
    }

    #[test]
    fn created_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().unwrap();
        let segment = dir.path().join("s");
        OsStorage.create_segment(&segment, 4096).unwrap();
        let written = dir.path().join("w");
        fs::write(&written, b"loose").unwrap();
        fs::set_permissions(&written, fs::Permissions::from_mode(0o644)).unwrap();
        OsStorage.write_file_synced(&written, b"secret").unwrap();
        for path in [segment, written] {
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, FILE_MODE, "{}", path.display());
        }
    }

    #[test]
    fn created_segments_are_allocated_not_sparse() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let map = OsStorage.create_segment(&path, 1 << 20).unwrap();
        assert_eq!(map.len(), 1 << 20);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "only {} blocks",
            meta.blocks()
        );
        assert!(OsStorage.create_segment(&path, 4096).is_err(), "create_new");
    }
}
