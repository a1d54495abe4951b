//! The RDS Data API (rds-data, restJson1): ExecuteStatement, BatchExecuteStatement,
//! BeginTransaction, CommitTransaction and RollbackTransaction, routed by `resourceArn` (the
//! cluster's ARN) to the storage node holding the cluster. The SQL dialect is SQLite's.
//!
//! Shapes are the service model's: camelCase members, `Field` unions with exactly one member
//! set. Errors have the Data API's wire form: the error name in `x-amzn-ErrorType`, the body
//! `{"message": "..."}`, and the status the model gives each error.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backtrack_storage_node::api::{ErrorCode, ExecuteRequest, ExecuteResult, Value};
use backtrack_storage_node::client::{NodeClient, NodeError};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::clusters::parse_cluster_ref;
use super::{json, AppState};
use crate::domain::{Cluster, ClusterStatus};
use crate::store::StoreError;

/// A Data API error: its name (as in the service model), HTTP status and message.
#[derive(Debug)]
pub struct DataApiError {
    name: &'static str,
    status: StatusCode,
    message: String,
}

impl DataApiError {
    fn new(name: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        DataApiError {
            name,
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new("BadRequestException", StatusCode::BAD_REQUEST, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            "DatabaseUnavailableException",
            StatusCode::GATEWAY_TIMEOUT,
            message,
        )
    }
}

impl IntoResponse for DataApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.name == "InternalServerErrorException" {
            tracing::error!(message = %self.message, "data api failure");
        }
        let body = DataApiErrorBody {
            message: self.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.name));
        response
    }
}

impl From<StoreError> for DataApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ClusterNotFound(id) => DataApiError::new(
                "DatabaseNotFoundException",
                StatusCode::NOT_FOUND,
                format!("DB cluster {id} not found."),
            ),
            other => DataApiError::new(
                "InternalServerErrorException",
                StatusCode::INTERNAL_SERVER_ERROR,
                other.to_string(),
            ),
        }
    }
}

/// What the storage node said, in the Data API's terms.
fn from_node(e: NodeError) -> DataApiError {
    match &e {
        NodeError::Refused { code, message, .. } => match code {
            ErrorCode::SqlError => DataApiError::new(
                "DatabaseErrorException",
                StatusCode::BAD_REQUEST,
                message.clone(),
            ),
            ErrorCode::InvalidRequest => DataApiError::bad_request(message.clone()),
            ErrorCode::TransactionNotFound => DataApiError::new(
                "TransactionNotFoundException",
                StatusCode::NOT_FOUND,
                message.clone(),
            ),
            ErrorCode::Unavailable => DataApiError::unavailable(message.clone()),
            ErrorCode::VolumeNotFound => DataApiError::new(
                "DatabaseNotFoundException",
                StatusCode::NOT_FOUND,
                message.clone(),
            ),
            _ => DataApiError::new(
                "InternalServerErrorException",
                StatusCode::INTERNAL_SERVER_ERROR,
                message.clone(),
            ),
        },
        NodeError::Unreachable(_) | NodeError::Protocol(_) => DataApiError::unavailable(format!(
            "The database is not reachable right now; try again. ({e})"
        )),
    }
}

/// The body of every Data API error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DataApiErrorBody {
    pub message: String,
}

/// A value: exactly one member is set (`{"isNull": true}` for NULL).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Field {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_null: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boolean_value: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_value: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub double_value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blob_value: Option<String>,
    /// Not supported as a parameter (as in Aurora MySQL); never returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub array_value: Option<serde_json::Value>,
}

impl Field {
    fn to_value(&self) -> Result<Value, DataApiError> {
        let set = [
            self.is_null.is_some(),
            self.boolean_value.is_some(),
            self.long_value.is_some(),
            self.double_value.is_some(),
            self.string_value.is_some(),
            self.blob_value.is_some(),
            self.array_value.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(DataApiError::bad_request(
                "A Field must have exactly one member set.",
            ));
        }
        Ok(if self.is_null.is_some() {
            Value::Null(true)
        } else if let Some(b) = self.boolean_value {
            Value::Integer(i64::from(b))
        } else if let Some(i) = self.long_value {
            Value::Integer(i)
        } else if let Some(d) = self.double_value {
            Value::Real(d)
        } else if let Some(s) = &self.string_value {
            Value::Text(s.clone())
        } else if let Some(b) = &self.blob_value {
            Value::Blob(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| DataApiError::bad_request("blobValue is not valid base64."))?,
            )
        } else {
            return Err(DataApiError::bad_request(
                "Array parameters are not supported.",
            ));
        })
    }

    fn from_value(value: &Value, longs_as_strings: bool) -> Field {
        match value {
            Value::Null(_) => Field {
                is_null: Some(true),
                ..Field::default()
            },
            Value::Integer(i) if longs_as_strings => Field {
                string_value: Some(i.to_string()),
                ..Field::default()
            },
            Value::Integer(i) => Field {
                long_value: Some(*i),
                ..Field::default()
            },
            Value::Real(d) => Field {
                double_value: Some(*d),
                ..Field::default()
            },
            Value::Text(s) => Field {
                string_value: Some(s.clone()),
                ..Field::default()
            },
            Value::Blob(b) => Field {
                blob_value: Some(base64::engine::general_purpose::STANDARD.encode(b)),
                ..Field::default()
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SqlParameter {
    /// Bound to `:name` in the SQL; without a name, parameters bind to `?` in order.
    pub name: Option<String>,
    pub value: Field,
    /// `JSON`, `UUID`, `TIMESTAMP`, `DATE`, `TIME` or `DECIMAL`: the value (a stringValue) is
    /// stored as text.
    pub type_hint: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultSetOptions {
    /// Accepted; SQLite has no DECIMAL type.
    pub decimal_return_type: Option<String>,
    /// `STRING` returns integers as strings; `LONG` (the default) as longValue.
    pub long_return_type: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteStatementRequest {
    /// The cluster's ARN (its identifier is accepted too).
    #[schema(pattern = "^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$")]
    pub resource_arn: String,
    /// Required by the API; the storage node needs no credentials, so it is not read.
    #[schema(pattern = "\\S")]
    pub secret_arn: String,
    pub sql: String,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub parameters: Option<Vec<SqlParameter>>,
    pub transaction_id: Option<String>,
    pub include_result_metadata: Option<bool>,
    pub continue_after_timeout: Option<bool>,
    pub result_set_options: Option<ResultSetOptions>,
    /// `NONE` (records) or `JSON` (formattedRecords).
    pub format_records_as: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ColumnMetadata {
    pub name: String,
    pub label: String,
    /// The JDBC type code.
    #[serde(rename = "type")]
    pub type_code: i32,
    pub type_name: String,
    pub is_signed: bool,
    /// 0 no nulls, 1 nullable, 2 unknown.
    pub nullable: i32,
    pub schema_name: String,
    pub table_name: String,
    pub is_auto_increment: bool,
    pub is_case_sensitive: bool,
    pub is_currency: bool,
    pub precision: i32,
    pub scale: i32,
    pub array_base_column_type: i32,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteStatementResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<Vec<Field>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_metadata: Option<Vec<ColumnMetadata>>,
    pub number_of_records_updated: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_fields: Option<Vec<Field>>,
    /// The records as a JSON array of objects, with `formatRecordsAs: JSON`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatted_records: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchExecuteStatementRequest {
    #[schema(pattern = "^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$")]
    pub resource_arn: String,
    #[schema(pattern = "\\S")]
    pub secret_arn: String,
    pub sql: String,
    pub database: Option<String>,
    pub schema: Option<String>,
    pub parameter_sets: Option<Vec<Vec<SqlParameter>>>,
    pub transaction_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResult {
    pub generated_fields: Vec<Field>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchExecuteStatementResponse {
    pub update_results: Vec<UpdateResult>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BeginTransactionRequest {
    #[schema(pattern = "^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$")]
    pub resource_arn: String,
    #[schema(pattern = "\\S")]
    pub secret_arn: String,
    pub database: Option<String>,
    pub schema: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeginTransactionResponse {
    pub transaction_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndTransactionRequest {
    #[schema(pattern = "^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$")]
    pub resource_arn: String,
    #[schema(pattern = "\\S")]
    pub secret_arn: String,
    pub transaction_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndTransactionResponse {
    /// `Transaction Committed` or `Rollback Complete`.
    pub transaction_status: String,
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
    let id = parse_cluster_ref(resource_arn).map_err(|_| {
        DataApiError::bad_request(format!("{resource_arn:?} is not a DB cluster ARN."))
    })?;
    let cluster = state.store.cluster(&id).await?;
    if !cluster.http_endpoint_enabled {
        return Err(DataApiError::new(
            "HttpEndpointNotEnabledException",
            StatusCode::BAD_REQUEST,
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
                "InvalidResourceStateException",
                StatusCode::BAD_REQUEST,
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
        (status = 400, description = "BadRequestException, DatabaseErrorException (the engine's message), HttpEndpointNotEnabledException, InvalidResourceStateException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException (e.g. during a backtrack)", body = DataApiErrorBody),
    )
)]
pub async fn execute(
    State(state): State<AppState>,
    bytes: Bytes,
) -> Result<Response, DataApiError> {
    let request: ExecuteStatementRequest = body(&bytes)?;
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
        (status = 400, description = "BadRequestException, DatabaseErrorException, HttpEndpointNotEnabledException", body = DataApiErrorBody),
        (status = 404, description = "DatabaseNotFoundException, TransactionNotFoundException", body = DataApiErrorBody),
        (status = 504, description = "DatabaseUnavailableException", body = DataApiErrorBody),
    )
)]
pub async fn batch_execute(
    State(state): State<AppState>,
    bytes: Bytes,
) -> Result<Response, DataApiError> {
    let request: BatchExecuteStatementRequest = body(&bytes)?;
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
    )
)]
pub async fn begin(State(state): State<AppState>, bytes: Bytes) -> Result<Response, DataApiError> {
    let request: BeginTransactionRequest = body(&bytes)?;
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
    )
)]
pub async fn commit(State(state): State<AppState>, bytes: Bytes) -> Result<Response, DataApiError> {
    end(state, bytes, true).await
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
    )
)]
pub async fn rollback(
    State(state): State<AppState>,
    bytes: Bytes,
) -> Result<Response, DataApiError> {
    end(state, bytes, false).await
}

async fn end(state: AppState, bytes: Bytes, commit: bool) -> Result<Response, DataApiError> {
    let request: EndTransactionRequest = body(&bytes)?;
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

/// Column metadata from the declared types (SQLite's affinity rules name the JDBC type).
fn column_metadata(result: &ExecuteResult) -> Vec<ColumnMetadata> {
    result
        .columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let declared = column
                .decl_type
                .clone()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let first = result
                .rows
                .iter()
                .map(|r| &r[i])
                .find(|v| !matches!(v, Value::Null(_)));
            let (type_code, type_name) = jdbc_type(&declared, first);
            ColumnMetadata {
                name: column.name.clone(),
                label: column.name.clone(),
                type_code,
                type_name: type_name.to_string(),
                is_signed: matches!(type_code, -5 | 4 | 8 | 2),
                nullable: 2,
                schema_name: String::new(),
                table_name: String::new(),
                is_auto_increment: false,
                is_case_sensitive: matches!(type_code, 12),
                is_currency: false,
                precision: 0,
                scale: 0,
                array_base_column_type: 0,
            }
        })
        .collect()
}

/// The JDBC type code and name of a column, by SQLite's type-affinity rules on its declared
/// type, or by its first value when it has none (an expression).
fn jdbc_type(declared: &str, value: Option<&Value>) -> (i32, &'static str) {
    if declared.contains("INT") {
        (-5, "BIGINT")
    } else if declared.contains("CHAR") || declared.contains("CLOB") || declared.contains("TEXT") {
        (12, "VARCHAR")
    } else if declared.contains("BLOB") {
        (-2, "BLOB")
    } else if declared.contains("REAL") || declared.contains("FLOA") || declared.contains("DOUB") {
        (8, "DOUBLE")
    } else if !declared.is_empty() {
        (2, "NUMERIC")
    } else {
        match value {
            Some(Value::Integer(_)) => (-5, "BIGINT"),
            Some(Value::Real(_)) => (8, "DOUBLE"),
            Some(Value::Blob(_)) => (-2, "BLOB"),
            Some(Value::Text(_)) => (12, "VARCHAR"),
            _ => (0, "NULL"),
        }
    }
}

/// The records as a JSON array of objects keyed by column name.
fn formatted_records(result: &ExecuteResult) -> String {
    let rows: Vec<serde_json::Map<String, serde_json::Value>> = result
        .rows
        .iter()
        .map(|row| {
            result
                .columns
                .iter()
                .zip(row)
                .map(|(column, value)| {
                    let json = match value {
                        Value::Null(_) => serde_json::Value::Null,
                        Value::Integer(i) => (*i).into(),
                        Value::Real(d) => serde_json::Number::from_f64(*d)
                            .map_or(serde_json::Value::Null, Into::into),
                        Value::Text(s) => s.clone().into(),
                        Value::Blob(b) => {
                            base64::engine::general_purpose::STANDARD.encode(b).into()
                        }
                    };
                    (column.name.clone(), json)
                })
                .collect()
        })
        .collect();
    serde_json::to_string(&rows).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_must_have_exactly_one_member() {
        let none = Field::default();
        assert!(none.to_value().is_err());
        let two = Field {
            long_value: Some(1),
            string_value: Some("x".into()),
            ..Field::default()
        };
        assert!(two.to_value().is_err());
        let blob = Field {
            blob_value: Some("AP8=".into()),
            ..Field::default()
        };
        assert_eq!(blob.to_value().unwrap(), Value::Blob(vec![0, 255]));
    }

    #[test]
    fn results_come_back_as_single_member_fields() {
        for value in [
            Value::Null(true),
            Value::Integer(3),
            Value::Real(0.5),
            Value::Text("a".into()),
            Value::Blob(vec![1]),
        ] {
            let field = serde_json::to_value(Field::from_value(&value, false)).unwrap();
            assert_eq!(field.as_object().unwrap().len(), 1, "{field}");
        }
        let as_string = Field::from_value(&Value::Integer(7), true);
        assert_eq!(as_string.string_value.as_deref(), Some("7"));
    }

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

    #[test]
    fn declared_types_map_to_jdbc_types() {
        assert_eq!(jdbc_type("INTEGER", None).0, -5);
        assert_eq!(jdbc_type("VARCHAR(20)", None).0, 12);
        assert_eq!(jdbc_type("", Some(&Value::Real(1.0))).0, 8);
    }
}
