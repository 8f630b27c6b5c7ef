//! The "however they race" rules of API.md hold against the real server:
//! many client threads, each on its own connection, are released together
//! by a barrier at the same code, the same user limit, or the same small
//! pool, and the outcomes are counted. Exactly one redemption of a code,
//! exactly `per_user_limit` redemptions by a user, and no code assigned
//! twice with the pool used up exactly.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};

use common::{Response, Role, Server};
use serde_json::{Value, json};

/// Runs `clients` threads that wait on one barrier, then each sends the
/// request `make(i)` builds; returns the responses in thread order.
fn race(
    server: &Server,
    role: Role,
    clients: usize,
    make: impl Fn(usize) -> (String, Value) + Sync,
) -> Vec<Response> {
    let barrier = Arc::new(Barrier::new(clients));
    let auth = format!("Bearer {}", server.token(role));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let barrier = barrier.clone();
                let (path, body) = make(i);
                let auth = auth.clone();
                let addr = server.addr;
                scope.spawn(move || {
                    let body = serde_json::to_vec(&body).unwrap();
                    barrier.wait();
                    common::request(
                        addr,
                        "POST",
                        &path,
                        &[
                            ("Authorization", &auth),
                            ("Content-Type", "application/json"),
                        ],
                        &body,
                    )
                    .unwrap_or_else(|e| panic!("client {i}: {e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `(status, error code)` outcome counts.
fn tally(responses: &[Response]) -> HashMap<(u16, Option<String>), usize> {
    let mut counts = HashMap::new();
    for r in responses {
        *counts.entry((r.status, r.error_code())).or_default() += 1;
    }
    counts
}

#[test]
fn two_hundred_clients_one_code_exactly_one_wins() {
    let server = Server::start();
    server.create_campaign(json!({"id": "one", "generate": 3, "code": {"prefix": "ONE"}}));
    let code = server.codes("one", None).remove(0).0;
    let clients = 200;
    let responses = race(&server, Role::Checkout, clients, |i| {
        (
            "/v1/redemptions".to_owned(),
            json!({"code": code, "user": format!("user-{i}")}),
        )
    });
    let counts = tally(&responses);
    assert_eq!(counts.get(&(201, None)), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get(&(409, Some("already_redeemed".to_owned()))),
        Some(&(clients - 1)),
        "{counts:?}"
    );
    let winner = responses.iter().find(|r| r.status == 201).unwrap().json();
    let redeemed_at = winner["redeemed_at"].clone();
    for r in responses.iter().filter(|r| r.status == 409) {
        assert_eq!(
            r.json()["error"]["redeemed_at"],
            redeemed_at,
            "{}",
            r.text()
        );
    }
    let status = server.status(&code).json();
    assert_eq!(status["state"], "redeemed");
    assert_eq!(status["redeemed_by"], winner["user"]);
    assert_eq!(server.stats("one")["redeemed"], 1);
}

#[test]
fn one_user_many_codes_limit_two() {
    let server = Server::start();
    server.create_campaign(json!({
        "id": "lim", "generate": 60, "code": {"prefix": "LIM"}, "per_user_limit": 2,
    }));
    let codes: Vec<String> = server.codes("lim", None).into_iter().map(|c| c.0).collect();
    let clients = 60;
    let responses = race(&server, Role::Checkout, clients, |i| {
        (
            "/v1/redemptions".to_owned(),
            json!({"code": codes[i], "user": "greedy"}),
        )
    });
    let counts = tally(&responses);
    assert_eq!(counts.get(&(201, None)), Some(&2), "{counts:?}");
    assert_eq!(
        counts.get(&(409, Some("user_limit_reached".to_owned()))),
        Some(&(clients - 2)),
        "{counts:?}"
    );
    assert_eq!(server.stats("lim")["redeemed"], 2);
    let redeemed = server.codes("lim", Some("redeemed"));
    assert_eq!(redeemed.len(), 2, "{redeemed:?}");
    // A second user is not affected by the first one's limit.
    let free = codes
        .iter()
        .find(|c| !redeemed.iter().any(|(r, _)| r == *c))
        .unwrap();
    server.redeem(free, "modest").expect(201, None);
}

#[test]
fn assignment_race_small_pool() {
    let server = Server::start();
    let pool = 20;
    server.create_campaign(json!({"id": "pool", "generate": pool, "code": {"prefix": "POOL"}}));
    let recipients = 40;
    // Every recipient asks twice at once.
    let responses = race(&server, Role::Issuer, recipients * 2, |i| {
        (
            "/v1/campaigns/pool/assignments".to_owned(),
            json!({"recipient": format!("r-{}", i % recipients)}),
        )
    });
    let mut held: HashMap<String, String> = HashMap::new();
    let mut created = 0;
    for (i, r) in responses.iter().enumerate() {
        let recipient = format!("r-{}", i % recipients);
        match (r.status, r.error_code().as_deref()) {
            (201 | 200, None) => {
                let body = r.json();
                assert_eq!(body["recipient"], recipient.as_str());
                let code = body["code"].as_str().unwrap().to_owned();
                if r.status == 201 {
                    created += 1;
                }
                if let Some(previous) = held.insert(recipient.clone(), code.clone()) {
                    assert_eq!(previous, code, "{recipient} got two codes");
                }
            }
            (409, Some("pool_exhausted")) => {}
            other => panic!("unexpected {other:?}: {}", r.text()),
        }
    }
    let distinct: HashSet<&String> = held.values().collect();
    assert_eq!(distinct.len(), held.len(), "a code was assigned twice");
    assert_eq!(held.len(), pool, "the pool is used up exactly");
    assert_eq!(created, pool, "one 201 per code");
    let stats = server.stats("pool");
    assert_eq!(stats["assigned"], pool);
    assert_eq!(stats["available"], 0);
    let exported: HashSet<String> = server
        .codes("pool", Some("assigned"))
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(exported, held.values().cloned().collect::<HashSet<_>>());
    // Asking again later: holders get their code back, others nothing.
    for (recipient, code) in &held {
        let r = server.post(
            Role::Issuer,
            "/v1/campaigns/pool/assignments",
            &json!({"recipient": recipient}),
        );
        r.expect(200, None);
        assert_eq!(r.json()["code"], code.as_str());
    }
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/pool/assignments",
            &json!({"recipient": "latecomer"}),
        )
        .expect(409, Some("pool_exhausted"));
}
