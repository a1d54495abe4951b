//! Running one statement on one connection: preparing it (one statement per call), binding
//! parameters by position or name, reading rows within the result limit, a batch inside a
//! savepoint, and SQLite's errors in the contract's terms.

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::CachedStatement;

use super::super::volume::VolumeError;
use super::{Conn, MAX_RESULT_BYTES, STATEMENT_CACHE};
use crate::api::{Column, ErrorCode, ExecuteRequest, ExecuteResult, RunEffect, Value};

/// A prepared statement's shape (see [`describe_statement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub params: usize,
    pub columns: Vec<Column>,
    pub readonly: bool,
}

fn columns_of(statement: &rusqlite::Statement<'_>) -> Vec<Column> {
    statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            decl_type: c.decl_type().map(str::to_string),
        })
        .collect()
}

/// Prepares `sql`, refusing a text that holds more than one statement (checked the first time a
/// connection sees it; later calls take the prepared statement from its cache).
fn prepare_one<'c>(conn: &'c Conn, sql: &str) -> Result<CachedStatement<'c>, VolumeError> {
    if !conn.single.borrow().contains(sql) {
        let mut batch = rusqlite::Batch::new(&conn.conn, sql);
        if batch.next().map_err(sql_error)?.is_none() {
            return Err(VolumeError::new(
                ErrorCode::InvalidRequest,
                "the SQL statement is empty",
            ));
        }
        if !matches!(batch.next(), Ok(None)) {
            return Err(VolumeError::new(
                ErrorCode::SqlError,
                "only one SQL statement may be sent per call",
            ));
        }
        let mut single = conn.single.borrow_mut();
        if single.len() >= STATEMENT_CACHE {
            single.clear();
        }
        single.insert(sql.to_string());
    }
    conn.conn.prepare_cached(sql).map_err(sql_error)
}

/// What a statement takes and gives, without running it: its parameters, its result columns,
/// and whether it only reads. Prepared as `execute_statement` would, under the same rules.
pub(super) fn describe_statement(conn: &Conn, sql: &str) -> Result<Described, VolumeError> {
    let statement = prepare_one(conn, sql)?;
    Ok(Described {
        params: statement.parameter_count(),
        columns: columns_of(&statement),
        readonly: statement.readonly(),
    })
}

pub(super) fn execute_statement(
    conn: &Conn,
    request: &ExecuteRequest,
) -> Result<ExecuteResult, VolumeError> {
    if request.sql.trim().is_empty() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "the SQL statement is empty",
        ));
    }
    if request.param_sets.is_some() && !request.params.is_empty() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "give either params or param_sets, not both",
        ));
    }
    let mut statement = prepare_one(conn, &request.sql)?;
    let conn = &conn.conn;
    let sets: Vec<&[Value]> = match &request.param_sets {
        Some(sets) => sets.iter().map(Vec::as_slice).collect(),
        None => vec![request.params.as_slice()],
    };
    let mut result = ExecuteResult {
        columns: Vec::new(),
        rows: Vec::new(),
        rows_affected: 0,
        last_insert_rowid: None,
        runs: Vec::new(),
    };
    let mut bytes = 0usize;
    let mut last_rowid = conn.last_insert_rowid();
    let count = sets.len();
    for (set, params) in sets.into_iter().enumerate() {
        // In a batch, an error names the parameter set it came from.
        let in_set = |e: VolumeError| match &request.param_sets {
            Some(_) => VolumeError::new(
                e.code,
                format!("parameter set {} of {count}: {}", set + 1, e.message),
            ),
            None => e,
        };
        let bound =
            bind_order(&statement, params, request.param_names.as_deref()).map_err(in_set)?;
        let before = conn.total_changes();
        let mut rows = statement
            .query(rusqlite::params_from_iter(bound.into_iter().map(to_sql)))
            .map_err(|e| in_set(sql_error(e)))?;
        while let Some(row) = rows.next().map_err(|e| in_set(sql_error(e)))? {
            // A cached statement is prepared again by its first step when the schema changed
            // since: its columns are read from it as it runs, never before.
            let count = row.as_ref().column_count();
            let mut values = Vec::with_capacity(count);
            for i in 0..count {
                let value = from_sql(row.get_ref(i).map_err(sql_error)?);
                bytes += value_size(&value);
                values.push(value);
            }
            if bytes > MAX_RESULT_BYTES {
                return Err(VolumeError::new(
                    ErrorCode::SqlError,
                    format!(
                        "the result is larger than {} MiB; select fewer rows (LIMIT)",
                        MAX_RESULT_BYTES >> 20
                    ),
                ));
            }
            result.rows.push(values);
        }
        drop(rows);
        let changed = conn.total_changes() - before;
        let rowid = conn.last_insert_rowid();
        let inserted = (changed > 0 && rowid != last_rowid).then_some(rowid);
        last_rowid = rowid;
        let rowid = inserted;
        result.rows_affected += changed;
        result.last_insert_rowid = rowid;
        if request.param_sets.is_some() {
            result.runs.push(RunEffect {
                rows_affected: changed,
                last_insert_rowid: rowid,
            });
        }
    }
    result.columns = columns_of(&statement);
    Ok(result)
}

/// Runs a batch inside a savepoint, so that all its parameter sets take effect or none does
/// (outside a transaction, the savepoint is the transaction).
pub(super) fn run_batch(
    conn: &Conn,
    request: &ExecuteRequest,
) -> Result<ExecuteResult, VolumeError> {
    conn.conn
        .execute_batch("SAVEPOINT backtrack_batch")
        .map_err(sql_error)?;
    let result = execute_statement(conn, request).and_then(|result| {
        conn.conn
            .execute_batch("RELEASE backtrack_batch")
            .map_err(sql_error)?;
        Ok(result)
    });
    if let Err(e) = result {
        let _ = conn
            .conn
            .execute_batch("ROLLBACK TO backtrack_batch; RELEASE backtrack_batch");
        return Err(VolumeError::new(
            e.code,
            format!("{}; no parameter set of the batch took effect", e.message),
        ));
    }
    result
}

/// The values in the order of the statement's parameters: as given, or placed by name.
fn bind_order<'a>(
    statement: &rusqlite::Statement<'_>,
    params: &'a [Value],
    names: Option<&[String]>,
) -> Result<Vec<&'a Value>, VolumeError> {
    let count = statement.parameter_count();
    let Some(names) = names else {
        if params.len() != count {
            return Err(VolumeError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the statement takes {count} parameter(s) but {} were given",
                    params.len()
                ),
            ));
        }
        return Ok(params.iter().collect());
    };
    if names.len() != params.len() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "param_names and params differ in length",
        ));
    }
    let mut slots: Vec<Option<&Value>> = vec![None; count];
    for (name, value) in names.iter().zip(params) {
        let index = statement
            .parameter_index(name)
            .map_err(sql_error)?
            .ok_or_else(|| {
                VolumeError::new(
                    ErrorCode::InvalidRequest,
                    format!("the statement has no parameter named {name}"),
                )
            })?;
        slots[index - 1] = Some(value);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            slot.ok_or_else(|| {
                let name = statement.parameter_name(i + 1).unwrap_or("?");
                VolumeError::new(
                    ErrorCode::InvalidRequest,
                    format!("no value was given for parameter {name}"),
                )
            })
        })
        .collect()
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null(_) => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Text(t) => SqlValue::Text(t.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

pub(super) fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null(true),
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(t) => t.len() + 16,
        Value::Blob(b) => b.len() + 16,
        _ => 16,
    }
}

/// SQLite's own message for a refused statement; an I/O failure is the node's, not the user's,
/// and an interrupted statement was stopped by a backtrack or by the node stopping (a
/// statement stopped by its time limit is told apart by the caller, which knows the deadline).
pub(super) fn sql_error(e: rusqlite::Error) -> VolumeError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &e {
        match failure.code {
            rusqlite::ErrorCode::SystemIoFailure => {
                return VolumeError::internal(format!("storage failure: {e}"))
            }
            rusqlite::ErrorCode::OperationInterrupted => {
                return VolumeError::new(
                    ErrorCode::Unavailable,
                    "the statement was interrupted because the volume is being backtracked (or \
                     the node is stopping); it did not take effect, retry it",
                )
            }
            rusqlite::ErrorCode::OutOfMemory => {
                return VolumeError::new(
                    ErrorCode::SqlError,
                    "out of memory: the statement needs more memory than the storage node \
                     allows SQL; it did not take effect",
                )
            }
            _ => {}
        }
    }
    VolumeError::new(ErrorCode::SqlError, e.to_string())
}
