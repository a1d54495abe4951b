use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::ResponseTemplate;

use crate::backtracks::BacktrackEchoAfter;
use crate::helpers::*;

#[tokio::test]
async fn a_job_whose_node_call_fails_twice_then_succeeds_completes() {
    let app = spawn_app().await;
    app.create_cluster("flaky", 3600).await;
    mount_backtracks(
        &app.node,
        ResponseTemplate::new(503).set_body_string("upstream down"),
        Some(2),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (status, body) = app.backtrack("flaky", 0.01).await;
    assert_eq!(status, 202, "{body}");
    let id = body["BacktrackIdentifier"].as_str().unwrap();
    let done = app.wait_for_backtrack("flaky", id).await;
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(app.cluster_status("flaky").await, "available");
    // Three calls, all with the same idempotency key.
    let calls = backtrack_calls(&app.node).await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.to_string() == id));
}

#[tokio::test]
async fn a_job_whose_node_stays_down_past_the_deadline_fails_with_a_reason() {
    let app = spawn_app_with(|c| c.job_deadline_secs = 1).await;
    app.create_cluster("down", 3600).await;
    mount_backtracks(&app.node, ResponseTemplate::new(503), None).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let started = Instant::now();
    let (_, body) = app.backtrack("down", 0.01).await;
    let done = app
        .wait_for_backtrack("down", body["BacktrackIdentifier"].as_str().unwrap())
        .await;
    assert_eq!(done["Status"], "failed", "{done}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    let reason = done["StatusReason"].as_str().unwrap();
    assert!(
        reason.contains("deadline") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(app.cluster_status("down").await, "available");
    assert!(
        backtrack_calls(&app.node).await.len() >= 2,
        "it was retried"
    );
}

#[tokio::test]
async fn a_job_the_node_refuses_fails_at_once_with_the_nodes_reason() {
    let app = spawn_app().await;
    app.create_cluster("refused", 3600).await;
    mount_backtracks(
        &app.node,
        ResponseTemplate::new(400).set_body_json(json!({
            "code": "before_earliest",
            "message": "the requested time is before the earliest restorable time"
        })),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, body) = app.backtrack("refused", 0.01).await;
    let done = app
        .wait_for_backtrack("refused", body["BacktrackIdentifier"].as_str().unwrap())
        .await;
    assert_eq!(done["Status"], "failed");
    assert!(done["StatusReason"]
        .as_str()
        .unwrap()
        .contains("earliest restorable"));
    assert_eq!(
        backtrack_calls(&app.node).await.len(),
        1,
        "a refusal is not retried"
    );
    assert_eq!(app.cluster_status("refused").await, "available");
}

#[tokio::test]
async fn a_job_interrupted_by_a_crash_completes_exactly_once_after_restart() {
    let app = spawn_app_with(|c| c.job_lease_secs = 3).await;
    app.create_cluster("crash", 3600).await;
    // The first call hangs long enough for the crash; later calls answer at once.
    mount_backtracks(
        &app.node,
        BacktrackEchoAfter(Duration::from_millis(1500)),
        Some(1),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, body) = app.backtrack("crash", 0.01).await;
    let id = body["BacktrackIdentifier"].as_str().unwrap().to_string();
    wait_until(|| async { !backtrack_calls(&app.node).await.is_empty() }).await;

    let (node, db) = app.crash().await;
    let mut config = test_config(&db, &node);
    config.job_lease_secs = 3;
    let app = start(config, node, db).await;
    // The job is still applying under the dead runner's lease, then taken over.
    let (_, during) = app
        .get(&format!("/v1/clusters/crash/backtracks/{id}"))
        .await;
    assert_eq!(during["Status"], "applying");
    let done = app.wait_for_backtrack("crash", &id).await;
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(app.cluster_status("crash").await, "available");
    let calls = backtrack_calls(&app.node).await;
    assert_eq!(calls.len(), 2, "one call per runner");
    assert!(
        calls.iter().all(|c| c.to_string() == id),
        "one backtrack id"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_the_running_job_step_finish() {
    let app = spawn_app().await;
    app.create_cluster("drain", 3600).await;
    mount_backtracks(
        &app.node,
        BacktrackEchoAfter(Duration::from_millis(700)),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, body) = app.backtrack("drain", 0.01).await;
    let id = body["BacktrackIdentifier"].as_str().unwrap().to_string();
    wait_until(|| async { !backtrack_calls(&app.node).await.is_empty() }).await;

    let (node, db) = app.stop().await;
    // Without any runner left, the job was recorded as completed by the one that stopped.
    let mut config = test_config(&db, &node);
    config.poll_interval_ms = 60_000;
    let app = start(config, node, db).await;
    let (_, body) = app
        .get(&format!("/v1/clusters/drain/backtracks/{id}"))
        .await;
    assert_eq!(body["Status"], "completed", "{body}");
    assert_eq!(backtrack_calls(&app.node).await.len(), 1);
}

/// The real binary, killed with SIGKILL while its node call is in flight, and started again on
/// the same database: the backtrack completes, once, under one id.
#[tokio::test]
async fn the_service_process_killed_mid_job_finishes_the_job_after_restart() {
    let node = wiremock::MockServer::start().await;
    mount_healthy_node(&node).await;
    mount_backtracks(&node, BacktrackEchoAfter(Duration::from_secs(5)), Some(1)).await;
    let db = TestDb::new().await;

    let (mut first, address) = spawn_process(&db, &node);
    let app = Client(address);
    app.post(
        "/v1/clusters",
        json!({"DBClusterIdentifier": "killed", "BacktrackWindow": 3600}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = app
        .post(
            "/v1/clusters/killed/backtracks",
            json!({"BacktrackTo": now_secs() - 0.01}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["BacktrackIdentifier"].as_str().unwrap().to_string();
    wait_until(|| async { !backtrack_calls(&node).await.is_empty() }).await;
    first.kill();

    let (mut second, address) = spawn_process(&db, &node);
    let app = Client(address);
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (_, body) = app
            .get(&format!("/v1/clusters/killed/backtracks/{id}"))
            .await;
        if body["Status"] == "completed" || body["Status"] == "failed" {
            break body;
        }
        assert!(Instant::now() < deadline, "never finished: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    second.kill();
    assert_eq!(done["Status"], "completed", "{done}");
    let calls = backtrack_calls(&node).await;
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.to_string() == id));
}

/// The service process, killed (SIGKILL) when dropped, so a failing test leaves nothing behind.
struct Process(Child);

impl Process {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_process(db: &TestDb, node: &wiremock::MockServer) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backtrack-service"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--database-url")
        .arg(&db.url)
        .arg("--node")
        .arg(format!("node-a={}", node.uri()))
        .args([
            "--node-token",
            NODE_TOKEN,
            "--job-lease-secs",
            "2",
            "--node-timeout-ms",
            "1500",
        ])
        .args(["--poll-interval-ms", "50"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let address = listening_address(&mut child);
    (Process(child), address)
}

struct Client(String);

impl Client {
    async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.0))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        decode(reqwest::get(format!("{}{path}", self.0)).await.unwrap()).await
    }
}

async fn wait_until<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
