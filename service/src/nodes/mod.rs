//! The storage nodes this control plane drives: their clients by name, where a new cluster
//! goes, and the nodes' live figures for the volumes (EarliestBacktrackTime and
//! BacktrackConsumedChangeRecords come from there, not from the metadata).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backtrack_storage_node::api::VolumeFigures;
use backtrack_storage_node::client::NodeClient;
use tokio::sync::Mutex;

use crate::config::NodeEndpoint;

/// How long one node's list of volume figures is reused by describe calls.
const FIGURES_TTL: Duration = Duration::from_secs(1);
/// A describe call does not wait longer than this for a node's figures.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Node {
    pub name: String,
    pub client: NodeClient,
}

/// Every volume's figures on one node, by volume id.
pub type NodeFigures = Arc<HashMap<String, VolumeFigures>>;

#[derive(Clone)]
pub struct NodeRegistry {
    nodes: Arc<Vec<Node>>,
    /// Per node: when its figures were fetched, and the figures.
    figures: Arc<Mutex<HashMap<String, (Instant, NodeFigures)>>>,
}

impl NodeRegistry {
    pub fn new(endpoints: &[NodeEndpoint], token: &str, timeout: Duration) -> Self {
        let nodes = endpoints
            .iter()
            .map(|e| Node {
                name: e.name.clone(),
                client: NodeClient::new(&e.url, token, timeout),
            })
            .collect();
        NodeRegistry {
            nodes: Arc::new(nodes),
            figures: Arc::default(),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn client(&self, name: &str) -> Option<&NodeClient> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| &n.client)
    }

    /// The node that should take a new cluster: the one holding the fewest clusters (ties go
    /// to the first configured).
    pub fn place(&self, clusters_per_node: &HashMap<String, i64>) -> Option<&Node> {
        self.nodes
            .iter()
            .min_by_key(|n| clusters_per_node.get(&n.name).copied().unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_clusters_go_to_the_least_loaded_node() {
        let endpoints: Vec<NodeEndpoint> = ["a=http://a:1", "b=http://b:1", "c=http://c:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let registry = NodeRegistry::new(&endpoints, "t", Duration::from_secs(1));
        let counts = HashMap::from([("a".to_string(), 3), ("b".to_string(), 1)]);
        assert_eq!(registry.place(&counts).unwrap().name, "c");
        let counts = HashMap::from([
            ("a".to_string(), 1),
            ("b".to_string(), 1),
            ("c".to_string(), 2),
        ]);
        assert_eq!(registry.place(&counts).unwrap().name, "a");
        assert!(NodeRegistry::new(&[], "t", Duration::from_secs(1))
            .place(&counts)
            .is_none());
    }
}
