//! What a run drives: redeemd over HTTP, or one of two textbook
//! baselines (a PostgreSQL table, a Redis set with a Lua script) loaded
//! with the same number of codes.
//!
//! Each target implements [`Target`] (set up, connect, read back what it
//! stored, clean up) and hands out [`Connection`]s that perform the
//! operations, so the driver and the audit are generic over the target;
//! the bench's `run_target` is the one place the three are told apart.
//!
//! The two baselines run every scenario but `bulk` through one shared
//! flow ([`execute_baseline`]) over the [`Ops`] each implements: one
//! statement or function call (PostgreSQL) or one Lua script (Redis) per
//! API call redeemd would answer, each durable before it returns.
//!
//! # Layout
//! - `redeemd`: the HTTP API, every scenario.
//! - `postgres`: a codes table, a reservations table and an idempotency
//!   table; one statement or PL/pgSQL call per API call, synchronous commit.
//! - `redis`: a set and hashes, one Lua script per API call,
//!   `appendfsync always`.

pub mod postgres;
pub mod redeemd;
pub mod redis;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::driver::Ctx;
use crate::plan::{Rng, Scenario, Work};
use crate::stats::{Class, Kind, Recorder};

/// Pause after a transport error, so a dead server is not spun on.
const TRANSPORT_PAUSE: Duration = Duration::from_millis(10);

pub async fn transport_pause() {
    tokio::time::sleep(TRANSPORT_PAUSE).await;
}

/// What the server says it redeemed, for the audit.
pub struct ServerState {
    pub redeemed: u64,
    pub redeemed_codes: Vec<String>,
    /// Where `redeemed` came from, for the report.
    pub source: String,
    /// Codes now `assigned` and `reserved`, read only after a funnel run.
    pub held: Option<Held>,
}

/// Codes in the two states the funnel passes through, for the audit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub assigned: u64,
    pub reserved: u64,
}

/// A target as named on the command line.
pub enum Spec {
    Redeemd { addr: SocketAddr, url: String },
    Postgres(String),
    Redis(String),
}

impl Spec {
    pub fn parse(target: &str, url: &str) -> anyhow::Result<Spec> {
        if target == "redeemd" {
            let rest = url
                .strip_prefix("http://")
                .with_context(|| format!("--url {url:?}: only http:// URLs are supported"))?;
            let hostport = rest.split('/').next().unwrap_or(rest);
            let addr = hostport
                .to_socket_addrs()
                .with_context(|| format!("--url {url:?}: cannot resolve {hostport:?}"))?
                .next()
                .with_context(|| format!("--url {url:?}: {hostport:?} has no address"))?;
            Ok(Spec::Redeemd {
                addr,
                url: url.to_owned(),
            })
        } else if target.starts_with("postgres://") || target.starts_with("postgresql://") {
            Ok(Spec::Postgres(target.to_owned()))
        } else if target.starts_with("redis://") {
            Ok(Spec::Redis(target.to_owned()))
        } else {
            bail!("--target {target:?}: expected redeemd, postgres://... or redis://...")
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Spec::Redeemd { .. } => "redeemd",
            Spec::Postgres(_) => "postgres",
            Spec::Redis(_) => "redis",
        }
    }

    /// The URL the load goes to, for the report.
    pub fn endpoint(&self) -> &str {
        match self {
            Spec::Redeemd { url, .. } => url,
            Spec::Postgres(url) | Spec::Redis(url) => url,
        }
    }
}

/// A target with its codes loaded: what the bench connects to, and asks
/// afterwards what it stored.
///
/// Only [`Connection::execute`] runs on spawned tasks, so only it promises
/// a `Send` future; these methods run on the bench's own task.
pub trait Target: Sized {
    /// Where the target is, as [`Spec`] names it.
    type Endpoint: ?Sized;
    /// One connection to this target.
    type Conn: Connection;

    /// Creates the campaign (redeemd) or loads `codes` codes (baselines),
    /// and returns the target with its codes in the order it listed them
    /// (the bench shuffles them before use).
    async fn prepare(
        endpoint: &Self::Endpoint,
        token: Option<&str>,
        scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Self, Vec<String>)>;

    /// Opens connection `k`, ready to run before the clock starts; `races`
    /// says whether losing a redemption to another connection is expected.
    async fn connect(&self, k: usize, races: bool) -> anyhow::Result<Self::Conn>;

    /// What the server says it redeemed, for the audit.
    async fn server_state(&self) -> anyhow::Result<ServerState>;

    /// Removes what `prepare` loaded, where the target allows it.
    async fn cleanup(&self) -> anyhow::Result<()>;

    /// Facts about the target a reader of the numbers needs: the campaign,
    /// the durability settings in force.
    fn notes(&self) -> Vec<String>;
}

/// One connection of a target, driven by one task of the driver.
pub trait Connection: Send + 'static {
    /// Performs `work`, due at `scheduled`, records its requests and the
    /// operation in `rec`, and books its effect on codes in `ctx.tracking`.
    ///
    /// The future is `Send` because the driver spawns it on a task of a
    /// possibly multi-threaded runtime.
    fn execute(
        &mut self,
        ctx: &Ctx,
        work: Work,
        scheduled: Instant,
        rec: &mut Recorder,
    ) -> impl Future<Output = ()> + Send;

    /// Times the connection was reopened after losing it; 0 for one that
    /// never reopens, as the baselines' database clients do not.
    fn reconnects(&self) -> u64 {
        0
    }
}

/// Opens `connections` connections to `target`, before the clock starts.
pub async fn connect_all<T: Target>(
    target: &T,
    connections: usize,
    races: bool,
) -> anyhow::Result<Vec<T::Conn>> {
    let mut conns = Vec::with_capacity(connections);
    for k in 0..connections {
        conns.push(target.connect(k, races).await?);
    }
    Ok(conns)
}

/// Codes shaped like redeemd's (`PREFIX-XXXXX-XXXXX-X`), for the baselines.
pub fn generate_codes(n: u64, rng: &mut Rng) -> Vec<String> {
    const SYMBOLS: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut seen = std::collections::HashSet::with_capacity(n as usize);
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let mut code = String::with_capacity(20);
        code.push_str("BASE");
        for i in 0..11 {
            if i % 5 == 0 {
                code.push('-');
            }
            code.push(SYMBOLS[rng.below(SYMBOLS.len() as u64) as usize] as char);
        }
        if seen.insert(code.clone()) {
            out.push(code);
        }
    }
    out
}

/// How a baseline's redemption answer counts: it has no HTTP status, so
/// rows carry status 0 and a code naming the outcome.
pub fn baseline_class(result: Result<(), &'static str>, races: bool) -> (&'static str, Class) {
    match (result, races) {
        (Ok(()), _) => ("", Class::Success),
        (Err(what @ "already_redeemed"), true) => (what, Class::Expected),
        (Err(what), _) => (what, Class::Unexpected),
    }
}

/// How long a baseline's reservation holds its code: redeemd's default
/// `reservation_ttl_seconds`, which the bench's campaigns keep.
pub const RESERVATION_TTL_SECONDS: u64 = 900;

/// Why a baseline call has no result.
pub enum Failure {
    /// No answer (connection lost, timeout): the effect is unknown.
    Lost(&'static str),
    /// The database answered with an error. `maybe_applied` is true when
    /// part of the call may still have taken effect (a Redis script that
    /// failed half-way); a failed PostgreSQL statement rolled back.
    Error { what: String, maybe_applied: bool },
}

/// What a redeemd answer to a keyed redemption holds: status, body, and
/// whether it was marked `Idempotent-Replayed`.
pub struct Keyed {
    pub status: u16,
    pub body: String,
    pub replayed: bool,
}

/// What an assignment did.
pub enum Assigned {
    /// A fresh code for a new recipient (redeemd's 201).
    Created(String),
    /// The recipient already had a code (redeemd's 200); the bench's
    /// recipients are all new, so this is never the right answer.
    Existing,
    /// No code left (`409 pool_exhausted`).
    Exhausted,
}

/// The API calls of redeemd a baseline implements, one durable
/// transaction or script each. An `Err(&'static str)` inside `Ok` is a
/// refusal named by redeemd's error code (`already_redeemed`,
/// `unknown_reservation`, ...).
pub trait Ops: Send {
    /// `POST /v1/redemptions`: true when this call redeemed the code.
    fn redeem(
        &mut self,
        code: &str,
    ) -> impl Future<Output = Result<Result<(), &'static str>, Failure>> + Send;
    /// `GET /v1/codes/{code}`: the code's state.
    fn lookup(
        &mut self,
        code: &str,
    ) -> impl Future<Output = Result<Result<String, &'static str>, Failure>> + Send;
    /// `POST /v1/redemptions` under an `Idempotency-Key`.
    fn redeem_keyed(
        &mut self,
        key: &str,
        code: &str,
    ) -> impl Future<Output = Result<Keyed, Failure>> + Send;
    /// `POST /v1/campaigns/{id}/assignments`.
    fn assign(&mut self, recipient: &str)
    -> impl Future<Output = Result<Assigned, Failure>> + Send;
    /// `POST /v1/reservations`: the reservation id.
    fn reserve(
        &mut self,
        code: &str,
    ) -> impl Future<Output = Result<Result<String, &'static str>, Failure>> + Send;
    /// `POST /v1/reservations/{id}/confirm`.
    fn confirm(
        &mut self,
        reservation: &str,
    ) -> impl Future<Output = Result<Result<(), &'static str>, Failure>> + Send;
    /// `DELETE /v1/reservations/{id}`.
    fn release(
        &mut self,
        reservation: &str,
    ) -> impl Future<Output = Result<Result<(), &'static str>, Failure>> + Send;
}

/// Runs `fut` with the run's answer timeout.
async fn timed<T>(ctx: &Ctx, fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::time::timeout(ctx.timeout, fut)
        .await
        .unwrap_or(Err(Failure::Lost("timeout")))
}

/// Everything one baseline request is recorded with, bar the timing.
struct Req<'a> {
    op_start: Instant,
    kind: Kind,
    start: Instant,
    what: &'a str,
    class: Class,
}

fn record(ctx: &Ctx, rec: &mut Recorder, r: Req<'_>) -> Instant {
    let end = Instant::now();
    rec.request(
        &ctx.live, r.op_start, r.kind, r.start, end, 0, r.what, r.class,
    );
    end
}

/// Records a failed call; `true` when its effect is unknown. Pauses after
/// a lost connection, so a dead server is not spun on.
async fn record_failure(
    ctx: &Ctx,
    rec: &mut Recorder,
    op_start: Instant,
    kind: Kind,
    start: Instant,
    failure: &Failure,
) -> bool {
    let (what, class, unknown) = match failure {
        Failure::Lost(what) => (*what, Class::Transport, true),
        Failure::Error {
            what,
            maybe_applied,
        } => (what.as_str(), Class::Server, *maybe_applied),
    };
    record(
        ctx,
        rec,
        Req {
            op_start,
            kind,
            start,
            what,
            class,
        },
    );
    if matches!(failure, Failure::Lost(_)) && what != "timeout" {
        transport_pause().await;
    }
    unknown
}

/// A baseline's connection: its client's operations, and what the shared
/// flow ([`execute_baseline`]) needs besides.
pub struct BaselineWorker<O> {
    pub ops: O,
    /// The run's name (the codes table, the key prefix): recipients and
    /// idempotency keys are made from it.
    pub run: String,
    pub races: bool,
}

impl<O: Ops + 'static> Connection for BaselineWorker<O> {
    async fn execute(&mut self, ctx: &Ctx, work: Work, scheduled: Instant, rec: &mut Recorder) {
        execute_baseline(
            &mut self.ops,
            ctx,
            work,
            scheduled,
            rec,
            &self.run,
            self.races,
        )
        .await;
    }
}

/// Performs `work` on a baseline: the same requests, in the same order,
/// booked for the audit the same way as redeemd's HTTP worker does.
/// `run` names the run (recipients and idempotency keys are made from it);
/// `races` says whether losing a redemption is expected.
pub async fn execute_baseline<O: Ops>(
    ops: &mut O,
    ctx: &Ctx,
    work: Work,
    scheduled: Instant,
    rec: &mut Recorder,
    run: &str,
    races: bool,
) {
    match work {
        Work::Redeem(idx) => {
            let code = &ctx.plan.codes[idx as usize];
            ctx.tracking.attempt(idx);
            match timed(ctx, ops.redeem(code)).await {
                Ok(result) => {
                    let (what, class) = baseline_class(result, races);
                    if result.is_ok() {
                        ctx.tracking.success(idx);
                    }
                    record(ctx, rec, Req::first(scheduled, Kind::Redeem, what, class));
                }
                Err(f) => {
                    if record_failure(ctx, rec, scheduled, Kind::Redeem, scheduled, &f).await {
                        ctx.tracking.unknown(idx);
                    }
                }
            }
        }
        Work::Lookup(idx) => {
            let code = &ctx.plan.codes[idx as usize];
            match timed(ctx, ops.lookup(code)).await {
                Ok(Ok(_state)) => {
                    record(
                        ctx,
                        rec,
                        Req::first(scheduled, Kind::Lookup, "", Class::Expected),
                    );
                }
                Ok(Err(what)) => {
                    record(
                        ctx,
                        rec,
                        Req::first(scheduled, Kind::Lookup, what, Class::Unexpected),
                    );
                }
                Err(f) => {
                    record_failure(ctx, rec, scheduled, Kind::Lookup, scheduled, &f).await;
                }
            }
        }
        Work::Retry(idx) => retry(ops, ctx, idx, scheduled, rec, run).await,
        Work::Funnel { seq, confirm } => {
            funnel(ops, ctx, seq, confirm, scheduled, rec, run).await;
        }
    }
    rec.op(&ctx.live, scheduled, Instant::now());
}

impl<'a> Req<'a> {
    /// The first request of an operation, due when the operation was.
    fn first(op_start: Instant, kind: Kind, what: &'a str, class: Class) -> Req<'a> {
        Req {
            op_start,
            kind,
            start: op_start,
            what,
            class,
        }
    }
}

/// The error code a keyed answer's status stands for, as redeemd names it.
fn keyed_what(status: u16) -> &'static str {
    match status {
        201 => "",
        404 => "unknown_code",
        409 => "already_redeemed",
        422 => "idempotency_key_reused",
        _ => "unexpected_status",
    }
}

async fn retry<O: Ops>(
    ops: &mut O,
    ctx: &Ctx,
    idx: u32,
    scheduled: Instant,
    rec: &mut Recorder,
    run: &str,
) {
    let code = &ctx.plan.codes[idx as usize];
    ctx.tracking.attempt(idx);
    let key = format!("{run}-{idx}");
    let first = timed(ctx, ops.redeem_keyed(&key, code)).await;
    let first_unknown = match &first {
        Ok(k) => {
            let class = if k.status == 201 {
                Class::Success
            } else {
                Class::Unexpected
            };
            record(
                ctx,
                rec,
                Req::first(scheduled, Kind::Redeem, keyed_what(k.status), class),
            );
            false
        }
        Err(f) => record_failure(ctx, rec, scheduled, Kind::Redeem, scheduled, f).await,
    };
    let start = Instant::now();
    let replay = timed(ctx, ops.redeem_keyed(&key, code)).await;
    let (what, class) = match (&first, &replay) {
        (_, Err(f)) => {
            let unknown = record_failure(ctx, rec, scheduled, Kind::Replay, start, f).await;
            match &first {
                Ok(k) if k.status == 201 => ctx.tracking.success(idx),
                Err(_) if first_unknown || unknown => ctx.tracking.unknown(idx),
                _ => {}
            }
            return;
        }
        (Ok(f), Ok(r)) => {
            if r.status != f.status || r.body != f.body {
                ctx.tracking
                    .replay_mismatches
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ("replay_differs", Class::Unexpected)
            } else if !r.replayed {
                ctx.tracking
                    .replay_unmarked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ("not_marked_replayed", Class::Unexpected)
            } else {
                (keyed_what(r.status), Class::Expected)
            }
        }
        // The first send got no answer: the replay is the answer.
        (Err(_), Ok(_)) => ("first_lost", Class::Expected),
    };
    record(
        ctx,
        rec,
        Req {
            op_start: scheduled,
            kind: Kind::Replay,
            start,
            what,
            class,
        },
    );
    match (&first, &replay) {
        (Ok(k), _) | (Err(_), Ok(k)) if k.status == 201 => ctx.tracking.success(idx),
        _ => {}
    }
}

async fn funnel<O: Ops>(
    ops: &mut O,
    ctx: &Ctx,
    seq: u64,
    confirm: bool,
    scheduled: Instant,
    rec: &mut Recorder,
    run: &str,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let t = &ctx.tracking;
    let recipient = format!("{run}-r{seq}");
    let code = match timed(ctx, ops.assign(&recipient)).await {
        Ok(Assigned::Created(code)) => code,
        Ok(other) => {
            let what = match other {
                Assigned::Existing => "existing_assignment",
                _ => "pool_exhausted",
            };
            record(
                ctx,
                rec,
                Req::first(scheduled, Kind::Assign, what, Class::Unexpected),
            );
            return;
        }
        Err(f) => {
            if record_failure(ctx, rec, scheduled, Kind::Assign, scheduled, &f).await {
                t.funnel_lost.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    let Some(idx) = ctx.plan.index_of(&code) else {
        record(
            ctx,
            rec,
            Req::first(
                scheduled,
                Kind::Assign,
                "unknown_code_assigned",
                Class::Unexpected,
            ),
        );
        return;
    };
    t.assigned.fetch_add(1, Relaxed);
    record(
        ctx,
        rec,
        Req::first(scheduled, Kind::Assign, "", Class::Expected),
    );
    t.attempt(idx);
    let start = Instant::now();
    let reservation = match timed(ctx, ops.reserve(&code)).await {
        Ok(Ok(id)) => id,
        Ok(Err(what)) => {
            record(
                ctx,
                rec,
                Req {
                    op_start: scheduled,
                    kind: Kind::Reserve,
                    start,
                    what,
                    class: Class::Unexpected,
                },
            );
            return;
        }
        Err(f) => {
            if record_failure(ctx, rec, scheduled, Kind::Reserve, start, &f).await {
                t.funnel_lost.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    t.reserved.fetch_add(1, Relaxed);
    let next = record(
        ctx,
        rec,
        Req {
            op_start: scheduled,
            kind: Kind::Reserve,
            start,
            what: "",
            class: Class::Expected,
        },
    );
    let (kind, result) = if confirm {
        (Kind::Confirm, timed(ctx, ops.confirm(&reservation)).await)
    } else {
        (Kind::Release, timed(ctx, ops.release(&reservation)).await)
    };
    match result {
        Ok(Ok(())) => {
            let class = if confirm {
                t.success(idx);
                Class::Success
            } else {
                t.released.fetch_add(1, Relaxed);
                Class::Expected
            };
            record(
                ctx,
                rec,
                Req {
                    op_start: scheduled,
                    kind,
                    start: next,
                    what: "",
                    class,
                },
            );
        }
        Ok(Err(what)) => {
            record(
                ctx,
                rec,
                Req {
                    op_start: scheduled,
                    kind,
                    start: next,
                    what,
                    class: Class::Unexpected,
                },
            );
        }
        Err(f) => {
            if record_failure(ctx, rec, scheduled, kind, next, &f).await {
                t.funnel_lost.fetch_add(1, Relaxed);
                if confirm {
                    t.unknown(idx);
                }
            }
        }
    }
}
