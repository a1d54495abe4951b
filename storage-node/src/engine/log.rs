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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::fsutil::{self, remove_if_exists, sync_dir, write_atomically};

pub const PAGE_SIZE: usize = 4096;
const SEGMENT_MAGIC: &[u8; 8] = b"BTLOGSG1";
const INDEX_MAGIC: &[u8; 8] = b"BTLOGIX1";
const FORMAT_VERSION: u32 = 1;
const SEGMENT_HEADER: u64 = 32;
/// `len | crc | kind | volume | lsn | time | db_pages | count`.
pub const RECORD_HEADER: usize = 4 + 4 + 1 + 16 + 8 + 8 + 4 + 4;
/// Where a record's volume id is: after its length, checksum and kind.
const VOLUME_BYTES: std::ops::Range<usize> = 9..25;
/// One page in a commit record: its number and its bytes.
pub const PAGE_ENTRY: usize = 4 + PAGE_SIZE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Commit = 1,
    Backtrack = 2,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Commit),
            2 => Some(RecordKind::Backtrack),
            _ => None,
        }
    }
}

/// A record's description, without its page data: what recovery and the index need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub volume: Uuid,
    pub lsn: u64,
    pub time_us: i64,
    pub db_pages: u32,
    pub segment: u64,
    /// Where the record starts in its segment.
    pub offset: u64,
    /// The record's size in bytes, header included.
    pub len: u32,
    /// A commit's page numbers, in record order.
    pub pages: Vec<u32>,
    /// A backtrack's payload.
    pub payload: Vec<u8>,
}

impl RecordMeta {
    /// Where the bytes of the `i`-th page of a commit record are.
    pub fn page_offset(&self, i: usize) -> u64 {
        page_offset(self.offset, i)
    }
}

pub fn page_offset(record_offset: u64, i: usize) -> u64 {
    record_offset + (RECORD_HEADER + i * PAGE_ENTRY + 4) as u64
}

/// Encodes a commit record of `pages` (page number and exactly PAGE_SIZE bytes each).
pub fn encode_commit(
    volume: Uuid,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    pages: &[(u32, &[u8])],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + pages.len() * PAGE_ENTRY);
    header(
        &mut out,
        RecordKind::Commit,
        volume,
        lsn,
        time_us,
        db_pages,
        pages.len() as u32,
    );
    for (page_no, bytes) in pages {
        assert_eq!(bytes.len(), PAGE_SIZE, "pages are whole");
        out.extend_from_slice(&page_no.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    seal(out)
}

pub fn encode_backtrack(
    volume: Uuid,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    header(
        &mut out,
        RecordKind::Backtrack,
        volume,
        lsn,
        time_us,
        db_pages,
        payload.len() as u32,
    );
    out.extend_from_slice(payload);
    seal(out)
}

fn header(
    out: &mut Vec<u8>,
    kind: RecordKind,
    volume: Uuid,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    count: u32,
) {
    out.extend_from_slice(&[0; 8]); // len and crc, filled by seal()
    out.push(kind as u8);
    out.extend_from_slice(volume.as_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&time_us.to_le_bytes());
    out.extend_from_slice(&db_pages.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

fn seal(mut record: Vec<u8>) -> Vec<u8> {
    let len = (record.len() - 4) as u32;
    let crc = crc32c::crc32c(&record[8..]);
    record[0..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

/// Parses a whole record (as written) into its description.
fn describe(record: &[u8], segment: u64, offset: u64) -> Option<RecordMeta> {
    if record.len() < RECORD_HEADER {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(record[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(record[i..i + 8].try_into().unwrap());
    let kind = RecordKind::from_byte(record[8])?;
    let volume = Uuid::from_slice(&record[VOLUME_BYTES]).ok()?;
    let count = u32_at(45) as usize;
    let (pages, payload) = match kind {
        RecordKind::Commit => {
            if record.len() != RECORD_HEADER + count * PAGE_ENTRY {
                return None;
            }
            let pages = (0..count)
                .map(|i| u32_at(RECORD_HEADER + i * PAGE_ENTRY))
                .collect();
            (pages, Vec::new())
        }
        RecordKind::Backtrack => {
            if record.len() != RECORD_HEADER + count {
                return None;
            }
            (Vec::new(), record[RECORD_HEADER..].to_vec())
        }
    };
    Some(RecordMeta {
        kind,
        volume,
        lsn: u64_at(25),
        time_us: u64_at(33) as i64,
        db_pages: u32_at(41),
        segment,
        offset,
        len: record.len() as u32,
        pages,
        payload,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// The disk is full: the record was not written. The log repairs itself at the next
    /// append once space is freed.
    DiskFull(String),
    /// The log could not be written or synced: the record is not durable (and was never
    /// acknowledged). The next append first repairs what the failed write may have left.
    Failed(String),
    Closed,
}

impl LogError {
    fn of(e: &io::Error) -> LogError {
        if fsutil::is_disk_full(e) {
            LogError::DiskFull(e.to_string())
        } else {
            LogError::Failed(e.to_string())
        }
    }
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::DiskFull(why) => write!(f, "the change log's disk is full: {why}"),
            LogError::Failed(why) => write!(f, "the change log failed: {why}"),
            LogError::Closed => f.write_str("the change log is closed"),
        }
    }
}

impl std::error::Error for LogError {}

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

/// A zero-filled segment made ahead of time, renamed into place at the next rollover.
const SPARE: &str = "spare.seg";
const SPARE_TMP: &str = "spare.tmp";

/// A committer waiting for its record: the leader that writes the record sets the answer,
/// then wakes the committer, which reads it without taking the queue's lock.
struct Waiter {
    answer: OnceLock<Result<Appended, LogError>>,
    thread: Thread,
}

/// Committers waiting for their records to be durable.
#[derive(Default)]
struct Queue {
    /// Records not yet taken by a leader, with their committers.
    pending: Vec<(Vec<u8>, Arc<Waiter>)>,
    /// A batch is being made durable right now.
    flushing: bool,
    closed: bool,
    /// The volumes of the last two batches (committers that are likely to come back).
    recent_volumes: [Vec<[u8; 16]>; 2],
    /// A leader gathering committers, with how many volumes it waits for.
    gatherer: Option<(Thread, usize)>,
    /// How long the last batch took to make durable.
    last_flush: Duration,
    /// Tests set how long a leader gathers, instead of half the last flush.
    #[cfg(test)]
    gather_for: Option<Duration>,
}

impl Queue {
    /// How many distinct volumes have records queued.
    fn queued_volumes(&self) -> usize {
        let mut seen: Vec<[u8; 16]> = Vec::with_capacity(self.pending.len());
        for (record, _) in &self.pending {
            let volume = volume_of(record);
            if !seen.contains(&volume) {
                seen.push(volume);
            }
        }
        seen.len()
    }

    /// How many volumes committed in the last two batches: the batch a leader gathers for.
    fn expected_volumes(&self) -> usize {
        let [older, newer] = &self.recent_volumes;
        newer.len() + older.iter().filter(|v| !newer.contains(v)).count()
    }

    /// How long a leader waits for them: half the last flush, so the disk idles at most
    /// that long to save a whole flush for the latecomers.
    fn gathering_time(&self) -> Duration {
        #[cfg(test)]
        if let Some(wait) = self.gather_for {
            return wait;
        }
        (self.last_flush / 2).min(MAX_GATHERING)
    }

    /// Takes the queued records as the next batch, remembering their volumes.
    fn take_batch(&mut self) -> (Vec<Vec<u8>>, Vec<Arc<Waiter>>) {
        let volumes = self.pending.iter().map(|(r, _)| volume_of(r)).collect();
        self.recent_volumes.swap(0, 1);
        self.recent_volumes[1] = volumes;
        std::mem::take(&mut self.pending).into_iter().unzip()
    }
}

/// `try_repair` tries at most this often (each try writes and syncs).
const MIN_REPAIR_INTERVAL: Duration = Duration::from_millis(200);

/// The longest a leader waits for committers, whatever the disk's speed.
const MAX_GATHERING: Duration = Duration::from_millis(1);

/// The volume a record belongs to.
fn volume_of(record: &[u8]) -> [u8; 16] {
    let mut volume = [0; 16];
    volume.copy_from_slice(&record[VOLUME_BYTES]);
    volume
}

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

    /// Appends a record and returns once it is durable.
    ///
    /// Group commit without a writer thread: a committer that finds no batch under way
    /// becomes the leader: it waits briefly for the committers of the last batches to queue
    /// again (see `gather`), writes every record queued with one write, durably, and hands
    /// each committer its answer; the others wait, and whoever queued meanwhile forms the
    /// next batch. A lone committer pays no thread handoff and no wait. Every wakeup is one a
    /// thread needs (on a virtual machine each costs an interrupt to the other CPU): the next
    /// leader first, so the disk is idle as briefly as can be, then each committer once, with
    /// its answer in hand, so it need not take the queue's lock again.
    ///
    /// One batch at a time: measured on 2 vCPUs with 8 writers, a second batch in flight
    /// split the batches (2.7–3.0 records per write) and cost more than it overlapped; so did
    /// a blind commit delay, where waiting for known peers (`gather`) gains.
    pub fn append(&self, record: Vec<u8>) -> Result<Appended, LogError> {
        let shared = &self.shared;
        let me = Arc::new(Waiter {
            answer: OnceLock::new(),
            thread: std::thread::current(),
        });
        let mut queue = shared.queue.lock().unwrap();
        if queue.closed {
            return Err(LogError::Closed);
        }
        queue.pending.push((record, me.clone()));
        if let Some((leader, want)) = &queue.gatherer {
            if queue.queued_volumes() >= *want {
                leader.unpark();
                queue.gatherer = None;
            }
        }
        loop {
            if let Some(answer) = me.answer.get() {
                return answer.clone();
            }
            let mine_pending = queue.pending.iter().any(|(_, w)| Arc::ptr_eq(w, &me));
            if !mine_pending || queue.flushing {
                // Our record is being flushed by another leader, or a batch is under way:
                // wait to be woken (parking tolerates spurious wakeups; the loop checks).
                drop(queue);
                std::thread::park();
                if let Some(answer) = me.answer.get() {
                    return answer.clone();
                }
                queue = shared.queue.lock().unwrap();
                continue;
            }
            queue.flushing = true;
            queue = gather(shared, queue);
            let (batch, waiters) = queue.take_batch();
            drop(queue);
            let started = Instant::now();
            let (durable, failed) = flush(shared, &batch);
            let took = started.elapsed();
            // The durable prefix of the batch is acknowledged; the rest hears why not. The
            // next batch repairs what the failed write may have left, so once the disk has
            // room (or answers again) commits go on without a restart.
            let failure = failed.as_ref().map(LogError::of);
            match &failure {
                Some(e) => {
                    let first = shared.failure.lock().unwrap().replace(e.clone()).is_none();
                    if first {
                        tracing::error!(error = %e, "a write to the change log failed; commits fail until it succeeds again");
                    }
                }
                None => {
                    if shared.failure.lock().unwrap().take().is_some() {
                        tracing::info!("the change log is written again");
                    }
                }
            }
            let mut answers: Vec<Result<Appended, LogError>> =
                durable.into_iter().map(Ok).collect();
            if let Some(e) = failure {
                answers.resize(batch.len(), Err(e));
            }
            queue = shared.queue.lock().unwrap();
            queue.flushing = false;
            queue.last_flush = took;
            let next = queue.pending.first().map(|(_, next)| next.clone());
            if queue.closed {
                shared.flushed.notify_all();
            }
            drop(queue);
            if let Some(next) = next {
                next.thread.unpark();
            }
            for (waiter, answer) in waiters.iter().zip(answers) {
                let _ = waiter.answer.set(answer);
                if !Arc::ptr_eq(waiter, &me) {
                    waiter.thread.unpark();
                }
            }
            queue = shared.queue.lock().unwrap();
        }
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
                *self.shared.failure.lock().unwrap() = Some(LogError::of(&e));
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

/// The leader's wait for the committers of the last two batches to queue again, up to
/// `gathering_time`: with 8 writers on 2 vCPUs this makes about 7.7 records per durable
/// write instead of 4.2 (the writers otherwise settle into two alternating halves, each
/// waiting for the other's flush). A lone committer, or one whose peers went idle, is never
/// kept waiting for more than that.
fn gather<'a>(shared: &'a Shared, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
    let want = queue.expected_volumes();
    let deadline = Instant::now() + queue.gathering_time();
    loop {
        let now = Instant::now();
        if queue.closed || now >= deadline || queue.queued_volumes() >= want {
            queue.gatherer = None;
            return queue;
        }
        queue.gatherer = Some((std::thread::current(), want));
        drop(queue);
        std::thread::park_timeout(deadline - now);
        queue = shared.queue.lock().unwrap();
    }
}

/// Makes a batch durable: one direct, synchronous write, or (where the filesystem refuses
/// direct I/O) a write through the page cache, then fdatasync. Returns where each durable
/// record went (a prefix of the batch: all of it unless a write failed) and the failure that
/// stopped the rest.
fn flush(shared: &Shared, batch: &[Vec<u8>]) -> (Vec<Appended>, Option<io::Error>) {
    let started = Instant::now();
    let (placed, failed) = shared.writer.lock().unwrap().write_batch(shared, batch);
    let stats = &shared.stats;
    stats
        .flush_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    stats
        .records
        .fetch_add(placed.len() as u64, Ordering::Relaxed);
    stats.bytes.fetch_add(
        batch[..placed.len()].iter().map(|r| r.len() as u64).sum(),
        Ordering::Relaxed,
    );
    if !placed.is_empty() {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
    }
    (placed, failed.err())
}

/// Bytes bound for the active segment, in a buffer whose start is page-aligned, as direct
/// I/O requires of memory. It is sized up front and never grows past that, so it never moves.
struct Staged {
    buffer: Vec<u8>,
    /// Where the aligned bytes begin in `buffer`.
    start: usize,
}

impl Staged {
    /// A buffer holding `tail`, with room for `more` bytes and the padding of a last page.
    fn new(tail: &[u8], more: usize) -> Staged {
        let mut buffer = Vec::with_capacity(tail.len() + more + 2 * WRITE_PAGE);
        let start = (WRITE_PAGE - buffer.as_ptr() as usize % WRITE_PAGE) % WRITE_PAGE;
        buffer.resize(start, 0);
        buffer.extend_from_slice(tail);
        Staged { buffer, start }
    }

    fn len(&self) -> usize {
        self.buffer.len() - self.start
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Appends a record, salting its checksum with the segment's number.
    fn push_record(&mut self, record: &[u8], segment: u64) {
        let at = self.buffer.len();
        self.buffer.extend_from_slice(record);
        salt_crc(&mut self.buffer[at + 4..at + 8], segment);
    }

    /// Zero-pads to a whole number of pages, and makes sure the start is still aligned (were
    /// the buffer ever to move, its bytes are copied to an aligned one).
    fn pad_to_page(&mut self) {
        let len = self.len().next_multiple_of(WRITE_PAGE);
        self.buffer.resize(self.start + len, 0);
        if !(self.buffer.as_ptr() as usize + self.start).is_multiple_of(WRITE_PAGE) {
            *self = Staged::new(self.bytes(), 0);
        }
    }

    /// The memory it holds.
    fn footprint(&self) -> usize {
        self.buffer.capacity()
    }
}

/// The newest writes to the log, kept in memory so that reading a recent page version is a
/// copy rather than a disk read (direct writes leave nothing in the page cache). The oldest
/// are dropped first, past `capacity` bytes of memory.
struct RecentWrites {
    capacity: usize,
    /// By segment and the offset the write started at; a later write that starts on the same
    /// page replaces the earlier one (it holds the same bytes, and more).
    chunks: BTreeMap<(u64, u64), (u64, Arc<Staged>)>,
    /// Keys in the order written, with the generation that put them there.
    order: std::collections::VecDeque<((u64, u64), u64)>,
    generation: u64,
    bytes: usize,
}

/// How many bytes of recent writes are kept in memory.
const RECENT_BYTES: usize = 32 << 20;

impl RecentWrites {
    fn new(capacity: usize) -> Self {
        RecentWrites {
            capacity,
            chunks: BTreeMap::new(),
            order: Default::default(),
            generation: 0,
            bytes: 0,
        }
    }

    fn insert(&mut self, segment: u64, start: u64, staged: Arc<Staged>) {
        self.generation += 1;
        self.bytes += staged.footprint();
        if let Some((_, old)) = self
            .chunks
            .insert((segment, start), (self.generation, staged))
        {
            self.bytes -= old.footprint();
        }
        self.order.push_back(((segment, start), self.generation));
        while self.bytes > self.capacity {
            let Some((key, generation)) = self.order.pop_front() else {
                break;
            };
            if self.chunks.get(&key).is_some_and(|(g, _)| *g == generation) {
                if let Some((_, old)) = self.chunks.remove(&key) {
                    self.bytes -= old.footprint();
                }
            }
        }
    }

    /// Copies `buf.len()` bytes at `offset` of `segment` if one write held them all.
    fn read(&self, segment: u64, offset: u64, buf: &mut [u8]) -> bool {
        let Some((&(_, start), (_, staged))) = self
            .chunks
            .range((segment, 0)..=(segment, offset))
            .next_back()
        else {
            return false;
        };
        let from = (offset - start) as usize;
        match staged.bytes().get(from..from + buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    fn forget_segment(&mut self, segment: u64) {
        self.forget_from(segment, 0);
    }

    /// Forgets the writes to `segment` that started at `offset` or later.
    fn forget_from(&mut self, segment: u64, offset: u64) {
        let keys: Vec<(u64, u64)> = self
            .chunks
            .range((segment, offset)..=(segment, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some((_, old)) = self.chunks.remove(&key) {
                self.bytes -= old.footprint();
            }
        }
    }
}

/// Opens a segment for writing: with O_DIRECT | O_DSYNC when `direct` (each write is durable
/// when it returns, and skips the page cache: no copy into it, no writeback to wait for, one
/// request to the disk), else buffered, to be synced with fdatasync.
fn open_writer(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fsutil::private_options();
    options.read(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
    }
    options.open(path)
}

/// Whether the log's directory takes direct, synchronous writes: probed by rewriting the
/// active segment's first page (its header, then zeros: nothing was written after it yet).
fn probe_direct(path: &Path, first_page: &[u8]) -> bool {
    let Ok(file) = open_writer(path, true) else {
        return false;
    };
    let mut staged = Staged::new(first_page, 0);
    staged.pad_to_page();
    file.write_all_at(staged.bytes(), 0).is_ok()
}

/// The unit of every write to a segment. Writes always cover whole pages: the kernel never
/// has to read a page from disk to merge a partial write into it (that read, inside every
/// commit, is what makes partial writes into uncached preallocated or recycled pages slow).
const WRITE_PAGE: usize = 4096;

/// The active segment, written by whichever committer leads a batch.
struct WriterState {
    /// Opened for direct, synchronous writes where the filesystem allows (`Shared::direct`).
    file: Arc<File>,
    segment: u64,
    /// Where the next record goes: everything before it is durable.
    size: u64,
    /// The bytes of the last, partly filled page before `size`, written again (with what
    /// follows) by the next write, so every write starts on a page boundary.
    tail: Vec<u8>,
    /// Descriptions of the active segment's records, for its index when it is sealed.
    metas: Vec<RecordMeta>,
    /// What a failed write left to repair before anything else is written.
    damage: Option<Damage>,
}

/// What a failed write may have left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The active segment may hold, from `size` up to `to`, bytes of records that were never
    /// acknowledged; some may even pass their checksums. They are zeroed (or cut off) before
    /// anything is written after them, or recovery could take them for commits.
    Tail { to: u64 },
    /// The active segment is durable and full, but sealing it or starting the next one failed.
    Roll,
}

impl WriterState {
    /// Writes the batch durably, sealing segments as they fill, after repairing what an earlier
    /// failure left. Returns where each durable record went (a prefix of the batch) and the
    /// error that stopped the rest.
    fn write_batch(
        &mut self,
        shared: &Shared,
        batch: &[Vec<u8>],
    ) -> (Vec<Appended>, io::Result<()>) {
        let mut durable = Vec::with_capacity(batch.len());
        if let Err(e) = self.repair(shared) {
            return (durable, Err(e));
        }
        if batch.iter().any(|r| describe(r, 0, 0).is_none()) {
            return (
                durable,
                Err(io::Error::other("a malformed record was appended")),
            );
        }
        let room: usize = batch.iter().map(Vec::len).sum();
        let mut staged = Staged::new(&self.tail, room);
        let mut pending: Vec<Appended> = Vec::new();
        for record in batch {
            let end = self.write_start() + staged.len() as u64;
            if end + record.len() as u64 > shared.segment_bytes && end > SEGMENT_HEADER {
                if let Err(e) = self.write_durably(shared, staged, pending.len()) {
                    return (durable, Err(e));
                }
                durable.append(&mut pending);
                if let Err(e) = self.seal_and_roll(shared) {
                    self.damage = Some(Damage::Roll);
                    return (durable, Err(e));
                }
                staged = Staged::new(&self.tail, room);
            }
            let offset = self.write_start() + staged.len() as u64;
            let meta = describe(record, self.segment, offset).expect("checked above");
            self.metas.push(meta);
            staged.push_record(record, self.segment);
            pending.push(Appended {
                segment: self.segment,
                offset,
            });
        }
        if let Err(e) = self.write_durably(shared, staged, pending.len()) {
            return (durable, Err(e));
        }
        durable.append(&mut pending);
        (durable, Ok(()))
    }

    /// Where the next write starts: the beginning of the page that holds `size`.
    fn write_start(&self) -> u64 {
        self.size - self.tail.len() as u64
    }

    /// Writes `staged` (the partial page's known bytes, then the last `records` records) at
    /// `write_start`, as whole pages, and makes it durable: the last page is zero-padded; the
    /// padding is overwritten by the next write and reads as the end of the log until then.
    /// The written pages are kept in memory for readers. If it fails, the writer is as it
    /// was before, with the range the write may have reached marked as damage.
    fn write_durably(
        &mut self,
        shared: &Shared,
        mut staged: Staged,
        records: usize,
    ) -> io::Result<()> {
        if staged.len() == self.tail.len() {
            return Ok(());
        }
        let start = self.write_start();
        let end = start + staged.len() as u64;
        let partial = staged.len() % WRITE_PAGE;
        let tail = staged.bytes()[staged.len() - partial..].to_vec();
        staged.pad_to_page();
        let reached = start + staged.len() as u64;
        let written = self
            .file
            .write_all_at(staged.bytes(), start)
            .and_then(|()| sync_unless_direct(&self.file, shared.direct));
        if let Err(e) = written {
            self.metas.truncate(self.metas.len() - records);
            self.damage = Some(Damage::Tail { to: reached });
            return Err(e);
        }
        self.size = end;
        self.tail = tail;
        if let Some(size) = shared.sizes.lock().unwrap().get_mut(&self.segment) {
            *size = (*size).max(end);
        }
        shared
            .recent
            .lock()
            .unwrap()
            .insert(self.segment, start, Arc::new(staged));
        Ok(())
    }

    /// Undoes what a failed write left: zeroes the bytes it may have written past the durable
    /// end (or, when the disk has no room even for that, cuts the segment after the last
    /// durable page), or finishes an interrupted rollover. Nothing acknowledged is touched.
    fn repair(&mut self, shared: &Shared) -> io::Result<()> {
        match self.damage {
            None => return Ok(()),
            Some(Damage::Roll) => self.seal_and_roll(shared)?,
            Some(Damage::Tail { to }) => {
                let start = self.write_start();
                let mut page = Staged::new(&self.tail, 0);
                page.pad_to_page();
                let after = start + page.len() as u64;
                let zeroed = self
                    .file
                    .write_all_at(page.bytes(), start)
                    .and_then(|()| write_zeros(&self.file, after, to))
                    .and_then(|()| sync_unless_direct(&self.file, shared.direct));
                if let Err(e) = zeroed {
                    if !fsutil::is_disk_full(&e) {
                        return Err(e);
                    }
                    // The segment grew into the damage (it was not preallocated): cut it off.
                    self.file.write_all_at(page.bytes(), start)?;
                    self.file.set_len(after)?;
                    self.file.sync_all()?;
                }
                shared
                    .recent
                    .lock()
                    .unwrap()
                    .forget_from(self.segment, start);
            }
        }
        tracing::info!(
            segment = self.segment,
            "the change log repaired what a failed write left"
        );
        self.damage = None;
        Ok(())
    }

    /// Makes the active segment durable, writes its index, and starts the next one in the
    /// spare (or, if the preallocator is behind, in a file that grows). Safe to repeat after
    /// a failure part way.
    fn seal_and_roll(&mut self, shared: &Shared) -> io::Result<()> {
        self.file.sync_data()?;
        write_index(&shared.dir, self.segment, self.size, &self.metas)?;
        shared.sizes.lock().unwrap().insert(self.segment, self.size);
        let next = self.segment + 1;
        let path = segment_path(&shared.dir, next);
        start_segment(&shared.dir, next)?;
        {
            let (wanted, wake) = &shared.spare_wanted;
            wanted.lock().unwrap().0 = true;
            wake.notify_all();
        }
        let reader = Arc::new(File::open(&path)?);
        let writer = Arc::new(open_writer(&path, shared.direct)?);
        shared.files.write().unwrap().insert(next, reader);
        self.file = writer;
        self.segment = next;
        self.size = SEGMENT_HEADER;
        self.tail = segment_header(next);
        self.metas.clear();
        shared.sizes.lock().unwrap().insert(next, SEGMENT_HEADER);
        shared.active.store(next, Ordering::Release);
        Ok(())
    }
}

fn sync_unless_direct(file: &File, direct: bool) -> io::Result<()> {
    if direct {
        Ok(())
    } else {
        file.sync_data()
    }
}

/// Writes zeros over `from..to` (both page-aligned, as direct I/O requires).
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.0.len() as u64) as usize;
        file.write_all_at(&ZEROS.0[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Keeps a zero-filled spare segment ready: overwriting preallocated blocks lets a sync write
/// data only, where appending would also commit the file's new size to the journal.
fn preallocate(shared: &Shared) {
    loop {
        {
            let (wanted, wake) = &shared.spare_wanted;
            let state = wanted.lock().unwrap();
            let mut state = wake
                .wait_while(state, |(want, stop)| !*want && !*stop)
                .unwrap();
            if state.1 {
                return;
            }
            state.0 = false;
        }
        if shared.dir.join(SPARE).exists() {
            continue;
        }
        let made = (|| {
            let tmp = shared.dir.join(SPARE_TMP);
            zero_file(&tmp, shared.segment_bytes)?;
            let file = File::open(&tmp)?;
            file.sync_all()?;
            std::fs::rename(&tmp, shared.dir.join(SPARE))?;
            sync_dir(&shared.dir)
        })();
        if let Err(e) = made {
            tracing::warn!(error = %e, "cannot preallocate a log segment; segments will grow instead");
        }
    }
}

/// One MiB of zeros, aligned for direct I/O.
#[repr(C, align(4096))]
struct Zeros([u8; 1 << 20]);

static ZEROS: Zeros = Zeros([0; 1 << 20]);

/// Creates `path` as `len` bytes of zeros, written with O_DIRECT where the filesystem allows:
/// the disk gets the zeros by DMA, without the CPU copying a segment through the page cache.
fn zero_file(path: &Path, len: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let aligned = len.is_multiple_of(4096);
    let direct = fsutil::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(file) if aligned => {
            let mut at = 0;
            while at < len {
                let n = (len - at).min(ZEROS.0.len() as u64) as usize;
                file.write_all_at(&ZEROS.0[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        _ => zero_fill(&fsutil::create_private(path)?, 0, len),
    }
}

fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Begins segment `number` in the spare (preallocated, or recycled) if there is one, else in
/// a new file that grows as it is written.
fn start_segment(dir: &Path, number: u64) -> io::Result<()> {
    let path = segment_path(dir, number);
    // A file there is what an interrupted rollover made: no record was written to it.
    remove_if_exists(&path)?;
    match std::fs::rename(dir.join(SPARE), &path) {
        Ok(()) => {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            file.write_all_at(&segment_header(number), 0)?;
            file.sync_data()?;
            sync_dir(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_segment(dir, number, 0),
        Err(e) => Err(e),
    }
}

/// A record's checksum is salted with its segment's number, so the records a recycled segment
/// file still holds from its previous life never pass for records of the new one. (CRC-32C is
/// linear, so two segment numbers below 2^32 never share a salt.)
fn segment_salt(number: u64) -> u32 {
    crc32c::crc32c(&number.to_le_bytes())
}

fn salt_crc(field: &mut [u8], number: u64) {
    let salted = u32::from_le_bytes(field[..4].try_into().unwrap()) ^ segment_salt(number);
    field[..4].copy_from_slice(&salted.to_le_bytes());
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

fn index_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.idx"))
}

fn segment_header(number: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&number.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header
}

/// Creates segment `number`, zero-filled to `preallocate` bytes.
fn create_segment(dir: &Path, number: u64, preallocate: u64) -> io::Result<()> {
    let file = fsutil::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, number))?;
    zero_fill(&file, SEGMENT_HEADER, preallocate)?;
    file.write_all_at(&segment_header(number), 0)?;
    file.sync_all()?;
    sync_dir(dir)
}

fn has_own_header(path: &Path, number: u64) -> io::Result<bool> {
    let file = File::open(path)?;
    let mut header = [0u8; SEGMENT_HEADER as usize];
    Ok(file.read_exact_at(&mut header, 0).is_ok() && header[..] == segment_header(number)[..])
}

/// Scans a segment record by record, up to the first record that is short, zero (the
/// preallocated tail) or fails its checksum (a torn write, or a recycled file's old records).
/// Returns the records and where they end.
fn scan_segment(path: &Path, number: u64) -> io::Result<(Vec<RecordMeta>, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    reader.read_exact(&mut header)?;
    if header[..] != segment_header(number)[..] {
        return Err(io::Error::other(format!(
            "{} is not a version-{FORMAT_VERSION} log segment number {number}",
            path.display()
        )));
    }
    let salt = segment_salt(number);
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER;
    let mut record = Vec::new();
    loop {
        let mut len_bytes = [0u8; 4];
        if read_full(&mut reader, &mut len_bytes)? < 4 {
            break;
        }
        let len = u32::from_le_bytes(len_bytes) as u64;
        if len < (RECORD_HEADER - 4) as u64 || offset + 4 + len > file_len {
            break;
        }
        record.clear();
        record.extend_from_slice(&len_bytes);
        record.resize(4 + len as usize, 0);
        if read_full(&mut reader, &mut record[4..])? != len as usize {
            break;
        }
        let crc = u32::from_le_bytes(record[4..8].try_into().unwrap());
        if crc32c::crc32c(&record[8..]) ^ salt != crc {
            break;
        }
        match describe(&record, number, offset) {
            Some(meta) => records.push(meta),
            None => break,
        }
        offset += 4 + len;
    }
    Ok((records, offset))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

fn write_index(dir: &Path, number: u64, data_end: u64, metas: &[RecordMeta]) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 + metas.len() * 64);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&data_end.to_le_bytes());
    out.extend_from_slice(&(metas.len() as u64).to_le_bytes());
    for m in metas {
        out.push(m.kind as u8);
        out.extend_from_slice(m.volume.as_bytes());
        out.extend_from_slice(&m.lsn.to_le_bytes());
        out.extend_from_slice(&m.time_us.to_le_bytes());
        out.extend_from_slice(&m.db_pages.to_le_bytes());
        out.extend_from_slice(&m.offset.to_le_bytes());
        out.extend_from_slice(&m.len.to_le_bytes());
        match m.kind {
            RecordKind::Commit => {
                out.extend_from_slice(&(m.pages.len() as u32).to_le_bytes());
                for p in &m.pages {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            RecordKind::Backtrack => {
                out.extend_from_slice(&(m.payload.len() as u32).to_le_bytes());
                out.extend_from_slice(&m.payload);
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    write_atomically(&index_path(dir, number), &out)
}

/// Reads a sealed segment's index and where its records end; `None` if it is missing or does
/// not describe the segment as it is (then the caller rescans the segment).
fn read_index(dir: &Path, number: u64) -> io::Result<Option<(Vec<RecordMeta>, u64)>> {
    let bytes = match std::fs::read(index_path(dir, number)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let segment_len = std::fs::metadata(segment_path(dir, number))?.len();
    Ok(parse_index(&bytes, number, segment_len))
}

fn parse_index(bytes: &[u8], number: u64, segment_len: u64) -> Option<(Vec<RecordMeta>, u64)> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = body.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    if take(8)? != INDEX_MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let stated = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let data_end = u64::from_le_bytes(take(8)?.try_into().ok()?);
    if version != FORMAT_VERSION || stated != number || data_end > segment_len {
        return None;
    }
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut metas = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let kind = RecordKind::from_byte(take(1)?[0])?;
        let volume = Uuid::from_slice(take(16)?).ok()?;
        let lsn = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let time_us = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let db_pages = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let offset = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let (pages, payload) = match kind {
            RecordKind::Commit => {
                let raw = take(n * 4)?;
                let pages = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (pages, Vec::new())
            }
            RecordKind::Backtrack => (Vec::new(), take(n)?.to_vec()),
        };
        metas.push(RecordMeta {
            kind,
            volume,
            lsn,
            time_us,
            db_pages,
            segment: number,
            offset,
            len,
            pages,
            payload,
        });
    }
    Some((metas, data_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bt-log-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn commit(volume: Uuid, lsn: u64, fill: u8) -> Vec<u8> {
        let page = vec![fill; PAGE_SIZE];
        encode_commit(volume, lsn, lsn as i64 * 10, 1, &[(0, &page), (3, &page)])
    }

    #[test]
    fn records_survive_a_reopen_and_their_pages_read_back() {
        // Direct I/O where the filesystem takes it, and the page cache with fdatasync.
        for direct in [true, false] {
            records_survive_a_reopen(direct);
        }
    }

    fn records_survive_a_reopen(direct: bool) {
        let dir = temp_dir("reopen");
        let volume = Uuid::new_v4();
        let (log, found) = Log::open_with(&dir, 1 << 20, direct).unwrap();
        assert!(found.is_empty());
        if !direct {
            assert!(!log.is_direct());
        }
        let placed: Vec<_> = (1..=5)
            .map(|lsn| log.append(commit(volume, lsn, lsn as u8)).unwrap())
            .collect();
        let mut buf = vec![0; PAGE_SIZE];
        log.read_at(
            placed[2].segment,
            page_offset(placed[2].offset, 1),
            &mut buf,
        )
        .unwrap();
        assert!(buf.iter().all(|b| *b == 3));
        drop(log);

        // Reopened, nothing is in memory: the pages come from the disk.
        let (log, found) = Log::open_with(&dir, 1 << 20, direct).unwrap();
        assert_eq!(
            found.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(found[0].pages, [0, 3]);
        log.read_at(found[4].segment, found[4].page_offset(0), &mut buf)
            .unwrap();
        assert!(buf.iter().all(|b| *b == 5));
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_left_behind_and_nothing_before_it_is_lost() {
        let dir = temp_dir("torn");
        let volume = Uuid::new_v4();
        let (log, _) = Log::open(&dir, 1 << 20).unwrap();
        let placed: Vec<_> = (1..=3)
            .map(|lsn| log.append(commit(volume, lsn, 1)).unwrap())
            .collect();
        let segment = log.active_segment();
        drop(log);
        let path = segment_path(&dir, segment);
        let end = placed[2].offset + commit(volume, 3, 1).len() as u64;
        // Half of a fourth record, as a crash mid-write leaves it, and a later whole record
        // that reached the disk before it (pages can land out of order).
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&commit(volume, 4, 1)[..3000], end)
            .unwrap();
        let mut later = commit(volume, 5, 1);
        salt_crc(&mut later[4..8], segment);
        file.write_all_at(&later, end + 20_000).unwrap();
        let (log, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(found.len(), 3);
        // The log goes on in a new segment, and nothing after the tear ever comes back.
        assert!(log.active_segment() > segment);
        log.append(commit(volume, 4, 9)).unwrap();
        drop(log);
        let (log, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(
            found.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_recycled_segment_never_replays_its_old_records() {
        let dir = temp_dir("recycle");
        let volume = Uuid::new_v4();
        let segment_bytes = 8 * (2 * PAGE_ENTRY + RECORD_HEADER) as u64;
        let (log, _) = Log::open(&dir, segment_bytes).unwrap();
        for lsn in 1..=40 {
            log.append(commit(volume, lsn, lsn as u8)).unwrap();
        }
        // Let the preallocator settle, then free the oldest segment: it becomes the spare.
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_file(dir.join(SPARE));
        let oldest = log.segments()[0].0;
        log.delete_segment(oldest).unwrap();
        assert!(dir.join(SPARE).exists(), "the freed segment was recycled");
        for lsn in 41..=60 {
            log.append(commit(volume, lsn, 0)).unwrap();
        }
        drop(log);
        let (log, found) = Log::open(&dir, segment_bytes).unwrap();
        let lsns: Vec<u64> = found.iter().map(|r| r.lsn).collect();
        assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
        assert_eq!(lsns.last(), Some(&60));
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_that_record() {
        let dir = temp_dir("crc");
        let volume = Uuid::new_v4();
        let (log, _) = Log::open(&dir, 1 << 20).unwrap();
        let placed: Vec<_> = (1..=3)
            .map(|lsn| log.append(commit(volume, lsn, 1)).unwrap())
            .collect();
        drop(log);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 1))
            .unwrap();
        file.write_all_at(&[0xff], placed[1].offset + 100).unwrap();
        let (_, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(found.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_roll_over_and_sealed_ones_are_indexed() {
        let dir = temp_dir("roll");
        let volume = Uuid::new_v4();
        let segment_bytes = 4 * (2 * PAGE_ENTRY + RECORD_HEADER) as u64;
        let (log, _) = Log::open(&dir, segment_bytes).unwrap();
        for lsn in 1..=20 {
            log.append(commit(volume, lsn, lsn as u8)).unwrap();
        }
        assert!(log.segments().len() >= 5, "{:?}", log.segments());
        log.delete_segment(1).unwrap();
        assert!(log.delete_segment(log.active_segment()).is_err());
        drop(log);
        assert!(index_path(&dir, 2).exists());
        let (_, found) = Log::open(&dir, segment_bytes).unwrap();
        let lsns: Vec<u64> = found.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns.first(), Some(&4));
        assert_eq!(lsns.last(), Some(&20));
        // A missing index is rebuilt from the segment.
        std::fs::remove_file(index_path(&dir, 3)).unwrap();
        let (_, again) = Log::open(&dir, segment_bytes).unwrap();
        assert_eq!(again, found);
        assert!(index_path(&dir, 3).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_appends_share_syncs() {
        let (dir, log) = shared_log("group");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let volume = Uuid::new_v4();
                    for lsn in 1..=50 {
                        log.append(commit(volume, lsn, t)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.records.load(Ordering::Relaxed), 400);
        assert!(stats.syncs.load(Ordering::Relaxed) < 400);
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A new log in a fresh directory, for several threads.
    fn shared_log(name: &str) -> (PathBuf, Arc<Log>) {
        let dir = temp_dir(name);
        let (log, _) = Log::open(&dir, 64 << 20).unwrap();
        (dir, Arc::new(log))
    }

    /// Appends one record of each volume in turn, so the next leader expects them all.
    fn prime(log: &Log, volumes: &[Uuid]) {
        for (i, volume) in volumes.iter().enumerate() {
            log.append(commit(*volume, 1, i as u8)).unwrap();
        }
    }

    #[test]
    fn a_leader_waits_for_the_volumes_of_the_last_batches() {
        let (dir, log) = shared_log("gather");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        prime(&log, &[a, b]);
        log.shared.queue.lock().unwrap().gather_for = Some(Duration::from_secs(60));
        let syncs = || log.stats().syncs.load(Ordering::Relaxed);
        let before = syncs();
        let first = {
            let log = log.clone();
            std::thread::spawn(move || log.append(commit(a, 2, 1)).unwrap())
        };
        // The leader holds its record back until b's committer queues too.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!first.is_finished(), "the leader did not wait for b");
        assert_eq!(syncs(), before);
        log.append(commit(b, 2, 2)).unwrap();
        first.join().unwrap();
        assert_eq!(syncs(), before + 1, "a and b shared one durable write");
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_leader_stops_waiting_for_peers_gone_idle() {
        let (dir, log) = shared_log("gather-idle");
        let volumes: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        prime(&log, &volumes);
        let (done, finished) = std::sync::mpsc::channel();
        let alone = {
            let log = log.clone();
            std::thread::spawn(move || {
                for lsn in 2..=20 {
                    log.append(commit(volumes[0], lsn, 0)).unwrap();
                }
                done.send(()).unwrap();
            })
        };
        // Each wait is bounded by half the last flush; a hang here would be a leader waiting
        // for committers that never come.
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("a lone committer was kept waiting for idle peers");
        alone.join().unwrap();
        assert_eq!(log.stats().records.load(Ordering::Relaxed), 4 + 19);
        drop(log);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recent_writes_answer_what_they_hold_and_drop_the_oldest() {
        let chunk = |fill: u8, pages: usize| {
            let mut staged = Staged::new(&vec![fill; pages * WRITE_PAGE], 0);
            staged.pad_to_page();
            Arc::new(staged)
        };
        // Room for three one-page chunks, or one of two pages and one of one.
        let one = chunk(0, 1).footprint();
        let two = chunk(0, 2).footprint();
        let mut recent = RecentWrites::new(two + one);
        recent.insert(7, 0, chunk(1, 2));
        let mut buf = vec![0u8; 100];
        assert!(recent.read(7, WRITE_PAGE as u64 + 5, &mut buf));
        assert!(buf.iter().all(|b| *b == 1));
        // Past the end of what was written, or another segment: not there.
        assert!(!recent.read(7, 2 * WRITE_PAGE as u64 - 50, &mut buf));
        assert!(!recent.read(8, 0, &mut buf));
        // A later write from the same page replaces the earlier one.
        recent.insert(7, 0, chunk(2, 1));
        assert!(recent.read(7, 0, &mut buf));
        assert!(buf.iter().all(|b| *b == 2));
        assert_eq!(recent.bytes, one);
        // Over capacity, the oldest go first.
        recent.insert(7, WRITE_PAGE as u64, chunk(3, 1));
        recent.insert(8, 0, chunk(4, 2));
        assert!(!recent.read(7, 0, &mut buf));
        assert!(recent.read(7, WRITE_PAGE as u64, &mut buf));
        assert!(recent.read(8, 0, &mut buf));
        assert_eq!(recent.bytes, one + two);
        recent.forget_segment(8);
        assert!(!recent.read(8, 0, &mut buf));
        assert_eq!(recent.bytes, one);
    }

    #[test]
    fn staged_bytes_start_page_aligned() {
        for tail in [0, 1, 4095, 4096, 5000] {
            let mut staged = Staged::new(&vec![7; tail], 10_000);
            staged.push_record(&[1; 20], 1);
            staged.pad_to_page();
            assert_eq!(staged.bytes().as_ptr() as usize % WRITE_PAGE, 0);
            assert_eq!(staged.len() % WRITE_PAGE, 0);
            assert_eq!(staged.len(), (tail + 20).next_multiple_of(WRITE_PAGE));
        }
    }
}
