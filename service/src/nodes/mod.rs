//! The storage nodes this control plane drives: their clients by name, their health, where a
//! new cluster goes, and the nodes' live figures for the volumes (EarliestBacktrackTime and
//! BacktrackConsumedChangeRecords come from there, not from the metadata).
//!
//! Nodes are named; the name is what the metadata records, so a node may change address (a
//! local node restarted on a new port, a pod rescheduled) without its clusters moving.

pub mod local;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use backtrack_storage_node::api::VolumeFigures;
use backtrack_storage_node::client::NodeClient;
use tokio::sync::Mutex;

/// How long one node's list of volume figures is reused by describe calls.
const FIGURES_TTL: Duration = Duration::from_secs(1);
/// A describe call does not wait longer than this for a node's figures.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(2);
/// A health check that takes longer than this counts as a failure.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Every volume's figures on one node, by volume id.
pub type NodeFigures = Arc<HashMap<String, VolumeFigures>>;

struct Node {
    name: String,
    client: RwLock<NodeClient>,
    healthy: AtomicBool,
    /// The node's disk is full: it serves its clusters' reads, but takes no new cluster.
    disk_full: AtomicBool,
    /// The port it serves the PostgreSQL protocol on, as it last said (0: not known yet).
    pg_port: AtomicU16,
}

/// Where a new cluster can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    On(String),
    /// Every healthy node's disk is full.
    DisksFull,
    /// No node is healthy.
    NoNode,
}

#[derive(Clone)]
pub struct NodeRegistry {
    nodes: Arc<Vec<Node>>,
    token: Arc<str>,
    timeout: Duration,
    /// Bounds SQL calls (which run up to the nodes' statement time limit).
    sql_timeout: Duration,
    /// Per node: when its figures were fetched, and the figures.
    figures: Arc<Mutex<HashMap<String, (Instant, NodeFigures)>>>,
}

impl NodeRegistry {
    /// A registry of nodes by `(name, url)`; each starts out presumed healthy.
    pub fn new(nodes: &[(String, String)], token: &str, timeout: Duration) -> Self {
        let nodes = nodes
            .iter()
            .map(|(name, url)| Node {
                name: name.clone(),
                client: RwLock::new(NodeClient::new(url, token, timeout)),
                healthy: AtomicBool::new(true),
                disk_full: AtomicBool::new(false),
                pg_port: AtomicU16::new(0),
            })
            .collect();
        NodeRegistry {
            nodes: Arc::new(nodes),
            token: token.into(),
            timeout,
            sql_timeout: timeout,
            figures: Arc::default(),
        }
    }

    /// The same registry, with SQL calls bounded by `timeout`.
    pub fn with_sql_timeout(mut self, timeout: Duration) -> Self {
        self.sql_timeout = timeout;
        for node in self.nodes.iter() {
            let mut client = node.client.write().unwrap();
            *client = client.clone().with_sql_timeout(timeout);
        }
        self
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn client(&self, name: &str) -> Option<NodeClient> {
        self.node(name).map(|n| n.client.read().unwrap().clone())
    }

    /// Points `name` at a new address (a restarted local node).
    pub fn set_url(&self, name: &str, url: &str) {
        if let Some(node) = self.node(name) {
            *node.client.write().unwrap() =
                NodeClient::new(url, &self.token, self.timeout).with_sql_timeout(self.sql_timeout);
        }
    }

    pub fn is_healthy(&self, name: &str) -> bool {
        self.node(name)
            .is_some_and(|n| n.healthy.load(Ordering::Acquire))
    }

    pub fn set_healthy(&self, name: &str, healthy: bool) {
        if let Some(node) = self.node(name) {
            let was = node.healthy.swap(healthy, Ordering::AcqRel);
            if was != healthy {
                if healthy {
                    tracing::info!(node = name, "storage node is healthy");
                } else {
                    tracing::warn!(node = name, "storage node does not answer");
                }
            }
        }
    }

    /// Asks every node for its health and records the answers.
    pub async fn check_health(&self) {
        for node in self.nodes.iter() {
            let client = node.client.read().unwrap().clone();
            let health = match tokio::time::timeout(HEALTH_TIMEOUT, client.health()).await {
                Ok(Ok(health)) => Some(health),
                _ => None,
            };
            let healthy = health.as_ref().is_some_and(|h| h.status == "ok");
            if let Some(port) = health.as_ref().and_then(|h| h.pg_port) {
                node.pg_port.store(port, Ordering::Release);
            }
            let full = health.is_some_and(|h| h.disk_full);
            if node.disk_full.swap(full, Ordering::AcqRel) != full {
                if full {
                    tracing::warn!(node = %node.name, "storage node's disk is full: no new cluster goes there");
                } else {
                    tracing::info!(node = %node.name, "storage node's disk has room again");
                }
            }
            self.set_healthy(&node.name, healthy);
        }
    }

    /// Where clients reach the PostgreSQL protocol of node `name`: the host of its address and
    /// the port it reported (kept across its restarts: the node reuses its port).
    pub fn pg_endpoint(&self, name: &str) -> Option<(String, u16)> {
        let node = self.node(name)?;
        let port = node.pg_port.load(Ordering::Acquire);
        if port == 0 {
            return None;
        }
        let url = node.client.read().unwrap().base_url().to_string();
        Some((host_of(&url)?, port))
    }

    pub fn set_disk_full(&self, name: &str, full: bool) {
        if let Some(node) = self.node(name) {
            node.disk_full.store(full, Ordering::Release);
        }
    }

    /// The node that should take a new cluster: the healthy one with room holding the fewest
    /// clusters (ties go to the first configured).
    pub fn place(&self, clusters_per_node: &HashMap<String, i64>) -> Placement {
        let healthy: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.healthy.load(Ordering::Acquire))
            .collect();
        let chosen = healthy
            .iter()
            .filter(|n| !n.disk_full.load(Ordering::Acquire))
            .min_by_key(|n| clusters_per_node.get(&n.name).copied().unwrap_or(0));
        match chosen {
            Some(node) => Placement::On(node.name.clone()),
            None if healthy.is_empty() => Placement::NoNode,
            None => Placement::DisksFull,
        }
    }

    /// One volume's figures, fresh from its node; `None` if the node cannot say right now.
    pub async fn volume_figures(&self, node: &str, volume: &str) -> Option<VolumeFigures> {
        let client = self.client(node)?;
        match tokio::time::timeout(FIGURES_TIMEOUT, client.volume(volume)).await {
            Ok(Ok(figures)) => Some(figures),
            Ok(Err(e)) => {
                tracing::debug!(node, volume, error = %e, "no volume figures");
                None
            }
            Err(_) => None,
        }
    }

    /// Every volume's figures on `node`, at most [`FIGURES_TTL`] old; `None` if the node cannot
    /// say right now (callers then show what the metadata alone knows).
    pub async fn node_figures(&self, node: &str) -> Option<NodeFigures> {
        if let Some((at, figures)) = self.figures.lock().await.get(node) {
            if at.elapsed() < FIGURES_TTL {
                return Some(figures.clone());
            }
        }
        self.fresh_node_figures(node).await
    }

    /// Every volume's figures on `node`, read now (for the meter, which dates its samples).
    pub async fn fresh_node_figures(&self, node: &str) -> Option<NodeFigures> {
        let client = self.client(node)?;
        let list = match tokio::time::timeout(FIGURES_TIMEOUT, client.volumes()).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                tracing::debug!(node, error = %e, "no node figures");
                return None;
            }
            Err(_) => return None,
        };
        let figures: NodeFigures = Arc::new(
            list.volumes
                .into_iter()
                .map(|v| (v.volume_id.clone(), v))
                .collect(),
        );
        self.figures
            .lock()
            .await
            .insert(node.to_string(), (Instant::now(), figures.clone()));
        Some(figures)
    }
}

/// The host of `http://host:port/...` (an IPv6 host without its brackets).
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> NodeRegistry {
        let nodes: Vec<(String, String)> = ["a", "b", "c"]
            .iter()
            .map(|n| (n.to_string(), format!("http://{n}:1")))
            .collect();
        NodeRegistry::new(&nodes, "t", Duration::from_secs(1))
    }

    #[test]
    fn new_clusters_go_to_the_least_loaded_healthy_node() {
        let registry = registry();
        let on = |name: &str| Placement::On(name.to_string());
        let counts = HashMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        assert_eq!(registry.place(&counts), on("c"));
        registry.set_healthy("c", false);
        assert_eq!(registry.place(&counts), on("b"));
        let counts = HashMap::from([("a".to_string(), 1), ("b".to_string(), 1)]);
        assert_eq!(registry.place(&counts), on("a"));
        registry.set_disk_full("a", true);
        assert_eq!(registry.place(&counts), on("b"));
        registry.set_disk_full("b", true);
        assert_eq!(registry.place(&counts), Placement::DisksFull);
        registry.set_healthy("a", false);
        registry.set_healthy("b", false);
        assert_eq!(registry.place(&counts), Placement::NoNode);
    }

    #[test]
    fn a_node_keeps_its_name_when_its_address_changes() {
        let registry = registry();
        registry.set_url("b", "http://elsewhere:2");
        assert_eq!(
            registry.client("b").unwrap().base_url(),
            "http://elsewhere:2"
        );
        assert!(registry.client("zzz").is_none());
    }

    #[test]
    fn the_host_of_a_node_address_is_its_endpoint() {
        assert_eq!(
            super::host_of("http://127.0.0.1:7000").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            super::host_of("http://node-0.nodes.ns.svc:7000/").as_deref(),
            Some("node-0.nodes.ns.svc")
        );
        assert_eq!(super::host_of("http://[::1]:7000").as_deref(), Some("::1"));
        assert_eq!(super::host_of("http://:7000"), None);
    }
}
