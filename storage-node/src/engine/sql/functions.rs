//! SQL functions PostgreSQL drivers and tools call on connect, on every connection: `version()`
//! (what runs, in the form PostgreSQL gives, which drivers parse), `current_database()` (the
//! volume's database name) and `current_schema()`.

use std::sync::{Arc, RwLock};

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

/// The PostgreSQL version the node says it speaks for (drivers parse it).
pub const SERVER_VERSION: &str = "16.6";

/// The text of `version()`.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (Backtrack {}; the SQL dialect is SQLite {})",
        env!("CARGO_PKG_VERSION"),
        rusqlite::version()
    )
}

pub(super) fn install(conn: &Connection, database: Arc<RwLock<String>>) -> rusqlite::Result<()> {
    let constant = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let version = version_text();
    conn.create_scalar_function("version", 0, constant, move |_| Ok(version.clone()))?;
    conn.create_scalar_function("current_schema", 0, constant, |_| Ok("public"))?;
    conn.create_scalar_function(
        "current_database",
        0,
        FunctionFlags::SQLITE_UTF8,
        move |_| Ok(database.read().unwrap().clone()),
    )
}
