//! The REST route of DescribeEvents: parses the query, calls the operation (ops/events.rs)
//! and renders the answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{json, Params};
use crate::error::{ApiError, ErrorResponse};
use crate::ops::events::{DescribeEventsParams, EventsMessage};
use crate::ops::Ops;

/// Lists events (DescribeEvents). Events are kept 14 days; the default period is the past hour.
#[utoipa::path(
    get, path = "/v1/events", tag = "events", operation_id = "DescribeEvents",
    params(DescribeEventsParams),
    responses(
        (status = 200, description = "A page of events, oldest first", body = EventsMessage),
        (status = 400, description = "InvalidParameterValue, InvalidParameterCombination", body = ErrorResponse),
    )
)]
pub async fn describe(
    State(ops): State<Ops>,
    Params(params): Params<DescribeEventsParams>,
) -> Result<Response, ApiError> {
    let body: EventsMessage = ops.describe_events(params).await?;
    Ok(json(StatusCode::OK, &body))
}
