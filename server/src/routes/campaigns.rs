//! `/v1/campaigns` and `/v1/campaigns/{id}`: create, list, read, update.

use http::Response;
use redeem_engine::record::{
    GUESSING_ALERT_PER_MINUTE_DEFAULT, PER_RECIPIENT_LIMIT_DEFAULT, PER_USER_LIMIT_DEFAULT,
    RESERVATION_TTL_SECONDS_DEFAULT,
};
use redeem_engine::{CampaignPatch, CampaignSpec, Refusal, Timestamp};
use serde::Deserialize;
use serde_json::Value;

use crate::answer::{Answer, keyed};
use crate::app::App;
use crate::errors::ApiError;
use crate::http::{Body, json_response};
use crate::render;
use crate::routes::{JsonRequest, RouteRequest, read_json};
use crate::timefmt;

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

fn default_per_user_limit() -> u32 {
    PER_USER_LIMIT_DEFAULT
}

fn default_per_recipient_limit() -> u32 {
    PER_RECIPIENT_LIMIT_DEFAULT
}

fn default_ttl() -> u64 {
    RESERVATION_TTL_SECONDS_DEFAULT
}

/// The create body of API.md; only `id` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateCampaign {
    id: String,
    #[serde(default)]
    generate: u64,
    code: Option<CodeFormatRequest>,
    starts_at: Option<String>,
    expires_at: Option<String>,
    #[serde(default = "default_per_user_limit")]
    per_user_limit: u32,
    #[serde(default = "default_per_recipient_limit")]
    per_recipient_limit: u32,
    code_valid_seconds_after_assignment: Option<u64>,
    #[serde(default = "default_ttl")]
    reservation_ttl_seconds: u64,
    #[serde(default)]
    low_stock_threshold: u64,
    #[serde(default)]
    test_recipients: Vec<String>,
    #[serde(default = "default_guessing_alert")]
    guessing_alert_per_minute: u64,
}

fn default_guessing_alert() -> u64 {
    GUESSING_ALERT_PER_MINUTE_DEFAULT
}

fn parse_time_field(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<Timestamp>, ApiError> {
    match value {
        None => Ok(None),
        Some(s) => timefmt::parse(s).map(Some).ok_or_else(|| {
            ApiError::field(field, format!("{field} must be an RFC 3339 timestamp"))
        }),
    }
}

impl CreateCampaign {
    /// The engine's spec; the engine checks the values.
    pub(crate) fn into_spec(self) -> Result<CampaignSpec, ApiError> {
        let code = self.code.unwrap_or(CodeFormatRequest {
            prefix: String::new(),
            length: default_length(),
        });
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
            guessing_alert_per_minute: self.guessing_alert_per_minute,
        })
    }
}

/// A new campaign key, from the operating system's randomness.
fn campaign_key() -> Result<redeem_engine::codec::CodeKey, Refusal> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|err| {
        Refusal::Unavailable(redeem_engine::JournalError {
            message: format!("no randomness: {err}"),
        })
    })?;
    Ok(redeem_engine::codec::CodeKey::from_bytes(bytes))
}

pub async fn create(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest { body, key, .. } = read_json::<CreateCampaign>(app, req).await?;
    let spec = body.into_spec()?;
    Ok(keyed(app, key, |idem| {
        let view = app
            .engine
            .create_campaign(spec, campaign_key()?, timefmt::now(), idem)?;
        Ok(Answer {
            status: 201,
            body: render::campaign(&view),
            lsn: app.wal.last_lsn(),
        })
    })
    .await)
}

pub async fn list(app: &App) -> Result<Response<Body>, ApiError> {
    let now = timefmt::now();
    let list: Vec<Value> = app
        .engine
        .campaigns()
        .map(|c| render::campaign_value(&c.view(now)))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "campaigns": list })).expect("serializes");
    durable_read(app, body).await
}

pub async fn get(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let campaign = app
        .engine
        .campaign(&req.param)
        .ok_or(Refusal::UnknownCampaign)?;
    durable_read(app, render::campaign(&campaign.view(timefmt::now()))).await
}

/// Answers a read once everything it may show is durable: the state was
/// read before the log's end was taken, and every change is appended
/// before it becomes visible, so waiting for that end covers it.
async fn durable_read(app: &App, body: Vec<u8>) -> Result<Response<Body>, ApiError> {
    app.durable(app.wal.last_lsn())
        .await
        .map_err(|_| ApiError::LogFailed)?;
    Ok(json_response(200, body))
}

pub async fn update(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body,
        key,
        param: id,
        ..
    } = read_json::<Value>(app, req).await?;
    let patch = parse_patch(body)?;
    Ok(keyed(app, key, |idem| {
        let view = app
            .engine
            .update_campaign(&id, patch, timefmt::now(), idem)?;
        Ok(Answer {
            status: 200,
            body: render::campaign(&view),
            lsn: app.wal.last_lsn(),
        })
    })
    .await)
}

/// `null` or an RFC 3339 time, for the window fields of a PATCH.
fn patch_time(key: &str, value: &Value) -> Result<Option<Timestamp>, ApiError> {
    let bad = || ApiError::field(key, format!("{key} must be an RFC 3339 timestamp or null"));
    match value {
        Value::Null => Ok(None),
        Value::String(s) => timefmt::parse(s).map(Some).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A PATCH body: each field present is changed, `null` clears a time.
pub(crate) fn parse_patch(value: Value) -> Result<CampaignPatch, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::field("body", "the body must be a JSON object"));
    };
    let mut patch = CampaignPatch::default();
    for (key, v) in map {
        match key.as_str() {
            "starts_at" => patch.starts_at = Some(patch_time(&key, &v)?),
            "expires_at" => patch.expires_at = Some(patch_time(&key, &v)?),
            "paused" => {
                patch.paused = Some(
                    v.as_bool()
                        .ok_or_else(|| ApiError::field("paused", "paused must be true or false"))?,
                )
            }
            "low_stock_threshold" => {
                patch.low_stock_threshold = Some(v.as_u64().ok_or_else(|| {
                    ApiError::field(
                        "low_stock_threshold",
                        "low_stock_threshold must be a non-negative integer",
                    )
                })?)
            }
            "guessing_alert_per_minute" => {
                patch.guessing_alert_per_minute = Some(v.as_u64().ok_or_else(|| {
                    ApiError::field(
                        "guessing_alert_per_minute",
                        "guessing_alert_per_minute must be a non-negative integer",
                    )
                })?)
            }
            "test_recipients" => {
                let list: Vec<String> = serde_json::from_value(v).map_err(|_| {
                    ApiError::field(
                        "test_recipients",
                        "test_recipients must be a list of strings",
                    )
                })?;
                patch.test_recipients = Some(list);
            }
            other => {
                return Err(ApiError::field(
                    other,
                    format!(
                        "unknown field `{other}`; PATCH takes starts_at, expires_at, paused, test_recipients, low_stock_threshold, guessing_alert_per_minute"
                    ),
                ));
            }
        }
    }
    Ok(patch)
}
