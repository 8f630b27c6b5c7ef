//! `GET /v1/campaigns/{id}/history`: the campaign's recent points for the
//! dashboard's chart, from the engine's per-campaign ring.

use http::Response;
use redeem_engine::{
    HISTORY_INTERVAL_SECONDS, HISTORY_POINTS_MAX, HistoryEvent, PublicState, Refusal,
};
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::errors::ApiError;
use crate::http::{Body, json_response};
use crate::routes::RouteRequest;
use crate::timefmt;

/// The span a request without `seconds` gets: the chart's default view.
const SECONDS_DEFAULT: u64 = 600;
/// The most a request may ask for: what the ring keeps.
const SECONDS_MAX: u64 = HISTORY_POINTS_MAX as u64 * HISTORY_INTERVAL_SECONDS;

pub async fn history(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let mut seconds = SECONDS_DEFAULT;
    for pair in req
        .parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("seconds", v) => match v.parse::<u64>() {
                Ok(n) if (1..=SECONDS_MAX).contains(&n) => seconds = n,
                _ => {
                    return Err(ApiError::field(
                        "seconds",
                        format!("seconds must be 1 to {SECONDS_MAX}"),
                    ));
                }
            },
            (other, _) => {
                return Err(ApiError::field(
                    other,
                    format!("unknown parameter `{other}`"),
                ));
            }
        }
    }
    let campaign = app
        .engine
        .campaign(&req.param)
        .ok_or(Refusal::UnknownCampaign)?;
    let now = timefmt::now();
    let from = redeem_engine::Timestamp(now.0.saturating_sub(seconds * 1000));
    let points: Vec<Value> = campaign
        .history(from, now)
        .iter()
        .map(|p| {
            let mut point = Map::new();
            point.insert("at".into(), timefmt::format(p.at()).into());
            for state in PublicState::ALL {
                point.insert(state.as_str().into(), p.counts[state as usize].into());
            }
            for (name, event) in [
                ("redemptions_per_second", HistoryEvent::Redemption),
                ("assignments_per_second", HistoryEvent::Assignment),
                ("failed_attempts_per_second", HistoryEvent::FailedAttempt),
            ] {
                point.insert(name.into(), p.per_second(event).into());
            }
            Value::Object(point)
        })
        .collect();
    // The counts were read before the log's end was taken, and every change
    // is appended before it becomes visible: waiting for that end makes
    // all they show durable. `lsn` lets a client follow `/v1/events` on.
    let lsn = app.wal.last_lsn();
    app.durable(lsn).await.map_err(|_| ApiError::LogFailed)?;
    let body = json!({
        "interval_seconds": HISTORY_INTERVAL_SECONDS,
        "lsn": lsn,
        "points": points,
    });
    Ok(json_response(
        200,
        serde_json::to_vec(&body).expect("serializes"),
    ))
}
