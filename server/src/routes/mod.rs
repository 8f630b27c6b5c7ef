//! Every route's handler, grouped by resource. A handler takes a request
//! the router has matched and authorized, and returns its response or an
//! [`ApiError`]; it answers only with durable state (`answer`).

use http::request::Parts;
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use redeem_engine::{Refusal, Timestamp};

use crate::app::App;
use crate::errors::ApiError;
use crate::extract::{KeyedRequest, idempotency_key, parse_json, read_body};
use crate::limiter::Identities;
use crate::timefmt;
use crate::tokens::Principal;

pub mod assignments;
pub mod bulk;
pub mod campaigns;
pub mod checkout;
pub mod codes;
pub mod events;
pub mod history;
pub mod pool;
pub mod system;
pub mod ui;
pub mod webhooks;

/// A matched, authorized request.
pub struct RouteRequest {
    pub parts: Parts,
    pub body: Incoming,
    /// The path's one parameter (campaign id, code or reservation id),
    /// percent-decoded; empty on paths without one.
    pub param: String,
    /// The path's second parameter (a recipient), percent-decoded; empty
    /// on paths with fewer.
    pub param2: String,
    /// The caller; `None` on routes that need no token.
    pub principal: Option<Principal>,
}

/// The parts of a request to a route that needs a token.
pub struct Authorized {
    pub parts: Parts,
    pub body: Incoming,
    pub param: String,
    pub principal: Principal,
}

impl RouteRequest {
    /// The request of a route that needs a token, with its caller.
    pub fn authorized(self) -> Authorized {
        Authorized {
            parts: self.parts,
            body: self.body,
            param: self.param,
            principal: self
                .principal
                .expect("the route table gives every route with roles a principal"),
        }
    }
}

/// A JSON request to a route that needs a token, taken apart.
pub(crate) struct JsonRequest<T> {
    pub body: T,
    pub key: Option<KeyedRequest>,
    /// The path's parameter, as in [`RouteRequest::param`].
    pub param: String,
    /// The caller.
    pub principal: Principal,
}

/// Reads, size-checks and parses a JSON body, and the idempotency key
/// that covers it.
pub(crate) async fn read_json<T: DeserializeOwned>(
    app: &App,
    req: RouteRequest,
) -> Result<JsonRequest<T>, ApiError> {
    let Authorized {
        parts,
        body,
        param,
        principal,
    } = req.authorized();
    let bytes = read_body(body, app.config.body_bytes_max).await?;
    let body = parse_json(&parts, &bytes)?;
    let key = idempotency_key(&parts, &principal, &bytes)?;
    Ok(JsonRequest {
        body,
        key,
        param,
        principal,
    })
}

/// A request that names a code, admitted by the failed-attempt limiter.
pub(crate) struct Attempt<'a> {
    app: &'a App,
    ids: Identities<'a>,
    now: Timestamp,
}

impl<'a> Attempt<'a> {
    /// Admits the request, or refuses it `429` before any lookup when one
    /// of its identities (token, `user`, `client_ip`) is over budget.
    pub fn admit(
        app: &'a App,
        principal: &'a Principal,
        user: Option<&'a str>,
        client_ip: Option<&'a str>,
    ) -> Result<Attempt<'a>, ApiError> {
        if let Some(ip) = client_ip
            && ip.parse::<std::net::IpAddr>().is_err()
        {
            return Err(ApiError::field(
                "client_ip",
                "client_ip must be an IPv4 or IPv6 address",
            ));
        }
        let ids = Identities::new(
            app.limiter.budgets(),
            &principal.scope,
            principal.failed_attempts_per_minute,
            user,
            client_ip,
        );
        let now = timefmt::now();
        app.limiter
            .check(&ids, now)
            .map_err(ApiError::TooManyFailedAttempts)?;
        Ok(Attempt { app, ids, now })
    }

    /// Counts an unknown or malformed code against every identity.
    pub fn count<T>(&self, result: Result<T, Refusal>) -> Result<T, Refusal> {
        if let Err(Refusal::UnknownCode | Refusal::MalformedCode) = &result {
            self.app.limiter.note_failure(&self.ids, self.now);
        }
        result
    }
}

/// A body with no fields (rollback, void).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptyRequest {}

/// The routes [`parse_request`] knows, by their metrics names.
/// `generate` is the JSON branch of `POST /v1/campaigns/{id}/codes`, which
/// the handler takes only for `Content-Type: application/json`;
/// `code_action` is the body of rollback and void.
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
/// handler does (content type, `parse_json` into the route's private
/// request type, and the checks that need no engine), stopping before
/// auth, idempotency and the engine. `Err` is the response the client
/// would get. Not part of the API.
///
/// # Panics
///
/// If `route` is not one of [`JSON_ROUTES`].
#[doc(hidden)]
// The fuzz target reads the response a client would get; boxing it would
// only change the seam's shape.
#[allow(clippy::result_large_err)]
pub fn parse_request(
    route: &str,
    parts: &Parts,
    body: &[u8],
) -> Result<(), http::Response<crate::http::Body>> {
    use crate::extract::parse_json;
    let parsed: Result<(), ApiError> = match route {
        "create_campaign" => parse_json::<campaigns::CreateCampaign>(parts, body)
            .and_then(campaigns::CreateCampaign::into_spec)
            .map(drop),
        "update_campaign" => parse_json(parts, body)
            .and_then(campaigns::parse_patch)
            .map(drop),
        "generate" => parse_json::<pool::GenerateRequest>(parts, body).map(drop),
        "assign" => parse_json::<assignments::AssignRequest>(parts, body).map(drop),
        "code_action" => parse_json::<EmptyRequest>(parts, body).map(drop),
        "redeem" => parse_json::<checkout::RedeemRequest>(parts, body).map(drop),
        "reserve" => parse_json::<checkout::ReserveRequest>(parts, body).map(drop),
        "confirm" => parse_json::<checkout::ConfirmRequest>(parts, body).map(drop),
        other => panic!("parse_request: no JSON route {other:?}"),
    };
    parsed.map_err(ApiError::into_response)
}
