//! The operations: what CreateDBCluster, BacktrackDBCluster, DescribeEvents, the billing
//! report and the Data API calls do, whichever front door they came through. Each takes a
//! typed input (RDS member names, values as the caller gave them) and returns a typed output
//! or one error enum: `ApiError` for the RDS operations, [`sql::SqlError`] for SQL.
//!
//! A rule lives once: in `domain` when it is about values and statuses
//! (`ClusterStatus::accepts_backtrack`, `validate_window`, paging), here when it needs the
//! store or a node. The storage node stays the authority for what only it knows (its ledger,
//! its open transactions) and says no with a typed code.

pub mod backtracks;
pub mod billing;
pub mod clusters;
pub mod events;
pub mod metrics;
pub mod preview;
pub mod restore;
pub mod sql;
pub mod tags;

use std::sync::Arc;

use backtrack_storage_node::api::VolumeFigures;
use serde::{Deserialize, Deserializer};

use crate::config::Settings;
use crate::domain::{Cluster, ClusterId, Timestamp};
use crate::error::ApiError;
use crate::events::What;
use crate::jobs::{ClusterReconciler, Wakeup};
use crate::nodes::NodeRegistry;
use crate::store::Store;

/// What the operations need: the metadata store, the storage nodes, the reconciler that
/// converges clusters on them (and the wakeup of its background pass), and the settings.
#[derive(Clone)]
pub struct Ops {
    pub store: Store,
    pub nodes: NodeRegistry,
    pub reconciler: Arc<ClusterReconciler>,
    pub wakeup: Wakeup,
    pub settings: Arc<Settings>,
    /// Clusters the Data API found ready for SQL a moment ago.
    pub ready: Arc<sql::ReadyClusters>,
}

impl Ops {
    /// The cluster a caller named, by identifier or ARN.
    pub async fn cluster(&self, named: &str) -> Result<Cluster, ApiError> {
        let id = parse_cluster_ref(&self.settings, named)?;
        Ok(self.store.cluster(&id).await?)
    }

    /// The cluster's live figures, when its node answers, and the earliest instant its
    /// history reaches: the node's (its actual window), else what the metadata implies (the
    /// node then decides when it is called).
    async fn history(
        &self,
        cluster: &Cluster,
        now: Timestamp,
    ) -> (Option<VolumeFigures>, Option<Timestamp>) {
        let figures = self
            .nodes
            .volume_figures(&cluster.node_id, &cluster.resource_id)
            .await;
        let earliest = match &figures {
            Some(f) => f.earliest_restorable_us.map(Timestamp::from_micros),
            None => cluster.earliest_backtrack_time(now),
        };
        (figures, earliest)
    }

    /// Records an event about a cluster (see [`crate::events::record`]).
    async fn event(&self, cluster_id: &str, what: What<'_>) {
        crate::events::record(&self.store, &self.settings, cluster_id, what).await;
    }
}

/// A cluster identifier, or the ARN of one. An ARN must be one of this service's (its region
/// and account): another's names no cluster here.
pub fn parse_cluster_ref(settings: &Settings, text: &str) -> Result<ClusterId, ApiError> {
    let Some(arn) = text.strip_prefix("arn:") else {
        return ClusterId::parse(text).map_err(ApiError::InvalidParameterValue);
    };
    match arn.splitn(6, ':').collect::<Vec<_>>().as_slice() {
        [_partition, "rds", region, account, "cluster", id] => {
            let id = ClusterId::parse(id).map_err(ApiError::InvalidParameterValue)?;
            if *region != settings.region || *account != settings.account_id {
                return Err(ApiError::ClusterNotFound(text.to_string()));
            }
            Ok(id)
        }
        _ => Err(ApiError::InvalidParameterValue(format!(
            "{text:?} is not a DB cluster ARN."
        ))),
    }
}

/// A member the operation cannot do without: inputs hold them as `Option`s, so that a
/// missing one is MissingParameter, named, whichever front door left it out.
pub fn required<T>(value: Option<T>, name: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::MissingParameter(format!("The request must contain the parameter {name}."))
    })
}

/// A time parameter (`StartTime`, `EndTime`): ISO 8601, any offset, or epoch seconds.
fn time_param(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|t| {
            Timestamp::parse(t).map_err(|e| ApiError::InvalidParameterValue(format!("{name}: {e}")))
        })
        .transpose()
}

/// The items of a list parameter: from repeats and comma-separated values, blanks dropped.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let values = Vec::<String>::deserialize(d)?;
    Ok(values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

/// A parameter that takes one value: a repeat is an error, never a silent choice.
pub fn one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let mut values = Vec::<String>::deserialize(d)?;
    if values.len() > 1 {
        return Err(serde::de::Error::custom(format!(
            "the values {values:?} were given for a parameter that takes one"
        )));
    }
    Ok(values.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_named_by_identifier_or_arn() {
        let settings = Settings::from_config(&crate::config::Config::defaults());
        let parse = |text| parse_cluster_ref(&settings, text);
        assert_eq!(parse("Prod-1").unwrap().as_str(), "prod-1");
        assert_eq!(
            parse("arn:aws:rds:us-east-1:000000000000:cluster:prod-1")
                .unwrap()
                .as_str(),
            "prod-1"
        );
        assert!(parse("arn:aws:rds:us-east-1:0:db:x").is_err());
        assert!(parse("bad--id").is_err());
    }

    #[test]
    fn an_arn_of_another_account_or_region_names_no_cluster_here() {
        let settings = Settings::from_config(&crate::config::Config::defaults());
        for arn in [
            "arn:aws:rds:us-east-1:123456789012:cluster:prod-1",
            "arn:aws:rds:eu-west-1:000000000000:cluster:prod-1",
        ] {
            assert!(
                matches!(
                    parse_cluster_ref(&settings, arn),
                    Err(ApiError::ClusterNotFound(_))
                ),
                "{arn}"
            );
        }
        assert!(
            parse_cluster_ref(&settings, "arn:aws:ec2:us-east-1:000000000000:cluster:x").is_err()
        );
    }
}
