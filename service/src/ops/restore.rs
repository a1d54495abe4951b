//! RestoreDBClusterToPointInTime: a new cluster holding a source cluster's state at an
//! instant of its backtrack window. `copy-on-write` makes a clone that shares the source's
//! pages (its cost does not depend on the size; unlike Aurora, at any instant of the window,
//! not only now); `full-copy`, RDS's default, copies every page and shares nothing. Either
//! way the new cluster lives on its source's storage node and is a cluster like any other:
//! its own window, backtracks, bill and deletion.

use serde::Deserialize;
use utoipa::ToSchema;

use super::clusters::{master_verifier, DbCluster};
use super::{parse_cluster_ref, required, Ops};
use crate::domain::{
    new_resource_id, validate_tags, validate_window, Cluster, ClusterId, ClusterStatus,
    RestoreType, RestoredFrom, Tag, Timestamp,
};
use crate::error::ApiError;
use crate::events::What;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreDbClusterRequest {
    /// The new cluster's identifier (the rules of CreateDBCluster).
    #[serde(rename = "DBClusterIdentifier")]
    #[schema(
        value_type = String,
        required = true,
        pattern = "^[A-Za-z](-?[A-Za-z0-9])*$",
        min_length = 1,
        max_length = 63
    )]
    pub db_cluster_identifier: Option<String>,
    /// The cluster to restore from (identifier or ARN). On the REST route it is in the path;
    /// if given here too, it must name the same cluster.
    #[serde(rename = "SourceDBClusterIdentifier", default)]
    pub source_db_cluster_identifier: Option<String>,
    /// `full-copy` (the default) or `copy-on-write` (a clone).
    #[serde(rename = "RestoreType", default)]
    pub restore_type: Option<String>,
    /// The instant of the source to restore: within its backtrack window, not in the future.
    /// Exactly one of this and `UseLatestRestorableTime=true`.
    #[serde(rename = "RestoreToTime", default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub restore_to_time: Option<Timestamp>,
    /// Restore the source as it is now.
    #[serde(rename = "UseLatestRestorableTime", default)]
    pub use_latest_restorable_time: Option<bool>,
    /// The new cluster's target backtrack window in seconds, 0..=259200 (default 0). Its
    /// history starts at its creation.
    #[serde(rename = "BacktrackWindow", default)]
    #[schema(minimum = 0, maximum = 259200)]
    pub backtrack_window: Option<i64>,
    #[serde(rename = "DeletionProtection", default)]
    pub deletion_protection: Option<bool>,
    /// Whether the Data API may run SQL on the new cluster (default: as on the source).
    #[serde(rename = "EnableHttpEndpoint", default)]
    pub enable_http_endpoint: Option<bool>,
    /// A new master password for the new cluster (the rules of CreateDBCluster); without
    /// it, the source's password works on the new cluster too.
    #[serde(rename = "MasterUserPassword", default)]
    #[schema(min_length = 8, max_length = 128)]
    pub master_user_password: Option<String>,
    #[serde(rename = "Tags", default)]
    pub tags: Vec<Tag>,
}

impl Ops {
    /// RestoreDBClusterToPointInTime. `source` is the cluster named in the REST path, if any.
    /// The new cluster is `creating` until its node has made its volume (at once, in the
    /// common case).
    pub async fn restore_cluster(
        &self,
        source: Option<&str>,
        request: RestoreDbClusterRequest,
    ) -> Result<DbCluster, ApiError> {
        let invalid = ApiError::InvalidParameterValue;
        let id = required(request.db_cluster_identifier, "DBClusterIdentifier")?;
        let id = ClusterId::parse(&id).map_err(invalid)?;
        let source_id = self.source_of(source, request.source_db_cluster_identifier)?;
        let restore_type = request
            .restore_type
            .as_deref()
            .map(RestoreType::parse)
            .transpose()
            .map_err(invalid)?
            .unwrap_or(RestoreType::FullCopy);
        let now = Timestamp::now();
        let at = match (
            request.restore_to_time,
            request.use_latest_restorable_time.unwrap_or(false),
        ) {
            (Some(_), true) => {
                return Err(ApiError::InvalidParameterCombination(
                    "RestoreToTime and UseLatestRestorableTime=true cannot be given together."
                        .into(),
                ))
            }
            (None, false) => {
                return Err(ApiError::InvalidParameterCombination(
                    "Give either RestoreToTime or UseLatestRestorableTime=true.".into(),
                ))
            }
            (Some(at), false) => at,
            (None, true) => now,
        };
        let window = validate_window(request.backtrack_window.unwrap_or(0)).map_err(invalid)?;
        validate_tags(&request.tags).map_err(invalid)?;
        if at > now {
            return Err(ApiError::InvalidRestore(format!(
                "The RestoreToTime {at} is in the future; the latest restorable time is {now}."
            )));
        }
        let source = self.store.cluster(&source_id).await?;
        check_source(&source)?;
        let verifier = match master_verifier(
            source.master_username.as_deref(),
            request.master_user_password.as_deref(),
        )? {
            Some(new) => Some(new),
            None => source.master_user_verifier.clone(),
        };
        self.check_restorable(&source, at, now).await?;
        let mut cluster = Cluster {
            id,
            resource_id: new_resource_id(),
            engine: source.engine.clone(),
            engine_version: source.engine_version.clone(),
            status: ClusterStatus::Creating,
            backtrack_window: window,
            backtrack_enabled_at: (window > 0).then_some(now),
            backtrack_ever_enabled: window > 0,
            deletion_protection: request.deletion_protection.unwrap_or(false),
            http_endpoint_enabled: request
                .enable_http_endpoint
                .unwrap_or(source.http_endpoint_enabled),
            // Its own database: clients reach it by its identifier, beside its source.
            database_name: None,
            master_username: source.master_username.clone(),
            master_user_verifier: verifier,
            tags: request.tags,
            // A clone reads its source's pages: it lives where they are.
            node_id: source.node_id.clone(),
            clone_group_id: None,
            restored_from: Some(RestoredFrom {
                cluster: source.id.clone(),
                volume: source.resource_id.clone(),
                at,
                restore_type,
            }),
            created_at: now,
            updated_at: now,
        };
        let join_group = restore_type == RestoreType::CopyOnWrite;
        self.store
            .insert_restored(&mut cluster, &source.id, join_group, |locked| {
                if locked.resource_id != source.resource_id {
                    return Err(ApiError::InvalidClusterState(format!(
                        "DB cluster {} changed while the restore was requested; try again.",
                        source.id
                    )));
                }
                check_source(locked)
            })
            .await?;
        tracing::info!(cluster = %cluster.id, source = %source.id, %at, restore_type = restore_type.as_str(), "cluster restored");
        if let Some(from) = &cluster.restored_from {
            self.event(cluster.id.as_str(), What::Restored(&cluster, from))
                .await;
        }
        self.event(
            source.id.as_str(),
            What::Cloned {
                clone: cluster.id.as_str(),
                at,
            },
        )
        .await;
        let cluster = self.converge_now(cluster).await?;
        Ok(self.describe(&cluster, None, Timestamp::now()))
    }

    /// The source cluster, named in the path or the body (or both, alike).
    fn source_of(
        &self,
        in_path: Option<&str>,
        in_body: Option<String>,
    ) -> Result<ClusterId, ApiError> {
        let in_body = in_body
            .map(|named| parse_cluster_ref(&self.settings, &named))
            .transpose()?;
        match in_path {
            Some(named) => {
                let id = parse_cluster_ref(&self.settings, named)?;
                if in_body.as_ref().is_some_and(|body| *body != id) {
                    return Err(ApiError::InvalidParameterCombination(format!(
                        "SourceDBClusterIdentifier in the body does not name {id}, the cluster in the path."
                    )));
                }
                Ok(id)
            }
            None => required(in_body, "SourceDBClusterIdentifier"),
        }
    }

    /// Refuses an instant the source's history does not hold: before its earliest restorable
    /// time, as its node reports it (its actual window) or, when the node cannot be asked,
    /// as the metadata implies (the node decides when it answers).
    async fn check_restorable(
        &self,
        source: &Cluster,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        if source.backtrack_window == 0 {
            return Err(ApiError::InvalidRestore(format!(
                "DB cluster {} keeps no history (its BacktrackWindow is 0), so no point in time \
                 can be restored from it; set a BacktrackWindow with ModifyDBCluster first.",
                source.id
            )));
        }
        match self.history(source, now).await.1 {
            Some(earliest) if at >= earliest => Ok(()),
            Some(earliest) => Err(ApiError::InvalidRestore(format!(
                "The RestoreToTime {at} is before the earliest restorable time of DB cluster {}, {earliest}.",
                source.id
            ))),
            None => Err(ApiError::InvalidRestore(format!(
                "DB cluster {} has no restorable history.",
                source.id
            ))),
        }
    }
}

fn check_source(source: &Cluster) -> Result<(), ApiError> {
    if source.status.accepts_restore() {
        Ok(())
    } else {
        Err(ApiError::InvalidClusterState(format!(
            "DB cluster {} is in {} state and cannot be restored from now.",
            source.id,
            source.status.as_str()
        )))
    }
}
