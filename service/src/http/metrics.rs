//! Metrics. `/metrics` serves Prometheus text: the service's own (requests and latencies by
//! route, backtrack jobs by state, clusters by status) and, per cluster, the CloudWatch
//! backtrack metrics from the meter's samples. `GET /v1/clusters/{id}/metrics` serves the
//! same backtrack metrics for one cluster, named and unitised as CloudWatch names them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::http::clusters::ClusterRef;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::clusters::parse_cluster_ref;
use super::{json, AppState};
use crate::domain::Timestamp;
use crate::error::{ApiError, ErrorResponse};
use crate::store::MeterSample;

/// The period of the backtrack metrics, as CloudWatch reports them: 5 minutes.
const PERIOD_SECS: i64 = 300;
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Requests and their latencies, by method, route and status.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Series>>,
}

/// Middleware: counts each request under the route that matched it (so ids in paths do not
/// multiply the series), and its latency.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let metrics = &state.http_metrics;
    *metrics
        .requests
        .lock()
        .unwrap()
        .entry((method.clone(), route.clone(), response.status().as_u16()))
        .or_default() += 1;
    let mut latency = metrics.latency.lock().unwrap();
    let series = latency.entry((method, route)).or_default();
    series.count += 1;
    series.sum += seconds;
    for (bucket, bound) in series.buckets.iter_mut().zip(BUCKETS) {
        if seconds <= bound {
            *bucket += 1;
        }
    }
    response
}

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

/// A cluster's backtrack metrics (BacktrackChangeRecordsCreationRate,
/// BacktrackChangeRecordsStored, BacktrackWindowActual, BacktrackWindowAlert) over the last
/// 5 minutes.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}/metrics", tag = "metrics", operation_id = "GetClusterBacktrackMetrics",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    responses(
        (status = 200, description = "The cluster's backtrack metrics", body = ClusterMetricsResult),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn cluster(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cluster = state
        .store
        .cluster(&parse_cluster_ref(&state.settings, &id)?)
        .await?;
    let since = Timestamp::now().plus_secs(-PERIOD_SECS);
    let samples = state
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
    let body = ClusterMetricsResult {
        db_cluster_identifier: cluster.id.to_string(),
        period: PERIOD_SECS,
        metrics,
    };
    Ok(json(StatusCode::OK, &body))
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::new();
    {
        let requests = state.http_metrics.requests.lock().unwrap();
        family(
            &mut out,
            "backtrack_http_requests_total",
            "counter",
            "HTTP requests served.",
        );
        for ((method, route, status), count) in requests.iter() {
            let _ = writeln!(
                out,
                "backtrack_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {count}",
                escape(route)
            );
        }
        let latency = state.http_metrics.latency.lock().unwrap();
        family(
            &mut out,
            "backtrack_http_request_duration_seconds",
            "histogram",
            "HTTP request latency.",
        );
        for ((method, route), series) in latency.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (bound, count) in BUCKETS.iter().zip(series.buckets) {
                let _ = writeln!(out, "backtrack_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(
                out,
                "backtrack_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                series.count
            );
            let _ = writeln!(
                out,
                "backtrack_http_request_duration_seconds_sum{{{labels}}} {}",
                series.sum
            );
            let _ = writeln!(
                out,
                "backtrack_http_request_duration_seconds_count{{{labels}}} {}",
                series.count
            );
        }
    }
    family(
        &mut out,
        "backtrack_jobs",
        "gauge",
        "Backtrack jobs by state.",
    );
    for (state_name, count) in state.store.count_by_status("backtracks").await? {
        let _ = writeln!(
            out,
            "backtrack_jobs{{state=\"{}\"}} {count}",
            escape(&state_name)
        );
    }
    family(
        &mut out,
        "backtrack_clusters",
        "gauge",
        "Clusters by status.",
    );
    for (status, count) in state.store.count_by_status("clusters").await? {
        let _ = writeln!(
            out,
            "backtrack_clusters{{status=\"{}\"}} {count}",
            escape(&status)
        );
    }
    let since = Timestamp::now().plus_secs(-PERIOD_SECS);
    let mut by_cluster: BTreeMap<String, Vec<MeterSample>> = BTreeMap::new();
    for sample in state.store.all_samples_since(since).await? {
        by_cluster
            .entry(sample.cluster_id.clone())
            .or_default()
            .push(sample);
    }
    let metrics: Vec<(String, ClusterMetrics)> = by_cluster
        .iter()
        .filter_map(|(cluster, samples)| Some((cluster.clone(), cluster_metrics(samples)?)))
        .collect();
    type Metric = (&'static str, &'static str, fn(&ClusterMetrics) -> f64);
    let per_cluster: [Metric; 4] = [
        ("backtrack_change_records_creation_rate", "BacktrackChangeRecordsCreationRate: change records created per 5 minutes.", |m| m.creation_rate),
        ("backtrack_change_records_stored", "BacktrackChangeRecordsStored: change records stored (billed).", |m| m.stored as f64),
        ("backtrack_window_actual_minutes", "BacktrackWindowActual: the window that can really be rewound, in minutes.", |m| m.window_actual_minutes),
        ("backtrack_window_alert", "BacktrackWindowAlert: samples in the last 5 minutes whose actual window was below target.", |m| m.window_alerts as f64),
    ];
    for (name, help, value) in per_cluster {
        family(&mut out, name, "gauge", help);
        for (cluster, m) in &metrics {
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{}\"}} {}",
                escape(cluster),
                value(m)
            );
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
