//! A volume's file handle: SQLite's `sqlite3_file` with our state behind it, the lock-driven
//! state machine (snapshot at SHARED, stage from RESERVED, commit at COMMIT_PHASETWO), and
//! the I/O methods SQLite calls on it.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as ffi;

use super::{fail, lookup, VfsFailure};
use crate::api::ErrorCode;
use crate::engine::log::PAGE_SIZE;
use crate::engine::volume::{Pin, Snapshot, Volume};

/// Our `sqlite3_file`: SQLite's header, then a pointer to the handle's Rust state.
#[repr(C)]
pub(super) struct VolumeFile {
    base: ffi::sqlite3_file,
    state: *mut FileState,
}

struct FileState {
    volume: Arc<Volume>,
    /// For a view: the snapshot every lock takes, and no writing.
    fixed: Option<Snapshot>,
    lock: c_int,
    /// The state this handle reads, from SHARED until NONE.
    snapshot: Option<Snapshot>,
    /// Keeps `snapshot` readable: no fold moves past it while it is read.
    pin: Option<Pin>,
    /// The transaction being written, from RESERVED until commit or rollback.
    stage: Option<Stage>,
}

struct Stage {
    base: Snapshot,
    pages: BTreeMap<u32, Box<[u8]>>,
    db_pages: u32,
}

impl FileState {
    fn db_pages(&self) -> u32 {
        match (&self.stage, &self.snapshot) {
            (Some(stage), _) => stage.db_pages,
            (None, Some(snapshot)) => snapshot.db_pages,
            (None, None) => self.current().db_pages,
        }
    }

    fn read(&self, index: u32, out: &mut [u8]) -> c_int {
        if let Some(page) = self.stage.as_ref().and_then(|s| s.pages.get(&index)) {
            out.copy_from_slice(page);
            return ffi::SQLITE_OK;
        }
        let snapshot = match &self.snapshot {
            Some(s) => s.clone(),
            // SQLite reads the header once before it locks anything.
            None => self.current(),
        };
        match self.volume.read_page(&snapshot, index, out) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                tracing::error!(volume = %self.volume.id, page = index, error = %e, "page read failed");
                ffi::SQLITE_IOERR_READ
            }
        }
    }

    /// The snapshot a lock takes now: the volume's current one, or the view's.
    fn current(&self) -> Snapshot {
        match &self.fixed {
            Some(fixed) => fixed.clone(),
            None => self.volume.snapshot(),
        }
    }

    fn reserve(&mut self) -> c_int {
        if self.fixed.is_some() {
            // A view is read-only (and is opened so; this is the second line).
            return ffi::SQLITE_READONLY;
        }
        if self.stage.is_some() {
            return ffi::SQLITE_OK;
        }
        let snapshot = match &self.snapshot {
            Some(s) => s.clone(),
            None => return ffi::SQLITE_BUSY,
        };
        if !self.volume.try_reserve(&snapshot) {
            // SQLite tries again (with a new snapshot) once it is free.
            self.volume.wait_for_writer(super::WRITER_TURN);
            return ffi::SQLITE_BUSY;
        }
        self.stage = Some(Stage {
            db_pages: snapshot.db_pages,
            base: snapshot,
            pages: BTreeMap::new(),
        });
        ffi::SQLITE_OK
    }

    /// Ends the write transaction: a rollback unless `commit` made it durable already.
    fn end_write(&mut self) {
        if self.stage.take().is_some() {
            self.volume.release_reserve();
        }
    }

    fn commit(&mut self) -> c_int {
        let Some(stage) = &self.stage else {
            return ffi::SQLITE_OK;
        };
        match self
            .volume
            .commit_queued(&stage.base, &stage.pages, stage.db_pages)
        {
            Ok(snapshot) => {
                // This handle now reads after its commit: pinned before the writer lock goes,
                // so no later commit can be folded under it first.
                self.pin = Some(self.volume.pin_latest(&snapshot));
                super::note_seen(snapshot.head_lsn);
                self.snapshot = Some(snapshot);
                self.end_write();
                ffi::SQLITE_OK
            }
            Err(e) => {
                let full = e.code == ErrorCode::StorageFull;
                if full {
                    tracing::warn!(volume = %self.volume.id, "commit refused: the disk is full");
                } else {
                    tracing::error!(volume = %self.volume.id, error = %e, "commit failed");
                }
                fail(VfsFailure::Commit(e));
                if full {
                    ffi::SQLITE_FULL
                } else {
                    ffi::SQLITE_IOERR
                }
            }
        }
    }
}

impl Drop for FileState {
    fn drop(&mut self) {
        self.end_write();
    }
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// Runs a callback body, turning a panic into an I/O error instead of unwinding into C.
fn guarded(body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(ffi::SQLITE_IOERR)
}

/// The Rust state of one of our open files.
///
/// SAFETY (for callers): `file` must be a handle this VFS opened as a main database (its
/// `pMethods` is `IO_METHODS`, so SQLite calls these methods only on such handles) and not yet
/// closed; SQLite calls a handle's methods from one thread at a time, so the exclusive
/// reference does not alias.
unsafe fn state<'a>(file: *mut ffi::sqlite3_file) -> &'a mut FileState {
    // SAFETY: per the contract above, `file` is a live VolumeFile whose `state` came from
    // Box::into_raw in x_open and is freed only in x_close.
    unsafe { &mut *(*file.cast::<VolumeFile>()).state }
}

pub(super) unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: `vfs` is our registered VFS, whose pAppData is the default VFS (set in register).
    let default: *mut ffi::sqlite3_vfs = unsafe { (*vfs).pAppData.cast() };
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        if flags & (ffi::SQLITE_OPEN_MAIN_JOURNAL | ffi::SQLITE_OPEN_WAL) != 0 {
            // Atomicity is the log's; a journal or WAL file would bypass it.
            // SAFETY: `file` points to szOsFile writable bytes provided by SQLite.
            unsafe { (*file).pMethods = ptr::null() };
            return ffi::SQLITE_CANTOPEN;
        }
        // Temp databases and statement journals: the default VFS, in the same memory (our
        // szOsFile is at least the default's).
        // SAFETY: the default VFS's xOpen is called with its own VFS object and a buffer of at
        // least its szOsFile bytes, as SQLite itself would.
        return unsafe {
            ((*default).xOpen.expect("the default VFS opens files"))(
                default, name, file, flags, out_flags,
            )
        };
    }
    guarded(|| {
        let volume = if name.is_null() {
            None
        } else {
            // SAFETY: SQLite passes a NUL-terminated file name that lives while the file is open.
            let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or_default();
            lookup(name)
        };
        let Some((volume, fixed)) = volume else {
            // SAFETY: as above, `file` is SQLite's buffer for this handle.
            unsafe { (*file).pMethods = ptr::null() };
            return ffi::SQLITE_CANTOPEN;
        };
        let state = Box::new(FileState {
            volume,
            fixed,
            lock: ffi::SQLITE_LOCK_NONE,
            snapshot: None,
            pin: None,
            stage: None,
        });
        // SAFETY: `file` has room for a VolumeFile (szOsFile); we initialize both fields, and
        // the state pointer is reclaimed exactly once, in x_close.
        unsafe {
            let ours = file.cast::<VolumeFile>();
            (*ours).base.pMethods = &IO_METHODS;
            (*ours).state = Box::into_raw(state);
            if !out_flags.is_null() {
                *out_flags = flags;
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    guarded(|| {
        // SAFETY: `file` is one of ours (see `state`); taking the state back into a Box frees
        // it once, and the pointer is nulled so nothing can use it again.
        unsafe {
            let ours = file.cast::<VolumeFile>();
            if !(*ours).state.is_null() {
                drop(Box::from_raw((*ours).state));
                (*ours).state = ptr::null_mut();
            }
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    guarded(|| {
        // SAFETY: see `state`.
        let st = unsafe { state(file) };
        // SAFETY: SQLite provides `amount` writable bytes at `buf`.
        let out = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), amount as usize) };
        let index = (offset / PAGE_SIZE as i64) as u32;
        let within = (offset % PAGE_SIZE as i64) as usize;
        if within + out.len() > PAGE_SIZE {
            return ffi::SQLITE_IOERR_READ;
        }
        if index >= st.db_pages() {
            out.fill(0);
            return ffi::SQLITE_IOERR_SHORT_READ;
        }
        if within == 0 && out.len() == PAGE_SIZE {
            return st.read(index, out);
        }
        let mut page = vec![0u8; PAGE_SIZE];
        let rc = st.read(index, &mut page);
        out.copy_from_slice(&page[within..within + out.len()]);
        rc
    })
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    guarded(|| {
        // SAFETY: see `state`.
        let st = unsafe { state(file) };
        if amount as usize != PAGE_SIZE || offset % PAGE_SIZE as i64 != 0 {
            // Only 4 KiB pages: a different page_size never reaches the volume.
            return ffi::SQLITE_IOERR_WRITE;
        }
        let Some(stage) = st.stage.as_mut() else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: SQLite provides `amount` readable bytes at `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), PAGE_SIZE) };
        let index = (offset / PAGE_SIZE as i64) as u32;
        let limit = st.volume.transaction_limit_pages();
        if stage.pages.len() >= limit && !stage.pages.contains_key(&index) {
            // Staged pages live in memory until the commit: one transaction must not be able
            // to take the node's memory.
            fail(VfsFailure::TransactionTooLarge {
                limit_bytes: limit as u64 * PAGE_SIZE as u64,
            });
            return ffi::SQLITE_FULL;
        }
        stage.pages.insert(index, bytes.into());
        stage.db_pages = stage.db_pages.max(index + 1);
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guarded(|| {
        // SAFETY: see `state`.
        let st = unsafe { state(file) };
        let Some(stage) = st.stage.as_mut() else {
            return ffi::SQLITE_IOERR_TRUNCATE;
        };
        let pages = (size as u64).div_ceil(PAGE_SIZE as u64) as u32;
        stage.pages.retain(|&index, _| index < pages);
        stage.db_pages = pages;
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    // Durability comes at COMMIT_PHASETWO, from the log.
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    guarded(|| {
        // SAFETY: see `state`; `size` is SQLite's out-parameter.
        unsafe { *size = i64::from(state(file).db_pages()) * PAGE_SIZE as i64 };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(|| {
        // SAFETY: see `state`.
        let st = unsafe { state(file) };
        if st.snapshot.is_none() {
            match &st.fixed {
                Some(fixed) => st.snapshot = Some(fixed.clone()),
                None => {
                    let (snapshot, pin) = st.volume.snapshot_pinned();
                    super::note_seen(snapshot.head_lsn);
                    st.snapshot = Some(snapshot);
                    st.pin = Some(pin);
                }
            }
        }
        if level >= ffi::SQLITE_LOCK_RESERVED {
            let rc = st.reserve();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        st.lock = st.lock.max(level);
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded(|| {
        // SAFETY: see `state`.
        let st = unsafe { state(file) };
        if level < ffi::SQLITE_LOCK_RESERVED {
            st.end_write();
        }
        if level == ffi::SQLITE_LOCK_NONE {
            st.snapshot = None;
            st.pin = None;
        }
        st.lock = level;
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guarded(|| {
        // SAFETY: see `state`; `out` is SQLite's out-parameter.
        unsafe { *out = c_int::from(state(file).volume.is_reserved()) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    _arg: *mut c_void,
) -> c_int {
    if op != ffi::SQLITE_FCNTL_COMMIT_PHASETWO {
        return ffi::SQLITE_NOTFOUND;
    }
    guarded(|| {
        // SAFETY: see `state`.
        unsafe { state(file) }.commit()
    })
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    PAGE_SIZE as c_int
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}
