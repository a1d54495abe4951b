//! Writing: the single writer lock (SQLite's RESERVED lock), and a commit: one durable log
//! record, then its versions published.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::read::same_but_counters;
use super::{Snapshot, Version, Volume, VolumeError, VolumeState};
use crate::api::ErrorCode;
use crate::engine::log::{self, PAGE_SIZE};
use crate::engine::timeline::{CommitInfo, Lsn};

/// How long a backtrack waits for a writer still finishing its commit.
const WRITER_WAIT: Duration = Duration::from_secs(10);

/// The writer lock, held until this is dropped (a panic included).
pub struct Reservation<'a> {
    volume: &'a Volume,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.volume.release_reserve();
    }
}

impl Volume {
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

    /// Takes the writer lock once the writer holding it (if any) is done, waiting at most
    /// [`WRITER_WAIT`]; the lock goes with the returned guard.
    pub(super) fn reserve_waiting(&self) -> Result<Reservation<'_>, VolumeError> {
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
        Ok(Reservation { volume: self })
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
        let lsn = base.head_lsn.next();
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
}

pub(super) fn publish_commit(
    st: &mut VolumeState,
    lsn: Lsn,
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
    st.commit_pages
        .insert(lsn, pages.iter().map(|&(index, _)| index).collect());
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
