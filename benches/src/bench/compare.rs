//! `redeem-bench compare`: one side-by-side table from the `--json`
//! files of several runs, each scenario's redeemd run as the reference.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

struct Run {
    scenario: String,
    target: String,
    ops: f64,
    p50: f64,
    p99: f64,
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
    Ok(Run {
        scenario: field("/scenario")?.as_str().unwrap_or("?").to_owned(),
        target: field("/target")?.as_str().unwrap_or("?").to_owned(),
        ops: field("/ops_per_second")?.as_f64().unwrap_or(0.0),
        p50: field("/latency_ms/p50")?.as_f64().unwrap_or(0.0),
        p99: field("/latency_ms/p99")?.as_f64().unwrap_or(0.0),
        passed: field("/audit/passed")?.as_bool().unwrap_or(false),
    })
}

/// The table, in the order the files were given.
pub fn table(files: &[PathBuf]) -> anyhow::Result<String> {
    let runs = files.iter().map(load).collect::<anyhow::Result<Vec<_>>>()?;
    let mut out = format!(
        "{:<9} {:<9} {:>11} {:>9} {:>9} {:>16} {:>14}  {}\n",
        "scenario",
        "target",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "ops/s vs redeemd",
        "p99 vs redeemd",
        "audit"
    );
    for r in &runs {
        let reference = runs
            .iter()
            .find(|b| b.scenario == r.scenario && b.target == "redeemd");
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}x", a / b)
            } else {
                "-".to_owned()
            }
        };
        let (ops_ratio, p99_ratio) = match reference {
            Some(b) => (ratio(r.ops, b.ops), ratio(r.p99, b.p99)),
            None => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "{:<9} {:<9} {:>11.1} {:>9.2} {:>9.2} {:>16} {:>14}  {}\n",
            r.scenario,
            r.target,
            r.ops,
            r.p50,
            r.p99,
            ops_ratio,
            p99_ratio,
            if r.passed { "pass" } else { "FAIL" }
        ));
    }
    Ok(out)
}
