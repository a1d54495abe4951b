//! SQLite's values as PostgreSQL's: a column's type comes from its declared type (by SQLite's
//! affinity rules, BOOLEAN included), else from its first non-NULL value; values are sent in
//! text format.

use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
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

/// The row description of a statement before it runs: declared types, TEXT for the rest (an
/// expression's type is known only from its values), in the formats the client asked for.
pub(super) fn declared_fields(columns: &[Column], format: Option<&Format>) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let pg_type = column.decl_type.as_deref().map_or(Type::TEXT, declared);
            let format = format.map_or(FieldFormat::Text, |f| f.format_for(i));
            FieldInfo::new(column.name.clone(), None, None, pg_type, format)
        })
        .collect()
}

/// One row, each value as its field's type says (SQLite lets a column hold any type: a value
/// is converted where it can be, refused where it cannot).
pub(super) fn row(
    encoder: &mut DataRowEncoder,
    fields: &[FieldInfo],
    values: &[Value],
) -> PgWireResult<DataRow> {
    for (value, field) in values.iter().zip(fields) {
        encode(encoder, field, value)?;
    }
    Ok(encoder.take_row())
}

fn encode(encoder: &mut DataRowEncoder, field: &FieldInfo, value: &Value) -> PgWireResult<()> {
    let pg_type = field.datatype();
    match value {
        Value::Null(_) => return encoder.encode_field(&None::<i64>),
        Value::Integer(v) if *pg_type == Type::INT8 => return encoder.encode_field(v),
        Value::Integer(v) if *pg_type == Type::FLOAT8 => return encoder.encode_field(&(*v as f64)),
        Value::Integer(v) if *pg_type == Type::BOOL => return encoder.encode_field(&(*v != 0)),
        Value::Real(v) if *pg_type == Type::FLOAT8 => return encoder.encode_field(v),
        Value::Real(v) if *pg_type == Type::INT8 && v.fract() == 0.0 => {
            return encoder.encode_field(&(*v as i64))
        }
        Value::Blob(v) if *pg_type == Type::BYTEA => return encoder.encode_field(&v.as_slice()),
        Value::Text(v) if *pg_type == Type::BYTEA => return encoder.encode_field(&v.as_bytes()),
        Value::Text(v) if *pg_type == Type::INT8 => {
            if let Ok(n) = v.trim().parse::<i64>() {
                return encoder.encode_field(&n);
            }
        }
        // A boolean sent as untyped text ('true', 't', 'false', ...) is stored as text.
        Value::Text(v) if *pg_type == Type::BOOL => match v.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "on" | "yes" | "y" => return encoder.encode_field(&true),
            "f" | "false" | "0" | "off" | "no" | "n" => return encoder.encode_field(&false),
            _ => {}
        },
        Value::Text(v) if *pg_type == Type::FLOAT8 => {
            if let Ok(n) = v.trim().parse::<f64>() {
                return encoder.encode_field(&n);
            }
        }
        _ => {}
    }
    if *pg_type == Type::TEXT {
        return encoder.encode_field(&text_of(value).as_str());
    }
    Err(PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "22P02".into(),
        format!(
            "column {:?} is declared {} but holds {}: SQLite columns take any type; CAST it in \
             the query",
            field.name(),
            pg_type.name(),
            text_of(value)
        ),
    ))))
}

/// A value as PostgreSQL would write it in text.
fn text_of(value: &Value) -> String {
    match value {
        Value::Null(_) => String::new(),
        Value::Integer(v) => v.to_string(),
        Value::Real(v) => v.to_string(),
        Value::Text(v) => v.clone(),
        Value::Blob(v) => {
            let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
    }
}
