//! SQL on a cluster: the Data API's ExecuteStatement, BatchExecuteStatement and the
//! transaction calls, and any later SQL front door. A call names its cluster by ARN; it runs
//! on the storage node holding the cluster, which is the authority on the SQL itself (the
//! statement policy, time limits, transactions) and refuses with a typed code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backtrack_storage_node::api::{ExecuteRequest, ExecuteResult};
use backtrack_storage_node::client::{CallError, NodeClient};

use super::{parse_cluster_ref, Ops};
use crate::domain::{Cluster, ClusterId, SqlRefusal};
use crate::error::ApiError;
use crate::store::StoreError;

/// Why SQL did not run. Each front door renders these in its own terms (the Data API's
/// exception names; SQLSTATEs).
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The request cannot name a database: no secret, or not a cluster ARN of this service.
    #[error("{0}")]
    BadRequest(String),
    #[error("HttpEndpoint is not enabled for cluster {0}.")]
    NotEnabled(ClusterId),
    /// The cluster's status does not take SQL now.
    #[error("DB cluster {0} does not take SQL now: {1:?}")]
    Refused(ClusterId, SqlRefusal),
    /// The cluster's storage node does not answer.
    #[error("DB cluster {0} is inaccessible: its storage node does not answer.")]
    NodeDown(ClusterId),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The storage node refused the call (its code says why) or could not be reached.
    #[error(transparent)]
    Node(#[from] CallError),
}

/// The database a call is for: the cluster's ARN, and the secret that would authorise it.
#[derive(Debug, Clone, Copy)]
pub struct SqlTarget<'a> {
    pub resource_arn: &'a str,
    pub secret_arn: &'a str,
}

impl<'a> SqlTarget<'a> {
    pub fn new(resource_arn: &'a str, secret_arn: &'a str) -> Self {
        SqlTarget {
            resource_arn,
            secret_arn,
        }
    }
}

/// How long a cluster found ready for SQL is taken as still ready without asking the store
/// again. Every call otherwise spends a metadata query (most of its time, for a point query).
/// This process forgets a cluster it modifies, deletes or backtracks at once, and the node
/// refuses what it must by itself (a volume switching to a backtrack, or deleted), so a
/// second is how long a ModifyDBCluster made on another replica can take to be felt here.
const READY_FOR: Duration = Duration::from_secs(1);

/// The clusters recently found ready for SQL (available, HTTP endpoint on), by identifier.
/// Only those: a cluster that refused SQL is looked up again on every call, so it takes SQL
/// again as soon as its status says so.
#[derive(Default)]
pub struct ReadyClusters {
    found: Mutex<HashMap<ClusterId, (Instant, Cluster)>>,
}

impl ReadyClusters {
    fn get(&self, id: &ClusterId) -> Option<Cluster> {
        let found = self.found.lock().unwrap();
        let (at, cluster) = found.get(id)?;
        (at.elapsed() < READY_FOR).then(|| cluster.clone())
    }

    /// This process changed the cluster: the next call looks it up again.
    pub fn forget(&self, id: &ClusterId) {
        self.found.lock().unwrap().remove(id);
    }

    fn put(&self, cluster: &Cluster) {
        let mut found = self.found.lock().unwrap();
        if found.len() > 10_000 {
            found.retain(|_, (at, _)| at.elapsed() < READY_FOR);
        }
        found.insert(cluster.id.clone(), (Instant::now(), cluster.clone()));
    }
}

impl Ops {
    /// Runs a statement, once or per parameter set, in a transaction or on its own.
    pub async fn execute_sql(
        &self,
        target: SqlTarget<'_>,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, SqlError> {
        let (cluster, client) = self.sql_target(target).await?;
        Ok(client.execute(&cluster.resource_id, request).await?)
    }

    /// Starts a transaction; its id comes back.
    pub async fn begin_transaction(&self, target: SqlTarget<'_>) -> Result<String, SqlError> {
        let (cluster, client) = self.sql_target(target).await?;
        Ok(client.begin(&cluster.resource_id).await?.transaction_id)
    }

    /// Commits (`commit`) or rolls back a transaction.
    pub async fn end_transaction(
        &self,
        target: SqlTarget<'_>,
        transaction_id: &str,
        commit: bool,
    ) -> Result<(), SqlError> {
        let (cluster, client) = self.sql_target(target).await?;
        if commit {
            client.commit(&cluster.resource_id, transaction_id).await?;
        } else {
            client
                .rollback(&cluster.resource_id, transaction_id)
                .await?;
        }
        Ok(())
    }

    /// The cluster a call names, ready for SQL, and its node's client.
    async fn sql_target(&self, target: SqlTarget<'_>) -> Result<(Cluster, NodeClient), SqlError> {
        let arn = target.resource_arn;
        if target.secret_arn.trim().is_empty() {
            return Err(SqlError::BadRequest("secretArn is required.".into()));
        }
        let id = parse_cluster_ref(&self.settings, arn).map_err(|e| match e {
            ApiError::ClusterNotFound(_) => SqlError::BadRequest(format!(
                "{arn:?} is not a DB cluster of this service (region {}, account {}).",
                self.settings.region, self.settings.account_id
            )),
            _ => SqlError::BadRequest(format!("{arn:?} is not a DB cluster ARN.")),
        })?;
        let cluster = match self.ready.get(&id) {
            Some(cluster) => cluster,
            None => {
                let cluster = self.store.cluster(&id).await?;
                if !cluster.http_endpoint_enabled {
                    return Err(SqlError::NotEnabled(id));
                }
                cluster
                    .status
                    .accepts_sql()
                    .map_err(|why| SqlError::Refused(id.clone(), why))?;
                self.ready.put(&cluster);
                cluster
            }
        };
        if !self.nodes.is_healthy(&cluster.node_id) {
            return Err(SqlError::NodeDown(id));
        }
        let client = self
            .nodes
            .client(&cluster.node_id)
            .ok_or_else(|| SqlError::NodeDown(id.clone()))?;
        Ok((cluster, client))
    }
}
