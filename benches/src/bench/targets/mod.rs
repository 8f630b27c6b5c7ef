//! What a run drives: redeemd over HTTP, or one of two textbook
//! baselines (a PostgreSQL table, a Redis set with a Lua script) loaded
//! with the same number of codes.
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
}

/// A target with its codes loaded.
pub enum Prepared {
    Redeemd(redeemd::Setup),
    Postgres(postgres::Setup),
    Redis(redis::Setup),
}

impl Prepared {
    /// Creates the campaign (redeemd) or loads `codes` codes (baselines),
    /// and returns the codes in the order they will be used.
    pub async fn prepare(
        spec: &Spec,
        token: Option<&str>,
        scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Prepared, Vec<String>)> {
        let baseline = !matches!(spec, Spec::Redeemd { .. });
        if baseline && !matches!(scenario, Scenario::Uniform | Scenario::Hot { .. }) {
            bail!(
                "the {} baseline runs the uniform and hot scenarios only",
                spec.kind()
            );
        }
        let (prepared, mut list) = match spec {
            Spec::Redeemd { addr, .. } => {
                let (s, list) = redeemd::prepare(*addr, token, scenario, codes, rng).await?;
                (Prepared::Redeemd(s), list)
            }
            Spec::Postgres(url) => {
                let list = generate_codes(codes, rng);
                let s = postgres::prepare(url, &list, rng).await?;
                (Prepared::Postgres(s), list)
            }
            Spec::Redis(url) => {
                let list = generate_codes(codes, rng);
                let s = redis::prepare(url, &list, rng).await?;
                (Prepared::Redis(s), list)
            }
        };
        // Checkouts arrive in no particular order of issue.
        rng.shuffle(&mut list);
        Ok((prepared, list))
    }

    pub async fn connect(&self, connections: usize, races: bool) -> anyhow::Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(connections);
        for k in 0..connections {
            conns.push(match self {
                Prepared::Redeemd(s) => {
                    let mut w = s.connect(k);
                    w.open().await?;
                    Conn::Redeemd(Box::new(w))
                }
                Prepared::Postgres(s) => Conn::Postgres(s.connect(k, races).await?),
                Prepared::Redis(s) => Conn::Redis(s.connect(k, races).await?),
            });
        }
        Ok(conns)
    }

    pub async fn server_state(&self) -> anyhow::Result<ServerState> {
        match self {
            Prepared::Redeemd(s) => s.server_state().await,
            Prepared::Postgres(s) => s.server_state().await,
            Prepared::Redis(s) => s.server_state().await,
        }
    }

    /// Removes what a baseline loaded; a redeemd campaign stays, as
    /// campaigns cannot be deleted through the API.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        match self {
            Prepared::Redeemd(_) => Ok(()),
            Prepared::Postgres(s) => s.cleanup().await,
            Prepared::Redis(s) => s.cleanup().await,
        }
    }

    /// Facts about the target a reader of the numbers needs: the campaign,
    /// the durability settings in force.
    pub fn notes(&self) -> Vec<String> {
        match self {
            Prepared::Redeemd(s) => vec![format!("campaign {}", s.shared.campaign)],
            Prepared::Postgres(s) => s.notes.clone(),
            Prepared::Redis(s) => s.notes.clone(),
        }
    }
}

/// Codes shaped like redeemd's (`PREFIX-XXXXX-XXXXX-X`), for the baselines.
fn generate_codes(n: u64, rng: &mut Rng) -> Vec<String> {
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

/// One connection of any target.
pub enum Conn {
    Redeemd(Box<redeemd::Worker>),
    Postgres(postgres::Worker),
    Redis(redis::Worker),
}

impl Conn {
    pub async fn execute(&mut self, ctx: &Ctx, work: Work, scheduled: Instant, rec: &mut Recorder) {
        match self {
            Conn::Redeemd(w) => w.execute(ctx, work, scheduled, rec).await,
            Conn::Postgres(w) => w.execute(ctx, work, scheduled, rec).await,
            Conn::Redis(w) => w.execute(ctx, work, scheduled, rec).await,
        }
    }

    pub fn reconnects(&self) -> u64 {
        match self {
            Conn::Redeemd(w) => w.reconnects(),
            Conn::Postgres(_) | Conn::Redis(_) => 0,
        }
    }
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
