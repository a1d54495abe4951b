//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types. openapi/openapi.json is this document, committed; a test fails
//! when the two differ (regenerate with `cargo run -p backtrack-service -- openapi`).

use utoipa::OpenApi;

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
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a final newline: exactly the committed file.
pub fn document_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
