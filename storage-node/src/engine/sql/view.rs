//! A view: a read-only SQLite connection to the volume as it was at an instant of its window
//! (`state(T)`), through the same VFS, policy and limits as every connection. It holds the
//! volume's [`Pin`] on T, so no fold can take away what it reads, and it sees nothing written
//! after T, the live database going on beside it. Backtrack previews and clones read through
//! it; so do tests comparing a past state with what was recorded then.

use rusqlite::{Connection, OpenFlags};

use super::statement::sql_error;
use super::{guarded, Conn, SqlVolume};
use crate::engine::vfs::{self, ViewName, VFS_NAME};
use crate::engine::volume::{Pin, Snapshot, VolumeError};

/// A read-only connection to `state(T)`. Dropping it closes the connection, then the name,
/// then the pin, in that order (the field order).
pub struct View {
    conn: Conn,
    snapshot: Snapshot,
    _name: ViewName,
    pin: Pin,
}

impl View {
    /// The connection, for queries: any write is refused (SQLITE_READONLY).
    pub fn connection(&self) -> &Connection {
        &self.conn.conn
    }

    /// The instant the view shows.
    pub fn time_us(&self) -> i64 {
        self.pin.time_us()
    }

    /// The state the view reads.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }
}

impl SqlVolume {
    /// A view of the volume at `time_us`: refused in the future, before the earliest
    /// restorable time, or while the volume is switching or deleted.
    pub fn view_at(&self, time_us: i64) -> Result<View, VolumeError> {
        self.check_available()?;
        let (snapshot, pin) = self.volume.view_at(time_us)?;
        let name =
            vfs::register_view(&self.volume, snapshot.clone()).map_err(VolumeError::internal)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags_and_vfs(name.as_str(), flags, VFS_NAME)
            .map_err(sql_error)?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;")
            .map_err(sql_error)?;
        Ok(View {
            conn: guarded(conn, &self.database)?,
            snapshot,
            _name: name,
            pin,
        })
    }
}
