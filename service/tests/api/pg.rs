//! The PostgreSQL protocol through the whole product: the real service and its nodes; a
//! cluster's `Endpoint`, `Port`, `DatabaseName` and master user from DescribeDBClusters are
//! what a driver (sqlx's PostgreSQL driver) connects with; the data is the Data API's; a new
//! password replaces the old; a clone is reached by its own database name.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection, Row};

use crate::e2e::{instant, start_service, Service};
use crate::helpers::*;

/// The cluster's description, once it says where to connect.
async fn described(service: &Service, cluster: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = service
            .call("GET", &format!("/v1/clusters/{cluster}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["DBCluster"]["Port"].is_u64() {
            return body["DBCluster"].clone();
        }
        assert!(Instant::now() < deadline, "no endpoint: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(cluster: &Value, password: &str) -> Result<PgConnection, sqlx::Error> {
    let options = PgConnectOptions::new()
        .host(cluster["Endpoint"].as_str().unwrap())
        .port(cluster["Port"].as_u64().unwrap() as u16)
        .username(cluster["MasterUsername"].as_str().unwrap())
        .password(password)
        .database(cluster["DatabaseName"].as_str().unwrap())
        .ssl_mode(PgSslMode::Disable);
    PgConnection::connect_with(&options).await
}

fn sqlstate(e: sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.to_string()).unwrap_or_default(),
        other => panic!("not a database error: {other}"),
    }
}

#[tokio::test]
async fn drivers_connect_to_the_endpoint_describe_gives_and_see_what_the_data_api_sees() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters",
            Some(
                json!({"DBClusterIdentifier": "shop", "BacktrackWindow": 3600,
                        "MasterUsername": "admin", "MasterUserPassword": "first-Secret9",
                        "DatabaseName": "store"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let cluster = described(&service, "shop").await;
    assert_eq!(cluster["DatabaseName"], "store");
    assert_eq!(cluster["Endpoint"], "127.0.0.1");

    let mut conn = connect(&cluster, "first-Secret9").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT); \
         INSERT INTO orders (item) VALUES ('apple'), ('pear')",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let through_data_api = service.sql("shop", "SELECT count(*) FROM orders").await;
    assert_eq!(through_data_api["records"], json!([[{"longValue": 2}]]));

    // A clone of it is a database of its own, on the same endpoint, with the same password.
    let t = instant().await;
    sqlx::raw_sql("DELETE FROM orders")
        .execute(&mut conn)
        .await
        .unwrap();
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters/shop/restore",
            Some(
                json!({"DBClusterIdentifier": "shop-then", "RestoreType": "copy-on-write",
                        "RestoreToTime": t}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let clone = described(&service, "shop-then").await;
    assert_eq!(clone["DatabaseName"], "shop-then");
    let mut then = connect(&clone, "first-Secret9").await.unwrap();
    let items: Vec<String> = sqlx::raw_sql("SELECT item FROM orders ORDER BY id")
        .fetch_all(&mut then)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(items, ["apple", "pear"]);

    // A new password: the old one is refused from then on.
    let (status, body) = service
        .call(
            "PATCH",
            "/v1/clusters/shop",
            Some(json!({"MasterUserPassword": "second-Secret9"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect(&cluster, "first-Secret9").await {
            Err(e) => {
                assert_eq!(sqlstate(e), "28P01");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "the old password still works"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    connect(&cluster, "second-Secret9").await.unwrap();

    // One database name, one cluster.
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters",
            Some(json!({"DBClusterIdentifier": "other", "DatabaseName": "store"})),
        )
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters",
            Some(json!({"DBClusterIdentifier": "store"})),
        )
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}
