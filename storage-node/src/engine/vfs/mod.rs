//! The SQLite VFS `backtrack`: SQLite's main database file, served from a volume. This is the
//! only module with `unsafe` code; every block says why it is sound.
//!
//! A file handle is a small state machine driven by SQLite's locks:
//! - SHARED: the handle pins the volume's current snapshot and reads pages as of it, so readers
//!   never see a commit land under them (snapshot isolation, as in WAL mode).
//! - RESERVED: the handle takes the volume's single writer lock (refused with SQLITE_BUSY when
//!   another connection writes or when the pinned snapshot is no longer the latest) and from
//!   then on stages every page SQLite writes, spilled cache pages included.
//! - `SQLITE_FCNTL_COMMIT_PHASETWO` (sent on commit only, never on rollback): the staged pages
//!   become one log record, durable before SQLite is answered, then visible.
//! - Unlocking below RESERVED without that signal is a rollback: the stage is dropped.
//!
//! The connection must use `journal_mode=MEMORY` (no journal file: atomicity is the log's).
//! Main journals and WAL files are refused; temp databases and statement journals go to the
//! default VFS. Volumes are opened by the name `btvol:<uuid>` through a registry; a view (the
//! volume fixed at a past instant, read-only) by `btvol:<uuid>@<n>`: its handle reads that
//! snapshot under every lock and refuses RESERVED with SQLITE_READONLY.
//!
//! - `file`: a volume's file handle, its state machine and its I/O methods.
//! - `system`: the VFS-level methods, delegated to the default VFS for what is not a volume.

#![allow(unsafe_code)]

mod file;
mod system;

use std::collections::HashMap;
use std::ffi::{c_int, CString};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use libsqlite3_sys as ffi;

use self::file::{x_open, VolumeFile};
use self::system::*;
use super::timeline::Lsn;
use super::volume::{Snapshot, Volume, VolumeError};

pub const VFS_NAME: &str = "backtrack";
const NAME_PREFIX: &str = "btvol:";

/// Why a call into this VFS failed, beyond the code SQLite gets: SQLite only reports
/// "database or disk is full" or "disk I/O error", so the SQL layer reads the reason from here.
/// SQLite calls the VFS on the thread that runs the statement, so the reason is kept per
/// thread; the SQL layer clears it before each call and takes it after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VfsFailure {
    /// The transaction staged more pages than a volume takes in one transaction.
    TransactionTooLarge { limit_bytes: u64 },
    /// The commit failed in the volume (a full disk, a failed write).
    Commit(VolumeError),
}

thread_local! {
    static FAILURE: std::cell::RefCell<Option<VfsFailure>> = const { std::cell::RefCell::new(None) };
}

fn fail(why: VfsFailure) {
    FAILURE.with(|f| *f.borrow_mut() = Some(why));
}

/// Takes (and clears) the reason of this thread's last VFS failure.
pub fn take_failure() -> Option<VfsFailure> {
    FAILURE.with(|f| f.borrow_mut().take())
}

/// The longest a statement waits for the writer lock before SQLite's busy handler decides
/// whether it tries again.
pub const WRITER_TURN: std::time::Duration = std::time::Duration::from_millis(100);

thread_local! {
    /// The newest LSN this thread's connections read or committed since `take_seen`: what a
    /// call must see durable before it answers (see `Volume::settle_through`).
    static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn note_seen(lsn: Lsn) {
    SEEN.with(|seen| seen.set(seen.get().max(lsn.0)));
}

/// Takes (and clears) the newest LSN this thread's connections read or committed.
pub fn take_seen() -> Lsn {
    Lsn(SEEN.with(|seen| seen.replace(0)))
}

/// What a name opens: a volume, as it is (read-write), or fixed at a view's snapshot
/// (read-only).
#[derive(Clone)]
struct Entry {
    volume: Weak<Volume>,
    fixed: Option<Snapshot>,
}

fn registry() -> &'static RwLock<HashMap<String, Entry>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The name SQLite opens a volume by.
pub fn db_name(volume: &Volume) -> String {
    format!("{NAME_PREFIX}{}", volume.uuid)
}

/// Makes `volume` openable by SQLite (and registers the VFS on first use).
pub fn register_volume(volume: &Arc<Volume>) -> Result<String, String> {
    ensure_registered()?;
    let name = db_name(volume);
    registry().write().unwrap().insert(
        name.clone(),
        Entry {
            volume: Arc::downgrade(volume),
            fixed: None,
        },
    );
    Ok(name)
}

pub fn unregister_volume(volume: &Volume) {
    registry().write().unwrap().remove(&db_name(volume));
}

/// A name that opens `volume` fixed at `snapshot`, read-only, until the returned guard is
/// dropped: `btvol:<uuid>@<n>`.
pub fn register_view(volume: &Arc<Volume>, snapshot: Snapshot) -> Result<ViewName, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    ensure_registered()?;
    let name = format!(
        "{}@{}",
        db_name(volume),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    registry().write().unwrap().insert(
        name.clone(),
        Entry {
            volume: Arc::downgrade(volume),
            fixed: Some(snapshot),
        },
    );
    Ok(ViewName(name))
}

/// A view's name, registered while this lives.
pub struct ViewName(String);

impl ViewName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for ViewName {
    fn drop(&mut self) {
        registry().write().unwrap().remove(&self.0);
    }
}

fn lookup(name: &str) -> Option<(Arc<Volume>, Option<Snapshot>)> {
    let entry = registry().read().unwrap().get(name).cloned()?;
    Some((entry.volume.upgrade()?, entry.fixed))
}

/// Registers the VFS with SQLite, once per process.
pub fn ensure_registered() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register).clone()
}

fn register() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find with a null name returns the default VFS, a static object
    // owned by SQLite for the life of the process (or null, checked below).
    let default = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    if default.is_null() {
        return Err("SQLite has no default VFS".into());
    }
    // SAFETY: `default` is non-null and points to SQLite's VFS object, which is never freed.
    let (default_size, max_path) = unsafe { ((*default).szOsFile, (*default).mxPathname) };
    let name = CString::new(VFS_NAME).expect("no NUL in the name");
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: default_size.max(std::mem::size_of::<VolumeFile>() as c_int),
        mxPathname: max_path,
        pNext: ptr::null_mut(),
        zName: name.into_raw(),
        pAppData: default.cast(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    });
    // SAFETY: the VFS object is leaked, so it outlives every use SQLite makes of it; its name
    // is a leaked C string; registering (not as default) is allowed at any time.
    let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_vfs_register failed: {rc}"))
    }
}
