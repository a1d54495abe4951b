//! Liveness, readiness, and the API's own description: the OpenAPI document and an
//! interactive page that renders it.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{json, AppState};
use crate::error::{ApiError, ErrorResponse};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`.
    pub status: String,
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "Alive", body = HealthStatus)))]
pub async fn healthz() -> Response {
    json(
        StatusCode::OK,
        &HealthStatus {
            status: "ok".into(),
        },
    )
}

/// Readiness: the metadata database answers.
#[utoipa::path(
    get, path = "/readyz", tag = "service",
    responses((status = 200, description = "Ready", body = HealthStatus), (status = 503, description = "ServiceUnavailable", body = ErrorResponse))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.ops.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::Unavailable("The metadata database does not answer.".into())
    })?;
    Ok(json(
        StatusCode::OK,
        &HealthStatus {
            status: "ok".into(),
        },
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

/// An interactive page for the API (Swagger UI, loaded by the browser from a CDN).
#[utoipa::path(get, path = "/docs", tag = "service", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Backtrack API</title>
  <link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <div id="ui"><p style="font-family: sans-serif; margin: 2em">
    Loading the interactive documentation. Without network access to cdn.jsdelivr.net, read the
    raw document at <a href="/openapi.json">/openapi.json</a>.</p></div>
  <script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#ui", tryItOutEnabled: true });
  </script>
</body>
</html>
"##;
