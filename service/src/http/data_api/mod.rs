//! The RDS Data API (rds-data, restJson1): ExecuteStatement, BatchExecuteStatement,
//! BeginTransaction, CommitTransaction and RollbackTransaction, routed by `resourceArn` (the
//! cluster's ARN) to the storage node holding the cluster. The SQL dialect is SQLite's.
//!
//! Shapes are the service model's: camelCase members, `Field` unions with exactly one member
//! set. Errors have the Data API's wire form: the error name in `x-amzn-ErrorType`, the body
//! `{"message": "..."}`, and the status the model gives each error.

mod error;
mod format;
mod shapes;

pub use error::{DataApiCode, DataApiError, DataApiErrorBody};
pub use shapes::*;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use backtrack_storage_node::api::{ExecuteRequest, Value};
use backtrack_storage_node::client::NodeClient;
use serde::de::DeserializeOwned;

use self::error::from_node;
use self::format::{column_metadata, formatted_records};
use super::clusters::parse_cluster_ref;
use super::{json, json_bytes, AppState};
use crate::domain::{Cluster, ClusterStatus};
use crate::error::ApiError;

/// A Data API request body: JSON (sent as such), within the body limit, of the operation's
/// shape; any problem with it is a BadRequestException.
pub struct DataApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for DataApiJson<T> {
    type Rejection = DataApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, DataApiError> {
        let bytes = json_bytes(request, state)
            .await
            .map_err(|e| DataApiError::from_api(&e))?;
        body(&bytes).map(DataApiJson)
    }
}

/// Parses a Data API body: any problem with it is a BadRequestException.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, DataApiError> {
    if !super::is_json_object(bytes) {
        return Err(DataApiError::bad_request(
            "Invalid request: the body must be a JSON object.",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| DataApiError::bad_request(format!("Invalid request: {e}")))
}

/// The cluster `resource_arn` names, ready for SQL, and its node's client.
async fn target(
    state: &AppState,
    resource_arn: &str,
    secret_arn: &str,
) -> Result<(Cluster, NodeClient), DataApiError> {
    if secret_arn.trim().is_empty() {
        return Err(DataApiError::bad_request("secretArn is required."));
    }
    let id = parse_cluster_ref(&state.settings, resource_arn).map_err(|e| match e {
        ApiError::ClusterNotFound(_) => DataApiError::bad_request(format!(
            "{resource_arn:?} is not a DB cluster of this service (region {}, account {}).",
            state.settings.region, state.settings.account_id
        )),
        _ => DataApiError::bad_request(format!("{resource_arn:?} is not a DB cluster ARN.")),
    })?;
    let cluster = state.store.cluster(&id).await?;
    if !cluster.http_endpoint_enabled {
        return Err(DataApiError::new(
            DataApiCode::HttpEndpointNotEnabled,
            format!("HttpEndpoint is not enabled for cluster {id}."),
        ));
    }
    match cluster.status {
        ClusterStatus::Available | ClusterStatus::Modifying => {}
        ClusterStatus::Backtracking => {
            return Err(DataApiError::unavailable(format!(
                "DB cluster {id} is being backtracked; the database is unavailable for a moment. Retry shortly."
            )))
        }
        ClusterStatus::Creating => {
            return Err(DataApiError::unavailable(format!("DB cluster {id} is still being created.")))
        }
        ClusterStatus::Deleting => {
            return Err(DataApiError::new(
                DataApiCode::InvalidResourceState,
                format!("DB cluster {id} is being deleted."),
            ))
        }
    }
    if !state.nodes.is_healthy(&cluster.node_id) {
        return Err(DataApiError::unavailable(format!(
            "DB cluster {id} is inaccessible: its storage node does not answer."
        )));
    }
    let client = state
        .nodes
        .client(&cluster.node_id)
        .ok_or_else(|| DataApiError::unavailable(format!("DB cluster {id} is inaccessible.")))?;
    Ok((cluster, client))
}

/// Values and, if the parameters are named, their names (`:name`).
fn parameters(
    parameters: &[SqlParameter],
) -> Result<(Vec<Value>, Option<Vec<String>>), DataApiError> {
    let values = parameters
        .iter()
        .map(|p| p.value.to_value())
        .collect::<Result<Vec<_>, _>>()?;
    let named = parameters.iter().filter(|p| p.name.is_some()).count();
    if named == 0 {
        return Ok((values, None));
    }
    if named != parameters.len() {
        return Err(DataApiError::bad_request(
            "Either every parameter has a name or none has.",
        ));
    }
    let names = parameters
        .iter()
        .map(|p| {
            let name = p.name.as_deref().unwrap_or_default();
            if name.starts_with([':', '@', '$']) {
                name.to_string()
            } else {
                format!(":{name}")
            }
        })
        .collect();
    Ok((values, Some(names)))
}

/// Runs a SQL statement (ExecuteStatement).
#[utoipa::path(
    post, path = "/Execute", tag = "data-api", operation_id = "ExecuteStatement",
    request_body = ExecuteStatementRequest,
    responses(
        (status = 200, description = "The statement's result", body = ExecuteStatementResponse),
        (status = 400, description = "BadRequestException, DatabaseErrorException (the engine's message; a full disk), StatementTimeoutException (the node's statement time limit), HttpEndpointNotEnabledException, InvalidResourceStateException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException (e.g. during a backtrack)", body = DataApiErrorBody),
        (status = 415, description = "BadRequestException: the body was not sent as application/json", body = DataApiErrorBody),
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    DataApiJson(request): DataApiJson<ExecuteStatementRequest>,
) -> Result<Response, DataApiError> {
    let (cluster, client) = target(&state, &request.resource_arn, &request.secret_arn).await?;
    let (params, param_names) = parameters(request.parameters.as_deref().unwrap_or_default())?;
    let json_records = match request.format_records_as.as_deref() {
        None | Some("NONE") => false,
        Some("JSON") => true,
        Some(other) => {
            return Err(DataApiError::bad_request(format!(
                "Unknown formatRecordsAs {other:?}; use NONE or JSON."
            )))
        }
    };
    let longs_as_strings = request
        .result_set_options
        .as_ref()
        .and_then(|o| o.long_return_type.as_deref())
        == Some("STRING");
    let result = client
        .execute(
            &cluster.resource_id,
            &ExecuteRequest {
                sql: request.sql,
                params,
                param_sets: None,
                param_names,
                transaction_id: request.transaction_id,
            },
        )
        .await
        .map_err(from_node)?;
    let has_rows = !result.columns.is_empty();
    let response = ExecuteStatementResponse {
        records: (has_rows && !json_records).then(|| {
            result
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| Field::from_value(v, longs_as_strings))
                        .collect()
                })
                .collect()
        }),
        column_metadata: (request.include_result_metadata == Some(true) && !json_records)
            .then(|| column_metadata(&result)),
        number_of_records_updated: result.rows_affected,
        generated_fields: result
            .last_insert_rowid
            .map(|id| vec![Field::from_value(&Value::Integer(id), false)]),
        formatted_records: json_records.then(|| formatted_records(&result)),
    };
    Ok(json(StatusCode::OK, &response))
}

/// Runs a SQL statement once per parameter set (BatchExecuteStatement).
#[utoipa::path(
    post, path = "/BatchExecute", tag = "data-api", operation_id = "BatchExecuteStatement",
    request_body = BatchExecuteStatementRequest,
    responses(
        (status = 200, description = "One result per parameter set", body = BatchExecuteStatementResponse),
        (status = 400, description = "BadRequestException, DatabaseErrorException (naming the failing parameter set: no set took effect), StatementTimeoutException, HttpEndpointNotEnabledException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException", body = DataApiErrorBody),
        (status = 415, description = "BadRequestException: the body was not sent as application/json", body = DataApiErrorBody),
    )
)]
pub async fn batch_execute(
    State(state): State<AppState>,
    DataApiJson(request): DataApiJson<BatchExecuteStatementRequest>,
) -> Result<Response, DataApiError> {
    let (cluster, client) = target(&state, &request.resource_arn, &request.secret_arn).await?;
    let sets = request.parameter_sets.unwrap_or_default();
    let mut param_sets = Vec::with_capacity(sets.len());
    let mut names: Option<Option<Vec<String>>> = None;
    for set in &sets {
        let (values, set_names) = parameters(set)?;
        match &names {
            Some(first) if *first != set_names => {
                return Err(DataApiError::bad_request(
                    "Every parameter set must name the same parameters in the same order.",
                ))
            }
            Some(_) => {}
            None => names = Some(set_names),
        }
        param_sets.push(values);
    }
    let result = client
        .execute(
            &cluster.resource_id,
            &ExecuteRequest {
                sql: request.sql,
                params: Vec::new(),
                param_sets: Some(if sets.is_empty() {
                    vec![Vec::new()]
                } else {
                    param_sets
                }),
                param_names: names.flatten(),
                transaction_id: request.transaction_id,
            },
        )
        .await
        .map_err(from_node)?;
    let response = BatchExecuteStatementResponse {
        update_results: result
            .runs
            .iter()
            .map(|run| UpdateResult {
                generated_fields: run
                    .last_insert_rowid
                    .map(|id| vec![Field::from_value(&Value::Integer(id), false)])
                    .unwrap_or_default(),
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &response))
}

/// Starts a transaction (BeginTransaction). Transactions unused for 3 minutes are rolled
/// back, and a backtrack rolls back open ones (with Force).
#[utoipa::path(
    post, path = "/BeginTransaction", tag = "data-api", operation_id = "BeginTransaction",
    request_body = BeginTransactionRequest,
    responses(
        (status = 200, description = "The new transaction", body = BeginTransactionResponse),
        (status = 400, description = "BadRequestException, DatabaseErrorException, HttpEndpointNotEnabledException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException", body = DataApiErrorBody),
        (status = 415, description = "BadRequestException: the body was not sent as application/json", body = DataApiErrorBody),
    )
)]
pub async fn begin(
    State(state): State<AppState>,
    DataApiJson(request): DataApiJson<BeginTransactionRequest>,
) -> Result<Response, DataApiError> {
    let (cluster, client) = target(&state, &request.resource_arn, &request.secret_arn).await?;
    let started = client
        .begin(&cluster.resource_id)
        .await
        .map_err(from_node)?;
    let response = BeginTransactionResponse {
        transaction_id: started.transaction_id,
    };
    Ok(json(StatusCode::OK, &response))
}

/// Commits a transaction (CommitTransaction).
#[utoipa::path(
    post, path = "/CommitTransaction", tag = "data-api", operation_id = "CommitTransaction",
    request_body = EndTransactionRequest,
    responses(
        (status = 200, description = "Committed", body = EndTransactionResponse),
        (status = 400, description = "BadRequestException, DatabaseErrorException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException (ended, expired, or rolled back by a backtrack)", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException", body = DataApiErrorBody),
        (status = 415, description = "BadRequestException: the body was not sent as application/json", body = DataApiErrorBody),
    )
)]
pub async fn commit(
    State(state): State<AppState>,
    DataApiJson(request): DataApiJson<EndTransactionRequest>,
) -> Result<Response, DataApiError> {
    end(state, request, true).await
}

/// Rolls back a transaction (RollbackTransaction).
#[utoipa::path(
    post, path = "/RollbackTransaction", tag = "data-api", operation_id = "RollbackTransaction",
    request_body = EndTransactionRequest,
    responses(
        (status = 200, description = "Rolled back", body = EndTransactionResponse),
        (status = 400, description = "BadRequestException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException", body = DataApiErrorBody),
        (status = 415, description = "BadRequestException: the body was not sent as application/json", body = DataApiErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    DataApiJson(request): DataApiJson<EndTransactionRequest>,
) -> Result<Response, DataApiError> {
    end(state, request, false).await
}

async fn end(
    state: AppState,
    request: EndTransactionRequest,
    commit: bool,
) -> Result<Response, DataApiError> {
    let (cluster, client) = target(&state, &request.resource_arn, &request.secret_arn).await?;
    let (done, status) = if commit {
        (
            client
                .commit(&cluster.resource_id, &request.transaction_id)
                .await,
            "Transaction Committed",
        )
    } else {
        (
            client
                .rollback(&cluster.resource_id, &request.transaction_id)
                .await,
            "Rollback Complete",
        )
    };
    done.map_err(from_node)?;
    let response = EndTransactionResponse {
        transaction_status: status.to_string(),
    };
    Ok(json(StatusCode::OK, &response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_all_named_or_all_positional() {
        let p = |name: Option<&str>| SqlParameter {
            name: name.map(str::to_string),
            value: Field {
                long_value: Some(1),
                ..Field::default()
            },
            type_hint: None,
        };
        let (_, names) = parameters(&[p(Some("id")), p(Some(":x"))]).unwrap();
        assert_eq!(names.unwrap(), [":id", ":x"]);
        assert!(parameters(&[p(None), p(None)]).unwrap().1.is_none());
        assert!(parameters(&[p(Some("id")), p(None)]).is_err());
    }
}
