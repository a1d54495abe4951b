//! Live sets and the state of a volume at an instant.
//!
//! Every committed transaction gets the next LSN of its volume. A *live set* is the set of LSNs
//! whose page versions make up the current database: after a backtrack at LSN `b` to the state
//! holding LSNs `S`, the live set is `S ∪ [b+1, ∞)`: the versions the backtrack undid stay in
//! the log, dead, so that a later backtrack can bring them back ("forward again").
//!
//! `state(T) = live_set_at(T) ∩ [0, last LSN committed at or before T]`, where
//! `live_set_at(T)` is the live set installed by the last backtrack at or before `T`. A page's
//! content in a state is its newest version whose LSN is in the state, or the base image.
//! Both operations cost O(number of ranges), whatever the size of the database.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A log sequence number: a record's place in its volume's history. Each commit and each
/// backtrack takes the next one; LSN 0 is the empty volume, before its first record. On disk
/// (record headers, indexes, `volume.json`) it is the plain number.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0.saturating_add(1))
    }

    /// The LSN before this one; none before 0.
    pub fn prev(self) -> Option<Lsn> {
        self.0.checked_sub(1).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of LSNs as sorted, disjoint, non-adjacent inclusive ranges. [`OPEN`] as an end
/// means "and every later LSN".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSet(Vec<(Lsn, Lsn)>);

pub const OPEN: Lsn = Lsn(u64::MAX);

impl LiveSet {
    /// Every LSN: the live set of a volume that was never backtracked.
    pub fn all() -> Self {
        LiveSet(vec![(Lsn::ZERO, OPEN)])
    }

    pub fn from_ranges(mut ranges: Vec<(Lsn, Lsn)>) -> Self {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut merged: Vec<(Lsn, Lsn)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.next() => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        LiveSet(merged)
    }

    pub fn ranges(&self) -> &[(Lsn, Lsn)] {
        &self.0
    }

    pub fn contains(&self, lsn: Lsn) -> bool {
        // The ranges are few (one per backtrack still in the window); a scan is fastest.
        self.0.iter().any(|&(a, b)| a <= lsn && lsn <= b)
    }

    /// The LSNs of this set that are at most `limit`.
    pub fn up_to(&self, limit: Lsn) -> Self {
        let ranges = self
            .0
            .iter()
            .filter(|(a, _)| *a <= limit)
            .map(|&(a, b)| (a, b.min(limit)))
            .collect();
        LiveSet(ranges)
    }

    /// This set plus every LSN from `from` on.
    pub fn and_from(&self, from: Lsn) -> Self {
        let mut ranges = self.0.clone();
        ranges.push((from, OPEN));
        LiveSet::from_ranges(ranges)
    }

    /// The largest LSN in the set that is at most `limit`.
    pub fn max_at_most(&self, limit: Lsn) -> Option<Lsn> {
        self.0
            .iter()
            .rev()
            .find(|(a, _)| *a <= limit)
            .map(|&(_, b)| b.min(limit))
    }

    /// The smallest LSN in exactly one of the two sets. Membership changes only at a range's
    /// start or just after its end, so the answer is one of those points.
    pub fn first_difference(&self, other: &LiveSet) -> Option<Lsn> {
        let mut points: Vec<Lsn> = self
            .0
            .iter()
            .chain(&other.0)
            .flat_map(|&(a, b)| [a, Lsn(b.0.saturating_add(1))])
            .chain([Lsn::ZERO])
            .collect();
        points.sort_unstable();
        points.dedup();
        points
            .into_iter()
            .find(|&p| self.contains(p) != other.contains(p))
    }

    /// Ranges from the highest down, for searching a page's versions newest first.
    pub fn ranges_descending(&self) -> impl Iterator<Item = (Lsn, Lsn)> + '_ {
        self.0.iter().rev().copied()
    }

    /// Collapses everything at or below `horizon` into one range starting at 0: once versions
    /// up to `horizon` are folded into the base image, the sets no longer need to tell them
    /// apart.
    pub fn folded_at(&self, horizon: Lsn) -> Self {
        let mut ranges: Vec<(Lsn, Lsn)> = self
            .0
            .iter()
            .copied()
            .filter(|(_, b)| *b > horizon)
            .collect();
        ranges.push((Lsn::ZERO, horizon));
        LiveSet::from_ranges(ranges)
    }

    /// The largest `h <= limit` such that all the sets agree on the membership of every LSN
    /// in `[0, h]`. Compaction may fold only such a prefix into the one base image that all
    /// still-reachable states share. `None` when they disagree already at LSN 0.
    pub fn agreement_horizon(sets: &[&LiveSet], limit: Lsn) -> Option<Lsn> {
        let Some(first) = sets.first() else {
            return Some(limit);
        };
        // Membership can only change at a range boundary; check each boundary up to limit.
        let mut boundaries: Vec<Lsn> = sets
            .iter()
            .flat_map(|s| s.0.iter().flat_map(|&(a, b)| [a, b.next()]))
            .filter(|x| *x <= limit)
            .collect();
        boundaries.push(Lsn::ZERO);
        boundaries.sort_unstable();
        boundaries.dedup();
        for x in boundaries {
            let member = first.contains(x);
            if sets.iter().any(|s| s.contains(x) != member) {
                return x.prev();
            }
        }
        Some(limit)
    }
}

/// A backtrack, as the timeline keeps it: from `time_us` on, the volume's live set is `live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub time_us: i64,
    /// The backtrack's own LSN (it carries no pages).
    pub lsn: Lsn,
    pub live: LiveSet,
    /// Pages in the database right after the switch.
    pub db_pages: u32,
}

/// One committed transaction's place in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub lsn: Lsn,
    pub time_us: i64,
    /// Pages in the database after this commit.
    pub db_pages: u32,
    /// Page versions (change records) the commit wrote.
    pub pages: u32,
}

/// The history of one volume since its base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// Everything at or below this LSN is in the base image.
    pub base_lsn: Lsn,
    pub base_time_us: i64,
    pub base_db_pages: u32,
    /// The live set in effect at `base_time_us`.
    pub base_live: LiveSet,
    /// Commits after the base, in LSN (and time) order.
    pub commits: Vec<CommitInfo>,
    /// Backtracks after the base time, in order.
    pub events: Vec<TimelineEvent>,
}

/// A state of the volume: the LSNs it holds and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub live: LiveSet,
    pub db_pages: u32,
}

impl Timeline {
    pub fn new(base_lsn: Lsn, base_time_us: i64, base_db_pages: u32) -> Self {
        Timeline {
            base_lsn,
            base_time_us,
            base_db_pages,
            base_live: LiveSet::all(),
            commits: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The live set in effect at `time_us`.
    pub fn live_at(&self, time_us: i64) -> &LiveSet {
        let after = self.events.partition_point(|e| e.time_us <= time_us);
        match after {
            0 => &self.base_live,
            n => &self.events[n - 1].live,
        }
    }

    /// The last LSN (commit or backtrack) at or before `time_us`, or the base LSN.
    pub fn lsn_at(&self, time_us: i64) -> Lsn {
        let commit = self.commits.partition_point(|c| c.time_us <= time_us);
        let commit_lsn = commit.checked_sub(1).map(|i| self.commits[i].lsn);
        let event = self.events.partition_point(|e| e.time_us <= time_us);
        let event_lsn = event.checked_sub(1).map(|i| self.events[i].lsn);
        commit_lsn
            .max(event_lsn)
            .unwrap_or(self.base_lsn)
            .max(self.base_lsn)
    }

    /// `state(T)`: what a reader would have seen at `time_us`.
    pub fn state_at(&self, time_us: i64) -> State {
        let limit = self.lsn_at(time_us);
        let live = self.live_at(time_us).up_to(limit);
        let db_pages = self.db_pages_of(&live);
        State { live, db_pages }
    }

    /// The size of the database in a state: that of its newest commit, or of the base.
    /// (A backtrack's own LSN is never in a state: the live set it installs starts after it.)
    pub fn db_pages_of(&self, live: &LiveSet) -> u32 {
        live.ranges_descending()
            .find_map(|(a, b)| {
                let end = self.commits.partition_point(|c| c.lsn <= b);
                end.checked_sub(1)
                    .map(|i| self.commits[i])
                    .filter(|c| c.lsn >= a)
            })
            .map_or(self.base_db_pages, |c| c.db_pages)
    }

    pub fn last_lsn(&self) -> Lsn {
        let commit = self.commits.last().map(|c| c.lsn);
        let event = self.events.last().map(|e| e.lsn);
        commit.max(event).unwrap_or(self.base_lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_of_two_live_sets_is_where_membership_first_differs() {
        let set = |r: &[(u64, u64)]| {
            LiveSet::from_ranges(r.iter().map(|&(a, b)| (Lsn(a), Lsn(b))).collect())
        };
        assert_eq!(
            set(&[(0, 50)]).first_difference(&set(&[(0, 80)])),
            Some(Lsn(51))
        );
        assert_eq!(
            set(&[(0, 50)]).first_difference(&set(&[(0, 30), (101, 110)])),
            Some(Lsn(31))
        );
        assert_eq!(set(&[(0, 9)]).first_difference(&set(&[(0, 9)])), None);
        assert_eq!(
            set(&[(5, 9)]).first_difference(&set(&[(0, 9)])),
            Some(Lsn(0))
        );
        assert_eq!(
            LiveSet::all().first_difference(&set(&[(0, 7)])),
            Some(Lsn(8))
        );
    }

    fn set(ranges: &[(Lsn, Lsn)]) -> LiveSet {
        LiveSet::from_ranges(ranges.to_vec())
    }

    #[test]
    fn ranges_merge_and_cut() {
        assert_eq!(
            set(&[(Lsn(5), Lsn(9)), (Lsn(0), Lsn(3)), (Lsn(4), Lsn(4))]).ranges(),
            &[(Lsn(0), Lsn(9))]
        );
        let s = set(&[(Lsn(0), Lsn(10)), (Lsn(20), OPEN)]);
        assert!(s.contains(Lsn(10)) && !s.contains(Lsn(11)) && s.contains(Lsn(1_000_000)));
        assert_eq!(
            s.up_to(Lsn(25)).ranges(),
            &[(Lsn(0), Lsn(10)), (Lsn(20), Lsn(25))]
        );
        assert_eq!(s.up_to(Lsn(15)).ranges(), &[(Lsn(0), Lsn(10))]);
        assert_eq!(s.max_at_most(Lsn(15)), Some(Lsn(10)));
        assert_eq!(s.and_from(Lsn(11)).ranges(), &[(Lsn(0), OPEN)]);
        assert_eq!(s.folded_at(Lsn(22)).ranges(), &[(Lsn(0), OPEN)]);
        assert_eq!(
            set(&[(Lsn(0), Lsn(10)), (Lsn(20), Lsn(30)), (Lsn(40), OPEN)])
                .folded_at(Lsn(25))
                .ranges(),
            &[(Lsn(0), Lsn(30)), (Lsn(40), OPEN)]
        );
    }

    #[test]
    fn agreement_stops_at_the_first_lsn_the_sets_disagree_on() {
        let a = set(&[(Lsn(0), OPEN)]);
        let b = set(&[(Lsn(0), Lsn(10)), (Lsn(20), OPEN)]);
        assert_eq!(
            LiveSet::agreement_horizon(&[&a, &b], Lsn(100)),
            Some(Lsn(10))
        );
        assert_eq!(LiveSet::agreement_horizon(&[&a, &b], Lsn(5)), Some(Lsn(5)));
        assert_eq!(
            LiveSet::agreement_horizon(&[&b, &b], Lsn(100)),
            Some(Lsn(100))
        );
        assert_eq!(LiveSet::agreement_horizon(&[&a], Lsn(7)), Some(Lsn(7)));
    }

    /// Commits 1..=10 at times 100, 200, ...; a backtrack at time 1050 (LSN 11) to time 500.
    fn timeline() -> Timeline {
        let mut t = Timeline::new(Lsn(0), 0, 0);
        for lsn in 1..=10 {
            t.commits.push(CommitInfo {
                lsn: Lsn(lsn),
                time_us: lsn as i64 * 100,
                db_pages: lsn as u32,
                pages: 1,
            });
        }
        let target = t.state_at(500);
        assert_eq!(target.live.ranges(), &[(Lsn(0), Lsn(5))]);
        t.events.push(TimelineEvent {
            time_us: 1050,
            lsn: Lsn(11),
            live: target.live.and_from(Lsn(12)),
            db_pages: target.db_pages,
        });
        t.commits.push(CommitInfo {
            lsn: Lsn(12),
            time_us: 1100,
            db_pages: 7,
            pages: 1,
        });
        t
    }

    #[test]
    fn state_at_follows_commits_and_backtracks() {
        let t = timeline();
        assert_eq!(t.state_at(50).live.ranges(), &[(Lsn(0), Lsn(0))]);
        assert_eq!(t.state_at(50).db_pages, 0);
        assert_eq!(t.state_at(350).live.ranges(), &[(Lsn(0), Lsn(3))]);
        assert_eq!(t.state_at(350).db_pages, 3);
        // Before the backtrack: everything up to 10.
        assert_eq!(t.state_at(1049).live.ranges(), &[(Lsn(0), Lsn(10))]);
        // Right after it: the state of time 500.
        let after = t.state_at(1060);
        assert_eq!(after.live.ranges(), &[(Lsn(0), Lsn(5))]);
        assert_eq!(after.db_pages, 5);
        // After the next commit.
        let later = t.state_at(2000);
        assert_eq!(later.live.ranges(), &[(Lsn(0), Lsn(5)), (Lsn(12), Lsn(12))]);
        assert_eq!(later.db_pages, 7);
    }

    #[test]
    fn forward_again_brings_back_undone_commits() {
        let t = timeline();
        // "Forward again" to time 800, which is before the backtrack: LSNs up to 8 again.
        let forward = t.state_at(800);
        assert_eq!(forward.live.ranges(), &[(Lsn(0), Lsn(8))]);
        assert_eq!(forward.db_pages, 8);
    }
}
