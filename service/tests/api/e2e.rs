//! End to end: the real `backtrack-service` binary with its two real storage nodes (child
//! processes), metadata in the test's database (SQLite, or PostgreSQL in CI), SQL through
//! the RDS Data API. No mocks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// The service process; killed when dropped (its nodes then see their input close and stop).
pub struct Service {
    /// The process, when this handle owns it.
    child: Option<Child>,
    pub url: String,
    pub http: reqwest::Client,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn start_service(db: &TestDb, extra: &[&str]) -> Service {
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--poll-interval-ms",
        "50",
    ];
    args.extend([
        "--job-retry-base-ms",
        "100",
        "--job-retry-max-ms",
        "500",
        "--database-url",
        &db.url,
    ]);
    args.extend(extra);
    let (child, url) = start_process(&args, &db.dir.0);
    Service::from_parts(child, url)
}

/// Starts `backtrack-service ARGS --data-dir DIR` and returns it with the address it announces.
pub fn start_process(args: &[&str], dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_backtrack-service"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = listening_address(&mut child);
    (child, url)
}

impl Service {
    /// SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("this handle owns the process");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("this handle owns the process")
            .id()
    }

    pub fn from_parts(child: Child, url: String) -> Service {
        Service {
            child: Some(child),
            url,
            http: reqwest::Client::new(),
        }
    }

    /// A handle on a service at `url` that something else runs (and restarts).
    pub fn at(url: &str) -> Service {
        Service {
            child: None,
            url: url.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        decode(request.send().await.unwrap()).await
    }

    pub async fn create_cluster(&self, id: &str) {
        let (status, body) = self
            .call(
                "POST",
                "/v1/clusters",
                Some(json!({"DBClusterIdentifier": id, "BacktrackWindow": 3600})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["DBCluster"]["Status"], "available", "{body}");
    }

    /// Runs SQL through the Data API; panics unless it succeeds.
    pub async fn sql(&self, cluster: &str, sql: &str) -> Value {
        let (status, body) = self.data("/Execute", cluster, json!({"sql": sql})).await;
        assert_eq!(status, 200, "{sql}: {body}");
        body
    }

    /// A Data API call for `cluster` with `members` added to the request.
    pub async fn data(&self, action: &str, cluster: &str, members: Value) -> (u16, Value) {
        let mut body = json!({
            "resourceArn": format!("arn:aws:rds:us-east-1:000000000000:cluster:{cluster}"),
            "secretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:test",
        });
        body.as_object_mut()
            .unwrap()
            .extend(members.as_object().unwrap().clone());
        self.call("POST", action, Some(body)).await
    }

    /// Requests a backtrack to `to` (ISO 8601) and waits for it to finish.
    pub async fn backtrack(&self, cluster: &str, to: &str) -> Value {
        let (status, body) = self
            .call(
                "POST",
                &format!("/v1/clusters/{cluster}/backtracks"),
                Some(json!({"BacktrackTo": to, "Force": true})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        self.wait_for(cluster, body["BacktrackIdentifier"].as_str().unwrap())
            .await
    }

    pub async fn wait_for(&self, cluster: &str, backtrack: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = self
                .call(
                    "GET",
                    &format!("/v1/clusters/{cluster}/backtracks/{backtrack}"),
                    None,
                )
                .await;
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

    pub async fn status(&self, cluster: &str) -> String {
        let (_, body) = self
            .call("GET", &format!("/v1/clusters/{cluster}"), None)
            .await;
        body["DBCluster"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The current time as the API writes it (UTC, milliseconds), after a pause so that it falls
/// strictly between the commits before and after it.
pub async fn instant() -> String {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = now_secs();
    tokio::time::sleep(Duration::from_millis(20)).await;
    iso(now)
}

pub fn iso(secs: f64) -> String {
    backtrack_service::domain::Timestamp::from_micros((secs * 1e6) as i64).to_string()
}

const CHECKSUM: &str = "SELECT count(*), sum(id), sum(qty * 7 + length(item)) FROM orders";

async fn write_orders(service: &Service, cluster: &str, rows: usize) {
    service
        .sql(
            cluster,
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER)",
        )
        .await;
    for batch in 0..rows / 1000 {
        let sets: Vec<Value> = (0..1000)
            .map(|i| {
                let n = batch * 1000 + i;
                json!([
                    {"name": "item", "value": {"stringValue": format!("item-{n}")}},
                    {"name": "qty", "value": {"longValue": n % 17}},
                ])
            })
            .collect();
        let (status, body) = service
            .data(
                "/BatchExecute",
                cluster,
                json!({"sql": "INSERT INTO orders (item, qty) VALUES (:item, :qty)", "parameterSets": sets}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["updateResults"].as_array().unwrap().len(), 1000);
    }
}

/// Which local node holds `volume`.
fn node_of(data_dir: &Path, volume: &str) -> usize {
    (0..2)
        .find(|n| {
            data_dir
                .join("nodes")
                .join(n.to_string())
                .join("volumes")
                .join(volume)
                .exists()
        })
        .unwrap_or_else(|| panic!("volume {volume} is on no node"))
}

#[tokio::test]
async fn two_clusters_on_two_nodes_come_back_from_delete_and_drop_and_go_forward_again() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("alpha").await;
    service.create_cluster("beta").await;
    let (_, clusters) = service.call("GET", "/v1/clusters", None).await;
    let volumes: Vec<String> = clusters["DBClusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DbClusterResourceId"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(
        node_of(&db.dir.0, &volumes[0]),
        node_of(&db.dir.0, &volumes[1]),
        "one cluster per node"
    );

    write_orders(&service, "alpha", 10_000).await;
    write_orders(&service, "beta", 1_000).await;
    let alpha_sum = service.sql("alpha", CHECKSUM).await["records"].clone();
    let beta_sum = service.sql("beta", CHECKSUM).await["records"].clone();
    assert_eq!(alpha_sum[0][0]["longValue"], 10_000);

    let before = instant().await;
    let deleted = service.sql("alpha", "DELETE FROM orders").await;
    assert_eq!(deleted["numberOfRecordsUpdated"], 10_000);
    let after_delete = instant().await;
    service.sql("alpha", "DROP TABLE orders").await;
    let after_drop = now_secs();

    let done = service.backtrack("alpha", &before).await;
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(done["BacktrackTo"], before.as_str());
    let from = done["BacktrackedFrom"].as_str().unwrap();
    assert!(
        from > iso(after_drop).as_str(),
        "BacktrackedFrom {from} is after the mistakes"
    );
    assert_eq!(
        service.sql("alpha", CHECKSUM).await["records"],
        alpha_sum,
        "every row is back"
    );
    let check = service.sql("alpha", "PRAGMA integrity_check").await;
    assert_eq!(check["records"][0][0]["stringValue"], "ok");

    // Forward again: to after the DELETE, before the DROP.
    let forward = service.backtrack("alpha", &after_delete).await;
    assert_eq!(forward["Status"], "completed");
    assert_eq!(forward["BacktrackTo"], after_delete.as_str());
    let count = service.sql("alpha", "SELECT count(*) FROM orders").await;
    assert_eq!(
        count["records"][0][0]["longValue"], 0,
        "the table is there, and empty"
    );

    // The other cluster, on the other node, was never touched.
    assert_eq!(service.sql("beta", CHECKSUM).await["records"], beta_sum);
    let (_, list) = service
        .call("GET", "/v1/clusters/alpha/backtracks", None)
        .await;
    let list = list["DBClusterBacktracks"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["BacktrackTo"], after_delete.as_str());
    assert_eq!(list[1]["BacktrackTo"], before.as_str());
    assert!(list.iter().all(|b| b["Status"] == "completed"));
    let (_, cluster) = service.call("GET", "/v1/clusters/alpha", None).await;
    assert_eq!(cluster["DBCluster"]["Status"], "available");
    assert!(
        cluster["DBCluster"]["BacktrackConsumedChangeRecords"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn a_storage_node_killed_during_a_backtrack_comes_back_and_the_job_finishes() {
    let db = TestDb::new().await;
    let service = start_service(&db, &["--job-deadline-secs", "60"]);
    service.create_cluster("fragile").await;
    service
        .sql("fragile", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await;
    let mut acknowledged = 0;
    for i in 0..200 {
        service
            .sql("fragile", &format!("INSERT INTO t (v) VALUES ('row {i}')"))
            .await;
        acknowledged += 1;
    }
    let mark = instant().await;
    service
        .sql("fragile", "INSERT INTO t (v) VALUES ('after the mark')")
        .await;

    let (_, cluster) = service.call("GET", "/v1/clusters/fragile", None).await;
    let volume = cluster["DBCluster"]["DbClusterResourceId"]
        .as_str()
        .unwrap()
        .to_string();
    let node_dir = db
        .dir
        .0
        .join("nodes")
        .join(node_of(&db.dir.0, &volume).to_string());
    kill_node(&node_dir);
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters/fragile/backtracks",
            Some(json!({"BacktrackTo": mark})),
        )
        .await;
    let done = if status == 202 {
        service
            .wait_for("fragile", body["BacktrackIdentifier"].as_str().unwrap())
            .await
    } else {
        // The health check saw the node down first: the cluster was inaccessible. Once the
        // supervisor has restarted it, the backtrack goes through.
        assert_eq!(
            body["Error"]["Code"], "InvalidDBClusterStateFault",
            "{body}"
        );
        wait_until_available(&service, "fragile").await;
        service.backtrack("fragile", &mark).await
    };
    assert!(
        done["Status"] == "completed" || done["StatusReason"].is_string(),
        "{done}"
    );
    wait_until_available(&service, "fragile").await;
    let rows = service.sql("fragile", "SELECT count(*) FROM t").await;
    let expected = if done["Status"] == "completed" {
        acknowledged
    } else {
        acknowledged + 1
    };
    assert_eq!(
        rows["records"][0][0]["longValue"], expected,
        "no acknowledged write was lost"
    );
    let check = service.sql("fragile", "PRAGMA integrity_check").await;
    assert_eq!(check["records"][0][0]["stringValue"], "ok");
}

pub async fn wait_until_available(service: &Service, cluster: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.status(cluster).await != "available" {
        assert!(
            Instant::now() < deadline,
            "{cluster} never became available"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills (SIGKILL) the node process serving `node_dir`.
pub fn kill_node(node_dir: &Path) {
    let wanted = node_dir.to_string_lossy().to_string();
    let pid = node_pids(&wanted)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no node process for {wanted}"));
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// The node processes whose data directory starts with `dir` (all of a service's local nodes,
/// given its data directory).
pub fn node_pids(dir: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    let args: Vec<String> = raw
                        .split(|b| *b == 0)
                        .map(|a| String::from_utf8_lossy(a).to_string())
                        .collect();
                    args.iter().any(|a| a == "node") && args.iter().any(|a| a.starts_with(dir))
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn data_api_transactions_are_rolled_back_by_a_forced_backtrack() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("txs").await;
    service.sql("txs", "CREATE TABLE t (x INTEGER)").await;
    let before = instant().await;
    let (status, begun) = service.data("/BeginTransaction", "txs", json!({})).await;
    assert_eq!(status, 200, "{begun}");
    let tx = begun["transactionId"].as_str().unwrap().to_string();
    let (status, _) = service
        .data(
            "/Execute",
            "txs",
            json!({"sql": "INSERT INTO t VALUES (1)", "transactionId": tx}),
        )
        .await;
    assert_eq!(status, 200);

    // Without Force, an open transaction blocks the backtrack.
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters/txs/backtracks",
            Some(json!({"BacktrackTo": before})),
        )
        .await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    let done = service.backtrack("txs", &before).await;
    assert_eq!(done["Status"], "completed", "{done}");

    let (status, body) = service
        .data("/CommitTransaction", "txs", json!({"transactionId": tx}))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("rolled back"),
        "{body}"
    );
    let count = service.sql("txs", "SELECT count(*) FROM t").await;
    assert_eq!(count["records"][0][0]["longValue"], 0);

    // A transaction that commits normally.
    let (_, begun) = service.data("/BeginTransaction", "txs", json!({})).await;
    let tx = begun["transactionId"].as_str().unwrap().to_string();
    service
        .data(
            "/Execute",
            "txs",
            json!({"sql": "INSERT INTO t VALUES (2)", "transactionId": tx}),
        )
        .await;
    let (status, body) = service
        .data("/CommitTransaction", "txs", json!({"transactionId": tx}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["transactionStatus"], "Transaction Committed");
    let count = service.sql("txs", "SELECT count(*) FROM t").await;
    assert_eq!(count["records"][0][0]["longValue"], 1);
}

#[tokio::test]
async fn data_api_errors_have_the_rds_data_names_and_statuses() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("errs").await;
    let send = |body: Value| service.call("POST", "/Execute", Some(body));
    let arn = "arn:aws:rds:us-east-1:000000000000:cluster:errs";
    let cases = [
        (
            json!({"resourceArn": arn, "secretArn": "s", "sql": "SELEC 1"}),
            400,
            "DatabaseErrorException",
        ),
        (
            json!({"resourceArn": arn, "secretArn": "s", "sql": "SELECT * FROM nope"}),
            400,
            "DatabaseErrorException",
        ),
        (
            json!({"resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:ghost", "secretArn": "s", "sql": "SELECT 1"}),
            404,
            "DatabaseNotFoundException",
        ),
        (
            json!({"resourceArn": arn, "sql": "SELECT 1"}),
            400,
            "BadRequestException",
        ),
        (
            json!({"resourceArn": arn, "secretArn": "s", "sql": "SELECT :a", "parameters": [{"name": "a", "value": {}}]}),
            400,
            "BadRequestException",
        ),
        (
            json!({"resourceArn": arn, "secretArn": "s", "sql": "SELECT 1", "transactionId": "tx-nope"}),
            404,
            "TransactionNotFoundException",
        ),
    ];
    for (body, want_status, want_name) in cases {
        let response = service
            .http
            .post(format!("{}/Execute", service.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let name = response
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_string());
        let (status, reply) = decode(response).await;
        assert_eq!(
            (status, name.as_deref()),
            (want_status, Some(want_name)),
            "{body} -> {reply}"
        );
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
    let (status, _) = send(json!({"resourceArn": arn, "secretArn": "s", "sql": "SELECT 1"})).await;
    assert_eq!(status, 200);
    // With the HTTP endpoint disabled, SQL is refused.
    service
        .call(
            "PATCH",
            "/v1/clusters/errs",
            Some(json!({"EnableHttpEndpoint": false})),
        )
        .await;
    let response = service
        .http
        .post(format!("{}/Execute", service.url))
        .json(&json!({"resourceArn": arn, "secretArn": "s", "sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "HttpEndpointNotEnabledException"
    );
}

#[tokio::test]
async fn a_preview_says_what_a_backtrack_would_undo_and_changes_nothing() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("shop").await;
    write_orders(&service, "shop", 2000).await;
    service.sql("shop", "CREATE TABLE audit (what TEXT)").await;
    service
        .sql("shop", "INSERT INTO audit VALUES ('a'), ('b')")
        .await;
    let before = instant().await;
    service
        .sql("shop", "DELETE FROM orders WHERE id > 1980")
        .await;
    service
        .sql("shop", "UPDATE orders SET item = 'changed' WHERE id = 3")
        .await;
    service.sql("shop", "DROP TABLE audit").await;
    service.sql("shop", "CREATE TABLE later (x)").await;
    let checksum = service.sql("shop", CHECKSUM).await["records"].clone();

    let path =
        format!("/v1/clusters/shop/backtracks/preview?BacktrackTo={before}&IncludeRows=true");
    let (status, preview) = service.call("GET", &path, None).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["BacktrackTo"], before.as_str());
    assert!(preview["ChangeRecords"].as_u64().unwrap() > 0);
    let table = |name: &str| {
        preview["Tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["Name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {preview}"))
    };
    let orders = table("orders");
    assert_eq!(orders["Change"], "modified");
    assert_eq!(
        (
            orders["RowsInserted"].as_u64(),
            orders["RowsUpdated"].as_u64(),
            orders["RowsDeleted"].as_u64()
        ),
        (Some(0), Some(1), Some(20))
    );
    let three = orders["Rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["RowId"] == 3)
        .unwrap()
        .clone();
    assert_eq!(three["After"]["item"], "changed");
    assert_ne!(three["Before"]["item"], "changed");
    assert_eq!(table("audit")["Change"], "dropped");
    assert_eq!(table("audit")["RowsDeleted"], 2);
    assert_eq!(table("audit")["RowsDeleted"], 2);
    assert_eq!(table("later")["Change"], "created");
    // Nothing changed.
    assert_eq!(service.sql("shop", CHECKSUM).await["records"], checksum);
    let (_, list) = service
        .call("GET", "/v1/clusters/shop/backtracks", None)
        .await;
    assert_eq!(list["DBClusterBacktracks"].as_array().unwrap().len(), 0);

    // Refused as a backtrack would be.
    for (query, status, code) in [
        (String::new(), 400, "MissingParameter"),
        (
            "?BacktrackTo=2999-01-01T00:00:00Z".to_string(),
            400,
            "InvalidParameterValue",
        ),
        (
            "?BacktrackTo=2000-01-01T00:00:00Z".to_string(),
            400,
            "InvalidParameterValue",
        ),
        (
            format!("?BacktrackTo={before}&IncludeRows=maybe"),
            400,
            "InvalidParameterValue",
        ),
    ] {
        let (got, body) = service
            .call(
                "GET",
                &format!("/v1/clusters/shop/backtracks/preview{query}"),
                None,
            )
            .await;
        assert_error(got, &body, status, code);
    }
    let (got, body) = service
        .call(
            "GET",
            &format!("/v1/clusters/nosuch/backtracks/preview?BacktrackTo={before}"),
            None,
        )
        .await;
    assert_error(got, &body, 404, "DBClusterNotFoundFault");
}
