//! `/v1/campaigns/{id}/assignments`: one code for one recipient, and
//! reclaim (`DELETE .../assignments/{recipient}`), which takes a bounced
//! recipient's unused codes back.

use http::Response;
use serde::Deserialize;

use crate::answer::{Answer, finish, keyed};
use crate::app::App;
use crate::errors::{ApiError, refusal_code};
use crate::extract::{bool_param, query_params};
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
    Ok(keyed(app, key, |idem| {
        let result = app
            .engine
            .assign(&id, &request.recipient, timefmt::now(), idem);
        if let Err(r) = &result {
            app.metrics.count_refusal("assign", refusal_code(r));
            tracing::debug!(campaign = ?id, recipient = ?request.recipient, idempotency_key = ?idem.map(|k| k.key), failure = refusal_code(r), "assignment refused");
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

/// `DELETE .../assignments/{recipient}?void=B`: the recipient's assigned,
/// unused codes go back to the pool (or are voided); codes in use are kept
/// and listed. The answer waits for every record it reports.
pub async fn reclaim(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let void = bool_param(&query_params(&req.parts.uri), "void")?;
    let (id, recipient) = (req.param, req.param2);
    let outcome = app
        .engine
        .reclaim(&id, &recipient, void, timefmt::now())
        .map(|r| {
            tracing::info!(campaign = ?id, recipient = ?recipient, void, released = r.released.len(), kept = r.kept.len(), "reclaimed");
            Answer {
                status: 200,
                body: render::reclaimed(&r),
                lsn: r.lsn,
            }
        });
    Ok(finish(app, outcome).await)
}
