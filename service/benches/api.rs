//! Control-plane benchmark (a program, not a test): `cargo bench -p backtrack-service --bench api`.
//!
//! For each metadata backend (SQLite; PostgreSQL when BACKTRACK_BENCH_POSTGRES_URL or the local
//! server answers), with 1,000 clusters:
//! - DescribeDBClusters requests per second (pages of 100, and one cluster by identifier),
//!   beside GET /healthz through the same HTTP stack in the same run, as the baseline;
//! - BacktrackDBCluster accept latency, p50 and p99, beside /healthz latency.
//!
//! A wiremock server stands in for the storage node (it answers instantly), so the figures are
//! the control plane's own.

use std::time::{Duration, Instant};

use backtrack_service::config::Config;
use backtrack_service::startup::App;
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const CLUSTERS: usize = 1_000;
const CONCURRENCY: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(4);
const BACKTRACKS: usize = 400;

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("backtrack-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = format!("sqlite://{}?mode=rwc", dir.join("bench.db").display());
        bench("SQLite", &sqlite).await;
        let admin = std::env::var("BACKTRACK_BENCH_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        match fresh_postgres(&admin).await {
            Some(url) => bench("PostgreSQL", &url).await,
            None => println!("\nPostgreSQL: not reachable at {admin}; skipped"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

async fn fresh_postgres(admin: &str) -> Option<String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin).await.ok()?;
    let name = format!("bt_bench_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .ok()?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .ok()?;
    Some(format!("{}/{name}", admin.rsplit_once('/')?.0))
}

async fn bench(backend: &str, database_url: &str) {
    let node = MockServer::start().await;
    mount_instant_node(&node).await;
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.database_url = Some(database_url.to_string());
    config.nodes = vec![format!("bench={}", node.uri()).parse().unwrap()];
    config.node_token = Some("bench".into());
    config.poll_interval_ms = 200;
    let app = App::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.shutdown_handle();
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();

    let started = Instant::now();
    for i in 0..CLUSTERS {
        let body =
            json!({"DBClusterIdentifier": format!("bench-{i:04}"), "BacktrackWindow": 86400});
        let response = http
            .post(format!("{base}/v1/clusters"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    println!(
        "\n== {backend}: {CLUSTERS} clusters created in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        CLUSTERS as f64 / started.elapsed().as_secs_f64()
    );

    mount_volume_list(&node, &http, &base).await;
    let healthz = throughput(&http, &format!("{base}/healthz")).await;
    let page = throughput(&http, &format!("{base}/v1/clusters")).await;
    let one = throughput(
        &http,
        &format!("{base}/v1/clusters?DBClusterIdentifier=bench-0500"),
    )
    .await;
    println!("GET /healthz (baseline)                      {healthz:>8.0} req/s");
    println!(
        "DescribeDBClusters, page of 100 of {CLUSTERS}     {page:>8.0} req/s  ({:.3}x baseline; {:.0} clusters/s)",
        page / healthz,
        page * 100.0
    );
    println!(
        "DescribeDBClusters, one by identifier         {one:>8.0} req/s  ({:.3}x baseline)",
        one / healthz
    );

    // Accept latency: one backtrack per cluster in turn, each completing almost at once.
    let mut accept = Vec::with_capacity(BACKTRACKS);
    let mut baseline = Vec::with_capacity(BACKTRACKS);
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..BACKTRACKS {
        let at = Instant::now();
        let response = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        baseline.push(at.elapsed());

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let body = json!({"BacktrackTo": now.as_secs_f64() - 0.01});
        let url = format!("{base}/v1/clusters/bench-{:04}/backtracks", i % CLUSTERS);
        let at = Instant::now();
        let response = http.post(url).json(&body).send().await.unwrap();
        accept.push(at.elapsed());
        assert_eq!(response.status(), 202, "{:?}", response.text().await);
    }
    let (p50, p99) = percentiles(&mut accept);
    let (b50, b99) = percentiles(&mut baseline);
    println!(
        "GET /healthz latency (baseline)              p50 {:>7.2} ms   p99 {:>7.2} ms",
        ms(b50),
        ms(b99)
    );
    println!(
        "BacktrackDBCluster accept latency            p50 {:>7.2} ms   p99 {:>7.2} ms  ({:.1}x / {:.1}x baseline)",
        ms(p50),
        ms(p99),
        ms(p50) / ms(b50),
        ms(p99) / ms(b99)
    );
    stop.shutdown();
    let _ = server.await;
}

/// Requests per second from CONCURRENCY clients looping for RUN_FOR.
async fn throughput(http: &reqwest::Client, url: &str) -> f64 {
    let deadline = Instant::now() + RUN_FOR;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (http, url) = (http.clone(), url.to_string());
        clients.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = http.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                done += 1;
            }
            done
        });
    }
    let total: u64 = clients.join_all().await.into_iter().sum();
    total as f64 / RUN_FOR.as_secs_f64()
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn mount_instant_node(node: &MockServer) {
    struct Echo;
    impl Respond for Echo {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            if request.url.path().ends_with("/backtracks") {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                return ResponseTemplate::new(200).set_body_json(json!({
                    "backtrack_id": body["backtrack_id"], "backtrack_to_us": body["to_us"],
                    "backtracked_from_us": now.as_micros() as i64, "rolled_back_transactions": 0
                }));
            }
            let id = request.url.path().rsplit('/').next().unwrap();
            ResponseTemplate::new(200).set_body_json(json!({
                "volume_id": id, "window_secs": 86400, "actual_window_secs": 86400,
                "created_at_us": 0, "earliest_restorable_us": null, "change_records_created": 0,
                "change_records_stored": 0, "bytes_on_disk": 0, "open_transactions": 0,
                "switching": false
            }))
        }
    }
    Mock::given(method("GET"))
        .and(path_regex("^/healthz$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "ok", "volumes": 0})),
        )
        .mount(node)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/v1/volumes/"))
        .respond_with(Echo)
        .mount(node)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("/backtracks$"))
        .respond_with(Echo)
        .mount(node)
        .await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/volumes/[^/]+$"))
        .respond_with(Echo)
        .mount(node)
        .await;
}

/// The node's list of every volume's figures, as a real node would answer it.
async fn mount_volume_list(node: &MockServer, http: &reqwest::Client, base: &str) {
    let mut volumes = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let url = match &marker {
            Some(m) => format!("{base}/v1/clusters?Marker={m}"),
            None => format!("{base}/v1/clusters"),
        };
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        for c in page["DBClusters"].as_array().unwrap() {
            volumes.push(json!({
                "volume_id": c["DbClusterResourceId"], "window_secs": 86400,
                "actual_window_secs": 86400, "created_at_us": 0,
                "earliest_restorable_us": 1_700_000_000_000_000i64, "change_records_created": 10,
                "change_records_stored": 10, "bytes_on_disk": 4096, "open_transactions": 0,
                "switching": false
            }));
        }
        match page.get("Marker") {
            Some(m) => marker = Some(m.as_str().unwrap().to_string()),
            None => break,
        }
    }
    Mock::given(method("GET"))
        .and(path_regex("^/v1/volumes$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "volumes": volumes })))
        .mount(node)
        .await;
}
