//! The Redis baseline: the available codes are a set, and a redemption is
//! one Lua script that SREMs the code and, if it was there, records the
//! redemption with HSET; the server runs with `appendfsync always`, so an
//! acknowledged redemption has been fsynced to the append-only file.

use std::time::Instant;

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;

use crate::driver::Ctx;
use crate::plan::{Rng, Scenario, Work};
use crate::stats::{Class, Recorder};
use crate::targets::{
    Connection, ServerState, Target, baseline_class, generate_codes, transport_pause,
};

/// Codes sent per `SADD` while loading.
const LOAD_BATCH_CODES: usize = 10_000;

/// KEYS[1] the available set, KEYS[2] the redemptions hash;
/// ARGV[1] the code, ARGV[2] the user. 1: redeemed now, 0: not available.
const REDEEM_SCRIPT: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
";

pub struct Setup {
    client: redis::Client,
    available: String,
    redeemed: String,
    /// The server version and persistence settings in force.
    notes: Vec<String>,
    admin: MultiplexedConnection,
}

async fn config(con: &mut MultiplexedConnection, name: &str) -> anyhow::Result<String> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await?;
    Ok(pair.get(1).cloned().unwrap_or_default())
}

/// Loads `codes` into a fresh set.
async fn load(url: &str, codes: &[String], rng: &mut Rng) -> anyhow::Result<Setup> {
    let client = redis::Client::open(url).with_context(|| format!("--target {url}"))?;
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connect to {url}"))?;
    let run = format!("redeem-bench:{:08x}", rng.next_u64() as u32);
    let available = format!("{run}:available");
    let redeemed = format!("{run}:redeemed");
    for chunk in codes.chunks(LOAD_BATCH_CODES) {
        let _: u64 = redis::cmd("SADD")
            .arg(&available)
            .arg(chunk)
            .query_async(&mut admin)
            .await
            .context("load codes")?;
    }
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut admin)
        .await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut notes = vec![
        format!("keys {available}, {redeemed}"),
        format!("redis_version={version}"),
    ];
    for setting in ["appendonly", "appendfsync"] {
        notes.push(format!("{setting}={}", config(&mut admin, setting).await?));
    }
    Ok(Setup {
        client,
        available,
        redeemed,
        notes,
        admin,
    })
}

impl Target for Setup {
    type Endpoint = str;
    type Conn = Worker;

    /// Generates `codes` codes and loads them; the baseline needs neither
    /// a token nor the scenario.
    async fn prepare(
        url: &str,
        _token: Option<&str>,
        _scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Setup, Vec<String>)> {
        let list = generate_codes(codes, rng);
        let setup = load(url, &list, rng).await?;
        Ok((setup, list))
    }

    async fn connect(&self, k: usize, races: bool) -> anyhow::Result<Worker> {
        // A connection of its own per worker, like every other target.
        let con = self
            .client
            .get_multiplexed_async_connection()
            .await
            .context("connect to redis")?;
        Ok(Worker {
            con,
            script: redis::Script::new(REDEEM_SCRIPT),
            available: self.available.clone(),
            redeemed: self.redeemed.clone(),
            user: format!("bench-{k}"),
            races,
        })
    }

    async fn server_state(&self) -> anyhow::Result<ServerState> {
        let mut con = self.admin.clone();
        let count: u64 = redis::cmd("HLEN")
            .arg(&self.redeemed)
            .query_async(&mut con)
            .await?;
        let codes: Vec<String> = redis::cmd("HKEYS")
            .arg(&self.redeemed)
            .query_async(&mut con)
            .await?;
        Ok(ServerState {
            redeemed: count,
            redeemed_codes: codes,
            source: format!("HLEN {}", self.redeemed),
        })
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let mut con = self.admin.clone();
        let _: u64 = redis::cmd("DEL")
            .arg(&self.available)
            .arg(&self.redeemed)
            .query_async(&mut con)
            .await?;
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

/// One connection.
pub struct Worker {
    con: MultiplexedConnection,
    script: redis::Script,
    available: String,
    redeemed: String,
    user: String,
    races: bool,
}

impl Connection for Worker {
    async fn execute(&mut self, ctx: &Ctx, work: Work, scheduled: Instant, rec: &mut Recorder) {
        let Work::Redeem(idx) = work else {
            unreachable!("the redis baseline runs only redemptions");
        };
        let code = &ctx.plan.codes[idx as usize];
        ctx.tracking.attempt(idx);
        let mut invocation = self.script.key(&self.available);
        invocation.key(&self.redeemed).arg(code).arg(&self.user);
        let result =
            tokio::time::timeout(ctx.timeout, invocation.invoke_async::<i64>(&mut self.con)).await;
        let end = Instant::now();
        match result {
            Ok(Ok(won)) => {
                let (what, class) = baseline_class(won == 1, self.races);
                if won == 1 {
                    ctx.tracking.success(idx);
                }
                rec.baseline_redeem(&ctx.live, scheduled, end, what, class);
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() => {
                ctx.tracking.unknown(idx);
                rec.baseline_redeem(
                    &ctx.live,
                    scheduled,
                    end,
                    "connection_lost",
                    Class::Transport,
                );
                transport_pause().await;
            }
            Ok(Err(e)) => {
                // A script error is not a transport failure, but whether it
                // wrote anything is unknown.
                ctx.tracking.unknown(idx);
                let what = format!("redis_{}", e.code().unwrap_or("error"));
                rec.baseline_redeem(&ctx.live, scheduled, end, &what, Class::Server);
            }
            Err(_) => {
                ctx.tracking.unknown(idx);
                rec.baseline_redeem(&ctx.live, scheduled, end, "timeout", Class::Transport);
            }
        }
        rec.op(&ctx.live, scheduled, end);
    }
}
