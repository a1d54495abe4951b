//! Faults, with the real binaries: a full disk under the service and its nodes (the metadata
//! store on it too, on SQLite), and a fault-injection run that kills nodes and the control plane
//! at random moments and fills and frees the disk, under concurrent writers and backtracks.
//! The disk parts need root (to mount a small tmpfs); without it they say so and the kills run
//! alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backtrack_storage_node::client::NodeClient;
use backtrack_storage_node::testing::{SmallDisk, Spawned};
use serde_json::{json, Value};

use crate::e2e::{iso, Service};
use crate::helpers::*;

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:test";
const NODE_TOKEN_FOR_FAULTS: &str = "faults-test-token";

fn arn(cluster: &str) -> String {
    format!("arn:aws:rds:us-east-1:000000000000:cluster:{cluster}")
}

fn now_us() -> i64 {
    (now_secs() * 1e6) as i64
}

/// The metadata database: on the small disk when the suite runs on SQLite (so that it fills
/// up too), else the suite's PostgreSQL database.
fn metadata_url(db: &TestDb, dir: &Path) -> String {
    if db.url.starts_with("sqlite") {
        format!("sqlite://{}?mode=rwc", dir.join("meta.db").display())
    } else {
        db.url.clone()
    }
}

/// An insert of row `k` through the Data API: its status and body.
async fn insert(http: &reqwest::Client, url: &str, cluster: &str, k: i64) -> Option<(u16, Value)> {
    let body = json!({
        "resourceArn": arn(cluster), "secretArn": SECRET,
        "sql": "INSERT INTO t (k, pad) VALUES (:k, randomblob(1500))",
        "parameters": [{"name": "k", "value": {"longValue": k}}],
    });
    let response = http
        .post(format!("{url}/Execute"))
        .timeout(Duration::from_secs(20))
        .json(&body)
        .send()
        .await
        .ok()?;
    Some(decode(response).await)
}

async fn keys(http: &reqwest::Client, url: &str, cluster: &str) -> BTreeSet<i64> {
    let body = json!({"resourceArn": arn(cluster), "secretArn": SECRET, "sql": "SELECT k FROM t"});
    let (status, body) = decode(
        http.post(format!("{url}/Execute"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0]["longValue"].as_i64().unwrap())
        .collect()
}

/// Whether an answer is one a client may get while a node or the disk is in trouble: never a
/// 500, and every error in its API's form.
fn acceptable_failure(status: u16, body: &Value) -> bool {
    match status {
        400 => body["message"]
            .as_str()
            .is_some_and(|m| m.contains("disk is full")),
        503 | 504 => body["message"].is_string() || body["Error"]["Code"].is_string(),
        _ => false,
    }
}

#[tokio::test]
async fn a_full_disk_under_the_service_and_its_nodes_is_survived_and_recovered_from() {
    let disk = match SmallDisk::tmpfs(48) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here ({why}); run as root");
            return;
        }
    };
    let db = TestDb::new().await;
    let data = disk.mount.join("data");
    let url_db = metadata_url(&db, &data);
    let mut child = Command::new(env!("CARGO_BIN_EXE_backtrack-service"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval-ms",
            "50",
        ])
        .args(["--job-retry-base-ms", "100", "--job-retry-max-ms", "500"])
        .args(["--database-url", &url_db])
        .arg("--data-dir")
        .arg(&data)
        // The local nodes inherit these: small segments, so that a rollover soon needs room.
        .env("BACKTRACK_NODE_SEGMENT_BYTES", "262144")
        .env("BACKTRACK_NODE_MAINTENANCE_INTERVAL_MS", "200")
        .env("RUST_LOG", QUIET)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = listening_address(&mut child);
    let service = Service::from_parts(child, url.clone());
    service.create_cluster("full").await;
    service
        .sql("full", "CREATE TABLE t (k INTEGER PRIMARY KEY, pad BLOB)")
        .await;
    let http = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    for k in 0..50 {
        let (status, body) = insert(&http, &url, "full", k).await.unwrap();
        assert_eq!(status, 200, "{body}");
        acked.insert(k);
    }

    let filler = disk.fill();
    let mut refused = 0;
    let mut k = 50;
    while refused < 10 && k < 5_000 {
        let (status, body) = insert(&http, &url, "full", k).await.unwrap();
        match status {
            200 => {
                acked.insert(k);
            }
            _ => {
                assert!(acceptable_failure(status, &body), "{status} {body}");
                refused += 1;
            }
        }
        k += 1;
    }
    assert!(refused >= 10, "the disk filled up");
    assert_eq!(keys(&http, &url, "full").await, acked, "reads go on");
    // The metadata store is full too (on SQLite): a clear refusal, never a 500.
    let (status, body) = service
        .call(
            "PATCH",
            "/v1/clusters/full",
            Some(json!({"DeletionProtection": true})),
        )
        .await;
    assert!(status == 200 || status == 503, "{status} {body}");
    let (status, backtrack) = service
        .call(
            "POST",
            "/v1/clusters/full/backtracks",
            Some(json!({"BacktrackTo": iso(now_secs())})),
        )
        .await;
    assert!(status == 202 || status == 503, "{status} {backtrack}");
    let (status, _) = service.call("GET", "/healthz", None).await;
    assert_eq!(status, 200);

    // Space comes back: everything resumes within seconds, without a restart.
    std::fs::remove_file(&filler).unwrap();
    if status == 202 {
        let done = service
            .wait_for("full", backtrack["BacktrackIdentifier"].as_str().unwrap())
            .await;
        assert_eq!(done["Status"], "completed", "{done}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = service
            .call(
                "PATCH",
                "/v1/clusters/full",
                Some(json!({"DeletionProtection": false})),
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    crate::e2e::wait_until_available(&service, "full").await;
    loop {
        let (status, body) = insert(&http, &url, "full", k).await.unwrap();
        if status == 200 {
            acked.insert(k);
            break;
        }
        assert!(acceptable_failure(status, &body), "{status} {body}");
        assert!(Instant::now() < deadline, "writes did not resume: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for k in k + 1..k + 200 {
        let (status, body) = insert(&http, &url, "full", k).await.unwrap();
        assert_eq!(status, 200, "{body}");
        acked.insert(k);
    }
    assert_eq!(
        keys(&http, &url, "full").await,
        acked,
        "no acknowledged row was lost"
    );
    let check = service.sql("full", "PRAGMA integrity_check").await;
    assert_eq!(check["records"][0][0]["stringValue"], "ok");
    let done = service.backtrack("full", &iso(now_secs())).await;
    assert_eq!(done["Status"], "completed", "{done}");
    drop(service);
}

// --- fault injection ------------------------------------------------------------------------

const ROUNDS: usize = 12;

/// A free port on 127.0.0.1, for processes restarted on the same address. It is taken below
/// the kernel's ephemeral range (32768 and up), so that no test binding port 0 meanwhile is
/// handed it while its process is down.
fn free_port() -> u16 {
    static TAKEN: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 8_000) as u16;
    loop {
        let port = start + TAKEN.fetch_add(1, Ordering::Relaxed);
        assert!(port < 32_000, "no free port below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A process that the rig kills and starts again.
struct Proc(Option<Spawned>);

impl Proc {
    fn kill(&mut self) {
        self.0.take();
    }
}

/// Logs of the processes under faults: errors only, and not every refused request.
const QUIET: &str = "error,tower_http=off";

fn command(args: &[String], data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backtrack-service"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", QUIET)
        .stderr(Stdio::inherit());
    command
}

fn spawn(args: &[String], data_dir: &Path) -> Proc {
    Proc(Some(Spawned::start(&mut command(args, data_dir))))
}

struct Rig {
    service_args: Vec<String>,
    service_dir: PathBuf,
    node_args: Vec<Vec<String>>,
    node_dirs: Vec<PathBuf>,
    service: Proc,
    nodes: Vec<Proc>,
}

impl Rig {
    fn restart_service(&mut self) {
        self.service.kill();
        self.service = spawn(&self.service_args, &self.service_dir);
    }

    fn restart_node(&mut self, n: usize) {
        self.nodes[n].kill();
        // The port may linger a moment after the kill.
        for _ in 0..50 {
            let mut child = command(&self.node_args[n], &self.node_dirs[n])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            if let Some(url) = backtrack_storage_node::testing::try_listening_address(&mut child) {
                self.nodes[n] = Proc(Some(Spawned { child, url }));
                return;
            }
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node {n} did not restart");
    }
}

/// One acknowledged (or not) insert of the writers.
#[derive(Debug, Clone, Copy)]
struct Write {
    k: i64,
    sent_us: i64,
    acked_us: Option<i64>,
}

#[derive(Default)]
struct Log {
    writes: BTreeMap<String, Vec<Write>>,
    failures: Vec<String>,
}

async fn writer(
    url: String,
    cluster: String,
    first: i64,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let http = reqwest::Client::new();
    let mut k = first;
    while !stop.load(Ordering::Relaxed) {
        let sent_us = now_us();
        let answer = insert(&http, &url, &cluster, k).await;
        let acked_us = match &answer {
            Some((200, _)) => Some(now_us()),
            Some((status, body)) => {
                if !acceptable_failure(*status, body) {
                    log.lock()
                        .unwrap()
                        .failures
                        .push(format!("{cluster} insert: {status} {body}"));
                }
                None
            }
            None => None,
        };
        log.lock()
            .unwrap()
            .writes
            .entry(cluster.clone())
            .or_default()
            .push(Write {
                k,
                sent_us,
                acked_us,
            });
        if acked_us.is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        k += 1;
    }
}

/// Requests a backtrack of `cluster` every so often, to a moment just before; records the id
/// of each one accepted.
async fn backtracker(
    url: String,
    cluster: String,
    stop: Arc<AtomicBool>,
    ids: Arc<Mutex<Vec<String>>>,
) {
    let http = reqwest::Client::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(700 + (n * 337) % 600)).await;
        n += 1;
        let to = now_secs() - 0.2 - (n % 5) as f64 * 0.1;
        let response = http
            .post(format!("{url}/v1/clusters/{cluster}/backtracks"))
            .timeout(Duration::from_secs(20))
            .json(&json!({"BacktrackTo": iso(to), "Force": true}))
            .send()
            .await;
        if let Ok(response) = response {
            let (status, body) = decode(response).await;
            if status == 202 {
                ids.lock()
                    .unwrap()
                    .push(body["BacktrackIdentifier"].as_str().unwrap().to_string());
            }
        }
    }
}

/// A row committed at `c` is in the state at `t`, given the backtracks applied (each a target
/// `to` and the moment `from` it switched, in the order applied): the state after a switch is
/// the state at its target, plus what was committed since.
fn present_at(c: i64, t: i64, backtracks: &[(i64, i64)]) -> bool {
    match backtracks.iter().rev().find(|(_, from)| *from <= t) {
        None => c <= t,
        Some(&(to, from)) => (c > from && c <= t) || present_at(c, to, backtracks),
    }
}

/// Whether an acknowledged write must be in the final state (`Some`), or may be or not
/// (`None`: its commit moment, somewhere between sending and the answer, falls on both sides of
/// a backtrack's target or switch).
fn expected(write: &Write, backtracks: &[(i64, i64)]) -> Option<bool> {
    let acked = write.acked_us?;
    let mut moments = vec![write.sent_us, acked];
    for &(to, from) in backtracks {
        for m in [to, to + 1, from, from + 1] {
            if m > write.sent_us && m < acked {
                moments.push(m);
            }
        }
    }
    let answers: BTreeSet<bool> = moments
        .iter()
        .map(|c| present_at(*c, i64::MAX, backtracks))
        .collect();
    (answers.len() == 1).then(|| answers.into_iter().next().unwrap())
}

async fn wait_healthy(url: &str, http: &reqwest::Client) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_random_moments_lose_no_acknowledged_row_and_run_each_backtrack_once() {
    let db = TestDb::new().await;
    let disk = SmallDisk::tmpfs(256);
    if let Err(why) = &disk {
        eprintln!("the disk will not be filled: cannot mount a tmpfs here ({why}); run as root");
    }
    let base = match &disk {
        Ok(disk) => disk.mount.clone(),
        Err(_) => db.dir.0.clone(),
    };
    let (service_port, node_ports) = (free_port(), [free_port(), free_port()]);
    let node_urls: Vec<String> = node_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let node_args: Vec<Vec<String>> = node_ports
        .iter()
        .map(|port| {
            [
                "node",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token",
                NODE_TOKEN_FOR_FAULTS,
                "--segment-bytes",
                "262144",
                "--maintenance-interval-ms",
                "200",
                // A small log budget: old history is folded early, under the faults too.
                "--log-budget-bytes",
                "33554432",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        })
        .collect();
    let url = format!("http://127.0.0.1:{service_port}");
    let mut service_args: Vec<String> = [
        "serve",
        "--listen",
        &format!("127.0.0.1:{service_port}"),
        "--database-url",
        &metadata_url(&db, &base),
        "--node-token",
        NODE_TOKEN_FOR_FAULTS,
        "--poll-interval-ms",
        "50",
        "--job-lease-secs",
        "3",
        "--node-timeout-ms",
        "2000",
        "--job-retry-base-ms",
        "100",
        "--job-retry-max-ms",
        "500",
        "--job-deadline-secs",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (i, node) in node_urls.iter().enumerate() {
        service_args.extend(["--node".to_string(), format!("node-{i}={node}")]);
    }
    let node_dirs: Vec<PathBuf> = (0..2).map(|i| base.join(format!("node-{i}"))).collect();
    let nodes: Vec<Proc> = (0..2)
        .map(|i| spawn(&node_args[i], &node_dirs[i]))
        .collect();
    let service_dir = base.join("control-plane");
    let mut rig = Rig {
        service: spawn(&service_args, &service_dir),
        service_args,
        service_dir,
        node_args,
        node_dirs,
        nodes,
    };
    let control = Service::at(&url);
    for cluster in ["steady", "rewind"] {
        control.create_cluster(cluster).await;
        control
            .sql(cluster, "CREATE TABLE t (k INTEGER PRIMARY KEY, pad BLOB)")
            .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let backtracks = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (cluster, first) in [("steady", 0), ("steady", 1_000_000), ("rewind", 2_000_000)] {
        tasks.push(tokio::spawn(writer(
            url.clone(),
            cluster.into(),
            first,
            stop.clone(),
            log.clone(),
        )));
    }
    tasks.push(tokio::spawn(backtracker(
        url.clone(),
        "rewind".into(),
        stop.clone(),
        backtracks.clone(),
    )));

    // The faults, at moments of a seeded schedule.
    let mut rng = 0x5EED_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Each round kills something, then (every other round, on average) fills the disk for a
    // moment. Nothing restarts while the disk is full: a node cannot open its log without room
    // for a new segment (it is restarted once there is room, as its supervisor would).
    let mut done: Vec<Vec<&str>> = Vec::new();
    for _ in 0..ROUNDS {
        let mut round = Vec::new();
        tokio::time::sleep(Duration::from_millis(300 + next() % 900)).await;
        let fault = ["kill the control plane", "kill node-0", "kill node-1"][(next() % 3) as usize];
        match fault {
            "kill the control plane" => tokio::task::block_in_place(|| rig.restart_service()),
            node => tokio::task::block_in_place(|| {
                rig.restart_node(node.strip_prefix("kill node-").unwrap().parse().unwrap())
            }),
        }
        round.push(fault);
        if let (Ok(disk), true) = (&disk, next() % 2 == 0) {
            tokio::time::sleep(Duration::from_millis(200 + next() % 600)).await;
            let filler = disk.fill();
            tokio::time::sleep(Duration::from_millis(300 + next() % 900)).await;
            std::fs::remove_file(filler).unwrap();
            round.push("fill and free the disk");
        }
        done.push(round);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let http = reqwest::Client::new();
    wait_healthy(&url, &http).await;

    // Every backtrack finished, exactly once.
    // Every backtrack finished, exactly once: those whose acceptance the backtracker heard,
    // and any whose answer a killed control plane never sent.
    let heard: BTreeSet<String> = backtracks.lock().unwrap().iter().cloned().collect();
    assert!(heard.len() >= 5, "backtracks ran: {heard:?}");
    for id in &heard {
        let done = control.wait_for("rewind", id).await;
        assert_eq!(done["Status"], "completed", "{done}");
    }
    let (_, listed) = control
        .call("GET", "/v1/clusters/rewind/backtracks?MaxRecords=100", None)
        .await;
    let jobs = listed["DBClusterBacktracks"].as_array().unwrap().clone();
    assert!(listed["Marker"].is_null(), "fewer than 100 backtracks");
    let mut ids = BTreeSet::new();
    for job in &jobs {
        let id = job["BacktrackIdentifier"].as_str().unwrap();
        let done = control.wait_for("rewind", id).await;
        assert_eq!(done["Status"], "completed", "{done}");
        ids.insert(id.to_string());
    }
    assert!(heard.is_subset(&ids));
    crate::e2e::wait_until_available(&control, "steady").await;
    crate::e2e::wait_until_available(&control, "rewind").await;
    let (_, cluster) = control.call("GET", "/v1/clusters/rewind", None).await;
    let volume = cluster["DBCluster"]["DbClusterResourceId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ledger = None;
    let mut applied = 0;
    for node in &node_urls {
        let client = NodeClient::new(node, NODE_TOKEN_FOR_FAULTS, Duration::from_secs(5));
        let health = client.health().await.unwrap();
        assert_eq!(health.status, "ok");
        assert!(!health.disk_full);
        if let Ok(list) = client.backtracks(&volume).await {
            applied = client.volume(&volume).await.unwrap().backtracks_applied;
            ledger = Some(list.backtracks);
        }
    }
    let ledger = ledger.expect("the rewound volume is on a node");
    let in_ledger: BTreeSet<String> = ledger.iter().map(|o| o.backtrack_id.to_string()).collect();
    assert_eq!(
        in_ledger, ids,
        "the node applied exactly the backtracks the service accepted"
    );
    assert_eq!(applied as usize, ids.len(), "each was applied once");

    // No acknowledged row lost, and none that a backtrack removed came back.
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(
        log.failures.is_empty(),
        "answers outside the contract: {:?}",
        log.failures
    );
    let steady = keys(&http, &url, "steady").await;
    let steady_writes = &log.writes["steady"];
    let lost: Vec<i64> = steady_writes
        .iter()
        .filter(|w| w.acked_us.is_some() && !steady.contains(&w.k))
        .map(|w| w.k)
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let sent: BTreeSet<i64> = steady_writes.iter().map(|w| w.k).collect();
    assert!(steady.is_subset(&sent));
    let acked = steady_writes
        .iter()
        .filter(|w| w.acked_us.is_some())
        .count();
    assert!(acked > 100, "the writers got through: {acked}");

    let switches: Vec<(i64, i64)> = ledger
        .iter()
        .map(|o| (o.backtrack_to_us, o.backtracked_from_us))
        .collect();
    let rewound = keys(&http, &url, "rewind").await;
    let mut wrong = Vec::new();
    for write in &log.writes["rewind"] {
        if let Some(want) = expected(write, &switches) {
            if want != rewound.contains(&write.k) {
                wrong.push((write.k, want));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "rows against the history (row, expected present): {wrong:?}"
    );
    for cluster in ["steady", "rewind"] {
        let check = control.sql(cluster, "PRAGMA integrity_check").await;
        assert_eq!(check["records"][0][0]["stringValue"], "ok");
    }
    eprintln!(
        "faults: {done:?}; {} acknowledged writes; {} backtracks",
        acked,
        ids.len()
    );
    drop(rig);
}

#[test]
fn the_history_model_follows_backtracks_back_and_forward() {
    // Commits at 10, 20, 30; a backtrack at 35 to 15; a commit at 40; forward again at 45 to 32.
    let backtracks = [(15, 35), (32, 45)];
    let at_end = |c| present_at(c, i64::MAX, &backtracks);
    assert!(at_end(10), "before every target");
    assert!(
        at_end(20) && at_end(30),
        "the forward backtrack brought them back"
    );
    assert!(!at_end(40), "after the state the last backtrack restored");
    assert!(at_end(50), "after the last switch");
    let write = Write {
        k: 1,
        sent_us: 30,
        acked_us: Some(36),
    };
    assert_eq!(expected(&write, &[(15, 35)]), None, "straddles the switch");
}
