//! The typed HTTP client for one storage node, used by the control plane. Every call carries
//! the shared bearer token; every failure is classified once, here, into "unreachable" (worth
//! retrying) or "refused" (the node answered and said no), so callers never inspect statuses.

mod http1;

use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    BacktrackList, BacktrackOutcome, BacktrackRequest, CloneSource, CreateVolume, ErrorCode,
    ExecuteRequest, ExecuteResult, Health, ModifyVolume, NodeErrorBody, NodeSettings, Preview,
    PreviewRequest, TransactionStarted, VolumeAccess, VolumeFigures, VolumeList,
};

/// Why a call to a node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, reset, or timed out. The call may or may not have taken
    /// effect, so only idempotent calls should be retried. The text is the transport error and
    /// its causes.
    #[error("storage node unreachable: {0}")]
    Unreachable(String),
    /// The node answered with an error of the contract.
    #[error("{message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// The node answered something outside the contract.
    #[error("storage node protocol error: {0}")]
    Protocol(String),
}

impl CallError {
    /// Whether trying again later can succeed: the node was unreachable, busy switching, or
    /// failed internally.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) | CallError::Protocol(_) => true,
            CallError::Refused { code, status, .. } => {
                matches!(
                    code,
                    ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::StorageFull
                ) || *status >= 500
            }
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// How long connecting to a node may take, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct NodeClient {
    http: http1::Shared,
    base: String,
    token: String,
    /// Bounds each call.
    timeout: Duration,
    /// Bounds SQL calls instead, which may run up to the node's statement time limit.
    sql_timeout: Duration,
}

impl NodeClient {
    /// `base` is the node's URL, e.g. `http://127.0.0.1:7001`; `timeout` bounds each call.
    pub fn new(base: &str, token: &str, timeout: Duration) -> Self {
        NodeClient {
            http: Arc::new(http1::Connections::new(base.trim_end_matches('/'))),
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            timeout,
            sql_timeout: timeout,
        }
    }

    /// The same client, with SQL calls (execute, transactions) bounded by `timeout` instead:
    /// the node's statement time limit, plus room for the answer.
    pub fn with_sql_timeout(mut self, timeout: Duration) -> Self {
        self.sql_timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub async fn health(&self) -> Result<Health, CallError> {
        self.call(Method::GET, "/healthz", None::<&()>).await
    }

    pub async fn create_volume(
        &self,
        volume: &str,
        window_secs: u64,
    ) -> Result<VolumeFigures, CallError> {
        let body = CreateVolume {
            window_secs,
            source: None,
        };
        self.call(Method::PUT, &volume_path(volume, ""), Some(&body))
            .await
    }

    /// Creates `volume` as a clone (see [`CloneSource`]); idempotent like `create_volume`.
    pub async fn create_clone(
        &self,
        volume: &str,
        window_secs: u64,
        source: &CloneSource,
    ) -> Result<VolumeFigures, CallError> {
        let body = CreateVolume {
            window_secs,
            source: Some(source.clone()),
        };
        self.call(Method::PUT, &volume_path(volume, ""), Some(&body))
            .await
    }

    pub async fn modify_volume(
        &self,
        volume: &str,
        window_secs: u64,
    ) -> Result<VolumeFigures, CallError> {
        let body = ModifyVolume { window_secs };
        self.call(Method::PATCH, &volume_path(volume, ""), Some(&body))
            .await
    }

    /// Deletes the volume and its log; a volume that is already gone counts as deleted.
    pub async fn delete_volume(&self, volume: &str) -> Result<(), CallError> {
        let path = volume_path(volume, "");
        match self
            .call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
            .await
        {
            Ok(_) => Ok(()),
            Err(CallError::Refused {
                code: ErrorCode::VolumeNotFound,
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn volume(&self, volume: &str) -> Result<VolumeFigures, CallError> {
        self.call(Method::GET, &volume_path(volume, ""), None::<&()>)
            .await
    }

    pub async fn volumes(&self) -> Result<VolumeList, CallError> {
        self.call(Method::GET, "/v1/volumes", None::<&()>).await
    }

    pub async fn settings(&self) -> Result<NodeSettings, CallError> {
        self.call(Method::GET, "/v1/config", None::<&()>).await
    }

    /// Sets who may connect to the volume's database over the PostgreSQL protocol.
    pub async fn set_access(&self, volume: &str, access: &VolumeAccess) -> Result<(), CallError> {
        self.call::<serde_json::Value>(Method::PUT, &volume_path(volume, "/access"), Some(access))
            .await
            .map(drop)
    }

    pub async fn set_settings(&self, settings: &NodeSettings) -> Result<NodeSettings, CallError> {
        self.call(Method::PATCH, "/v1/config", Some(settings)).await
    }

    pub async fn backtrack(
        &self,
        volume: &str,
        request: &BacktrackRequest,
    ) -> Result<BacktrackOutcome, CallError> {
        let path = volume_path(volume, "/backtracks");
        self.call(Method::POST, &path, Some(request)).await
    }

    pub async fn backtracks(&self, volume: &str) -> Result<BacktrackList, CallError> {
        self.call(
            Method::GET,
            &volume_path(volume, "/backtracks"),
            None::<&()>,
        )
        .await
    }

    pub async fn execute(
        &self,
        volume: &str,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, CallError> {
        let path = volume_path(volume, "/execute");
        self.send(Method::POST, &path, Some(request), self.sql_timeout)
            .await
    }

    /// What a backtrack to `request.to_us` would undo (SQL work: the SQL call's timeout).
    pub async fn preview(
        &self,
        volume: &str,
        request: &PreviewRequest,
    ) -> Result<Preview, CallError> {
        let path = volume_path(volume, "/preview");
        self.send(Method::POST, &path, Some(request), self.sql_timeout)
            .await
    }

    pub async fn begin(&self, volume: &str) -> Result<TransactionStarted, CallError> {
        let path = volume_path(volume, "/transactions");
        self.send(Method::POST, &path, None::<&()>, self.sql_timeout)
            .await
    }

    pub async fn commit(&self, volume: &str, transaction: &str) -> Result<(), CallError> {
        self.finish(volume, transaction, "commit").await
    }

    pub async fn rollback(&self, volume: &str, transaction: &str) -> Result<(), CallError> {
        self.finish(volume, transaction, "rollback").await
    }

    async fn finish(&self, volume: &str, transaction: &str, verb: &str) -> Result<(), CallError> {
        let path = volume_path(
            volume,
            &format!("/transactions/{}/{verb}", encode_segment(transaction)),
        );
        self.send::<serde_json::Value>(Method::POST, &path, None::<&()>, self.sql_timeout)
            .await
            .map(|_| ())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        self.send(method, path, body, self.timeout).await
    }

    /// A call bounded by `timeout`. Its log lines carry the node, the method and the path
    /// (which names the volume).
    #[tracing::instrument(level = "debug", skip(self, body), fields(node = %self.base))]
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CallError::Protocol(format!("cannot encode the request: {e}")))?;
        let connect_timeout = timeout.min(CONNECT_TIMEOUT);
        let http1::Answer {
            status,
            body: bytes,
        } = self
            .http
            .call(method, path, &self.token, body, timeout, connect_timeout)
            .await
            .map_err(CallError::Unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Protocol(format!("unexpected response body: {e}")));
        }
        Err(refusal(status, &bytes))
    }
}

fn refusal(status: StatusCode, bytes: &[u8]) -> CallError {
    match serde_json::from_slice::<NodeErrorBody>(bytes) {
        Ok(body) => CallError::Refused {
            status: status.as_u16(),
            code: body.code,
            message: body.message,
        },
        // Not our node (a proxy, or a different service on that port): a server error is
        // worth retrying; anything else is a protocol violation.
        Err(_) if status.is_server_error() => CallError::Unreachable(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )),
        Err(_) => CallError::Protocol(format!("HTTP {status} without an error body")),
    }
}

/// An error and its causes, in one line: `a: b: c` (hyper's own text hides the cause).
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn volume_path(volume: &str, rest: &str) -> String {
    format!("/v1/volumes/{}{rest}", encode_segment(volume))
}

/// Percent-encodes everything but unreserved characters, so an id can never change the path.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            volume_path("a/b c", "/execute"),
            "/v1/volumes/a%2Fb%20c/execute"
        );
        assert_eq!(volume_path("cluster-abc", ""), "/v1/volumes/cluster-abc");
    }

    #[test]
    fn only_unavailable_internal_and_unreachable_are_transient() {
        let refused = |code| CallError::Refused {
            status: ErrorCode::http_status(code),
            code,
            message: String::new(),
        };
        assert!(refused(ErrorCode::Unavailable).is_transient());
        assert!(refused(ErrorCode::Internal).is_transient());
        assert!(!refused(ErrorCode::BeforeEarliest).is_transient());
        assert!(!refused(ErrorCode::OpenTransactions).is_transient());
        assert!(CallError::Unreachable("x".into()).is_transient());
    }
}
