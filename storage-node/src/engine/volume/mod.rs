//! One volume: the page store under one cluster's SQLite database.
//!
//! A page's content in a state is its newest version whose LSN is in the state's live set, or
//! the base image (`base.img`, the state folded at the horizon). The versions live in the log;
//! this module keeps, in memory, where each one is (`versions`), the timeline of commits and
//! backtracks since the base, and the volume's settings, persisted in `volume.json`.
//!
//! - A commit queues one record (group-committed) and publishes its versions at once, their
//!   bytes held in memory until the record is durable: the next writer goes on meanwhile, and
//!   the commits of one volume share flushes. No caller is answered before what it read or
//!   wrote is durable; a commit whose record fails is undone, with every later one.
//! - A backtrack appends one small record and installs a new live set: a metadata switch whose
//!   cost does not depend on the size of the database.
//! - A fold moves the horizon forward: it writes the newest versions at the horizon into the
//!   base image, syncs it, and forgets them; the log segments they came from can then go.
//!   It first records its intent in `volume.json`, so a crash in the middle is redone at
//!   start, before anything is served.
//!
//! - `open`: creating, opening and replaying a volume; `volume.json`.
//! - `read`: snapshots and page reads.
//! - `commit`: the single writer and commits.
//! - `backtrack`: backtracks and the ledger.
//! - `fold`: moving the horizon into the base image.

mod backtrack;
mod clone;
mod commit;
mod fold;
mod open;
mod read;
mod view;

pub use self::clone::CloneSpec;
pub use self::commit::Reservation;
pub use self::view::Pin;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::log::{Log, LogError, PAGE_SIZE};
use super::timeline::{LiveSet, Lsn, Timeline};
use crate::api::{BacktrackOutcome, CloneOf, ErrorCode, VolumeFigures};
use crate::fsutil;

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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
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
    lsn: Lsn,
    /// `UNSETTLED` while its commit's record is not known durable: the bytes are then the
    /// `offset`-th page of the commit in `VolumeState::unsettled`.
    segment: u64,
    /// Offset of the page's bytes in the segment.
    offset: u64,
}

/// The segment of a version whose record is not known durable yet.
const UNSETTLED: u64 = u64::MAX;

/// A reader's fixed view of the volume, taken when SQLite locks the file.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub live: Arc<LiveSet>,
    pub db_pages: u32,
    pub head_lsn: Lsn,
    /// Shown to SQLite as the file change counter, so its page cache is dropped whenever the
    /// state it caches is no longer the state it reads.
    pub counter: u32,
}

/// What a log segment holds of this volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentUse {
    pub bytes: u64,
    pub max_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PendingFold {
    lsn: Lsn,
    time_us: i64,
    db_pages: u32,
}

/// What the volume knows in memory, under `Volume::state`.
struct VolumeState {
    /// Target backtrack window in seconds (0: no history kept).
    window_secs: u64,
    created_at_us: i64,
    /// When the current history started: creation, or the window going above 0.
    enabled_since_us: Option<i64>,
    /// Commits and backtracks since the base image, and the live set at each instant.
    timeline: Timeline,
    /// Every page version in the log still needed, by page index, oldest first.
    versions: HashMap<u32, Vec<Version>>,
    /// The pages each commit still in the log wrote, by LSN: which pages changed after an
    /// instant, at a cost that follows the changes since then.
    commit_pages: BTreeMap<Lsn, Vec<u32>>,
    /// The LSNs whose versions the current state reads.
    live: LiveSet,
    /// The newest LSN of the volume (a commit or a backtrack).
    head_lsn: Lsn,
    /// The database's size in pages after `head_lsn`.
    head_db_pages: u32,
    /// Applied backtracks by id, for idempotent retries (the last 7 days).
    ledger: HashMap<Uuid, BacktrackOutcome>,
    /// Backtrack records ever applied, one per switch.
    backtracks_applied: u64,
    /// Change records (page versions) ever written by commits: the billing meter's counter.
    records_created: u64,
    /// Change records retained for the window (in `versions`).
    records_stored: u64,
    /// What each log segment holds of this volume, so a segment is deleted once no volume
    /// needs it.
    segments: BTreeMap<u64, SegmentUse>,
    /// A fold recorded in `volume.json` and not finished yet (it is redone at start).
    pending_fold: Option<PendingFold>,
    /// The log budget forced the horizon past the window's start: the actual window is short.
    trimmed_by_budget: bool,
    /// The volume this one was cloned from, if it is a clone.
    source: Option<clone::CloneMeta>,
    /// Commits published but not yet known durable, oldest first (see `commit`).
    unsettled: BTreeMap<Lsn, commit::Unsettled>,
    /// Commits undone after they were published (the LSNs from, through) and why: a caller
    /// that saw one of them is not answered. Their LSNs are never used again.
    lost: std::collections::VecDeque<(Lsn, Lsn, LogError)>,
    /// The lowest LSN the next record may take: above every undone one.
    lsn_floor: Lsn,
}

impl VolumeState {
    /// The newest LSN known durable.
    fn settled_head(&self) -> Lsn {
        self.unsettled
            .values()
            .next()
            .map_or(self.head_lsn, |first| first.prev_head)
    }

    /// The LSN of the next record (a commit or a backtrack).
    fn next_lsn(&self) -> Lsn {
        self.head_lsn.next().max(self.lsn_floor)
    }
}

/// The single-writer lock (SQLite's RESERVED lock), held across VFS calls.
#[derive(Default)]
struct WriterLock {
    held: Mutex<bool>,
    freed: Condvar,
}

/// One cluster's page store.
///
/// Lock order: `maintenance`, then the writer lock (`writer.held`), then `pins`, then `state`,
/// then `page0` and the log's queue (a commit queues its record with `state` held for writing,
/// so records of a volume are queued in LSN order); waiting for the log is done with no lock
/// of the volume held. A writer holds the writer lock across many calls
/// (from SQLite's RESERVED lock to its commit or rollback), through a [`Reservation`] or the
/// VFS's stage, which release it when dropped.
pub struct Volume {
    /// The cluster's volume id (its resource id), as the control plane names it.
    pub id: String,
    /// Names the volume in the log's records; new at every creation.
    pub uuid: Uuid,
    dir: PathBuf,
    log: Arc<Log>,
    clock: Arc<Clock>,
    /// `base.img`: the state folded at the horizon.
    base: File,
    state: RwLock<VolumeState>,
    writer: WriterLock,
    /// Folds, backtracks and settings changes, one at a time.
    maintenance: Mutex<()>,
    /// Shown to SQLite as page 1's change counter (see [`Snapshot::counter`]).
    counter: AtomicU32,
    /// Set when the volume is being deleted: no new writer, no `volume.json` write.
    deleted: AtomicBool,
    /// The newest committed version of page 0 (SQLite reads its header at every transaction
    /// start), keyed by that version's LSN.
    page0: Mutex<Option<(Lsn, Arc<[u8]>)>>,
    /// The most pages one transaction may stage (they are held in memory until it commits).
    transaction_limit_pages: AtomicUsize,
    /// Instants that open views and open readers read (see [`Pin`]): no fold moves the
    /// horizon past the earliest, so every version they read stays. A fold plans with it
    /// held.
    pins: Mutex<BTreeMap<u64, i64>>,
    next_pin: AtomicU64,
    /// For a clone still sharing pages with its source: the source, and which pages the
    /// clone's base image holds already.
    ancestry: RwLock<Option<clone::Ancestry>>,
    /// The clones that share pages with this volume (see `clone`).
    clones: Mutex<Vec<Weak<Volume>>>,
}

impl Volume {
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
        // Blocks really allocated: a clone's base image is sparse.
        let base_bytes = self.base.metadata().map(|m| m.blocks() * 512).unwrap_or(0);
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
            clone_of: st.source.as_ref().map(|m| CloneOf {
                volume_id: m.source_id.clone(),
                at_us: m.time_us,
                shared: m.shared,
            }),
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

/// Refuses an instant that no view (or clone) can read: in the future, before the earliest
/// restorable time, or on a volume that keeps no history.
fn check_instant(st: &VolumeState, time_us: i64, now: i64) -> Result<(), VolumeError> {
    if time_us > now {
        return Err(VolumeError::new(
            ErrorCode::TimeInFuture,
            format!("the requested time {time_us} is after the node's clock {now}"),
        ));
    }
    let Some(earliest) = earliest_restorable(st, now) else {
        return Err(VolumeError::new(
            ErrorCode::BacktrackDisabled,
            "the volume keeps no history (window 0)",
        ));
    };
    if time_us < earliest {
        return Err(VolumeError::new(
            ErrorCode::BeforeEarliest,
            format!(
                "the requested time {time_us} is before the earliest restorable time {earliest}"
            ),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::read::{same_but_counters, stamp_counter};
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
            lsn: Lsn(lsn),
            segment: 1,
            offset: lsn,
        };
        let versions = [v(2), v(5), v(7), v(9)];
        assert_eq!(newest_in(&versions, &LiveSet::all()).unwrap().lsn, Lsn(9));
        let after_backtrack =
            LiveSet::from_ranges(vec![(Lsn(0), Lsn(6)), (Lsn(10), Lsn(u64::MAX))]);
        assert_eq!(newest_in(&versions, &after_backtrack).unwrap().lsn, Lsn(5));
        assert!(newest_in(&versions, &LiveSet::from_ranges(vec![(Lsn(0), Lsn(1))])).is_none());
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
