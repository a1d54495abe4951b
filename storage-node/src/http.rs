//! The node's HTTP API (the contract in `api`): thin handlers over the engine. Engine work
//! blocks (SQLite, fsync), so it runs on tokio's blocking pool. One error type turns every
//! failure into the contract's `{"code", "message"}` body with the code's status.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::api::{
    BacktrackList, BacktrackRequest, CreateVolume, ErrorCode, ExecuteRequest, Health, ModifyVolume,
    NodeErrorBody, NodeSettings, PreviewRequest, TransactionStarted, VolumeAccess, VolumeList,
};
use crate::engine::log::LogError;
use crate::engine::volume::VolumeError;
use crate::engine::Engine;
use crate::metrics::NodeMetrics;

/// Execute requests carry batches; allow them room.
const BODY_LIMIT: usize = 64 << 20;

#[derive(Clone)]
struct Node {
    engine: Arc<Engine>,
    token: Arc<str>,
    metrics: Arc<NodeMetrics>,
    pg_port: Option<u16>,
}

/// The node's HTTP API; `pg_port` is where it serves the PostgreSQL protocol, if it does.
pub fn router(engine: Arc<Engine>, token: &str, pg_port: Option<u16>) -> Router {
    let node = Node {
        engine,
        token: token.into(),
        metrics: Arc::default(),
        pg_port,
    };
    let volumes = Router::new()
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/config", get(get_settings).patch(set_settings))
        .route(
            "/v1/volumes/{id}",
            get(get_volume)
                .put(create_volume)
                .patch(modify_volume)
                .delete(delete_volume),
        )
        .route(
            "/v1/volumes/{id}/backtracks",
            get(list_backtracks).post(backtrack),
        )
        .route("/v1/volumes/{id}/execute", post(execute))
        .route("/v1/volumes/{id}/access", axum::routing::put(set_access))
        .route("/v1/volumes/{id}/preview", post(preview))
        .route("/v1/volumes/{id}/transactions", post(begin))
        .route("/v1/volumes/{id}/transactions/{tx}/commit", post(commit))
        .route(
            "/v1/volumes/{id}/transactions/{tx}/rollback",
            post(rollback),
        )
        .route_layer(middleware::from_fn_with_state(node.clone(), require_token));
    Router::new()
        .merge(volumes)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async { HttpError::new(ErrorCode::InvalidRequest, "no such route") })
        .with_state(node)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
}

async fn require_token(State(node): State<Node>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), node.token.as_bytes()) => {
            next.run(request).await
        }
        _ => HttpError::new(ErrorCode::Unauthorized, "a valid bearer token is required")
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every failure of a call: the contract's code and a message.
#[derive(Debug)]
pub struct HttpError(VolumeError);

impl HttpError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError(VolumeError::new(code, message))
    }
}

impl From<VolumeError> for HttpError {
    fn from(e: VolumeError) -> Self {
        HttpError(e)
    }
}

impl From<JsonRejection> for HttpError {
    fn from(e: JsonRejection) -> Self {
        HttpError::new(ErrorCode::InvalidRequest, e.body_text())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let VolumeError { code, message } = self.0;
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if code == ErrorCode::Internal {
            tracing::error!(%message, "internal error");
        }
        (status, Json(NodeErrorBody { code, message })).into_response()
    }
}

type Result<T> = std::result::Result<T, HttpError>;

/// Runs engine work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::result::Result<T, VolumeError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, format!("engine task failed: {e}")))?
        .map_err(HttpError::from)
}

/// Healthy unless the log cannot be written for a reason other than a full disk: a node whose
/// disk is full still serves reads, and says so (`disk_full`) so that no new cluster is placed
/// on it. Asking first repairs what a failed write left, if the disk has room again.
async fn healthz(State(node): State<Node>) -> Response {
    let engine = node.engine.clone();
    let (volumes, failure) = tokio::task::spawn_blocking(move || {
        engine.log().try_repair();
        (engine.all_figures().len(), engine.log().failure())
    })
    .await
    .unwrap_or((0, None));
    let disk_full = matches!(failure, Some(LogError::DiskFull(_)));
    match failure {
        Some(why) if !disk_full => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: format!("failed: {why}"),
                volumes,
                disk_full,
                pg_port: node.pg_port,
            }),
        )
            .into_response(),
        _ => Json(Health {
            status: "ok".into(),
            volumes,
            disk_full,
            pg_port: node.pg_port,
        })
        .into_response(),
    }
}

async fn get_settings(State(node): State<Node>) -> Json<NodeSettings> {
    Json(NodeSettings {
        log_budget_bytes: node.engine.log_budget(),
    })
}

async fn set_settings(
    State(node): State<Node>,
    body: std::result::Result<Json<NodeSettings>, JsonRejection>,
) -> Result<Json<NodeSettings>> {
    let Json(body) = body?;
    node.engine.set_log_budget(body.log_budget_bytes)?;
    Ok(Json(NodeSettings {
        log_budget_bytes: node.engine.log_budget(),
    }))
}

async fn list_volumes(State(node): State<Node>) -> Result<Json<VolumeList>> {
    let engine = node.engine.clone();
    let volumes = blocking(move || Ok(engine.all_figures())).await?;
    Ok(Json(VolumeList { volumes }))
}

async fn list_backtracks(
    State(node): State<Node>,
    Path(id): Path<String>,
) -> Result<Json<BacktrackList>> {
    let engine = node.engine.clone();
    Ok(Json(blocking(move || engine.backtracks(&id)).await?))
}

async fn get_volume(State(node): State<Node>, Path(id): Path<String>) -> Result<Response> {
    let engine = node.engine.clone();
    Ok(Json(blocking(move || engine.figures(&id)).await?).into_response())
}

async fn create_volume(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<CreateVolume>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    let created = blocking(move || match &body.source {
        None => engine.create_volume(&id, body.window_secs),
        Some(source) => engine.create_clone(&id, body.window_secs, source),
    });
    Ok(Json(created.await?).into_response())
}

async fn modify_volume(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ModifyVolume>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    Ok(Json(blocking(move || engine.modify_volume(&id, body.window_secs)).await?).into_response())
}

async fn set_access(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<VolumeAccess>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    blocking(move || engine.set_access(&id, body)).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn delete_volume(State(node): State<Node>, Path(id): Path<String>) -> Result<Response> {
    let engine = node.engine.clone();
    blocking(move || engine.delete_volume(&id)).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn backtrack(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<BacktrackRequest>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    Ok(Json(blocking(move || engine.backtrack(&id, &body)).await?).into_response())
}

async fn execute(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<ExecuteRequest>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    Ok(Json(blocking(move || engine.execute(&id, &body)).await?).into_response())
}

async fn preview(
    State(node): State<Node>,
    Path(id): Path<String>,
    body: std::result::Result<Json<PreviewRequest>, JsonRejection>,
) -> Result<Response> {
    let Json(body) = body?;
    let engine = node.engine.clone();
    let preview = blocking(move || engine.preview(&id, body.to_us, body.include_rows)).await?;
    Ok(Json(preview).into_response())
}

async fn begin(State(node): State<Node>, Path(id): Path<String>) -> Result<Response> {
    let engine = node.engine.clone();
    let transaction_id = blocking(move || engine.begin(&id)).await?;
    Ok(Json(TransactionStarted { transaction_id }).into_response())
}

async fn commit(
    State(node): State<Node>,
    Path((id, tx)): Path<(String, String)>,
) -> Result<Response> {
    let engine = node.engine.clone();
    blocking(move || engine.commit(&id, &tx)).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

async fn rollback(
    State(node): State<Node>,
    Path((id, tx)): Path<(String, String)>,
) -> Result<Response> {
    let engine = node.engine.clone();
    blocking(move || engine.rollback(&id, &tx)).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

/// Prometheus text format: the node's log and each volume's figures.
async fn metrics(State(node): State<Node>) -> Response {
    let (engine, metrics) = (node.engine.clone(), node.metrics.clone());
    let text = tokio::task::spawn_blocking(move || metrics.render(&engine))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, crate::metrics::content_type())],
        text,
    )
        .into_response()
}
