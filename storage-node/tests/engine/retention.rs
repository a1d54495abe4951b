//! Retention: history older than the window is folded into the base image and its log
//! segments deleted; a log budget bounds the disk and shrinks the actual window; every state
//! still inside the window stays exact through folds, backtracks and restarts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backtrack_storage_node::engine::{Engine, EngineConfig};

use crate::common::*;
use crate::workload::Workload;

const SEGMENT: u64 = 64 << 10;

fn small_log(dir: &TempDir, budget: u64) -> Arc<Engine> {
    let mut config: EngineConfig = config(dir);
    config.segment_bytes = SEGMENT;
    config.log_budget_bytes = budget;
    Engine::open(config).unwrap()
}

fn insert_rows(engine: &Engine, from: i64, n: i64) {
    for i in from..from + n {
        exec(
            engine,
            "v",
            &format!("INSERT INTO t (n, pad) VALUES ({i}, randomblob(300))"),
        );
    }
}

#[test]
fn history_older_than_the_window_is_folded_and_its_segments_deleted() {
    let dir = TempDir::new("window");
    let engine = small_log(&dir, 1 << 30);
    engine.create_volume("v", 1).unwrap();
    exec(&engine, "v", "CREATE TABLE t (n INTEGER, pad BLOB)");
    let started = Instant::now();
    let mut written = 0;
    let mut most_segments = 0;
    while started.elapsed() < Duration::from_secs(3) {
        insert_rows(&engine, written, 50);
        written += 50;
        engine.maintain();
        most_segments = most_segments.max(engine.log().segments().len());
    }
    let figures = engine.figures("v").unwrap();
    assert!(
        engine
            .log()
            .stats()
            .records
            .load(std::sync::atomic::Ordering::Relaxed)
            > 200
    );
    // Three seconds of writes, a one-second window: most history is gone from the log.
    assert!(
        figures.change_records_stored < figures.change_records_created / 2,
        "{figures:?}"
    );
    assert!(engine.log().segments().len() < most_segments + 2);
    assert_eq!(figures.actual_window_secs, 1);
    assert_eq!(count(&engine, "v", "t"), written);
    integrity_ok(&engine, "v");

    // What is inside the window is still exact.
    let snapshot = (engine.now_us(), dump(&engine, "v"));
    insert_rows(&engine, written, 20);
    backtrack(&engine, "v", snapshot.0).unwrap();
    assert_eq!(dump(&engine, "v"), snapshot.1);
    engine.close();
    drop(engine);
    let engine = small_log(&dir, 1 << 30);
    assert_eq!(dump(&engine, "v"), snapshot.1);
    integrity_ok(&engine, "v");
}

#[test]
fn a_small_log_budget_bounds_the_disk_and_shrinks_the_actual_window() {
    let dir = TempDir::new("budget");
    let budget = 4 * SEGMENT;
    let engine = small_log(&dir, budget);
    let created = engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (n INTEGER, pad BLOB)");
    let started = Instant::now();
    let mut written = 0;
    let mut largest_log = 0;
    while started.elapsed() < Duration::from_secs(2) {
        insert_rows(&engine, written, 20);
        written += 20;
        engine.maintain();
        largest_log = largest_log.max(engine.log().total_bytes());
    }
    // Far more was written than the budget holds, yet the log stayed within it.
    let created_records = engine.figures("v").unwrap().change_records_created;
    assert!(created_records * 4096 > 4 * budget, "{created_records}");
    assert!(largest_log <= budget, "{largest_log} > {budget}");

    let figures = engine.figures("v").unwrap();
    assert!(figures.actual_window_secs < 3600, "{figures:?}");
    let earliest = figures.earliest_restorable_us.unwrap();
    assert!(
        earliest > created.earliest_restorable_us.unwrap(),
        "the earliest time moved forward"
    );
    assert!(figures.bytes_on_disk < 4 << 20, "{figures:?}");

    // Before the new earliest time: refused; after it: exact.
    assert!(backtrack(&engine, "v", earliest - 1).is_err());
    let snapshot = (engine.now_us(), dump(&engine, "v"));
    insert_rows(&engine, written, 5);
    backtrack(&engine, "v", snapshot.0).unwrap();
    assert_eq!(dump(&engine, "v"), snapshot.1);
    assert_eq!(count(&engine, "v", "t"), written);
    integrity_ok(&engine, "v");
}

#[test]
fn a_window_of_zero_keeps_no_history() {
    let dir = TempDir::new("zero");
    let engine = small_log(&dir, 1 << 30);
    engine.create_volume("v", 0).unwrap();
    exec(&engine, "v", "CREATE TABLE t (n INTEGER, pad BLOB)");
    insert_rows(&engine, 0, 300);
    engine.maintain();
    let figures = engine.figures("v").unwrap();
    assert_eq!(figures.change_records_stored, 0, "{figures:?}");
    assert_eq!(figures.earliest_restorable_us, None);
    assert_eq!(figures.actual_window_secs, 0);
    assert_eq!(count(&engine, "v", "t"), 300);
    engine.close();
    drop(engine);
    let engine = small_log(&dir, 1 << 30);
    assert_eq!(count(&engine, "v", "t"), 300);
    integrity_ok(&engine, "v");
    // Turning the window on starts history now.
    let before = engine.now_us();
    engine.modify_volume("v", 60).unwrap();
    let earliest = engine.figures("v").unwrap().earliest_restorable_us.unwrap();
    assert!(earliest >= before);
}

#[test]
fn states_inside_the_window_stay_exact_across_folds_and_backtracks() {
    for seed in 21..=22 {
        let dir = TempDir::new("folds");
        let mut engine = small_log(&dir, 1 << 30);
        engine.create_volume("v", 1).unwrap();
        let mut workload = Workload::new(seed);
        let mut snapshots: Vec<(i64, Dump)> = Vec::new();
        let started = Instant::now();
        let mut round = 0;
        while started.elapsed() < Duration::from_secs(4) {
            round += 1;
            for _ in 0..15 {
                let sql = workload.statement();
                let _ = try_exec(&engine, "v", &sql, vec![]);
            }
            snapshots.push((engine.now_us(), dump(&engine, "v")));
            engine.maintain();
            let earliest = engine.figures("v").unwrap().earliest_restorable_us.unwrap();
            snapshots.retain(|(t, _)| *t > earliest + 100_000);
            if round % 2 == 0 && !snapshots.is_empty() {
                let i = workload.rng.below(snapshots.len() as u64) as usize;
                let (time, expected) = snapshots[i].clone();
                backtrack(&engine, "v", time).unwrap();
                assert_eq!(dump(&engine, "v"), expected, "seed {seed} round {round}");
            }
            if round % 7 == 0 {
                engine.close();
                drop(engine);
                engine = small_log(&dir, 1 << 30);
            }
            std::thread::sleep(Duration::from_millis(40));
        }
        integrity_ok(&engine, "v");
        assert!(
            engine.figures("v").unwrap().change_records_created
                > engine.figures("v").unwrap().change_records_stored
        );
    }
}

#[test]
fn a_fold_never_changes_what_an_open_read_transaction_reads() {
    let dir = TempDir::new("fold-reader");
    let engine = small_log(&dir, 1 << 30);
    // No history at all: every pass folds everything up to now.
    engine.create_volume("v", 0).unwrap();
    exec(&engine, "v", "CREATE TABLE t (n INTEGER, pad BLOB)");
    for i in 0..400 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO t VALUES ({i}, zeroblob(300))"),
        );
    }
    engine.maintain();
    let tx = engine.begin("v").unwrap();
    // The transaction reads one row: its snapshot is fixed, most pages not read yet.
    exec_in(&engine, "v", &tx, "SELECT n FROM t WHERE rowid = 1").unwrap();
    exec(&engine, "v", "UPDATE t SET n = n + 1000000");
    engine.maintain();
    let sum = exec_in(&engine, "v", &tx, "SELECT sum(n) FROM t").unwrap();
    assert_eq!(
        sum.rows[0][0],
        backtrack_storage_node::api::Value::Integer((0..400).sum()),
        "the transaction saw a fold of later writes"
    );
    engine.rollback("v", &tx).unwrap();
}
