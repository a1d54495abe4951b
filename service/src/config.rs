//! The service's configuration: command-line flags, each with a matching `BACKTRACK_*`
//! environment variable, parsed and validated once at start. `backtrack-service --help` and
//! `backtrack-service serve --help` print what each one does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::billing::Money;

#[derive(Debug, Parser)]
#[command(
    name = "backtrack-service",
    version,
    about = "Backtrack control plane: the RDS backtrack API (CreateDBCluster, BacktrackDBCluster, \
             ...) over durable jobs that drive the storage nodes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: the HTTP API and its background workers (and, without --node, its
    /// own storage nodes).
    Serve(Box<Config>),
    /// Run a storage node (what `serve` starts for its local nodes; the same as
    /// `backtrack-storage-node serve`).
    Node(Box<backtrack_storage_node::config::NodeConfig>),
    /// Check a configuration (the same flags and environment as `serve`) without starting:
    /// print the effective settings as JSON, or say why they are refused. Deployments (the
    /// Helm chart) are tested with it.
    CheckConfig(Box<Config>),
    /// Print the OpenAPI document (openapi/openapi.json is this output).
    Openapi,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct Config {
    /// Address the HTTP API listens on; port 0 picks a free port.
    #[arg(long, env = "BACKTRACK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Metadata database: `postgres://user:pass@host/db` for PostgreSQL (TLS with
    /// `?sslmode=require`, or `verify-full&sslrootcert=CA.pem`), or `sqlite://PATH`. Default: SQLite at DATA_DIR/backtrack.db, created on first start.
    #[arg(long, env = "BACKTRACK_DATABASE_URL")]
    #[serde(skip)]
    pub database_url: Option<String>,

    /// Directory for the embedded metadata database (and local storage nodes' volumes).
    #[arg(long, env = "BACKTRACK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// A storage node, as `URL` or `NAME=URL` (repeat the flag, or separate with commas in the
    /// environment variable). The name identifies the node in the metadata, so keep it stable
    /// when a node's address changes.
    #[arg(long = "node", env = "BACKTRACK_NODES", value_delimiter = ',')]
    #[serde(skip)]
    pub nodes: Vec<NodeEndpoint>,

    /// Bearer token the storage nodes require on every call (required with --node; local
    /// nodes get a random one).
    #[arg(long, env = "BACKTRACK_NODE_TOKEN", hide_env_values = true)]
    #[serde(serialize_with = "secret")]
    pub node_token: Option<String>,

    /// Without --node: how many local storage nodes to start, as child processes, with
    /// their volumes under DATA_DIR/nodes/N.
    #[arg(long, env = "BACKTRACK_LOCAL_NODES", default_value_t = 2)]
    #[serde(skip)]
    pub local_nodes: usize,

    /// Region used in ARNs.
    #[arg(long, env = "BACKTRACK_REGION", default_value = "us-east-1")]
    pub region: String,

    /// Account id used in ARNs.
    #[arg(long, env = "BACKTRACK_ACCOUNT_ID", default_value = "000000000000")]
    pub account_id: String,

    /// Longest time a request may take before it is answered with RequestTimeout.
    #[arg(long, env = "BACKTRACK_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "BACKTRACK_BODY_LIMIT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Timeout of each call to a storage node, in milliseconds.
    #[arg(long, env = "BACKTRACK_NODE_TIMEOUT_MS", default_value_t = 10_000)]
    pub node_timeout_ms: u64,

    /// Time limit of one SQL call (a statement, or a whole batch), in milliseconds: the local
    /// storage nodes stop a call still running then, roll it back, and answer
    /// StatementTimeoutException. (Nodes given with --node take their own
    /// --statement-timeout-ms; keep the two equal.) A Data API call waits this long plus
    /// --node-timeout-ms for its node's answer.
    #[arg(long, env = "BACKTRACK_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub statement_timeout_ms: u64,

    /// How long a runner holds a claimed backtrack job before another runner may take it
    /// over (when the first one died), in seconds.
    #[arg(long, env = "BACKTRACK_JOB_LEASE_SECS", default_value_t = 30)]
    pub job_lease_secs: u64,

    /// How long a backtrack keeps being retried while its node is unreachable before it is
    /// marked failed, in seconds from the request.
    #[arg(long, env = "BACKTRACK_JOB_DEADLINE_SECS", default_value_t = 300)]
    pub job_deadline_secs: u64,

    /// First retry delay of a backtrack whose node call failed, in milliseconds; it doubles on
    /// each attempt up to --job-retry-max-ms.
    #[arg(long, env = "BACKTRACK_JOB_RETRY_BASE_MS", default_value_t = 250)]
    pub job_retry_base_ms: u64,

    /// Longest delay between two attempts of a backtrack, in milliseconds.
    #[arg(long, env = "BACKTRACK_JOB_RETRY_MAX_MS", default_value_t = 10_000)]
    pub job_retry_max_ms: u64,

    /// How often the background workers look for work they were not told about, in
    /// milliseconds (they are woken at once for work this process creates).
    #[arg(long, env = "BACKTRACK_POLL_INTERVAL_MS", default_value_t = 1_000)]
    pub poll_interval_ms: u64,

    /// How often each volume's stored change records are sampled for billing, metrics and
    /// window alerts, in milliseconds.
    #[arg(long, env = "BACKTRACK_METERING_INTERVAL_MS", default_value_t = 60_000)]
    pub metering_interval_ms: u64,

    /// Price of one million change-record-hours, an exact decimal.
    #[arg(
        long,
        env = "BACKTRACK_PRICE_PER_MILLION_CR_HOURS",
        default_value = "0.012"
    )]
    #[serde(serialize_with = "serialize_display")]
    pub price_per_million_cr_hours: Money,

    /// Currency of the price.
    #[arg(long, env = "BACKTRACK_CURRENCY", default_value = "USD")]
    pub currency: String,

    /// An access key requests must be signed with (AWS Signature Version 4), as
    /// `ACCESS_KEY_ID:SECRET`; repeat the flag, or separate keys with commas in the
    /// environment variable. With keys, every API request must be signed by one of them.
    #[arg(
        long = "access-key",
        env = "BACKTRACK_ACCESS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    #[serde(serialize_with = "key_ids")]
    pub access_keys: Vec<AccessKey>,

    /// A file of access keys, one `ACCESS_KEY_ID:SECRET` a line (blank lines and `#`
    /// comments skipped): a mounted Kubernetes Secret, for instance.
    #[arg(long, env = "BACKTRACK_ACCESS_KEYS_FILE")]
    pub access_keys_file: Option<PathBuf>,

    /// Require a signature on /metrics too (it is open by default, for scrapers).
    #[arg(long, env = "BACKTRACK_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// Serve without authentication on a non-loopback address. Anyone who can reach the
    /// address can then create, rewind and delete clusters.
    #[arg(long, env = "BACKTRACK_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// An access key: its id and secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl FromStr for AccessKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(AccessKey {
                id: id.to_string(),
                secret: secret.to_string(),
            }),
            _ => Err("an access key is ACCESS_KEY_ID:SECRET, both non-empty".into()),
        }
    }
}

/// The access keys in the effective settings: their ids, never their secrets.
fn key_ids<S: serde::Serializer>(keys: &[AccessKey], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|k| &k.id))
}

impl Config {
    /// The defaults, as `serve` with no flags and no environment would get them.
    pub fn defaults() -> Config {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        Only::parse_from(["backtrack-service"]).config
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("backtrack.db").display()
            ),
        }
    }

    /// Whether this configuration keeps anything in the data directory: the embedded
    /// metadata database, or local storage nodes' volumes.
    pub fn uses_data_dir(&self) -> bool {
        self.database_url.is_none() || self.nodes.is_empty()
    }

    /// Checks what clap cannot: values that only make sense together.
    pub fn validate(&self) -> Result<(), String> {
        crate::store::Backend::of_url(&self.database_url())?;
        if !self.nodes.is_empty() && self.node_token.as_deref().unwrap_or("").is_empty() {
            return Err("--node-token (BACKTRACK_NODE_TOKEN) is required with --node".into());
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("two storage nodes are named {:?}", pair[0]));
        }
        if self.nodes.is_empty() && self.local_nodes == 0 {
            return Err("give storage nodes with --node, or at least one --local-nodes".into());
        }
        if self.job_retry_base_ms == 0 || self.job_retry_max_ms < self.job_retry_base_ms {
            return Err("--job-retry-max-ms must be at least --job-retry-base-ms (> 0)".into());
        }
        if self.job_lease_secs == 0 || self.poll_interval_ms == 0 || self.metering_interval_ms == 0
        {
            return Err(
                "--job-lease-secs, --poll-interval-ms and --metering-interval-ms must be positive"
                    .into(),
            );
        }
        if self.price_per_million_cr_hours < Money::ZERO {
            return Err("--price-per-million-cr-hours must not be negative".into());
        }
        let keys = self.access_keys()?;
        if keys.is_empty() && !self.listen.ip().is_loopback() && !self.insecure_no_auth {
            return Err(format!(
                "refusing to serve {} without authentication: give access keys (--access-key \
                 ID:SECRET, BACKTRACK_ACCESS_KEYS or --access-keys-file), or pass \
                 --insecure-no-auth to let anyone who can reach this address create, rewind \
                 and delete clusters",
                self.listen
            ));
        }
        if self.metrics_auth && keys.is_empty() {
            return Err("--metrics-auth needs access keys".into());
        }
        if self.statement_timeout_ms == 0 {
            return Err("--statement-timeout-ms must be positive".into());
        }
        // A Data API call must be answered (with the node's statement timeout, at worst)
        // before the request itself times out.
        let timings = self.timings();
        if timings.sql_call >= timings.request {
            return Err(
                "--request-timeout-secs must be longer than --statement-timeout-ms plus \
                 --node-timeout-ms"
                    .into(),
            );
        }
        // A node call must end before the lease does, or a second runner could take the job
        // over while the first is still waiting for the node.
        if self.node_timeout_ms >= self.job_lease_secs * 1000 {
            return Err("--node-timeout-ms must be shorter than --job-lease-secs".into());
        }
        Ok(())
    }

    /// Every configured access key, id to secret: the flags' and the file's. A file that
    /// cannot be read, a malformed line, or one id with two secrets is refused.
    pub fn access_keys(&self) -> Result<std::collections::HashMap<String, String>, String> {
        let mut keys: Vec<AccessKey> = self.access_keys.clone();
        if let Some(path) = &self.access_keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --access-keys-file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.push(
                    line.parse()
                        .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?,
                );
            }
        }
        let mut by_id = std::collections::HashMap::new();
        for key in keys {
            if let Some(other) = by_id.insert(key.id.clone(), key.secret.clone()) {
                if other != key.secret {
                    return Err(format!(
                        "the access key {} is given twice, with two secrets",
                        key.id
                    ));
                }
            }
        }
        Ok(by_id)
    }

    /// The settings `serve` would run with, secrets left out, for `check-config`: every flag
    /// as it is set (the derived `Serialize`), with the database and the nodes described.
    pub fn effective(&self) -> Result<serde_json::Value, String> {
        self.validate()?;
        let url = self.database_url();
        let backend = crate::store::Backend::of_url(&url)?;
        let nodes = if self.nodes.is_empty() {
            serde_json::json!({ "local": self.local_nodes })
        } else {
            let external: Vec<_> = self
                .nodes
                .iter()
                .map(|n| serde_json::json!({ "name": n.name, "url": n.url }))
                .collect();
            serde_json::json!({ "external": external })
        };
        let mut settings = serde_json::to_value(self).map_err(|e| e.to_string())?;
        settings["program"] = "backtrack-service".into();
        settings["database"] =
            serde_json::json!({ "backend": backend.name(), "url": crate::store::redact(&url) });
        settings["nodes"] = nodes;
        Ok(settings)
    }

    /// The configuration's durations, converted from their flags here and nowhere else.
    pub fn timings(&self) -> Timings {
        let node_call = Duration::from_millis(self.node_timeout_ms);
        let statement = Duration::from_millis(self.statement_timeout_ms);
        Timings {
            request: Duration::from_secs(self.request_timeout_secs),
            node_call,
            sql_call: statement + node_call,
            job_lease: Duration::from_secs(self.job_lease_secs),
            job_deadline: Duration::from_secs(self.job_deadline_secs),
            job_retry_base: Duration::from_millis(self.job_retry_base_ms),
            job_retry_max: Duration::from_millis(self.job_retry_max_ms),
            poll: Duration::from_millis(self.poll_interval_ms),
            metering: Duration::from_millis(self.metering_interval_ms),
        }
    }
}

/// The durations the service runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// The longest a request may take (`--request-timeout-secs`).
    pub request: Duration,
    /// The longest a call to a storage node may take (`--node-timeout-ms`).
    pub node_call: Duration,
    /// The longest a SQL call to a node may take: its statement time limit, then the answer.
    pub sql_call: Duration,
    pub job_lease: Duration,
    pub job_deadline: Duration,
    pub job_retry_base: Duration,
    pub job_retry_max: Duration,
    pub poll: Duration,
    pub metering: Duration,
}

/// A secret in the effective settings: whether it is set, never what it is.
fn secret<S: serde::Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_some() { "(set)" } else { "(none)" })
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// What handlers and workers need of the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub account_id: String,
    pub job_deadline: Duration,
    pub price_per_million: Money,
    pub currency: String,
    /// Whether requests must be signed with one of the configured access keys.
    pub authenticated: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Self {
        Settings {
            region: config.region.clone(),
            account_id: config.account_id.clone(),
            job_deadline: config.timings().job_deadline,
            price_per_million: config.price_per_million_cr_hours,
            currency: config.currency.clone(),
            authenticated: false,
        }
    }

    pub fn cluster_arn(&self, id: &str) -> String {
        format!(
            "arn:aws:rds:{}:{}:cluster:{id}",
            self.region, self.account_id
        )
    }
}

/// A storage node the service drives: a stable name and the URL it answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub name: String,
    pub url: String,
}

impl FromStr for NodeEndpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, url) = match text.split_once('=') {
            Some((name, url)) => (name.trim().to_string(), url.trim().to_string()),
            None => {
                let url = text.trim().to_string();
                let name = url
                    .split("://")
                    .nth(1)
                    .unwrap_or(&url)
                    .trim_end_matches('/')
                    .to_string();
                (name, url)
            }
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "storage node URL {url:?} must start with http:// or https://"
            ));
        }
        if name.is_empty() {
            return Err(format!("storage node {text:?} has an empty name"));
        }
        Ok(NodeEndpoint { name, url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_endpoints_take_an_optional_name() {
        let plain: NodeEndpoint = "http://10.0.0.5:7000/".parse().unwrap();
        assert_eq!(plain.name, "10.0.0.5:7000");
        let named: NodeEndpoint = "node-0=http://node-0.nodes:7000".parse().unwrap();
        assert_eq!(named.name, "node-0");
        assert_eq!(named.url, "http://node-0.nodes:7000");
        assert!("node-0=ftp://x".parse::<NodeEndpoint>().is_err());
    }

    #[test]
    fn the_effective_settings_show_every_flag_but_no_secret() {
        let mut config = Config::defaults();
        config.node_token = Some("t0ken-value".into());
        config.database_url = Some("postgres://u:hunter2@db/backtrack".into());
        config.nodes = vec!["a=http://n:7000".parse().unwrap()];
        let settings = config.effective().unwrap();
        let text = settings.to_string();
        assert!(
            !text.contains("t0ken-value") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(settings["node_token"], "(set)");
        assert_eq!(settings["statement_timeout_ms"], 10_000);
        assert_eq!(settings["price_per_million_cr_hours"], "0.012");
        assert_eq!(settings["nodes"]["external"][0]["name"], "a");
        assert_eq!(config.timings().sql_call, Duration::from_secs(20));
    }

    #[test]
    fn the_defaults_are_the_embedded_setup() {
        let config = Config::defaults();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert!(config.database_url().starts_with("sqlite://"));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn database_urls_name_a_backend_this_store_opens() {
        let mut config = Config::defaults();
        config.database_url = Some("postgres://u:secret@db:5432/backtrack".into());
        assert_eq!(
            config.effective().unwrap()["database"]["backend"],
            "postgresql"
        );
        assert_eq!(
            config.effective().unwrap()["database"]["url"],
            "postgres://u:***@db:5432/backtrack",
            "check-config never prints a password"
        );
        config.database_url = Some("mysql://db/backtrack".into());
        assert!(config
            .validate()
            .unwrap_err()
            .contains("unsupported database URL"));
    }

    #[test]
    fn nodes_need_a_token_and_distinct_names() {
        let mut config = Config::defaults();
        config.nodes = vec!["a=http://x:1".parse().unwrap()];
        assert!(config.validate().is_err());
        config.node_token = Some("t".into());
        assert!(config.validate().is_ok());
        config.nodes.push("a=http://y:1".parse().unwrap());
        assert!(config.validate().unwrap_err().contains("\"a\""));
    }
}
