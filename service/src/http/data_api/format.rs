//! Results as the Data API returns them beside the records: column metadata (JDBC types from
//! SQLite's declared types) and `formatRecordsAs: JSON`.

use backtrack_storage_node::api::{ExecuteResult, Value};
use base64::Engine;

use super::shapes::{
    BatchExecuteStatementResponse, ColumnMetadata, ExecuteStatementRequest,
    ExecuteStatementResponse, Field, UpdateResult,
};
use super::DataApiError;

/// How ExecuteStatement's caller wants the result: as records or as JSON text, with or
/// without column metadata, integers as numbers or strings.
pub struct ResultShape {
    json_records: bool,
    metadata: bool,
    longs_as_strings: bool,
}

impl ResultShape {
    pub fn of(request: &ExecuteStatementRequest) -> Result<Self, DataApiError> {
        let json_records = match request.format_records_as.as_deref() {
            None | Some("NONE") => false,
            Some("JSON") => true,
            Some(other) => {
                return Err(DataApiError::bad_request(format!(
                    "Unknown formatRecordsAs {other:?}; use NONE or JSON."
                )))
            }
        };
        Ok(ResultShape {
            json_records,
            metadata: request.include_result_metadata == Some(true),
            longs_as_strings: request
                .result_set_options
                .as_ref()
                .and_then(|o| o.long_return_type.as_deref())
                == Some("STRING"),
        })
    }

    pub fn response(&self, result: &ExecuteResult) -> ExecuteStatementResponse {
        let has_rows = !result.columns.is_empty();
        ExecuteStatementResponse {
            records: (has_rows && !self.json_records).then(|| {
                result
                    .rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|v| Field::from_value(v, self.longs_as_strings))
                            .collect()
                    })
                    .collect()
            }),
            column_metadata: (self.metadata && !self.json_records).then(|| column_metadata(result)),
            number_of_records_updated: result.rows_affected,
            generated_fields: result.last_insert_rowid.map(generated),
            formatted_records: self.json_records.then(|| formatted_records(result)),
        }
    }
}

/// BatchExecuteStatement's answer: the generated key of each parameter set's run.
pub fn batch_response(result: &ExecuteResult) -> BatchExecuteStatementResponse {
    BatchExecuteStatementResponse {
        update_results: result
            .runs
            .iter()
            .map(|run| UpdateResult {
                generated_fields: run.last_insert_rowid.map(generated).unwrap_or_default(),
            })
            .collect(),
    }
}

/// The rowid an INSERT generated, as the Data API's `generatedFields`.
fn generated(rowid: i64) -> Vec<Field> {
    vec![Field::from_value(&Value::Integer(rowid), false)]
}

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
