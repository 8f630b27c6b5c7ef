//! Bad input gets the documented 4xx and never hurts the server. A table
//! of malformed, oversized, mistyped, unauthenticated and unauthorized
//! requests is sent to the real `redeemd` binary; each must get its status
//! and `error.code` (and, where API.md says so, name the offending field).
//! Afterwards the server still answers `/healthz` and a normal redemption
//! succeeds, so no bad request left it wedged or crashed.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Role, Server};
use serde_json::json;

/// One bad request and the answer API.md promises for it.
struct Case {
    name: &'static str,
    role: Option<Role>,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    /// Acceptable `error.code`s; empty when API.md names none.
    codes: &'static [&'static str],
    /// The field the error must name, when API.md says it names one.
    field: Option<&'static str>,
}

#[track_caller]
fn check(server: &Server, case: &Case) {
    let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = server.raw(case.role, case.method, &case.path, &headers, &case.body);
    let code = r.error_code();
    assert!(
        r.status == case.status
            && (case.codes.is_empty() || case.codes.contains(&code.as_deref().unwrap_or(""))),
        "{}: {} {}: expected {} {:?}, got {} {}",
        case.name,
        case.method,
        case.path,
        case.status,
        case.codes,
        r.status,
        r.text()
    );
    if (400..500).contains(&r.status) && !r.body.is_empty() {
        let body = r.json();
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: an error has a message: {}",
            case.name,
            r.text()
        );
    }
    if let Some(field) = case.field {
        assert_eq!(
            r.json()["error"]["field"].as_str(),
            Some(field),
            "{}: the error names the field: {}",
            case.name,
            r.text()
        );
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

fn json_case(
    name: &'static str,
    role: Role,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    codes: &'static [&'static str],
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        role: Some(role),
        method: "POST",
        path: path.to_owned(),
        headers: vec![(JSON.0, JSON.1.to_owned())],
        body: body.into(),
        status,
        codes,
        field,
    }
}

/// `body` as a single chunk of a chunked request body.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[test]
fn bad_requests_get_documented_4xx_and_the_server_survives() {
    let server = Server::start();
    server.create_campaign(json!({"id": "bad", "generate": 10, "code": {"prefix": "BAD"}}));
    let codes: Vec<String> = server.codes("bad", None).into_iter().map(|c| c.0).collect();
    let code = codes[0].clone();
    let redeem = |user: &str| json!({"code": code, "user": user}).to_string();
    let long = "u".repeat(257);
    let huge = format!(
        r#"{{"code":"{code}","user":"{}"}}"#,
        "h".repeat((1 << 20) + 1)
    );
    let key_long = "k".repeat(256);

    use Role::*;
    let mut cases = vec![
        json_case("malformed JSON", Checkout, "/v1/redemptions", r#"{"code": "#, 400, &["invalid_json"], None),
        json_case("empty JSON body", Checkout, "/v1/redemptions", "", 400, &["invalid_json"], None),
        json_case("trailing garbage", Checkout, "/v1/redemptions", format!("{} x", redeem("a")), 400, &["invalid_json"], None),
        json_case("JSON array", Checkout, "/v1/redemptions", "[]", 400, &["invalid_request"], None),
        json_case("JSON string", Checkout, "/v1/redemptions", r#""hi""#, 400, &["invalid_request"], None),
        // Found by fuzz/ (request_json): typed parsing stops at its first
        // error, so these once got the other code.
        json_case("wrong type, then not JSON", Checkout, "/v1/redemptions", "2 x", 400, &["invalid_json"], None),
        json_case("array read as fields", Checkout, "/v1/redemptions", r#"["a", "b"]"#, 400, &["invalid_request"], Some("body")),
        json_case("array too long", Checkout, "/v1/redemptions", r#"["a", "b", null, 1]"#, 400, &["invalid_request"], Some("body")),
        json_case(
            "unknown field",
            Checkout,
            "/v1/redemptions",
            json!({"code": code, "user": "a", "coupon": 1}).to_string(),
            400,
            &["invalid_request"],
            Some("coupon"),
        ),
        json_case(
            "missing field",
            Checkout,
            "/v1/redemptions",
            json!({"code": code}).to_string(),
            400,
            &["invalid_request"],
            Some("user"),
        ),
        json_case("code is a number", Checkout, "/v1/redemptions", r#"{"code": 5, "user": "a"}"#, 400, &["invalid_request"], None),
        json_case("user is null", Checkout, "/v1/redemptions", json!({"code": code, "user": null}).to_string(), 400, &["invalid_request"], None),
        json_case("ttl is negative", Checkout, "/v1/reservations", json!({"code": code, "user": "a", "ttl_seconds": -1}).to_string(), 400, &["invalid_request"], None),
        json_case("ttl is a string", Checkout, "/v1/reservations", json!({"code": code, "user": "a", "ttl_seconds": "9"}).to_string(), 400, &["invalid_request"], None),
        json_case(
            "invalid UTF-8",
            Checkout,
            "/v1/redemptions",
            b"{\"code\": \"\xff\xfe\", \"user\": \"a\"}".to_vec(),
            400,
            &["invalid_json"],
            None,
        ),
        json_case("user too long", Checkout, "/v1/redemptions", json!({"code": code, "user": long}).to_string(), 400, &["invalid_request"], Some("user")),
        json_case("user empty", Checkout, "/v1/redemptions", json!({"code": code, "user": ""}).to_string(), 400, &["invalid_request"], Some("user")),
        json_case("order too long", Checkout, "/v1/redemptions", json!({"code": code, "user": "a", "order": long}).to_string(), 400, &["invalid_request"], Some("order")),
        json_case("reserving user too long", Checkout, "/v1/reservations", json!({"code": code, "user": long}).to_string(), 400, &["invalid_request"], Some("user")),
        json_case("recipient too long", Issuer, "/v1/campaigns/bad/assignments", json!({"recipient": long}).to_string(), 400, &["invalid_request"], Some("recipient")),
        json_case("recipient empty", Issuer, "/v1/campaigns/bad/assignments", json!({"recipient": ""}).to_string(), 400, &["invalid_request"], Some("recipient")),
        json_case(
            "generate too many",
            Admin,
            "/v1/campaigns",
            json!({"id": "gen", "generate": 1_000_000_001u64, "code": {"prefix": "GEN", "length": 20}}).to_string(),
            400,
            &["invalid_request"],
            Some("generate"),
        ),
        json_case("negative limit", Admin, "/v1/campaigns", json!({"id": "neg", "per_user_limit": -1}).to_string(), 400, &["invalid_request"], None),
        json_case("empty code", Checkout, "/v1/redemptions", json!({"code": "", "user": "c1"}).to_string(), 400, &["malformed_code", "invalid_request"], None),
        json_case("code of symbols", Checkout, "/v1/redemptions", json!({"code": "BAD-!!!!!-?????-*", "user": "c2"}).to_string(), 400, &["malformed_code"], None),
        json_case("code too long", Checkout, "/v1/redemptions", json!({"code": "BAD".repeat(40), "user": "c3"}).to_string(), 400, &["malformed_code"], None),
        // API.md v1.1: shaped like an imported code, in no campaign, and no
        // campaign generates codes of its length: unknown, not malformed.
        json_case("code too short", Checkout, "/v1/redemptions", json!({"code": "BAD-2345", "user": "c4"}).to_string(), 404, &["unknown_code"], None),
        json_case("code with NUL", Checkout, "/v1/redemptions", json!({"code": "BAD\u{0}", "user": "c5"}).to_string(), 400, &["malformed_code"], None),
        json_case("body too large", Checkout, "/v1/redemptions", huge.clone(), 413, &[], None),
        json_case("PATCH with a bad time", Admin, "/v1/campaigns/bad", r#"{"expires_at": "tomorrow"}"#, 400, &["invalid_request"], Some("expires_at")),
    ];
    cases.last_mut().unwrap().method = "PATCH";
    let mut chunked_huge = json_case(
        "chunked body too large",
        Checkout,
        "/v1/redemptions",
        chunked(huge.as_bytes()),
        413,
        &[],
        None,
    );
    chunked_huge
        .headers
        .push(("Transfer-Encoding", "chunked".to_owned()));
    cases.push(chunked_huge);
    for (name, content_type) in [
        ("text/plain JSON", "text/plain"),
        ("form body", "application/x-www-form-urlencoded"),
        ("XML", "application/xml"),
    ] {
        cases.push(Case {
            name,
            role: Some(Checkout),
            method: "POST",
            path: "/v1/redemptions".to_owned(),
            headers: vec![("Content-Type", content_type.to_owned())],
            body: redeem("a").into_bytes(),
            status: 415,
            codes: &["unsupported_media_type"],
            field: None,
        });
    }
    for (name, key) in [
        ("idempotency key too long", key_long.as_str()),
        ("idempotency key with a space", "a b"),
        ("idempotency key with a tab", "a\tb"),
    ] {
        let mut case = json_case(
            name,
            Checkout,
            "/v1/redemptions",
            redeem("idem"),
            400,
            &["invalid_request"],
            None,
        );
        case.headers.push(("Idempotency-Key", key.to_owned()));
        cases.push(case);
    }
    // Auth: none, unknown, and the wrong role on each role-limited route.
    for (name, role, method, path) in [
        ("no token", None, "POST", "/v1/redemptions"),
        ("no token on GET", None, "GET", "/v1/campaigns"),
        ("no token on events", None, "GET", "/v1/events"),
    ] {
        cases.push(Case {
            name,
            role,
            method,
            path: path.to_owned(),
            headers: vec![(JSON.0, JSON.1.to_owned())],
            body: if method == "POST" {
                redeem("a").into_bytes()
            } else {
                vec![]
            },
            status: 401,
            codes: &["unauthenticated"],
            field: None,
        });
    }
    cases.push(Case {
        name: "unknown token",
        role: None,
        method: "GET",
        path: format!("/v1/codes/{code}"),
        headers: vec![("Authorization", "Bearer nope".to_owned())],
        body: vec![],
        status: 401,
        codes: &["unauthenticated"],
        field: None,
    });
    for (name, role, method, path, body) in [
        (
            "issuer redeems",
            Issuer,
            "POST",
            "/v1/redemptions",
            redeem("a"),
        ),
        (
            "issuer reserves",
            Issuer,
            "POST",
            "/v1/reservations",
            redeem("a"),
        ),
        (
            "checkout assigns",
            Checkout,
            "POST",
            "/v1/campaigns/bad/assignments",
            json!({"recipient": "r"}).to_string(),
        ),
        (
            "checkout creates",
            Checkout,
            "POST",
            "/v1/campaigns",
            json!({"id": "x"}).to_string(),
        ),
        (
            "issuer voids",
            Issuer,
            "POST",
            &format!("/v1/codes/{code}/void"),
            "{}".to_owned(),
        ),
        (
            "issuer rolls back",
            Issuer,
            "POST",
            &format!("/v1/codes/{code}/rollback"),
            "{}".to_owned(),
        ),
        (
            "checkout exports",
            Checkout,
            "GET",
            "/v1/campaigns/bad/codes",
            String::new(),
        ),
        (
            "issuer reads events",
            Issuer,
            "GET",
            "/v1/events",
            String::new(),
        ),
    ] {
        cases.push(Case {
            name,
            role: Some(role),
            method,
            path: path.to_owned(),
            headers: vec![(JSON.0, JSON.1.to_owned())],
            body: body.into_bytes(),
            status: 403,
            codes: &["forbidden"],
            field: None,
        });
    }
    // Code shapes in the lookup path.
    for (name, path, status, codes) in [
        (
            "lookup of symbols",
            "/v1/codes/BAD-%21%21%21",
            400,
            &["malformed_code"][..],
        ),
        (
            "lookup too long",
            &format!("/v1/codes/{}", "BAD2".repeat(30)),
            400,
            &["malformed_code"],
        ),
        (
            "lookup of a typo",
            &format!("/v1/codes/{}", common::substitute(&code, 3, 0)),
            400,
            &["malformed_code"],
        ),
        (
            "lookup of nothing",
            "/v1/codes/UNKNOWNPREFIX",
            404,
            &["unknown_code"],
        ),
        (
            "export bad state",
            "/v1/campaigns/bad/codes?state=gone",
            400,
            &["invalid_request"],
        ),
        (
            "export bad limit",
            "/v1/campaigns/bad/codes?limit=ten",
            400,
            &["invalid_request"],
        ),
        (
            "events bad after",
            "/v1/events?after=-1",
            400,
            &["invalid_request"],
        ),
    ] {
        cases.push(Case {
            name,
            role: Some(Admin),
            method: "GET",
            path: path.to_owned(),
            headers: vec![],
            body: vec![],
            status,
            codes,
            field: None,
        });
    }

    let mut failures = Vec::new();
    for case in &cases {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&server, case)));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(message);
        }
    }

    // A request hyper cannot parse is answered 400 and closes.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let r = common::read_response(&mut BufReader::new(garbage), false);
    assert_eq!(r.map(|r| r.status).ok(), Some(400), "garbage request line");

    // Still alive and still serving.
    server
        .raw(None, "GET", "/healthz", &[], b"")
        .expect(200, None);
    server.redeem(&code, "survivor").expect(201, None);
    // Exactly 256 bytes is allowed.
    server.redeem(&codes[1], &"u".repeat(256)).expect(201, None);
    // Nothing the bad requests sent changed a code.
    let stats = server.stats("bad");
    assert_eq!(stats["redeemed"], 2, "{stats}");
    assert!(server.get(Role::Admin, "/v1/campaigns/gen").status == 404);
    assert!(server.get(Role::Admin, "/v1/campaigns/neg").status == 404);

    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
