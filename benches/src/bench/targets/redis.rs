//! The Redis baseline: each code is in exactly one of four structures,
//! by state, and each API call redeemd would answer is one Lua script,
//! atomic on the server. The server runs with `appendonly yes` and
//! `appendfsync always`: it fsyncs the append-only file before it sends
//! the replies of each event-loop pass, so an acknowledged change is
//! durable, and a read (whose reply waits for that same fsync) shows only
//! durable state, as in redeemd.
//!
//! Keys, under `redeem-bench:RUN:`:
//! - `available`: a set of the available codes;
//! - `assigned`: a hash, code to `assigned_at recipient`;
//! - `held`: a hash, code to its reservation (JSON: id, user, expiry, and
//!   the `assigned` value to restore on release, or `""` for available);
//! - `redeemed`: a hash, code to `redeemed_at user`;
//! - `recipients`: a hash, recipient to code (one code per recipient);
//! - `reservations`: a hash, reservation id to code;
//! - `expiries`: a sorted set of reservation ids by expiry, the index an
//!   expiry sweeper would read (no hold expires within a run);
//! - `idem:KEY`: the stored answer of an idempotent request, expiring
//!   after 24 h as redeemd's do.

use anyhow::Context as _;
use redis::aio::MultiplexedConnection;

use crate::plan::{Rng, Scenario};
use crate::targets::{
    Assigned, BaselineWorker, Failure, Held, Keyed, Ops, RESERVATION_TTL_SECONDS, ServerState,
    Target, generate_codes,
};

/// A connection to the baseline.
pub type Worker = BaselineWorker<RedisOps>;

/// Codes sent per `SADD` while loading.
const LOAD_BATCH_CODES: usize = 10_000;
/// How long a stored idempotent answer is kept, as redeemd promises.
const IDEMPOTENCY_TTL_SECONDS: u64 = 86_400;

/// The time in milliseconds, as `now` (a number) and `at` (a string).
const CLOCK: &str = "
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local at = clock[1] .. string.format('%03d', math.floor(tonumber(clock[2]) / 1000))
";

/// KEYS available, assigned, redeemed, held; ARGV code, user.
/// `{1, redeemed_at}`, or `{0, error code}`.
const REDEEM: &str = "
local c = ARGV[1]
if redis.call('SREM', KEYS[1], c) == 1 or redis.call('HDEL', KEYS[2], c) == 1 then
  redis.call('HSET', KEYS[3], c, at .. ' ' .. ARGV[2])
  return {1, at}
end
if redis.call('HEXISTS', KEYS[3], c) == 1 then return {0, 'already_redeemed'} end
if redis.call('HEXISTS', KEYS[4], c) == 1 then return {0, 'code_reserved'} end
return {0, 'unknown_code'}
";

/// KEYS available, redeemed, held, assigned; ARGV code.
/// `{state, details}`; `unknown` for no such code. Read-only.
const LOOKUP: &str = "
local c = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], c) == 1 then return {'available', ''} end
local v = redis.call('HGET', KEYS[2], c)
if v then return {'redeemed', v} end
v = redis.call('HGET', KEYS[3], c)
if v then return {'reserved', v} end
v = redis.call('HGET', KEYS[4], c)
if v then return {'assigned', v} end
return {'unknown', ''}
";

/// KEYS available, assigned, redeemed, held, idem:KEY; ARGV code, user,
/// request. `{replayed (0/1), 'STATUS body'}`: the stored answer when the
/// key was seen with this request (422 with another); otherwise the
/// redemption is made and its answer stored under the key, expiring.
const KEYED: &str = "
local stored = redis.call('GET', KEYS[5])
if stored then
  local nl = string.find(stored, '\\n', 1, true)
  if string.sub(stored, 1, nl - 1) == ARGV[3] then return {1, string.sub(stored, nl + 1)} end
  return {0, '422 {\"error\":{\"code\":\"idempotency_key_reused\"}}'}
end
local c = ARGV[1]
local answer
if redis.call('SREM', KEYS[1], c) == 1 or redis.call('HDEL', KEYS[2], c) == 1 then
  redis.call('HSET', KEYS[3], c, at .. ' ' .. ARGV[2])
  answer = '201 ' .. cjson.encode({code = c, user = ARGV[2], redeemed_at = at})
else
  local r = redis.call('HGET', KEYS[3], c)
  if r then
    answer = '409 ' .. cjson.encode({error = {code = 'already_redeemed',
      redeemed_at = string.sub(r, 1, string.find(r, ' ', 1, true) - 1)}})
  elseif redis.call('HEXISTS', KEYS[4], c) == 1 then
    answer = '409 {\"error\":{\"code\":\"code_reserved\"}}'
  else
    answer = '404 {\"error\":{\"code\":\"unknown_code\"}}'
  end
end
redis.call('SET', KEYS[5], ARGV[3] .. '\\n' .. answer, 'EX', ARGV[4])
return {0, answer}
";

/// KEYS available, assigned, recipients; ARGV recipient.
/// `{1, code}` new, `{0, code}` the recipient's existing one, `{-1, ''}`
/// none left.
const ASSIGN: &str = "
local r = ARGV[1]
local c = redis.call('HGET', KEYS[3], r)
if c then return {0, c} end
c = redis.call('SPOP', KEYS[1])
if not c then return {-1, ''} end
redis.call('HSET', KEYS[2], c, at .. ' ' .. r)
redis.call('HSET', KEYS[3], r, c)
return {1, c}
";

/// KEYS available, assigned, held, redeemed, reservations, expiries;
/// ARGV code, user, reservation id, ttl in ms. `{1, id}` or `{0, error}`.
const RESERVE: &str = "
local c = ARGV[1]
local prior
local g = redis.call('HGET', KEYS[2], c)
if g then
  redis.call('HDEL', KEYS[2], c)
  prior = g
elseif redis.call('SREM', KEYS[1], c) == 1 then
  prior = ''
elseif redis.call('HEXISTS', KEYS[3], c) == 1 then return {0, 'code_reserved'}
elseif redis.call('HEXISTS', KEYS[4], c) == 1 then return {0, 'already_redeemed'}
else return {0, 'unknown_code'} end
local expires = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[3], c, cjson.encode({id = ARGV[3], user = ARGV[2], expires = expires, prior = prior}))
redis.call('HSET', KEYS[5], ARGV[3], c)
redis.call('ZADD', KEYS[6], expires, ARGV[3])
return {1, ARGV[3]}
";

/// The live hold of reservation ARGV[1] (KEYS held, reservations): sets
/// `c` and `h`, or returns the refusal.
const FIND_HOLD: &str = "
local c = redis.call('HGET', KEYS[2], ARGV[1])
if not c then return {0, 'unknown_reservation'} end
local h = cjson.decode(redis.call('HGET', KEYS[1], c))
if h.expires <= now then return {0, 'reservation_expired'} end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], c)
redis.call('ZREM', KEYS[3], ARGV[1])
";

/// KEYS held, reservations, expiries, redeemed; ARGV reservation id.
/// `{1, redeemed_at}` or `{0, error}`.
const CONFIRM: &str = "
redis.call('HSET', KEYS[4], c, at .. ' ' .. h.user)
return {1, at}
";

/// KEYS held, reservations, expiries, available, assigned; ARGV
/// reservation id. The code goes back to the state it was held from.
const RELEASE: &str = "
if h.prior == '' then
  redis.call('SADD', KEYS[4], c)
else
  redis.call('HSET', KEYS[5], c, h.prior)
end
return {1, c}
";

/// The keys of one run.
#[derive(Clone)]
struct Keys {
    run: String,
    available: String,
    assigned: String,
    held: String,
    redeemed: String,
    recipients: String,
    reservations: String,
    expiries: String,
}

impl Keys {
    fn new(run: String) -> Keys {
        let key = |name: &str| format!("{run}:{name}");
        Keys {
            available: key("available"),
            assigned: key("assigned"),
            held: key("held"),
            redeemed: key("redeemed"),
            recipients: key("recipients"),
            reservations: key("reservations"),
            expiries: key("expiries"),
            run,
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.available,
            &self.assigned,
            &self.held,
            &self.redeemed,
            &self.recipients,
            &self.reservations,
            &self.expiries,
        ]
    }
}

pub struct Setup {
    client: redis::Client,
    keys: Keys,
    /// The server version and persistence settings in force.
    notes: Vec<String>,
    admin: MultiplexedConnection,
    funnel: bool,
}

async fn config(con: &mut MultiplexedConnection, name: &str) -> anyhow::Result<String> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(con)
        .await?;
    Ok(pair.get(1).cloned().unwrap_or_default())
}

impl Target for Setup {
    type Endpoint = str;
    type Conn = Worker;

    /// Generates `codes` codes and loads them into a fresh set; the
    /// baseline needs no token.
    async fn prepare(
        url: &str,
        _token: Option<&str>,
        scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Setup, Vec<String>)> {
        let list = generate_codes(codes, rng);
        let client = redis::Client::open(url).with_context(|| format!("--target {url}"))?;
        let mut admin = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connect to {url}"))?;
        let keys = Keys::new(format!("redeem-bench:{:08x}", rng.next_u64() as u32));
        for chunk in list.chunks(LOAD_BATCH_CODES) {
            let _: u64 = redis::cmd("SADD")
                .arg(&keys.available)
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
            format!("keys {}:*", keys.run),
            format!("redis_version={version}"),
        ];
        for setting in ["appendonly", "appendfsync"] {
            notes.push(format!("{setting}={}", config(&mut admin, setting).await?));
        }
        let setup = Setup {
            client,
            keys,
            notes,
            admin,
            funnel: matches!(scenario, Scenario::Funnel { .. }),
        };
        Ok((setup, list))
    }

    async fn connect(&self, k: usize, races: bool) -> anyhow::Result<Worker> {
        // A connection of its own per worker, like every other target.
        let con = self
            .client
            .get_multiplexed_async_connection()
            .await
            .context("connect to redis")?;
        let script = |body: &[&str]| redis::Script::new(&body.concat());
        Ok(BaselineWorker {
            ops: RedisOps {
                con,
                scripts: Scripts {
                    redeem: script(&[CLOCK, REDEEM]),
                    lookup: script(&[LOOKUP]),
                    keyed: script(&[CLOCK, KEYED]),
                    assign: script(&[CLOCK, ASSIGN]),
                    reserve: script(&[CLOCK, RESERVE]),
                    confirm: script(&[CLOCK, FIND_HOLD, CONFIRM]),
                    release: script(&[CLOCK, FIND_HOLD, RELEASE]),
                },
                keys: self.keys.clone(),
                user: format!("bench-{k}"),
                rng: Rng::seeded(k as u64),
            },
            run: self.keys.run.clone(),
            races,
        })
    }

    async fn server_state(&self) -> anyhow::Result<ServerState> {
        let mut con = self.admin.clone();
        let k = &self.keys;
        let len = |key: &str| {
            let mut cmd = redis::cmd("HLEN");
            cmd.arg(key);
            cmd
        };
        let count: u64 = len(&k.redeemed).query_async(&mut con).await?;
        let codes: Vec<String> = redis::cmd("HKEYS")
            .arg(&k.redeemed)
            .query_async(&mut con)
            .await?;
        let held = if self.funnel {
            Some(Held {
                assigned: len(&k.assigned).query_async(&mut con).await?,
                reserved: len(&k.held).query_async(&mut con).await?,
            })
        } else {
            None
        };
        Ok(ServerState {
            redeemed: count,
            redeemed_codes: codes,
            source: format!("HLEN {}", k.redeemed),
            held,
        })
    }

    async fn cleanup(&self) -> anyhow::Result<()> {
        let mut con = self.admin.clone();
        let _: u64 = redis::cmd("UNLINK")
            .arg(&self.keys.all()[..])
            .query_async(&mut con)
            .await?;
        let pattern = format!("{}:idem:*", self.keys.run);
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query_async(&mut con)
                .await?;
            if !batch.is_empty() {
                let _: u64 = redis::cmd("UNLINK")
                    .arg(&batch)
                    .query_async(&mut con)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

struct Scripts {
    redeem: redis::Script,
    lookup: redis::Script,
    keyed: redis::Script,
    assign: redis::Script,
    reserve: redis::Script,
    confirm: redis::Script,
    release: redis::Script,
}

/// One connection's client, scripts and keys.
pub struct RedisOps {
    con: MultiplexedConnection,
    scripts: Scripts,
    keys: Keys,
    user: String,
    /// Draws reservation ids, which the application makes (as redeemd
    /// does: `rsv_` and 96 random bits).
    rng: Rng,
}

/// What a Redis error means for the harness: a lost connection or a
/// server error.
fn failure(e: redis::RedisError) -> Failure {
    if e.is_io_error() || e.is_connection_dropped() {
        return Failure::Lost("connection_lost");
    }
    // A script that failed half-way is not rolled back.
    Failure::Error {
        what: format!("redis_{}", e.code().unwrap_or("error")),
        maybe_applied: true,
    }
}

/// A script's `{1, value}` / `{0, error code}` answer.
fn outcome(flag: i64, value: String) -> Result<String, &'static str> {
    if flag == 1 {
        return Ok(value);
    }
    Err(match value.as_str() {
        "already_redeemed" => "already_redeemed",
        "code_reserved" => "code_reserved",
        "unknown_code" => "unknown_code",
        "unknown_reservation" => "unknown_reservation",
        "reservation_expired" => "reservation_expired",
        _ => "unexpected_answer",
    })
}

impl Ops for RedisOps {
    async fn redeem(&mut self, code: &str) -> Result<Result<(), &'static str>, Failure> {
        let k = &self.keys;
        let (flag, value): (i64, String) = self
            .scripts
            .redeem
            .key(&k.available)
            .key(&k.assigned)
            .key(&k.redeemed)
            .key(&k.held)
            .arg(code)
            .arg(&self.user)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(outcome(flag, value).map(drop))
    }

    async fn lookup(&mut self, code: &str) -> Result<Result<String, &'static str>, Failure> {
        let k = &self.keys;
        let (state, _details): (String, String) = self
            .scripts
            .lookup
            .key(&k.available)
            .key(&k.redeemed)
            .key(&k.held)
            .key(&k.assigned)
            .arg(code)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(if state == "unknown" {
            Err("unknown_code")
        } else {
            Ok(state)
        })
    }

    async fn redeem_keyed(&mut self, key: &str, code: &str) -> Result<Keyed, Failure> {
        let k = &self.keys;
        let (replayed, answer): (i64, String) = self
            .scripts
            .keyed
            .key(&k.available)
            .key(&k.assigned)
            .key(&k.redeemed)
            .key(&k.held)
            .key(format!("{}:idem:{key}", k.run))
            .arg(code)
            .arg(&self.user)
            .arg(format!("{code} {}", self.user))
            .arg(IDEMPOTENCY_TTL_SECONDS)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        let (status, body) = answer.split_once(' ').unwrap_or(("0", &answer));
        Ok(Keyed {
            status: status.parse().unwrap_or(0),
            body: body.to_owned(),
            replayed: replayed == 1,
        })
    }

    async fn assign(&mut self, recipient: &str) -> Result<Assigned, Failure> {
        let k = &self.keys;
        let (flag, code): (i64, String) = self
            .scripts
            .assign
            .key(&k.available)
            .key(&k.assigned)
            .key(&k.recipients)
            .arg(recipient)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(match flag {
            1 => Assigned::Created(code),
            0 => Assigned::Existing,
            _ => Assigned::Exhausted,
        })
    }

    async fn reserve(&mut self, code: &str) -> Result<Result<String, &'static str>, Failure> {
        let id = format!(
            "rsv_{:016x}{:08x}",
            self.rng.next_u64(),
            self.rng.next_u64() as u32
        );
        let k = &self.keys;
        let (flag, value): (i64, String) = self
            .scripts
            .reserve
            .key(&k.available)
            .key(&k.assigned)
            .key(&k.held)
            .key(&k.redeemed)
            .key(&k.reservations)
            .key(&k.expiries)
            .arg(code)
            .arg(&self.user)
            .arg(&id)
            .arg(RESERVATION_TTL_SECONDS * 1000)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(outcome(flag, value))
    }

    async fn confirm(&mut self, reservation: &str) -> Result<Result<(), &'static str>, Failure> {
        let k = &self.keys;
        let (flag, value): (i64, String) = self
            .scripts
            .confirm
            .key(&k.held)
            .key(&k.reservations)
            .key(&k.expiries)
            .key(&k.redeemed)
            .arg(reservation)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(outcome(flag, value).map(drop))
    }

    async fn release(&mut self, reservation: &str) -> Result<Result<(), &'static str>, Failure> {
        let k = &self.keys;
        let (flag, value): (i64, String) = self
            .scripts
            .release
            .key(&k.held)
            .key(&k.reservations)
            .key(&k.expiries)
            .key(&k.available)
            .key(&k.assigned)
            .arg(reservation)
            .invoke_async(&mut self.con)
            .await
            .map_err(failure)?;
        Ok(outcome(flag, value).map(drop))
    }
}
