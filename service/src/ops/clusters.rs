//! CreateDBCluster, DescribeDBClusters, ModifyDBCluster and DeleteDBCluster. Changes that
//! involve a storage node are recorded first (status `creating`, `modifying`, `deleting`),
//! then converged at once by the reconciler when the node answers, or later by its background
//! pass when it does not.

use std::collections::HashMap;

use backtrack_storage_node::api::VolumeFigures;
use backtrack_storage_node::scram::Verifier;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{list, one, parse_cluster_ref, required, Ops};
use crate::domain::paging::Page;
use crate::domain::{
    new_resource_id, validate_engine, validate_master_password, validate_master_username,
    validate_tags, validate_window, Cluster, ClusterId, ClusterStatus, Tag, Timestamp, ENGINE_MODE,
    ENGINE_VERSION,
};
use crate::error::ApiError;
use crate::events::What;
use crate::nodes::{NodeFigures, Placement};
use crate::store::ClusterFilter;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDbClusterRequest {
    /// 1-63 letters, digits and hyphens; a letter first; no `--`; no trailing hyphen.
    /// Case-insensitive; stored lower-case.
    #[serde(rename = "DBClusterIdentifier")]
    #[schema(
        value_type = String,
        required = true,
        pattern = "^[A-Za-z](-?[A-Za-z0-9])*$",
        min_length = 1,
        max_length = 63
    )]
    pub db_cluster_identifier: Option<String>,
    /// `aurora-mysql` (the default), `aurora-postgresql` or `postgres`: the name RDS tooling
    /// sees. Every cluster runs the same engine (`EngineVersion`: SQLite's dialect), with a
    /// backtrack window and the PostgreSQL protocol whatever the name.
    #[serde(rename = "Engine", default)]
    pub engine: Option<String>,
    #[serde(rename = "EngineVersion", default)]
    pub engine_version: Option<String>,
    /// `provisioned` (the default and only mode).
    #[serde(rename = "EngineMode", default)]
    pub engine_mode: Option<String>,
    /// Target backtrack window in seconds, 0..=259200 (72 hours); 0 (the default) disables
    /// backtracking.
    #[serde(rename = "BacktrackWindow", default)]
    #[schema(minimum = 0, maximum = 259200)]
    pub backtrack_window: Option<i64>,
    #[serde(rename = "DeletionProtection", default)]
    pub deletion_protection: Option<bool>,
    /// Whether the RDS Data API may run SQL on the cluster (default true).
    #[serde(rename = "EnableHttpEndpoint", default)]
    pub enable_http_endpoint: Option<bool>,
    #[serde(rename = "DatabaseName", default)]
    pub database_name: Option<String>,
    /// The user that connects to the cluster's database: 1 to 63 letters, digits and
    /// underscores, a letter first.
    #[serde(rename = "MasterUsername", default)]
    pub master_username: Option<String>,
    /// 8 to 128 printable ASCII characters other than `/`, `'`, `"`, `@` and space; needs
    /// `MasterUsername`. Kept only as its SCRAM-SHA-256 verifier.
    #[serde(rename = "MasterUserPassword", default)]
    #[schema(min_length = 8, max_length = 128)]
    pub master_user_password: Option<String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModifyDbClusterRequest {
    /// New target window in seconds, 0..=259200. Setting it on a cluster without one starts
    /// its history now; 0 turns backtracking off and drops the history.
    #[serde(rename = "BacktrackWindow", default)]
    #[schema(minimum = 0, maximum = 259200)]
    pub backtrack_window: Option<i64>,
    #[serde(rename = "DeletionProtection", default)]
    pub deletion_protection: Option<bool>,
    #[serde(rename = "EnableHttpEndpoint", default)]
    pub enable_http_endpoint: Option<bool>,
    /// Accepted for compatibility; changes always apply immediately.
    #[serde(rename = "ApplyImmediately", default)]
    pub apply_immediately: Option<bool>,
    /// A new master password (the rules of CreateDBCluster), for a cluster with a
    /// `MasterUsername`.
    #[serde(rename = "MasterUserPassword", default)]
    #[schema(min_length = 8, max_length = 128)]
    pub master_user_password: Option<String>,
}

/// The verifier of a new master password; a password needs a user to go with it.
pub(super) fn master_verifier(
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(password) = password else {
        return Ok(None);
    };
    validate_master_password(password).map_err(ApiError::InvalidParameterValue)?;
    if username.is_none() {
        return Err(ApiError::InvalidParameterCombination(
            "MasterUserPassword needs a MasterUsername.".into(),
        ));
    }
    Ok(Some(Verifier::new(password).to_string()))
}

/// A DB cluster, with the members of RDS's `DBCluster` that Backtrack has.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DbCluster {
    #[serde(rename = "DBClusterIdentifier")]
    pub db_cluster_identifier: String,
    #[serde(rename = "DBClusterArn")]
    pub db_cluster_arn: String,
    #[serde(rename = "DbClusterResourceId")]
    pub db_cluster_resource_id: String,
    #[serde(rename = "Engine")]
    pub engine: String,
    #[serde(rename = "EngineVersion")]
    pub engine_version: String,
    #[serde(rename = "EngineMode")]
    pub engine_mode: String,
    /// `creating`, `available`, `modifying`, `backtracking` or `deleting`.
    #[serde(rename = "Status")]
    pub status: String,
    #[serde(rename = "ClusterCreateTime")]
    #[schema(value_type = String, format = DateTime)]
    pub cluster_create_time: Timestamp,
    /// Target window in seconds; present once backtracking was ever enabled.
    #[serde(rename = "BacktrackWindow", skip_serializing_if = "Option::is_none")]
    pub backtrack_window: Option<u64>,
    /// The earliest time the cluster can be backtracked to; absent when backtracking is off.
    #[serde(
        rename = "EarliestBacktrackTime",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub earliest_backtrack_time: Option<Timestamp>,
    /// Change records stored for the window (the billed quantity), as the storage node
    /// reports them; absent when the node cannot be asked.
    #[serde(
        rename = "BacktrackConsumedChangeRecords",
        skip_serializing_if = "Option::is_none"
    )]
    pub backtrack_consumed_change_records: Option<u64>,
    #[serde(rename = "DeletionProtection")]
    pub deletion_protection: bool,
    #[serde(rename = "HttpEndpointEnabled")]
    pub http_endpoint_enabled: bool,
    /// The host clients connect to with a PostgreSQL driver: its storage node's; absent
    /// while the node has not said where it serves.
    #[serde(rename = "Endpoint", skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(rename = "Port", skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The database name drivers connect to (`DatabaseName`, else the identifier).
    #[serde(rename = "DatabaseName", skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    #[serde(rename = "MasterUsername", skip_serializing_if = "Option::is_none")]
    pub master_username: Option<String>,
    #[serde(rename = "TagList")]
    pub tag_list: Vec<Tag>,
    /// Shared by a cluster and its copy-on-write clones; absent for a cluster never cloned.
    #[serde(rename = "CloneGroupId", skip_serializing_if = "Option::is_none")]
    pub clone_group_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DbClusterResult {
    #[serde(rename = "DBCluster")]
    pub db_cluster: DbCluster,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DbClusterMessage {
    #[serde(rename = "DBClusters")]
    pub db_clusters: Vec<DbCluster>,
    /// Present when more clusters follow; pass it back as `Marker` for the next page.
    #[serde(rename = "Marker", skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
}

/// Query parameters of DescribeDBClusters. Filter values may repeat or be comma-separated.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DescribeDbClustersParams {
    /// One cluster (identifier or ARN); an unknown one is DBClusterNotFoundFault.
    #[serde(rename = "DBClusterIdentifier", default, deserialize_with = "one")]
    pub db_cluster_identifier: Option<String>,
    /// Page size, 20..=100 (default 100).
    #[serde(rename = "MaxRecords", default, deserialize_with = "one")]
    #[param(value_type = Option<i64>, minimum = 20, maximum = 100)]
    pub max_records: Option<String>,
    /// The `Marker` of the previous page.
    #[serde(rename = "Marker", default, deserialize_with = "one")]
    pub marker: Option<String>,
    /// Filter: cluster identifiers or ARNs.
    #[serde(rename = "db-cluster-id", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub db_cluster_id: Vec<String>,
    /// Filter: engines.
    #[serde(rename = "engine", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub engine: Vec<String>,
    /// Filter: resource ids (`cluster-…`).
    #[serde(rename = "db-cluster-resource-id", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub db_cluster_resource_id: Vec<String>,
    /// Filter: clone groups (`CloneGroupId`): a cluster and its copy-on-write clones.
    #[serde(rename = "clone-group-id", default, deserialize_with = "list")]
    #[param(value_type = Option<Vec<String>>)]
    pub clone_group_id: Vec<String>,
}

impl Ops {
    /// CreateDBCluster: records the cluster on the least-loaded storage node and creates its
    /// volume there (at once if the node answers; `creating` until it does).
    pub async fn create_cluster(
        &self,
        request: CreateDbClusterRequest,
    ) -> Result<DbCluster, ApiError> {
        let invalid = ApiError::InvalidParameterValue;
        let id = required(request.db_cluster_identifier, "DBClusterIdentifier")?;
        let id = ClusterId::parse(&id).map_err(invalid)?;
        let engine = validate_engine(
            request.engine.as_deref(),
            request.engine_version.as_deref(),
            request.engine_mode.as_deref(),
        )
        .map_err(invalid)?;
        let window = validate_window(request.backtrack_window.unwrap_or(0)).map_err(invalid)?;
        validate_tags(&request.tags).map_err(invalid)?;
        if let Some(name) = &request.master_username {
            validate_master_username(name).map_err(invalid)?;
        }
        let verifier = master_verifier(
            request.master_username.as_deref(),
            request.master_user_password.as_deref(),
        )?;
        let node = self.place().await?;
        let now = Timestamp::now();
        let cluster = Cluster {
            id,
            resource_id: new_resource_id(),
            engine,
            engine_version: ENGINE_VERSION.to_string(),
            status: ClusterStatus::Creating,
            backtrack_window: window,
            backtrack_enabled_at: (window > 0).then_some(now),
            backtrack_ever_enabled: window > 0,
            deletion_protection: request.deletion_protection.unwrap_or(false),
            http_endpoint_enabled: request.enable_http_endpoint.unwrap_or(true),
            database_name: request.database_name,
            master_username: request.master_username,
            master_user_verifier: verifier,
            tags: request.tags,
            node_id: node,
            clone_group_id: None,
            restored_from: None,
            created_at: now,
            updated_at: now,
        };
        self.store.insert_cluster(&cluster).await?;
        tracing::info!(cluster = %cluster.id, node = %cluster.node_id, window, "cluster created");
        self.event(cluster.id.as_str(), What::Created(&cluster))
            .await;
        let cluster = self.converge_now(cluster).await?;
        Ok(self.describe(&cluster, None, Timestamp::now()))
    }

    /// The node a new cluster goes on.
    pub(super) async fn place(&self) -> Result<String, ApiError> {
        let per_node = self.store.clusters_per_node().await?;
        match self.nodes.place(&per_node) {
            Placement::On(node) => Ok(node),
            Placement::DisksFull => Err(ApiError::StorageQuotaExceeded(
                "The storage nodes' disks are full: no node can hold a new cluster until space \
                 is freed."
                    .into(),
            )),
            Placement::NoNode => Err(ApiError::InsufficientCapacity(
                "No healthy storage node can hold the cluster's volume right now.".into(),
            )),
        }
    }

    /// DescribeDBClusters: clusters in identifier order, a page at a time, with their nodes'
    /// live figures.
    pub async fn describe_clusters(
        &self,
        params: DescribeDbClustersParams,
    ) -> Result<DbClusterMessage, ApiError> {
        let page = Page::<String>::parse(
            "clusters",
            params.max_records.as_deref(),
            params.marker.as_deref(),
        )
        .map_err(ApiError::InvalidParameterValue)?;
        let mut filter = ClusterFilter {
            ids: params
                .db_cluster_id
                .iter()
                .map(|v| parse_cluster_ref(&self.settings, v).map(|id| id.to_string()))
                .collect::<Result<_, _>>()?,
            engines: params.engine,
            resource_ids: params.db_cluster_resource_id,
            clone_group_ids: params.clone_group_id,
        };
        if let Some(one) = &params.db_cluster_identifier {
            // An explicit identifier must exist, as in RDS.
            filter.ids = vec![self.cluster(one).await?.id.to_string()];
        }
        let clusters = self
            .store
            .clusters(&filter, page.after.as_deref(), page.fetch())
            .await?;
        let page = page.finish(clusters, |c| c.id.to_string());
        let figures = self.figures_for(&page.items).await;
        let now = Timestamp::now();
        Ok(DbClusterMessage {
            db_clusters: page
                .items
                .iter()
                .map(|c| {
                    let live = figures.get(&c.node_id).and_then(|f| f.get(&c.resource_id));
                    self.describe(c, live, now)
                })
                .collect(),
            marker: page.marker,
        })
    }

    /// One cluster, with its node's live figures when the node answers.
    pub async fn describe_cluster(&self, named: &str) -> Result<DbCluster, ApiError> {
        let cluster = self.cluster(named).await?;
        let figures = self
            .nodes
            .volume_figures(&cluster.node_id, &cluster.resource_id)
            .await;
        Ok(self.describe(&cluster, figures.as_ref(), Timestamp::now()))
    }

    /// ModifyDBCluster: deletion protection and Data API access change at once; a new window
    /// moves the cluster to `modifying` until its node has applied it.
    pub async fn modify_cluster(
        &self,
        named: &str,
        request: ModifyDbClusterRequest,
    ) -> Result<DbCluster, ApiError> {
        let id = parse_cluster_ref(&self.settings, named)?;
        let window = request
            .backtrack_window
            .map(validate_window)
            .transpose()
            .map_err(ApiError::InvalidParameterValue)?;
        if let Some(password) = &request.master_user_password {
            validate_master_password(password).map_err(ApiError::InvalidParameterValue)?;
        }
        // Derived outside the row lock: it takes a few milliseconds on purpose.
        let verifier = request
            .master_user_password
            .as_deref()
            .map(|p| Verifier::new(p).to_string());
        let now = Timestamp::now();
        let cluster = self
            .store
            .update_cluster(&id, |cluster| -> Result<(), ApiError> {
                if !cluster.status.accepts_modify() {
                    return Err(ApiError::InvalidClusterState(format!(
                        "DB cluster {} is in {} state but expected it to be available.",
                        cluster.id,
                        cluster.status.as_str()
                    )));
                }
                if let Some(protect) = request.deletion_protection {
                    cluster.deletion_protection = protect;
                }
                if let Some(enabled) = request.enable_http_endpoint {
                    cluster.http_endpoint_enabled = enabled;
                }
                if let Some(window) = window {
                    cluster.set_window(window, now);
                }
                if let Some(verifier) = verifier {
                    if cluster.master_username.is_none() {
                        return Err(ApiError::InvalidParameterCombination(format!(
                            "DB cluster {} has no MasterUsername, so it takes no MasterUserPassword.",
                            cluster.id
                        )));
                    }
                    cluster.set_verifier(verifier);
                }
                Ok(())
            })
            .await?;
        self.ready.forget(&id);
        tracing::info!(cluster = %cluster.id, window = cluster.backtrack_window, "cluster modified");
        self.event(cluster.id.as_str(), What::Modified(&cluster))
            .await;
        let cluster = self.converge_now(cluster).await?;
        Ok(self.describe(&cluster, None, Timestamp::now()))
    }

    /// DeleteDBCluster: refused while deletion protection is on or a backtrack runs; the
    /// cluster is `deleting` until its node has dropped the volume, history included.
    pub async fn delete_cluster(&self, named: &str) -> Result<DbCluster, ApiError> {
        let id = parse_cluster_ref(&self.settings, named)?;
        let cluster = self
            .store
            .update_cluster(&id, |cluster| -> Result<(), ApiError> {
                if cluster.deletion_protection {
                    return Err(ApiError::InvalidParameterCombination(
                        "Cannot delete protected Cluster, please disable deletion protection and try again."
                            .into(),
                    ));
                }
                if !cluster.status.accepts_delete() {
                    return Err(ApiError::InvalidClusterState(format!(
                        "DB cluster {} is in {} state and cannot be deleted now.",
                        cluster.id,
                        cluster.status.as_str()
                    )));
                }
                cluster.status = ClusterStatus::Deleting;
                Ok(())
            })
            .await?;
        self.ready.forget(&id);
        tracing::info!(cluster = %cluster.id, "cluster deletion started");
        self.event(cluster.id.as_str(), What::Deleted(&cluster))
            .await;
        // The description is of the cluster being deleted; the volume goes now if the node
        // answers, or on a later pass.
        let described = self.describe(&cluster, None, Timestamp::now());
        if let Err(e) = self.reconciler.converge(&cluster).await {
            tracing::warn!(cluster = %cluster.id, error = %e, "deletion left to the background pass");
        }
        self.wakeup.wake();
        Ok(described)
    }

    /// Asks the reconciler to act on the node now, so the common case answers with the final
    /// status; if the node does not answer, the background pass finishes later.
    pub(super) async fn converge_now(&self, cluster: Cluster) -> Result<Cluster, ApiError> {
        if !cluster.status.awaits_node() {
            return Ok(cluster);
        }
        if !self.reconciler.converge(&cluster).await? {
            self.wakeup.wake();
        }
        // Re-read either way: the background pass may have converged it first.
        Ok(self.store.cluster(&cluster.id).await?)
    }

    /// The live figures of the nodes holding `clusters`, one call per node (cached briefly).
    async fn figures_for(&self, clusters: &[Cluster]) -> HashMap<String, NodeFigures> {
        let mut all = HashMap::new();
        for cluster in clusters {
            if !all.contains_key(&cluster.node_id) {
                if let Some(figures) = self.nodes.node_figures(&cluster.node_id).await {
                    all.insert(cluster.node_id.clone(), figures);
                }
            }
        }
        all
    }

    /// The status a cluster shows: its own, or `inaccessible` while its storage node does not
    /// answer.
    pub fn shown_status(&self, cluster: &Cluster) -> &'static str {
        if cluster.status.shows_node_health() && !self.nodes.is_healthy(&cluster.node_id) {
            "inaccessible"
        } else {
            cluster.status.as_str()
        }
    }

    /// The API's view of a cluster. With the node's figures, EarliestBacktrackTime is what the
    /// node can really rewind to; without them, what the metadata implies.
    pub fn describe(
        &self,
        cluster: &Cluster,
        figures: Option<&VolumeFigures>,
        now: Timestamp,
    ) -> DbCluster {
        let earliest = match figures {
            Some(f) if cluster.backtrack_window > 0 => {
                f.earliest_restorable_us.map(Timestamp::from_micros)
            }
            _ => cluster.earliest_backtrack_time(now),
        };
        let endpoint = self.nodes.pg_endpoint(&cluster.node_id);
        DbCluster {
            db_cluster_identifier: cluster.id.to_string(),
            db_cluster_arn: self.settings.cluster_arn(cluster.id.as_str()),
            db_cluster_resource_id: cluster.resource_id.clone(),
            engine: cluster.engine.clone(),
            engine_version: cluster.engine_version.clone(),
            engine_mode: ENGINE_MODE.into(),
            status: self.shown_status(cluster).into(),
            cluster_create_time: cluster.created_at,
            backtrack_window: cluster
                .backtrack_ever_enabled
                .then_some(cluster.backtrack_window),
            earliest_backtrack_time: earliest,
            backtrack_consumed_change_records: figures
                .filter(|_| cluster.backtrack_ever_enabled)
                .map(|f| f.change_records_stored),
            deletion_protection: cluster.deletion_protection,
            http_endpoint_enabled: cluster.http_endpoint_enabled,
            endpoint: endpoint.as_ref().map(|(host, _)| host.clone()),
            port: endpoint.map(|(_, port)| port),
            database_name: Some(cluster.database().to_string()),
            master_username: cluster.master_username.clone(),
            tag_list: cluster.tags.clone(),
            clone_group_id: cluster.clone_group_id.clone(),
        }
    }
}
