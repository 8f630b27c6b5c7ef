//! The dashboard's server side: `GET /v1/campaigns/{id}/history` shows
//! points whose counts match the campaign's `stats` and whose rates saw the
//! redemptions and assignments made, and the same redemptions and
//! assignments are back after a restart (the ring is rebuilt from the log's
//! record times, or carried by a snapshot that covers them); `/ui` and its assets load without a token, carry a
//! Content-Security-Policy that allows this origin only, and name no
//! remote origin.

mod common;

use common::{Role, Server, request};
use serde_json::{Value, json};

/// The states a history point counts, as `stats` names them.
const STATES: [&str; 5] = ["available", "assigned", "reserved", "redeemed", "voided"];

#[track_caller]
fn history(server: &Server, campaign: &str) -> Value {
    let r = server.get(
        Role::Admin,
        &format!("/v1/campaigns/{campaign}/history?seconds=3600"),
    );
    r.expect(200, None);
    let body = r.json();
    assert_eq!(body["interval_seconds"], 10);
    assert!(body["lsn"].as_u64().unwrap() > 0);
    body
}

/// The largest value of `field` over every point.
fn peak(history: &Value, field: &str) -> f64 {
    history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_f64().unwrap())
        .fold(0.0, f64::max)
}

#[track_caller]
fn check_counts(server: &Server, campaign: &str, history: &Value) {
    let stats = server.stats(campaign);
    let points = history["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let last = points.last().unwrap();
    for state in STATES {
        assert_eq!(last[state], stats[state], "{state}: {last} vs {stats}");
    }
    // Oldest first, one interval apart at most when gaps are filled.
    let times: Vec<&str> = points.iter().map(|p| p["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}

#[test]
fn history_counts_match_stats_and_survive_a_restart() {
    let mut server = Server::start();
    server.create_campaign(json!({"id": "spring", "generate": 40, "code": {"prefix": "SPR"}}));
    let codes = server.codes("spring", None);
    for (i, (code, _)) in codes.iter().take(3).enumerate() {
        server.redeem(code, &format!("user-{i}")).expect(201, None);
    }
    for recipient in ["a@example.com", "b@example.com"] {
        server
            .post(
                Role::Issuer,
                "/v1/campaigns/spring/assignments",
                &json!({"recipient": recipient}),
            )
            .expect(201, None);
    }
    let before = history(&server, "spring");
    check_counts(&server, "spring", &before);
    assert!(peak(&before, "redemptions_per_second") > 0.0, "{before}");
    assert!(peak(&before, "assignments_per_second") > 0.0, "{before}");

    server.terminate();
    server.restart();
    let after = history(&server, "spring");
    check_counts(&server, "spring", &after);
    assert!(peak(&after, "redemptions_per_second") > 0.0, "{after}");
    assert!(peak(&after, "assignments_per_second") > 0.0, "{after}");
    assert_eq!(after["points"][0]["at"], before["points"][0]["at"]);
}

/// A restart that replays nothing after its snapshot still shows the
/// history: the snapshot carries it (the log before the snapshot is not
/// replayed, and the snapshot's synthetic records have no usable times).
#[test]
fn history_survives_a_restart_from_a_snapshot_that_covers_everything() {
    let mut server = Server::start_with(&["--snapshot-every-records", "3"]);
    server.create_campaign(json!({"id": "fall", "generate": 20, "code": {"prefix": "FAL"}}));
    let codes = server.codes("fall", None);
    for (i, (code, _)) in codes.iter().take(3).enumerate() {
        server.redeem(code, &format!("user-{i}")).expect(201, None);
    }
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/fall/assignments",
            &json!({"recipient": "a@example.com"}),
        )
        .expect(201, None);
    let before = history(&server, "fall");
    let last = before["lsn"].as_u64().unwrap();
    // Wait for the snapshot that covers the last record.
    assert!(common::wait_until(
        std::time::Duration::from_secs(20),
        || server
            .log_tail()
            .lines()
            .any(|l| l.contains("snapshot written") && l.contains(&format!("lsn={last} ")))
    ));
    server.terminate();
    server.restart();
    assert!(
        server
            .log_tail()
            .contains(&format!("last_lsn={last} snapshot=Some({last})")),
        "nothing is replayed after the snapshot: {}",
        server.log_tail()
    );
    let after = history(&server, "fall");
    check_counts(&server, "fall", &after);
    assert!(peak(&after, "redemptions_per_second") > 0.0, "{after}");
    assert!(peak(&after, "assignments_per_second") > 0.0, "{after}");
    assert_eq!(after["points"][0]["at"], before["points"][0]["at"]);
}

#[test]
fn history_is_for_admins_and_checks_its_parameters() {
    let server = Server::start();
    server.create_campaign(json!({"id": "fall", "generate": 5}));
    server
        .get(Role::Checkout, "/v1/campaigns/fall/history")
        .expect(403, Some("forbidden"));
    server
        .get(Role::Admin, "/v1/campaigns/nope/history")
        .expect(404, Some("unknown_campaign"));
    for query in ["seconds=0", "seconds=86401", "seconds=x", "step=5"] {
        let r = server.get(Role::Admin, &format!("/v1/campaigns/fall/history?{query}"));
        r.expect(400, Some("invalid_request"));
    }
    let r = server.get(Role::Admin, "/v1/campaigns/fall/history?seconds=86400");
    r.expect(200, None);
    assert_eq!(
        r.json()["points"].as_array().unwrap().last().unwrap()["available"],
        5
    );
}

#[test]
fn the_dashboard_loads_without_a_token_and_only_from_this_origin() {
    let server = Server::start();
    for (path, content_type) in [
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let r = request(server.addr, "GET", path, &[], b"").unwrap();
        r.expect(200, None);
        assert!(r.header("content-type").unwrap().starts_with(content_type));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("http"), "{csp}");
        // The SVG namespace is a name, not an address anything is fetched from.
        let text = r.text().replace("http://www.w3.org/2000/svg", "");
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path} names a remote origin"
        );
    }
    let r = request(server.addr, "GET", "/ui/nope.js", &[], b"").unwrap();
    r.expect(404, Some("not_found"));
}
