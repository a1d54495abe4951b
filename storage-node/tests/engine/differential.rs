//! The node's SQL results equal a plain SQLite file's, statement by statement, on random
//! workloads (several seeds), including transactions that commit or roll back.

use backtrack_storage_node::api::Value;
use rusqlite::Connection;

use crate::common::*;
use crate::workload::Workload;

fn plain_rows(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut statement = conn.prepare(sql)?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(
            (0..columns)
                .map(|i| value_of(row.get_ref(i).unwrap()))
                .collect(),
        );
    }
    Ok(out)
}

#[test]
fn sql_through_the_node_equals_a_plain_sqlite_file() {
    for seed in 1..=4 {
        let dir = TempDir::new("differential");
        let engine = open(&dir);
        engine.create_volume("v", 3600).unwrap();
        let plain = Connection::open(dir.0.join("plain.db")).unwrap();
        plain
            .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        let mut workload = Workload::new(seed);
        let mut statements = 0;
        for step in 0..500 {
            if workload.rng.chance(6) {
                // A transaction of a few statements, committed or rolled back on both sides.
                let tx = engine.begin("v").unwrap();
                plain.execute_batch("BEGIN").unwrap();
                for _ in 0..workload.rng.below(6) + 1 {
                    let sql = workload.statement();
                    if sql == "VACUUM" {
                        continue;
                    }
                    let ours = exec_in(&engine, "v", &tx, &sql);
                    let theirs = plain_rows(&plain, &sql);
                    assert_eq!(
                        ours.is_ok(),
                        theirs.is_ok(),
                        "seed {seed} step {step} in tx: {sql}\n{ours:?}\n{theirs:?}"
                    );
                    if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                        assert_eq!(ours.rows, theirs, "seed {seed} step {step}: {sql}");
                    }
                    statements += 1;
                }
                if workload.rng.chance(25) {
                    engine.rollback("v", &tx).unwrap();
                    plain.execute_batch("ROLLBACK").unwrap();
                } else {
                    engine.commit("v", &tx).unwrap();
                    plain.execute_batch("COMMIT").unwrap();
                }
            } else {
                let sql = workload.statement();
                let ours = try_exec(&engine, "v", &sql, vec![]);
                let theirs = plain_rows(&plain, &sql);
                assert_eq!(
                    ours.is_ok(),
                    theirs.is_ok(),
                    "seed {seed} step {step}: {sql}\n{ours:?}\n{theirs:?}"
                );
                if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                    assert_eq!(ours.rows, theirs, "seed {seed} step {step}: {sql}");
                }
                statements += 1;
            }
            if step % 50 == 49 {
                assert_eq!(
                    dump(&engine, "v"),
                    dump_plain(&plain),
                    "seed {seed} after step {step}"
                );
            }
        }
        assert!(statements > 500);
        assert_eq!(
            dump(&engine, "v"),
            dump_plain(&plain),
            "seed {seed} at the end"
        );
        integrity_ok(&engine, "v");
        // And the same after a restart.
        engine.close();
        drop(engine);
        let engine = open(&dir);
        assert_eq!(
            dump(&engine, "v"),
            dump_plain(&plain),
            "seed {seed} after restart"
        );
        integrity_ok(&engine, "v");
    }
}

const EIGHT_THOUSAND_BLOBS: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000) \
     INSERT INTO big (payload) SELECT randomblob(3000) FROM n";

#[test]
fn a_transaction_larger_than_the_page_cache_commits_and_rolls_back_whole() {
    let dir = TempDir::new("spill");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, payload BLOB)",
    );
    // About 24 MiB, three times the connection's page cache: SQLite spills pages mid-transaction.
    let tx = engine.begin("v").unwrap();
    exec_in(&engine, "v", &tx, EIGHT_THOUSAND_BLOBS).unwrap();
    engine.rollback("v", &tx).unwrap();
    assert_eq!(count(&engine, "v", "big"), 0);
    integrity_ok(&engine, "v");

    let tx = engine.begin("v").unwrap();
    exec_in(&engine, "v", &tx, EIGHT_THOUSAND_BLOBS).unwrap();
    engine.commit("v", &tx).unwrap();
    assert_eq!(count(&engine, "v", "big"), 8000);
    integrity_ok(&engine, "v");
    exec(&engine, "v", "DELETE FROM big WHERE id % 2 = 0");
    exec(&engine, "v", "VACUUM");
    assert_eq!(count(&engine, "v", "big"), 4000);
    integrity_ok(&engine, "v");
}

#[test]
fn statements_that_would_bypass_the_log_are_refused() {
    let dir = TempDir::new("policy");
    let engine = open(&dir);
    engine.create_volume("v", 60).unwrap();
    for sql in [
        "PRAGMA journal_mode = WAL",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA locking_mode = EXCLUSIVE",
        "PRAGMA page_size = 8192",
        "ATTACH DATABASE 'other.db' AS other",
        "BEGIN",
        "COMMIT",
        "SELECT 1; SELECT 2",
    ] {
        let refused = try_exec(&engine, "v", sql, vec![]).unwrap_err();
        assert!(!refused.message.is_empty(), "{sql}");
    }
    // Reading those settings is fine.
    let mode = exec(&engine, "v", "PRAGMA journal_mode");
    assert_eq!(mode.rows, vec![vec![Value::Text("memory".into())]]);
    assert!(try_exec(&engine, "v", "   ", vec![]).is_err());
}

/// Connections keep prepared statements: a repeated statement must still see every schema
/// change (made on its own connection or another) and a second statement is refused each time.
#[test]
fn repeated_statements_follow_schema_changes() {
    let dir = TempDir::new("statement-cache");
    let engine = open(&dir);
    engine.create_volume("v", 60).unwrap();
    exec(&engine, "v", "CREATE TABLE t (a INTEGER)");
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    let names = |result: &backtrack_storage_node::api::ExecuteResult| -> Vec<String> {
        result.columns.iter().map(|c| c.name.clone()).collect()
    };
    let before = exec(&engine, "v", "SELECT * FROM t");
    assert_eq!(names(&before), ["a"]);
    assert_eq!(before.rows, vec![vec![Value::Integer(1)]]);

    exec(&engine, "v", "ALTER TABLE t ADD COLUMN b TEXT");
    let after = exec(&engine, "v", "SELECT * FROM t");
    assert_eq!(names(&after), ["a", "b"]);
    assert_eq!(after.rows, vec![vec![Value::Integer(1), Value::Null(true)]]);

    // The same change made in a transaction, on another connection.
    let tx = engine.begin("v").unwrap();
    exec_in(
        &engine,
        "v",
        &tx,
        "ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 7",
    )
    .unwrap();
    engine.commit("v", &tx).unwrap();
    let last = exec(&engine, "v", "SELECT * FROM t");
    assert_eq!(names(&last), ["a", "b", "c"]);
    assert_eq!(
        last.rows,
        vec![vec![
            Value::Integer(1),
            Value::Null(true),
            Value::Integer(7)
        ]]
    );

    for _ in 0..3 {
        assert!(try_exec(&engine, "v", "SELECT 1; SELECT 2", vec![]).is_err());
        assert_eq!(exec(&engine, "v", "SELECT 1 -- once").rows.len(), 1);
    }
}

#[test]
fn concurrent_writers_on_one_volume_lose_nothing() {
    let dir = TempDir::new("writers");
    let engine = open(&dir);
    engine.create_volume("v", 60).unwrap();
    exec(&engine, "v", "CREATE TABLE t (writer INTEGER, n INTEGER)");
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for n in 0..100 {
                    let sql = format!("INSERT INTO t VALUES ({w}, {n})");
                    // A writer can find the writer lock taken past the busy timeout; retry.
                    while try_exec(&engine, "v", &sql, vec![]).is_err() {}
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count(&engine, "v", "t"), 400);
    integrity_ok(&engine, "v");
}

#[test]
fn a_reader_in_a_transaction_keeps_its_snapshot_while_others_commit() {
    let dir = TempDir::new("snapshot");
    let engine = open(&dir);
    engine.create_volume("v", 60).unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    let tx = engine.begin("v").unwrap();
    let before = exec_in(&engine, "v", &tx, "SELECT count(*) FROM t").unwrap();
    exec(&engine, "v", "INSERT INTO t VALUES (2)");
    let during = exec_in(&engine, "v", &tx, "SELECT count(*) FROM t").unwrap();
    assert_eq!(before.rows, during.rows);
    // Its snapshot is stale now, so it may not write: the writer would lose the other's row.
    assert!(exec_in(&engine, "v", &tx, "INSERT INTO t VALUES (3)").is_err());
    engine.rollback("v", &tx).unwrap();
    assert_eq!(count(&engine, "v", "t"), 2);
}
