//! Helpers for the engine tests: temporary directories, a seeded random generator, and dumps
//! of every table for comparing states.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backtrack_storage_node::api::{
    BacktrackOutcome, BacktrackRequest, ExecuteRequest, ExecuteResult, Value,
};
use backtrack_storage_node::engine::volume::VolumeError;
use backtrack_storage_node::engine::{Engine, EngineConfig};
use uuid::Uuid;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        // Under target/, on the same disk as the build: real fsyncs, no tmpfs.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = base.join(format!("{name}-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: small, seeded, good enough to drive workloads.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub fn config(dir: &TempDir) -> EngineConfig {
    let mut config = EngineConfig::new(&dir.0);
    // Maintenance runs when a test calls it.
    config.maintenance_interval = Duration::from_secs(3600);
    config
}

pub fn open(dir: &TempDir) -> Arc<Engine> {
    Engine::open(config(dir)).unwrap()
}

pub fn try_exec(
    engine: &Engine,
    volume: &str,
    sql: &str,
    params: Vec<Value>,
) -> Result<ExecuteResult, VolumeError> {
    engine.execute(
        volume,
        &ExecuteRequest {
            sql: sql.into(),
            params,
            ..Default::default()
        },
    )
}

pub fn exec(engine: &Engine, volume: &str, sql: &str) -> ExecuteResult {
    try_exec(engine, volume, sql, vec![]).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn exec_in(
    engine: &Engine,
    volume: &str,
    tx: &str,
    sql: &str,
) -> Result<ExecuteResult, VolumeError> {
    engine.execute(
        volume,
        &ExecuteRequest {
            sql: sql.into(),
            transaction_id: Some(tx.into()),
            ..Default::default()
        },
    )
}

pub fn backtrack(
    engine: &Engine,
    volume: &str,
    to_us: i64,
) -> Result<BacktrackOutcome, VolumeError> {
    engine.backtrack(
        volume,
        &BacktrackRequest {
            backtrack_id: Uuid::new_v4(),
            to_us,
            clamp_to_earliest: false,
            force: false,
        },
    )
}

pub fn count(engine: &Engine, volume: &str, table: &str) -> i64 {
    match &exec(engine, volume, &format!("SELECT count(*) FROM {table}")).rows[0][0] {
        Value::Integer(n) => *n,
        other => panic!("count is {other:?}"),
    }
}

pub fn integrity_ok(engine: &Engine, volume: &str) {
    let result = exec(engine, volume, "PRAGMA integrity_check");
    assert_eq!(
        result.rows,
        vec![vec![Value::Text("ok".into())]],
        "integrity_check"
    );
}

/// Every table's rows (and the schema), in a fixed order.
pub type Dump = Vec<(String, Vec<Vec<Value>>)>;

pub fn dump(engine: &Engine, volume: &str) -> Dump {
    let schema = exec(
        engine,
        volume,
        "SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name",
    );
    let mut out = vec![("schema".to_string(), schema.rows.clone())];
    let tables = exec(
        engine,
        volume,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    );
    for row in tables.rows {
        let Value::Text(name) = &row[0] else {
            unreachable!()
        };
        let rows = exec(
            engine,
            volume,
            &format!("SELECT * FROM \"{name}\" ORDER BY rowid"),
        )
        .rows;
        out.push((name.clone(), rows));
    }
    out
}

/// A value read from SQLite, as the node's API has it.
pub fn value_of(value: rusqlite::types::ValueRef<'_>) -> Value {
    match value {
        rusqlite::types::ValueRef::Null => Value::Null(true),
        rusqlite::types::ValueRef::Integer(v) => Value::Integer(v),
        rusqlite::types::ValueRef::Real(v) => Value::Real(v),
        rusqlite::types::ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        rusqlite::types::ValueRef::Blob(v) => Value::Blob(v.to_vec()),
    }
}

/// The same dump from a plain SQLite connection.
pub fn dump_plain(conn: &rusqlite::Connection) -> Dump {
    let query = |sql: &str| -> Vec<Vec<Value>> {
        let mut statement = conn.prepare(sql).unwrap();
        let columns = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| value_of(row.get_ref(i).unwrap()))
                    .collect())
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let mut out = vec![(
        "schema".to_string(),
        query("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%' ORDER BY name"),
    )];
    for row in query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name") {
        let Value::Text(name) = &row[0] else { unreachable!() };
        out.push((name.clone(), query(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))));
    }
    out
}
