//! Folding: the horizon moves forward; the versions at it go into the base image (synced),
//! and older history is forgotten, so the log segments it held can go. The intent is written
//! to `volume.json` first, so a crash midway is redone at start.

use std::os::unix::fs::FileExt;

use super::{newest_in, PendingFold, Version, Volume, VolumeError, VolumeState};
use crate::engine::log::PAGE_SIZE;
use crate::engine::timeline::{LiveSet, Lsn, Timeline};

impl Volume {
    /// The fold the window asks for now: everything older than the window (everything, when
    /// the window is 0).
    pub fn fold_for_window(&self) -> Result<bool, VolumeError> {
        let now = self.clock.now_us();
        let window = self.window_secs();
        self.fold_to(now - (window as i64) * 1_000_000, None, false)
    }

    /// Folds at least through `lsn`, moving the horizon past backtracks if it must: the log
    /// budget is full, so the volume's actual window shrinks.
    pub fn fold_through(&self, lsn: Lsn) -> Result<bool, VolumeError> {
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
    pub(super) fn fold_to(
        &self,
        time_us: i64,
        through: Option<Lsn>,
        forced: bool,
    ) -> Result<bool, VolumeError> {
        self.settle_all();
        let _one_at_a_time = self.maintenance.lock().unwrap();
        // An open view's instant caps the fold, and so does an open reader's; the log
        // budget's too: it then waits for them to close. The plan is made with the pins held,
        // so a reader starting meanwhile reads at least the horizon planned.
        let plan = {
            let pins = self.pins.lock().unwrap();
            let cap = pins.values().min().copied();
            let time_us = cap.map_or(time_us, |pin| time_us.min(pin));
            let st = self.state.read().unwrap();
            // Never a commit not known durable yet (one that came after `settle_all`): the
            // next pass folds it.
            let plan = plan_fold(&st, time_us, through, cap)
                .filter(|plan| plan.horizon <= st.settled_head());
            drop(st);
            drop(pins);
            match plan {
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
        // Clones from before the fold's time read what the fold is about to change: they get
        // their copies first.
        self.copy_to_clones(&plan.touched, plan.time_us)?;
        let mut page = vec![0u8; PAGE_SIZE];
        for (index, version) in &plan.pages {
            self.log
                .read_at(version.segment, version.offset, &mut page)?;
            self.base
                .write_all_at(&page, u64::from(*index) * PAGE_SIZE as u64)?;
        }
        self.base.sync_all()?;
        // A clone's base image now holds these pages itself.
        let folded: Vec<u32> = plan.pages.iter().map(|(index, _)| *index).collect();
        self.own_folded(&folded)?;
        {
            let mut st = self.state.write().unwrap();
            apply_fold(&mut st, &plan);
            st.trimmed_by_budget = forced;
        }
        self.write_meta()?;
        Ok(true)
    }
}

/// When `lsn` (a commit or a backtrack) happened; `None` for the base or an unknown LSN.
pub(super) fn time_of_lsn(timeline: &Timeline, lsn: Lsn) -> Option<i64> {
    let commit = timeline.commits.partition_point(|c| c.lsn <= lsn);
    let commit_time = commit.checked_sub(1).map(|i| timeline.commits[i].time_us);
    let event = timeline.events.partition_point(|e| e.lsn <= lsn);
    let event_time = event.checked_sub(1).map(|i| timeline.events[i].time_us);
    commit_time.max(event_time)
}

struct FoldPlan {
    /// Versions at or below this LSN go into the base image.
    pub(super) horizon: Lsn,
    pub(super) time_us: i64,
    pub(super) db_pages: u32,
    /// The version of each page the base image must hold.
    pub(super) pages: Vec<(u32, Version)>,
    /// Every page with versions the fold forgets (a superset of `pages`), in order.
    pub(super) touched: Vec<u32>,
}

/// What folding to `time_us` means: the prefix of LSNs on which every state still reachable
/// (the one at `time_us` and every backtrack after it) agrees. `through` may move the fold
/// past backtracks, never past `cap` (an open view's instant).
fn plan_fold(
    st: &VolumeState,
    mut time_us: i64,
    through: Option<Lsn>,
    cap: Option<i64>,
) -> Option<FoldPlan> {
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
        let needed = through.unwrap_or(Lsn::ZERO);
        match timeline.events.iter().find(|e| e.time_us > time_us) {
            Some(next) if agreed < needed && cap.is_none_or(|c| next.time_us <= c) => {
                time_us = next.time_us
            }
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
    let mut touched: Vec<u32> = st
        .versions
        .iter()
        .filter(|(_, versions)| versions.first().is_some_and(|v| v.lsn <= horizon))
        .map(|(&index, _)| index)
        .collect();
    touched.sort_unstable();
    Some(FoldPlan {
        horizon,
        time_us,
        db_pages: timeline.db_pages_of(&agreed),
        pages,
        touched,
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
    st.commit_pages = st.commit_pages.split_off(&h.next());
    st.pending_fold = None;
}
