//! Email campaigns in bulk: a recipient file in, a CSV of codes out
//! (`POST .../assignments/bulk`), the same for reclaims
//! (`POST .../assignments/reclaim`), and the merge file
//! (`GET .../assignments`).
//!
//! A job runs on a blocking thread. The request body reaches it through a
//! channel of frames, read as `std::io::Read` by the `csv` parser, so only
//! a frame and the current record are held (an all-or-nothing file is the
//! exception: it is counted before anything is assigned, so it is read
//! whole, up to the 64 MiB limit). Lines are handled in batches; a batch's
//! rows are sent only once the log's end at the batch's close is durable,
//! which covers every record the batch wrote or reports, so a row a client
//! has received is durable and a dropped connection loses nothing. The
//! sync of one batch overlaps the assigning of the next.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use hyper::body::{Body as _, Incoming};
use redeem_engine::{Assigned, Pledge, PublicState, Refusal};

use crate::app::App;
use crate::errors::ApiError;
use crate::extract::{bool_param, content_type, query_params, read_body, state_param};
use crate::http::{Body, csv_response};
use crate::routes::{Authorized, RouteRequest};
use crate::timefmt;

/// Lines per batch: one durability wait, and one chunk of rows sent.
const BULK_BATCH_LINES: usize = 8192;
/// Assignments per merge-file chunk.
const EXPORT_CHUNK_ROWS: usize = 4096;
/// Body frames queued between the connection and the job.
const BODY_FRAMES_QUEUED: usize = 8;
/// Output chunks queued between the job and the connection.
const OUTPUT_CHUNKS_QUEUED: usize = 4;

/// A request body as `Read` for a blocking thread: frames arrive over a
/// channel from a task that reads the connection and enforces the limit.
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(frame) => self.current = frame?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Forwards the body's frames to a [`BodyReader`], cutting it off with an
/// error past `limit` bytes.
fn stream_body(mut body: Incoming, limit: usize) -> BodyReader {
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_FRAMES_QUEUED);
    tokio::spawn(async move {
        let mut seen = 0usize;
        loop {
            let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx));
            let data = match frame.await {
                None => return,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Ok(data),
                    Err(_) => continue,
                },
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
            };
            let data = data.and_then(|d| {
                seen += d.len();
                if seen > limit {
                    Err(std::io::Error::other(format!(
                        "the body is larger than {limit} bytes"
                    )))
                } else {
                    Ok(d)
                }
            });
            let stop = data.is_err();
            if tx.send(data).await.is_err() || stop {
                return;
            }
        }
    });
    BodyReader {
        rx,
        current: Bytes::new(),
    }
}

/// The recipients of a file: the first column of each CSV record, blank
/// lines skipped (the parser's own rule), and a first record that is
/// exactly `recipient` taken as a header. `redeemd assign` counts a file's
/// lines with it too, so both sides read a file the same way.
pub struct Recipients<R: Read> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    first: bool,
}

impl<R: Read> Recipients<R> {
    pub fn new(input: R) -> Recipients<R> {
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        Recipients {
            reader,
            record: csv::ByteRecord::new(),
            first: true,
        }
    }

    /// The next recipient's bytes; `Ok(None)` at the end, `Err` when the
    /// body could not be read (or passed its limit).
    pub fn next_recipient(&mut self) -> Result<Option<&[u8]>, csv::Error> {
        loop {
            if !self.reader.read_byte_record(&mut self.record)? {
                return Ok(None);
            }
            let header = std::mem::take(&mut self.first)
                && self.record.len() == 1
                && &self.record[0] == b"recipient";
            if !header {
                return Ok(Some(self.record.get(0).unwrap_or(b"")));
            }
        }
    }
}

/// Rows of a CSV answer, sent in durable chunks.
///
/// A full chunk is handed on with the log's end at that moment; a task
/// sends it once that LSN is durable. The job does not wait for the sync:
/// it goes on with the next batch while the last one is synced, and the
/// bounded queue between them keeps it at most `OUTPUT_CHUNKS_QUEUED`
/// chunks ahead of the log.
struct Rows {
    writer: csv::Writer<Vec<u8>>,
    /// Chunks and the LSN each must be durable up to before it is sent.
    tx: tokio::sync::mpsc::Sender<(u64, Bytes)>,
    in_batch: usize,
}

/// Sends each chunk to the response once the log is durable up to its
/// LSN, in order; stops at the first failed sync or when the client went
/// away, which the job sees as its next hand-over failing.
fn send_when_durable(
    app: Arc<App>,
    body: tokio::sync::mpsc::Sender<Bytes>,
) -> tokio::sync::mpsc::Sender<(u64, Bytes)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Bytes)>(OUTPUT_CHUNKS_QUEUED);
    tokio::spawn(async move {
        while let Some((lsn, chunk)) = rx.recv().await {
            if app.durable(lsn).await.is_err() {
                tracing::error!("bulk job stopped: the log failed");
                return;
            }
            if body.send(chunk).await.is_err() {
                return;
            }
        }
    });
    tx
}

impl Rows {
    /// Rows for the response fed by `body`; must be called inside the
    /// runtime (a blocking task is), which runs the sending task.
    fn new(app: &Arc<App>, body: tokio::sync::mpsc::Sender<Bytes>, header: &[&str]) -> Rows {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer
            .write_record(header)
            .expect("writing to memory cannot fail");
        Rows {
            writer,
            tx: send_when_durable(app.clone(), body),
            in_batch: 0,
        }
    }

    fn row(&mut self, fields: &[&[u8]]) {
        self.writer
            .write_record(fields)
            .expect("writing to memory cannot fail");
    }

    /// Counts a line handled; sends the batch once it is full. `false`
    /// when the job must stop (see [`Rows::send`]).
    fn line_done(&mut self, app: &App) -> bool {
        self.in_batch += 1;
        self.in_batch < BULK_BATCH_LINES || self.send(app)
    }

    /// Hands the rows on, to be sent once the log's end now (every record
    /// the rows report) is durable. `false` when the client went away or
    /// the log failed: nothing more may be answered.
    fn send(&mut self, app: &App) -> bool {
        self.in_batch = 0;
        let writer = std::mem::replace(&mut self.writer, csv::Writer::from_writer(Vec::new()));
        let chunk = writer.into_inner().expect("writing to memory cannot fail");
        if chunk.is_empty() {
            return true;
        }
        let lsn = app.wal.last_lsn();
        self.tx.blocking_send((lsn, Bytes::from(chunk))).is_ok()
    }
}

/// A recipient file's request, checked before any job starts.
fn recipient_file(app: &App, auth: &Authorized) -> Result<(), ApiError> {
    match content_type(&auth.parts).as_deref() {
        Some("text/csv" | "text/plain") => {}
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                hint: "send the recipient file as text/csv or text/plain",
            });
        }
    }
    let limit = app.config.import_bytes_max;
    if auth.body.size_hint().lower() > limit as u64 {
        return Err(ApiError::BodyTooLarge { limit });
    }
    // Campaign and window: a job that cannot assign anything is refused
    // whole, before a 200 is sent.
    if app.engine.campaign(&auth.param).is_none() {
        return Err(Refusal::UnknownCampaign.into());
    }
    Ok(())
}

/// What one line's assignment became, as a row status; `Err` for a
/// refusal that is about the whole campaign or the log, which ends the job.
fn assign_status(result: &Result<Assigned, Refusal>) -> Result<&'static str, &Refusal> {
    match result {
        Ok(a) if a.test => Ok("test"),
        Ok(a) if a.new => Ok("created"),
        Ok(_) => Ok("existing"),
        Err(Refusal::InvalidRequest { .. }) => Ok("invalid_recipient"),
        Err(Refusal::PoolExhausted) => Ok("pool_exhausted"),
        Err(other) => Err(other),
    }
}

/// Tallies of a bulk job, for its log line.
#[derive(Default)]
struct Tally {
    lines: u64,
    created: u64,
    existing: u64,
    failed: u64,
}

/// `POST .../assignments/bulk?all_or_nothing=B`.
pub async fn bulk_assign(app: &Arc<App>, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let auth = req.authorized();
    let all_or_nothing = bool_param(&query_params(&auth.parts.uri), "all_or_nothing")?;
    recipient_file(app, &auth)?;
    let limit = app.config.import_bytes_max;
    let id = auth.param;
    // Admission (window, pause) for the whole file, before the 200.
    drop(app.engine.pledge(&id, [], timefmt::now())?);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(OUTPUT_CHUNKS_QUEUED);
    if !all_or_nothing {
        let input = stream_body(auth.body, limit);
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let mut recipients = Recipients::new(input);
            run_assign(
                &app,
                &id,
                &mut Rows::new(&app, tx, &["recipient", "code", "status"]),
                None,
                |_| recipients.next_recipient().map(|r| r.map(<[u8]>::to_vec)),
            );
        });
        return Ok(csv_response(rx));
    }
    // Counted before anything is assigned, so read whole.
    let bytes = read_body(auth.body, limit).await?;
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
    let job = app.clone();
    tokio::task::spawn_blocking(move || {
        let app = job;
        let mut lines = Vec::new();
        let mut recipients = Recipients::new(&bytes[..]);
        while let Ok(Some(r)) = recipients.next_recipient() {
            lines.push(r.to_vec());
        }
        let valid = lines.iter().filter_map(|l| std::str::from_utf8(l).ok());
        let mut pledge = match app.engine.pledge(&id, valid, timefmt::now()) {
            Ok(pledge) => pledge,
            Err(refusal) => {
                let _ = answer_tx.send(Err(refusal));
                return;
            }
        };
        // The pledge is durable-neutral (nothing logged); a 200 may go.
        if answer_tx.send(Ok(())).is_err() {
            return;
        }
        let mut lines = lines.into_iter();
        run_assign(
            &app,
            &id,
            &mut Rows::new(&app, tx, &["recipient", "code", "status"]),
            Some(&mut pledge),
            |_| Ok(lines.next()),
        );
    });
    match answer_rx.await {
        Ok(Ok(())) => Ok(csv_response(rx)),
        Ok(Err(refusal)) => {
            // The counts it reports depend on whatever the log holds now.
            if app.durable(app.wal.last_lsn()).await.is_err() {
                return Err(ApiError::LogFailed);
            }
            Err(refusal.into())
        }
        Err(_) => Err(ApiError::BodyUnreadable),
    }
}

/// Assigns each recipient `next` yields, in order, writing a row a line.
fn run_assign(
    app: &App,
    id: &str,
    rows: &mut Rows,
    mut pledge: Option<&mut Pledge<'_>>,
    mut next: impl FnMut(()) -> Result<Option<Vec<u8>>, csv::Error>,
) {
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut now = timefmt::now();
    let mut stopped = None;
    loop {
        let recipient = match next(()) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                stopped = Some(format!("the body could not be read: {e}"));
                break;
            }
        };
        tally.lines += 1;
        let result = match std::str::from_utf8(&recipient) {
            Ok(name) => app
                .engine
                .assign_pledged(id, name, now, None, pledge.as_deref_mut()),
            Err(_) => Err(Refusal::InvalidRequest {
                field: "recipient",
                message: "not UTF-8".into(),
            }),
        };
        let status = match assign_status(&result) {
            Ok(status) => status,
            Err(refusal) => {
                stopped = Some(refusal.to_string());
                break;
            }
        };
        match status {
            "created" | "test" => tally.created += 1,
            "existing" => tally.existing += 1,
            _ => tally.failed += 1,
        }
        let code = result.as_ref().map_or("", |a| a.code.as_str());
        rows.row(&[&recipient, code.as_bytes(), status.as_bytes()]);
        if !rows.line_done(app) {
            stopped = Some("the client went away or the log failed".into());
            break;
        }
        if rows.in_batch == 0 {
            now = timefmt::now();
        }
    }
    if stopped.is_none() && !rows.send(app) {
        stopped = Some("the client went away or the log failed".into());
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        campaign = ?id,
        lines = tally.lines,
        created = tally.created,
        existing = tally.existing,
        failed = tally.failed,
        seconds,
        lines_per_second = (tally.lines as f64 / seconds.max(1e-9)) as u64,
        all_or_nothing = pledge.is_some(),
        stopped = ?stopped,
        "bulk assignment"
    );
}

/// `POST .../assignments/reclaim?void=B`.
pub async fn bulk_reclaim(app: &Arc<App>, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let auth = req.authorized();
    let void = bool_param(&query_params(&auth.parts.uri), "void")?;
    recipient_file(app, &auth)?;
    let input = stream_body(auth.body, app.config.import_bytes_max);
    let id = auth.param;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(OUTPUT_CHUNKS_QUEUED);
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut recipients = Recipients::new(input);
        let mut rows = Rows::new(&app, tx, &["recipient", "code", "status"]);
        let (mut lines, mut released) = (0u64, 0u64);
        let mut stopped = None;
        loop {
            let recipient = match recipients.next_recipient() {
                Ok(Some(r)) => r.to_vec(),
                Ok(None) => break,
                Err(e) => {
                    stopped = Some(format!("the body could not be read: {e}"));
                    break;
                }
            };
            lines += 1;
            let name = std::str::from_utf8(&recipient).unwrap_or("");
            match app.engine.reclaim(&id, name, void, timefmt::now()) {
                Ok(r) => {
                    let gone = if void { "voided" } else { "released" };
                    for code in &r.released {
                        rows.row(&[&recipient, code.as_bytes(), gone.as_bytes()]);
                    }
                    released += r.released.len() as u64;
                    for (code, state) in &r.kept {
                        let status = match state {
                            PublicState::Reserved => "kept_reserved",
                            PublicState::Redeemed => "kept_redeemed",
                            // Voided before this reclaim: it is voided.
                            _ => "voided",
                        };
                        rows.row(&[&recipient, code.as_bytes(), status.as_bytes()]);
                    }
                }
                // A name that cannot be a recipient holds no code either.
                Err(Refusal::UnknownRecipient | Refusal::InvalidRequest { .. }) => {
                    rows.row(&[&recipient, b"", b"unknown_recipient"]);
                }
                Err(other) => {
                    stopped = Some(other.to_string());
                    break;
                }
            }
            if !rows.line_done(&app) {
                stopped = Some("the client went away or the log failed".into());
                break;
            }
        }
        if stopped.is_none() && !rows.send(&app) {
            stopped = Some("the client went away or the log failed".into());
        }
        tracing::info!(campaign = ?id, lines, released, void, seconds = started.elapsed().as_secs_f64(), stopped = ?stopped, "bulk reclaim");
    });
    Ok(csv_response(rx))
}

/// `GET .../assignments?state=S`: `recipient,code,state,assigned_at`,
/// streamed, each chunk sent once the state it shows is durable.
pub fn export_assignments(app: &Arc<App>, req: RouteRequest) -> Result<Response<Body>, ApiError> {
    let params = query_params(&req.parts.uri);
    let state = state_param(&params)?;
    if app.engine.campaign(&req.param).is_none() {
        return Err(Refusal::UnknownCampaign.into());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(OUTPUT_CHUNKS_QUEUED);
    let app = app.clone();
    let id = req.param;
    tokio::task::spawn_blocking(move || {
        let campaign = app.engine.campaign(&id).expect("checked above");
        let mut rows = Rows::new(&app, tx, &["recipient", "code", "state", "assigned_at"]);
        let wanted = campaign
            .assignments()
            .filter(|(_, _, s, _)| state.is_none_or(|want| want == *s));
        for (slot, recipient, s, at) in wanted {
            let code = campaign.code_of(slot);
            let at = timefmt::format(at);
            rows.row(&[
                recipient.as_bytes(),
                code.as_bytes(),
                s.as_str().as_bytes(),
                at.as_bytes(),
            ]);
            rows.in_batch += 1;
            if rows.in_batch >= EXPORT_CHUNK_ROWS && !rows.send(&app) {
                return;
            }
        }
        rows.send(&app);
    });
    Ok(csv_response(rx))
}
