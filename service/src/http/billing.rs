//! The REST routes of the billing reports: each parses its request, calls the operation
//! (ops/billing.rs) and renders the answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{json, Params};
use crate::error::{ApiError, ErrorResponse};
use crate::http::clusters::ClusterRef;
use crate::ops::billing::{BillingParams, BillingReport};
use crate::ops::Ops;

/// Backtrack usage and cost of every cluster.
#[utoipa::path(
    get, path = "/v1/billing", tag = "billing", operation_id = "GetBacktrackBilling",
    params(BillingParams),
    responses(
        (status = 200, description = "Usage, cost and projection", body = BillingReport),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
    )
)]
pub async fn all(
    State(ops): State<Ops>,
    Params(params): Params<BillingParams>,
) -> Result<Response, ApiError> {
    let report: BillingReport = ops.billing_report(None, params).await?;
    Ok(json(StatusCode::OK, &report))
}

/// Backtrack usage and cost of one cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}/billing", tag = "billing", operation_id = "GetClusterBacktrackBilling",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN"), BillingParams),
    responses(
        (status = 200, description = "Usage, cost and projection", body = BillingReport),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn cluster(
    State(ops): State<Ops>,
    Path(id): Path<String>,
    Params(params): Params<BillingParams>,
) -> Result<Response, ApiError> {
    let report = ops.billing_report(Some(&id), params).await?;
    Ok(json(StatusCode::OK, &report))
}
