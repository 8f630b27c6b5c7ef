//! Webhook delivery (API.md "Webhooks"). The subscriptions themselves
//! (settings, secret, cursor, status) are engine state built from records;
//! this module keeps what need not survive a restart (failure counts, the
//! last error, the backoff, metrics) and runs one delivery task per
//! subscription (`worker`), supervised by `supervise`.
//!
//! Delivery never touches the redemption path: a worker only reads the
//! durable log and appends a small cursor record after a delivery the
//! receiver acknowledged, and it never holds an engine lock across I/O.
//!
//! # Layout
//! - `clock`: the workers' clock, which a hidden test flag speeds up.
//! - `render`: a subscription's filter (on a record's type, then its
//!   campaign) and its events written straight into a delivery's body.
//! - `sign`: `Redeemd-Signature`, HMAC-SHA256 over `"<t>.<body>"`.
//! - `tls`: the trusted roots of `https://` deliveries, and TLS failures
//!   in words.
//! - `worker`: reading, filtering, batching, posting, backing off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redeem_engine::{Lsn, Timestamp};

use crate::app::App;
use crate::metrics::Histogram;

pub mod clock;
pub mod render;
pub mod sign;
pub mod tls;
pub mod worker;

pub use clock::Clock;

/// Every subscription id starts with it.
pub const ID_PREFIX: &str = "wh_";
/// Every signing secret starts with it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes of an id (hex-encoded after the prefix).
const ID_RANDOM_BYTES: usize = 12;
/// Random bytes of a secret.
const SECRET_RANDOM_BYTES: usize = 32;
/// How often the supervisor looks for subscriptions without a worker, and
/// how long an idle worker sleeps before looking at its subscription again
/// (a change through the API wakes it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The event kinds of API.md a subscription may ask for, and `*`.
pub const EVENT_KINDS: &[&str] = &[
    "campaign_created",
    "campaign_updated",
    "codes_added",
    "assigned",
    "unassigned",
    "reserved",
    "released",
    "redeemed",
    "rolled_back",
    "voided",
    "low_stock",
    "guessing_suspected",
    "webhook_disabled",
];

/// What the server knows about one subscription's deliveries that the log
/// does not keep. Lost on a restart: a subscription then starts with a
/// clean slate, except that its three days of failure count from times in
/// the log (see `worker::failed`), so they go on.
#[derive(Debug, Default)]
pub struct Progress {
    pub last_delivery_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// When the next attempt may start, while backing off.
    pub next_attempt_at: Option<Timestamp>,
    pub consecutive_failures: u32,
    /// The wall-clock time the failures in a row count from (the clock's
    /// `since` measures it).
    pub failing_since: Option<Timestamp>,
    /// Records after the durable cursor the worker already read and found
    /// nothing to deliver in: `(cursor it was read from, read through,
    /// events skipped, worker time of the first skip)`. Valid while the
    /// durable cursor is still the one it was read from.
    pub skipped: Option<(Lsn, Lsn, u64, Timestamp)>,
    pub deliveries_total: u64,
    pub failures_total: u64,
    /// Time from sending a delivery to its answer, successful or not.
    pub latency: Histogram,
}

impl Progress {
    /// The position reading goes on from, for a durable cursor `cursor`.
    pub fn read_from(&self, cursor: Lsn) -> Lsn {
        match self.skipped {
            Some((base, through, ..)) if base == cursor => through,
            _ => cursor,
        }
    }
}

/// One subscription's runtime state and its wake-up.
#[derive(Debug, Default)]
pub struct Runtime {
    pub progress: Mutex<Progress>,
    /// Woken by the API when the subscription changes (resume, rewind).
    pub wake: tokio::sync::Notify,
    /// Where the last pass stopped reading the log, so the next one starts
    /// there instead of walking its segment from the first frame: a
    /// follower at the log's end reads again at every group commit.
    pub read_hint: Mutex<Option<redeem_wal::ReadPosition>>,
}

/// The runtime state of every subscription, and the workers' clock.
#[derive(Debug)]
pub struct Registry {
    by_id: Mutex<HashMap<String, Arc<Runtime>>>,
    pub clock: Clock,
    /// Wakes the supervisor when a subscription is created.
    created: tokio::sync::Notify,
}

impl Registry {
    pub fn new(clock: Clock) -> Registry {
        Registry {
            by_id: Mutex::default(),
            clock,
            created: tokio::sync::Notify::new(),
        }
    }

    /// The subscription's runtime state, created on first use.
    pub fn runtime(&self, id: &str) -> Arc<Runtime> {
        self.by_id.lock().entry(id.to_owned()).or_default().clone()
    }

    /// Forgets a deleted subscription.
    pub fn remove(&self, id: &str) {
        self.by_id.lock().remove(id);
    }

    /// Clears the backoff and failures after an operator resumed or rewound
    /// a subscription, and wakes its worker.
    pub fn reset(&self, id: &str) {
        let runtime = self.runtime(id);
        {
            let mut p = runtime.progress.lock();
            p.next_attempt_at = None;
            p.consecutive_failures = 0;
            p.failing_since = None;
            p.skipped = None;
        }
        runtime.wake.notify_one();
    }

    /// Tells the supervisor a subscription was created.
    pub fn created(&self) {
        self.created.notify_one();
    }
}

/// A new subscription id: the prefix and 96 random bits in hex.
pub fn new_id() -> Result<String, getrandom::Error> {
    random_token(ID_PREFIX, ID_RANDOM_BYTES)
}

/// A new signing secret: the prefix and 256 random bits in hex.
pub fn new_secret() -> Result<String, getrandom::Error> {
    random_token(SECRET_PREFIX, SECRET_RANDOM_BYTES)
}

fn random_token(prefix: &str, bytes: usize) -> Result<String, getrandom::Error> {
    let mut random = vec![0u8; bytes];
    getrandom::fill(&mut random)?;
    let mut out = String::with_capacity(prefix.len() + 2 * bytes);
    out.push_str(prefix);
    for b in random {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

/// Why a `url` is refused, or `None` when it may be delivered to.
/// `https` goes to any host; plain `http`, which anyone on the path can
/// read and change, to loopback hosts only, unless `--webhook-allow-http`.
pub fn url_problem(url: &str, allow_http: bool) -> Option<String> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some("url must be an absolute http:// or https:// URL".into());
    };
    let Some(host) = uri.host() else {
        return Some("url must name a host".into());
    };
    // Credentials in the URL would be sent in the clear to whatever the
    // URL names, and shown by every read of the subscription.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Some("url must not carry user information".into());
    }
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback || allow_http {
                None
            } else {
                Some("plain http:// is allowed only to loopback hosts unless the server runs with --webhook-allow-http".into())
            }
        }
        _ => Some("url must start with http:// or https://".into()),
    }
}

/// Starts a worker for every subscription that has none, until aborted.
/// Workers end by themselves when their subscription is deleted. They
/// share one client, and so its pool of connections, made with `tls`.
pub async fn supervise(app: Arc<App>, workers: Workers, tls: rustls::ClientConfig) {
    let client = worker::client(tls);
    loop {
        {
            let mut tasks = workers.0.lock();
            tasks.retain(|_, handle| !handle.is_finished());
            for hook in app.engine.webhooks() {
                let id = hook.spec.id;
                if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(id.clone()) {
                    slot.insert(tokio::spawn(worker::run(app.clone(), id, client.clone())));
                }
            }
        }
        tokio::select! {
            () = app.hooks.created.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The delivery tasks by subscription id, shared between the supervisor
/// that starts them and the shutdown that stops them.
#[derive(Debug, Clone, Default)]
pub struct Workers(Arc<Mutex<HashMap<String, tokio::task::JoinHandle<()>>>>);

impl Workers {
    /// Aborts every delivery task and waits until each has ended, so none
    /// holds the state when the log closes. A delivery cut off here is
    /// sent again after the restart (its cursor did not move).
    pub async fn stop(&self) {
        let tasks: Vec<_> = self.0.lock().drain().map(|(_, t)| t).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Records after a subscription's cursor that are durable: its lag, in
/// log records (a record that is no event counts too, so this is an upper
/// bound of the events still to deliver).
pub fn lag_records(app: &App, cursor: Lsn, progress: &Progress) -> u64 {
    app.wal
        .durable_lsn()
        .saturating_sub(progress.read_from(cursor))
}

/// The `/metrics` families of the subscriptions.
pub fn metrics(out: &mut String, app: &App) {
    use std::fmt::Write;
    let hooks = app.engine.webhooks();
    let mut deliveries = String::from(
        "# HELP redeemd_webhook_deliveries_total Deliveries a receiver acknowledged with a 2xx.\n# TYPE redeemd_webhook_deliveries_total counter\n",
    );
    let mut failures = String::from(
        "# HELP redeemd_webhook_failures_total Deliveries that failed (no 2xx within the timeout).\n# TYPE redeemd_webhook_failures_total counter\n",
    );
    let mut lag = String::from(
        "# HELP redeemd_webhook_lag_events Durable log records after a webhook's cursor.\n# TYPE redeemd_webhook_lag_events gauge\n",
    );
    let mut latency = String::from(
        "# HELP redeemd_webhook_delivery_seconds Time from sending a delivery to its answer.\n# TYPE redeemd_webhook_delivery_seconds histogram\n",
    );
    for hook in hooks {
        let id = &hook.spec.id;
        let runtime = app.hooks.runtime(id);
        let p = runtime.progress.lock();
        let label = format!("webhook=\"{id}\"");
        let _ = writeln!(
            deliveries,
            "redeemd_webhook_deliveries_total{{{label}}} {}",
            p.deliveries_total
        );
        let _ = writeln!(
            failures,
            "redeemd_webhook_failures_total{{{label}}} {}",
            p.failures_total
        );
        let _ = writeln!(
            lag,
            "redeemd_webhook_lag_events{{{label}}} {}",
            lag_records(app, hook.cursor, &p)
        );
        p.latency
            .write(&mut latency, "redeemd_webhook_delivery_seconds", &label);
    }
    out.push_str(&deliveries);
    out.push_str(&failures);
    out.push_str(&lag);
    out.push_str(&latency);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, allow_http: bool, ok: bool) {
        assert_eq!(url_problem(url, allow_http).is_none(), ok, "{url}");
    }

    #[test]
    fn urls_are_https_anywhere_and_http_to_loopback_unless_allowed() {
        check("http://127.0.0.1:8080/hook", false, true);
        check("http://localhost/hook", false, true);
        check("http://[::1]:9/x", false, true);
        check("http://example.com/hook", false, false);
        check("http://example.com/hook", true, true);
        check("https://example.com/hook", false, true);
        check("https://127.0.0.1:8443/hook", false, true);
        check("https://user:pw@example.com/", true, false);
        check("ftp://example.com/", true, false);
        check("/relative", true, false);
        check("http://user:pw@127.0.0.1/", true, false);
    }

    #[test]
    fn ids_and_secrets_carry_their_prefix_and_randomness() {
        let (a, b) = (new_id().unwrap(), new_id().unwrap());
        assert!(a.starts_with(ID_PREFIX) && a.len() == ID_PREFIX.len() + 24);
        assert_ne!(a, b);
        let s = new_secret().unwrap();
        assert!(s.starts_with(SECRET_PREFIX) && s.len() == SECRET_PREFIX.len() + 64);
    }
}
