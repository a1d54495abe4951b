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
use serde::de::DeserializeOwned;

use self::format::{batch_response, ResultShape};
use super::{json, json_bytes};
use crate::ops::sql::SqlTarget;
use crate::ops::Ops;

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

/// Values and, if the parameters are named, their names (`:name`).
fn parameters(parameters: &[SqlParameter]) -> Result<(Vec<Value>, Names), DataApiError> {
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

/// The names of parameters bound by name (`:id`); `None` when they bind by position.
type Names = Option<Vec<String>>;

/// The parameter sets of a batch, which must all name the same parameters; no set runs the
/// statement once without parameters.
fn parameter_sets(
    sets: Option<&[Vec<SqlParameter>]>,
) -> Result<(Vec<Vec<Value>>, Names), DataApiError> {
    let sets = sets.unwrap_or_default();
    if sets.is_empty() {
        return Ok((vec![Vec::new()], None));
    }
    let mut values = Vec::with_capacity(sets.len());
    let mut names: Option<Names> = None;
    for set in sets {
        let (set_values, set_names) = parameters(set)?;
        match &names {
            Some(first) if *first != set_names => {
                return Err(DataApiError::bad_request(
                    "Every parameter set must name the same parameters in the same order.",
                ))
            }
            Some(_) => {}
            None => names = Some(set_names),
        }
        values.push(set_values);
    }
    Ok((values, names.flatten()))
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
    State(ops): State<Ops>,
    DataApiJson(request): DataApiJson<ExecuteStatementRequest>,
) -> Result<Response, DataApiError> {
    let shape = ResultShape::of(&request)?;
    let (params, param_names) = parameters(request.parameters.as_deref().unwrap_or_default())?;
    let statement = ExecuteRequest {
        sql: request.sql.clone(),
        params,
        param_sets: None,
        param_names,
        transaction_id: request.transaction_id.clone(),
    };
    let target = SqlTarget::new(&request.resource_arn, &request.secret_arn);
    let result = ops.execute_sql(target, &statement).await?;
    Ok(json(StatusCode::OK, &shape.response(&result)))
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
    State(ops): State<Ops>,
    DataApiJson(request): DataApiJson<BatchExecuteStatementRequest>,
) -> Result<Response, DataApiError> {
    let (param_sets, param_names) = parameter_sets(request.parameter_sets.as_deref())?;
    let statement = ExecuteRequest {
        sql: request.sql.clone(),
        params: Vec::new(),
        param_sets: Some(param_sets),
        param_names,
        transaction_id: request.transaction_id.clone(),
    };
    let target = SqlTarget::new(&request.resource_arn, &request.secret_arn);
    let result = ops.execute_sql(target, &statement).await?;
    Ok(json(StatusCode::OK, &batch_response(&result)))
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
    State(ops): State<Ops>,
    DataApiJson(request): DataApiJson<BeginTransactionRequest>,
) -> Result<Response, DataApiError> {
    let target = SqlTarget::new(&request.resource_arn, &request.secret_arn);
    let transaction_id = ops.begin_transaction(target).await?;
    Ok(json(
        StatusCode::OK,
        &BeginTransactionResponse { transaction_id },
    ))
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
    State(ops): State<Ops>,
    DataApiJson(request): DataApiJson<EndTransactionRequest>,
) -> Result<Response, DataApiError> {
    end(ops, request, true).await
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
    State(ops): State<Ops>,
    DataApiJson(request): DataApiJson<EndTransactionRequest>,
) -> Result<Response, DataApiError> {
    end(ops, request, false).await
}

async fn end(
    ops: Ops,
    request: EndTransactionRequest,
    commit: bool,
) -> Result<Response, DataApiError> {
    let target = SqlTarget::new(&request.resource_arn, &request.secret_arn);
    ops.end_transaction(target, &request.transaction_id, commit)
        .await?;
    let status = if commit {
        "Transaction Committed"
    } else {
        "Rollback Complete"
    };
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
