//! What a run drives: redeemd over HTTP, or one of two textbook
//! baselines (a PostgreSQL table, a Redis set with a Lua script) loaded
//! with the same number of codes.
//!
//! Each target implements [`Target`] (set up, connect, read back what it
//! stored, clean up) and hands out [`Connection`]s that perform the
//! operations, so the driver and the audit are generic over the target;
//! the bench's `run_target` is the one place the three are told apart.
//!
//! # Layout
//! - `redeemd`: the HTTP API, every scenario.
//! - `postgres`: `UPDATE ... WHERE status='available'`, synchronous commit.
//! - `redis`: SREM + HSET in one Lua script, `appendfsync always`.

pub mod postgres;
pub mod redeemd;
pub mod redis;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::driver::Ctx;
use crate::plan::{Rng, Scenario, Work};
use crate::stats::{Class, Recorder};

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

    /// Fails unless this target can run `scenario`: the baselines model
    /// redemption only, so they run the uniform and hot scenarios only.
    pub fn check(&self, scenario: Scenario) -> anyhow::Result<()> {
        let baseline = !matches!(self, Spec::Redeemd { .. });
        if baseline && !matches!(scenario, Scenario::Uniform | Scenario::Hot { .. }) {
            bail!(
                "the {} baseline runs the uniform and hot scenarios only",
                self.kind()
            );
        }
        Ok(())
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
pub fn baseline_class(won: bool, races: bool) -> (&'static str, Class) {
    match (won, races) {
        (true, _) => ("", Class::Success),
        (false, true) => ("already_redeemed", Class::Expected),
        (false, false) => ("already_redeemed", Class::Unexpected),
    }
}
