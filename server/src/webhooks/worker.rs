//! One subscription's delivery task: read the durable events after its
//! cursor, keep those it asked for, post them in one batch, and move the
//! cursor durably only after a 2xx. One delivery is in flight at a time,
//! in LSN order: the next starts only after the one before succeeded (a
//! failed one is retried, with what is durable by then, after a backoff).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::Write as _;

use redeem_engine::{Campaign, Lsn, Record, Timestamp, Webhook, WebhookStatus};

use super::render::{self, Filter, Verdict};
use super::{POLL_INTERVAL, Runtime, sign, tls};
use crate::app::App;
use crate::timefmt;

/// Most events in one delivery (API.md).
pub const BATCH_EVENTS_MAX: usize = 1000;
/// Most bytes of one delivery's body (API.md), unless a single event is
/// larger on its own, which then goes alone.
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// Most records read in one pass; a subscription that filters out nearly
/// everything still answers to pauses and shutdown between passes.
const SCAN_RECORDS_MAX: u64 = 10_000;
/// A receiver has this long (worker time) to answer with a 2xx.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's backoff, doubled after each failure in a row...
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Failing this long (worker time) disables a subscription.
pub const FAILING_FOR_DISABLE: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// A worker following a busy log waits this long (real time) after a
/// delivery was acknowledged before it reads for the next, unless a full
/// delivery is waiting already: a few larger deliveries cost the receiver,
/// the log (one cursor record each) and the server less than one per
/// group commit.
const BATCH_LINGER: Duration = Duration::from_millis(25);
/// Events skipped by the filter are made durable in one cursor record
/// once this many have piled up...
const SKIPPED_EVENTS_ADVANCE: u64 = 1000;
/// ...or once the oldest of them was skipped this long ago (worker time).
const SKIPPED_ADVANCE_AFTER: Duration = Duration::from_secs(5);

/// The outbound client: HTTP/1.1 over TLS for `https://` URLs and in the
/// clear for `http://` ones, no redirects followed (the legacy client
/// never follows them: a 3xx is a failure like any non-2xx).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The client of every delivery, trusting the roots of `tls`.
pub fn client(tls: rustls::ClientConfig) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(DELIVERY_TIMEOUT));
    // It only opens the TCP connection, also for `https://` URLs, which
    // it refuses by default; the TLS connector around it does the rest.
    tcp.enforce_http(false);
    // HTTP/1.1 alone, offered as such in ALPN: one delivery is one
    // request, so HTTP/2 would bring nothing but another code path.
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector)
}

/// What one pass over the log after the cursor found.
#[derive(Debug)]
enum Pass {
    /// Nothing to send; records through `through` were read (events among
    /// them, `skipped`, were filtered out).
    Nothing { through: Lsn, skipped: u64 },
    /// A delivery: its body, the LSNs it names, and how far it reaches in
    /// the log (filtered-out records after its last event included).
    Deliver {
        body: Vec<u8>,
        first: Lsn,
        last: Lsn,
        through: Lsn,
        /// The first event's time (`None` for `events_dropped`).
        first_at: Option<Timestamp>,
    },
}

/// Delivers to subscription `id` until it is deleted (or the task is
/// aborted at shutdown).
pub async fn run(app: Arc<App>, id: String, client: HttpClient) {
    let runtime = app.hooks.runtime(&id);
    // When the last delivery was acknowledged, while events kept coming.
    let mut settled: Option<Instant> = None;
    loop {
        let Some(hook) = app.engine.webhook(&id) else {
            app.hooks.remove(&id);
            return;
        };
        if hook.status != WebhookStatus::Active {
            idle(&runtime, POLL_INTERVAL).await;
            continue;
        }
        let clock = &app.hooks.clock;
        let next = runtime.progress.lock().next_attempt_at;
        if let Some(next) = next
            && clock.now() < next
        {
            idle(&runtime, clock.until(next).min(POLL_INTERVAL)).await;
            continue;
        }
        let from = runtime.progress.lock().read_from(hook.cursor);
        let durable = app.wal.durable_lsn();
        if from >= durable {
            // Skipped events wait for more to join them, but not forever.
            if skip(&app, &runtime, &hook, from, 0).await {
                continue;
            }
            // Nothing new: wait for the next durable record, a change of
            // the subscription, or the poll interval. The log answers a
            // wait for a record not appended yet at once, with an error,
            // so that wait is only for one already appended: waiting on
            // it at the log's end spun the worker, and with as many idle
            // subscriptions as runtime threads starved the whole server.
            let next = from + 1;
            let appended = app.wal.last_lsn() >= next;
            tokio::select! {
                _ = app.wal.durable(next), if appended => {}
                () = runtime.wake.notified() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            continue;
        }
        // Let the events of a few group commits gather into one delivery.
        if let Some(at) = settled.take()
            && durable - from < BATCH_EVENTS_MAX as u64
        {
            let wait = BATCH_LINGER.saturating_sub(at.elapsed());
            if !wait.is_zero() {
                idle(&runtime, wait).await;
                continue;
            }
        }
        match read_pass(&app, &hook, from, durable, &runtime.read_hint) {
            Ok(Pass::Nothing { through, skipped }) => {
                skip(&app, &runtime, &hook, through, skipped).await;
            }
            Ok(Pass::Deliver {
                body,
                first,
                last,
                through,
                first_at,
            }) => {
                let span = Span {
                    first,
                    last,
                    through,
                    first_at,
                };
                if deliver(&app, &runtime, &client, &hook, body, span).await {
                    settled = Some(Instant::now());
                }
            }
            Err(error) => {
                tracing::error!(webhook = %id, %error, "reading the log for a webhook failed");
                failed(&app, &runtime, &hook, error, None, None).await;
            }
        }
    }
}

/// Sleeps up to `d`, or until the API wakes the worker.
async fn idle(runtime: &Runtime, d: Duration) {
    tokio::select! {
        () = runtime.wake.notified() => {}
        () = tokio::time::sleep(d) => {}
    }
}

/// Reads the durable records after `from` (through `durable`, at most
/// `SCAN_RECORDS_MAX`) and gathers the first delivery's events. The
/// filter decides on a record's type before it is decoded, and on its
/// campaign before it is rendered; the events wanted are written straight
/// into the delivery's body.
fn read_pass(
    app: &App,
    hook: &Webhook,
    from: Lsn,
    durable: Lsn,
    hint: &parking_lot::Mutex<Option<redeem_wal::ReadPosition>>,
) -> Result<Pass, String> {
    let start = *hint.lock();
    let mut records = match app.wal.read_from_position(from + 1, start) {
        Ok(records) => records,
        Err(redeem_wal::ReadError::Removed { first, .. }) => {
            // Retention dropped events this subscription had not had:
            // it gets one marker in their place, and the operator hears.
            let (from_lsn, to_lsn) = (from + 1, first - 1);
            tracing::error!(
                webhook = %hook.spec.id,
                from_lsn,
                to_lsn,
                "log retention deleted events a webhook had not received; it gets events_dropped"
            );
            let mut body = Body::new(&hook.spec.id, 128);
            let at = body.begin_event();
            // Keys in byte order, as a serde_json map writes them.
            let _ = write!(
                body.out,
                "{{\"from_lsn\":{from_lsn},\"kind\":\"events_dropped\",\"to_lsn\":{to_lsn}}}"
            );
            body.end_event(at);
            return Ok(Pass::Deliver {
                body: body.finish(),
                first: from_lsn,
                last: to_lsn,
                through: to_lsn,
                first_at: None,
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let through_max = durable.min(from + SCAN_RECORDS_MAX);
    let mut filter = Filter::new(hook);
    let mut body = Body::new(&hook.spec.id, hint_capacity(&hook.spec.id));
    let (mut first, mut last, mut through, mut skipped) = (0, 0, from, 0);
    let mut first_at = None;
    while let Some(next) = records.next_record() {
        let record = next.map_err(|e| e.to_string())?;
        if record.lsn > through_max {
            break;
        }
        match filter.by_type(record.record_type) {
            Verdict::NotEvent => {}
            Verdict::Skip => skipped += 1,
            Verdict::Deliver => {
                let decoded = Record::decode(record.record_type, record.payload)
                    .map_err(|e| format!("LSN {}: {e}", record.lsn))?;
                let wanted = filter.campaign_wanted(decoded.campaign(), |n| {
                    app.engine.campaign_by_number(n).map(Campaign::id)
                });
                if !wanted {
                    skipped += 1;
                } else {
                    if body.events >= BATCH_EVENTS_MAX {
                        break;
                    }
                    let at = body.begin_event();
                    render::write_event(app, record.lsn, &decoded, &mut body.out);
                    // A single event larger than a delivery goes alone.
                    if !body.end_event(at) {
                        break;
                    }
                    if body.events == 1 {
                        first = record.lsn;
                        first_at = Some(decoded.at());
                    }
                    last = record.lsn;
                }
            }
        }
        through = record.lsn;
    }
    *hint.lock() = Some(records.position());
    if body.events == 0 {
        return Ok(Pass::Nothing { through, skipped });
    }
    Ok(Pass::Deliver {
        body: body.finish(),
        first,
        last,
        through,
        first_at,
    })
}

/// A first guess of a delivery body's size, so a full one is not grown
/// from nothing.
fn hint_capacity(id: &str) -> usize {
    id.len() + 64 * 1024
}

/// `{"webhook": id, "events": [...]}`, written as events are found.
struct Body {
    out: Vec<u8>,
    events: usize,
    /// The events' bytes, each counted with one separator.
    bytes: usize,
}

impl Body {
    fn new(id: &str, capacity: usize) -> Body {
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(b"{\"webhook\":");
        render::string(&mut out, id);
        out.extend_from_slice(b",\"events\":[");
        Body {
            out,
            events: 0,
            bytes: 0,
        }
    }

    /// Starts an event; returns where it starts.
    fn begin_event(&mut self) -> usize {
        let at = self.out.len();
        if self.events > 0 {
            self.out.push(b',');
        }
        at
    }

    /// Keeps the event started at `at` if it fits the delivery (the first
    /// always does), or takes it back out; true when kept.
    fn end_event(&mut self, at: usize) -> bool {
        let len = self.out.len() - at - usize::from(self.events > 0);
        if self.events > 0 && self.bytes + len + 1 > BATCH_BYTES_MAX {
            self.out.truncate(at);
            return false;
        }
        self.bytes += len + 1;
        self.events += 1;
        true
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

/// Remembers records read with nothing to deliver, and makes the skip
/// durable in one cursor record once enough filtered-out events (not mere
/// bookkeeping records, such as cursor records themselves) piled up, or
/// the oldest waited long enough; true when it did.
async fn skip(app: &App, runtime: &Runtime, hook: &Webhook, through: Lsn, skipped: u64) -> bool {
    let now = app.hooks.clock.now();
    let due = {
        let mut p = runtime.progress.lock();
        let (events, since) = match p.skipped {
            // The wait starts with the first skipped event, not with a
            // pass over bookkeeping records.
            Some((base, _, events, since)) if base == hook.cursor && events > 0 => {
                (events + skipped, since)
            }
            _ => (skipped, now),
        };
        p.skipped = Some((hook.cursor, through, events, since));
        events > 0
            && (events >= SKIPPED_EVENTS_ADVANCE
                || now.0.saturating_sub(since.0) >= SKIPPED_ADVANCE_AFTER.as_millis() as u64)
    };
    if due {
        advance(app, hook, through).await;
    }
    due
}

/// Moves the cursor durably from where `hook` had it to `through`.
async fn advance(app: &App, hook: &Webhook, through: Lsn) {
    match app
        .engine
        .advance_webhook(&hook.spec.id, hook.cursor, through, timefmt::now())
    {
        Ok(Some(lsn)) => {
            if let Err(e) = app.durable(lsn).await {
                tracing::error!(webhook = %hook.spec.id, error = %e, "a webhook cursor did not become durable");
            }
        }
        // Rewound or changed meanwhile: the next pass starts from there.
        Ok(None) => {}
        Err(e) => {
            tracing::error!(webhook = %hook.spec.id, error = %e, "a webhook cursor was not recorded");
            // The log is failing: do not spin on it.
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// What a delivery covers.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// The LSNs of its first and last event.
    first: Lsn,
    last: Lsn,
    /// Where the cursor goes once it is acknowledged.
    through: Lsn,
    /// The time of its first event, if it has one from the log.
    first_at: Option<Timestamp>,
}

/// Posts one delivery and settles it: cursor forward on a 2xx (then true),
/// backoff or disabling otherwise.
async fn deliver(
    app: &App,
    runtime: &Runtime,
    client: &HttpClient,
    hook: &Webhook,
    body: Vec<u8>,
    span: Span,
) -> bool {
    let Span {
        first,
        last,
        through,
        first_at,
    } = span;
    let clock = &app.hooks.clock;
    let t = clock.now().0 / 1000;
    let signature = sign::signature(&hook.spec.secret, t, &body);
    let request = http::Request::post(hook.spec.url.as_str())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("redeemd-webhook-id", hook.spec.id.as_str())
        .header("redeemd-delivery", format!("{first}-{last}"))
        .header("redeemd-signature", signature)
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let error = format!("bad request: {e}");
            failed(app, runtime, hook, error, None, first_at).await;
            return false;
        }
    };
    let start = Instant::now();
    let answer =
        tokio::time::timeout(clock.timeout(DELIVERY_TIMEOUT), client.request(request)).await;
    let elapsed = start.elapsed();
    runtime.progress.lock().latency.observe(elapsed);
    let status = match answer {
        Err(_) => {
            let error = format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs());
            failed(app, runtime, hook, error, None, first_at).await;
            return false;
        }
        Ok(Err(e)) => {
            // A TLS failure (an untrusted certificate, say) is a failed
            // delivery like any other, backed off and retried as usual.
            let error = tls::describe(&e);
            failed(app, runtime, hook, error, None, first_at).await;
            return false;
        }
        Ok(Ok(response)) => response.status().as_u16(),
    };
    if (200..300).contains(&status) {
        advance(app, hook, through).await;
        let mut p = runtime.progress.lock();
        p.deliveries_total += 1;
        p.last_delivery_at = Some(timefmt::now());
        p.last_error = None;
        p.next_attempt_at = None;
        p.consecutive_failures = 0;
        p.failing_since = None;
        p.skipped = None;
        return true;
    }
    let error = format!("the receiver answered {status}");
    failed(app, runtime, hook, error, Some(status), first_at).await;
    false
}

/// Counts a failure and backs off; disables the subscription on a `410`
/// or after three days of failing.
///
/// The three days count from when the failing delivery's first event was
/// written, or from the subscription's last fresh start (an acknowledged
/// delivery, a resume, a new url, a rewind) when that is later: both are
/// in the log, so a restart does not start the three days again. Without
/// a first event (`events_dropped`, a log that cannot be read) they count
/// from the first failure.
async fn failed(
    app: &App,
    runtime: &Runtime,
    hook: &Webhook,
    error: String,
    status: Option<u16>,
    first_at: Option<Timestamp>,
) {
    let clock = &app.hooks.clock;
    let now = clock.now();
    let disable = {
        let mut p = runtime.progress.lock();
        p.failures_total += 1;
        p.consecutive_failures = p.consecutive_failures.saturating_add(1);
        let since = *p.failing_since.get_or_insert_with(|| match first_at {
            Some(at) => at.max(hook.delivery_since),
            None => timefmt::now(),
        });
        let doublings = p.consecutive_failures.saturating_sub(1).min(20);
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX);
        p.next_attempt_at = Some(Timestamp(now.0 + backoff.as_millis() as u64));
        p.last_error = Some(error.clone());
        if status == Some(410) {
            Some("the receiver answered 410 Gone".to_owned())
        } else if clock.since(since) >= FAILING_FOR_DISABLE {
            Some(format!(
                "deliveries failed for 3 days (since {}); last error: {error}",
                timefmt::format(since)
            ))
        } else {
            None
        }
    };
    tracing::warn!(webhook = %hook.spec.id, %error, "a webhook delivery failed");
    let Some(reason) = disable else {
        return;
    };
    match app
        .engine
        .disable_webhook(&hook.spec.id, hook.cursor, &reason, timefmt::now())
    {
        Ok(Some(lsn)) => {
            tracing::warn!(webhook = %hook.spec.id, %reason, "webhook disabled");
            let _ = app.durable(lsn).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(webhook = %hook.spec.id, error = %e, "disabling a webhook failed")
        }
    }
}
