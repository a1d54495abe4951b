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
//!
//! - `limits`: the limits and the deadline of a call.
//! - `policy`: what a statement may do.
//! - `statement`: running one statement on one connection.
//! - `transactions`: BeginTransaction, CommitTransaction, RollbackTransaction and the expiry
//!   of idle transactions.
//! - `view`: read-only connections to the volume as it was at an instant of its window.
//! - `preview`: what a backtrack would undo, from a view then and a view now.

mod functions;
mod limits;
mod policy;
mod preview;
mod statement;
mod transactions;
mod view;

pub use functions::{version_text, SERVER_VERSION};
pub use limits::{set_memory_limit, SqlLimits};
pub use policy::{comment_end, leading_words};
pub use statement::Described;
pub use view::View;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rusqlite::hooks::{AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::{Connection, InterruptHandle, OpenFlags};

use self::limits::{describe_duration, Deadline, MAX_VALUE_BYTES, PROGRESS_STEPS};
use self::policy::{check_transaction_statement, policy, Verdict};
use self::statement::{execute_statement, run_batch, sql_error};
use self::transactions::transaction_not_found;
use super::vfs::{self, VfsFailure, VFS_NAME};
use super::volume::{Volume, VolumeError};
use crate::api::{BacktrackOutcome, BacktrackRequest, ErrorCode, ExecuteRequest, ExecuteResult};

/// Results larger than this are refused; page them with LIMIT.
pub const MAX_RESULT_BYTES: usize = 16 << 20;
/// Open transactions per volume.
pub const MAX_TRANSACTIONS: usize = 64;
/// SQLite connections kept open per volume between calls. Opening one (its PRAGMAs, reading
/// the schema, an empty statement cache) costs more than a point query, so there are enough
/// for as many concurrent callers as a busy volume has (eight PostgreSQL connections, say);
/// their page caches together stay within the node's SQLite heap limit.
const IDLE_CONNECTIONS: usize = 16;
/// How often a statement that finds the writer lock taken tries again: each try first waits
/// (in the VFS) for the lock to be given back, at most `vfs::WRITER_TURN`, so together about
/// five seconds. SQLite's own busy timeout would sleep a millisecond or more between tries,
/// longer than a whole commit takes now that the lock goes at once to the next writer.
const BUSY_TRIES: i32 = 50;

fn try_again(tries: i32) -> bool {
    tries < BUSY_TRIES
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
    /// The name its PostgreSQL clients know its database by (`current_database()`).
    database: Arc<RwLock<String>>,
    /// Counts the backtracks that went ahead (and the deletion): sessions end on each.
    ended: tokio::sync::watch::Sender<u64>,
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
            database: Arc::default(),
            ended: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    /// Names the database, for `current_database()` on its connections.
    pub fn set_database(&self, name: &str) {
        *self.database.write().unwrap() = name.to_string();
    }

    /// Changes each time a backtrack of the volume goes ahead, and when it is deleted: the
    /// sessions reading it end then.
    pub fn sessions_ended(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
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
        guarded(conn, &self.database)
    }
}

/// A connection with the policy, the value limit, the deadline's progress handler and the
/// statement cache and the functions PostgreSQL clients call installed: every connection to a
/// volume, or to a view of one.
fn guarded(conn: Connection, database: &Arc<RwLock<String>>) -> Result<Conn, VolumeError> {
    conn.busy_handler(Some(try_again)).map_err(sql_error)?;
    functions::install(&conn, database.clone()).map_err(sql_error)?;
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

impl SqlVolume {
    /// Runs one statement (once, or once per parameter set), in autocommit or in a transaction.
    /// The parameters and result columns of `sql`, prepared on an idle connection and not run.
    pub fn describe(&self, sql: &str) -> Result<statement::Described, VolumeError> {
        self.check_available()?;
        let conn = match self.idle.lock().unwrap().pop() {
            Some(conn) => conn,
            None => self.open()?,
        };
        *conn.refusal.lock().unwrap() = None;
        let described =
            statement::describe_statement(&conn, sql).map_err(|e| self.explain(&conn, e));
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < IDLE_CONNECTIONS && !conn.tainted.load(Ordering::Relaxed) {
            idle.push(conn);
        }
        described
    }

    pub fn execute(&self, request: &ExecuteRequest) -> Result<ExecuteResult, VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        self.check_available()?;
        vfs::take_seen();
        match &request.transaction_id {
            None => {
                let conn = match self.idle.lock().unwrap().pop() {
                    Some(conn) => conn,
                    None => self.open()?,
                };
                let result = self.run(&conn, request);
                let result = self.settled(result);
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
                let settled = self.settled(Ok(()));
                if settled.is_ok() && !timed_out && !conn.conn.is_autocommit() {
                    return result;
                }
                // What it read was undone: the transaction cannot go on.
                let result = settled.and(result);
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

    /// A call's answer, once what it read or wrote is durable; or why it never will be (a
    /// commit it saw was undone: the answer would have been built on it).
    fn settled<T>(&self, result: Result<T, VolumeError>) -> Result<T, VolumeError> {
        let seen = vfs::take_seen();
        self.volume.settle_through(seen)?;
        result
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
    /// Backtracks the volume: refuses new calls, interrupts and waits for running statements,
    /// closes every connection (rolling back open transactions when `force` allows it), then
    /// switches. Idempotent by backtrack id.
    pub fn backtrack(&self, request: &BacktrackRequest) -> Result<BacktrackOutcome, VolumeError> {
        if let Some(done) = self.volume.recorded_backtrack(&request.backtrack_id) {
            return Ok(done);
        }
        self.check_available()?;
        let Some(_switching) = Switching::start(&self.switching) else {
            return Err(VolumeError::new(
                ErrorCode::Unavailable,
                "the volume is already being backtracked",
            ));
        };
        let open = self.open_transactions();
        if open > 0 && !request.force {
            return Err(VolumeError::new(
                ErrorCode::OpenTransactions,
                format!("the volume has {open} open transaction(s); backtrack with force to roll them back"),
            ));
        }
        self.ended.send_modify(|n| *n += 1);
        let rolled_back = self.close_all();
        self.volume.backtrack(request, rolled_back)
    }

    /// Stops everything for good: the volume is being deleted.
    pub fn shut(&self) {
        self.switching.store(true, Ordering::Release);
        self.ended.send_modify(|n| *n += 1);
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

/// The `switching` flag, set while this lives (a panic included): SQL calls are refused
/// meanwhile.
struct Switching<'a>(&'a AtomicBool);

impl<'a> Switching<'a> {
    /// Sets the flag; `None` if it was set already (a backtrack is under way).
    fn start(flag: &'a AtomicBool) -> Option<Switching<'a>> {
        (!flag.swap(true, Ordering::AcqRel)).then_some(Switching(flag))
    }
}

impl Drop for Switching<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Drop for SqlVolume {
    fn drop(&mut self) {
        vfs::unregister_volume(&self.volume);
    }
}
