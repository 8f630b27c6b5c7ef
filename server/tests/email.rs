//! Email campaigns through the real binary: reclaim of bounced recipients
//! (single and bulk), bulk assignment from a recipient file, and the merge
//! file. Each answer is checked against the state the server reports, and
//! across a restart, so what was answered was durable.

mod common;

use common::{Role, Server};
use serde_json::{Value, json};

/// Events of `/v1/events`, one JSON value a line.
fn events(server: &Server) -> Vec<Value> {
    server
        .get(Role::Admin, "/v1/events")
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("event is JSON"))
        .collect()
}

fn assign(server: &Server, campaign: &str, recipient: &str) -> String {
    let r = server.post(
        Role::Issuer,
        &format!("/v1/campaigns/{campaign}/assignments"),
        &json!({ "recipient": recipient }),
    );
    assert!([200, 201].contains(&r.status), "{}", r.text());
    r.json()["code"].as_str().unwrap().to_owned()
}

#[test]
fn reclaim_releases_unused_codes_keeps_used_ones_and_survives_restart() {
    let mut server = Server::start();
    server.create_campaign(json!({"id": "mail", "generate": 10, "per_recipient_limit": 2}));
    let a1 = assign(&server, "mail", "ann@example.com");
    let a2 = assign(&server, "mail", "ann@example.com");
    let bob = assign(&server, "mail", "bob+x@example.com");
    server.redeem(&a2, "u1").expect(201, None);

    let path = "/v1/campaigns/mail/assignments/ann%40example.com";
    let r = server.call(Role::Issuer, "DELETE", path, None);
    r.expect(200, None);
    assert_eq!(
        r.json(),
        json!({"recipient": "ann@example.com", "released": [a1], "kept": [{"code": a2, "state": "redeemed"}]})
    );
    assert_eq!(server.status(&a1).json()["state"], "available");
    // Only the redeemed code is left, so a repeat keeps it and releases none.
    let again = server.call(Role::Issuer, "DELETE", path, None);
    again.expect(200, None);
    assert_eq!(again.json()["released"], json!([]));

    let r = server.call(
        Role::Issuer,
        "DELETE",
        "/v1/campaigns/mail/assignments/bob+x@example.com?void=true",
        None,
    );
    r.expect(200, None);
    assert_eq!(r.json()["released"], json!([bob]));
    assert_eq!(server.status(&bob).json()["state"], "voided");

    // Errors come from the one table.
    let base = "/v1/campaigns/mail/assignments";
    server
        .call(Role::Issuer, "DELETE", &format!("{base}/nobody"), None)
        .expect(404, Some("unknown_recipient"));
    server
        .call(
            Role::Issuer,
            "DELETE",
            "/v1/campaigns/nope/assignments/x",
            None,
        )
        .expect(404, Some("unknown_campaign"));
    server
        .call(
            Role::Issuer,
            "DELETE",
            &format!("{base}/x?void=maybe"),
            None,
        )
        .expect(400, Some("invalid_request"));
    server
        .call(Role::Checkout, "DELETE", &format!("{base}/x"), None)
        .expect(403, Some("forbidden"));

    let unassigned: Vec<Value> = events(&server)
        .into_iter()
        .filter(|e| e["kind"] == "unassigned")
        .collect();
    assert_eq!(unassigned.len(), 2, "{unassigned:?}");
    assert_eq!(unassigned[0]["recipient"], "ann@example.com");
    assert_eq!(unassigned[0]["code"], a1);
    assert_eq!(unassigned[1]["void"], true);

    // The count dropped: ann gets a fresh code next to its redeemed one.
    let fresh = assign(&server, "mail", "ann@example.com");
    assert_ne!(fresh, a2);
    let before = server.stats("mail");
    let a1_before = server.status(&a1).json();
    server.kill9();
    server.restart();
    assert_eq!(server.stats("mail")["assigned"], before["assigned"]);
    assert_eq!(server.status(&a1).json(), a1_before);
    assert_eq!(server.status(&bob).json()["state"], "voided");
    assert_eq!(server.status(&fresh).json()["recipient"], "ann@example.com");
}

/// Posts a recipient file to a bulk route.
fn post_file(server: &Server, path: &str, content_type: &str, body: &[u8]) -> common::Response {
    server.raw(
        Some(Role::Issuer),
        "POST",
        path,
        &[("Content-Type", content_type)],
        body,
    )
}

/// CSV rows of an answer, header first, fields unquoted.
fn rows(text: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text);
    reader
        .byte_records()
        .map(|r| {
            r.unwrap()
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .collect()
}

fn merge_file(server: &Server, campaign: &str) -> Vec<Vec<String>> {
    let r = server.get(
        Role::Issuer,
        &format!("/v1/campaigns/{campaign}/assignments"),
    );
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some("text/csv"));
    rows(&r.body)
}

#[test]
fn bulk_assign_writes_a_row_a_line_and_a_repeat_changes_nothing() {
    let server = Server::start();
    server.create_campaign(json!({"id": "b", "generate": 20, "test_recipients": ["qa@x"]}));
    let long = "l".repeat(300);
    let file = format!(
        "recipient\r\nann@x\r\n\r\n\"bob, jr\"@x\r\nann@x\r\nqa@x\r\n,second column\r\n{long}\r\n\"multi\nline\"\r\n"
    );
    let mut body = file.into_bytes();
    body.extend_from_slice(b"\xff\xfe\n");
    let path = "/v1/campaigns/b/assignments/bulk";
    let r = post_file(&server, path, "text/csv", &body);
    r.expect(200, None);
    assert_eq!(r.header("content-type"), Some("text/csv"));
    let got = rows(&r.body);
    assert_eq!(got[0], ["recipient", "code", "status"]);
    let status: Vec<(&str, &str)> = got[1..]
        .iter()
        .map(|row| (row[0].as_str(), row[2].as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("ann@x", "created"),
            ("bob, jr@x", "created"),
            ("ann@x", "existing"),
            ("qa@x", "test"),
            ("", "invalid_recipient"),
            (long.as_str(), "invalid_recipient"),
            ("multi\nline", "created"),
            ("\u{fffd}\u{fffd}", "invalid_recipient"),
        ]
    );
    assert_eq!(got[1][1], got[3][1], "a repeated recipient gets its code");
    for row in &got[5..7] {
        assert_eq!(row[1], "", "a failed line has no code");
    }
    // The merge file lists every assignment; a resend changes nothing.
    let merged = merge_file(&server, "b");
    assert_eq!(merged[0], ["recipient", "code", "state", "assigned_at"]);
    assert_eq!(merged.len(), 1 + 4);
    let again = rows(&post_file(&server, path, "text/plain", &body).body);
    for (first, second) in got.iter().zip(&again).skip(1) {
        if first[2] != "test" {
            assert_eq!(first[..2], second[..2]);
            assert!(["existing", "invalid_recipient"].contains(&second[2].as_str()));
        }
    }
    // Only the test recipient took a new code.
    assert_eq!(merge_file(&server, "b").len(), merged.len() + 1);

    // Bad files are 4xx, never 5xx.
    post_file(&server, path, "application/json", b"[]").expect(415, Some("unsupported_media_type"));
    post_file(
        &server,
        "/v1/campaigns/nope/assignments/bulk",
        "text/csv",
        b"a\n",
    )
    .expect(404, Some("unknown_campaign"));
    post_file(
        &server,
        &format!("{path}?all_or_nothing=2"),
        "text/csv",
        b"a\n",
    )
    .expect(400, Some("invalid_request"));
    let huge = vec![b'a'; (65 << 20) as usize];
    let r = post_file(&server, path, "text/csv", &huge);
    assert_eq!(r.status, 413, "{}", r.text());
    let r = post_file(
        &server,
        &format!("{path}?all_or_nothing=true"),
        "text/csv",
        &huge,
    );
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn a_file_larger_than_the_pool_gets_pool_exhausted_rows_or_nothing() {
    let server = Server::start();
    server.create_campaign(json!({"id": "s", "generate": 3}));
    let path = "/v1/campaigns/s/assignments/bulk";
    let file = b"a\nb\nc\nd\n";
    let r = post_file(
        &server,
        &format!("{path}?all_or_nothing=true"),
        "text/csv",
        file,
    );
    r.expect(409, Some("pool_exhausted"));
    assert_eq!(
        (
            r.json()["error"]["needed"].as_u64(),
            r.json()["error"]["available"].as_u64()
        ),
        (Some(4), Some(3))
    );
    assert_eq!(merge_file(&server, "s").len(), 1, "nothing was assigned");
    let got = rows(&post_file(&server, path, "text/csv", file).body);
    let status: Vec<&str> = got[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(status, ["created", "created", "created", "pool_exhausted"]);

    // Bulk reclaim: two back, then an unknown recipient.
    server.redeem(&got[2][1], "u").expect(201, None);
    let r = post_file(
        &server,
        "/v1/campaigns/s/assignments/reclaim?void=true",
        "text/csv",
        b"a\nb\nzed\n",
    );
    r.expect(200, None);
    let back = rows(&r.body);
    assert_eq!(back[0], ["recipient", "code", "status"]);
    assert_eq!(back[1], ["a", got[1][1].as_str(), "voided"]);
    assert_eq!(back[2], ["b", got[2][1].as_str(), "kept_redeemed"]);
    assert_eq!(back[3], ["zed", "", "unknown_recipient"]);
    let r = post_file(
        &server,
        "/v1/campaigns/s/assignments/reclaim",
        "text/csv",
        b"c\n",
    );
    assert_eq!(rows(&r.body)[1], ["c", got[3][1].as_str(), "released"]);
    let merged = merge_file(&server, "s");
    assert_eq!(
        merged.len(),
        2,
        "only b's redeemed code is still assigned: {merged:?}"
    );
    assert_eq!(merged[1][2], "redeemed");
}

#[test]
fn two_all_or_nothing_files_that_do_not_both_fit_one_wins_whole() {
    let server = Server::start();
    server.create_campaign(json!({"id": "race", "generate": 1500}));
    let file = |tag: &str| {
        (0..1000)
            .map(|i| format!("{tag}{i}@x\n"))
            .collect::<String>()
            .into_bytes()
    };
    let path = "/v1/campaigns/race/assignments/bulk?all_or_nothing=true";
    let (a, b) = (file("a"), file("b"));
    let results: Vec<common::Response> = std::thread::scope(|s| {
        let ta = s.spawn(|| post_file(&server, path, "text/csv", &a));
        let tb = s.spawn(|| post_file(&server, path, "text/csv", &b));
        vec![ta.join().unwrap(), tb.join().unwrap()]
    });
    let won: Vec<&common::Response> = results.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let lost = results.iter().find(|r| r.status != 200).unwrap();
    lost.expect(409, Some("pool_exhausted"));
    let got = rows(&won[0].body);
    assert_eq!(got.len(), 1001);
    assert!(got[1..].iter().all(|r| r[2] == "created"));
    assert_eq!(merge_file(&server, "race").len(), 1001);
}

/// Lines of the large test: `BULK_TEST_LINES` (1,000,000 for the full
/// run; 50,000 by default so a debug build stays quick).
fn bulk_lines() -> usize {
    std::env::var("BULK_TEST_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

#[test]
fn a_large_file_assigns_distinct_codes_that_match_the_merge_file() {
    let n = bulk_lines();
    let server = Server::start();
    server.create_campaign(json!({"id": "big", "generate": n + 10}));
    let body: Vec<u8> = (0..n)
        .map(|i| format!("user{i}@example.com\n"))
        .collect::<String>()
        .into_bytes();
    let path = "/v1/campaigns/big/assignments/bulk";
    let started = std::time::Instant::now();
    let r = post_file(&server, path, "text/csv", &body);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "bulk assign of {n} lines: {seconds:.2} s, {:.0} lines/s",
        n as f64 / seconds
    );
    r.expect(200, None);
    let got = rows(&r.body);
    assert_eq!(got.len(), n + 1);
    let mut codes = std::collections::HashMap::new();
    for (i, row) in got[1..].iter().enumerate() {
        assert_eq!(row[0], format!("user{i}@example.com"));
        assert_eq!(row[2], "created");
        assert!(
            codes.insert(row[1].clone(), row[0].clone()).is_none(),
            "code given twice"
        );
    }
    let merged = merge_file(&server, "big");
    assert_eq!(merged.len(), n + 1);
    for row in &merged[1..] {
        assert_eq!(codes.get(&row[1]), Some(&row[0]));
        assert_eq!(row[2], "assigned");
    }
    // A resend changes nothing.
    let again = rows(&post_file(&server, path, "text/csv", &body).body);
    assert!(
        again[1..]
            .iter()
            .zip(&got[1..])
            .all(|(a, b)| a[1] == b[1] && a[2] == "existing")
    );
    assert_eq!(server.stats("big")["assigned"], n as u64);
}

/// Reads a chunked response until at least `rows` lines of body arrived;
/// returns the complete lines read so far.
fn read_some_rows(server: &Server, path: &str, body: Vec<u8>, rows: usize) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
        server.token(Role::Issuer),
        body.len()
    );
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        // The server dies mid-file: a failed write is expected.
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        assert!(!line.starts_with("HTTP/1.1 5"), "{line}");
    }
    let mut text = Vec::new();
    while text.iter().filter(|b| **b == b'\n').count() < rows {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let size = usize::from_str_radix(line.trim(), 16).unwrap();
        assert!(size > 0, "the answer ended early");
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        text.extend_from_slice(&chunk[..size]);
    }
    let text = String::from_utf8(text).unwrap();
    let complete = text.rfind('\n').unwrap();
    text[..complete].lines().map(str::to_owned).collect()
}

#[test]
fn kill_9_mid_file_loses_no_row_the_client_received() {
    // Over two batches, so the kill lands mid-file.
    let n = 20_000;
    let mut server = Server::start();
    server.create_campaign(json!({"id": "crash", "generate": n + 10}));
    let body: Vec<u8> = (0..n)
        .map(|i| format!("r{i}\n"))
        .collect::<String>()
        .into_bytes();
    let path = "/v1/campaigns/crash/assignments/bulk";
    let received = read_some_rows(&server, path, body.clone(), 1000);
    server.kill9();
    server.restart();
    assert_eq!(received[0], "recipient,code,status");
    assert!(
        received.len() > 1000 && received.len() < n + 1,
        "{}",
        received.len()
    );
    let again = rows(&post_file(&server, path, "text/csv", &body).body);
    assert_eq!(again.len(), n + 1);
    for (got, now) in received[1..].iter().zip(&again[1..]) {
        let got: Vec<&str> = got.split(',').collect();
        assert_eq!(got[2], "created");
        assert_eq!((got[0], got[1]), (now[0].as_str(), now[1].as_str()));
        assert_eq!(
            now[2], "existing",
            "a received row's code survived the crash"
        );
    }
}
