//! Backtracks: exact snapshots at random earlier times, forward again, the classic mistakes
//! undone, open transactions, the earliest restorable time, idempotency, and restarts.

use std::time::Duration;

use backtrack_storage_node::api::{BacktrackRequest, ErrorCode};
use uuid::Uuid;

use crate::common::*;
use crate::workload::Workload;

/// Runs `n` workload statements (some in transactions); failures are part of the workload.
fn run(engine: &backtrack_storage_node::engine::Engine, workload: &mut Workload, n: usize) {
    for _ in 0..n {
        let sql = workload.statement();
        let _ = try_exec(engine, "v", &sql, vec![]);
    }
}

#[test]
fn backtracks_to_random_earlier_times_restore_exact_snapshots_and_forward_again() {
    for seed in 11..=13 {
        let dir = TempDir::new("backtracks");
        let mut engine = open(&dir);
        engine.create_volume("v", 3600).unwrap();
        let mut workload = Workload::new(seed);
        let mut snapshots: Vec<(i64, Dump)> = Vec::new();
        for round in 0..14 {
            run(&engine, &mut workload, 25);
            snapshots.push((engine.now_us(), dump(&engine, "v")));
            if round % 3 == 2 {
                let i = workload.rng.below(snapshots.len() as u64) as usize;
                let (time, expected) = snapshots[i].clone();
                backtrack(&engine, "v", time).unwrap();
                assert_eq!(
                    dump(&engine, "v"),
                    expected,
                    "seed {seed} round {round}: backtrack to snapshot {i}"
                );
                integrity_ok(&engine, "v");
            }
        }
        // Back and forth among every recorded instant, including ones a backtrack undid.
        for check in 0..12 {
            if check == 6 {
                engine.close();
                drop(engine);
                engine = open(&dir);
            }
            let i = workload.rng.below(snapshots.len() as u64) as usize;
            let (time, expected) = &snapshots[i];
            backtrack(&engine, "v", *time).unwrap();
            assert_eq!(
                &dump(&engine, "v"),
                expected,
                "seed {seed} check {check}: snapshot {i}"
            );
            integrity_ok(&engine, "v");
        }
    }
}

#[test]
fn a_delete_without_where_and_a_drop_table_are_undone_and_redone() {
    let dir = TempDir::new("mistakes");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)",
    );
    exec(
        &engine,
        "v",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
    );
    for i in 0..500 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO orders (item) VALUES ('item {i}')"),
        );
    }
    exec(
        &engine,
        "v",
        "INSERT INTO customers (name) VALUES ('ada'), ('grace')",
    );
    let before = engine.now_us();
    exec(&engine, "v", "DELETE FROM orders");
    let after_delete = engine.now_us();
    exec(&engine, "v", "DROP TABLE customers");

    backtrack(&engine, "v", before).unwrap();
    assert_eq!(count(&engine, "v", "orders"), 500);
    assert_eq!(count(&engine, "v", "customers"), 2);
    integrity_ok(&engine, "v");

    // Forward again: to after the DELETE but before the DROP.
    backtrack(&engine, "v", after_delete).unwrap();
    assert_eq!(count(&engine, "v", "orders"), 0);
    assert_eq!(count(&engine, "v", "customers"), 2);

    // The volume goes on from there.
    exec(&engine, "v", "INSERT INTO orders (item) VALUES ('new')");
    assert_eq!(count(&engine, "v", "orders"), 1);
    backtrack(&engine, "v", before).unwrap();
    assert_eq!(count(&engine, "v", "orders"), 500);
}

#[test]
fn an_open_transaction_blocks_a_backtrack_unless_forced_and_cannot_commit_after_it() {
    let dir = TempDir::new("open-tx");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    let target = engine.now_us();
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    let tx = engine.begin("v").unwrap();
    exec_in(&engine, "v", &tx, "INSERT INTO t VALUES (2)").unwrap();

    let refused = backtrack(&engine, "v", target).unwrap_err();
    assert_eq!(refused.code, ErrorCode::OpenTransactions);
    assert_eq!(engine.figures("v").unwrap().open_transactions, 1);

    let outcome = engine
        .backtrack(
            "v",
            &BacktrackRequest {
                backtrack_id: Uuid::new_v4(),
                to_us: target,
                clamp_to_earliest: false,
                force: true,
            },
        )
        .unwrap();
    assert_eq!(outcome.rolled_back_transactions, 1);
    assert_eq!(
        engine.commit("v", &tx).unwrap_err().code,
        ErrorCode::TransactionNotFound
    );
    assert_eq!(
        exec_in(&engine, "v", &tx, "SELECT 1").unwrap_err().code,
        ErrorCode::TransactionNotFound
    );
    assert_eq!(count(&engine, "v", "t"), 0);
    assert_eq!(engine.figures("v").unwrap().open_transactions, 0);
}

#[test]
fn times_before_the_earliest_or_in_the_future_are_refused_or_clamped() {
    let dir = TempDir::new("earliest");
    let engine = open(&dir);
    let created = engine.create_volume("v", 3600).unwrap();
    let earliest = created.earliest_restorable_us.unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    exec(&engine, "v", "INSERT INTO t VALUES (1)");

    assert_eq!(
        backtrack(&engine, "v", earliest - 1).unwrap_err().code,
        ErrorCode::BeforeEarliest
    );
    assert_eq!(
        backtrack(&engine, "v", engine.now_us() + 60_000_000)
            .unwrap_err()
            .code,
        ErrorCode::TimeInFuture
    );
    let clamped = engine
        .backtrack(
            "v",
            &BacktrackRequest {
                backtrack_id: Uuid::new_v4(),
                to_us: earliest - 3_600_000_000,
                clamp_to_earliest: true,
                force: false,
            },
        )
        .unwrap();
    assert_eq!(clamped.backtrack_to_us, earliest);
    // The state at creation: no table at all.
    assert!(try_exec(&engine, "v", "SELECT * FROM t", vec![]).is_err());

    engine.create_volume("off", 0).unwrap();
    assert_eq!(
        backtrack(&engine, "off", engine.now_us()).unwrap_err().code,
        ErrorCode::BacktrackDisabled
    );
}

#[test]
fn a_backtrack_happens_once_per_id() {
    let dir = TempDir::new("idempotent");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    let target = engine.now_us();
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    let request = BacktrackRequest {
        backtrack_id: Uuid::new_v4(),
        to_us: target,
        clamp_to_earliest: false,
        force: false,
    };
    let first = engine.backtrack("v", &request).unwrap();
    exec(&engine, "v", "INSERT INTO t VALUES (2)");
    // A retry (say, after the control plane restarted) changes nothing and answers the same.
    let again = engine.backtrack("v", &request).unwrap();
    assert_eq!(first, again);
    assert_eq!(count(&engine, "v", "t"), 1);
    // Also after a restart of the node.
    engine.close();
    drop(engine);
    let engine = open(&dir);
    assert_eq!(engine.backtrack("v", &request).unwrap(), first);
    assert_eq!(count(&engine, "v", "t"), 1);
    assert_eq!(engine.figures("v").unwrap().backtracks_applied, 1);
    assert_eq!(engine.backtracks("v").unwrap().backtracks, vec![first]);
}

#[test]
fn sql_waits_out_a_backtrack_or_is_told_the_database_is_unavailable() {
    let dir = TempDir::new("switch");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    let target = engine.now_us();
    let writer = {
        let engine = engine.clone();
        std::thread::spawn(move || {
            let mut unavailable = 0;
            for i in 0..2000 {
                match try_exec(&engine, "v", &format!("INSERT INTO t VALUES ({i})"), vec![]) {
                    Ok(_) => {}
                    Err(e) if e.code == ErrorCode::Unavailable => unavailable += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            unavailable
        })
    };
    std::thread::sleep(Duration::from_millis(30));
    for _ in 0..5 {
        backtrack(&engine, "v", target).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let _unavailable = writer.join().unwrap();
    integrity_ok(&engine, "v");
}
