//! A crash loop under load: client threads drive redemptions, reservations
//! (confirmed or released), rollbacks, deliberate `409` refusals and
//! assignments against the real binary, about half of them with an
//! `Idempotency-Key`; the test `SIGKILL`s the server at a random moment,
//! restarts it on the same data dir, and checks what came back:
//!
//! - every acknowledged outcome (each `2xx`, and each `409` that reports a
//!   code's state) is present: each code's state in the CSV export equals
//!   the last acknowledged transition on it, except for the one request per
//!   client that was in flight at the kill, whose code may show the state
//!   before or after it;
//! - no code is redeemed twice and every transition is legal, replaying the
//!   `/v1/events` stream into a per-code model, which must also end in the
//!   exported states; no code is assigned twice, and every acknowledged
//!   assignment is held by its recipient;
//! - the campaigns' `stats` equal the states counted in the CSV export;
//! - a request in flight at the kill, retried with its Idempotency-Key,
//!   returns the stored answer (`Idempotent-Replayed: true`) exactly when
//!   its transition survived, and otherwise performs it now, once: a second
//!   retry replays that answer byte for byte.
//!
//! Each client owns its codes, so its requests on a code are ordered and
//! the model needs no guessing about races (`races.rs` covers those).
//!
//! `CRASH_CYCLES` sets the number of kill/restart cycles (default 10, the CI
//! form); the long form is `CRASH_CYCLES=100 cargo test -p redeemd --test
//! crash_loop -- --nocapture` (several minutes). The seed for the kill
//! moments and the clients' choices is printed; `CRASH_SEED=<n>` repeats
//! the choices (thread timing still varies).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Response, Rng, Role, Server};
use serde_json::{Value, json};

/// Client threads.
const CLIENTS: usize = 4;
/// Codes of the redemption campaign each client owns.
const CODES_PER_CLIENT: usize = 24;
/// Codes of the assignment pool; more than any run assigns.
const POOL_CODES: usize = 50_000;
/// The kill comes this long after the load starts, plus up to
/// `KILL_SPREAD_MS`.
const KILL_AFTER_MS_MIN: u64 = 100;
const KILL_SPREAD_MS: u64 = 700;
/// Cycles when `CRASH_CYCLES` is not set.
const CYCLES_DEFAULT: usize = 10;
/// Long enough that no hold expires during a long run.
const HOLD_SECONDS: u64 = 86_400;

#[derive(Debug, Clone, PartialEq)]
enum State {
    Available,
    /// Held by the owner; the reservation id when the client knows it (a
    /// reserve in flight at a kill without a key leaves it unknown).
    Reserved(Option<String>),
    Redeemed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Available => "available",
            State::Reserved(_) => "reserved",
            State::Redeemed => "redeemed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Redeem,
    Reserve,
    Confirm,
    Release,
    Rollback,
    /// Redeeming a redeemed code: `409 already_redeemed`.
    RedeemAgain,
    /// Rolling back an available code: `409 not_redeemed`.
    RollbackAvailable,
    Assign,
}

/// One request as sent, so it can be retried byte for byte.
#[derive(Debug, Clone)]
struct Sent {
    kind: Kind,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    key: Option<String>,
    /// The code it is about (none for an assignment).
    code: Option<String>,
    recipient: Option<String>,
    /// The code's state before and, if it succeeds, after.
    before: State,
    target: State,
}

impl Sent {
    /// The status an answer to this request must have.
    fn expected(&self) -> (u16, Option<&'static str>) {
        match self.kind {
            Kind::Redeem | Kind::Reserve | Kind::Confirm => (201, None),
            Kind::Release | Kind::Rollback => (200, None),
            Kind::RedeemAgain => (409, Some("already_redeemed")),
            Kind::RollbackAvailable => (409, Some("not_redeemed")),
            Kind::Assign => (201, None),
        }
    }

    fn send(&self, addr: SocketAddr, token: &str) -> std::io::Result<Response> {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if !self.body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(key) = &self.key {
            headers.push(("Idempotency-Key", key));
        }
        common::request(addr, self.method, &self.path, &headers, &self.body)
    }
}

/// What one client knows: its codes' acknowledged states, its acknowledged
/// assignments, and the request it had in flight when the server died.
struct Client {
    id: usize,
    user: String,
    codes: BTreeMap<String, State>,
    /// Recipient -> code, acknowledged.
    assigned: HashMap<String, String>,
    assignments: u64,
    pending: Option<Sent>,
    acked: u64,
    keys: u64,
}

impl Client {
    fn next_request(&mut self, rng: &mut Rng, cycle: usize) -> Sent {
        let key = rng.percent(50).then(|| {
            self.keys += 1;
            format!("c{cycle}-client{}-{}", self.id, self.keys)
        });
        if rng.percent(15) {
            self.assignments += 1;
            let recipient = format!("r{}-{}", self.id, self.assignments);
            return Sent {
                kind: Kind::Assign,
                method: "POST",
                path: "/v1/campaigns/pool/assignments".into(),
                body: serde_json::to_vec(&json!({"recipient": recipient})).unwrap(),
                key,
                code: None,
                recipient: Some(recipient),
                before: State::Available,
                target: State::Available,
            };
        }
        let index = rng.below(self.codes.len() as u64) as usize;
        let (code, state) = self.codes.iter().nth(index).unwrap();
        let (code, before) = (code.clone(), state.clone());
        let user = &self.user;
        let redeem = json!({"code": code, "user": user});
        let (kind, method, path, body, target) = match &before {
            State::Available if rng.percent(10) => (
                Kind::RollbackAvailable,
                "POST",
                format!("/v1/codes/{code}/rollback"),
                json!({}),
                State::Available,
            ),
            State::Available if rng.percent(50) => (
                Kind::Redeem,
                "POST",
                "/v1/redemptions".into(),
                redeem,
                State::Redeemed,
            ),
            State::Available => (
                Kind::Reserve,
                "POST",
                "/v1/reservations".into(),
                json!({"code": code, "user": user, "ttl_seconds": HOLD_SECONDS}),
                State::Reserved(None),
            ),
            // The holder may redeem a held code directly.
            State::Reserved(None) => (
                Kind::Redeem,
                "POST",
                "/v1/redemptions".into(),
                redeem,
                State::Redeemed,
            ),
            State::Reserved(Some(id)) if rng.percent(50) => (
                Kind::Confirm,
                "POST",
                format!("/v1/reservations/{id}/confirm"),
                json!({"order": format!("o-{}", self.keys)}),
                State::Redeemed,
            ),
            State::Reserved(Some(id)) => (
                Kind::Release,
                "DELETE",
                format!("/v1/reservations/{id}"),
                Value::Null,
                State::Available,
            ),
            State::Redeemed if rng.percent(25) => (
                Kind::RedeemAgain,
                "POST",
                "/v1/redemptions".into(),
                redeem,
                State::Redeemed,
            ),
            State::Redeemed => (
                Kind::Rollback,
                "POST",
                format!("/v1/codes/{code}/rollback"),
                json!({}),
                State::Available,
            ),
        };
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&body).unwrap()
        };
        Sent {
            kind,
            method,
            path,
            body,
            key,
            code: Some(code),
            recipient: None,
            before,
            target,
        }
    }

    /// Records an acknowledged answer to `sent`; panics on any answer the
    /// model does not allow.
    #[track_caller]
    fn acknowledge(&mut self, sent: &Sent, r: &Response) {
        let (status, code) = sent.expected();
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (status, code),
            "client {}: {} {} {}: {}",
            self.id,
            sent.method,
            sent.path,
            String::from_utf8_lossy(&sent.body),
            r.text()
        );
        self.acked += 1;
        let body = r.json();
        match sent.kind {
            Kind::Assign => {
                let code = body["code"].as_str().expect("an assigned code").to_owned();
                let recipient = sent.recipient.clone().unwrap();
                assert_eq!(body["recipient"], recipient.as_str(), "{body}");
                self.assigned.insert(recipient, code);
            }
            _ => {
                let code = sent.code.clone().unwrap();
                let state = match sent.kind {
                    Kind::Reserve => State::Reserved(Some(
                        body["reservation"]
                            .as_str()
                            .expect("a reservation id")
                            .to_owned(),
                    )),
                    Kind::Release | Kind::Rollback => {
                        assert_eq!(body["state"], "available", "{body}");
                        State::Available
                    }
                    _ => sent.target.clone(),
                };
                self.codes.insert(code, state);
            }
        }
    }
}

/// Runs the clients and `SIGKILL`s the server under them at a random
/// moment; each client stops at its first failed request (the server died
/// under it), which it keeps as pending.
fn load_then_kill(server: &mut Server, clients: &mut [Client], rng: &mut Rng, cycle: usize) {
    let stop = AtomicBool::new(false);
    let kill_after = Duration::from_millis(KILL_AFTER_MS_MIN + rng.below(KILL_SPREAD_MS));
    let seeds: Vec<u64> = clients.iter().map(|_| rng.next_u64()).collect();
    let (addr, checkout, issuer) = (server.addr, server.checkout.clone(), server.issuer.clone());
    std::thread::scope(|s| {
        for (client, seed) in clients.iter_mut().zip(seeds) {
            let (stop, checkout, issuer) = (&stop, &checkout, &issuer);
            s.spawn(move || {
                let mut rng = Rng::new(seed);
                while !stop.load(Ordering::Relaxed) {
                    let sent = client.next_request(&mut rng, cycle);
                    let token = if sent.kind == Kind::Assign {
                        issuer
                    } else {
                        checkout
                    };
                    match sent.send(addr, token) {
                        Ok(r) => client.acknowledge(&sent, &r),
                        Err(_) => {
                            client.pending = Some(sent);
                            return;
                        }
                    }
                }
            });
        }
        // The kill moment is drawn from the seed; it is not a wait for
        // anything to happen.
        std::thread::sleep(kill_after);
        server.kill9();
        stop.store(true, Ordering::Relaxed);
    });
}

/// Replays `/v1/events` after `cursor` into `states` (code -> state),
/// asserting every transition is legal; returns the new cursor.
fn apply_events(server: &Server, mut cursor: u64, states: &mut HashMap<String, String>) -> u64 {
    loop {
        let r = server.get(
            Role::Admin,
            &format!("/v1/events?after={cursor}&limit=10000"),
        );
        r.expect(200, None);
        let text = r.text();
        let mut lines = 0;
        for line in text.lines() {
            lines += 1;
            let event: Value = serde_json::from_str(line).expect("an NDJSON line");
            cursor = event["lsn"].as_u64().expect("lsn");
            let Some(code) = event["code"].as_str() else {
                continue;
            };
            let kind = event["kind"].as_str().unwrap();
            let state = states.entry(code.to_owned()).or_insert("available".into());
            let (from, to): (&[&str], &str) = match kind {
                "assigned" => (&["available"], "assigned"),
                "reserved" => (&["available", "assigned"], "reserved"),
                "released" => (&["reserved"], "available"),
                "redeemed" => (&["available", "assigned", "reserved"], "redeemed"),
                "rolled_back" => (&["redeemed"], "available"),
                other => panic!("unexpected event kind {other}: {event}"),
            };
            assert!(
                from.contains(&state.as_str()),
                "illegal {kind} of {code} in state {state} (a second redemption or \
                 assignment?): {event}"
            );
            *state = to.to_owned();
        }
        if lines < 10_000 {
            return cursor;
        }
    }
}

/// Checks a campaign's `stats` against its CSV export; returns the export.
#[track_caller]
fn check_stats(server: &Server, campaign: &str) -> HashMap<String, String> {
    let codes: HashMap<String, String> = server.codes(campaign, None).into_iter().collect();
    let stats = server.stats(campaign);
    for state in ["available", "assigned", "reserved", "redeemed", "voided"] {
        let counted = codes.values().filter(|s| *s == state).count() as u64;
        assert_eq!(
            stats[state].as_u64(),
            Some(counted),
            "{campaign}: stats say {} {state}, the export {counted}: {stats}",
            stats[state]
        );
    }
    assert_eq!(stats["total"].as_u64(), Some(codes.len() as u64), "{stats}");
    codes
}

/// After a restart: the acknowledged states, the allowed in-flight ones,
/// and who redeemed.
fn check_codes(server: &Server, clients: &[Client], exported: &HashMap<String, String>) {
    for client in clients {
        for (code, state) in &client.codes {
            let actual = exported[code].as_str();
            let pending = client
                .pending
                .as_ref()
                .filter(|p| p.code.as_deref() == Some(code));
            match pending {
                Some(p) => assert!(
                    actual == p.before.name() || actual == p.target.name(),
                    "{code}: {actual}, but only {} (acknowledged) or {} ({} {} in flight) \
                     are possible",
                    p.before.name(),
                    p.target.name(),
                    p.method,
                    p.path
                ),
                None => assert_eq!(
                    actual,
                    state.name(),
                    "{code}: acknowledged {state:?} lost (client {})",
                    client.id
                ),
            }
            if actual == "redeemed" {
                let status = server.status(code).json();
                assert_eq!(status["redeemed_by"], client.user.as_str(), "{status}");
            }
        }
    }
}

/// Every acknowledged assignment is held by its recipient, and no more
/// codes are assigned than were asked for.
fn check_pool(clients: &[Client], exported: &HashMap<String, String>) {
    let assigned = exported.values().filter(|s| *s == "assigned").count();
    let acked: usize = clients.iter().map(|c| c.assigned.len()).sum();
    let in_flight = clients
        .iter()
        .filter(|c| c.pending.as_ref().is_some_and(|p| p.kind == Kind::Assign))
        .count();
    assert!(
        (acked..=acked + in_flight).contains(&assigned),
        "{assigned} codes assigned; {acked} acknowledged, {in_flight} in flight"
    );
    let mut seen = HashSet::new();
    for client in clients {
        for (recipient, code) in &client.assigned {
            assert_eq!(exported[code], "assigned", "{code} of {recipient} lost");
            assert!(seen.insert(code.clone()), "{code} assigned twice");
        }
    }
}

/// Retries (or re-reads) the request each client had in flight at the
/// kill, settling its model; keyed retries must replay exactly when the
/// transition survived, and perform it once otherwise. Counts the keyed
/// retries that replayed and that performed anew.
fn settle(
    server: &Server,
    clients: &mut [Client],
    exported: &HashMap<String, String>,
    tally: &mut [u64; 2],
) {
    for client in clients.iter_mut() {
        let Some(sent) = client.pending.take() else {
            continue;
        };
        let token = if sent.kind == Kind::Assign {
            &server.issuer
        } else {
            &server.checkout
        };
        let survived = match &sent.code {
            Some(code) => Some(exported[code] == sent.target.name()),
            // An assignment: known only from the retry's answer.
            None => None,
        };
        let transition = sent.before != sent.target;
        match &sent.key {
            Some(_) => {
                let first = sent.send(server.addr, token).expect("a retry is answered");
                let replayed = first.header("idempotent-replayed") == Some("true");
                tally[usize::from(!replayed)] += 1;
                if let (Some(true), true) = (survived, transition) {
                    assert!(
                        replayed,
                        "{} {}: the transition survived the kill but its stored answer did \
                         not: {}",
                        sent.method,
                        sent.path,
                        first.text()
                    );
                }
                if let (Some(false), true) = (survived, transition) {
                    assert!(
                        !replayed,
                        "{} {}: a stored answer without its transition: {}",
                        sent.method,
                        sent.path,
                        first.text()
                    );
                }
                client.acknowledge(&sent, &first);
                let again = sent.send(server.addr, token).expect("a retry is answered");
                assert_eq!(again.header("idempotent-replayed"), Some("true"));
                assert_eq!(
                    (again.status, again.text()),
                    (first.status, first.text()),
                    "{} {}: the second retry differs",
                    sent.method,
                    sent.path
                );
            }
            None => match &sent.code {
                Some(code) => {
                    let state = match exported[code].as_str() {
                        "available" => State::Available,
                        "redeemed" => State::Redeemed,
                        "reserved" if sent.before.name() == "reserved" => sent.before.clone(),
                        "reserved" => State::Reserved(None),
                        other => panic!("{code} is {other}"),
                    };
                    client.codes.insert(code.clone(), state);
                }
                None => {
                    // Asking again for the same recipient gives its code,
                    // old (200) or new (201), never a second one.
                    let r = sent.send(server.addr, token).expect("answered");
                    assert!(matches!(r.status, 200 | 201), "{}", r.text());
                    let code = r.json()["code"].as_str().unwrap().to_owned();
                    client
                        .assigned
                        .insert(sent.recipient.clone().unwrap(), code);
                }
            },
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let cycles: usize = std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    let mut rng = Rng::new(Rng::seed_from_env("CRASH_SEED"));
    let mut server = Server::start();
    server.create_campaign(json!({
        "id": "crash", "generate": CLIENTS * CODES_PER_CLIENT, "code": {"prefix": "CR"},
        "per_user_limit": 0, "reservation_ttl_seconds": HOLD_SECONDS,
    }));
    server.create_campaign(json!({
        "id": "pool", "generate": POOL_CODES, "code": {"prefix": "POOL"},
    }));
    let codes: Vec<String> = server
        .codes("crash", None)
        .into_iter()
        .map(|c| c.0)
        .collect();
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|id| Client {
            id,
            user: format!("user-{id}"),
            codes: codes
                .iter()
                .skip(id)
                .step_by(CLIENTS)
                .map(|c| (c.clone(), State::Available))
                .collect(),
            assigned: HashMap::new(),
            assignments: 0,
            pending: None,
            acked: 0,
            keys: 0,
        })
        .collect();
    let mut events: HashMap<String, String> = HashMap::new();
    let mut cursor = 0;
    let start = Instant::now();
    let mut in_flight = 0;
    let mut tally = [0u64; 2];
    for cycle in 0..cycles {
        load_then_kill(&mut server, &mut clients, &mut rng, cycle);
        // Clients that were between requests when the kill came may have
        // started another against the dead server; that is in flight too.
        in_flight += clients.iter().filter(|c| c.pending.is_some()).count();
        server.restart();
        let crash = check_stats(&server, "crash");
        let pool: HashMap<String, String> =
            server.codes("pool", Some("assigned")).into_iter().collect();
        let stats = server.stats("pool");
        assert_eq!(
            stats["assigned"].as_u64(),
            Some(pool.len() as u64),
            "{stats}"
        );
        check_codes(&server, &clients, &crash);
        check_pool(&clients, &pool);
        cursor = apply_events(&server, cursor, &mut events);
        for (code, state) in &crash {
            let replayed = events.get(code).map_or("available", String::as_str);
            assert_eq!(replayed, state, "{code}: the events end in {replayed}");
        }
        for code in pool.keys() {
            assert_eq!(events.get(code).map(String::as_str), Some("assigned"));
        }
        settle(&server, &mut clients, &crash, &mut tally);
    }
    let acked: u64 = clients.iter().map(|c| c.acked).sum();
    eprintln!(
        "{cycles} kill -9 cycles in {:?}: {acked} acknowledged requests, {in_flight} in flight \
         at a kill; keyed retries of those: {} replayed, {} performed anew",
        start.elapsed(),
        tally[0],
        tally[1]
    );
    assert!(
        acked >= cycles as u64 * 10,
        "the load barely ran: {acked} acknowledged"
    );
}
