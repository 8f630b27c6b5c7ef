//! Every JSON route's request parsing, through the server's own code
//! (`redeemd::http::parse_request`, a test seam over the private request
//! types and `parse_json`), on arbitrary bodies and a few content types.
//!
//! Reference checks (API.md, "Conventions" and "Lengths"):
//! - never a panic, and a refusal is always a 4xx the contract names:
//!   `400 invalid_json`, `400 invalid_request`, `413 body_too_large` or
//!   `415 unsupported_media_type`, as a JSON error body
//!   `{"error": {"code", "message", ...}}`;
//! - `415` exactly when the content type is not `application/json` (an
//!   absent one allows only an empty body or `{}`);
//! - otherwise `invalid_json` exactly when the body is not JSON (not
//!   even a request of the wrong shape);
//! - an accepted body is a JSON object whose fields are all known to the
//!   route and include the required ones.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use redeemd::http::{JSON_ROUTES, parse_request};
use serde_json::Value;

/// Content types tried (the second input byte picks one) and whether the
/// server must take them for JSON.
const CONTENT_TYPES: [(Option<&str>, bool); 7] = [
    (None, false),
    (Some("application/json"), true),
    (Some("application/json; charset=utf-8"), true),
    (Some(" Application/JSON ;x=y"), true),
    (Some("text/plain"), false),
    (Some("application/json-patch+json"), false),
    (Some(""), false),
];

/// A route's (required, optional) fields, from API.md.
fn fields(route: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match route {
        "create_campaign" => (
            &["id"],
            &[
                "generate",
                "code",
                "starts_at",
                "expires_at",
                "per_user_limit",
                "per_recipient_limit",
                "code_valid_seconds_after_assignment",
                "reservation_ttl_seconds",
                "low_stock_threshold",
                "test_recipients",
                "guessing_alert_per_minute",
            ],
        ),
        "update_campaign" => (
            &[],
            &[
                "starts_at",
                "expires_at",
                "paused",
                "test_recipients",
                "low_stock_threshold",
                "guessing_alert_per_minute",
            ],
        ),
        "generate" => (&["generate"], &[]),
        "assign" => (&["recipient"], &[]),
        "code_action" => (&[], &[]),
        "redeem" => (&["code", "user"], &["order", "client_ip"]),
        "reserve" => (&["code", "user"], &["ttl_seconds", "client_ip"]),
        "confirm" => (&[], &["order"]),
        other => panic!("no model for route {other}"),
    }
}

/// The whole body of a ready response.
fn body_bytes(response: http::Response<redeemd::http::Body>) -> (u16, Option<String>, Vec<u8>) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("ASCII content type").to_owned());
    let mut collect = pin!(response.into_body().collect());
    let Poll::Ready(Ok(collected)) = collect
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("an error response body is not ready at once");
    };
    (status, content_type, collected.to_bytes().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let [route_pick, type_pick, body @ ..] = data else {
        return;
    };
    let route = JSON_ROUTES[usize::from(*route_pick) % JSON_ROUTES.len()];
    let (content_type, is_json) = if route == "generate" {
        // The import route takes its JSON branch only for this type.
        CONTENT_TYPES[1]
    } else {
        CONTENT_TYPES[usize::from(*type_pick) % CONTENT_TYPES.len()]
    };
    let mut request = http::Request::builder().method("POST").uri("/v1/x");
    if let Some(content_type) = content_type {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let (parts, ()) = request.body(()).unwrap().into_parts();

    let result = parse_request(route, &parts, body);

    let unsupported = match content_type {
        Some(_) => !is_json,
        None => !body.is_empty() && body != b"{}",
    };
    let effective: &[u8] = if body.is_empty() && content_type.is_none() {
        b"{}"
    } else {
        body
    };
    let parsed = serde_json::from_slice::<Value>(effective);
    let context = || {
        format!(
            "route {route}, content type {content_type:?}, body {:?}",
            String::from_utf8_lossy(body)
        )
    };

    match result {
        Ok(()) => {
            assert!(!unsupported, "accepted a wrong content type: {}", context());
            let Ok(Value::Object(map)) = parsed else {
                panic!("accepted a body that is not a JSON object: {}", context());
            };
            let (required, optional) = fields(route);
            for key in map.keys() {
                assert!(
                    required.contains(&key.as_str()) || optional.contains(&key.as_str()),
                    "accepted unknown field {key:?}: {}",
                    context()
                );
            }
            for key in required {
                assert!(
                    map.contains_key(*key),
                    "accepted without {key:?}: {}",
                    context()
                );
            }
        }
        Err(response) => {
            let (status, response_type, bytes) = body_bytes(response);
            assert_eq!(
                response_type.as_deref(),
                Some("application/json"),
                "{}",
                context()
            );
            let error: Value = serde_json::from_slice(&bytes).expect("error body is JSON");
            let code = error["error"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("no error.code in {error}: {}", context()));
            assert!(
                error["error"]["message"].is_string(),
                "no error.message in {error}"
            );
            match (status, code) {
                (415, "unsupported_media_type") => {
                    assert!(unsupported, "415 for a JSON content type: {}", context())
                }
                (400, "invalid_json") => {
                    assert!(!unsupported, "{}", context());
                    assert!(
                        parsed.is_err(),
                        "invalid_json for a well-formed body: {}",
                        context()
                    );
                }
                (400, "invalid_request") => {
                    assert!(!unsupported, "{}", context());
                    assert!(
                        parsed.is_ok(),
                        "invalid_request for a body that is not JSON \
                         (API.md: that is invalid_json): {}",
                        context()
                    );
                }
                (413, "body_too_large") => {}
                _ => panic!(
                    "status {status} {code} is not a request error: {}",
                    context()
                ),
            }
        }
    }
});
