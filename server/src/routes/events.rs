//! `GET /v1/events`: the log's transitions as NDJSON, oldest first,
//! long-polling when nothing newer than `after` is durable yet.

use std::time::Duration;

use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::BodyExt;
use redeem_engine::{Record, RecordKind};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::errors::ApiError;
use crate::http::Body;
use crate::routes::RouteRequest;
use crate::{render, timefmt};

const LIMIT_DEFAULT: u64 = 1000;
const LIMIT_MAX: u64 = 10_000;
const WAIT_SECONDS_MAX: u64 = 30;
/// How often a long-poll looks for a new record.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

pub async fn events(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let parts = &req.parts;
    let mut after = 0u64;
    let mut limit = LIMIT_DEFAULT;
    let mut wait = 0u64;
    for pair in parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(n) = v.parse::<u64>() else {
            return Err(ApiError::field(
                k,
                format!("{k} must be a non-negative integer"),
            ));
        };
        match k {
            "after" => after = n,
            "limit" if (1..=LIMIT_MAX).contains(&n) => limit = n,
            "limit" => {
                return Err(ApiError::field(
                    "limit",
                    format!("limit must be 1 to {LIMIT_MAX}"),
                ));
            }
            "wait_seconds" => wait = n.min(WAIT_SECONDS_MAX),
            other => {
                return Err(ApiError::field(
                    other,
                    format!("unknown parameter `{other}`"),
                ));
            }
        }
    }
    if app.wal.durable_lsn() <= after && wait > 0 {
        // Nothing newer yet: wait until a record past `after` is appended,
        // then until it is durable, or until the time is up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        while app.wal.last_lsn() <= after && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        if app.wal.last_lsn() > after {
            let _ = tokio::time::timeout_at(deadline, app.wal.durable(after + 1)).await;
        }
    }
    let through = app.wal.durable_lsn();
    let mut out = Vec::new();
    if through > after {
        let mut records = read_after(app, after)?;
        let mut sent = 0;
        while let Some(next) = records.next_record() {
            let Ok(record) = next else { break };
            if record.lsn > through || sent >= limit {
                break;
            }
            let Ok(decoded) = Record::decode(record.record_type, record.payload) else {
                continue;
            };
            if let Some(line) = event_line(app, record.lsn, &decoded) {
                serde_json::to_writer(&mut out, &line).expect("serializes");
                out.push(b'\n');
                sent += 1;
            }
        }
    }
    let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::from(out)).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The durable records after `after`. `after == 0` (or absent) starts at
/// the oldest record the log still holds; an explicit `after` older than
/// that is refused with the oldest LSN, so a client knows what it missed.
fn read_after(app: &App, after: u64) -> Result<redeem_wal::Records, ApiError> {
    let from = if after == 0 {
        app.wal.first_lsn()
    } else {
        after + 1
    };
    match app.wal.read_from(from) {
        Ok(records) => Ok(records),
        // Retention deleted segments since `first_lsn` was read: start
        // again at the new oldest record.
        Err(redeem_wal::ReadError::Removed { first, .. }) if after == 0 => app
            .wal
            .read_from(first)
            .map_err(|_| ApiError::EventsTruncated { oldest_lsn: first }),
        Err(redeem_wal::ReadError::Removed { first, .. }) => {
            Err(ApiError::EventsTruncated { oldest_lsn: first })
        }
        Err(e) => Err(ApiError::EventsUnavailable {
            detail: e.to_string(),
        }),
    }
}

/// One event line, or `None` for records that are not events. Webhook
/// deliveries render their events here too, so a delivered event is
/// byte for byte the line `/v1/events` gives.
pub(crate) fn event_line(app: &App, lsn: u64, record: &Record<'_>) -> Option<Value> {
    match record.kind() {
        // Bookkeeping, not transitions; a webhook's secret must never
        // leave in an event.
        RecordKind::IdempotentResponse
        | RecordKind::Counters
        | RecordKind::WebhookCreated
        | RecordKind::WebhookUpdated
        | RecordKind::WebhookCursor
        | RecordKind::WebhookDeleted => return None,
        _ => {}
    }
    let campaign = record
        .campaign()
        .and_then(|n| app.engine.campaign_by_number(n));
    let mut map = Map::new();
    map.insert("lsn".into(), lsn.into());
    map.insert("at".into(), timefmt::format(record.at()).into());
    map.insert("kind".into(), record.kind().event_name().into());
    map.insert(
        "campaign".into(),
        campaign.map(|c| c.id().to_owned()).into(),
    );
    let code = record
        .code()
        .and_then(|(_, slot)| campaign.map(|c| c.code_of(slot)));
    map.insert("code".into(), code.into());
    let mut put = |k: &str, v: Value| {
        map.insert(k.into(), v);
    };
    match record {
        Record::Assigned {
            recipient, test, ..
        } => {
            put("recipient", (*recipient).into());
            put("test", (*test).into());
        }
        Record::Reserved {
            reservation,
            user,
            expires_at,
            ..
        } => {
            put("reservation", render::reservation_id(*reservation).into());
            put("user", (*user).into());
            put("expires_at", timefmt::format(*expires_at).into());
        }
        Record::Released {
            reservation,
            expired,
            ..
        } => {
            put("reservation", render::reservation_id(*reservation).into());
            put("expired", (*expired).into());
        }
        Record::Redeemed {
            user,
            order,
            reservation,
            ..
        } => {
            put("user", (*user).into());
            put("order", order.map(str::to_owned).into());
            put(
                "reservation",
                reservation.map(render::reservation_id).into(),
            );
        }
        Record::Unassigned {
            recipient, void, ..
        } => {
            put("recipient", (*recipient).into());
            put("void", (*void).into());
        }
        Record::CodesGenerated { count, .. } => put("count", (*count).into()),
        Record::CodesImported { codes, .. } => put("count", codes.len().into()),
        Record::LowStock { available, .. } => put("available", (*available).into()),
        Record::GuessingSuspected { attempts, .. } => put("attempts", (*attempts).into()),
        Record::WebhookDisabled { id, reason, .. } => {
            put("webhook", (*id).into());
            put("reason", (*reason).into());
        }
        Record::CampaignUpdated { .. } | Record::CampaignCreated { .. } => {}
        _ => {}
    }
    let _ = json!(null);
    Some(Value::Object(map))
}
