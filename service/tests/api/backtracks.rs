use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn a_backtrack_is_accepted_applied_and_described() {
    let app = spawn_app().await;
    app.create_cluster("bt", 3600).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    let (status, accepted) = app.backtrack("BT", 0.01).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["Status"], "pending");
    assert_eq!(accepted["DBClusterIdentifier"], "bt");
    let id = accepted["BacktrackIdentifier"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().to_string(), id);
    for member in [
        "BacktrackTo",
        "BacktrackedFrom",
        "BacktrackRequestCreationTime",
    ] {
        assert!(
            accepted[member].as_str().unwrap().ends_with('Z'),
            "{member}"
        );
    }

    let done = app.wait_for_backtrack("bt", &id).await;
    assert_eq!(done["Status"], "completed", "{done}");
    assert_eq!(done["BacktrackTo"], accepted["BacktrackTo"]);
    assert_eq!(app.cluster_status("bt").await, "available");

    // The node got the id as its idempotency key, and the requested time in microseconds.
    let calls = backtrack_calls(&app.node).await;
    assert_eq!(calls, [uuid::Uuid::parse_str(&id).unwrap()]);

    let (status, list) = app.get("/v1/clusters/bt/backtracks").await;
    assert_eq!(status, 200);
    assert_eq!(
        list["DBClusterBacktracks"][0]["BacktrackIdentifier"],
        id.as_str()
    );
    let (status, list) = app
        .get(&format!(
            "/v1/clusters/bt/backtracks?BacktrackIdentifier={id}"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["DBClusterBacktracks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn backtrack_times_are_taken_in_any_iso_form() {
    let app = spawn_app().await;
    app.create_cluster("iso", 3600).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The current whole second (after the cluster's creation), written with an offset;
    // returned in UTC with milliseconds.
    let secs = now_secs().floor() as i64;
    let (status, body) = app
        .post(
            "/v1/clusters/iso/backtracks",
            json!({"BacktrackTo": format_with_offset(secs)}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let to = body["BacktrackTo"].as_str().unwrap();
    assert!(to.ends_with(".000Z"), "{to}");
    let (status, body) = app
        .post(
            "/v1/clusters/iso/backtracks",
            json!({"BacktrackTo": "last tuesday"}),
        )
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

/// `secs` (whole seconds) as local time in UTC+02:00, e.g. `2026-11-23T12:00:00+02:00`.
fn format_with_offset(secs: i64) -> String {
    let local = backtrack_service::domain::Timestamp::from_micros((secs + 2 * 3600) * 1_000_000)
        .to_string();
    format!("{}+02:00", local.trim_end_matches(".000Z"))
}

#[tokio::test]
async fn a_time_in_the_future_is_refused() {
    let app = spawn_app().await;
    app.create_cluster("future", 3600).await;
    let (status, body) = app.backtrack("future", -60.0).await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("future"));
    assert_eq!(app.cluster_status("future").await, "available");
}

#[tokio::test]
async fn a_time_before_the_earliest_backtrack_time_is_refused_unless_clamping_is_asked() {
    let app = spawn_app().await;
    let cluster = app.create_cluster("early", 3600).await;
    let earliest = cluster["EarliestBacktrackTime"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, body) = app.backtrack("early", 7200.0).await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("earliest"));
    assert_eq!(app.cluster_status("early").await, "available");

    let to = now_secs() - 7200.0;
    let (status, body) = app
        .post(
            "/v1/clusters/early/backtracks",
            json!({"BacktrackTo": to, "UseEarliestTimeOnPointInTimeUnavailable": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["BacktrackTo"], earliest.as_str());
    let done = app
        .wait_for_backtrack("early", body["BacktrackIdentifier"].as_str().unwrap())
        .await;
    assert_eq!(done["Status"], "completed");
    let asked = app.node.received_requests().await.unwrap();
    let call = asked
        .iter()
        .rfind(|r| r.url.path().ends_with("/backtracks"))
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["clamp_to_earliest"], true);
}

#[tokio::test]
async fn the_nodes_earliest_time_and_open_transactions_decide_acceptance() {
    let app = spawn_app().await;
    let cluster = app.create_cluster("nodeview", 3600).await;
    let volume = cluster["DbClusterResourceId"].as_str().unwrap().to_string();
    // The node trimmed its window: only the last 10 seconds are restorable, and a
    // transaction is open.
    let earliest_us = ((now_secs() - 10.0) * 1e6) as i64;
    Mock::given(method("GET"))
        .and(path_regex(format!("^/v1/volumes/{volume}$")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "volume_id": volume, "window_secs": 3600, "actual_window_secs": 10,
            "created_at_us": 0, "earliest_restorable_us": earliest_us,
            "change_records_created": 1, "change_records_stored": 1,
            "bytes_on_disk": 1, "open_transactions": 2, "switching": false
        })))
        .mount(&app.node)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = app.backtrack("nodeview", 60.0).await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = app.backtrack("nodeview", 1.0).await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("open transaction"));
    let (status, body) = app
        .post(
            "/v1/clusters/nodeview/backtracks",
            json!({"BacktrackTo": now_secs() - 1.0, "Force": true}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn a_second_backtrack_while_one_runs_is_refused() {
    let app = spawn_app().await;
    mount_backtracks(
        &app.node,
        BacktrackEchoAfter(Duration::from_millis(1500)),
        None,
    )
    .await;
    app.create_cluster("busy", 3600).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, first) = app.backtrack("busy", 0.01).await;
    assert_eq!(status, 202);
    assert_eq!(app.cluster_status("busy").await, "backtracking");
    let (status, body) = app.backtrack("busy", 0.01).await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    // Nor can it be modified or deleted meanwhile.
    let (status, body) = app
        .patch("/v1/clusters/busy", json!({"BacktrackWindow": 60}))
        .await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
    let (status, body) = app.delete("/v1/clusters/busy").await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");

    app.wait_for_backtrack("busy", first["BacktrackIdentifier"].as_str().unwrap())
        .await;
    assert_eq!(app.cluster_status("busy").await, "available");
    let (status, _) = app.backtrack("busy", 0.01).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn concurrent_backtrack_requests_start_exactly_one() {
    let app = spawn_app().await;
    mount_backtracks(
        &app.node,
        BacktrackEchoAfter(Duration::from_millis(500)),
        None,
    )
    .await;
    app.create_cluster("race", 3600).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, url) = (
            app.http.clone(),
            format!("{}/v1/clusters/race/backtracks", app.address),
        );
        requests.spawn(async move {
            let response = http
                .post(url)
                .json(&json!({"BacktrackTo": now_secs() - 0.01}))
                .send();
            decode(response.await.unwrap()).await
        });
    }
    let results = requests.join_all().await;
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(accepted, 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 202) {
        assert_error(*status, body, 400, "InvalidDBClusterStateFault");
    }
}

#[tokio::test]
async fn backtracking_a_cluster_without_a_window_is_refused() {
    let app = spawn_app().await;
    app.create_cluster("nowindow", 0).await;
    let (status, body) = app.backtrack("nowindow", 0.0).await;
    assert_error(status, &body, 400, "InvalidDBClusterStateFault");
}

#[tokio::test]
async fn unknown_and_malformed_backtrack_ids_are_refused() {
    let app = spawn_app().await;
    app.create_cluster("ids", 60).await;
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = app
        .get(&format!("/v1/clusters/ids/backtracks/{unknown}"))
        .await;
    assert_error(status, &body, 404, "DBClusterBacktrackNotFoundFault");
    let (status, body) = app
        .get(&format!(
            "/v1/clusters/ids/backtracks?BacktrackIdentifier={unknown}"
        ))
        .await;
    assert_error(status, &body, 404, "DBClusterBacktrackNotFoundFault");
    let (status, body) = app.get("/v1/clusters/ids/backtracks/not-a-uuid").await;
    assert_error(status, &body, 400, "InvalidParameterValue");
    let (status, body) = app
        .get("/v1/clusters/ids/backtracks?db-cluster-backtrack-status=done")
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

#[tokio::test]
async fn backtrack_request_bodies_are_validated() {
    let app = spawn_app().await;
    app.create_cluster("body", 60).await;
    let (status, body) = app.post("/v1/clusters/body/backtracks", json!({})).await;
    assert_error(status, &body, 400, "MissingParameter");
    assert!(body["Error"]["Message"]
        .as_str()
        .unwrap()
        .contains("BacktrackTo"));
    let (status, body) = app
        .post(
            "/v1/clusters/body/backtracks",
            json!({"BacktrackTo": now_secs(), "Force": "yes"}),
        )
        .await;
    assert_error(status, &body, 400, "InvalidParameterValue");
}

#[tokio::test]
async fn backtracks_page_newest_first_every_one_exactly_once() {
    let app = spawn_app().await;
    app.create_cluster("many", 3600).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut ids = Vec::new();
    for _ in 0..25 {
        let (status, body) = app.backtrack("many", 0.001).await;
        assert_eq!(status, 202, "{body}");
        let id = body["BacktrackIdentifier"].as_str().unwrap().to_string();
        app.wait_for_backtrack("many", &id).await;
        ids.push(id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let path = match &marker {
            Some(m) => format!("/v1/clusters/many/backtracks?MaxRecords=20&Marker={m}"),
            None => "/v1/clusters/many/backtracks?MaxRecords=20".into(),
        };
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 200, "{body}");
        seen.extend(
            body["DBClusterBacktracks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["BacktrackIdentifier"].as_str().unwrap().to_string()),
        );
        match body.get("Marker") {
            Some(m) => marker = Some(m.as_str().unwrap().to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, body) = app
        .get("/v1/clusters/many/backtracks?db-cluster-backtrack-status=completed,failed&MaxRecords=100")
        .await;
    assert_eq!(body["DBClusterBacktracks"].as_array().unwrap().len(), 25);
    let (_, body) = app
        .get("/v1/clusters/many/backtracks?db-cluster-backtrack-status=pending")
        .await;
    assert!(body["DBClusterBacktracks"].as_array().unwrap().is_empty());
    let (_, body) = app
        .get(&format!(
            "/v1/clusters/many/backtracks?db-cluster-backtrack-id={},{}",
            ids[3], ids[7]
        ))
        .await;
    assert_eq!(body["DBClusterBacktracks"].as_array().unwrap().len(), 2);
}

/// Answers a backtrack as the healthy node does, but only after `.0`.
pub struct BacktrackEchoAfter(pub Duration);

impl wiremock::Respond for BacktrackEchoAfter {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        BacktrackEcho.respond(request).set_delay(self.0)
    }
}

#[tokio::test]
async fn sql_during_a_backtrack_is_told_the_database_is_unavailable() {
    let app = spawn_app().await;
    mount_backtracks(
        &app.node,
        BacktrackEchoAfter(Duration::from_millis(1500)),
        None,
    )
    .await;
    app.create_cluster("busy-sql", 3600).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, accepted) = app.backtrack("busy-sql", 0.01).await;
    assert_eq!(status, 202);
    let response = app
        .execute(json!({
            "resourceArn": "arn:aws:rds:us-east-1:000000000000:cluster:busy-sql",
            "secretArn": "arn:aws:secretsmanager:us-east-1:000000000000:secret:x",
            "sql": "SELECT 1"
        }))
        .await;
    assert_eq!(response.status(), 504);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "DatabaseUnavailableException"
    );
    let (_, body) = decode(response).await;
    assert!(
        body["message"].as_str().unwrap().contains("backtracked"),
        "{body}"
    );
    app.wait_for_backtrack(
        "busy-sql",
        accepted["BacktrackIdentifier"].as_str().unwrap(),
    )
    .await;
}
