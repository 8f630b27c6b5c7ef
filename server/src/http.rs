//! The route table: every route of API.md with its method, path, roles and
//! metrics name, matched by `matchit`; 404 and 405 (with `Allow`) come from
//! the same table. Handlers live in `routes`, grouped by resource.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};

use crate::app::App;
use crate::errors::ApiError;
use crate::extract;
use crate::routes::{self, RouteRequest};
use crate::tokens::Role;

pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body in one frame.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn json_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("valid status");
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A response body fed from a channel, for streamed CSV and NDJSON.
pub struct ChannelBody {
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A streamed `text/csv` answer fed from `rx`.
pub fn csv_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let mut response = Response::new(ChannelBody { rx }.boxed());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    response
}

/// Every route, named as its requests are counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    CreateCampaign,
    ListCampaigns,
    GetCampaign,
    UpdateCampaign,
    AddCodes,
    ExportCodes,
    Assign,
    ExportAssignments,
    BulkAssign,
    BulkReclaim,
    Reclaim,
    GetCode,
    Rollback,
    Void,
    Redeem,
    Reserve,
    Confirm,
    Release,
    Events,
    CreateWebhook,
    ListWebhooks,
    GetWebhook,
    UpdateWebhook,
    DeleteWebhook,
    RewindWebhook,
    History,
    Ui,
    UiAsset,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// No token needed.
    Open,
    /// These roles, and admin; `&[]` is admin only.
    Roles(&'static [Role]),
}

use Access::{Open, Roles};
use Role::{Checkout, Issuer};

const ADMIN: Access = Roles(&[]);

/// The table. Methods of one path are listed in the order `Allow` names them.
const ROUTES: &[(Method, &str, Route, Access)] = &[
    (Method::GET, "/healthz", Route::Healthz, Open),
    (Method::GET, "/readyz", Route::Readyz, Open),
    (Method::GET, "/metrics", Route::Metrics, Open),
    (Method::GET, "/v1/campaigns", Route::ListCampaigns, ADMIN),
    (Method::POST, "/v1/campaigns", Route::CreateCampaign, ADMIN),
    (Method::GET, "/v1/campaigns/{id}", Route::GetCampaign, ADMIN),
    (
        Method::PATCH,
        "/v1/campaigns/{id}",
        Route::UpdateCampaign,
        ADMIN,
    ),
    (
        Method::GET,
        "/v1/campaigns/{id}/codes",
        Route::ExportCodes,
        ADMIN,
    ),
    (
        Method::POST,
        "/v1/campaigns/{id}/codes",
        Route::AddCodes,
        ADMIN,
    ),
    (
        Method::POST,
        "/v1/campaigns/{id}/assignments",
        Route::Assign,
        Roles(&[Issuer]),
    ),
    (
        Method::GET,
        "/v1/campaigns/{id}/assignments",
        Route::ExportAssignments,
        Roles(&[Issuer]),
    ),
    (
        Method::POST,
        "/v1/campaigns/{id}/assignments/bulk",
        Route::BulkAssign,
        Roles(&[Issuer]),
    ),
    (
        Method::POST,
        "/v1/campaigns/{id}/assignments/reclaim",
        Route::BulkReclaim,
        Roles(&[Issuer]),
    ),
    (
        Method::DELETE,
        "/v1/campaigns/{id}/assignments/{recipient}",
        Route::Reclaim,
        Roles(&[Issuer]),
    ),
    (
        Method::GET,
        "/v1/codes/{code}",
        Route::GetCode,
        Roles(&[Issuer, Checkout]),
    ),
    (
        Method::POST,
        "/v1/codes/{code}/rollback",
        Route::Rollback,
        Roles(&[Checkout]),
    ),
    (Method::POST, "/v1/codes/{code}/void", Route::Void, ADMIN),
    (
        Method::POST,
        "/v1/redemptions",
        Route::Redeem,
        Roles(&[Checkout]),
    ),
    (
        Method::POST,
        "/v1/reservations",
        Route::Reserve,
        Roles(&[Checkout]),
    ),
    (
        Method::POST,
        "/v1/reservations/{id}/confirm",
        Route::Confirm,
        Roles(&[Checkout]),
    ),
    (
        Method::DELETE,
        "/v1/reservations/{id}",
        Route::Release,
        Roles(&[Checkout]),
    ),
    (Method::GET, "/v1/events", Route::Events, ADMIN),
    (Method::GET, "/v1/webhooks", Route::ListWebhooks, ADMIN),
    (Method::POST, "/v1/webhooks", Route::CreateWebhook, ADMIN),
    (Method::GET, "/v1/webhooks/{id}", Route::GetWebhook, ADMIN),
    (
        Method::PATCH,
        "/v1/webhooks/{id}",
        Route::UpdateWebhook,
        ADMIN,
    ),
    (
        Method::DELETE,
        "/v1/webhooks/{id}",
        Route::DeleteWebhook,
        ADMIN,
    ),
    (
        Method::POST,
        "/v1/webhooks/{id}/rewind",
        Route::RewindWebhook,
        ADMIN,
    ),
    (
        Method::GET,
        "/v1/campaigns/{id}/history",
        Route::History,
        ADMIN,
    ),
    (Method::GET, "/ui", Route::Ui, Open),
    (Method::GET, "/ui/{asset}", Route::UiAsset, Open),
];

impl Route {
    /// The `route` label of its metrics.
    pub fn name(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::CreateCampaign => "create_campaign",
            Route::ListCampaigns => "list_campaigns",
            Route::GetCampaign => "get_campaign",
            Route::UpdateCampaign => "update_campaign",
            Route::AddCodes => "add_codes",
            Route::ExportCodes => "export_codes",
            Route::Assign => "assign",
            Route::ExportAssignments => "export_assignments",
            Route::BulkAssign => "bulk_assign",
            Route::BulkReclaim => "bulk_reclaim",
            Route::Reclaim => "reclaim",
            Route::GetCode => "get_code",
            Route::Rollback => "rollback",
            Route::Void => "void",
            Route::Redeem => "redeem",
            Route::Reserve => "reserve",
            Route::Confirm => "confirm",
            Route::Release => "release",
            Route::Events => "events",
            Route::CreateWebhook => "create_webhook",
            Route::ListWebhooks => "list_webhooks",
            Route::GetWebhook => "get_webhook",
            Route::UpdateWebhook => "update_webhook",
            Route::DeleteWebhook => "delete_webhook",
            Route::RewindWebhook => "rewind_webhook",
            Route::History => "history",
            Route::Ui => "ui",
            Route::UiAsset => "ui_asset",
        }
    }
}

/// Metrics label of requests that matched no route (404, 405).
const UNMATCHED: &str = "other";

/// A path's routes by method.
type Methods = Vec<(Method, Route, Access)>;

/// The routes of one path.
struct PathRoutes {
    methods: Methods,
    /// The `Allow` header of a 405 on this path.
    allow: HeaderValue,
}

/// The table, compiled once: a path tree whose leaves index `paths`.
struct Router {
    tree: matchit::Router<usize>,
    paths: Vec<PathRoutes>,
}

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut tree = matchit::Router::new();
        let mut paths: Vec<(&str, Methods)> = Vec::new();
        for (method, path, route, access) in ROUTES {
            match paths.iter_mut().find(|(p, _)| p == path) {
                Some((_, methods)) => methods.push((method.clone(), *route, *access)),
                None => paths.push((path, vec![(method.clone(), *route, *access)])),
            }
        }
        let paths = paths
            .into_iter()
            .enumerate()
            .map(|(index, (path, methods))| {
                tree.insert(path, index)
                    .expect("the route table's paths are distinct");
                let allow: Vec<&str> = methods.iter().map(|(m, ..)| m.as_str()).collect();
                PathRoutes {
                    allow: HeaderValue::from_str(&allow.join(", "))
                        .expect("method names are ASCII"),
                    methods,
                }
            })
            .collect();
        Router { tree, paths }
    })
}

/// Serves one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let timeout = Duration::from_secs(app.config.request_timeout_seconds);
    let (name, response) = match tokio::time::timeout(timeout, route(&app, req)).await {
        Ok(answer) => answer,
        Err(_) => ("timeout", ApiError::RequestTimeout.into_response()),
    };
    app.metrics
        .observe_request(name, response.status().as_u16(), start.elapsed());
    Ok(response)
}

/// Matches, authorizes and runs a request; returns its metrics label too.
async fn route(app: &Arc<App>, req: Request<Incoming>) -> (&'static str, Response<Body>) {
    let path = req.uri().path();
    if !app.is_ready() && (path == "/v1" || path.starts_with("/v1/")) {
        let error = ApiError::NotReady {
            message: "the log is being replayed; retry shortly",
        };
        return ("not_ready", error.into_response());
    }
    let router = router();
    let Ok(matched) = router.tree.at(path) else {
        return (UNMATCHED, ApiError::NotFound.into_response());
    };
    let routes = &router.paths[*matched.value];
    let Some(&(_, route, access)) = routes.methods.iter().find(|(m, ..)| m == req.method()) else {
        let allow = routes.allow.clone();
        return (
            UNMATCHED,
            ApiError::MethodNotAllowed { allow }.into_response(),
        );
    };
    // Each path has at most one parameter; percent-escapes are decoded
    // after matching, so an escaped `/` stays inside its segment.
    let mut params = matched
        .params
        .iter()
        .map(|(_, value)| extract::percent_decode(value, false));
    let param = params.next().unwrap_or_default();
    let param2 = params.next().unwrap_or_default();
    let (parts, body) = req.into_parts();
    let principal = match access {
        Open => None,
        Roles(roles) => match extract::authorize(app, &parts, roles) {
            Ok(principal) => Some(principal),
            Err(error) => return (route.name(), error.into_response()),
        },
    };
    let req = RouteRequest {
        parts,
        body,
        param,
        param2,
        principal,
    };
    let response = dispatch(app, route, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    (route.name(), response)
}

async fn dispatch(
    app: &Arc<App>,
    route: Route,
    req: RouteRequest,
) -> Result<Response<Body>, ApiError> {
    use routes::{
        assignments, bulk, campaigns, checkout, codes, events, history, pool, system, ui, webhooks,
    };
    match route {
        Route::Healthz => Ok(system::healthz()),
        Route::Readyz => system::readyz(app),
        Route::Metrics => Ok(system::metrics(app)),
        Route::CreateCampaign => campaigns::create(app, req).await,
        Route::ListCampaigns => campaigns::list(app).await,
        Route::GetCampaign => campaigns::get(app, req).await,
        Route::UpdateCampaign => campaigns::update(app, req).await,
        Route::AddCodes => pool::add_codes(app, req).await,
        Route::ExportCodes => pool::export_codes(app, req),
        Route::Assign => assignments::assign(app, req).await,
        Route::ExportAssignments => bulk::export_assignments(app, req),
        Route::BulkAssign => bulk::bulk_assign(app, req).await,
        Route::BulkReclaim => bulk::bulk_reclaim(app, req).await,
        Route::Reclaim => assignments::reclaim(app, req).await,
        Route::GetCode => codes::get(app, req).await,
        Route::Rollback => codes::rollback(app, req).await,
        Route::Void => codes::void(app, req).await,
        Route::Redeem => checkout::redeem(app, req).await,
        Route::Reserve => checkout::reserve(app, req).await,
        Route::Confirm => checkout::confirm(app, req).await,
        Route::Release => checkout::release(app, req).await,
        Route::Events => events::events(app, req).await,
        Route::CreateWebhook => webhooks::create(app, req).await,
        Route::ListWebhooks => webhooks::list(app).await,
        Route::GetWebhook => webhooks::get(app, req).await,
        Route::UpdateWebhook => webhooks::update(app, req).await,
        Route::DeleteWebhook => webhooks::delete(app, req).await,
        Route::RewindWebhook => webhooks::rewind(app, req).await,
        Route::History => history::history(app, req).await,
        Route::Ui => Ok(ui::index()),
        Route::UiAsset => ui::asset(req),
    }
}

pub use routes::{JSON_ROUTES, parse_request};

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(method: Method, path: &str, expected: Result<Route, Option<&str>>) {
        let router = router();
        let got = match router.tree.at(path) {
            Err(_) => Err(None),
            Ok(matched) => {
                let routes = &router.paths[*matched.value];
                routes
                    .methods
                    .iter()
                    .find(|(m, ..)| *m == method)
                    .map(|&(_, route, _)| route)
                    .ok_or(Some(routes.allow.to_str().unwrap()))
            }
        };
        assert_eq!(got, expected, "{method} {path}");
    }

    #[test]
    fn routes_match_their_paths_and_only_those() {
        check(Method::POST, "/v1/redemptions", Ok(Route::Redeem));
        check(Method::GET, "/v1/campaigns/spring", Ok(Route::GetCampaign));
        check(
            Method::POST,
            "/v1/codes/SPR-7KQ2M/rollback",
            Ok(Route::Rollback),
        );
        check(Method::DELETE, "/v1/reservations/rsv_1", Ok(Route::Release));
        check(Method::PUT, "/v1/campaigns", Err(Some("GET, POST")));
        check(Method::GET, "/v1/campaigns/spring/codes/x", Err(None));
        check(Method::GET, "/v1/codes/a/b", Err(None));
        check(Method::GET, "/nope", Err(None));
    }

    #[test]
    fn every_route_is_in_the_table_once() {
        let mut seen: Vec<Route> = ROUTES.iter().map(|r| r.2).collect();
        let count = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), count);
        router();
    }
}
