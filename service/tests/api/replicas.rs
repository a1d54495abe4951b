//! Several control planes over one metadata database, as the Helm chart runs them: two real
//! `backtrack-service serve` processes share the test's database (PostgreSQL in CI) and two
//! real storage nodes. One is killed (SIGKILL) midway through 50 backtracks; the other finishes
//! what it left, and the nodes' own records show each backtrack applied exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use backtrack_service::domain::Timestamp;
use backtrack_storage_node::client::NodeClient;
use serde_json::{json, Value};

use crate::e2e::{instant, start_process, wait_until_available, Service};
use crate::helpers::*;

const TOKEN: &str = "replicas-test-token";
const CLUSTERS: usize = 10;
const ROUNDS: usize = 5;
/// The round during which the first control plane is killed.
const KILL_IN_ROUND: usize = 2;

fn start_node(dir: &TempDir, n: usize) -> Service {
    let data = dir.0.join(format!("node-{n}"));
    let (child, url) = start_process(
        &["node", "--listen", "127.0.0.1:0", "--token", TOKEN],
        &data,
    );
    Service::from_parts(child, url)
}

fn start_control_plane(db: &TestDb, n: usize, nodes: &[&Service]) -> Service {
    let endpoints: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| format!("node-{i}={}", node.url))
        .collect();
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--node-token",
        TOKEN,
        // A short lease, so the survivor takes the killed one's jobs over quickly.
        "--job-lease-secs",
        "3",
        "--node-timeout-ms",
        "2000",
        "--poll-interval-ms",
        "100",
        "--job-retry-base-ms",
        "100",
        "--job-retry-max-ms",
        "500",
    ];
    for endpoint in &endpoints {
        args.extend(["--node", endpoint.as_str()]);
    }
    let (child, url) = start_process(&args, &db.dir.0.join(format!("control-plane-{n}")));
    Service::from_parts(child, url)
}

/// Half of the requests go to each control plane while both live; the survivor's after.
fn via<'a>(first: &'a Option<Service>, second: &'a Service, i: usize) -> &'a Service {
    match first {
        Some(first) if i.is_multiple_of(2) => first,
        _ => second,
    }
}

fn cluster(i: usize) -> String {
    format!("replica-{i}")
}

#[tokio::test]
async fn two_control_planes_run_fifty_backtracks_exactly_once_though_one_is_killed_midway() {
    let db = TestDb::new().await;
    let nodes = [start_node(&db.dir, 0), start_node(&db.dir, 1)];
    // Both start at once: they race to migrate the same database.
    let (first, second) = std::thread::scope(|s| {
        let a = s.spawn(|| start_control_plane(&db, 0, &[&nodes[0], &nodes[1]]));
        let b = s.spawn(|| start_control_plane(&db, 1, &[&nodes[0], &nodes[1]]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut first = Some(first);
    for i in 0..CLUSTERS {
        let plane = via(&first, &second, i);
        plane.create_cluster(&cluster(i)).await;
        plane
            .sql(&cluster(i), "CREATE TABLE t (round INTEGER, what TEXT)")
            .await;
    }

    let mut requested: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for round in 0..ROUNDS {
        // Each round keeps one row and writes one mistake after the mark; the backtrack to the
        // mark must remove the mistake.
        let mut marks = Vec::new();
        for i in 0..CLUSTERS {
            let plane = via(&first, &second, i + round);
            plane
                .sql(
                    &cluster(i),
                    &format!("INSERT INTO t VALUES ({round}, 'kept')"),
                )
                .await;
            marks.push(instant().await);
            plane
                .sql(
                    &cluster(i),
                    &format!("INSERT INTO t VALUES ({round}, 'mistake')"),
                )
                .await;
        }
        // All of a round's requests at once; in the round in which the first control plane
        // dies, it accepts them all.
        let accepted = futures_util::future::join_all(marks.iter().enumerate().map(|(i, mark)| {
            let plane = match &first {
                Some(first) if round == KILL_IN_ROUND => first,
                _ => via(&first, &second, i + round),
            };
            let path = format!("/v1/clusters/{}/backtracks", cluster(i));
            let body = json!({"BacktrackTo": mark});
            async move { plane.call("POST", &path, Some(body)).await }
        }))
        .await;
        for (i, (status, body)) in accepted.into_iter().enumerate() {
            assert_eq!(status, 202, "{body}");
            let id = body["BacktrackIdentifier"].as_str().unwrap().to_string();
            requested
                .entry(cluster(i))
                .or_default()
                .push((id, marks[i].clone()));
        }
        if round == KILL_IN_ROUND {
            // Killed with jobs it accepted a moment ago pending or running.
            first.take().unwrap().kill();
            let mut unfinished = 0;
            for (i, jobs) in &requested {
                let (id, _) = jobs.last().unwrap();
                let (_, job) = second
                    .call("GET", &format!("/v1/clusters/{i}/backtracks/{id}"), None)
                    .await;
                unfinished += usize::from(job["Status"] != "completed");
            }
            println!("killed with {unfinished} of {CLUSTERS} backtracks unfinished");
        }
        for (i, jobs) in &requested {
            let (id, _) = jobs.last().unwrap();
            let done = second.wait_for(i, id).await;
            assert_eq!(done["Status"], "completed", "{done}");
        }
        for i in 0..CLUSTERS {
            wait_until_available(&second, &cluster(i)).await;
        }
    }

    // Every backtrack completed, each to its mark, and the data is where the last one left it.
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for (name, jobs) in &requested {
        let (_, page) = second
            .call("GET", &format!("/v1/clusters/{name}/backtracks"), None)
            .await;
        let listed = page["DBClusterBacktracks"].as_array().unwrap();
        assert_eq!(listed.len(), ROUNDS, "{page}");
        for (id, mark) in jobs {
            let job = listed
                .iter()
                .find(|b| b["BacktrackIdentifier"] == id.as_str())
                .unwrap_or_else(|| panic!("backtrack {id} lost: {page}"));
            assert_eq!(job["Status"], "completed", "{job}");
            assert_eq!(job["BacktrackTo"], mark.as_str(), "{job}");
            by_id.insert(id.clone(), job.clone());
        }
        let rows = second
            .sql(name, "SELECT group_concat(round || what, ',') FROM t")
            .await;
        assert_eq!(
            rows["records"][0][0]["stringValue"],
            "0kept,1kept,2kept,3kept,4kept"
        );
    }
    assert_eq!(by_id.len(), CLUSTERS * ROUNDS);

    // The nodes' side: each id applied once, and nothing else applied.
    let mut applied = 0;
    let mut seen = BTreeSet::new();
    for node in &nodes {
        let client = NodeClient::new(&node.url, TOKEN, Duration::from_secs(5));
        for volume in client.volumes().await.unwrap().volumes {
            applied += volume.backtracks_applied;
            for outcome in client
                .backtracks(&volume.volume_id)
                .await
                .unwrap()
                .backtracks
            {
                let id = outcome.backtrack_id.to_string();
                let job = by_id
                    .get(&id)
                    .unwrap_or_else(|| panic!("node applied unknown backtrack {id}"));
                assert!(seen.insert(id.clone()), "{id} listed twice");
                assert_eq!(
                    job["BacktrackedFrom"],
                    Timestamp::from_micros(outcome.backtracked_from_us).to_string(),
                    "the job records the node's outcome"
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        CLUSTERS * ROUNDS,
        "every backtrack reached a node"
    );
    assert_eq!(
        applied as usize,
        CLUSTERS * ROUNDS,
        "each backtrack was applied exactly once"
    );
}
