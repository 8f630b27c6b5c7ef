//! `/v1/codes/{code}`: a code's status, and its rollback and void.

use http::Response;

use crate::answer::{Answer, finish, keyed};
use crate::app::App;
use crate::errors::ApiError;
use crate::extract::{param, query_params};
use crate::http::Body;
use crate::render;
use crate::routes::{Attempt, Authorized, EmptyRequest, JsonRequest, RouteRequest, read_json};
use crate::timefmt;

/// `GET /v1/codes/{code}?user=U&client_ip=A`: what the durable log says
/// of the code.
pub async fn get(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let Authorized {
        parts,
        param: code,
        principal,
        ..
    } = req.authorized();
    let params = query_params(&parts.uri);
    let user = param(&params, "user");
    let attempt = Attempt::admit(app, &principal, user, param(&params, "client_ip"))?;
    let outcome = attempt
        .count(app.engine.status(&code, user, timefmt::now()))
        .map(|status| Answer {
            status: 200,
            body: render::code_status(&status),
            lsn: app.wal.last_lsn(),
        });
    Ok(finish(app, outcome).await)
}

/// Which change a code action makes.
#[derive(Clone, Copy)]
enum Action {
    Rollback,
    Void,
}

pub async fn rollback(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    act(app, req, Action::Rollback).await
}

pub async fn void(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    act(app, req, Action::Void).await
}

/// Rollback and void share their shape: an empty body, a code, a status.
async fn act(app: &App, req: RouteRequest, action: Action) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body: EmptyRequest {},
        key,
        param: code,
        principal,
    } = read_json(app, req).await?;
    let attempt = Attempt::admit(app, &principal, None, None)?;
    Ok(keyed(app, key, |idem| {
        let now = timefmt::now();
        let status = attempt.count(match action {
            Action::Rollback => app.engine.rollback(&code, now, idem),
            Action::Void => app.engine.void(&code, now, idem),
        })?;
        Ok(Answer {
            status: 200,
            body: render::code_status(&status),
            lsn: 0,
        })
    })
    .await)
}
