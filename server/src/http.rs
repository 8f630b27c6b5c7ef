//! Request handling: routing by hand, auth, body limits, idempotency keys,
//! and every route of API.md. Each answer that reports or depends on a
//! transition is sent only after that transition is durable.

// Handlers return early with a ready `Response` as their error: it is built
// once per request on the way out, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming};
use redeem_engine::{Begin, CampaignPatch, CampaignSpec, IdemKey, Lsn, PublicState, Refusal};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::render;
use crate::timefmt;
use crate::tokens::{Principal, Role};

pub type Body = BoxBody<Bytes, Infallible>;

/// Longest accepted idempotency key.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;
/// How long a request waits for an in-flight request with the same key.
const IDEMPOTENCY_WAIT_MS_MAX: u64 = 30_000;
/// Codes per CSV chunk sent while exporting.
const EXPORT_CHUNK_CODES: usize = 4096;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub(crate) fn json_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: u16, code: &str, message: &str) -> Response<Body> {
    json_response(status, render::error_body(code, message, &[]))
}

fn refusal(r: &Refusal) -> Response<Body> {
    let mut response = json_response(render::refusal_status(r), render::refusal_body(r));
    if let Refusal::TooManyFailedAttempts {
        retry_after_seconds,
    } = r
    {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(*retry_after_seconds));
    }
    response
}

fn log_failure() -> Response<Body> {
    error(
        503,
        "log_failed",
        "the write-ahead log failed; nothing more is acknowledged",
    )
}

/// The route a request matched, named for metrics and logs.
type RouteName = &'static str;

/// Reads the request body up to `limit` bytes.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(limit))
        }
        Err(_) => Err(error(
            400,
            "invalid_request",
            "the request body could not be read",
        )),
    }
}

fn too_large(limit: usize) -> Response<Body> {
    json_response(
        413,
        render::error_body(
            "body_too_large",
            &format!("the request body is larger than {limit} bytes"),
            &[("limit", limit.into())],
        ),
    )
}

fn content_type(req: &http::request::Parts) -> Option<String> {
    req.headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Parses a JSON body into `T`, rejecting unknown fields. An empty body
/// with no content type reads as `{}` for routes whose fields are optional.
fn parse_json<T: serde::de::DeserializeOwned>(
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<T, Response<Body>> {
    let ct = content_type(parts);
    let body = if body.is_empty() && ct.is_none() {
        &b"{}"[..]
    } else {
        body
    };
    if ct.as_deref().is_some_and(|ct| ct != "application/json") {
        return Err(error(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    if ct.is_none() && !body.is_empty() && body != b"{}" {
        return Err(error(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ));
    }
    // A body that is not JSON is `invalid_json`; a JSON body of the wrong
    // shape (not an object, unknown field, wrong type, missing field) is
    // `invalid_request`. Typed parsing stops at its first error, which need
    // not tell the two apart: `2 x` fails on the type of `2`, and `[[]]`
    // (a derived type reads an array as its fields in order) on "trailing
    // characters". So a failure is classified by parsing the whole body
    // as a `Value` (not `IgnoredAny`, which lets invalid UTF-8 in strings
    // through), a second pass paid only on the error path.
    let is_object = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{');
    let not_an_object = || bad_field("body", "the body must be a JSON object");
    match serde_json::from_slice(body) {
        Ok(parsed) if is_object => Ok(parsed),
        Ok(_) => Err(not_an_object()),
        Err(e) => {
            if let Err(syntax) = serde_json::from_slice::<Value>(body) {
                return Err(error(
                    400,
                    "invalid_json",
                    &format!("the body is not valid JSON: {syntax}"),
                ));
            }
            if !is_object {
                return Err(not_an_object());
            }
            let message = e.to_string();
            let field = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"))
                .unwrap_or("body")
                .to_owned();
            Err(json_response(
                400,
                render::error_body("invalid_request", &message, &[("field", field.into())]),
            ))
        }
    }
}

fn query_params(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes; `plus_is_space` for query strings only.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_u64_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, Response<Body>> {
    match params.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v.parse().map(Some).map_err(|_| {
            json_response(
                400,
                render::error_body(
                    "invalid_request",
                    &format!("{name} must be a non-negative integer"),
                    &[("field", name.into())],
                ),
            )
        }),
    }
}

/// The idempotency key of a request, scoped to its token.
struct KeyedRequest {
    scoped: String,
    fingerprint: u128,
}

fn idempotency_key(
    parts: &http::request::Parts,
    principal: &Principal,
    body: &[u8],
) -> Result<Option<KeyedRequest>, Response<Body>> {
    let Some(value) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
        || !key.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(json_response(
            400,
            render::error_body(
                "invalid_request",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
                &[("field", "Idempotency-Key".into())],
            ),
        ));
    }
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update([0]);
    hasher.update(body);
    let digest: [u8; 32] = hasher.finalize().into();
    let fingerprint = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
    let scoped = format!("{}:{}", principal.scope, String::from_utf8_lossy(key));
    Ok(Some(KeyedRequest {
        scoped,
        fingerprint,
    }))
}

/// What an operation produced: a response and the LSN it must wait for.
struct Answer {
    status: u16,
    body: Vec<u8>,
    /// Every transition the answer reports or depends on is at or below it.
    lsn: Lsn,
}

/// Runs `op` under the request's idempotency key, if it has one: a replay
/// returns the stored response, a reused key with another request is
/// refused, and a new outcome is stored durably with its transition.
async fn keyed(
    app: &App,
    key: Option<KeyedRequest>,
    op: impl FnOnce(Option<IdemKey<'_>>) -> Result<Answer, Refusal>,
) -> Response<Body> {
    let Some(key) = key else {
        return finish(app, run_op(app, None, op)).await;
    };
    let idem = IdemKey {
        key: &key.scoped,
        fingerprint: key.fingerprint,
    };
    let deadline = Instant::now() + Duration::from_millis(IDEMPOTENCY_WAIT_MS_MAX);
    loop {
        match app.engine.begin_idempotent(idem, timefmt::now()) {
            Err(r) => return refusal(&r),
            Ok(Begin::Replay(stored)) => {
                if app.durable(stored.lsn).await.is_err() {
                    return log_failure();
                }
                let mut response = json_response(stored.status, stored.body.to_vec());
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return response;
            }
            Ok(Begin::Mismatch) => {
                return error(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with a different request",
                );
            }
            Ok(Begin::InFlight) => {
                if Instant::now() >= deadline {
                    return error(
                        409,
                        "idempotency_key_in_flight",
                        "a request with this Idempotency-Key is still running",
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Begin::Fresh) => break,
        }
    }
    let outcome = run_op(app, Some(idem), op);
    let answer = match outcome {
        Err(ref r @ Refusal::Unavailable(_)) => {
            app.engine.idempotency().abandon(idem.key);
            return refusal(r);
        }
        // Throttling and capacity answers are about this moment, not about
        // the request: they are not stored, so a retry runs anew.
        Err(ref r @ (Refusal::TooManyFailedAttempts { .. } | Refusal::IdempotencyTableFull(_))) => {
            app.engine.idempotency().abandon(idem.key);
            return refusal(r);
        }
        Err(r) => Answer {
            status: render::refusal_status(&r),
            body: render::refusal_body(&r),
            lsn: 0,
        },
        Ok(answer) => answer,
    };
    // A transition stored its response with its record; anything else
    // (a refusal, or an answer that changed nothing) gets its own record.
    let stored = match app.engine.begin_idempotent(idem, timefmt::now()) {
        Ok(Begin::Replay(stored)) => stored,
        _ => match app
            .engine
            .store_response(idem, answer.status, &answer.body, timefmt::now())
        {
            Ok(lsn) => redeem_engine::StoredResponse {
                status: answer.status,
                body: answer.body.into(),
                lsn,
            },
            Err(r) => {
                app.engine.idempotency().abandon(idem.key);
                return refusal(&r);
            }
        },
    };
    let lsn = stored.lsn.max(app.wal.last_lsn());
    if app.durable(lsn).await.is_err() {
        return log_failure();
    }
    json_response(stored.status, stored.body.to_vec())
}

/// Runs an operation; a refusal that reports state depends on whatever is
/// in the log now, so it waits for the log's current end.
fn run_op(
    app: &App,
    idem: Option<IdemKey<'_>>,
    op: impl FnOnce(Option<IdemKey<'_>>) -> Result<Answer, Refusal>,
) -> Result<Answer, Refusal> {
    op(idem).map(|mut answer| {
        if answer.lsn == 0 {
            answer.lsn = app.wal.last_lsn();
        }
        answer
    })
}

async fn finish(app: &App, outcome: Result<Answer, Refusal>) -> Response<Body> {
    match outcome {
        Ok(answer) => {
            if app.durable(answer.lsn).await.is_err() {
                return log_failure();
            }
            json_response(answer.status, answer.body)
        }
        Err(r @ Refusal::Unavailable(_)) => refusal(&r),
        Err(r) => {
            // A refusal that reports a code's state waits for the record
            // that made it; any other for whatever the log holds now.
            let lsn = r.reported_lsn().unwrap_or_else(|| app.wal.last_lsn());
            if app.durable(lsn).await.is_err() {
                return log_failure();
            }
            refusal(&r)
        }
    }
}

fn authorize(
    app: &App,
    parts: &http::request::Parts,
    roles: &[Role],
) -> Result<Principal, Response<Body>> {
    if app.config.no_auth {
        return Ok(Principal {
            role: Role::Admin,
            name: "no-auth".into(),
            scope: "noauth".into(),
        });
    }
    let token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let Some(principal) = token.and_then(|t| app.tokens.authenticate(t)) else {
        return Err(error(
            401,
            "unauthenticated",
            "send a valid token as `Authorization: Bearer <token>`",
        ));
    };
    if principal.role != Role::Admin && !roles.contains(&principal.role) {
        return Err(error(
            403,
            "forbidden",
            &format!(
                "the {} role may not use this route",
                principal.role.as_str()
            ),
        ));
    }
    Ok(principal)
}

/// Serves one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let timeout = Duration::from_secs(app.config.request_timeout_seconds);
    let (route, response) = match tokio::time::timeout(timeout, route(&app, req)).await {
        Ok(answer) => answer,
        Err(_) => (
            "timeout",
            error(503, "request_timeout", "the request took too long"),
        ),
    };
    app.metrics
        .observe_request(route, response.status().as_u16(), start.elapsed());
    Ok(response)
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> (RouteName, Response<Body>) {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = parts.method.clone();
    match (method, segs.as_slice()) {
        (Method::GET, ["healthz"]) => (
            "healthz",
            json_response(200, br#"{"status":"ok"}"#.to_vec()),
        ),
        (Method::GET, ["readyz"]) => {
            if app.is_ready() {
                (
                    "readyz",
                    json_response(200, br#"{"status":"ready"}"#.to_vec()),
                )
            } else {
                (
                    "readyz",
                    error(503, "not_ready", "the log is being replayed"),
                )
            }
        }
        (Method::GET, ["metrics"]) => ("metrics", metrics(app)),
        (_, ["healthz" | "readyz" | "metrics"]) => ("other", method_not_allowed("GET")),
        (method, ["v1", rest @ ..]) => {
            if !app.is_ready() {
                return (
                    "not_ready",
                    error(503, "not_ready", "the log is being replayed; retry shortly"),
                );
            }
            v1(app, method, rest, parts, body).await
        }
        _ => ("other", error(404, "not_found", "no such route")),
    }
}

/// 405 with the `Allow` header HTTP requires: the methods the route takes.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(
        405,
        "method_not_allowed",
        "this route does not take that method",
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn v1(
    app: &Arc<App>,
    method: Method,
    segs: &[&str],
    parts: http::request::Parts,
    body: Incoming,
) -> (RouteName, Response<Body>) {
    use Role::*;
    macro_rules! auth {
        ($roles:expr) => {
            match authorize(app, &parts, $roles) {
                Ok(p) => p,
                Err(r) => return (ROUTE, r),
            }
        };
    }
    macro_rules! body {
        ($limit:expr) => {
            match read_body(body, $limit).await {
                Ok(b) => b,
                Err(r) => return (ROUTE, r),
            }
        };
    }
    macro_rules! json {
        ($t:ty, $bytes:expr) => {
            match parse_json::<$t>(&parts, &$bytes) {
                Ok(v) => v,
                Err(r) => return (ROUTE, r),
            }
        };
    }
    macro_rules! key {
        ($principal:expr, $bytes:expr) => {
            match idempotency_key(&parts, &$principal, &$bytes) {
                Ok(k) => k,
                Err(r) => return (ROUTE, r),
            }
        };
    }
    let limit = app.config.body_bytes_max;
    match (method, segs) {
        (Method::POST, ["campaigns"]) => {
            const ROUTE: RouteName = "create_campaign";
            let principal = auth!(&[]);
            let bytes = body!(limit);
            let req = json!(CreateCampaign, bytes);
            let key = key!(principal, bytes);
            let spec = match req.into_spec() {
                Ok(spec) => spec,
                Err(r) => return (ROUTE, r),
            };
            let response = keyed(app, key, |idem| {
                let view = app.engine.create_campaign(spec, timefmt::now(), idem)?;
                Ok(Answer {
                    status: 201,
                    body: render::campaign(&view),
                    lsn: app.wal.last_lsn(),
                })
            })
            .await;
            (ROUTE, response)
        }
        (Method::GET, ["campaigns"]) => {
            const ROUTE: RouteName = "list_campaigns";
            auth!(&[]);
            let now = timefmt::now();
            let list: Vec<Value> = app
                .engine
                .campaigns()
                .map(|c| render::campaign_value(&c.view(now)))
                .collect();
            let body =
                serde_json::to_vec(&serde_json::json!({ "campaigns": list })).expect("serializes");
            (ROUTE, json_response(200, body))
        }
        (_, ["campaigns"]) => ("other", method_not_allowed("GET, POST")),
        (Method::GET, ["campaigns", id]) => {
            const ROUTE: RouteName = "get_campaign";
            auth!(&[]);
            match app.engine.campaign(id) {
                Some(c) => (
                    ROUTE,
                    json_response(200, render::campaign(&c.view(timefmt::now()))),
                ),
                None => (ROUTE, refusal(&Refusal::UnknownCampaign)),
            }
        }
        (Method::PATCH, ["campaigns", id]) => {
            const ROUTE: RouteName = "update_campaign";
            let principal = auth!(&[]);
            let bytes = body!(limit);
            let value = json!(Value, bytes);
            let patch = match parse_patch(value) {
                Ok(p) => p,
                Err(r) => return (ROUTE, r),
            };
            let key = key!(principal, bytes);
            let id = id.to_string();
            let response = keyed(app, key, |idem| {
                let view = app
                    .engine
                    .update_campaign(&id, patch, timefmt::now(), idem)?;
                Ok(Answer {
                    status: 200,
                    body: render::campaign(&view),
                    lsn: app.wal.last_lsn(),
                })
            })
            .await;
            (ROUTE, response)
        }
        (_, ["campaigns", _]) => ("other", method_not_allowed("GET, PATCH")),
        (Method::POST, ["campaigns", id, "codes"]) => {
            const ROUTE: RouteName = "add_codes";
            let principal = auth!(&[]);
            let id = id.to_string();
            let response = add_codes(app, &id, &principal, &parts, body).await;
            (ROUTE, response)
        }
        (Method::GET, ["campaigns", id, "codes"]) => {
            const ROUTE: RouteName = "export_codes";
            auth!(&[]);
            (ROUTE, export_codes(app, id, &parts))
        }
        (_, ["campaigns", _, "codes"]) => ("other", method_not_allowed("GET, POST")),
        (Method::POST, ["campaigns", id, "assignments"]) => {
            const ROUTE: RouteName = "assign";
            let principal = auth!(&[Issuer]);
            let bytes = body!(limit);
            let req = json!(AssignRequest, bytes);
            let key = key!(principal, bytes);
            let id = id.to_string();
            let idem_key = key.as_ref().map(|k| k.scoped.clone());
            let response = keyed(app, key, |idem| {
                let result = app.engine.assign(&id, &req.recipient, timefmt::now(), idem);
                if let Err(r) = &result {
                    tracing::info!(campaign = %id, recipient = %req.recipient, idempotency_key = ?idem_key, failure = r.code(), "assignment refused");
                }
                let a = result?;
                Ok(Answer { status: if a.new { 201 } else { 200 }, body: render::assignment(&a), lsn: a.lsn.unwrap_or(0) })
            })
            .await;
            (ROUTE, response)
        }
        (_, ["campaigns", _, "assignments"]) => ("other", method_not_allowed("POST")),
        (Method::GET, ["codes", code]) => {
            const ROUTE: RouteName = "get_code";
            auth!(&[Issuer, Checkout]);
            let params = query_params(&parts.uri);
            let user = params
                .iter()
                .find(|(k, _)| k == "user")
                .map(|(_, v)| v.clone());
            let outcome = app.engine.status(code, user.as_deref(), timefmt::now());
            let outcome = outcome.map(|s| Answer {
                status: 200,
                body: render::code_status(&s),
                lsn: 0,
            });
            (
                ROUTE,
                finish(
                    app,
                    outcome.map(|mut a| {
                        a.lsn = app.wal.last_lsn();
                        a
                    }),
                )
                .await,
            )
        }
        (_, ["codes", _]) => ("other", method_not_allowed("GET")),
        (Method::POST, ["codes", code, action @ ("rollback" | "void")]) => {
            let (route, roles): (RouteName, &[Role]) = if *action == "rollback" {
                ("rollback", &[Checkout])
            } else {
                ("void", &[])
            };
            const ROUTE: RouteName = "code_action";
            let principal = auth!(roles);
            let bytes = body!(limit);
            let _empty: EmptyRequest = json!(EmptyRequest, bytes);
            let key = key!(principal, bytes);
            let code = code.to_string();
            let rollback = *action == "rollback";
            let response = keyed(app, key, |idem| {
                let now = timefmt::now();
                let status = if rollback {
                    app.engine.rollback(&code, now, idem)?
                } else {
                    app.engine.void(&code, now, idem)?
                };
                Ok(Answer {
                    status: 200,
                    body: render::code_status(&status),
                    lsn: 0,
                })
            })
            .await;
            (route, response)
        }
        (Method::POST, ["redemptions"]) => {
            const ROUTE: RouteName = "redeem";
            let principal = auth!(&[Checkout]);
            let bytes = body!(limit);
            let req = json!(RedeemRequest, bytes);
            let key = key!(principal, bytes);
            let idem_key = key.as_ref().map(|k| k.scoped.clone());
            let response = keyed(app, key, |idem| {
                let result = app.engine.redeem(&req.code, &req.user, req.order.as_deref(), timefmt::now(), idem);
                if let Err(r) = &result {
                    tracing::info!(code = %req.code, user = %req.user, idempotency_key = ?idem_key, failure = r.code(), "redemption refused");
                }
                let r = result?;
                Ok(Answer { status: 201, body: render::redemption(&r), lsn: r.lsn })
            })
            .await;
            (ROUTE, response)
        }
        (_, ["redemptions"]) => ("other", method_not_allowed("POST")),
        (Method::POST, ["reservations"]) => {
            const ROUTE: RouteName = "reserve";
            let principal = auth!(&[Checkout]);
            let bytes = body!(limit);
            let req = json!(ReserveRequest, bytes);
            let key = key!(principal, bytes);
            let response = keyed(app, key, |idem| {
                let r = app.engine.reserve(
                    &req.code,
                    &req.user,
                    req.ttl_seconds,
                    timefmt::now(),
                    idem,
                )?;
                Ok(Answer {
                    status: 201,
                    body: render::reservation(&r),
                    lsn: r.lsn,
                })
            })
            .await;
            (ROUTE, response)
        }
        (_, ["reservations"]) => ("other", method_not_allowed("POST")),
        (Method::POST, ["reservations", id, "confirm"]) => {
            const ROUTE: RouteName = "confirm";
            let principal = auth!(&[Checkout]);
            let bytes = body!(limit);
            let req = json!(ConfirmRequest, bytes);
            let key = key!(principal, bytes);
            let Some(id) = render::parse_reservation_id(id) else {
                return (ROUTE, refusal(&Refusal::UnknownReservation));
            };
            let response = keyed(app, key, |idem| {
                let r = app
                    .engine
                    .confirm(id, req.order.as_deref(), timefmt::now(), idem)?;
                Ok(Answer {
                    status: 201,
                    body: render::redemption(&r),
                    lsn: r.lsn,
                })
            })
            .await;
            (ROUTE, response)
        }
        (Method::DELETE, ["reservations", id]) => {
            const ROUTE: RouteName = "release";
            let principal = auth!(&[Checkout]);
            let bytes = body!(limit);
            let key = key!(principal, bytes);
            let Some(id) = render::parse_reservation_id(id) else {
                return (ROUTE, refusal(&Refusal::UnknownReservation));
            };
            let response = keyed(app, key, |idem| {
                let status = app.engine.release(id, timefmt::now(), idem)?;
                Ok(Answer {
                    status: 200,
                    body: render::code_status(&status),
                    lsn: 0,
                })
            })
            .await;
            (ROUTE, response)
        }
        (_, ["reservations", ..]) => ("other", method_not_allowed("POST, DELETE")),
        (Method::GET, ["events"]) => {
            const ROUTE: RouteName = "events";
            auth!(&[]);
            (ROUTE, crate::events::events(app, &parts).await)
        }
        (_, ["events"]) => ("other", method_not_allowed("GET")),
        _ => ("other", error(404, "not_found", "no such route")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeFormatRequest {
    #[serde(default)]
    prefix: String,
    #[serde(default = "default_length")]
    length: u8,
}

fn default_length() -> u8 {
    redeem_engine::codec::BODY_SYMBOLS_DEFAULT
}

fn default_one() -> u32 {
    1
}

fn default_ttl() -> u64 {
    900
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCampaign {
    id: String,
    #[serde(default)]
    generate: u64,
    code: Option<CodeFormatRequest>,
    starts_at: Option<String>,
    expires_at: Option<String>,
    #[serde(default = "default_one")]
    per_user_limit: u32,
    #[serde(default = "default_one")]
    per_recipient_limit: u32,
    code_valid_seconds_after_assignment: Option<u64>,
    #[serde(default = "default_ttl")]
    reservation_ttl_seconds: u64,
    #[serde(default)]
    low_stock_threshold: u64,
    #[serde(default)]
    test_recipients: Vec<String>,
}

fn parse_time_field(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<redeem_engine::Timestamp>, Response<Body>> {
    match value {
        None => Ok(None),
        Some(s) => timefmt::parse(s).map(Some).ok_or_else(|| {
            json_response(
                400,
                render::error_body(
                    "invalid_request",
                    &format!("{field} must be an RFC 3339 timestamp"),
                    &[("field", field.into())],
                ),
            )
        }),
    }
}

impl CreateCampaign {
    fn into_spec(self) -> Result<CampaignSpec, Response<Body>> {
        let code = self.code.unwrap_or(CodeFormatRequest {
            prefix: String::new(),
            length: default_length(),
        });
        if self.per_recipient_limit == 0 {
            return Err(json_response(
                400,
                render::error_body(
                    "invalid_request",
                    "per_recipient_limit must be at least 1",
                    &[("field", "per_recipient_limit".into())],
                ),
            ));
        }
        Ok(CampaignSpec {
            id: self.id,
            generate: self.generate,
            prefix: code.prefix,
            length: code.length,
            starts_at: parse_time_field("starts_at", self.starts_at.as_deref())?,
            expires_at: parse_time_field("expires_at", self.expires_at.as_deref())?,
            per_user_limit: self.per_user_limit,
            per_recipient_limit: self.per_recipient_limit,
            code_valid_seconds_after_assignment: self.code_valid_seconds_after_assignment,
            reservation_ttl_seconds: self.reservation_ttl_seconds,
            low_stock_threshold: self.low_stock_threshold,
            test_recipients: self.test_recipients,
        })
    }
}

fn bad_field(field: &str, message: &str) -> Response<Body> {
    json_response(
        400,
        render::error_body("invalid_request", message, &[("field", field.into())]),
    )
}

fn parse_patch(value: Value) -> Result<CampaignPatch, Response<Body>> {
    let Value::Object(map) = value else {
        return Err(bad_field("body", "the body must be a JSON object"));
    };
    let mut patch = CampaignPatch::default();
    for (key, v) in map {
        match key.as_str() {
            "starts_at" | "expires_at" => {
                let t = match &v {
                    Value::Null => None,
                    Value::String(s) => Some(timefmt::parse(s).ok_or_else(|| {
                        bad_field(
                            &key,
                            &format!("{key} must be an RFC 3339 timestamp or null"),
                        )
                    })?),
                    _ => {
                        return Err(bad_field(
                            &key,
                            &format!("{key} must be an RFC 3339 timestamp or null"),
                        ));
                    }
                };
                if key == "starts_at" {
                    patch.starts_at = Some(t)
                } else {
                    patch.expires_at = Some(t)
                }
            }
            "paused" => {
                patch.paused = Some(
                    v.as_bool()
                        .ok_or_else(|| bad_field("paused", "paused must be true or false"))?,
                )
            }
            "low_stock_threshold" => {
                patch.low_stock_threshold = Some(v.as_u64().ok_or_else(|| {
                    bad_field(
                        "low_stock_threshold",
                        "low_stock_threshold must be a non-negative integer",
                    )
                })?)
            }
            "test_recipients" => {
                let list: Vec<String> = serde_json::from_value(v).map_err(|_| {
                    bad_field(
                        "test_recipients",
                        "test_recipients must be a list of strings",
                    )
                })?;
                patch.test_recipients = Some(list);
            }
            other => {
                return Err(bad_field(
                    other,
                    &format!(
                        "unknown field `{other}`; PATCH takes starts_at, expires_at, paused, test_recipients, low_stock_threshold"
                    ),
                ));
            }
        }
    }
    Ok(patch)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    recipient: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    code: String,
    user: String,
    order: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    code: String,
    user: String,
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    order: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyRequest {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    generate: u64,
}

/// The routes [`parse_request`] knows, by their metrics names.
/// `generate` is the JSON branch of `POST /v1/campaigns/{id}/codes`, which
/// the handler takes only for `Content-Type: application/json`.
#[doc(hidden)]
pub const JSON_ROUTES: [&str; 8] = [
    "create_campaign",
    "update_campaign",
    "generate",
    "assign",
    "code_action",
    "redeem",
    "reserve",
    "confirm",
];

/// Test seam for `fuzz/`: runs one route's request parsing exactly as its
/// handler does (content type, [`parse_json`] into the route's private
/// request type, and the checks that need no engine), stopping before
/// auth, idempotency and the engine. `Err` is the response the client
/// would get. Not part of the API.
///
/// # Panics
///
/// If `route` is not one of [`JSON_ROUTES`].
#[doc(hidden)]
pub fn parse_request(
    route: &str,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<(), Response<Body>> {
    match route {
        "create_campaign" => parse_json::<CreateCampaign>(parts, body)?
            .into_spec()
            .map(drop),
        "update_campaign" => parse_patch(parse_json::<Value>(parts, body)?).map(drop),
        "generate" => parse_json::<GenerateRequest>(parts, body).map(drop),
        "assign" => parse_json::<AssignRequest>(parts, body).map(drop),
        "code_action" => parse_json::<EmptyRequest>(parts, body).map(drop),
        "redeem" => parse_json::<RedeemRequest>(parts, body).map(drop),
        "reserve" => parse_json::<ReserveRequest>(parts, body).map(drop),
        "confirm" => parse_json::<ConfirmRequest>(parts, body).map(drop),
        other => panic!("parse_request: no JSON route {other:?}"),
    }
}

/// Splits a byte stream into lines for the importer, holding only a
/// partial last line between chunks.
struct LineFeeder<'e, J: redeem_engine::Journal> {
    importer: redeem_engine::Importer<'e, J>,
    carry: Vec<u8>,
    line_no: u64,
    now: redeem_engine::Timestamp,
}

impl<'e, J: redeem_engine::Journal> LineFeeder<'e, J> {
    fn feed(&mut self, data: &[u8]) -> Result<(), Refusal> {
        self.carry.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.carry[start..].iter().position(|&b| b == b'\n') {
            self.line_no += 1;
            let line = String::from_utf8_lossy(&self.carry[start..start + pos]).into_owned();
            self.importer.push(self.line_no, &line, self.now)?;
            start += pos + 1;
        }
        self.carry.drain(..start);
        Ok(())
    }

    fn finish(mut self) -> Result<redeem_engine::ImportReport, Refusal> {
        if !self.carry.is_empty() {
            self.line_no += 1;
            let line = String::from_utf8_lossy(&self.carry).into_owned();
            self.importer.push(self.line_no, &line, self.now)?;
        }
        self.importer.finish(self.now)
    }
}

async fn add_codes(
    app: &Arc<App>,
    id: &str,
    principal: &Principal,
    parts: &http::request::Parts,
    mut body: Incoming,
) -> Response<Body> {
    let ct = content_type(parts);
    if ct.as_deref() == Some("application/json") {
        let bytes = match read_body(body, app.config.body_bytes_max).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req: GenerateRequest = match parse_json(parts, &bytes) {
            Ok(r) => r,
            Err(r) => return r,
        };
        let key = match idempotency_key(parts, principal, &bytes) {
            Ok(k) => k,
            Err(r) => return r,
        };
        return keyed(app, key, |idem| {
            let report = app
                .engine
                .generate(id, req.generate, timefmt::now(), idem)?;
            Ok(Answer {
                status: 200,
                body: render::import_report(&report),
                lsn: app.wal.last_lsn(),
            })
        })
        .await;
    }
    if ct.as_deref() != Some("text/plain") {
        return error(
            415,
            "unsupported_media_type",
            "send {\"generate\": N} as application/json or codes as text/plain",
        );
    }
    let limit = app.config.import_bytes_max;
    let new_feeder = || {
        app.engine.importer(id).map(|importer| LineFeeder {
            importer,
            carry: Vec::new(),
            line_no: 0,
            now: timefmt::now(),
        })
    };
    if parts.headers.contains_key("idempotency-key") {
        // A keyed import is read whole first: its fingerprint covers the
        // body. Retried after a crash, it finds its codes present and
        // counts them as duplicates.
        let bytes = match read_body(body, limit).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let key = match idempotency_key(parts, principal, &bytes) {
            Ok(k) => k,
            Err(r) => return r,
        };
        return keyed(app, key, |_idem| {
            let mut feeder = new_feeder()?;
            feeder.feed(&bytes)?;
            let report = feeder.finish()?;
            Ok(Answer {
                status: 200,
                body: render::import_report(&report),
                lsn: app.wal.last_lsn(),
            })
        })
        .await;
    }
    let mut feeder = match new_feeder() {
        Ok(f) => f,
        Err(r) => return refusal(&r),
    };
    let mut seen = 0usize;
    // Lines are fed as they arrive; only a partial last line is held.
    loop {
        let frame =
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    return error(400, "invalid_request", "the request body could not be read");
                }
            };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > limit {
            return too_large(limit);
        }
        if let Err(r) = feeder.feed(&data) {
            return refusal(&r);
        }
    }
    let outcome = feeder.finish().map(|report| Answer {
        status: 200,
        body: render::import_report(&report),
        lsn: app.wal.last_lsn(),
    });
    finish(app, outcome).await
}

/// A response body fed from a channel, for streamed CSV and NDJSON.
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn export_codes(app: &Arc<App>, id: &str, parts: &http::request::Parts) -> Response<Body> {
    let params = query_params(&parts.uri);
    let state = match params.iter().find(|(k, _)| k == "state") {
        None => None,
        Some((_, s)) => match PublicState::parse(s) {
            Some(state) => Some(state),
            None => {
                return bad_field(
                    "state",
                    "state must be one of available, assigned, reserved, redeemed, voided",
                );
            }
        },
    };
    let limit = match parse_u64_param(&params, "limit") {
        Ok(l) => l.unwrap_or(u64::MAX),
        Err(r) => return r,
    };
    if app.engine.campaign(id).is_none() {
        return refusal(&Refusal::UnknownCampaign);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let app = app.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let campaign = app.engine.campaign(&id).expect("checked above");
        let mut chunk = String::from("code,state\n");
        let mut sent = 0u64;
        let mut in_chunk = 0;
        for (slot, s) in campaign.states() {
            if sent >= limit {
                break;
            }
            if state.is_some_and(|want| want != s) {
                continue;
            }
            chunk.push_str(&campaign.code_of(slot));
            chunk.push(',');
            chunk.push_str(s.as_str());
            chunk.push('\n');
            sent += 1;
            in_chunk += 1;
            if in_chunk >= EXPORT_CHUNK_CODES {
                in_chunk = 0;
                if tx
                    .blocking_send(Bytes::from(std::mem::take(&mut chunk)))
                    .is_err()
                {
                    return; // The client went away.
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(Bytes::from(chunk));
        }
    });
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    response
}

fn metrics(app: &App) -> Response<Body> {
    use std::fmt::Write;
    let mut extra = String::new();
    let stats = app.wal.stats();
    let _ = writeln!(
        extra,
        "# HELP redeemd_wal_durable_lsn Highest LSN known durable.\n# TYPE redeemd_wal_durable_lsn gauge\nredeemd_wal_durable_lsn {}",
        stats.durable_lsn
    );
    let _ = writeln!(
        extra,
        "# HELP redeemd_wal_last_lsn Highest LSN appended.\n# TYPE redeemd_wal_last_lsn gauge\nredeemd_wal_last_lsn {}",
        stats.last_lsn
    );
    let _ = writeln!(
        extra,
        "# HELP redeemd_wal_commits_total Group commits.\n# TYPE redeemd_wal_commits_total counter\nredeemd_wal_commits_total {}",
        stats.commits
    );
    let _ = writeln!(
        extra,
        "# HELP redeemd_wal_syncs_total msync calls.\n# TYPE redeemd_wal_syncs_total counter\nredeemd_wal_syncs_total {}",
        stats.syncs
    );
    let batch = if stats.commits == 0 {
        0.0
    } else {
        stats.durable_lsn as f64 / stats.commits as f64
    };
    let _ = writeln!(
        extra,
        "# HELP redeemd_wal_records_per_commit Mean records made durable per group commit.\n# TYPE redeemd_wal_records_per_commit gauge\nredeemd_wal_records_per_commit {batch}"
    );
    let now = timefmt::now();
    extra.push_str("# HELP redeemd_pool_codes Codes per campaign and state.\n# TYPE redeemd_pool_codes gauge\n");
    let mut low = String::from(
        "# HELP redeemd_pool_low_stock 1 when a campaign is below its low-stock threshold.\n# TYPE redeemd_pool_low_stock gauge\n",
    );
    for campaign in app.engine.campaigns() {
        let s = campaign.stats(now);
        for (state, n) in [
            ("available", s.available),
            ("assigned", s.assigned),
            ("reserved", s.reserved),
            ("redeemed", s.redeemed),
            ("voided", s.voided),
        ] {
            let _ = writeln!(
                extra,
                "redeemd_pool_codes{{campaign=\"{}\",state=\"{state}\"}} {n}",
                campaign.id()
            );
        }
        let _ = writeln!(
            low,
            "redeemd_pool_low_stock{{campaign=\"{}\"}} {}",
            campaign.id(),
            u8::from(s.low_stock)
        );
    }
    extra.push_str(&low);
    let mut response = Response::new(full(app.metrics.render(&extra)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
