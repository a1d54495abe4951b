//! One volume: the page store under one cluster's SQLite database.
//!
//! A page's content in a state is its newest version whose LSN is in the state's live set, or
//! the base image (`base.img`, the state folded at the horizon). The versions live in the log;
//! this module keeps, in memory, where each one is (`versions`), the timeline of commits and
//! backtracks since the base, and the volume's settings, persisted in `volume.json`.
//!
//! - A commit appends one record (group-committed, durable) and then publishes its versions.
//! - A backtrack appends one small record and installs a new live set: a metadata switch whose
//!   cost does not depend on the size of the database.
//! - A fold moves the horizon forward: it writes the newest versions at the horizon into the
//!   base image, syncs it, and forgets them; the log segments they came from can then go.
//!   It first records its intent in `volume.json`, so a crash in the middle is redone at
//!   start, before anything is served.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::log::{self, Log, LogError, RecordKind, RecordMeta, PAGE_SIZE};
use super::timeline::{CommitInfo, LiveSet, Timeline, TimelineEvent};
use crate::api::{BacktrackOutcome, BacktrackRequest, ErrorCode, VolumeFigures};
use crate::fsutil;

const META_FORMAT: u32 = 1;
/// Backtrack outcomes are remembered this long for idempotent retries.
const LEDGER_RETENTION_US: i64 = 7 * 24 * 3600 * 1_000_000;
/// How long a backtrack waits for a writer still finishing its commit.
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// The node's clock: wall-clock microseconds, never going backwards, never repeating, so
/// commit and backtrack times order the history even if the system clock steps back.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicI64,
}

impl Clock {
    pub fn now_us(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let mut prev = self.last.load(Ordering::Acquire);
        loop {
            let next = system.max(prev + 1);
            match self
                .last
                .compare_exchange(prev, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Makes later readings follow `time_us` (after recovery).
    pub fn advance_past(&self, time_us: i64) {
        self.last.fetch_max(time_us, Ordering::AcqRel);
    }
}

/// An error of the volume, with the contract's code for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeError {
    pub code: ErrorCode,
    pub message: String,
}

impl VolumeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        VolumeError {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        VolumeError::new(ErrorCode::Internal, e.to_string())
    }

    /// The same error, saying that the transaction it ended was rolled back.
    pub fn rolled_back(self) -> Self {
        VolumeError::new(
            self.code,
            format!("{}; the transaction was rolled back", self.message),
        )
    }
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl VolumeError {
    pub fn disk_full() -> Self {
        VolumeError::new(
            ErrorCode::StorageFull,
            "the storage node's disk is full: nothing was changed; retry once space is freed",
        )
    }
}

impl From<LogError> for VolumeError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::DiskFull(_) => VolumeError::disk_full(),
            other => VolumeError::internal(other),
        }
    }
}

impl From<io::Error> for VolumeError {
    fn from(e: io::Error) -> Self {
        if fsutil::is_disk_full(&e) {
            VolumeError::disk_full()
        } else {
            VolumeError::internal(e)
        }
    }
}

/// Where one version of a page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    lsn: u64,
    segment: u64,
    /// Offset of the page's bytes in the segment.
    offset: u64,
}

/// Where `read_page` finds a page.
enum Source {
    /// Copied already, from the log's recent writes.
    Copied,
    /// A version in the log, and the segment's file (None if the segment is gone).
    Log(Version, Option<Arc<File>>),
    /// The base image.
    Base,
}

/// A reader's fixed view of the volume, taken when SQLite locks the file.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub live: Arc<LiveSet>,
    pub db_pages: u32,
    pub head_lsn: u64,
    /// Shown to SQLite as the file change counter, so its page cache is dropped whenever the
    /// state it caches is no longer the state it reads.
    pub counter: u32,
}

/// What a log segment holds of this volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentUse {
    pub bytes: u64,
    pub max_lsn: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingFold {
    lsn: u64,
    time_us: i64,
    db_pages: u32,
}

/// `volume.json`: what the log alone cannot tell after its old segments are gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeMeta {
    format: u32,
    id: String,
    uuid: Uuid,
    window_secs: u64,
    created_at_us: i64,
    /// When the current history started (creation, or the window going above 0).
    enabled_since_us: Option<i64>,
    base_lsn: u64,
    base_time_us: i64,
    base_db_pages: u32,
    base_live: LiveSet,
    /// Backtracks after the base, as of `checkpoint_lsn`.
    events: Vec<TimelineEvent>,
    /// Every record of this volume up to this LSN is reflected here (besides commits' pages,
    /// which are in the log or the base).
    checkpoint_lsn: u64,
    records_created: u64,
    /// Backtrack records ever applied (one per switch, whatever its id).
    #[serde(default)]
    backtracks_applied: u64,
    ledger: Vec<BacktrackOutcome>,
    pending_fold: Option<PendingFold>,
    trimmed_by_budget: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct BacktrackPayload {
    backtrack_id: Uuid,
    to_us: i64,
    requested_us: i64,
    rolled_back: u32,
    live: LiveSet,
}

struct VolumeState {
    window_secs: u64,
    created_at_us: i64,
    enabled_since_us: Option<i64>,
    timeline: Timeline,
    versions: HashMap<u32, Vec<Version>>,
    live: LiveSet,
    head_lsn: u64,
    head_db_pages: u32,
    ledger: HashMap<Uuid, BacktrackOutcome>,
    backtracks_applied: u64,
    records_created: u64,
    records_stored: u64,
    segments: BTreeMap<u64, SegmentUse>,
    pending_fold: Option<PendingFold>,
    trimmed_by_budget: bool,
}

/// The single-writer lock (SQLite's RESERVED lock), held across VFS calls.
#[derive(Default)]
struct WriterLock {
    held: Mutex<bool>,
    freed: Condvar,
}

pub struct Volume {
    pub id: String,
    pub uuid: Uuid,
    dir: PathBuf,
    log: Arc<Log>,
    clock: Arc<Clock>,
    base: File,
    state: RwLock<VolumeState>,
    writer: WriterLock,
    /// Folds, backtracks and settings changes, one at a time.
    maintenance: Mutex<()>,
    counter: AtomicU32,
    deleted: AtomicBool,
    /// The newest committed version of page 0 (SQLite reads its header at every transaction
    /// start), keyed by that version's LSN.
    page0: Mutex<Option<(u64, Arc<[u8]>)>>,
    /// The most pages one transaction may stage (they are held in memory until it commits).
    transaction_limit_pages: AtomicUsize,
}

impl Volume {
    /// Creates a new, empty volume in `dir` (which must not exist).
    pub fn create(
        dir: &Path,
        id: &str,
        window_secs: u64,
        log: Arc<Log>,
        clock: Arc<Clock>,
    ) -> io::Result<Volume> {
        fsutil::create_private_dir_all(dir)?;
        let now = clock.now_us();
        let uuid = Uuid::new_v4();
        let base = fsutil::private_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("base.img"))?;
        base.sync_all()?;
        let meta = VolumeMeta {
            format: META_FORMAT,
            id: id.to_string(),
            uuid,
            window_secs,
            created_at_us: now,
            enabled_since_us: (window_secs > 0).then_some(now),
            base_lsn: 0,
            base_time_us: now,
            base_db_pages: 0,
            base_live: LiveSet::all(),
            events: Vec::new(),
            checkpoint_lsn: 0,
            records_created: 0,
            backtracks_applied: 0,
            ledger: Vec::new(),
            pending_fold: None,
            trimmed_by_budget: false,
        };
        fsutil::write_atomically(&dir.join("volume.json"), &serde_json::to_vec_pretty(&meta)?)?;
        fsutil::sync_dir(dir.parent().unwrap_or(dir))?;
        Ok(Volume::from_meta(dir, meta, base, log, clock))
    }

    /// Opens a volume from `dir`, replaying its records from `records` (the whole log, in
    /// order). Returns `None` when the directory holds no complete volume.
    pub fn open(
        dir: &Path,
        records: &[RecordMeta],
        log: Arc<Log>,
        clock: Arc<Clock>,
    ) -> io::Result<Option<Volume>> {
        let meta: VolumeMeta = match std::fs::read(dir.join("volume.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::other(format!("{}: bad volume.json: {e}", dir.display()))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.format != META_FORMAT {
            return Err(io::Error::other(format!(
                "{}: unknown volume.json format {}",
                dir.display(),
                meta.format
            )));
        }
        let base = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("base.img"))?;
        let pending = meta.pending_fold.clone();
        let volume = Volume::from_meta(dir, meta, base, log, clock);
        volume.replay(records)?;
        if let Some(fold) = pending {
            tracing::info!(volume = %volume.id, lsn = fold.lsn, "redoing an interrupted fold");
            volume
                .fold_to(fold.time_us, None, false)
                .map_err(|e| io::Error::other(e.message))?;
        }
        Ok(Some(volume))
    }

    fn from_meta(
        dir: &Path,
        meta: VolumeMeta,
        base: File,
        log: Arc<Log>,
        clock: Arc<Clock>,
    ) -> Volume {
        let mut timeline = Timeline::new(meta.base_lsn, meta.base_time_us, meta.base_db_pages);
        timeline.base_live = meta.base_live.clone();
        timeline.events = meta.events.clone();
        let live = timeline
            .events
            .last()
            .map_or_else(|| meta.base_live.clone(), |e| e.live.clone());
        let head_lsn = timeline.last_lsn().max(meta.checkpoint_lsn);
        let head_db_pages = timeline.db_pages_of(&live.up_to(head_lsn));
        clock.advance_past(meta.base_time_us);
        if let Some(e) = timeline.events.last() {
            clock.advance_past(e.time_us);
        }
        let state = VolumeState {
            window_secs: meta.window_secs,
            created_at_us: meta.created_at_us,
            enabled_since_us: meta.enabled_since_us,
            timeline,
            versions: HashMap::new(),
            live,
            head_lsn,
            head_db_pages,
            ledger: meta
                .ledger
                .iter()
                .map(|o| (o.backtrack_id, o.clone()))
                .collect(),
            backtracks_applied: meta.backtracks_applied,
            records_created: meta.records_created,
            records_stored: 0,
            segments: BTreeMap::new(),
            pending_fold: meta.pending_fold,
            trimmed_by_budget: meta.trimmed_by_budget,
        };
        Volume {
            id: meta.id,
            uuid: meta.uuid,
            dir: dir.to_path_buf(),
            log,
            clock,
            base,
            state: RwLock::new(state),
            writer: WriterLock::default(),
            maintenance: Mutex::new(()),
            counter: AtomicU32::new(1),
            deleted: AtomicBool::new(false),
            page0: Mutex::new(None),
            transaction_limit_pages: AtomicUsize::new(usize::MAX),
        }
    }

    /// Applies this volume's records that the base and `volume.json` do not already reflect.
    fn replay(&self, records: &[RecordMeta]) -> io::Result<()> {
        let mut st = self.state.write().unwrap();
        let checkpoint = st.head_lsn;
        for record in records.iter().filter(|r| r.volume == self.uuid) {
            self.clock.advance_past(record.time_us);
            let seg = st.segments.entry(record.segment).or_default();
            seg.bytes += u64::from(record.len);
            seg.max_lsn = seg.max_lsn.max(record.lsn);
            if record.lsn <= st.timeline.base_lsn {
                continue;
            }
            match record.kind {
                RecordKind::Commit => {
                    let created = record.lsn > checkpoint;
                    let pages: Vec<(u32, u64)> = record
                        .pages
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (*p, record.page_offset(i)))
                        .collect();
                    publish_commit(
                        &mut st,
                        record.lsn,
                        record.time_us,
                        record.db_pages,
                        record.segment,
                        &pages,
                        created,
                    );
                }
                RecordKind::Backtrack if record.lsn > checkpoint => {
                    // Its CRC was good, so an unreadable payload is a bug; skipping it would
                    // silently change the volume's history.
                    let payload: BacktrackPayload = serde_json::from_slice(&record.payload)
                        .map_err(|e| {
                            io::Error::other(format!(
                                "volume {}: unreadable backtrack record {}: {e}",
                                self.id, record.lsn
                            ))
                        })?;
                    publish_backtrack(
                        &mut st,
                        record.lsn,
                        record.time_us,
                        record.db_pages,
                        payload,
                    );
                }
                RecordKind::Backtrack => {}
            }
        }
        // The last records up to the checkpoint may have been backtracks, already in the
        // events; the head is at least there, and the live set is the last one installed.
        st.head_lsn = st.head_lsn.max(checkpoint).max(st.timeline.last_lsn());
        st.live = st
            .timeline
            .events
            .last()
            .map_or_else(|| st.timeline.base_live.clone(), |e| e.live.clone());
        st.head_db_pages = st.timeline.db_pages_of(&st.live.up_to(st.head_lsn));
        Ok(())
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Limits the bytes one transaction may write (rounded down to whole pages, at least one).
    pub fn set_transaction_limit(&self, bytes: u64) {
        let pages = (bytes / PAGE_SIZE as u64).clamp(1, usize::MAX as u64) as usize;
        self.transaction_limit_pages.store(pages, Ordering::Relaxed);
    }

    pub fn transaction_limit_pages(&self) -> usize {
        self.transaction_limit_pages.load(Ordering::Relaxed)
    }

    // --- reading ------------------------------------------------------------------------

    /// The current state, for a reader starting now.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.read().unwrap();
        Snapshot {
            live: Arc::new(st.live.up_to(st.head_lsn)),
            db_pages: st.head_db_pages,
            head_lsn: st.head_lsn,
            counter: self.counter.load(Ordering::Acquire),
        }
    }

    /// Reads page `index` (0-based) as `snapshot` sees it into `out` (PAGE_SIZE bytes).
    pub fn read_page(&self, snapshot: &Snapshot, index: u32, out: &mut [u8]) -> io::Result<()> {
        // While the index still points to the version, a recent one is copied from the log's
        // memory, or else the segment's file is taken: a segment is deleted (or recycled)
        // only once no index entry does, and never while held.
        let found = {
            let st = self.state.read().unwrap();
            match st
                .versions
                .get(&index)
                .and_then(|versions| newest_in(versions, &snapshot.live))
            {
                Some(version) if self.log.read_recent(version.segment, version.offset, out) => {
                    Source::Copied
                }
                Some(version) => Source::Log(version, self.log.segment_file(version.segment)),
                None => Source::Base,
            }
        };
        match found {
            Source::Copied => {}
            Source::Log(version, file) => match (self.cached_page0(index, version), file) {
                (Some(bytes), _) => out.copy_from_slice(&bytes),
                (None, Some(file)) => file.read_exact_at(out, version.offset)?,
                (None, None) => {
                    return Err(io::Error::other(format!(
                        "page {index} of volume {} is in a deleted log segment",
                        self.id
                    )))
                }
            },
            Source::Base => self.read_base(index, out)?,
        }
        if index == 0 {
            stamp_counter(out, snapshot.counter);
        }
        Ok(())
    }

    /// Page 1 as of `version`, if it is the one kept in memory.
    fn cached_page0(&self, index: u32, version: Version) -> Option<Arc<[u8]>> {
        if index != 0 {
            return None;
        }
        match &*self.page0.lock().unwrap() {
            Some((lsn, bytes)) if *lsn == version.lsn => Some(bytes.clone()),
            _ => None,
        }
    }

    fn read_base(&self, index: u32, out: &mut [u8]) -> io::Result<()> {
        let offset = u64::from(index) * PAGE_SIZE as u64;
        let len = self.base.metadata()?.len();
        if offset + PAGE_SIZE as u64 <= len {
            self.base.read_exact_at(out, offset)
        } else {
            out.fill(0);
            Ok(())
        }
    }

    // --- writing ------------------------------------------------------------------------

    /// Takes the writer lock for a connection whose snapshot is `snapshot`: refused if another
    /// connection writes, or if the snapshot is no longer the latest state (the transaction
    /// must start again to see what it would overwrite).
    pub fn try_reserve(&self, snapshot: &Snapshot) -> bool {
        let mut held = self.writer.held.lock().unwrap();
        if *held || self.state.read().unwrap().head_lsn != snapshot.head_lsn || self.is_deleted() {
            return false;
        }
        *held = true;
        true
    }

    pub fn release_reserve(&self) {
        *self.writer.held.lock().unwrap() = false;
        self.writer.freed.notify_all();
    }

    pub fn is_reserved(&self) -> bool {
        *self.writer.held.lock().unwrap()
    }

    fn reserve_waiting(&self) -> Result<(), VolumeError> {
        let held = self.writer.held.lock().unwrap();
        let (mut held, timeout) = self
            .writer
            .freed
            .wait_timeout_while(held, WRITER_WAIT, |held| *held)
            .unwrap();
        if timeout.timed_out() {
            return Err(VolumeError::new(
                ErrorCode::Unavailable,
                "a writer did not finish in time",
            ));
        }
        *held = true;
        Ok(())
    }

    /// Makes a transaction durable and visible. `pages` are whole pages by 0-based index;
    /// `db_pages` is the database size after it. The caller holds the writer lock, taken with
    /// `base` as its snapshot. Returns the new current snapshot.
    pub fn commit(
        &self,
        base: &Snapshot,
        pages: &BTreeMap<u32, Box<[u8]>>,
        db_pages: u32,
    ) -> Result<Snapshot, VolumeError> {
        let mut changed: Vec<(u32, &[u8])> = Vec::with_capacity(pages.len());
        for (&index, bytes) in pages {
            if index >= db_pages {
                continue;
            }
            if index == 0 && base.db_pages > 0 {
                // SQLite rewrites page 1 on every commit for its change counter; when that is
                // all that changed, the page is not logged (the counter is ours to show).
                let mut current = vec![0u8; PAGE_SIZE];
                self.read_page(base, 0, &mut current)?;
                if same_but_counters(&current, bytes) {
                    continue;
                }
            }
            changed.push((index, bytes));
        }
        if changed.is_empty() && db_pages == base.db_pages {
            return Ok(base.clone());
        }
        let lsn = base.head_lsn + 1;
        let time_us = self.clock.now_us();
        let record = log::encode_commit(self.uuid, lsn, time_us, db_pages, &changed);
        let len = record.len() as u32;
        let placed = self.log.append(record)?;
        let pages: Vec<(u32, u64)> = changed
            .iter()
            .enumerate()
            .map(|(i, (index, _))| (*index, log::page_offset(placed.offset, i)))
            .collect();
        if let Some((_, bytes)) = changed.iter().find(|(index, _)| *index == 0) {
            *self.page0.lock().unwrap() = Some((lsn, Arc::from(*bytes)));
        }
        let mut st = self.state.write().unwrap();
        publish_commit(
            &mut st,
            lsn,
            time_us,
            db_pages,
            placed.segment,
            &pages,
            true,
        );
        let seg = st.segments.entry(placed.segment).or_default();
        seg.bytes += u64::from(len);
        seg.max_lsn = lsn;
        let counter = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(Snapshot {
            live: Arc::new(st.live.up_to(lsn)),
            db_pages,
            head_lsn: lsn,
            counter,
        })
    }

    // --- backtrack ----------------------------------------------------------------------

    /// Switches the volume to its state at `request.to_us`, durably, once per backtrack id.
    /// The caller has closed every connection to the volume (rolling back `rolled_back` open
    /// transactions).
    pub fn backtrack(
        &self,
        request: &BacktrackRequest,
        rolled_back: u32,
    ) -> Result<BacktrackOutcome, VolumeError> {
        let _one_at_a_time = self.maintenance.lock().unwrap();
        if let Some(done) = self.state.read().unwrap().ledger.get(&request.backtrack_id) {
            return Ok(done.clone());
        }
        let now = self.clock.now_us();
        let to_us = self.check_target(request, now)?;
        self.reserve_waiting()?;
        let result = (|| {
            let (lsn, target) = {
                let st = self.state.read().unwrap();
                (st.head_lsn + 1, st.timeline.state_at(to_us))
            };
            let time_us = self.clock.now_us();
            let payload = BacktrackPayload {
                backtrack_id: request.backtrack_id,
                to_us,
                requested_us: request.to_us,
                rolled_back,
                live: target.live.and_from(lsn + 1),
            };
            let bytes = serde_json::to_vec(&payload).map_err(VolumeError::internal)?;
            let record = log::encode_backtrack(self.uuid, lsn, time_us, target.db_pages, &bytes);
            let len = record.len() as u32;
            let placed = self.log.append(record)?;
            let mut st = self.state.write().unwrap();
            let outcome = publish_backtrack(&mut st, lsn, time_us, target.db_pages, payload);
            let seg = st.segments.entry(placed.segment).or_default();
            seg.bytes += u64::from(len);
            seg.max_lsn = lsn;
            // Well apart from any value a cached connection could hold.
            self.counter.fetch_add(1 << 16, Ordering::AcqRel);
            Ok(outcome)
        })();
        self.release_reserve();
        result
    }

    /// The backtracks this volume remembers (the last 7 days), oldest first.
    pub fn ledger(&self) -> Vec<BacktrackOutcome> {
        let mut all: Vec<BacktrackOutcome> = self
            .state
            .read()
            .unwrap()
            .ledger
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|o| (o.backtracked_from_us, o.backtrack_id));
        all
    }

    /// The outcome of backtrack `id`, if it already happened.
    pub fn recorded_backtrack(&self, id: &Uuid) -> Option<BacktrackOutcome> {
        self.state.read().unwrap().ledger.get(id).cloned()
    }

    /// The instant a backtrack will use, or why it cannot.
    fn check_target(&self, request: &BacktrackRequest, now: i64) -> Result<i64, VolumeError> {
        let st = self.state.read().unwrap();
        if st.window_secs == 0 {
            return Err(VolumeError::new(
                ErrorCode::BacktrackDisabled,
                "backtrack is disabled on the volume (window 0)",
            ));
        }
        if request.to_us > now {
            return Err(VolumeError::new(
                ErrorCode::TimeInFuture,
                format!(
                    "the requested time {} is after the node's clock {now}",
                    request.to_us
                ),
            ));
        }
        let earliest = earliest_restorable(&st, now).unwrap_or(now);
        if request.to_us >= earliest {
            Ok(request.to_us)
        } else if request.clamp_to_earliest {
            Ok(earliest)
        } else {
            Err(VolumeError::new(
                ErrorCode::BeforeEarliest,
                format!(
                    "the requested time {} is before the earliest restorable time {earliest}",
                    request.to_us
                ),
            ))
        }
    }

    // --- settings and figures -----------------------------------------------------------

    pub fn set_window(&self, window_secs: u64) -> Result<(), VolumeError> {
        let _one_at_a_time = self.maintenance.lock().unwrap();
        {
            let mut st = self.state.write().unwrap();
            if st.window_secs == 0 && window_secs > 0 {
                st.enabled_since_us = Some(self.clock.now_us());
            }
            if window_secs == 0 {
                st.enabled_since_us = None;
            }
            st.window_secs = window_secs;
        }
        self.write_meta()?;
        Ok(())
    }

    pub fn figures(&self, open_transactions: u32, switching: bool) -> VolumeFigures {
        let now = self.clock.now_us();
        let st = self.state.read().unwrap();
        let log_bytes: u64 = st.segments.values().map(|s| s.bytes).sum();
        let base_bytes = self.base.metadata().map(|m| m.len()).unwrap_or(0);
        VolumeFigures {
            volume_id: self.id.clone(),
            window_secs: st.window_secs,
            actual_window_secs: actual_window_secs(&st, now),
            created_at_us: st.created_at_us,
            earliest_restorable_us: earliest_restorable(&st, now),
            change_records_created: st.records_created,
            change_records_stored: st.records_stored,
            backtracks_applied: st.backtracks_applied,
            bytes_on_disk: log_bytes + base_bytes,
            open_transactions,
            switching,
        }
    }

    /// What each log segment holds of this volume.
    pub fn segment_use(&self) -> BTreeMap<u64, SegmentUse> {
        self.state.read().unwrap().segments.clone()
    }

    /// Whether segment `n` still holds records this volume needs.
    pub fn needs_segment(&self, n: u64) -> bool {
        let st = self.state.read().unwrap();
        st.segments
            .get(&n)
            .is_some_and(|s| s.max_lsn > st.timeline.base_lsn)
    }

    pub fn forget_segment(&self, n: u64) {
        self.state.write().unwrap().segments.remove(&n);
    }

    pub fn window_secs(&self) -> u64 {
        self.state.read().unwrap().window_secs
    }

    // --- folding ------------------------------------------------------------------------

    /// The fold the window asks for now: everything older than the window (everything, when
    /// the window is 0).
    pub fn fold_for_window(&self) -> Result<bool, VolumeError> {
        let now = self.clock.now_us();
        let window = self.window_secs();
        self.fold_to(now - (window as i64) * 1_000_000, None, false)
    }

    /// Folds at least through `lsn`, moving the horizon past backtracks if it must: the log
    /// budget is full, so the volume's actual window shrinks.
    pub fn fold_through(&self, lsn: u64) -> Result<bool, VolumeError> {
        let time = {
            let st = self.state.read().unwrap();
            if lsn <= st.timeline.base_lsn {
                return Ok(false);
            }
            time_of_lsn(&st.timeline, lsn).unwrap_or_else(|| self.clock.now_us())
        };
        self.fold_to(time, Some(lsn), true)
    }

    /// Moves the horizon to `time_us` (later, if `through` requires): the state then becomes
    /// the base image and older history is forgotten. Returns whether anything was folded.
    fn fold_to(
        &self,
        time_us: i64,
        through: Option<u64>,
        forced: bool,
    ) -> Result<bool, VolumeError> {
        let _one_at_a_time = self.maintenance.lock().unwrap();
        let plan = {
            let st = self.state.read().unwrap();
            match plan_fold(&st, time_us, through) {
                Some(plan) => plan,
                None => return Ok(false),
            }
        };
        // Intent first: from here on the earliest restorable time is the fold's time, and a
        // crash before the end is redone at start.
        {
            let mut st = self.state.write().unwrap();
            st.pending_fold = Some(PendingFold {
                lsn: plan.horizon,
                time_us: plan.time_us,
                db_pages: plan.db_pages,
            });
        }
        self.write_meta()?;
        let mut page = vec![0u8; PAGE_SIZE];
        for (index, version) in &plan.pages {
            self.log
                .read_at(version.segment, version.offset, &mut page)?;
            self.base
                .write_all_at(&page, u64::from(*index) * PAGE_SIZE as u64)?;
        }
        self.base.sync_all()?;
        {
            let mut st = self.state.write().unwrap();
            apply_fold(&mut st, &plan);
            st.trimmed_by_budget = forced;
        }
        self.write_meta()?;
        Ok(true)
    }

    /// Writes `volume.json` from the current state, atomically.
    fn write_meta(&self) -> io::Result<()> {
        if self.is_deleted() {
            return Ok(());
        }
        let now = self.clock.now_us();
        let meta = {
            let st = self.state.read().unwrap();
            VolumeMeta {
                format: META_FORMAT,
                id: self.id.clone(),
                uuid: self.uuid,
                window_secs: st.window_secs,
                created_at_us: st.created_at_us,
                enabled_since_us: st.enabled_since_us,
                base_lsn: st.timeline.base_lsn,
                base_time_us: st.timeline.base_time_us,
                base_db_pages: st.timeline.base_db_pages,
                base_live: st.timeline.base_live.clone(),
                events: st.timeline.events.clone(),
                checkpoint_lsn: st.head_lsn,
                records_created: st.records_created,
                backtracks_applied: st.backtracks_applied,
                ledger: st
                    .ledger
                    .values()
                    .filter(|o| o.backtracked_from_us > now - LEDGER_RETENTION_US)
                    .cloned()
                    .collect(),
                pending_fold: st.pending_fold.clone(),
                trimmed_by_budget: st.trimmed_by_budget,
            }
        };
        let bytes = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        fsutil::write_atomically(&self.dir.join("volume.json"), &bytes)
    }
}

/// The newest version whose LSN is in `live`: one binary search per range, newest range
/// first, so dead versions cost nothing to skip.
fn newest_in(versions: &[Version], live: &LiveSet) -> Option<Version> {
    live.ranges_descending().find_map(|(low, high)| {
        let end = versions.partition_point(|v| v.lsn <= high);
        end.checked_sub(1)
            .map(|i| versions[i])
            .filter(|v| v.lsn >= low)
    })
}

fn publish_commit(
    st: &mut VolumeState,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    segment: u64,
    pages: &[(u32, u64)],
    created: bool,
) {
    for &(index, offset) in pages {
        st.versions.entry(index).or_default().push(Version {
            lsn,
            segment,
            offset,
        });
    }
    st.timeline.commits.push(CommitInfo {
        lsn,
        time_us,
        db_pages,
        pages: pages.len() as u32,
    });
    st.head_lsn = lsn;
    st.head_db_pages = db_pages;
    st.records_stored += pages.len() as u64;
    if created {
        st.records_created += pages.len() as u64;
    }
}

fn publish_backtrack(
    st: &mut VolumeState,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    payload: BacktrackPayload,
) -> BacktrackOutcome {
    st.timeline.events.push(TimelineEvent {
        time_us,
        lsn,
        live: payload.live.clone(),
        db_pages,
    });
    st.live = payload.live;
    st.head_lsn = lsn;
    st.head_db_pages = db_pages;
    let outcome = BacktrackOutcome {
        backtrack_id: payload.backtrack_id,
        backtrack_to_us: payload.to_us,
        backtracked_from_us: time_us,
        rolled_back_transactions: payload.rolled_back,
    };
    st.ledger.insert(payload.backtrack_id, outcome.clone());
    st.backtracks_applied += 1;
    outcome
}

fn earliest_restorable(st: &VolumeState, now: i64) -> Option<i64> {
    if st.window_secs == 0 {
        return None;
    }
    let pending = st.pending_fold.as_ref().map(|f| f.time_us);
    let floor = st
        .timeline
        .base_time_us
        .max(pending.unwrap_or(i64::MIN))
        .max(st.enabled_since_us.unwrap_or(st.created_at_us))
        .max(now - st.window_secs as i64 * 1_000_000);
    Some(floor.min(now))
}

/// The target window, unless the log budget forced the horizon past its start.
fn actual_window_secs(st: &VolumeState, now: i64) -> u64 {
    if st.window_secs == 0 {
        return 0;
    }
    if st.trimmed_by_budget {
        let horizon = st.timeline.base_time_us;
        let kept = ((now - horizon).max(0) / 1_000_000) as u64;
        return kept.min(st.window_secs);
    }
    st.window_secs
}

fn time_of_lsn(timeline: &Timeline, lsn: u64) -> Option<i64> {
    let commit = timeline.commits.partition_point(|c| c.lsn <= lsn);
    let commit_time = commit.checked_sub(1).map(|i| timeline.commits[i].time_us);
    let event = timeline.events.partition_point(|e| e.lsn <= lsn);
    let event_time = event.checked_sub(1).map(|i| timeline.events[i].time_us);
    commit_time.max(event_time)
}

struct FoldPlan {
    /// Versions at or below this LSN go into the base image.
    horizon: u64,
    time_us: i64,
    db_pages: u32,
    /// The version of each page the base image must hold.
    pages: Vec<(u32, Version)>,
}

/// What folding to `time_us` means: the prefix of LSNs on which every state still reachable
/// (the one at `time_us` and every backtrack after it) agrees.
fn plan_fold(st: &VolumeState, mut time_us: i64, through: Option<u64>) -> Option<FoldPlan> {
    let timeline = &st.timeline;
    if let Some(pending) = &st.pending_fold {
        time_us = time_us.max(pending.time_us);
    }
    if time_us <= timeline.base_time_us {
        return None;
    }
    let horizon = loop {
        let mut sets: Vec<&LiveSet> = vec![timeline.live_at(time_us)];
        sets.extend(
            timeline
                .events
                .iter()
                .filter(|e| e.time_us > time_us)
                .map(|e| &e.live),
        );
        let limit = timeline.lsn_at(time_us);
        let agreed = LiveSet::agreement_horizon(&sets, limit).unwrap_or(timeline.base_lsn);
        let needed = through.unwrap_or(0);
        match timeline.events.iter().find(|e| e.time_us > time_us) {
            Some(next) if agreed < needed => time_us = next.time_us,
            _ => break agreed,
        }
    };
    if horizon <= timeline.base_lsn && st.pending_fold.is_none() {
        return None;
    }
    // A redone fold never moves the horizon back.
    let horizon = horizon.max(timeline.base_lsn);
    let agreed = timeline.live_at(time_us).up_to(horizon);
    let pages = st
        .versions
        .iter()
        .filter_map(|(&index, versions)| newest_in(versions, &agreed).map(|v| (index, v)))
        .collect();
    Some(FoldPlan {
        horizon,
        time_us,
        db_pages: timeline.db_pages_of(&agreed),
        pages,
    })
}

/// Forgets what the base image now holds.
fn apply_fold(st: &mut VolumeState, plan: &FoldPlan) {
    let h = plan.horizon;
    let timeline = &mut st.timeline;
    timeline.base_live = timeline.live_at(plan.time_us).folded_at(h);
    timeline.base_lsn = h;
    timeline.base_time_us = plan.time_us;
    timeline.base_db_pages = plan.db_pages;
    timeline.commits.retain(|c| c.lsn > h);
    timeline.events.retain(|e| e.time_us > plan.time_us);
    for event in &mut timeline.events {
        event.live = event.live.folded_at(h);
    }
    st.live = st.live.folded_at(h);
    let mut stored = 0;
    st.versions.retain(|_, versions| {
        versions.retain(|v| v.lsn > h);
        stored += versions.len() as u64;
        !versions.is_empty()
    });
    st.records_stored = stored;
    st.pending_fold = None;
}

/// SQLite keeps its file change counter at bytes 24..28 of page 1 and repeats it at 92..96
/// ("version-valid-for"); both are set to our counter on every read of page 1.
fn stamp_counter(page: &mut [u8], counter: u32) {
    let bytes = counter.to_be_bytes();
    page[24..28].copy_from_slice(&bytes);
    page[92..96].copy_from_slice(&bytes);
}

fn same_but_counters(a: &[u8], b: &[u8]) -> bool {
    a[..24] == b[..24] && a[28..92] == b[28..92] && a[96..] == b[96..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_never_repeats_or_goes_back() {
        let clock = Clock::default();
        clock.advance_past(i64::MAX / 2);
        let a = clock.now_us();
        let b = clock.now_us();
        assert!(a > i64::MAX / 2 && b > a);
    }

    #[test]
    fn the_newest_live_version_is_found_across_dead_ranges() {
        let v = |lsn| Version {
            lsn,
            segment: 1,
            offset: lsn,
        };
        let versions = [v(2), v(5), v(7), v(9)];
        assert_eq!(newest_in(&versions, &LiveSet::all()).unwrap().lsn, 9);
        let after_backtrack = LiveSet::from_ranges(vec![(0, 6), (10, u64::MAX)]);
        assert_eq!(newest_in(&versions, &after_backtrack).unwrap().lsn, 5);
        assert!(newest_in(&versions, &LiveSet::from_ranges(vec![(0, 1)])).is_none());
    }

    #[test]
    fn only_counter_bytes_may_differ_for_page_one_to_be_skipped() {
        let a = vec![7u8; PAGE_SIZE];
        let mut b = a.clone();
        stamp_counter(&mut b, 99);
        assert!(same_but_counters(&a, &b));
        b[28] ^= 1;
        assert!(!same_but_counters(&a, &b));
    }
}
