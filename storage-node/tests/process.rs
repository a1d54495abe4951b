//! The node binary as a process: a second node on the same data directory refuses to start,
//! and one caller's runaway transaction cannot take the node's memory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use backtrack_storage_node::api::{ErrorCode, ExecuteRequest};
use backtrack_storage_node::client::{CallError, NodeClient};
use backtrack_storage_node::testing::Spawned;

const TOKEN: &str = "process-test";

struct Node {
    process: Spawned,
    client: NodeClient,
}

fn command(dir: &PathBuf) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_backtrack-storage-node"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn");
    command
}

fn start(dir: &PathBuf) -> Node {
    start_with(dir, &[])
}

fn start_with(dir: &PathBuf, args: &[&str]) -> Node {
    let process = Spawned::start(command(dir).args(args));
    Node {
        client: NodeClient::new(&process.url, TOKEN, Duration::from_secs(60)),
        process,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()))
}

#[test]
fn a_second_node_on_a_data_directory_refuses_to_start_and_names_the_first() {
    let dir = temp_dir("two-owners");
    let first = start(&dir);
    let second = command(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!second.status.success(), "the second node ran");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(
        message.contains(&format!("in use by process {}", first.process.child.id())),
        "{message}"
    );
    drop(first);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The most memory the process has held at once, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib << 10
}

#[tokio::test]
async fn a_runaway_insert_is_refused_before_it_takes_the_nodes_memory() {
    let dir = temp_dir("memory");
    let node = start(&dir);
    node.client.create_volume("v", 3600).await.unwrap();
    let sql = |text: &str| ExecuteRequest {
        sql: text.into(),
        ..Default::default()
    };
    node.client
        .execute("v", &sql("CREATE TABLE t (b BLOB)"))
        .await
        .unwrap();
    // 3 GB in one statement, with the node's default limits.
    let refused = node
        .client
        .execute(
            "v",
            &sql(
                "INSERT INTO t SELECT randomblob(100000) FROM (WITH RECURSIVE c(x) AS \
                  (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000) SELECT x FROM c)",
            ),
        )
        .await;
    match refused {
        Err(CallError::Refused { code, message, .. }) => {
            assert_eq!(code, ErrorCode::SqlError, "{message}");
            assert!(message.contains("limit of 256 MiB"), "{message}");
        }
        other => panic!("the insert was not refused: {other:?}"),
    }
    let peak = peak_memory(node.process.child.id());
    assert!(
        peak < 800 << 20,
        "the node held {} MiB at its peak",
        peak >> 20
    );
    // Nothing of it stayed, and the volume goes on.
    let count = node
        .client
        .execute("v", &sql("SELECT count(*) FROM t"))
        .await
        .unwrap();
    assert_eq!(
        count.rows[0][0],
        backtrack_storage_node::api::Value::Integer(0)
    );
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_statement_that_needs_more_memory_than_the_node_allows_fails_cleanly() {
    let dir = temp_dir("heap");
    let node = start_with(
        &dir,
        &[
            "--sql-memory-limit-bytes",
            "67108864",
            "--statement-timeout-ms",
            "120000",
        ],
    );
    node.client.create_volume("v", 3600).await.unwrap();
    // Sorting 2 million 200-byte values needs about 400 MB of SQLite's heap.
    let sort = ExecuteRequest {
        sql: "SELECT count(*) FROM (SELECT randomblob(200) AS b FROM (WITH RECURSIVE c(x) AS \
              (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT x FROM c) \
              ORDER BY b)"
            .into(),
        ..Default::default()
    };
    match node.client.execute("v", &sort).await {
        Err(CallError::Refused { code, message, .. }) => {
            assert_eq!(code, ErrorCode::SqlError, "{message}");
            assert!(message.contains("out of memory"), "{message}");
        }
        other => panic!("the sort was not refused: {other:?}"),
    }
    let peak = peak_memory(node.process.child.id());
    assert!(
        peak < 300 << 20,
        "the node held {} MiB at its peak",
        peak >> 20
    );
    // The node goes on.
    let one = ExecuteRequest {
        sql: "SELECT 1".into(),
        ..Default::default()
    };
    node.client.execute("v", &one).await.unwrap();
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}
