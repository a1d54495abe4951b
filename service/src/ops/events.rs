//! DescribeEvents: what happened to clusters and their backtracks, including the backtrack
//! window alerts RDS-EVENT-0131 and RDS-EVENT-0132, oldest first, a page at a time.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{list, one, time_param, Ops};
use crate::domain::paging::Page;
use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::events::{CATEGORIES, RETENTION_DAYS, SOURCE_TYPE};
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

/// DescribeEventCategories: the categories of each source type's events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventCategoriesMessage {
    #[serde(rename = "EventCategoriesMapList")]
    pub event_categories_map_list: Vec<EventCategoriesMap>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventCategoriesMap {
    #[serde(rename = "SourceType")]
    pub source_type: String,
    #[serde(rename = "EventCategories")]
    pub event_categories: Vec<String>,
}

/// Query parameters of DescribeEvents.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DescribeEventsParams {
    /// Events of one source; needs SourceType.
    #[serde(rename = "SourceIdentifier", default, deserialize_with = "one")]
    pub source_identifier: Option<String>,
    /// `db-cluster` (the other RDS source types are accepted and have no events here).
    #[serde(rename = "SourceType", default, deserialize_with = "one")]
    #[param(
        pattern = "^(db-instance|db-parameter-group|db-security-group|db-snapshot|db-cluster|db-cluster-snapshot|custom-engine-version|db-proxy|blue-green-deployment|db-shard-group|zero-etl)$"
    )]
    pub source_type: Option<String>,
    /// Start of the period (ISO 8601); default: EndTime minus Duration.
    #[serde(rename = "StartTime", default, deserialize_with = "one")]
    #[param(format = DateTime)]
    pub start_time: Option<String>,
    /// End of the period (ISO 8601); default: now.
    #[serde(rename = "EndTime", default, deserialize_with = "one")]
    #[param(format = DateTime)]
    pub end_time: Option<String>,
    /// Length of the period in minutes when StartTime is not given (default 60).
    #[serde(rename = "Duration", default, deserialize_with = "one")]
    #[param(value_type = Option<i64>, minimum = 1, maximum = 20160)]
    pub duration: Option<String>,
    /// Categories (`backtrack`, `creation`, `configuration change`, `deletion`), repeated or
    /// comma-separated.
    #[serde(rename = "EventCategories", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub event_categories: Vec<String>,
    /// Page size, 20..=100 (default 100).
    #[serde(rename = "MaxRecords", default, deserialize_with = "one")]
    #[param(value_type = Option<i64>, minimum = 20, maximum = 100)]
    pub max_records: Option<String>,
    #[serde(rename = "Marker", default, deserialize_with = "one")]
    pub marker: Option<String>,
}

impl Ops {
    /// DescribeEventCategories: events here come from clusters; other source types have none.
    pub fn event_categories(
        &self,
        source_type: Option<&str>,
    ) -> Result<EventCategoriesMessage, ApiError> {
        if let Some(t) = source_type {
            check_source_type(t)?;
        }
        let map = (source_type.unwrap_or(SOURCE_TYPE) == SOURCE_TYPE).then(|| EventCategoriesMap {
            source_type: SOURCE_TYPE.to_string(),
            event_categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
        });
        Ok(EventCategoriesMessage {
            event_categories_map_list: map.into_iter().collect(),
        })
    }

    /// DescribeEvents: events of the period (the past hour by default), oldest first. Events
    /// are kept 14 days.
    pub async fn describe_events(
        &self,
        params: DescribeEventsParams,
    ) -> Result<EventsMessage, ApiError> {
        if let Some(t) = &params.source_type {
            check_source_type(t)?;
        }
        let source_identifier = params
            .source_identifier
            .as_deref()
            .map(str::to_ascii_lowercase);
        if source_identifier.is_some() && params.source_type.is_none() {
            return Err(ApiError::InvalidParameterCombination(
                "Cannot specify source identifier without source type".into(),
            ));
        }
        let (start, end) = period(&params)?;
        let page = Page::<(i64, String)>::parse(
            "events",
            params.max_records.as_deref(),
            params.marker.as_deref(),
        )
        .map_err(ApiError::InvalidParameterValue)?;
        let filter = EventFilter {
            source_type: params.source_type,
            source_identifier,
            start: Some(start),
            end: Some(end),
            categories: params.event_categories,
        };
        let events = self
            .store
            .events(&filter, page.after.clone(), page.fetch())
            .await?;
        let page = page.finish(events, |e| (e.date.as_micros(), e.id.clone()));
        Ok(EventsMessage {
            events: page.items.into_iter().map(event_result).collect(),
            marker: page.marker,
        })
    }
}

fn check_source_type(t: &str) -> Result<(), ApiError> {
    if SOURCE_TYPES.contains(&t) {
        return Ok(());
    }
    Err(ApiError::InvalidParameterValue(format!(
        "Unknown SourceType {t:?}; use one of {}.",
        SOURCE_TYPES.join(", ")
    )))
}

/// The period asked for: `EndTime` (default now) and either `StartTime` or `Duration`
/// minutes before the end (default 60).
fn period(params: &DescribeEventsParams) -> Result<(Timestamp, Timestamp), ApiError> {
    let end = time_param("EndTime", params.end_time.as_deref())?.unwrap_or_else(Timestamp::now);
    let duration = params
        .duration
        .as_deref()
        .map(|v| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::InvalidParameterValue(format!("Duration must be an integer, not {v:?}."))
            })
        })
        .transpose()?;
    let start = match (
        time_param("StartTime", params.start_time.as_deref())?,
        duration,
    ) {
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
    Ok((start, end))
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
