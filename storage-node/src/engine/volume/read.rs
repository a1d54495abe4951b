//! Reading: a reader's snapshot, and a page as a snapshot sees it (from the log's recent
//! writes, a segment, or the base image).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{newest_in, Snapshot, Version, Volume, UNSETTLED};
use crate::engine::log::PAGE_SIZE;

/// Where `read_page` finds a page.
enum Source {
    /// Copied already, from the log's recent writes.
    Copied,
    /// A version in the log, and the segment's file (None if the segment is gone).
    Log(Version, Option<Arc<File>>),
    /// The base image.
    Base,
}

impl Volume {
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
                Some(version) if version.segment == UNSETTLED => {
                    let commit = st.unsettled.get(&version.lsn).ok_or_else(|| {
                        io::Error::other("an unsettled page's commit is not held")
                    })?;
                    out.copy_from_slice(&commit.pages[version.offset as usize].1);
                    Source::Copied
                }
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
            Source::Base => self.read_base_or_source(index, out)?,
        }
        if index == 0 {
            stamp_counter(out, snapshot.counter);
        }
        Ok(())
    }

    /// Page 1 as of `version`, if it is the one kept in memory.
    pub(super) fn cached_page0(&self, index: u32, version: Version) -> Option<Arc<[u8]>> {
        if index != 0 {
            return None;
        }
        match &*self.page0.lock().unwrap() {
            Some((lsn, bytes)) if *lsn == version.lsn => Some(bytes.clone()),
            _ => None,
        }
    }

    pub(super) fn read_base(&self, index: u32, out: &mut [u8]) -> io::Result<()> {
        let offset = u64::from(index) * PAGE_SIZE as u64;
        let len = self.base.metadata()?.len();
        if offset + PAGE_SIZE as u64 <= len {
            self.base.read_exact_at(out, offset)
        } else {
            out.fill(0);
            Ok(())
        }
    }
}

/// SQLite keeps its file change counter at bytes 24..28 of page 1 and repeats it at 92..96
/// ("version-valid-for"); both are set to our counter on every read of page 1.
pub(super) fn stamp_counter(page: &mut [u8], counter: u32) {
    let bytes = counter.to_be_bytes();
    page[24..28].copy_from_slice(&bytes);
    page[92..96].copy_from_slice(&bytes);
}

pub(super) fn same_but_counters(a: &[u8], b: &[u8]) -> bool {
    a[..24] == b[..24] && a[28..92] == b[28..92] && a[96..] == b[96..]
}
