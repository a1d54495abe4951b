//! The backtrack preview equals the real differences: on random workloads (inserts, updates,
//! deletes, DDL, VACUUM; several seeds), each table's counts against a full diff of the two
//! states, read whole from a view at T and a view of now.

use std::collections::{BTreeMap, BTreeSet};

use backtrack_storage_node::api::{Preview, TableChangeKind, Value};
use backtrack_storage_node::engine::Engine;
use rusqlite::Connection;

use crate::common::*;
use crate::workload::Workload;

type Rows = BTreeMap<i64, Vec<(String, Value)>>;

fn all_rows(conn: &Connection, table: &str) -> Rows {
    let mut statement = conn
        .prepare(&format!("SELECT rowid, * FROM \"{table}\""))
        .unwrap();
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .skip(1)
        .map(|c| c.to_string())
        .collect();
    let mut out = BTreeMap::new();
    let mut rows = statement.query([]).unwrap();
    while let Some(row) = rows.next().unwrap() {
        let values = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let value = value_of(row.get_ref(i + 1).unwrap());
                (name.clone(), value)
            })
            .collect();
        out.insert(row.get(0).unwrap(), values);
    }
    out
}

fn schema(conn: &Connection) -> BTreeMap<String, String> {
    let mut statement = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap();
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// (change, inserted, updated, deleted) per table, from reading both states whole.
fn full_diff(then: &Connection, now: &Connection) -> Counts {
    let (before, after) = (schema(then), schema(now));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut out = BTreeMap::new();
    for name in names {
        let entry = match (before.get(name), after.get(name)) {
            (Some(_), None) => Some((
                TableChangeKind::Dropped,
                0,
                0,
                all_rows(then, name).len() as u64,
            )),
            (None, Some(_)) => Some((
                TableChangeKind::Created,
                all_rows(now, name).len() as u64,
                0,
                0,
            )),
            (Some(b), Some(a)) => {
                let (old, new) = (all_rows(then, name), all_rows(now, name));
                let inserted = new.keys().filter(|k| !old.contains_key(k)).count() as u64;
                let deleted = old.keys().filter(|k| !new.contains_key(k)).count() as u64;
                let updated = old
                    .iter()
                    .filter(|(k, row)| {
                        new.get(k).is_some_and(|other| {
                            row.iter()
                                .any(|(c, v)| other.iter().any(|(c2, v2)| c2 == c && v2 != v))
                        })
                    })
                    .count() as u64;
                let kind = if a == b {
                    TableChangeKind::Modified
                } else {
                    TableChangeKind::Altered
                };
                (kind == TableChangeKind::Altered || inserted + updated + deleted > 0)
                    .then_some((kind, inserted, updated, deleted))
            }
            (None, None) => None,
        };
        if let Some(entry) = entry {
            out.insert(name.clone(), entry);
        }
    }
    out
}

type Counts = BTreeMap<String, (TableChangeKind, u64, u64, u64)>;

/// What a preview says of each table.
fn counts(preview: &Preview) -> Counts {
    preview
        .tables
        .iter()
        .map(|t| {
            let rows = (t.rows_inserted, t.rows_updated, t.rows_deleted);
            (t.name.clone(), (t.change, rows.0, rows.1, rows.2))
        })
        .collect()
}

/// The full diff of volume v between `to` and now.
fn full_diff_now(engine: &Engine, to: i64) -> Counts {
    let then = engine.view_at("v", to).unwrap();
    let now = engine.view_at("v", engine.now_us()).unwrap();
    full_diff(then.connection(), now.connection())
}

#[test]
fn the_previews_counts_equal_a_full_diff_of_the_two_states() {
    for seed in 1..=5 {
        let dir = TempDir::new("preview");
        let engine = open(&dir);
        engine.create_volume("v", 3600).unwrap();
        let mut workload = Workload::new(seed);
        let mut targets = Vec::new();
        for step in 0..450 {
            let sql = workload.statement();
            let _ = try_exec(&engine, "v", &sql, Vec::new());
            if step % 90 == 40 {
                targets.push(engine.now_us());
            }
        }
        for to in targets {
            let preview = engine.preview("v", to, false).unwrap();
            assert_eq!(
                counts(&preview),
                full_diff_now(&engine, to),
                "seed {seed}, back to {to}"
            );
            assert!(preview.change_records > 0, "seed {seed}");
            assert_eq!(preview.to_us, to);
        }
    }
}

#[test]
fn a_preview_shows_the_rows_before_and_after_and_changes_nothing() {
    let dir = TempDir::new("preview-rows");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)",
    );
    exec(&engine, "v", "CREATE TABLE gone (x)");
    exec(&engine, "v", "INSERT INTO gone VALUES (1), (2)");
    for i in 1..=300 {
        exec(
            &engine,
            "v",
            &format!("INSERT INTO orders (item, qty) VALUES ('item {i}', {i})"),
        );
    }
    let to = engine.now_us();
    let before = dump(&engine, "v");
    exec(
        &engine,
        "v",
        "UPDATE orders SET qty = qty * 10 WHERE id = 7",
    );
    exec(&engine, "v", "DELETE FROM orders WHERE id > 290");
    exec(
        &engine,
        "v",
        "INSERT INTO orders (id, item, qty) VALUES (1000, 'new', 1)",
    );
    exec(&engine, "v", "DROP TABLE gone");
    exec(&engine, "v", "CREATE TABLE fresh (y)");
    let after = dump(&engine, "v");
    let preview = engine.preview("v", to, true).unwrap();
    let by_name = |name: &str| preview.tables.iter().find(|t| t.name == name).unwrap();
    let orders = by_name("orders");
    assert_eq!(orders.change, TableChangeKind::Modified);
    assert_eq!(
        (
            orders.rows_inserted,
            orders.rows_updated,
            orders.rows_deleted
        ),
        (1, 1, 10)
    );
    let rows = orders.rows.as_ref().unwrap();
    let seven = rows.iter().find(|r| r.rowid == 7).unwrap();
    assert_eq!(
        seven.before.as_ref().unwrap()[2],
        ("qty".into(), Value::Integer(7))
    );
    assert_eq!(
        seven.after.as_ref().unwrap()[2],
        ("qty".into(), Value::Integer(70))
    );
    assert!(rows.iter().any(|r| r.rowid == 291 && r.after.is_none()));
    assert!(rows.iter().any(|r| r.rowid == 1000 && r.before.is_none()));
    assert_eq!(by_name("gone").change, TableChangeKind::Dropped);
    assert_eq!(by_name("gone").rows_deleted, 2);
    assert_eq!(by_name("fresh").change, TableChangeKind::Created);
    // Nothing changed: the live state is as it was, and a backtrack still undoes it all.
    assert_eq!(dump(&engine, "v"), after);
    backtrack(&engine, "v", to).unwrap();
    assert_eq!(dump(&engine, "v"), before);
    // Outside the window: refused like a backtrack.
    assert!(engine
        .preview("v", engine.now_us() + 60_000_000, false)
        .is_err());
}

#[test]
fn rows_on_leaves_freed_without_a_rewrite_are_counted() {
    // One row a page: deleting a row frees its leaf, and only the parent is written.
    let dir = TempDir::new("preview-freed");
    let engine = open(&dir);
    engine.create_volume("v", 3600).unwrap();
    exec(
        &engine,
        "v",
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v BLOB)",
    );
    for _ in 0..4 {
        exec(
            &engine,
            "v",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
             INSERT INTO big (v) SELECT randomblob(3500) FROM n",
        );
    }
    let mut targets = vec![engine.now_us()];
    for id in (2..1200).step_by(48) {
        exec(&engine, "v", &format!("DELETE FROM big WHERE id = {id}"));
    }
    exec(
        &engine,
        "v",
        "UPDATE big SET v = randomblob(10) WHERE id % 97 = 0",
    );
    targets.push(engine.now_us());
    // A mass delete frees whole subtrees, interior pages included.
    exec(&engine, "v", "DELETE FROM big WHERE id BETWEEN 300 AND 900");
    exec(&engine, "v", "INSERT INTO big (v) VALUES (x'00')");
    for to in targets {
        let preview = engine.preview("v", to, false).unwrap();
        assert_eq!(counts(&preview), full_diff_now(&engine, to), "back to {to}");
    }
}
