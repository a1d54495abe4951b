//! The HTTP API: routes, the tower-http layers around them, and the extractors that turn every
//! malformed request into an RDS-style error (never axum's plain-text rejections).
//!
//! Layers, outermost first: request id (`x-amzn-RequestId`, generated unless the caller sent
//! one), tracing, request-id propagation to the response, error rendering (in the form of the
//! front door the request came through: [`Door`]), the guard (cross-site requests, foreign
//! hosts, oversized heads), timeout, body limit (the configured one: axum's own default limit
//! is off), authentication (SigV4, when access keys are configured).

pub mod auth;
pub mod backtracks;
pub mod billing;
pub mod clusters;
pub mod data_api;
pub mod events;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod query;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::ops::Ops;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");

/// What handlers share: the operations, and the metrics the middleware keeps.
#[derive(Clone)]
pub struct AppState {
    pub ops: Ops,
    pub metrics: Arc<metrics::Metrics>,
}

pub use crate::config::Settings;

impl FromRef<AppState> for Ops {
    fn from_ref(state: &AppState) -> Ops {
        state.ops.clone()
    }
}

pub fn router(
    state: AppState,
    timeout: Duration,
    body_limit: usize,
    guard: guard::Guard,
    auth: Option<auth::Auth>,
) -> Router {
    let api = Router::new()
        .route("/", get(query::handle).post(query::handle))
        .route(
            "/v1/clusters",
            post(clusters::create).get(clusters::describe),
        )
        .route(
            "/v1/clusters/{id}",
            get(clusters::describe_one)
                .patch(clusters::modify)
                .delete(clusters::delete),
        )
        .route("/v1/clusters/{id}/restore", post(clusters::restore))
        .route(
            "/v1/clusters/{id}/backtracks",
            post(backtracks::create).get(backtracks::describe),
        )
        .route(
            "/v1/clusters/{id}/backtracks/preview",
            get(backtracks::preview),
        )
        .route(
            "/v1/clusters/{id}/backtracks/{backtrack_id}",
            get(backtracks::describe_one),
        )
        .route("/v1/clusters/{id}/billing", get(billing::cluster))
        .route("/v1/clusters/{id}/metrics", get(metrics::cluster))
        .route("/v1/billing", get(billing::all))
        .route("/v1/events", get(events::describe))
        .route("/metrics", get(metrics::prometheus))
        .route("/Execute", post(data_api::execute))
        .route("/BatchExecute", post(data_api::batch_execute))
        .route("/BeginTransaction", post(data_api::begin))
        .route("/CommitTransaction", post(data_api::commit))
        .route("/RollbackTransaction", post(data_api::rollback))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(health::openapi_json))
        .route("/docs", get(health::docs))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    // Router::layer wraps from the inside out: the last layer added runs first.
    api.layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(auth, auth::check))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(middleware::from_fn_with_state(guard, guard::check))
        .layer(middleware::from_fn(render_errors))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = Some(request_id(request.headers()))
                .filter(|id| !id.is_empty())
                .unwrap_or("-");
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::UnknownOperation(format!(
        "There is no operation at {} {}.",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}.",
        request.method(),
        request.uri().path()
    ))
}

/// Writes the body of every error response: the `ApiError` a handler returned, or, for
/// responses made by the layers (timeout, body limit), the error their status stands for.
async fn render_errors(request: Request, next: Next) -> Response {
    let request_id = request_id(request.headers()).to_string();
    let door = Door::of(&request);
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if response.status().is_client_error() || response.status().is_server_error() => {
            let is_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            if is_json {
                return response;
            }
            match response.status() {
                StatusCode::REQUEST_TIMEOUT => {
                    ApiError::Timeout("The request took too long and was abandoned.".into())
                }
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body_too_large()),
                status => ApiError::Internal(format!("unexpected {status} from a layer")),
            }
        }
        None => return response,
    };
    let mut rendered = match door {
        Door::DataApi => data_api::DataApiError::from_api(&error).into_response(),
        Door::Query => error_body(&error, query::xml::error(&error, &request_id), "text/xml"),
        Door::Rest => {
            let body = serde_json::to_vec(&error.body(&request_id)).unwrap_or_default();
            error_body(&error, body, "application/json")
        }
    };
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        rendered.headers_mut().insert(REQUEST_ID, id);
    }
    rendered
}

fn error_body(error: &ApiError, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut rendered = Response::new(Body::from(body));
    *rendered.status_mut() = error.parts().1;
    rendered
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    rendered
}

/// The front door a request came through, which decides the form of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The REST API: RDS's JSON error body.
    Rest,
    /// The RDS Data API: `x-amzn-ErrorType` and `{"message"}`.
    DataApi,
    /// The RDS query protocol: `ErrorResponse` XML. Requests to `/`, forms, and anything with
    /// an `Action` parameter (an SDK pointed at a wrong path still gets an error it can read).
    Query,
}

impl Door {
    pub fn of(request: &Request) -> Door {
        let path = request.uri().path();
        if is_data_api(path) {
            return Door::DataApi;
        }
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| {
                v.as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded")
            });
        let has_action = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("Action=")));
        if path == "/" || is_form || has_action {
            Door::Query
        } else {
            Door::Rest
        }
    }
}

/// A JSON request body. Anything but `application/json`, malformed JSON, a missing member, an
/// unknown member or a wrong type becomes an RDS-style error naming the problem.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The body of a request that must be JSON: refused unless sent as `application/json` (a web
/// page cannot send that to another site without the browser asking it first), or if it is
/// over the body limit.
pub async fn json_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "The request body must be JSON, sent with Content-Type: application/json.".into(),
        ));
    }
    read_body(request, state).await
}

/// A request's body, whole: over the body limit is PayloadTooLarge.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(body_too_large())
        } else {
            ApiError::InvalidParameterValue(format!("The request body could not be read: {e}"))
        }
    })
}

/// The request id the request-id layer gave the request (or the caller sent).
pub fn request_id(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn body_too_large() -> String {
    "The request body is larger than this service accepts (--body-limit-bytes).".into()
}

/// The Data API's routes, whose errors have the Data API's form.
pub fn is_data_api(path: &str) -> bool {
    matches!(
        path,
        "/Execute"
            | "/BatchExecute"
            | "/BeginTransaction"
            | "/CommitTransaction"
            | "/RollbackTransaction"
    )
}

/// Whether a body is a JSON object (serde would also read a struct from an array).
pub fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Parses a request body. Whatever serde finds wrong with it (a wrong type, an unknown
/// member) is InvalidParameterValue with serde's words, which name the member; required
/// members are `Option`s that the operation checks, so a missing one is MissingParameter
/// (see [`crate::ops::required`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !is_json_object(bytes) {
        return Err(ApiError::InvalidParameterValue(
            "The request body must be a JSON object.".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            ApiError::InvalidParameterValue(format!("Invalid parameter value: {e}"))
        } else {
            ApiError::InvalidParameterValue(format!("The request body is not valid JSON: {e}"))
        }
    })
}

/// A listing's query parameters, as the operation's input type: unknown names are refused
/// (a typo is never ignored), list members may repeat or be comma-separated
/// ([`crate::ops::list`]), and the others may be given once ([`crate::ops::one`]).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        query(parts.uri.query().unwrap_or_default()).map(Params)
    }
}

fn query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_html_form::from_str(query)
        .map_err(|e| ApiError::InvalidParameterValue(format!("Invalid query parameters: {e}.")))
}

/// Renders a handler's success: the status and the JSON body.
pub fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{list, one, required};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(rename = "Name")]
        name: Option<String>,
        #[serde(rename = "Size", default)]
        size: i64,
    }

    #[test]
    fn json_errors_become_rds_codes() {
        assert!(
            matches!(parse_json::<Sample>(b"{"), Err(ApiError::InvalidParameterValue(m)) if m.contains("not valid JSON"))
        );
        let empty = parse_json::<Sample>(b"{}").unwrap();
        assert!(
            matches!(required(empty.name, "Name"), Err(ApiError::MissingParameter(m)) if m.contains("Name"))
        );
        assert!(
            matches!(parse_json::<Sample>(br#"{"Name":"a","Sise":1}"#), Err(ApiError::InvalidParameterValue(m)) if m.contains("Sise"))
        );
        assert!(matches!(
            parse_json::<Sample>(br#"{"Name":"a","Size":"x"}"#),
            Err(ApiError::InvalidParameterValue(_))
        ));
        assert!(parse_json::<Sample>(br#"{"Name":"a"}"#).is_ok());
    }

    #[test]
    fn errors_take_the_form_of_the_door_a_request_came_through() {
        let door = |method: &str, uri: &str, content_type: Option<&str>| {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some(ct) = content_type {
                request = request.header(header::CONTENT_TYPE, ct);
            }
            Door::of(&request.body(Body::empty()).unwrap())
        };
        assert_eq!(door("POST", "/", None), Door::Query);
        assert_eq!(
            door("GET", "/?Action=DescribeDBClusters", None),
            Door::Query
        );
        assert_eq!(
            door(
                "POST",
                "/elsewhere",
                Some("application/x-www-form-urlencoded")
            ),
            Door::Query
        );
        assert_eq!(door("GET", "/v1/clusters?NoAction=1", None), Door::Rest);
        assert_eq!(
            door("POST", "/v1/clusters", Some("application/json")),
            Door::Rest
        );
        assert_eq!(
            door(
                "POST",
                "/Execute",
                Some("application/x-www-form-urlencoded")
            ),
            Door::DataApi
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listing {
        #[serde(default, deserialize_with = "list")]
        a: Vec<String>,
        #[serde(default, deserialize_with = "one")]
        b: Option<String>,
    }

    #[test]
    fn query_parameters_repeat_split_and_refuse_strangers() {
        let q: Listing = query("a=1,2&a=3&b=x").unwrap();
        assert_eq!(q.a, ["1", "2", "3"]);
        assert_eq!(q.b.as_deref(), Some("x"));
        assert!(query::<Listing>("b=1&b=2").is_err());
        assert!(
            matches!(query::<Listing>("c=1"), Err(ApiError::InvalidParameterValue(m)) if m.contains("`c`"))
        );
        let none: Listing = query("").unwrap();
        assert!(none.a.is_empty() && none.b.is_none());
    }
}
