//! Proves acknowledged records survive `kill -9`: a child process (this
//! test binary, re-executed with an environment variable) appends at full
//! speed from several threads and prints each LSN once it is durable. The
//! parent kills it with SIGKILL after a random number of lines, 24 times on
//! the same directory, and after every kill reopens the log and checks that
//! every reported-durable LSN is present with its payload and that the log
//! is a clean, dense prefix.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use common::*;
use redeem_wal::Wal;

const CHILD_DIR_ENV: &str = "REDEEM_WAL_KILL_CHILD_DIR";
const TEST_NAME: &str = "kill_nine_while_appending_loses_no_acknowledged_record";
const ROUNDS: usize = 24;
const APPENDERS: u64 = 4;
/// Records an appender writes before waiting for durability.
const BURST_RECORDS: u64 = 8;
/// The child stops by itself after this many records per appender, should
/// the parent die without killing it.
const CHILD_RECORDS_MAX: u64 = 200_000;

fn random_below(limit: u64) -> u64 {
    RandomState::new().build_hasher().finish() % limit
}

/// The payload of the record with `key`: the key, then deterministic bytes.
fn record_payload(key: u64) -> Vec<u8> {
    let mut bytes = key.to_le_bytes().to_vec();
    bytes.extend(payload(key, (key % 97) as usize));
    bytes
}

fn child(dir: &Path) -> ! {
    let (wal, _) = Wal::open(dir, small_options()).expect("child opens the log");
    let wal = Arc::new(wal);
    // Keys stay unique across rounds: the round is in the high bits.
    let round = wal.last_lsn() << 20;
    let appenders: Vec<_> = (0..APPENDERS)
        .map(|thread_id| {
            let wal = wal.clone();
            thread::spawn(move || {
                let mut burst = Vec::new();
                for seq in 0..CHILD_RECORDS_MAX {
                    let key = round | thread_id << 56 | seq;
                    let lsn = wal
                        .append((thread_id + 1) as u8, &record_payload(key))
                        .unwrap();
                    burst.push((lsn, key));
                    if burst.len() as u64 == BURST_RECORDS {
                        wal.wait_durable(lsn).unwrap();
                        for (lsn, key) in burst.drain(..) {
                            println!("durable {lsn} {key}");
                        }
                    }
                }
            })
        })
        .collect();
    for appender in appenders {
        appender.join().unwrap();
    }
    std::process::exit(0);
}

#[test]
fn kill_nine_while_appending_loses_no_acknowledged_record() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut torn_tails = 0;
    for round in 0..ROUNDS {
        let kill_after = 1 + random_below(3000) as usize;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reported = Vec::new();
        let mut killed = false;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let Some(fields) = line.strip_prefix("durable ") else {
                continue;
            };
            let (lsn, key) = fields.split_once(' ').unwrap();
            reported.push((lsn.parse::<u64>().unwrap(), key.parse::<u64>().unwrap()));
            if !killed && reported.len() >= kill_after {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "round {round}: child exited early with {status}");

        let (wal, recovered) = Wal::open(dir.path(), small_options()).unwrap();
        torn_tails += usize::from(recovered.torn_tail.is_some());
        let records = all_records(&wal);
        assert_eq!(records.len() as u64, recovered.last_lsn, "round {round}");
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.lsn, index as u64 + 1, "round {round}: dense");
            let key = u64::from_le_bytes(record.payload[..8].try_into().unwrap());
            assert_eq!(
                record.payload,
                record_payload(key),
                "round {round}: LSN {}",
                record.lsn
            );
        }
        for (lsn, key) in &reported {
            let record = records.get(*lsn as usize - 1).unwrap_or_else(|| {
                panic!(
                    "round {round}: durable LSN {lsn} lost (log ends at {})",
                    recovered.last_lsn
                )
            });
            assert_eq!(
                record.payload,
                record_payload(*key),
                "round {round}: LSN {lsn}"
            );
        }
        wal.close().unwrap();
    }
    eprintln!("{ROUNDS} kills, {torn_tails} torn tails cut off");
}
