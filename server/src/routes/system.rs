//! `/healthz`, `/readyz` and `/metrics`: open to all, no token.

use http::Response;
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::app::App;
use crate::errors::ApiError;
use crate::http::{Body, full, json_response};

/// `200` while the process runs.
pub fn healthz() -> Response<Body> {
    json_response(200, br#"{"status":"ok"}"#.to_vec())
}

/// `503` while the log is replayed, `200` once serving.
pub fn readyz(app: &App) -> Result<Response<Body>, ApiError> {
    if !app.is_ready() {
        return Err(ApiError::NotReady {
            message: "the log is being replayed",
        });
    }
    Ok(json_response(200, br#"{"status":"ready"}"#.to_vec()))
}

/// Prometheus text format.
pub fn metrics(app: &App) -> Response<Body> {
    let mut response = Response::new(full(crate::metrics::exposition(app)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}
