//! The meter: every interval it reads each node's volume figures and records, per cluster, a
//! sample of its stored change records. The store integrates consecutive samples into hourly
//! usage (billing), keeps recent samples (metrics, projections), and tells when a volume's
//! actual window fell below its target or came back (RDS-EVENT-0131 / -0132).
//!
//! A node that cannot be read is simply not sampled this time: the next sample bridges the
//! gap. Several replicas may meter at once; the store counts each interval once.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::Settings;
use crate::domain::{Cluster, Timestamp};
use crate::events::{self, What};
use crate::nodes::NodeRegistry;
use crate::store::{AlertChange, ClusterFilter, MeterSample, Recorded, Store, StoreError};

/// Samples are kept this long (metrics and projections look back at most an hour).
const SAMPLE_RETENTION_HOURS: i64 = 48;

pub struct Meter {
    store: Store,
    nodes: NodeRegistry,
    settings: Arc<Settings>,
}

impl Meter {
    pub fn new(store: Store, nodes: NodeRegistry, settings: Arc<Settings>) -> Self {
        Meter {
            store,
            nodes,
            settings,
        }
    }

    /// Samples every cluster whose node answers. Returns `false`: the meter runs on its
    /// interval, never back to back.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        let mut by_node: BTreeMap<String, Vec<Cluster>> = BTreeMap::new();
        for cluster in all_clusters(&self.store).await? {
            if !cluster.status.has_volume() {
                continue;
            }
            by_node
                .entry(cluster.node_id.clone())
                .or_default()
                .push(cluster);
        }
        for (node, clusters) in by_node {
            let Some(figures) = self.nodes.fresh_node_figures(&node).await else {
                continue;
            };
            let at = Timestamp::now();
            for cluster in clusters {
                let Some(f) = figures.get(&cluster.resource_id) else {
                    continue;
                };
                let sample = MeterSample {
                    resource_id: cluster.resource_id.clone(),
                    cluster_id: cluster.id.to_string(),
                    at,
                    stored: f.change_records_stored as i64,
                    created: f.change_records_created as i64,
                    window_secs: f.window_secs as i64,
                    actual_secs: f.actual_window_secs as i64,
                };
                let alert = f.window_secs > 0 && f.actual_window_secs < f.window_secs;
                let change = match self.store.record_sample(&sample, alert).await? {
                    Recorded::Added(change) => change,
                    Recorded::First if alert => Some(AlertChange::Raised),
                    _ => None,
                };
                let what = match change {
                    Some(AlertChange::Raised) => What::WindowShort {
                        window_secs: sample.window_secs,
                        actual_secs: sample.actual_secs,
                    },
                    Some(AlertChange::Cleared) => What::WindowBack,
                    None => continue,
                };
                tracing::info!(cluster = %cluster.id, alert, "backtrack window alert changed");
                events::record(&self.store, &self.settings, cluster.id.as_str(), what).await;
            }
        }
        let now = Timestamp::now();
        self.store
            .prune_samples(now.plus_secs(-SAMPLE_RETENTION_HOURS * 3600))
            .await?;
        self.store
            .prune_events(now.plus_secs(-events::RETENTION_DAYS * 86_400))
            .await?;
        Ok(false)
    }
}

/// Every cluster, a page at a time.
pub async fn all_clusters(store: &Store) -> Result<Vec<Cluster>, StoreError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .clusters(&ClusterFilter::default(), after.as_deref(), 500)
            .await?;
        let done = page.len() < 500;
        after = page.last().map(|c| c.id.to_string());
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}
