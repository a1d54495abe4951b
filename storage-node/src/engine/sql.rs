//! SQL on a volume: SQLite connections opened through the `backtrack` VFS, statements run in
//! autocommit on pooled connections, transactions that span calls on connections of their
//! own, and the quiescing a backtrack needs (refuse new calls, interrupt running statements,
//! wait for them, close every connection, rolling back open transactions).
//!
//! A policy installed on every connection refuses what would bypass the log, weaken
//! durability or leave the volume: changing the journal mode, locking mode, page size or
//! synchronous setting, writable_schema, ATTACH, extensions, and transaction statements outside
//! the calls made for them (BeginTransaction and friends). Connections are isolated: a call
//! that changes its connection's state (a PRAGMA setting, a temporary table or trigger) gets a
//! connection that is closed after it, never handed to the next caller.
//!
//! Limits ([`SqlLimits`]): a call running past the statement time limit is interrupted inside
//! SQLite (a progress handler checks the deadline) and rolled back; one transaction may stage
//! at most so many bytes (they stay in memory until it commits); a value at most 64 MiB; and
//! SQLite's heap, over the whole process, is bounded. A batch (one statement with several
//! parameter sets) takes effect entirely or not at all.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{CachedStatement, Connection, InterruptHandle, OpenFlags};

use super::vfs::{self, VfsFailure, VFS_NAME};
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
/// The longest string or BLOB a statement may build (SQLite's own limit is 1 GB, in memory).
const MAX_VALUE_BYTES: i32 = 64 << 20;
/// How many virtual-machine steps SQLite runs between two looks at the statement's deadline.
const PROGRESS_STEPS: i32 = 10_000;

/// What one SQL call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// A call (a statement, or a whole batch) still running after this is interrupted, and
    /// what it did is rolled back.
    pub statement_timeout: Duration,
    /// The most bytes one transaction may write: its pages are held in memory until it
    /// commits.
    pub max_transaction_bytes: u64,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            statement_timeout: Duration::from_secs(10),
            max_transaction_bytes: 256 << 20,
        }
    }
}

impl SqlLimits {
    pub fn validate(&self) -> Result<(), String> {
        if self.statement_timeout < Duration::from_millis(1) {
            return Err("the statement time limit must be at least 1 ms".into());
        }
        if self.max_transaction_bytes < 1 << 20 {
            return Err("the transaction size limit must be at least 1 MiB".into());
        }
        Ok(())
    }
}

/// Bounds SQLite's memory over the whole process: at `bytes` allocations fail (the statement
/// gets an out-of-memory error); from half of it, SQLite first gives back cache memory.
pub fn set_memory_limit(bytes: u64) -> Result<(), String> {
    let conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
    for (pragma, value) in [("hard_heap_limit", bytes), ("soft_heap_limit", bytes / 2)] {
        conn.query_row(&format!("PRAGMA {pragma} = {value}"), [], |_| Ok(()))
            .map_err(|e| format!("cannot set SQLite's {pragma}: {e}"))?;
    }
    Ok(())
}

/// When the call running on a connection must stop, and whether it was stopped for that.
#[derive(Default)]
struct Deadline {
    /// Nanoseconds after [`epoch`]; 0 when no call runs.
    at: AtomicU64,
    fired: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Deadline {
    fn start(&self, timeout: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        let at = (epoch().elapsed() + timeout).as_nanos() as u64;
        self.at.store(at.max(1), Ordering::Relaxed);
    }

    fn clear(&self) {
        self.at.store(0, Ordering::Relaxed);
    }

    /// Called by SQLite's progress handler: `true` stops the statement.
    fn passed(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        let passed = at != 0 && epoch().elapsed().as_nanos() as u64 >= at;
        if passed {
            self.fired.store(true, Ordering::Relaxed);
        }
        passed
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

/// An open transaction's connection and when it was last used; `None` once it ended.
type TxSlot = Arc<Mutex<Option<(Conn, Instant)>>>;

/// One connection, and why the policy last refused a statement on it (SQLite itself only
/// says "not authorized").
struct Conn {
    conn: Connection,
    refusal: Arc<Mutex<Option<&'static str>>>,
    /// Set when a statement changed the connection's own state (a PRAGMA setting, a temporary
    /// object): the connection then serves no other caller.
    tainted: Arc<AtomicBool>,
    deadline: Arc<Deadline>,
    /// SQL texts already found to hold exactly one statement: their prepared statements are
    /// kept in the connection's cache, so a repeated statement is parsed once per connection.
    single: RefCell<HashSet<String>>,
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

pub struct SqlVolume {
    volume: Arc<Volume>,
    db_name: String,
    limits: SqlLimits,
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
        SqlVolume::with_limits(volume, SqlLimits::default())
    }

    pub fn with_limits(volume: Arc<Volume>, limits: SqlLimits) -> Result<SqlVolume, VolumeError> {
        let db_name = vfs::register_volume(&volume).map_err(VolumeError::internal)?;
        volume.set_transaction_limit(limits.max_transaction_bytes);
        Ok(SqlVolume {
            volume,
            db_name,
            limits,
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
                "the volume was deleted",
            ));
        }
        if self.is_switching() {
            return Err(VolumeError::new(
                ErrorCode::Unavailable,
                "the volume is being backtracked; the database is unavailable for a moment",
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
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES);
        let refusal = Arc::new(Mutex::new(None));
        let tainted = Arc::new(AtomicBool::new(false));
        let (why, changed) = (refusal.clone(), tainted.clone());
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match policy(&ctx) {
            Verdict::Allow => Authorization::Allow,
            Verdict::Taint => {
                changed.store(true, Ordering::Relaxed);
                Authorization::Allow
            }
            Verdict::Deny(reason) => {
                *why.lock().unwrap() = Some(reason);
                Authorization::Deny
            }
        }));
        let deadline = Arc::new(Deadline::default());
        let watch = deadline.clone();
        conn.progress_handler(PROGRESS_STEPS, Some(move || watch.passed()));
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Conn {
            conn,
            refusal,
            tainted,
            deadline,
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
                self.give_back(conn, &result);
                result
            }
            Some(id) => {
                let tx = self.transaction(id)?;
                let mut slot = tx.lock().unwrap();
                let Some((conn, last_used)) = slot.as_mut() else {
                    return Err(transaction_not_found(id));
                };
                *last_used = Instant::now();
                let result = self.run(conn, request);
                let timed_out = matches!(&result, Err(e) if e.code == ErrorCode::StatementTimeout);
                if !timed_out && !conn.conn.is_autocommit() {
                    return result;
                }
                // The transaction is over: SQLite rolled it back after an error (a full disk,
                // no memory), or it ran out of time; closing the connection rolls back the rest.
                *slot = None;
                drop(slot);
                self.transactions.lock().unwrap().remove(id);
                Err(match result {
                    Err(e) => e.rolled_back(),
                    Ok(_) => VolumeError::new(
                        ErrorCode::SqlError,
                        "the transaction was rolled back by the database engine",
                    ),
                })
            }
        }
    }

    /// Returns a connection to the pool, unless it must not serve another caller: its state
    /// was changed, or its call failed in a way that leaves memory or doubt behind.
    fn give_back(&self, conn: Conn, result: &Result<ExecuteResult, VolumeError>) {
        let failed_hard = matches!(result, Err(e) if matches!(
            e.code,
            ErrorCode::StatementTimeout | ErrorCode::StorageFull | ErrorCode::Internal
        ));
        if conn.tainted.load(Ordering::Relaxed) || failed_hard {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(conn);
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

    /// Runs the request's statement, within its time limit; a batch runs inside a savepoint,
    /// so that it takes effect entirely or not at all (in autocommit the savepoint is the
    /// whole transaction).
    fn run(&self, conn: &Conn, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
        check_transaction_statement(&request.sql, request.transaction_id.is_some())?;
        let run = self.next_run.fetch_add(1, Ordering::Relaxed);
        self.running
            .lock()
            .unwrap()
            .insert(run, conn.conn.get_interrupt_handle());
        *conn.refusal.lock().unwrap() = None;
        vfs::take_failure();
        conn.deadline.start(self.limits.statement_timeout);
        let result = if request.param_sets.is_some() {
            run_batch(conn, request)
        } else {
            execute_statement(conn, request)
        };
        conn.deadline.clear();
        self.running.lock().unwrap().remove(&run);
        result.map_err(|e| self.explain(conn, e))
    }

    /// Puts what SQLite could not say into an error: the time limit that stopped the
    /// statement, why the storage refused a write, or why the policy refused the statement.
    fn explain(&self, conn: &Conn, e: VolumeError) -> VolumeError {
        if conn.deadline.fired() {
            return VolumeError::new(
                ErrorCode::StatementTimeout,
                format!(
                    "the statement ran longer than the limit of {} and was stopped; it did \
                     not take effect",
                    describe_duration(self.limits.statement_timeout)
                ),
            );
        }
        match vfs::take_failure() {
            Some(VfsFailure::Commit(why)) => return why,
            Some(VfsFailure::TransactionTooLarge { limit_bytes }) => {
                return VolumeError::new(
                    ErrorCode::SqlError,
                    format!(
                        "the transaction writes more than the limit of {} MiB for one \
                         transaction; it did not take effect: write in smaller transactions",
                        limit_bytes >> 20
                    ),
                )
            }
            None => {}
        }
        match conn.refusal.lock().unwrap().take() {
            Some(reason) if e.code == ErrorCode::SqlError => {
                VolumeError::new(ErrorCode::SqlError, format!("{}: {reason}", e.message))
            }
            _ => e,
        }
    }

    /// Interrupts every statement running on the volume (the node is stopping).
    pub fn interrupt_running(&self) {
        for handle in self.running.lock().unwrap().values() {
            handle.interrupt();
        }
    }

    pub fn begin(&self) -> Result<String, VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        self.check_available()?;
        if self.transactions.lock().unwrap().len() >= MAX_TRANSACTIONS {
            return Err(VolumeError::new(
                ErrorCode::SqlError,
                format!(
                    "the database already has {MAX_TRANSACTIONS} open transactions; commit or \
                     roll back some first"
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
        vfs::take_failure();
        let result = conn
            .conn
            .execute_batch(verb)
            .map_err(|e| self.explain(&conn, sql_error(e)));
        if result.is_err() && !conn.conn.is_autocommit() {
            let _ = conn.conn.execute_batch("ROLLBACK");
        }
        result.map_err(VolumeError::rolled_back)
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
                "the volume is already being backtracked",
            ));
        }
        let result = (|| {
            let open = self.open_transactions();
            if open > 0 && !request.force {
                return Err(VolumeError::new(
                    ErrorCode::OpenTransactions,
                    format!("the volume has {open} open transaction(s); backtrack with force to roll them back"),
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
        self.interrupt_running();
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

/// What the policy makes of one action of a statement being prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// Allowed, but it changes the connection's own state: the connection serves no one else.
    Taint,
    /// Refused, and why.
    Deny(&'static str),
}

/// What a user's statement may do.
fn policy(ctx: &AuthContext<'_>) -> Verdict {
    match ctx.action {
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => pragma_policy(&pragma_name.to_ascii_lowercase(), pragma_value.is_some()),
        // VACUUM attaches a temporary database (empty name); nothing else may be attached.
        AuthAction::Attach { filename } if !filename.is_empty() => {
            Verdict::Deny("ATTACH of another database is not available")
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Verdict::Deny("extensions cannot be loaded")
        }
        // Temporary objects live in the connection; a temporary trigger on a table would fire
        // for whoever used the connection next.
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => Verdict::Taint,
        _ => Verdict::Allow,
    }
}

/// PRAGMAs: reading one changes nothing. Setting one is refused when it belongs to the storage
/// engine or would weaken durability or safety, or reach past the connection (the heap
/// limits, temp_store, threads); allowed without further ado when it is a query with an
/// argument or a setting stored in the database itself; and otherwise (a per-connection
/// setting such as foreign_keys, query_only, busy_timeout, cache_size) allowed on a connection
/// that is closed after the call.
fn pragma_policy(name: &str, with_value: bool) -> Verdict {
    const ENGINE: &[&str] = &[
        "journal_mode",
        "locking_mode",
        "page_size",
        "mmap_size",
        "temp_store_directory",
        "data_store_directory",
    ];
    const UNSAFE: &[&str] = &[
        "synchronous",
        "fullfsync",
        "checkpoint_fullfsync",
        "writable_schema",
        "schema_version",
        "hard_heap_limit",
        "soft_heap_limit",
        "temp_store",
        "threads",
    ];
    const SHARED: &[&str] = &[
        "table_info",
        "table_xinfo",
        "table_list",
        "index_info",
        "index_xinfo",
        "index_list",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
        "optimize",
        "incremental_vacuum",
        "user_version",
        "application_id",
        "auto_vacuum",
        "encoding",
    ];
    if !with_value || SHARED.contains(&name) {
        Verdict::Allow
    } else if ENGINE.contains(&name) {
        Verdict::Deny(
            "the journal mode, locking mode, page size and file mapping are the storage engine's",
        )
    } else if UNSAFE.contains(&name) {
        Verdict::Deny(
            "this setting would weaken durability or safety, or change the whole node \
             (synchronous, writable_schema, schema_version, heap limits, temp_store, threads)",
        )
    } else {
        Verdict::Taint
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
    let count = sets.len();
    for (set, params) in sets.into_iter().enumerate() {
        // In a batch, an error names the parameter set it came from.
        let in_set = |e: VolumeError| match &request.param_sets {
            Some(_) => VolumeError::new(
                e.code,
                format!("parameter set {} of {count}: {}", set + 1, e.message),
            ),
            None => e,
        };
        let bound =
            bind_order(&statement, params, request.param_names.as_deref()).map_err(in_set)?;
        let before = conn.total_changes();
        let mut rows = statement
            .query(rusqlite::params_from_iter(bound.into_iter().map(to_sql)))
            .map_err(|e| in_set(sql_error(e)))?;
        while let Some(row) = rows.next().map_err(|e| in_set(sql_error(e)))? {
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

/// Runs a batch inside a savepoint, so that all its parameter sets take effect or none does
/// (outside a transaction, the savepoint is the transaction).
fn run_batch(conn: &Conn, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
    conn.conn
        .execute_batch("SAVEPOINT backtrack_batch")
        .map_err(sql_error)?;
    let result = execute_statement(conn, request).and_then(|result| {
        conn.conn
            .execute_batch("RELEASE backtrack_batch")
            .map_err(sql_error)?;
        Ok(result)
    });
    if let Err(e) = result {
        let _ = conn
            .conn
            .execute_batch("ROLLBACK TO backtrack_batch; RELEASE backtrack_batch");
        return Err(VolumeError::new(
            e.code,
            format!("{}; no parameter set of the batch took effect", e.message),
        ));
    }
    result
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
/// and an interrupted statement was stopped by a backtrack or by the node stopping (a
/// statement stopped by its time limit is told apart by the caller, which knows the deadline).
fn sql_error(e: rusqlite::Error) -> VolumeError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &e {
        match failure.code {
            rusqlite::ErrorCode::SystemIoFailure => {
                return VolumeError::internal(format!("storage failure: {e}"))
            }
            rusqlite::ErrorCode::OperationInterrupted => {
                return VolumeError::new(
                    ErrorCode::Unavailable,
                    "the statement was interrupted because the volume is being backtracked (or \
                     the node is stopping); it did not take effect, retry it",
                )
            }
            rusqlite::ErrorCode::OutOfMemory => {
                return VolumeError::new(
                    ErrorCode::SqlError,
                    "out of memory: the statement needs more memory than the storage node \
                     allows SQL; it did not take effect",
                )
            }
            _ => {}
        }
    }
    VolumeError::new(ErrorCode::SqlError, e.to_string())
}

/// `10 s`, `1.5 s`, `250 ms`.
fn describe_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
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
