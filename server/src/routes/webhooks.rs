//! `/v1/webhooks`: create, list, read, change, delete and rewind webhook
//! subscriptions (admin only). The subscriptions are engine state; reads
//! add the delivery progress the server keeps (`webhooks::Progress`).

use http::Response;
use redeem_engine::{Refusal, Webhook, WebhookPatch, WebhookSpec, WebhookStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::answer::{Answer, keyed};
use crate::app::App;
use crate::errors::ApiError;
use crate::http::{Body, json_response};
use crate::routes::{JsonRequest, RouteRequest, read_json};
use crate::timefmt;
use crate::webhooks::{self, EVENT_KINDS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    campaigns: Vec<String>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rewind {
    after: u64,
}

/// The subscription as reads show it: never its secret.
fn view(app: &App, hook: &Webhook) -> Value {
    let runtime = app.hooks.runtime(&hook.spec.id);
    let p = runtime.progress.lock();
    let time = |t: Option<redeem_engine::Timestamp>| t.map(timefmt::format);
    json!({
        "id": hook.spec.id,
        "url": hook.spec.url,
        "events": hook.spec.events,
        "campaigns": hook.spec.campaigns,
        "description": hook.spec.description,
        "status": hook.status.as_str(),
        "disabled_reason": hook.disabled_reason,
        "created_at": timefmt::format(hook.created_at),
        "cursor_lsn": hook.cursor,
        "lag_events": webhooks::lag_records(app, hook.cursor, &p),
        "last_delivery_at": time(p.last_delivery_at),
        "last_error": p.last_error,
        "next_attempt_at": time(p.next_attempt_at),
        "consecutive_failures": p.consecutive_failures,
    })
}

fn check_url(app: &App, url: &str) -> Result<(), ApiError> {
    match webhooks::url_problem(url, app.config.webhook_allow_http) {
        None => Ok(()),
        Some(message) => Err(ApiError::field("url", message)),
    }
}

fn check_events(events: &[String]) -> Result<(), ApiError> {
    if events.len() == 1 && events[0] == "*" {
        return Ok(());
    }
    if events.is_empty() {
        return Err(ApiError::field(
            "events",
            "events must list at least one kind, or be [\"*\"]",
        ));
    }
    match events.iter().find(|e| !EVENT_KINDS.contains(&e.as_str())) {
        None => Ok(()),
        Some(bad) => Err(ApiError::field(
            "events",
            format!(
                "unknown event kind {bad:?}; kinds are {} or [\"*\"] alone",
                EVENT_KINDS.join(", ")
            ),
        )),
    }
}

fn check_campaigns(app: &App, campaigns: &[String]) -> Result<(), ApiError> {
    match campaigns.iter().find(|c| app.engine.campaign(c).is_none()) {
        None => Ok(()),
        Some(bad) => Err(ApiError::field(
            "campaigns",
            format!("no campaign has the id {bad:?}"),
        )),
    }
}

pub async fn create(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest { body, key, .. } = read_json::<CreateWebhook>(app, req).await?;
    check_url(app, &body.url)?;
    check_events(&body.events)?;
    check_campaigns(app, &body.campaigns)?;
    let random = |e: getrandom::Error| {
        Refusal::Unavailable(redeem_engine::JournalError {
            message: format!("no randomness: {e}"),
        })
    };
    let response = keyed(app, key, |_| {
        let spec = WebhookSpec {
            id: webhooks::new_id().map_err(random)?,
            secret: webhooks::new_secret().map_err(random)?,
            url: body.url,
            events: body.events,
            campaigns: body.campaigns,
            description: body.description,
        };
        let hook = app.engine.create_webhook(spec, timefmt::now())?;
        let mut answer = view(app, &hook);
        // The secret is in this answer only.
        answer["secret"] = hook.spec.secret.clone().into();
        Ok(Answer {
            status: 201,
            body: serde_json::to_vec(&answer).expect("serializes"),
            lsn: app.wal.last_lsn(),
        })
    })
    .await;
    app.hooks.created();
    Ok(response)
}

pub async fn list(app: &App) -> Result<Response<Body>, ApiError> {
    let list: Vec<Value> = app.engine.webhooks().iter().map(|h| view(app, h)).collect();
    durable_answer(app, 200, &json!({ "webhooks": list })).await
}

pub async fn get(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let hook = app
        .engine
        .webhook(&req.param)
        .ok_or(Refusal::UnknownWebhook)?;
    durable_answer(app, 200, &view(app, &hook)).await
}

pub async fn update(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body, param: id, ..
    } = read_json::<Value>(app, req).await?;
    let patch = parse_patch(app, body)?;
    let resumes = patch.status == Some(WebhookStatus::Active) || patch.url.is_some();
    let hook = app.engine.update_webhook(&id, patch, timefmt::now())?;
    if resumes {
        // A new url or a resume is a fresh start: no backoff left over.
        app.hooks.reset(&id);
    } else {
        app.hooks.runtime(&id).wake.notify_one();
    }
    durable_answer(app, 200, &view(app, &hook)).await
}

fn parse_patch(app: &App, value: Value) -> Result<WebhookPatch, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::field("body", "the body must be a JSON object"));
    };
    let list = |field: &'static str, v: Value| -> Result<Vec<String>, ApiError> {
        serde_json::from_value(v)
            .map_err(|_| ApiError::field(field, format!("{field} must be a list of strings")))
    };
    let mut patch = WebhookPatch::default();
    for (key, v) in map {
        match key.as_str() {
            "url" => {
                let url = v
                    .as_str()
                    .ok_or_else(|| ApiError::field("url", "url must be a string"))?;
                check_url(app, url)?;
                patch.url = Some(url.to_owned());
            }
            "events" => {
                let events = list("events", v)?;
                check_events(&events)?;
                patch.events = Some(events);
            }
            "campaigns" => {
                let campaigns = list("campaigns", v)?;
                check_campaigns(app, &campaigns)?;
                patch.campaigns = Some(campaigns);
            }
            "status" => {
                patch.status = Some(match v.as_str() {
                    Some("active") => WebhookStatus::Active,
                    Some("paused") => WebhookStatus::Paused,
                    _ => {
                        return Err(ApiError::field(
                            "status",
                            "status must be \"active\" or \"paused\"",
                        ));
                    }
                })
            }
            other => {
                return Err(ApiError::field(
                    other,
                    format!("unknown field `{other}`; PATCH takes url, events, campaigns, status"),
                ));
            }
        }
    }
    Ok(patch)
}

pub async fn delete(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let id = req.param;
    app.engine.delete_webhook(&id, timefmt::now())?;
    app.hooks.runtime(&id).wake.notify_one();
    durable_answer(app, 200, &json!({ "id": id, "deleted": true })).await
}

pub async fn rewind(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body,
        key,
        param: id,
        ..
    } = read_json::<Rewind>(app, req).await?;
    let durable = app.wal.durable_lsn();
    if body.after > durable {
        return Err(ApiError::field(
            "after",
            format!("after must be at most the durable end of the log, {durable}"),
        ));
    }
    // As far as the log reaches: never before its oldest record.
    let after = body.after.max(app.wal.first_lsn().saturating_sub(1));
    let response = keyed(app, key, |_| {
        let hook = app.engine.rewind_webhook(&id, after, timefmt::now())?;
        Ok(Answer {
            status: 200,
            body: serde_json::to_vec(&view(app, &hook)).expect("serializes"),
            lsn: app.wal.last_lsn(),
        })
    })
    .await;
    app.hooks.reset(&id);
    Ok(response)
}

/// Answers once everything the body shows is durable (see
/// `campaigns::durable_read`).
async fn durable_answer(app: &App, status: u16, body: &Value) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(body).expect("serializes");
    app.durable(app.wal.last_lsn())
        .await
        .map_err(|_| ApiError::LogFailed)?;
    Ok(json_response(status, body))
}
