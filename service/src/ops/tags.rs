//! AddTagsToResource, ListTagsForResource and RemoveTagsFromResource: a cluster's tags,
//! named by its ARN, kept with the cluster in the metadata store (and so in its `TagList`).

use serde::{Deserialize, Serialize};

use super::{parse_cluster_ref, required, Ops};
use crate::domain::{validate_tags, Tag};
use crate::error::ApiError;

/// RDS's limit on tags per resource.
pub const MAX_TAGS: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTagsRequest {
    #[serde(rename = "ResourceName")]
    pub resource_name: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Option<Vec<Tag>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveTagsRequest {
    #[serde(rename = "ResourceName")]
    pub resource_name: Option<String>,
    #[serde(rename = "TagKeys")]
    pub tag_keys: Option<Vec<String>>,
}

/// ListTagsForResource's answer.
#[derive(Debug, Serialize)]
pub struct TagListMessage {
    #[serde(rename = "TagList")]
    pub tag_list: Vec<Tag>,
}

impl Ops {
    /// Adds tags to a cluster; a key it already has takes the new value.
    pub async fn add_tags(&self, request: AddTagsRequest) -> Result<(), ApiError> {
        let id = self.tagged(request.resource_name)?;
        let tags = required(request.tags, "Tags")?;
        validate_tags(&tags).map_err(ApiError::InvalidParameterValue)?;
        self.store
            .update_cluster(&id, |cluster| -> Result<(), ApiError> {
                for tag in tags {
                    match cluster.tags.iter_mut().find(|t| t.key == tag.key) {
                        Some(existing) => existing.value = tag.value,
                        None => cluster.tags.push(tag),
                    }
                }
                if cluster.tags.len() > MAX_TAGS {
                    return Err(ApiError::TagQuotaExceeded(format!(
                        "A resource can have at most {MAX_TAGS} tags; this would give {} {} tags.",
                        cluster.id,
                        cluster.tags.len()
                    )));
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The tags of a cluster.
    pub async fn list_tags(&self, resource_name: Option<String>) -> Result<Vec<Tag>, ApiError> {
        let id = self.tagged(resource_name)?;
        Ok(self.store.cluster(&id).await?.tags)
    }

    /// Removes the tags with these keys; keys the cluster does not have are ignored, as in RDS.
    pub async fn remove_tags(&self, request: RemoveTagsRequest) -> Result<(), ApiError> {
        let id = self.tagged(request.resource_name)?;
        let keys = required(request.tag_keys, "TagKeys")?;
        self.store
            .update_cluster(&id, |cluster| -> Result<(), ApiError> {
                cluster.tags.retain(|t| !keys.contains(&t.key));
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// The cluster a `ResourceName` names: it must be a cluster's ARN.
    fn tagged(&self, resource_name: Option<String>) -> Result<crate::domain::ClusterId, ApiError> {
        let arn = required(resource_name, "ResourceName")?;
        if !arn.starts_with("arn:") {
            return Err(ApiError::InvalidParameterValue(format!(
                "ResourceName must be the ARN of a DB cluster (arn:aws:rds:{}:{}:cluster:NAME), not {arn:?}.",
                self.settings.region, self.settings.account_id
            )));
        }
        parse_cluster_ref(&self.settings, &arn)
    }
}
