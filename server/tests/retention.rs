//! Log retention and what reads the log once its oldest segments are gone.
//! The real binary runs with 64 KiB segments and a snapshot every few
//! records; an import of a few thousand codes fills several segments.
//! With `--retain-log-seconds 0` (or a small `--retain-log-bytes`) covered
//! segments go at once; with the defaults they stay. Once they are gone,
//! `/v1/events` without `after` starts at the oldest retained event and an
//! older explicit `after` gets `410 events_truncated` with `oldest_lsn`;
//! `wal verify` works beside the running server; `wal dump` and `wal
//! replay` start from the newest snapshot.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Role, Server, bin, wait_until};
use serde_json::{Value, json};

/// How long segments may take to go, or a snapshot to appear.
const BOUND: Duration = Duration::from_secs(20);
/// Imported codes: about 25 KiB of log per 1,024, so several segments.
const CODES: usize = 6000;
/// Codes redeemed after the import.
const REDEEMED: usize = 30;
/// The log's first segment file.
const FIRST_SEGMENT: &str = "00000000000000000001.wal";

fn flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--segment-bytes",
        "65536",
        "--snapshot-every-records",
        "5",
        "--snapshot-every-seconds",
        "1",
    ];
    all.extend_from_slice(extra);
    all
}

/// A campaign of imported codes, some redeemed; returns the redeemed ones.
fn fill(server: &Server) -> Vec<String> {
    server.create_campaign(json!({"id": "ret", "generate": 0, "per_user_limit": 0}));
    let body: String = (0..CODES)
        .map(|i| format!("RETAINED-CODE-{i:08}\n"))
        .collect();
    let r = server.raw(
        Some(Role::Admin),
        "POST",
        "/v1/campaigns/ret/codes",
        &[("Content-Type", "text/plain")],
        body.as_bytes(),
    );
    r.expect(200, None);
    assert_eq!(r.json()["added"], CODES);
    let redeemed: Vec<String> = (0..REDEEMED)
        .map(|i| format!("RETAINED-CODE-{i:08}"))
        .collect();
    for code in &redeemed {
        server.redeem(code, "u").expect(201, None);
    }
    redeemed
}

fn wal_files(server: &Server) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(server.data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn has(server: &Server, name: &str) -> bool {
    wal_files(server).iter().any(|n| n == name)
}

/// The newest snapshot's LSN, if there is one.
fn snapshot_lsn(server: &Server) -> Option<u64> {
    wal_files(server)
        .iter()
        .filter_map(|n| {
            n.strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()
        })
        .max()
}

fn events(server: &Server, query: &str) -> common::Response {
    server.get(Role::Admin, &format!("/v1/events{query}"))
}

fn event_lsns(body: &str) -> Vec<u64> {
    body.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["lsn"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn wal(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("wal")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("redeemd wal runs")
}

#[track_caller]
fn check_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn with_no_retention_covered_segments_go_and_every_reader_copes() {
    let mut server = Server::start_with(&flags(&["--retain-log-seconds", "0"]));
    let redeemed = fill(&server);
    assert!(
        wait_until(BOUND, || !has(&server, FIRST_SEGMENT)),
        "the first segment stayed: {:?}\n{}",
        wal_files(&server),
        server.log_tail()
    );

    // Events: the default starts at the oldest retained record.
    let r = events(&server, "?limit=10000");
    r.expect(200, None);
    let lsns = event_lsns(&r.text());
    let oldest = *lsns.first().expect("events remain");
    assert!(oldest > 1, "the oldest event is {oldest}");
    events(&server, "?after=0&limit=1").expect(200, None);
    let r = events(&server, "?after=1");
    r.expect(410, Some("events_truncated"));
    let told = r.json()["error"]["oldest_lsn"].as_u64().unwrap();
    assert!(told >= oldest, "oldest_lsn {told}, first event {oldest}");
    events(&server, &format!("?after={}", told - 1)).expect(200, None);

    // Verify beside the running server.
    let out = wal(&server.data_dir, &["verify"]);
    check_success(&out, "wal verify beside a running server");

    // Dump and replay once stopped: from the newest snapshot.
    assert!(server.terminate().success());
    let dump = check_success(&wal(&server.data_dir, &["dump"]), "wal dump");
    assert!(
        dump.starts_with("# the log starts at LSN "),
        "{}",
        &dump[..200]
    );
    // Imported codes print normalized (no hyphens), named from the snapshot.
    for code in &redeemed[redeemed.len() - 3..] {
        let printed = format!(" redeemed {} ", code.replace('-', ""));
        assert!(dump.contains(&printed), "{code} not in the dump");
    }
    let replay = check_success(&wal(&server.data_dir, &["replay"]), "wal replay");
    assert!(
        replay.contains(&format!("redeemed {REDEEMED} ")),
        "replay: {replay}"
    );
    let out = wal(&server.data_dir, &["verify"]);
    check_success(&out, "wal verify");

    // And the server starts again from what is left.
    server.restart();
    assert_eq!(server.stats("ret")["redeemed"], REDEEMED);
}

#[test]
fn with_the_default_retention_covered_segments_stay() {
    let server = Server::start_with(&flags(&[]));
    fill(&server);
    let first = {
        let mut first = None;
        assert!(wait_until(BOUND, || {
            first = snapshot_lsn(&server);
            first.is_some()
        }));
        first.unwrap()
    };
    // A later snapshot proves retention ran with the first one.
    for i in REDEEMED..REDEEMED + 10 {
        server
            .redeem(&format!("RETAINED-CODE-{i:08}"), "u")
            .expect(201, None);
    }
    assert!(wait_until(BOUND, || snapshot_lsn(&server) > Some(first)));
    assert!(has(&server, FIRST_SEGMENT), "{:?}", wal_files(&server));
    let lsns = event_lsns(&events(&server, "?limit=3").text());
    assert_eq!(lsns, [1, 2, 3]);
}

#[test]
fn over_the_byte_budget_young_segments_go() {
    let server = Server::start_with(&flags(&["--retain-log-bytes", "131072"]));
    fill(&server);
    assert!(
        wait_until(BOUND, || !has(&server, FIRST_SEGMENT)),
        "the first segment stayed: {:?}\n{}",
        wal_files(&server),
        server.log_tail()
    );
}

#[test]
fn verify_says_why_it_cannot_check_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = wal(&dir.path().join("missing"), &["verify"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot verify the log"), "{stderr}");
}
