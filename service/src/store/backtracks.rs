//! Backtrack jobs in the store: recorded with their cluster's move to `backtracking` in one
//! transaction, claimed with a lease, retried, finished (fenced by the lease).

use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::clusters::write_cluster;
use super::sql::Sql;
use super::tx::Tx;
use super::{Store, StoreError};
use crate::domain::{Backtrack, BacktrackStatus, Cluster, ClusterId, ClusterStatus, Timestamp};

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

const BACKTRACK_COLUMNS: &str = "id, cluster_id, volume_id, node_id, requested_to, backtrack_to, \
    backtracked_from, created_at, use_earliest, force, status, attempts, run_at, deadline_at, \
    lease_owner, lease_expires_at, last_error, failure_reason";

impl Store {
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
            if !cluster.status.accepts_backtrack() {
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

fn backtrack_from_row(row: &AnyRow) -> Result<Backtrack, StoreError> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let micros = |name: &str| -> Result<Timestamp, StoreError> {
        Ok(Timestamp::from_micros(row.try_get(name)?))
    };
    Ok(Backtrack {
        id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Invalid(format!("bad backtrack id {id:?}: {e}")))?,
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
            .ok_or_else(|| StoreError::Invalid(format!("unknown backtrack status {status:?}")))?,
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
