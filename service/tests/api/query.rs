//! The RDS query protocol (`POST /` forms, XML replies) against the real app: the same
//! operations as the REST routes, RDS's envelopes and error codes, and the protections an
//! unauthenticated service needs for a protocol any web page can post.

use reqwest::header::{HeaderName, CONTENT_TYPE, ORIGIN};
use serde::Deserialize;

use crate::helpers::{spawn_app, TestApp};

/// A reply: its status, content type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub request_id: String,
    pub body: String,
}

/// Posts a form (pairs joined as botocore does) to `/`.
pub async fn call(app: &TestApp, form: &[(&str, &str)]) -> Reply {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = app
        .http
        .post(format!("{}/", app.address))
        .header(
            CONTENT_TYPE,
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .unwrap();
    reply(response).await
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let reply = Reply {
        status: response.status().as_u16(),
        content_type: header("content-type"),
        request_id: header("x-amzn-requestid"),
        body: response.text().await.unwrap(),
    };
    if reply.content_type == "text/xml" {
        check_envelope(&reply);
    }
    reply
}

/// Every XML reply parses back, and has RDS's envelope: `{Op}Response` whose first child is
/// `{Op}Result` (what the Rust SDK reads) and whose last is `ResponseMetadata`, or
/// `ErrorResponse` with `Error` then `RequestId`.
fn check_envelope(reply: &Reply) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(&reply.body);
    let mut depth = 0;
    let mut root = String::new();
    let mut children = Vec::new();
    let mut record = |depth: usize, name: &[u8]| {
        let name = String::from_utf8(name.to_vec()).unwrap();
        match depth {
            0 => root = name,
            1 => children.push(name),
            _ => {}
        }
    };
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("not well-formed XML ({e}): {}", reply.body));
        match event {
            Event::Start(e) => {
                record(depth, e.name().as_ref());
                depth += 1;
            }
            Event::Empty(e) => record(depth, e.name().as_ref()),
            Event::End(_) => depth -= 1,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "{}", reply.body);
    if root == "ErrorResponse" {
        assert_eq!(children, ["Error", "RequestId"], "{}", reply.body);
    } else {
        let action = root.strip_suffix("Response").expect("an {Op}Response root");
        assert_eq!(
            children,
            [format!("{action}Result"), "ResponseMetadata".into()],
            "{}",
            reply.body
        );
    }
}

#[derive(Debug, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "Error")]
    pub error: ErrorDetail,
    #[serde(rename = "RequestId")]
    pub request_id: String,
}

#[derive(Debug, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message")]
    pub message: String,
}

/// Asserts an `ErrorResponse` with this status and code, and its request id in the header.
pub fn assert_xml_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.content_type, "text/xml", "{}", reply.body);
    let parsed: ErrorResponse = quick_xml::de::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("not an ErrorResponse ({e}): {}", reply.body));
    assert_eq!(parsed.error.code, code, "{}", reply.body);
    assert!(matches!(parsed.error.kind.as_str(), "Sender" | "Receiver"));
    assert!(!parsed.error.message.is_empty());
    assert_eq!(parsed.request_id, reply.request_id);
}

#[derive(Debug, Deserialize)]
struct DescribeClustersResponse {
    #[serde(rename = "DescribeDBClustersResult")]
    result: DescribeClustersResult,
}

#[derive(Debug, Deserialize)]
struct DescribeClustersResult {
    #[serde(rename = "DBClusters")]
    clusters: Items<Cluster>,
    #[serde(rename = "Marker")]
    marker: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Items<T> {
    #[serde(rename = "$value", default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    #[serde(rename = "DBClusterIdentifier")]
    id: String,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "BacktrackWindow")]
    window: Option<u64>,
    #[serde(rename = "TagList")]
    tags: Items<Tag>,
}

#[derive(Debug, Deserialize)]
struct Tag {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Value")]
    value: String,
}

fn describe(reply: &Reply) -> DescribeClustersResult {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let parsed: DescribeClustersResponse = quick_xml::de::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("not a DescribeDBClustersResponse ({e}): {}", reply.body));
    parsed.result
}

const V: (&str, &str) = ("Version", "2014-10-31");

#[tokio::test]
async fn a_cluster_is_created_tagged_described_and_deleted_through_forms() {
    let app = spawn_app().await;
    let created = call(
        &app,
        &[
            ("Action", "CreateDBCluster"),
            V,
            ("DBClusterIdentifier", "Shop"),
            ("Engine", "aurora-mysql"),
            ("BacktrackWindow", "3600"),
            ("MasterUsername", "admin"),
            ("VpcSecurityGroupIds.VpcSecurityGroupId.1", "sg-1"),
            ("Tags.Tag.1.Key", "team"),
            ("Tags.Tag.1.Value", "db"),
            ("Tags.Tag.2.Key", "env"),
            ("Tags.Tag.2.Value", "dev"),
        ],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.content_type, "text/xml");
    assert!(created.body.starts_with(
        "<CreateDBClusterResponse xmlns=\"http://rds.amazonaws.com/doc/2014-10-31/\"><CreateDBClusterResult><DBCluster>"
    ), "{}", created.body);
    assert!(created.body.contains(&format!(
        "<ResponseMetadata><RequestId>{}</RequestId>",
        created.request_id
    )));

    let listed = describe(&call(&app, &[("Action", "DescribeDBClusters"), V]).await);
    let [cluster] = &listed.clusters.items[..] else {
        panic!("one cluster expected: {listed:?}")
    };
    assert_eq!((cluster.id.as_str(), cluster.window), ("shop", Some(3600)));
    assert_eq!(cluster.status, "available");
    let tags: Vec<_> = cluster
        .tags
        .items
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    assert_eq!(tags, [("team", "db"), ("env", "dev")]);
    assert!(listed.marker.is_none());

    // The same cluster on the REST API.
    let (status, rest) = app.get("/v1/clusters/shop").await;
    assert_eq!(status, 200);
    assert_eq!(rest["DBCluster"]["TagList"][1]["Key"], "env");

    let deleted = call(
        &app,
        &[
            ("Action", "DeleteDBCluster"),
            V,
            ("DBClusterIdentifier", "shop"),
            ("SkipFinalSnapshot", "true"),
        ],
    )
    .await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert!(
        deleted.body.contains("<Status>deleting</Status>") || deleted.body.contains("<Status>")
    );
}

#[tokio::test]
async fn pages_carry_a_marker_only_while_more_follow() {
    let app = spawn_app().await;
    for i in 0..25 {
        app.create_cluster(&format!("c{i:02}"), 0).await;
    }
    let first = describe(
        &call(
            &app,
            &[("Action", "DescribeDBClusters"), V, ("MaxRecords", "20")],
        )
        .await,
    );
    assert_eq!(first.clusters.items.len(), 20);
    let marker = first.marker.expect("a marker while more follow");
    let second = describe(
        &call(
            &app,
            &[
                ("Action", "DescribeDBClusters"),
                V,
                ("MaxRecords", "20"),
                ("Marker", &marker),
            ],
        )
        .await,
    );
    assert_eq!(second.clusters.items.len(), 5);
    assert_eq!(second.clusters.items[0].id, "c20");
    assert!(second.marker.is_none());
    assert!(second
        .clusters
        .items
        .iter()
        .all(|c| c.tags.items.is_empty()));

    let filtered = describe(
        &call(
            &app,
            &[
                ("Action", "DescribeDBClusters"),
                V,
                ("Filters.Filter.1.Name", "db-cluster-id"),
                ("Filters.Filter.1.Values.Value.1", "c03"),
                (
                    "Filters.Filter.1.Values.Value.2",
                    "arn:aws:rds:us-east-1:000000000000:cluster:c07",
                ),
            ],
        )
        .await,
    );
    let ids: Vec<_> = filtered
        .clusters
        .items
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(ids, ["c03", "c07"]);
    let empty = call(
        &app,
        &[
            ("Action", "DescribeDBClusters"),
            V,
            ("Filters.Filter.1.Name", "engine"),
            ("Filters.Filter.1.Values.Value.1", "postgres"),
        ],
    )
    .await;
    assert!(empty.body.contains("<DBClusters/>"), "{}", empty.body);
}

#[tokio::test]
async fn a_backtrack_is_started_and_found_by_its_status_filter() {
    let app = spawn_app().await;
    app.create_cluster("shop", 3600).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let to = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let started = call(
        &app,
        &[
            ("Action", "BacktrackDBCluster"),
            V,
            ("DBClusterIdentifier", "shop"),
            ("BacktrackTo", &to),
            ("UseEarliestTimeOnPointInTimeUnavailable", "true"),
        ],
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.body);
    assert!(
        started.body.contains("<BacktrackDBClusterResult><"),
        "{}",
        started.body
    );
    assert!(started.body.contains("<Status>pending</Status>"));
    let id = started
        .body
        .split("<BacktrackIdentifier>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    let backtrack = app.wait_for_backtrack("shop", &id).await;
    assert_eq!(backtrack["Status"], "completed");

    let found = call(
        &app,
        &[
            ("Action", "DescribeDBClusterBacktracks"),
            V,
            ("DBClusterIdentifier", "shop"),
            ("Filters.Filter.1.Name", "db-cluster-backtrack-status"),
            ("Filters.Filter.1.Values.Value.1", "applying"),
            ("Filters.Filter.1.Values.Value.2", "completed"),
        ],
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(
        found.body.contains(&format!(
        "<DBClusterBacktracks><DBClusterBacktrack><DBClusterIdentifier>shop</DBClusterIdentifier><BacktrackIdentifier>{id}</BacktrackIdentifier>"
    )),
        "{}",
        found.body
    );
    let none = call(
        &app,
        &[
            ("Action", "DescribeDBClusterBacktracks"),
            V,
            ("DBClusterIdentifier", "shop"),
            ("Filters.Filter.1.Name", "db-cluster-backtrack-status"),
            ("Filters.Filter.1.Values.Value.1", "failed"),
        ],
    )
    .await;
    assert!(
        none.body.contains("<DBClusterBacktracks/>"),
        "{}",
        none.body
    );
    let unknown = call(
        &app,
        &[
            ("Action", "DescribeDBClusterBacktracks"),
            V,
            ("DBClusterIdentifier", "shop"),
            (
                "BacktrackIdentifier",
                "123e4567-e89b-12d3-a456-426655440000",
            ),
        ],
    )
    .await;
    assert_xml_error(&unknown, 404, "DBClusterBacktrackNotFoundFault");

    let events = call(
        &app,
        &[
            ("Action", "DescribeEvents"),
            V,
            ("SourceType", "db-cluster"),
            ("EventCategories.EventCategory.1", "backtrack"),
        ],
    )
    .await;
    assert_eq!(events.status, 200, "{}", events.body);
    assert!(
        events.body.contains(
            "<EventCategories><EventCategory>backtrack</EventCategory></EventCategories>"
        ),
        "{}",
        events.body
    );
    assert!(!events.body.contains("creation"), "{}", events.body);
}

#[tokio::test]
async fn tags_are_added_listed_and_removed_by_arn() {
    let app = spawn_app().await;
    app.create_cluster("shop", 0).await;
    let arn = "arn:aws:rds:us-east-1:000000000000:cluster:shop";
    let added = call(
        &app,
        &[
            ("Action", "AddTagsToResource"),
            V,
            ("ResourceName", arn),
            ("Tags.Tag.1.Key", "a"),
            ("Tags.Tag.1.Value", "1"),
            ("Tags.Tag.2.Key", "b"),
            ("Tags.Tag.2.Value", "2"),
        ],
    )
    .await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(
        added.body.contains("<AddTagsToResourceResult>"),
        "{}",
        added.body
    );
    call(
        &app,
        &[
            ("Action", "AddTagsToResource"),
            V,
            ("ResourceName", arn),
            ("Tags.Tag.1.Key", "a"),
            ("Tags.Tag.1.Value", "one"),
        ],
    )
    .await;
    let removed = call(
        &app,
        &[
            ("Action", "RemoveTagsFromResource"),
            V,
            ("ResourceName", arn),
            ("TagKeys.member.1", "b"),
            ("TagKeys.member.2", "never-there"),
        ],
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let listed = call(
        &app,
        &[("Action", "ListTagsForResource"), V, ("ResourceName", arn)],
    )
    .await;
    assert!(
        listed
            .body
            .contains("<TagList><Tag><Key>a</Key><Value>one</Value></Tag></TagList>"),
        "{}",
        listed.body
    );

    let not_an_arn = call(
        &app,
        &[
            ("Action", "ListTagsForResource"),
            V,
            ("ResourceName", "shop"),
        ],
    )
    .await;
    assert_xml_error(&not_an_arn, 400, "InvalidParameterValue");
    let unknown = call(
        &app,
        &[
            ("Action", "ListTagsForResource"),
            V,
            (
                "ResourceName",
                "arn:aws:rds:us-east-1:000000000000:cluster:nosuch",
            ),
        ],
    )
    .await;
    assert_xml_error(&unknown, 404, "DBClusterNotFoundFault");
    let many: Vec<(String, String)> = (0..51)
        .flat_map(|i| {
            [
                (format!("Tags.Tag.{}.Key", i + 1), format!("k{i}")),
                (format!("Tags.Tag.{}.Value", i + 1), "v".into()),
            ]
        })
        .collect();
    let mut form: Vec<(&str, &str)> =
        vec![("Action", "AddTagsToResource"), V, ("ResourceName", arn)];
    form.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert_xml_error(&call(&app, &form).await, 400, "TagQuotaPerResourceExceeded");
    // Nothing of the refused call was kept.
    let listed = call(
        &app,
        &[("Action", "ListTagsForResource"), V, ("ResourceName", arn)],
    )
    .await;
    assert!(!listed.body.contains("k0"), "{}", listed.body);
}

#[tokio::test]
async fn every_mistake_is_an_error_response_with_rds_code_and_status() {
    let app = spawn_app().await;
    app.create_cluster("shop", 0).await;
    for (form, status, code) in [
        (vec![V], 400, "MissingAction"),
        (
            vec![("Action", "DescribeDBClusters")],
            400,
            "MissingParameter",
        ),
        (
            vec![("Action", "DescribeDBClusters"), ("Version", "2010-01-01")],
            400,
            "InvalidParameterValue",
        ),
        (vec![("Action", "LaunchRocket"), V], 400, "InvalidAction"),
        (
            vec![
                ("Action", "DescribeDBClusters"),
                V,
                ("DBClusterIdentifier", "nosuch"),
            ],
            404,
            "DBClusterNotFoundFault",
        ),
        (
            vec![("Action", "DescribeDBClusters"), V, ("MaxRecords", "5")],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![("Action", "DescribeDBClusters"), V, ("MaxRecords", "many")],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![
                ("Action", "DescribeDBClusters"),
                V,
                ("Filters.Filter.1.Name", "colour"),
                ("Filters.Filter.1.Values.Value.1", "x"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![
                ("Action", "DescribeDBClusters"),
                V,
                ("DBClusterIdentifer", "typo"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![("Action", "CreateDBCluster"), V, ("Engine", "aurora-mysql")],
            400,
            "MissingParameter",
        ),
        (
            vec![
                ("Action", "CreateDBCluster"),
                V,
                ("DBClusterIdentifier", "shop"),
            ],
            400,
            "DBClusterAlreadyExistsFault",
        ),
        (
            vec![
                ("Action", "CreateDBCluster"),
                V,
                ("DBClusterIdentifier", "x"),
                ("BacktrackWindow", "999999"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![("Action", "ModifyDBCluster"), V, ("BacktrackWindow", "60")],
            400,
            "MissingParameter",
        ),
        (
            vec![
                ("Action", "ModifyDBCluster"),
                V,
                ("DBClusterIdentifier", "nosuch"),
            ],
            404,
            "DBClusterNotFoundFault",
        ),
        (
            vec![
                ("Action", "ModifyDBCluster"),
                V,
                ("DBClusterIdentifier", "shop"),
                ("NewDBClusterIdentifier", "x"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![
                ("Action", "BacktrackDBCluster"),
                V,
                ("DBClusterIdentifier", "shop"),
            ],
            400,
            "MissingParameter",
        ),
        (
            vec![
                ("Action", "BacktrackDBCluster"),
                V,
                ("DBClusterIdentifier", "shop"),
                ("BacktrackTo", "yesterday"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![
                ("Action", "DescribeEvents"),
                V,
                ("SourceIdentifier", "shop"),
            ],
            400,
            "InvalidParameterCombination",
        ),
        (
            vec![
                ("Action", "DescribeEventCategories"),
                V,
                ("SourceType", "db-nothing"),
            ],
            400,
            "InvalidParameterValue",
        ),
        (
            vec![
                ("Action", "RestoreDBClusterToPointInTime"),
                V,
                ("DBClusterIdentifier", "c2"),
                ("SourceDBClusterIdentifier", "c1"),
            ],
            400,
            "InvalidParameterCombination",
        ),
    ] {
        let reply = call(&app, &form).await;
        assert_xml_error(&reply, status, code);
    }
    // The refused calls changed nothing.
    let listed = describe(&call(&app, &[("Action", "DescribeDBClusters"), V]).await);
    assert_eq!(listed.clusters.items.len(), 1);
}

#[tokio::test]
async fn get_reads_and_is_refused_for_changes_without_authentication() {
    let app = spawn_app().await;
    let read = app
        .http
        .get(format!(
            "{}/?Action=DescribeDBClusters&Version=2014-10-31",
            app.address
        ))
        .send()
        .await
        .unwrap();
    let read = reply(read).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(read.body.contains("<DBClusters/>"));
    // An <img src> on any page could send this; unsigned, it must not delete anything.
    let create = app
        .http
        .get(format!(
            "{}/?Action=CreateDBCluster&Version=2014-10-31&DBClusterIdentifier=x",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_xml_error(&reply(create).await, 403, "AccessDeniedException");
    let (_, listed) = app.get("/v1/clusters").await;
    assert_eq!(listed["DBClusters"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_form_from_another_site_is_refused_before_it_acts() {
    let app = spawn_app().await;
    let body = "Action=CreateDBCluster&Version=2014-10-31&DBClusterIdentifier=evil";
    let response = app
        .http
        .post(format!("{}/", app.address))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ORIGIN, "http://evil.example")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_xml_error(&reply(response).await, 403, "AccessDeniedException");
    let rebinding = app
        .http
        .post(format!("{}/", app.address))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(HeaderName::from_static("host"), "evil.example")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_xml_error(&reply(rebinding).await, 403, "AccessDeniedException");
    let (_, listed) = app.get("/v1/clusters").await;
    assert_eq!(listed["DBClusters"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_body_that_is_not_a_form_and_unknown_paths_get_xml_errors() {
    let app = spawn_app().await;
    let json = app
        .post_raw(
            "/",
            "application/json",
            r#"{"Action":"DescribeDBClusters"}"#,
        )
        .await;
    assert_xml_error(&reply(json).await, 415, "UnsupportedMediaType");
    let lost = app
        .post_raw(
            "/v2/",
            "application/x-www-form-urlencoded",
            "Action=DescribeDBClusters&Version=2014-10-31",
        )
        .await;
    assert_xml_error(&reply(lost).await, 404, "UnknownOperation");
    let put = app
        .http
        .put(format!("{}/", app.address))
        .body("Action=DescribeDBClusters")
        .send()
        .await
        .unwrap();
    assert_xml_error(&reply(put).await, 405, "InvalidAction");
    // The REST API's own errors stay JSON.
    let (status, body) = app.get("/v1/clusters/nosuch").await;
    crate::helpers::assert_error(status, &body, 404, "DBClusterNotFoundFault");
}
