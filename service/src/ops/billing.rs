//! Usage and cost of backtrack change records: hourly line items per cluster (usage type
//! BacktrackUsage, unit CR-Hr) with exact totals, and a projection of the monthly cost at the
//! current rate of change and target window. Quantities and amounts are decimal strings,
//! exact to 12 places (TotalCostRounded is rounded to cents).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{one, time_param, Ops};
use crate::billing::{cost, cr_hours, project, Money, Projection, HOUR_US};
use crate::domain::{Cluster, Timestamp};
use crate::error::ApiError;
use crate::jobs::metering::all_clusters;

const USAGE_TYPE: &str = "BacktrackUsage";
const UNIT: &str = "CR-Hr";

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LineItem {
    #[serde(rename = "DBClusterIdentifier")]
    pub db_cluster_identifier: String,
    #[serde(rename = "DbClusterResourceId")]
    pub db_cluster_resource_id: String,
    #[serde(rename = "UsageStartTime")]
    #[schema(value_type = String, format = DateTime)]
    pub usage_start_time: Timestamp,
    #[serde(rename = "UsageEndTime")]
    #[schema(value_type = String, format = DateTime)]
    pub usage_end_time: Timestamp,
    #[serde(rename = "UsageType")]
    pub usage_type: String,
    #[serde(rename = "Unit")]
    pub unit: String,
    /// Change-record-hours, exact.
    #[serde(rename = "UsageQuantity")]
    pub usage_quantity: String,
    #[serde(rename = "Cost")]
    pub cost: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CostProjection {
    /// Change records created per hour, measured over the last hour of samples.
    #[serde(rename = "ChangeRecordsCreatedPerHour")]
    pub change_records_created_per_hour: String,
    /// Records a full target window keeps at that rate.
    #[serde(rename = "ProjectedChangeRecordsStored")]
    pub projected_change_records_stored: String,
    /// Change-record-hours in a month of 730 hours.
    #[serde(rename = "ProjectedMonthlyUsageQuantity")]
    pub projected_monthly_usage_quantity: String,
    #[serde(rename = "ProjectedMonthlyCost")]
    pub projected_monthly_cost: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BillingReport {
    #[serde(rename = "StartTime")]
    #[schema(value_type = String, format = DateTime)]
    pub start_time: Timestamp,
    #[serde(rename = "EndTime")]
    #[schema(value_type = String, format = DateTime)]
    pub end_time: Timestamp,
    #[serde(rename = "Currency")]
    pub currency: String,
    #[serde(rename = "UsageType")]
    pub usage_type: String,
    #[serde(rename = "Unit")]
    pub unit: String,
    #[serde(rename = "PricePerMillion")]
    pub price_per_million: String,
    /// One item per cluster and hour with usage, in time order.
    #[serde(rename = "LineItems")]
    pub line_items: Vec<LineItem>,
    #[serde(rename = "TotalUsageQuantity")]
    pub total_usage_quantity: String,
    #[serde(rename = "TotalCost")]
    pub total_cost: String,
    #[serde(rename = "TotalCostRounded")]
    pub total_cost_rounded: String,
    #[serde(rename = "Projection")]
    pub projection: CostProjection,
    /// For one cluster: when its metering began and its last sample; usage is exact between.
    #[serde(rename = "MeteringStartTime", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub metering_start_time: Option<Timestamp>,
    #[serde(rename = "LastSampleTime", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_sample_time: Option<Timestamp>,
}

/// Query parameters of the billing reports.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BillingParams {
    /// Start of the period (ISO 8601); default: the start of the current month (UTC). Hours
    /// that overlap the period are included whole.
    #[serde(rename = "StartTime", default, deserialize_with = "one")]
    #[param(format = DateTime)]
    pub start_time: Option<String>,
    /// End of the period (ISO 8601); default: now.
    #[serde(rename = "EndTime", default, deserialize_with = "one")]
    #[param(format = DateTime)]
    pub end_time: Option<String>,
}

/// The period asked for: `EndTime` (default now) back to `StartTime` (default the start of
/// the end's month).
fn period(params: &BillingParams) -> Result<(Timestamp, Timestamp), ApiError> {
    let end = time_param("EndTime", params.end_time.as_deref())?.unwrap_or_else(Timestamp::now);
    let start = match time_param("StartTime", params.start_time.as_deref())? {
        Some(start) => start,
        None => month_start(end),
    };
    if start >= end {
        return Err(ApiError::InvalidParameterValue(
            "StartTime must be before EndTime.".into(),
        ));
    }
    Ok((start, end))
}

/// The first instant of `at`'s month, UTC.
fn month_start(at: Timestamp) -> Timestamp {
    let text = at.to_string();
    Timestamp::parse(&format!("{}-01T00:00:00Z", &text[..7])).expect("a month's first day parses")
}

impl Ops {
    /// The report of every cluster (`named` is `None`) or of one.
    pub async fn billing_report(
        &self,
        named: Option<&str>,
        params: BillingParams,
    ) -> Result<BillingReport, ApiError> {
        let (start, end) = period(&params)?;
        match named {
            Some(named) => {
                let cluster = self.cluster(named).await?;
                self.report(start, end, Some(&cluster), std::slice::from_ref(&cluster))
                    .await
            }
            None => {
                let clusters = all_clusters(&self.store).await?;
                self.report(start, end, None, &clusters).await
            }
        }
    }

    async fn report(
        &self,
        start: Timestamp,
        end: Timestamp,
        one: Option<&Cluster>,
        clusters: &[Cluster],
    ) -> Result<BillingReport, ApiError> {
        let price = self.settings.price_per_million;
        let rows = self
            .store
            .usage(start, end, one.map(|c| c.resource_id.as_str()))
            .await?;
        let mut total_units = 0i128;
        let mut total_cost = Money::ZERO;
        let line_items = rows
            .into_iter()
            .map(|row| {
                let item_cost = cost(row.units, price);
                total_units += row.units;
                total_cost += item_cost;
                LineItem {
                    db_cluster_identifier: row.cluster_id,
                    db_cluster_resource_id: row.resource_id,
                    usage_start_time: row.hour_start,
                    usage_end_time: row.hour_start.plus_millis(HOUR_US / 1000),
                    usage_type: USAGE_TYPE.into(),
                    unit: UNIT.into(),
                    usage_quantity: cr_hours(row.units).to_string(),
                    cost: item_cost.to_string(),
                }
            })
            .collect();
        // The projection sums each cluster's, over the last hour of samples.
        let since = Timestamp::now().plus_secs(-3600);
        let mut sum = Projection::default();
        for cluster in clusters {
            let samples = self
                .store
                .samples_since(&cluster.resource_id, since)
                .await?;
            let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
                continue;
            };
            let p = project(
                last.created - first.created,
                last.at.as_micros() - first.at.as_micros(),
                cluster.backtrack_window,
                price,
            );
            sum += p;
        }
        let meter = match one {
            Some(cluster) => self.store.meter_state(&cluster.resource_id).await?,
            None => None,
        };
        let body = BillingReport {
            start_time: start,
            end_time: end,
            currency: self.settings.currency.clone(),
            usage_type: USAGE_TYPE.into(),
            unit: UNIT.into(),
            price_per_million: price.to_string(),
            line_items,
            total_usage_quantity: cr_hours(total_units).to_string(),
            total_cost: total_cost.to_string(),
            total_cost_rounded: total_cost.rounded(2),
            projection: CostProjection {
                change_records_created_per_hour: sum.created_per_hour.rounded(2),
                projected_change_records_stored: sum.stored.rounded(0),
                projected_monthly_usage_quantity: sum.monthly_cr_hours.rounded(2),
                projected_monthly_cost: sum.monthly_cost.rounded(2),
            },
            metering_start_time: meter.as_ref().map(|m| m.first_sampled_at),
            last_sample_time: meter.as_ref().map(|m| m.sampled_at),
        };
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_starts_on_its_first_day() {
        let at = Timestamp::parse("2026-11-23T18:05:00.123Z").unwrap();
        assert_eq!(month_start(at).to_string(), "2026-11-01T00:00:00.000Z");
    }
}
