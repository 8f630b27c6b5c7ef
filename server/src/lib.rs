//! redeemd: the server and operator CLI over `redeem-engine` and
//! `redeem-wal`. A thin hyper front end: every transition is appended to the
//! WAL and durable before the client gets its answer.
//!
//! # Layout
//! - `config`: `serve`'s flags and their defaults, written once.
//! - `datadir`: the data dir's `0700`/`0600` modes, set and tightened.
//! - `server`: `run`: start-up, the accept loop and connections, the
//!   background tasks (reservation sweeper, snapshotter), shutdown.
//! - `conn`: per-connection limits: the per-address connection count and
//!   the idle watchdog's view of a connection's activity.
//! - `app`: shared state (engine, WAL, tokens, metrics), the WAL-backed
//!   journal, opening a data dir and replaying its log.
//! - `http`: the route table (`matchit`), 404/405, metrics labels, dispatch.
//! - `extract`: auth, body limits, JSON, query parameters, idempotency keys.
//! - `routes`: the handlers, one file per resource (`campaigns`, `pool`,
//!   `assignments`, `codes`, `checkout`, `events`, `system`).
//! - `answer`: answering only durable state; idempotent replays.
//! - `errors`: the one table from every failure to status, code, message.
//! - `limiter`: failed-attempt budgets per token, user and client address.
//! - `render`: JSON bodies, and the engine's renderer for stored responses.
//! - `retention`: which log segments a snapshot lets go, and when.
//! - `metrics`: the Prometheus text of `/metrics`.
//! - `tokens`: hashed API tokens in the data dir.
//! - `timefmt`: RFC 3339 in and out.
//! - `cli`: `wal verify|dump|replay`.
//! - `webhooks`: delivery workers, signatures, their clock and metrics.
//! - `cli_assign`: `assign`, a recipient file to a server's bulk route and
//!   the codes to stdout, over a small blocking HTTP/1.1 client.

pub mod answer;
pub mod app;
pub mod cli;
pub mod cli_assign;
pub mod config;
pub mod conn;
pub mod datadir;
pub mod errors;
pub mod extract;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod render;
pub mod retention;
pub mod routes;
pub mod server;
pub mod timefmt;
pub mod tokens;
pub mod webhooks;

pub use app::App;
pub use config::ServeConfig;
pub use server::run;
