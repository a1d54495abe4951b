//! The REST routes of CreateDBCluster, DescribeDBClusters, ModifyDBCluster, DeleteDBCluster
//! and RestoreDBClusterToPointInTime: each parses its request, calls the operation
//! (ops/clusters.rs, ops/restore.rs) and renders the answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use utoipa::ToSchema;

use super::{json, JsonBody, Params};
use crate::error::{ApiError, ErrorResponse};
use crate::ops::clusters::{
    CreateDbClusterRequest, DbClusterMessage, DbClusterResult, DescribeDbClustersParams,
    ModifyDbClusterRequest,
};
use crate::ops::restore::RestoreDbClusterRequest;
use crate::ops::Ops;

/// A cluster named in a path: its identifier (case-insensitive; a letter first, then
/// letters, digits and single hyphens, no hyphen last, 1-63 characters) or its ARN
/// (`arn:aws:rds:REGION:ACCOUNT:cluster:IDENTIFIER`).
pub struct ClusterRef;

impl utoipa::PartialSchema for ClusterRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$"))
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for ClusterRef {}

/// Creates a cluster (CreateDBCluster) and its volume on the least-loaded storage node.
#[utoipa::path(
    post, path = "/v1/clusters", tag = "clusters", operation_id = "CreateDBCluster",
    request_body = CreateDbClusterRequest,
    responses(
        (status = 201, description = "Created; `Status` is `creating` until the volume exists", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue, MissingParameter, DBClusterAlreadyExistsFault, InsufficientStorageClusterCapacity, StorageQuotaExceeded (every storage node's disk is full)", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn create(
    State(ops): State<Ops>,
    JsonBody(request): JsonBody<CreateDbClusterRequest>,
) -> Result<Response, ApiError> {
    let db_cluster = ops.create_cluster(request).await?;
    Ok(json(StatusCode::CREATED, &DbClusterResult { db_cluster }))
}

/// Lists clusters (DescribeDBClusters), in identifier order, a page at a time.
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters", operation_id = "DescribeDBClusters",
    params(DescribeDbClustersParams),
    responses(
        (status = 200, description = "A page of clusters", body = DbClusterMessage),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault (DBClusterIdentifier given and unknown)", body = ErrorResponse),
    )
)]
pub async fn describe(
    State(ops): State<Ops>,
    Params(params): Params<DescribeDbClustersParams>,
) -> Result<Response, ApiError> {
    let body: DbClusterMessage = ops.describe_clusters(params).await?;
    Ok(json(StatusCode::OK, &body))
}

/// Describes one cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "DescribeDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier (case-insensitive) or ARN")),
    responses(
        (status = 200, description = "The cluster", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn describe_one(
    State(ops): State<Ops>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let db_cluster = ops.describe_cluster(&id).await?;
    Ok(json(StatusCode::OK, &DbClusterResult { db_cluster }))
}

/// Changes a cluster (ModifyDBCluster): its backtrack window, deletion protection or Data API
/// access. Changes apply immediately.
#[utoipa::path(
    patch, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "ModifyDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    request_body = ModifyDbClusterRequest,
    responses(
        (status = 200, description = "The cluster, changed", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue, InvalidDBClusterStateFault", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn modify(
    State(ops): State<Ops>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ModifyDbClusterRequest>,
) -> Result<Response, ApiError> {
    let db_cluster = ops.modify_cluster(&id, request).await?;
    Ok(json(StatusCode::OK, &DbClusterResult { db_cluster }))
}

/// Deletes a cluster (DeleteDBCluster) and its volume, history included. Refused while
/// deletion protection is on or a backtrack runs.
#[utoipa::path(
    delete, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "DeleteDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    responses(
        (status = 200, description = "Deletion started; `Status` is `deleting`", body = DbClusterResult),
        (status = 400, description = "InvalidParameterCombination (deletion protection), InvalidDBClusterStateFault", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn delete(State(ops): State<Ops>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let db_cluster = ops.delete_cluster(&id).await?;
    Ok(json(StatusCode::OK, &DbClusterResult { db_cluster }))
}

/// Makes a new cluster holding this cluster's state at an instant of its backtrack window
/// (RestoreDBClusterToPointInTime): a copy-on-write clone, made in a time that does not
/// depend on the size, or a full copy. The live cluster is not touched.
#[utoipa::path(
    post, path = "/v1/clusters/{SourceDBClusterIdentifier}/restore", tag = "clusters", operation_id = "RestoreDBClusterToPointInTime",
    params(("SourceDBClusterIdentifier" = inline(ClusterRef), Path, description = "The cluster to restore from: identifier or ARN")),
    request_body = RestoreDbClusterRequest,
    responses(
        (status = 201, description = "Created; `Status` is `creating` until the volume exists", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue, InvalidParameterCombination (RestoreToTime with UseLatestRestorableTime, or neither), MissingParameter, InvalidRestoreFault (the instant is outside the source's window, or in the future), InvalidDBClusterStateFault, DBClusterAlreadyExistsFault", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault (the source)", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn restore(
    State(ops): State<Ops>,
    Path(source): Path<String>,
    JsonBody(request): JsonBody<RestoreDbClusterRequest>,
) -> Result<Response, ApiError> {
    let db_cluster = ops.restore_cluster(Some(&source), request).await?;
    Ok(json(StatusCode::CREATED, &DbClusterResult { db_cluster }))
}
