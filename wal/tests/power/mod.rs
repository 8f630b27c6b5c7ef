//! A file system that can lose power, behind the log's `Storage` trait.
//!
//! [`PowerStorage`] performs every operation on a real directory, so the
//! live log and its read-only recovery scan see what a process would see
//! (the *written* image), and keeps beside it a model of what would survive
//! a power loss (the *durable* image):
//! - segment bytes written through the mapping reach the durable image only
//!   when their pages are synced (`SegmentMap::sync`); a created segment is
//!   durable as allocated zeros, since `create_segment` fsyncs it;
//! - `write_file_synced` is two steps, the write and its fsync;
//! - directory entries (create, rename, delete) are volatile until
//!   `sync_dir`, which makes the whole current directory durable. Until then
//!   they are kept as an ordered list of pending operations.
//!
//! Before every step the storage can record a [`Crash`]: the durable image
//! plus, to model torn writes, the written pages not yet synced and the
//! pending directory operations. [`Crash::materialize`] turns one into a real
//! directory: durable bytes only, everything written (a process crash), or a
//! seeded torn mix: each unsynced page independently old or new, and a
//! prefix of the pending directory operations (a journaling file system
//! commits directory operations in order). A step can also be made to fail
//! with EIO, without effect.
//!
//! No real fsync or msync is ever issued: durability is the model's.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redeem_wal::storage::PAGE_BYTES;
use redeem_wal::{OsStorage, SegmentMap, Storage};

const EIO: i32 = 5;

type Page = Arc<[u8]>;

/// One thing the log asked of the file system, named before it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateSegment(String),
    OpenSegment(String),
    SyncRange {
        name: String,
        offset: usize,
        len: usize,
    },
    SyncDir,
    Rename {
        from: String,
        to: String,
    },
    Remove(String),
    /// The write half of `write_file_synced`.
    WriteFile(String),
    /// The fsync half of `write_file_synced`.
    FsyncFile(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateSegment(name) => write!(f, "create {name}"),
            Step::OpenSegment(name) => write!(f, "open {name}"),
            Step::SyncRange { name, offset, len } => {
                write!(f, "msync {name} {offset}+{len}")
            }
            Step::SyncDir => write!(f, "fsync dir"),
            Step::Rename { from, to } => write!(f, "rename {from} -> {to}"),
            Step::Remove(name) => write!(f, "unlink {name}"),
            Step::WriteFile(name) => write!(f, "write {name}"),
            Step::FsyncFile(name) => write!(f, "fsync {name}"),
        }
    }
}

/// A directory operation not yet made durable by `sync_dir`.
#[derive(Debug, Clone)]
enum DirOp {
    Link(String, usize),
    Rename(String, String),
    Unlink(String),
}

/// One file (inode): its handle for reading the written image, and its
/// durable pages.
struct Inode {
    file: File,
    durable: Vec<Page>,
    durable_len: usize,
}

/// One file's bytes in a crash image.
#[derive(Clone)]
struct FileImage {
    durable: Vec<Page>,
    durable_len: usize,
    /// Written pages that differ from the durable ones, by page index.
    unsynced: Vec<(usize, Page)>,
    written_len: usize,
}

/// What the disk holds at one instant, and what might also have made it.
#[derive(Clone)]
pub struct Image {
    /// Directory entries as of the last `sync_dir`.
    durable: BTreeMap<String, usize>,
    /// Directory operations since, oldest first.
    pending: Vec<DirOp>,
    files: BTreeMap<usize, FileImage>,
}

/// Which bytes of an [`Image`] survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survivors {
    /// Only what was synced: a power loss.
    Durable,
    /// Everything written: a process crash (the page cache survives).
    Written,
    /// Each unsynced page old or new, and a prefix of the pending directory
    /// operations, chosen by this seed: a power loss mid-writeback.
    Torn(u64),
    /// Like `Torn`, but each pending directory operation independently
    /// survives or not, as POSIX allows of operations no fsync ordered.
    Unordered(u64),
}

/// The state of the disk just before a step (or at the end of a run).
pub struct Crash {
    /// 1-based number of the step about to happen; one past the last step
    /// for the final state.
    pub step_no: u64,
    /// The step, or `None` for the final state.
    pub step: Option<Step>,
    /// Highest LSN acknowledged when the crash happened.
    pub acked: u64,
    pub image: Image,
}

struct State {
    dir: PathBuf,
    inodes: Vec<Inode>,
    /// What the process sees.
    live: BTreeMap<String, usize>,
    /// What survives a power loss.
    durable: BTreeMap<String, usize>,
    pending: Vec<DirOp>,
    steps: u64,
    recording: bool,
    crashes: Vec<Crash>,
    fail_at: Option<u64>,
    failed: Vec<(u64, Step)>,
    history: Vec<Step>,
}

struct Shared {
    state: Mutex<State>,
    /// Highest LSN the test has seen acknowledged; recorded with each crash.
    acked: AtomicU64,
    zero_page: Page,
}

/// The power-loss storage; clones share one model.
#[derive(Clone)]
pub struct PowerStorage {
    shared: Arc<Shared>,
}

impl fmt::Debug for PowerStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerStorage").finish_non_exhaustive()
    }
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("log files have UTF-8 names")
        .to_owned()
}

fn pages_of(bytes: &[u8], zero: &Page) -> Vec<Page> {
    bytes
        .chunks(PAGE_BYTES)
        .map(|chunk| {
            if chunk.len() == PAGE_BYTES && chunk == &zero[..] {
                zero.clone()
            } else {
                let mut page = vec![0u8; PAGE_BYTES];
                page[..chunk.len()].copy_from_slice(chunk);
                Page::from(page)
            }
        })
        .collect()
}

fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// A 64-bit mix (splitmix64's finalizer): deterministic choices from a seed.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl PowerStorage {
    /// Adopts every file already in `dir` as durable (created if missing).
    pub fn adopt(dir: &Path) -> PowerStorage {
        fs::create_dir_all(dir).unwrap();
        let zero_page: Page = Page::from(vec![0u8; PAGE_BYTES]);
        let mut state = State {
            dir: dir.to_path_buf(),
            inodes: Vec::new(),
            live: BTreeMap::new(),
            durable: BTreeMap::new(),
            pending: Vec::new(),
            steps: 0,
            recording: false,
            crashes: Vec::new(),
            fail_at: None,
            failed: Vec::new(),
            history: Vec::new(),
        };
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| name_of(&e.path()))
            .collect();
        names.sort();
        for name in names {
            let file = File::open(dir.join(&name)).unwrap();
            let bytes = read_all(&file).unwrap();
            let ino = state.inodes.len();
            state.inodes.push(Inode {
                file,
                durable: pages_of(&bytes, &zero_page),
                durable_len: bytes.len(),
            });
            state.live.insert(name.clone(), ino);
            state.durable.insert(name, ino);
        }
        PowerStorage {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                acked: AtomicU64::new(0),
                zero_page,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a crash image before every later step.
    pub fn record_crashes(&self, on: bool) {
        self.lock().recording = on;
    }

    /// Makes the `n`th step from now (1 = the next) fail with EIO.
    pub fn fail_nth_step_from_now(&self, n: u64) {
        let mut state = self.lock();
        state.fail_at = Some(state.steps + n);
    }

    /// Steps that were made to fail, with their numbers.
    pub fn failed(&self) -> Vec<(u64, Step)> {
        self.lock().failed.clone()
    }

    /// The directory this storage serves.
    pub fn dir(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    pub fn steps(&self) -> u64 {
        self.lock().steps
    }

    /// Every step taken so far, in order.
    pub fn history(&self) -> Vec<Step> {
        self.lock().history.clone()
    }

    /// The test saw `lsn` acknowledged.
    pub fn note_acked(&self, lsn: u64) {
        // Relaxed would do for one thread; SeqCst keeps the reasoning simple:
        // a crash recorded after this store sees it.
        self.shared.acked.fetch_max(lsn, Ordering::SeqCst);
    }

    /// Takes the crashes recorded so far.
    pub fn take_crashes(&self) -> Vec<Crash> {
        std::mem::take(&mut self.lock().crashes)
    }

    /// The disk as it is now, as a crash after the last step.
    pub fn crash_now(&self) -> Crash {
        let state = self.lock();
        Crash {
            step_no: state.steps + 1,
            step: None,
            acked: self.shared.acked.load(Ordering::SeqCst),
            image: self.image(&state),
        }
    }

    fn image(&self, state: &State) -> Image {
        let mut used: BTreeSet<usize> = state.durable.values().copied().collect();
        for op in &state.pending {
            if let DirOp::Link(_, ino) = op {
                used.insert(*ino);
            }
        }
        let files = used
            .into_iter()
            .map(|ino| {
                let inode = &state.inodes[ino];
                let written = read_all(&inode.file).expect("read a file of the log");
                let unsynced = written
                    .chunks(PAGE_BYTES)
                    .enumerate()
                    .filter(|(index, chunk)| {
                        let old = inode.durable.get(*index).map_or(&[][..], |p| &p[..]);
                        old.get(..chunk.len()) != Some(*chunk)
                            || old[chunk.len()..] != self.shared.zero_page[chunk.len()..old.len()]
                    })
                    .map(|(index, chunk)| {
                        (index, pages_of(chunk, &self.shared.zero_page).remove(0))
                    })
                    .collect();
                let image = FileImage {
                    durable: inode.durable.clone(),
                    durable_len: inode.durable_len,
                    unsynced,
                    written_len: written.len(),
                };
                (ino, image)
            })
            .collect();
        Image {
            durable: state.durable.clone(),
            pending: state.pending.clone(),
            files,
        }
    }

    /// Counts, records and maybe fails a step; the returned guard is held
    /// while the step takes effect.
    fn step(&self, step: Step) -> io::Result<MutexGuard<'_, State>> {
        let mut state = self.lock();
        state.steps += 1;
        let step_no = state.steps;
        if state.recording {
            let crash = Crash {
                step_no,
                step: Some(step.clone()),
                acked: self.shared.acked.load(Ordering::SeqCst),
                image: self.image(&state),
            };
            state.crashes.push(crash);
        }
        state.history.push(step.clone());
        if state.fail_at == Some(step_no) {
            state.failed.push((step_no, step));
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(state)
    }

    fn check_dir(state: &State, path: &Path) {
        assert_eq!(
            path.parent(),
            Some(state.dir.as_path()),
            "the log only touches files in its directory"
        );
    }

    fn sync_pages(&self, ino: usize, offset: usize, len: usize) -> io::Result<()> {
        let mut state = self.step(Step::SyncRange {
            name: self.name_of_inode(ino),
            offset,
            len,
        })?;
        let zero = self.shared.zero_page.clone();
        let inode = &mut state.inodes[ino];
        let first = offset / PAGE_BYTES;
        let end = (offset + len).div_ceil(PAGE_BYTES);
        for index in first..end {
            let mut page = vec![0u8; PAGE_BYTES];
            let read = inode.file.read_at(&mut page, (index * PAGE_BYTES) as u64)?;
            assert!(read > 0, "sync past the end of the file");
            let page = if page[..] == zero[..] {
                zero.clone()
            } else {
                Page::from(page)
            };
            if inode.durable.len() <= index {
                inode.durable.resize(index + 1, zero.clone());
            }
            inode.durable[index] = page;
        }
        Ok(())
    }

    fn name_of_inode(&self, ino: usize) -> String {
        let state = self.lock();
        state
            .live
            .iter()
            .find(|(_, i)| **i == ino)
            .map_or_else(|| format!("inode {ino}"), |(name, _)| name.clone())
    }
}

/// A real mapping whose syncs update the durable model instead of the disk.
struct PowerMap {
    inner: Box<dyn SegmentMap>,
    ino: usize,
    storage: PowerStorage,
}

impl fmt::Debug for PowerMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerMap").field("ino", &self.ino).finish()
    }
}

// SAFETY: pointer and length of a live `OsStorage` mapping, unchanged.
unsafe impl SegmentMap for PowerMap {
    fn as_ptr(&self) -> *mut u8 {
        self.inner.as_ptr()
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn sync(&self, offset: usize, len: usize) -> io::Result<()> {
        assert!(offset.is_multiple_of(PAGE_BYTES));
        self.storage.sync_pages(self.ino, offset, len)
    }
}

impl Storage for PowerStorage {
    fn create_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        let name = name_of(path);
        let mut state = self.step(Step::CreateSegment(name.clone()))?;
        Self::check_dir(&state, path);
        let file = File::create_new(path)?;
        file.set_len(bytes)?;
        drop(file);
        let inner = OsStorage.open_segment(path, bytes)?;
        let ino = state.inodes.len();
        state.inodes.push(Inode {
            file: File::open(path)?,
            // create_segment's own fsync: allocated zeros of the full size.
            durable: vec![self.shared.zero_page.clone(); (bytes as usize).div_ceil(PAGE_BYTES)],
            durable_len: bytes as usize,
        });
        state.live.insert(name.clone(), ino);
        state.pending.push(DirOp::Link(name, ino));
        drop(state);
        Ok(Box::new(PowerMap {
            inner,
            ino,
            storage: self.clone(),
        }))
    }

    fn open_segment(&self, path: &Path, bytes: u64) -> io::Result<Box<dyn SegmentMap>> {
        let name = name_of(path);
        let mut state = self.step(Step::OpenSegment(name.clone()))?;
        Self::check_dir(&state, path);
        let ino = *state.live.get(&name).expect("opens a file it sees");
        let inode = &mut state.inodes[ino];
        if (inode.durable_len as u64) < bytes {
            // OsStorage allocates and fsyncs the file to its full size.
            inode.durable_len = bytes as usize;
            let pages = (bytes as usize).div_ceil(PAGE_BYTES);
            inode.durable.resize(pages, self.shared.zero_page.clone());
        }
        drop(state);
        let inner = OsStorage.open_segment(path, bytes)?;
        Ok(Box::new(PowerMap {
            inner,
            ino,
            storage: self.clone(),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.step(Step::SyncDir)?;
        assert_eq!(dir, state.dir, "one directory");
        state.durable = state.live.clone();
        state.pending.clear();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_name, to_name) = (name_of(from), name_of(to));
        let mut state = self.step(Step::Rename {
            from: from_name.clone(),
            to: to_name.clone(),
        })?;
        Self::check_dir(&state, from);
        Self::check_dir(&state, to);
        fs::rename(from, to)?;
        let ino = state
            .live
            .remove(&from_name)
            .expect("renames a file it sees");
        state.live.insert(to_name.clone(), ino);
        state.pending.push(DirOp::Rename(from_name, to_name));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let name = name_of(path);
        let mut state = self.step(Step::Remove(name.clone()))?;
        Self::check_dir(&state, path);
        fs::remove_file(path)?;
        state.live.remove(&name);
        state.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn write_file_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let name = name_of(path);
        let mut state = self.step(Step::WriteFile(name.clone()))?;
        Self::check_dir(&state, path);
        fs::write(path, bytes)?;
        let ino = match state.live.get(&name) {
            // Truncated and rewritten in place: same inode, old durable bytes.
            Some(&ino) => ino,
            None => {
                let ino = state.inodes.len();
                state.inodes.push(Inode {
                    file: File::open(path)?,
                    durable: Vec::new(),
                    durable_len: 0,
                });
                state.live.insert(name.clone(), ino);
                state.pending.push(DirOp::Link(name.clone(), ino));
                ino
            }
        };
        drop(state);
        let mut state = self.step(Step::FsyncFile(name))?;
        let zero = self.shared.zero_page.clone();
        let inode = &mut state.inodes[ino];
        inode.durable = pages_of(bytes, &zero);
        inode.durable_len = bytes.len();
        Ok(())
    }
}

impl Image {
    /// Writes the files that survive into `dir`, which must be empty.
    pub fn materialize(&self, dir: &Path, survivors: Survivors) {
        let pending = match survivors {
            Survivors::Durable => 0,
            Survivors::Written => self.pending.len(),
            Survivors::Torn(seed) => (mix(seed) % (self.pending.len() as u64 + 1)) as usize,
            Survivors::Unordered(_) => 0,
        };
        let mut names = self.durable.clone();
        let applied = self
            .pending
            .iter()
            .enumerate()
            .filter(|(index, _)| match survivors {
                Survivors::Unordered(seed) => mix(seed ^ mix((*index as u64 + 1) << 40)) & 1 == 1,
                _ => *index < pending,
            });
        for (_, op) in applied {
            match op {
                DirOp::Link(name, ino) => {
                    names.insert(name.clone(), *ino);
                }
                DirOp::Rename(from, to) => {
                    if let Some(ino) = names.remove(from) {
                        names.insert(to.clone(), ino);
                    }
                }
                DirOp::Unlink(name) => {
                    names.remove(name);
                }
            }
        }
        for (name, ino) in names {
            let file = &self.files[&ino];
            let mut pages = file.durable.clone();
            let mut len = file.durable_len;
            let take_written = |index: usize| match survivors {
                Survivors::Durable => false,
                Survivors::Written => true,
                Survivors::Torn(seed) | Survivors::Unordered(seed) => {
                    mix(seed ^ mix((ino as u64) << 32 | index as u64)) & 1 == 1
                }
            };
            let mut any_written = false;
            for (index, page) in &file.unsynced {
                if take_written(*index) {
                    if pages.len() <= *index {
                        pages.resize(*index + 1, Page::from(vec![0u8; PAGE_BYTES]));
                    }
                    pages[*index] = page.clone();
                    any_written = true;
                }
            }
            if survivors == Survivors::Written
                || (any_written && file.written_len > len)
                || (file.unsynced.is_empty() && file.written_len != len && take_written(usize::MAX))
            {
                len = file.written_len;
            }
            let mut bytes = Vec::with_capacity(pages.len() * PAGE_BYTES);
            for page in &pages {
                bytes.extend_from_slice(page);
            }
            bytes.resize(len, 0);
            fs::write(dir.join(name), bytes).unwrap();
        }
    }

    /// How many unsynced pages and pending directory operations it holds.
    pub fn unsynced(&self) -> (usize, usize) {
        let pages = self.files.values().map(|f| f.unsynced.len()).sum();
        (pages, self.pending.len())
    }
}
