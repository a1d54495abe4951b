//! What one SQL call may use: its time (a deadline a progress handler checks inside SQLite),
//! the size of one transaction, the size of one value, and SQLite's heap over the whole
//! process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// The longest string or BLOB a statement may build (SQLite's own limit is 1 GB, in memory).
pub(super) const MAX_VALUE_BYTES: i32 = 64 << 20;
/// How many virtual-machine steps SQLite runs between two looks at the statement's deadline.
pub(super) const PROGRESS_STEPS: i32 = 10_000;

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
pub(super) struct Deadline {
    /// Nanoseconds after [`epoch`]; 0 when no call runs.
    at: AtomicU64,
    fired: AtomicBool,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Deadline {
    pub(super) fn start(&self, timeout: Duration) {
        self.fired.store(false, Ordering::Relaxed);
        let at = (epoch().elapsed() + timeout).as_nanos() as u64;
        self.at.store(at.max(1), Ordering::Relaxed);
    }

    pub(super) fn clear(&self) {
        self.at.store(0, Ordering::Relaxed);
    }

    /// Called by SQLite's progress handler: `true` stops the statement.
    pub(super) fn passed(&self) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        let passed = at != 0 && epoch().elapsed().as_nanos() as u64 >= at;
        if passed {
            self.fired.store(true, Ordering::Relaxed);
        }
        passed
    }

    pub(super) fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }
}

/// `10 s`, `1.5 s`, `250 ms`.
pub(super) fn describe_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}
