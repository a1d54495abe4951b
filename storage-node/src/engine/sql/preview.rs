//! The backtrack preview: what a backtrack to T would undo, from a view at T and a view of
//! now, at a cost that follows the changes, not the database.
//!
//! The volume knows which pages changed between the two states (their newest versions
//! differ). A row of a rowid table that differs lies, in one state or the other, on a table
//! leaf that changed, or under a subtree that a changed interior page held in one state and
//! not in the other (SQLite frees an emptied leaf without rewriting it: only its parent
//! changes). A page that did not change and stayed in its tree holds the same rows in both.
//! So the rows to compare are found from the pages' bytes ([`crate::engine::btree`]): a leaf
//! belongs to the table whose b-tree leads down to it. Those rowids are then read from both views by rowid and compared on the columns both
//! states have. Tables created or dropped since are counted whole; WITHOUT ROWID tables are
//! compared whole (their rows have no rowid to find them by).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::Connection;

use super::limits::describe_duration;
use super::statement::{from_sql, sql_error};
use super::{SqlVolume, View};
use crate::api::{
    ErrorCode, Preview, RowChange, TableChange, TableChangeKind, Value, PREVIEW_ROWS,
};
use crate::engine::btree::{self, Kind};
use crate::engine::log::PAGE_SIZE;
use crate::engine::volume::{Snapshot, Volume, VolumeError};

/// Rowids read in one query.
const CHUNK: usize = 500;

/// A table as sqlite_master has it in one state.
#[derive(Debug, Clone)]
struct TableDef {
    sql: String,
    root: u32,
    rowid: bool,
}

impl SqlVolume {
    /// What a backtrack to `to_us` would undo: per table, created, dropped, altered or modified,
    /// with rows inserted, updated and deleted since (and, with `include_rows`, the first
    /// [`PREVIEW_ROWS`] of them with their values before and after).
    /// It runs under the statement time limit, like a SQL call.
    pub fn preview(&self, to_us: i64, include_rows: bool) -> Result<Preview, VolumeError> {
        let then = self.view_at(to_us)?;
        let now = self.view_at(self.volume.now_us())?;
        for view in [&then, &now] {
            view.conn().deadline.start(self.limits.statement_timeout);
        }
        self.diff(&then, &now, include_rows).map_err(|e| {
            if then.conn().deadline.fired() || now.conn().deadline.fired() {
                VolumeError::new(
                    ErrorCode::StatementTimeout,
                    format!(
                        "the preview ran longer than the statement time limit of {}; try a \
                         later BacktrackTo (fewer changes to compare)",
                        describe_duration(self.limits.statement_timeout)
                    ),
                )
            } else {
                e
            }
        })
    }

    fn diff(&self, then: &View, now: &View, include_rows: bool) -> Result<Preview, VolumeError> {
        let changed = self.volume.changed_pages(then.snapshot(), now.snapshot());
        let before = tables(then.connection())?;
        let after = tables(now.connection())?;
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let rowids = Candidates::collect(
            &self.volume,
            (then.snapshot(), &before),
            (now.snapshot(), &after),
            &changed,
        );
        let mut out = Vec::new();
        for name in names {
            let change = match (before.get(name), after.get(name)) {
                (Some(_), None) => whole(
                    name,
                    TableChangeKind::Dropped,
                    then.connection(),
                    include_rows,
                )?,
                (None, Some(_)) => whole(
                    name,
                    TableChangeKind::Created,
                    now.connection(),
                    include_rows,
                )?,
                (Some(b), Some(a)) => {
                    let kind = if b.sql == a.sql {
                        TableChangeKind::Modified
                    } else {
                        TableChangeKind::Altered
                    };
                    let ids = if b.rowid && a.rowid {
                        Some(rowids.of(name))
                    } else {
                        None
                    };
                    compare(name, kind, then, now, ids, include_rows)?
                }
                (None, None) => None,
            };
            out.extend(change);
        }
        Ok(Preview {
            to_us: then.time_us(),
            change_records: self.volume.records_after(then.time_us()),
            tables: out,
        })
    }
}

/// The user tables of a state, by name.
fn tables(conn: &Connection) -> Result<BTreeMap<String, TableDef>, VolumeError> {
    let mut statement = conn
        .prepare(
            "SELECT name, sql, rootpage FROM sqlite_master \
             WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .map_err(sql_error)?;
    let rows = statement
        .query_map([], |row| {
            let name: String = row.get(0)?;
            let sql: String = row.get::<_, Option<String>>(1)?.unwrap_or_default();
            let root: u32 = row.get(2)?;
            Ok((name, sql, root))
        })
        .map_err(sql_error)?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (name, sql, root) = row.map_err(sql_error)?;
        let rowid = !sql.to_ascii_uppercase().contains("WITHOUT ROWID") && root > 0;
        out.insert(name, TableDef { sql, root, rowid });
    }
    Ok(out)
}

/// The rowids that may differ, per table: those on the leaves that changed, in either
/// state, and those under subtrees that a changed interior page let go of (a deleted row's
/// leaf is freed without being rewritten: only its parent changes) or took in.
#[derive(Default)]
struct Candidates(HashMap<String, BTreeSet<i64>>);

/// One state's pages, read once each.
struct Pages<'a> {
    volume: &'a Volume,
    snapshot: &'a Snapshot,
    cache: HashMap<u32, Option<btree::Page>>,
}

impl Pages<'_> {
    fn read(&mut self, index: u32) -> Option<btree::Page> {
        if index >= self.snapshot.db_pages {
            return None;
        }
        let (volume, snapshot) = (self.volume, self.snapshot);
        self.cache
            .entry(index)
            .or_insert_with(|| {
                let mut page = vec![0u8; PAGE_SIZE];
                volume
                    .read_page(snapshot, index, &mut page)
                    .ok()
                    .map(|()| btree::Page::new(page))
            })
            .clone()
    }

    /// The children of the changed table interior pages that are in a table's tree in this
    /// state (a page SQLite wrote and then freed in one transaction still looks like one).
    fn children_of(&mut self, changed: &[u32], defs: &BTreeMap<String, TableDef>) -> Vec<u32> {
        let mut out = Vec::new();
        for &index in changed {
            let Some(page) = self.read(index) else {
                continue;
            };
            let Some(key) = btree::first_key(index, &page) else {
                continue;
            };
            let in_tree = defs.values().any(|def| {
                def.rowid && btree::passes_through(def.root, key, index, &mut |i| self.read(i))
            });
            if in_tree {
                out.extend(btree::children(index, &page));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Candidates {
    fn collect(
        volume: &Volume,
        then: (&Snapshot, &BTreeMap<String, TableDef>),
        now: (&Snapshot, &BTreeMap<String, TableDef>),
        changed: &[u32],
    ) -> Candidates {
        let mut candidates = Candidates::default();
        let mut pages_then = Pages {
            volume,
            snapshot: then.0,
            cache: HashMap::new(),
        };
        let mut pages_now = Pages {
            volume,
            snapshot: now.0,
            cache: HashMap::new(),
        };
        let held_then = pages_then.children_of(changed, then.1);
        let held_now = pages_now.children_of(changed, now.1);
        let is_changed = |p: &u32| changed.binary_search(p).is_ok();
        for (pages, defs, held, other) in [
            (&mut pages_then, then.1, &held_then, &held_now),
            (&mut pages_now, now.1, &held_now, &held_then),
        ] {
            let mut leaves: Vec<u32> = changed.to_vec();
            let let_go = held
                .iter()
                .filter(|p| other.binary_search(p).is_err() && !is_changed(p));
            for &subtree in let_go {
                leaves.extend(btree::leaves_under(subtree, &mut |i| pages.read(i)));
            }
            for index in leaves {
                candidates.add_leaf(pages, defs, index);
            }
        }
        candidates
    }

    /// The rowids of `index`, if it is a leaf of one of the tables.
    fn add_leaf(&mut self, pages: &mut Pages<'_>, defs: &BTreeMap<String, TableDef>, index: u32) {
        let Some(page) = pages.read(index) else {
            return;
        };
        if btree::kind(index, &page) != Kind::TableLeaf {
            return;
        }
        let ids = btree::leaf_rowids(index, &page);
        let Some(&first) = ids.first() else { return };
        let owner = defs.iter().find(|(_, def)| {
            def.rowid && btree::leaf_for(def.root, first, &mut |i| pages.read(i)) == Some(index)
        });
        if let Some((name, _)) = owner {
            self.0.entry(name.clone()).or_default().extend(ids);
        }
    }

    fn of(&self, name: &str) -> Vec<i64> {
        self.0
            .get(name)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }
}

type Row = Vec<(String, Value)>;

/// The rows of `table` with these rowids.
fn rows(conn: &Connection, table: &str, rowids: &[i64]) -> Result<BTreeMap<i64, Row>, VolumeError> {
    let mut out = BTreeMap::new();
    for chunk in rowids.chunks(CHUNK) {
        let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
        let sql = format!(
            "SELECT rowid, * FROM {} WHERE rowid IN ({})",
            quoted(table),
            list.join(",")
        );
        out.extend(keyed_rows(conn, &sql)?);
    }
    Ok(out)
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rows of a query whose first column is the key: the key, and the other columns by name.
fn keyed_rows(conn: &Connection, sql: &str) -> Result<Vec<(i64, Row)>, VolumeError> {
    let mut statement = conn.prepare(sql).map_err(sql_error)?;
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .skip(1)
        .map(|c| c.to_string())
        .collect();
    let mut out = Vec::new();
    let mut result = statement.query([]).map_err(sql_error)?;
    while let Some(row) = result.next().map_err(sql_error)? {
        let key: i64 = row.get(0).map_err(sql_error)?;
        let values = names
            .iter()
            .enumerate()
            .map(|(i, name)| Ok((name.clone(), from_sql(row.get_ref(i + 1)?))))
            .collect::<rusqlite::Result<Row>>()
            .map_err(sql_error)?;
        out.push((key, values));
    }
    Ok(out)
}

/// A table that exists in one state only: every row inserted (created) or deleted (dropped).
fn whole(
    name: &str,
    change: TableChangeKind,
    conn: &Connection,
    include_rows: bool,
) -> Result<Option<TableChange>, VolumeError> {
    let count: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {}", quoted(name)), [], |r| {
            r.get(0)
        })
        .map_err(sql_error)?;
    let shown = if include_rows {
        let all = rows_limited(conn, name)?;
        Some(
            all.into_iter()
                .map(|(rowid, row)| match change {
                    TableChangeKind::Dropped => RowChange {
                        rowid,
                        before: Some(row),
                        after: None,
                    },
                    _ => RowChange {
                        rowid,
                        before: None,
                        after: Some(row),
                    },
                })
                .collect(),
        )
    } else {
        None
    };
    let count = count as u64;
    let (inserted, deleted) = match change {
        TableChangeKind::Dropped => (0, count),
        _ => (count, 0),
    };
    Ok(Some(TableChange {
        name: name.to_string(),
        change,
        rows_inserted: inserted,
        rows_updated: 0,
        rows_deleted: deleted,
        rows: shown,
    }))
}

/// The first [`PREVIEW_ROWS`] rows of a table (rowid tables; others by their order).
fn rows_limited(conn: &Connection, name: &str) -> Result<Vec<(i64, Row)>, VolumeError> {
    let quoted = quoted(name);
    let sql = format!("SELECT rowid, * FROM {quoted} ORDER BY rowid LIMIT {PREVIEW_ROWS}");
    let sql = match conn.prepare(&sql) {
        Ok(_) => sql,
        // WITHOUT ROWID: no rowid to show; rows are numbered in their order.
        Err(_) => format!("SELECT row_number() OVER (), * FROM {quoted} LIMIT {PREVIEW_ROWS}"),
    };
    keyed_rows(conn, &sql)
}

/// A table in both states: its rows compared (those given, or all of them).
fn compare(
    name: &str,
    kind: TableChangeKind,
    then: &View,
    now: &View,
    rowids: Option<Vec<i64>>,
    include_rows: bool,
) -> Result<Option<TableChange>, VolumeError> {
    let Some(ids) = rowids else {
        return compare_whole(name, kind, then, now);
    };
    let before = rows(then.connection(), name, &ids)?;
    let after = rows(now.connection(), name, &ids)?;
    let mut change = TableChange {
        name: name.to_string(),
        change: kind,
        rows_inserted: 0,
        rows_updated: 0,
        rows_deleted: 0,
        rows: include_rows.then(Vec::new),
    };
    let ids: BTreeSet<i64> = before.keys().chain(after.keys()).copied().collect();
    for rowid in ids {
        let (b, a) = (before.get(&rowid), after.get(&rowid));
        let differs = match (b, a) {
            (Some(_), None) => {
                change.rows_deleted += 1;
                true
            }
            (None, Some(_)) => {
                change.rows_inserted += 1;
                true
            }
            (Some(b), Some(a)) if !same_on_common_columns(b, a) => {
                change.rows_updated += 1;
                true
            }
            _ => false,
        };
        if let Some(shown) = change
            .rows
            .as_mut()
            .filter(|s| differs && s.len() < PREVIEW_ROWS)
        {
            shown.push(RowChange {
                rowid,
                before: b.cloned(),
                after: a.cloned(),
            });
        }
    }
    let untouched = change.rows_inserted + change.rows_updated + change.rows_deleted == 0;
    if untouched && kind == TableChangeKind::Modified {
        return Ok(None);
    }
    Ok(Some(change))
}

/// A WITHOUT ROWID table (in either state), compared whole as multisets of rows: a row not
/// in the other state counts as inserted or deleted (such a table has no rowid to tell an
/// update from a delete and an insert).
fn compare_whole(
    name: &str,
    kind: TableChangeKind,
    then: &View,
    now: &View,
) -> Result<Option<TableChange>, VolumeError> {
    let count = |conn: &Connection| -> Result<HashMap<String, i64>, VolumeError> {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM {}", quoted(name)))
            .map_err(sql_error)?;
        let columns = statement.column_count();
        let mut counts = HashMap::new();
        let mut result = statement.query([]).map_err(sql_error)?;
        while let Some(row) = result.next().map_err(sql_error)? {
            let values: Vec<Value> = (0..columns)
                .map(|i| row.get_ref(i).map(from_sql))
                .collect::<rusqlite::Result<_>>()
                .map_err(sql_error)?;
            *counts.entry(format!("{values:?}")).or_default() += 1;
        }
        Ok(counts)
    };
    let (before, after) = (count(then.connection())?, count(now.connection())?);
    let surplus = |a: &HashMap<String, i64>, b: &HashMap<String, i64>| -> u64 {
        a.iter()
            .map(|(row, n)| (n - b.get(row).copied().unwrap_or(0)).max(0) as u64)
            .sum()
    };
    let (inserted, deleted) = (surplus(&after, &before), surplus(&before, &after));
    if inserted + deleted == 0 && kind == TableChangeKind::Modified {
        return Ok(None);
    }
    Ok(Some(TableChange {
        name: name.to_string(),
        change: kind,
        rows_inserted: inserted,
        rows_updated: 0,
        rows_deleted: deleted,
        rows: None,
    }))
}

/// Rows compared on the columns both states have (ALTER TABLE ADD COLUMN rewrites no row).
fn same_on_common_columns(before: &Row, after: &Row) -> bool {
    before.iter().all(|(column, value)| {
        after
            .iter()
            .find(|(c, _)| c == column)
            .is_none_or(|(_, v)| v == value)
    })
}
