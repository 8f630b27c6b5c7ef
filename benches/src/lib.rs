//! Benchmarks for redeemd. The criterion benches live in `benches/`, one file
//! per subsystem; run them with `cargo bench -p redeem-benches`.
