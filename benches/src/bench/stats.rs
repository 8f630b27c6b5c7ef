//! What a run measures: latency histograms per request kind and per
//! operation, outcome counts, throughput per second, and the per-code
//! bookkeeping the audit checks.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, from 1 µs to this.
const LATENCY_US_MAX: u64 = 100_000_000;
/// Significant figures kept by every histogram.
const LATENCY_SIGFIG: u8 = 3;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG).expect("valid bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One kind of request a scenario sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Redeem,
    Lookup,
    Assign,
    Reserve,
    Confirm,
    Release,
    /// The second send of a request with the same Idempotency-Key.
    Replay,
}

pub const KINDS: usize = 7;

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Redeem => "redeem",
            Kind::Lookup => "lookup",
            Kind::Assign => "assign",
            Kind::Reserve => "reserve",
            Kind::Confirm => "confirm",
            Kind::Release => "release",
            Kind::Replay => "replay",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How an answer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The operation's effect happened (a code was redeemed).
    Success,
    /// A correct answer that is not a redemption (a lookup, a release, the
    /// loser of a race in `hot`).
    Expected,
    /// A 4xx (or a baseline's refusal) the scenario should never see.
    Unexpected,
    /// A 5xx, or a database error from a baseline: a bug or a failing disk.
    Server,
    /// No answer: connect, I/O or timeout failure. The effect is unknown.
    Transport,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Success => "ok",
            Class::Expected => "expected",
            Class::Unexpected => "UNEXPECTED",
            Class::Server => "SERVER ERROR",
            Class::Transport => "NO ANSWER",
        }
    }

    pub fn is_error(self) -> bool {
        matches!(self, Class::Unexpected | Class::Server | Class::Transport)
    }
}

/// Answers of one kind, status and error code.
#[derive(Clone, Debug)]
pub struct OutcomeRow {
    pub kind: Kind,
    /// HTTP status; 0 for a baseline, which has none.
    pub status: u16,
    /// The API error code (`already_redeemed`), `""` for a success.
    pub code: Box<str>,
    pub class: Class,
    /// Answers to requests sent after the warm-up.
    pub measured: u64,
    /// Answers to requests sent during the warm-up.
    pub warmup: u64,
}

/// Counters read by the progress line and the stop logic, shared by all
/// connections.
pub struct Live {
    /// Operations finished, warm-up included.
    pub done: AtomicU64,
    /// Answers that are errors (see [`Class::is_error`]).
    pub errors: AtomicU64,
}

/// Per-code bookkeeping for the audit, indexed like the plan's codes.
pub struct Tracking {
    /// Successful redemptions the harness saw per code.
    pub successes: Vec<AtomicU32>,
    /// 1 when a redemption of the code got no answer, so its effect is unknown.
    pub unknown: Vec<AtomicU8>,
    /// 1 when a redemption of the code was attempted.
    pub attempted: Vec<AtomicU8>,
    /// Replays whose answer differed from the first answer.
    pub replay_mismatches: AtomicU64,
    /// Replays that lacked `Idempotent-Replayed: true`.
    pub replay_unmarked: AtomicU64,
    /// Funnel: assignments acknowledged (a fresh code for a new recipient).
    pub assigned: AtomicU64,
    /// Funnel: reservations acknowledged.
    pub reserved: AtomicU64,
    /// Funnel: releases acknowledged.
    pub released: AtomicU64,
    /// Funnel: assign, reserve, confirm or release requests without an
    /// answer; each may have moved one code between states.
    pub funnel_lost: AtomicU64,
}

impl Tracking {
    pub fn new(codes: usize) -> Self {
        Tracking {
            successes: (0..codes).map(|_| AtomicU32::new(0)).collect(),
            unknown: (0..codes).map(|_| AtomicU8::new(0)).collect(),
            attempted: (0..codes).map(|_| AtomicU8::new(0)).collect(),
            replay_mismatches: AtomicU64::new(0),
            replay_unmarked: AtomicU64::new(0),
            assigned: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            released: AtomicU64::new(0),
            funnel_lost: AtomicU64::new(0),
        }
    }

    // Relaxed everywhere: the counters are read after every worker task
    // has been joined, which orders all their writes before the reads.
    pub fn attempt(&self, idx: u32) {
        self.attempted[idx as usize].store(1, Ordering::Relaxed);
    }

    pub fn success(&self, idx: u32) {
        self.successes[idx as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn unknown(&self, idx: u32) {
        self.unknown[idx as usize].store(1, Ordering::Relaxed);
    }
}

/// One connection's measurements; merged into a [`Summary`] at the end.
pub struct Recorder {
    t0: Instant,
    measure_from: Instant,
    /// Every measured request, all kinds.
    pub all: Histogram<u64>,
    /// Measured requests per kind, created on a kind's first request.
    pub per_kind: [Option<Histogram<u64>>; KINDS],
    /// Measured operations, from their (scheduled) start to their last answer.
    pub ops: Histogram<u64>,
    /// Open loop only: how late each operation was sent after its slot.
    pub send_lag: Histogram<u64>,
    pub outcomes: Vec<OutcomeRow>,
    /// Operations finished per second since the start, warm-up included.
    pub series_ops: Vec<u64>,
    /// Error answers per second since the start.
    pub series_errors: Vec<u64>,
    pub ops_measured: u64,
    pub requests_measured: u64,
    /// When the last measured operation finished.
    pub last_end: Option<Instant>,
}

impl Recorder {
    pub fn new(t0: Instant, measure_from: Instant) -> Self {
        Recorder {
            t0,
            measure_from,
            all: histogram(),
            per_kind: Default::default(),
            ops: histogram(),
            send_lag: histogram(),
            outcomes: Vec::new(),
            series_ops: Vec::new(),
            series_errors: Vec::new(),
            ops_measured: 0,
            requests_measured: 0,
            last_end: None,
        }
    }

    pub fn measured(&self, scheduled: Instant) -> bool {
        scheduled >= self.measure_from
    }

    /// Records one answered (or failed) request. `op_start` is when the
    /// operation it belongs to was due, which decides warm-up or not;
    /// `start` is when this request was due (the same for the first
    /// request of an operation, so open-loop latency includes queueing).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        live: &Live,
        op_start: Instant,
        kind: Kind,
        start: Instant,
        end: Instant,
        status: u16,
        code: &str,
        class: Class,
    ) {
        let measured = self.measured(op_start);
        if measured {
            let us = micros(end.saturating_duration_since(start));
            self.all.saturating_record(us);
            self.per_kind[kind.index()]
                .get_or_insert_with(histogram)
                .saturating_record(us);
            self.requests_measured += 1;
        }
        let row = match self
            .outcomes
            .iter_mut()
            .find(|r| r.kind == kind && r.status == status && &*r.code == code)
        {
            Some(row) => row,
            None => {
                self.outcomes.push(OutcomeRow {
                    kind,
                    status,
                    code: code.into(),
                    class,
                    measured: 0,
                    warmup: 0,
                });
                self.outcomes.last_mut().expect("just pushed")
            }
        };
        if measured {
            row.measured += 1;
        } else {
            row.warmup += 1;
        }
        if class.is_error() {
            live.errors.fetch_add(1, Ordering::Relaxed);
            let second = self.second(end);
            bump(&mut self.series_errors, second);
        }
    }

    /// Records a finished operation.
    pub fn op(&mut self, live: &Live, scheduled: Instant, end: Instant) {
        if self.measured(scheduled) {
            self.ops
                .saturating_record(micros(end.saturating_duration_since(scheduled)));
            self.ops_measured += 1;
            self.last_end = Some(self.last_end.map_or(end, |l| l.max(end)));
        }
        live.done.fetch_add(1, Ordering::Relaxed);
        let second = self.second(end);
        bump(&mut self.series_ops, second);
    }

    fn second(&self, at: Instant) -> usize {
        at.saturating_duration_since(self.t0).as_secs() as usize
    }
}

fn bump(series: &mut Vec<u64>, second: usize) {
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] += 1;
}

/// Everything measured in a run, merged over connections.
pub struct Summary {
    pub all: Histogram<u64>,
    /// Kinds that had measured requests, in [`Kind`] order.
    pub per_kind: Vec<(Kind, Histogram<u64>)>,
    pub ops: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    pub outcomes: Vec<OutcomeRow>,
    pub series_ops: Vec<u64>,
    pub series_errors: Vec<u64>,
    pub ops_measured: u64,
    pub requests_measured: u64,
    /// From the end of the warm-up to the last measured answer.
    pub measured_seconds: f64,
}

impl Summary {
    pub fn merge(recorders: Vec<Recorder>, measure_from: Instant) -> Summary {
        let mut all = histogram();
        let mut per_kind: Vec<Histogram<u64>> = (0..KINDS).map(|_| histogram()).collect();
        let mut ops = histogram();
        let mut send_lag = histogram();
        let mut outcomes: Vec<OutcomeRow> = Vec::new();
        let mut series_ops = Vec::new();
        let mut series_errors = Vec::new();
        let mut ops_measured = 0;
        let mut requests_measured = 0;
        let mut last_end: Option<Instant> = None;
        for r in recorders {
            all.add(&r.all).expect("same bounds");
            for (sum, h) in per_kind.iter_mut().zip(&r.per_kind) {
                if let Some(h) = h {
                    sum.add(h).expect("same bounds");
                }
            }
            ops.add(&r.ops).expect("same bounds");
            send_lag.add(&r.send_lag).expect("same bounds");
            for row in r.outcomes {
                match outcomes
                    .iter_mut()
                    .find(|o| o.kind == row.kind && o.status == row.status && o.code == row.code)
                {
                    Some(o) => {
                        o.measured += row.measured;
                        o.warmup += row.warmup;
                    }
                    None => outcomes.push(row),
                }
            }
            add_series(&mut series_ops, &r.series_ops);
            add_series(&mut series_errors, &r.series_errors);
            ops_measured += r.ops_measured;
            requests_measured += r.requests_measured;
            last_end = match (last_end, r.last_end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        outcomes.sort_by(|a, b| {
            (a.kind, a.class, a.status, &a.code).cmp(&(b.kind, b.class, b.status, &b.code))
        });
        let per_kind = [
            Kind::Redeem,
            Kind::Lookup,
            Kind::Assign,
            Kind::Reserve,
            Kind::Confirm,
            Kind::Release,
            Kind::Replay,
        ]
        .into_iter()
        .zip(per_kind)
        .filter(|(_, h)| !h.is_empty())
        .collect();
        let measured_seconds = last_end.map_or(0.0, |end| {
            end.saturating_duration_since(measure_from).as_secs_f64()
        });
        series_errors.resize(series_ops.len().max(series_errors.len()), 0);
        series_ops.resize(series_errors.len(), 0);
        Summary {
            all,
            per_kind,
            ops,
            send_lag,
            outcomes,
            series_ops,
            series_errors,
            ops_measured,
            requests_measured,
            measured_seconds,
        }
    }

    pub fn ops_per_second(&self) -> f64 {
        rate(self.ops_measured, self.measured_seconds)
    }

    pub fn requests_per_second(&self) -> f64 {
        rate(self.requests_measured, self.measured_seconds)
    }

    /// Answers of a class over the whole run, warm-up included.
    pub fn count_class(&self, pred: impl Fn(&OutcomeRow) -> bool) -> u64 {
        self.outcomes
            .iter()
            .filter(|o| pred(o))
            .map(|o| o.measured + o.warmup)
            .sum()
    }
}

fn rate(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

fn add_series(sum: &mut Vec<u64>, add: &[u64]) {
    if sum.len() < add.len() {
        sum.resize(add.len(), 0);
    }
    for (s, a) in sum.iter_mut().zip(add) {
        *s += a;
    }
}

/// The percentiles every table and report shows.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.50, "p50"),
    (0.90, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (1.0, "max"),
];

pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let us = if q >= 1.0 {
        h.max()
    } else {
        h.value_at_quantile(q)
    };
    us as f64 / 1000.0
}
