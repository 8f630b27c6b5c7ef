//! The results of a run: a table on stdout, a JSON document, and a
//! self-contained HTML page with inline SVG charts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::audit::Audit;
use crate::driver::RunResult;
use crate::stats::{QUANTILES, quantile_ms};

/// How a run was set up, for the header of every report.
pub struct Meta {
    pub scenario: &'static str,
    pub description: String,
    /// `redeemd`, `postgres` or `redis`.
    pub target: &'static str,
    /// The URL the load went to.
    pub endpoint: String,
    pub connections: usize,
    pub rate: Option<f64>,
    pub warmup_seconds: f64,
    pub duration_seconds: Option<f64>,
    pub count: Option<u64>,
    pub codes: u64,
    pub threads: usize,
    pub notes: Vec<String>,
}

impl Meta {
    fn mode(&self) -> String {
        match self.rate {
            None => format!("closed loop, {} connections", self.connections),
            Some(r) => format!(
                "open loop at {r:.0} ops/s over {} connections",
                self.connections
            ),
        }
    }

    fn length(&self) -> String {
        let what = match (self.duration_seconds, self.count) {
            (Some(d), _) => format!("{d} s"),
            (_, Some(n)) => format!("{n} operations"),
            _ => "?".into(),
        };
        format!("{what} after {} s of warm-up", self.warmup_seconds)
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}ms")
    } else if v >= 10.0 {
        format!("{v:.1}ms")
    } else {
        format!("{v:.2}ms")
    }
}

fn row(label: &str, h: &Histogram<u64>, seconds: f64) -> String {
    let mut s = format!(
        "  {label:<10} {:>10} {:>11.1}",
        h.len(),
        if seconds > 0.0 {
            h.len() as f64 / seconds
        } else {
            0.0
        }
    );
    for (q, _) in QUANTILES {
        let _ = write!(s, " {:>9}", ms(quantile_ms(h, q)));
    }
    s
}

/// The table printed at the end of a run.
pub fn table(meta: &Meta, r: &RunResult, audit: &Audit) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nredeem-bench {} -> {} {}",
        meta.scenario, meta.target, meta.endpoint
    );
    let _ = writeln!(out, "  {}", meta.description);
    let _ = writeln!(
        out,
        "  {}; {}; {} codes",
        meta.mode(),
        meta.length(),
        meta.codes
    );
    for note in &meta.notes {
        let _ = writeln!(out, "  {note}");
    }
    let _ = writeln!(
        out,
        "\nthroughput: {:.1} ops/s ({:.1} requests/s) over {:.2} s measured",
        s.ops_per_second(),
        s.requests_per_second(),
        s.measured_seconds
    );
    let _ = write!(
        out,
        "\n  {:<10} {:>10} {:>11}",
        "latency", "requests", "req/s"
    );
    for (_, name) in QUANTILES {
        let _ = write!(out, " {name:>9}");
    }
    out.push('\n');
    for (kind, h) in &s.per_kind {
        out.push_str(&row(kind.as_str(), h, s.measured_seconds));
        out.push('\n');
    }
    if s.per_kind.len() > 1 {
        out.push_str(&row("all", &s.all, s.measured_seconds));
        out.push('\n');
    }
    if s.ops.len() != s.all.len() {
        out.push_str(&row("operation", &s.ops, s.measured_seconds));
        out.push_str("   (first request due to last answer)\n");
    }
    if meta.rate.is_some() {
        let _ = writeln!(
            out,
            "  latency is measured from each operation's scheduled time, which includes starts delayed by a busy connection or a late pacing thread (send lag): p99 {} / max {}",
            ms(quantile_ms(&s.send_lag, 0.99)),
            ms(quantile_ms(&s.send_lag, 1.0))
        );
    }
    let _ = writeln!(
        out,
        "\n  {:<10} {:>6}  {:<28} {:>10} {:>10}  class",
        "answers", "status", "code", "measured", "warm-up"
    );
    for o in &s.outcomes {
        let status = if o.status == 0 {
            "-".to_owned()
        } else {
            o.status.to_string()
        };
        let code = if o.code.is_empty() { "(ok)" } else { &o.code };
        let _ = writeln!(
            out,
            "  {:<10} {:>6}  {:<28} {:>10} {:>10}  {}",
            o.kind.as_str(),
            status,
            code,
            o.measured,
            o.warmup,
            o.class.as_str()
        );
    }
    let errors: u64 = s
        .outcomes
        .iter()
        .filter(|o| o.class.is_error())
        .map(|o| o.measured + o.warmup)
        .sum();
    let _ = writeln!(out, "  errors: {errors}; reconnects: {}", r.reconnects);
    let _ = writeln!(
        out,
        "\nclient: {:.0}% of one core over {} runtime thread(s) (if near {}%, the harness may be the bottleneck)",
        r.client_cpu_cores * 100.0,
        meta.threads,
        meta.threads * 100
    );
    if r.exhausted {
        let _ = writeln!(
            out,
            "note: the run used up its {} codes and stopped early; pass a larger --codes",
            meta.codes
        );
    }
    if r.interrupted {
        let _ = writeln!(out, "note: interrupted by Ctrl-C");
    }
    let _ = writeln!(
        out,
        "\naudit: {}",
        if audit.passed() { "PASS" } else { "FAIL" }
    );
    for c in &audit.checks {
        let mark = match (c.ok, c.fatal) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "WARN",
        };
        let _ = writeln!(out, "  [{mark}] {}: {}", c.name, c.detail);
    }
    out
}

fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("count".into(), h.len().into());
    for (q, name) in QUANTILES {
        m.insert(name.into(), json!(quantile_ms(h, q)));
    }
    m.insert(
        "mean".into(),
        json!(if h.is_empty() { 0.0 } else { h.mean() / 1000.0 }),
    );
    Value::Object(m)
}

/// Latency at percentiles spread evenly on a log scale of 1/(1-q), up to
/// what the sample size supports: the points of the percentile plot.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let nines_max = (h.len() as f64).log10().clamp(1.0, 6.0);
    let steps = 120;
    let mut points: Vec<(f64, f64)> = (0..=steps)
        .map(|i| {
            let nines = nines_max * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            (q * 100.0, quantile_ms(h, q))
        })
        .collect();
    points.push((100.0, quantile_ms(h, 1.0)));
    points
}

pub fn json(meta: &Meta, r: &RunResult, audit: &Audit) -> Value {
    let s = &r.summary;
    let kinds: serde_json::Map<String, Value> = s
        .per_kind
        .iter()
        .map(|(k, h)| (k.as_str().to_owned(), latency_json(h)))
        .collect();
    json!({
        "scenario": meta.scenario,
        "description": meta.description,
        "target": meta.target,
        "endpoint": meta.endpoint,
        "mode": if meta.rate.is_some() { "open" } else { "closed" },
        "rate": meta.rate,
        "connections": meta.connections,
        "warmup_seconds": meta.warmup_seconds,
        "duration_seconds": meta.duration_seconds,
        "count": meta.count,
        "codes": meta.codes,
        "notes": meta.notes,
        "measured_seconds": s.measured_seconds,
        "operations": s.ops_measured,
        "requests": s.requests_measured,
        "ops_per_second": s.ops_per_second(),
        "requests_per_second": s.requests_per_second(),
        "latency_ms": latency_json(&s.all),
        "operation_latency_ms": latency_json(&s.ops),
        "latency_ms_by_kind": kinds,
        "send_lag_ms": meta.rate.map(|_| latency_json(&s.send_lag)),
        "percentile_curve_ms": curve(&s.all).iter().map(|(p, v)| json!([p, v])).collect::<Vec<_>>(),
        "outcomes": s.outcomes.iter().map(|o| json!({
            "kind": o.kind.as_str(),
            "status": o.status,
            "code": &*o.code,
            "class": format!("{:?}", o.class).to_lowercase(),
            "measured": o.measured,
            "warmup": o.warmup,
        })).collect::<Vec<_>>(),
        "per_second": { "operations": s.series_ops, "errors": s.series_errors },
        "client": { "cpu_cores": r.client_cpu_cores, "threads": meta.threads, "reconnects": r.reconnects },
        "exhausted": r.exhausted,
        "interrupted": r.interrupted,
        "audit": {
            "passed": audit.passed(),
            "checks": audit.checks.iter().map(|c| json!({
                "name": c.name, "ok": c.ok, "fatal": c.fatal, "detail": c.detail,
            })).collect::<Vec<_>>(),
        },
    })
}

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 8] = [
    "#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7f8f", "#57606a",
];

/// Chart area inside each SVG.
const W: f64 = 760.0;
const H: f64 = 300.0;
const LEFT: f64 = 72.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 44.0;
const RIGHT: f64 = 40.0;

/// A round axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Latency against percentile, x on a log scale of 1/(1-q).
fn percentile_svg(series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let nines_max = series
        .iter()
        .flat_map(|(_, c)| c.iter())
        .map(|&(p, _)| nines(p))
        .filter(|n| n.is_finite())
        .fold(1.0f64, f64::max)
        .ceil();
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|(_, c)| c.iter())
            .filter(|&&(p, _)| p < 100.0)
            .map(|&(_, v)| v)
            .fold(0.0, f64::max),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |p: f64| LEFT + pw * (nines(p).min(nines_max) / nines_max);
    let y = |v: f64| TOP + ph * (1.0 - (v / y_max).min(1.0));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    axes(&mut svg, y_max, "ms");
    let mut n = 0.0;
    while n <= nines_max {
        let p = 100.0 * (1.0 - 10f64.powf(-n));
        // 0%, 90%, 99%, 99.9%, ...: as many decimals as nines past two.
        let label = format!("{:.*}%", (n as usize).saturating_sub(2), p);
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle">{label}</text>"##,
            x(p),
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
        n += 1.0;
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 6.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|&&(p, _)| p < 100.0)
            .map(|&(p, v)| format!("{:.1},{:.1}", x(p), y(v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
            LEFT + 10.0,
            TOP + 14.0 + 14.0 * i as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).log10()
}

fn axes(svg: &mut String, y_max: f64, unit: &str) {
    let ph = H - TOP - BOTTOM;
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = TOP + ph * (1.0 - f64::from(i) / 4.0);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{} {unit}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            trim_float(v)
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{0:.1}" stroke="#888"/><line x1="{LEFT}" x2="{1:.1}" y1="{0:.1}" y2="{0:.1}" stroke="#888"/>"##,
        H - BOTTOM,
        W - RIGHT
    );
}

fn trim_float(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{}k", trim_float(v / 1000.0))
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// Grouped bars: a group per entry of `groups` (scenarios, percentiles),
/// in each a bar per series (targets) in the series' colour, its value
/// written above it; a missing value leaves a gap. Linear scale from 0.
pub fn grouped_bars_svg(
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
    unit: &str,
) -> String {
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .copied()
            .fold(0.0, f64::max),
    );
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let y = |v: f64| TOP + ph * (1.0 - (v / y_max).min(1.0));
    let group_w = pw / groups.len().max(1) as f64;
    let bar_w = group_w * 0.8 / series.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    axes(&mut svg, y_max, unit);
    for (g, name) in groups.iter().enumerate() {
        let x0 = LEFT + group_w * g as f64 + group_w * 0.1;
        for (i, (_, values)) in series.iter().enumerate() {
            let Some(v) = values.get(g).copied().flatten() else {
                continue;
            };
            let color = PALETTE[i % PALETTE.len()];
            let x = x0 + bar_w * i as f64;
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                y(v),
                (bar_w - 2.0).max(1.0),
                TOP + ph - y(v),
                x + bar_w / 2.0,
                y(v) - 3.0,
                trim_float(v)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + group_w * (g as f64 + 0.5),
            H - BOTTOM + 16.0,
            esc(name)
        );
    }
    let mut x = LEFT;
    for (i, (name, _)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            H - 16.0,
            x + 14.0,
            H - 7.0,
            esc(name)
        );
        x += 24.0 + 7.0 * name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

/// Operations per second over time as bars, errors in red, the warm-up
/// shaded. The last second is left out: the run ends inside it.
fn throughput_svg(ops: &[u64], errors: &[u64], warmup_seconds: f64) -> String {
    let full = ops.len().saturating_sub(1);
    let (ops, errors) = (&ops[..full], &errors[..full.min(errors.len())]);
    let n = ops.len().max(1) as f64;
    let y_max = nice_max(ops.iter().copied().max().unwrap_or(0) as f64);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x = |s: f64| LEFT + pw * s / n;
    let y = |v: f64| TOP + ph * (1.0 - (v / y_max).min(1.0));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{ph:.1}" fill="#eee"/>"##,
        x(warmup_seconds.min(n)) - LEFT,
    );
    axes(&mut svg, y_max, "/s");
    for (series, color) in [(ops, PALETTE[0]), (errors, PALETTE[1])] {
        for (i, &v) in series.iter().enumerate() {
            if v == 0 {
                continue;
            }
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.8"/>"#,
                x(i as f64) + 1.0,
                y(v as f64),
                (pw / n - 2.0).max(1.0),
                TOP + ph - y(v as f64)
            );
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#666">warm-up</text>"##,
        LEFT + 4.0,
        TOP + 12.0
    );
    let step = (n / 10.0).ceil().max(1.0) as usize;
    for s in (0..=ops.len()).step_by(step) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{s}s</text>"#,
            x(s as f64),
            H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start (blue: operations, red: errors)</text>"#,
        LEFT + pw / 2.0,
        H - 6.0
    );
    svg.push_str("</svg>");
    svg
}

/// A self-contained page: the table, the two charts, the audit.
pub fn html(meta: &Meta, r: &RunResult, audit: &Audit) -> String {
    let s = &r.summary;
    let mut series: Vec<(&str, Vec<(f64, f64)>)> = s
        .per_kind
        .iter()
        .map(|(k, h)| (k.as_str(), curve(h)))
        .collect();
    if s.per_kind.len() > 1 {
        series.push(("all requests", curve(&s.all)));
    }
    let title = format!(
        "redeem-bench {} → {} ({})",
        meta.scenario,
        meta.target,
        if audit.passed() {
            "audit passed"
        } else {
            "AUDIT FAILED"
        }
    );
    let mut rows = String::new();
    let mut latency_rows: Vec<(&str, &Histogram<u64>)> =
        s.per_kind.iter().map(|(k, h)| (k.as_str(), h)).collect();
    if s.per_kind.len() > 1 {
        latency_rows.push(("all", &s.all));
    }
    if s.ops.len() != s.all.len() {
        latency_rows.push(("operation", &s.ops));
    }
    for (name, h) in latency_rows {
        let _ = write!(rows, "<tr><td>{name}</td><td>{}</td>", h.len());
        for (q, _) in QUANTILES {
            let _ = write!(rows, "<td>{:.3}</td>", quantile_ms(h, q));
        }
        rows.push_str("</tr>");
    }
    let mut outcomes = String::new();
    for o in &s.outcomes {
        let style = if o.class.is_error() {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = write!(
            outcomes,
            "<tr{style}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            o.kind.as_str(),
            if o.status == 0 {
                "-".into()
            } else {
                o.status.to_string()
            },
            esc(if o.code.is_empty() { "(ok)" } else { &o.code }),
            o.measured,
            o.warmup,
            o.class.as_str()
        );
    }
    let mut checks = String::new();
    for c in &audit.checks {
        let (mark, style) = match (c.ok, c.fatal) {
            (true, _) => ("ok", ""),
            (false, true) => ("FAIL", " class=\"bad\""),
            (false, false) => ("WARN", " class=\"warn\""),
        };
        let _ = write!(
            checks,
            "<tr{style}><td>{mark}</td><td>{}</td><td>{}</td></tr>",
            esc(c.name),
            esc(&c.detail)
        );
    }
    let notes: String = meta
        .notes
        .iter()
        .map(|n| format!("<li>{}</li>", esc(n)))
        .collect();
    let head: String = QUANTILES
        .iter()
        .map(|(_, n)| format!("<th>{n} ms</th>"))
        .collect();
    let lag = if meta.rate.is_some() {
        format!(
            "<p>Open loop: latency is measured from each operation's scheduled send time (coordinated omission corrected). Operations started after their slot (the connection was still busy, or the pacing thread was late) by p99 {:.3} ms, max {:.3} ms; that delay is part of the latency.</p>",
            quantile_ms(&s.send_lag, 0.99),
            quantile_ms(&s.send_lag, 1.0)
        )
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; max-width: 820px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.bad td {{ background: #ffebe9; }} tr.warn td {{ background: #fff8c5; }}
.big {{ font-size: 1.4em; }}
</style></head><body>
<h1>{title}</h1>
<p>{desc}<br>{target} at <code>{endpoint}</code>; {mode}; {length}; {codes} codes.</p>
<ul>{notes}</ul>
<p class="big">{ops:.1} operations/s ({reqs:.1} requests/s) over {secs:.2} s measured</p>
<h2>Latency</h2>
<table><tr><th>requests</th><th>count</th>{head}</tr>{rows}</table>
{lag}
{psvg}
<h2>Throughput over time</h2>
{tsvg}
<h2>Answers</h2>
<table><tr><th>kind</th><th>status</th><th>code</th><th>measured</th><th>warm-up</th><th>class</th></tr>{outcomes}</table>
<p>Client: {cpu:.0}% of one core over {threads} runtime thread(s); {reconnects} reconnects.</p>
<h2>Audit: {verdict}</h2>
<table><tr><th>result</th><th>check</th><th>detail</th></tr>{checks}</table>
</body></html>
"#,
        desc = esc(&meta.description),
        target = meta.target,
        endpoint = esc(&meta.endpoint),
        mode = meta.mode(),
        length = meta.length(),
        codes = meta.codes,
        ops = s.ops_per_second(),
        reqs = s.requests_per_second(),
        secs = s.measured_seconds,
        psvg = percentile_svg(&series),
        tsvg = throughput_svg(&s.series_ops, &s.series_errors, meta.warmup_seconds),
        cpu = r.client_cpu_cores * 100.0,
        threads = meta.threads,
        reconnects = r.reconnects,
        verdict = if audit.passed() { "PASS" } else { "FAIL" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(12_000.0), 20_000.0);
        assert_eq!(nice_max(100.0), 100.0);
    }

    #[test]
    fn grouped_bars_scale_to_the_largest() {
        let groups = vec!["uniform".to_owned(), "hot".to_owned()];
        let series = vec![
            ("redeemd".to_owned(), vec![Some(1000.0), Some(500.0)]),
            ("redis".to_owned(), vec![None, Some(250.0)]),
        ];
        let svg = grouped_bars_svg(&groups, &series, "/s");
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        // 1000 is the axis maximum: its bar spans the whole plot height.
        let ph = H - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{ph:.1}\" fill=\"{}\"", PALETTE[0])));
        assert!(svg.contains(">250<") && svg.contains(">hot<"));
    }

    #[test]
    fn curve_ends_at_max() {
        let mut h = crate::stats::histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        assert_eq!(c.first().unwrap().0, 0.0);
        assert_eq!(c.last().unwrap(), &(100.0, 1.0));
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
