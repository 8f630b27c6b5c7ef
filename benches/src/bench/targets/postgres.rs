//! The PostgreSQL baseline, the textbook design: a table of codes, a
//! table of live reservations and a table of stored idempotent answers;
//! each API call redeemd would answer is one statement (or one call of a
//! PL/pgSQL function, where the call takes several steps) and so one
//! transaction, committed with `synchronous_commit = on`: an acknowledged
//! change is as durable as redeemd's, and, as in redeemd, a read sees
//! only committed, hence flushed, changes.
//!
//! | API call | here |
//! |---|---|
//! | redeem | `UPDATE codes ... WHERE code=$1 AND status IN ('available','assigned') RETURNING redeemed_at` |
//! | look up | `SELECT` of the code's row, joined to its reservation |
//! | keyed redeem | `redeem_keyed()`: claim the key (`INSERT ... ON CONFLICT DO NOTHING`), or return the stored answer; else redeem and store the answer |
//! | assign | one statement: the recipient's code if it has one, else one available code (`FOR UPDATE SKIP LOCKED`) marked assigned to it |
//! | reserve | one statement: the code marked reserved (its prior state kept), a reservation row inserted |
//! | confirm | one statement: the live reservation deleted, its code marked redeemed |
//! | release | one statement: the live reservation deleted, its code back to its prior state |

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls, Statement};

use crate::plan::{Rng, Scenario};
use crate::targets::{
    Assigned, BaselineWorker, Failure, Held, Keyed, Ops, RESERVATION_TTL_SECONDS, ServerState,
    Target, generate_codes,
};

/// A connection to the baseline.
pub type Worker = BaselineWorker<PgOps>;

/// Codes sent per `INSERT` while loading.
const LOAD_BATCH_CODES: usize = 10_000;

pub struct Setup {
    url: String,
    /// The codes table; the others are named after it.
    table: String,
    /// The server version and durability settings in force.
    notes: Vec<String>,
    admin: Client,
    funnel: bool,
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

/// The schema of one run: every table and index the API needs, whatever
/// the scenario, as an application would have them. `{t}` is the codes
/// table's name.
fn schema(t: &str) -> String {
    format!(
        "CREATE TABLE {t} (
            code text PRIMARY KEY,
            status text NOT NULL DEFAULT 'available',
            recipient text,
            assigned_at timestamptz,
            held_from text,
            redeemed_by text,
            redeemed_at timestamptz
        );
        CREATE TABLE {t}_rsv (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            code text NOT NULL UNIQUE REFERENCES {t},
            user_name text NOT NULL,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX {t}_rsv_expiry ON {t}_rsv (expires_at);
        CREATE TABLE {t}_idem (
            key text PRIMARY KEY,
            request text NOT NULL,
            status int,
            body text,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        -- for the job that deletes answers past their 24 h (no run lasts that long)
        CREATE INDEX {t}_idem_age ON {t}_idem (created_at);"
    )
}

/// Indexes built after the load: one code per recipient
/// (`per_recipient_limit` 1), and the pool assignments draw from.
fn indexes(t: &str) -> String {
    format!(
        "CREATE UNIQUE INDEX {t}_recipient ON {t} (recipient) WHERE recipient IS NOT NULL;
        CREATE INDEX {t}_pool ON {t} (code) WHERE status = 'available';
        ANALYZE {t};"
    )
}

/// `redeem_keyed(key, request, code, user)`: a redemption under an
/// idempotency key in one transaction. The key is claimed first, so a
/// concurrent request with the same key waits for this one and then reads
/// its stored answer; a key seen before answers what it stored (or 422
/// for a different request), without redeeming again.
fn keyed_function(t: &str) -> String {
    format!(
        r#"CREATE FUNCTION {t}_redeem_keyed(k text, req text, c text, u text,
            OUT o_status int, OUT o_body text, OUT o_replayed bool)
        LANGUAGE plpgsql AS $$
        DECLARE
            at timestamptz;
        BEGIN
            INSERT INTO {t}_idem (key, request) VALUES (k, req) ON CONFLICT (key) DO NOTHING;
            IF NOT FOUND THEN
                SELECT i.status, i.body INTO o_status, o_body FROM {t}_idem i
                    WHERE i.key = k AND i.request = req;
                IF FOUND THEN
                    o_replayed := true;
                ELSE
                    o_status := 422;
                    o_body := '{{"error":{{"code":"idempotency_key_reused"}}}}';
                    o_replayed := false;
                END IF;
                RETURN;
            END IF;
            UPDATE {t} SET status = 'redeemed', redeemed_by = u, redeemed_at = now()
                WHERE code = c AND status IN ('available', 'assigned')
                RETURNING redeemed_at INTO at;
            IF FOUND THEN
                o_status := 201;
                o_body := json_build_object('code', c, 'user', u, 'redeemed_at', at)::text;
            ELSE
                SELECT x.redeemed_at INTO at FROM {t} x WHERE x.code = c;
                IF NOT FOUND THEN
                    o_status := 404;
                    o_body := '{{"error":{{"code":"unknown_code"}}}}';
                ELSE
                    o_status := 409;
                    o_body := json_build_object('error',
                        json_build_object('code', 'already_redeemed', 'redeemed_at', at))::text;
                END IF;
            END IF;
            UPDATE {t}_idem SET status = o_status, body = o_body WHERE key = k;
            o_replayed := false;
        END
        $$"#
    )
}

/// Creates a fresh set of tables and loads `codes` into them.
async fn load(url: &str, codes: &[String], rng: &mut Rng) -> anyhow::Result<(Client, String)> {
    let admin = connect(url).await?;
    let t = format!("redeem_bench_{:08x}", rng.next_u64() as u32);
    admin
        .batch_execute(&schema(&t))
        .await
        .context("create the tables")?;
    admin
        .batch_execute(&keyed_function(&t))
        .await
        .context("create the keyed redemption function")?;
    let insert = admin
        .prepare(&format!("INSERT INTO {t} (code) SELECT unnest($1::text[])"))
        .await?;
    for chunk in codes.chunks(LOAD_BATCH_CODES) {
        admin
            .execute(&insert, &[&chunk])
            .await
            .context("load codes")?;
    }
    admin
        .batch_execute(&indexes(&t))
        .await
        .context("index the codes")?;
    Ok((admin, t))
}

impl Target for Setup {
    type Endpoint = str;
    type Conn = Worker;

    /// Generates `codes` codes and loads them; the baseline needs no token.
    async fn prepare(
        url: &str,
        _token: Option<&str>,
        scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Setup, Vec<String>)> {
        let list = generate_codes(codes, rng);
        let (admin, table) = load(url, &list, rng).await?;
        let mut notes = vec![format!("tables {table}, {table}_rsv, {table}_idem")];
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
        ] {
            let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
            notes.push(format!("{setting}={}", row.get::<_, String>(0)));
        }
        let setup = Setup {
            url: url.to_owned(),
            table,
            notes,
            admin,
            funnel: matches!(scenario, Scenario::Funnel { .. }),
        };
        Ok((setup, list))
    }

    async fn connect(&self, k: usize, races: bool) -> anyhow::Result<Worker> {
        let client = connect(&self.url).await?;
        // The server's default, stated so a changed default cannot
        // quietly make the baseline less durable than redeemd.
        client.batch_execute("SET synchronous_commit TO on").await?;
        let t = &self.table;
        let prepare = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.context("prepare a statement") }
        };
        let statements = Statements {
            redeem: prepare(format!(
                "UPDATE {t} SET status = 'redeemed', redeemed_by = $2, redeemed_at = now() \
                 WHERE code = $1 AND status IN ('available', 'assigned') RETURNING redeemed_at"
            ))
            .await?,
            lookup: prepare(format!(
                "SELECT c.status, c.recipient, c.redeemed_by, c.redeemed_at, r.expires_at \
                 FROM {t} c LEFT JOIN {t}_rsv r ON r.code = c.code WHERE c.code = $1"
            ))
            .await?,
            keyed: prepare(format!(
                "SELECT o_status, o_body, o_replayed FROM {t}_redeem_keyed($1, $2, $3, $4)"
            ))
            .await?,
            assign: prepare(format!(
                "WITH existing AS (SELECT code FROM {t} WHERE recipient = $1), \
                 picked AS ( \
                   UPDATE {t} SET status = 'assigned', recipient = $1, assigned_at = now() \
                   WHERE code = (SELECT code FROM {t} WHERE status = 'available' \
                                 AND NOT EXISTS (SELECT 1 FROM existing) \
                                 LIMIT 1 FOR UPDATE SKIP LOCKED) \
                   RETURNING code) \
                 SELECT code, true FROM picked UNION ALL SELECT code, false FROM existing"
            ))
            .await?,
            reserve: prepare(format!(
                "WITH held AS ( \
                   UPDATE {t} SET status = 'reserved', held_from = status \
                   WHERE code = $1 AND status IN ('available', 'assigned') RETURNING code) \
                 INSERT INTO {t}_rsv (code, user_name, expires_at) \
                 SELECT code, $2, now() + make_interval(secs => {RESERVATION_TTL_SECONDS}) FROM held \
                 RETURNING id::text, expires_at"
            ))
            .await?,
            confirm: prepare(format!(
                "WITH r AS (DELETE FROM {t}_rsv WHERE id = $1::text::uuid AND expires_at > now() \
                            RETURNING code, user_name) \
                 UPDATE {t} c SET status = 'redeemed', redeemed_by = r.user_name, \
                   redeemed_at = now(), held_from = NULL \
                 FROM r WHERE c.code = r.code AND c.status = 'reserved' \
                 RETURNING c.code, c.redeemed_at"
            ))
            .await?,
            release: prepare(format!(
                "WITH r AS (DELETE FROM {t}_rsv WHERE id = $1::text::uuid AND expires_at > now() \
                            RETURNING code) \
                 UPDATE {t} c SET status = c.held_from, held_from = NULL \
                 FROM r WHERE c.code = r.code AND c.status = 'reserved' \
                 RETURNING c.code, c.status"
            ))
            .await?,
            reservation_state: prepare(format!(
                "SELECT expires_at > now() FROM {t}_rsv WHERE id = $1::text::uuid"
            ))
            .await?,
        };
        Ok(BaselineWorker {
            ops: PgOps {
                client,
                st: statements,
                user: format!("bench-{k}"),
            },
            run: t.clone(),
            races,
        })
    }

    async fn server_state(&self) -> anyhow::Result<ServerState> {
        let t = &self.table;
        let rows = self
            .admin
            .query(
                &format!("SELECT code FROM {t} WHERE status = 'redeemed'"),
                &[],
            )
            .await?;
        let codes: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let counts = self
            .admin
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE status = 'redeemed'), \
                     count(*) FILTER (WHERE status = 'assigned'), \
                     count(*) FILTER (WHERE status = 'reserved') FROM {t}"
                ),
                &[],
            )
            .await?;
        let count = |i: usize| counts.get::<_, i64>(i) as u64;
        Ok(ServerState {
            redeemed: count(0),
            redeemed_codes: codes,
            source: format!("SELECT count(*) FROM {t} WHERE status='redeemed'"),
            held: self.funnel.then(|| Held {
                assigned: count(1),
                reserved: count(2),
            }),
        })
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let t = &self.table;
        self.admin
            .batch_execute(&format!(
                "DROP FUNCTION {t}_redeem_keyed; DROP TABLE {t}_idem, {t}_rsv, {t}"
            ))
            .await?;
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

struct Statements {
    redeem: Statement,
    lookup: Statement,
    keyed: Statement,
    assign: Statement,
    reserve: Statement,
    confirm: Statement,
    release: Statement,
    /// Failure path of confirm and release: expired or unknown.
    reservation_state: Statement,
}

/// One connection's client and prepared statements.
pub struct PgOps {
    client: Client,
    st: Statements,
    user: String,
}

/// What a PostgreSQL error means for the harness: a lost connection or a
/// server error.
fn failure(e: tokio_postgres::Error) -> Failure {
    if e.is_closed() {
        return Failure::Lost("connection_closed");
    }
    // A failed statement rolled back: nothing of it took effect.
    Failure::Error {
        what: match e.code() {
            Some(state) => format!("sqlstate_{}", state.code()),
            None => "db_error".to_owned(),
        },
        maybe_applied: false,
    }
}

impl PgOps {
    /// Why confirm or release found no live reservation.
    async fn missing(&self, reservation: &str) -> Result<&'static str, Failure> {
        let row = self
            .client
            .query_opt(&self.st.reservation_state, &[&reservation])
            .await
            .map_err(failure)?;
        Ok(match row {
            Some(_) => "reservation_expired",
            None => "unknown_reservation",
        })
    }
}

impl Ops for PgOps {
    async fn redeem(&mut self, code: &str) -> Result<Result<(), &'static str>, Failure> {
        let row = self
            .client
            .query_opt(&self.st.redeem, &[&code, &self.user])
            .await
            .map_err(failure)?;
        Ok(match row {
            Some(_) => Ok(()),
            None => Err("already_redeemed"),
        })
    }

    async fn lookup(&mut self, code: &str) -> Result<Result<String, &'static str>, Failure> {
        let row = self
            .client
            .query_opt(&self.st.lookup, &[&code])
            .await
            .map_err(failure)?;
        Ok(match row {
            Some(row) => Ok(row.get(0)),
            None => Err("unknown_code"),
        })
    }

    async fn redeem_keyed(&mut self, key: &str, code: &str) -> Result<Keyed, Failure> {
        let request = format!("{code}\n{}", self.user);
        let row = self
            .client
            .query_one(&self.st.keyed, &[&key, &request, &code, &self.user])
            .await
            .map_err(failure)?;
        Ok(Keyed {
            status: u16::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            body: row.get(1),
            replayed: row.get(2),
        })
    }

    async fn assign(&mut self, recipient: &str) -> Result<Assigned, Failure> {
        let rows = self
            .client
            .query(&self.st.assign, &[&recipient])
            .await
            .map_err(failure)?;
        Ok(match rows.first() {
            Some(row) if row.get::<_, bool>(1) => Assigned::Created(row.get(0)),
            Some(_) => Assigned::Existing,
            None => Assigned::Exhausted,
        })
    }

    async fn reserve(&mut self, code: &str) -> Result<Result<String, &'static str>, Failure> {
        let row = self
            .client
            .query_opt(&self.st.reserve, &[&code, &self.user])
            .await
            .map_err(failure)?;
        Ok(match row {
            Some(row) => Ok(row.get(0)),
            None => Err("code_not_available"),
        })
    }

    async fn confirm(&mut self, reservation: &str) -> Result<Result<(), &'static str>, Failure> {
        let row = self
            .client
            .query_opt(&self.st.confirm, &[&reservation])
            .await
            .map_err(failure)?;
        match row {
            Some(_) => Ok(Ok(())),
            None => Ok(Err(self.missing(reservation).await?)),
        }
    }

    async fn release(&mut self, reservation: &str) -> Result<Result<(), &'static str>, Failure> {
        let row = self
            .client
            .query_opt(&self.st.release, &[&reservation])
            .await
            .map_err(failure)?;
        match row {
            Some(_) => Ok(Ok(())),
            None => Ok(Err(self.missing(reservation).await?)),
        }
    }
}
