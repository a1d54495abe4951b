//! DescribeEvents: what happened to clusters and their backtracks, including the backtrack
//! window alerts RDS-EVENT-0131 and RDS-EVENT-0132, oldest first, a page at a time.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{json, AppState, QueryParams};
use crate::domain::paging::{decode_marker, encode_marker, validate_max_records};
use crate::domain::Timestamp;
use crate::error::{ApiError, ErrorResponse};
use crate::events::RETENTION_DAYS;
use crate::store::{Event, EventFilter};

/// RDS's source types; events here come from `db-cluster`.
const SOURCE_TYPES: [&str; 11] = [
    "db-instance",
    "db-parameter-group",
    "db-security-group",
    "db-snapshot",
    "db-cluster",
    "db-cluster-snapshot",
    "custom-engine-version",
    "db-proxy",
    "blue-green-deployment",
    "db-shard-group",
    "zero-etl",
];

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventResult {
    #[serde(rename = "SourceIdentifier")]
    pub source_identifier: String,
    #[serde(rename = "SourceType")]
    pub source_type: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "EventCategories")]
    pub event_categories: Vec<String>,
    #[serde(rename = "Date")]
    #[schema(value_type = String, format = DateTime)]
    pub date: Timestamp,
    #[serde(rename = "SourceArn")]
    pub source_arn: String,
    /// The RDS event id where RDS defines one (RDS-EVENT-0131, RDS-EVENT-0132); not an RDS
    /// member of `Event`, which has none.
    #[serde(rename = "EventId", skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventsMessage {
    #[serde(rename = "Events")]
    pub events: Vec<EventResult>,
    #[serde(rename = "Marker", skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// Query parameters of DescribeEvents.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct DescribeEventsParams {
    /// Events of one source; needs SourceType.
    SourceIdentifier: Option<String>,
    /// `db-cluster` (the other RDS source types are accepted and have no events here).
    #[param(
        pattern = "^(db-instance|db-parameter-group|db-security-group|db-snapshot|db-cluster|db-cluster-snapshot|custom-engine-version|db-proxy|blue-green-deployment|db-shard-group|zero-etl)$"
    )]
    SourceType: Option<String>,
    /// Start of the period (ISO 8601); default: EndTime minus Duration.
    #[param(format = DateTime)]
    StartTime: Option<String>,
    /// End of the period (ISO 8601); default: now.
    #[param(format = DateTime)]
    EndTime: Option<String>,
    /// Length of the period in minutes when StartTime is not given (default 60).
    #[param(minimum = 1, maximum = 20160)]
    Duration: Option<i64>,
    /// Categories (`backtrack`, `creation`, `configuration change`, `deletion`), repeated or
    /// comma-separated.
    EventCategories: Option<Vec<String>>,
    /// Page size, 20..=100 (default 100).
    #[param(minimum = 20, maximum = 100)]
    MaxRecords: Option<i64>,
    Marker: Option<String>,
}

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
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(
        query.as_deref(),
        &[
            "SourceIdentifier",
            "SourceType",
            "StartTime",
            "EndTime",
            "Duration",
            "EventCategories",
            "MaxRecords",
            "Marker",
        ],
    )?;
    let source_type = params.one("SourceType")?.map(str::to_string);
    if let Some(t) = &source_type {
        if !SOURCE_TYPES.contains(&t.as_str()) {
            return Err(ApiError::InvalidParameterValue(format!(
                "Unknown SourceType {t:?}; use one of {}.",
                SOURCE_TYPES.join(", ")
            )));
        }
    }
    let source_identifier = params
        .one("SourceIdentifier")?
        .map(|s| s.to_ascii_lowercase());
    if source_identifier.is_some() && source_type.is_none() {
        return Err(ApiError::InvalidParameterCombination(
            "Cannot specify source identifier without source type".into(),
        ));
    }
    let time = |name: &str| -> Result<Option<Timestamp>, ApiError> {
        params
            .one(name)?
            .map(|t| {
                Timestamp::parse(t)
                    .map_err(|e| ApiError::InvalidParameterValue(format!("{name}: {e}")))
            })
            .transpose()
    };
    let now = Timestamp::now();
    let end = time("EndTime")?.unwrap_or(now);
    let start = match (time("StartTime")?, params.integer("Duration")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidParameterCombination(
                "Specify StartTime or Duration, not both.".into(),
            ))
        }
        (Some(start), None) => start,
        (None, Some(minutes)) if (1..=RETENTION_DAYS * 24 * 60).contains(&minutes) => {
            end.plus_secs(-minutes * 60)
        }
        (None, Some(minutes)) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "Duration {minutes} is not between 1 and {} minutes.",
                RETENTION_DAYS * 24 * 60
            )))
        }
        (None, None) => end.plus_secs(-3600),
    };
    if start > end {
        return Err(ApiError::InvalidParameterValue(
            "StartTime is after EndTime.".into(),
        ));
    }
    let limit = validate_max_records(params.integer("MaxRecords")?)
        .map_err(ApiError::InvalidParameterValue)?;
    let after = params
        .one("Marker")?
        .map(|m| decode_marker::<(i64, String)>("events", m))
        .transpose()
        .map_err(ApiError::InvalidParameterValue)?;
    let filter = EventFilter {
        source_type,
        source_identifier,
        start: Some(start),
        end: Some(end),
        categories: params.all("EventCategories"),
    };
    let mut events = state.store.events(&filter, after, limit + 1).await?;
    let marker = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events
            .last()
            .map(|e| encode_marker("events", &(e.date.as_micros(), e.id.clone())))
    } else {
        None
    };
    let body = EventsMessage {
        events: events.into_iter().map(event_result).collect(),
        marker,
    };
    Ok(json(StatusCode::OK, &body))
}

fn event_result(e: Event) -> EventResult {
    EventResult {
        source_identifier: e.source_identifier,
        source_type: e.source_type,
        message: e.message,
        event_categories: e.categories,
        date: e.date,
        source_arn: e.source_arn,
        event_id: e.event_code,
    }
}
