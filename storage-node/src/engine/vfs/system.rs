//! The VFS-level methods: what concerns a volume's name is answered here (a volume exists while
//! registered; its journals never do); the rest goes to the default VFS.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use libsqlite3_sys as ffi;

use super::{lookup, NAME_PREFIX};

/// The default VFS this one delegates to.
///
/// SAFETY (for callers): `vfs` must be our VFS object, whose pAppData is the default VFS.
unsafe fn default_vfs(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract, pAppData was set to the (static) default VFS in register().
    unsafe { (*vfs).pAppData.cast() }
}

fn is_ours(name: *const c_char) -> Option<String> {
    if name.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names.
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    name.starts_with(NAME_PREFIX).then(|| name.to_string())
}

pub(super) unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    if is_ours(name).is_some() {
        // Volumes (and their never-created journals) are deleted through the engine only.
        return ffi::SQLITE_OK;
    }
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default).xDelete.expect("the default VFS deletes"))(default, name, sync_dir)
    }
}

pub(super) unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    if let Some(name) = is_ours(name) {
        // A volume exists while registered; its journal, WAL and shm files never do.
        // SAFETY: `out` is SQLite's out-parameter.
        unsafe { *out = c_int::from(lookup(&name).is_some()) };
        return ffi::SQLITE_OK;
    }
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default).xAccess.expect("the default VFS answers access"))(default, name, flags, out)
    }
}

pub(super) unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    if let Some(name) = is_ours(name) {
        if name.len() + 1 > size as usize {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `out` has room for `size` bytes, checked above to hold the name and its NUL.
        unsafe {
            ptr::copy_nonoverlapping(name.as_ptr().cast::<c_char>(), out, name.len());
            *out.add(name.len()) = 0;
        }
        return ffi::SQLITE_OK;
    }
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default)
            .xFullPathname
            .expect("the default VFS resolves paths"))(default, name, size, out)
    }
}

pub(super) unsafe extern "C" fn x_dl_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
) -> *mut c_void {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        match (*default).xDlOpen {
            Some(f) => f(default, name),
            None => ptr::null_mut(),
        }
    }
}

pub(super) unsafe extern "C" fn x_dl_error(
    vfs: *mut ffi::sqlite3_vfs,
    size: c_int,
    out: *mut c_char,
) {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        if let Some(f) = (*default).xDlError {
            f(default, size, out)
        }
    }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

pub(super) unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<DlSym> {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        (*default).xDlSym.and_then(|f| f(default, handle, symbol))
    }
}

pub(super) unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        if let Some(f) = (*default).xDlClose {
            f(default, handle)
        }
    }
}

pub(super) unsafe extern "C" fn x_randomness(
    vfs: *mut ffi::sqlite3_vfs,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default)
            .xRandomness
            .expect("the default VFS has randomness"))(default, size, out)
    }
}

pub(super) unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default).xSleep.expect("the default VFS sleeps"))(default, micros)
    }
}

pub(super) unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        ((*default).xCurrentTime.expect("the default VFS tells time"))(default, out)
    }
}

pub(super) unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    size: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments.
    unsafe {
        let default = default_vfs(vfs);
        match (*default).xGetLastError {
            Some(f) => f(default, size, out),
            None => 0,
        }
    }
}

pub(super) unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: delegating to the default VFS with its own object and SQLite's arguments; the
    // default VFS (unix) is version 2 or later, so it has xCurrentTimeInt64.
    unsafe {
        let default = default_vfs(vfs);
        match (*default).xCurrentTimeInt64 {
            Some(f) => f(default, out),
            None => ffi::SQLITE_ERROR,
        }
    }
}
