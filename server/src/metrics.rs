//! Prometheus text-format metrics: requests by route and status with
//! latency histograms, WAL commit waits and group-commit batches, and
//! per-campaign pool gauges.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

use crate::app::App;
use crate::timefmt;

/// Latency bucket upper bounds, in seconds.
const BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram over `BUCKETS_SECONDS`.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum_seconds += secs;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum_seconds += other.sum_seconds;
    }

    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in BUCKETS_SECONDS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Shards of the request table, so workers rarely contend on one lock.
const SHARDS: usize = 16;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// (route, status) -> latency histogram, in shards by thread.
    requests: Vec<Mutex<BTreeMap<(&'static str, u16), Histogram>>>,
    commit_wait: Vec<Mutex<Histogram>>,
    /// (route, API error code) -> refusals, in shards by thread. Routine
    /// refusals are counted here and logged only at debug level.
    refusals: Vec<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..SHARDS).map(|_| Mutex::default()).collect(),
            commit_wait: (0..SHARDS).map(|_| Mutex::default()).collect(),
            refusals: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn shard_index() -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // Any stable spread of threads over shards will do.
    BuildHasherDefault::<DefaultHasher>::default().hash_one(std::thread::current().id()) as usize
        % SHARDS
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests[shard_index()]
            .lock()
            .entry((route, status))
            .or_default()
            .observe(elapsed);
    }

    pub fn count_refusal(&self, route: &'static str, code: &'static str) {
        *self.refusals[shard_index()]
            .lock()
            .entry((route, code))
            .or_default() += 1;
    }

    pub fn observe_commit_wait(&self, elapsed: Duration) {
        self.commit_wait[shard_index()].lock().observe(elapsed);
    }

    /// Renders the request and commit-wait families.
    fn render(&self, out: &mut String) {
        let mut merged: BTreeMap<(&'static str, u16), Histogram> = BTreeMap::new();
        for shard in &self.requests {
            for (key, h) in shard.lock().iter() {
                merged.entry(*key).or_default().merge(h);
            }
        }
        out.push_str("# HELP redeemd_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE redeemd_requests_total counter\n");
        for ((route, status), h) in &merged {
            let _ = writeln!(
                out,
                "redeemd_requests_total{{route=\"{route}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP redeemd_request_duration_seconds Request latency, by route and status.\n",
        );
        out.push_str("# TYPE redeemd_request_duration_seconds histogram\n");
        for ((route, status), h) in &merged {
            h.write(
                out,
                "redeemd_request_duration_seconds",
                &format!("route=\"{route}\",status=\"{status}\""),
            );
        }
        let mut refusals: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for shard in &self.refusals {
            for (key, n) in shard.lock().iter() {
                *refusals.entry(*key).or_default() += n;
            }
        }
        out.push_str("# HELP redeemd_refusals_total Redemptions and assignments refused, by route and error code.\n");
        out.push_str("# TYPE redeemd_refusals_total counter\n");
        for ((route, code), n) in &refusals {
            let _ = writeln!(
                out,
                "redeemd_refusals_total{{route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP redeemd_wal_commit_wait_seconds Time a request waited for its record to be durable.\n");
        out.push_str("# TYPE redeemd_wal_commit_wait_seconds histogram\n");
        let mut commit_wait = Histogram::default();
        for shard in &self.commit_wait {
            commit_wait.merge(&shard.lock());
        }
        commit_wait.write(out, "redeemd_wal_commit_wait_seconds", "");
    }
}

/// Writes one gauge or counter family with a single unlabelled sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The whole `/metrics` page: requests, the WAL, and each campaign's pool.
pub fn exposition(app: &App) -> String {
    let mut out = String::new();
    app.metrics.render(&mut out);
    let stats = app.wal.stats();
    family(
        &mut out,
        "redeemd_wal_durable_lsn",
        "gauge",
        "Highest LSN known durable.",
        stats.durable_lsn,
    );
    family(
        &mut out,
        "redeemd_wal_last_lsn",
        "gauge",
        "Highest LSN appended.",
        stats.last_lsn,
    );
    family(
        &mut out,
        "redeemd_wal_commits_total",
        "counter",
        "Group commits.",
        stats.commits,
    );
    family(
        &mut out,
        "redeemd_wal_syncs_total",
        "counter",
        "msync calls.",
        stats.syncs,
    );
    let batch = if stats.commits == 0 {
        0.0
    } else {
        stats.durable_lsn as f64 / stats.commits as f64
    };
    family(
        &mut out,
        "redeemd_wal_records_per_commit",
        "gauge",
        "Mean records made durable per group commit.",
        batch,
    );
    pools(&mut out, app);
    crate::webhooks::metrics(&mut out, app);
    out
}

/// Codes per campaign and state, and the low-stock flags.
fn pools(out: &mut String, app: &App) {
    let now = timefmt::now();
    out.push_str("# HELP redeemd_pool_codes Codes per campaign and state.\n# TYPE redeemd_pool_codes gauge\n");
    let mut low = String::from(
        "# HELP redeemd_pool_low_stock 1 when a campaign is below its low-stock threshold.\n# TYPE redeemd_pool_low_stock gauge\n",
    );
    let mut guesses = String::from(
        "# HELP redeemd_guesses_this_minute Well-formed codes never issued that were tried under a campaign's prefix this minute.\n# TYPE redeemd_guesses_this_minute gauge\n",
    );
    let mut alerts = String::from(
        "# HELP redeemd_guessing_suspected_total guessing_suspected events a campaign raised.\n# TYPE redeemd_guessing_suspected_total counter\n",
    );
    for campaign in app.engine.campaigns() {
        let s = campaign.stats(now);
        for (state, n) in [
            ("available", s.available),
            ("assigned", s.assigned),
            ("reserved", s.reserved),
            ("redeemed", s.redeemed),
            ("voided", s.voided),
        ] {
            let _ = writeln!(
                out,
                "redeemd_pool_codes{{campaign=\"{}\",state=\"{state}\"}} {n}",
                campaign.id()
            );
        }
        let _ = writeln!(
            low,
            "redeemd_pool_low_stock{{campaign=\"{}\"}} {}",
            campaign.id(),
            u8::from(s.low_stock)
        );
        let _ = writeln!(
            guesses,
            "redeemd_guesses_this_minute{{campaign=\"{}\"}} {}",
            campaign.id(),
            campaign.guesses_this_minute(now)
        );
        let _ = writeln!(
            alerts,
            "redeemd_guessing_suspected_total{{campaign=\"{}\"}} {}",
            campaign.id(),
            campaign.guessing_alerts()
        );
    }
    out.push_str(&low);
    out.push_str(&guesses);
    out.push_str(&alerts);
}
