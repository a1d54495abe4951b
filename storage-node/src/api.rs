//! The storage node's HTTP contract: every request and response body the node accepts or
//! returns, shared by the node's handlers and by [`crate::client::NodeClient`], which the control
//! plane uses. This file is the one place the contract lives (DESIGN.md, "Storage-node API").
//!
//! Times on this wire are integers: microseconds since the Unix epoch, UTC (`*_us`). They are
//! exact, need no parsing, and the control plane converts them to RDS timestamps at its edge.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest backtrack window a volume accepts, in seconds (72 hours), as in RDS.
pub const MAX_WINDOW_SECS: u64 = 259_200;

/// `PUT /v1/volumes/{id}`: create the volume if it does not exist (idempotent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Target backtrack window in seconds; 0 keeps no history.
    pub window_secs: u64,
    /// Create the volume as a clone: `state(at_us)` of another volume on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CloneSource>,
}

/// Where a clone starts. The clone shares its source's pages (copy-on-write) and costs the
/// same to create whatever the size; with `full_copy`, every page is copied before the node
/// answers and the clone shares nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CloneSource {
    pub volume_id: String,
    /// The instant of the source, within its window.
    pub at_us: i64,
    #[serde(default)]
    pub full_copy: bool,
}

/// What a clone came from, in its figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneOf {
    pub volume_id: String,
    pub at_us: i64,
    /// Whether it still reads pages its source holds (false once it was hydrated: a full copy,
    /// or its source was deleted).
    pub shared: bool,
}

/// `PATCH /v1/volumes/{id}`: change the target window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModifyVolume {
    pub window_secs: u64,
}

/// `GET /v1/volumes/{id}` (and each item of `GET /v1/volumes`): what the volume holds and can do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeFigures {
    pub volume_id: String,
    /// Target window in seconds.
    pub window_secs: u64,
    /// The window the volume can really rewind, in seconds: the target unless the node's log
    /// budget forced older change records to be folded early.
    pub actual_window_secs: u64,
    pub created_at_us: i64,
    /// The earliest instant a backtrack may target; `None` when the window is 0.
    pub earliest_restorable_us: Option<i64>,
    /// Change records (page versions) ever written by committed transactions.
    pub change_records_created: u64,
    /// Change records currently retained for the window (the billed quantity).
    pub change_records_stored: u64,
    /// Backtracks ever applied to the volume: one per switch, so a backtrack id applied twice
    /// would count twice.
    #[serde(default)]
    pub backtracks_applied: u64,
    /// Bytes the volume occupies: its share of the log plus its base image.
    pub bytes_on_disk: u64,
    pub open_transactions: u32,
    /// `true` while a backtrack is switching the volume; SQL calls are refused meanwhile.
    pub switching: bool,
    /// Set for a clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_of: Option<CloneOf>,
}

/// `GET /v1/volumes`: every volume on the node, in one call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeList {
    pub volumes: Vec<VolumeFigures>,
}

/// `POST /v1/volumes/{id}/backtracks`. Idempotent by `backtrack_id`: a repeated request
/// returns the outcome recorded the first time and changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BacktrackRequest {
    pub backtrack_id: Uuid,
    /// The instant whose state the volume should take.
    pub to_us: i64,
    /// When `to_us` is before the earliest restorable time: use that time instead of refusing.
    #[serde(default)]
    pub clamp_to_earliest: bool,
    /// Roll back open transactions instead of refusing.
    #[serde(default)]
    pub force: bool,
}

/// The outcome of a backtrack, as recorded durably by the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BacktrackOutcome {
    pub backtrack_id: Uuid,
    /// The instant actually used (differs from the request only when clamped).
    pub backtrack_to_us: i64,
    /// When the switch happened: the state the volume was rewound from.
    pub backtracked_from_us: i64,
    /// Open transactions rolled back by the switch.
    pub rolled_back_transactions: u32,
}

/// `GET /v1/volumes/{id}/backtracks`: the backtracks the volume remembers (the last 7 days),
/// in the order they were applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BacktrackList {
    pub backtracks: Vec<BacktrackOutcome>,
}

/// `GET /v1/volumes/{id}/preview?to_us=..&include_rows=..`: what a backtrack to `to_us` would
/// undo, without changing anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    pub to_us: i64,
    #[serde(default)]
    pub include_rows: bool,
}

/// The answer to a preview: the state at `to_us` against the current one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preview {
    pub to_us: i64,
    /// Change records committed after `to_us` that the current state holds.
    pub change_records: u64,
    /// The tables that differ, by name.
    pub tables: Vec<TableChange>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TableChangeKind {
    /// Created after `to_us`: a backtrack drops it.
    Created,
    /// Dropped after `to_us`: a backtrack brings it back.
    Dropped,
    /// Its definition changed (and maybe its rows).
    Altered,
    /// Only its rows changed.
    Modified,
}

/// One table's differences, counted from the current state's point of view: rows inserted,
/// updated (on the columns both states have) and deleted since `to_us`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableChange {
    pub name: String,
    pub change: TableChangeKind,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    /// With `include_rows`: up to [`PREVIEW_ROWS`] changed rows, in rowid order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<Vec<RowChange>>,
}

/// Changed rows a preview shows per table.
pub const PREVIEW_ROWS: usize = 100;

/// A row as it was at `to_us` (`before`) and as it is (`after`); one is absent for a row
/// inserted or deleted since. Values by column name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RowChange {
    pub rowid: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Vec<(String, Value)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<(String, Value)>>,
}

/// A SQL value on the wire; exactly one member is set (`{"null": true}` for NULL).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    Null(bool),
    Integer(i64),
    Real(f64),
    Text(String),
    /// Base64 (standard alphabet, padded) on the wire.
    Blob(#[serde(with = "blob_base64")] Vec<u8>),
}

mod blob_base64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// `POST /v1/volumes/{id}/execute`: one statement, run once per parameter set.
///
/// With `param_sets` absent the statement runs once with `params`; with `param_sets` present
/// (a batch) it runs once per set and `params` must be empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_sets: Option<Vec<Vec<Value>>>,
    /// Bind by name instead of position: the name of each value of `params` (or of each
    /// parameter set), as written in the SQL, prefix included (`:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// A result column: its name and the declared type of the table column it comes from, if any.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub decl_type: Option<String>,
}

/// The effect of one run of a statement in a batch. `last_insert_rowid` is set only when the
/// run inserted a row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunEffect {
    pub rows_affected: u64,
    pub last_insert_rowid: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecuteResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
    /// Rows changed by the statement (the sum over a batch).
    pub rows_affected: u64,
    pub last_insert_rowid: Option<i64>,
    /// One entry per parameter set for a batch; empty otherwise.
    #[serde(default)]
    pub runs: Vec<RunEffect>,
}

/// `POST /v1/volumes/{id}/transactions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TransactionStarted {
    pub transaction_id: String,
}

/// The node's error body: `{"code": "...", "message": "..."}` with the HTTP status of the code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// Every error the node reports. The status of each is fixed here, in one place.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing or wrong bearer token.
    Unauthorized,
    /// The request is malformed (bad JSON, a window out of range, a bad parameter).
    InvalidRequest,
    VolumeNotFound,
    /// The requested backtrack time is after the node's clock.
    TimeInFuture,
    /// The requested backtrack time is before the earliest restorable time (and no clamp).
    BeforeEarliest,
    /// Backtrack is disabled on the volume (window 0).
    BacktrackDisabled,
    /// The volume has open transactions and the backtrack was not forced.
    OpenTransactions,
    TransactionNotFound,
    /// The SQL engine refused the statement; the message is the engine's.
    SqlError,
    /// The statement ran past the node's statement time limit and was stopped; it did not
    /// take effect (inside a transaction, the transaction was rolled back).
    StatementTimeout,
    /// The node's disk is full: nothing was changed. Retry once space is freed.
    StorageFull,
    /// The volume is switching (a backtrack is in progress); try again shortly.
    Unavailable,
    /// Something failed inside the node; the cause is in the node's log.
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::InvalidRequest
            | ErrorCode::TimeInFuture
            | ErrorCode::BeforeEarliest
            | ErrorCode::BacktrackDisabled
            | ErrorCode::SqlError
            | ErrorCode::StatementTimeout => 400,
            ErrorCode::VolumeNotFound | ErrorCode::TransactionNotFound => 404,
            ErrorCode::OpenTransactions => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::StorageFull => 507,
            ErrorCode::Internal => 500,
        }
    }
}

/// `GET /v1/config`, `PATCH /v1/config`: the node's settings that can change while it runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// The most disk the log's segments may take; lowering it folds the oldest history early
    /// (shrinking actual windows) at the next maintenance.
    pub log_budget_bytes: u64,
}

/// Health: `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    pub volumes: usize,
    /// The node's disk is full: reads work, writes fail until space is freed.
    #[serde(default)]
    pub disk_full: bool,
    /// The port the node serves the PostgreSQL protocol on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_port: Option<u16>,
}

/// `PUT /v1/volumes/{id}/access`: who may connect to the volume's database over the
/// PostgreSQL protocol, and as which database name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeAccess {
    /// The name clients give as their database.
    pub database: String,
    pub username: String,
    /// The password's SCRAM-SHA-256 verifier, in PostgreSQL's format (see
    /// [`crate::scram::Verifier`]).
    pub verifier: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_serialize_with_exactly_one_member() {
        let values = vec![
            Value::Null(true),
            Value::Integer(7),
            Value::Real(1.5),
            Value::Text("x".into()),
            Value::Blob(vec![0, 255]),
        ];
        let json = serde_json::to_string(&values).unwrap();
        assert_eq!(
            json,
            r#"[{"null":true},{"integer":7},{"real":1.5},{"text":"x"},{"blob":"AP8="}]"#
        );
        let back: Vec<Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, values);
    }

    #[test]
    fn a_blob_that_is_not_base64_is_rejected() {
        assert!(serde_json::from_str::<Value>(r#"{"blob":"***"}"#).is_err());
    }
}
