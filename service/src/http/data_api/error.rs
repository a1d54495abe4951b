//! The Data API's errors, in one table: each code's name (as in the rds-data service model,
//! sent in `x-amzn-ErrorType`, which is what botocore and the AWS SDKs raise) and its HTTP
//! status. The body is `{"message": "..."}`. A message never names an internal address, port
//! or volume: those go to the log.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use backtrack_storage_node::api::ErrorCode;
use backtrack_storage_node::client::CallError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::SqlRefusal;
use crate::error::ApiError;
use crate::ops::sql::SqlError;
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataApiCode {
    BadRequest,
    /// The request body is larger than the service takes.
    PayloadTooLarge,
    /// The request body is not JSON.
    UnsupportedMediaType,
    /// The URL, or the headers, are larger than the service reads.
    UriTooLong,
    HeadersTooLarge,
    /// A method the route does not take, or a path with no operation.
    MethodNotAllowed,
    UnknownOperation,
    DatabaseError,
    DatabaseNotFound,
    DatabaseUnavailable,
    Forbidden,
    HttpEndpointNotEnabled,
    InternalServerError,
    InvalidResourceState,
    ServiceUnavailable,
    StatementTimeout,
    TransactionNotFound,
    /// Authentication: the codes are the RDS API's, the same on every front door.
    MissingAuthenticationToken,
    InvalidClientTokenId,
    SignatureDoesNotMatch,
    IncompleteSignature,
}

impl DataApiCode {
    /// The error's name on the wire, and its HTTP status.
    pub fn parts(self) -> (&'static str, StatusCode) {
        use DataApiCode::*;
        match self {
            BadRequest => ("BadRequestException", StatusCode::BAD_REQUEST),
            PayloadTooLarge => ("BadRequestException", StatusCode::PAYLOAD_TOO_LARGE),
            UnsupportedMediaType => ("BadRequestException", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            UriTooLong => ("BadRequestException", StatusCode::URI_TOO_LONG),
            HeadersTooLarge => (
                "BadRequestException",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            MethodNotAllowed => ("BadRequestException", StatusCode::METHOD_NOT_ALLOWED),
            UnknownOperation => ("UnknownOperationException", StatusCode::NOT_FOUND),
            DatabaseError => ("DatabaseErrorException", StatusCode::BAD_REQUEST),
            DatabaseNotFound => ("DatabaseNotFoundException", StatusCode::NOT_FOUND),
            DatabaseUnavailable => ("DatabaseUnavailableException", StatusCode::GATEWAY_TIMEOUT),
            Forbidden => ("ForbiddenException", StatusCode::FORBIDDEN),
            HttpEndpointNotEnabled => ("HttpEndpointNotEnabledException", StatusCode::BAD_REQUEST),
            InternalServerError => (
                "InternalServerErrorException",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            InvalidResourceState => ("InvalidResourceStateException", StatusCode::BAD_REQUEST),
            ServiceUnavailable => ("ServiceUnavailableError", StatusCode::SERVICE_UNAVAILABLE),
            StatementTimeout => ("StatementTimeoutException", StatusCode::BAD_REQUEST),
            TransactionNotFound => ("TransactionNotFoundException", StatusCode::NOT_FOUND),
            MissingAuthenticationToken => ("MissingAuthenticationToken", StatusCode::FORBIDDEN),
            InvalidClientTokenId => ("InvalidClientTokenId", StatusCode::FORBIDDEN),
            SignatureDoesNotMatch => ("SignatureDoesNotMatch", StatusCode::FORBIDDEN),
            IncompleteSignature => ("IncompleteSignature", StatusCode::BAD_REQUEST),
        }
    }
}

/// A Data API error: its code and message.
#[derive(Debug)]
pub struct DataApiError {
    pub code: DataApiCode,
    pub message: String,
}

impl DataApiError {
    pub fn new(code: DataApiCode, message: impl Into<String>) -> Self {
        DataApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(DataApiCode::BadRequest, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(DataApiCode::DatabaseUnavailable, message)
    }

    /// The Data API's form of an error the service's layers or its cross-site checks made
    /// in the RDS API's terms (the body limit, the media type, a foreign origin, a timeout).
    pub fn from_api(e: &ApiError) -> Self {
        let code = match e {
            ApiError::PayloadTooLarge(_) => DataApiCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => DataApiCode::UnsupportedMediaType,
            ApiError::UriTooLong(_) => DataApiCode::UriTooLong,
            ApiError::HeadersTooLarge(_) => DataApiCode::HeadersTooLarge,
            ApiError::MethodNotAllowed(_) => DataApiCode::MethodNotAllowed,
            ApiError::UnknownOperation(_) => DataApiCode::UnknownOperation,
            ApiError::Forbidden(_) => DataApiCode::Forbidden,
            ApiError::MissingAuthenticationToken(_) => DataApiCode::MissingAuthenticationToken,
            ApiError::InvalidClientTokenId(_) => DataApiCode::InvalidClientTokenId,
            ApiError::SignatureDoesNotMatch(_) => DataApiCode::SignatureDoesNotMatch,
            ApiError::IncompleteSignature(_) => DataApiCode::IncompleteSignature,
            ApiError::Timeout(_) | ApiError::Unavailable(_) => DataApiCode::DatabaseUnavailable,
            ApiError::Internal(_) => DataApiCode::InternalServerError,
            _ => DataApiCode::BadRequest,
        };
        Self::new(code, e.message())
    }
}

impl IntoResponse for DataApiError {
    fn into_response(self) -> Response {
        let (name, status) = self.code.parts();
        if self.code == DataApiCode::InternalServerError {
            tracing::error!(message = %self.message, "data api failure");
        }
        let message = if self.code == DataApiCode::InternalServerError {
            "The request failed because of an internal error.".to_string()
        } else {
            self.message
        };
        let mut response = (status, axum::Json(DataApiErrorBody { message })).into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(name));
        response
    }
}

impl From<StoreError> for DataApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ClusterNotFound(id) => Self::new(
                DataApiCode::DatabaseNotFound,
                format!("DB cluster {id} not found."),
            ),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "the metadata store cannot take requests now");
                Self::new(
                    DataApiCode::ServiceUnavailable,
                    "The service's metadata store cannot take the request right now; retry \
                     shortly.",
                )
            }
            other => Self::new(DataApiCode::InternalServerError, other.to_string()),
        }
    }
}

impl From<SqlError> for DataApiError {
    fn from(e: SqlError) -> Self {
        use DataApiCode::*;
        match e {
            SqlError::BadRequest(message) => Self::bad_request(message),
            e @ SqlError::NotEnabled(_) => Self::new(HttpEndpointNotEnabled, e.to_string()),
            SqlError::Refused(id, SqlRefusal::Backtracking) => Self::unavailable(format!(
                "DB cluster {id} is being backtracked; the database is unavailable for a moment. Retry shortly."
            )),
            SqlError::Refused(id, SqlRefusal::Creating) => {
                Self::unavailable(format!("DB cluster {id} is still being created."))
            }
            SqlError::Refused(id, SqlRefusal::NoVolume) => Self::new(
                InvalidResourceState,
                format!("DB cluster {id} has no data: its restore failed (status incompatible-restore)."),
            ),
            SqlError::Refused(id, SqlRefusal::Deleting) => Self::new(
                InvalidResourceState,
                format!("DB cluster {id} is being deleted."),
            ),
            e @ SqlError::NodeDown(_) => Self::unavailable(e.to_string()),
            SqlError::Store(e) => e.into(),
            SqlError::Node(e) => from_node(e),
        }
    }
}

/// What the storage node said, in the Data API's terms. The node's messages name no volume;
/// a node that does not answer is described without its address, which is logged instead.
pub fn from_node(e: CallError) -> DataApiError {
    use DataApiCode::*;
    match e {
        CallError::Refused { code, message, .. } => match code {
            ErrorCode::SqlError | ErrorCode::StorageFull => {
                DataApiError::new(DatabaseError, message)
            }
            ErrorCode::StatementTimeout => DataApiError::new(StatementTimeout, message),
            ErrorCode::InvalidRequest => DataApiError::bad_request(message),
            ErrorCode::TransactionNotFound => DataApiError::new(TransactionNotFound, message),
            ErrorCode::Unavailable => DataApiError::unavailable(message),
            ErrorCode::VolumeNotFound => DataApiError::new(
                DatabaseNotFound,
                "The DB cluster's database does not exist on its storage node.",
            ),
            _ => DataApiError::new(InternalServerError, message),
        },
        CallError::Unreachable(why) | CallError::Protocol(why) => {
            tracing::warn!(error = %why, "a storage node did not answer a Data API call");
            DataApiError::unavailable("The database is not reachable right now; try again.")
        }
    }
}

/// The body of every Data API error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DataApiErrorBody {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_node_is_not_named_to_the_caller() {
        let e = from_node(CallError::Unreachable(
            "error sending request for url (http://127.0.0.1:7001/v1/volumes/cluster-abc/execute)"
                .into(),
        ));
        assert_eq!(e.code, DataApiCode::DatabaseUnavailable);
        assert!(!e.message.contains("127.0.0.1"), "{}", e.message);
        assert!(!e.message.contains("cluster-abc"), "{}", e.message);
    }

    #[test]
    fn errors_of_the_layers_keep_their_status_in_the_data_apis_form() {
        for (error, status) in [
            (ApiError::PayloadTooLarge("x".into()), 413),
            (ApiError::UnsupportedMediaType("x".into()), 415),
            (ApiError::UriTooLong("x".into()), 414),
            (ApiError::HeadersTooLarge("x".into()), 431),
            (ApiError::MethodNotAllowed("x".into()), 405),
            (ApiError::Forbidden("x".into()), 403),
        ] {
            assert_eq!(
                DataApiError::from_api(&error).code.parts().1.as_u16(),
                status,
                "{error}"
            );
        }
    }

    #[test]
    fn a_timed_out_statement_is_a_statement_timeout_exception() {
        let e = from_node(CallError::Refused {
            status: 400,
            code: ErrorCode::StatementTimeout,
            message: "the statement ran longer than the limit of 10 s".into(),
        });
        assert_eq!(
            e.code.parts(),
            ("StatementTimeoutException", StatusCode::BAD_REQUEST)
        );
    }
}
