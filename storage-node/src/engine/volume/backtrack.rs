//! Backtracks: one small log record that installs a new live set (a metadata switch), once
//! per backtrack id, remembered in the ledger.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{earliest_restorable, Volume, VolumeError, VolumeState};
use crate::api::{BacktrackOutcome, BacktrackRequest, ErrorCode};
use crate::engine::log;
use crate::engine::timeline::{LiveSet, Lsn, TimelineEvent};

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BacktrackPayload {
    pub(super) backtrack_id: Uuid,
    pub(super) to_us: i64,
    pub(super) requested_us: i64,
    pub(super) rolled_back: u32,
    pub(super) live: LiveSet,
}

impl Volume {
    /// Switches the volume to its state at `request.to_us`, durably, once per backtrack id.
    /// The caller has closed every connection to the volume (rolling back `rolled_back` open
    /// transactions).
    pub fn backtrack(
        &self,
        request: &BacktrackRequest,
        rolled_back: u32,
    ) -> Result<BacktrackOutcome, VolumeError> {
        // Its record follows every commit's, and the switch every commit's fate.
        self.settle_all();
        let _one_at_a_time = self.maintenance.lock().unwrap();
        if let Some(done) = self.state.read().unwrap().ledger.get(&request.backtrack_id) {
            return Ok(done.clone());
        }
        let now = self.clock.now_us();
        let to_us = self.check_target(request, now)?;
        let _writer = self.reserve_waiting()?;
        let (lsn, target) = {
            let st = self.state.read().unwrap();
            (st.next_lsn(), st.timeline.state_at(to_us))
        };
        let time_us = self.clock.now_us();
        let payload = BacktrackPayload {
            backtrack_id: request.backtrack_id,
            to_us,
            requested_us: request.to_us,
            rolled_back,
            live: target.live.and_from(lsn.next()),
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
    }

    /// The backtracks this volume remembers (the last 7 days), oldest first.
    /// Backtrack switches applied so far: a reader that saw another count saw another state.
    pub fn backtracks_applied(&self) -> u64 {
        self.state.read().unwrap().backtracks_applied
    }

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
    pub(super) fn check_target(
        &self,
        request: &BacktrackRequest,
        now: i64,
    ) -> Result<i64, VolumeError> {
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
}

pub(super) fn publish_backtrack(
    st: &mut VolumeState,
    lsn: Lsn,
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
