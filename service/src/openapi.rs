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
        backtracks::create,
        backtracks::describe,
        backtracks::describe_one,
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
        (name = "clusters", description = "CreateDBCluster, DescribeDBClusters, ModifyDBCluster, DeleteDBCluster"),
        (name = "backtracks", description = "BacktrackDBCluster, DescribeDBClusterBacktracks"),
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
/// its backtracks, and from a backtrack to its status. As `(operation, status, linked
/// operation, [(parameter, runtime expression)])`.
#[allow(clippy::type_complexity)]
const LINKS: &[(&str, &str, &str, &[(&str, &str)])] = &[
    (
        "CreateDBCluster",
        "201",
        "BacktrackDBCluster",
        &[(
            "DBClusterIdentifier",
            "$response.body#/DBCluster/DBClusterIdentifier",
        )],
    ),
    (
        "CreateDBCluster",
        "201",
        "DescribeDBClusterBacktracks",
        &[(
            "DBClusterIdentifier",
            "$response.body#/DBCluster/DBClusterIdentifier",
        )],
    ),
    (
        "BacktrackDBCluster",
        "202",
        "DescribeDBClusterBacktrack",
        &[
            ("DBClusterIdentifier", "$response.body#/DBClusterIdentifier"),
            ("BacktrackIdentifier", "$response.body#/BacktrackIdentifier"),
        ],
    ),
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
            for (source, status, target, parameters) in LINKS {
                if operation.operation_id.as_deref() != Some(*source) {
                    continue;
                }
                // The committed document (kept equal by a test) shows every link is made.
                let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status)
                else {
                    continue;
                };
                let link = parameters
                    .iter()
                    .fold(
                        LinkBuilder::new().operation_id(*target),
                        |link, (name, value)| link.parameter(*name, *value),
                    )
                    .build();
                response.links.insert((*target).to_string(), RefOr::T(link));
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
