//! A full disk under the log: the data dir is on a 40 MiB tmpfs, the log
//! uses the smallest segments (`--segment-bytes 65536`), and a filler file
//! takes every free byte. Redemptions go on until the log needs a segment
//! it cannot allocate; from then on they must answer `503 unavailable`
//! promptly (no hang, no 500, no SIGBUS), change nothing (the refused code
//! is still `available`, a keyed refusal is not stored), and the server must
//! stay up and keep answering reads. Deleting the filler gives the space
//! back, and redemptions, the refused one and its keyed retry included,
//! succeed again: a failed `posix_fallocate` of a new segment is not a
//! failed sync, so the log is not poisoned (fsyncgate applies to syncs
//! only). Everything acknowledged survives a `kill -9` afterwards.
//!
//! Needs root to mount the tmpfs; otherwise it says so and passes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::Server;
use serde_json::json;

/// Codes in the campaign; more than the small disk's log can take.
const CODES: usize = 4000;
/// Longest a refusal may take: the disk is full, not slow.
const REFUSAL_MS_MAX: u128 = 2000;

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path) -> Option<Mount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: not root, cannot mount a tmpfs");
        return None;
    }
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(dir)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(dir.to_owned())),
        other => {
            eprintln!("SKIPPED: mount -t tmpfs failed: {other:?}");
            None
        }
    }
}

/// Writes `path` until the file system is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0xA5u8; 64 << 10];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    written
}

#[test]
fn a_full_disk_refuses_with_503_and_recovers_when_space_returns() {
    let mnt = tempfile::tempdir().expect("mount point");
    let Some(_mount) = mount_tmpfs(mnt.path()) else {
        return;
    };
    let mut server = Server::start_in(
        mnt.path(),
        &[
            "--segment-bytes",
            "65536",
            "--snapshot-every-seconds",
            "86400",
        ],
    );
    server.create_campaign(json!({
        "id": "disk", "generate": CODES, "code": {"prefix": "DSK"}, "per_user_limit": 0,
    }));
    let codes: Vec<String> = server
        .codes("disk", None)
        .into_iter()
        .map(|c| c.0)
        .collect();
    let filler = mnt.path().join("filler");
    let filled = fill(&filler);

    // Redeem until the log cannot grow.
    let mut acked = Vec::new();
    let mut refused = None;
    for code in &codes {
        let start = Instant::now();
        let r = server.redeem(code, "filler");
        assert!(
            start.elapsed().as_millis() < REFUSAL_MS_MAX,
            "a redemption took {:?}",
            start.elapsed()
        );
        match r.status {
            201 => acked.push(code.clone()),
            503 => {
                refused = Some((code.clone(), r));
                break;
            }
            _ => panic!("{code}: {} {}", r.status, r.text()),
        }
    }
    let (code, r) = refused.expect("the log never filled the disk");
    eprintln!(
        "full disk: filler {} KiB; {} redemptions acknowledged, then {} {}",
        filled >> 10,
        acked.len(),
        r.status,
        r.text()
    );
    r.expect(503, Some("unavailable"));
    assert!(
        r.text().contains("no space left") && !r.text().contains('/'),
        "the message names the cause, and no path of the data dir: {}",
        r.text()
    );

    // Nothing half-applied, nothing stored, still up, still refusing fast.
    assert_eq!(server.status(&code).json()["state"], "available");
    let keyed = |server: &Server| {
        server.raw(
            Some(common::Role::Checkout),
            "POST",
            "/v1/redemptions",
            &[
                ("Content-Type", "application/json"),
                ("Idempotency-Key", "full-disk-1"),
            ],
            &serde_json::to_vec(&json!({"code": code, "user": "keyed"})).unwrap(),
        )
    };
    for _ in 0..3 {
        let start = Instant::now();
        keyed(&server).expect(503, Some("unavailable"));
        assert!(start.elapsed().as_millis() < REFUSAL_MS_MAX);
        // The same request again: a smaller record (a shorter user name)
        // might still fit the end of the segment, so the same size.
        server
            .redeem(&code, "filler")
            .expect(503, Some("unavailable"));
    }
    assert_eq!(server.status(&code).json()["state"], "available");
    assert_eq!(
        server.stats("disk")["redeemed"].as_u64(),
        Some(acked.len() as u64)
    );
    assert!(
        server.exited().is_none(),
        "the server exited on a full disk"
    );
    assert_eq!(
        common::request(server.addr, "GET", "/healthz", &[], b"")
            .unwrap()
            .status,
        200
    );

    // Space returns: the same requests now succeed, the keyed one once.
    std::fs::remove_file(&filler).expect("filler removed");
    let r = keyed(&server);
    r.expect(201, None);
    assert_eq!(r.header("idempotent-replayed"), None, "a 503 was stored");
    assert_eq!(keyed(&server).header("idempotent-replayed"), Some("true"));
    acked.push(code.clone());
    for code in codes.iter().skip(acked.len()).take(200) {
        server.redeem(code, "after").expect(201, None);
        acked.push(code.clone());
    }
    assert!(server.exited().is_none());

    // And all of it is durable.
    server.kill9();
    server.restart();
    let states: std::collections::HashMap<String, String> =
        server.codes("disk", None).into_iter().collect();
    for code in &acked {
        assert_eq!(states[code], "redeemed", "{code} lost");
    }
    assert_eq!(
        server.stats("disk")["redeemed"].as_u64(),
        Some(acked.len() as u64)
    );
    let verify = Command::new(common::bin())
        .args(["wal", "verify", "--data-dir"])
        .arg(&server.data_dir)
        .output();
    // The server holds the log's lock; verify takes a shared one, so stop
    // it first if verify refuses.
    let verify = match verify {
        Ok(out) if out.status.success() => out,
        _ => {
            assert!(server.terminate().success());
            Command::new(common::bin())
                .args(["wal", "verify", "--data-dir"])
                .arg(&server.data_dir)
                .output()
                .expect("wal verify runs")
        }
    };
    assert!(
        verify.status.success(),
        "wal verify: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The server goes before the tmpfs is unmounted.
    drop(server);
}
