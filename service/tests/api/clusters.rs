use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn a_cluster_is_created_described_modified_and_deleted() {
    let app = spawn_app().await;

    let created = app.create_cluster("Orders-DB", 3600).await;
    assert_eq!(created["DBClusterIdentifier"], "orders-db");
    assert_eq!(created["BacktrackWindow"], 3600);
    assert_eq!(created["Engine"], "aurora-mysql");
    assert_eq!(created["DeletionProtection"], false);
    let arn = created["DBClusterArn"].as_str().unwrap();
    assert_eq!(arn, "arn:aws:rds:us-east-1:000000000000:cluster:orders-db");
    assert!(created["DbClusterResourceId"]
        .as_str()
        .unwrap()
        .starts_with("cluster-"));
    let create_time = created["ClusterCreateTime"].as_str().unwrap();
    assert!(
        create_time.ends_with('Z') && create_time.len() == 24,
        "{create_time}"
    );
    assert!(created["EarliestBacktrackTime"].is_string());

    // By identifier in any case, and by ARN.
    let (status, one) = app.get("/v1/clusters/ORDERS-db").await;
    assert_eq!(status, 200);
    assert_eq!(one["DBCluster"]["DBClusterArn"], arn);
    let (status, by_arn) = app.get(&format!("/v1/clusters/{arn}")).await;
    assert_eq!(status, 200, "{by_arn}");
    let (status, listed) = app.get("/v1/clusters?DBClusterIdentifier=orders-db").await;
    assert_eq!(status, 200);
    assert_eq!(listed["DBClusters"].as_array().unwrap().len(), 1);
    assert!(listed.get("Marker").is_none());

    let (status, modified) = app
        .patch(
            "/v1/clusters/orders-db",
            json!({"BacktrackWindow": 7200, "DeletionProtection": true}),
        )
        .await;
    assert_eq!(status, 200, "{modified}");
    assert_eq!(modified["DBCluster"]["BacktrackWindow"], 7200);
    assert_eq!(modified["DBCluster"]["DeletionProtection"], true);
    assert_eq!(modified["DBCluster"]["Status"], "available");

    // The node was asked to create the volume and then to change its window.
    let calls = app.node.received_requests().await.unwrap();
    let volume_path = format!(
        "/v1/volumes/{}",
        created["DbClusterResourceId"].as_str().unwrap()
    );
    let put = calls.iter().find(|r| r.method.as_str() == "PUT").unwrap();
    assert_eq!(put.url.path(), volume_path);
    assert_eq!(put.headers["authorization"], format!("Bearer {NODE_TOKEN}"));
    let patch = calls.iter().find(|r| r.method.as_str() == "PATCH").unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&patch.body).unwrap()["window_secs"],
        7200
    );

    let (status, _) = app
        .patch(
            "/v1/clusters/orders-db",
            json!({"DeletionProtection": false}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, deleted) = app.delete("/v1/clusters/orders-db").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["DBCluster"]["Status"], "deleting");
    let (status, body) = app.get("/v1/clusters/orders-db").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let calls = app.node.received_requests().await.unwrap();
    assert!(calls
        .iter()
        .any(|r| r.method.as_str() == "DELETE" && r.url.path() == volume_path));
}

#[tokio::test]
async fn a_cluster_deleted_and_created_again_gets_a_new_volume() {
    let app = spawn_app().await;
    let first = app.create_cluster("reuse", 60).await;
    app.delete("/v1/clusters/reuse").await;
    let second = app.create_cluster("reuse", 60).await;
    assert_ne!(first["DbClusterResourceId"], second["DbClusterResourceId"]);
}

#[tokio::test]
async fn bad_identifiers_are_invalid_parameter_values() {
    let app = spawn_app().await;
    for bad in [
        "1starts-with-digit",
        "double--hyphen",
        "trailing-",
        "under_score",
        "",
        &"a".repeat(64),
    ] {
        let (status, body) = app
            .post("/v1/clusters", json!({"DBClusterIdentifier": bad}))
            .await;
        assert_error(status, &body, 400, "InvalidParameterValue");
    }
    let (status, body) = app.get("/v1/clusters/bad--id").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

#[tokio::test]
async fn windows_outside_zero_to_seventy_two_hours_are_refused() {
    let app = spawn_app().await;
    for bad in [-1, 259_201] {
        let (status, body) = app
            .post(
                "/v1/clusters",
                json!({"DBClusterIdentifier": "w", "BacktrackWindow": bad}),
            )
            .await;
        assert_error(status, &body, 400, "InvalidParameterValue");
        assert!(
            body["Error"]["Message"]
                .as_str()
                .unwrap()
                .contains("0 to 259200"),
            "{body}"
        );
    }
    app.create_cluster("w", 259_200).await;
    let (status, body) = app
        .patch("/v1/clusters/w", json!({"BacktrackWindow": 300000}))
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    // Nothing was half-applied.
    let (_, body) = app.get("/v1/clusters/w").await;
    assert_eq!(body["DBCluster"]["BacktrackWindow"], 259_200);
}

#[tokio::test]
async fn a_duplicate_cluster_is_refused_whatever_its_case() {
    let app = spawn_app().await;
    app.create_cluster("dup", 60).await;
    let (status, body) = app
        .post("/v1/clusters", json!({"DBClusterIdentifier": "DUP"}))
        .await;
    assert_error(status, &body, 400, "DBClusterAlreadyExistsFault");
}

#[tokio::test]
async fn unknown_clusters_are_not_found_everywhere() {
    let app = spawn_app().await;
    let (status, body) = app.get("/v1/clusters/ghost").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app.get("/v1/clusters?DBClusterIdentifier=ghost").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app
        .patch("/v1/clusters/ghost", json!({"BacktrackWindow": 5}))
        .await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app.delete("/v1/clusters/ghost").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app.backtrack("ghost", 1.0).await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app.get("/v1/clusters/ghost/backtracks").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
}

#[tokio::test]
async fn deletion_protection_blocks_delete_until_it_is_turned_off() {
    let app = spawn_app().await;
    let (status, _) = app
        .post(
            "/v1/clusters",
            json!({"DBClusterIdentifier": "keep", "DeletionProtection": true}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = app.delete("/v1/clusters/keep").await;
    assert_error(status, &body, 400, "InvalidParameterCombination");
    assert_eq!(app.cluster_status("keep").await, "available");
    app.patch("/v1/clusters/keep", json!({"DeletionProtection": false}))
        .await;
    let (status, _) = app.delete("/v1/clusters/keep").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_json_and_wrong_content_types_get_the_rds_error_shape() {
    let app = spawn_app().await;
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = app
            .http
            .post(format!("{}/v1/clusters", app.address))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        async move { decode(request.send().await.unwrap()).await }
    };
    let (status, body) = send(Some("application/json"), "{\"DBClusterIdentifier\": ").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = send(Some("text/plain"), "{\"DBClusterIdentifier\": \"x\"}").await;
    assert_error(status, &body, 415, "UnsupportedMediaType");
    let (status, body) = send(None, "{\"DBClusterIdentifier\": \"x\"}").await;
    assert_error(status, &body, 415, "UnsupportedMediaType");
    let (status, body) = send(Some("application/json"), "{}").await;
    assert_error(status, &body, 400, "MissingParameter");
    let (status, body) = send(
        Some("application/json"),
        "{\"DBClusterIdentifier\": \"x\", \"BacktrakWindow\": 1}",
    )
    .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("BacktrakWindow"));
    let (status, body) = send(
        Some("application/json"),
        "{\"DBClusterIdentifier\": \"x\", \"BacktrackWindow\": \"lots\"}",
    )
    .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = send(Some("application/json"), "[1, 2]").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    // serde reads a struct from an array as well; a body must be an object.
    let (status, body) = send(Some("application/json"), "[\"from-an-array\"]").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, _) = app.get("/v1/clusters/from-an-array").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_errors_repeat_it() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/v1/clusters",
        "/v1/clusters/ghost",
        "/no/such/route",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let header = response.headers()["x-amzn-requestid"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(header.len(), 36, "{path}");
        let (status, body) = decode(response).await;
        if status >= 400 {
            assert_eq!(body["RequestId"], header, "{path}");
        }
    }
    let response = app
        .http
        .put(format!("{}/v1/clusters", app.address))
        .send()
        .await
        .unwrap();
    let (status, body) = decode(response).await;
    assert_error(status, &body, 405, "InvalidAction");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_the_rds_error_shape() {
    let app = spawn_app_with(|c| c.body_limit_bytes = 1024).await;
    let big = "x".repeat(4096);
    let (status, body) = app
        .post("/v1/clusters", json!({"DBClusterIdentifier": big}))
        .await;
    assert_error(status, &body, 413, "RequestEntityTooLarge");
}

#[tokio::test]
async fn paging_returns_every_cluster_once_and_no_marker_on_the_last_page() {
    let app = spawn_app().await;
    let mut expected: Vec<String> = (0..45).map(|i| format!("c{i:03}")).collect();
    for id in &expected {
        app.create_cluster(id, 0).await;
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &marker {
            Some(m) => format!("/v1/clusters?MaxRecords=20&Marker={m}"),
            None => "/v1/clusters?MaxRecords=20".to_string(),
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        for c in body["DBClusters"].as_array().unwrap() {
            seen.push(c["DBClusterIdentifier"].as_str().unwrap().to_string());
        }
        match body.get("Marker") {
            Some(m) => marker = Some(m.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    expected.sort();
    assert_eq!(seen, expected);

    for bad in [
        "MaxRecords=19",
        "MaxRecords=101",
        "MaxRecords=x",
        "Marker=garbage",
        "Colour=red",
    ] {
        let (status, body) = app.get(&format!("/v1/clusters?{bad}")).await;
        assert_error(status, &body, 400, "InvalidParameterValue");
    }
}

#[tokio::test]
async fn filters_select_clusters_by_id_and_engine() {
    let app = spawn_app().await;
    for id in ["alpha", "beta", "gamma"] {
        app.create_cluster(id, 0).await;
    }
    let (_, body) = app.get("/v1/clusters?db-cluster-id=alpha,GAMMA").await;
    let ids: Vec<_> = body["DBClusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DBClusterIdentifier"].clone())
        .collect();
    assert_eq!(ids, [json!("alpha"), json!("gamma")]);
    let (_, body) = app.get("/v1/clusters?engine=aurora-postgresql").await;
    assert!(body["DBClusters"].as_array().unwrap().is_empty());
    let (_, body) = app
        .get("/v1/clusters?engine=aurora-mysql&db-cluster-id=beta")
        .await;
    assert_eq!(body["DBClusters"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_cluster_whose_node_is_down_stays_creating_and_converges_later() {
    /// The node's volume calls fail while `down` is set, however often they are retried.
    struct Down(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl wiremock::Respond for Down {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            if self.0.load(std::sync::atomic::Ordering::SeqCst) {
                ResponseTemplate::new(503)
            } else {
                VolumeEcho.respond(request)
            }
        }
    }
    let app = spawn_app().await;
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    Mock::given(method("PUT"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .respond_with(Down(down.clone()))
        .with_priority(1)
        .mount(&app.node)
        .await;
    let (status, body) = app
        .post(
            "/v1/clusters",
            json!({"DBClusterIdentifier": "late", "BacktrackWindow": 60}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(body["DBCluster"]["Status"], "creating");
    let (status, body) = app.backtrack("late", 0.0).await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.cluster_status("late").await != "available" {
        assert!(
            std::time::Instant::now() < deadline,
            "never became available"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn live_figures_from_the_node_are_shown() {
    let app = spawn_app().await;
    let created = app.create_cluster("live", 3600).await;
    let volume = created["DbClusterResourceId"].as_str().unwrap().to_string();
    let figures = json!({"volumes": [{
        "volume_id": volume, "window_secs": 3600, "actual_window_secs": 1800,
        "created_at_us": 0, "earliest_restorable_us": 1_700_000_000_000_000i64,
        "change_records_created": 5000, "change_records_stored": 1234,
        "bytes_on_disk": 1, "open_transactions": 0, "switching": false
    }]});
    Mock::given(method("GET"))
        .and(path_regex("^/v1/volumes$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(figures))
        .mount(&app.node)
        .await;
    let (_, body) = app.get("/v1/clusters").await;
    let cluster = &body["DBClusters"][0];
    assert_eq!(cluster["BacktrackConsumedChangeRecords"], 1234);
    assert_eq!(cluster["EarliestBacktrackTime"], "2023-11-14T22:13:20.000Z");
}

#[tokio::test]
async fn a_restore_the_node_refuses_for_good_is_incompatible_restore_and_can_be_deleted() {
    let app = spawn_app().await;
    app.create_cluster("src", 3600).await;
    // The node answers every clone with "before the earliest restorable time", as it would
    // once the source's history moved past the instant between the check and the call.
    Mock::given(method("PUT"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .and(wiremock::matchers::body_string_contains("\"source\""))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": "before_earliest",
            "message": "the requested time is before the earliest restorable time",
        })))
        .with_priority(1)
        .mount(&app.node)
        .await;
    let (status, body) = app
        .post(
            "/v1/clusters/src/restore",
            json!({"DBClusterIdentifier": "late", "RestoreType": "copy-on-write", "UseLatestRestorableTime": true}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["DBCluster"]["Status"], "incompatible-restore",
        "{body}"
    );
    assert_eq!(app.cluster_status("late").await, "incompatible-restore");
    let (_, events) = app
        .get("/v1/events?SourceType=db-cluster&SourceIdentifier=late")
        .await;
    assert!(
        events["Events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["Message"]
                .as_str()
                .unwrap()
                .starts_with("The restore failed")),
        "{events}"
    );
    // It takes no SQL and no modification, and goes when deleted.
    let (status, body) = app
        .patch("/v1/clusters/late", json!({"DeletionProtection": true}))
        .await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    let (status, body) = app.delete("/v1/clusters/late").await;
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.get("/v1/clusters/late").await.0 != 404 {
        assert!(std::time::Instant::now() < deadline, "never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_master_password_is_kept_only_as_its_scram_verifier_and_can_be_changed() {
    use backtrack_service::domain::ClusterId;
    use backtrack_service::store::Store;
    use backtrack_storage_node::scram::Verifier;

    let app = spawn_app().await;
    let (status, body) = app
        .post(
            "/v1/clusters",
            json!({"DBClusterIdentifier": "db", "MasterUsername": "admin",
                   "MasterUserPassword": "first-Secret9"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["DBCluster"]["MasterUsername"], "admin");
    assert!(!body.to_string().contains("first-Secret9"), "{body}");
    assert!(!body.to_string().contains("SCRAM"), "{body}");
    let store = Store::connect(&app.db.url).await.unwrap();
    let id = ClusterId::parse("db").unwrap();
    let stored = |text: Option<String>| Verifier::parse(&text.expect("a verifier")).unwrap();
    let verifier = stored(store.cluster(&id).await.unwrap().master_user_verifier);
    // The verifier is the password's (with its salt), and no other's.
    let of = |password: &str| Verifier::with_salt(password, &verifier.salt, verifier.iterations);
    assert_eq!(of("first-Secret9"), verifier);
    assert_ne!(of("first-Secret8"), verifier);

    let (status, body) = app
        .patch(
            "/v1/clusters/db",
            json!({"MasterUserPassword": "second-Secret9"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let changed = stored(store.cluster(&id).await.unwrap().master_user_verifier);
    assert_eq!(
        Verifier::with_salt("second-Secret9", &changed.salt, changed.iterations),
        changed
    );

    // Refusals change nothing.
    for (path, body, code) in [
        (
            "/v1/clusters",
            json!({"DBClusterIdentifier": "x", "MasterUserPassword": "lonely-Secret9"}),
            "InvalidParameterCombination",
        ),
        (
            "/v1/clusters",
            json!({"DBClusterIdentifier": "x", "MasterUsername": "admin", "MasterUserPassword": "short"}),
            "InvalidParameterValue",
        ),
        (
            "/v1/clusters",
            json!({"DBClusterIdentifier": "x", "MasterUsername": "9lives"}),
            "InvalidParameterValue",
        ),
        (
            "/v1/clusters",
            json!({"DBClusterIdentifier": "x", "MasterUsername": "admin", "MasterUserPassword": "has space in"}),
            "InvalidParameterValue",
        ),
    ] {
        let (status, answer) = app.post(path, body).await;
        assert_error(status, &answer, 400, code);
    }
    app.create_cluster("plain", 0).await;
    let (status, answer) = app
        .patch(
            "/v1/clusters/plain",
            json!({"MasterUserPassword": "third-Secret9"}),
        )
        .await;
    assert_error(status, &answer, 400, "InvalidParameterCombination");
    assert_eq!(app.get("/v1/clusters/x").await.0, 404);
    assert_eq!(
        stored(store.cluster(&id).await.unwrap().master_user_verifier),
        changed
    );
}
