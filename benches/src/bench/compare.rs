//! `redeem-bench compare`: one side-by-side table, and optionally a
//! self-contained HTML page of charts, from the `--json` files of several
//! runs. Closed-loop runs are grouped by scenario, each scenario's redeemd
//! run the reference of the ratios; open-loop runs form the latency
//! section (each target at its own fixed rate).

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::report::{esc, grouped_bars_svg};

/// The targets in the order tables and charts show them.
const TARGETS: [&str; 3] = ["redeemd", "postgres", "redis"];

struct Run {
    scenario: String,
    target: String,
    /// Open loop at this rate; `None` for closed loop.
    rate: Option<f64>,
    ops: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    passed: bool,
}

fn load(path: &PathBuf) -> anyhow::Result<Run> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let field = |p: &str| {
        v.pointer(p)
            .with_context(|| format!("{}: no {p}", path.display()))
    };
    let number = |p: &str| -> anyhow::Result<f64> {
        field(p)?
            .as_f64()
            .with_context(|| format!("{}: {p} is not a number", path.display()))
    };
    let open = v.pointer("/mode").and_then(Value::as_str) == Some("open");
    Ok(Run {
        scenario: field("/scenario")?.as_str().unwrap_or("?").to_owned(),
        target: field("/target")?.as_str().unwrap_or("?").to_owned(),
        rate: if open { Some(number("/rate")?) } else { None },
        ops: number("/ops_per_second")?,
        p50: number("/latency_ms/p50")?,
        p99: number("/latency_ms/p99")?,
        p999: number("/latency_ms/p99.9")?,
        passed: field("/audit/passed")?.as_bool().unwrap_or(false),
    })
}

/// The runs of several `--json` files, split into closed and open loop.
pub struct Comparison {
    closed: Vec<Run>,
    open: Vec<Run>,
}

/// `a / b` as `1.23x`, or `-` when there is nothing to divide.
fn ratio(a: Option<f64>, b: f64) -> String {
    match a {
        Some(a) if a > 0.0 && b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".to_owned(),
    }
}

/// Scenarios in the order their first run came, so the caller's order holds.
/// A column a ratio is taken on: its name and how to read it off a run.
type Measure = (&'static str, fn(&Run) -> f64);

/// One part of the table: a heading, the column heads, and a row per
/// scenario and target with redeemd's ratio to it on two measures.
fn section(
    out: &mut String,
    runs: &[Run],
    heading: &str,
    first: &str,
    measures: [Measure; 2],
    label: impl Fn(&str, &Run) -> String,
) {
    let _ = writeln!(out, "{heading}");
    let ratios = format!("redeemd/this: {:>8} {:>6}", measures[0].0, measures[1].0);
    let _ = writeln!(
        out,
        "{first:<10} {:<9} {:>10} {:>9} {:>9} {:>9}  {ratios:>29}  audit",
        "target", "ops/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    for scenario in scenarios(runs) {
        let reference = Comparison::find(runs, scenario, "redeemd");
        for target in targets(runs) {
            let Some(r) = Comparison::find(runs, scenario, target) else {
                continue;
            };
            let ratios = if target == "redeemd" {
                String::new()
            } else {
                let [(_, a), (_, b)] = measures;
                format!(
                    "{:>8} {:>6}",
                    ratio(reference.map(a), a(r)),
                    ratio(reference.map(b), b(r))
                )
            };
            row(out, &label(scenario, r), r, &ratios);
        }
    }
}

fn scenarios(runs: &[Run]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in runs {
        if !out.contains(&r.scenario.as_str()) {
            out.push(&r.scenario);
        }
    }
    out
}

/// Targets present, redeemd and the baselines first, then any other.
fn targets(runs: &[Run]) -> Vec<&str> {
    let mut out: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| runs.iter().any(|r| r.target == *t))
        .collect();
    for r in runs {
        if !out.contains(&r.target.as_str()) {
            out.push(&r.target);
        }
    }
    out
}

impl Comparison {
    pub fn load(files: &[PathBuf]) -> anyhow::Result<Comparison> {
        let runs = files.iter().map(load).collect::<anyhow::Result<Vec<_>>>()?;
        let (open, closed) = runs.into_iter().partition(|r| r.rate.is_some());
        Ok(Comparison { closed, open })
    }

    fn find<'a>(runs: &'a [Run], scenario: &str, target: &str) -> Option<&'a Run> {
        runs.iter()
            .find(|r| r.scenario == scenario && r.target == target)
    }

    /// The text table: a row per run, ratios redeemd/that target on the
    /// baselines' rows.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if !self.closed.is_empty() {
            section(
                &mut out,
                &self.closed,
                "closed loop (ratio columns: redeemd / this target; ops/s > 1x: redeemd faster, p99 < 1x: redeemd's p99 lower)",
                "scenario",
                [("ops/s", |r| r.ops), ("p99", |r| r.p99)],
                |scenario, _| scenario.to_owned(),
            );
        }
        if !self.open.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            section(
                &mut out,
                &self.open,
                "latency: open loop, each target at its own fixed rate (ratio columns: redeemd / this target; < 1x: redeemd lower)",
                "rate/s",
                [("p99", |r| r.p99), ("p99.9", |r| r.p999)],
                |_, r| format!("{:.0}", r.rate.unwrap_or(0.0)),
            );
        }
        out
    }

    /// A self-contained page: the charts (inline SVG), the table, and
    /// `notes` (how and where the runs were made).
    pub fn html(&self, notes: &[String]) -> String {
        let mut body = String::new();
        let bars = |runs: &[Run], value: &dyn Fn(&Run) -> f64| -> Vec<(String, Vec<Option<f64>>)> {
            let groups = scenarios(runs);
            targets(runs)
                .into_iter()
                .map(|t| {
                    let values = groups
                        .iter()
                        .map(|s| Self::find(runs, s, t).map(value))
                        .collect();
                    (t.to_owned(), values)
                })
                .collect()
        };
        if !self.closed.is_empty() {
            let groups: Vec<String> = scenarios(&self.closed)
                .into_iter()
                .map(str::to_owned)
                .collect();
            let _ = write!(
                body,
                "<h2>Throughput by scenario (closed loop)</h2>\n<p>Operations a second; higher is better.</p>\n{}\n\
                 <h2>p99 latency by scenario (closed loop)</h2>\n<p>Milliseconds per request at full load; lower is better.</p>\n{}\n",
                grouped_bars_svg(&groups, &bars(&self.closed, &|r: &Run| r.ops), "/s"),
                grouped_bars_svg(&groups, &bars(&self.closed, &|r: &Run| r.p99), "ms"),
            );
        }
        if !self.open.is_empty() {
            let groups: Vec<String> = ["p50", "p99", "p99.9"].map(str::to_owned).to_vec();
            let series: Vec<(String, Vec<Option<f64>>)> = targets(&self.open)
                .into_iter()
                .filter_map(|t| {
                    let r = self.open.iter().find(|r| r.target == t)?;
                    Some((
                        format!("{t} at {:.0}/s", r.rate.unwrap_or(0.0)),
                        vec![Some(r.p50), Some(r.p99), Some(r.p999)],
                    ))
                })
                .collect();
            let _ = write!(
                body,
                "<h2>Latency at a fixed rate per target (open loop)</h2>\n\
                 <p>{}: milliseconds from each request's scheduled time (coordinated omission corrected); lower is better.</p>\n{}\n",
                esc(&scenarios(&self.open).join(", ")),
                grouped_bars_svg(&groups, &series, "ms"),
            );
        }
        let all_passed = self.closed.iter().chain(&self.open).all(|r| r.passed);
        let notes: String = notes
            .iter()
            .map(|n| format!("<li>{}</li>", esc(n)))
            .collect();
        format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>redeemd vs. PostgreSQL and Redis</title>
<style>
body {{ font-family: sans-serif; max-width: 820px; margin: 2em auto; color: #222; }}
pre {{ background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }}
.bad {{ color: #d1242f; font-weight: bold; }}
</style></head><body>
<h1>redeemd vs. PostgreSQL and Redis</h1>
<ul>{notes}</ul>
<p class="{audit_class}">{audit}</p>
{body}
<h2>Table</h2>
<pre>{table}</pre>
</body></html>
"#,
            audit_class = if all_passed { "" } else { "bad" },
            audit = if all_passed {
                "Every run's audit passed."
            } else {
                "AT LEAST ONE AUDIT FAILED: see the table."
            },
            table = esc(&self.table()),
        )
    }
}

fn row(out: &mut String, label: &str, r: &Run, ratios: &str) {
    let _ = writeln!(
        out,
        "{label:<10} {:<9} {:>10.1} {:>9.2} {:>9.2} {:>9.2}  {ratios:>29}  {}",
        r.target,
        r.ops,
        r.p50,
        r.p99,
        r.p999,
        if r.passed { "pass" } else { "FAIL" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(scenario: &str, target: &str, rate: Option<f64>, ops: f64, p99: f64) -> Run {
        Run {
            scenario: scenario.into(),
            target: target.into(),
            rate,
            ops,
            p50: p99 / 4.0,
            p99,
            p999: p99 * 2.0,
            passed: true,
        }
    }

    fn comparison() -> Comparison {
        Comparison {
            closed: vec![
                run("uniform", "postgres", None, 2_000.0, 40.0),
                run("uniform", "redeemd", None, 8_000.0, 10.0),
                run("uniform", "redis", None, 4_000.0, 20.0),
                run("retry", "redeemd", None, 3_000.0, 5.0),
            ],
            open: vec![
                run("uniform", "redeemd", Some(4_000.0), 4_000.0, 2.0),
                run("uniform", "redis", Some(2_000.0), 2_000.0, 8.0),
            ],
        }
    }

    #[test]
    fn ratios_are_redeemd_over_the_baseline() {
        let table = comparison().table();
        let line = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{table}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        // redeemd does 4x postgres's ops/s at a quarter of its p99.
        assert_eq!(line("uniform    postgres")[6..8], ["4.00x", "0.25x"]);
        assert_eq!(line("uniform    redis")[6..8], ["2.00x", "0.50x"]);
        // A scenario run only against redeemd has no ratio to show.
        assert_eq!(line("retry      redeemd").len(), 7);
        // Open loop: redeemd's p99 and p99.9 are a quarter of redis's.
        assert_eq!(line("2000       redis")[6..8], ["0.25x", "0.25x"]);
        // redeemd first in each scenario, whatever the order of the files.
        let uniform: Vec<&str> = table
            .lines()
            .filter(|l| l.starts_with("uniform"))
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(uniform, ["redeemd", "postgres", "redis"]);
    }

    #[test]
    fn html_is_self_contained() {
        let page = comparison().html(&["load <1.0>".into()]);
        assert!(page.contains("<svg"));
        assert!(page.contains("load &lt;1.0&gt;"));
        // Nothing fetched: no scripts, styles or images from elsewhere.
        for outside in ["<script", "<link", "src=", "href="] {
            assert!(!page.contains(outside), "{outside}");
        }
        // One bar per run: 4 closed (two charts) and 2 open (three bars each).
        assert_eq!(page.matches("<rect class=\"bar\"").count(), 4 * 2 + 2 * 3);
    }
}
