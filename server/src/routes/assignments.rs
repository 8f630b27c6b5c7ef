//! `POST /v1/campaigns/{id}/assignments`: one code for one recipient.

use http::Response;
use serde::Deserialize;

use crate::answer::{Answer, keyed};
use crate::app::App;
use crate::errors::{ApiError, refusal_code};
use crate::http::Body;
use crate::render;
use crate::routes::{JsonRequest, RouteRequest, read_json};
use crate::timefmt;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AssignRequest {
    recipient: String,
}

pub async fn assign(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body: request,
        key,
        param: id,
        ..
    } = read_json::<AssignRequest>(app, req).await?;
    let idem_key = key.as_ref().map(|k| k.scoped.clone());
    Ok(keyed(app, key, |idem| {
        let result = app
            .engine
            .assign(&id, &request.recipient, timefmt::now(), idem);
        if let Err(r) = &result {
            tracing::info!(campaign = ?id, recipient = ?request.recipient, idempotency_key = ?idem_key, failure = refusal_code(r), "assignment refused");
        }
        let assigned = result?;
        Ok(Answer {
            status: if assigned.new { 201 } else { 200 },
            body: render::assignment(&assigned),
            lsn: assigned.lsn.unwrap_or(0),
        })
    })
    .await)
}
