//! BacktrackDBCluster and DescribeDBClusterBacktracks.
//!
//! A backtrack request is checked against what the node can do (the earliest restorable time,
//! open transactions), recorded as a `pending` job together with the cluster's move to
//! `backtracking`, and accepted; the runner (jobs/) applies it, and the node checks its
//! ledger and transactions once more when it does.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{list, one, parse_cluster_ref, required, Ops};
use crate::domain::paging::Page;
use crate::domain::{Backtrack, BacktrackStatus, Cluster, ClusterId, Timestamp};
use crate::error::ApiError;
use crate::events::What;
use crate::store::BacktrackFilter;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktrackDbClusterRequest {
    /// The instant to rewind to: ISO 8601 (e.g. `2026-11-23T10:15:30Z`), any offset, or
    /// seconds since the epoch. Not in the future; not before `EarliestBacktrackTime`.
    #[serde(rename = "BacktrackTo")]
    #[schema(value_type = String, format = DateTime, required = true)]
    pub backtrack_to: Option<Timestamp>,
    /// Roll back open Data API transactions instead of refusing.
    #[serde(rename = "Force", default)]
    pub force: Option<bool>,
    /// When `BacktrackTo` is before `EarliestBacktrackTime`, rewind to the earliest time
    /// instead of refusing.
    #[serde(rename = "UseEarliestTimeOnPointInTimeUnavailable", default)]
    pub use_earliest_time_on_point_in_time_unavailable: Option<bool>,
}

/// One backtrack of a cluster, with RDS's `DBClusterBacktrack` members.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DbClusterBacktrack {
    #[serde(rename = "DBClusterIdentifier")]
    pub db_cluster_identifier: String,
    #[serde(rename = "BacktrackIdentifier")]
    pub backtrack_identifier: String,
    /// The instant the cluster was (or will be) rewound to.
    #[serde(rename = "BacktrackTo")]
    #[schema(value_type = String, format = DateTime)]
    pub backtrack_to: Timestamp,
    /// The instant the cluster was rewound from: when the switch happened (the request time
    /// until then).
    #[serde(rename = "BacktrackedFrom")]
    #[schema(value_type = String, format = DateTime)]
    pub backtracked_from: Timestamp,
    #[serde(rename = "BacktrackRequestCreationTime")]
    #[schema(value_type = String, format = DateTime)]
    pub backtrack_request_creation_time: Timestamp,
    /// `pending`, `applying`, `completed` or `failed`.
    #[serde(rename = "Status")]
    pub status: String,
    /// Why a `failed` backtrack failed (not an RDS member).
    #[serde(rename = "StatusReason", skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DbClusterBacktrackMessage {
    #[serde(rename = "DBClusterBacktracks")]
    pub db_cluster_backtracks: Vec<DbClusterBacktrack>,
    #[serde(rename = "Marker", skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// Query parameters of DescribeDBClusterBacktracks. Filter values may repeat or be
/// comma-separated.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DescribeBacktracksParams {
    /// One backtrack (a UUID); an unknown one is DBClusterBacktrackNotFoundFault.
    #[serde(rename = "BacktrackIdentifier", default, deserialize_with = "one")]
    #[param(format = Uuid)]
    pub backtrack_identifier: Option<String>,
    /// Page size, 20..=100 (default 100).
    #[serde(rename = "MaxRecords", default, deserialize_with = "one")]
    #[param(value_type = Option<i64>, minimum = 20, maximum = 100)]
    pub max_records: Option<String>,
    /// The `Marker` of the previous page.
    #[serde(rename = "Marker", default, deserialize_with = "one")]
    pub marker: Option<String>,
    /// Filter: backtrack identifiers.
    #[serde(rename = "db-cluster-backtrack-id", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub db_cluster_backtrack_id: Vec<String>,
    /// Filter: statuses (`pending`, `applying`, `completed`, `failed`).
    #[serde(
        rename = "db-cluster-backtrack-status",
        default,
        deserialize_with = "list"
    )]
    #[param(value_type = Option<Vec<String>>)]
    pub db_cluster_backtrack_status: Vec<String>,
}

impl Ops {
    /// BacktrackDBCluster: checks the request against the cluster and what its node reports
    /// (the earliest restorable time, open transactions), then records the job and the
    /// cluster's move to `backtracking` in one transaction.
    pub async fn start_backtrack(
        &self,
        named: &str,
        request: BacktrackDbClusterRequest,
    ) -> Result<DbClusterBacktrack, ApiError> {
        let requested = required(request.backtrack_to, "BacktrackTo")?;
        let id = parse_cluster_ref(&self.settings, named)?;
        let now = Timestamp::now();
        if requested > now {
            return Err(ApiError::InvalidParameterValue(format!(
                "The specified BacktrackTo time {requested} is in the future; the current time is {now}."
            )));
        }
        let cluster = self.store.cluster(&id).await?;
        if cluster.backtrack_window == 0 {
            return Err(ApiError::InvalidClusterState(format!(
                "Backtrack is not enabled for DB cluster {id}: set a BacktrackWindow first."
            )));
        }
        if !cluster.status.accepts_backtrack() {
            return Err(not_available(&cluster));
        }
        if !self.nodes.is_healthy(&cluster.node_id) {
            return Err(ApiError::InvalidClusterState(format!(
                "DB cluster {id} is inaccessible: its storage node does not answer. Try again when it is available."
            )));
        }
        let use_earliest = request
            .use_earliest_time_on_point_in_time_unavailable
            .unwrap_or(false);
        let force = request.force.unwrap_or(false);
        let target = self
            .target_time(&cluster, requested, use_earliest, force, now)
            .await?;
        let job = Backtrack {
            id: Uuid::new_v4(),
            cluster_id: cluster.id.clone(),
            volume_id: cluster.resource_id.clone(),
            node_id: cluster.node_id.clone(),
            requested_to: requested,
            backtrack_to: target,
            backtracked_from: now,
            created_at: now,
            use_earliest,
            force,
            status: BacktrackStatus::Pending,
            attempts: 0,
            run_at: now,
            deadline_at: now.plus_millis(self.settings.job_deadline.as_millis() as i64),
            lease_owner: None,
            lease_expires_at: None,
            last_error: None,
            failure_reason: None,
        };
        // The store refuses a cluster that is no longer available; this refuses one that
        // changed in a way that voids the checks above.
        self.store
            .start_backtrack(&job, |locked| -> Result<(), ApiError> {
                if locked.resource_id != job.volume_id || locked.backtrack_window == 0 {
                    return Err(ApiError::InvalidClusterState(format!(
                        "DB cluster {id} changed while the backtrack was requested; try again."
                    )));
                }
                Ok(())
            })
            .await?;
        self.ready.forget(&id);
        tracing::info!(cluster = %id, backtrack = %job.id, to = %target, "backtrack requested");
        self.event(id.as_str(), What::BacktrackStarted(&job)).await;
        self.wakeup.wake();
        Ok(describe_backtrack(&job))
    }

    /// The instant a backtrack will use. The node knows the real earliest time (its actual
    /// window) and its open transactions; when it cannot be asked, the metadata's view is
    /// used and the node decides at apply time.
    async fn target_time(
        &self,
        cluster: &Cluster,
        requested: Timestamp,
        use_earliest: bool,
        force: bool,
        now: Timestamp,
    ) -> Result<Timestamp, ApiError> {
        let id = &cluster.id;
        let (figures, earliest) = self.history(cluster, now).await;
        let mut target = requested;
        if let Some(earliest) = earliest.filter(|e| requested < *e) {
            if !use_earliest {
                return Err(ApiError::InvalidParameterValue(format!(
                    "The specified BacktrackTo time {requested} is before the earliest backtrack \
                     time {earliest} of DB cluster {id}. Set UseEarliestTimeOnPointInTimeUnavailable \
                     to backtrack to the earliest time instead."
                )));
            }
            target = earliest;
        }
        let open = figures.as_ref().map_or(0, |f| f.open_transactions);
        if open > 0 && !force {
            return Err(ApiError::InvalidClusterState(format!(
                "DB cluster {id} has {open} open transaction(s). Commit or roll them back, or \
                 set Force to roll them back with the backtrack."
            )));
        }
        Ok(target)
    }

    /// DescribeDBClusterBacktracks: a cluster's backtracks, newest request first.
    pub async fn describe_backtracks(
        &self,
        named: &str,
        params: DescribeBacktracksParams,
    ) -> Result<DbClusterBacktrackMessage, ApiError> {
        let id = parse_cluster_ref(&self.settings, named)?;
        let page = Page::<(i64, String)>::parse(
            "backtracks",
            params.max_records.as_deref(),
            params.marker.as_deref(),
        )
        .map_err(ApiError::InvalidParameterValue)?;
        let mut filter = BacktrackFilter {
            ids: params.db_cluster_backtrack_id,
            statuses: params.db_cluster_backtrack_status,
        };
        if let Some(status) = filter
            .statuses
            .iter()
            .find(|s| BacktrackStatus::parse(s).is_none())
        {
            return Err(ApiError::InvalidParameterValue(format!(
                "Unknown backtrack status {status:?}; use pending, applying, completed or failed."
            )));
        }
        self.store.cluster(&id).await?;
        if let Some(one) = &params.backtrack_identifier {
            let one = parse_backtrack_id(one)?;
            self.store.backtrack(&id, &one).await?;
            filter.ids = vec![one];
        }
        let backtracks = self
            .store
            .backtracks(&id, &filter, page.after.clone(), page.fetch())
            .await?;
        let page = page.finish(backtracks, |b| (b.created_at.as_micros(), b.id.to_string()));
        Ok(DbClusterBacktrackMessage {
            db_cluster_backtracks: page.items.iter().map(describe_backtrack).collect(),
            marker: page.marker,
        })
    }

    /// One backtrack of a cluster.
    pub async fn describe_backtrack(
        &self,
        named: &str,
        backtrack_id: &str,
    ) -> Result<DbClusterBacktrack, ApiError> {
        let id: ClusterId = parse_cluster_ref(&self.settings, named)?;
        let backtrack_id = parse_backtrack_id(backtrack_id)?;
        self.store.cluster(&id).await?;
        let backtrack = self.store.backtrack(&id, &backtrack_id).await?;
        Ok(describe_backtrack(&backtrack))
    }
}

fn parse_backtrack_id(text: &str) -> Result<String, ApiError> {
    Uuid::parse_str(text)
        .map(|u| u.to_string())
        .map_err(|_| {
            ApiError::InvalidParameterValue(format!(
                "BacktrackIdentifier {text:?} is not a UUID (e.g. 123e4567-e89b-12d3-a456-426655440000)."
            ))
        })
}

fn not_available(cluster: &Cluster) -> ApiError {
    ApiError::InvalidClusterState(format!(
        "DB cluster {} is in {} state but expected it to be available.",
        cluster.id,
        cluster.status.as_str()
    ))
}

pub fn describe_backtrack(b: &Backtrack) -> DbClusterBacktrack {
    DbClusterBacktrack {
        db_cluster_identifier: b.cluster_id.to_string(),
        backtrack_identifier: b.id.to_string(),
        backtrack_to: b.backtrack_to,
        backtracked_from: b.backtracked_from,
        backtrack_request_creation_time: b.created_at,
        status: b.status.as_str().to_string(),
        status_reason: b.failure_reason.clone(),
    }
}
