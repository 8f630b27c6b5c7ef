//! Every route of API.md answers its happy path and each error code API.md
//! lists for it. Each test starts the real `redeemd` binary on a temporary
//! data dir and port 0 and talks HTTP/1.1 to it, so what is checked is the
//! public contract, not the server's internals.

mod common;

use std::time::{Duration, Instant};

use common::{Role, Server, substitute, wait_until};
use serde_json::{Value, json};

/// A timestamp safely in the past / future for campaign windows.
const PAST: &str = "2000-01-01T00:00:00Z";
const FUTURE: &str = "2999-01-01T00:00:00Z";

/// Printed codes of a campaign, in export order.
fn codes_of(server: &Server, campaign: &str) -> Vec<String> {
    server
        .codes(campaign, None)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

fn patch(server: &Server, campaign: &str, body: Value) -> Value {
    let r = server.call(
        Role::Admin,
        "PATCH",
        &format!("/v1/campaigns/{campaign}"),
        Some(&body),
    );
    r.expect(200, None);
    r.json()
}

#[test]
fn campaigns_create_list_get_patch() {
    let server = Server::start();
    let created = server.create_campaign(json!({
        "id": "spring",
        "generate": 5,
        "code": {"prefix": "SPR", "length": 10},
        "per_user_limit": 2,
        "low_stock_threshold": 3,
        "test_recipients": ["qa@example.com"],
    }));
    for field in [
        "id",
        "code",
        "starts_at",
        "expires_at",
        "paused",
        "per_user_limit",
        "per_recipient_limit",
        "reservation_ttl_seconds",
        "code_valid_seconds_after_assignment",
        "low_stock_threshold",
        "test_recipients",
        "created_at",
        "stats",
    ] {
        assert!(
            created.get(field).is_some(),
            "campaign lacks {field}: {created}"
        );
    }
    assert_eq!(created["id"], "spring");
    assert_eq!(created["code"], json!({"prefix": "SPR", "length": 10}));
    assert_eq!(created["per_user_limit"], 2);
    assert_eq!(created["per_recipient_limit"], 1);
    assert_eq!(created["reservation_ttl_seconds"], 900);
    assert_eq!(created["paused"], false);
    assert_eq!(created["stats"]["total"], 5);
    assert_eq!(created["stats"]["available"], 5);
    assert_eq!(created["stats"]["low_stock"], false);
    for field in [
        "total",
        "available",
        "assigned",
        "reserved",
        "redeemed",
        "voided",
        "test_assignments",
        "redemptions_per_second",
        "assignments_per_second",
        "depletion_eta_seconds",
        "low_stock",
    ] {
        assert!(
            created["stats"].get(field).is_some(),
            "stats lack {field}: {created}"
        );
    }
    let text = created.to_string().to_ascii_lowercase();
    assert!(
        !text.contains("key") && !text.contains("secret"),
        "the campaign key must never be returned: {created}"
    );

    // Defaults: only `id` is required.
    let minimal = server.create_campaign(json!({"id": "import-only", "code": {"prefix": "IMP"}}));
    assert_eq!(minimal["code"]["length"], 10);
    assert_eq!(minimal["per_user_limit"], 1);
    assert_eq!(minimal["stats"]["total"], 0);

    server
        .post(
            Role::Admin,
            "/v1/campaigns",
            &json!({"id": "spring", "code": {"prefix": "ZZZ"}}),
        )
        .expect(409, Some("campaign_exists"));
    for prefix in ["SP", "SPRX", "SPR"] {
        let r = server.post(
            Role::Admin,
            "/v1/campaigns",
            &json!({"id": "other", "code": {"prefix": prefix}}),
        );
        r.expect(409, Some("prefix_conflict"));
    }
    // 32^6 = 2^30 codes: a billion issued codes are guessable far above 1e-6.
    server
        .post(
            Role::Admin,
            "/v1/campaigns",
            &json!({"id": "huge", "generate": 1_000_000_000u64, "code": {"prefix": "HUGE", "length": 6}}),
        )
        .expect(400, Some("code_space_too_small"));
    for (body, field) in [
        (json!({"id": "Bad_Id", "code": {"prefix": "BAD"}}), "id"),
        (
            json!({"id": "short", "code": {"prefix": "SHO", "length": 5}}),
            "length",
        ),
        (
            json!({"id": "long", "code": {"prefix": "LON", "length": 21}}),
            "length",
        ),
        (json!({"id": "lower", "code": {"prefix": "low"}}), "prefix"),
        (
            json!({"id": "ninechars", "code": {"prefix": "ABCDEFGHJ"}}),
            "prefix",
        ),
        (
            json!({"id": "pr0", "code": {"prefix": "PRZ"}, "per_recipient_limit": 0}),
            "per_recipient_limit",
        ),
        (
            json!({"id": "when", "code": {"prefix": "WHN"}, "starts_at": "yesterday"}),
            "starts_at",
        ),
        (
            json!({"id": "x".repeat(65), "code": {"prefix": "XXL"}}),
            "id",
        ),
        (json!({"code": {"prefix": "NOID"}}), "id"),
    ] {
        let r = server.post(Role::Admin, "/v1/campaigns", &body);
        r.expect(400, Some("invalid_request"));
        let named = r.json()["error"]["field"].as_str().unwrap_or("").to_owned();
        // A field inside `code` may be named as `code` or as itself.
        let parent = matches!(field, "length" | "prefix") && named == "code";
        assert!(
            named.contains(field) || parent,
            "{body}: error should name `{field}`, named {named:?}: {}",
            r.text()
        );
    }

    let r = server.get(Role::Admin, "/v1/campaigns");
    r.expect(200, None);
    let ids: Vec<String> = r.json()["campaigns"]
        .as_array()
        .expect("campaigns array")
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"spring".to_owned()) && ids.contains(&"import-only".to_owned()));

    let r = server.get(Role::Admin, "/v1/campaigns/spring");
    r.expect(200, None);
    assert_eq!(r.json()["stats"]["total"], 5);
    assert_eq!(server.get(Role::Admin, "/v1/campaigns/nope").status, 404);

    let patched = patch(
        &server,
        "spring",
        json!({
            "paused": true,
            "starts_at": PAST,
            "expires_at": FUTURE,
            "low_stock_threshold": 10,
            "test_recipients": ["a@example.com", "b@example.com"],
        }),
    );
    assert_eq!(patched["paused"], true);
    assert_eq!(patched["low_stock_threshold"], 10);
    assert_eq!(patched["stats"]["low_stock"], true, "5 available < 10");
    assert_eq!(
        patched["test_recipients"],
        json!(["a@example.com", "b@example.com"])
    );
    assert!(
        patched["starts_at"]
            .as_str()
            .unwrap()
            .starts_with("2000-01-01T00:00:00")
    );
    assert!(
        patched["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2999-01-01T00:00:00")
    );
    let patched = patch(
        &server,
        "spring",
        json!({"starts_at": null, "paused": false}),
    );
    assert_eq!(patched["starts_at"], Value::Null);
    assert_eq!(patched["paused"], false);
    // Not patchable.
    server
        .call(
            Role::Admin,
            "PATCH",
            "/v1/campaigns/spring",
            Some(&json!({"per_user_limit": 5})),
        )
        .expect(400, Some("invalid_request"));
    assert_eq!(
        server
            .call(
                Role::Admin,
                "PATCH",
                "/v1/campaigns/nope",
                Some(&json!({"paused": true}))
            )
            .status,
        404
    );
}

#[test]
fn campaign_window_and_pause() {
    let server = Server::start();
    server.create_campaign(json!({
        "id": "win", "generate": 6, "code": {"prefix": "WIN"}, "per_user_limit": 0,
    }));
    let codes = codes_of(&server, "win");
    server.redeem(&codes[0], "early").expect(201, None);

    patch(&server, "win", json!({"paused": true}));
    server
        .redeem(&codes[1], "u")
        .expect(422, Some("campaign_paused"));
    server
        .post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": codes[1], "user": "u"}),
        )
        .expect(422, Some("campaign_paused"));
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/win/assignments",
            &json!({"recipient": "r"}),
        )
        .expect(422, Some("campaign_paused"));
    patch(&server, "win", json!({"paused": false}));
    server.redeem(&codes[1], "u").expect(201, None);

    patch(&server, "win", json!({"starts_at": FUTURE}));
    server
        .redeem(&codes[2], "u")
        .expect(422, Some("campaign_not_started"));
    server
        .post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": codes[2], "user": "u"}),
        )
        .expect(422, Some("campaign_not_started"));
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/win/assignments",
            &json!({"recipient": "r"}),
        )
        .expect(422, Some("campaign_not_started"));
    let status = server.status(&codes[2]);
    status.expect(200, None);
    assert_eq!(status.json()["state"], "not_started");

    patch(
        &server,
        "win",
        json!({"starts_at": "1999-01-01T00:00:00Z", "expires_at": PAST}),
    );
    server
        .redeem(&codes[2], "u")
        .expect(410, Some("code_expired"));
    server
        .post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": codes[2], "user": "u"}),
        )
        .expect(410, Some("code_expired"));
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/win/assignments",
            &json!({"recipient": "r"}),
        )
        .expect(410, Some("code_expired"));
    let status = server.status(&codes[2]);
    status.expect(200, None);
    assert_eq!(status.json()["state"], "expired");
    // A redeemed code keeps reporting `redeemed` after its campaign ends.
    let status = server.status(&codes[0]);
    status.expect(200, None);
    assert_eq!(status.json()["state"], "redeemed");
    assert_eq!(status.json()["redeemed_by"], "early");
    let ended = server.redeem(&codes[0], "late");

    patch(&server, "win", json!({"expires_at": null}));
    server.redeem(&codes[3], "u").expect(201, None);

    // Redeeming a redeemed code, by anyone, is `already_redeemed`, and a
    // redeemed code keeps reporting `redeemed` after its campaign ends.
    ended.expect(409, Some("already_redeemed"));
}

#[test]
fn codes_generate_import_export() {
    let server = Server::start();
    server.create_campaign(json!({"id": "gen", "generate": 2, "code": {"prefix": "GEN"}}));
    server.create_campaign(json!({"id": "imp", "code": {"prefix": "IMP"}}));
    server.create_campaign(json!({"id": "other", "code": {"prefix": "OTH"}}));

    let r = server.post(
        Role::Admin,
        "/v1/campaigns/gen/codes",
        &json!({"generate": 3}),
    );
    r.expect(200, None);
    let report = r.json();
    assert_eq!(report["added"], 3, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["rejected"], json!([]), "{report}");
    assert_eq!(report["total"], 5, "{report}");
    assert_eq!(server.stats("gen")["total"], 5);

    let import = |campaign: &str, text: &str| {
        server.raw(
            Some(Role::Admin),
            "POST",
            &format!("/v1/campaigns/{campaign}/codes"),
            &[("Content-Type", "text/plain")],
            text.as_bytes(),
        )
    };
    let r = import("other", "SHARED-1\n");
    r.expect(200, None);
    assert_eq!(r.json()["added"], 1);

    let long = "L".repeat(65);
    let body = format!(
        "WELCOME-10\nwelcome10\n\nsummer_2025\nbad code!\n{long}\nshared1\nGIFT-A\nSUMMER_2025\n"
    );
    let r = import("imp", &body);
    r.expect(200, None);
    let report = r.json();
    assert_eq!(
        report["added"], 3,
        "WELCOME10, SUMMER_2025, GIFTA: {report}"
    );
    assert_eq!(
        report["duplicates"], 2,
        "welcome10, SUMMER_2025 again: {report}"
    );
    assert_eq!(report["total"], 3, "{report}");
    let rejected = report["rejected"].as_array().expect("rejected array");
    let lines: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [5, 6, 7], "1-based physical line numbers: {report}");
    for r in rejected {
        assert!(
            r["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "{report}"
        );
    }
    assert_eq!(
        rejected[2]["reason"], "exists_in_other_campaign",
        "{report}"
    );

    // The same codes again: all duplicates.
    let r = import("imp", "welcome-10\r\nGIFTA");
    r.expect(200, None);
    assert_eq!(r.json()["added"], 0, "{}", r.text());
    assert_eq!(r.json()["duplicates"], 2, "{}", r.text());

    // Imported codes are matched after normalization.
    let status = server.status("Welcome%2010");
    status.expect(200, None);
    assert_eq!(status.json()["campaign"], "imp");
    assert_eq!(status.json()["state"], "available");
    server.redeem("Summer_2025", "ann").expect(201, None);

    // Export: header first, state filter, limit.
    let all = server.codes("gen", None);
    assert_eq!(all.len(), 5);
    assert!(
        all.iter()
            .all(|(c, s)| c.starts_with("GEN-") && s == "available")
    );
    server.redeem(&all[1].0, "bob").expect(201, None);
    let redeemed = server.codes("gen", Some("redeemed"));
    assert_eq!(redeemed, vec![(all[1].0.clone(), "redeemed".to_owned())]);
    assert_eq!(server.codes("gen", Some("available")).len(), 4);
    let r = server.get(Role::Admin, "/v1/campaigns/gen/codes?limit=2");
    r.expect(200, None);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/csv"),
        "{:?}",
        r.headers
    );
    assert_eq!(common::parse_csv(&r.text()).len(), 2);
    let imported = server.codes("imp", None);
    assert_eq!(imported.len(), 3, "{imported:?}");
    server
        .get(Role::Admin, "/v1/campaigns/gen/codes?state=bogus")
        .expect(400, Some("invalid_request"));
    server
        .get(Role::Admin, "/v1/campaigns/gen/codes?limit=-1")
        .expect(400, Some("invalid_request"));
    assert_eq!(
        server.get(Role::Admin, "/v1/campaigns/nope/codes").status,
        404
    );
    // Neither JSON nor text.
    server
        .raw(
            Some(Role::Admin),
            "POST",
            "/v1/campaigns/gen/codes",
            &[("Content-Type", "application/xml")],
            b"<generate>1</generate>",
        )
        .expect(415, Some("unsupported_media_type"));
}

#[test]
fn assignments() {
    let server = Server::start();
    server.create_campaign(json!({"id": "pool", "generate": 2, "code": {"prefix": "POOL"}}));
    let a = server.post(
        Role::Issuer,
        "/v1/campaigns/pool/assignments",
        &json!({"recipient": "alice"}),
    );
    a.expect(201, None);
    let a = a.json();
    assert_eq!(a["campaign"], "pool");
    assert_eq!(a["recipient"], "alice");
    assert_eq!(a["state"], "assigned");
    let again = server.post(
        Role::Issuer,
        "/v1/campaigns/pool/assignments",
        &json!({"recipient": "alice"}),
    );
    again.expect(200, None);
    assert_eq!(again.json()["code"], a["code"], "alice keeps her code");
    let b = server.post(
        Role::Issuer,
        "/v1/campaigns/pool/assignments",
        &json!({"recipient": "bob"}),
    );
    b.expect(201, None);
    assert_ne!(b.json()["code"], a["code"]);
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/pool/assignments",
            &json!({"recipient": "carol"}),
        )
        .expect(409, Some("pool_exhausted"));
    let status = server.get(
        Role::Issuer,
        &format!("/v1/codes/{}", a["code"].as_str().unwrap()),
    );
    status.expect(200, None);
    assert_eq!(status.json()["state"], "assigned");
    assert_eq!(status.json()["recipient"], "alice");
    assert!(
        status.json()["assigned_at"].is_string(),
        "{}",
        status.text()
    );
    let stats = server.stats("pool");
    assert_eq!(
        (stats["assigned"].as_u64(), stats["available"].as_u64()),
        (Some(2), Some(0))
    );
    server
        .post(
            Role::Checkout,
            "/v1/campaigns/pool/assignments",
            &json!({"recipient": "dave"}),
        )
        .expect(403, Some("forbidden"));
    assert_eq!(
        server
            .post(
                Role::Issuer,
                "/v1/campaigns/nope/assignments",
                &json!({"recipient": "dave"})
            )
            .status,
        404
    );

    // Test recipients get a fresh code each time, counted apart.
    server.create_campaign(json!({
        "id": "qa", "generate": 5, "code": {"prefix": "QA"}, "test_recipients": ["qa@example.com"],
    }));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let r = server.post(
            Role::Issuer,
            "/v1/campaigns/qa/assignments",
            &json!({"recipient": "qa@example.com"}),
        );
        r.expect(201, None);
        assert!(seen.insert(r.json()["code"].as_str().unwrap().to_owned()));
    }
    assert_eq!(server.stats("qa")["test_assignments"], 3);
}

#[test]
fn code_lookup() {
    let server = Server::start();
    server.create_campaign(
        json!({"id": "look", "generate": 3, "code": {"prefix": "LOOK", "length": 10}}),
    );
    let code = codes_of(&server, "look").remove(0);
    for role in [Role::Checkout, Role::Issuer, Role::Admin] {
        let r = server.get(role, &format!("/v1/codes/{code}"));
        r.expect(200, None);
        assert_eq!(r.json()["code"], code.as_str());
        assert_eq!(r.json()["campaign"], "look");
        assert_eq!(r.json()["state"], "available");
    }
    // Case-insensitive; hyphens and spaces ignored.
    let squashed = code.replace('-', "").to_ascii_lowercase();
    let r = server.status(&squashed);
    r.expect(200, None);
    assert_eq!(r.json()["code"], code.as_str());
    let spaced = code.replace('-', "%20");
    server.status(&spaced).expect(200, None);

    server
        .status("NOPE-12345")
        .expect(404, Some("unknown_code"));
    // Every one-symbol substitution and every adjacent swap of the body
    // and check symbol is malformed, before any lookup.
    let symbols = 11;
    for index in 0..symbols {
        let typo = substitute(&code, 4, index);
        assert_ne!(typo, code);
        server.status(&typo).expect(400, Some("malformed_code"));
    }
    let plain: Vec<char> = code.chars().filter(|&c| c != '-').collect();
    for i in 4..plain.len() - 1 {
        if plain[i] == plain[i + 1] {
            continue;
        }
        let mut swapped = plain.clone();
        swapped.swap(i, i + 1);
        let swapped: String = swapped.into_iter().collect();
        server.status(&swapped).expect(400, Some("malformed_code"));
    }
    // A typo in the prefix is unknown (no such prefix) or malformed.
    let r = server.status(&code.replacen("LOOK", "LOOX", 1));
    assert!(
        matches!(
            (r.status, r.error_code().as_deref()),
            (404, Some("unknown_code")) | (400, Some("malformed_code"))
        ),
        "{}",
        r.text()
    );
}

#[test]
fn redemptions_and_refusals() {
    let server = Server::start();
    server.create_campaign(json!({"id": "red", "generate": 5, "code": {"prefix": "RED"}}));
    let codes = codes_of(&server, "red");

    let r = server.post(
        Role::Checkout,
        "/v1/redemptions",
        &json!({"code": codes[0].to_ascii_lowercase(), "user": "ann", "order": "o-1"}),
    );
    r.expect(201, None);
    let redemption = r.json();
    assert_eq!(redemption["code"], codes[0].as_str());
    assert_eq!(redemption["campaign"], "red");
    assert_eq!(redemption["user"], "ann");
    assert_eq!(redemption["order"], "o-1");
    let lsn = redemption["lsn"].as_u64().expect("lsn is an integer");
    assert!(lsn > 0);
    let redeemed_at = redemption["redeemed_at"]
        .as_str()
        .expect("redeemed_at")
        .to_owned();
    assert!(
        redeemed_at.ends_with('Z') && redeemed_at.contains('T'),
        "{redeemed_at}"
    );

    // Anyone, the redeemer included, gets `already_redeemed`.
    for user in ["bob", "ann"] {
        let r = server.redeem(&codes[0], user);
        r.expect(409, Some("already_redeemed"));
        assert_eq!(r.json()["error"]["redeemed_at"], redeemed_at.as_str());
    }
    let status = server.status(&codes[0]);
    assert_eq!(status.json()["state"], "redeemed");
    assert_eq!(status.json()["redeemed_by"], "ann");
    assert_eq!(status.json()["order"], "o-1");

    server
        .redeem(&codes[1], "ann")
        .expect(409, Some("user_limit_reached"));

    let r = server.post(
        Role::Admin,
        &format!("/v1/codes/{}/void", codes[2]),
        &json!({}),
    );
    r.expect(200, None);
    assert_eq!(r.json()["state"], "voided");
    server
        .redeem(&codes[2], "carl")
        .expect(410, Some("code_voided"));

    // Rollback: the code is available again and ann's count drops.
    let r = server.post(
        Role::Checkout,
        &format!("/v1/codes/{}/rollback", codes[0]),
        &json!({}),
    );
    r.expect(200, None);
    assert_eq!(r.json()["state"], "available");
    server
        .post(
            Role::Checkout,
            &format!("/v1/codes/{}/rollback", codes[0]),
            &json!({}),
        )
        .expect(409, Some("not_redeemed"));
    server.redeem(&codes[1], "ann").expect(201, None);
    server
        .post(Role::Checkout, "/v1/codes/NOPE-1/rollback", &json!({}))
        .expect(404, Some("unknown_code"));
    // Rollback of an assigned code's redemption returns it to `assigned`.
    let assigned = server.post(
        Role::Issuer,
        "/v1/campaigns/red/assignments",
        &json!({"recipient": "rita"}),
    );
    assigned.expect(201, None);
    let assigned_code = assigned.json()["code"].as_str().unwrap().to_owned();
    server.redeem(&assigned_code, "rita").expect(201, None);
    let r = server.post(
        Role::Checkout,
        &format!("/v1/codes/{assigned_code}/rollback"),
        &json!({}),
    );
    r.expect(200, None);
    assert_eq!(r.json()["state"], "assigned", "{}", r.text());

    // The redemption's lsn is its event's lsn.
    let events = events(&server, "/v1/events");
    let event = events
        .iter()
        .find(|e| e["kind"] == "redeemed" && e["code"] == codes[0].as_str())
        .expect("a redeemed event");
    assert_eq!(event["lsn"].as_u64(), Some(lsn), "{event}");

    // Failed-attempt limiter: 20 unknown codes a minute per user, counted
    // in calendar minutes, so all of this must fall in one.
    common::wait_for_a_limiter_window_with(Duration::from_secs(10));
    for i in 0..20 {
        server
            .redeem(&format!("NOPE-{i:05}"), "mallory")
            .expect(404, Some("unknown_code"));
    }
    let r = server.redeem("NOPE-99999", "mallory");
    r.expect(429, Some("too_many_failed_attempts"));
    let retry_after: u64 = r
        .header("retry-after")
        .expect("Retry-After set")
        .parse()
        .expect("Retry-After is seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Reservations share the limit.
    server
        .post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": "NOPE-1", "user": "mallory"}),
        )
        .expect(429, Some("too_many_failed_attempts"));
    // Other users are unaffected; lookups with `user` count, without do not.
    server
        .redeem("NOPE-1", "trent")
        .expect(404, Some("unknown_code"));
    for _ in 0..25 {
        server.status("NOPE-1").expect(404, Some("unknown_code"));
    }
    for _ in 0..20 {
        server
            .status("NOPE-1?user=eve")
            .expect(404, Some("unknown_code"));
    }
    let r = server.status("NOPE-1?user=eve");
    r.expect(429, Some("too_many_failed_attempts"));
    assert!(r.header("retry-after").is_some());
}

#[test]
fn reservations() {
    let server = Server::start();
    server.create_campaign(json!({
        "id": "res", "generate": 8, "code": {"prefix": "RES"}, "per_user_limit": 0,
    }));
    let codes = codes_of(&server, "res");

    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[0], "user": "u1"}),
    );
    r.expect(201, None);
    let hold = r.json();
    let id = hold["reservation"]
        .as_str()
        .expect("reservation id")
        .to_owned();
    assert_eq!(hold["code"], codes[0].as_str());
    assert_eq!(hold["user"], "u1");
    assert!(hold["expires_at"].is_string());
    let status = server.status(&codes[0]);
    assert_eq!(status.json()["state"], "reserved");
    assert!(
        status.json()["reserved_until"].is_string(),
        "{}",
        status.text()
    );

    server
        .post(
            Role::Checkout,
            "/v1/reservations",
            &json!({"code": codes[0], "user": "u2"}),
        )
        .expect(409, Some("code_reserved"));
    server
        .redeem(&codes[0], "u2")
        .expect(409, Some("code_reserved"));

    let r = server.post(
        Role::Checkout,
        &format!("/v1/reservations/{id}/confirm"),
        &json!({"order": "o-9"}),
    );
    r.expect(201, None);
    assert_eq!(r.json()["code"], codes[0].as_str());
    assert_eq!(r.json()["user"], "u1");
    assert_eq!(r.json()["order"], "o-9");
    assert!(r.json()["lsn"].as_u64().is_some());
    assert_eq!(server.status(&codes[0]).json()["state"], "redeemed");

    // The holder may redeem directly; that consumes the hold.
    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[1], "user": "u3"}),
    );
    r.expect(201, None);
    let held = r.json()["reservation"].as_str().unwrap().to_owned();
    server.redeem(&codes[1], "u3").expect(201, None);
    let r = server.post(
        Role::Checkout,
        &format!("/v1/reservations/{held}/confirm"),
        &json!({}),
    );
    assert!(r.status == 404 || r.status == 409, "{}", r.text());

    // Release: back to available; a second release is unknown.
    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[2], "user": "u4"}),
    );
    r.expect(201, None);
    let released = r.json()["reservation"].as_str().unwrap().to_owned();
    let r = server.call(
        Role::Checkout,
        "DELETE",
        &format!("/v1/reservations/{released}"),
        None,
    );
    r.expect(200, None);
    assert_eq!(r.json()["state"], "available");
    server
        .call(
            Role::Checkout,
            "DELETE",
            &format!("/v1/reservations/{released}"),
            None,
        )
        .expect(404, Some("unknown_reservation"));
    server
        .post(
            Role::Checkout,
            &format!("/v1/reservations/{released}/confirm"),
            &json!({}),
        )
        .expect(404, Some("unknown_reservation"));
    for bogus in ["rsv_999999", "garbage"] {
        server
            .post(
                Role::Checkout,
                &format!("/v1/reservations/{bogus}/confirm"),
                &json!({}),
            )
            .expect(404, Some("unknown_reservation"));
    }

    // Releasing a hold on an assigned code returns it to `assigned`.
    let a = server.post(
        Role::Issuer,
        "/v1/campaigns/res/assignments",
        &json!({"recipient": "rita"}),
    );
    a.expect(201, None);
    let assigned = a.json()["code"].as_str().unwrap().to_owned();
    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": assigned, "user": "rita"}),
    );
    r.expect(201, None);
    let rid = r.json()["reservation"].as_str().unwrap().to_owned();
    let r = server.call(
        Role::Checkout,
        "DELETE",
        &format!("/v1/reservations/{rid}"),
        None,
    );
    r.expect(200, None);
    assert_eq!(r.json()["state"], "assigned", "{}", r.text());

    // Expiry: the code comes back by itself, and confirming is too late.
    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[3], "user": "u5", "ttl_seconds": 1}),
    );
    r.expect(201, None);
    let expiring = r.json()["reservation"].as_str().unwrap().to_owned();
    let start = Instant::now();
    let back = wait_until(Duration::from_millis(2500), || {
        server.status(&codes[3]).json()["state"] == "available"
    });
    assert!(back, "the hold did not expire within 2.5 s");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "released too early: {:?}",
        start.elapsed()
    );
    server
        .post(
            Role::Checkout,
            &format!("/v1/reservations/{expiring}/confirm"),
            &json!({}),
        )
        .expect(410, Some("reservation_expired"));
    server
        .call(
            Role::Checkout,
            "DELETE",
            &format!("/v1/reservations/{expiring}"),
            None,
        )
        .expect(410, Some("reservation_expired"));
    // And the code is free for someone else.
    server.redeem(&codes[3], "u6").expect(201, None);
}

/// Events of a GET /v1/events path, one JSON value a line.
fn events(server: &Server, path: &str) -> Vec<Value> {
    let r = server.get(Role::Admin, path);
    r.expect(200, None);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/x-ndjson"),
        "{:?}",
        r.headers
    );
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn events_ndjson_kinds_after_limit() {
    let server = Server::start();
    server.create_campaign(json!({
        "id": "ev", "generate": 6, "code": {"prefix": "EV"}, "per_user_limit": 0, "low_stock_threshold": 7,
    }));
    let codes = codes_of(&server, "ev");
    patch(&server, "ev", json!({"paused": false}));
    server
        .raw(
            Some(Role::Admin),
            "POST",
            "/v1/campaigns/ev/codes",
            &[("Content-Type", "text/plain")],
            b"EVENT-IMPORTED\n",
        )
        .expect(200, None);
    server
        .post(
            Role::Issuer,
            "/v1/campaigns/ev/assignments",
            &json!({"recipient": "r"}),
        )
        .expect(201, None);
    let r = server.post(
        Role::Checkout,
        "/v1/reservations",
        &json!({"code": codes[1], "user": "u"}),
    );
    let rid = r.json()["reservation"].as_str().unwrap().to_owned();
    server
        .call(
            Role::Checkout,
            "DELETE",
            &format!("/v1/reservations/{rid}"),
            None,
        )
        .expect(200, None);
    server.redeem(&codes[2], "u").expect(201, None);
    server
        .post(
            Role::Checkout,
            &format!("/v1/codes/{}/rollback", codes[2]),
            &json!({}),
        )
        .expect(200, None);
    server
        .post(
            Role::Admin,
            &format!("/v1/codes/{}/void", codes[3]),
            &json!({}),
        )
        .expect(200, None);

    let all = events(&server, "/v1/events");
    let kinds: Vec<&str> = all.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for kind in [
        "campaign_created",
        "campaign_updated",
        "codes_added",
        "assigned",
        "reserved",
        "released",
        "redeemed",
        "rolled_back",
        "voided",
        "low_stock",
    ] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    let lsns: Vec<u64> = all.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert!(
        lsns.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {lsns:?}"
    );
    for e in &all {
        for field in ["lsn", "at", "kind", "campaign", "code"] {
            assert!(e.get(field).is_some(), "event lacks {field}: {e}");
        }
    }

    // `after` is exclusive; `limit` caps the lines.
    let after = lsns[2];
    let page = events(&server, &format!("/v1/events?after={after}&limit=2"));
    let page_lsns: Vec<u64> = page.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert_eq!(page_lsns, lsns[3..5].to_vec());
    let last = *lsns.last().unwrap();
    assert!(events(&server, &format!("/v1/events?after={last}")).is_empty());
    for bad in ["limit=0", "limit=10001", "after=x", "limit=-5"] {
        server
            .get(Role::Admin, &format!("/v1/events?{bad}"))
            .expect(400, Some("invalid_request"));
    }
}

/// The lsn of the newest event.
fn last_event_lsn(server: &Server) -> u64 {
    events(server, "/v1/events?limit=10000")
        .last()
        .and_then(|e| e["lsn"].as_u64())
        .expect("at least one event")
}

#[test]
fn events_long_poll_waits_for_nothing_new() {
    let server = Server::start();
    server.create_campaign(json!({"id": "lp", "generate": 1, "code": {"prefix": "LP"}}));
    let last = last_event_lsn(&server);
    // Nothing new: the poll holds for about wait_seconds, then returns nothing.
    let start = Instant::now();
    assert!(events(&server, &format!("/v1/events?after={last}&wait_seconds=1")).is_empty());
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "a long-poll with nothing newer returned after {:?}, not ~1 s",
        start.elapsed()
    );
}

#[test]
fn events_long_poll_returns_when_an_event_arrives() {
    let server = Server::start();
    server.create_campaign(json!({"id": "lp", "generate": 1, "code": {"prefix": "LP"}}));
    let code = codes_of(&server, "lp").remove(0);
    let last = last_event_lsn(&server);
    // Answered by a new event, well before its 20 s.
    let poller = {
        let addr = server.addr;
        let auth = format!("Bearer {}", server.admin);
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = common::request(
                addr,
                "GET",
                &format!("/v1/events?after={last}&wait_seconds=20"),
                &[("Authorization", &auth)],
                b"",
            )
            .expect("long-poll answered");
            (r, start.elapsed())
        })
    };
    // Gives the poll a head start so it is usually parked when the event
    // lands; the assertions hold either way, so this is not synchronization.
    std::thread::sleep(Duration::from_millis(300));
    let r = server.redeem(&code, "late");
    r.expect(201, None);
    let new_lsn = r.json()["lsn"].as_u64().unwrap();
    let (r, elapsed) = poller.join().unwrap();
    r.expect(200, None);
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let text = r.text();
    let first = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("the long-poll returned no event after {elapsed:?}"));
    let first: Value = serde_json::from_str(first).unwrap();
    assert_eq!(first["kind"], "redeemed");
    assert_eq!(first["lsn"].as_u64(), Some(new_lsn));
    assert_eq!(first["code"], code.as_str());
}

#[test]
fn auth_health_metrics_and_unknown_routes() {
    let server = Server::start();
    server.create_campaign(json!({"id": "auth", "generate": 2, "code": {"prefix": "AUT"}}));
    let code = codes_of(&server, "auth").remove(0);

    for path in ["/healthz", "/readyz"] {
        server.raw(None, "GET", path, &[], b"").expect(200, None);
    }
    let r = server.raw(None, "GET", "/metrics", &[], b"");
    r.expect(200, None);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );
    assert!(r.text().contains("redeemd_requests_total"), "{}", r.text());
    assert!(
        r.text().contains("# TYPE redeemd_requests_total counter"),
        "{}",
        r.text()
    );

    let body = serde_json::to_vec(&json!({"code": code, "user": "u"})).unwrap();
    let json_ct = [("Content-Type", "application/json")];
    server
        .raw(None, "POST", "/v1/redemptions", &json_ct, &body)
        .expect(401, Some("unauthenticated"));
    server
        .raw(
            None,
            "POST",
            "/v1/redemptions",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", "Bearer rdm_checkout_not_a_real_token"),
            ],
            &body,
        )
        .expect(401, Some("unauthenticated"));
    server
        .raw(
            None,
            "GET",
            "/v1/campaigns",
            &[("Authorization", &format!("Basic {}", server.admin))],
            b"",
        )
        .expect(401, Some("unauthenticated"));
    server
        .raw(
            Some(Role::Issuer),
            "POST",
            "/v1/redemptions",
            &json_ct,
            &body,
        )
        .expect(403, Some("forbidden"));
    server
        .get(Role::Checkout, "/v1/campaigns")
        .expect(403, Some("forbidden"));
    server
        .post(Role::Issuer, &format!("/v1/codes/{code}/void"), &json!({}))
        .expect(403, Some("forbidden"));
    server
        .get(Role::Issuer, "/v1/events")
        .expect(403, Some("forbidden"));

    // A token added while the server runs works within about a second:
    // unknown tokens (like the bogus one above) make the server check its
    // token file, but at most once a second.
    let late = common::add_token(&server.data_dir, "checkout");
    let added = std::time::Instant::now();
    let late_auth = format!("Bearer {late}");
    let works = common::wait_until(std::time::Duration::from_secs(3), || {
        let r = common::request(
            server.addr,
            "GET",
            &format!("/v1/codes/{code}"),
            &[("Authorization", &late_auth)],
            b"",
        )
        .unwrap();
        r.status != 401
    });
    assert!(
        works,
        "a token added while serving was not accepted within 3 s"
    );
    eprintln!(
        "a token added while serving worked after {:?}",
        added.elapsed()
    );
    let r = common::request(
        server.addr,
        "POST",
        "/v1/redemptions",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {late}")),
        ],
        &body,
    )
    .unwrap();
    r.expect(201, None);

    assert_eq!(server.get(Role::Admin, "/nope").status, 404);
    assert_eq!(server.get(Role::Admin, "/v1/nope").status, 404);
    assert_eq!(server.get(Role::Admin, "/v2/campaigns").status, 404);
    for (method, path, allow) in [
        ("DELETE", "/v1/campaigns", "GET, POST"),
        ("PUT", "/v1/campaigns/auth", "GET, PATCH"),
        ("GET", "/v1/redemptions", "POST"),
        ("POST", "/healthz", "GET"),
        ("POST", "/v1/events", "GET"),
        ("GET", "/v1/reservations", "POST"),
    ] {
        let r = server.call(Role::Admin, method, path, None);
        assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}
