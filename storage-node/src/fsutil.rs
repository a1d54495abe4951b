//! Files the way both programs keep them: private to their owner (directories 0700, files
//! 0600: the data are the users' databases), written atomically where a crash must leave the
//! old or the new content, synced where durability depends on it; a full disk told apart
//! from other failures; and one owner per data directory ([`DirLock`]).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory the programs create.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of every file the programs create.
pub const PRIVATE_FILE: u32 = 0o600;

/// Creates `dir` and its missing parents as private directories (an existing one is left as
/// it is: the user chose it).
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(dir)
}

/// Options that create files private to their owner (`create`, `truncate` etc. left to the
/// caller).
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(PRIVATE_FILE);
    options
}

/// Creates (or truncates) a private file for writing.
pub fn create_private(path: &Path) -> io::Result<File> {
    private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Makes `root` and everything under it private: what an older version left readable by
/// others. Only for directories that are the programs' own (never a directory the user named);
/// entries that cannot be changed are left as they are (and logged).
pub fn make_tree_private(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
            PRIVATE_DIR
        } else if meta.is_file() {
            PRIVATE_FILE
        } else {
            continue;
        };
        if meta.permissions().mode() & 0o777 != mode {
            if let Err(e) = std::fs::set_permissions(&path, Permissions::from_mode(mode)) {
                tracing::warn!(path = %path.display(), error = %e, "cannot make private");
            }
        }
    }
}

/// Writes a file so that a crash leaves either the old or the new content: a temporary file,
/// synced, renamed over, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = written {
        // A full disk must not leave a half-written temporary file taking space.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether a failure is the disk (or the owner's quota) being full: a condition that ends
/// when space is freed, unlike a failing disk.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
}

/// The lock that makes a process the only owner of a data directory: an exclusive `flock` on
/// `DIR/LOCK`, held for the life of the process. The kernel releases it when the process
/// ends, however it ends, so a crash never leaves a stale lock behind. The file names the
/// holder (pid and program), so a refused second process can say who holds it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` (created, private, if missing) for `program`, or says which
    /// process holds it.
    pub fn acquire(dir: &Path, program: &str) -> io::Result<DirLock> {
        create_private_dir_all(dir)?;
        let path = dir.join("LOCK");
        let mut file = private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {holder}")
                };
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "the data directory {} is in use by {holder}: only one process may \
                         use a data directory; stop that one first, or give this one another \
                         data directory",
                        dir.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{} ({program})", std::process::id())?;
        file.sync_all()?;
        Ok(DirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("bt-fsutil-{name}-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn a_second_lock_on_a_directory_is_refused_with_the_holder_named() {
        let dir = temp_dir("lock");
        let first = DirLock::acquire(&dir, "first").unwrap();
        let second = DirLock::acquire(&dir, "second").unwrap_err();
        let message = second.to_string();
        assert!(message.contains(&dir.display().to_string()), "{message}");
        assert!(
            message.contains(&format!("process {} (first)", std::process::id())),
            "{message}"
        );
        drop(first);
        DirLock::acquire(&dir, "third").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn created_files_and_directories_are_private() {
        let dir = temp_dir("private").join("a/b");
        create_private_dir_all(&dir).unwrap();
        write_atomically(&dir.join("f"), b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), PRIVATE_DIR);
        assert_eq!(mode(&dir.join("f")), PRIVATE_FILE);
        std::fs::set_permissions(dir.join("f"), Permissions::from_mode(0o644)).unwrap();
        make_tree_private(dir.parent().unwrap());
        assert_eq!(mode(&dir.join("f")), PRIVATE_FILE);
        let _ = std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap());
    }
}
