//! The backtrack preview: what BacktrackDBCluster to T would undo, without changing anything
//! (`GET /v1/clusters/{id}/backtracks/preview`). The storage node compares its view at T with
//! the current state (storage-node engine/sql/preview.rs); this checks the request as a
//! backtrack would be checked and names things as the API does.

use backtrack_storage_node::api::{
    ErrorCode, Preview, PreviewRequest, TableChangeKind, Value, PREVIEW_ROWS,
};
use backtrack_storage_node::client::CallError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{one, required, time_param, Ops};
use crate::domain::Timestamp;
use crate::error::ApiError;

/// Query parameters of the preview.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewParams {
    /// The instant a backtrack would rewind to: ISO 8601 (any offset) or epoch seconds.
    #[serde(rename = "BacktrackTo", default, deserialize_with = "one")]
    #[param(required = true, format = DateTime)]
    pub backtrack_to: Option<String>,
    /// Also show up to 100 changed rows per table, with their values before and after.
    #[serde(rename = "IncludeRows", default, deserialize_with = "one")]
    #[param(value_type = Option<bool>)]
    pub include_rows: Option<String>,
}

/// What a backtrack to `BacktrackTo` would undo.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BacktrackPreview {
    /// The instant that would be used.
    #[serde(rename = "BacktrackTo")]
    #[schema(value_type = String, format = DateTime)]
    pub backtrack_to: Timestamp,
    /// Change records written after it, which the backtrack would undo.
    #[serde(rename = "ChangeRecords")]
    pub change_records: u64,
    /// The tables that differ between then and now.
    #[serde(rename = "Tables")]
    pub tables: Vec<TablePreview>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TablePreview {
    #[serde(rename = "Name")]
    pub name: String,
    /// `created` (after BacktrackTo: the backtrack drops it), `dropped` (it comes back),
    /// `altered` (its definition changed) or `modified` (only its rows).
    #[serde(rename = "Change")]
    #[schema(pattern = "^(created|dropped|altered|modified)$")]
    pub change: String,
    /// Rows inserted, updated and deleted since BacktrackTo (updates on the columns both
    /// states have).
    #[serde(rename = "RowsInserted")]
    pub rows_inserted: u64,
    #[serde(rename = "RowsUpdated")]
    pub rows_updated: u64,
    #[serde(rename = "RowsDeleted")]
    pub rows_deleted: u64,
    /// With IncludeRows: up to 100 changed rows, in rowid order.
    #[serde(rename = "Rows", skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowPreview>>,
}

/// A changed row: its values at BacktrackTo (`Before`, absent if inserted since) and now
/// (`After`, absent if deleted since), by column. Values are JSON: null, numbers, text; a
/// blob is `{"blobValue": "<base64>"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RowPreview {
    #[serde(rename = "RowId")]
    pub row_id: i64,
    #[serde(rename = "Before", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "After", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Ops {
    /// The preview of a backtrack of `named` to `BacktrackTo`: refused as the backtrack would
    /// be (a time in the future or before EarliestBacktrackTime, no window), never changing
    /// anything.
    pub async fn preview_backtrack(
        &self,
        named: &str,
        params: PreviewParams,
    ) -> Result<BacktrackPreview, ApiError> {
        let requested = required(
            time_param("BacktrackTo", params.backtrack_to.as_deref())?,
            "BacktrackTo",
        )?;
        let include_rows = match params.include_rows.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::InvalidParameterValue(format!(
                    "IncludeRows is true or false, not {other:?}."
                )))
            }
        };
        let cluster = self.cluster(named).await?;
        let now = Timestamp::now();
        if requested > now {
            return Err(ApiError::InvalidParameterValue(format!(
                "The specified BacktrackTo time {requested} is in the future; the current time is {now}."
            )));
        }
        if cluster.backtrack_window == 0 {
            return Err(ApiError::InvalidClusterState(format!(
                "Backtrack is not enabled for DB cluster {}: there is no history to preview.",
                cluster.id
            )));
        }
        if !cluster.status.has_volume() {
            return Err(ApiError::InvalidClusterState(format!(
                "DB cluster {} is {}: it has no database to preview.",
                cluster.id,
                cluster.status.as_str()
            )));
        }
        let Some(client) = self.nodes.client(&cluster.node_id) else {
            return Err(ApiError::Internal(format!(
                "no client for node {}",
                cluster.node_id
            )));
        };
        let request = PreviewRequest {
            to_us: requested.as_micros(),
            include_rows,
        };
        let preview = client
            .preview(&cluster.resource_id, &request)
            .await
            .map_err(|e| refused(&cluster.id.to_string(), requested, e))?;
        Ok(render(preview))
    }
}

/// A node's refusal in the API's terms.
fn refused(cluster: &str, requested: Timestamp, e: CallError) -> ApiError {
    match e {
        CallError::Refused { code, message, .. } => match code {
            ErrorCode::BeforeEarliest => ApiError::InvalidParameterValue(format!(
                "The specified BacktrackTo time {requested} is before the earliest backtrack time \
                 of DB cluster {cluster}."
            )),
            ErrorCode::TimeInFuture => ApiError::InvalidParameterValue(format!(
                "The specified BacktrackTo time {requested} is in the future."
            )),
            ErrorCode::BacktrackDisabled => ApiError::InvalidClusterState(format!(
                "Backtrack is not enabled for DB cluster {cluster}."
            )),
            ErrorCode::Unavailable => ApiError::InvalidClusterState(format!(
                "DB cluster {cluster} is being backtracked; preview again when it is available."
            )),
            ErrorCode::StatementTimeout => ApiError::InvalidParameterValue(message),
            _ => ApiError::Internal(message),
        },
        CallError::Unreachable(why) | CallError::Protocol(why) => {
            tracing::warn!(cluster, error = %why, "a storage node did not answer a preview");
            ApiError::Unavailable(format!(
                "DB cluster {cluster}'s storage node does not answer right now; try again."
            ))
        }
    }
}

fn render(preview: Preview) -> BacktrackPreview {
    BacktrackPreview {
        backtrack_to: Timestamp::from_micros(preview.to_us),
        change_records: preview.change_records,
        tables: preview
            .tables
            .into_iter()
            .map(|t| TablePreview {
                name: t.name,
                change: match t.change {
                    TableChangeKind::Created => "created",
                    TableChangeKind::Dropped => "dropped",
                    TableChangeKind::Altered => "altered",
                    TableChangeKind::Modified => "modified",
                }
                .to_string(),
                rows_inserted: t.rows_inserted,
                rows_updated: t.rows_updated,
                rows_deleted: t.rows_deleted,
                rows: t.rows.map(|rows| {
                    rows.into_iter()
                        .take(PREVIEW_ROWS)
                        .map(|r| RowPreview {
                            row_id: r.rowid,
                            before: r.before.map(columns),
                            after: r.after.map(columns),
                        })
                        .collect()
                }),
            })
            .collect(),
    }
}

fn columns(row: Vec<(String, Value)>) -> serde_json::Map<String, serde_json::Value> {
    row.into_iter()
        .map(|(name, value)| {
            let json = match value {
                Value::Null(_) => serde_json::Value::Null,
                Value::Integer(i) => i.into(),
                Value::Real(r) => r.into(),
                Value::Text(t) => t.into(),
                Value::Blob(b) => serde_json::json!({
                    "blobValue": base64::engine::general_purpose::STANDARD.encode(b)
                }),
            };
            (name, json)
        })
        .collect()
}
