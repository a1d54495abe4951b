//! The operations driven directly, without HTTP: the layer every front door calls (REST
//! today; the query protocol and the PostgreSQL protocol next) answers in typed values and
//! typed errors. The app is built but not run, so no background worker moves a cluster or a
//! job behind the test's back.

use backtrack_service::domain::{SqlRefusal, Timestamp};
use backtrack_service::error::ApiError;
use backtrack_service::ops::backtracks::{BacktrackDbClusterRequest, DescribeBacktracksParams};
use backtrack_service::ops::billing::BillingParams;
use backtrack_service::ops::clusters::{
    CreateDbClusterRequest, DescribeDbClustersParams, ModifyDbClusterRequest,
};
use backtrack_service::ops::events::DescribeEventsParams;
use backtrack_service::ops::sql::{SqlError, SqlTarget};
use backtrack_service::ops::Ops;
use backtrack_service::startup::App;
use backtrack_storage_node::api::{ExecuteRequest, ExecuteResult, TransactionStarted};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{mount_healthy_node, test_config, TestDb};

/// The operations of an app that is built (store open, nodes asked for their health) but not
/// serving, and what it needs kept alive.
async fn ops() -> (Ops, App, MockServer, TestDb) {
    let node = MockServer::start().await;
    mount_healthy_node(&node).await;
    let db = TestDb::new().await;
    let app = App::build(test_config(&db, &node)).await.unwrap();
    (app.state().ops.clone(), app, node, db)
}

fn new_cluster(id: &str, window: i64) -> CreateDbClusterRequest {
    serde_json::from_value(serde_json::json!({
        "DBClusterIdentifier": id,
        "BacktrackWindow": window,
    }))
    .unwrap()
}

#[tokio::test]
async fn clusters_are_created_described_modified_and_deleted_by_the_operations() {
    let (ops, _app, _node, _db) = ops().await;
    let created = ops
        .create_cluster(new_cluster("Direct", 3600))
        .await
        .unwrap();
    assert_eq!(created.db_cluster_identifier, "direct");
    assert_eq!(created.status, "available", "the node answered at once");
    assert_eq!(created.backtrack_window, Some(3600));

    let again = ops.create_cluster(new_cluster("direct", 0)).await;
    assert!(
        matches!(again, Err(ApiError::ClusterAlreadyExists(_))),
        "{again:?}"
    );
    let missing = ops
        .create_cluster(serde_json::from_value(serde_json::json!({})).unwrap())
        .await;
    assert!(
        matches!(missing, Err(ApiError::MissingParameter(_))),
        "{missing:?}"
    );

    let listed = ops
        .describe_clusters(DescribeDbClustersParams::default())
        .await
        .unwrap();
    assert_eq!(listed.db_clusters.len(), 1);
    assert!(listed.marker.is_none());
    let arn = &created.db_cluster_arn;
    assert_eq!(
        ops.describe_cluster(arn)
            .await
            .unwrap()
            .db_cluster_identifier,
        "direct"
    );

    let protect: ModifyDbClusterRequest =
        serde_json::from_value(serde_json::json!({"DeletionProtection": true})).unwrap();
    assert!(
        ops.modify_cluster("direct", protect)
            .await
            .unwrap()
            .deletion_protection
    );
    let refused = ops.delete_cluster("direct").await;
    assert!(
        matches!(refused, Err(ApiError::InvalidParameterCombination(_))),
        "{refused:?}"
    );
    let unprotect: ModifyDbClusterRequest =
        serde_json::from_value(serde_json::json!({"DeletionProtection": false})).unwrap();
    ops.modify_cluster("direct", unprotect).await.unwrap();
    let deleted = ops.delete_cluster("direct").await.unwrap();
    assert_eq!(deleted.status, "deleting");
    let gone = ops.describe_cluster("direct").await;
    assert!(
        matches!(gone, Err(ApiError::ClusterNotFound(_))),
        "{gone:?}"
    );
}

#[tokio::test]
async fn a_backtrack_is_checked_recorded_and_listed_by_the_operations() {
    let (ops, _app, _node, _db) = ops().await;
    ops.create_cluster(new_cluster("rewound", 3600))
        .await
        .unwrap();
    let to = |at: Timestamp| -> BacktrackDbClusterRequest {
        serde_json::from_value(serde_json::json!({"BacktrackTo": at.to_string()})).unwrap()
    };
    let future = ops
        .start_backtrack("rewound", to(Timestamp::now().plus_secs(60)))
        .await;
    assert!(
        matches!(future, Err(ApiError::InvalidParameterValue(_))),
        "{future:?}"
    );

    let started = ops
        .start_backtrack("rewound", to(Timestamp::now()))
        .await
        .unwrap();
    assert_eq!(started.status, "pending");
    let second = ops.start_backtrack("rewound", to(Timestamp::now())).await;
    assert!(
        matches!(second, Err(ApiError::InvalidClusterState(_))),
        "{second:?}"
    );

    let listed = ops
        .describe_backtracks("rewound", DescribeBacktracksParams::default())
        .await
        .unwrap();
    assert_eq!(listed.db_cluster_backtracks.len(), 1);
    let one = ops
        .describe_backtrack("rewound", &started.backtrack_identifier)
        .await
        .unwrap();
    assert_eq!(one.backtrack_identifier, started.backtrack_identifier);

    // No runner runs here: the cluster stays `backtracking`, and SQL waits for it.
    let sql = ops
        .execute_sql(
            SqlTarget::new("rewound", "arn:aws:secretsmanager:x"),
            &ExecuteRequest::default(),
        )
        .await;
    assert!(
        matches!(sql, Err(SqlError::Refused(_, SqlRefusal::Backtracking))),
        "{sql:?}"
    );

    let events = ops
        .describe_events(DescribeEventsParams::default())
        .await
        .unwrap();
    let messages: Vec<_> = events.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[1].contains("started"), "{messages:?}");
}

#[tokio::test]
async fn sql_billing_and_metrics_are_operations_too() {
    let (ops, _app, node, _db) = ops().await;
    ops.create_cluster(new_cluster("queried", 0)).await.unwrap();
    Mock::given(method("POST"))
        .and(path_regex("^/v1/volumes/[^/]+/execute$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ExecuteResult {
            columns: Vec::new(),
            rows: Vec::new(),
            rows_affected: 3,
            last_insert_rowid: None,
            runs: Vec::new(),
        }))
        .mount(&node)
        .await;
    let statement = ExecuteRequest {
        sql: "DELETE FROM t".into(),
        ..ExecuteRequest::default()
    };
    let target = SqlTarget::new("queried", "arn:aws:secretsmanager:x");
    let done = ops.execute_sql(target, &statement).await.unwrap();
    assert_eq!(done.rows_affected, 3);
    Mock::given(method("POST"))
        .and(path_regex("^/v1/volumes/[^/]+/transactions$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(TransactionStarted {
                transaction_id: "tx-1".into(),
            }),
        )
        .mount(&node)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v1/volumes/[^/]+/transactions/tx-1/commit$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({})))
        .mount(&node)
        .await;
    let tx = ops.begin_transaction(target).await.unwrap();
    assert_eq!(tx, "tx-1");
    ops.end_transaction(target, &tx, true).await.unwrap();
    let unknown = ops.end_transaction(target, "tx-2", false).await;
    assert!(matches!(unknown, Err(SqlError::Node(_))), "{unknown:?}");
    let no_secret = ops
        .execute_sql(SqlTarget::new("queried", " "), &statement)
        .await;
    assert!(
        matches!(no_secret, Err(SqlError::BadRequest(_))),
        "{no_secret:?}"
    );

    let off: ModifyDbClusterRequest =
        serde_json::from_value(serde_json::json!({"EnableHttpEndpoint": false})).unwrap();
    ops.modify_cluster("queried", off).await.unwrap();
    let disabled = ops.execute_sql(target, &statement).await;
    assert!(
        matches!(disabled, Err(SqlError::NotEnabled(_))),
        "{disabled:?}"
    );

    let report = ops
        .billing_report(Some("queried"), BillingParams::default())
        .await
        .unwrap();
    assert_eq!(report.total_cost, "0.00");
    let bad_period = BillingParams {
        start_time: Some("2026-01-02T00:00:00Z".into()),
        end_time: Some("2026-01-01T00:00:00Z".into()),
    };
    let refused = ops.billing_report(None, bad_period).await;
    assert!(
        matches!(refused, Err(ApiError::InvalidParameterValue(_))),
        "{refused:?}"
    );

    let metrics = ops.cluster_metrics("queried").await.unwrap();
    assert!(metrics.metrics.is_empty(), "not sampled yet");
}
