//! Results as the Data API returns them beside the records: column metadata (JDBC types from
//! SQLite's declared types) and `formatRecordsAs: JSON`.

use backtrack_storage_node::api::{ExecuteResult, Value};
use base64::Engine;

use super::shapes::ColumnMetadata;

/// Column metadata from the declared types (SQLite's affinity rules name the JDBC type).
pub fn column_metadata(result: &ExecuteResult) -> Vec<ColumnMetadata> {
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
pub fn formatted_records(result: &ExecuteResult) -> String {
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
    fn declared_types_map_to_jdbc_types() {
        assert_eq!(jdbc_type("INTEGER", None).0, -5);
        assert_eq!(jdbc_type("VARCHAR(20)", None).0, 12);
        assert_eq!(jdbc_type("", Some(&Value::Real(1.0))).0, 8);
    }
}
