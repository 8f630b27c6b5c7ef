//! `redeemd assign` against the real server: the binary posts a recipient
//! file and prints the merge CSV; a second run resumes (every recipient
//! `existing`, same code); any answer but 200 exits non-zero naming the
//! server's error code. Each printed code is checked against the server.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Server;
use serde_json::json;

fn run_assign(server: &Server, token: &str, campaign: &str, file: &Path, extra: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("assign")
        .args(["--url", &format!("http://{}", server.addr)])
        .args(["--token", token, "--campaign", campaign])
        .args(extra)
        .arg(file)
        .output()
        .expect("redeemd assign runs")
}

/// CSV rows, header first, fields unquoted.
fn rows(text: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text)
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

#[track_caller]
fn success(out: &Output) -> Vec<Vec<String>> {
    assert!(
        out.status.success(),
        "assign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rows(&out.stdout)
}

#[test]
fn assign_prints_the_merge_file_and_a_rerun_resumes_with_the_same_codes() {
    let server = Server::start();
    server.create_campaign(json!({"id": "news", "generate": 30_000}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("recipients.csv");
    // More lines than one server batch (8,192), so the answer comes in
    // several durable chunks while the file is still being sent.
    let mut text = String::from("recipient\n\"o'neil, jr\"@x\nann@x\nann@x\n");
    for i in 0..20_000 {
        text.push_str(&format!("user{i}@example.com\n"));
    }
    std::fs::write(&file, &text).unwrap();

    let first = run_assign(&server, &server.issuer, "news", &file, &[]);
    let got = success(&first);
    assert!(
        first.stderr.is_empty(),
        "stderr is quiet when it is not a terminal: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(got[0], ["recipient", "code", "status"]);
    assert_eq!(got.len(), 1 + 3 + 20_000);
    assert_eq!(
        got[1][..],
        [
            "o'neil, jr@x".to_owned(),
            got[1][1].clone(),
            "created".into()
        ]
    );
    assert_eq!(
        (got[2][2].as_str(), got[3][2].as_str()),
        ("created", "existing")
    );
    assert_eq!(got[2][1], got[3][1]);
    let mut codes: Vec<&str> = got[1..].iter().map(|r| r[1].as_str()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), 20_002, "one distinct code a recipient");
    for row in [&got[1], &got[2], &got[20_003]] {
        let status = server.status(&row[1]).json();
        assert_eq!(status["state"], "assigned");
        assert_eq!(status["recipient"], row[0].as_str());
    }

    // Resuming is running it again: the same codes, all `existing`.
    let again = success(&run_assign(&server, &server.issuer, "news", &file, &[]));
    assert_eq!(again.len(), got.len());
    for (a, b) in got.iter().zip(&again).skip(1) {
        assert_eq!((&a[0], &a[1], b[2].as_str()), (&b[0], &b[1], "existing"));
    }
    assert_eq!(server.stats("news")["assigned"], 20_002);

    // Progress on request, to stderr only; the token from the environment.
    let shown = Command::new(common::bin())
        .arg("assign")
        .args(["--url", &format!("http://{}", server.addr)])
        .args(["--campaign", "news", "--progress"])
        .arg(&file)
        .env("REDEEMD_TOKEN", &server.issuer)
        .output()
        .expect("redeemd assign runs");
    assert_eq!(success(&shown), again);
    let progress = String::from_utf8_lossy(&shown.stderr);
    assert!(progress.contains("20003 / 20003 rows"), "{progress}");
}

#[test]
fn assign_exits_non_zero_with_the_servers_error() {
    let server = Server::start();
    server.create_campaign(json!({"id": "small", "generate": 2}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();

    #[track_caller]
    fn check(out: &Output, wanted: &[&str]) {
        assert!(!out.status.success(), "assign should have failed");
        assert!(
            out.stdout.is_empty(),
            "no rows: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for w in wanted {
            assert!(stderr.contains(w), "{w:?} not in {stderr:?}");
        }
    }
    check(
        &run_assign(&server, "not-a-token", "small", &file, &[]),
        &["401 unauthenticated", "Bearer"],
    );
    check(
        &run_assign(&server, &server.checkout, "small", &file, &[]),
        &["403 forbidden"],
    );
    check(
        &run_assign(&server, &server.issuer, "nope", &file, &[]),
        &["404 unknown_campaign"],
    );
    check(
        &run_assign(
            &server,
            &server.issuer,
            "small",
            &file,
            &["--all-or-nothing"],
        ),
        &["409 pool_exhausted", "needed=3", "available=2"],
    );
    assert_eq!(
        server.stats("small")["assigned"],
        0,
        "all or nothing assigned nothing"
    );
    let tokenless = Command::new(common::bin())
        .args([
            "assign",
            "--url",
            &format!("http://{}", server.addr),
            "--campaign",
            "small",
        ])
        .arg(&file)
        .env_remove("REDEEMD_TOKEN")
        .output()
        .unwrap();
    check(&tokenless, &["--token or REDEEMD_TOKEN"]);
    let https = Command::new(common::bin())
        .args([
            "assign",
            "--url",
            "https://localhost:1",
            "--token",
            "t",
            "--campaign",
            "c",
        ])
        .arg(&file)
        .output()
        .unwrap();
    check(&https, &["https is not supported"]);

    // Without all-or-nothing the pool runs out part-way: the rows show it,
    // and the command still succeeds since every line got its row.
    let got = success(&run_assign(&server, &server.issuer, "small", &file, &[]));
    let status: Vec<&str> = got[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(status, ["created", "created", "pool_exhausted"]);
}

/// A stand-in server that reads the request, then answers 200 with fewer
/// rows than the file has lines (as redeemd does when a job stops: the
/// campaign paused, the log failed), ending the chunked body cleanly.
#[test]
fn assign_fails_when_the_answer_stops_before_the_last_line() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let rows = "recipient,code,status\na,CODE-1,created\n";
        write!(
            &stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/csv\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{rows}\r\n0\r\n\r\n",
            rows.len()
        )
        .unwrap();
        body
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("r.txt");
    std::fs::write(&file, "a\nb\nc\n").unwrap();
    let out = Command::new(common::bin())
        .args([
            "assign",
            "--url",
            &format!("http://{addr}"),
            "--token",
            "t",
            "--campaign",
            "c",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(fake.join().unwrap(), b"a\nb\nc\n", "the file is sent as is");
    assert!(!out.status.success());
    assert_eq!(
        out.stdout, b"recipient,code,status\na,CODE-1,created\n",
        "what arrived is printed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stopped after 1 of 3 rows"), "{stderr}");
    assert!(stderr.contains("run the command again"), "{stderr}");
}
