//! loom-tests: model checks of redeem-engine's concurrency protocols.
//!
//! Each file in `tests/` models one protocol with two or three threads on a
//! campaign of one or two codes, and checks its invariant in every
//! interleaving loom explores. Each protocol also has a deliberately broken
//! variant (a `Mutation`, compiled into the engine only under `cfg(loom)`)
//! and a test asserting loom finds the bug, so no model passes by being
//! unable to fail. Every mutation test is paired with the same model passing
//! on the real engine, so the failure loom finds is the mutation's.
//!
//! # Running
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release
//! ```
//! or `loom-tests/run.sh`, which does the same in its own target directory
//! (a `RUSTFLAGS` change rebuilds everything, so it keeps the normal build's
//! cache intact). Without `--cfg loom` this crate and its tests compile to
//! nothing (test binaries with no tests) and loom is not even built, so
//! `cargo test --workspace` stays fast. Without `LOOM_MAX_PREEMPTIONS` the
//! harness bounds preemptions at 2 (`PREEMPTIONS_DEFAULT`) rather than
//! loom's unbounded default. Models of three racing threads are capped at
//! one preemption (`PREEMPTIONS_THREE_THREADS`): at two they run to millions
//! of interleavings (over six minutes for one model on two cores), so every
//! pair of their operations is also a two-thread model at the full bound.
//! Each model prints how many interleavings it explored (`--nocapture`).
//!
//! # Layout
//! - `harness` (re-exported): `check`, `check_bounded`, `check_caught`, the
//!   one-code race runner `race_one_code` with its serial-order reference,
//!   and helpers to set up an engine and check its counters and replay.
//! - `tests/redeem_race.rs`: two redeemers, one code.
//! - `tests/serial_orders.rs`: redeem vs void vs reserve on one code.
//! - `tests/expiry_sweep.rs`: the expiry sweep vs confirm.
//! - `tests/user_limit.rs`: one user, two codes, `per_user_limit = 1`.
//! - `tests/assign.rs`: a one-code pool; one recipient twice.
//! - `tests/record_order.rs`: journal order of a code's records, by replay.
//! - `tests/idempotency.rs`: two requests with one idempotency key.
//!
//! # Mutations and the models that catch them
//! | mutation | caught by |
//! |---|---|
//! | `BusyBitCheckThenSet` | `redeem_race`, `serial_orders`, `assign` (pool) |
//! | `VoidChecksStaleState` | `serial_orders` |
//! | `LockHoldChecksBeforeLock` | `expiry_sweep` |
//! | `ClaimCheckThenIncrement` | `user_limit` |
//! | `RedeemKeepsClaimOnFailure` | `user_limit` (failing journal) |
//! | `AssignUnlocksRecipient` | `assign` (one recipient twice) |
//! | `RollbackUnclaimsBeforeRecord` | `record_order` |
//! | `IdempotencyInsertsWithoutRecheck` | `idempotency` |

#[cfg(loom)]
mod harness;

#[cfg(loom)]
pub use harness::*;
