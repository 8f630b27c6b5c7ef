//! `Idempotency-Key` as API.md defines it, against the real server: the
//! same key with the same request returns the stored status and body with
//! `Idempotent-Replayed: true` (refusals included, and even after the
//! state has moved on); a different request under the key is
//! `422 idempotency_key_reused`; keys are scoped to their token; concurrent
//! retries wait for the first; and stored responses survive a graceful
//! restart and a `kill -9` of the child process.

mod common;

use std::sync::{Arc, Barrier};

use common::{Response, Role, Server};
use serde_json::{Value, json};

fn keyed(server: &Server, role: Role, path: &str, key: &str, body: &Value) -> Response {
    keyed_with_token(server, server.token(role), path, key, body)
}

fn keyed_with_token(server: &Server, token: &str, path: &str, key: &str, body: &Value) -> Response {
    common::request(
        server.addr,
        "POST",
        path,
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        &serde_json::to_vec(body).unwrap(),
    )
    .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", server.log_tail()))
}

/// `replay` repeats `first`: same status, same body bytes, marked replayed.
#[track_caller]
fn check_replay(first: &Response, replay: &Response) {
    assert_eq!(
        (replay.status, replay.text()),
        (first.status, first.text()),
        "a replay returns the stored status and body"
    );
    assert_eq!(
        replay.header("idempotent-replayed"),
        Some("true"),
        "{:?}",
        replay.headers
    );
}

#[test]
fn replays_same_request_and_refuses_a_different_one() {
    let server = Server::start();
    server.create_campaign(json!({"id": "idem", "generate": 6, "code": {"prefix": "IDM"}}));
    let codes: Vec<String> = server
        .codes("idem", None)
        .into_iter()
        .map(|c| c.0)
        .collect();

    let body = json!({"code": codes[0], "user": "ann", "order": "o-1"});
    let first = keyed(&server, Role::Checkout, "/v1/redemptions", "k-1", &body);
    first.expect(201, None);
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "a first answer is not a replay"
    );
    for _ in 0..3 {
        check_replay(
            &first,
            &keyed(&server, Role::Checkout, "/v1/redemptions", "k-1", &body),
        );
    }
    assert_eq!(server.stats("idem")["redeemed"], 1);

    // The same key with another body, or another path: refused.
    keyed(
        &server,
        Role::Checkout,
        "/v1/redemptions",
        "k-1",
        &json!({"code": codes[1], "user": "ann", "order": "o-1"}),
    )
    .expect(422, Some("idempotency_key_reused"));
    keyed(
        &server,
        Role::Checkout,
        "/v1/reservations",
        "k-1",
        &json!({"code": codes[0], "user": "ann"}),
    )
    .expect(422, Some("idempotency_key_reused"));

    // A refusal is stored and replayed too, even after the state changed.
    let limited_body = json!({"code": codes[1], "user": "ann"});
    let limited = keyed(
        &server,
        Role::Checkout,
        "/v1/redemptions",
        "k-2",
        &limited_body,
    );
    limited.expect(409, Some("user_limit_reached"));
    let taken_body = json!({"code": codes[0], "user": "bob"});
    let taken = keyed(
        &server,
        Role::Checkout,
        "/v1/redemptions",
        "k-3",
        &taken_body,
    );
    taken.expect(409, Some("already_redeemed"));
    server
        .post(
            Role::Checkout,
            &format!("/v1/codes/{}/rollback", codes[0]),
            &json!({}),
        )
        .expect(200, None);
    check_replay(
        &limited,
        &keyed(
            &server,
            Role::Checkout,
            "/v1/redemptions",
            "k-2",
            &limited_body,
        ),
    );
    check_replay(
        &taken,
        &keyed(
            &server,
            Role::Checkout,
            "/v1/redemptions",
            "k-3",
            &taken_body,
        ),
    );
    check_replay(
        &first,
        &keyed(&server, Role::Checkout, "/v1/redemptions", "k-1", &body),
    );
    assert_eq!(server.status(&codes[0]).json()["state"], "available");

    // Keys are scoped to their token: another token's `k-1` is a new request.
    let other = common::add_token(&server.data_dir, "checkout");
    let fresh = keyed_with_token(&server, &other, "/v1/redemptions", "k-1", &body);
    fresh.expect(201, None);
    assert_eq!(fresh.header("idempotent-replayed"), None);
    assert_ne!(fresh.json()["lsn"], first.json()["lsn"]);

    // Other POST routes store their answers as well.
    let campaign_body = json!({"id": "idem2", "generate": 2, "code": {"prefix": "IDQ"}});
    let created = keyed(&server, Role::Admin, "/v1/campaigns", "c-1", &campaign_body);
    created.expect(201, None);
    check_replay(
        &created,
        &keyed(&server, Role::Admin, "/v1/campaigns", "c-1", &campaign_body),
    );
    let assign_body = json!({"recipient": "rita"});
    let assigned = keyed(
        &server,
        Role::Issuer,
        "/v1/campaigns/idem/assignments",
        "a-1",
        &assign_body,
    );
    assigned.expect(201, None);
    check_replay(
        &assigned,
        &keyed(
            &server,
            Role::Issuer,
            "/v1/campaigns/idem/assignments",
            "a-1",
            &assign_body,
        ),
    );
}

#[test]
fn concurrent_retries_share_one_outcome() {
    let server = Server::start();
    server.create_campaign(json!({"id": "conc", "generate": 2, "code": {"prefix": "CON"}}));
    let code = server.codes("conc", None).remove(0).0;
    let body = json!({"code": code, "user": "ann"});
    let clients = 24;
    let barrier = Arc::new(Barrier::new(clients));
    let responses: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let barrier = barrier.clone();
                let (server, body) = (&server, &body);
                scope.spawn(move || {
                    barrier.wait();
                    keyed(server, Role::Checkout, "/v1/redemptions", "same", body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fresh: Vec<&Response> = responses
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "exactly one request ran");
    fresh[0].expect(201, None);
    for r in &responses {
        assert_eq!((r.status, r.text()), (fresh[0].status, fresh[0].text()));
    }
    assert_eq!(server.stats("conc")["redeemed"], 1);
}

/// Keyed requests of several routes and their first answers.
fn keyed_history(server: &Server) -> Vec<(Role, String, String, Value, Response)> {
    server.create_campaign(json!({"id": "dur", "generate": 6, "code": {"prefix": "DUR"}}));
    let codes: Vec<String> = server.codes("dur", None).into_iter().map(|c| c.0).collect();
    let requests = [
        (
            Role::Checkout,
            "/v1/redemptions",
            "r-1",
            json!({"code": codes[0], "user": "ann"}),
            201,
        ),
        (
            Role::Checkout,
            "/v1/redemptions",
            "r-2",
            json!({"code": codes[0], "user": "bob"}),
            409,
        ),
        (
            Role::Checkout,
            "/v1/reservations",
            "h-1",
            json!({"code": codes[1], "user": "cat"}),
            201,
        ),
        (
            Role::Issuer,
            "/v1/campaigns/dur/assignments",
            "a-1",
            json!({"recipient": "dan"}),
            201,
        ),
        (
            Role::Admin,
            "/v1/campaigns",
            "c-1",
            json!({"id": "dur2", "code": {"prefix": "DUQ"}}),
            201,
        ),
    ];
    requests
        .into_iter()
        .map(|(role, path, key, body, status)| {
            let r = keyed(server, role, path, key, &body);
            assert_eq!(r.status, status, "{path}: {}", r.text());
            (role, path.to_owned(), key.to_owned(), body, r)
        })
        .collect()
}

#[track_caller]
fn check_history_replays(server: &Server, history: &[(Role, String, String, Value, Response)]) {
    for (role, path, key, body, first) in history {
        let replay = keyed(server, *role, path, key, body);
        check_replay(first, &replay);
        // A valid request that differs in one field.
        let mut other = body.clone();
        for field in ["user", "recipient", "id"] {
            if other.get(field).is_some() {
                other[field] = json!("zed");
            }
        }
        keyed(server, *role, path, key, &other).expect(422, Some("idempotency_key_reused"));
    }
}

#[test]
fn replays_survive_a_graceful_restart() {
    let mut server = Server::start();
    let history = keyed_history(&server);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    server.restart();
    check_history_replays(&server, &history);
}

#[test]
fn replays_survive_kill_9() {
    let mut server = Server::start();
    let history = keyed_history(&server);
    server.kill9();
    server.restart();
    check_history_replays(&server, &history);
    // And again, now that the replays themselves are in the log.
    server.kill9();
    server.restart();
    check_history_replays(&server, &history);
}
