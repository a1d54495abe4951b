//! Clusters in the store: insert, read, list, change under a row lock, and the reads the
//! workers and placement need.

use std::collections::HashMap;

use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::Any;
use sqlx::Row;

use super::sql::Sql;
use super::tx::Tx;
use super::{Store, StoreError};
use crate::domain::{Cluster, ClusterId, ClusterStatus, RestoreType, RestoredFrom, Tag, Timestamp};

type AnyQuery<'q> = Query<'q, Any, AnyArguments<'q>>;

/// Which clusters a listing returns; an empty list means "any".
#[derive(Debug, Clone, Default)]
pub struct ClusterFilter {
    pub ids: Vec<String>,
    pub engines: Vec<String>,
    pub resource_ids: Vec<String>,
    pub clone_group_ids: Vec<String>,
}

pub(super) const CLUSTER_COLUMNS: &str =
    "id, resource_id, engine, engine_version, status, backtrack_window, \
    backtrack_enabled_at, backtrack_ever_enabled, deletion_protection, http_endpoint_enabled, \
    database_name, master_username, tags, node_id, created_at, updated_at, clone_group_id, \
    restored_from_cluster, restored_from_volume, restored_to, restore_type, \
    master_user_verifier";

impl Store {
    pub async fn insert_cluster(&self, c: &Cluster) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let result = insert(&mut tx, c).await;
        tx.finish(result).await
    }

    /// Inserts a cluster restored from `source`, in one transaction with the source's row
    /// locked: `check` sees the source as it is and may refuse; a copy-on-write clone joins
    /// the source's clone group, which the source gets if it has none.
    pub async fn insert_restored<F, E>(
        &self,
        clone: &mut Cluster,
        source: &ClusterId,
        join_clone_group: bool,
        check: F,
    ) -> Result<(), E>
    where
        F: FnOnce(&Cluster) -> Result<(), E>,
        E: From<StoreError>,
    {
        let mut tx = self.begin().await?;
        let result = async {
            let mut locked = self.locked_cluster(&mut tx, source).await?;
            check(&locked)?;
            if join_clone_group {
                let group = locked
                    .clone_group_id
                    .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
                    .clone();
                clone.clone_group_id = Some(group);
                locked.updated_at = Timestamp::now().max(locked.updated_at);
                write_cluster(&mut tx, &locked).await?;
            }
            insert(&mut tx, clone).await?;
            Ok(())
        }
        .await;
        tx.finish(result).await
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
        sql.any_of("clone_group_id", &filter.clone_group_ids);
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
            other => return Err(StoreError::Invalid(format!("no status counts for {other}"))),
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

    pub(super) async fn locked_cluster(
        &self,
        tx: &mut Tx,
        id: &ClusterId,
    ) -> Result<Cluster, StoreError> {
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
}

async fn insert(tx: &mut Tx, c: &Cluster) -> Result<(), StoreError> {
    // Taken identifiers first: the database-name index would otherwise answer for them too.
    let taken = sqlx::query("SELECT 1 FROM clusters WHERE id = $1")
        .bind(c.id.as_str().to_string())
        .fetch_optional(&mut **tx)
        .await?;
    if taken.is_some() {
        return Err(StoreError::ClusterExists(c.id.to_string()));
    }
    let sql = format!(
        "INSERT INTO clusters ({CLUSTER_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22)"
    );
    let query = sqlx::query(&sql)
        .bind(c.id.as_str().to_string())
        .bind(c.resource_id.clone())
        .bind(c.engine.clone())
        .bind(c.engine_version.clone());
    let from = c.restored_from.as_ref();
    let result = bind_state(query, c)
        .bind(c.database_name.clone())
        .bind(c.master_username.clone())
        .bind(tags_to_json(&c.tags))
        .bind(c.node_id.clone())
        .bind(c.created_at.as_micros())
        .bind(c.updated_at.as_micros())
        .bind(c.clone_group_id.clone())
        .bind(from.map(|f| f.cluster.to_string()))
        .bind(from.map(|f| f.volume.clone()))
        .bind(from.map(|f| f.at.as_micros()))
        .bind(from.map(|f| f.restore_type.as_str()))
        .bind(c.master_user_verifier.clone())
        .execute(&mut **tx)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e))
            if e.is_unique_violation()
                && (e.constraint() == Some("clusters_by_database")
                    || e.message().contains("clusters_by_database")) =>
        {
            Err(StoreError::DatabaseNameTaken(c.database().to_string()))
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::ClusterExists(c.id.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn write_cluster(tx: &mut Tx, c: &Cluster) -> Result<(), StoreError> {
    let query = sqlx::query(
        "UPDATE clusters SET status = $1, backtrack_window = $2, backtrack_enabled_at = $3, \
         backtrack_ever_enabled = $4, deletion_protection = $5, http_endpoint_enabled = $6, \
         tags = $7, node_id = $8, updated_at = $9, clone_group_id = $10, \
         master_user_verifier = $11 WHERE id = $12",
    );
    bind_state(query, c)
        .bind(tags_to_json(&c.tags))
        .bind(c.node_id.clone())
        .bind(c.updated_at.as_micros())
        .bind(c.clone_group_id.clone())
        .bind(c.master_user_verifier.clone())
        .bind(c.id.as_str().to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Binds what changes over a cluster's life, in column order: status, backtrack_window,
/// backtrack_enabled_at, backtrack_ever_enabled, deletion_protection, http_endpoint_enabled.
fn bind_state<'q>(query: AnyQuery<'q>, c: &Cluster) -> AnyQuery<'q> {
    query
        .bind(c.status.as_str())
        .bind(c.backtrack_window as i64)
        .bind(c.backtrack_enabled_at.map(Timestamp::as_micros))
        .bind(i64::from(c.backtrack_ever_enabled))
        .bind(i64::from(c.deletion_protection))
        .bind(i64::from(c.http_endpoint_enabled))
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
            .ok_or_else(|| StoreError::Invalid(format!("unknown cluster status {status:?}")))?,
        backtrack_window: row.try_get::<i64, _>("backtrack_window")? as u64,
        backtrack_enabled_at: row
            .try_get::<Option<i64>, _>("backtrack_enabled_at")?
            .map(Timestamp::from_micros),
        backtrack_ever_enabled: row.try_get::<i64, _>("backtrack_ever_enabled")? != 0,
        deletion_protection: row.try_get::<i64, _>("deletion_protection")? != 0,
        http_endpoint_enabled: row.try_get::<i64, _>("http_endpoint_enabled")? != 0,
        database_name: row.try_get("database_name")?,
        master_username: row.try_get("master_username")?,
        master_user_verifier: row.try_get("master_user_verifier")?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Invalid(format!("bad tags column: {e}")))?,
        node_id: row.try_get("node_id")?,
        clone_group_id: row.try_get("clone_group_id")?,
        restored_from: restored_from(row)?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

fn restored_from(row: &AnyRow) -> Result<Option<RestoredFrom>, StoreError> {
    let Some(cluster) = row.try_get::<Option<String>, _>("restored_from_cluster")? else {
        return Ok(None);
    };
    let restore_type: String = row.try_get("restore_type")?;
    Ok(Some(RestoredFrom {
        cluster: ClusterId::from_trusted(cluster),
        volume: row.try_get("restored_from_volume")?,
        at: Timestamp::from_micros(row.try_get("restored_to")?),
        restore_type: RestoreType::parse(&restore_type).map_err(StoreError::Invalid)?,
    }))
}

fn tags_to_json(tags: &[Tag]) -> String {
    serde_json::to_string(tags).expect("tags are plain strings")
}
