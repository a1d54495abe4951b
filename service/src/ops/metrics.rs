//! A cluster's backtrack metrics, as CloudWatch names and unitises them, from the meter's
//! samples of the last period.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Ops;
use crate::domain::Timestamp;
use crate::error::ApiError;
use crate::store::MeterSample;

/// The period of the backtrack metrics, as CloudWatch reports them: 5 minutes.
pub const PERIOD_SECS: i64 = 300;

/// A cluster's backtrack metrics over the last period.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetrics {
    pub at: Timestamp,
    /// Change records created in the period (scaled to the full period).
    pub creation_rate: f64,
    pub stored: i64,
    pub window_actual_minutes: f64,
    /// Samples in the period whose actual window was below target.
    pub window_alerts: u64,
}

/// The metrics from a cluster's samples of the last period, oldest first.
pub fn cluster_metrics(samples: &[MeterSample]) -> Option<ClusterMetrics> {
    let (first, last) = (samples.first()?, samples.last()?);
    let elapsed = last.at.as_micros() - first.at.as_micros();
    let creation_rate = if elapsed > 0 {
        (last.created - first.created) as f64 * (PERIOD_SECS * 1_000_000) as f64 / elapsed as f64
    } else {
        0.0
    };
    Some(ClusterMetrics {
        at: last.at,
        creation_rate,
        stored: last.stored,
        window_actual_minutes: last.actual_secs as f64 / 60.0,
        window_alerts: samples
            .iter()
            .filter(|s| s.window_secs > 0 && s.actual_secs < s.window_secs)
            .count() as u64,
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Datapoint {
    #[serde(rename = "MetricName")]
    pub metric_name: String,
    #[serde(rename = "Unit")]
    pub unit: String,
    #[serde(rename = "Value")]
    pub value: f64,
    #[serde(rename = "Timestamp")]
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterMetricsResult {
    #[serde(rename = "DBClusterIdentifier")]
    pub db_cluster_identifier: String,
    /// Seconds each metric covers.
    #[serde(rename = "Period")]
    pub period: i64,
    /// Empty until the meter has sampled the cluster.
    #[serde(rename = "Metrics")]
    pub metrics: Vec<Datapoint>,
}

impl Ops {
    /// BacktrackChangeRecordsCreationRate, BacktrackChangeRecordsStored,
    /// BacktrackWindowActual and BacktrackWindowAlert of one cluster over the last period;
    /// none until the meter has sampled it.
    pub async fn cluster_metrics(&self, named: &str) -> Result<ClusterMetricsResult, ApiError> {
        let cluster = self.cluster(named).await?;
        let since = Timestamp::now().plus_secs(-PERIOD_SECS);
        let samples = self
            .store
            .samples_since(&cluster.resource_id, since)
            .await?;
        let metrics = cluster_metrics(&samples)
            .map(|m| {
                [
                    (
                        "BacktrackChangeRecordsCreationRate",
                        "Count",
                        m.creation_rate,
                    ),
                    ("BacktrackChangeRecordsStored", "Count", m.stored as f64),
                    ("BacktrackWindowActual", "Minutes", m.window_actual_minutes),
                    ("BacktrackWindowAlert", "Count", m.window_alerts as f64),
                ]
                .into_iter()
                .map(|(name, unit, value)| Datapoint {
                    metric_name: name.into(),
                    unit: unit.into(),
                    value,
                    timestamp: m.at,
                })
                .collect()
            })
            .unwrap_or_default();
        Ok(ClusterMetricsResult {
            db_cluster_identifier: cluster.id.to_string(),
            period: PERIOD_SECS,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: i64, created: i64, actual: i64) -> MeterSample {
        MeterSample {
            resource_id: "cluster-x".into(),
            cluster_id: "x".into(),
            at: Timestamp::from_micros(seconds * 1_000_000),
            stored: created / 2,
            created,
            window_secs: 600,
            actual_secs: actual,
        }
    }

    #[test]
    fn metrics_come_from_the_periods_samples() {
        let samples = [
            sample(0, 100, 600),
            sample(60, 160, 300),
            sample(150, 250, 600),
        ];
        let m = cluster_metrics(&samples).unwrap();
        // 150 records in 150 s: 300 per 5 minutes.
        assert_eq!(m.creation_rate, 300.0);
        assert_eq!(m.stored, 125);
        assert_eq!(m.window_actual_minutes, 10.0);
        assert_eq!(m.window_alerts, 1);
        assert!(cluster_metrics(&[]).is_none());
    }
}
