//! `GET /ui` and `/ui/{asset}`: the operator dashboard, compiled into the
//! binary so it works with no network. The page needs no token to load; it
//! asks for one and calls the API with it from the browser.

use http::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};

use crate::errors::ApiError;
use crate::http::{Body, full};
use crate::routes::RouteRequest;

/// Every asset by name: (content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../ui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../ui/icon.svg"),
    ),
];

const INDEX: &[u8] = include_bytes!("../../ui/index.html");

/// Only this origin's scripts, styles and API: no inline script (the token
/// could otherwise be read by injected markup), no remote origin, no
/// framing, forms post nowhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

pub fn index() -> Response<Body> {
    page("text/html; charset=utf-8", INDEX)
}

pub fn asset(req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, ..)| *name == req.param)
        .ok_or(ApiError::NotFound)?;
    Ok(page(content_type, bytes))
}

fn page(content_type: &'static str, bytes: &'static [u8]) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary serves new assets under the same names.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
