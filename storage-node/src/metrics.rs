//! The node's `/metrics`: Prometheus text (format 0.0.4) from one registry: the log's counters
//! and state, and each volume's figures, set from the engine at every scrape (one scrape at a
//! time). The registry is the `prometheus` crate's, as the control plane's is.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Counter, Encoder, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::api::VolumeFigures;
use crate::engine::log::LogError;
use crate::engine::Engine;

/// The content type of the text the node serves.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_string()
}

/// A per-volume gauge and how to read it from the volume's figures.
type VolumeGauge = (GaugeVec, fn(&VolumeFigures) -> f64);

pub struct NodeMetrics {
    registry: Registry,
    log_bytes: IntGauge,
    log_segments: IntGauge,
    log_records: IntCounter,
    log_syncs: IntCounter,
    log_flush_seconds: Counter,
    log_failed: IntGauge,
    disk_full: IntGauge,
    volumes: IntGauge,
    records_created: IntCounterVec,
    per_volume: Vec<VolumeGauge>,
    /// One scrape at a time: each sets every value from the engine, then encodes.
    scraping: Mutex<()>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("a valid metric");
        let per_volume = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["volume"]).expect("a valid metric")
        };
        let metrics = NodeMetrics {
            registry: Registry::new(),
            log_bytes: gauge("backtrack_node_log_bytes", "Bytes in the change log."),
            log_segments: gauge("backtrack_node_log_segments", "Segments in the change log."),
            log_records: counter("backtrack_node_log_records_total", "Records appended to the log."),
            log_syncs: counter(
                "backtrack_node_log_syncs_total",
                "Durable writes of the log (group commits): direct synchronous writes, or fdatasync.",
            ),
            log_flush_seconds: Counter::new(
                "backtrack_node_log_flush_seconds_total",
                "Time spent making group commits durable.",
            )
            .expect("a valid metric"),
            log_failed: gauge(
                "backtrack_node_log_failed",
                "1 while writes to the log fail (they are retried; see backtrack_node_disk_full).",
            ),
            disk_full: gauge(
                "backtrack_node_disk_full",
                "1 while the log's disk is full: commits fail until space is freed.",
            ),
            volumes: gauge("backtrack_node_volumes", "Volumes on this node."),
            records_created: IntCounterVec::new(
                Opts::new(
                    "backtrack_volume_change_records_created_total",
                    "Change records (page versions) written by commits.",
                ),
                &["volume"],
            )
            .expect("a valid metric"),
            per_volume: vec![
                (per_volume("backtrack_volume_change_records_stored", "Change records retained for the backtrack window."), |v| v.change_records_stored as f64),
                (per_volume("backtrack_volume_window_seconds", "Target backtrack window."), |v| v.window_secs as f64),
                (per_volume("backtrack_volume_actual_window_seconds", "Backtrack window the volume can really rewind."), |v| v.actual_window_secs as f64),
                (per_volume("backtrack_volume_bytes_on_disk", "Bytes of log and base image held for the volume."), |v| v.bytes_on_disk as f64),
                (per_volume("backtrack_volume_open_transactions", "Open transactions."), |v| f64::from(v.open_transactions)),
            ],
            scraping: Mutex::new(()),
        };
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.log_bytes.clone()),
            Box::new(metrics.log_segments.clone()),
            Box::new(metrics.log_records.clone()),
            Box::new(metrics.log_syncs.clone()),
            Box::new(metrics.log_flush_seconds.clone()),
            Box::new(metrics.log_failed.clone()),
            Box::new(metrics.disk_full.clone()),
            Box::new(metrics.volumes.clone()),
            Box::new(metrics.records_created.clone()),
        ];
        collectors.extend(
            metrics
                .per_volume
                .iter()
                .map(|(g, _)| Box::new(g.clone()) as Box<dyn Collector>),
        );
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("metric names are distinct");
        }
        metrics
    }
}

impl NodeMetrics {
    /// Sets every value from the engine and encodes the registry.
    pub fn render(&self, engine: &Engine) -> String {
        let _one_scrape = self.scraping.lock().unwrap();
        let log = engine.log();
        let stats = log.stats();
        self.log_bytes.set(log.total_bytes() as i64);
        self.log_segments.set(log.segments().len() as i64);
        // The engine keeps the counts; the counters show them.
        for (counter, value) in [
            (&self.log_records, stats.records.load(Ordering::Relaxed)),
            (&self.log_syncs, stats.syncs.load(Ordering::Relaxed)),
        ] {
            counter.reset();
            counter.inc_by(value);
        }
        self.log_flush_seconds.reset();
        self.log_flush_seconds
            .inc_by(stats.flush_ns.load(Ordering::Relaxed) as f64 / 1e9);
        let failure = log.failure();
        self.log_failed.set(i64::from(failure.is_some()));
        self.disk_full
            .set(i64::from(matches!(failure, Some(LogError::DiskFull(_)))));
        let volumes = engine.all_figures();
        self.volumes.set(volumes.len() as i64);
        self.records_created.reset();
        for (gauge, _) in &self.per_volume {
            gauge.reset();
        }
        for v in &volumes {
            let id = v.volume_id.as_str();
            self.records_created
                .with_label_values(&[id])
                .inc_by(v.change_records_created);
            for (gauge, value) in &self.per_volume {
                gauge.with_label_values(&[id]).set(value(v));
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of registered metrics");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
