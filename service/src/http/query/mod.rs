//! The RDS query protocol, the front door aws-cli, boto3 and the AWS SDKs use: a form
//! (`Action=…&Version=2014-10-31&…`) posted to `/`, or the same parameters in a `GET /`
//! query string, answered in XML. Each action decodes its form into the operation's own
//! input type ([`form`]), calls the operation the REST routes call, and writes the result as
//! RDS does ([`xml`]); errors come from the one error table and are written as
//! `ErrorResponse` by the error layer (http/mod.rs).

pub mod form;
pub mod xml;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use self::form::{Input, Shape, FILTERS, TAGS};
use super::AppState;
use crate::error::ApiError;
use crate::ops::clusters::DbClusterResult;
use crate::ops::tags::TagListMessage;
use crate::ops::{required, Ops};

pub const VERSION: &str = "2014-10-31";

/// `POST /` and `GET /`.
pub async fn handle(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let request_id = super::request_id(request.headers()).to_string();
    let method = request.method().clone();
    let query = Bytes::copy_from_slice(request.uri().query().unwrap_or_default().as_bytes());
    // The parameters are the form posted, or the query string (of a GET, or of a POST
    // without a body, as botocore's presigned URLs are).
    let form = match method {
        Method::POST => form_body(request).await?.unwrap_or(query),
        _ => query,
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&form).into_owned().collect();
    let mut action = None;
    let mut version = None;
    let mut rest = Vec::with_capacity(pairs.len());
    for (name, value) in &pairs {
        match name.as_str() {
            "Action" => action = Some(value.as_str()),
            "Version" => version = Some(value.as_str()),
            // Presigned requests carry their signature in the query string.
            n if n.starts_with("X-Amz-") => {}
            _ => rest.push((name.as_str(), value.as_str())),
        }
    }
    let action = action.filter(|a| !a.is_empty()).ok_or_else(|| {
        ApiError::MissingAction("The request must contain the parameter Action.".into())
    })?;
    match version {
        Some(VERSION) => {}
        Some(other) => {
            return Err(ApiError::InvalidParameterValue(format!(
                "Version {other:?} is not supported: this is the RDS API version {VERSION}."
            )))
        }
        None => {
            return Err(ApiError::MissingParameter(
                "The request must contain the parameter Version.".into(),
            ))
        }
    }
    if method == Method::GET && !state.ops.settings.authenticated && !reads_only(action) {
        // Any web page can make a browser send a GET; unsigned, it may only read.
        return Err(ApiError::Forbidden(format!(
            "{action} changes state, so it must be POSTed (or signed) on this service, which \
             does not authenticate requests."
        )));
    }
    let body = dispatch(&state.ops, action, &rest, &request_id).await?;
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    Ok(response)
}

/// A form body, sent as a form; `None` when there is no body.
async fn form_body(request: Request) -> Result<Option<Bytes>, ApiError> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    let body = super::read_body(request, &()).await?;
    match (is_form, body.is_empty()) {
        (_, true) => Ok(None),
        (true, false) => Ok(Some(body)),
        (false, false) => Err(ApiError::UnsupportedMediaType(
            "A query-protocol request is a form: Content-Type: application/x-www-form-urlencoded."
                .into(),
        )),
    }
}

fn reads_only(action: &str) -> bool {
    action.starts_with("Describe") || action.starts_with("List")
}

async fn dispatch(
    ops: &Ops,
    action: &str,
    pairs: &[(&str, &str)],
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let decode = |input: &Input| form::decode(action, input, pairs.iter().copied());
    macro_rules! reply {
        ($result:expr) => {
            xml::response(action, &$result, request_id)
        };
    }
    match action {
        "CreateDBCluster" => {
            let cluster = ops.create_cluster(input(decode(&CREATE)?)?).await?;
            reply!(DbClusterResult {
                db_cluster: cluster
            })
        }
        "DescribeDBClusters" => {
            let params = form::listing_params(decode(&DESCRIBE_CLUSTERS)?)?;
            reply!(ops.describe_clusters(input(params)?).await?)
        }
        "ModifyDBCluster" => {
            let mut members = decode(&MODIFY)?;
            let id = cluster_id(&mut members)?;
            let cluster = ops.modify_cluster(&id, input(members)?).await?;
            reply!(DbClusterResult {
                db_cluster: cluster
            })
        }
        "DeleteDBCluster" => {
            let mut members = decode(&DELETE)?;
            let id = cluster_id(&mut members)?;
            reply!(DbClusterResult {
                db_cluster: ops.delete_cluster(&id).await?,
            })
        }
        "BacktrackDBCluster" => {
            let mut members = decode(&BACKTRACK)?;
            let id = cluster_id(&mut members)?;
            reply!(ops.start_backtrack(&id, input(members)?).await?)
        }
        "DescribeDBClusterBacktracks" => {
            let mut members = decode(&DESCRIBE_BACKTRACKS)?;
            let id = cluster_id(&mut members)?;
            let params = input(form::listing_params(members)?)?;
            reply!(ops.describe_backtracks(&id, params).await?)
        }
        "DescribeEvents" => {
            let params = input(form::listing_params(decode(&DESCRIBE_EVENTS)?)?)?;
            reply!(ops.describe_events(params).await?)
        }
        "DescribeEventCategories" => {
            let members = decode(&DESCRIBE_EVENT_CATEGORIES)?;
            let source_type = members.get("SourceType").and_then(Value::as_str);
            reply!(ops.event_categories(source_type)?)
        }
        "AddTagsToResource" => {
            ops.add_tags(input(decode(&ADD_TAGS)?)?).await?;
            reply!(Map::new())
        }
        "ListTagsForResource" => {
            let members = decode(&LIST_TAGS)?;
            let resource = members.get("ResourceName").and_then(Value::as_str);
            let tags = ops.list_tags(resource.map(str::to_string)).await?;
            reply!(TagListMessage { tag_list: tags })
        }
        "RemoveTagsFromResource" => {
            ops.remove_tags(input(decode(&REMOVE_TAGS)?)?).await?;
            reply!(Map::new())
        }
        "RestoreDBClusterToPointInTime" => {
            let cluster = ops.restore_cluster(None, input(decode(&RESTORE)?)?).await?;
            reply!(DbClusterResult {
                db_cluster: cluster
            })
        }
        other => Err(ApiError::InvalidAction(format!(
            "The action {other} is not valid for this web service. Backtrack serves \
             CreateDBCluster, DescribeDBClusters, ModifyDBCluster, DeleteDBCluster, \
             BacktrackDBCluster, DescribeDBClusterBacktracks, DescribeEvents, \
             DescribeEventCategories, RestoreDBClusterToPointInTime, AddTagsToResource, \
             ListTagsForResource and RemoveTagsFromResource."
        ))),
    }
}

/// The operation's input type, read from the decoded members.
fn input<T: DeserializeOwned>(members: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(members))
        .map_err(|e| ApiError::InvalidParameterValue(format!("Invalid parameter value: {e}")))
}

/// Takes out `DBClusterIdentifier`, which the REST API has in the path.
fn cluster_id(members: &mut Map<String, Value>) -> Result<String, ApiError> {
    let id = members
        .remove("DBClusterIdentifier")
        .and_then(|v| v.as_str().map(str::to_string));
    required(id, "DBClusterIdentifier")
}

// The inputs, from the RDS model (reference/rds-api.md, Appendix A.3): the members Backtrack
// reads, with their types, and the model's other members, accepted and not kept.

static CREATE: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("Engine", Shape::Str),
        ("EngineVersion", Shape::Str),
        ("EngineMode", Shape::Str),
        ("BacktrackWindow", Shape::Int),
        ("DeletionProtection", Shape::Bool),
        ("EnableHttpEndpoint", Shape::Bool),
        ("DatabaseName", Shape::Str),
        ("MasterUsername", Shape::Str),
        ("MasterUserPassword", Shape::Str),
        ("Tags", TAGS),
    ],
    ignored: &[
        "AvailabilityZones",
        "BackupRetentionPeriod",
        "CharacterSetName",
        "DBClusterParameterGroupName",
        "VpcSecurityGroupIds",
        "DBSubnetGroupName",
        "Port",
        "OptionGroupName",
        "PreferredBackupWindow",
        "PreferredMaintenanceWindow",
        "ReplicationSourceIdentifier",
        "StorageEncrypted",
        "KmsKeyId",
        "PreSignedUrl",
        "EnableIAMDatabaseAuthentication",
        "EnableCloudwatchLogsExports",
        "ScalingConfiguration",
        "RdsCustomClusterConfiguration",
        "DBClusterInstanceClass",
        "AllocatedStorage",
        "StorageType",
        "Iops",
        "PubliclyAccessible",
        "AutoMinorVersionUpgrade",
        "GlobalClusterIdentifier",
        "CopyTagsToSnapshot",
        "Domain",
        "DomainIAMRoleName",
        "EnableGlobalWriteForwarding",
        "NetworkType",
        "ServerlessV2ScalingConfiguration",
        "MonitoringInterval",
        "MonitoringRoleArn",
        "DatabaseInsightsMode",
        "EnablePerformanceInsights",
        "PerformanceInsightsKMSKeyId",
        "PerformanceInsightsRetentionPeriod",
        "EnableLimitlessDatabase",
        "ClusterScalabilityType",
        "DBSystemId",
        "ManageMasterUserPassword",
        "EnableLocalWriteForwarding",
        "MasterUserSecretKmsKeyId",
        "CACertificateIdentifier",
        "EngineLifecycleSupport",
        "TagSpecifications",
        "MasterUserAuthenticationType",
        "WithExpressConfiguration",
        "AssociatedRoles",
    ],
};

static RESTORE: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("SourceDBClusterIdentifier", Shape::Str),
        ("RestoreType", Shape::Str),
        ("RestoreToTime", Shape::Str),
        ("UseLatestRestorableTime", Shape::Bool),
        ("BacktrackWindow", Shape::Int),
        ("DeletionProtection", Shape::Bool),
        ("EnableHttpEndpoint", Shape::Bool),
        ("MasterUserPassword", Shape::Str),
        ("Tags", TAGS),
    ],
    ignored: &[
        "Port",
        "DBSubnetGroupName",
        "OptionGroupName",
        "VpcSecurityGroupIds",
        "KmsKeyId",
        "EnableIAMDatabaseAuthentication",
        "EnableCloudwatchLogsExports",
        "DBClusterParameterGroupName",
        "CopyTagsToSnapshot",
        "Domain",
        "DomainIAMRoleName",
        "DBClusterInstanceClass",
        "StorageType",
        "PubliclyAccessible",
        "Iops",
        "NetworkType",
        "SourceDbClusterResourceId",
        "ServerlessV2ScalingConfiguration",
        "ScalingConfiguration",
        "EngineMode",
        "RdsCustomClusterConfiguration",
        "MonitoringInterval",
        "MonitoringRoleArn",
        "EnablePerformanceInsights",
        "PerformanceInsightsKMSKeyId",
        "PerformanceInsightsRetentionPeriod",
        "BackupRetentionPeriod",
        "PreferredBackupWindow",
        "EngineLifecycleSupport",
        "TagSpecifications",
        "EnableVPCNetworking",
        "EnableInternetAccessGateway",
        "AssociatedRoles",
    ],
};

static MODIFY: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("BacktrackWindow", Shape::Int),
        ("DeletionProtection", Shape::Bool),
        ("EnableHttpEndpoint", Shape::Bool),
        ("ApplyImmediately", Shape::Bool),
        ("MasterUserPassword", Shape::Str),
    ],
    ignored: &[
        "BackupRetentionPeriod",
        "DBClusterParameterGroupName",
        "VpcSecurityGroupIds",
        "Port",
        "OptionGroupName",
        "PreferredBackupWindow",
        "PreferredMaintenanceWindow",
        "EnableIAMDatabaseAuthentication",
        "CloudwatchLogsExportConfiguration",
        "AllowMajorVersionUpgrade",
        "DBInstanceParameterGroupName",
        "Domain",
        "DomainIAMRoleName",
        "ScalingConfiguration",
        "CopyTagsToSnapshot",
        "EnableGlobalWriteForwarding",
        "DBClusterInstanceClass",
        "AllocatedStorage",
        "StorageType",
        "Iops",
        "AutoMinorVersionUpgrade",
        "NetworkType",
        "ServerlessV2ScalingConfiguration",
        "MonitoringInterval",
        "MonitoringRoleArn",
        "DatabaseInsightsMode",
        "EnablePerformanceInsights",
        "PerformanceInsightsKMSKeyId",
        "PerformanceInsightsRetentionPeriod",
        "ManageMasterUserPassword",
        "RotateMasterUserPassword",
        "EnableLocalWriteForwarding",
        "MasterUserSecretKmsKeyId",
        "AwsBackupRecoveryPointArn",
        "EnableLimitlessDatabase",
        "CACertificateIdentifier",
        "MasterUserAuthenticationType",
        "EngineLifecycleSupport",
    ],
};

static DELETE: Input = Input {
    members: &[("DBClusterIdentifier", Shape::Str)],
    ignored: &[
        "SkipFinalSnapshot",
        "FinalDBSnapshotIdentifier",
        "DeleteAutomatedBackups",
    ],
};

static BACKTRACK: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("BacktrackTo", Shape::Str),
        ("Force", Shape::Bool),
        ("UseEarliestTimeOnPointInTimeUnavailable", Shape::Bool),
    ],
    ignored: &[],
};

static DESCRIBE_CLUSTERS: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("Filters", FILTERS),
        ("MaxRecords", Shape::Int),
        ("Marker", Shape::Str),
    ],
    ignored: &["IncludeShared"],
};

static DESCRIBE_BACKTRACKS: Input = Input {
    members: &[
        ("DBClusterIdentifier", Shape::Str),
        ("BacktrackIdentifier", Shape::Str),
        ("Filters", FILTERS),
        ("MaxRecords", Shape::Int),
        ("Marker", Shape::Str),
    ],
    ignored: &[],
};

static DESCRIBE_EVENTS: Input = Input {
    members: &[
        ("SourceIdentifier", Shape::Str),
        ("SourceType", Shape::Str),
        ("StartTime", Shape::Str),
        ("EndTime", Shape::Str),
        ("Duration", Shape::Int),
        ("EventCategories", Shape::List("EventCategory", &Shape::Str)),
        ("MaxRecords", Shape::Int),
        ("Marker", Shape::Str),
    ],
    // "This parameter isn't currently supported" (the RDS model).
    ignored: &["Filters"],
};

static DESCRIBE_EVENT_CATEGORIES: Input = Input {
    members: &[("SourceType", Shape::Str)],
    ignored: &["Filters"],
};

static ADD_TAGS: Input = Input {
    members: &[("ResourceName", Shape::Str), ("Tags", TAGS)],
    ignored: &[],
};

static LIST_TAGS: Input = Input {
    members: &[("ResourceName", Shape::Str)],
    ignored: &["Filters"],
};

static REMOVE_TAGS: Input = Input {
    members: &[
        ("ResourceName", Shape::Str),
        ("TagKeys", Shape::List("member", &Shape::Str)),
    ],
    ignored: &[],
};
