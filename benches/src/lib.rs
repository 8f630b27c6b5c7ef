//! Benchmarks for redeemd: criterion benches that time its subsystems in
//! process, and `redeem-bench`, a load harness that drives a running
//! redeemd (or a PostgreSQL or Redis baseline) over the network and then
//! audits what it stored. See `README.md` for how to run both.
//!
//! The library holds one helper the in-process benches share
//! ([`bench_engine`]); the harness shares nothing with them, so each lives
//! in its own target and this page is mostly their map.
//!
//! # Layout
//! - `benches/`: the criterion benches, one file per subsystem; run them
//!   with `cargo bench -p redeem-benches`.
//!   - `codec`: encoding an index into a printed code and decoding it back.
//!   - `engine`: engine transitions without I/O, uncontended and under a
//!     storm on one code.
//!   - `wal`: append with group commit, raw fsync and sync costs, replay.
//! - `src/bench/`: the `redeem-bench` binary.
//!   - `main`: the command line; picks the target and runs prepare, load,
//!     audit and report.
//!   - `plan`: the scenarios and the shared counter that hands out work.
//!   - `driver`: the closed- and open-loop load loops and the progress line.
//!   - `client`: a minimal HTTP/1.1 keep-alive client.
//!   - `targets`: the `Target` and `Connection` traits, implemented by
//!     redeemd, postgres and redis.
//!   - `stats`: histograms, outcome counts, per-second series, per-code
//!     tracking.
//!   - `audit`: the checks run after the load.
//!   - `report`: the results as a table, JSON, and HTML with inline SVG.
//!   - `compare`: one side-by-side table from the JSON of several runs.
//! - `examples/hello_hyper.rs`: a bare hyper server, the ceiling for
//!   redeemd's HTTP throughput.

use redeem_engine::codec::CodeKey;
use redeem_engine::{CampaignSpec, Config, Effect, Engine, NullJournal, Timestamp};

/// The time the in-process benches run at.
pub const BENCH_NOW: Timestamp = Timestamp(1_800_000_000_000);

/// An engine with no journal and one campaign, `bench` (prefix `B`, no
/// per-user limit), of `codes` generated codes: what the engine benches,
/// `redeem_cpu` and `engine_memory` measure against.
pub fn bench_engine(codes: u64) -> Engine<NullJournal> {
    let engine = Engine::new(
        NullJournal::default(),
        Config::default(),
        Box::new(|_: &Effect<'_>| (200, Vec::new())),
    );
    engine
        .create_campaign(
            CampaignSpec {
                id: "bench".into(),
                prefix: "B".into(),
                generate: codes,
                per_user_limit: 0,
                ..CampaignSpec::default()
            },
            CodeKey::from_bytes([1; 16]),
            BENCH_NOW,
            None,
        )
        .expect("the bench campaign is valid");
    engine
}
