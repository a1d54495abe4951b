//! Views: the volume as it was at an instant of its window, read-only. One mechanism serves
//! time-travel reads, backtrack previews and clones: a [`Snapshot`] of `state(T)` (the
//! timeline's live set at T, cut at the last LSN at or before T), and a [`Pin`] that keeps it
//! readable. While a pin is held, no fold moves the horizon past its instant (not the
//! window's, not the log budget's), so every version the view reads stays where the index
//! says it is.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{check_instant, newest_in, Snapshot, Volume, VolumeError};

/// Keeps `state(time_us)` of a volume readable until dropped.
pub struct Pin {
    volume: Arc<Volume>,
    id: u64,
    time_us: i64,
}

impl Pin {
    pub fn time_us(&self) -> i64 {
        self.time_us
    }

    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.volume.pins.lock().unwrap().remove(&self.id);
    }
}

impl Volume {
    /// `state(time_us)` as a snapshot, pinned: refused when `time_us` is in the future or
    /// before the earliest restorable time (or the volume keeps no history).
    pub fn view_at(self: &Arc<Self>, time_us: i64) -> Result<(Snapshot, Pin), VolumeError> {
        // A view reads only what is durable.
        self.settle_all();
        // Folds run under `maintenance`: with it held, the check and the pin cannot be
        // separated by one.
        let _no_fold = self.maintenance.lock().unwrap();
        let now = self.clock.now_us();
        let st = self.state.read().unwrap();
        check_instant(&st, time_us, now)?;
        let state = st.timeline.state_at(time_us);
        let head_lsn = st.timeline.lsn_at(time_us);
        // `state` is not held while `pins` is taken (a fold takes them the other way round).
        drop(st);
        let pin = self.pin(time_us);
        let snapshot = Snapshot {
            live: Arc::new(state.live),
            db_pages: state.db_pages,
            head_lsn,
            // Constant for the view's life: SQLite's cache of it never goes stale.
            counter: head_lsn.0 as u32 ^ 0x5eed_0000,
        };
        Ok((snapshot, pin))
    }

    /// The current state, for a reader starting now, pinned until the reader is done: a fold
    /// never moves past what an open read transaction reads. Taken with `pins` held, so a fold
    /// (which plans with `pins` held) either sees this pin or plans a horizon this snapshot
    /// already includes.
    pub fn snapshot_pinned(self: &Arc<Self>) -> (Snapshot, Pin) {
        let pins = self.pins.lock().unwrap();
        let snapshot = self.snapshot();
        let pin = self.pin_locked(pins, &snapshot);
        (snapshot, pin)
    }

    /// Pins `snapshot`, which must still be the latest state (as after a commit, with the
    /// writer lock still held): see [`Volume::snapshot_pinned`].
    pub fn pin_latest(self: &Arc<Self>, snapshot: &Snapshot) -> Pin {
        let pins = self.pins.lock().unwrap();
        self.pin_locked(pins, snapshot)
    }

    fn pin_locked(
        self: &Arc<Self>,
        mut pins: std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, i64>>,
        snapshot: &Snapshot,
    ) -> Pin {
        let time_us = {
            let st = self.state.read().unwrap();
            super::fold::time_of_lsn(&st.timeline, snapshot.head_lsn)
                .unwrap_or(st.timeline.base_time_us)
        };
        let id = self.next_pin.fetch_add(1, Ordering::Relaxed);
        pins.insert(id, time_us);
        Pin {
            volume: self.clone(),
            id,
            time_us,
        }
    }

    fn pin(self: &Arc<Self>, time_us: i64) -> Pin {
        let id = self.next_pin.fetch_add(1, Ordering::Relaxed);
        self.pins.lock().unwrap().insert(id, time_us);
        Pin {
            volume: self.clone(),
            id,
            time_us,
        }
    }

    /// The pages whose bytes may differ between two snapshots: those written by a commit that
    /// one holds and the other does not, and whose newest version differs. Only the commits
    /// after the first LSN where the two differ are looked at, so the cost follows the changes
    /// since then, not the size of the database.
    pub fn changed_pages(&self, a: &Snapshot, b: &Snapshot) -> Vec<u32> {
        let Some(start) = a.live.first_difference(&b.live) else {
            return Vec::new();
        };
        let st = self.state.read().unwrap();
        let mut touched: Vec<u32> = st
            .commit_pages
            .range(start..)
            .filter(|(lsn, _)| a.live.contains(**lsn) != b.live.contains(**lsn))
            .flat_map(|(_, pages)| pages.iter().copied())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        touched.retain(|index| {
            st.versions.get(index).is_some_and(|versions| {
                newest_in(versions, &a.live) != newest_in(versions, &b.live)
            })
        });
        touched
    }

    /// Change records (page versions) committed after `time_us` that the current state holds:
    /// what a backtrack to `time_us` would undo.
    pub fn records_after(&self, time_us: i64) -> u64 {
        let st = self.state.read().unwrap();
        let from = st.timeline.lsn_at(time_us);
        st.timeline
            .commits
            .iter()
            .filter(|c| c.lsn > from && st.live.contains(c.lsn))
            .map(|c| u64::from(c.pages))
            .sum()
    }

    /// The node's clock, as the volume's history is dated.
    pub fn now_us(&self) -> i64 {
        self.clock.now_us()
    }
}
