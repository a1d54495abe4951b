//! Hostile and unlucky requests against the control plane: a second process on the data
//! directory, cross-site and foreign-host requests, bodies and URLs past the limits, ARNs of
//! another account, node addresses in errors, runaway statements, and a control plane that
//! dies under its nodes. The in-process tests use the mock node; the others the real binaries.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header;
use serde_json::{json, Value};

use crate::e2e::{node_pids, start_service};
use crate::helpers::*;

const ARN: &str = "arn:aws:rds:us-east-1:000000000000:cluster:shop";
const SECRET: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:test";

#[tokio::test]
async fn a_second_service_on_a_data_directory_refuses_to_start_and_names_the_first() {
    let db = TestDb::new().await;
    let first = start_service(&db, &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_backtrack-service"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ])
        .arg("--data-dir")
        .arg(&db.dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success(), "the second service ran");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains(&db.dir.0.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("in use by process {}", first.pid())),
        "{message}"
    );
    // The first one goes on.
    let (status, _) = first.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_data_directory_holds_nothing_others_can_read() {
    let db = TestDb::new().await;
    let service = start_service(&db, &[]);
    service.create_cluster("private").await;
    service
        .sql("private", "CREATE TABLE cards (number TEXT)")
        .await;
    service
        .sql(
            "private",
            "INSERT INTO cards VALUES ('4111 1111 1111 1111')",
        )
        .await;
    let mut stack = vec![db.dir.0.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen += 1;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(seen > 10, "looked at the nodes' logs and volumes");
}

#[tokio::test]
async fn a_body_up_to_the_configured_limit_is_read_and_one_past_it_refused_in_the_apis_form() {
    let app = spawn_app().await;
    let padded = |bytes: usize| {
        json!({"DBClusterIdentifier": "big", "Padding": "x".repeat(bytes)}).to_string()
    };
    // 3 MiB is under the default 4 MiB: it is parsed (and refused for its unknown member).
    let response = app
        .post_raw("/v1/clusters", "application/json", padded(3 << 20))
        .await;
    let (status, body) = decode(response).await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("Padding"));

    let response = app
        .post_raw("/v1/clusters", "application/json", padded(5 << 20))
        .await;
    let (status, body) = decode(response).await;
    assert_error(status, &body, 413, "RequestEntityTooLarge");

    // The Data API answers in its own form.
    let response = app
        .post_raw("/Execute", "application/json", padded(5 << 20))
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "BadRequestException"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("larger"),
        "{body}"
    );
}

/// Sends `head` as it is (no client library builds a URL this long) and reads the answer.
async fn raw_request(address: &str, head: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn a_megabyte_url_gets_an_error_it_can_read() {
    let app = spawn_app().await;
    let long = "m".repeat(1 << 20);
    let (status, _, body) = raw_request(
        &app.address,
        &format!("GET /v1/clusters?Marker={long} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    )
    .await;
    let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body:.200}"));
    assert_error(status, &body, 414, "RequestUriTooLong");

    let (status, head, body) = raw_request(
        &app.address,
        &format!("POST /Execute?x={long} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 414);
    assert!(
        head.contains("x-amzn-errortype: badrequestexception"),
        "{head}"
    );
    assert!(body.contains("\"message\""), "{body}");

    // Under the limit, a long URL reaches the API (and its answer is the API's).
    let (status, body) = app
        .get(&format!("/v1/clusters?Marker={}", "m".repeat(20_000)))
        .await;
    assert_error(status, &body, 414, "RequestUriTooLong");
    let (status, body) = app
        .get(&format!("/v1/clusters?Marker={}", "m".repeat(2_000)))
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

#[tokio::test]
async fn a_cross_site_request_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    app.create_cluster("shop", 3600).await;

    let response = app
        .http
        .delete(format!("{}/v1/clusters/shop", app.address))
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    let (status, body) = decode(response).await;
    assert_error(status, &body, 403, "AccessDeniedException");
    assert_eq!(app.cluster_status("shop").await, "available");

    // A form post from a page: not JSON, so refused before anything runs.
    let response = app
        .post_raw(
            "/Execute",
            "text/plain",
            json!({"resourceArn": ARN, "secretArn": SECRET, "sql": "DROP TABLE t"}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "BadRequestException"
    );

    let response = app
        .http
        .post(format!("{}/Execute", app.address))
        .header(header::ORIGIN, "http://localhost:3000")
        .json(&json!({"resourceArn": ARN, "secretArn": SECRET, "sql": "DROP TABLE t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(response.headers()["x-amzn-errortype"], "ForbiddenException");

    let response = app
        .http
        .get(format!("{}/v1/clusters", app.address))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let executed = app
        .node
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/execute"))
        .count();
    assert_eq!(executed, 0, "no statement reached the node");

    // The service's own pages (the docs page) may call it.
    let own = app.address.replace("http://", "");
    let response = app
        .get_with("/v1/clusters", header::ORIGIN, format!("http://{own}"))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_request_for_a_host_that_is_not_loopback_is_refused() {
    let app = spawn_app().await;
    for host in ["evil.example", "evil.example:8080", "10.1.2.3"] {
        let response = app.get_with("/v1/clusters", header::HOST, host).await;
        let (status, body) = decode(response).await;
        assert_error(status, &body, 403, "AccessDeniedException");
    }
    let port = app.address.rsplit(':').next().unwrap().to_string();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let response = app.get_with("/v1/clusters", header::HOST, host).await;
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn an_arn_of_another_account_or_region_is_refused() {
    let app = spawn_app().await;
    app.create_cluster("shop", 3600).await;
    for arn in [
        "arn:aws:rds:us-east-1:123456789012:cluster:shop",
        "arn:aws:rds:eu-west-1:000000000000:cluster:shop",
    ] {
        let (status, body) = app.get(&format!("/v1/clusters/{arn}")).await;
        assert_error(status, &body, 404, "DBClusterNotFoundFault");
        let response = app
            .execute(json!({"resourceArn": arn, "secretArn": SECRET, "sql": "SELECT 1"}))
            .await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "BadRequestException"
        );
    }
    let (status, _) = app.get(&format!("/v1/clusters/{ARN}")).await;
    assert_eq!(status, 200, "this service's own ARN names the cluster");
}

#[tokio::test]
async fn an_unreachable_node_is_never_named_to_the_caller() {
    // The node answers its health checks but not the statement, in time.
    let app = spawn_app_with(|config| config.statement_timeout_ms = 100).await;
    let cluster = app.create_cluster("shop", 3600).await;
    let resource_id = cluster["DbClusterResourceId"].as_str().unwrap().to_string();
    let node_port = app.node.address().port().to_string();
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path_regex("/execute$"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&app.node)
        .await;
    let response = app
        .execute(json!({"resourceArn": ARN, "secretArn": SECRET, "sql": "SELECT 1"}))
        .await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "DatabaseUnavailableException"
    );
    let body = response.text().await.unwrap();
    for secret in [
        "127.0.0.1",
        node_port.as_str(),
        resource_id.as_str(),
        "http://",
    ] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().map(|t| t.parse::<f64>().unwrap_or(0.0)).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test]
async fn a_runaway_statement_gets_statement_timeout_and_stops_using_the_cpu() {
    let db = TestDb::new().await;
    let service = start_service(&db, &["--statement-timeout-ms", "700"]);
    service.create_cluster("shop").await;
    let started = Instant::now();
    let (status, body) = service
        .data("/Execute", "shop", json!({"sql": RUNAWAY}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("700 ms"),
        "names the limit: {body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "stopped at its limit"
    );
    let (status, _) = service
        .data("/Execute", "shop", json!({"sql": "SELECT 1"}))
        .await;
    assert_eq!(status, 200);
    // Nothing keeps running on the nodes.
    let nodes = node_pids(&db.dir.0.to_string_lossy());
    assert_eq!(nodes.len(), 2);
    let before: f64 = nodes.iter().map(|p| cpu_seconds(*p)).sum();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: f64 = nodes.iter().map(|p| cpu_seconds(*p)).sum();
    assert!(
        after - before < 0.5,
        "the nodes used {:.2} s of CPU in 2 s",
        after - before
    );
}

#[tokio::test]
async fn the_nodes_of_a_killed_control_plane_stop_even_with_a_statement_running() {
    let db = TestDb::new().await;
    let service = start_service(
        &db,
        &[
            "--statement-timeout-ms",
            "120000",
            "--request-timeout-secs",
            "300",
        ],
    );
    service.create_cluster("shop").await;
    let (url, http) = (service.url.clone(), service.http.clone());
    let runaway = tokio::spawn(async move {
        let _ = http
            .post(format!("{url}/Execute"))
            .json(&json!({"resourceArn": ARN, "secretArn": SECRET, "sql": RUNAWAY}))
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nodes = node_pids(&db.dir.0.to_string_lossy());
    assert_eq!(nodes.len(), 2);
    service.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<u32> = nodes
            .iter()
            .copied()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {alive:?} outlived their control plane"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runaway.abort();
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}
