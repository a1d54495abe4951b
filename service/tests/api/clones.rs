//! RestoreDBClusterToPointInTime end to end: the real service and storage nodes, metadata in
//! the test's database (SQLite, or PostgreSQL in CI). A clone at T holds what the source held
//! at T; writes stay on their side; the clone has its own window and backtracks; the latest
//! restorable time, full copies and clones of clones work; the source's log budget and its
//! deletion leave clones exact; every bad parameter gets its code and creates nothing.

use serde_json::{json, Value};

use crate::e2e::{instant, iso, start_process, start_service, Service};
use crate::helpers::*;

const CHECKSUM: &str = "SELECT count(*), sum(id), sum(qty * 7 + length(item)) FROM orders";

async fn orders(service: &Service, cluster: &str, from: usize, rows: usize) {
    for chunk in (from..from + rows).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|n| format!("({n}, 'item-{n}', {})", n % 17))
            .collect();
        service
            .sql(
                cluster,
                &format!(
                    "INSERT INTO orders (id, item, qty) VALUES {}",
                    values.join(",")
                ),
            )
            .await;
    }
}

async fn checksum(service: &Service, cluster: &str) -> Value {
    service.sql(cluster, CHECKSUM).await["records"].clone()
}

async fn restore(service: &Service, source: &str, body: Value) -> (u16, Value) {
    service
        .call(
            "POST",
            &format!("/v1/clusters/{source}/restore"),
            Some(body),
        )
        .await
}

async fn describe(service: &Service, cluster: &str) -> Value {
    let (status, body) = service
        .call("GET", &format!("/v1/clusters/{cluster}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body["DBCluster"].clone()
}

async fn integrity_ok(service: &Service, cluster: &str) {
    let body = service.sql(cluster, "PRAGMA integrity_check").await;
    assert_eq!(
        body["records"],
        json!([[{"stringValue": "ok"}]]),
        "{cluster}"
    );
}

#[tokio::test]
async fn a_clone_at_t_is_the_source_at_t_and_then_goes_its_own_way() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("shop").await;
    service
        .sql(
            "shop",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)",
        )
        .await;
    orders(&service, "shop", 0, 3000).await;
    service.sql("shop", "CREATE TABLE audit (what TEXT)").await;
    service
        .sql("shop", "INSERT INTO audit VALUES ('a'), ('b')")
        .await;
    let at_t = checksum(&service, "shop").await;
    let t = instant().await;
    // The accident: rows deleted, a table dropped.
    service
        .sql("shop", "DELETE FROM orders WHERE id % 3 = 0")
        .await;
    service.sql("shop", "DROP TABLE audit").await;
    let live = checksum(&service, "shop").await;

    let (status, body) = restore(
        &service,
        "shop",
        json!({
            "DBClusterIdentifier": "shop-forensics",
            "RestoreType": "copy-on-write",
            "RestoreToTime": t,
            "BacktrackWindow": 3600,
            "Tags": [{"Key": "purpose", "Value": "forensics"}],
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let clone = &body["DBCluster"];
    assert_eq!(clone["Status"], "available", "{body}");
    assert_eq!(clone["BacktrackWindow"], 3600);
    assert_eq!(clone["TagList"][0]["Value"], "forensics");
    let group = clone["CloneGroupId"]
        .as_str()
        .expect("a clone group")
        .to_string();
    assert_eq!(
        describe(&service, "shop").await["CloneGroupId"],
        group.as_str()
    );

    // Equal to the source at T, dropped table included, while the source stays as it is.
    assert_eq!(checksum(&service, "shop-forensics").await, at_t);
    let audit = service
        .sql("shop-forensics", "SELECT count(*) FROM audit")
        .await;
    assert_eq!(audit["records"], json!([[{"longValue": 2}]]));
    integrity_ok(&service, "shop-forensics").await;
    assert_eq!(checksum(&service, "shop").await, live);

    // Writes stay on their side.
    service
        .sql(
            "shop-forensics",
            "INSERT INTO orders VALUES (100000, 'clone only', 1)",
        )
        .await;
    service
        .sql(
            "shop",
            "INSERT INTO orders VALUES (200000, 'source only', 1)",
        )
        .await;
    let only = |cluster: &'static str, id: i64| {
        let service = &service;
        async move {
            service
                .sql(
                    cluster,
                    &format!("SELECT count(*) FROM orders WHERE id = {id}"),
                )
                .await["records"][0][0]["longValue"]
                .as_i64()
                .unwrap()
        }
    };
    assert_eq!(only("shop", 100000).await, 0);
    assert_eq!(only("shop-forensics", 200000).await, 0);
    assert_eq!(only("shop-forensics", 100000).await, 1);

    // The clone backtracks within its own window.
    let before_mistake = instant().await;
    let clone_then = checksum(&service, "shop-forensics").await;
    service.sql("shop-forensics", "DELETE FROM orders").await;
    let done = service.backtrack("shop-forensics", &before_mistake).await;
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(checksum(&service, "shop-forensics").await, clone_then);

    // The latest restorable time, as a full copy (RDS's default): the source as it is now,
    // in no clone group.
    let now_then = checksum(&service, "shop").await;
    let (status, body) = restore(
        &service,
        "shop",
        json!({"DBClusterIdentifier": "shop-copy", "UseLatestRestorableTime": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["DBCluster"].get("CloneGroupId").is_none(), "{body}");
    assert!(body["DBCluster"].get("BacktrackWindow").is_none(), "{body}");
    assert_eq!(checksum(&service, "shop-copy").await, now_then);

    // A clone of the clone, through the query protocol, joins the group.
    let form = "Action=RestoreDBClusterToPointInTime&Version=2014-10-31\
        &DBClusterIdentifier=shop-deeper&SourceDBClusterIdentifier=shop-forensics\
        &RestoreType=copy-on-write&UseLatestRestorableTime=true&BacktrackWindow=600";
    let response = service
        .http
        .post(format!("{}/", service.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let xml = response.text().await.unwrap();
    assert!(
        xml.contains("<RestoreDBClusterToPointInTimeResult>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<CloneGroupId>{group}</CloneGroupId>")),
        "{xml}"
    );
    assert_eq!(
        checksum(&service, "shop-deeper").await,
        checksum(&service, "shop-forensics").await
    );
    let (_, grouped) = service
        .call("GET", &format!("/v1/clusters?clone-group-id={group}"), None)
        .await;
    let names: Vec<&str> = grouped["DBClusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DBClusterIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop", "shop-deeper", "shop-forensics"]);

    // The events say where each came from.
    let (_, events) = service
        .call(
            "GET",
            "/v1/events?SourceType=db-cluster&SourceIdentifier=shop-forensics",
            None,
        )
        .await;
    let messages: Vec<&str> = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("created as a clone of shop at {t}"))),
        "{messages:?}"
    );

    // Deleting the source leaves its clones exact and writable.
    let clone_now = checksum(&service, "shop-forensics").await;
    let deeper_now = checksum(&service, "shop-deeper").await;
    let (status, body) = service.call("DELETE", "/v1/clusters/shop", None).await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while service.call("GET", "/v1/clusters/shop", None).await.0 != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "the source never went"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(checksum(&service, "shop-forensics").await, clone_now);
    assert_eq!(checksum(&service, "shop-deeper").await, deeper_now);
    service
        .sql(
            "shop-forensics",
            "INSERT INTO orders VALUES (300000, 'after', 1)",
        )
        .await;
    integrity_ok(&service, "shop-forensics").await;
    integrity_ok(&service, "shop-deeper").await;
}

#[tokio::test]
async fn bad_restores_get_their_codes_and_create_nothing() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("src").await;
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters",
            Some(json!({"DBClusterIdentifier": "flat", "BacktrackWindow": 0})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    service.sql("src", "CREATE TABLE t (x)").await;
    let t = instant().await;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "src",
            json!({"DBClusterIdentifier": "a", "RestoreToTime": t, "UseLatestRestorableTime": true}),
            400,
            "InvalidParameterCombination",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a"}),
            400,
            "InvalidParameterCombination",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "RestoreToTime": "2000-01-01T00:00:00Z"}),
            400,
            "InvalidRestoreFault",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "RestoreToTime": "2999-01-01T00:00:00Z"}),
            400,
            "InvalidRestoreFault",
        ),
        (
            "nowhere",
            json!({"DBClusterIdentifier": "a", "UseLatestRestorableTime": true}),
            404,
            "DBClusterNotFoundFault",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "UseLatestRestorableTime": true, "RestoreType": "instant"}),
            400,
            "InvalidParameterValue",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "src", "UseLatestRestorableTime": true}),
            400,
            "DBClusterAlreadyExistsFault",
        ),
        (
            "flat",
            json!({"DBClusterIdentifier": "a", "UseLatestRestorableTime": true}),
            400,
            "InvalidRestoreFault",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "SourceDBClusterIdentifier": "flat", "UseLatestRestorableTime": true}),
            400,
            "InvalidParameterCombination",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "-bad", "UseLatestRestorableTime": true}),
            400,
            "InvalidParameterValue",
        ),
        (
            "src",
            json!({"UseLatestRestorableTime": true}),
            400,
            "MissingParameter",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "UseLatestRestorableTime": true, "BacktrackWindow": 999999}),
            400,
            "InvalidParameterValue",
        ),
        (
            "src",
            json!({"DBClusterIdentifier": "a", "UseLatestRestorableTime": true, "Color": "red"}),
            400,
            "InvalidParameterValue",
        ),
    ];
    for (source, body, want_status, want_code) in cases {
        let (status, answer) = restore(&service, source, body.clone()).await;
        assert_error(status, &answer, want_status, want_code);
    }
    let (_, all) = service.call("GET", "/v1/clusters", None).await;
    assert_eq!(all["DBClusters"].as_array().unwrap().len(), 2, "{all}");
    // And through the query protocol: the same codes, as XML.
    let response = service
        .http
        .post(format!("{}/", service.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "Action=RestoreDBClusterToPointInTime&Version=2014-10-31&DBClusterIdentifier=a\
             &SourceDBClusterIdentifier=src&RestoreToTime={}&UseLatestRestorableTime=true",
            iso(now_secs() - 1.0)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let xml = response.text().await.unwrap();
    assert!(
        xml.contains("<Code>InvalidParameterCombination</Code>"),
        "{xml}"
    );
}

#[tokio::test]
async fn the_source_log_budget_folding_past_t_leaves_the_clone_exact() {
    const TOKEN: &str = "clones-test-token";
    let db = TestDb::new().await;
    let (child, url) = start_process(
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--segment-bytes",
            "262144",
            "--log-budget-bytes",
            "1048576",
            "--maintenance-interval-ms",
            "50",
        ],
        &db.dir.0.join("node"),
    );
    let _node = Service::from_parts(child, url.clone());
    let endpoint = format!("node-0={url}");
    let service = start_service(&db, &["--node", &endpoint, "--node-token", TOKEN]);
    service.create_cluster("src").await;
    service
        .sql(
            "src",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)",
        )
        .await;
    orders(&service, "src", 0, 2000).await;
    let at_t = checksum(&service, "src").await;
    let t = instant().await;
    let (status, body) = restore(
        &service,
        "src",
        json!({"DBClusterIdentifier": "c", "RestoreType": "copy-on-write", "RestoreToTime": t}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Far more history than the budget holds: the source's earliest time passes T.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut round = 0;
    loop {
        service
            .sql(
                "src",
                &format!(
                    "UPDATE orders SET item = item || '{round}' WHERE id % 5 = {}",
                    round % 5
                ),
            )
            .await;
        round += 1;
        let earliest = describe(&service, "src").await["EarliestBacktrackTime"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if earliest > t {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never folded past T"
        );
    }
    assert_eq!(checksum(&service, "c").await, at_t);
    integrity_ok(&service, "c").await;
}
