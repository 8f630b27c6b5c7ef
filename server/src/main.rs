//! The `redeemd` binary: parses flags, binds, and calls `redeemd::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use redeemd::tokens::Role;
use redeemd::{ServeConfig, cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "redeemd",
    version,
    about = "Single-use coupon codes, redeemed exactly once, durably."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API. Replays the log on start, with progress.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Assign a code to every recipient of a file through a running server
    /// (`POST /v1/campaigns/C/assignments/bulk`) and print the merge CSV,
    /// `recipient,code,status`, to stdout as the server sends it.
    ///
    /// Every row printed is durable on the server. To resume after an
    /// interruption, run the same command again: recipients that already
    /// hold a code get the same one back, with status `existing`. Exits
    /// non-zero with the server's error code and message on any answer but
    /// 200, and when the answer stops before the file's last line.
    Assign {
        /// The server, `http://host:port` (https is not supported).
        #[arg(long)]
        url: String,
        /// An issuer or admin token; also read from REDEEMD_TOKEN, which
        /// keeps it out of `ps`.
        #[arg(long)]
        token: Option<String>,
        /// The campaign id.
        #[arg(long)]
        campaign: String,
        /// Assign nothing unless the pool holds a code for every line
        /// (the server answers 409 pool_exhausted with the counts).
        #[arg(long)]
        all_or_nothing: bool,
        /// Show progress on stderr even when it is not a terminal (it is
        /// shown on a terminal anyway).
        #[arg(long)]
        progress: bool,
        /// The recipient file: one recipient a line, CSV quoting, an
        /// optional `recipient` header line.
        file: PathBuf,
    },
    /// Inspect the write-ahead log without serving (never writes to it).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token for a role; works while the server runs.
    Add {
        #[arg(long)]
        data_dir: PathBuf,
        /// admin, checkout or issuer.
        #[arg(long)]
        role: String,
        /// A label kept next to the token's hash.
        #[arg(long, default_value = "token")]
        name: String,
        /// This token's own budget of unknown or malformed codes a minute,
        /// instead of the server's --failed-attempts-per-token-per-minute
        /// (a load tester's token may need more; a partner's, less).
        #[arg(long)]
        failed_attempts_per_minute: Option<u32>,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// Check every record: exit 0 when clean (a torn tail is reported, not
    /// an error), 1 on corruption, naming segment, offset, LSN and reason,
    /// 2 when it cannot check. Read-only; works beside a running server.
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print records, one a line; starts from the newest snapshot when
    /// older segments are gone.
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
        /// First LSN to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only records about this code.
        #[arg(long)]
        code: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the state in memory (the newest snapshot, then the log);
    /// print per-campaign stats and the rate.
    Replay {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redeemd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            listen,
            log_format,
            config,
        } => {
            init_logs(log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
                tracing::info!(addr = %listener.local_addr()?, "listening");
                redeemd::run(listener, config, shutdown_signal()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command:
                TokenCommand::Add {
                    data_dir,
                    role,
                    name,
                    failed_attempts_per_minute,
                },
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                anyhow::anyhow!("unknown role `{role}`: use admin, checkout or issuer")
            })?;
            // Creates the data dir `0700` and the token file `0600` when
            // missing, beside a running server too.
            for path in redeemd::datadir::prepare(&data_dir)? {
                eprintln!(
                    "redeemd: tightened the modes of {}: the data dir is for its owner alone",
                    path.display()
                );
            }
            let token = redeemd::tokens::add(&data_dir, role, &name, failed_attempts_per_minute)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Assign {
            url,
            token,
            campaign,
            all_or_nothing,
            progress,
            file,
        } => {
            let token = token
                .or_else(|| std::env::var("REDEEMD_TOKEN").ok())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| anyhow::anyhow!("give a token with --token or REDEEMD_TOKEN"))?;
            redeemd::cli_assign::assign(&redeemd::cli_assign::AssignArgs {
                url: &url,
                token: &token,
                campaign: &campaign,
                file: &file,
                all_or_nothing,
                progress,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wal { command } => match command {
            WalCommand::Verify { data_dir } => Ok(ExitCode::from(cli::verify(&data_dir))),
            WalCommand::Dump {
                data_dir,
                from,
                code,
                json,
            } => {
                cli::dump(&data_dir, from, code.as_deref(), json)?;
                Ok(ExitCode::SUCCESS)
            }
            WalCommand::Replay { data_dir } => {
                // Progress lines go through the log, to stderr.
                init_logs(LogFormat::Text);
                cli::replay(&data_dir)?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown signal received");
}
