//! The checkout routes: `POST /v1/redemptions`, and reservations (hold,
//! confirm, release).

use http::Response;
use serde::Deserialize;

use crate::answer::{Answer, keyed};
use crate::app::App;
use crate::errors::{ApiError, refusal_code};
use crate::extract::{idempotency_key, read_body};
use crate::http::Body;
use crate::render;
use crate::routes::{Attempt, Authorized, JsonRequest, RouteRequest, read_json};
use crate::timefmt;
use crate::tokens::{Principal, Role};
use redeem_engine::{Refusal, ReservationId};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedeemRequest {
    code: String,
    user: String,
    order: Option<String>,
    /// The end client's address, when the checkout service passes it on.
    client_ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReserveRequest {
    code: String,
    user: String,
    ttl_seconds: Option<u64>,
    client_ip: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmRequest {
    order: Option<String>,
}

pub async fn redeem(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body: request,
        key,
        principal,
        ..
    } = read_json::<RedeemRequest>(app, req).await?;
    let attempt = Attempt::admit(
        app,
        &principal,
        Some(&request.user),
        request.client_ip.as_deref(),
    )?;
    Ok(keyed(app, key, |idem| {
        let result = attempt.count(app.engine.redeem(
            &request.code,
            &request.user,
            request.order.as_deref(),
            timefmt::now(),
            idem,
        ));
        if let Err(r) = &result {
            app.metrics.count_refusal("redeem", refusal_code(r));
            tracing::debug!(code = %render::masked_code(&request.code), user = ?request.user, idempotency_key = ?idem.map(|k| k.key), failure = refusal_code(r), "redemption refused");
        }
        let redeemed = result?;
        Ok(Answer {
            status: 201,
            body: render::redemption(&redeemed),
            lsn: redeemed.lsn,
        })
    })
    .await)
}

pub async fn reserve(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body: request,
        key,
        principal,
        ..
    } = read_json::<ReserveRequest>(app, req).await?;
    let attempt = Attempt::admit(
        app,
        &principal,
        Some(&request.user),
        request.client_ip.as_deref(),
    )?;
    Ok(keyed(app, key, |idem| {
        let reserved = attempt.count(app.engine.reserve_as(
            &request.code,
            &request.user,
            request.ttl_seconds,
            owner_tag(&principal),
            timefmt::now(),
            idem,
        ))?;
        Ok(Answer {
            status: 201,
            body: render::reservation(&reserved),
            lsn: reserved.lsn,
        })
    })
    .await)
}

/// The tag of the token that makes a hold, carried in the high 32 bits of
/// its reservation id: the first 32 bits of the token's hash (its scope).
fn owner_tag(principal: &Principal) -> u32 {
    principal
        .scope
        .get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// The reservation a printed id names, if the caller may act on it: the
/// token that made the hold, or an admin. Any other token is told the
/// reservation does not exist, exactly as for an id that never did.
fn own_reservation(principal: &Principal, printed: &str) -> Result<ReservationId, ApiError> {
    let id = render::parse_reservation_id(printed).ok_or(Refusal::UnknownReservation)?;
    let owner = (id >> 96) as u32;
    if principal.role != Role::Admin && owner != owner_tag(principal) {
        return Err(Refusal::UnknownReservation.into());
    }
    Ok(id)
}

pub async fn confirm(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let JsonRequest {
        body: request,
        key,
        param: id,
        principal,
    } = read_json::<ConfirmRequest>(app, req).await?;
    let id = own_reservation(&principal, &id)?;
    Ok(keyed(app, key, |idem| {
        let redeemed = app
            .engine
            .confirm(id, request.order.as_deref(), timefmt::now(), idem)?;
        Ok(Answer {
            status: 201,
            body: render::redemption(&redeemed),
            lsn: redeemed.lsn,
        })
    })
    .await)
}

pub async fn release(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let Authorized {
        parts,
        body,
        param: id,
        principal,
    } = req.authorized();
    let bytes = read_body(body, app.config.body_bytes_max).await?;
    let key = idempotency_key(&parts, &principal, &bytes)?;
    let id = own_reservation(&principal, &id)?;
    Ok(keyed(app, key, |idem| {
        let status = app.engine.release(id, timefmt::now(), idem)?;
        Ok(Answer {
            status: 200,
            body: render::code_status(&status),
            lsn: 0,
        })
    })
    .await)
}
