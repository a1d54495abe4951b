//! The Data API's shapes, as the service model has them: camelCase members, and `Field`
//! unions with exactly one member set.

use backtrack_storage_node::api::Value;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::DataApiError;

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
    pub fn to_value(&self) -> Result<Value, DataApiError> {
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

    pub fn from_value(value: &Value, longs_as_strings: bool) -> Field {
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
}
