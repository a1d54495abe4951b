//! The test harness: the real app on 127.0.0.1:0 over a fresh database, with wiremock standing
//! in for a storage node.
//!
//! The database is a SQLite file in a fresh directory, or, when `BACKTRACK_TEST_DATABASE_URL`
//! names a PostgreSQL server (e.g. `postgres://postgres@127.0.0.1:5432/postgres`), a fresh
//! database created on it for the one test and dropped afterwards.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backtrack_service::config::Config;
use backtrack_service::startup::{App, ShutdownHandle};
use backtrack_storage_node::api::{BacktrackOutcome, BacktrackRequest, VolumeFigures};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::task::JoinHandle;
use uuid::Uuid;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const NODE_TOKEN: &str = "test-node-token";

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "backtrack-service-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The metadata database of one test.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> Self {
        let dir = TempDir::new();
        match std::env::var("BACKTRACK_TEST_DATABASE_URL") {
            Ok(admin) if admin.starts_with("postgres") => {
                sqlx::any::install_default_drivers();
                let name = format!("bt_test_{}", Uuid::new_v4().simple());
                let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap().to_string();
                TestDb {
                    url: format!("{base}/{name}"),
                    dir,
                    postgres: Some((admin, name)),
                }
            }
            _ => TestDb {
                url: format!("sqlite://{}?mode=rwc", dir.0.join("meta.db").display()),
                dir,
                postgres: None,
            },
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside any runtime we may block, so use a thread of our own.
            let _ = std::thread::spawn(move || {
                sqlx::any::install_default_drivers();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub node: MockServer,
    pub db: TestDb,
    running: Running,
}

/// Stops the app when the test ends, however it ends.
struct Running {
    shutdown: ShutdownHandle,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A config for tests: port 0, the test database, the mock node, and short timings.
pub fn test_config(db: &TestDb, node: &MockServer) -> Config {
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = db.dir.0.clone();
    config.database_url = Some(db.url.clone());
    config.nodes = vec![format!("node-a={}", node.uri()).parse().unwrap()];
    config.node_token = Some(NODE_TOKEN.into());
    config.node_timeout_ms = 2_000;
    config.job_lease_secs = 5;
    config.job_deadline_secs = 30;
    config.job_retry_base_ms = 20;
    config.job_retry_max_ms = 100;
    config.poll_interval_ms = 50;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app over a fresh database and a mock node that behaves like a healthy one.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let node = MockServer::start().await;
    mount_healthy_node(&node).await;
    let db = TestDb::new().await;
    let mut config = test_config(&db, &node);
    adjust(&mut config);
    start(config, node, db).await
}

/// Starts the app from `config` (which names `db` and `node`).
pub async fn start(config: Config, node: MockServer, db: TestDb) -> TestApp {
    let app = App::build(config).await.expect("the app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        http: reqwest::Client::new(),
        node,
        db,
        running: Running {
            shutdown,
            task: Some(task),
        },
    }
}

impl TestApp {
    /// Stops the app the graceful way and gives back its node and database.
    pub async fn stop(mut self) -> (MockServer, TestDb) {
        self.running.shutdown.shutdown();
        self.running.task.take().unwrap().await.unwrap().unwrap();
        (self.node, self.db)
    }

    /// Stops the app the hard way (its tasks are dropped mid-flight, as in a crash).
    pub async fn crash(mut self) -> (MockServer, TestDb) {
        let task = self.running.task.take().unwrap();
        task.abort();
        let _ = task.await;
        (self.node, self.db)
    }

    /// A GET with one header set (an `Origin`, a `Host`); the raw response.
    pub async fn get_with(
        &self,
        path: &str,
        name: reqwest::header::HeaderName,
        value: impl AsRef<str>,
    ) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .header(name, value.as_ref())
            .send()
            .await
            .unwrap()
    }

    /// Posts `body` as it is, with `content_type`: for bodies a JSON value cannot make.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.address))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts an ExecuteStatement call to the Data API; the raw response, for its headers.
    pub async fn execute(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/Execute", self.address))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .patch(format!("{}{path}", self.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap();
        decode(response).await
    }

    /// Creates an available cluster with a backtrack window.
    pub async fn create_cluster(&self, id: &str, window: i64) -> Value {
        let (status, body) = self
            .post(
                "/v1/clusters",
                json!({"DBClusterIdentifier": id, "BacktrackWindow": window}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["DBCluster"]["Status"], "available", "{body}");
        body["DBCluster"].clone()
    }

    /// Requests a backtrack to `seconds_ago` seconds before now.
    pub async fn backtrack(&self, id: &str, seconds_ago: f64) -> (u16, Value) {
        let to = now_secs() - seconds_ago;
        self.post(
            &format!("/v1/clusters/{id}/backtracks"),
            json!({"BacktrackTo": to}),
        )
        .await
    }

    /// Polls a backtrack until it is completed or failed.
    pub async fn wait_for_backtrack(&self, cluster: &str, backtrack: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self
                .get(&format!("/v1/clusters/{cluster}/backtracks/{backtrack}"))
                .await;
            assert_eq!(status, 200, "{body}");
            if body["Status"] == "completed" || body["Status"] == "failed" {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "backtrack never finished: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn cluster_status(&self, id: &str) -> String {
        let (status, body) = self.get(&format!("/v1/clusters/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["DBCluster"]["Status"].as_str().unwrap().to_string()
    }
}

pub async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Asserts an RDS-style error: status, code, and the JSON shape with a request id.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["Error"]["Code"], want_code, "{body}");
    assert!(
        body["Error"]["Message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["Error"]["Type"] == "Sender" || body["Error"]["Type"] == "Receiver",
        "{body}"
    );
    assert!(
        body["RequestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

/// Volume calls answer as a healthy node would; backtracks echo their request.
pub async fn mount_healthy_node(node: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex("^/healthz$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok", "volumes": 0})),
        )
        .mount(node)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .respond_with(VolumeEcho)
        .mount(node)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .respond_with(VolumeEcho)
        .mount(node)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/v1/volumes/[^/]+/access$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(node)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(node)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v1/volumes/[^/]+/backtracks$"))
        .respond_with(BacktrackEcho)
        .with_priority(10)
        .mount(node)
        .await;
}

/// Answers backtrack calls with `responder` (at most `times` times if given), ahead of the
/// healthy node's answer.
pub async fn mount_backtracks(
    node: &MockServer,
    responder: impl Respond + 'static,
    times: Option<u64>,
) {
    let mock = Mock::given(method("POST"))
        .and(path_regex("^/v1/volumes/[^/]+/backtracks$"))
        .respond_with(responder)
        .with_priority(1);
    let mock = match times {
        Some(n) => mock.up_to_n_times(n),
        None => mock,
    };
    mock.mount(node).await;
}

/// A node's answer to PUT/PATCH of a volume.
pub struct VolumeEcho;

impl Respond for VolumeEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let id = request.url.path().rsplit('/').next().unwrap().to_string();
        let figures = VolumeFigures {
            volume_id: id,
            window_secs: body["window_secs"].as_u64().unwrap(),
            actual_window_secs: body["window_secs"].as_u64().unwrap(),
            created_at_us: 0,
            earliest_restorable_us: None,
            change_records_created: 0,
            change_records_stored: 0,
            backtracks_applied: 0,
            bytes_on_disk: 0,
            open_transactions: 0,
            switching: false,
            clone_of: None,
        };
        ResponseTemplate::new(200).set_body_json(figures)
    }
}

/// A node's answer to a backtrack: done, to the time asked.
pub struct BacktrackEcho;

impl Respond for BacktrackEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let asked: BacktrackRequest = serde_json::from_slice(&request.body).unwrap();
        ResponseTemplate::new(200).set_body_json(BacktrackOutcome {
            backtrack_id: asked.backtrack_id,
            backtrack_to_us: asked.to_us,
            backtracked_from_us: (now_secs() * 1e6) as i64,
            rolled_back_transactions: 0,
        })
    }
}

/// The backtrack ids the mock node was asked to apply, in order.
pub async fn backtrack_calls(node: &MockServer) -> Vec<Uuid> {
    node.received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with("/backtracks"))
        .map(|r| {
            serde_json::from_slice::<BacktrackRequest>(&r.body)
                .unwrap()
                .backtrack_id
        })
        .collect()
}

pub use backtrack_storage_node::testing::listening_address;
