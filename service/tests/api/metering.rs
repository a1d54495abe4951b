//! Metering, billing, events and metrics: the store's exact integration (on both backends),
//! and end to end with real storage nodes.

use std::time::{Duration, Instant};

use backtrack_service::billing::{cr_hours, HOUR_US};
use backtrack_service::domain::Timestamp;
use backtrack_service::store::{AlertChange, MeterSample, Recorded, Store};
use serde_json::{json, Value};

use crate::e2e::{start_process, start_service, Service};
use crate::helpers::*;

fn sample(minutes: i64, stored: i64) -> MeterSample {
    MeterSample {
        resource_id: "cluster-METERED".into(),
        cluster_id: "metered".into(),
        at: Timestamp::from_micros(480_000 * HOUR_US + minutes * 60_000_000),
        stored,
        created: stored,
        window_secs: 3600,
        actual_secs: 3600,
    }
}

#[tokio::test]
async fn samples_become_exact_hourly_usage_across_restarts_and_concurrent_meters() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store
            .record_sample(&sample(0, 2_000_000), false)
            .await
            .unwrap(),
        Recorded::First
    );
    assert_eq!(
        store
            .record_sample(&sample(20, 2_000_000), false)
            .await
            .unwrap(),
        Recorded::Added(None)
    );
    // The same sample again (a replica that read the same figures) adds nothing.
    assert_eq!(
        store
            .record_sample(&sample(20, 2_000_000), false)
            .await
            .unwrap(),
        Recorded::Skipped
    );
    store.close().await;

    // A restart mid-hour: a new process, the same database, a gap until 1:40.
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store
            .record_sample(&sample(100, 2_000_000), false)
            .await
            .unwrap(),
        Recorded::Added(None)
    );
    // Two meters recording the next sample at once: it counts once.
    let next = sample(120, 2_000_000);
    let (a, b) = tokio::join!(
        store.record_sample(&next, false),
        store.record_sample(&next, false)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(
        outcomes.contains(&Recorded::Added(None)) && outcomes.contains(&Recorded::Skipped),
        "{outcomes:?}"
    );

    // Two hours at 2M records: 2M CR-h in each hour, 4M in all.
    let from = sample(0, 0).at;
    let rows = store
        .usage(from, from.plus_secs(3 * 3600), None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| cr_hours(r.units).to_string() == "2000000.00"),
        "{rows:?}"
    );
    let state = store.meter_state("cluster-METERED").await.unwrap().unwrap();
    assert_eq!(state.first_sampled_at, from);
    assert_eq!(state.sampled_at, sample(120, 0).at);

    // The window alert is raised once and cleared once.
    let mut short = sample(130, 2_000_000);
    short.actual_secs = 60;
    assert_eq!(
        store.record_sample(&short, true).await.unwrap(),
        Recorded::Added(Some(AlertChange::Raised))
    );
    let mut still = sample(131, 2_000_000);
    still.actual_secs = 70;
    assert_eq!(
        store.record_sample(&still, true).await.unwrap(),
        Recorded::Added(None)
    );
    assert_eq!(
        store
            .record_sample(&sample(140, 2_000_000), false)
            .await
            .unwrap(),
        Recorded::Added(Some(AlertChange::Cleared))
    );
}

#[tokio::test]
async fn billed_usage_matches_the_stored_records_integrated_over_the_same_interval() {
    let db = TestDb::new().await;
    let service = start_service(&db, &["--metering-interval-ms", "200"]);
    service.create_cluster("metered").await;
    service
        .sql("metered", "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        .await;

    // Write at a known rate (one page per commit) while watching the stored records.
    let writer = {
        let (url, http) = (service.url.clone(), service.http.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(5) {
                let body = json!({
                    "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:metered",
                    "secretArn": "s", "sql": "INSERT INTO t (v) VALUES (randomblob(3000))"
                });
                let response = http
                    .post(format!("{url}/Execute"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                n += 1;
                tokio::time::sleep_until((started + Duration::from_millis(n * 20)).into()).await;
            }
        })
    };
    let mut observed: Vec<(f64, f64)> = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < watch_until {
        let (_, body) = service.call("GET", "/v1/clusters/metered", None).await;
        if let Some(stored) = body["DBCluster"]["BacktrackConsumedChangeRecords"].as_f64() {
            observed.push((now_secs(), stored));
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    writer.await.unwrap();

    let (status, bill) = service
        .call("GET", "/v1/clusters/metered/billing", None)
        .await;
    assert_eq!(status, 200, "{bill}");
    let start = secs(&bill["MeteringStartTime"]);
    let end = secs(&bill["LastSampleTime"]);
    assert!(end - start > 5.0, "the meter covered the writes: {bill}");
    let billed: f64 = bill["TotalUsageQuantity"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = integrate(&observed, start, end) / 3600.0;
    let error = (billed - expected).abs() / expected;
    assert!(
        error < 0.01,
        "billed {billed} CR-h, integrated {expected} CR-h: {:.2}% apart",
        error * 100.0
    );
    assert_eq!(bill["UsageType"], "BacktrackUsage");
    assert_eq!(bill["Unit"], "CR-Hr");
    assert_eq!(bill["PricePerMillion"], "0.012");
    assert!(!bill["LineItems"].as_array().unwrap().is_empty());
    let projected: f64 = bill["Projection"]["ChangeRecordsCreatedPerHour"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(projected > 0.0, "{bill}");
}

fn secs(value: &Value) -> f64 {
    Timestamp::parse(value.as_str().unwrap())
        .unwrap()
        .as_micros() as f64
        / 1e6
}

/// The trapezoid integral of (time, value) points over [start, end], in value-seconds.
fn integrate(points: &[(f64, f64)], start: f64, end: f64) -> f64 {
    let at = |t: f64| -> f64 {
        let i = points.partition_point(|p| p.0 < t);
        match (i.checked_sub(1).map(|j| points[j]), points.get(i)) {
            (Some(a), Some(b)) => a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0),
            (Some(a), None) => a.1,
            (None, Some(b)) => b.1,
            (None, None) => 0.0,
        }
    };
    let mut times: Vec<f64> = points
        .iter()
        .map(|p| p.0)
        .filter(|t| *t > start && *t < end)
        .collect();
    times.insert(0, start);
    times.push(end);
    times
        .windows(2)
        .map(|w| (at(w[0]) + at(w[1])) / 2.0 * (w[1] - w[0]))
        .sum()
}

#[tokio::test]
async fn a_log_budget_below_the_window_raises_rds_event_0131_and_restoring_it_0132() {
    let db = TestDb::new().await;
    let node_dir = db.dir.0.join("node");
    let token = "alert-token";
    let (node, node_url) = start_process(
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--token",
            token,
            "--segment-bytes",
            "65536",
            "--maintenance-interval-ms",
            "100",
        ],
        &node_dir,
    );
    let _node = Killed(node);
    let (service, url) = start_process(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
            "--node",
            &format!("n1={node_url}"),
            "--node-token",
            token,
            "--metering-interval-ms",
            "200",
            "--poll-interval-ms",
            "50",
        ],
        &db.dir.0,
    );
    let service = Service::from_parts(service, url);
    let client =
        backtrack_storage_node::client::NodeClient::new(&node_url, token, Duration::from_secs(10));
    let (status, body) = service
        .call(
            "POST",
            "/v1/clusters",
            Some(json!({"DBClusterIdentifier": "tight", "BacktrackWindow": 4})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    service.sql("tight", "CREATE TABLE t (v BLOB)").await;

    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (url, http, writing) = (service.url.clone(), service.http.clone(), writing.clone());
        tokio::spawn(async move {
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({
                    "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:tight",
                    "secretArn": "s", "sql": "INSERT INTO t VALUES (randomblob(3500))"
                });
                let _ = http.post(format!("{url}/Execute")).json(&body).send().await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Four segments of 64 KiB hold well under a second of these writes: the window shrinks.
    let settings = backtrack_storage_node::api::NodeSettings {
        log_budget_bytes: 4 * 65_536,
    };
    client.set_settings(&settings).await.unwrap();
    let raised = wait_for_event(&service, "RDS-EVENT-0131").await;
    assert!(
        raised["Message"]
            .as_str()
            .unwrap()
            .contains("smaller than the target"),
        "{raised}"
    );
    assert_eq!(raised["EventCategories"], json!(["backtrack"]));
    assert_eq!(raised["SourceType"], "db-cluster");
    let (_, metrics) = service
        .call("GET", "/v1/clusters/tight/metrics", None)
        .await;
    let alert = metrics["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["MetricName"] == "BacktrackWindowAlert")
        .unwrap()
        .clone();
    assert!(alert["Value"].as_f64().unwrap() >= 1.0, "{metrics}");
    let text = service
        .http
        .get(format!("{}/metrics", service.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("backtrack_window_alert{cluster=\"tight\"}"),
        "{text}"
    );

    // Room again: once the window has passed with nothing folded early, it is whole.
    client
        .set_settings(&backtrack_storage_node::api::NodeSettings {
            log_budget_bytes: 1 << 30,
        })
        .await
        .unwrap();
    let cleared = wait_for_event(&service, "RDS-EVENT-0132").await;
    assert!(
        cleared["Message"]
            .as_str()
            .unwrap()
            .contains("the same as the target"),
        "{cleared}"
    );
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for_event(service: &Service, code: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = service
            .call(
                "GET",
                "/v1/events?SourceType=db-cluster&SourceIdentifier=tight&EventCategories=backtrack",
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if let Some(event) = body["Events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["EventId"] == code)
        {
            return event.clone();
        }
        assert!(Instant::now() < deadline, "no {code} event: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cluster_and_backtrack_events_are_described_like_rds() {
    let app = spawn_app().await;
    app.create_cluster("evented", 3600).await;
    app.patch("/v1/clusters/evented", json!({"BacktrackWindow": 7200}))
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_, accepted) = app.backtrack("evented", 0.01).await;
    app.wait_for_backtrack("evented", accepted["BacktrackIdentifier"].as_str().unwrap())
        .await;
    app.create_cluster("other", 0).await;

    let (status, body) = app
        .get("/v1/events?SourceType=db-cluster&SourceIdentifier=evented")
        .await;
    assert_eq!(status, 200, "{body}");
    let categories: Vec<String> = body["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["EventCategories"][0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        categories,
        ["creation", "configuration change", "backtrack", "backtrack"],
        "{body}"
    );
    let first = &body["Events"][0];
    assert_eq!(
        first["SourceArn"],
        "arn:aws:rds:us-east-1:000000000000:cluster:evented"
    );
    assert!(first["Date"].as_str().unwrap().ends_with('Z'));
    let (_, all) = app.get("/v1/events").await;
    assert_eq!(all["Events"].as_array().unwrap().len(), 5);
    let (_, backtracks) = app.get("/v1/events?EventCategories=backtrack").await;
    assert_eq!(backtracks["Events"].as_array().unwrap().len(), 2);
    let (_, none) = app
        .get("/v1/events?Duration=1&EndTime=2020-01-01T00:00:00Z")
        .await;
    assert!(none["Events"].as_array().unwrap().is_empty());

    let (status, body) = app.get("/v1/events?SourceIdentifier=evented").await;
    assert_error(status, &body, 400, "InvalidParameterCombination");
    let (status, body) = app.get("/v1/events?SourceType=db-toaster").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = app
        .get("/v1/events?StartTime=2026-01-01T00:00:00Z&Duration=5")
        .await;
    assert_error(status, &body, 400, "InvalidParameterCombination");
    let (status, body) = app.get("/v1/events?MaxRecords=5").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

#[tokio::test]
async fn billing_reports_validate_their_period_and_cluster() {
    let app = spawn_app().await;
    app.create_cluster("billed", 3600).await;
    let (status, body) = app.get("/v1/billing").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["TotalCost"], "0.00");
    assert_eq!(body["Currency"], "USD");
    assert!(
        body["StartTime"]
            .as_str()
            .unwrap()
            .contains("-01T00:00:00.000Z"),
        "{body}"
    );
    let (status, body) = app
        .get("/v1/billing?StartTime=2026-02-01T00:00:00Z&EndTime=2026-01-01T00:00:00Z")
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = app.get("/v1/clusters/ghost/billing").await;
    assert_error(status, &body, 404, "DBClusterNotFoundFault");
    let (status, body) = app.get("/v1/clusters/billed/billing?StartTime=soon").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = app.get("/v1/clusters/billed/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Period"], 300);
}

#[tokio::test]
async fn the_service_metrics_count_requests_jobs_and_clusters() {
    let app = spawn_app().await;
    app.create_cluster("counted", 3600).await;
    app.get("/v1/clusters/counted").await;
    app.get("/v1/clusters/ghost").await;
    let text = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "# TYPE backtrack_http_requests_total counter",
        "backtrack_http_requests_total{method=\"GET\",route=\"/v1/clusters/{id}\",status=\"200\"} 1",
        "backtrack_http_requests_total{method=\"GET\",route=\"/v1/clusters/{id}\",status=\"404\"} 1",
        "# TYPE backtrack_http_request_duration_seconds histogram",
        "backtrack_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/clusters\"} 1",
        "backtrack_clusters{status=\"available\"} 1",
        "# TYPE backtrack_jobs gauge",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}
