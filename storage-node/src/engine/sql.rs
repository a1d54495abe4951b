//! SQL on a volume: SQLite connections opened through the `backtrack` VFS, statements run in
//! autocommit on pooled connections, transactions that span calls on connections of their
//! own, and the quiescing a backtrack needs (refuse new calls, interrupt running statements,
//! wait for them, close every connection, rolling back open transactions).
//!
//! A policy installed on every connection refuses what would bypass the log or leave the
//! volume: changing the journal mode, locking mode or page size, ATTACH, and transaction
//! statements outside the calls made for them (BeginTransaction and friends).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{CachedStatement, Connection, InterruptHandle, OpenFlags};

use super::vfs::{self, VFS_NAME};
use super::volume::{Volume, VolumeError};
use crate::api::{
    BacktrackOutcome, BacktrackRequest, Column, ErrorCode, ExecuteRequest, ExecuteResult,
    RunEffect, Value,
};

/// Results larger than this are refused; page them with LIMIT.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// Open transactions per volume.
pub const MAX_TRANSACTIONS: usize = 64;
const IDLE_CONNECTIONS: usize = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open transaction's connection and when it was last used; `None` once it ended.
type TxSlot = Arc<Mutex<Option<(Conn, Instant)>>>;

/// One connection, and why the policy last refused a statement on it (SQLite itself only
/// says "not authorized").
struct Conn {
    conn: Connection,
    refusal: Arc<Mutex<Option<&'static str>>>,
    /// SQL texts already found to hold exactly one statement: their prepared statements are
    /// kept in the connection's cache, so a repeated statement is parsed once per connection.
    single: RefCell<HashSet<String>>,
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

pub struct SqlVolume {
    volume: Arc<Volume>,
    db_name: String,
    /// Statements hold it shared; a backtrack or a deletion holds it exclusively.
    gate: RwLock<()>,
    /// Set while a backtrack switches the volume (and for good once it is deleted).
    switching: AtomicBool,
    idle: Mutex<Vec<Conn>>,
    transactions: Mutex<HashMap<String, TxSlot>>,
    running: Mutex<HashMap<u64, InterruptHandle>>,
    next_run: AtomicU64,
}

impl SqlVolume {
    pub fn new(volume: Arc<Volume>) -> Result<SqlVolume, VolumeError> {
        let db_name = vfs::register_volume(&volume).map_err(VolumeError::internal)?;
        Ok(SqlVolume {
            volume,
            db_name,
            gate: RwLock::new(()),
            switching: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            transactions: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(0),
        })
    }

    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    pub fn open_transactions(&self) -> u32 {
        self.transactions.lock().unwrap().len() as u32
    }

    pub fn is_switching(&self) -> bool {
        self.switching.load(Ordering::Acquire)
    }

    fn check_available(&self) -> Result<(), VolumeError> {
        if self.volume.is_deleted() {
            return Err(VolumeError::new(
                ErrorCode::VolumeNotFound,
                format!("volume {} was deleted", self.volume.id),
            ));
        }
        if self.is_switching() {
            return Err(VolumeError::new(
                ErrorCode::Unavailable,
                format!(
                    "volume {} is being backtracked; the database is unavailable for a moment",
                    self.volume.id
                ),
            ));
        }
        Ok(())
    }

    fn open(&self) -> Result<Conn, VolumeError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(&self.db_name, flags, VFS_NAME)
            .map_err(sql_error)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = MEMORY", [], |row| row.get(0))
            .map_err(sql_error)?;
        if mode != "memory" {
            return Err(VolumeError::internal(format!(
                "journal_mode is {mode}, not memory"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -8192;",
        )
        .map_err(sql_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_error)?;
        let refusal = Arc::new(Mutex::new(None));
        let why = refusal.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match policy(&ctx) {
            Some(reason) => {
                *why.lock().unwrap() = Some(reason);
                Authorization::Deny
            }
            None => Authorization::Allow,
        }));
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Conn {
            conn,
            refusal,
            single: RefCell::new(HashSet::new()),
        })
    }

    /// Runs one statement (once, or once per parameter set), in autocommit or in a transaction.
    pub fn execute(&self, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        self.check_available()?;
        match &request.transaction_id {
            None => {
                let conn = match self.idle.lock().unwrap().pop() {
                    Some(conn) => conn,
                    None => self.open()?,
                };
                let result = self.run(&conn, request);
                if !conn.conn.is_autocommit() {
                    // Never hand a connection with a transaction in it to the next caller.
                    let _ = conn.conn.execute_batch("ROLLBACK");
                }
                let mut idle = self.idle.lock().unwrap();
                if idle.len() < IDLE_CONNECTIONS {
                    idle.push(conn);
                }
                result
            }
            Some(id) => {
                let tx = self.transaction(id)?;
                let mut slot = tx.lock().unwrap();
                let Some((conn, last_used)) = slot.as_mut() else {
                    return Err(transaction_not_found(id));
                };
                *last_used = Instant::now();
                self.run(conn, request)
            }
        }
    }

    fn transaction(&self, id: &str) -> Result<TxSlot, VolumeError> {
        self.transactions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| transaction_not_found(id))
    }

    fn run(&self, conn: &Conn, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
        check_transaction_statement(&request.sql, request.transaction_id.is_some())?;
        let run = self.next_run.fetch_add(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap()
            .insert(run, conn.conn.get_interrupt_handle());
        *conn.refusal.lock().unwrap() = None;
        let result = execute_statement(conn, request);
        self.running.lock().unwrap().remove(&run);
        result.map_err(|e| match conn.refusal.lock().unwrap().take() {
            Some(reason) if e.code == ErrorCode::SqlError => {
                VolumeError::new(ErrorCode::SqlError, format!("{}: {reason}", e.message))
            }
            _ => e,
        })
    }

    pub fn begin(&self) -> Result<String, VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        self.check_available()?;
        if self.transactions.lock().unwrap().len() >= MAX_TRANSACTIONS {
            return Err(VolumeError::new(
                ErrorCode::SqlError,
                format!(
                    "volume {} already has {MAX_TRANSACTIONS} open transactions",
                    self.volume.id
                ),
            ));
        }
        let conn = self.open()?;
        conn.conn.execute_batch("BEGIN").map_err(sql_error)?;
        let id = format!("tx-{}", uuid::Uuid::new_v4().simple());
        self.transactions.lock().unwrap().insert(
            id.clone(),
            Arc::new(Mutex::new(Some((conn, Instant::now())))),
        );
        Ok(id)
    }

    pub fn commit(&self, id: &str) -> Result<(), VolumeError> {
        self.finish(id, "COMMIT")
    }

    pub fn rollback(&self, id: &str) -> Result<(), VolumeError> {
        self.finish(id, "ROLLBACK")
    }

    fn finish(&self, id: &str, verb: &str) -> Result<(), VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        let tx = self.transaction(id)?;
        let taken = tx.lock().unwrap().take();
        self.transactions.lock().unwrap().remove(id);
        let Some((conn, _)) = taken else {
            return Err(transaction_not_found(id));
        };
        let result = conn.conn.execute_batch(verb).map_err(sql_error);
        if result.is_err() && !conn.conn.is_autocommit() {
            let _ = conn.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// Rolls back transactions unused for longer than `idle`, as the Data API does.
    pub fn expire_transactions(&self, idle: Duration) -> usize {
        let expired: Vec<String> = self
            .transactions
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, tx)| {
                tx.try_lock()
                    .ok()
                    .and_then(|slot| slot.as_ref().map(|(_, used)| used.elapsed() > idle))
                    .unwrap_or(false)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(volume = %self.volume.id, transaction = %id, "rolling back an idle transaction");
            let _ = self.rollback(id);
        }
        expired.len()
    }

    /// Backtracks the volume: refuses new calls, interrupts and waits for running statements,
    /// closes every connection (rolling back open transactions when `force` allows it), then
    /// switches. Idempotent by backtrack id.
    pub fn backtrack(&self, request: &BacktrackRequest) -> Result<BacktrackOutcome, VolumeError> {
        if let Some(done) = self.volume.recorded_backtrack(&request.backtrack_id) {
            return Ok(done);
        }
        self.check_available()?;
        if self.switching.swap(true, Ordering::AcqRel) {
            return Err(VolumeError::new(
                ErrorCode::Unavailable,
                format!("volume {} is already being backtracked", self.volume.id),
            ));
        }
        let result = (|| {
            let open = self.open_transactions();
            if open > 0 && !request.force {
                return Err(VolumeError::new(
                    ErrorCode::OpenTransactions,
                    format!("volume {} has {open} open transaction(s); backtrack with force to roll them back", self.volume.id),
                ));
            }
            let rolled_back = self.close_all();
            self.volume.backtrack(request, rolled_back)
        })();
        self.switching.store(false, Ordering::Release);
        result
    }

    /// Stops everything for good: the volume is being deleted.
    pub fn shut(&self) {
        self.switching.store(true, Ordering::Release);
        self.volume.mark_deleted();
        self.close_all();
        vfs::unregister_volume(&self.volume);
    }

    /// Interrupts running statements, waits for them, and closes every connection; returns
    /// how many open transactions were rolled back.
    fn close_all(&self) -> u32 {
        for handle in self.running.lock().unwrap().values() {
            handle.interrupt();
        }
        let _exclusive = self.gate.write().unwrap();
        self.idle.lock().unwrap().clear();
        let transactions: Vec<_> = self.transactions.lock().unwrap().drain().collect();
        let mut rolled_back = 0;
        for (_, tx) in transactions {
            // Closing the connection rolls its transaction back.
            if tx.lock().unwrap().take().is_some() {
                rolled_back += 1;
            }
        }
        rolled_back
    }
}

impl Drop for SqlVolume {
    fn drop(&mut self) {
        vfs::unregister_volume(&self.volume);
    }
}

/// Why a user's statement is refused, if it is.
fn policy(ctx: &AuthContext<'_>) -> Option<&'static str> {
    match ctx.action {
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if matches!(
            pragma_name.to_ascii_lowercase().as_str(),
            "journal_mode" | "locking_mode" | "page_size" | "mmap_size" | "temp_store_directory" | "data_store_directory"
        ) =>
        {
            Some("the journal mode, locking mode, page size and file mapping are the storage engine's")
        }
        // VACUUM attaches a temporary database (empty name); nothing else may be attached.
        AuthAction::Attach { filename } if !filename.is_empty() => Some("ATTACH of another database is not available"),
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Some("extensions cannot be loaded")
        }
        _ => None,
    }
}

/// Transactions are the API's (BeginTransaction, CommitTransaction, RollbackTransaction):
/// a statement may not begin or end one. Savepoints are fine inside a transaction. (SQLite's
/// authorizer cannot tell these apart from the BEGIN that VACUUM issues, so the statement's
/// leading words decide.)
fn check_transaction_statement(sql: &str, in_transaction: bool) -> Result<(), VolumeError> {
    // `ROLLBACK [TRANSACTION] TO [SAVEPOINT] name` undoes to a savepoint, not the transaction.
    let words = leading_words(sql, 3);
    let first = words.first().map(String::as_str).unwrap_or_default();
    let savepoint_op = matches!(first, "SAVEPOINT" | "RELEASE")
        || (first == "ROLLBACK" && words.iter().any(|w| w == "TO"));
    let refused = match first {
        "BEGIN" | "COMMIT" | "END" => true,
        "ROLLBACK" | "SAVEPOINT" | "RELEASE" => !(in_transaction && savepoint_op),
        _ => false,
    };
    if refused {
        return Err(VolumeError::new(
            ErrorCode::SqlError,
            "transaction statements are not allowed here: use BeginTransaction, CommitTransaction \
             and RollbackTransaction (savepoints are allowed inside a transaction)",
        ));
    }
    Ok(())
}

/// The first `n` words of a statement, upper-cased, skipping whitespace and comments.
fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let bytes = sql.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() && words.len() < n {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b if b.is_ascii_alphabetic() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => break,
        }
    }
    words
}

fn columns_of(statement: &rusqlite::Statement<'_>) -> Vec<Column> {
    statement
        .columns()
        .iter()
        .map(|c| Column {
            name: c.name().to_string(),
            decl_type: c.decl_type().map(str::to_string),
        })
        .collect()
}

/// Prepares `sql`, refusing a text that holds more than one statement (checked the first time a
/// connection sees it; later calls take the prepared statement from its cache).
fn prepare_one<'c>(conn: &'c Conn, sql: &str) -> Result<CachedStatement<'c>, VolumeError> {
    if !conn.single.borrow().contains(sql) {
        let mut batch = rusqlite::Batch::new(&conn.conn, sql);
        if batch.next().map_err(sql_error)?.is_none() {
            return Err(VolumeError::new(
                ErrorCode::InvalidRequest,
                "the SQL statement is empty",
            ));
        }
        if !matches!(batch.next(), Ok(None)) {
            return Err(VolumeError::new(
                ErrorCode::SqlError,
                "only one SQL statement may be sent per call",
            ));
        }
        let mut single = conn.single.borrow_mut();
        if single.len() >= STATEMENT_CACHE {
            single.clear();
        }
        single.insert(sql.to_string());
    }
    conn.conn.prepare_cached(sql).map_err(sql_error)
}

fn execute_statement(conn: &Conn, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
    if request.sql.trim().is_empty() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "the SQL statement is empty",
        ));
    }
    if request.param_sets.is_some() && !request.params.is_empty() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "give either params or param_sets, not both",
        ));
    }
    let mut statement = prepare_one(conn, &request.sql)?;
    let conn = &conn.conn;
    let sets: Vec<&[Value]> = match &request.param_sets {
        Some(sets) => sets.iter().map(Vec::as_slice).collect(),
        None => vec![request.params.as_slice()],
    };
    let mut result = ExecuteResult {
        columns: Vec::new(),
        rows: Vec::new(),
        rows_affected: 0,
        last_insert_rowid: None,
        runs: Vec::new(),
    };
    let mut bytes = 0usize;
    let mut last_rowid = conn.last_insert_rowid();
    for params in sets {
        let bound = bind_order(&statement, params, request.param_names.as_deref())?;
        let before = conn.total_changes();
        let mut rows = statement
            .query(rusqlite::params_from_iter(bound.into_iter().map(to_sql)))
            .map_err(sql_error)?;
        while let Some(row) = rows.next().map_err(sql_error)? {
            // A cached statement is prepared again by its first step when the schema changed
            // since: its columns are read from it as it runs, never before.
            let count = row.as_ref().column_count();
            let mut values = Vec::with_capacity(count);
            for i in 0..count {
                let value = from_sql(row.get_ref(i).map_err(sql_error)?);
                bytes += value_size(&value);
                values.push(value);
            }
            if bytes > MAX_RESULT_BYTES {
                return Err(VolumeError::new(
                    ErrorCode::SqlError,
                    format!(
                        "the result is larger than {} MiB; select fewer rows (LIMIT)",
                        MAX_RESULT_BYTES >> 20
                    ),
                ));
            }
            result.rows.push(values);
        }
        drop(rows);
        let changed = conn.total_changes() - before;
        let rowid = conn.last_insert_rowid();
        let inserted = (changed > 0 && rowid != last_rowid).then_some(rowid);
        last_rowid = rowid;
        let rowid = inserted;
        result.rows_affected += changed;
        result.last_insert_rowid = rowid;
        if request.param_sets.is_some() {
            result.runs.push(RunEffect {
                rows_affected: changed,
                last_insert_rowid: rowid,
            });
        }
    }
    result.columns = columns_of(&statement);
    Ok(result)
}

/// The values in the order of the statement's parameters: as given, or placed by name.
fn bind_order<'a>(
    statement: &rusqlite::Statement<'_>,
    params: &'a [Value],
    names: Option<&[String]>,
) -> Result<Vec<&'a Value>, VolumeError> {
    let count = statement.parameter_count();
    let Some(names) = names else {
        if params.len() != count {
            return Err(VolumeError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the statement takes {count} parameter(s) but {} were given",
                    params.len()
                ),
            ));
        }
        return Ok(params.iter().collect());
    };
    if names.len() != params.len() {
        return Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            "param_names and params differ in length",
        ));
    }
    let mut slots: Vec<Option<&Value>> = vec![None; count];
    for (name, value) in names.iter().zip(params) {
        let index = statement
            .parameter_index(name)
            .map_err(sql_error)?
            .ok_or_else(|| {
                VolumeError::new(
                    ErrorCode::InvalidRequest,
                    format!("the statement has no parameter named {name}"),
                )
            })?;
        slots[index - 1] = Some(value);
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| {
            slot.ok_or_else(|| {
                let name = statement.parameter_name(i + 1).unwrap_or("?");
                VolumeError::new(
                    ErrorCode::InvalidRequest,
                    format!("no value was given for parameter {name}"),
                )
            })
        })
        .collect()
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null(_) => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Text(t) => SqlValue::Text(t.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null(true),
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::Text(t) => t.len() + 16,
        Value::Blob(b) => b.len() + 16,
        _ => 16,
    }
}

fn transaction_not_found(id: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::TransactionNotFound,
        format!("transaction {id} does not exist: it was committed, rolled back, expired, or rolled back by a backtrack"),
    )
}

/// SQLite's own message for a refused statement; an I/O failure is the node's, not the user's,
/// and an interrupted statement was stopped by a backtrack (only the quiescing interrupts).
fn sql_error(e: rusqlite::Error) -> VolumeError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &e {
        if failure.code == rusqlite::ErrorCode::SystemIoFailure {
            return VolumeError::internal(format!("storage failure: {e}"));
        }
        if failure.code == rusqlite::ErrorCode::OperationInterrupted {
            return VolumeError::new(
                ErrorCode::Unavailable,
                "the statement was interrupted because the volume is being backtracked; it did not take effect, retry it",
            );
        }
    }
    VolumeError::new(ErrorCode::SqlError, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_statements_are_recognised_through_comments_and_case() {
        assert!(check_transaction_statement("begin", false).is_err());
        assert!(check_transaction_statement("  /* x */ -- y\n Commit", true).is_err());
        assert!(check_transaction_statement("END TRANSACTION", true).is_err());
        assert!(check_transaction_statement("ROLLBACK", true).is_err());
        assert!(check_transaction_statement("SAVEPOINT a", true).is_ok());
        assert!(check_transaction_statement("ROLLBACK TO a", true).is_ok());
        assert!(check_transaction_statement("ROLLBACK TRANSACTION TO SAVEPOINT a", true).is_ok());
        assert!(check_transaction_statement("RELEASE a", true).is_ok());
        assert!(check_transaction_statement("SAVEPOINT a", false).is_err());
        assert!(check_transaction_statement("SELECT 'begin'", false).is_ok());
        assert!(check_transaction_statement("VACUUM", false).is_ok());
        assert!(check_transaction_statement("beginning_table_insert", false).is_ok());
    }
}
