//! The PostgreSQL baseline, the textbook design: a table of codes, and a
//! redemption is one `UPDATE ... WHERE code=$1 AND status='available'`
//! committed with `synchronous_commit = on`, so an acknowledged
//! redemption is as durable as redeemd's.

use std::time::Instant;

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls, Statement};

use crate::driver::Ctx;
use crate::plan::{Rng, Scenario, Work};
use crate::stats::{Class, Recorder};
use crate::targets::{
    Connection, ServerState, Target, baseline_class, generate_codes, transport_pause,
};

/// Codes sent per `INSERT` while loading.
const LOAD_BATCH_CODES: usize = 10_000;

pub struct Setup {
    url: String,
    table: String,
    /// The server version and durability settings in force.
    notes: Vec<String>,
    admin: Client,
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connect to {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// Creates a fresh table and loads `codes` into it.
async fn load(url: &str, codes: &[String], rng: &mut Rng) -> anyhow::Result<Setup> {
    let admin = connect(url).await?;
    let table = format!("redeem_bench_{:08x}", rng.next_u64() as u32);
    admin
        .batch_execute(&format!(
            "CREATE TABLE {table} (code text PRIMARY KEY, \
             status text NOT NULL DEFAULT 'available', redeemed_by text)"
        ))
        .await
        .context("create the codes table")?;
    let insert = admin
        .prepare(&format!(
            "INSERT INTO {table} (code) SELECT unnest($1::text[])"
        ))
        .await?;
    for chunk in codes.chunks(LOAD_BATCH_CODES) {
        admin
            .execute(&insert, &[&chunk])
            .await
            .context("load codes")?;
    }
    admin.batch_execute(&format!("ANALYZE {table}")).await?;
    let mut notes = vec![format!("table {table}")];
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
    ] {
        let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
        notes.push(format!("{setting}={}", row.get::<_, String>(0)));
    }
    Ok(Setup {
        url: url.to_owned(),
        table,
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
        let client = connect(&self.url).await?;
        // The server's default, stated so a changed default cannot
        // quietly make the baseline less durable than redeemd.
        client.batch_execute("SET synchronous_commit TO on").await?;
        let redeem = client
            .prepare(&format!(
                "UPDATE {} SET status='redeemed', redeemed_by=$2 \
                 WHERE code=$1 AND status='available'",
                self.table
            ))
            .await?;
        Ok(Worker {
            client,
            redeem,
            user: format!("bench-{k}"),
            races,
        })
    }

    async fn server_state(&self) -> anyhow::Result<ServerState> {
        let q = format!("SELECT code FROM {} WHERE status='redeemed'", self.table);
        let rows = self.admin.query(&q, &[]).await?;
        let codes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let count: i64 = self
            .admin
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE status='redeemed'",
                    self.table
                ),
                &[],
            )
            .await?
            .get(0);
        Ok(ServerState {
            redeemed: count as u64,
            redeemed_codes: codes,
            source: format!(
                "SELECT count(*) FROM {} WHERE status='redeemed'",
                self.table
            ),
        })
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        self.admin
            .batch_execute(&format!("DROP TABLE {}", self.table))
            .await?;
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

/// One connection.
pub struct Worker {
    client: Client,
    redeem: Statement,
    user: String,
    races: bool,
}

impl Connection for Worker {
    async fn execute(&mut self, ctx: &Ctx, work: Work, scheduled: Instant, rec: &mut Recorder) {
        let Work::Redeem(idx) = work else {
            unreachable!("the postgres baseline runs only redemptions");
        };
        let code = &ctx.plan.codes[idx as usize];
        ctx.tracking.attempt(idx);
        let result = tokio::time::timeout(
            ctx.timeout,
            self.client.execute(&self.redeem, &[code, &self.user]),
        )
        .await;
        let end = Instant::now();
        match result {
            Ok(Ok(rows)) => {
                let (what, class) = baseline_class(rows == 1, self.races);
                if rows == 1 {
                    ctx.tracking.success(idx);
                }
                rec.baseline_redeem(&ctx.live, scheduled, end, what, class);
            }
            Ok(Err(e)) if e.is_closed() => {
                ctx.tracking.unknown(idx);
                rec.baseline_redeem(
                    &ctx.live,
                    scheduled,
                    end,
                    "connection_closed",
                    Class::Transport,
                );
                transport_pause().await;
            }
            Ok(Err(e)) => {
                // A failed statement did not commit.
                let what = match e.code() {
                    Some(state) => format!("sqlstate_{}", state.code()),
                    None => "db_error".to_owned(),
                };
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
