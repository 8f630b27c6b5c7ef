//! `redeem-bench`: drives load at redeemd over its public HTTP API (or at
//! a PostgreSQL or Redis baseline), measures latency with HDR histograms,
//! and then audits that every code was redeemed at most once and that the
//! server stored exactly the redemptions it acknowledged.
//!
//! # Layout
//! - `plan`: the scenarios and the shared counter that hands out work.
//! - `driver`: the closed- and open-loop load loops, progress line.
//! - `client`: a minimal HTTP/1.1 keep-alive client.
//! - `targets`: the `Target` and `Connection` traits, implemented by
//!   redeemd, postgres and redis: setup, one connection, audit state.
//! - `stats`: histograms, outcome counts, per-second series, per-code tracking.
//! - `audit`: the checks run after the load.
//! - `report`: table, JSON, HTML with inline SVG.
//! - `compare`: the side-by-side table `compare.sh` prints.
//! - `bulk`: the `bulk` scenario, one streamed recipient file (redeemd only).

mod audit;
mod bulk;
mod client;
mod compare;
mod driver;
mod pacer;
mod plan;
mod report;
mod stats;
mod targets;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::driver::{Ctx, RunConfig, Stop};
use crate::plan::{Plan, Rng, Scenario};
use crate::targets::{Spec, Target};

/// The open loop's slowest and fastest schedules, operations a second.
const RATE_MIN: f64 = 0.001;
const RATE_MAX: f64 = 10_000_000.0;

#[derive(Parser)]
#[command(
    name = "redeem-bench",
    version,
    about = "Load harness for redeemd: drive a scenario, measure latency, audit the outcome.",
    long_about = "Load harness for redeemd.\n\n\
        Each run creates its own campaign through the API (or loads the same number of \
        codes into a PostgreSQL or Redis baseline), drives one scenario over N keep-alive \
        connections, prints a latency table, and then audits the result: at most one \
        success per code, the server's redeemed count equal to the successes seen, the \
        stored redemptions exactly the acknowledged ones, no 5xx. A failed audit exits 1.\n\n\
        Example: redeem-bench uniform --url http://127.0.0.1:8080 --duration 30s --connections 64"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Redeem distinct random codes, one per operation.
    #[command(long_about = "Redeem distinct random codes, one per operation.\n\n\
        Every redemption should answer 201; the throughput is that of durable, \
        uncontended redemptions. Also runs against --target postgres://... and redis://...")]
    Uniform(RunArgs),
    /// Many clients storm a few codes at once: exactly one wins each.
    #[command(
        long_about = "Many clients storm a few codes at once: exactly one wins each.\n\n\
        Operations are handed out so that --storm redemptions target each code, with \
        --width codes under attack at a time; with 64 connections nearly all of them race \
        for the same few codes. The audit requires exactly one success per stormed code; \
        the losers must answer 409 already_redeemed. Also runs against the baselines."
    )]
    Hot {
        #[command(flatten)]
        run: RunArgs,
        /// Redemption attempts per code.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
        storm: u64,
        /// Codes stormed at the same time.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
        width: u64,
    },
    /// The checkout funnel: assign, reserve, then confirm or release.
    #[command(
        long_about = "The checkout funnel: assign, reserve, then confirm or release.\n\n\
        Each operation assigns a code to a fresh recipient, reserves it, and then confirms \
        the reservation (a redemption) with probability --confirm-ratio or releases it. \
        Latency is reported per step and per whole funnel."
    )]
    Funnel {
        #[command(flatten)]
        run: RunArgs,
        /// Share of reservations confirmed; the rest are released.
        #[arg(long, default_value_t = 0.8)]
        confirm_ratio: f64,
    },
    /// Every redemption sent twice with one Idempotency-Key.
    #[command(
        long_about = "Every redemption sent twice with one Idempotency-Key.\n\n\
        The second send (the `replay` row) must return the first answer byte for byte, \
        marked Idempotent-Replayed: true, and must not redeem anything again."
    )]
    Retry(RunArgs),
    /// Lookup-heavy mix: GET /v1/codes/{code} with some redemptions.
    #[command(
        long_about = "Lookup-heavy mix: GET /v1/codes/{code} with some redemptions.\n\n\
        Each operation looks up a random code of the campaign, except a --redeem-ratio \
        share that redeems a fresh code; the run ends early if the redemptions use up \
        the codes."
    )]
    Validate {
        #[command(flatten)]
        run: RunArgs,
        /// Share of operations that redeem instead of looking up.
        #[arg(long, default_value_t = 0.1)]
        redeem_ratio: f64,
    },
    /// Bulk-assign a generated recipient file of --lines lines.
    #[command(
        long_about = "Bulk-assign a generated recipient file of --lines lines.\n\n\
        Creates a campaign with 10% more codes than lines, posts the file to \
        POST /v1/campaigns/{id}/assignments/bulk, and reports lines/s and the time to the \
        last row: each row is sent only once durable, so that is when the whole file is. \
        The audit requires one row a line in file order, each `created` with a distinct \
        code, and a resend of the file answering `existing` with the same code on every \
        line. redeemd only: the baselines have no bulk assignment."
    )]
    Bulk(BulkArgs),
    /// Print one side-by-side table from the --json files of several runs.
    #[command(
        long_about = "Print one side-by-side table from the --json files of several runs.\n\n\
        Closed-loop runs are grouped by scenario; each scenario's redeemd run is the \
        reference the ratios are computed against (redeemd / the target: ops/s above 1x \
        means redeemd is faster). Open-loop runs (--rate) form a latency section. With \
        --html, also writes a self-contained page with the same figures as charts."
    )]
    Compare {
        /// JSON files written by --json.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also write the comparison as a self-contained HTML page of charts
        /// (inline SVG) to this file.
        #[arg(long, value_name = "FILE.html")]
        html: Option<PathBuf>,
        /// A line about how the runs were made (machine, load), shown at the
        /// top of the HTML page; may be repeated.
        #[arg(long, value_name = "TEXT")]
        note: Vec<String>,
    },
}

#[derive(Args, Clone)]
struct BulkArgs {
    /// redeemd's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// What to load; only `redeemd` (at --url) has bulk assignment.
    #[arg(long, default_value = "redeemd")]
    target: String,
    /// Bearer token: admin (creating the campaign needs admin). Not needed
    /// with --no-auth. Also read from REDEEM_BENCH_TOKEN.
    #[arg(long)]
    token: Option<String>,
    /// Recipients in the file.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    lines: u64,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// redeemd's base URL (http only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// What to load: `redeemd` (at --url), `postgres://user@host:port/db`, or
    /// `redis://host:port`. The baselines run every scenario but `bulk`.
    #[arg(long, default_value = "redeemd")]
    target: String,
    /// How long to measure after the warm-up, e.g. 30s, 2m, 500ms.
    #[arg(long, default_value = "30s", value_parser = parse_duration, conflicts_with = "count")]
    duration: Duration,
    /// Measure this many operations after the warm-up instead of a duration.
    #[arg(long)]
    count: Option<u64>,
    /// Keep-alive connections, each with one request in flight at a time.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    connections: u64,
    /// Open loop: start this many operations a second in total, on a fixed
    /// schedule, and measure latency from each scheduled time
    /// (coordinated omission corrected). Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report (latency percentiles and
    /// throughput over time as inline SVG) to this file.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Bearer token for redeemd: an admin token (creating the campaign and
    /// exporting its codes need admin). Not needed with --no-auth. Also read
    /// from REDEEM_BENCH_TOKEN, which keeps it out of `ps`.
    #[arg(long)]
    token: Option<String>,
    /// Codes in the campaign (or loaded into the baseline). A run that uses
    /// them all stops early and says so.
    #[arg(long, default_value_t = 500_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    codes: u64,
    /// Traffic sent before measuring starts; its answers count in the
    /// audit but not in the latency figures.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Tokio worker threads for the harness. 1 keeps the harness on one
    /// core, leaving the other to the server on a 2-core machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,
    /// Longest wait for one answer; a request without an answer by then
    /// counts as lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// `30s`, `2m`, `500ms`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn main() {
    let cli = Cli::parse();
    let (scenario, args) = match cli.command {
        Command::Compare { files, html, note } => {
            let result = compare::Comparison::load(&files).and_then(|c| {
                print!("{}", c.table());
                if let Some(path) = &html {
                    std::fs::write(path, c.html(&note))
                        .with_context(|| format!("write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                Ok(())
            });
            if let Err(e) = result {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
            return;
        }
        Command::Bulk(args) => match run_bulk(args) {
            Ok(true) => return,
            Ok(false) => {
                eprintln!("redeem-bench: AUDIT FAILED (see the checks above)");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        },
        Command::Uniform(run) => (Scenario::Uniform, run),
        Command::Hot { run, storm, width } => (Scenario::Hot { storm, width }, run),
        Command::Funnel { run, confirm_ratio } => (Scenario::Funnel { confirm_ratio }, run),
        Command::Retry(run) => (Scenario::Retry, run),
        Command::Validate { run, redeem_ratio } => (Scenario::Validate { redeem_ratio }, run),
    };
    match run(scenario, args) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("redeem-bench: AUDIT FAILED (see the checks above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Runs one scenario; `Ok(false)` when the audit failed.
fn run(scenario: Scenario, mut args: RunArgs) -> anyhow::Result<bool> {
    if args.token.is_none() {
        args.token = std::env::var("REDEEM_BENCH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
    }
    for (name, ratio) in [
        (
            "--confirm-ratio",
            matches!(scenario, Scenario::Funnel { confirm_ratio } if !(0.0..=1.0).contains(&confirm_ratio)),
        ),
        (
            "--redeem-ratio",
            matches!(scenario, Scenario::Validate { redeem_ratio } if !(0.0..=1.0).contains(&redeem_ratio)),
        ),
    ] {
        if ratio {
            bail!("{name} must be between 0 and 1");
        }
    }
    // Bounded so that a slot's length is a representable duration.
    if args
        .rate
        .is_some_and(|r| !(RATE_MIN..=RATE_MAX).contains(&r))
    {
        bail!("--rate must be between {RATE_MIN} and {RATE_MAX} operations a second");
    }
    let spec = Spec::parse(&args.target, &args.url)?;
    runtime(args.threads as usize)?.block_on(run_target(&spec, scenario, &args))
}

/// Runs the bulk scenario; `Ok(false)` when the audit failed.
fn run_bulk(mut args: BulkArgs) -> anyhow::Result<bool> {
    if args.token.is_none() {
        args.token = std::env::var("REDEEM_BENCH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
    }
    let spec = Spec::parse(&args.target, &args.url)?;
    let Spec::Redeemd { addr, .. } = spec else {
        bail!(
            "the {} baseline has no bulk assignment: the bulk scenario runs against redeemd only",
            spec.kind()
        );
    };
    let result = runtime(1)?.block_on(bulk::run(addr, args.token.as_deref(), args.lines))?;
    let rate = |t: Duration| result.lines as f64 / t.as_secs_f64().max(1e-9);
    println!("bulk: {} lines, campaign {}", result.lines, result.campaign);
    for (name, t) in [("first send", &result.first), ("resend", &result.resend)] {
        println!(
            "  {name:<10}  head {:>8.3} s  last durable row {:>8.3} s  {:>10.0} lines/s",
            t.head.as_secs_f64(),
            t.last_row.as_secs_f64(),
            rate(t.last_row)
        );
    }
    println!("audit:");
    println!(
        "  {}  a row a line in order, each created with a distinct code; a resend gives existing with the same codes",
        if result.failures.is_empty() {
            "ok  "
        } else {
            "FAIL"
        }
    );
    for failure in &result.failures {
        println!("        {failure}");
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "scenario": "bulk",
            "target": "redeemd",
            "endpoint": args.url,
            "campaign": result.campaign,
            "lines": result.lines,
            "first": {
                "head_seconds": result.first.head.as_secs_f64(),
                "last_row_seconds": result.first.last_row.as_secs_f64(),
                "lines_per_second": rate(result.first.last_row),
            },
            "resend": {
                "head_seconds": result.resend.head.as_secs_f64(),
                "last_row_seconds": result.resend.last_row.as_secs_f64(),
                "lines_per_second": rate(result.resend.last_row),
            },
            "audit": { "passed": result.failures.is_empty(), "failures": result.failures },
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(result.failures.is_empty())
}

/// The tokio runtime the harness runs on, with `threads` worker threads.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Runs the scenario against the target `spec` names. This is the one
/// place an implementation of [`Target`] is chosen; all that follows is
/// generic over it.
async fn run_target(spec: &Spec, scenario: Scenario, args: &RunArgs) -> anyhow::Result<bool> {
    use targets::{postgres, redeemd, redis};

    eprintln!("preparing {} with {} codes ...", spec.kind(), args.codes);
    match spec {
        Spec::Redeemd { addr, .. } => bench::<redeemd::Setup>(addr, spec, scenario, args).await,
        Spec::Postgres(url) => bench::<postgres::Setup>(url, spec, scenario, args).await,
        Spec::Redis(url) => bench::<redis::Setup>(url, spec, scenario, args).await,
    }
}

/// Prepares target `T` at `endpoint`, drives the load, audits what the
/// target stored, reports, and cleans up; `Ok(false)` when the audit failed.
async fn bench<T: Target>(
    endpoint: &T::Endpoint,
    spec: &Spec,
    scenario: Scenario,
    args: &RunArgs,
) -> anyhow::Result<bool> {
    let mut rng = Rng::seeded(u64::from(std::process::id()));
    let (target, mut codes) = T::prepare(
        endpoint,
        args.token.as_deref(),
        scenario,
        args.codes,
        &mut rng,
    )
    .await?;
    // Checkouts arrive in no particular order of issue.
    rng.shuffle(&mut codes);
    let ctx = Arc::new(Ctx::new(Plan::new(scenario, codes), args.timeout));
    let conns = targets::connect_all(&target, args.connections as usize, scenario.races()).await?;
    let cfg = RunConfig {
        connections: conns.len(),
        rate: args.rate,
        warmup: args.warmup,
        stop: match args.count {
            Some(n) => Stop::Count(n),
            None => Stop::After(args.duration),
        },
    };
    eprintln!(
        "running {} for {} after {:?} of warm-up over {} connections ...",
        scenario.name(),
        match cfg.stop {
            Stop::After(d) => format!("{d:?}"),
            Stop::Count(n) => format!("{n} operations"),
        },
        cfg.warmup,
        cfg.connections
    );
    let result = driver::run(conns, ctx.clone(), &cfg).await;
    eprintln!("auditing ...");
    let state = target
        .server_state()
        .await
        .context("read the server's state for the audit")?;
    let audit = audit::audit(&ctx, &result.summary, &state);
    let meta = report::Meta {
        scenario: scenario.name(),
        description: scenario.describe(),
        target: spec.kind(),
        endpoint: spec.endpoint().to_owned(),
        connections: cfg.connections,
        rate: cfg.rate,
        warmup_seconds: cfg.warmup.as_secs_f64(),
        duration_seconds: args.count.is_none().then_some(args.duration.as_secs_f64()),
        count: args.count,
        codes: args.codes,
        threads: args.threads as usize,
        notes: target.notes(),
    };
    write_reports(&meta, &result, &audit, args)?;
    if let Err(e) = target.cleanup().await {
        eprintln!("warning: cleanup failed: {e:#}");
    }
    Ok(audit.passed())
}

/// Prints the table, and writes the `--json` and `--report` files if asked.
fn write_reports(
    meta: &report::Meta,
    result: &driver::RunResult,
    audit: &audit::Audit,
    args: &RunArgs,
) -> anyhow::Result<()> {
    print!("{}", report::table(meta, result, audit));
    if let Some(path) = &args.json {
        let doc = report::json(meta, result, audit);
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(meta, result, audit))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Option<Duration>) {
        assert_eq!(parse_duration(input).ok(), expected);
    }

    #[test]
    fn durations() {
        check("30s", Some(Duration::from_secs(30)));
        check("30", Some(Duration::from_secs(30)));
        check("2m", Some(Duration::from_secs(120)));
        check("500ms", Some(Duration::from_millis(500)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("10x", None);
        check("s", None);
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
