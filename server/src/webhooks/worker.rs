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
use redeem_engine::{Lsn, Record, Timestamp, Webhook, WebhookStatus};
use serde_json::Value;

use super::{POLL_INTERVAL, Runtime, sign, tls};
use crate::app::App;
use crate::routes::events::event_line;
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
    },
}

/// Delivers to subscription `id` until it is deleted (or the task is
/// aborted at shutdown).
pub async fn run(app: Arc<App>, id: String, client: HttpClient) {
    let runtime = app.hooks.runtime(&id);
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
        match read_pass(&app, &hook, from, durable, &runtime.read_hint) {
            Ok(Pass::Nothing { through, skipped }) => {
                skip(&app, &runtime, &hook, through, skipped).await;
            }
            Ok(Pass::Deliver {
                body,
                first,
                last,
                through,
            }) => {
                deliver(&app, &runtime, &client, &hook, body, (first, last), through).await;
            }
            Err(error) => {
                tracing::error!(webhook = %id, %error, "reading the log for a webhook failed");
                failed(&app, &runtime, &hook, error, None).await;
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
/// `SCAN_RECORDS_MAX`) and gathers the first delivery's events.
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
            let marker = serde_json::json!({
                "kind": "events_dropped",
                "from_lsn": from_lsn,
                "to_lsn": to_lsn,
            });
            let event = serde_json::to_vec(&marker).expect("serializes");
            return Ok(Pass::Deliver {
                body: body(&hook.spec.id, &[event]),
                first: from_lsn,
                last: to_lsn,
                through: to_lsn,
            });
        }
        Err(e) => return Err(e.to_string()),
    };
    let through_max = durable.min(from + SCAN_RECORDS_MAX);
    let mut events: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    let (mut first, mut last, mut through, mut skipped) = (0, 0, from, 0);
    while let Some(next) = records.next_record() {
        let record = next.map_err(|e| e.to_string())?;
        if record.lsn > through_max {
            break;
        }
        let decoded = Record::decode(record.record_type, record.payload)
            .map_err(|e| format!("LSN {}: {e}", record.lsn))?;
        if let Some(line) = event_line(app, record.lsn, &decoded) {
            if wanted(hook, &line) {
                // Rendered as `/v1/events` renders its lines.
                let event = serde_json::to_vec(&line).expect("serializes");
                if !events.is_empty()
                    && (events.len() >= BATCH_EVENTS_MAX
                        || bytes + event.len() + 1 > BATCH_BYTES_MAX)
                {
                    break;
                }
                bytes += event.len() + 1;
                if events.is_empty() {
                    first = record.lsn;
                }
                last = record.lsn;
                events.push(event);
            } else {
                skipped += 1;
            }
        }
        through = record.lsn;
    }
    *hint.lock() = Some(records.position());
    if events.is_empty() {
        return Ok(Pass::Nothing { through, skipped });
    }
    Ok(Pass::Deliver {
        body: body(&hook.spec.id, &events),
        first,
        last,
        through,
    })
}

/// Whether the subscription asked for this event: its kind, and its
/// campaign when the subscription names campaigns (an event of no
/// campaign then does not match).
fn wanted(hook: &Webhook, event: &Value) -> bool {
    let kind = event["kind"].as_str().unwrap_or("");
    let kinds = &hook.spec.events;
    if !kinds.iter().any(|k| k == "*" || k == kind) {
        return false;
    }
    let campaigns = &hook.spec.campaigns;
    campaigns.is_empty()
        || event["campaign"]
            .as_str()
            .is_some_and(|c| campaigns.iter().any(|w| w == c))
}

/// `{"webhook": id, "events": [...]}` from rendered events.
fn body(id: &str, events: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"webhook\":");
    out.extend_from_slice(&serde_json::to_vec(id).expect("serializes"));
    out.extend_from_slice(b",\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.extend_from_slice(b"]}");
    out
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

/// Posts one delivery and settles it: cursor forward on a 2xx, backoff or
/// disabling otherwise.
async fn deliver(
    app: &App,
    runtime: &Runtime,
    client: &HttpClient,
    hook: &Webhook,
    body: Vec<u8>,
    (first, last): (Lsn, Lsn),
    through: Lsn,
) {
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
        Err(e) => return failed(app, runtime, hook, format!("bad request: {e}"), None).await,
    };
    let start = Instant::now();
    let answer =
        tokio::time::timeout(clock.timeout(DELIVERY_TIMEOUT), client.request(request)).await;
    let elapsed = start.elapsed();
    runtime.progress.lock().latency.observe(elapsed);
    let status = match answer {
        Err(_) => {
            let error = format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs());
            return failed(app, runtime, hook, error, None).await;
        }
        Ok(Err(e)) => {
            // A TLS failure (an untrusted certificate, say) is a failed
            // delivery like any other, backed off and retried as usual.
            let error = tls::describe(&e);
            return failed(app, runtime, hook, error, None).await;
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
        return;
    }
    let error = format!("the receiver answered {status}");
    failed(app, runtime, hook, error, Some(status)).await;
}

/// Counts a failure and backs off; disables the subscription on a `410`
/// or after three days of failing.
async fn failed(app: &App, runtime: &Runtime, hook: &Webhook, error: String, status: Option<u16>) {
    let clock = &app.hooks.clock;
    let now = clock.now();
    let disable = {
        let mut p = runtime.progress.lock();
        p.failures_total += 1;
        p.consecutive_failures = p.consecutive_failures.saturating_add(1);
        let since = *p.failing_since.get_or_insert(now);
        let doublings = p.consecutive_failures.saturating_sub(1).min(20);
        let backoff = BACKOFF_FIRST
            .saturating_mul(1 << doublings)
            .min(BACKOFF_MAX);
        p.next_attempt_at = Some(Timestamp(now.0 + backoff.as_millis() as u64));
        p.last_error = Some(error.clone());
        if status == Some(410) {
            Some("the receiver answered 410 Gone".to_owned())
        } else if now.0.saturating_sub(since.0) >= FAILING_FOR_DISABLE.as_millis() as u64 {
            Some(format!("deliveries failed for 3 days; last error: {error}"))
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
