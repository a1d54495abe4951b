//! `ApiError`: every way a request to the RDS-style API can fail, and the one place that decides
//! each failure's RDS error code, HTTP status and fault type.
//!
//! Handlers return `ApiError`; its `IntoResponse` leaves the body to the `render_errors`
//! middleware (http/mod.rs), which knows the request id and writes
//! `{"Error": {"Code", "Message", "Type"}, "RequestId"}`. A 500 never shows its cause to the
//! caller; it is logged once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use backtrack_storage_node::client::cause_chain;

use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    InvalidParameterValue(String),
    InvalidParameterCombination(String),
    MissingParameter(String),
    ClusterNotFound(String),
    ClusterAlreadyExists(String),
    BacktrackNotFound(String),
    InvalidClusterState(String),
    /// A restore's instant is outside its source's restorable history.
    InvalidRestore(String),
    /// No storage node can take a new cluster.
    InsufficientCapacity(String),
    /// The storage nodes' disks are full.
    StorageQuotaExceeded(String),
    UnsupportedMediaType(String),
    /// A cross-site request, or one to a host name that is not this service's.
    Forbidden(String),
    UriTooLong(String),
    HeadersTooLarge(String),
    UnknownOperation(String),
    MethodNotAllowed(String),
    /// A query-protocol request without `Action`.
    MissingAction(String),
    /// A query-protocol `Action` this service does not have.
    InvalidAction(String),
    /// More tags than a resource may have.
    TagQuotaExceeded(String),
    /// Access keys are configured and the request is not signed.
    MissingAuthenticationToken(String),
    /// The request is signed with an access key this service does not have.
    InvalidClientTokenId(String),
    /// The signature is not the one the access key's secret gives, or it has expired.
    SignatureDoesNotMatch(String),
    /// The `Authorization` header or presigned parameters are malformed or incomplete.
    IncompleteSignature(String),
    PayloadTooLarge(String),
    Timeout(String),
    Unavailable(String),
    /// An unexpected failure; the text is logged, never returned.
    Internal(String),
}

impl ApiError {
    /// The RDS error code, HTTP status, and whether the fault is the caller's (`Sender`).
    pub fn parts(&self) -> (&'static str, StatusCode, &'static str) {
        use ApiError::*;
        match self {
            InvalidParameterValue(_) => {
                ("InvalidParameterValue", StatusCode::BAD_REQUEST, "Sender")
            }
            InvalidParameterCombination(_) => (
                "InvalidParameterCombination",
                StatusCode::BAD_REQUEST,
                "Sender",
            ),
            MissingParameter(_) => ("MissingParameter", StatusCode::BAD_REQUEST, "Sender"),
            ClusterNotFound(_) => ("DBClusterNotFoundFault", StatusCode::NOT_FOUND, "Sender"),
            ClusterAlreadyExists(_) => (
                "DBClusterAlreadyExistsFault",
                StatusCode::BAD_REQUEST,
                "Sender",
            ),
            BacktrackNotFound(_) => (
                "DBClusterBacktrackNotFoundFault",
                StatusCode::NOT_FOUND,
                "Sender",
            ),
            InvalidClusterState(_) => (
                "InvalidDBClusterStateFault",
                StatusCode::BAD_REQUEST,
                "Sender",
            ),
            InvalidRestore(_) => ("InvalidRestoreFault", StatusCode::BAD_REQUEST, "Sender"),
            InsufficientCapacity(_) => (
                "InsufficientStorageClusterCapacity",
                StatusCode::BAD_REQUEST,
                "Sender",
            ),
            StorageQuotaExceeded(_) => ("StorageQuotaExceeded", StatusCode::BAD_REQUEST, "Sender"),
            UnsupportedMediaType(_) => (
                "UnsupportedMediaType",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Sender",
            ),
            Forbidden(_) => ("AccessDeniedException", StatusCode::FORBIDDEN, "Sender"),
            UriTooLong(_) => ("RequestUriTooLong", StatusCode::URI_TOO_LONG, "Sender"),
            HeadersTooLarge(_) => (
                "RequestHeaderFieldsTooLarge",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Sender",
            ),
            UnknownOperation(_) => ("UnknownOperation", StatusCode::NOT_FOUND, "Sender"),
            MethodNotAllowed(_) => ("InvalidAction", StatusCode::METHOD_NOT_ALLOWED, "Sender"),
            MissingAction(_) => ("MissingAction", StatusCode::BAD_REQUEST, "Sender"),
            InvalidAction(_) => ("InvalidAction", StatusCode::BAD_REQUEST, "Sender"),
            TagQuotaExceeded(_) => (
                "TagQuotaPerResourceExceeded",
                StatusCode::BAD_REQUEST,
                "Sender",
            ),
            MissingAuthenticationToken(_) => (
                "MissingAuthenticationToken",
                StatusCode::FORBIDDEN,
                "Sender",
            ),
            InvalidClientTokenId(_) => ("InvalidClientTokenId", StatusCode::FORBIDDEN, "Sender"),
            SignatureDoesNotMatch(_) => ("SignatureDoesNotMatch", StatusCode::FORBIDDEN, "Sender"),
            IncompleteSignature(_) => ("IncompleteSignature", StatusCode::BAD_REQUEST, "Sender"),
            PayloadTooLarge(_) => (
                "RequestEntityTooLarge",
                StatusCode::PAYLOAD_TOO_LARGE,
                "Sender",
            ),
            Timeout(_) => ("RequestTimeout", StatusCode::REQUEST_TIMEOUT, "Sender"),
            Unavailable(_) => (
                "ServiceUnavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Receiver",
            ),
            Internal(_) => (
                "InternalFailure",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Receiver",
            ),
        }
    }

    pub fn message(&self) -> String {
        use ApiError::*;
        match self {
            ClusterNotFound(id) => format!("DBCluster {id} not found."),
            ClusterAlreadyExists(id) => format!("DB Cluster {id} already exists."),
            BacktrackNotFound(id) => {
                format!("DBClusterBacktrack {id} not found: BacktrackIdentifier doesn't refer to an existing backtrack.")
            }
            Internal(_) => "The request processing has failed because of an unknown error.".into(),
            InvalidParameterValue(m)
            | InvalidParameterCombination(m)
            | MissingParameter(m)
            | InvalidClusterState(m)
            | InvalidRestore(m)
            | InsufficientCapacity(m)
            | StorageQuotaExceeded(m)
            | UnsupportedMediaType(m)
            | Forbidden(m)
            | UriTooLong(m)
            | HeadersTooLarge(m)
            | UnknownOperation(m)
            | MethodNotAllowed(m)
            | MissingAction(m)
            | InvalidAction(m)
            | TagQuotaExceeded(m)
            | MissingAuthenticationToken(m)
            | InvalidClientTokenId(m)
            | SignatureDoesNotMatch(m)
            | IncompleteSignature(m)
            | PayloadTooLarge(m)
            | Timeout(m)
            | Unavailable(m) => m.clone(),
        }
    }

    pub fn body(&self, request_id: &str) -> ErrorResponse {
        let (code, _, kind) = self.parts();
        ErrorResponse {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.message(),
                kind: kind.to_string(),
            },
            request_id: request_id.to_string(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.parts().0, self.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        let status = self.parts().1;
        let mut response = status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ClusterExists(id) => ApiError::ClusterAlreadyExists(id),
            StoreError::ClusterNotFound(id) => ApiError::ClusterNotFound(id),
            StoreError::DatabaseNameTaken(name) => ApiError::InvalidParameterValue(format!(
                "The database name {name} is another cluster's (its DatabaseName or its \
                 identifier): clients reach each cluster's database by its own name. Choose \
                 another DatabaseName."
            )),
            StoreError::BacktrackNotFound(id) => ApiError::BacktrackNotFound(id),
            StoreError::InvalidState(why) => ApiError::InvalidClusterState(why),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "the metadata store cannot take requests now");
                ApiError::Unavailable(
                    "The service's metadata store cannot take the request right now (its disk \
                     may be full, or it is unreachable); nothing was changed. Retry shortly."
                        .into(),
                )
            }
            StoreError::Database(_) | StoreError::Invalid(_) => ApiError::Internal(cause_chain(&e)),
        }
    }
}

/// The error body of every failed call: `{"Error": {...}, "RequestId": "..."}`.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorResponse {
    #[serde(rename = "Error")]
    pub error: ErrorDetail,
    #[serde(rename = "RequestId")]
    pub request_id: String,
}

#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The RDS error code, e.g. `DBClusterNotFoundFault`.
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message")]
    pub message: String,
    /// `Sender` when the request was at fault, `Receiver` when the service was.
    #[serde(rename = "Type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_faults_are_404_and_the_rest_of_the_callers_faults_400() {
        assert_eq!(
            ApiError::ClusterNotFound("x".into()).parts().1,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::BacktrackNotFound("x".into()).parts().1,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ApiError::ClusterAlreadyExists("x".into()).parts(),
            (
                "DBClusterAlreadyExistsFault",
                StatusCode::BAD_REQUEST,
                "Sender"
            )
        );
    }

    #[test]
    fn an_internal_failure_never_shows_its_cause() {
        let body = ApiError::Internal("password=hunter2".into()).body("r");
        assert!(!body.error.message.contains("hunter2"));
        assert_eq!(body.error.kind, "Receiver");
    }
}
