//! End-to-end benchmark (a program, not a test): `cargo bench -p backtrack-service --bench e2e`.
//!
//! Real processes: a storage node (`backtrack-service node`) and the control plane pointed at
//! it, metadata in SQLite. Each figure is printed beside a baseline from the same run:
//! - Data API single-row INSERTs per second through the control plane (1 and 8 clients), vs
//!   the same statements sent straight to the storage node's HTTP API (the control plane's
//!   cost);
//! - backtrack wall time, from BacktrackDBCluster to the backtrack reading `completed`, on a
//!   100 MB cluster, vs on an almost empty one (the cost does not depend on size).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backtrack_storage_node::api::{ExecuteRequest, Value as NodeValue};
use backtrack_storage_node::client::NodeClient;
use serde_json::{json, Value};

const TOKEN: &str = "bench-token";
const RUN_FOR: Duration = Duration::from_secs(4);

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[&str], dir: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backtrack-service"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env("BACKTRACK_NODE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = backtrack_storage_node::testing::listening_address(&mut child);
    (Process(child), url)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-e2e");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let (_node, node_url) = start(&["node", "--listen", "127.0.0.1:0"], &root.join("node"));
    let (_service, url) = start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--node",
            &format!("bench={node_url}"),
            "--poll-interval-ms",
            "20",
        ],
        &root.join("service"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bench = Bench {
            url,
            http: reqwest::Client::new(),
            node: NodeClient::new(&node_url, TOKEN, Duration::from_secs(30)),
        };
        println!(
            "Backtrack end-to-end benchmark (control plane + one storage node, SQLite metadata)"
        );
        bench.inserts().await;
        bench.backtracks().await;
    });
    let _ = std::fs::remove_dir_all(&root);
}

struct Bench {
    url: String,
    http: reqwest::Client,
    node: NodeClient,
}

impl Bench {
    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {body}");
        body
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates a cluster; returns its volume id.
    async fn cluster(&self, id: &str) -> String {
        let body = self
            .post(
                "/v1/clusters",
                json!({"DBClusterIdentifier": id, "BacktrackWindow": 86400}),
            )
            .await;
        body["DBCluster"]["DbClusterResourceId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn sql(&self, cluster: &str, sql: &str, parameters: Value) -> Value {
        self.post(
            "/Execute",
            json!({
                "resourceArn": format!("arn:aws:rds:us-east-1:000000000000:cluster:{cluster}"),
                "secretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:bench",
                "sql": sql,
                "parameters": parameters,
            }),
        )
        .await
    }

    async fn inserts(&self) {
        let mut volumes = Vec::new();
        for c in 0..8 {
            let id = format!("ins-{c}");
            volumes.push(self.cluster(&id).await);
            self.sql(
                &id,
                "CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)",
                json!([]),
            )
            .await;
        }
        for clients in [1usize, 8] {
            let mut via_api = Vec::new();
            let mut direct = Vec::new();
            for _ in 0..2 {
                via_api.push(self.rate(clients, |c, n| async move {
                    self.sql(
                        &format!("ins-{c}"),
                        "INSERT INTO t (k, v) VALUES (:k, :v)",
                        json!([{"name": "k", "value": {"longValue": n}}, {"name": "v", "value": {"stringValue": "a row of about forty bytes of text"}}]),
                    )
                    .await;
                })
                .await);
                let volumes = &volumes;
                direct.push(
                    self.rate(clients, |c, n| async move {
                        let request = ExecuteRequest {
                            sql: "INSERT INTO t (k, v) VALUES (:k, :v)".into(),
                            params: vec![
                                NodeValue::Integer(n),
                                NodeValue::Text("a row of about forty bytes of text".into()),
                            ],
                            param_names: Some(vec![":k".into(), ":v".into()]),
                            ..Default::default()
                        };
                        self.node.execute(&volumes[c], &request).await.unwrap();
                    })
                    .await,
                );
            }
            let (a, d) = (best(&via_api), best(&direct));
            println!(
                "\nData API single-row INSERTs, {clients} client(s), one cluster each:\n  through the control plane {a:>7.0}/s   straight to the node {d:>7.0}/s  =>  {:.2}x",
                a / d
            );
        }
    }

    /// Statements per second from `clients` concurrent loops for RUN_FOR.
    async fn rate<'a, F, Fut>(&'a self, clients: usize, statement: F) -> f64
    where
        F: Fn(usize, i64) -> Fut + Copy + 'a,
        Fut: std::future::Future<Output = ()> + 'a,
    {
        let deadline = Instant::now() + RUN_FOR;
        let loops = (0..clients).map(|c| async move {
            let mut n = 0;
            while Instant::now() < deadline {
                statement(c, n).await;
                n += 1;
            }
            n
        });
        let counts = futures_util::future::join_all(loops).await;
        counts.iter().sum::<i64>() as f64 / RUN_FOR.as_secs_f64()
    }

    async fn backtracks(&self) {
        for (name, megabytes) in [("small", 0u64), ("large", 100)] {
            self.cluster(name).await;
            self.sql(
                name,
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
                json!([]),
            )
            .await;
            let rows = megabytes * 1_000_000 / 3500;
            let mut loaded = 0;
            while loaded < rows {
                let n = (rows - loaded).min(10_000);
                self.sql(
                    name,
                    &format!(
                        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                         INSERT INTO t (v) SELECT randomblob(3500) FROM n"
                    ),
                    json!([]),
                )
                .await;
                loaded += n;
            }
            let mut marks = Vec::new();
            for i in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                marks.push(iso_now());
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.sql(
                    name,
                    &format!("INSERT INTO t (v) VALUES (x'{i:02x}')"),
                    json!([]),
                )
                .await;
            }
            let mut times = Vec::new();
            for round in 0..10 {
                let to = &marks[(round * 7) % marks.len()];
                let started = Instant::now();
                let accepted = self
                    .post(
                        &format!("/v1/clusters/{name}/backtracks"),
                        json!({"BacktrackTo": to}),
                    )
                    .await;
                let id = accepted["BacktrackIdentifier"].as_str().unwrap();
                loop {
                    let body = self
                        .get(&format!("/v1/clusters/{name}/backtracks/{id}"))
                        .await;
                    if body["Status"] == "completed" {
                        break;
                    }
                    assert_ne!(body["Status"], "failed", "{body}");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let cluster = self.get(&format!("/v1/clusters/{name}")).await;
            println!(
                "\nBacktrack, request to `completed`, {name} cluster ({megabytes} MB of rows, {} change records stored):\n  median {:.1} ms, max {:.1} ms over {} backtracks",
                cluster["DBCluster"]["BacktrackConsumedChangeRecords"],
                times[times.len() / 2],
                times[times.len() - 1],
                times.len()
            );
        }
    }
}

fn best(rates: &[f64]) -> f64 {
    rates.iter().cloned().fold(0.0, f64::max)
}

fn iso_now() -> String {
    backtrack_service::domain::Timestamp::now().to_string()
}
