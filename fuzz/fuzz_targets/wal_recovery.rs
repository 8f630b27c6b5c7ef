//! Recovery of a damaged log: `redeem_wal::dump` (what `verify` reads) and
//! `Wal::open` on a real log of two segments after fuzzer-chosen damage.
//!
//! Once per process a pristine log is written (records of known types and
//! payloads, each waited durable, rolling over into a second segment) and
//! its files kept in memory. Each input is a list of mutations of those
//! files (truncate, flip a byte, overwrite, zero a range, append garbage,
//! delete a file), mostly aimed at the bytes actually written; the result
//! goes to a fresh directory in /dev/shm (or the temp dir).
//!
//! Reference checks:
//! - nothing panics;
//! - verify and open agree: both succeed with the same last LSN and the
//!   same torn tail, or both refuse with the same `Corruption` (segment,
//!   offset, LSN, reason);
//! - on success the records, from dump and from the opened log alike, are
//!   a clean prefix: LSNs dense from 1, each equal (type and payload) to
//!   the original record with that LSN;
//! - after open cut a torn tail and the log was closed, verify finds the
//!   same records and no torn tail;
//! - with no mutation at all, every record comes back.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use redeem_wal::{OpenError, Options, OsStorage, Record, SyncMode, VerifyError, Wal};

const SEGMENT_BYTES: u64 = 64 << 10;
const RECORD_BYTES_MAX: u32 = 4096;
const RECORDS: u64 = 40;
const MUTATIONS_MAX: usize = 8;
/// Where damaged copies go: tmpfs where there is one, so a run costs no
/// disk writes.
fn scratch() -> &'static Path {
    static SCRATCH: OnceLock<PathBuf> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    })
}

fn options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        sync: SyncMode::Always,
        record_bytes_max: Some(RECORD_BYTES_MAX),
        storage: Box::new(OsStorage),
        ..Options::default()
    }
}

/// The original record of an LSN: its type byte and payload.
fn original(lsn: u64) -> (u8, Vec<u8>) {
    let len = if lsn.is_multiple_of(2) {
        3500
    } else {
        (lsn * 97 % 300) as usize
    };
    let mut state = lsn.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let payload = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    (lsn as u8, payload)
}

/// A pristine log's files: name, bytes, and the end of the written bytes.
struct File {
    name: String,
    bytes: Vec<u8>,
    written: usize,
}

fn pristine() -> &'static [File] {
    static FILES: OnceLock<Vec<File>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir_in(scratch()).unwrap();
        let (wal, _) = Wal::open(dir.path(), options()).unwrap();
        for lsn in 1..=RECORDS {
            let (kind, payload) = original(lsn);
            assert_eq!(wal.append(kind, &payload).unwrap(), lsn);
            wal.wait_durable(lsn).unwrap();
        }
        wal.close().unwrap();
        let mut files: Vec<File> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let bytes = std::fs::read(entry.path()).unwrap();
                let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                File {
                    name: entry.file_name().into_string().unwrap(),
                    bytes,
                    written,
                }
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let segments = files.iter().filter(|f| is_segment(&f.name)).count();
        assert!(segments >= 2, "the pristine log must roll over: {segments}");
        files
    })
}

fn is_segment(name: &str) -> bool {
    name.ends_with(".wal") && !name.starts_with("spare-")
}

#[derive(Debug, Arbitrary)]
enum Mutation {
    Truncate { file: u8, at: u32 },
    Flip { file: u8, at: u32, xor: u8 },
    Overwrite { file: u8, at: u32, bytes: Vec<u8> },
    Zero { file: u8, at: u32, len: u16 },
    Append { file: u8, bytes: Vec<u8> },
    Remove { file: u8 },
}

/// An offset in a file: mostly within (or just past) its written bytes,
/// where damage is interesting; with the top bit set, anywhere.
fn offset(at: u32, file: &File, len: usize) -> usize {
    let span = if at & 1 << 31 != 0 {
        len
    } else {
        (file.written + 512).min(len)
    };
    (at & !(1 << 31)) as usize % span.max(1)
}

fn check(mutations: &[Mutation]) {
    let files = pristine();
    let mut images: Vec<Option<Vec<u8>>> = files.iter().map(|f| Some(f.bytes.clone())).collect();
    for mutation in mutations {
        let pick = |file: u8| usize::from(file) % files.len();
        match mutation {
            Mutation::Truncate { file, at } => {
                let i = pick(*file);
                if let Some(bytes) = &mut images[i] {
                    let at = offset(*at, &files[i], bytes.len() + 1);
                    bytes.truncate(at);
                }
            }
            Mutation::Flip { file, at, xor } => {
                let i = pick(*file);
                if let Some(bytes) = &mut images[i]
                    && !bytes.is_empty()
                {
                    let at = offset(*at, &files[i], bytes.len());
                    bytes[at] ^= xor.max(&1);
                }
            }
            Mutation::Overwrite {
                file,
                at,
                bytes: new,
            } => {
                let i = pick(*file);
                if let Some(bytes) = &mut images[i]
                    && !bytes.is_empty()
                {
                    let at = offset(*at, &files[i], bytes.len());
                    let end = (at + new.len()).min(bytes.len());
                    bytes[at..end].copy_from_slice(&new[..end - at]);
                }
            }
            Mutation::Zero { file, at, len } => {
                let i = pick(*file);
                if let Some(bytes) = &mut images[i]
                    && !bytes.is_empty()
                {
                    let at = offset(*at, &files[i], bytes.len());
                    let end = (at + usize::from(*len)).min(bytes.len());
                    bytes[at..end].fill(0);
                }
            }
            Mutation::Append { file, bytes: new } => {
                if let Some(bytes) = &mut images[pick(*file)] {
                    bytes.extend_from_slice(new);
                }
            }
            Mutation::Remove { file } => images[pick(*file)] = None,
        }
    }

    let dir = tempfile::tempdir_in(scratch()).unwrap();
    for (file, image) in files.iter().zip(&images) {
        if let Some(bytes) = image {
            std::fs::write(dir.path().join(&file.name), bytes).unwrap();
        }
    }
    let context = || format!("mutations {mutations:?}");

    let verified = redeem_wal::dump(dir.path());
    let verified = match verified {
        Ok((report, records)) => {
            let records: Vec<Record> = records
                .map(|r| r.unwrap_or_else(|e| panic!("dump of a verified log: {e}: {}", context())))
                .collect();
            Ok((report, records))
        }
        Err(e) => Err(e),
    };
    let opened = Wal::open(dir.path(), options());
    match (verified, opened) {
        (Ok((report, dumped)), Ok((wal, recovered))) => {
            assert_eq!(report.first_lsn, 1, "{}", context());
            assert_eq!(recovered.first_lsn, 1, "{}", context());
            assert_eq!(report.last_lsn, recovered.last_lsn, "{}", context());
            assert_eq!(report.torn_tail, recovered.torn_tail, "{}", context());
            let read: Vec<Record> = wal
                .read_from(1)
                .unwrap()
                .map(|r| r.unwrap_or_else(|e| panic!("read of an opened log: {e}: {}", context())))
                .collect();
            assert_eq!(
                read,
                dumped,
                "open and dump read different records: {}",
                context()
            );
            check_prefix(&read, report.last_lsn, &context);
            if mutations.is_empty() {
                assert_eq!(report.last_lsn, RECORDS);
                assert_eq!(report.torn_tail, None);
            }
            wal.close()
                .unwrap_or_else(|e| panic!("close: {e}: {}", context()));
            let again = redeem_wal::verify(dir.path())
                .unwrap_or_else(|e| panic!("verify after open: {e}: {}", context()));
            assert_eq!(again.last_lsn, report.last_lsn, "{}", context());
            assert_eq!(
                again.torn_tail,
                None,
                "open left a torn tail: {}",
                context()
            );
        }
        (Err(VerifyError::Corrupt(a)), Err(OpenError::Corrupt(b))) => {
            assert_eq!(
                a,
                b,
                "verify and open name different corruption: {}",
                context()
            );
            assert!(!mutations.is_empty(), "the pristine log is corrupt: {a}");
        }
        (verified, opened) => panic!(
            "verify and open disagree: verify {:?}, open {:?}: {}",
            verified.map(|(report, _)| report),
            opened.map(|(_, recovered)| recovered),
            context()
        ),
    }
}

#[track_caller]
fn check_prefix(records: &[Record], last_lsn: u64, context: &dyn Fn() -> String) {
    assert_eq!(records.len() as u64, last_lsn, "{}", context());
    assert!(last_lsn <= RECORDS, "records beyond the log: {}", context());
    for (lsn, record) in (1..).zip(records) {
        assert_eq!(record.lsn, lsn, "LSNs not dense: {}", context());
        let (kind, payload) = original(lsn);
        assert_eq!(record.record_type, kind, "LSN {lsn}: {}", context());
        assert!(
            record.payload == payload,
            "LSN {lsn} payload differs: {}",
            context()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let mut mutations = Vec::new();
    while mutations.len() < MUTATIONS_MAX && !input.is_empty() {
        match Mutation::arbitrary(&mut input) {
            Ok(m) => mutations.push(m),
            Err(_) => break,
        }
    }
    check(&mutations);
});
