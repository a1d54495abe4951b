//! BacktrackDBCluster and DescribeDBClusterBacktracks.
//!
//! A backtrack request is checked against what the node can do (the earliest restorable time,
//! open transactions), recorded as a `pending` job together with the cluster's move to
//! `backtracking`, and answered 202; the runner (jobs/) applies it.

use crate::http::clusters::ClusterRef;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::clusters::parse_cluster_ref;
use super::{json, AppState, JsonBody, QueryParams};
use crate::domain::paging::{decode_marker, encode_marker, validate_max_records};
use crate::domain::{Backtrack, BacktrackStatus, ClusterStatus, Timestamp};
use crate::error::{ApiError, ErrorResponse};
use crate::events::What;
use crate::store::BacktrackFilter;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktrackDbClusterRequest {
    /// The instant to rewind to: ISO 8601 (e.g. `2026-11-23T10:15:30Z`), any offset, or
    /// seconds since the epoch. Not in the future; not before `EarliestBacktrackTime`.
    #[serde(rename = "BacktrackTo")]
    #[schema(value_type = String, format = DateTime)]
    pub backtrack_to: Timestamp,
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
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct DescribeBacktracksParams {
    /// One backtrack (a UUID); an unknown one is DBClusterBacktrackNotFoundFault.
    #[param(format = Uuid)]
    BacktrackIdentifier: Option<String>,
    /// Page size, 20..=100 (default 100).
    #[param(minimum = 20, maximum = 100)]
    MaxRecords: Option<i64>,
    /// The `Marker` of the previous page.
    Marker: Option<String>,
    /// Filter: backtrack identifiers.
    #[param(rename = "db-cluster-backtrack-id")]
    db_cluster_backtrack_id: Option<Vec<String>>,
    /// Filter: statuses (`pending`, `applying`, `completed`, `failed`).
    #[param(rename = "db-cluster-backtrack-status")]
    db_cluster_backtrack_status: Option<Vec<String>>,
}

/// Rewinds a cluster in place to `BacktrackTo` (BacktrackDBCluster).
#[utoipa::path(
    post, path = "/v1/clusters/{DBClusterIdentifier}/backtracks", tag = "backtracks", operation_id = "BacktrackDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    request_body = BacktrackDbClusterRequest,
    responses(
        (status = 202, description = "Accepted; the backtrack is `pending` and the cluster `backtracking`", body = DbClusterBacktrack),
        (status = 400, description = "InvalidParameterValue (time in the future or before EarliestBacktrackTime), MissingParameter, InvalidDBClusterStateFault (not available, backtrack disabled, open transactions)", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<BacktrackDbClusterRequest>,
) -> Result<Response, ApiError> {
    let id = parse_cluster_ref(&state.settings, &id)?;
    let now = Timestamp::now();
    let requested = request.backtrack_to;
    if requested > now {
        return Err(ApiError::InvalidParameterValue(format!(
            "The specified BacktrackTo time {requested} is in the future; the current time is {now}."
        )));
    }
    let cluster = state.store.cluster(&id).await?;
    if cluster.backtrack_window == 0 {
        return Err(ApiError::InvalidClusterState(format!(
            "Backtrack is not enabled for DB cluster {id}: set a BacktrackWindow first."
        )));
    }
    if cluster.status != ClusterStatus::Available {
        return Err(not_available(&cluster.id.to_string(), cluster.status));
    }
    if !state.nodes.is_healthy(&cluster.node_id) {
        return Err(ApiError::InvalidClusterState(format!(
            "DB cluster {id} is inaccessible: its storage node does not answer. Try again when it is available."
        )));
    }
    let use_earliest = request
        .use_earliest_time_on_point_in_time_unavailable
        .unwrap_or(false);
    let force = request.force.unwrap_or(false);
    // The node knows the real earliest time (its actual window) and its open transactions;
    // when it cannot be asked, the metadata's view is used and the node decides at apply time.
    let figures = state
        .nodes
        .volume_figures(&cluster.node_id, &cluster.resource_id)
        .await;
    let earliest = match &figures {
        Some(f) => f.earliest_restorable_us.map(Timestamp::from_micros),
        None => cluster.earliest_backtrack_time(now),
    };
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
    if let Some(open) = figures
        .as_ref()
        .map(|f| f.open_transactions)
        .filter(|n| *n > 0)
    {
        if !force {
            return Err(ApiError::InvalidClusterState(format!(
                "DB cluster {id} has {open} open transaction(s). Commit or roll them back, or \
                 set Force to roll them back with the backtrack."
            )));
        }
    }
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
        deadline_at: now.plus_millis(state.settings.job_deadline.as_millis() as i64),
        lease_owner: None,
        lease_expires_at: None,
        last_error: None,
        failure_reason: None,
    };
    state
        .store
        .start_backtrack(&job, |locked| -> Result<(), ApiError> {
            // The cluster may have changed since it was read above.
            if locked.resource_id != job.volume_id || locked.backtrack_window == 0 {
                return Err(ApiError::InvalidClusterState(format!(
                    "DB cluster {id} changed while the backtrack was requested; try again."
                )));
            }
            if locked.status != ClusterStatus::Available {
                return Err(not_available(locked.id.as_str(), locked.status));
            }
            Ok(())
        })
        .await?;
    tracing::info!(cluster = %id, backtrack = %job.id, to = %target, "backtrack requested");
    state.event(id.as_str(), What::BacktrackStarted(&job)).await;
    state.wakeup.wake();
    Ok(json(StatusCode::ACCEPTED, &describe_backtrack(&job)))
}

/// Lists a cluster's backtracks (DescribeDBClusterBacktracks), newest request first.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}/backtracks", tag = "backtracks", operation_id = "DescribeDBClusterBacktracks",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN"), DescribeBacktracksParams),
    responses(
        (status = 200, description = "A page of the cluster's backtracks, newest first", body = DbClusterBacktrackMessage),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault, DBClusterBacktrackNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn describe(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = parse_cluster_ref(&state.settings, &id)?;
    let params = QueryParams::parse(
        query.as_deref(),
        &[
            "BacktrackIdentifier",
            "MaxRecords",
            "Marker",
            "db-cluster-backtrack-id",
            "db-cluster-backtrack-status",
        ],
    )?;
    let limit = validate_max_records(params.integer("MaxRecords")?)
        .map_err(ApiError::InvalidParameterValue)?;
    let after = params
        .one("Marker")?
        .map(|m| decode_marker::<(i64, String)>("backtracks", m))
        .transpose()
        .map_err(ApiError::InvalidParameterValue)?;
    let mut filter = BacktrackFilter {
        ids: params.all("db-cluster-backtrack-id"),
        statuses: params.all("db-cluster-backtrack-status"),
    };
    for status in &filter.statuses {
        if BacktrackStatus::parse(status).is_none() {
            return Err(ApiError::InvalidParameterValue(format!(
                "Unknown backtrack status {status:?}; use pending, applying, completed or failed."
            )));
        }
    }
    state.store.cluster(&id).await?;
    if let Some(one) = params.one("BacktrackIdentifier")? {
        let one = parse_backtrack_id(one)?;
        state.store.backtrack(&id, &one).await?;
        filter.ids = vec![one];
    }
    let mut backtracks = state
        .store
        .backtracks(&id, &filter, after, limit + 1)
        .await?;
    let marker = if backtracks.len() as i64 > limit {
        backtracks.truncate(limit as usize);
        backtracks
            .last()
            .map(|b| encode_marker("backtracks", &(b.created_at.as_micros(), b.id.to_string())))
    } else {
        None
    };
    let body = DbClusterBacktrackMessage {
        db_cluster_backtracks: backtracks.iter().map(describe_backtrack).collect(),
        marker,
    };
    Ok(json(StatusCode::OK, &body))
}

/// Describes one backtrack.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}/backtracks/{BacktrackIdentifier}", tag = "backtracks", operation_id = "DescribeDBClusterBacktrack",
    params(
        ("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN"),
        ("BacktrackIdentifier" = String, Path, format = Uuid, description = "The backtrack's UUID"),
    ),
    responses(
        (status = 200, description = "The backtrack", body = DbClusterBacktrack),
        (status = 400, description = "InvalidParameterValue (not a UUID)", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault, DBClusterBacktrackNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn describe_one(
    State(state): State<AppState>,
    Path((id, backtrack_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_cluster_ref(&state.settings, &id)?;
    let backtrack_id = parse_backtrack_id(&backtrack_id)?;
    state.store.cluster(&id).await?;
    let backtrack = state.store.backtrack(&id, &backtrack_id).await?;
    Ok(json(StatusCode::OK, &describe_backtrack(&backtrack)))
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

fn not_available(id: &str, status: ClusterStatus) -> ApiError {
    ApiError::InvalidClusterState(format!(
        "DB cluster {id} is in {} state but expected it to be available.",
        status.as_str()
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
