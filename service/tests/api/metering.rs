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

/// The stored change records as DescribeDBClusters shows them, once they have been steady for
/// longer than the service caches a node's figures.
async fn steady_stored(service: &Service) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = service.call("GET", "/v1/clusters/metered", None).await;
    body["DBCluster"]["BacktrackConsumedChangeRecords"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn billed_usage_matches_the_stored_records_integrated_over_the_same_interval() {
    // Exact by construction: the bill must be exactly the integral of the meter's own samples
    // (read from the store), and each sample must be what the node held when it was taken,
    // checked only where that is known exactly: before the writes and after them, when the
    // stored count stands still. (Comparing the bill with a second sampling of the same curve
    // made on the side, as this test once did, differs by how the two samplings fall on a
    // loaded machine: 4.57% once.)
    let db = TestDb::new().await;
    let service = start_service(&db, &["--metering-interval-ms", "200"]);
    service.create_cluster("metered").await;
    service
        .sql("metered", "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        .await;
    let before = steady_stored(&service).await;
    let writes_start = now_secs();

    // Write at a known rate (one page per commit) while the meter samples.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(4) {
        service
            .sql("metered", "INSERT INTO t (v) VALUES (randomblob(3000))")
            .await;
        n += 1;
        tokio::time::sleep_until((started + Duration::from_millis(n * 20)).into()).await;
    }
    let writes_end = now_secs();
    let after = steady_stored(&service).await;
    assert!(
        after > before,
        "the writes were stored: {before} then {after}"
    );
    // A meter's reading of a node takes at most its 2 s timeout, and lands before the sample's
    // time: a sample taken this long after the writes read the final count.
    let settled = writes_end + 2.5;
    let deadline = Instant::now() + Duration::from_secs(30);
    let resource_id = {
        let (_, body) = service.call("GET", "/v1/clusters/metered", None).await;
        body["DBCluster"]["DbClusterResourceId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let store = Store::connect(&db.url).await.unwrap();
    loop {
        let state = store.meter_state(&resource_id).await.unwrap().unwrap();
        if secs_of(state.sampled_at) > settled + 0.5 {
            break;
        }
        assert!(Instant::now() < deadline, "the meter stopped sampling");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, bill) = service
        .call("GET", "/v1/clusters/metered/billing", None)
        .await;
    assert_eq!(status, 200, "{bill}");
    let first = Timestamp::parse(bill["MeteringStartTime"].as_str().unwrap()).unwrap();
    let last = Timestamp::parse(bill["LastSampleTime"].as_str().unwrap()).unwrap();
    let samples: Vec<_> = store
        .samples_since(&resource_id, Timestamp::from_micros(0))
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.at.as_micros() / 1000 <= last.as_micros() / 1000)
        .collect();
    assert_eq!(samples[0].at.as_micros() / 1000, first.as_micros() / 1000);
    let units: i128 = samples
        .windows(2)
        .map(|w| {
            i128::from(w[0].stored + w[1].stored)
                * i128::from(w[1].at.as_micros() - w[0].at.as_micros())
        })
        .sum();
    assert_eq!(
        bill["TotalUsageQuantity"].as_str().unwrap(),
        cr_hours(units).to_string(),
        "the bill is the integral of the samples, exactly"
    );

    let during: Vec<i64> = samples
        .iter()
        .filter(|s| secs_of(s.at) > writes_start)
        .map(|s| s.stored)
        .collect();
    assert!(
        during.windows(2).all(|w| w[0] <= w[1]),
        "inserts only add records: {during:?}"
    );
    assert!(
        during.iter().all(|v| (before..=after).contains(v)),
        "between the counts before and after the writes: {during:?}"
    );
    let settled_samples: Vec<i64> = samples
        .iter()
        .filter(|s| secs_of(s.at) > settled)
        .map(|s| s.stored)
        .collect();
    assert!(!settled_samples.is_empty());
    assert!(
        settled_samples.iter().all(|v| *v == after),
        "after the writes every sample reads the final count {after}: {settled_samples:?}"
    );
    assert!(
        during.iter().any(|v| *v > before && *v < after),
        "the meter sampled the writes as they happened: {during:?}"
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

fn secs_of(t: Timestamp) -> f64 {
    t.as_micros() as f64 / 1e6
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
