//! CreateDBCluster, DescribeDBClusters, ModifyDBCluster and DeleteDBCluster, with RDS member
//! names. Changes that involve a storage node are recorded first (status `creating`,
//! `modifying`, `deleting`), then converged at once by the reconciler when the node answers,
//! or later by its background pass when it does not.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use backtrack_storage_node::api::VolumeFigures;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{json, AppState, JsonBody, QueryParams, Settings};
use crate::domain::paging::{decode_marker, encode_marker, validate_max_records};
use crate::domain::{
    new_resource_id, validate_window, Cluster, ClusterId, ClusterStatus, Tag, Timestamp,
};
use crate::error::{ApiError, ErrorResponse};
use crate::events::What;
use crate::nodes::{NodeFigures, Placement};
use crate::store::ClusterFilter;

/// The one engine: Aurora MySQL's name, so RDS tooling accepts the clusters; the SQL dialect
/// underneath is SQLite's.
pub const ENGINE: &str = "aurora-mysql";
pub const ENGINE_VERSION: &str = "sqlite-3.46.0";

/// A cluster named in a path: its identifier (case-insensitive; a letter first, then
/// letters, digits and single hyphens, no hyphen last, 1-63 characters) or its ARN
/// (`arn:aws:rds:REGION:ACCOUNT:cluster:IDENTIFIER`).
pub struct ClusterRef;

impl utoipa::PartialSchema for ClusterRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some("^(arn:.+:cluster:)?[A-Za-z](-?[A-Za-z0-9])*$"))
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for ClusterRef {}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDbClusterRequest {
    /// 1-63 letters, digits and hyphens; a letter first; no `--`; no trailing hyphen.
    /// Case-insensitive; stored lower-case.
    #[serde(rename = "DBClusterIdentifier")]
    #[schema(
        pattern = "^[A-Za-z](-?[A-Za-z0-9])*$",
        min_length = 1,
        max_length = 63
    )]
    pub db_cluster_identifier: String,
    /// `aurora-mysql` (the default and only engine).
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
    #[serde(rename = "MasterUsername", default)]
    pub master_username: Option<String>,
    /// Accepted for compatibility with RDS tooling; never stored.
    #[serde(rename = "MasterUserPassword", default)]
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
    #[serde(rename = "DatabaseName", skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    #[serde(rename = "MasterUsername", skip_serializing_if = "Option::is_none")]
    pub master_username: Option<String>,
    #[serde(rename = "TagList")]
    pub tag_list: Vec<Tag>,
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
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct DescribeDbClustersParams {
    /// One cluster (identifier or ARN); an unknown one is DBClusterNotFoundFault.
    DBClusterIdentifier: Option<String>,
    /// Page size, 20..=100 (default 100).
    #[param(minimum = 20, maximum = 100)]
    MaxRecords: Option<i64>,
    /// The `Marker` of the previous page.
    Marker: Option<String>,
    /// Filter: cluster identifiers or ARNs.
    #[param(rename = "db-cluster-id")]
    db_cluster_id: Option<Vec<String>>,
    /// Filter: engines.
    engine: Option<Vec<String>>,
    /// Filter: resource ids (`cluster-…`).
    #[param(rename = "db-cluster-resource-id")]
    db_cluster_resource_id: Option<Vec<String>>,
}

/// Creates a cluster (CreateDBCluster) and its volume on the least-loaded storage node.
#[utoipa::path(
    post, path = "/v1/clusters", tag = "clusters", operation_id = "CreateDBCluster",
    request_body = CreateDbClusterRequest,
    responses(
        (status = 201, description = "Created; `Status` is `creating` until the volume exists", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue, MissingParameter, DBClusterAlreadyExistsFault, InsufficientStorageClusterCapacity, StorageQuotaExceeded (every storage node's disk is full)", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateDbClusterRequest>,
) -> Result<Response, ApiError> {
    let id = ClusterId::parse(&request.db_cluster_identifier)
        .map_err(ApiError::InvalidParameterValue)?;
    let engine = request.engine.unwrap_or_else(|| ENGINE.to_string());
    if engine != ENGINE {
        return Err(ApiError::InvalidParameterValue(format!(
            "Backtrack is not enabled for the {engine} engine: clusters run the {ENGINE} engine \
             (SQL dialect: SQLite)."
        )));
    }
    if let Some(version) = request.engine_version.filter(|v| v != ENGINE_VERSION) {
        return Err(ApiError::InvalidParameterValue(format!(
            "Cannot find version {version} for {ENGINE}; the available version is {ENGINE_VERSION}."
        )));
    }
    if let Some(mode) = request.engine_mode.filter(|m| m != "provisioned") {
        return Err(ApiError::InvalidParameterValue(format!(
            "The engine mode {mode} is not supported; use provisioned."
        )));
    }
    let window = validate_window(request.backtrack_window.unwrap_or(0))
        .map_err(ApiError::InvalidParameterValue)?;
    for tag in &request.tags {
        if tag.key.is_empty() || tag.key.len() > 128 || tag.value.len() > 256 {
            return Err(ApiError::InvalidParameterValue(format!(
                "Invalid tag {:?}: keys are 1-128 characters and values at most 256.",
                tag.key
            )));
        }
    }
    let per_node = state.store.clusters_per_node().await?;
    let node =
        match state.nodes.place(&per_node) {
            Placement::On(node) => node,
            Placement::DisksFull => return Err(ApiError::StorageQuotaExceeded(
                "The storage nodes' disks are full: no node can hold a new cluster until space \
                 is freed."
                    .into(),
            )),
            Placement::NoNode => {
                return Err(ApiError::InsufficientCapacity(
                    "No healthy storage node can hold the cluster's volume right now.".into(),
                ))
            }
        };
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
        tags: request.tags,
        node_id: node,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_cluster(&cluster).await?;
    tracing::info!(cluster = %cluster.id, node = %cluster.node_id, window, "cluster created");
    state
        .event(cluster.id.as_str(), What::Created(&cluster))
        .await;
    converged_reply(&state, cluster, StatusCode::CREATED).await
}

/// Lists clusters (DescribeDBClusters), in identifier order, a page at a time.
#[utoipa::path(
    get, path = "/v1/clusters", tag = "clusters", operation_id = "DescribeDBClusters",
    params(DescribeDbClustersParams),
    responses(
        (status = 200, description = "A page of clusters", body = DbClusterMessage),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault (DBClusterIdentifier given and unknown)", body = ErrorResponse),
    )
)]
pub async fn describe(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(
        query.as_deref(),
        &[
            "DBClusterIdentifier",
            "MaxRecords",
            "Marker",
            "db-cluster-id",
            "engine",
            "db-cluster-resource-id",
        ],
    )?;
    let limit = validate_max_records(params.integer("MaxRecords")?)
        .map_err(ApiError::InvalidParameterValue)?;
    let after = params
        .one("Marker")?
        .map(|m| decode_marker::<String>("clusters", m))
        .transpose()
        .map_err(ApiError::InvalidParameterValue)?;
    let mut filter = ClusterFilter {
        ids: params
            .all("db-cluster-id")
            .iter()
            .map(|v| parse_cluster_ref(&state.settings, v).map(|id| id.to_string()))
            .collect::<Result<_, _>>()?,
        engines: params.all("engine"),
        resource_ids: params.all("db-cluster-resource-id"),
    };
    if let Some(one) = params.one("DBClusterIdentifier")? {
        let id = parse_cluster_ref(&state.settings, one)?;
        // An explicit identifier must exist, as in RDS.
        state.store.cluster(&id).await?;
        filter.ids = vec![id.to_string()];
    }
    let mut clusters = state
        .store
        .clusters(&filter, after.as_deref(), limit + 1)
        .await?;
    let marker = if clusters.len() as i64 > limit {
        clusters.truncate(limit as usize);
        clusters
            .last()
            .map(|c| encode_marker("clusters", &c.id.to_string()))
    } else {
        None
    };
    let figures = figures_for(&state, &clusters).await;
    let now = Timestamp::now();
    let body = DbClusterMessage {
        db_clusters: clusters
            .iter()
            .map(|c| {
                let live = figures.get(&c.node_id).and_then(|f| f.get(&c.resource_id));
                describe_cluster(c, live, &state, now)
            })
            .collect(),
        marker,
    };
    Ok(json(StatusCode::OK, &body))
}

/// Describes one cluster.
#[utoipa::path(
    get, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "DescribeDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier (case-insensitive) or ARN")),
    responses(
        (status = 200, description = "The cluster", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn describe_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let cluster = state
        .store
        .cluster(&parse_cluster_ref(&state.settings, &id)?)
        .await?;
    let figures = state
        .nodes
        .volume_figures(&cluster.node_id, &cluster.resource_id)
        .await;
    let body = DbClusterResult {
        db_cluster: describe_cluster(&cluster, figures.as_ref(), &state, Timestamp::now()),
    };
    Ok(json(StatusCode::OK, &body))
}

/// Changes a cluster (ModifyDBCluster): its backtrack window, deletion protection or Data API
/// access. Changes apply immediately.
#[utoipa::path(
    patch, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "ModifyDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    request_body = ModifyDbClusterRequest,
    responses(
        (status = 200, description = "The cluster, changed", body = DbClusterResult),
        (status = 400, description = "InvalidParameterValue, InvalidDBClusterStateFault", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
        (status = 415, description = "UnsupportedMediaType", body = ErrorResponse),
    )
)]
pub async fn modify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ModifyDbClusterRequest>,
) -> Result<Response, ApiError> {
    let id = parse_cluster_ref(&state.settings, &id)?;
    let window = request
        .backtrack_window
        .map(validate_window)
        .transpose()
        .map_err(ApiError::InvalidParameterValue)?;
    let now = Timestamp::now();
    let cluster = state
        .store
        .update_cluster(&id, |cluster| -> Result<(), ApiError> {
            if cluster.status != ClusterStatus::Available {
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
            if let Some(window) = window.filter(|w| *w != cluster.backtrack_window) {
                if cluster.backtrack_window == 0 {
                    cluster.backtrack_enabled_at = Some(now);
                }
                if window == 0 {
                    cluster.backtrack_enabled_at = None;
                }
                cluster.backtrack_window = window;
                cluster.backtrack_ever_enabled |= window > 0;
                cluster.status = ClusterStatus::Modifying;
            }
            Ok(())
        })
        .await?;
    tracing::info!(cluster = %cluster.id, window = cluster.backtrack_window, "cluster modified");
    state
        .event(cluster.id.as_str(), What::Modified(&cluster))
        .await;
    converged_reply(&state, cluster, StatusCode::OK).await
}

/// Deletes a cluster (DeleteDBCluster) and its volume, history included. Refused while
/// deletion protection is on or a backtrack runs.
#[utoipa::path(
    delete, path = "/v1/clusters/{DBClusterIdentifier}", tag = "clusters", operation_id = "DeleteDBCluster",
    params(("DBClusterIdentifier" = inline(ClusterRef), Path, description = "Cluster identifier or ARN")),
    responses(
        (status = 200, description = "Deletion started; `Status` is `deleting`", body = DbClusterResult),
        (status = 400, description = "InvalidParameterCombination (deletion protection), InvalidDBClusterStateFault", body = ErrorResponse),
        (status = 404, description = "DBClusterNotFoundFault", body = ErrorResponse),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_cluster_ref(&state.settings, &id)?;
    let cluster = state
        .store
        .update_cluster(&id, |cluster| -> Result<(), ApiError> {
            if cluster.deletion_protection {
                return Err(ApiError::InvalidParameterCombination(
                    "Cannot delete protected Cluster, please disable deletion protection and try again."
                        .into(),
                ));
            }
            match cluster.status {
                ClusterStatus::Available | ClusterStatus::Creating | ClusterStatus::Modifying => {
                    cluster.status = ClusterStatus::Deleting;
                    Ok(())
                }
                other => Err(ApiError::InvalidClusterState(format!(
                    "DB cluster {} is in {} state and cannot be deleted now.",
                    cluster.id,
                    other.as_str()
                ))),
            }
        })
        .await?;
    tracing::info!(cluster = %cluster.id, "cluster deletion started");
    state
        .event(cluster.id.as_str(), What::Deleted(&cluster))
        .await;
    let body = DbClusterResult {
        db_cluster: describe_cluster(&cluster, None, &state, Timestamp::now()),
    };
    // The description above is of the cluster being deleted; the volume goes now if the
    // node answers, or on a later pass.
    if let Err(e) = state.reconciler.converge(&cluster).await {
        tracing::warn!(cluster = %cluster.id, error = %e, "deletion left to the background pass");
    }
    state.wakeup.wake();
    Ok(json(StatusCode::OK, &body))
}

/// Asks the reconciler to act on the node now, so the common case answers with the final
/// status; if the node does not answer, the background pass finishes later.
/// Converges a created or modified cluster if its node answers now, and describes the result.
async fn converged_reply(
    state: &AppState,
    cluster: Cluster,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let cluster = converge_now(state, cluster).await?;
    let body = DbClusterResult {
        db_cluster: describe_cluster(&cluster, None, state, Timestamp::now()),
    };
    Ok(json(status, &body))
}

async fn converge_now(state: &AppState, cluster: Cluster) -> Result<Cluster, ApiError> {
    if !matches!(
        cluster.status,
        ClusterStatus::Creating | ClusterStatus::Modifying
    ) {
        return Ok(cluster);
    }
    if !state.reconciler.converge(&cluster).await? {
        state.wakeup.wake();
    }
    // Re-read either way: the background pass may have converged it first.
    Ok(state.store.cluster(&cluster.id).await?)
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

/// The live figures of the nodes holding `clusters`, one call per node (cached briefly).
async fn figures_for(state: &AppState, clusters: &[Cluster]) -> HashMap<String, NodeFigures> {
    let mut all = HashMap::new();
    for cluster in clusters {
        if !all.contains_key(&cluster.node_id) {
            if let Some(figures) = state.nodes.node_figures(&cluster.node_id).await {
                all.insert(cluster.node_id.clone(), figures);
            }
        }
    }
    all
}

/// The status a cluster shows: its own, or `inaccessible` while its storage node does not
/// answer.
pub fn shown_status(cluster: &Cluster, state: &AppState) -> &'static str {
    match cluster.status {
        ClusterStatus::Available | ClusterStatus::Backtracking | ClusterStatus::Modifying
            if !state.nodes.is_healthy(&cluster.node_id) =>
        {
            "inaccessible"
        }
        status => status.as_str(),
    }
}

/// The API's view of a cluster. With the node's figures, EarliestBacktrackTime is what the
/// node can really rewind to; without them, what the metadata implies.
pub fn describe_cluster(
    cluster: &Cluster,
    figures: Option<&VolumeFigures>,
    state: &AppState,
    now: Timestamp,
) -> DbCluster {
    let settings: &Settings = &state.settings;
    let earliest = match figures {
        Some(f) if cluster.backtrack_window > 0 => {
            f.earliest_restorable_us.map(Timestamp::from_micros)
        }
        _ => cluster.earliest_backtrack_time(now),
    };
    DbCluster {
        db_cluster_identifier: cluster.id.to_string(),
        db_cluster_arn: settings.cluster_arn(cluster.id.as_str()),
        db_cluster_resource_id: cluster.resource_id.clone(),
        engine: cluster.engine.clone(),
        engine_version: cluster.engine_version.clone(),
        engine_mode: "provisioned".into(),
        status: shown_status(cluster, state).into(),
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
        database_name: cluster.database_name.clone(),
        master_username: cluster.master_username.clone(),
        tag_list: cluster.tags.clone(),
    }
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
