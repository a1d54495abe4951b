//! Metrics. `/metrics` serves Prometheus text (format 0.0.4) from the process's one registry:
//! the service's own (requests and latencies by route, as counters and real histograms;
//! backtrack jobs by state and clusters by status) and, per cluster, the CloudWatch backtrack
//! metrics from the meter's samples. `GET /v1/clusters/{id}/metrics` serves the same backtrack
//! metrics for one cluster, named and unitised as CloudWatch names them.
//!
//! The registry is the `prometheus` crate's: its text encoder writes the Prometheus text
//! format (a counter's family keeps its `_total` name) that scrapers and our tests read;
//! prometheus-client writes OpenMetrics instead.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::{json, AppState};
use crate::domain::{BacktrackStatus, ClusterStatus, Timestamp};
use crate::error::{ApiError, ErrorResponse};
use crate::http::clusters::ClusterRef;
use crate::ops::metrics::{cluster_metrics, ClusterMetrics, ClusterMetricsResult, PERIOD_SECS};
use crate::ops::Ops;
use crate::store::{MeterSample, StoreError};
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A per-cluster gauge and how to read it from the cluster's metrics.
type ClusterGauge = (GaugeVec, fn(&ClusterMetrics) -> f64);

/// The process's metrics: the request counters and histograms the middleware keeps, and the
/// gauges a scrape sets from the store.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    jobs: IntGaugeVec,
    clusters: IntGaugeVec,
    per_cluster: [ClusterGauge; 4],
    /// One scrape at a time: each resets the scrape-time gauges and sets them again.
    scraping: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("backtrack_http_requests_total", "HTTP requests served."),
            &["method", "route", "status"],
        )
        .expect("a valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "backtrack_http_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(BUCKETS.to_vec()),
            &["method", "route"],
        )
        .expect("a valid metric");
        let jobs = IntGaugeVec::new(
            Opts::new("backtrack_jobs", "Backtrack jobs by state."),
            &["state"],
        )
        .expect("a valid metric");
        let clusters = IntGaugeVec::new(
            Opts::new("backtrack_clusters", "Clusters by status."),
            &["status"],
        )
        .expect("a valid metric");
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["cluster"]).expect("a valid metric")
        };
        let per_cluster: [ClusterGauge; 4] = [
            (gauge("backtrack_change_records_creation_rate", "BacktrackChangeRecordsCreationRate: change records created per 5 minutes."), |m| m.creation_rate),
            (gauge("backtrack_change_records_stored", "BacktrackChangeRecordsStored: change records stored (billed)."), |m| m.stored as f64),
            (gauge("backtrack_window_actual_minutes", "BacktrackWindowActual: the window that can really be rewound, in minutes."), |m| m.window_actual_minutes),
            (gauge("backtrack_window_alert", "BacktrackWindowAlert: samples in the last 5 minutes whose actual window was below target."), |m| m.window_alerts as f64),
        ];
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(jobs.clone()),
            Box::new(clusters.clone()),
        ]
        .into_iter()
        .chain(
            per_cluster
                .iter()
                .map(|(g, _)| Box::new(g.clone()) as Box<dyn prometheus::core::Collector>),
        ) {
            registry
                .register(collector)
                .expect("metric names are distinct");
        }
        Metrics {
            registry,
            requests,
            latency,
            jobs,
            clusters,
            per_cluster,
            scraping: tokio::sync::Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Sets the scrape-time gauges from the store and encodes the whole registry.
    async fn render(&self, state: &AppState) -> Result<String, StoreError> {
        let _one_scrape = self.scraping.lock().await;
        // Every state is shown, at 0 when no job or cluster is in it.
        self.jobs.reset();
        for status in BacktrackStatus::ALL {
            self.jobs.with_label_values(&[status.as_str()]).set(0);
        }
        for (name, count) in state.ops.store.count_by_status("backtracks").await? {
            self.jobs.with_label_values(&[name.as_str()]).set(count);
        }
        self.clusters.reset();
        for status in ClusterStatus::ALL {
            self.clusters.with_label_values(&[status.as_str()]).set(0);
        }
        for (status, count) in state.ops.store.count_by_status("clusters").await? {
            self.clusters
                .with_label_values(&[status.as_str()])
                .set(count);
        }
        let since = Timestamp::now().plus_secs(-PERIOD_SECS);
        let mut by_cluster: BTreeMap<String, Vec<MeterSample>> = BTreeMap::new();
        for sample in state.ops.store.all_samples_since(since).await? {
            by_cluster
                .entry(sample.cluster_id.clone())
                .or_default()
                .push(sample);
        }
        for (gauge, _) in &self.per_cluster {
            gauge.reset();
        }
        for (cluster, samples) in &by_cluster {
            if let Some(m) = cluster_metrics(samples) {
                for (gauge, value) in &self.per_cluster {
                    gauge.with_label_values(&[cluster.as_str()]).set(value(&m));
                }
            }
        }
        Ok(encode(&self.registry))
    }
}

/// A registry in the Prometheus text format.
fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding of registered metrics");
    String::from_utf8(out).expect("the text format is UTF-8")
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
    let metrics = &state.metrics;
    metrics
        .requests
        .with_label_values(&[method.as_str(), route.as_str(), response.status().as_str()])
        .inc();
    metrics
        .latency
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
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
pub async fn cluster(State(ops): State<Ops>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let body: ClusterMetricsResult = ops.cluster_metrics(&id).await?;
    Ok(json(StatusCode::OK, &body))
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.metrics.render(&state).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_string(),
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.clusters.with_label_values(&["a\"b\\c\nd"]).set(1);
        let text = encode(&metrics.registry);
        assert!(
            text.contains("backtrack_clusters{status=\"a\\\"b\\\\c\\nd\"} 1"),
            "{text}"
        );
    }
}
