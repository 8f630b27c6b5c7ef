//! redeem-engine: the in-memory state of redeemd. No I/O.
//!
//! # Layout
//! - `sync`: the only module that names atomics and locks (loom under `cfg(loom)`).
//! - `codec`: generated code format: keyed permutation of an index, check symbol.

mod sync;

pub mod codec;
