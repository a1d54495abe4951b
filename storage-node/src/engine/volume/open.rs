//! Creating a volume, opening one (replaying its records from the log), and `volume.json`,
//! which holds what the log alone cannot tell once old segments are gone.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::backtrack::{publish_backtrack, BacktrackPayload};
use super::clone::CloneMeta;
use super::commit::publish_commit;
use super::{Clock, PendingFold, Volume, VolumeState, WriterLock};
use crate::api::BacktrackOutcome;
use crate::engine::log::{Log, RecordKind, RecordMeta};
use crate::engine::timeline::{LiveSet, Lsn, Timeline, TimelineEvent};
use crate::fsutil;

const META_FORMAT: u32 = 1;
/// Backtrack outcomes are remembered this long for idempotent retries.
const LEDGER_RETENTION_US: i64 = 7 * 24 * 3600 * 1_000_000;

/// `volume.json`: what the log alone cannot tell after its old segments are gone.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeMeta {
    pub(super) format: u32,
    pub(super) id: String,
    pub(super) uuid: Uuid,
    pub(super) window_secs: u64,
    pub(super) created_at_us: i64,
    /// When the current history started (creation, or the window going above 0).
    pub(super) enabled_since_us: Option<i64>,
    pub(super) base_lsn: Lsn,
    pub(super) base_time_us: i64,
    pub(super) base_db_pages: u32,
    pub(super) base_live: LiveSet,
    /// Backtracks after the base, as of `checkpoint_lsn`.
    pub(super) events: Vec<TimelineEvent>,
    /// Every record of this volume up to this LSN is reflected here (besides commits' pages,
    /// which are in the log or the base).
    pub(super) checkpoint_lsn: Lsn,
    pub(super) records_created: u64,
    /// Backtrack records ever applied (one per switch, whatever its id).
    #[serde(default)]
    pub(super) backtracks_applied: u64,
    pub(super) ledger: Vec<BacktrackOutcome>,
    pub(super) pending_fold: Option<PendingFold>,
    pub(super) trimmed_by_budget: bool,
    /// The volume this one was cloned from.
    #[serde(default)]
    pub(super) source: Option<CloneMeta>,
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
        Volume::create_in(dir, id, window_secs, log, clock, None)
    }

    /// Creates a volume in `dir`: empty, or a clone whose base is its source's (see `clone`).
    pub(super) fn create_in(
        dir: &Path,
        id: &str,
        window_secs: u64,
        log: Arc<Log>,
        clock: Arc<Clock>,
        source: Option<CloneMeta>,
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
            base_lsn: Lsn::ZERO,
            base_time_us: now,
            base_db_pages: source.as_ref().map_or(0, |s| s.db_pages),
            base_live: LiveSet::all(),
            events: Vec::new(),
            checkpoint_lsn: Lsn::ZERO,
            records_created: 0,
            backtracks_applied: 0,
            ledger: Vec::new(),
            pending_fold: None,
            trimmed_by_budget: false,
            source,
        };
        fsutil::write_atomically(&dir.join("volume.json"), &serde_json::to_vec_pretty(&meta)?)?;
        fsutil::sync_dir(dir.parent().unwrap_or(dir))?;
        Ok(Volume::from_meta(dir, meta, base, log, clock))
    }

    /// Opens a volume from `dir`, replaying its records from `records` (the whole log, in
    /// order). Returns `None` when the directory holds no complete volume. A fold that a
    /// crash interrupted is redone by [`Volume::finish_interrupted_fold`], once the clones
    /// are linked to their sources.
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
        let volume = Volume::from_meta(dir, meta, base, log, clock);
        volume.replay(records)?;
        Ok(Some(volume))
    }

    /// Redoes the fold a crash interrupted, if any, before anything is served.
    pub fn finish_interrupted_fold(&self) -> io::Result<()> {
        let pending = self.state.read().unwrap().pending_fold.clone();
        if let Some(fold) = pending {
            tracing::info!(volume = %self.id, lsn = fold.lsn.0, "redoing an interrupted fold");
            self.fold_to(fold.time_us, None, false)
                .map_err(|e| io::Error::other(e.message))?;
        }
        Ok(())
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
            commit_pages: BTreeMap::new(),
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
            source: meta.source,
            unsettled: BTreeMap::new(),
            lost: std::collections::VecDeque::new(),
            lsn_floor: Lsn::ZERO,
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
            pins: Mutex::new(BTreeMap::new()),
            next_pin: AtomicU64::new(0),
            ancestry: RwLock::new(None),
            clones: Mutex::new(Vec::new()),
        }
    }

    /// Applies this volume's records that the base and `volume.json` do not already reflect.
    pub(super) fn replay(&self, records: &[RecordMeta]) -> io::Result<()> {
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

    /// Writes `volume.json` from the current state, atomically.
    pub(super) fn write_meta(&self) -> io::Result<()> {
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
                checkpoint_lsn: st.settled_head(),
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
                source: st.source.clone(),
            }
        };
        let bytes = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        fsutil::write_atomically(&self.dir.join("volume.json"), &bytes)
    }
}
