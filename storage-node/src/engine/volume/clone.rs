//! Clones: a volume that starts as `state(T)` of another volume, its source, and shares the
//! source's pages instead of copying them, so that creating one costs the same whatever the
//! size. The clone writes its own log records from there; the two never see each other's
//! writes.
//!
//! A page of the clone that no commit of the clone holds comes from the clone's base: its
//! `base.img` where the clone owns the page (`owned.bits`), else the source's `state(T)`.
//! Nothing pins the source: before a fold of the source changes what its `state(T)` reads
//! for a page (it rewrites its base image and forgets the versions it folded), the fold first
//! copies that page, as of T, into each clone that still shares it (copy-on-write), and only
//! then writes its own base. So the source's window and log budget run as if it had no
//! clones, the clone stays exact, and each shared page is stored once until one side changes
//! it. Deleting the source, or asking for a full copy, copies every shared page (hydration);
//! the clone then shares nothing.
//!
//! Lock order, on top of the volume's own: a source's `maintenance` before its clones'
//! `maintenance`; a clone's `ancestry` before its source's `state`.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{check_instant, Snapshot, Volume, VolumeError};
use crate::engine::log::PAGE_SIZE;
use crate::engine::timeline::{LiveSet, Lsn};
use crate::fsutil;

const OWNED_FILE: &str = "owned.bits";

/// What `volume.json` says of a clone's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CloneMeta {
    pub source_id: String,
    pub source_uuid: Uuid,
    /// The instant of the source the clone started from.
    pub time_us: i64,
    /// The source's size then, in pages.
    pub db_pages: u32,
    /// Whether pages are still read from the source (false once hydrated).
    pub shared: bool,
}

/// A clone's live link to its source.
pub(super) struct Ancestry {
    source: Arc<Volume>,
    time_us: i64,
    /// `state(T)` of the source, as the source resolves it.
    snapshot: Snapshot,
    /// Pages the clone's base image holds; the others, below the source's size at T, are
    /// read from the source.
    owned: PageSet,
}

impl Ancestry {
    /// Whether page `index` is read from the source.
    fn shares(&self, index: u32) -> bool {
        index < self.snapshot.db_pages && !self.owned.contains(index)
    }
}

/// A set of page indexes, as a bitmap (32 KiB per GiB of database).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PageSet(Vec<u64>);

impl PageSet {
    pub fn contains(&self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, index % 64);
        self.0.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    pub fn insert(&mut self, index: u32) {
        let (word, bit) = (index as usize / 64, index % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << bit;
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> PageSet {
        PageSet(
            bytes
                .chunks(8)
                .map(|c| {
                    let mut word = [0u8; 8];
                    word[..c.len()].copy_from_slice(c);
                    u64::from_le_bytes(word)
                })
                .collect(),
        )
    }
}

/// How a clone starts: from which volume, at which instant.
pub struct CloneSpec<'a> {
    pub source: &'a Arc<Volume>,
    pub time_us: i64,
}

impl Volume {
    /// Creates in `dir` a clone of `spec.source` as it was at `spec.time_us`, sharing every
    /// page with it: no page is copied, so the cost does not depend on the size. Refused like
    /// a view when the instant is outside the source's window.
    pub fn create_clone(
        dir: &Path,
        id: &str,
        window_secs: u64,
        spec: CloneSpec<'_>,
    ) -> Result<Arc<Volume>, VolumeError> {
        let source = spec.source;
        // With the source's maintenance held, no fold of the source can run between the
        // check and the clone's registration; every later fold copies for the clone.
        let _no_fold = source.maintenance.lock().unwrap();
        // The clone starts from a durable state of its source.
        let snapshot = loop {
            source.settle_all();
            let now = source.clock.now_us();
            let st = source.state.read().unwrap();
            check_instant(&st, spec.time_us, now)?;
            let snapshot = source_snapshot(&st.timeline, spec.time_us);
            if snapshot.head_lsn <= st.settled_head() {
                break snapshot;
            }
        };
        let meta = CloneMeta {
            source_id: source.id.clone(),
            source_uuid: source.uuid,
            time_us: spec.time_us,
            db_pages: snapshot.db_pages,
            shared: true,
        };
        let clone = Arc::new(Volume::create_in(
            dir,
            id,
            window_secs,
            source.log.clone(),
            source.clock.clone(),
            Some(meta),
        )?);
        *clone.ancestry.write().unwrap() = Some(Ancestry {
            source: source.clone(),
            time_us: spec.time_us,
            snapshot,
            owned: PageSet::default(),
        });
        source.clones.lock().unwrap().push(Arc::downgrade(&clone));
        Ok(clone)
    }

    /// After a restart: links this clone to its (already opened) source again, before any
    /// fold runs. `find` looks a volume up by id.
    pub(crate) fn relink(
        self: &Arc<Self>,
        find: impl Fn(&str) -> Option<Arc<Volume>>,
    ) -> io::Result<()> {
        let Some(meta) = self.state.read().unwrap().source.clone() else {
            return Ok(());
        };
        if !meta.shared {
            return Ok(());
        }
        let source = find(&meta.source_id)
            .filter(|s| s.uuid == meta.source_uuid)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "clone {} shares pages with volume {}, which is missing",
                    self.id, meta.source_id
                ))
            })?;
        let snapshot = {
            let st = source.state.read().unwrap();
            if meta.time_us >= st.timeline.base_time_us {
                source_snapshot(&st.timeline, meta.time_us)
            } else {
                // The source folded past T: every page it still shares is in its base image,
                // unchanged since T (each fold copied the pages it changed first).
                Snapshot {
                    live: Arc::new(LiveSet::from_ranges(Vec::new())),
                    db_pages: meta.db_pages,
                    head_lsn: Lsn::ZERO,
                    counter: 0,
                }
            }
        };
        let owned = match std::fs::read(self.dir.join(OWNED_FILE)) {
            Ok(bytes) => PageSet::from_bytes(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => PageSet::default(),
            Err(e) => return Err(e),
        };
        *self.ancestry.write().unwrap() = Some(Ancestry {
            source: source.clone(),
            time_us: meta.time_us,
            snapshot,
            owned,
        });
        source.clones.lock().unwrap().push(Arc::downgrade(self));
        Ok(())
    }

    /// Reads page `index` of this volume's base: from the source while it is shared.
    pub(super) fn read_base_or_source(&self, index: u32, out: &mut [u8]) -> io::Result<()> {
        let ancestry = self.ancestry.read().unwrap();
        match &*ancestry {
            // Held across the read: a copy of this page cannot land in between.
            Some(a) if a.shares(index) => a.source.read_page(&a.snapshot, index, out),
            _ => self.read_base(index, out),
        }
    }

    /// The clones still sharing pages with this volume.
    fn sharing_clones(&self) -> Vec<Arc<Volume>> {
        let mut clones = self.clones.lock().unwrap();
        clones.retain(|c| c.strong_count() > 0);
        clones.iter().filter_map(Weak::upgrade).collect()
    }

    /// Before a fold of this volume to `fold_time_us` rewrites `pages` (those with versions
    /// it folds): copies each into every clone from before that time that still shares it.
    /// The caller holds this volume's `maintenance`.
    pub(super) fn copy_to_clones(&self, pages: &[u32], fold_time_us: i64) -> io::Result<()> {
        for clone in self.sharing_clones() {
            if clone.is_deleted() {
                continue;
            }
            let _clone_maintenance = clone.maintenance.lock().unwrap();
            clone.take_from_source(|a| {
                if a.time_us >= fold_time_us {
                    // The fold does not change what the source reads at T.
                    return Vec::new();
                }
                pages.iter().copied().filter(|&p| a.shares(p)).collect()
            })?;
        }
        Ok(())
    }

    /// Copies every page still shared with the source, then stops reading from it: the clone
    /// shares nothing any more. Done before the source is deleted, and for a full copy.
    pub fn hydrate(&self) -> Result<(), VolumeError> {
        let Some(source) = self
            .ancestry
            .read()
            .unwrap()
            .as_ref()
            .map(|a| a.source.clone())
        else {
            return Ok(());
        };
        let _source_maintenance = source.maintenance.lock().unwrap();
        let _maintenance = self.maintenance.lock().unwrap();
        self.take_from_source(|a| (0..a.snapshot.db_pages).filter(|&p| a.shares(p)).collect())?;
        self.detach()?;
        Ok(())
    }

    /// Copies the pages `choose` picks from the source into this clone's base image, synced,
    /// and then owns them. The caller holds this volume's `maintenance` (and the source's, so
    /// the source's base does not change meanwhile).
    fn take_from_source(&self, choose: impl FnOnce(&Ancestry) -> Vec<u32>) -> io::Result<()> {
        let (source, snapshot, pages, mut owned) = {
            let ancestry = self.ancestry.read().unwrap();
            let Some(a) = &*ancestry else {
                return Ok(());
            };
            let pages = choose(a);
            if pages.is_empty() {
                return Ok(());
            }
            (a.source.clone(), a.snapshot.clone(), pages, a.owned.clone())
        };
        // Runs of consecutive pages go in one write.
        const RUN: usize = 256;
        let mut run = Vec::with_capacity(RUN * PAGE_SIZE);
        let mut run_start = pages[0];
        for (i, &index) in pages.iter().enumerate() {
            if !run.is_empty()
                && (index != run_start + (run.len() / PAGE_SIZE) as u32
                    || run.len() == RUN * PAGE_SIZE)
            {
                self.base
                    .write_all_at(&run, u64::from(run_start) * PAGE_SIZE as u64)?;
                run.clear();
            }
            if run.is_empty() {
                run_start = index;
            }
            let at = run.len();
            run.resize(at + PAGE_SIZE, 0);
            source.read_page(&snapshot, index, &mut run[at..])?;
            owned.insert(index);
            if i + 1 == pages.len() {
                self.base
                    .write_all_at(&run, u64::from(run_start) * PAGE_SIZE as u64)?;
            }
        }
        self.base.sync_all()?;
        // On disk first: the pages are in the base either way, so a crash in between reads the
        // same bytes from the base as from the source.
        fsutil::write_atomically(&self.dir.join(OWNED_FILE), &owned.to_bytes())?;
        if let Some(a) = &mut *self.ancestry.write().unwrap() {
            a.owned = owned;
        }
        Ok(())
    }

    /// Marks pages the clone's own fold wrote into its base image as owned (they no longer come
    /// from the source). The caller holds this volume's `maintenance`.
    pub(super) fn own_folded(&self, pages: &[u32]) -> io::Result<()> {
        let mut owned = {
            let ancestry = self.ancestry.read().unwrap();
            match &*ancestry {
                Some(a) if pages.iter().any(|&p| a.shares(p)) => a.owned.clone(),
                _ => return Ok(()),
            }
        };
        for &p in pages {
            owned.insert(p);
        }
        fsutil::write_atomically(&self.dir.join(OWNED_FILE), &owned.to_bytes())?;
        if let Some(a) = &mut *self.ancestry.write().unwrap() {
            a.owned = owned;
        }
        Ok(())
    }

    /// Stops reading from the source once every shared page is owned: recorded in
    /// `volume.json` first, then in memory.
    fn detach(&self) -> io::Result<()> {
        let source = {
            let ancestry = self.ancestry.read().unwrap();
            match &*ancestry {
                Some(a) if (0..a.snapshot.db_pages).all(|p| !a.shares(p)) => a.source.clone(),
                _ => return Ok(()),
            }
        };
        if let Some(meta) = &mut self.state.write().unwrap().source {
            meta.shared = false;
        }
        self.write_meta()?;
        *self.ancestry.write().unwrap() = None;
        fsutil::remove_if_exists(&self.dir.join(OWNED_FILE))?;
        source.forget_clone(self);
        Ok(())
    }

    /// This volume is going: its source no longer copies for it.
    pub fn leave_source(&self) {
        let source = self
            .ancestry
            .read()
            .unwrap()
            .as_ref()
            .map(|a| a.source.clone());
        if let Some(source) = source {
            source.forget_clone(self);
        }
    }

    fn forget_clone(&self, clone: &Volume) {
        self.clones
            .lock()
            .unwrap()
            .retain(|c| c.upgrade().is_some_and(|c| c.uuid != clone.uuid));
    }

    /// The clones still sharing pages with this volume (to hydrate before it goes).
    pub fn clones(&self) -> Vec<Arc<Volume>> {
        self.sharing_clones()
    }
}

/// `state(T)` of a source as a snapshot for its clone.
fn source_snapshot(timeline: &crate::engine::timeline::Timeline, time_us: i64) -> Snapshot {
    let state = timeline.state_at(time_us);
    Snapshot {
        live: Arc::new(state.live),
        db_pages: state.db_pages,
        head_lsn: timeline.lsn_at(time_us),
        counter: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::PageSet;

    #[test]
    fn a_page_set_survives_its_bytes() {
        let mut set = PageSet::default();
        for p in [0, 63, 64, 1000, 262_143] {
            set.insert(p);
        }
        let back = PageSet::from_bytes(&set.to_bytes());
        assert_eq!(back, set);
        assert!(back.contains(1000) && !back.contains(999) && !back.contains(1_000_000));
    }
}
