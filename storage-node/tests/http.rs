//! The node's HTTP API, served in-process on 127.0.0.1:0 and driven by the typed client the
//! control plane uses: bearer auth, the volume lifecycle, SQL, transactions, contract errors,
//! health, and the Prometheus text of /metrics.

use std::path::PathBuf;
use std::time::Duration;

use backtrack_storage_node::api::{BacktrackRequest, ErrorCode, ExecuteRequest, Value};
use backtrack_storage_node::client::{CallError, NodeClient};
use backtrack_storage_node::engine::{Engine, EngineConfig};

const TOKEN: &str = "http-test-token";

struct Node {
    url: String,
    client: NodeClient,
    _dir: Dir,
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start() -> Node {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("http-{}", uuid::Uuid::new_v4().simple()));
    let engine = Engine::open(EngineConfig::new(&dir)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            backtrack_storage_node::http::router(engine, TOKEN, None),
        )
        .await
        .unwrap()
    });
    Node {
        client: NodeClient::new(&url, TOKEN, Duration::from_secs(10)),
        url,
        _dir: Dir(dir),
    }
}

fn refused(result: Result<impl std::fmt::Debug, CallError>) -> (u16, ErrorCode) {
    match result {
        Err(CallError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_without_the_token_are_refused_but_health_and_metrics_are_open() {
    let node = start().await;
    let wrong = NodeClient::new(&node.url, "wrong", Duration::from_secs(5));
    assert_eq!(
        refused(wrong.volumes().await),
        (401, ErrorCode::Unauthorized)
    );
    let bare = reqwest::get(format!("{}/v1/volumes", node.url))
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    assert_eq!(wrong.health().await.unwrap().status, "ok");
    assert_eq!(
        reqwest::get(format!("{}/metrics", node.url))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_volume_is_created_used_backtracked_and_deleted_over_http() {
    let node = start().await;
    let client = &node.client;
    let created = client.create_volume("cluster-a", 3600).await.unwrap();
    assert_eq!(created.window_secs, 3600);
    // Creating again is idempotent.
    assert_eq!(
        client
            .create_volume("cluster-a", 3600)
            .await
            .unwrap()
            .created_at_us,
        created.created_at_us
    );

    let run = |sql: &str, params: Vec<Value>| ExecuteRequest {
        sql: sql.into(),
        params,
        ..Default::default()
    };
    client
        .execute("cluster-a", &run("CREATE TABLE t (x)", vec![]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mark = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let inserted = client
        .execute(
            "cluster-a",
            &run("INSERT INTO t VALUES (?)", vec![Value::Integer(7)]),
        )
        .await
        .unwrap();
    assert_eq!(inserted.rows_affected, 1);
    assert_eq!(inserted.last_insert_rowid, Some(1));

    let tx = client.begin("cluster-a").await.unwrap().transaction_id;
    let mut in_tx = run("INSERT INTO t VALUES (8)", vec![]);
    in_tx.transaction_id = Some(tx.clone());
    client.execute("cluster-a", &in_tx).await.unwrap();
    assert_eq!(
        client.volume("cluster-a").await.unwrap().open_transactions,
        1
    );
    let request = BacktrackRequest {
        backtrack_id: uuid::Uuid::new_v4(),
        to_us: mark,
        clamp_to_earliest: false,
        force: false,
    };
    assert_eq!(
        refused(client.backtrack("cluster-a", &request).await),
        (409, ErrorCode::OpenTransactions)
    );
    let forced = BacktrackRequest {
        force: true,
        ..request
    };
    let outcome = client.backtrack("cluster-a", &forced).await.unwrap();
    assert_eq!(outcome.rolled_back_transactions, 1);
    // Repeating the id returns the recorded outcome and applies nothing more.
    let again = client.backtrack("cluster-a", &forced).await.unwrap();
    assert_eq!(again, outcome);
    assert_eq!(
        client.volume("cluster-a").await.unwrap().backtracks_applied,
        1
    );
    assert_eq!(
        client.backtracks("cluster-a").await.unwrap().backtracks,
        vec![outcome.clone()]
    );
    assert_eq!(
        refused(client.commit("cluster-a", &tx).await),
        (404, ErrorCode::TransactionNotFound)
    );
    let count = client
        .execute("cluster-a", &run("SELECT count(*) FROM t", vec![]))
        .await
        .unwrap();
    assert_eq!(count.rows, vec![vec![Value::Integer(0)]]);

    assert_eq!(
        refused(client.execute("cluster-a", &run("SELEC 1", vec![])).await),
        (400, ErrorCode::SqlError)
    );
    assert_eq!(
        refused(client.volume("cluster-b").await),
        (404, ErrorCode::VolumeNotFound)
    );
    assert_eq!(
        refused(client.create_volume("bad/id", 1).await),
        (400, ErrorCode::InvalidRequest)
    );
    assert_eq!(
        refused(client.create_volume("bad.id", 1).await),
        (400, ErrorCode::InvalidRequest)
    );
    assert_eq!(
        refused(client.create_volume("too-long", 259_201).await),
        (400, ErrorCode::InvalidRequest)
    );

    client.delete_volume("cluster-a").await.unwrap();
    assert_eq!(
        refused(client.volume("cluster-a").await).1,
        ErrorCode::VolumeNotFound
    );
    // Deleting what is gone is fine.
    client.delete_volume("cluster-a").await.unwrap();
}

#[tokio::test]
async fn metrics_are_well_formed_prometheus_text() {
    let node = start().await;
    node.client.create_volume("cluster-m", 60).await.unwrap();
    let run = ExecuteRequest {
        sql: "CREATE TABLE t (x)".into(),
        ..Default::default()
    };
    node.client.execute("cluster-m", &run).await.unwrap();
    let response = reqwest::get(format!("{}/metrics", node.url)).await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let mut declared = std::collections::HashMap::new();
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["gauge", "counter"].contains(&kind), "{line}");
            declared.insert(name.to_string(), kind.to_string());
        } else if line.starts_with("# HELP ") || line.is_empty() {
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(
                declared.contains_key(name),
                "sample before its TYPE: {line}"
            );
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (key, value) = pair.split_once('=').unwrap();
                    assert!(
                        key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
                }
            }
            samples += 1;
        }
    }
    assert!(samples >= 10, "{text}");
    assert!(
        text.contains("backtrack_volume_change_records_stored{volume=\"cluster-m\"}"),
        "{text}"
    );
    assert_eq!(declared["backtrack_node_log_syncs_total"], "counter");
}
