//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types. openapi/openapi.json is this document, committed; a test fails
//! when the two differ (regenerate with `cargo run -p backtrack-service -- openapi`).

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::http::{backtracks, billing, clusters, data_api, events, health, metrics};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Backtrack",
        description = "Rewind a database cluster in place to any moment inside its backtrack \
                       window, the way Amazon Aurora Backtrack does. Members, statuses and error \
                       codes are RDS's; errors have the body \
                       `{\"Error\": {\"Code\", \"Message\", \"Type\"}, \"RequestId\"}` and every \
                       response carries `x-amzn-RequestId`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        clusters::create,
        clusters::describe,
        clusters::describe_one,
        clusters::modify,
        clusters::delete,
        clusters::restore,
        backtracks::create,
        backtracks::describe,
        backtracks::describe_one,
        backtracks::preview,
        events::describe,
        billing::all,
        billing::cluster,
        metrics::cluster,
        data_api::execute,
        data_api::batch_execute,
        data_api::begin,
        data_api::commit,
        data_api::rollback,
        metrics::prometheus,
        health::healthz,
        health::readyz,
        health::openapi_json,
        health::docs,
    ),
    tags(
        (name = "clusters", description = "CreateDBCluster, DescribeDBClusters, ModifyDBCluster, DeleteDBCluster, RestoreDBClusterToPointInTime (copy-on-write clones at any instant of the window)"),
        (name = "backtracks", description = "BacktrackDBCluster, DescribeDBClusterBacktracks, and the preview of what a backtrack would undo"),
        (name = "data-api", description = "The RDS Data API: SQL on a cluster, routed by resourceArn. The dialect is SQLite's. Errors name themselves in x-amzn-ErrorType with a body {\"message\": ...}."),
        (name = "events", description = "DescribeEvents: cluster and backtrack events, and the backtrack window alerts RDS-EVENT-0131 and RDS-EVENT-0132"),
        (name = "billing", description = "Usage and cost of backtrack change records, per million change-record-hours"),
        (name = "metrics", description = "CloudWatch-style backtrack metrics per cluster"),
        (name = "service", description = "Health, metrics and documentation"),
    ),
    modifiers(&Links)
)]
pub struct ApiDoc;

/// OpenAPI links: which response values another operation takes, so that a client (and
/// schemathesis's stateful phase) can chain calls on real resources: from a new cluster to
/// its backtracks and to SQL through the Data API, from a backtrack to its status, and from
/// a transaction to the statements, commit and rollback that use it.
struct Link {
    from: &'static str,
    status: &'static str,
    to: &'static str,
    /// `(path parameter, runtime expression)`.
    parameters: &'static [(&'static str, &'static str)],
    /// `(request body member, runtime expression)`: the Data API takes its cluster and
    /// transaction in the body.
    body: &'static [(&'static str, &'static str)],
}

const CLUSTER_ID: (&str, &str) = (
    "DBClusterIdentifier",
    "$response.body#/DBCluster/DBClusterIdentifier",
);
const CLUSTER_ARN: (&str, &str) = ("resourceArn", "$response.body#/DBCluster/DBClusterArn");
const IN_TRANSACTION: &[(&str, &str)] = &[
    ("resourceArn", "$request.body#/resourceArn"),
    ("transactionId", "$response.body#/transactionId"),
];

const LINKS: &[Link] = &[
    Link {
        from: "CreateDBCluster",
        status: "201",
        to: "BacktrackDBCluster",
        parameters: &[CLUSTER_ID],
        body: &[],
    },
    Link {
        from: "CreateDBCluster",
        status: "201",
        to: "DescribeDBClusterBacktracks",
        parameters: &[CLUSTER_ID],
        body: &[],
    },
    Link {
        from: "BacktrackDBCluster",
        status: "202",
        to: "DescribeDBClusterBacktrack",
        parameters: &[
            ("DBClusterIdentifier", "$response.body#/DBClusterIdentifier"),
            ("BacktrackIdentifier", "$response.body#/BacktrackIdentifier"),
        ],
        body: &[],
    },
    Link {
        from: "CreateDBCluster",
        status: "201",
        to: "ExecuteStatement",
        parameters: &[],
        body: &[CLUSTER_ARN],
    },
    Link {
        from: "CreateDBCluster",
        status: "201",
        to: "BatchExecuteStatement",
        parameters: &[],
        body: &[CLUSTER_ARN],
    },
    Link {
        from: "CreateDBCluster",
        status: "201",
        to: "BeginTransaction",
        parameters: &[],
        body: &[CLUSTER_ARN],
    },
    Link {
        from: "BeginTransaction",
        status: "200",
        to: "ExecuteStatement",
        parameters: &[],
        body: IN_TRANSACTION,
    },
    Link {
        from: "BeginTransaction",
        status: "200",
        to: "CommitTransaction",
        parameters: &[],
        body: IN_TRANSACTION,
    },
    Link {
        from: "BeginTransaction",
        status: "200",
        to: "RollbackTransaction",
        parameters: &[],
        body: IN_TRANSACTION,
    },
];

struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let operations = openapi.paths.paths.values_mut().flat_map(|item| {
            [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
        });
        for operation in operations {
            for link in LINKS {
                if operation.operation_id.as_deref() != Some(link.from) {
                    continue;
                }
                // The committed document (kept equal by a test) shows every link is made.
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut(link.status)
                else {
                    continue;
                };
                let body = (!link.body.is_empty()).then(|| {
                    let members = link.body.iter().map(|(name, value)| {
                        ((*name).to_string(), serde_json::Value::from(*value))
                    });
                    serde_json::Value::Object(members.collect())
                });
                let built = link
                    .parameters
                    .iter()
                    .fold(
                        LinkBuilder::new().operation_id(link.to),
                        |built, (name, value)| built.parameter(*name, *value),
                    )
                    .request_body(body)
                    .build();
                response.links.insert(link.to.to_string(), RefOr::T(built));
            }
        }
    }
}

/// The document as pretty JSON with a final newline: exactly the committed file.
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
