//! Answering only what is durable. An operation's outcome is held until
//! the log has made durable every record it reports or depends on; under
//! an idempotency key, the first outcome is stored (with its transition's
//! record, or in a record of its own) and replayed for retries.

use std::time::{Duration, Instant};

use http::Response;
use http::header::HeaderValue;
use redeem_engine::{Begin, IdemKey, Lsn, Refusal, StoredResponse};

use crate::app::App;
use crate::errors::ApiError;
use crate::extract::KeyedRequest;
use crate::http::{Body, json_response};
use crate::timefmt;

/// How long a request waits for an in-flight request with the same key.
const IDEMPOTENCY_WAIT_MS_MAX: u64 = 30_000;
/// How often a request waiting for its key's first request looks again.
const IDEMPOTENCY_POLL_MS: u64 = 5;

/// What an operation produced: a response and the LSN it must wait for.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// Every transition the answer reports or depends on is at or below
    /// it; 0 means "whatever the log holds when the operation returns".
    pub lsn: Lsn,
}

/// Runs `op` under the request's idempotency key, if it has one: a replay
/// returns the stored response, a reused key with another request is
/// refused, and a new outcome is stored durably with its transition.
pub async fn keyed(
    app: &App,
    key: Option<KeyedRequest>,
    op: impl FnOnce(Option<IdemKey<'_>>) -> Result<Answer, Refusal>,
) -> Response<Body> {
    let Some(key) = key else {
        return finish(app, run_op(app, None, op)).await;
    };
    let idem = IdemKey {
        key: &key.scoped,
        fingerprint: key.fingerprint,
    };
    if let Err(response) = wait_for_key(app, idem).await {
        return response;
    }
    let answer = match run_op(app, Some(idem), op) {
        Ok(answer) => answer,
        // Outages, throttling and capacity answers are about this moment,
        // not about the request: they are not stored, so a retry runs anew.
        Err(r @ (Refusal::Unavailable(_) | Refusal::IdempotencyTableFull(_))) => {
            app.engine.idempotency().abandon(idem.key);
            return ApiError::Refused(r).into_response();
        }
        Err(r) => {
            let error = ApiError::Refused(r);
            Answer {
                status: error.status(),
                body: error.body(),
                lsn: 0,
            }
        }
    };
    // A transition stored its response with its record; anything else
    // (a refusal, or an answer that changed nothing) gets its own record.
    let stored = match app.engine.begin_idempotent(idem, timefmt::now()) {
        Ok(Begin::Replay(stored)) => stored,
        _ => match app
            .engine
            .store_response(idem, answer.status, &answer.body, timefmt::now())
        {
            Ok(lsn) => StoredResponse {
                status: answer.status,
                body: answer.body.into(),
                lsn,
            },
            Err(r) => {
                app.engine.idempotency().abandon(idem.key);
                return ApiError::Refused(r).into_response();
            }
        },
    };
    let lsn = stored.lsn.max(app.wal.last_lsn());
    if app.durable(lsn).await.is_err() {
        return ApiError::LogFailed.into_response();
    }
    json_response(stored.status, stored.body.to_vec())
}

/// Marks the key in flight. `Err` is the answer when the request must not
/// run: a replay of the stored response, a reused key, a key still busy.
async fn wait_for_key(app: &App, idem: IdemKey<'_>) -> Result<(), Response<Body>> {
    let deadline = Instant::now() + Duration::from_millis(IDEMPOTENCY_WAIT_MS_MAX);
    loop {
        match app.engine.begin_idempotent(idem, timefmt::now()) {
            Err(r) => return Err(ApiError::Refused(r).into_response()),
            Ok(Begin::Replay(stored)) => {
                if app.durable(stored.lsn).await.is_err() {
                    return Err(ApiError::LogFailed.into_response());
                }
                let mut response = json_response(stored.status, stored.body.to_vec());
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Err(response);
            }
            Ok(Begin::Mismatch) => return Err(ApiError::IdempotencyKeyReused.into_response()),
            Ok(Begin::InFlight) => {
                if Instant::now() >= deadline {
                    return Err(ApiError::IdempotencyKeyInFlight.into_response());
                }
                tokio::time::sleep(Duration::from_millis(IDEMPOTENCY_POLL_MS)).await;
            }
            Ok(Begin::Fresh) => return Ok(()),
        }
    }
}

/// Runs an operation; an answer that names no LSN depends on whatever is
/// in the log now, so it waits for the log's current end.
fn run_op(
    app: &App,
    idem: Option<IdemKey<'_>>,
    op: impl FnOnce(Option<IdemKey<'_>>) -> Result<Answer, Refusal>,
) -> Result<Answer, Refusal> {
    op(idem).map(|mut answer| {
        if answer.lsn == 0 {
            answer.lsn = app.wal.last_lsn();
        }
        answer
    })
}

/// Sends an outcome once what it reports is durable.
pub async fn finish(app: &App, outcome: Result<Answer, Refusal>) -> Response<Body> {
    match outcome {
        Ok(answer) => {
            if app.durable(answer.lsn).await.is_err() {
                return ApiError::LogFailed.into_response();
            }
            json_response(answer.status, answer.body)
        }
        Err(r @ Refusal::Unavailable(_)) => ApiError::Refused(r).into_response(),
        Err(r) => {
            // A refusal that reports a code's state waits for the record
            // that made it; any other for whatever the log holds now.
            let lsn = r.reported_lsn().unwrap_or_else(|| app.wal.last_lsn());
            if app.durable(lsn).await.is_err() {
                return ApiError::LogFailed.into_response();
            }
            ApiError::Refused(r).into_response()
        }
    }
}
