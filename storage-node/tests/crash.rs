//! Crash safety of the real node process: concurrent writers, SIGKILL at random moments,
//! twenty rounds on the same data directory. After each restart every acknowledged commit is
//! present, nothing unacknowledged is half-applied, integrity_check is ok, and backtracks work.
//! Each round also clones the volume; every clone stays exactly what its source held at its
//! instant (plus its own acknowledged write) while the source goes on, folds through the
//! clones' instants (its window shrinks halfway) and is killed mid-way.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backtrack_storage_node::api::{BacktrackRequest, CloneSource, ExecuteRequest, Value};
use backtrack_storage_node::client::NodeClient;
use backtrack_storage_node::testing::Spawned;
use uuid::Uuid;

const TOKEN: &str = "crash-test";
const ROUNDS: usize = 20;

/// Killed when dropped.
struct Node {
    _process: Spawned,
    client: NodeClient,
}

fn start(dir: &PathBuf) -> Node {
    let process = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_backtrack-storage-node"))
            .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--segment-bytes",
                "262144",
                "--log-budget-bytes",
                "67108864",
            ])
            .args(["--maintenance-interval-ms", "50"])
            .env("RUST_LOG", "warn"),
    );
    Node {
        client: NodeClient::new(&process.url, TOKEN, Duration::from_secs(10)),
        _process: process,
    }
}

fn sql(text: &str, params: Vec<Value>) -> ExecuteRequest {
    ExecuteRequest {
        sql: text.into(),
        params,
        ..Default::default()
    }
}

async fn rows(client: &NodeClient, text: &str) -> Vec<Vec<Value>> {
    rows_of(client, "v", text).await
}

async fn rows_of(client: &NodeClient, volume: &str, text: &str) -> Vec<Vec<Value>> {
    client
        .execute(volume, &sql(text, vec![]))
        .await
        .unwrap()
        .rows
}

async fn keys_of(client: &NodeClient, volume: &str) -> BTreeSet<i64> {
    rows_of(client, volume, "SELECT k FROM a")
        .await
        .iter()
        .map(|r| int(&r[0]))
        .collect()
}

/// A clone made in some round: its id and the keys it must hold.
struct Clone {
    id: String,
    keys: BTreeSet<i64>,
}

/// The key each clone writes into itself (the source's keys are all below it).
const CLONE_KEY: i64 = 1 << 40;

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Checks the state after a restart against what was acknowledged; returns the row count.
async fn verify(client: &NodeClient, acked: &BTreeSet<i64>, round: usize) -> i64 {
    let present = keys_of(client, "v").await;
    let missing: Vec<_> = acked.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "round {round}: acknowledged keys lost: {missing:?}"
    );
    // The trigger's row and its source row commit together or not at all.
    let mirrored: BTreeSet<i64> = rows(client, "SELECT k FROM b")
        .await
        .iter()
        .map(|r| int(&r[0]))
        .collect();
    assert_eq!(
        present, mirrored,
        "round {round}: a commit was half-applied"
    );
    // Every three-row transaction is whole.
    let broken = rows(
        client,
        "SELECT grp FROM a WHERE grp IS NOT NULL GROUP BY grp HAVING count(*) != 3",
    )
    .await;
    assert!(
        broken.is_empty(),
        "round {round}: partial transactions {broken:?}"
    );
    assert_eq!(
        rows(client, "PRAGMA integrity_check").await,
        vec![vec![Value::Text("ok".into())]]
    );
    present.len() as i64
}

/// Every clone holds exactly its keys, whole.
async fn verify_clones(client: &NodeClient, clones: &[Clone], round: usize) {
    for clone in clones {
        assert_eq!(
            keys_of(client, &clone.id).await,
            clone.keys,
            "round {round}: clone {} changed",
            clone.id
        );
        assert_eq!(
            rows_of(client, &clone.id, "PRAGMA integrity_check").await,
            vec![vec![Value::Text("ok".into())]],
            "round {round}: clone {}",
            clone.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_survive_sigkill_at_random_moments() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-{}", Uuid::new_v4().simple()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next_key = Arc::new(AtomicI64::new(0));
    // The most rows a reader was told of: a commit is visible before it is durable (the next
    // writer is let in while it is written), but no answer may be built on one not durable.
    let told = Arc::new(AtomicI64::new(0));
    let mut seed = 0x5eed_u64;
    let mut random = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };

    let node = start(&dir);
    node.client.create_volume("v", 30).await.unwrap();
    for statement in [
        "CREATE TABLE a (k INTEGER PRIMARY KEY, grp INTEGER, pad BLOB)",
        "CREATE TABLE b (k INTEGER PRIMARY KEY)",
        "CREATE TRIGGER mirror AFTER INSERT ON a BEGIN INSERT INTO b VALUES (new.k); END",
    ] {
        rows(&node.client, statement).await;
    }
    let mut node = Some(node);
    let mut clones: Vec<Clone> = Vec::new();

    for round in 0..ROUNDS {
        let current = node.take().unwrap_or_else(|| start(&dir));
        let client = current.client.clone();
        let acknowledged = acked.lock().unwrap().clone();
        let before = verify(&client, &acknowledged, round).await;
        let counted = int(&rows(&client, "SELECT count(*) FROM a").await[0][0]);
        assert!(
            counted >= told.load(Ordering::Relaxed),
            "round {round}: a reader was told of {} rows, {counted} survived",
            told.load(Ordering::Relaxed)
        );
        verify_clones(&client, &clones, round).await;

        // A clone of what the source holds now, with a write of its own.
        let id = format!("c{round}");
        let at = now_us();
        let source = CloneSource {
            volume_id: "v".into(),
            at_us: at,
            full_copy: false,
        };
        client.create_clone(&id, 30, &source).await.unwrap();
        client
            .execute(
                &id,
                &sql(
                    "INSERT INTO a (k) VALUES (?)",
                    vec![Value::Integer(CLONE_KEY)],
                ),
            )
            .await
            .unwrap();
        let mut keys = keys_of(&client, "v").await;
        keys.insert(CLONE_KEY);
        clones.push(Clone { id, keys });
        if round == ROUNDS / 2 {
            // From now on the source folds through the clones' instants at every pass.
            client.modify_volume("v", 1).await.unwrap();
        }
        if round % 5 == 4 {
            // A clone of a clone, and the deletion of a clone that has one.
            let parent = clones[round - 2].id.clone();
            let id = format!("cc{round}");
            let source = CloneSource {
                volume_id: parent.clone(),
                at_us: now_us(),
                full_copy: false,
            };
            client.create_clone(&id, 30, &source).await.unwrap();
            let keys = clones[round - 2].keys.clone();
            clones.push(Clone { id, keys });
            client.delete_volume(&parent).await.unwrap();
            clones.retain(|c| c.id != parent);
        }

        // A backtrack still works after recovery: rewind a few fresh rows away.
        let mark = now_us();
        tokio::time::sleep(Duration::from_millis(2)).await;
        for _ in 0..3 {
            let k = next_key.fetch_add(1, Ordering::Relaxed);
            client
                .execute(
                    "v",
                    &sql("INSERT INTO a (k) VALUES (?)", vec![Value::Integer(k)]),
                )
                .await
                .unwrap();
        }
        let request = BacktrackRequest {
            backtrack_id: Uuid::new_v4(),
            to_us: mark,
            clamp_to_earliest: false,
            force: true,
        };
        client.backtrack("v", &request).await.unwrap();
        assert_eq!(
            int(&rows(&client, "SELECT count(*) FROM a").await[0][0]),
            before,
            "round {round}"
        );

        // Writers until the kill, and a reader.
        let mut writers = Vec::new();
        {
            let (client, told) = (client.clone(), told.clone());
            writers.push(tokio::spawn(async move {
                let count = sql("SELECT count(*) FROM a", Vec::new());
                while let Ok(result) = client.execute("v", &count).await {
                    told.fetch_max(int(&result.rows[0][0]), Ordering::Relaxed);
                }
            }));
        }
        for w in 0..4 {
            let (client, acked, next_key) = (client.clone(), acked.clone(), next_key.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let k = next_key.fetch_add(1, Ordering::Relaxed);
                    let size = 100 + (k * 7919 % 9000);
                    let insert = sql(
                        "INSERT INTO a (k, pad) VALUES (?, randomblob(?))",
                        vec![Value::Integer(k), Value::Integer(size)],
                    );
                    if w == 0 {
                        // Three rows in one transaction.
                        let Ok(tx) = client.begin("v").await else {
                            return;
                        };
                        let mut keys = vec![k];
                        keys.extend((0..2).map(|_| next_key.fetch_add(1, Ordering::Relaxed)));
                        for key in &keys {
                            let mut one = sql(
                                "INSERT INTO a (k, grp) VALUES (?, ?)",
                                vec![Value::Integer(*key), Value::Integer(k)],
                            );
                            one.transaction_id = Some(tx.transaction_id.clone());
                            if client.execute("v", &one).await.is_err() {
                                return;
                            }
                        }
                        match client.commit("v", &tx.transaction_id).await {
                            Ok(()) => acked.lock().unwrap().extend(keys),
                            Err(_) => return,
                        }
                    } else {
                        match client.execute("v", &insert).await {
                            Ok(_) => {
                                acked.lock().unwrap().insert(k);
                            }
                            Err(_) => return,
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(100 + random(500))).await;
        drop(current);
        for writer in writers {
            writer.await.unwrap();
        }
    }

    let last = start(&dir);
    let acknowledged = acked.lock().unwrap().clone();
    let total = verify(&last.client, &acknowledged, ROUNDS).await;
    verify_clones(&last.client, &clones, ROUNDS).await;
    assert!(total as usize >= acked.lock().unwrap().len());
    assert!(
        acked.lock().unwrap().len() > 200,
        "the writers got work done"
    );
    drop(last);
    let _ = std::fs::remove_dir_all(&dir);
}
