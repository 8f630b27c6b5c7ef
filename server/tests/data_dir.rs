//! The data dir against a careless host and a failed start: the real
//! binary creates its data dir `0700` and every file in it (token file,
//! segments, spares, snapshots) `0600`, tightens a dir left readable to
//! others (and says so), and never stores an admin token it did not print:
//! a start that fails (here on a damaged segment) and a good start after it
//! print exactly one admin token between them, and that token works.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, add_token, bin, parse_listening, request, wait_until};
use serde_json::json;

/// How long a start, a stop or a snapshot may take.
const BOUND: Duration = Duration::from_secs(20);

/// Every directory and file under `dir` (itself included) with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = vec![(
        dir.to_path_buf(),
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
    )];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(modes(&path));
        } else {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            out.push((path, mode));
        }
    }
    out
}

#[track_caller]
fn check_private(data_dir: &Path) {
    for (path, mode) in modes(data_dir) {
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, wanted, "mode of {} is {mode:o}", path.display());
    }
}

fn snapshot_exists(wal: &Path) -> bool {
    std::fs::read_dir(wal)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".snap"))
}

#[test]
fn the_data_dir_and_every_file_in_it_are_the_owners_alone() {
    let mut server =
        Server::start_with(&["--segment-bytes", "65536", "--snapshot-every-records", "20"]);
    server.create_campaign(json!({"id": "modes", "generate": 300, "per_user_limit": 0}));
    let codes = server.codes("modes", None);
    for (code, _) in &codes[..100] {
        server.redeem(code, "u").expect(201, None);
    }
    let wal = server.data_dir.join("wal");
    assert!(
        wait_until(BOUND, || snapshot_exists(&wal)),
        "no snapshot; log:\n{}",
        server.log_tail()
    );
    // A token added beside the running server keeps the file private.
    let added = add_token(&server.data_dir, "issuer");
    assert!(!added.is_empty());
    let files = modes(&server.data_dir);
    assert!(
        files
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|e| e == "wal"))
            .count()
            >= 2,
        "{files:?}"
    );
    check_private(&server.data_dir);

    // A data dir left readable by others is tightened on start, with a warning.
    assert!(server.terminate().success());
    for (path, _) in modes(&server.data_dir) {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    server.restart();
    check_private(&server.data_dir);
    assert!(
        server.log_tail().contains("tightened modes"),
        "no warning; log:\n{}",
        server.log_tail()
    );
}

/// `redeemd serve` on `data_dir`, its stdout lines and, once it logs it,
/// its address (`None` if it exits first).
struct Start {
    child: Child,
    stdout: mpsc::Receiver<String>,
    addr: Option<SocketAddr>,
}

fn serve(data_dir: &Path) -> Start {
    let mut child = Command::new(bin())
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redeemd serve starts");
    let (out_tx, stdout) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    let (addr_tx, addr_rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("server: {line}");
            if let Some(addr) = parse_listening(&line) {
                let _ = addr_tx.send(addr);
            }
        }
    });
    // The address is logged before the log is opened; a failing start
    // exits soon after it.
    let addr = addr_rx.recv_timeout(BOUND).ok();
    Start {
        child,
        stdout,
        addr,
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the failing start did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines that print an admin token.
fn tokens_printed(stdout: &mpsc::Receiver<String>) -> Vec<String> {
    stdout
        .try_iter()
        .filter_map(|l| l.strip_prefix("admin token: ").map(str::to_owned))
        .collect()
}

#[test]
fn a_failed_start_loses_no_admin_token() {
    // A log with a record, from a data dir of its own.
    let mut donor = Server::start();
    donor.create_campaign(json!({"id": "t", "generate": 10}));
    assert!(donor.terminate().success());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    add_token(&data_dir, "checkout");
    let wal = data_dir.join("wal");
    std::fs::create_dir(&wal).unwrap();
    let mut segment = None;
    for entry in std::fs::read_dir(donor.data_dir.join("wal")).unwrap() {
        let from = entry.unwrap().path();
        let to = wal.join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        if to.file_name().unwrap().to_string_lossy().starts_with("000") {
            segment = Some(to);
        }
    }
    let segment = segment.expect("the donor's first segment");

    // Damage the segment's header: the start fails at the log.
    let original = std::fs::read(&segment).unwrap();
    let mut damaged = original.clone();
    damaged[16] ^= 0xff;
    std::fs::write(&segment, &damaged).unwrap();
    let mut failed = serve(&data_dir);
    let status = wait_exit(&mut failed.child);
    assert!(!status.success(), "a damaged log must stop the start");
    // The process is gone: its stdout ends, and every line it printed is here.
    let mut printed: Vec<String> = failed
        .stdout
        .iter()
        .filter_map(|l| l.strip_prefix("admin token: ").map(str::to_owned))
        .collect();

    // Repaired, the next start prints the admin token (unless the failed
    // one already did), and it works.
    std::fs::write(&segment, &original).unwrap();
    let mut good = serve(&data_dir);
    let addr = good.addr.expect("the repaired start listens");
    if printed.is_empty() {
        // Printed before the replay starts, so before `/readyz` says 200.
        let line = good.stdout.recv_timeout(BOUND);
        assert!(
            line.as_ref().is_ok_and(|l| l.starts_with("admin token: ")),
            "the good start printed {line:?}; a token created by the failed start was lost"
        );
        printed.push(line.unwrap()["admin token: ".len()..].to_owned());
    }
    assert!(wait_until(BOUND, || request(
        addr,
        "GET",
        "/readyz",
        &[],
        b""
    )
    .is_ok_and(|r| r.status == 200)));
    printed.extend(tokens_printed(&good.stdout));
    assert_eq!(printed.len(), 1, "admin tokens printed: {printed:?}");
    let auth = format!("Bearer {}", printed[0]);
    let r = request(
        addr,
        "GET",
        "/v1/campaigns",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    r.expect(200, None);
    let _ = good.child.kill();
    let _ = good.child.wait();

    // Later starts print none.
    let mut later = serve(&data_dir);
    assert!(later.addr.is_some());
    let addr = later.addr.unwrap();
    assert!(wait_until(BOUND, || request(
        addr,
        "GET",
        "/readyz",
        &[],
        b""
    )
    .is_ok_and(|r| r.status == 200)));
    assert_eq!(tokens_printed(&later.stdout), Vec::<String>::new());
    let _ = later.child.kill();
    let _ = later.child.wait();
}
