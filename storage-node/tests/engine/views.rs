//! Views: the volume as it was at an instant, read-only, beside the live database. A view at T
//! equals what a reader saw at T (recorded then), across transactions, DDL (a table dropped
//! after T included), VACUUM and backtracks; it refuses writes; it is refused outside the
//! window; and while it is open no fold (the window's or the log budget's) takes away what it
//! reads.

use backtrack_storage_node::api::ErrorCode;
use backtrack_storage_node::engine::timeline::Lsn;
use backtrack_storage_node::engine::{Engine, EngineConfig};
use rusqlite::Connection;

use crate::common::*;
use crate::workload::Workload;

fn view_integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

#[test]
fn a_view_at_t_equals_what_a_reader_saw_at_t() {
    for seed in 1..=4 {
        let dir = TempDir::new("views");
        let engine = open(&dir);
        engine.create_volume("v", 3600).unwrap();
        let mut workload = Workload::new(seed);
        let mut seen = Vec::new();
        for step in 0..400 {
            let sql = workload.statement();
            let _ = try_exec(&engine, "v", &sql, Vec::new());
            if step % 37 == 0 {
                seen.push((engine.now_us(), dump(&engine, "v")));
            }
            if step == 250 {
                // Back to an earlier state, then on: the views before and after it hold.
                let (to, _) = seen[seen.len() / 2].clone();
                backtrack(&engine, "v", to).unwrap();
                seen.push((engine.now_us(), dump(&engine, "v")));
                // The workload's idea of the schema is now wrong; a new one starts.
                workload = Workload::new(seed * 100 + step);
            }
        }
        for (at, recorded) in &seen {
            let view = engine.view_at("v", *at).unwrap();
            assert_eq!(
                &dump_plain(view.connection()),
                recorded,
                "seed {seed} at {at}"
            );
            assert_eq!(
                view_integrity(view.connection()),
                "ok",
                "seed {seed} at {at}"
            );
        }
    }
}

#[test]
fn a_table_dropped_after_t_is_in_the_view_and_the_live_database_goes_on() {
    let dir = TempDir::new("views-drop");
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
        "INSERT INTO orders (item) VALUES ('apple'), ('pear')",
    );
    let before = engine.now_us();
    exec(&engine, "v", "DROP TABLE orders");
    let view = engine.view_at("v", before).unwrap();
    // The live database writes while the view is open; the view does not see it.
    exec(&engine, "v", "CREATE TABLE other (x)");
    exec(&engine, "v", "INSERT INTO other VALUES (1)");
    let items: Vec<String> = view
        .connection()
        .prepare("SELECT item FROM orders ORDER BY id")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(items, ["apple", "pear"]);
    assert!(view.connection().prepare("SELECT * FROM other").is_err());
    assert!(try_exec(&engine, "v", "SELECT * FROM orders", Vec::new()).is_err());
    assert_eq!(count(&engine, "v", "other"), 1);
}

#[test]
fn a_view_refuses_writes_and_changes_nothing() {
    let dir = TempDir::new("views-readonly");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(&engine, "v", "CREATE TABLE t (x)");
    exec(&engine, "v", "INSERT INTO t VALUES (1)");
    let at = engine.now_us();
    let view = engine.view_at("v", at).unwrap();
    for sql in [
        "INSERT INTO t VALUES (2)",
        "DELETE FROM t",
        "CREATE TABLE u (y)",
        "DROP TABLE t",
        "PRAGMA query_only = OFF; INSERT INTO t VALUES (3)",
    ] {
        assert!(view.connection().execute_batch(sql).is_err(), "{sql}");
    }
    drop(view);
    assert_eq!(count(&engine, "v", "t"), 1);
    assert_eq!(
        dump_plain(engine.view_at("v", at).unwrap().connection()),
        dump(&engine, "v")
    );
}

#[test]
fn a_view_outside_the_window_or_in_the_future_is_refused() {
    let dir = TempDir::new("views-refused");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    engine.create_volume("none", 0).unwrap();
    let created = engine.figures("v").unwrap().created_at_us;
    let code = |r: Result<_, backtrack_storage_node::engine::volume::VolumeError>| {
        r.map(|_| ()).unwrap_err().code
    };
    assert_eq!(
        code(engine.view_at("v", engine.now_us() + 60_000_000)),
        ErrorCode::TimeInFuture
    );
    assert_eq!(
        code(engine.view_at("v", created - 1)),
        ErrorCode::BeforeEarliest
    );
    assert_eq!(
        code(engine.view_at("none", engine.now_us())),
        ErrorCode::BacktrackDisabled
    );
    assert_eq!(
        code(engine.view_at("nosuch", engine.now_us())),
        ErrorCode::VolumeNotFound
    );
}

fn small_log(dir: &TempDir) -> std::sync::Arc<Engine> {
    let mut config: EngineConfig = config(dir);
    config.segment_bytes = 64 << 10;
    Engine::open(config).unwrap()
}

#[test]
fn an_open_view_holds_back_the_folds_of_the_window_and_of_the_log_budget() {
    let dir = TempDir::new("views-pinned");
    let engine = small_log(&dir);
    engine.create_volume("v", 1).unwrap();
    exec(&engine, "v", "CREATE TABLE t (n INTEGER, pad BLOB)");
    for i in 0..200 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO t VALUES ({i}, randomblob(500))"),
        );
    }
    let at = engine.now_us();
    let recorded = dump(&engine, "v");
    let view = engine.view_at("v", at).unwrap();
    exec(&engine, "v", "DELETE FROM t WHERE n % 2 = 0");
    for i in 200..600 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO t VALUES ({i}, randomblob(500))"),
        );
    }
    // The one-second window passes, and the log budget asks for everything to be folded.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let volume = engine.volume("v").unwrap();
    volume.volume().fold_for_window().unwrap();
    volume.volume().fold_through(Lsn(u64::MAX)).unwrap();
    engine.maintain();
    assert_eq!(
        dump_plain(view.connection()),
        recorded,
        "the view after the folds"
    );
    assert_eq!(view_integrity(view.connection()), "ok");
    let stored_while_pinned = engine.figures("v").unwrap().change_records_stored;
    // Closed, the view no longer holds anything back.
    drop(view);
    volume.volume().fold_for_window().unwrap();
    let stored = engine.figures("v").unwrap().change_records_stored;
    assert!(
        stored < stored_while_pinned,
        "{stored} < {stored_while_pinned}"
    );
    assert_eq!(count(&engine, "v", "t"), 500);
}
