//! Durability across restarts of the real child process: a graceful stop
//! (SIGTERM) exits 0 and loses nothing, and a `kill -9` in the middle of a
//! load loses nothing that was acknowledged. Client threads redeem distinct
//! codes and record every `201` they got; the test stops the server once
//! enough have been acknowledged (a counter, not a timer), restarts it on
//! the same data dir, and checks every acknowledged redemption is back, no
//! code is redeemed that no client asked for, and the campaign's `stats`
//! agree with the codes' states. Also: reservations expire by themselves,
//! even when the server was killed while they were held.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Role, Server, wait_until};
use serde_json::json;

/// Client threads of the load.
const CLIENTS: usize = 4;
/// Codes in the load campaign; more than the load gets through.
const CODES: usize = 3000;
/// Acknowledged redemptions after which the server is stopped.
const ACKED_BEFORE_STOP: usize = 150;

/// What the clients saw: acknowledged `code -> user`, and every code asked.
#[derive(Default)]
struct Seen {
    acked: Mutex<HashMap<String, String>>,
    asked: Mutex<HashSet<String>>,
}

/// Runs the load until the clients fail (the server went away) or run out
/// of codes; `stop` is called from the test thread once
/// `ACKED_BEFORE_STOP` redemptions are acknowledged.
fn load_then(server: &mut Server, codes: &[String], stop: impl FnOnce(&mut Server)) -> Seen {
    let seen = Seen::default();
    let acked_count = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let addr = server.addr;
    let auth = format!("Bearer {}", server.checkout);
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (seen, acked_count, done, auth) = (&seen, &acked_count, &done, &auth);
            scope.spawn(move || {
                let user = format!("user-{client}");
                for code in codes.iter().skip(client).step_by(CLIENTS) {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    seen.asked.lock().unwrap().insert(code.clone());
                    let body = serde_json::to_vec(&json!({"code": code, "user": user})).unwrap();
                    let response = common::request(
                        addr,
                        "POST",
                        "/v1/redemptions",
                        &[
                            ("Authorization", auth),
                            ("Content-Type", "application/json"),
                        ],
                        &body,
                    );
                    match response {
                        Ok(r) if r.status == 201 => {
                            seen.acked
                                .lock()
                                .unwrap()
                                .insert(code.clone(), user.clone());
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                        // Draining: a refused or closed connection ends it.
                        Ok(r) if r.status == 503 => break,
                        Ok(r) => panic!("{code}: unexpected {}: {}", r.status, r.text()),
                        Err(_) => break,
                    }
                }
                done.store(true, Ordering::Relaxed);
            });
        }
        let reached = wait_until(Duration::from_secs(30), || {
            acked_count.load(Ordering::Relaxed) >= ACKED_BEFORE_STOP || done.load(Ordering::Relaxed)
        });
        assert!(reached, "the load made no progress:\n{}", server.log_tail());
        assert!(
            acked_count.load(Ordering::Relaxed) >= ACKED_BEFORE_STOP,
            "a client stopped early:\n{}",
            server.log_tail()
        );
        stop(server);
        done.store(true, Ordering::Relaxed);
    });
    seen
}

/// After a restart: every acknowledged redemption is back, nothing is
/// redeemed that was not asked, and the stats match the codes' states.
#[track_caller]
fn check_after_restart(server: &Server, campaign: &str, seen: &Seen) {
    let acked = seen.acked.lock().unwrap();
    let asked = seen.asked.lock().unwrap();
    let states: HashMap<String, String> = server.codes(campaign, None).into_iter().collect();
    assert_eq!(states.len(), CODES);
    for (code, user) in acked.iter() {
        let status = server.status(code);
        status.expect(200, None);
        let status = status.json();
        assert_eq!(
            status["state"], "redeemed",
            "acknowledged {code} lost: {status}"
        );
        assert_eq!(status["redeemed_by"], user.as_str(), "{status}");
        assert_eq!(states[code], "redeemed");
    }
    let redeemed: HashSet<&String> = states
        .iter()
        .filter(|(_, s)| *s == "redeemed")
        .map(|(c, _)| c)
        .collect();
    for code in &redeemed {
        assert!(asked.contains(*code), "{code} redeemed but never asked for");
    }
    // Unacknowledged successes can only be requests in flight at the stop.
    assert!(
        redeemed.len() <= acked.len() + CLIENTS,
        "{} redeemed, {} acknowledged",
        redeemed.len(),
        acked.len()
    );
    let stats = server.stats(campaign);
    assert_eq!(
        stats["redeemed"].as_u64(),
        Some(redeemed.len() as u64),
        "{stats}"
    );
    assert_eq!(
        stats["available"].as_u64(),
        Some((CODES - redeemed.len()) as u64),
        "{stats}"
    );
    assert_eq!(stats["total"].as_u64(), Some(CODES as u64), "{stats}");
}

fn load_campaign(server: &Server) -> Vec<String> {
    server.create_campaign(json!({
        "id": "load", "generate": CODES, "code": {"prefix": "LOAD"}, "per_user_limit": 0,
    }));
    server
        .codes("load", None)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let mut server = Server::start();
    let codes = load_campaign(&server);
    let seen = load_then(&mut server, &codes, Server::kill9);
    server.restart();
    check_after_restart(&server, "load", &seen);
    // The restarted server keeps serving and refusing correctly.
    let (code, _) = seen
        .acked
        .lock()
        .unwrap()
        .iter()
        .next()
        .map(|(c, u)| (c.clone(), u.clone()))
        .unwrap();
    server
        .redeem(&code, "late")
        .expect(409, Some("already_redeemed"));
}

#[test]
fn sigterm_under_load_drains_and_exits_0() {
    let mut server = Server::start();
    let codes = load_campaign(&server);
    let mut exit = None;
    let seen = load_then(&mut server, &codes, |server| {
        exit = Some(server.terminate());
    });
    let exit = exit.unwrap();
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    server.restart();
    check_after_restart(&server, "load", &seen);
}

#[test]
fn graceful_restart_keeps_every_state() {
    let mut server = Server::start();
    server.create_campaign(json!({
        "id": "keep", "generate": 8, "code": {"prefix": "KEEP"}, "per_user_limit": 0,
        "test_recipients": ["qa"],
    }));
    let codes: Vec<String> = server
        .codes("keep", None)
        .into_iter()
        .map(|c| c.0)
        .collect();
    server.redeem(&codes[0], "ann").expect(201, None);
    server
        .post(
            Role::Admin,
            &format!("/v1/codes/{}/void", codes[1]),
            &json!({}),
        )
        .expect(200, None);
    let hold = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[2], "user": "bob", "ttl_seconds": 600}),
    );
    hold.expect(201, None);
    let hold = hold.json()["reservation"].as_str().unwrap().to_owned();
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/keep/assignments",
            &json!({"recipient": "cat"}),
        )
        .expect(201, None);
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/keep/assignments",
            &json!({"recipient": "qa"}),
        )
        .expect(201, None);
    server
        .call(
            Role::Admin,
            "PATCH",
            "/v1/campaigns/keep",
            Some(&json!({"low_stock_threshold": 4})),
        )
        .expect(200, None);
    let before_codes = server.codes("keep", None);
    let before = server.get(Role::Admin, "/v1/campaigns/keep").json();
    let before_events = server.get(Role::Admin, "/v1/events").text();

    let exit = server.terminate();
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");
    server.restart();

    assert_eq!(server.codes("keep", None), before_codes);
    let mut after = server.get(Role::Admin, "/v1/campaigns/keep").json();
    let mut before = before;
    for v in [&mut before, &mut after] {
        // Rates are over the last 60 s of wall time, not state.
        for rate in [
            "redemptions_per_second",
            "assignments_per_second",
            "depletion_eta_seconds",
        ] {
            v["stats"][rate] = json!(null);
        }
    }
    assert_eq!(after, before);
    assert_eq!(server.get(Role::Admin, "/v1/events").text(), before_events);
    assert_eq!(server.status(&codes[0]).json()["redeemed_by"], "ann");
    // The hold survived and can be confirmed.
    server
        .post(
            Role::Checkout,
            &format!("/v1/reservations/{hold}/confirm"),
            &json!({}),
        )
        .expect(201, None);
}

#[test]
fn reservations_expire_by_themselves() {
    let mut server = Server::start();
    server.create_campaign(json!({
        "id": "ttl", "generate": 4, "code": {"prefix": "TTL"}, "per_user_limit": 0,
    }));
    let codes: Vec<String> = server.codes("ttl", None).into_iter().map(|c| c.0).collect();

    let reserve = |server: &Server, code: &str| {
        let r = server.post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": code, "user": "u", "ttl_seconds": 1}),
        );
        r.expect(201, None);
        r.json()
    };
    let hold = reserve(&server, &codes[0]);
    assert_eq!(server.status(&codes[0]).json()["state"], "reserved");
    let start = Instant::now();
    let released = wait_until(Duration::from_millis(2500), || {
        server.status(&codes[0]).json()["state"] == "available"
    });
    assert!(released, "not released within 2.5 s of a 1 s hold: {hold}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );

    // Held when the server dies: the restarted server still lets it expire.
    let hold = reserve(&server, &codes[1]);
    server.kill9();
    server.restart();
    let released = wait_until(Duration::from_millis(2500), || {
        server.status(&codes[1]).json()["state"] == "available"
    });
    assert!(released, "not released after a restart: {hold}");
    server.redeem(&codes[1], "v").expect(201, None);
    let events = server.get(Role::Admin, "/v1/events").text();
    assert!(
        events
            .lines()
            .filter(|l| l.contains("\"kind\":\"released\""))
            .count()
            >= 2,
        "{events}"
    );
}
