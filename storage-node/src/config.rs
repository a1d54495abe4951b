//! The node's configuration: flags with matching `BACKTRACK_NODE_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::engine::sql::SqlLimits;
use crate::engine::EngineConfig;

#[derive(Debug, Parser)]
#[command(
    name = "backtrack-storage-node",
    version,
    about = "Backtrack storage node: holds clusters' volumes (SQLite over a durable, \
             multi-versioned page log) and rewinds them on request."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the node's HTTP API.
    Serve(Box<NodeConfig>),
    /// Check a configuration (the same flags and environment as `serve`) without starting:
    /// print the effective settings as JSON, or say why they are refused. Deployments (the
    /// Helm chart) are tested with it.
    CheckConfig(Box<NodeConfig>),
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct NodeConfig {
    /// Address to listen on; port 0 picks a free port (printed on the first line of stdout).
    #[arg(long, env = "BACKTRACK_NODE_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,

    /// Address to serve the PostgreSQL protocol on, for the volumes' databases. Port 0 takes
    /// the port this data directory's node had before (kept in `pg-port`), or a free one the
    /// first time, so a node's clusters keep their endpoint across restarts.
    #[arg(long, env = "BACKTRACK_NODE_PG_LISTEN", default_value = "127.0.0.1:0")]
    pub pg_listen: SocketAddr,

    /// The most PostgreSQL connections the node takes at once, over all its volumes; one more
    /// is refused with SQLSTATE 53300.
    #[arg(long, env = "BACKTRACK_NODE_PG_MAX_CONNECTIONS", default_value_t = 500)]
    pub pg_max_connections: usize,

    /// The most PostgreSQL connections one volume's database takes at once (53300 beyond).
    #[arg(
        long,
        env = "BACKTRACK_NODE_PG_MAX_CONNECTIONS_PER_DATABASE",
        default_value_t = 100
    )]
    pub pg_max_connections_per_database: usize,

    /// A PostgreSQL session idle this long is ended (57P05; 25P03 inside a transaction), in
    /// seconds; 0: never.
    #[arg(
        long,
        env = "BACKTRACK_NODE_PG_IDLE_TIMEOUT_SECS",
        default_value_t = 3600
    )]
    pub pg_idle_timeout_secs: u64,

    /// PEM certificate chain for PostgreSQL connections over TLS (with --pg-tls-key); without
    /// them the node serves plain connections only (`sslmode=prefer` falls back to plain).
    #[arg(long, env = "BACKTRACK_NODE_PG_TLS_CERT", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<PathBuf>,

    /// PEM private key of --pg-tls-cert.
    #[arg(long, env = "BACKTRACK_NODE_PG_TLS_KEY", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<PathBuf>,

    /// Directory of the node's log and volumes; created if missing.
    #[arg(long, env = "BACKTRACK_NODE_DATA_DIR", default_value = "./data/node")]
    pub data_dir: PathBuf,

    /// Bearer token every call to /v1 must carry.
    #[arg(long, env = "BACKTRACK_NODE_TOKEN", hide_env_values = true)]
    #[serde(serialize_with = "secret")]
    pub token: String,

    /// Most bytes the change log may hold; beyond it the oldest history is folded early and
    /// the volumes' actual backtrack windows shrink. At least two segments.
    #[arg(long, env = "BACKTRACK_NODE_LOG_BUDGET_BYTES", default_value_t = 64 << 30)]
    pub log_budget_bytes: u64,

    /// Size of a log segment.
    #[arg(long, env = "BACKTRACK_NODE_SEGMENT_BYTES", default_value_t = 64 << 20)]
    pub segment_bytes: u64,

    /// How often history is folded to the windows and the budget, in milliseconds.
    #[arg(
        long,
        env = "BACKTRACK_NODE_MAINTENANCE_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub maintenance_interval_ms: u64,

    /// Open transactions unused this long are rolled back, in seconds.
    #[arg(
        long,
        env = "BACKTRACK_NODE_TRANSACTION_IDLE_SECS",
        default_value_t = 180
    )]
    pub transaction_idle_secs: u64,

    /// Time limit of one SQL call (a statement, or a whole batch), in milliseconds: a call
    /// still running then is stopped inside SQLite, rolled back, and answered with a statement
    /// timeout error.
    #[arg(
        long,
        env = "BACKTRACK_NODE_STATEMENT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub statement_timeout_ms: u64,

    /// The most bytes one transaction may write (its pages stay in memory until it commits);
    /// a bigger one is refused and rolled back.
    #[arg(
        long,
        env = "BACKTRACK_NODE_MAX_TRANSACTION_BYTES",
        default_value_t = 256 << 20
    )]
    pub max_transaction_bytes: u64,

    /// The most memory SQL may take on this node, over all volumes (SQLite's heap limit); a
    /// statement that needs more fails with an out-of-memory error.
    #[arg(
        long,
        env = "BACKTRACK_NODE_SQL_MEMORY_LIMIT_BYTES",
        default_value_t = 1 << 30
    )]
    pub sql_memory_limit_bytes: u64,

    /// Stop when standard input closes or the parent process goes away: set by a supervising
    /// control plane, so the node never outlives it.
    #[arg(long)]
    #[serde(skip)]
    pub exit_with_stdin: bool,
}

impl NodeConfig {
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone(),
            segment_bytes: self.segment_bytes,
            log_budget_bytes: self.log_budget_bytes,
            maintenance_interval: Duration::from_millis(self.maintenance_interval_ms.max(1)),
            transaction_idle_timeout: Duration::from_secs(self.transaction_idle_secs),
            sql_limits: SqlLimits {
                statement_timeout: Duration::from_millis(self.statement_timeout_ms),
                max_transaction_bytes: self.max_transaction_bytes,
            },
            sql_memory_limit_bytes: self.sql_memory_limit_bytes,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_empty() {
            return Err("--token (BACKTRACK_NODE_TOKEN) must not be empty".into());
        }
        self.pg()?;
        self.engine().validate()
    }

    /// How the PostgreSQL protocol is served: refused when the TLS files do not load.
    pub fn pg(&self) -> Result<crate::pg::Settings, String> {
        let tls = match (&self.pg_tls_cert, &self.pg_tls_key) {
            (Some(cert), Some(key)) => Some(crate::pg::tls_acceptor(cert, key)?),
            (None, None) => None,
            _ => return Err("--pg-tls-cert and --pg-tls-key go together".into()),
        };
        Ok(crate::pg::Settings {
            limits: crate::pg::Limits::new(
                self.pg_max_connections,
                self.pg_max_connections_per_database,
            ),
            idle_timeout: (self.pg_idle_timeout_secs > 0)
                .then(|| Duration::from_secs(self.pg_idle_timeout_secs)),
            tls,
        })
    }

    /// The settings `serve` would run with, secrets left out, for `check-config`.
    pub fn effective(&self) -> Result<serde_json::Value, String> {
        self.validate()?;
        let mut settings = serde_json::to_value(self).map_err(|e| e.to_string())?;
        settings["program"] = "backtrack-storage-node".into();
        Ok(settings)
    }
}

/// A secret in the effective settings: that it is set, never what it is (`validate` refuses
/// an empty one).
fn secret<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("(set)")
}

/// What `check-config` does for either program: refuse `BACKTRACK_*` environment variables
/// that no flag of `subcommand` reads (a misspelt name would otherwise be ignored without a
/// word), then print the effective settings, or why they are refused, and exit accordingly.
pub fn check_config(
    cli: &clap::Command,
    subcommand: &str,
    effective: Result<serde_json::Value, String>,
) -> ExitCode {
    let known: Vec<String> = cli
        .find_subcommand(subcommand)
        .into_iter()
        .flat_map(|c| c.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("BACKTRACK_") && !known.contains(k))
        .collect();
    unknown.sort();
    let result = if unknown.is_empty() {
        effective
    } else {
        Err(format!(
            "unknown environment variable(s) {}: {} reads only {}",
            unknown.join(", "),
            cli.get_name(),
            known.join(", ")
        ))
    };
    match result {
        Ok(settings) => {
            println!("{settings:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: configuration refused: {e}", cli.get_name());
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`); stdout carries only the line that
/// announces the address.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
