//! The node's append-only log: every committed transaction of every volume, as one checksummed
//! record, in segment files under `log/`.
//!
//! Durability: committers queue their records; whichever finds the log idle leads the batch:
//! it waits briefly for the volumes that committed in the last batches to queue again, writes
//! everything queued with one write, durably, and only then answers each committer (group
//! commit: one flush serves many commits). A commit is acknowledged only once its
//! record is on disk. The active segment is written with O_DIRECT | O_DSYNC where the
//! filesystem takes it (probed at open): one request to the disk per batch, no copy into the
//! page cache and no writeback to wait for; elsewhere, through the page cache and fdatasync.
//! The newest writes stay in memory (RecentWrites) for readers. Segments are preallocated,
//! zero-filled, by a background thread, so a write carries data without also journaling a
//! new file size.
//!
//! Formats (little-endian; each starts with a magic number and a version):
//! - segment `NNNNNNNNNNNNNNNN.seg`: a 32-byte header (`BTLOGSG1`, version, segment number),
//!   then records. A record is `len:u32 | crc:u32 | body` where `crc` is the CRC-32C of the
//!   body XOR a salt derived from the segment number, and
//!   `body = kind:u8 | volume:[u8;16] | lsn:u64 | time_us:i64 | db_pages:u32 | count:u32 |
//!   payload`; a commit's payload is `count × (page_no:u32 | 4096 bytes)`, a backtrack's is
//!   `count` bytes of JSON.
//! - index `NNNNNNNNNNNNNNNN.idx`, written when a segment is sealed: every record's header and
//!   page numbers without the page data, with its own CRC, so a restart reads kilobytes per
//!   sealed segment instead of its 64 MiB.
//!
//! Recovery reads the sealed segments' indexes (rescanning a segment whose index is missing or
//! does not match), then scans the active segment record by record up to the first record
//! that is short, zero or fails its checksum, seals it there and continues in a new segment:
//! a torn tail is always an unacknowledged suffix, because answers are sent after the sync,
//! and no record is ever written after it. Nothing is guessed.
//!
//! Segments no longer needed are recycled as the next spare when nothing reads them, so a
//! node in its steady state writes no zeroes; a record's checksum is salted with its segment
//! number, so the old records of a recycled file never pass for new ones.

//!
//! - `record`: the records and their encoding.
//! - `commit`: group commit.
//! - `writer`: the active segment's writer, its rollovers and repairs.
//! - `recent`: the newest writes, in memory.
//! - `segment`: segment files, spares, recovery scans.
//! - `index`: sealed segments' indexes.

mod commit;
mod index;
mod recent;
mod record;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

pub use commit::Ticket;
pub use record::{
    encode_backtrack, encode_commit, page_offset, RecordKind, RecordMeta, PAGE_ENTRY, RECORD_HEADER,
};

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use self::commit::Queue;
use self::index::{read_index, write_index};
use self::recent::{RecentWrites, RECENT_BYTES};
use self::segment::{
    create_segment, has_own_header, index_path, preallocate, scan_segment, segment_header,
    segment_path, start_segment, SEGMENT_HEADER, SPARE, SPARE_TMP,
};
use self::writer::{open_writer, probe_direct, WriterState};
use crate::fsutil::{self, remove_if_exists, sync_dir};

/// The size of a page: of SQLite's pages, of the pages a commit record carries, and of every
/// write to a segment.
pub const PAGE_SIZE: usize = 4096;

/// Why an append failed. Cheap to clone: one failed write answers every committer of its batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The disk is full: the record was not written. The log repairs itself at the next
    /// append once space is freed.
    #[error("the change log's disk is full: {0}")]
    DiskFull(#[source] Arc<io::Error>),
    /// The log could not be written or synced: the record is not durable (and was never
    /// acknowledged). The next append first repairs what the failed write may have left.
    #[error("the change log failed: {0}")]
    Failed(#[source] Arc<io::Error>),
    #[error("the change log is closed")]
    Closed,
}

impl LogError {
    fn of(e: io::Error) -> LogError {
        if fsutil::is_disk_full(&e) {
            LogError::DiskFull(Arc::new(e))
        } else {
            LogError::Failed(Arc::new(e))
        }
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub segment: u64,
    pub offset: u64,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    /// Nanoseconds spent making batches durable (writing and syncing them).
    pub flush_ns: AtomicU64,
}

/// `try_repair` tries at most this often (each try writes and syncs).
const MIN_REPAIR_INTERVAL: Duration = Duration::from_millis(200);

struct Shared {
    dir: PathBuf,
    segment_bytes: u64,
    /// Read handles of every segment, by number.
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    /// Where each segment's records end.
    sizes: Mutex<BTreeMap<u64, u64>>,
    active: AtomicU64,
    /// Why the last write failed, until a write (or a repair) succeeds again.
    failure: Mutex<Option<LogError>>,
    /// When `try_repair` last tried.
    last_repair: Mutex<Option<Instant>>,
    stats: LogStats,
    queue: Mutex<Queue>,
    flushed: Condvar,
    writer: Mutex<WriterState>,
    /// Writes are direct and synchronous (O_DIRECT | O_DSYNC): durable when written.
    direct: bool,
    recent: Mutex<RecentWrites>,
    /// Asks the preallocator for a spare; `true` also when stopping.
    spare_wanted: (Mutex<(bool, bool)>, Condvar),
    /// Tests make this many batches fail without writing them.
    #[cfg(test)]
    fail_batches: AtomicU64,
}

pub struct Log {
    shared: Arc<Shared>,
    preallocator: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it, and returns every record found, in
    /// log order.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Log, Vec<RecordMeta>)> {
        Log::open_with(dir, segment_bytes, true)
    }

    /// Opens the log, writing with direct I/O only if `allow_direct` and the filesystem
    /// takes it.
    pub fn open_with(
        dir: &Path,
        segment_bytes: u64,
        allow_direct: bool,
    ) -> io::Result<(Log, Vec<RecordMeta>)> {
        let segment_bytes = segment_bytes.max(SEGMENT_HEADER + PAGE_ENTRY as u64);
        fsutil::create_private_dir_all(dir)?;
        remove_if_exists(&dir.join(SPARE_TMP))?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        // A segment whose own header never reached the disk (a crash right after a rollover;
        // a recycled file still shows its old header) holds nothing acknowledged: a segment's
        // header is synced before any record is written to it.
        if let Some(&last) = numbers.last() {
            if !has_own_header(&segment_path(dir, last), last)? {
                std::fs::remove_file(segment_path(dir, last))?;
                sync_dir(dir)?;
                numbers.pop();
            }
        }
        let mut records = Vec::new();
        let mut sizes = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(dir, number);
            let last = i + 1 == numbers.len();
            let indexed = if last { None } else { read_index(dir, number)? };
            let (found, end) = match indexed {
                Some(found) => found,
                None => {
                    // The segment that was active (or one sealed by a crash before its index
                    // was written) ends at its first record that is short, zero, or fails its
                    // checksum. It is sealed there: new records go to a new segment, so a torn
                    // or stale tail is never followed by records that would make it look live.
                    let (found, end) = scan_segment(&path, number)?;
                    write_index(dir, number, end, &found)?;
                    (found, end)
                }
            };
            sizes.insert(number, end);
            records.extend(found);
            files.insert(number, Arc::new(File::open(&path)?));
        }
        let active = numbers.last().map_or(1, |n| n + 1);
        if numbers.is_empty() {
            create_segment(dir, active, segment_bytes)?;
        } else {
            start_segment(dir, active)?;
        }
        files.insert(active, Arc::new(File::open(segment_path(dir, active))?));
        sizes.insert(active, SEGMENT_HEADER);
        let direct =
            allow_direct && probe_direct(&segment_path(dir, active), &segment_header(active));
        if !direct {
            tracing::info!(
                dir = %dir.display(),
                "the filesystem refuses direct I/O; the log writes through the page cache and fdatasync"
            );
        }
        let writer = WriterState {
            file: Arc::new(open_writer(&segment_path(dir, active), direct)?),
            segment: active,
            size: SEGMENT_HEADER,
            tail: segment_header(active),
            metas: Vec::new(),
            damage: None,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segment_bytes,
            files: RwLock::new(files),
            sizes: Mutex::new(sizes),
            active: AtomicU64::new(active),
            failure: Mutex::new(None),
            last_repair: Mutex::new(None),
            stats: LogStats::default(),
            queue: Mutex::new(Queue::default()),
            flushed: Condvar::new(),
            writer: Mutex::new(writer),
            direct,
            recent: Mutex::new(RecentWrites::new(RECENT_BYTES)),
            spare_wanted: (Mutex::new((true, false)), Condvar::new()),
            #[cfg(test)]
            fail_batches: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let preallocator = std::thread::Builder::new()
            .name("log-preallocator".into())
            .spawn(move || preallocate(&worker))?;
        Ok((
            Log {
                shared,
                preallocator: Mutex::new(Some(preallocator)),
            },
            records,
        ))
    }

    /// Reads `buf.len()` bytes at `offset` of `segment`.
    pub fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.read_recent(segment, offset, buf) {
            return Ok(());
        }
        let file = self.segment_file(segment).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("log segment {segment} is gone"),
            )
        })?;
        file.read_exact_at(buf, offset)
    }

    /// Reads `buf.len()` bytes at `offset` of `segment` from the recent writes kept in
    /// memory, if they are there.
    pub fn read_recent(&self, segment: u64, offset: u64, buf: &mut [u8]) -> bool {
        self.shared
            .recent
            .lock()
            .unwrap()
            .read(segment, offset, buf)
    }

    /// Whether writes bypass the page cache and are durable when written.
    pub fn is_direct(&self) -> bool {
        self.shared.direct
    }

    pub fn segment_file(&self, segment: u64) -> Option<Arc<File>> {
        self.shared.files.read().unwrap().get(&segment).cloned()
    }

    /// Every segment and where its records end, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.shared
            .sizes
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Bytes of records in the log.
    pub fn total_bytes(&self) -> u64 {
        self.shared.sizes.lock().unwrap().values().sum()
    }

    /// Bytes the segments take on disk (each is preallocated whole), not counting the spare.
    pub fn disk_bytes(&self) -> u64 {
        let sizes = self.shared.sizes.lock().unwrap();
        sizes
            .values()
            .map(|size| (*size).max(self.shared.segment_bytes))
            .sum()
    }

    pub fn active_segment(&self) -> u64 {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Deletes a sealed segment (never the active one). Readers that already hold its file
    /// keep reading it until they drop it.
    pub fn delete_segment(&self, segment: u64) -> io::Result<()> {
        if segment >= self.active_segment() {
            return Err(io::Error::other("the active segment cannot be deleted"));
        }
        let dir = &self.shared.dir;
        let file = self.shared.files.write().unwrap().remove(&segment);
        self.shared.sizes.lock().unwrap().remove(&segment);
        self.shared.recent.lock().unwrap().forget_segment(segment);
        remove_if_exists(&index_path(dir, segment))?;
        let path = segment_path(dir, segment);
        // Recycle the file as the next spare (no zeroes to write, as PostgreSQL does with its
        // WAL), unless a reader may still hold it: its old bytes are about to be overwritten.
        let unshared = file.is_some_and(|f| Arc::strong_count(&f) == 1);
        let whole = std::fs::metadata(&path).is_ok_and(|m| m.len() == self.shared.segment_bytes);
        if unshared && whole && !dir.join(SPARE).exists() {
            std::fs::rename(&path, dir.join(SPARE))?;
        } else {
            remove_if_exists(&path)?;
        }
        sync_dir(dir)
    }

    pub fn stats(&self) -> &LogStats {
        &self.shared.stats
    }

    /// Why the last write failed, if no write has succeeded since.
    pub fn failure(&self) -> Option<LogError> {
        self.shared.failure.lock().unwrap().clone()
    }

    /// Repairs what a failed write left, if anything, without waiting for the next commit;
    /// returns whether the log can be written. Maintenance calls it, so that the node's health
    /// recovers as soon as the disk has room again, even on a node nobody writes to.
    pub fn try_repair(&self) -> bool {
        if self.failure().is_none() {
            return true;
        }
        {
            let mut last = self.shared.last_repair.lock().unwrap();
            if last.is_some_and(|at| at.elapsed() < MIN_REPAIR_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let repaired = self.shared.writer.lock().unwrap().repair(&self.shared);
        match repaired {
            Ok(()) => {
                if self.shared.failure.lock().unwrap().take().is_some() {
                    tracing::info!("the change log can be written again");
                }
                true
            }
            Err(e) => {
                *self.shared.failure.lock().unwrap() = Some(LogError::of(e));
                false
            }
        }
    }

    /// Refuses new appends, lets the batch under way finish, and stops the preallocator.
    pub fn close(&self) {
        {
            let mut queue = self.shared.queue.lock().unwrap();
            queue.closed = true;
            while queue.flushing || !queue.pending.is_empty() {
                queue = self.shared.flushed.wait(queue).unwrap();
            }
        }
        {
            let (wanted, wake) = &self.shared.spare_wanted;
            wanted.lock().unwrap().1 = true;
            wake.notify_all();
        }
        if let Some(worker) = self.preallocator.lock().unwrap().take() {
            let _ = worker.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}
