//! `/v1/campaigns/{id}/codes`: add codes to a campaign's pool (generate,
//! or import a text file streamed line by line) and export them as CSV.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use hyper::body::{Body as _, Incoming};
use redeem_engine::{ImportReport, Importer, Journal, Refusal, Timestamp};
use serde::Deserialize;

use crate::answer::{Answer, finish, keyed};
use crate::app::App;
use crate::errors::ApiError;
use crate::extract::{
    content_type, idempotency_key, parse_json, query_params, read_body, state_param, u64_param,
};
use crate::http::{Body, csv_response};
use crate::render;
use crate::routes::{Authorized, RouteRequest};
use crate::timefmt;
use crate::tokens::Principal;

/// Codes per CSV chunk sent while exporting.
const EXPORT_CHUNK_CODES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerateRequest {
    generate: u64,
}

/// Longest line kept whole for the importer. A longer line cannot be a
/// code (at most 64 characters, plus room for stray whitespace); its bytes
/// are dropped as they arrive and the line is reported as invalid.
const IMPORT_LINE_BYTES_MAX: usize = 1024;

/// Splits a byte stream into lines for the importer, holding only a
/// partial last line (at most [`IMPORT_LINE_BYTES_MAX`] of it) between
/// chunks, so every byte is looked at once however the lines are cut.
struct LineFeeder<'e, J: Journal> {
    importer: Importer<'e, J>,
    /// The start of the current line.
    carry: Vec<u8>,
    /// The current line outgrew the limit; its bytes are being dropped.
    overlong: bool,
    line_no: u64,
    now: Timestamp,
}

impl<'e, J: Journal> LineFeeder<'e, J> {
    fn feed(&mut self, mut data: &[u8]) -> Result<(), Refusal> {
        while let Some(pos) = data.iter().position(|&b| b == b'\n') {
            self.take(&data[..pos]);
            self.end_line()?;
            data = &data[pos + 1..];
        }
        self.take(data);
        Ok(())
    }

    /// Adds bytes to the current line, or drops them once it is too long.
    fn take(&mut self, bytes: &[u8]) {
        if self.overlong || self.carry.len() + bytes.len() > IMPORT_LINE_BYTES_MAX {
            self.overlong = true;
            self.carry.clear();
        } else {
            self.carry.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self) -> Result<(), Refusal> {
        self.line_no += 1;
        let line = if std::mem::take(&mut self.overlong) {
            // Not a code, whatever it holds; the importer says why.
            String::from("-overlong line-")
        } else {
            String::from_utf8_lossy(&self.carry).into_owned()
        };
        self.carry.clear();
        self.importer.push(self.line_no, &line, self.now)
    }

    fn finish(mut self) -> Result<ImportReport, Refusal> {
        if !self.carry.is_empty() || self.overlong {
            self.end_line()?;
        }
        self.importer.finish(self.now)
    }
}

/// The answer to an import or a `generate`.
fn report_answer(app: &App, report: &ImportReport) -> Answer {
    Answer {
        status: 200,
        body: render::import_report(report),
        lsn: app.wal.last_lsn(),
    }
}

/// `POST .../codes`: JSON `{"generate": N}`, or codes as `text/plain`.
pub async fn add_codes(app: &App, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let Authorized {
        parts,
        body,
        param: id,
        principal,
    } = req.authorized();
    match content_type(&parts).as_deref() {
        Some("application/json") => generate(app, &id, &principal, &parts, body).await,
        Some("text/plain") => import(app, &id, &principal, &parts, body).await,
        _ => Err(ApiError::UnsupportedMediaType {
            hint: "send {\"generate\": N} as application/json or codes as text/plain",
        }),
    }
}

async fn generate(
    app: &App,
    id: &str,
    principal: &Principal,
    parts: &http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let bytes = read_body(body, app.config.body_bytes_max).await?;
    let request: GenerateRequest = parse_json(parts, &bytes)?;
    let key = idempotency_key(parts, principal, &bytes)?;
    Ok(keyed(app, key, |idem| {
        let report = app
            .engine
            .generate(id, request.generate, timefmt::now(), idem)?;
        Ok(report_answer(app, &report))
    })
    .await)
}

async fn import(
    app: &App,
    id: &str,
    principal: &Principal,
    parts: &http::request::Parts,
    mut body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let limit = app.config.import_bytes_max;
    let new_feeder = || {
        app.engine.importer(id).map(|importer| LineFeeder {
            importer,
            carry: Vec::new(),
            overlong: false,
            line_no: 0,
            now: timefmt::now(),
        })
    };
    if parts.headers.contains_key("idempotency-key") {
        // A keyed import is read whole first: its fingerprint covers the
        // body. Retried after a crash, it finds its codes present and
        // counts them as duplicates.
        let bytes = read_body(body, limit).await?;
        let key = idempotency_key(parts, principal, &bytes)?;
        return Ok(keyed(app, key, |_idem| {
            let mut feeder = new_feeder()?;
            feeder.feed(&bytes)?;
            Ok(report_answer(app, &feeder.finish()?))
        })
        .await);
    }
    let mut feeder = new_feeder()?;
    let mut seen = 0usize;
    // Lines are fed as they arrive; only a partial last line is held.
    loop {
        let frame =
            match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(_)) => return Err(ApiError::BodyUnreadable),
            };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        feeder.feed(&data)?;
    }
    let outcome = feeder.finish().map(|report| report_answer(app, &report));
    Ok(finish(app, outcome).await)
}

/// Sends a chunk of an export once the states it shows are durable (they
/// were read before the log's end was taken). `false` when the export must
/// stop: the client went away, or the log failed, which cuts the stream
/// short rather than show what a crash could lose.
fn send_durable(app: &App, tx: &tokio::sync::mpsc::Sender<Bytes>, chunk: String) -> bool {
    if app.wal.wait_durable(app.wal.last_lsn()).is_err() {
        tracing::error!("export stopped: the log failed");
        return false;
    }
    tx.blocking_send(Bytes::from(chunk)).is_ok()
}

/// `GET .../codes?state=S&limit=N`: `code,state` lines, streamed.
pub fn export_codes(app: &Arc<App>, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let params = query_params(&req.parts.uri);
    let state = state_param(&params)?;
    let limit = u64_param(&params, "limit")?.unwrap_or(u64::MAX);
    if app.engine.campaign(&req.param).is_none() {
        return Err(Refusal::UnknownCampaign.into());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let app = app.clone();
    let id = req.param;
    tokio::task::spawn_blocking(move || {
        let campaign = app.engine.campaign(&id).expect("checked above");
        let mut chunk = String::from("code,state\n");
        let mut in_chunk = 0;
        let wanted = campaign
            .states()
            .filter(|(_, s)| state.is_none_or(|want| want == *s));
        for (slot, s) in wanted.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
            chunk.push_str(&campaign.code_of(slot));
            chunk.push(',');
            chunk.push_str(s.as_str());
            chunk.push('\n');
            in_chunk += 1;
            if in_chunk >= EXPORT_CHUNK_CODES {
                in_chunk = 0;
                if !send_durable(&app, &tx, std::mem::take(&mut chunk)) {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            send_durable(&app, &tx, chunk);
        }
    });
    Ok(csv_response(rx))
}
