//! Hostile and unlucky callers, in-process: a second owner of the data directory, files others
//! could read, runaway statements, transactions that would take the node's memory, PRAGMAs
//! that would leak from one caller to the next or weaken durability, and half-applied batches.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use backtrack_storage_node::api::{ErrorCode, ExecuteRequest, Value};
use backtrack_storage_node::engine::Engine;

use crate::common::*;

#[test]
fn a_second_engine_on_a_data_directory_is_refused_and_names_the_holder() {
    let dir = TempDir::new("owner");
    let first = open(&dir);
    let refused = Engine::open(config(&dir))
        .err()
        .expect("a second owner is refused");
    let message = refused.to_string();
    assert!(
        message.contains(&dir.0.display().to_string()),
        "names the directory: {message}"
    );
    assert!(
        message.contains(&format!("process {}", std::process::id())),
        "names the holder: {message}"
    );
    first.close();
    drop(first);
    // Closing hands the directory over.
    open(&dir).close();
}

#[test]
fn data_files_and_directories_are_private_to_their_owner() {
    let dir = TempDir::new("private");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE secret (card TEXT)");
    exec(
        &engine,
        "v",
        "INSERT INTO secret VALUES ('4111 1111 1111 1111')",
    );
    engine.modify_volume("v", 0).unwrap();
    engine.maintain();
    let mut checked = 0;
    // The directory itself is the one the user chose; everything the node makes in it is private.
    for path in walk(&dir.0).into_iter().skip(1) {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is readable by others ({mode:o})",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 5, "looked at the log, the volume and its files");
    engine.close();
}

fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let entries: Vec<_> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.extend(entries);
        }
        i += 1;
    }
    out
}

fn limited(dir: &TempDir, timeout: Duration, max_transaction_bytes: u64) -> std::sync::Arc<Engine> {
    let mut config = config(dir);
    config.sql_limits.statement_timeout = timeout;
    config.sql_limits.max_transaction_bytes = max_transaction_bytes;
    Engine::open(config).unwrap()
}

const RUNAWAY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

/// Runs `sql` on another thread and waits at most `within` for its answer.
fn answer_within(
    engine: &std::sync::Arc<Engine>,
    request: ExecuteRequest,
    within: Duration,
) -> Result<
    backtrack_storage_node::api::ExecuteResult,
    backtrack_storage_node::engine::volume::VolumeError,
> {
    let (tx, rx) = mpsc::channel();
    let engine = engine.clone();
    std::thread::spawn(move || {
        let _ = tx.send(engine.execute("v", &request));
    });
    rx.recv_timeout(within)
        .expect("the statement was stopped at its time limit")
}

#[test]
fn a_runaway_statement_is_stopped_at_its_time_limit_and_the_volume_goes_on() {
    let dir = TempDir::new("runaway");
    let engine = limited(&dir, Duration::from_millis(300), 256 << 20);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let request = ExecuteRequest {
        sql: RUNAWAY.into(),
        ..Default::default()
    };
    let error = answer_within(&engine, request, Duration::from_secs(10)).unwrap_err();
    assert_eq!(error.code, ErrorCode::StatementTimeout, "{error}");
    assert!(error.message.contains("300 ms"), "names the limit: {error}");
    // Nothing keeps running: the next statements answer at once.
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    assert_eq!(count(&engine, "t"), 1);

    // In a transaction, the whole transaction is rolled back and ended.
    let tx = engine.begin("v").unwrap();
    exec_in(&engine, "v", &tx, "INSERT INTO t VALUES (2)").unwrap();
    let request = ExecuteRequest {
        sql: "INSERT INTO t SELECT x + 100 FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c)".into(),
        transaction_id: Some(tx.clone()),
        ..Default::default()
    };
    let error = answer_within(&engine, request, Duration::from_secs(10)).unwrap_err();
    assert_eq!(error.code, ErrorCode::StatementTimeout, "{error}");
    assert!(error.message.contains("rolled back"), "{error}");
    assert_eq!(
        engine.commit("v", &tx).unwrap_err().code,
        ErrorCode::TransactionNotFound
    );
    assert_eq!(
        count(&engine, "t"),
        1,
        "the transaction's insert was undone"
    );
    assert_eq!(engine.figures("v").unwrap().open_transactions, 0);
    engine.close();
}

fn count(engine: &Engine, table: &str) -> i64 {
    match &exec(engine, "v", &format!("SELECT count(*) FROM {table}")).rows[0][0] {
        Value::Integer(n) => *n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transaction_bigger_than_the_limit_is_refused_and_rolled_back() {
    let dir = TempDir::new("too-big");
    let engine = limited(&dir, Duration::from_secs(30), 1 << 20);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (b BLOB)");
    exec(&engine, "v", "INSERT INTO t VALUES (randomblob(1000))");
    let error = try_exec(
        &engine,
        "v",
        "INSERT INTO t SELECT randomblob(100000) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 50) SELECT x FROM c)",
        vec![],
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::SqlError, "{error}");
    assert!(error.message.contains("limit of 1 MiB"), "{error}");
    assert_eq!(count(&engine, "t"), 1, "nothing of it took effect");
    // Within the limit, writing goes on.
    exec(&engine, "v", "INSERT INTO t VALUES (randomblob(100000))");
    assert_eq!(count(&engine, "t"), 2);
    engine.close();
}

#[test]
fn a_pragma_set_by_one_caller_never_reaches_the_next() {
    let dir = TempDir::new("pragmas");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    );
    let foreign_keys = exec(&engine, "v", "PRAGMA foreign_keys").rows[0][0].clone();
    exec(&engine, "v", "PRAGMA query_only = ON");
    exec(&engine, "v", "PRAGMA foreign_keys = OFF");
    exec(&engine, "v", "PRAGMA foreign_keys = ON");
    exec(&engine, "v", "PRAGMA recursive_triggers = ON");
    // Whatever pooled connection the next callers get, none has those settings.
    for i in 0..8 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO t (v) VALUES ('row {i}')"),
        );
        assert_eq!(
            exec(&engine, "v", "PRAGMA foreign_keys").rows[0][0],
            foreign_keys
        );
        assert_eq!(
            exec(&engine, "v", "PRAGMA recursive_triggers").rows[0][0],
            Value::Integer(0)
        );
    }
    // A temporary trigger would fire for whoever used the connection next.
    exec(
        &engine,
        "v",
        "CREATE TEMP TRIGGER wipe AFTER INSERT ON main.t BEGIN DELETE FROM t; END",
    );
    for i in 0..8 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO t (v) VALUES ('more {i}')"),
        );
    }
    assert_eq!(count(&engine, "t"), 16);
    engine.close();
}

#[test]
fn pragmas_that_weaken_durability_or_belong_to_the_engine_are_refused() {
    let dir = TempDir::new("pragma-refused");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    for sql in [
        "PRAGMA synchronous = OFF",
        "PRAGMA main.synchronous = 0",
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA hard_heap_limit = 0",
        "PRAGMA temp_store = FILE",
        "PRAGMA schema_version = 7",
    ] {
        let error = try_exec(&engine, "v", sql, vec![]).unwrap_err();
        assert_eq!(error.code, ErrorCode::SqlError, "{sql}: {error}");
        assert!(error.message.contains("not authorized:"), "{sql}: {error}");
    }
    // Reading settings, asking about the schema and the database's own settings are fine.
    exec(&engine, "v", "PRAGMA synchronous");
    exec(&engine, "v", "PRAGMA table_info(t)");
    exec(&engine, "v", "PRAGMA integrity_check");
    exec(&engine, "v", "PRAGMA user_version = 5");
    assert_eq!(
        exec(&engine, "v", "PRAGMA user_version").rows[0][0],
        Value::Integer(5)
    );
    engine.close();
}

fn ids(values: &[i64]) -> Vec<Vec<Value>> {
    values.iter().map(|i| vec![Value::Integer(*i)]).collect()
}

#[test]
fn a_batch_takes_effect_entirely_or_not_at_all() {
    let dir = TempDir::new("batch");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let batch = |transaction_id: Option<String>| ExecuteRequest {
        sql: "INSERT INTO t (id) VALUES (?)".into(),
        param_sets: Some(ids(&[1, 2, 1, 4])),
        transaction_id,
        ..Default::default()
    };
    let error = engine.execute("v", &batch(None)).unwrap_err();
    assert_eq!(error.code, ErrorCode::SqlError, "{error}");
    assert!(
        error.message.contains("parameter set 3 of 4") && error.message.contains("UNIQUE"),
        "names the failing set: {error}"
    );
    assert_eq!(count(&engine, "t"), 0, "no set of the batch took effect");

    // In a transaction, the batch is undone and the transaction goes on.
    let tx = engine.begin("v").unwrap();
    exec_in(&engine, "v", &tx, "INSERT INTO t (id) VALUES (10)").unwrap();
    assert!(engine.execute("v", &batch(Some(tx.clone()))).is_err());
    engine
        .execute(
            "v",
            &ExecuteRequest {
                sql: "INSERT INTO t (id) VALUES (?)".into(),
                param_sets: Some(ids(&[1, 2])),
                transaction_id: Some(tx.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    engine.commit("v", &tx).unwrap();
    let rows = exec(&engine, "v", "SELECT id FROM t ORDER BY id").rows;
    assert_eq!(rows, ids(&[1, 2, 10]));
    engine.close();
}
