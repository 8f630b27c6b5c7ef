//! What one durable sync costs on this disk, with no server: a 4 KiB
//! `pwrite` then `fdatasync` on a preallocated file, back to back or at a
//! fixed rate, and the sync's latency quantiles. Every durable answer waits
//! for at least one such sync, so its tail is a floor under any durable
//! server's latency on the machine (redeemd's, PostgreSQL's, Redis's).
//!
//! ```sh
//! cargo run --release -p redeem-benches --example sync_probe -- 10          # back to back
//! cargo run --release -p redeem-benches --example sync_probe -- 10 1000     # 1,000 syncs a second
//! cargo run --release -p redeem-benches --example sync_probe -- 10 1000 /data/dir
//! ```
//!
//! Arguments: seconds, then syncs a second (0 or absent: back to back),
//! then the directory for the 64 MiB test file (default: the temp dir; use
//! the data directory's file system).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const FILE_BYTES: u64 = 64 << 20;
const WRITE_BYTES: usize = 4096;

fn main() {
    if let Err(e) = run() {
        eprintln!("sync_probe: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: sync_probe SECONDS [SYNCS_PER_SECOND] [DIR]";
    let seconds: f64 = args
        .first()
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .parse()
        .map_err(|e| anyhow::anyhow!("SECONDS: {e}; {usage}"))?;
    anyhow::ensure!(
        seconds > 0.0 && seconds <= 86_400.0,
        "SECONDS must be above 0 and at most a day; {usage}"
    );
    let rate: f64 = match args.get(1) {
        Some(r) => r
            .parse()
            .map_err(|e| anyhow::anyhow!("SYNCS_PER_SECOND: {e}; {usage}"))?,
        None => 0.0,
    };
    anyhow::ensure!(
        rate == 0.0 || (rate.is_finite() && rate >= 1.0 / seconds),
        "SYNCS_PER_SECOND must be 0 (back to back) or at least one sync in the run"
    );
    let dir = args
        .get(2)
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("sync_probe.{}", std::process::id()));

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let result = probe(&file, seconds, rate);
    let removed = std::fs::remove_file(&path);
    let (mut latencies, elapsed) = result?;
    removed.map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;

    latencies.sort_unstable();
    let n = latencies.len();
    // Nearest rank: the smallest value with at least `p` of them at or below it.
    let q = |p: f64| {
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        latencies[rank - 1].as_secs_f64() * 1e3
    };
    println!(
        "{n} syncs in {:.1} s ({:.0}/s): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        latencies[n - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

/// The latency of each sync, and how long the probe ran.
fn probe(
    file: &std::fs::File,
    seconds: f64,
    rate: f64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    // Preallocated and synced first, as the log's segments are, so each
    // sync writes data only, not the file's size.
    file.set_len(FILE_BYTES)?;
    file.write_all_at(&vec![0u8; FILE_BYTES as usize], 0)?;
    file.sync_all()?;

    let page: Vec<u8> = (0..WRITE_BYTES).map(|i| (i * 7 + 3) as u8).collect();
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next = start;
    let mut offset = 0u64;
    let mut latencies = Vec::new();
    while Instant::now() < end {
        if let Some(interval) = interval {
            next += interval;
            if next >= end {
                break;
            }
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // Log-like: each write lands just after the last, within a page
        // or two, as appends to a segment do.
        file.write_all_at(&page, offset)?;
        offset = (offset + 512) % (FILE_BYTES - WRITE_BYTES as u64);
        let t = Instant::now();
        file.sync_data()?;
        latencies.push(t.elapsed());
    }
    anyhow::ensure!(!latencies.is_empty(), "no sync completed");
    Ok((latencies, start.elapsed()))
}
