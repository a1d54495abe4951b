//! The newest writes to the log, kept in memory for readers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::writer::Staged;

/// The newest writes to the log, kept in memory so that reading a recent page version is a
/// copy rather than a disk read (direct writes leave nothing in the page cache). The oldest
/// are dropped first, past `capacity` bytes of memory.
pub(super) struct RecentWrites {
    pub(super) capacity: usize,
    /// By segment and the offset the write started at; a later write that starts on the same
    /// page replaces the earlier one (it holds the same bytes, and more).
    pub(super) chunks: BTreeMap<(u64, u64), (u64, Arc<Staged>)>,
    /// Keys in the order written, with the generation that put them there.
    pub(super) order: std::collections::VecDeque<((u64, u64), u64)>,
    pub(super) generation: u64,
    pub(super) bytes: usize,
}

/// How many bytes of recent writes are kept in memory.
pub(super) const RECENT_BYTES: usize = 32 << 20;

impl RecentWrites {
    pub(super) fn new(capacity: usize) -> Self {
        RecentWrites {
            capacity,
            chunks: BTreeMap::new(),
            order: Default::default(),
            generation: 0,
            bytes: 0,
        }
    }

    pub(super) fn insert(&mut self, segment: u64, start: u64, staged: Arc<Staged>) {
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
    pub(super) fn read(&self, segment: u64, offset: u64, buf: &mut [u8]) -> bool {
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

    pub(super) fn forget_segment(&mut self, segment: u64) {
        self.forget_from(segment, 0);
    }

    /// Forgets the writes to `segment` that started at `offset` or later.
    pub(super) fn forget_from(&mut self, segment: u64, offset: u64) {
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
