//! redeemd through its public HTTP API (API.md): a fresh campaign per run,
//! its codes from the CSV export, and every scenario.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::{Head, HttpClient, json_str_field};
use crate::driver::Ctx;
use crate::plan::{Rng, Scenario, Work};
use crate::stats::{Class, Kind, Recorder};
use crate::targets::{Connection, Held, ServerState, Target, transport_pause};

/// How long setup and audit requests (generation, export) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to wait for `/readyz` while the server replays its log.
const READY_WAIT: Duration = Duration::from_secs(60);
/// Campaign ids and prefixes tried before giving up on conflicts.
const CREATE_ATTEMPTS_MAX: u32 = 8;
/// Symbols a generated prefix is drawn from (API.md allows `[A-Z0-9]`).
const PREFIX_SYMBOLS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Body symbols per code; 32^10 leaves room for a billion codes under the
/// server's guessing bound.
const CODE_LENGTH: u32 = 10;

/// What every connection to this campaign shares.
struct Shared {
    addr: SocketAddr,
    token: Option<String>,
    campaign: String,
    /// Distinguishes this run's idempotency keys and recipients.
    run_id: String,
    races: bool,
    /// A funnel run: the audit also reads the assigned and reserved counts.
    funnel: bool,
}

pub struct Setup {
    shared: Arc<Shared>,
}

/// Creates a campaign of `codes` codes with no per-user limit under a
/// fresh id and prefix, and returns its id.
pub(crate) async fn create_campaign(
    http: &mut HttpClient,
    scenario: &str,
    codes: u64,
    rng: &mut Rng,
) -> anyhow::Result<String> {
    for _ in 0..CREATE_ATTEMPTS_MAX {
        let id = format!("bench-{scenario}-{:08x}", rng.next_u64() as u32);
        let prefix: String = (0..8)
            .map(|_| PREFIX_SYMBOLS[rng.below(PREFIX_SYMBOLS.len() as u64) as usize] as char)
            .collect();
        http.start("POST", "/v1/campaigns");
        http.json(format_args!(
            r#"{{"id":"{id}","generate":{codes},"code":{{"prefix":"{prefix}","length":{CODE_LENGTH}}},"per_user_limit":0}}"#
        ));
        let head = admin(http, "create campaign").await?;
        match (head.status, json_str_field(&http.body, "code")) {
            (201, _) => return Ok(id),
            (409, Some("campaign_exists" | "prefix_conflict")) => continue,
            (401 | 403, _) => bail!(
                "create campaign: HTTP {}: the harness needs an admin token (--token) or a server started with --no-auth",
                head.status
            ),
            (status, _) => bail!(
                "create campaign: HTTP {status}: {}",
                String::from_utf8_lossy(&http.body)
            ),
        }
    }
    bail!("create campaign: {CREATE_ATTEMPTS_MAX} ids or prefixes in a row were taken");
}

async fn admin(http: &mut HttpClient, what: &str) -> anyhow::Result<Head> {
    match tokio::time::timeout(ADMIN_TIMEOUT, http.send()).await {
        Ok(Ok(head)) => Ok(head),
        Ok(Err(e)) => Err(e).with_context(|| format!("{what}: is redeemd listening?")),
        Err(_) => bail!("{what}: no answer within {ADMIN_TIMEOUT:?}"),
    }
}

pub(crate) async fn wait_ready(http: &mut HttpClient) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        http.start("GET", "/readyz");
        http.no_body();
        let last = match tokio::time::timeout(Duration::from_secs(5), http.send()).await {
            Ok(Ok(head)) if head.status == 200 => return Ok(()),
            Ok(Ok(head)) => format!("HTTP {}", head.status),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timeout".into(),
        };
        if Instant::now() >= deadline {
            bail!("redeemd is not ready after {READY_WAIT:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The campaign's codes from `GET /v1/campaigns/{id}/codes`, in export order.
async fn export(
    http: &mut HttpClient,
    campaign: &str,
    state: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let path = match state {
        None => format!("/v1/campaigns/{campaign}/codes"),
        Some(s) => format!("/v1/campaigns/{campaign}/codes?state={s}"),
    };
    http.start("GET", &path);
    http.no_body();
    let head = admin(http, "export codes").await?;
    if head.status != 200 {
        bail!(
            "export codes: HTTP {}: {}",
            head.status,
            String::from_utf8_lossy(&http.body)
        );
    }
    let text = std::str::from_utf8(&http.body).context("export codes: not UTF-8")?;
    let mut lines = text.lines();
    if lines.next() != Some("code,state") {
        bail!("export codes: the CSV does not start with `code,state`");
    }
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(',')
                .map(|(code, _)| code.to_owned())
                .with_context(|| format!("export codes: bad line {l:?}"))
        })
        .collect()
}

impl Target for Setup {
    type Endpoint = SocketAddr;
    type Conn = Worker;

    /// Waits for readiness, creates a campaign of `codes` codes with no
    /// per-user limit, and exports its codes.
    async fn prepare(
        addr: &SocketAddr,
        token: Option<&str>,
        scenario: Scenario,
        codes: u64,
        rng: &mut Rng,
    ) -> anyhow::Result<(Setup, Vec<String>)> {
        let mut http = HttpClient::new(*addr, token);
        wait_ready(&mut http).await?;
        let campaign = create_campaign(&mut http, scenario.name(), codes, rng).await?;
        let list = export(&mut http, &campaign, None).await?;
        if list.len() as u64 != codes {
            bail!(
                "the export of campaign {campaign} listed {} codes, expected {codes}",
                list.len()
            );
        }
        let shared = Arc::new(Shared {
            addr: *addr,
            token: token.map(str::to_owned),
            run_id: campaign.clone(),
            campaign,
            races: scenario.races(),
            funnel: matches!(scenario, Scenario::Funnel { .. }),
        });
        Ok((Setup { shared }, list))
    }

    /// Opens the connection now, so the first operation is not charged for
    /// the handshake; `races` was already taken from the scenario.
    async fn connect(&self, k: usize, _races: bool) -> anyhow::Result<Worker> {
        let mut http = HttpClient::new(self.shared.addr, self.shared.token.as_deref());
        http.connect().await.context("connect to redeemd")?;
        Ok(Worker {
            http,
            shared: self.shared.clone(),
            user: format!("bench-{k}"),
            first_body: Vec::new(),
            path: String::new(),
        })
    }

    /// The campaign's `redeemed` stat and its redeemed codes.
    async fn server_state(&self) -> anyhow::Result<ServerState> {
        let s = &self.shared;
        let mut http = HttpClient::new(s.addr, s.token.as_deref());
        http.start("GET", &format!("/v1/campaigns/{}", s.campaign));
        http.no_body();
        let head = admin(&mut http, "read campaign stats").await?;
        if head.status != 200 {
            bail!(
                "read campaign stats: HTTP {}: {}",
                head.status,
                String::from_utf8_lossy(&http.body)
            );
        }
        let campaign: serde_json::Value =
            serde_json::from_slice(&http.body).context("read campaign stats: bad JSON")?;
        let redeemed = campaign["stats"]["redeemed"]
            .as_u64()
            .context("read campaign stats: no stats.redeemed")?;
        let held = if s.funnel {
            let stat = |name: &str| {
                campaign["stats"][name]
                    .as_u64()
                    .with_context(|| format!("read campaign stats: no stats.{name}"))
            };
            Some(Held {
                assigned: stat("assigned")?,
                reserved: stat("reserved")?,
            })
        } else {
            None
        };
        let codes = export(&mut http, &s.campaign, Some("redeemed")).await?;
        Ok(ServerState {
            redeemed,
            redeemed_codes: codes,
            source: format!("GET /v1/campaigns/{} stats.redeemed", s.campaign),
            held,
        })
    }

    /// Leaves the campaign in place: campaigns cannot be deleted through
    /// the API.
    async fn cleanup(&self) -> anyhow::Result<()> {
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        vec![format!("campaign {}", self.shared.campaign)]
    }
}

/// One connection.
pub struct Worker {
    http: HttpClient,
    shared: Arc<Shared>,
    user: String,
    /// The first answer's body in `retry`, to compare the replay with.
    first_body: Vec<u8>,
    path: String,
}

/// What a request came back with.
enum Answer {
    Head(Head),
    /// No answer; the effect is unknown.
    Lost,
}

impl Connection for Worker {
    async fn execute(&mut self, ctx: &Ctx, work: Work, scheduled: Instant, rec: &mut Recorder) {
        match work {
            Work::Redeem(idx) => {
                let code = &ctx.plan.codes[idx as usize];
                ctx.tracking.attempt(idx);
                self.http.start("POST", "/v1/redemptions");
                self.http.json(format_args!(
                    r#"{{"code":"{code}","user":"{}"}}"#,
                    self.user
                ));
                let answer = self
                    .call(ctx, rec, scheduled, Kind::Redeem, scheduled)
                    .await;
                effect(ctx, idx, &answer, 201);
            }
            Work::Lookup(idx) => {
                let code = &ctx.plan.codes[idx as usize];
                self.path.clear();
                self.path.push_str("/v1/codes/");
                self.path.push_str(code);
                self.http.start("GET", &self.path);
                self.http.no_body();
                self.call(ctx, rec, scheduled, Kind::Lookup, scheduled)
                    .await;
            }
            Work::Retry(idx) => self.retry(ctx, idx, scheduled, rec).await,
            Work::Funnel { seq, confirm } => self.funnel(ctx, seq, confirm, scheduled, rec).await,
        }
        rec.op(&ctx.live, scheduled, Instant::now());
    }

    fn reconnects(&self) -> u64 {
        self.http.reconnects
    }
}

impl Worker {
    async fn retry(&mut self, ctx: &Ctx, idx: u32, scheduled: Instant, rec: &mut Recorder) {
        let code = &ctx.plan.codes[idx as usize];
        ctx.tracking.attempt(idx);
        let key = format!("{}-{idx}", self.shared.run_id);
        keyed_redemption(&mut self.http, code, &self.user, &key);
        let first = self
            .call(ctx, rec, scheduled, Kind::Redeem, scheduled)
            .await;
        self.first_body.clear();
        self.first_body.extend_from_slice(&self.http.body);
        keyed_redemption(&mut self.http, code, &self.user, &key);
        let start = Instant::now();
        let replay = self.send(ctx).await;
        let end = Instant::now();
        let (status, verdict, class) = match (&first, &replay) {
            (_, Answer::Lost) => (0, "no_answer", Class::Transport),
            (_, Answer::Head(h)) if h.status >= 500 => (h.status, "", Class::Server),
            (Answer::Head(f), Answer::Head(r)) => {
                if f.status >= 500 {
                    // A 5xx is not stored: the replay ran anew.
                    (r.status, "after_5xx", Class::Expected)
                } else if r.status != f.status || self.http.body != self.first_body {
                    ctx.tracking
                        .replay_mismatches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (r.status, "replay_differs", Class::Unexpected)
                } else if !r.replayed {
                    ctx.tracking
                        .replay_unmarked
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (r.status, "not_marked_replayed", Class::Unexpected)
                } else {
                    (r.status, "", Class::Expected)
                }
            }
            // The first send got no answer: the replay is the answer.
            (Answer::Lost, Answer::Head(r)) => (r.status, "first_lost", Class::Expected),
        };
        rec.request(
            &ctx.live,
            scheduled,
            Kind::Replay,
            start,
            end,
            status,
            verdict,
            class,
        );
        // The redemption happened if either send says so; it is unknown
        // only if neither answered.
        match (&first, &replay) {
            (Answer::Head(h), _) | (Answer::Lost, Answer::Head(h)) if h.status == 201 => {
                ctx.tracking.success(idx)
            }
            (Answer::Lost, Answer::Lost) => ctx.tracking.unknown(idx),
            _ => {}
        }
    }

    async fn funnel(
        &mut self,
        ctx: &Ctx,
        seq: u64,
        confirm: bool,
        scheduled: Instant,
        rec: &mut Recorder,
    ) {
        self.path.clear();
        self.path.push_str("/v1/campaigns/");
        self.path.push_str(&self.shared.campaign);
        self.path.push_str("/assignments");
        self.http.start("POST", &self.path);
        self.http.json(format_args!(
            r#"{{"recipient":"{}-r{seq}"}}"#,
            self.shared.run_id
        ));
        let assigned = self
            .call(ctx, rec, scheduled, Kind::Assign, scheduled)
            .await;
        if !ok(&assigned, 201) {
            lost(ctx, &assigned);
            return;
        }
        let Some(idx) = json_str_field(&self.http.body, "code").and_then(|c| ctx.plan.index_of(c))
        else {
            rec.request(
                &ctx.live,
                scheduled,
                Kind::Assign,
                scheduled,
                Instant::now(),
                201,
                "unknown_code_assigned",
                Class::Unexpected,
            );
            return;
        };
        ctx.tracking.assigned.fetch_add(1, Relaxed);
        ctx.tracking.attempt(idx);
        let code = &ctx.plan.codes[idx as usize];
        self.http.start("POST", "/v1/reservations");
        self.http.json(format_args!(
            r#"{{"code":"{code}","user":"{}"}}"#,
            self.user
        ));
        let reserved = self
            .call(ctx, rec, scheduled, Kind::Reserve, Instant::now())
            .await;
        if !ok(&reserved, 201) {
            lost(ctx, &reserved);
            return;
        }
        ctx.tracking.reserved.fetch_add(1, Relaxed);
        let Some(reservation) = json_str_field(&self.http.body, "reservation") else {
            rec.request(
                &ctx.live,
                scheduled,
                Kind::Reserve,
                scheduled,
                Instant::now(),
                201,
                "no_reservation_id",
                Class::Unexpected,
            );
            return;
        };
        self.path.clear();
        self.path.push_str("/v1/reservations/");
        self.path.push_str(reservation);
        if confirm {
            self.path.push_str("/confirm");
            self.http.start("POST", &self.path);
            self.http.json(format_args!("{{}}"));
            let answer = self
                .call(ctx, rec, scheduled, Kind::Confirm, Instant::now())
                .await;
            effect(ctx, idx, &answer, 201);
            lost(ctx, &answer);
        } else {
            self.http.start("DELETE", &self.path);
            self.http.no_body();
            let answer = self
                .call(ctx, rec, scheduled, Kind::Release, Instant::now())
                .await;
            if ok(&answer, 200) {
                ctx.tracking.released.fetch_add(1, Relaxed);
            }
            lost(ctx, &answer);
        }
    }

    /// Sends the request built in `self.http` and waits for its answer.
    async fn send(&mut self, ctx: &Ctx) -> Answer {
        match tokio::time::timeout(ctx.timeout, self.http.send()).await {
            Ok(Ok(head)) => Answer::Head(head),
            Ok(Err(_)) => Answer::Lost,
            Err(_) => {
                self.http.disconnect();
                Answer::Lost
            }
        }
    }

    /// `send`, then records the answer as a request of `kind` that was due
    /// at `start`, in the operation due at `op_start`.
    async fn call(
        &mut self,
        ctx: &Ctx,
        rec: &mut Recorder,
        op_start: Instant,
        kind: Kind,
        start: Instant,
    ) -> Answer {
        let result = tokio::time::timeout(ctx.timeout, self.http.send()).await;
        let end = Instant::now();
        match result {
            Ok(Ok(head)) => {
                let code = if head.status >= 300 {
                    json_str_field(&self.http.body, "code").unwrap_or("?")
                } else {
                    ""
                };
                let class = classify(kind, head.status, code, self.shared.races);
                rec.request(
                    &ctx.live,
                    op_start,
                    kind,
                    start,
                    end,
                    head.status,
                    code,
                    class,
                );
                Answer::Head(head)
            }
            Ok(Err(e)) => {
                let what = format!("{:?}", e.kind());
                rec.request(
                    &ctx.live,
                    op_start,
                    kind,
                    start,
                    end,
                    0,
                    &what,
                    Class::Transport,
                );
                transport_pause().await;
                Answer::Lost
            }
            Err(_) => {
                // The connection may still carry the late answer: drop it.
                self.http.disconnect();
                rec.request(
                    &ctx.live,
                    op_start,
                    kind,
                    start,
                    end,
                    0,
                    "timeout",
                    Class::Transport,
                );
                Answer::Lost
            }
        }
    }
}

fn keyed_redemption(http: &mut HttpClient, code: &str, user: &str, key: &str) {
    http.start("POST", "/v1/redemptions");
    http.header("Idempotency-Key", key);
    http.json(format_args!(r#"{{"code":"{code}","user":"{user}"}}"#));
}

/// Books a funnel request without an answer: it may have moved a code.
fn lost(ctx: &Ctx, answer: &Answer) {
    if matches!(answer, Answer::Lost) {
        ctx.tracking.funnel_lost.fetch_add(1, Relaxed);
    }
}

fn ok(answer: &Answer, status: u16) -> bool {
    matches!(answer, Answer::Head(h) if h.status == status)
}

/// Books a redemption's effect on code `idx` for the audit.
fn effect(ctx: &Ctx, idx: u32, answer: &Answer, success: u16) {
    match answer {
        Answer::Head(h) if h.status == success => ctx.tracking.success(idx),
        Answer::Head(_) => {}
        Answer::Lost => ctx.tracking.unknown(idx),
    }
}

/// How an answer of redeemd counts in a scenario.
fn classify(kind: Kind, status: u16, code: &str, races: bool) -> Class {
    if status >= 500 {
        return Class::Server;
    }
    match (kind, status) {
        (Kind::Redeem | Kind::Confirm, 201) => Class::Success,
        (Kind::Redeem, 409) if races && code == "already_redeemed" => Class::Expected,
        (Kind::Assign | Kind::Reserve, 201) | (Kind::Lookup | Kind::Release, 200) => {
            Class::Expected
        }
        _ => Class::Unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(Kind::Redeem, 201, "", false), Class::Success);
        assert_eq!(
            classify(Kind::Redeem, 409, "already_redeemed", true),
            Class::Expected
        );
        assert_eq!(
            classify(Kind::Redeem, 409, "already_redeemed", false),
            Class::Unexpected
        );
        assert_eq!(
            classify(Kind::Redeem, 503, "log_failed", true),
            Class::Server
        );
        assert_eq!(classify(Kind::Lookup, 200, "", false), Class::Expected);
        assert_eq!(
            classify(Kind::Confirm, 410, "reservation_expired", false),
            Class::Unexpected
        );
    }
}
