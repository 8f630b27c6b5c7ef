//! `serve`'s configuration: every flag with its default, written once.
//! The same struct is the clap argument group and what the server reads.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use redeem_wal::SyncMode;

use crate::limiter;

/// Everything `serve` is configured with, one field a flag.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Data directory (created if missing): the log and the token hashes.
    #[arg(long, default_value = "./redeemd-data")]
    pub data_dir: PathBuf,
    /// `always`: answer only after msync (the default, survives power
    /// loss). `none`: never msync (benchmarks only; loses acknowledged
    /// writes on power loss).
    #[arg(
        long,
        default_value = "always",
        value_parser = PossibleValuesParser::new(["always", "none"]).map(|s| parse_sync(&s))
    )]
    pub sync: SyncMode,
    /// Least time, in microseconds, from the start of one log sync to the
    /// start of the next. Under load a longer interval gathers more
    /// records into each sync (less CPU a request, a little more latency);
    /// a request after a quiet spell is synced at once. 0 syncs as soon as
    /// anything is appended.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub commit_interval_micros: u64,
    /// Accept requests without a token. For local load tests only.
    #[arg(long)]
    pub no_auth: bool,
    /// Largest JSON request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub body_bytes_max: usize,
    /// Largest code import body (`text/plain`), in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub import_bytes_max: usize,
    /// Most open connections; more wait in the kernel's accept queue.
    #[arg(long, default_value_t = 10_000)]
    pub connections_max: usize,
    /// Time a connection may sit idle (HTTP/1.1 between requests, HTTP/2
    /// with no request being handled and no response moving) before it is
    /// closed, so idle clients cannot hold the connection limit.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// Most open connections from one client address; more from it are
    /// closed at once, so one address cannot take every connection.
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections_per_address_max: u32,
    /// Time a client has to open a connection's first request (and each
    /// later request's headers) before the connection is closed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// Time one request may take, long-polls included.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_seconds: u64,
    /// Time in-flight requests get to finish after SIGTERM or SIGINT.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
    /// Size of each WAL segment file, in bytes: a multiple of 4096, at
    /// least 64 KiB. Only new segments take it. Small segments are for
    /// tests that fill a small disk.
    #[arg(long, default_value_t = redeem_wal::SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,
    /// Keep a log segment already covered by a snapshot until its newest
    /// record is this many seconds old (`/v1/events` reads that far back);
    /// 0 deletes it at the first snapshot that covers it.
    #[arg(long, default_value_t = 86_400)]
    pub retain_log_seconds: u64,
    /// But delete covered segments, oldest first, whatever their age, while
    /// the log's segments take more than this many bytes.
    #[arg(long, default_value_t = 4 << 30)]
    pub retain_log_bytes: u64,
    /// Unknown or malformed codes one `user` may try a minute, over every
    /// route that takes a code; more are answered 429 before any lookup.
    #[arg(long, default_value_t = limiter::USER_PER_MINUTE_DEFAULT)]
    pub failed_attempts_per_user_per_minute: u32,
    /// The same for one end client's address (`client_ip` in the request).
    #[arg(long, default_value_t = limiter::CLIENT_IP_PER_MINUTE_DEFAULT)]
    pub failed_attempts_per_client_ip_per_minute: u32,
    /// The same for one token, whatever `user` or `client_ip` it sends;
    /// `token add --failed-attempts-per-minute` sets one token's own.
    #[arg(long, default_value_t = limiter::TOKEN_PER_MINUTE_DEFAULT)]
    pub failed_attempts_per_token_per_minute: u32,
    /// Snapshot once this many records follow the last snapshot (replay
    /// then starts there; covered segments go by `--retain-log-*`).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_records: u64,
    /// Or once this many seconds have passed with new records.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every_seconds: u64,
    /// Allow webhooks to plain `http://` URLs on any host; without it,
    /// plain HTTP goes only to loopback hosts.
    #[arg(long)]
    pub webhook_allow_http: bool,
    /// Trust the certificates of this PEM file too, beside the platform's
    /// roots, for `https://` webhook receivers behind a private CA (or with
    /// a self-signed certificate). Read once at start; a file that cannot
    /// be read or holds no certificate stops the start.
    #[arg(long, value_name = "PATH")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Tests only: the webhook workers' clock runs this many times as fast
    /// as the wall clock (backoff, the delivery timeout, three days of
    /// failure), so a test can fail for days in seconds. Never set it in
    /// production.
    #[arg(long, default_value_t = 1, hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub webhook_test_time_scale: u32,
}

fn parse_sync(s: &str) -> SyncMode {
    match s {
        "none" => SyncMode::None,
        _ => SyncMode::Always,
    }
}

/// Parses the flags alone, for [`ServeConfig::new`].
#[derive(clap::Parser)]
struct Flags {
    #[command(flatten)]
    config: ServeConfig,
}

impl ServeConfig {
    /// The limiter's budgets per minute.
    pub fn guess_budgets(&self) -> limiter::Budgets {
        limiter::Budgets {
            token: self.failed_attempts_per_token_per_minute,
            user: self.failed_attempts_per_user_per_minute,
            client_ip: self.failed_attempts_per_client_ip_per_minute,
        }
    }

    /// Every default, with the data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> ServeConfig {
        use clap::Parser;
        let mut config = Flags::try_parse_from(["redeemd"])
            .expect("the defaults parse")
            .config;
        config.data_dir = data_dir;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_those_the_flags_name() {
        let config = ServeConfig::new("d".into());
        assert_eq!(config.data_dir, PathBuf::from("d"));
        assert_eq!(config.sync, SyncMode::Always);
        assert_eq!(config.body_bytes_max, 1 << 20);
        assert_eq!(config.header_timeout_seconds, 10);
        assert_eq!(config.retain_log_seconds, 86_400);
        assert_eq!(config.retain_log_bytes, 4 << 30);
        assert_eq!(config.idle_timeout_seconds, 60);
        assert_eq!(config.connections_per_address_max, 1_024);
        assert!(!config.no_auth);
    }

    #[test]
    fn zero_periods_are_refused() {
        use clap::Parser;
        let parsed = Flags::try_parse_from(["redeemd", "--snapshot-every-seconds", "0"]);
        assert!(parsed.is_err());
        let parsed = Flags::try_parse_from(["redeemd", "--sync", "none"]).unwrap();
        assert_eq!(parsed.config.sync, SyncMode::None);
    }
}
