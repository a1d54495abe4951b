//! The REST routes of BacktrackDBCluster and DescribeDBClusterBacktracks: each parses its
//! request, calls the operation (ops/backtracks.rs) and renders the answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{json, JsonBody, Params};
use crate::error::{ApiError, ErrorResponse};
use crate::http::clusters::ClusterRef;
use crate::ops::backtracks::{
    BacktrackDbClusterRequest, DbClusterBacktrack, DbClusterBacktrackMessage,
    DescribeBacktracksParams,
};
use crate::ops::preview::{BacktrackPreview, PreviewParams};
use crate::ops::Ops;

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
    State(ops): State<Ops>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<BacktrackDbClusterRequest>,
) -> Result<Response, ApiError> {
    let backtrack: DbClusterBacktrack = ops.start_backtrack(&id, request).await?;
    Ok(json(StatusCode::ACCEPTED, &backtrack))
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
    State(ops): State<Ops>,
    Path(id): Path<String>,
    Params(params): Params<DescribeBacktracksParams>,
) -> Result<Response, ApiError> {
    let body: DbClusterBacktrackMessage = ops.describe_backtracks(&id, params).await?;
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
    State(ops): State<Ops>,
    Path((id, backtrack_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let backtrack = ops.describe_backtrack(&id, &backtrack_id).await?;
    Ok(json(StatusCode::OK, &backtrack))
}

/// What a backtrack to `BacktrackTo` would undo, without changing anything: per table,
/// created, dropped, altered or modified since, with rows inserted, updated and deleted (and,
/// with `IncludeRows=true`, up to 100 changed rows each with their values before and after).
/// Its cost follows the changes since `BacktrackTo`, not the size of the database.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}/backtracks/preview", tag = "backtracks", operation_id = "PreviewDBClusterBacktrack",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN"), PreviewParams),
    responses(
        (status = 200, description = "What the backtrack would undo", body = BacktrackPreview),
        (status = 400, description = "MissingParameter, InvalidParameterValue (time in the future or before EarliestBacktrackTime), InvalidDBClusterStateFault (backtrack disabled, being backtracked)", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
        (status = 503, description = "ServiceUnavailable: the cluster's storage node does not answer", body = ErrorResponse),
    )
)]
pub async fn preview(
    State(ops): State<Ops>,
    Path(id): Path<String>,
    Params(params): Params<PreviewParams>,
) -> Result<Response, ApiError> {
    let body = ops.preview_backtrack(&id, params).await?;
    Ok(json(StatusCode::OK, &body))
}
