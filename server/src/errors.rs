//! The one error table: every way a request can fail, engine refusal or
//! server-side check, maps here to its HTTP status, its stable API code
//! (API.md), its human message and its context fields.
//!
//! Both matches below are exhaustive on purpose: a new `Refusal` variant
//! or a new `ApiError` without an answer fails to compile, so no failure
//! can fall through to a generic 500.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;

use http::header::HeaderValue;
use http::{Response, StatusCode};
use redeem_engine::idempotency::{Capacity, TableFull};
use redeem_engine::{Refusal, Timestamp};

use crate::http::{Body, json_response};
use crate::limiter::Throttled;
use crate::timefmt;
use crate::tokens::Role;

/// A request that gets an error answer instead of a result.
#[derive(Debug)]
pub enum ApiError {
    /// The engine changed nothing, for the reason given.
    Refused(Refusal),
    /// No token, or one the store does not know.
    Unauthenticated,
    /// A valid token whose role the route does not admit.
    Forbidden { role: Role },
    /// No route has that path.
    NotFound,
    /// The path exists, the method does not; `allow` lists the ones it takes.
    MethodNotAllowed { allow: HeaderValue },
    /// The log is still being replayed.
    NotReady { message: &'static str },
    /// The body is not JSON at all.
    InvalidJson { detail: String },
    /// The request is well formed but a field (or parameter, or header) is wrong.
    InvalidField { field: String, message: String },
    /// The body could not be read from the connection.
    BodyUnreadable,
    /// The body's content type is not one the route takes.
    UnsupportedMediaType { hint: &'static str },
    /// The body is larger than the route's limit.
    BodyTooLarge { limit: usize },
    /// A sync failed: the log accepts nothing more (fsyncgate).
    LogFailed,
    /// The request ran past `--request-timeout-seconds`.
    RequestTimeout,
    /// The idempotency key was first used with another request.
    IdempotencyKeyReused,
    /// The first request with this key is still running past the wait limit.
    IdempotencyKeyInFlight,
    /// An identity of the request used up its failed-attempt budget.
    TooManyFailedAttempts(Throttled),
    /// The log could not be read for the events a client asked for.
    EventsUnavailable { detail: String },
    /// An explicit `after` is older than the oldest record retention kept.
    EventsTruncated { oldest_lsn: u64 },
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError::Refused(refusal)
    }
}

/// An error's answer, before it is rendered. Borrows what it can and
/// formats nothing until rendered, so asking only for the status or the
/// code (metrics, log lines) costs no allocation.
struct Described<'a> {
    status: u16,
    code: &'static str,
    message: Message<'a>,
    /// At most two context fields per answer.
    context: [Option<(&'static str, Context<'a>)>; 2],
}

/// An answer's human message.
enum Message<'a> {
    Text(Cow<'a, str>),
    /// The refusal's own `Display`.
    Refusal(&'a Refusal),
}

/// A context field's value.
enum Context<'a> {
    Str(Cow<'a, str>),
    Number(u64),
    /// Rendered as RFC 3339 text.
    Time(Timestamp),
}

impl<'a> From<&'a str> for Context<'a> {
    fn from(s: &'a str) -> Self {
        Context::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Context<'_> {
    fn from(s: String) -> Self {
        Context::Str(Cow::Owned(s))
    }
}

impl From<u64> for Context<'_> {
    fn from(n: u64) -> Self {
        Context::Number(n)
    }
}

impl From<u32> for Context<'_> {
    fn from(n: u32) -> Self {
        Context::Number(u64::from(n))
    }
}

impl From<usize> for Context<'_> {
    fn from(n: usize) -> Self {
        Context::Number(n as u64)
    }
}

impl From<Timestamp> for Context<'_> {
    fn from(t: Timestamp) -> Self {
        Context::Time(t)
    }
}

fn described<'a>(
    status: u16,
    code: &'static str,
    message: impl Into<Cow<'a, str>>,
) -> Described<'a> {
    Described {
        status,
        code,
        message: Message::Text(message.into()),
        context: [None, None],
    }
}

impl<'a> Described<'a> {
    fn with(mut self, key: &'static str, value: impl Into<Context<'a>>) -> Self {
        let free = self
            .context
            .iter_mut()
            .find(|c| c.is_none())
            .expect("an answer has at most two context fields");
        *free = Some((key, value.into()));
        self
    }
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => f.write_str(text),
            Message::Refusal(refusal) => fmt::Display::fmt(refusal, f),
        }
    }
}

/// The table's half for engine refusals; the message is the refusal's own.
fn describe_refusal(refusal: &Refusal) -> Described<'_> {
    let d = |status, code| Described {
        status,
        code,
        message: Message::Refusal(refusal),
        context: [None, None],
    };
    match refusal {
        Refusal::InvalidRequest { field, .. } => d(400, "invalid_request").with("field", *field),
        Refusal::UnknownCampaign => d(404, "unknown_campaign"),
        Refusal::CampaignExists => d(409, "campaign_exists"),
        Refusal::PrefixConflict { other } => {
            d(409, "prefix_conflict").with("campaign", other.as_str())
        }
        Refusal::CodeSpaceTooSmall { issued, space } => d(400, "code_space_too_small")
            .with("given", *issued)
            .with("space", space.to_string()),
        Refusal::TooManyCampaigns { limit } => d(409, "too_many_campaigns").with("limit", *limit),
        Refusal::MalformedCode => d(400, "malformed_code"),
        Refusal::UnknownCode => d(404, "unknown_code"),
        Refusal::AlreadyRedeemed { redeemed_at, .. } => {
            d(409, "already_redeemed").with("redeemed_at", *redeemed_at)
        }
        Refusal::CodeReserved { .. } => d(409, "code_reserved"),
        Refusal::CodeVoided { .. } => d(410, "code_voided"),
        Refusal::CodeExpired => d(410, "code_expired"),
        Refusal::CampaignNotStarted => d(422, "campaign_not_started"),
        Refusal::CampaignPaused => d(422, "campaign_paused"),
        Refusal::UserLimitReached { limit } => d(409, "user_limit_reached").with("limit", *limit),
        Refusal::PoolExhausted => d(409, "pool_exhausted"),
        Refusal::UnknownRecipient => d(404, "unknown_recipient"),
        Refusal::PoolShort { needed, available } => d(409, "pool_exhausted")
            .with("needed", *needed)
            .with("available", *available),
        Refusal::NotRedeemed => d(409, "not_redeemed"),
        Refusal::UnknownReservation => d(404, "unknown_reservation"),
        Refusal::UnknownWebhook => d(404, "unknown_webhook"),
        Refusal::WebhookExists => d(409, "webhook_exists"),
        Refusal::TooManyWebhooks { limit } => d(409, "too_many_webhooks").with("limit", *limit),
        Refusal::ReservationExpired => d(410, "reservation_expired"),
        // The server is out of room for keys: not the client's fault.
        Refusal::IdempotencyTableFull(
            full @ TableFull {
                capacity: Capacity::Table,
                ..
            },
        ) => d(503, "idempotency_table_full")
            .with("given", full.given)
            .with("limit", full.limit),
        // The token holds its whole share of keys: the client's doing.
        Refusal::IdempotencyTableFull(
            full @ TableFull {
                capacity: Capacity::Scope,
                ..
            },
        ) => described(
            429,
            "idempotency_keys_exhausted",
            format!(
                "this token holds {} idempotency keys younger than 24 h, its share of the table; reuse a key or retry once older keys expire",
                full.limit
            ),
        )
        .with("given", full.given)
        .with("limit", full.limit),
        Refusal::Unavailable(_) => d(503, "unavailable"),
    }
}

impl ApiError {
    /// The table.
    fn describe(&self) -> Described<'_> {
        match self {
            ApiError::Refused(refusal) => describe_refusal(refusal),
            ApiError::Unauthenticated => described(
                401,
                "unauthenticated",
                "send a valid token as `Authorization: Bearer <token>`",
            ),
            ApiError::Forbidden { role } => described(
                403,
                "forbidden",
                format!("the {} role may not use this route", role.as_str()),
            ),
            ApiError::NotFound => described(404, "not_found", "no such route"),
            ApiError::MethodNotAllowed { .. } => described(
                405,
                "method_not_allowed",
                "this route does not take that method",
            ),
            ApiError::NotReady { message } => described(503, "not_ready", *message),
            ApiError::InvalidJson { detail } => described(
                400,
                "invalid_json",
                format!("the body is not valid JSON: {detail}"),
            ),
            ApiError::InvalidField { field, message } => {
                described(400, "invalid_request", message.as_str()).with("field", field.as_str())
            }
            ApiError::BodyUnreadable => {
                described(400, "invalid_request", "the request body could not be read")
            }
            ApiError::UnsupportedMediaType { hint } => {
                described(415, "unsupported_media_type", *hint)
            }
            ApiError::BodyTooLarge { limit } => described(
                413,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
            .with("limit", *limit),
            ApiError::LogFailed => described(
                503,
                "log_failed",
                "the write-ahead log failed; nothing more is acknowledged",
            ),
            ApiError::RequestTimeout => {
                described(503, "request_timeout", "the request took too long")
            }
            ApiError::IdempotencyKeyReused => described(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            ),
            ApiError::IdempotencyKeyInFlight => described(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still running",
            ),
            ApiError::TooManyFailedAttempts(throttled) => described(
                429,
                "too_many_failed_attempts",
                format!(
                    "too many unknown or malformed codes for this {}; retry after {} s",
                    throttled.limit.as_str(),
                    throttled.retry_after_seconds
                ),
            )
            .with("limit", throttled.limit.as_str())
            .with("retry_after_seconds", throttled.retry_after_seconds),
            ApiError::EventsUnavailable { detail } => {
                described(410, "events_unavailable", detail.as_str())
            }
            ApiError::EventsTruncated { oldest_lsn } => described(
                410,
                "events_truncated",
                format!(
                    "events before LSN {oldest_lsn} were deleted by log retention; ask with after={} or leave it out",
                    oldest_lsn - 1
                ),
            )
            .with("oldest_lsn", *oldest_lsn),
        }
    }

    /// A 400 naming the field at fault.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.describe().status
    }

    /// The stable API code, for logs and metrics.
    pub fn code(&self) -> &'static str {
        self.describe().code
    }

    /// `{"error": {"code", "message", ...context}}`.
    pub fn body(&self) -> Vec<u8> {
        Self::render(self.describe())
    }

    /// Written straight into bytes, keys in byte order (as a
    /// `serde_json` map writes them, which is what clients have seen).
    fn render(d: Described<'_>) -> Vec<u8> {
        let message = d.message.to_string();
        let mut fields: [(&str, Context<'_>); 4] = [
            ("code", Context::Str(Cow::Borrowed(d.code))),
            ("message", Context::Str(Cow::Borrowed(&message))),
            ("", Context::Number(0)),
            ("", Context::Number(0)),
        ];
        let mut n = 2;
        for (key, value) in d.context.into_iter().flatten() {
            fields[n] = (key, value);
            n += 1;
        }
        let fields = &mut fields[..n];
        fields.sort_unstable_by_key(|(key, _)| *key);
        let mut out = Vec::with_capacity(64 + message.len());
        out.extend_from_slice(b"{\"error\":{");
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, key);
            out.push(b':');
            match value {
                Context::Str(s) => write_str(&mut out, s),
                Context::Number(n) => write!(out, "{n}").expect("writing to a Vec never fails"),
                Context::Time(t) => write_str(&mut out, &timefmt::format(*t)),
            }
        }
        out.extend_from_slice(b"}}");
        out
    }

    /// The whole answer, with the headers some errors carry.
    pub fn into_response(self) -> Response<Body> {
        // Described once: a refusal's message and context are built anew
        // each time.
        let described = self.describe();
        let status = described.status;
        let mut response = json_response(status, Self::render(described));
        debug_assert!(StatusCode::from_u16(status).is_ok());
        let headers = response.headers_mut();
        match self {
            ApiError::TooManyFailedAttempts(throttled) => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(throttled.retry_after_seconds),
                );
            }
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(http::header::ALLOW, allow);
            }
            _ => {}
        }
        response
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec never fails");
}

/// The API code of a refusal, for log lines.
pub fn refusal_code(refusal: &Refusal) -> &'static str {
    describe_refusal(refusal).code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limiter::Kind;
    use serde_json::Value;

    #[track_caller]
    fn check(error: ApiError, status: u16, code: &str) {
        let body: Value = serde_json::from_slice(&error.body()).unwrap();
        assert_eq!(error.status(), status);
        assert_eq!(body["error"]["code"], code);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    #[test]
    fn every_answer_is_a_client_error_or_a_named_outage() {
        check(Refusal::MalformedCode.into(), 400, "malformed_code");
        check(Refusal::UnknownCode.into(), 404, "unknown_code");
        check(
            Refusal::AlreadyRedeemed {
                redeemed_at: redeem_engine::Timestamp(0),
                lsn: 1,
            }
            .into(),
            409,
            "already_redeemed",
        );
        check(Refusal::CodeVoided { lsn: 1 }.into(), 410, "code_voided");
        check(Refusal::CampaignPaused.into(), 422, "campaign_paused");
        check(
            ApiError::TooManyFailedAttempts(Throttled {
                limit: Kind::Token,
                retry_after_seconds: 3,
            }),
            429,
            "too_many_failed_attempts",
        );
        let full = |capacity| {
            ApiError::from(Refusal::IdempotencyTableFull(TableFull {
                given: 5,
                limit: 4,
                capacity,
            }))
        };
        check(full(Capacity::Table), 503, "idempotency_table_full");
        check(full(Capacity::Scope), 429, "idempotency_keys_exhausted");
        let body: Value = serde_json::from_slice(&full(Capacity::Scope).body()).unwrap();
        assert_eq!(
            (
                body["error"]["given"].as_u64(),
                body["error"]["limit"].as_u64()
            ),
            (Some(5), Some(4))
        );
        check(ApiError::Unauthenticated, 401, "unauthenticated");
        check(ApiError::BodyTooLarge { limit: 10 }, 413, "body_too_large");
        check(ApiError::LogFailed, 503, "log_failed");
    }

    /// The body is written by hand; it must be byte for byte what a
    /// `serde_json` map renders (sorted keys, its escaping, no spaces),
    /// which is what it was before and what clients have seen. Every
    /// answer with context fields is here, so one that outgrows the two
    /// slots fails this test rather than a request.
    #[test]
    fn bodies_are_what_a_json_map_writes() {
        let errors: Vec<ApiError> = vec![
            Refusal::AlreadyRedeemed {
                redeemed_at: Timestamp(1_767_225_600_123),
                lsn: 9,
            }
            .into(),
            Refusal::PrefixConflict {
                other: "sp\"ring\u{1}".into(),
            }
            .into(),
            Refusal::CodeSpaceTooSmall {
                issued: 7,
                space: 5,
            }
            .into(),
            Refusal::PoolShort {
                needed: 3,
                available: 2,
            }
            .into(),
            Refusal::InvalidRequest {
                field: "user",
                message: "too long".into(),
            }
            .into(),
            Refusal::UnknownCode.into(),
            ApiError::field("count", "must be \"a number\" \u{e9}"),
            ApiError::TooManyFailedAttempts(Throttled {
                limit: Kind::ClientIp,
                retry_after_seconds: 12,
            }),
            ApiError::EventsTruncated { oldest_lsn: 41 },
            ApiError::BodyTooLarge { limit: 65_536 },
            Refusal::TooManyCampaigns { limit: 1000 }.into(),
            Refusal::UserLimitReached { limit: 2 }.into(),
            Refusal::TooManyWebhooks { limit: 16 }.into(),
            Refusal::IdempotencyTableFull(TableFull {
                given: 5,
                limit: 4,
                capacity: Capacity::Table,
            })
            .into(),
            Refusal::IdempotencyTableFull(TableFull {
                given: 5,
                limit: 4,
                capacity: Capacity::Scope,
            })
            .into(),
        ];
        // Pinned: each is what the serde_json map rendering before wrote
        // for the same error.
        let expected = [
            r#"{"error":{"code":"already_redeemed","message":"the code was already redeemed","redeemed_at":"2026-01-01T00:00:00.123Z"}}"#,
            r#"{"error":{"campaign":"sp\"ring\u0001","code":"prefix_conflict","message":"the prefix overlaps the prefix of campaign sp\"ring\u0001"}}"#,
            r#"{"error":{"code":"code_space_too_small","given":7,"message":"7 codes in a space of 5 could be guessed with probability above 0.000001; use longer codes","space":"5"}}"#,
            r#"{"error":{"available":2,"code":"pool_exhausted","message":"the file needs 3 new codes and 2 are available; nothing was assigned","needed":3}}"#,
            r#"{"error":{"code":"invalid_request","field":"user","message":"user: too long"}}"#,
            r#"{"error":{"code":"unknown_code","message":"no such code"}}"#,
            r#"{"error":{"code":"invalid_request","field":"count","message":"must be \"a number\" é"}}"#,
            r#"{"error":{"code":"too_many_failed_attempts","limit":"client_ip","message":"too many unknown or malformed codes for this client_ip; retry after 12 s","retry_after_seconds":12}}"#,
            r#"{"error":{"code":"events_truncated","message":"events before LSN 41 were deleted by log retention; ask with after=40 or leave it out","oldest_lsn":41}}"#,
            r#"{"error":{"code":"body_too_large","limit":65536,"message":"the request body is larger than 65536 bytes"}}"#,
            r#"{"error":{"code":"too_many_campaigns","limit":1000,"message":"at most 1000 campaigns"}}"#,
            r#"{"error":{"code":"user_limit_reached","limit":2,"message":"the user has reached the limit of 2 redemptions"}}"#,
            r#"{"error":{"code":"too_many_webhooks","limit":16,"message":"at most 16 webhooks"}}"#,
            r#"{"error":{"code":"idempotency_table_full","given":5,"limit":4,"message":"the idempotency table holds 4 keys, all younger than 24 h"}}"#,
            r#"{"error":{"code":"idempotency_keys_exhausted","given":5,"limit":4,"message":"this token holds 4 idempotency keys younger than 24 h, its share of the table; reuse a key or retry once older keys expire"}}"#,
        ];
        assert_eq!(errors.len(), expected.len());
        for (error, expected) in errors.into_iter().zip(expected) {
            let body = error.body();
            assert_eq!(String::from_utf8_lossy(&body), expected, "{error:?}");
            let parsed: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&parsed).unwrap()).unwrap(),
                String::from_utf8(body).unwrap(),
                "{error:?}"
            );
        }
    }

    #[test]
    fn throttled_answers_say_when_to_retry() {
        let response = ApiError::TooManyFailedAttempts(Throttled {
            limit: Kind::User,
            retry_after_seconds: 7,
        })
        .into_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "7");
        let response = ApiError::MethodNotAllowed {
            allow: HeaderValue::from_static("GET, POST"),
        }
        .into_response();
        assert_eq!(response.headers()[http::header::ALLOW], "GET, POST");
    }
}
