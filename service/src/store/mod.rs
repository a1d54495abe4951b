//! The metadata store: clusters and backtrack jobs, in embedded SQLite (the default) or
//! PostgreSQL, chosen from the URL.
//!
//! One implementation serves both, over sqlx's `Any` driver: the SQL is portable (`$n`
//! placeholders, integers for times and booleans, `RETURNING`), and the two places where the
//! backends differ are the `Backend` methods below: how a writing transaction starts (SQLite
//! takes the write lock up front with `BEGIN IMMEDIATE`, so two writers never deadlock upgrading
//! a read lock) and how a row is locked for a read-modify-write (`FOR UPDATE`, and
//! `FOR UPDATE SKIP LOCKED` for claiming jobs, on PostgreSQL; SQLite's single writer already
//! serializes). Schemas live in migrations/sqlite and migrations/postgres.

mod backtracks;
mod clusters;
mod events;
mod metering;
mod schema;
mod sql;
mod tx;

pub use backtracks::{BacktrackFilter, JobOutcome};
pub use clusters::ClusterFilter;
pub use events::{Event, EventFilter};
pub use metering::{AlertChange, MeterSample, MeterState, Recorded, UsageRow};

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use backtrack_storage_node::fsutil;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use self::tx::Tx;

/// Every way a store call can fail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cluster {0} already exists")]
    ClusterExists(String),
    #[error("cluster {0} not found")]
    ClusterNotFound(String),
    /// Another cluster's database has this name.
    #[error("database name {0} is taken")]
    DatabaseNameTaken(String),
    #[error("backtrack {0} not found")]
    BacktrackNotFound(String),
    /// The change is not legal in the cluster's current state; the text says why.
    #[error("{0}")]
    InvalidState(String),
    /// The database cannot take the request now, through no fault of the request: its disk
    /// is full, it is unreachable or busy. Nothing was changed; the same request can succeed
    /// later.
    #[error("metadata store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("metadata store: {0}")]
    Database(#[source] sqlx::Error),
    /// What the store holds, or was asked to open, makes no sense (a bad URL, a corrupt row).
    #[error("metadata store: {0}")]
    Invalid(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// Whether a database error says nothing about the request: a full disk, an I/O error, a
/// lock held too long, no memory (SQLite's primary codes); insufficient resources, an
/// operator's intervention or a lost connection (PostgreSQL's classes 53, 57 and 08); or no
/// connection at all.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<i32>() {
                // SQLite: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN (extended codes keep the
                // primary one in their low byte).
                Ok(sqlite) => matches!(sqlite & 0xff, 5 | 6 | 7 | 10 | 13 | 14),
                Err(_) => ["53", "57", "08"]
                    .iter()
                    .any(|class| code.starts_with(class)),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or why the URL is not one this store opens.
    pub fn of_url(url: &str) -> Result<Backend, String> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(format!(
                "unsupported database URL {:?}: use sqlite://PATH or postgres://…",
                redact(url)
            ));
        };
        AnyConnectOptions::from_str(url)
            .map_err(|e| format!("bad database URL {:?}: {e}", redact(url)))?;
        Ok(backend)
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }

    fn begin_statement(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    fn lock_row(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Opens the store at `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if
    /// needed, and applies the migrations that are not applied yet.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).map_err(StoreError::Invalid)?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad database URL: {e}")))?;
        let pool = match backend {
            Backend::Sqlite => {
                if let Some(path) = sqlite_path(url) {
                    create_private_database(&path).map_err(|e| {
                        StoreError::Invalid(format!("cannot create {}: {e}", path.display()))
                    })?;
                }
                AnyPoolOptions::new()
                    .max_connections(8)
                    // A connection to a local file cannot go stale the way a network one
                    // can, so it is not pinged (a round trip to its worker thread) before
                    // every use.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; FULL makes each commit
                            // durable (a lost backtrack job is not acceptable).
                            // The busy timeout first: switching to WAL waits for the lock
                            // when another process (a second replica) holds it.
                            conn.execute(
                                "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                                 PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await?
            }
        };
        let store = Store { pool, backend };
        schema::migrate(&store.pool, url, backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers; for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        Tx::begin(&self.pool, self.backend.begin_statement()).await
    }
}

/// Creates the SQLite database file (and its directory) private to this user, before SQLite
/// does: SQLite gives its journal and WAL files the database file's permissions, so they are
/// private too. An existing database and its companions are made private.
fn create_private_database(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fsutil::create_private_dir_all(dir)?;
        }
    }
    fsutil::private_options()
        .create(true)
        .append(true)
        .open(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(fsutil::PRIVATE_FILE))?;
        }
    }
    Ok(())
}

/// The file path of a `sqlite:` URL, if it names a file.
fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| path.into())
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://bt:secret@db:5432/bt"),
            "postgres://bt:***@db:5432/bt"
        );
        assert_eq!(redact("postgres://db/bt"), "postgres://db/bt");
        assert_eq!(redact("sqlite://data/x.db"), "sqlite://data/x.db");
    }

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(
            sqlite_path("sqlite://data/backtrack.db?mode=rwc"),
            Some("data/backtrack.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
