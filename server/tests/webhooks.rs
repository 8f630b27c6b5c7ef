//! Webhook deliveries against a real receiver: a small HTTP/1.1 server on
//! 127.0.0.1 (port 0) in the test, which can fail deliveries, hang past
//! the timeout or answer `410`. The real `redeemd` runs as a child with
//! the hidden `--webhook-test-time-scale`, so its workers' timeout and
//! backoff (and three days of failure) pass in a fraction of real time.
//!
//! Proven here: every durable event after a subscription's start arrives
//! at least once, in LSN order, byte for byte as `/v1/events` renders it,
//! correctly signed; no delivery overlaps the one before; a kill -9 mid
//! stream re-sends at most the delivery in flight and loses nothing;
//! filters, pause and resume, rewind, `410` and three days of failure.
//! Over TLS too: the same receiver behind rustls, with a self-signed
//! certificate the server trusts through `--webhook-ca-file`, gets its
//! deliveries, and one it does not trust gets none and a TLS `last_error`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Role, Server, wait_until};
use serde_json::{Value, json};

/// How the receiver answers the n-th delivery (from 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// 200 after `delay_ms`.
    Ok { delay_ms: u64 },
    /// A third fail with 500, one in seven (of the rest) hangs until the
    /// sender gives up, the others succeed.
    Flaky,
    /// Always this status.
    Always(u16),
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    /// The status answered; `None` when it hung.
    answered: Option<u16>,
}

impl Delivery {
    fn range(&self) -> (u64, u64) {
        let (a, b) = self.headers["redeemd-delivery"].split_once('-').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    }

    fn ok(&self) -> bool {
        self.answered.is_some_and(|s| (200..300).contains(&s))
    }

    fn events(&self) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&self.body).unwrap();
        body["events"].as_array().unwrap().clone()
    }
}

struct Receiver {
    addr: SocketAddr,
    /// Whether it speaks TLS, and so which scheme its URL has.
    tls: bool,
    mode: Arc<Mutex<Mode>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Deliveries being handled now, and the most ever at once.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(mode: Mode) -> Receiver {
        Receiver::start_with(mode, None)
    }

    /// A receiver behind TLS, presenting `cert` (made for 127.0.0.1).
    fn start_tls(mode: Mode, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> Receiver {
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key.into())
        .unwrap();
        Receiver::start_with(mode, Some(Arc::new(config)))
    }

    fn start_with(mode: Mode, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            tls: tls.is_some(),
            mode: Arc::new(Mutex::new(mode)),
            deliveries: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let (mode, deliveries) = (receiver.mode.clone(), receiver.deliveries.clone());
        let (in_flight, max) = (receiver.in_flight.clone(), receiver.max_in_flight.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (mode, deliveries) = (mode.clone(), deliveries.clone());
                let (in_flight, max) = (in_flight.clone(), max.clone());
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let tcp = stream.try_clone().unwrap();
                    let counters = (&*in_flight, &*max);
                    match tls {
                        // The handshake happens on the first read; one
                        // the client gives up on ends the connection
                        // before any delivery is recorded.
                        Some(config) => {
                            let conn = rustls::ServerConnection::new(config).unwrap();
                            let stream = rustls::StreamOwned::new(conn, stream);
                            serve(stream, &tcp, &mode, &deliveries, counters);
                        }
                        None => serve(stream, &tcp, &mode, &deliveries, counters),
                    }
                });
            }
        });
        receiver
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/hook", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// LSNs of the events received in acknowledged deliveries
    /// (`events_dropped` has none).
    fn acked_lsns(&self) -> BTreeSet<u64> {
        self.deliveries()
            .iter()
            .filter(|d| d.ok())
            .flat_map(|d| d.events())
            .filter_map(|e| e["lsn"].as_u64())
            .collect()
    }
}

/// Handles the requests of one connection (keep-alive) until it closes:
/// `stream` is the connection as read and written (in the clear or
/// through TLS), `tcp` its socket, for timeouts.
fn serve(
    stream: impl Read + Write,
    tcp: &TcpStream,
    mode: &Mutex<Mode>,
    deliveries: &Mutex<Vec<Delivery>>,
    (in_flight, max): (&AtomicUsize, &AtomicUsize),
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max.fetch_max(now, Ordering::SeqCst);
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let n = {
            let mut all = deliveries.lock().unwrap();
            all.push(Delivery {
                headers,
                body,
                answered: None,
            });
            all.len() - 1
        };
        let status = match *mode.lock().unwrap() {
            Mode::Ok { delay_ms } => {
                std::thread::sleep(Duration::from_millis(delay_ms));
                Some(200)
            }
            Mode::Always(status) => Some(status),
            Mode::Flaky if n % 3 == 1 => Some(500),
            Mode::Flaky if n % 7 == 3 => None,
            Mode::Flaky => Some(200),
        };
        let Some(status) = status else {
            // Hang until the sender gives up and closes the connection.
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        deliveries.lock().unwrap()[n].answered = Some(status);
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        let writer = reader.get_mut();
        if writer.write_all(head.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `Redeemd-Signature` the way docs/webhooks.md tells receivers to.
#[track_caller]
fn check_signature(secret: &str, d: &Delivery) {
    let header = &d.headers["redeemd-signature"];
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut mac = ring::hmac::Context::with_key(&key);
    mac.update(format!("{t}.").as_bytes());
    mac.update(&d.body);
    assert_eq!(hex(mac.sign().as_ref()), v1, "signature");
}

fn create_hook(server: &Server, body: Value) -> Value {
    let r = server.post(Role::Admin, "/v1/webhooks", &body);
    r.expect(201, None);
    r.json()
}

/// `/v1/events` lines after `after`, raw, by LSN.
fn event_lines(server: &Server, after: u64) -> BTreeMap<u64, String> {
    let r = server.get(
        Role::Admin,
        &format!("/v1/events?after={after}&limit=10000"),
    );
    r.expect(200, None);
    r.text()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["lsn"].as_u64().unwrap(), line.to_owned())
        })
        .collect()
}

/// The body a delivery of exactly these lines has.
fn expected_body(id: &str, lines: &[&String]) -> Vec<u8> {
    let joined: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
    format!("{{\"webhook\":\"{id}\",\"events\":[{}]}}", joined.join(",")).into_bytes()
}

fn redeem_all(server: &Server, codes: &[(String, String)], user: &str) {
    for (i, (code, _)) in codes.iter().enumerate() {
        server.redeem(code, &format!("{user}{i}")).expect(201, None);
    }
}

fn hook_state(server: &Server, id: &str) -> Value {
    let r = server.get(Role::Admin, &format!("/v1/webhooks/{id}"));
    r.expect(200, None);
    r.json()
}

#[test]
fn flaky_receiver_gets_every_event_in_order_signed_and_never_overlapped() {
    let server = Server::start_with(&["--webhook-test-time-scale", "10"]);
    let receiver = Receiver::start(Mode::Flaky);
    server.create_campaign(json!({"id": "s", "generate": 200, "code": {"prefix": "S"}}));
    let hook = create_hook(&server, json!({"url": receiver.url(), "events": ["*"]}));
    let (id, secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap(),
    );
    let start = hook["cursor_lsn"].as_u64().unwrap();
    assert!(secret.starts_with("whsec_"));
    // Reads never show the secret.
    assert!(
        !server
            .get(Role::Admin, "/v1/webhooks")
            .text()
            .contains(secret)
    );
    let codes = server.codes("s", None);
    // In rounds, each waited out, so there are enough deliveries for the
    // receiver's pattern of failures and hangs to show.
    for round in 0..6 {
        redeem_all(
            &server,
            &codes[round * 10..round * 10 + 10],
            &format!("u{round}_"),
        );
        if round == 3 {
            server.create_campaign(json!({"id": "t", "generate": 5, "code": {"prefix": "T"}}));
        }
        let so_far: BTreeSet<u64> = event_lines(&server, start).keys().copied().collect();
        assert!(wait_until(Duration::from_secs(60), || receiver
            .acked_lsns()
            .is_superset(&so_far)));
    }
    let expected = event_lines(&server, start);
    assert!(expected.len() >= 61);
    let want: BTreeSet<u64> = expected.keys().copied().collect();
    assert!(
        wait_until(Duration::from_secs(60), || receiver
            .acked_lsns()
            .is_superset(&want)),
        "missing {:?}; log: {}",
        want.difference(&receiver.acked_lsns()).collect::<Vec<_>>(),
        server.log_tail()
    );
    let deliveries = receiver.deliveries();
    let failed = deliveries.iter().filter(|d| !d.ok()).count();
    let hung = deliveries.iter().filter(|d| d.answered.is_none()).count();
    assert!(failed >= 2 && hung >= 1, "{failed} failed, {hung} hung");
    let mut previous: Option<&Delivery> = None;
    for d in &deliveries {
        check_signature(secret, d);
        assert_eq!(d.headers["redeemd-webhook-id"], id);
        assert_eq!(d.headers["content-type"], "application/json");
        let (first, last) = d.range();
        // Byte for byte the lines of /v1/events in that range.
        let lines: Vec<&String> = expected.range(first..=last).map(|(_, l)| l).collect();
        assert_eq!(
            String::from_utf8_lossy(&d.body),
            String::from_utf8_lossy(&expected_body(id, &lines))
        );
        if let Some(p) = previous {
            if p.ok() {
                assert!(first > p.range().1, "in LSN order after a success");
            } else {
                assert_eq!(first, p.range().0, "a failure is retried from its start");
            }
        }
        previous = Some(d);
    }
    assert_eq!(receiver.max_in_flight.load(Ordering::SeqCst), 1);
    // The metrics count them.
    let metrics = server.get(Role::Admin, "/metrics").text();
    assert!(metrics.contains(&format!(
        "redeemd_webhook_failures_total{{webhook=\"{id}\"}} {failed}"
    )));
    assert!(metrics.contains("redeemd_webhook_delivery_seconds_bucket"));
    // The last acknowledgement settles (its cursor durable) just after the
    // receiver answered it.
    assert!(wait_until(Duration::from_secs(10), || hook_state(
        &server, id
    )["consecutive_failures"]
        == 0));
    assert!(hook_state(&server, id)["secret"].is_null());
}

#[test]
fn kill_9_mid_stream_resends_at_most_the_delivery_in_flight() {
    let mut server = Server::start_with(&["--webhook-test-time-scale", "10"]);
    // Slow acknowledgements keep a delivery in flight most of the time.
    let receiver = Receiver::start(Mode::Ok { delay_ms: 30 });
    server.create_campaign(json!({"id": "s", "generate": 400}));
    // Created under an Idempotency-Key: the stored answer holds the secret.
    let body = serde_json::to_vec(&json!({"url": receiver.url(), "events": ["redeemed"]})).unwrap();
    let headers = [
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "hook-1"),
    ];
    let r = server.raw(Some(Role::Admin), "POST", "/v1/webhooks", &headers, &body);
    r.expect(201, None);
    let hook = r.json();
    let again = server.raw(Some(Role::Admin), "POST", "/v1/webhooks", &headers, &body);
    assert_eq!(again.body, r.body, "a retry gets the same subscription");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let start = hook["cursor_lsn"].as_u64().unwrap();
    let codes = server.codes("s", None);
    for (i, (code, _)) in codes[..150].iter().enumerate() {
        server.redeem(code, &format!("u{i}")).expect(201, None);
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // At least one delivery acknowledged before the kill. (Not a number of
    // them: a worker following a busy log batches what has gathered, so
    // how many deliveries 150 redemptions make depends on the machine.)
    assert!(wait_until(Duration::from_secs(20), || !receiver
        .deliveries()
        .is_empty()));
    server.kill9();
    let before = receiver.deliveries().len();
    // `wal dump` never prints the secret.
    let dump = std::process::Command::new(common::bin())
        .args(["wal", "dump", "--json", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("webhook_created") && !dump.contains(&secret));
    assert!(!dump.contains(&secret["whsec_".len()..]));
    server.restart();
    redeem_all(&server, &codes[150..200], "v");
    let want: BTreeSet<u64> = event_lines(&server, start)
        .into_iter()
        .filter(|(_, l)| l.contains("\"kind\":\"redeemed\""))
        .map(|(lsn, _)| lsn)
        .collect();
    assert_eq!(want.len(), 200);
    assert!(
        wait_until(Duration::from_secs(60), || receiver
            .acked_lsns()
            .is_superset(&want)),
        "log: {}",
        server.log_tail()
    );
    let deliveries = receiver.deliveries();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &deliveries {
        for e in d.events() {
            *seen.entry(e["lsn"].as_u64().unwrap()).or_default() += 1;
        }
    }
    let repeated: Vec<u64> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(l, _)| *l)
        .collect();
    // Only the last delivery before the kill may come again.
    let (first, last) = deliveries[before - 1].range();
    assert!(
        repeated.iter().all(|l| (first..=last).contains(l)),
        "repeated {repeated:?} outside the delivery in flight {first}-{last}"
    );
    assert_eq!(receiver.max_in_flight.load(Ordering::SeqCst), 1);
}

#[test]
fn filters_pause_resume_rewind_and_410() {
    let server = Server::start_with(&["--webhook-test-time-scale", "10"]);
    let receiver = Receiver::start(Mode::Ok { delay_ms: 0 });
    server.create_campaign(json!({"id": "a", "generate": 50, "code": {"prefix": "A"}}));
    server.create_campaign(json!({"id": "b", "generate": 50, "code": {"prefix": "B"}}));
    // Bad input is refused naming the field.
    for (body, field) in [
        (json!({"url": "ftp://x/", "events": ["*"]}), "url"),
        (
            json!({"url": "http://example.com/", "events": ["*"]}),
            "url",
        ),
        (
            json!({"url": "https://user:pw@example.com/", "events": ["*"]}),
            "url",
        ),
        (json!({"url": receiver.url(), "events": ["nope"]}), "events"),
        (json!({"url": receiver.url(), "events": []}), "events"),
        (
            json!({"url": receiver.url(), "events": ["*"], "campaigns": ["zz"]}),
            "campaigns",
        ),
    ] {
        let r = server.post(Role::Admin, "/v1/webhooks", &body);
        r.expect(400, Some("invalid_request"));
        assert_eq!(r.json()["error"]["field"], field, "{body}");
    }
    server
        .post(Role::Checkout, "/v1/webhooks", &json!({}))
        .expect(403, Some("forbidden"));
    let hook = create_hook(
        &server,
        json!({"url": receiver.url(), "events": ["redeemed"], "campaigns": ["a"]}),
    );
    let id = hook["id"].as_str().unwrap().to_owned();
    let start = hook["cursor_lsn"].as_u64().unwrap();
    let (a, b) = (server.codes("a", None), server.codes("b", None));
    redeem_all(&server, &a[..5], "x");
    redeem_all(&server, &b[..5], "y");
    server
        .call(
            Role::Admin,
            "POST",
            &format!("/v1/codes/{}/void", a[10].0),
            Some(&json!({})),
        )
        .expect(200, None);
    let wanted = |after: u64| -> BTreeSet<u64> {
        event_lines(&server, after)
            .into_iter()
            .filter(|(_, l)| {
                l.contains("\"kind\":\"redeemed\"") && l.contains("\"campaign\":\"a\"")
            })
            .map(|(lsn, _)| lsn)
            .collect()
    };
    let want = wanted(start);
    assert_eq!(want.len(), 5);
    assert!(wait_until(Duration::from_secs(20), || receiver
        .acked_lsns()
        == want));
    // Filtered-out events still move the cursor, in one record at most a
    // few seconds of worker time later.
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, &id
    )["cursor_lsn"]
        .as_u64()
        .unwrap()
        > *want.last().unwrap()));
    // Paused: nothing is delivered; resumed: the rest arrives.
    let r = server.call(
        Role::Admin,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&json!({"status": "paused"})),
    );
    r.expect(200, None);
    assert_eq!(r.json()["status"], "paused");
    let count = receiver.deliveries().len();
    redeem_all(&server, &a[5..8], "z");
    assert!(wait_until(Duration::from_secs(10), || hook_state(
        &server, &id
    )["lag_events"]
        .as_u64()
        .unwrap()
        >= 3));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.deliveries().len(), count, "paused");
    server
        .call(
            Role::Admin,
            "PATCH",
            &format!("/v1/webhooks/{id}"),
            Some(&json!({"status": "active"})),
        )
        .expect(200, None);
    let want = wanted(start);
    assert_eq!(want.len(), 8);
    assert!(wait_until(Duration::from_secs(20), || receiver
        .acked_lsns()
        == want));
    // Rewind: everything after `start` is delivered again.
    let before = receiver.deliveries().len();
    server
        .post(
            Role::Admin,
            &format!("/v1/webhooks/{id}/rewind"),
            &json!({"after": start}),
        )
        .expect(200, None);
    assert!(wait_until(Duration::from_secs(20), || {
        let again: BTreeSet<u64> = receiver.deliveries()[before..]
            .iter()
            .filter(|d| d.ok())
            .flat_map(|d| d.events())
            .map(|e| e["lsn"].as_u64().unwrap())
            .collect();
        again == want
    }));
    server
        .post(
            Role::Admin,
            &format!("/v1/webhooks/{id}/rewind"),
            &json!({"after": 1u64 << 60}),
        )
        .expect(400, Some("invalid_request"));
    // A 410 disables it and writes a webhook_disabled event.
    receiver.set(Mode::Always(410));
    redeem_all(&server, &a[20..21], "g");
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, &id
    )["status"]
        == "disabled"));
    let events = event_lines(&server, start);
    let disabled: Vec<&String> = events
        .values()
        .filter(|l| l.contains("\"kind\":\"webhook_disabled\""))
        .collect();
    assert_eq!(disabled.len(), 1);
    assert!(disabled[0].contains(&id));
    // Deleted: gone from reads.
    server
        .call(Role::Admin, "DELETE", &format!("/v1/webhooks/{id}"), None)
        .expect(200, None);
    server
        .get(Role::Admin, &format!("/v1/webhooks/{id}"))
        .expect(404, Some("unknown_webhook"));
}

#[test]
fn three_days_of_failure_disable_a_webhook() {
    // 100,000 times the wall clock: three days pass in about 2.6 s.
    let server = Server::start_with(&["--webhook-test-time-scale", "100000"]);
    let receiver = Receiver::start(Mode::Always(500));
    server.create_campaign(json!({"id": "s", "generate": 5}));
    let hook = create_hook(&server, json!({"url": receiver.url(), "events": ["*"]}));
    let id = hook["id"].as_str().unwrap().to_owned();
    let codes = server.codes("s", None);
    server.redeem(&codes[0].0, "u").expect(201, None);
    assert!(wait_until(Duration::from_secs(30), || hook_state(
        &server, &id
    )["status"]
        == "disabled"));
    let state = hook_state(&server, &id);
    assert!(
        state["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("3 days")
    );
    // Backoff doubled up to its cap: about 10 doublings, then at most one
    // attempt every 10 minutes, 432 in 3 days (fewer here, where each
    // attempt's own real time is minutes of the sped-up clock).
    let attempts = receiver.deliveries().len();
    assert!((20..=445).contains(&attempts), "{attempts} attempts");
}

/// A self-signed certificate for 127.0.0.1 named `name`: distinct names,
/// so the untrusted one's issuer is unknown rather than a trusted name
/// with a signature that does not verify.
fn receiver_cert(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    rcgen::CertifiedKey { cert, signing_key }
}

#[test]
fn https_deliveries_to_a_trusted_receiver_and_a_tls_error_for_an_untrusted_one() {
    let trusted = receiver_cert("trusted receiver");
    let untrusted = receiver_cert("untrusted receiver");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("receivers.pem");
    std::fs::write(&ca_file, trusted.cert.pem()).unwrap();
    let server = Server::start_with(&[
        "--webhook-test-time-scale",
        "10",
        "--webhook-ca-file",
        ca_file.to_str().unwrap(),
    ]);
    let good = Receiver::start_tls(Mode::Ok { delay_ms: 0 }, &trusted);
    let bad = Receiver::start_tls(Mode::Ok { delay_ms: 0 }, &untrusted);
    assert!(good.url().starts_with("https://127.0.0.1:"));
    server.create_campaign(json!({"id": "s", "generate": 20, "code": {"prefix": "S"}}));
    let hook = create_hook(&server, json!({"url": good.url(), "events": ["*"]}));
    let (id, secret) = (
        hook["id"].as_str().unwrap(),
        hook["secret"].as_str().unwrap(),
    );
    let start = hook["cursor_lsn"].as_u64().unwrap();
    let other = create_hook(&server, json!({"url": bad.url(), "events": ["*"]}));
    let other_id = other["id"].as_str().unwrap();
    redeem_all(&server, &server.codes("s", None)[..10], "u");
    let expected = event_lines(&server, start);
    assert!(expected.len() >= 10);
    let want: BTreeSet<u64> = expected.keys().copied().collect();
    assert!(
        wait_until(Duration::from_secs(30), || good
            .acked_lsns()
            .is_superset(&want)),
        "state {}; log: {}",
        hook_state(&server, id),
        server.log_tail()
    );
    for d in good.deliveries() {
        check_signature(secret, &d);
        assert_eq!(d.headers["redeemd-webhook-id"], id);
        let (first, last) = d.range();
        let lines: Vec<&String> = expected.range(first..=last).map(|(_, l)| l).collect();
        assert_eq!(
            String::from_utf8_lossy(&d.body),
            String::from_utf8_lossy(&expected_body(id, &lines))
        );
    }
    assert!(hook_state(&server, id)["last_error"].is_null());
    // The untrusted receiver: a failed delivery with the TLS error, backed
    // off and retried as any other, and not one request reached it.
    assert!(
        wait_until(
            Duration::from_secs(30),
            || hook_state(&server, other_id)["consecutive_failures"]
                .as_u64()
                .unwrap()
                >= 2
        ),
        "state {}",
        hook_state(&server, other_id)
    );
    let state = hook_state(&server, other_id);
    let error = state["last_error"].as_str().unwrap();
    assert!(error.starts_with("tls: certificate not trusted"), "{error}");
    assert!(state["next_attempt_at"].is_string(), "{state}");
    assert_eq!(state["status"], "active");
    assert!(state["lag_events"].as_u64().unwrap() > 0);
    assert!(bad.deliveries().is_empty());
}

#[test]
fn an_unusable_webhook_ca_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    for ca_file in [not_pem, dir.path().join("missing.pem")] {
        let out = std::process::Command::new(common::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--webhook-ca-file")
            .arg(&ca_file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--webhook-ca-file"), "{stderr}");
        // Refused before the data dir was made or a token printed.
        assert!(!dir.path().join("data").exists());
    }
}

/// `"LSN"` of the newest snapshot file in `server`'s log directory.
fn snapshot_lsn(server: &Server) -> Option<u64> {
    std::fs::read_dir(server.data_dir.join("wal"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_prefix("snapshot-")?
                .strip_suffix(".snap")?
                .parse()
                .ok()
        })
        .max()
}

fn patch_hook(server: &Server, id: &str, body: Value) -> Value {
    let r = server.call(
        Role::Admin,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(&body),
    );
    r.expect(200, None);
    r.json()
}

#[test]
fn every_event_kind_arrives_byte_for_byte_as_v1_events_renders_it() {
    let server = Server::start_with(&["--webhook-test-time-scale", "10"]);
    let receiver = Receiver::start(Mode::Ok { delay_ms: 0 });
    let gone = Receiver::start(Mode::Always(410));
    let hook = create_hook(&server, json!({"url": receiver.url(), "events": ["*"]}));
    let (id, start) = (
        hook["id"].as_str().unwrap().to_owned(),
        hook["cursor_lsn"].as_u64().unwrap(),
    );
    // campaign_created, codes_added (generated and imported), campaign_updated.
    server.create_campaign(json!({"id": "k", "generate": 10, "code": {"prefix": "K"},
        "low_stock_threshold": 7}));
    let imported = server.raw(
        Some(Role::Admin),
        "POST",
        "/v1/campaigns/k/codes",
        &[("Content-Type", "text/plain")],
        b"IMPORTED-CODE-1\nIMPORTED-CODE-2\n",
    );
    imported.expect(200, None);
    server
        .call(
            Role::Admin,
            "PATCH",
            "/v1/campaigns/k",
            Some(&json!({"low_stock_threshold": 11})),
        )
        .expect(200, None);
    let codes = server.codes("k", Some("available"));
    // assigned, unassigned.
    let assigned = server.call(
        Role::Issuer,
        "POST",
        "/v1/campaigns/k/assignments",
        Some(&json!({"recipient": "r1@example.com"})),
    );
    assigned.expect(201, None);
    server
        .call(
            Role::Issuer,
            "DELETE",
            "/v1/campaigns/k/assignments/r1@example.com",
            None,
        )
        .expect(200, None);
    // reserved, released; reserved and redeemed through the hold, with an
    // order and a user whose name needs escaping.
    let hold = |code: &str| -> String {
        let r = server.call(
            Role::Checkout,
            "POST",
            "/v1/reservations",
            Some(&json!({"code": code, "user": "\u{fc}ser \"q\"\t"})),
        );
        r.expect(201, None);
        r.json()["reservation"].as_str().unwrap().to_owned()
    };
    let first = hold(&codes[0].0);
    server
        .call(
            Role::Checkout,
            "DELETE",
            &format!("/v1/reservations/{first}"),
            None,
        )
        .expect(200, None);
    let second = hold(&codes[1].0);
    server
        .call(
            Role::Checkout,
            "POST",
            &format!("/v1/reservations/{second}/confirm"),
            Some(&json!({"order": "o\\1/\u{2028}"})),
        )
        .expect(201, None);
    // redeemed (low_stock once the pool is under 11), rolled_back, voided.
    server.redeem(&codes[2].0, "plain").expect(201, None);
    server.redeem(&codes[3].0, "plain2").expect(201, None);
    server
        .call(
            Role::Checkout,
            "POST",
            &format!("/v1/codes/{}/rollback", codes[3].0),
            Some(&json!({})),
        )
        .expect(200, None);
    server
        .call(
            Role::Admin,
            "POST",
            &format!("/v1/codes/{}/void", codes[4].0),
            Some(&json!({})),
        )
        .expect(200, None);
    // webhook_disabled, from a second subscription that gets a 410.
    let other = create_hook(&server, json!({"url": gone.url(), "events": ["redeemed"]}));
    server.redeem(&codes[5].0, "plain3").expect(201, None);
    let other_id = other["id"].as_str().unwrap();
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, other_id
    )["status"]
        == "disabled"));
    let expected = event_lines(&server, start);
    let kinds: BTreeSet<String> = expected
        .values()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for kind in [
        "campaign_created",
        "campaign_updated",
        "codes_added",
        "assigned",
        "unassigned",
        "reserved",
        "released",
        "redeemed",
        "rolled_back",
        "voided",
        "low_stock",
        "webhook_disabled",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
    let want: BTreeSet<u64> = expected.keys().copied().collect();
    assert!(
        wait_until(Duration::from_secs(30), || receiver
            .acked_lsns()
            .is_superset(&want)),
        "log: {}",
        server.log_tail()
    );
    for d in receiver.deliveries() {
        let (first, last) = d.range();
        let lines: Vec<&String> = expected.range(first..=last).map(|(_, l)| l).collect();
        assert_eq!(
            String::from_utf8_lossy(&d.body),
            String::from_utf8_lossy(&expected_body(&id, &lines))
        );
    }
}

#[test]
fn a_webhook_whose_events_retention_deleted_gets_one_events_dropped_and_then_the_rest() {
    // 64 KiB segments, a snapshot every few records, and a byte budget of
    // one segment, which an import of 6,000 codes goes over; time 1,000 times
    // as fast, so the backoff stays under a second.
    let server = Server::start_with(&[
        "--webhook-test-time-scale",
        "1000",
        "--segment-bytes",
        "65536",
        "--snapshot-every-records",
        "5",
        "--snapshot-every-seconds",
        "1",
        "--retain-log-bytes",
        "65536",
    ]);
    let receiver = Receiver::start(Mode::Always(500));
    server.create_campaign(json!({"id": "s", "generate": 50, "code": {"prefix": "S"}}));
    server.create_campaign(json!({"id": "fill", "generate": 0}));
    let hook = create_hook(&server, json!({"url": receiver.url(), "events": ["*"]}));
    let (id, start) = (
        hook["id"].as_str().unwrap().to_owned(),
        hook["cursor_lsn"].as_u64().unwrap(),
    );
    let codes = server.codes("s", None);
    redeem_all(&server, &codes[..5], "before");
    // The receiver fails, so the subscription lags behind these events.
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, &id
    )["consecutive_failures"]
        .as_u64()
        .unwrap()
        >= 2));
    let body: String = (0..6000).map(|i| format!("FILL-CODE-{i:08}\n")).collect();
    server
        .raw(
            Some(Role::Admin),
            "POST",
            "/v1/campaigns/fill/codes",
            &[("Content-Type", "text/plain")],
            body.as_bytes(),
        )
        .expect(200, None);
    // More records, so a snapshot covers the import.
    redeem_all(&server, &codes[5..15], "mid");
    // Retention deletes the segments the subscription still needs.
    let mut oldest = 0;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let r = server.get(Role::Admin, &format!("/v1/events?after={start}"));
            if r.status == 410 {
                oldest = r.json()["error"]["oldest_lsn"].as_u64().unwrap();
            }
            r.status == 410
        }),
        "the segments stayed: {:?}; log: {}",
        std::fs::read_dir(server.data_dir.join("wal"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect::<Vec<_>>(),
        server.log_tail()
    );
    assert!(oldest > start + 5);
    receiver.set(Mode::Ok { delay_ms: 0 });
    assert!(wait_until(Duration::from_secs(20), || receiver
        .deliveries()
        .iter()
        .any(|d| d.ok())));
    redeem_all(&server, &codes[15..20], "after");
    let after = event_lines(&server, oldest - 1);
    let want: BTreeSet<u64> = after.keys().copied().collect();
    assert!(want.len() >= 5);
    assert!(
        wait_until(Duration::from_secs(30), || receiver
            .acked_lsns()
            .is_superset(&want)),
        "log: {}",
        server.log_tail()
    );
    // One events_dropped for the gap, acknowledged once, alone in its
    // delivery, naming the LSNs after the cursor up to the oldest kept.
    let acked: Vec<Delivery> = receiver
        .deliveries()
        .into_iter()
        .filter(|d| d.ok())
        .collect();
    let marker = json!({"kind": "events_dropped", "from_lsn": start + 1, "to_lsn": oldest - 1});
    assert_eq!(acked[0].events(), vec![marker.clone()]);
    assert_eq!(acked[0].range(), (start + 1, oldest - 1));
    let dropped = acked
        .iter()
        .flat_map(|d| d.events())
        .filter(|e| e["kind"] == "events_dropped")
        .count();
    assert_eq!(dropped, 1);
    // Failed attempts at it named the same gap.
    for d in receiver.deliveries() {
        for e in d.events().iter().filter(|e| e["kind"] == "events_dropped") {
            assert_eq!(*e, marker);
        }
    }
    // Then the events after the gap, byte for byte, in LSN order.
    let mut previous = oldest - 1;
    for d in &acked[1..] {
        let (first, last) = d.range();
        assert!(first > previous, "in LSN order");
        previous = last;
        let lines: Vec<&String> = after.range(first..=last).map(|(_, l)| l).collect();
        assert_eq!(
            String::from_utf8_lossy(&d.body),
            String::from_utf8_lossy(&expected_body(&id, &lines))
        );
    }
    // The operator hears at error level.
    let log = common::strip_ansi(&server.log_tail());
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("log retention deleted events a webhook had not received")),
        "{log}"
    );
    assert!(wait_until(Duration::from_secs(10), || hook_state(
        &server, &id
    )["cursor_lsn"]
        .as_u64()
        .unwrap()
        >= *want.last().unwrap()));
}

#[test]
fn disabled_and_paused_webhooks_stay_so_across_a_snapshot_and_a_restart() {
    let mut server = Server::start_with(&[
        "--webhook-test-time-scale",
        "10",
        "--snapshot-every-records",
        "5",
        "--snapshot-every-seconds",
        "1",
    ]);
    let gone = Receiver::start(Mode::Always(410));
    let held = Receiver::start(Mode::Ok { delay_ms: 0 });
    server.create_campaign(json!({"id": "s", "generate": 50, "code": {"prefix": "S"}}));
    let disabled = create_hook(&server, json!({"url": gone.url(), "events": ["*"]}));
    let paused = create_hook(&server, json!({"url": held.url(), "events": ["*"]}));
    let (disabled, paused) = (
        disabled["id"].as_str().unwrap().to_owned(),
        paused["id"].as_str().unwrap().to_owned(),
    );
    patch_hook(&server, &paused, json!({"status": "paused"}));
    let codes = server.codes("s", None);
    redeem_all(&server, &codes[..1], "a");
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, &disabled
    )["status"]
        == "disabled"));
    let disabled_at = *event_lines(&server, 0)
        .iter()
        .find(|(_, l)| l.contains("\"kind\":\"webhook_disabled\""))
        .unwrap()
        .0;
    // Enough records for a snapshot that covers the disabling.
    redeem_all(&server, &codes[1..12], "b");
    assert!(
        wait_until(Duration::from_secs(20), || snapshot_lsn(&server)
            .is_some_and(|lsn| lsn > disabled_at)),
        "no snapshot past {disabled_at}; log: {}",
        server.log_tail()
    );
    let before = (hook_state(&server, &disabled), hook_state(&server, &paused));
    assert_eq!(before.1["status"], "paused");
    let sent = gone.deliveries().len();
    assert!(held.deliveries().is_empty());
    server.terminate();
    server.restart();
    for (id, was) in [(&disabled, &before.0), (&paused, &before.1)] {
        let now = hook_state(&server, id);
        for field in ["status", "disabled_reason", "cursor_lsn", "url", "events"] {
            assert_eq!(now[field], was[field], "{id} {field}");
        }
    }
    assert!(
        before.0["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    // Neither delivers, however many events come.
    redeem_all(&server, &codes[12..20], "c");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        gone.deliveries().len(),
        sent,
        "the disabled one got a delivery"
    );
    assert!(
        held.deliveries().is_empty(),
        "the paused one got a delivery"
    );
    // Resumed, the paused one gets everything after its cursor: it was
    // alive, only paused.
    patch_hook(&server, &paused, json!({"status": "active"}));
    let want: BTreeSet<u64> = event_lines(&server, before.1["cursor_lsn"].as_u64().unwrap())
        .keys()
        .copied()
        .collect();
    assert!(wait_until(Duration::from_secs(20), || held
        .acked_lsns()
        .is_superset(&want)));
}

#[test]
fn three_days_of_failure_count_on_across_a_restart() {
    // 20,000 times the wall clock: three days are about 13 s.
    let mut server = Server::start_with(&["--webhook-test-time-scale", "20000"]);
    let receiver = Receiver::start(Mode::Always(500));
    server.create_campaign(json!({"id": "s", "generate": 5}));
    let hook = create_hook(
        &server,
        json!({"url": receiver.url(), "events": ["redeemed"]}),
    );
    let id = hook["id"].as_str().unwrap().to_owned();
    let codes = server.codes("s", None);
    server.redeem(&codes[0].0, "u").expect(201, None);
    let redeemed_at = event_lines(&server, 0)
        .values()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "redeemed")
        .unwrap()["at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(wait_until(Duration::from_secs(20), || hook_state(
        &server, &id
    )["consecutive_failures"]
        .as_u64()
        .unwrap()
        >= 2));
    assert_eq!(hook_state(&server, &id)["status"], "active");
    server.kill9();
    server.restart();
    // The failures in a row are forgotten, the three days are not: they
    // count from the failing delivery's first event, before the restart.
    assert!(
        wait_until(
            Duration::from_secs(60),
            || hook_state(&server, &id)["status"] == "disabled"
        ),
        "log: {}",
        server.log_tail()
    );
    let reason = hook_state(&server, &id)["disabled_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with(&format!(
            "deliveries failed for 3 days (since {redeemed_at});"
        )),
        "{reason}"
    );
}
