//! SQLite's values as PostgreSQL's: a column's type comes from its declared type (by SQLite's
//! affinity rules, BOOLEAN included), else from its first non-NULL value; values are sent in
//! text format.

use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use crate::api::{Column, Value};

/// The PostgreSQL type of a declared column type.
pub(super) fn declared(decl: &str) -> Type {
    let d = decl.to_ascii_uppercase();
    if d.starts_with("BOOL") {
        Type::BOOL
    } else if d.contains("INT") {
        Type::INT8
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        Type::TEXT
    } else if d.contains("BLOB") || d.is_empty() {
        Type::BYTEA
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        Type::FLOAT8
    } else {
        // NUMERIC affinity (NUMERIC, DECIMAL, DATE, ...) holds integers, reals or text.
        Type::TEXT
    }
}

fn of_value(value: &Value) -> Option<Type> {
    match value {
        Value::Null(_) => None,
        Value::Integer(_) => Some(Type::INT8),
        Value::Real(_) => Some(Type::FLOAT8),
        Value::Text(_) => Some(Type::TEXT),
        Value::Blob(_) => Some(Type::BYTEA),
    }
}

/// The row description of a result.
pub(super) fn fields(columns: &[Column], rows: &[Vec<Value>]) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let pg_type = match column.decl_type.as_deref() {
                Some(decl) => declared(decl),
                None => rows
                    .iter()
                    .find_map(|row| row.get(i).and_then(of_value))
                    .unwrap_or(Type::TEXT),
            };
            FieldInfo::new(column.name.clone(), None, None, pg_type, FieldFormat::Text)
        })
        .collect()
}

/// One row, in text format.
pub(super) fn row(
    encoder: &mut DataRowEncoder,
    fields: &[FieldInfo],
    values: &[Value],
) -> PgWireResult<DataRow> {
    for (value, field) in values.iter().zip(fields) {
        match value {
            Value::Null(_) => encoder.encode_field(&None::<i64>)?,
            Value::Integer(v) if field.datatype() == &Type::BOOL => {
                encoder.encode_field(&(*v != 0))?
            }
            Value::Integer(v) => encoder.encode_field(v)?,
            Value::Real(v) => encoder.encode_field(v)?,
            Value::Text(v) => encoder.encode_field(&v.as_str())?,
            Value::Blob(v) => encoder.encode_field(&v.as_slice())?,
        }
    }
    Ok(encoder.take_row())
}
