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

mod meter;
mod migrate;
mod tx;

pub use meter::{AlertChange, Event, EventFilter, MeterSample, MeterState, Recorded, UsageRow};

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use backtrack_storage_node::fsutil;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row};
use uuid::Uuid;

use self::tx::Tx;
use crate::domain::{
    Backtrack, BacktrackStatus, Cluster, ClusterId, ClusterStatus, Tag, Timestamp,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    ClusterExists(String),
    ClusterNotFound(String),
    BacktrackNotFound(String),
    /// The change is not legal in the cluster's current state; the text says why.
    InvalidState(String),
    /// The database cannot take the request now, through no fault of the request: its disk
    /// is full, it is unreachable or busy. Nothing was changed; the same request can succeed
    /// later.
    Unavailable(String),
    Database(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::ClusterExists(id) => write!(f, "cluster {id} already exists"),
            StoreError::ClusterNotFound(id) => write!(f, "cluster {id} not found"),
            StoreError::BacktrackNotFound(id) => write!(f, "backtrack {id} not found"),
            StoreError::InvalidState(why) => f.write_str(why),
            StoreError::Unavailable(why) => write!(f, "metadata store unavailable: {why}"),
            StoreError::Database(why) => write!(f, "metadata store: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e.to_string())
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

/// Which clusters a listing returns; an empty list means "any".
#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    pub ids: Vec<String>,
    pub engines: Vec<String>,
    pub resource_ids: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BacktrackFilter {
    pub ids: Vec<String>,
    pub statuses: Vec<String>,
}

/// How a claimed job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    Completed {
        backtrack_to: Timestamp,
        backtracked_from: Timestamp,
    },
    Failed {
        reason: String,
    },
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

const CLUSTER_COLUMNS: &str = "id, resource_id, engine, engine_version, status, backtrack_window, \
    backtrack_enabled_at, backtrack_ever_enabled, deletion_protection, http_endpoint_enabled, \
    database_name, master_username, tags, node_id, created_at, updated_at";

const BACKTRACK_COLUMNS: &str = "id, cluster_id, volume_id, node_id, requested_to, backtrack_to, \
    backtracked_from, created_at, use_earliest, force, status, attempts, run_at, deadline_at, \
    lease_owner, lease_expires_at, last_error, failure_reason";

impl Store {
    /// Opens the store at `url` (`sqlite://…` or `postgres://…`), creating a SQLite file if
    /// needed, and applies the migrations that are not applied yet.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).map_err(StoreError::Database)?;
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad database URL: {e}")))?;
        let pool = match backend {
            Backend::Sqlite => {
                if let Some(path) = sqlite_path(url) {
                    create_private_database(&path).map_err(|e| {
                        StoreError::Database(format!("cannot create {}: {e}", path.display()))
                    })?;
                }
                AnyPoolOptions::new()
                    .max_connections(8)
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
        migrate::run(&store.pool, backend).await?;
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

    // --- clusters -----------------------------------------------------------------------

    pub async fn insert_cluster(&self, c: &Cluster) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO clusters ({CLUSTER_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        );
        let result = sqlx::query(&sql)
            .bind(c.id.as_str().to_string())
            .bind(c.resource_id.clone())
            .bind(c.engine.clone())
            .bind(c.engine_version.clone())
            .bind(c.status.as_str())
            .bind(c.backtrack_window as i64)
            .bind(c.backtrack_enabled_at.map(Timestamp::as_micros))
            .bind(i64::from(c.backtrack_ever_enabled))
            .bind(i64::from(c.deletion_protection))
            .bind(i64::from(c.http_endpoint_enabled))
            .bind(c.database_name.clone())
            .bind(c.master_username.clone())
            .bind(tags_to_json(&c.tags))
            .bind(c.node_id.clone())
            .bind(c.created_at.as_micros())
            .bind(c.updated_at.as_micros())
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::ClusterExists(c.id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn cluster(&self, id: &ClusterId) -> Result<Cluster, StoreError> {
        let sql = format!("SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str().to_string())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => cluster_from_row(&row),
            None => Err(StoreError::ClusterNotFound(id.to_string())),
        }
    }

    /// Clusters in identifier order, after `after` (exclusive), at most `limit`.
    pub async fn clusters(
        &self,
        filter: &ClusterFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Cluster>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE 1 = 1"
        ));
        sql.any_of("id", &filter.ids);
        sql.any_of("engine", &filter.engines);
        sql.any_of("resource_id", &filter.resource_ids);
        if let Some(after) = after {
            sql.push_bound(" AND id > ", after.to_string());
        }
        sql.text.push_str(&format!(" ORDER BY id LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    /// Clusters whose volume needs work on a node: being created, modified or deleted.
    pub async fn clusters_to_converge(&self) -> Result<Vec<Cluster>, StoreError> {
        let sql = format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters \
             WHERE status IN ('creating', 'modifying', 'deleting') ORDER BY updated_at"
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(cluster_from_row).collect()
    }

    /// How many rows of `table` (clusters or backtracks) are in each status, for metrics.
    pub async fn count_by_status(&self, table: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let table = match table {
            "clusters" => "clusters",
            "backtracks" => "backtracks",
            other => {
                return Err(StoreError::Database(format!(
                    "no status counts for {other}"
                )))
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT status, COUNT(*) FROM {table} GROUP BY status ORDER BY status"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// How many clusters each node holds, for placement.
    pub async fn clusters_per_node(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT node_id, COUNT(*) FROM clusters GROUP BY node_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    /// Reads the cluster, lets `change` validate and edit it, and writes it back, all in one
    /// transaction with the row locked, so concurrent changes never interleave.
    pub async fn update_cluster<F, E>(&self, id: &ClusterId, change: F) -> Result<Cluster, E>
    where
        F: FnOnce(&mut Cluster) -> Result<(), E>,
        E: From<StoreError>,
    {
        let mut tx = self.begin().await?;
        let result = async {
            let mut cluster = self.locked_cluster(&mut tx, id).await?;
            change(&mut cluster)?;
            cluster.updated_at = Timestamp::now().max(cluster.updated_at);
            write_cluster(&mut tx, &cluster).await?;
            Ok::<_, E>(cluster)
        }
        .await;
        tx.finish(result).await
    }

    /// Moves the cluster from one of `from` to `to`; `false` if it was in another status (or
    /// gone). Used by workers, whose view may be stale.
    pub async fn transition_cluster(
        &self,
        id: &ClusterId,
        from: &[ClusterStatus],
        to: ClusterStatus,
    ) -> Result<bool, StoreError> {
        let mut sql = Sql::new("UPDATE clusters SET status = ".into());
        sql.push_bound("", to.as_str().to_string());
        sql.push_bound(", updated_at = ", Timestamp::now().as_micros());
        sql.push_bound(" WHERE id = ", id.as_str().to_string());
        sql.any_of(
            "status",
            &from
                .iter()
                .map(|s| s.as_str().to_string())
                .collect::<Vec<_>>(),
        );
        Ok(sql.execute(&self.pool).await? > 0)
    }

    /// Removes a cluster in status `deleting` whose volume is gone, with its backtracks.
    pub async fn remove_deleted_cluster(&self, id: &ClusterId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM clusters WHERE id = $1 AND status = 'deleting'")
            .bind(id.as_str().to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn locked_cluster(&self, tx: &mut Tx, id: &ClusterId) -> Result<Cluster, StoreError> {
        let sql = format!(
            "SELECT {CLUSTER_COLUMNS} FROM clusters WHERE id = $1{}",
            self.backend.lock_row()
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str().to_string())
            .fetch_optional(&mut **tx)
            .await?;
        match row {
            Some(row) => cluster_from_row(&row),
            None => Err(StoreError::ClusterNotFound(id.to_string())),
        }
    }

    // --- backtracks -----------------------------------------------------------------------

    /// Records a backtrack request and moves its cluster to `backtracking`, atomically. `check`
    /// sees the locked cluster first and may refuse (state, window, times).
    pub async fn start_backtrack<F, E>(&self, job: &Backtrack, check: F) -> Result<(), E>
    where
        F: FnOnce(&Cluster) -> Result<(), E>,
        E: From<StoreError>,
    {
        let mut tx = self.begin().await?;
        let result = async {
            let mut cluster = self.locked_cluster(&mut tx, &job.cluster_id).await?;
            check(&cluster)?;
            if cluster.status != ClusterStatus::Available {
                return Err(E::from(StoreError::InvalidState(format!(
                    "DB cluster {} is in {} state but expected it to be available.",
                    cluster.id,
                    cluster.status.as_str()
                ))));
            }
            insert_backtrack(&mut tx, job).await.map_err(|e| match e {
                StoreError::ClusterExists(_) => StoreError::InvalidState(format!(
                    "DB cluster {} already has a backtrack in progress.",
                    cluster.id
                )),
                other => other,
            })?;
            cluster.status = ClusterStatus::Backtracking;
            cluster.updated_at = job.created_at.max(cluster.updated_at);
            write_cluster(&mut tx, &cluster).await?;
            Ok(())
        }
        .await;
        tx.finish(result).await
    }

    pub async fn backtrack(&self, cluster: &ClusterId, id: &str) -> Result<Backtrack, StoreError> {
        let sql =
            format!("SELECT {BACKTRACK_COLUMNS} FROM backtracks WHERE cluster_id = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(cluster.as_str().to_string())
            .bind(id.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => backtrack_from_row(&row),
            None => Err(StoreError::BacktrackNotFound(id.to_string())),
        }
    }

    /// A cluster's backtracks, newest request first, after the `(created_at, id)` key
    /// `after` (exclusive), at most `limit`.
    pub async fn backtracks(
        &self,
        cluster: &ClusterId,
        filter: &BacktrackFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Backtrack>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {BACKTRACK_COLUMNS} FROM backtracks WHERE 1 = 1"
        ));
        sql.push_bound(" AND cluster_id = ", cluster.as_str().to_string());
        let ids: Vec<String> = filter.ids.iter().map(|i| i.to_ascii_lowercase()).collect();
        sql.any_of("id", &ids);
        sql.any_of("status", &filter.statuses);
        if let Some((created_at, id)) = after {
            sql.push_bound(" AND (created_at < ", created_at);
            sql.push_bound(" OR (created_at = ", created_at);
            sql.push_bound(" AND id < ", id);
            sql.text.push_str("))");
        }
        sql.text
            .push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {limit}"));
        let rows = sql.fetch_all(&self.pool).await?;
        rows.iter().map(backtrack_from_row).collect()
    }

    /// Claims the next runnable job for `owner` until `lease_until`: a job that is pending or
    /// applying, due, and not leased (or whose lease expired, e.g. its runner died). Claiming
    /// makes it `applying` and counts an attempt.
    pub async fn claim_backtrack(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Backtrack>, StoreError> {
        let sql = format!(
            "UPDATE backtracks SET status = 'applying', lease_owner = $1, lease_expires_at = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM backtracks \
                 WHERE status IN ('pending', 'applying') AND run_at <= $3 \
                 AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
                 ORDER BY run_at, created_at LIMIT 1{}) \
             RETURNING {BACKTRACK_COLUMNS}",
            self.backend.skip_locked()
        );
        let mut tx = self.begin().await?;
        let row = sqlx::query(&sql)
            .bind(owner.to_string())
            .bind(lease_until.as_micros())
            .bind(now.as_micros())
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from);
        let row = tx.finish(row).await?;
        row.as_ref().map(backtrack_from_row).transpose()
    }

    /// Gives a claimed job back to be tried again at `run_at`; `false` if the lease was lost.
    pub async fn retry_backtrack(
        &self,
        id: Uuid,
        owner: &str,
        run_at: Timestamp,
        error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE backtracks SET run_at = $1, last_error = $2, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $3 \
             WHERE id = $4 AND lease_owner = $5 AND status = 'applying'",
        )
        .bind(run_at.as_micros())
        .bind(error.to_string())
        .bind(Timestamp::now().as_micros())
        .bind(id.to_string())
        .bind(owner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Finishes a claimed job and makes its cluster available again, in one transaction;
    /// `false` (and no change) if `owner` no longer holds the lease.
    pub async fn finish_backtrack(
        &self,
        job: &Backtrack,
        owner: &str,
        outcome: &JobOutcome,
    ) -> Result<bool, StoreError> {
        let (status, to, from, reason) = match outcome {
            JobOutcome::Completed {
                backtrack_to,
                backtracked_from,
            } => (
                BacktrackStatus::Completed,
                *backtrack_to,
                *backtracked_from,
                None,
            ),
            JobOutcome::Failed { reason } => (
                BacktrackStatus::Failed,
                job.backtrack_to,
                job.backtracked_from,
                Some(reason.clone()),
            ),
        };
        let mut tx = self.begin().await?;
        let result = async {
            let done = sqlx::query(
                "UPDATE backtracks SET status = $1, backtrack_to = $2, backtracked_from = $3, \
             failure_reason = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
             WHERE id = $6 AND lease_owner = $7 AND status = 'applying'",
            )
            .bind(status.as_str())
            .bind(to.as_micros())
            .bind(from.as_micros())
            .bind(reason)
            .bind(Timestamp::now().as_micros())
            .bind(job.id.to_string())
            .bind(owner.to_string())
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE clusters SET status = 'available', updated_at = $1 \
             WHERE id = $2 AND status = 'backtracking'",
            )
            .bind(Timestamp::now().as_micros())
            .bind(job.cluster_id.as_str().to_string())
            .execute(&mut *tx)
            .await?;
            Ok(true)
        }
        .await;
        tx.finish(result).await
    }
}

/// Inserts a backtrack job; `ClusterExists` when its cluster already has one in progress
/// (a unique index holds one open job per cluster).
async fn insert_backtrack(tx: &mut Tx, job: &Backtrack) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO backtracks ({BACKTRACK_COLUMNS}, updated_at) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    );
    let inserted = sqlx::query(&sql)
        .bind(job.id.to_string())
        .bind(job.cluster_id.as_str().to_string())
        .bind(job.volume_id.clone())
        .bind(job.node_id.clone())
        .bind(job.requested_to.as_micros())
        .bind(job.backtrack_to.as_micros())
        .bind(job.backtracked_from.as_micros())
        .bind(job.created_at.as_micros())
        .bind(i64::from(job.use_earliest))
        .bind(i64::from(job.force))
        .bind(job.status.as_str())
        .bind(job.attempts)
        .bind(job.run_at.as_micros())
        .bind(job.deadline_at.as_micros())
        .bind(job.lease_owner.clone())
        .bind(job.lease_expires_at.map(Timestamp::as_micros))
        .bind(job.last_error.clone())
        .bind(job.failure_reason.clone())
        .bind(job.created_at.as_micros())
        .execute(&mut **tx)
        .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::ClusterExists(job.cluster_id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn write_cluster(tx: &mut Tx, c: &Cluster) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE clusters SET status = $1, backtrack_window = $2, backtrack_enabled_at = $3, \
         backtrack_ever_enabled = $4, deletion_protection = $5, http_endpoint_enabled = $6, \
         tags = $7, node_id = $8, updated_at = $9 WHERE id = $10",
    )
    .bind(c.status.as_str())
    .bind(c.backtrack_window as i64)
    .bind(c.backtrack_enabled_at.map(Timestamp::as_micros))
    .bind(i64::from(c.backtrack_ever_enabled))
    .bind(i64::from(c.deletion_protection))
    .bind(i64::from(c.http_endpoint_enabled))
    .bind(tags_to_json(&c.tags))
    .bind(c.node_id.clone())
    .bind(c.updated_at.as_micros())
    .bind(c.id.as_str().to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A statement whose conditions depend on the request, with its arguments numbered as pushed.
struct Sql {
    text: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<i64> for Arg {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl Sql {
    fn new(text: String) -> Self {
        Sql {
            text,
            args: Vec::new(),
        }
    }

    fn push_bound(&mut self, before: &str, arg: impl Into<Arg>) {
        self.args.push(arg.into());
        self.text.push_str(&format!("{before}${}", self.args.len()));
    }

    /// ` AND column IN (…)`, unless `values` is empty.
    fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.text.push_str(&format!(" AND {column} IN ("));
        for (i, value) in values.iter().enumerate() {
            self.push_bound(if i == 0 { "" } else { ", " }, value.clone());
        }
        self.text.push(')');
    }

    fn query(&self) -> sqlx::query::Query<'_, Any, sqlx::any::AnyArguments<'_>> {
        let mut query = sqlx::query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Text(s) => query.bind(s.as_str()),
                Arg::Int(i) => query.bind(*i),
            };
        }
        query
    }

    async fn fetch_all(&self, pool: &AnyPool) -> Result<Vec<AnyRow>, StoreError> {
        Ok(self.query().fetch_all(pool).await?)
    }

    async fn execute(&self, pool: &AnyPool) -> Result<u64, StoreError> {
        Ok(self.query().execute(pool).await?.rows_affected())
    }
}

fn cluster_from_row(row: &AnyRow) -> Result<Cluster, StoreError> {
    let status: String = row.try_get("status")?;
    let tags: String = row.try_get("tags")?;
    Ok(Cluster {
        id: ClusterId::from_trusted(row.try_get("id")?),
        resource_id: row.try_get("resource_id")?,
        engine: row.try_get("engine")?,
        engine_version: row.try_get("engine_version")?,
        status: ClusterStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown cluster status {status:?}")))?,
        backtrack_window: row.try_get::<i64, _>("backtrack_window")? as u64,
        backtrack_enabled_at: row
            .try_get::<Option<i64>, _>("backtrack_enabled_at")?
            .map(Timestamp::from_micros),
        backtrack_ever_enabled: row.try_get::<i64, _>("backtrack_ever_enabled")? != 0,
        deletion_protection: row.try_get::<i64, _>("deletion_protection")? != 0,
        http_endpoint_enabled: row.try_get::<i64, _>("http_endpoint_enabled")? != 0,
        database_name: row.try_get("database_name")?,
        master_username: row.try_get("master_username")?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Database(format!("bad tags column: {e}")))?,
        node_id: row.try_get("node_id")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

fn backtrack_from_row(row: &AnyRow) -> Result<Backtrack, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let micros = |name: &str| -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_micros(row.try_get(name)?))
    };
    Ok(Backtrack {
        id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Database(format!("bad backtrack id {id:?}: {e}")))?,
        cluster_id: ClusterId::from_trusted(row.try_get("cluster_id")?),
        volume_id: row.try_get("volume_id")?,
        node_id: row.try_get("node_id")?,
        requested_to: micros("requested_to")?,
        backtrack_to: micros("backtrack_to")?,
        backtracked_from: micros("backtracked_from")?,
        created_at: micros("created_at")?,
        use_earliest: row.try_get::<i64, _>("use_earliest")? != 0,
        force: row.try_get::<i64, _>("force")? != 0,
        status: BacktrackStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown backtrack status {status:?}")))?,
        attempts: row.try_get("attempts")?,
        run_at: micros("run_at")?,
        deadline_at: micros("deadline_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row
            .try_get::<Option<i64>, _>("lease_expires_at")?
            .map(Timestamp::from_micros),
        last_error: row.try_get("last_error")?,
        failure_reason: row.try_get("failure_reason")?,
    })
}

fn tags_to_json(tags: &[Tag]) -> String {
    serde_json::to_string(tags).expect("tags are plain strings")
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
