//! Taking a request apart: auth, body limits, JSON with the failing field
//! named, query parameters, and the idempotency key. Every failure is an
//! [`ApiError`], answered from the one table in `errors`.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use serde_json::Value;

use crate::app::App;
use crate::errors::ApiError;
use crate::tokens::{Principal, Role};

/// Longest accepted idempotency key.
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// Reads the request body up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(_) => Err(ApiError::BodyUnreadable),
    }
}

/// The media type of the body, lowercased, without parameters.
pub fn content_type(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

const JSON_ONLY: ApiError = ApiError::UnsupportedMediaType {
    hint: "send the body as application/json",
};

/// Parses a JSON body into `T`, rejecting unknown fields. An empty body
/// with no content type reads as `{}` for routes whose fields are optional.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    parts: &Parts,
    body: &[u8],
) -> Result<T, ApiError> {
    let ct = content_type(parts);
    let body = if body.is_empty() && ct.is_none() {
        &b"{}"[..]
    } else {
        body
    };
    if ct.as_deref().is_some_and(|ct| ct != "application/json") {
        return Err(JSON_ONLY);
    }
    if ct.is_none() && !body.is_empty() && body != b"{}" {
        return Err(JSON_ONLY);
    }
    // A body that is not JSON is `invalid_json`; a JSON body of the wrong
    // shape (not an object, unknown field, wrong type, missing field) is
    // `invalid_request`. Typed parsing stops at its first error, which need
    // not tell the two apart: `2 x` fails on the type of `2`, and `[[]]`
    // (a derived type reads an array as its fields in order) on "trailing
    // characters". So a failure is classified by parsing the whole body
    // as a `Value` (not `IgnoredAny`, which lets invalid UTF-8 in strings
    // through), a second pass paid only on the error path.
    let is_object = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{');
    let not_an_object = || ApiError::field("body", "the body must be a JSON object");
    match serde_json::from_slice(body) {
        Ok(parsed) if is_object => Ok(parsed),
        Ok(_) => Err(not_an_object()),
        Err(e) => {
            if let Err(syntax) = serde_json::from_slice::<Value>(body) {
                return Err(ApiError::InvalidJson {
                    detail: syntax.to_string(),
                });
            }
            if !is_object {
                return Err(not_an_object());
            }
            let message = e.to_string();
            let field = message
                .split('`')
                .nth(1)
                .filter(|_| message.contains("field"))
                .unwrap_or("body")
                .to_owned();
            Err(ApiError::InvalidField { field, message })
        }
    }
}

/// The query string's pairs, percent-decoded.
pub fn query_params(uri: &http::Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// Decodes `%XX` escapes; `plus_is_space` for query strings only.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query parameter `name`, if given.
pub fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `?state=` filter of an export, if given.
pub fn state_param(
    params: &[(String, String)],
) -> Result<Option<redeem_engine::PublicState>, ApiError> {
    param(params, "state")
        .map(|s| {
            redeem_engine::PublicState::parse(s).ok_or_else(|| {
                ApiError::field(
                    "state",
                    "state must be one of available, assigned, reserved, redeemed, voided",
                )
            })
        })
        .transpose()
}

/// A non-negative integer query parameter.
pub fn u64_param(params: &[(String, String)], name: &str) -> Result<Option<u64>, ApiError> {
    match param(params, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::field(name, format!("{name} must be a non-negative integer"))),
    }
}

/// A `true`/`false` query parameter; absent is `false`.
pub fn bool_param(params: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match param(params, name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::field(
            name,
            format!("{name} must be true or false"),
        )),
    }
}

/// The idempotency key of a request, scoped to its token.
#[derive(Debug)]
pub struct KeyedRequest {
    /// `<token scope>:<key>`: one token's keys never meet another's.
    pub scoped: String,
    /// Method, path and body, hashed: the same key with another request
    /// is refused.
    pub fingerprint: u128,
}

/// The request's `Idempotency-Key`, if it sent one.
pub fn idempotency_key(
    parts: &Parts,
    principal: &Principal,
    body: &[u8],
) -> Result<Option<KeyedRequest>, ApiError> {
    let Some(value) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
        || !key.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::field(
            "Idempotency-Key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(&[0]);
    hasher.update(body);
    let digest = hasher.finish();
    let fingerprint = u128::from_le_bytes(digest.as_ref()[..16].try_into().expect("16 bytes"));
    let scoped = format!("{}:{}", principal.scope, String::from_utf8_lossy(key));
    Ok(Some(KeyedRequest {
        scoped,
        fingerprint,
    }))
}

/// The caller, if its token admits one of `roles` (admin is always admitted).
pub fn authorize(app: &App, parts: &Parts, roles: &[Role]) -> Result<Principal, ApiError> {
    if app.config.no_auth {
        return Ok(Principal {
            role: Role::Admin,
            name: "no-auth".into(),
            scope: "noauth".into(),
            failed_attempts_per_minute: None,
        });
    }
    let token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    let Some(principal) = token.and_then(|t| app.tokens.authenticate(t)) else {
        return Err(ApiError::Unauthenticated);
    };
    if principal.role != Role::Admin && !roles.contains(&principal.role) {
        return Err(ApiError::Forbidden {
            role: principal.role,
        });
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_with(content_type: Option<&str>) -> Parts {
        let mut builder = http::Request::builder();
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_media_type_is_lowercased_and_stripped_of_parameters() {
        for (header, expected) in [
            (Some("application/json"), Some("application/json")),
            (Some("Application/JSON"), Some("application/json")),
            (
                Some(" application/json ; charset=UTF-8"),
                Some("application/json"),
            ),
            (Some("TEXT/CSV;charset=utf-8"), Some("text/csv")),
            (Some(""), Some("")),
            (None, None),
        ] {
            let parts = parts_with(header);
            assert_eq!(content_type(&parts).as_deref(), expected, "{header:?}");
        }
    }
}
