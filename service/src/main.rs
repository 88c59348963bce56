//! `airlock`: the Airlock control service (`airlock serve`) and its CLI for approvers and
//! auditors. Exit codes: 0 success, 1 a check found a problem (verify: chain broken;
//! replay: statuses differ), 2 usage or runtime error.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use airlock_filter::config_check::{check as check_plugin_config, SampleRequest};
use airlock_service::auth::hash_token;
use airlock_service::cli::client::Client;
use airlock_service::cli::commands::{self, SessionQuery};
use airlock_service::cli::replay::{replay, ReplayOptions};
use airlock_service::cli::CliError;
use airlock_service::server::{serve, ServeOptions};

#[derive(Parser)]
#[command(name = "airlock", version, about = "Airlock control service and CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Remote {
    /// URL of the Airlock service.
    #[arg(long, env = "AIRLOCK_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control service.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// `sqlite:///path/to/airlock.db` (created if missing) or `postgres://user@host/db`.
        #[arg(long, env = "AIRLOCK_DATABASE", default_value = "sqlite://airlock.db")]
        database: String,
        /// Service config (TOML, or JSON by `.json` extension): approvers, alert sinks.
        #[arg(long)]
        config: Option<PathBuf>,
        /// File holding the shared secret the filter presents as a bearer token. Without it
        /// the key is read from the environment variable AIRLOCK_FILTER_KEY (never from a
        /// command-line value, which other local users could read in the process list).
        #[arg(long)]
        filter_key_file: Option<PathBuf>,
        /// Base URL used in console links (default: the listen address).
        #[arg(long)]
        public_url: Option<String>,
        /// Long-poll re-read interval in ms (default: 500 on PostgreSQL, none on SQLite; 0 disables).
        #[arg(long)]
        poll_interval_ms: Option<u64>,
    },
    /// List, inspect and decide approvals (token from AIRLOCK_TOKEN).
    Approvals {
        #[command(subcommand)]
        action: ApprovalAction,
    },
    /// List changed MCP tool definitions and accept them (approver token from AIRLOCK_TOKEN).
    Tools {
        #[command(subcommand)]
        action: ToolAction,
    },
    /// List sessions and show their timelines (auditor token from AIRLOCK_TOKEN).
    Sessions {
        #[command(subcommand)]
        action: SessionAction,
    },
    /// Re-send a recorded session's requests to a target and report status differences.
    Replay {
        session_id: String,
        /// Base URL of the target, e.g. a staging copy of the upstream.
        #[arg(long)]
        target: String,
        /// Extra header for the target, `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// Also replay requests the filter denied (skipped by default).
        #[arg(long)]
        include_denied: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify the audit hash chain, over HTTP or directly on a database.
    Verify {
        /// Open this database directly instead of asking the server.
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print the SHA-256 of a token read from stdin, for `token_sha256` in the config.
    HashToken,
    /// Validate a filter plugin config offline, exactly as the filter does at load, and
    /// show what its policy decides for a sample request (same code as the filter).
    CheckConfig {
        /// The plugin config (JSON).
        file: PathBuf,
        /// Sample request path (with query); without it only the config is validated.
        #[arg(long)]
        path: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The caller's subject, as a verified token would give it.
        #[arg(long, default_value = "agent")]
        subject: String,
        /// The caller's groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// A request header, `name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The request body.
        #[arg(long)]
        body: Option<String>,
    },
}

#[derive(Subcommand)]
enum ApprovalAction {
    List {
        #[arg(long, default_value = "pending")]
        status: String,
        #[command(flatten)]
        remote: Remote,
    },
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print pending approvals as they arrive, until Ctrl-C (one JSON object a line with
    /// --json).
    Watch {
        /// How often to ask the service, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        interval_ms: u64,
        #[command(flatten)]
        remote: Remote,
    },
    Approve {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ToolAction {
    /// Definitions that differ from their pin (pending, accepted, superseded or all).
    Changes {
        #[arg(long, default_value = "pending")]
        status: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Accept a changed definition: it becomes the tool's pin, and filters in `block`
    /// mode let the tool through again at their next refresh.
    Accept {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum SessionAction {
    /// Sessions matching every filter given, most recently active first.
    #[command(visible_alias = "list")]
    Search {
        #[arg(long)]
        subject: Option<String>,
        /// Count records at or after this instant: Unix ms or RFC 3339.
        #[arg(long, visible_alias = "from")]
        since: Option<String>,
        /// Count records at or before this instant: Unix ms or RFC 3339.
        #[arg(long, visible_alias = "to")]
        until: Option<String>,
        /// Only sessions with a record of this decision: allow, approved, denied_by_rule,
        /// denied_by_default, unauthenticated, approval_denied, ...
        #[arg(long)]
        decision: Option<String>,
        /// Only sessions with a record under this policy rule.
        #[arg(long)]
        rule: Option<String>,
        /// Only sessions with a request whose path starts with this prefix.
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        remote: Remote,
    },
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error(transparent)]
    Serve(#[from] airlock_service::server::ServeError),
    #[error("{0}")]
    Usage(String),
}

fn client(remote: &Remote) -> Result<Client, CliError> {
    Client::new(&remote.server, std::env::var("AIRLOCK_TOKEN").ok())
}

fn read_filter_key(file: Option<PathBuf>, env: Option<String>) -> Result<String, MainError> {
    match (file, env) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .map_err(|e| MainError::Usage(format!("cannot read --filter-key-file {}: {e}", path.display()))),
        (None, Some(key)) => Ok(key),
        (None, None) => Err(MainError::Usage("no filter key: pass --filter-key-file or set AIRLOCK_FILTER_KEY".into())),
    }
}

/// Runs the command; `Ok(false)` means a check ran and found a problem.
async fn run(cli: Cli) -> Result<bool, MainError> {
    match cli.command {
        Command::Serve { listen, database, config, filter_key_file, public_url, poll_interval_ms } => {
            let filter_key = read_filter_key(filter_key_file, std::env::var("AIRLOCK_FILTER_KEY").ok())?;
            serve(ServeOptions { listen, database, config, filter_key, public_url, poll_interval_ms }).await?;
            Ok(true)
        }
        Command::Approvals { action } => {
            match action {
                ApprovalAction::List { status, remote } => {
                    commands::approvals_list(&client(&remote)?, &status, remote.json).await?
                }
                ApprovalAction::Show { id, remote } => {
                    commands::approvals_show(&client(&remote)?, &id, remote.json).await?
                }
                ApprovalAction::Watch { interval_ms, remote } => {
                    let interval = std::time::Duration::from_millis(interval_ms.max(100));
                    commands::approvals_watch(&client(&remote)?, interval, remote.json).await?
                }
                ApprovalAction::Approve { id, reason, remote } => {
                    commands::approvals_decide(&client(&remote)?, &id, "approve", &reason, remote.json).await?
                }
                ApprovalAction::Deny { id, reason, remote } => {
                    commands::approvals_decide(&client(&remote)?, &id, "deny", &reason, remote.json).await?
                }
            }
            Ok(true)
        }
        Command::Tools { action } => {
            match action {
                ToolAction::Changes { status, remote } => {
                    commands::tool_changes(&client(&remote)?, &status, remote.json).await?
                }
                ToolAction::Accept { id, remote } => commands::tool_accept(&client(&remote)?, &id, remote.json).await?,
            }
            Ok(true)
        }
        Command::Sessions { action } => {
            match action {
                SessionAction::Search { subject, since, until, decision, rule, path, limit, remote } => {
                    let q = SessionQuery { subject, since, until, decision, rule, path, limit };
                    commands::sessions_list(&client(&remote)?, &q, remote.json).await?
                }
                SessionAction::Show { id, remote } => {
                    commands::sessions_show(&client(&remote)?, &id, remote.json).await?
                }
            }
            Ok(true)
        }
        Command::Replay { session_id, target, headers, include_denied, remote } => {
            let opts = ReplayOptions { session_id, target, headers, include_denied };
            let differs = replay(&client(&remote)?, &opts).await?;
            Ok(!differs)
        }
        Command::Verify { database, remote } => Ok(match database {
            Some(url) => commands::verify_database(&url).await?,
            None => commands::verify_http(&client(&remote)?).await?,
        }),
        Command::CheckConfig { file, path, method, subject, groups, headers, body } => {
            let bytes =
                std::fs::read(&file).map_err(|e| MainError::Usage(format!("cannot read {}: {e}", file.display())))?;
            let mut parsed = Vec::with_capacity(headers.len());
            for h in headers {
                let (name, value) =
                    h.split_once(':').ok_or_else(|| MainError::Usage(format!("header `{h}` is not `name: value`")))?;
                parsed.push((name.trim().to_string(), value.trim().to_string()));
            }
            let sample = path.map(|path| SampleRequest {
                method: method.to_ascii_uppercase(),
                path,
                headers: parsed,
                subject,
                groups,
                body,
            });
            match check_plugin_config(&bytes, sample.as_ref()) {
                Ok(report) => {
                    print!("{report}");
                    Ok(true)
                }
                Err(e) => {
                    println!("{e}");
                    Ok(false)
                }
            }
        }
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|e| MainError::Usage(format!("cannot read stdin: {e}")))?;
            if token.trim().is_empty() {
                return Err(MainError::Usage("no token on stdin".into()));
            }
            println!("{}", hash_token(&token));
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("airlock: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("airlock: {e}");
            ExitCode::from(2)
        }
    }
}
