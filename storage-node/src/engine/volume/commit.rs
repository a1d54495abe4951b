//! Writing: the single writer lock (SQLite's RESERVED lock), and a commit: one log record,
//! its versions published, and (`settle_through`) the wait for it to be durable.
//!
//! Early lock release: a commit queues its record and publishes its versions (their bytes
//! held in memory, `Unsettled`) without waiting for the disk, so the writer lock goes to the
//! next writer while the record is written, and the commits of one volume share flushes. No
//! answer is given before what it read or wrote is durable: every SQL call ends with
//! `settle_through` the newest LSN it saw. If a record fails (a full disk), that commit and
//! every later one of the volume, which may have read it, are undone in memory before any
//! of them is answered, and the log writes no later record of the volume until then; a
//! writer whose transaction read undone state cannot commit (its base is no longer the head).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::read::same_but_counters;
use super::{Snapshot, Version, Volume, VolumeError, VolumeState, UNSETTLED};
use crate::api::ErrorCode;
use crate::engine::log::{self, Appended, LogError, Ticket, PAGE_SIZE};
use crate::engine::timeline::{CommitInfo, Lsn};

/// A published commit whose record is not known durable yet.
pub(super) struct Unsettled {
    ticket: Ticket,
    /// Its pages in record order, read from here until the record's place is known.
    pub(super) pages: Vec<(u32, Arc<[u8]>)>,
    /// The head before it, and the database's size then.
    pub(super) prev_head: Lsn,
    prev_db_pages: u32,
    len: u32,
}

/// How many undone commits are remembered for callers still waiting.
const LOST_KEPT: usize = 64;

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

    /// Waits (at most `timeout`) until no writer holds the lock.
    pub fn wait_for_writer(&self, timeout: Duration) {
        let held = self.writer.held.lock().unwrap();
        let _ = self
            .writer
            .freed
            .wait_timeout_while(held, timeout, |held| *held)
            .unwrap();
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
        let snapshot = self.commit_queued(base, pages, db_pages)?;
        self.settle_through(snapshot.head_lsn)?;
        Ok(snapshot)
    }

    /// Makes a transaction visible, its record queued in the log: the writer lock can go to
    /// the next writer at once. It is durable once `settle_through` its LSN says so; nobody
    /// may be told of it before.
    pub fn commit_queued(
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
        let lsn = base
            .head_lsn
            .next()
            .max(self.state.read().unwrap().lsn_floor);
        let time_us = self.clock.now_us();
        let record = log::encode_commit(self.uuid, lsn, time_us, db_pages, &changed);
        let len = record.len() as u32;
        let held: Vec<(u32, Arc<[u8]>)> = changed
            .iter()
            .map(|(index, bytes)| (*index, Arc::from(*bytes)))
            .collect();
        let pages: Vec<(u32, u64)> = held
            .iter()
            .enumerate()
            .map(|(i, (index, _))| (*index, i as u64))
            .collect();
        let mut st = self.state.write().unwrap();
        if st.head_lsn != base.head_lsn || lsn < st.lsn_floor {
            // A commit the transaction read was undone: it saw a state that is gone.
            let why = st.lost.back().map(|(_, _, e)| e.clone());
            return Err(why.map_or_else(
                || VolumeError::internal("the transaction's state is no longer the latest"),
                VolumeError::from,
            ));
        }
        let ticket = self.log.submit(record)?;
        publish_commit(&mut st, lsn, time_us, db_pages, UNSETTLED, &pages, true);
        if let Some((_, bytes)) = held.iter().find(|(index, _)| *index == 0) {
            *self.page0.lock().unwrap() = Some((lsn, bytes.clone()));
        }
        st.unsettled.insert(
            lsn,
            Unsettled {
                ticket,
                pages: held,
                prev_head: base.head_lsn,
                prev_db_pages: base.db_pages,
                len,
            },
        );
        let counter = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        Ok(Snapshot {
            live: Arc::new(st.live.up_to(lsn)),
            db_pages,
            head_lsn: lsn,
            counter,
        })
    }

    /// Returns once the state at `lsn` (what a caller read or wrote) is durable: every commit
    /// up to it; or says why it never will be (it was undone). Waits for the log, leading its
    /// batch if need be.
    pub fn settle_through(&self, lsn: Lsn) -> Result<(), VolumeError> {
        loop {
            let next = {
                let st = self.state.read().unwrap();
                if let Some((_, _, why)) = st
                    .lost
                    .iter()
                    .find(|(from, to, _)| (*from..=*to).contains(&lsn))
                {
                    return Err(why.clone().into());
                }
                st.unsettled
                    .first_key_value()
                    .filter(|(first, _)| **first <= lsn)
                    .map(|(first, u)| (*first, u.ticket.clone()))
            };
            let Some((first, ticket)) = next else {
                return Ok(());
            };
            let answer = self.log.wait(&ticket);
            self.settle(first, &ticket, answer);
        }
    }

    /// Every published commit durable (or undone): before a backtrack or a fold.
    pub(super) fn settle_all(&self) {
        let head = self.state.read().unwrap().head_lsn;
        let _ = self.settle_through(head);
    }

    /// Records the log's answer for the commit at `lsn`: where its pages are, or, if it
    /// failed, undoes it and every later commit.
    fn settle(&self, lsn: Lsn, ticket: &Ticket, answer: Result<Appended, LogError>) {
        let mut st = self.state.write().unwrap();
        if !st
            .unsettled
            .get(&lsn)
            .is_some_and(|u| Arc::ptr_eq(&u.ticket, ticket))
        {
            return; // settled by another caller
        }
        match answer {
            Ok(placed) => {
                let commit = st.unsettled.remove(&lsn).expect("checked above");
                for (i, (index, _)) in commit.pages.iter().enumerate() {
                    let versions = st.versions.get_mut(index).expect("published");
                    if let Some(v) = versions.iter_mut().rev().find(|v| v.lsn == lsn) {
                        v.segment = placed.segment;
                        v.offset = log::page_offset(placed.offset, i);
                    }
                }
                let seg = st.segments.entry(placed.segment).or_default();
                seg.bytes += u64::from(commit.len);
                seg.max_lsn = seg.max_lsn.max(lsn);
            }
            Err(why) => self.undo_from(&mut st, lsn, why),
        }
    }

    /// Undoes the published commits from `lsn` on (their records failed or will not be
    /// written), then lets the log write the volume's records again.
    fn undo_from(&self, st: &mut VolumeState, lsn: Lsn, why: LogError) {
        let undone = st.unsettled.split_off(&lsn);
        for (&commit_lsn, commit) in undone.iter().rev() {
            for (index, _) in &commit.pages {
                if let Some(versions) = st.versions.get_mut(index) {
                    versions.retain(|v| v.lsn != commit_lsn);
                    if versions.is_empty() {
                        st.versions.remove(index);
                    }
                }
            }
            st.commit_pages.remove(&commit_lsn);
            st.records_stored -= commit.pages.len() as u64;
            st.records_created -= commit.pages.len() as u64;
        }
        st.timeline.commits.retain(|c| c.lsn < lsn);
        let (Some(first), Some(last)) = (undone.values().next(), undone.keys().next_back()) else {
            return;
        };
        st.head_lsn = first.prev_head;
        st.head_db_pages = first.prev_db_pages;
        st.lsn_floor = last.next();
        st.lost.push_back((lsn, *last, why));
        if st.lost.len() > LOST_KEPT {
            st.lost.pop_front();
        }
        // SQLite's caches of the undone state are dropped at their next read.
        self.counter.fetch_add(1, Ordering::AcqRel);
        *self.page0.lock().unwrap() = None;
        tracing::warn!(volume = %self.id, from = lsn.0, commits = undone.len(), "commits whose records failed were undone");
        self.log.forget_failure(self.uuid);
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
