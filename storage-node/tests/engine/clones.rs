//! Clones: a volume that starts as `state(T)` of another and shares its pages. A clone at T
//! equals what a reader saw at T; writes on either side stay on their side; the clone has its
//! own window and backtracks; it stays exact while its source folds (its window, a window of
//! 0, the log budget), when its source is deleted, and across restarts; a clone of a clone
//! works; a full copy shares nothing; instants outside the source's window are refused.

use std::sync::Arc;

use backtrack_storage_node::api::{CloneSource, ErrorCode};
use backtrack_storage_node::engine::{Engine, EngineConfig};

use crate::common::*;
use crate::workload::Workload;

fn clone_at(engine: &Engine, id: &str, source: &str, at_us: i64) {
    engine
        .create_clone(id, 3600, &source_at(source, at_us, false))
        .unwrap_or_else(|e| panic!("clone {id} of {source}: {e}"));
}

fn source_at(source: &str, at_us: i64, full_copy: bool) -> CloneSource {
    CloneSource {
        volume_id: source.into(),
        at_us,
        full_copy,
    }
}

/// A source with a random history, and what a reader saw at some instants of it.
fn source_with_history(engine: &Engine, seed: u64, steps: u64) -> Vec<(i64, Dump)> {
    engine.create_volume("src", 3600).unwrap();
    let mut workload = Workload::new(seed);
    let mut seen = Vec::new();
    for step in 0..steps {
        let _ = try_exec(engine, "src", &workload.statement(), Vec::new());
        if step % 50 == 25 {
            seen.push((engine.now_us(), dump(engine, "src")));
        }
    }
    seen
}

#[test]
fn a_clone_at_t_equals_what_a_reader_saw_at_t_and_writes_stay_apart() {
    for seed in 1..=3 {
        let dir = TempDir::new("clones");
        let engine = open(&dir);
        let seen = source_with_history(&engine, seed, 300);
        let live = dump(&engine, "src");
        for (i, (at, recorded)) in seen.iter().enumerate() {
            let id = format!("c{i}");
            clone_at(&engine, &id, "src", *at);
            assert_eq!(&dump(&engine, &id), recorded, "seed {seed} clone {i}");
            integrity_ok(&engine, &id);
            let figures = engine.figures(&id).unwrap();
            let of = figures
                .clone_of
                .clone()
                .expect("a clone says what it is a clone of");
            assert_eq!(
                (of.volume_id.as_str(), of.at_us, of.shared),
                ("src", *at, true)
            );
            // No page was copied to make it.
            assert!(figures.bytes_on_disk < 64 << 10, "{figures:?}");
        }
        // Writes on a clone are its own; the source and the other clones do not see them.
        exec(&engine, "c0", "CREATE TABLE mine (x)");
        exec(&engine, "c0", "INSERT INTO mine VALUES (1), (2)");
        assert_eq!(count(&engine, "c0", "mine"), 2);
        assert_eq!(dump(&engine, "src"), live);
        assert_eq!(dump(&engine, "c1"), seen[1].1);
        // And the source's later writes are not in the clones.
        exec(&engine, "src", "CREATE TABLE later (x)");
        assert_eq!(dump(&engine, "c1"), seen[1].1);
        integrity_ok(&engine, "c0");
    }
}

#[test]
fn a_table_dropped_after_t_is_in_the_clone() {
    let dir = TempDir::new("clones-drop");
    let engine = open(&dir);
    engine.create_volume("src", 3600).unwrap();
    exec(
        &engine,
        "src",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)",
    );
    exec(
        &engine,
        "src",
        "INSERT INTO orders (item) VALUES ('apple'), ('pear')",
    );
    let before = engine.now_us();
    exec(&engine, "src", "DROP TABLE orders");
    clone_at(&engine, "c", "src", before);
    assert_eq!(count(&engine, "c", "orders"), 2);
    assert!(try_exec(&engine, "src", "SELECT * FROM orders", Vec::new()).is_err());
    integrity_ok(&engine, "c");
}

#[test]
fn a_clone_backtracks_within_its_own_window() {
    let dir = TempDir::new("clones-backtrack");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 7, 200);
    let (at, recorded) = &seen[2];
    clone_at(&engine, "c", "src", *at);
    let created = engine.figures("c").unwrap();
    // The clone's history starts at the clone, not at the source's.
    assert!(created.earliest_restorable_us.unwrap() > *at, "{created:?}");
    exec(&engine, "c", "CREATE TABLE mine (x)");
    let middle = (engine.now_us(), dump(&engine, "c"));
    exec(&engine, "c", "INSERT INTO mine VALUES (1)");
    backtrack(&engine, "c", middle.0).unwrap();
    assert_eq!(dump(&engine, "c"), middle.1);
    // Back to its first instant: the source's state at T.
    backtrack(&engine, "c", created.earliest_restorable_us.unwrap()).unwrap();
    assert_eq!(&dump(&engine, "c"), recorded);
    // Before the clone existed is outside its window.
    let err = backtrack(&engine, "c", *at).unwrap_err();
    assert_eq!(err.code, ErrorCode::BeforeEarliest, "{err}");
    integrity_ok(&engine, "c");
}

#[test]
fn a_clone_stays_exact_while_its_source_folds_everything_away() {
    let dir = TempDir::new("clones-fold");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 11, 300);
    for (i, (at, _)) in seen.iter().enumerate() {
        clone_at(&engine, &format!("c{i}"), "src", *at);
    }
    // The source stops keeping history: its next fold goes to now, through every T.
    engine.modify_volume("src", 0).unwrap();
    let mut workload = Workload::new(99);
    for round in 0..3 {
        for _ in 0..100 {
            let _ = try_exec(&engine, "src", &workload.statement(), Vec::new());
        }
        assert!(engine.maintain().folds > 0, "round {round}");
    }
    assert_eq!(engine.figures("src").unwrap().change_records_stored, 0);
    for (i, (_, recorded)) in seen.iter().enumerate() {
        let id = format!("c{i}");
        assert_eq!(&dump(&engine, &id), recorded, "clone {i}");
        integrity_ok(&engine, &id);
    }
    // The pages the source changed were copied into the clones: each holds its share.
    let figures = engine.figures("c0").unwrap();
    assert!(figures.bytes_on_disk > 0, "{figures:?}");
}

#[test]
fn a_clone_stays_exact_when_the_log_budget_forces_its_source_to_fold() {
    const SEGMENT: u64 = 64 << 10;
    let dir = TempDir::new("clones-budget");
    let mut config: EngineConfig = config(&dir);
    config.segment_bytes = SEGMENT;
    config.log_budget_bytes = 4 * SEGMENT;
    let engine = Engine::open(config).unwrap();
    engine.create_volume("src", 3600).unwrap();
    exec(&engine, "src", "CREATE TABLE t (n INTEGER, pad BLOB)");
    for i in 0..40 {
        exec(
            &engine,
            "src",
            &format!("INSERT INTO t VALUES ({i}, randomblob(300))"),
        );
    }
    let at = engine.now_us();
    let recorded = dump(&engine, "src");
    clone_at(&engine, "c", "src", at);
    let mut forced = 0;
    for i in 40..1_000 {
        exec(
            &engine,
            "src",
            &format!("UPDATE t SET pad = randomblob(300) WHERE n = {}", i % 40),
        );
        exec(
            &engine,
            "src",
            &format!("INSERT INTO t VALUES ({i}, randomblob(300))"),
        );
        if i % 50 == 0 {
            forced += engine.maintain().forced_folds;
        }
    }
    assert!(forced > 0, "the budget never forced a fold");
    let source = engine.figures("src").unwrap();
    assert!(source.earliest_restorable_us.unwrap() > at, "{source:?}");
    assert_eq!(dump(&engine, "c"), recorded);
    integrity_ok(&engine, "c");
}

#[test]
fn deleting_the_source_leaves_its_clones_exact_and_writable() {
    let dir = TempDir::new("clones-delete");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 5, 250);
    let (at, recorded) = &seen[1];
    clone_at(&engine, "c", "src", *at);
    clone_at(&engine, "cc", "c", engine.now_us());
    exec(&engine, "c", "CREATE TABLE mine (x)");
    let clone_now = dump(&engine, "c");
    engine.delete_volume("src").unwrap();
    assert!(engine.figures("src").is_err());
    assert_eq!(dump(&engine, "c"), clone_now);
    assert!(!engine.figures("c").unwrap().clone_of.unwrap().shared);
    assert_eq!(&dump(&engine, "cc"), recorded);
    exec(&engine, "c", "INSERT INTO mine VALUES (1)");
    assert_eq!(count(&engine, "c", "mine"), 1);
    integrity_ok(&engine, "c");
    integrity_ok(&engine, "cc");
    // Still so after a restart.
    engine.close();
    drop(engine);
    let engine = open(&dir);
    assert_eq!(count(&engine, "c", "mine"), 1);
    assert_eq!(&dump(&engine, "cc"), recorded);
}

#[test]
fn a_clone_of_a_clone_reads_through_both() {
    let dir = TempDir::new("clones-chain");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 3, 200);
    let (at, _) = &seen[3];
    clone_at(&engine, "c", "src", *at);
    exec(&engine, "c", "CREATE TABLE mine (x)");
    exec(&engine, "c", "INSERT INTO mine VALUES (1)");
    let t2 = engine.now_us();
    let c_at_t2 = dump(&engine, "c");
    exec(&engine, "c", "INSERT INTO mine VALUES (2)");
    clone_at(&engine, "cc", "c", t2);
    assert_eq!(dump(&engine, "cc"), c_at_t2);
    // Both fold away everything they can; the grandchild stays exact.
    engine.modify_volume("src", 0).unwrap();
    engine.modify_volume("c", 0).unwrap();
    exec(&engine, "src", "CREATE TABLE later (x)");
    exec(&engine, "c", "INSERT INTO mine VALUES (3)");
    engine.maintain();
    assert_eq!(dump(&engine, "cc"), c_at_t2);
    assert_eq!(count(&engine, "c", "mine"), 3);
    assert!(dump(&engine, "c").iter().any(|(name, _)| name == "mine"));
    integrity_ok(&engine, "cc");
}

#[test]
fn a_restart_keeps_clones_and_their_sharing() {
    let dir = TempDir::new("clones-restart");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 13, 250);
    let (at, recorded) = seen[2].clone();
    clone_at(&engine, "c", "src", at);
    exec(&engine, "c", "CREATE TABLE mine (x)");
    let clone_then = dump(&engine, "c");
    engine.close();
    drop(engine);
    let engine = open(&dir);
    assert_eq!(dump(&engine, "c"), clone_then);
    assert!(engine.figures("c").unwrap().clone_of.unwrap().shared);
    // The source folds after the restart: the clone, linked again, gets its copies.
    engine.modify_volume("src", 0).unwrap();
    let mut workload = Workload::new(77);
    for _ in 0..100 {
        let _ = try_exec(&engine, "src", &workload.statement(), Vec::new());
    }
    engine.maintain();
    assert_eq!(dump(&engine, "c"), clone_then);
    engine.close();
    drop(engine);
    let engine = open(&dir);
    assert_eq!(dump(&engine, "c"), clone_then);
    engine
        .backtrack(
            "c",
            &backtrack_request(engine.figures("c").unwrap().earliest_restorable_us.unwrap()),
        )
        .unwrap();
    assert_eq!(dump(&engine, "c"), recorded);
    integrity_ok(&engine, "c");
}

fn backtrack_request(to_us: i64) -> backtrack_storage_node::api::BacktrackRequest {
    backtrack_storage_node::api::BacktrackRequest {
        backtrack_id: uuid::Uuid::new_v4(),
        to_us,
        clamp_to_earliest: false,
        force: false,
    }
}

#[test]
fn a_full_copy_shares_nothing() {
    let dir = TempDir::new("clones-full");
    let engine = open(&dir);
    let seen = source_with_history(&engine, 17, 200);
    let (at, recorded) = &seen[3];
    let figures = engine
        .create_clone("copy", 0, &source_at("src", *at, true))
        .unwrap();
    assert!(!figures.clone_of.unwrap().shared);
    assert_eq!(&dump(&engine, "copy"), recorded);
    // Asking again changes nothing.
    engine
        .create_clone("copy", 0, &source_at("src", *at, true))
        .unwrap();
    engine.delete_volume("src").unwrap();
    assert_eq!(&dump(&engine, "copy"), recorded);
    integrity_ok(&engine, "copy");
}

#[test]
fn instants_outside_the_source_window_and_unknown_sources_are_refused() {
    let dir = TempDir::new("clones-refused");
    let engine: Arc<Engine> = open(&dir);
    engine.create_volume("src", 3600).unwrap();
    engine.create_volume("flat", 0).unwrap();
    let created = engine.figures("src").unwrap().created_at_us;
    let refused = |id: &str, source: &str, at: i64| {
        engine
            .create_clone(id, 3600, &source_at(source, at, false))
            .unwrap_err()
            .code
    };
    assert_eq!(
        refused("a", "src", engine.now_us() + 60_000_000),
        ErrorCode::TimeInFuture
    );
    assert_eq!(
        refused("b", "src", created - 1_000_000),
        ErrorCode::BeforeEarliest
    );
    assert_eq!(
        refused("c", "flat", engine.now_us()),
        ErrorCode::BacktrackDisabled
    );
    assert_eq!(
        refused("d", "nowhere", engine.now_us()),
        ErrorCode::VolumeNotFound
    );
    // Nothing was left behind.
    for id in ["a", "b", "c", "d"] {
        assert!(engine.figures(id).is_err(), "{id}");
    }
}
