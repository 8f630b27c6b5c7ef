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
