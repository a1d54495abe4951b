//! The active segment's writer: page-aligned batches written durably (direct and synchronous
//! where the filesystem takes it), rollovers into the next segment, and the repair of what a
//! failed write may have left.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::index::write_index;
use super::record::{describe, RecordMeta};
use super::segment::{
    salt_crc, segment_header, segment_path, start_segment, SEGMENT_HEADER, ZEROS,
};
use super::{Appended, Shared};
use crate::fsutil;

/// Bytes bound for the active segment, in a buffer whose start is page-aligned, as direct
/// I/O requires of memory. It is sized up front and never grows past that, so it never moves.
pub(super) struct Staged {
    pub(super) buffer: Vec<u8>,
    /// Where the aligned bytes begin in `buffer`.
    pub(super) start: usize,
}

impl Staged {
    /// A buffer holding `tail`, with room for `more` bytes and the padding of a last page.
    pub(super) fn new(tail: &[u8], more: usize) -> Staged {
        let mut buffer = Vec::with_capacity(tail.len() + more + 2 * WRITE_PAGE);
        let start = (WRITE_PAGE - buffer.as_ptr() as usize % WRITE_PAGE) % WRITE_PAGE;
        buffer.resize(start, 0);
        buffer.extend_from_slice(tail);
        Staged { buffer, start }
    }

    pub(super) fn len(&self) -> usize {
        self.buffer.len() - self.start
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Appends a record, salting its checksum with the segment's number.
    pub(super) fn push_record(&mut self, record: &[u8], segment: u64) {
        let at = self.buffer.len();
        self.buffer.extend_from_slice(record);
        salt_crc(&mut self.buffer[at + 4..at + 8], segment);
    }

    /// Zero-pads to a whole number of pages, and makes sure the start is still aligned (were
    /// the buffer ever to move, its bytes are copied to an aligned one).
    pub(super) fn pad_to_page(&mut self) {
        let len = self.len().next_multiple_of(WRITE_PAGE);
        self.buffer.resize(self.start + len, 0);
        if !(self.buffer.as_ptr() as usize + self.start).is_multiple_of(WRITE_PAGE) {
            *self = Staged::new(self.bytes(), 0);
        }
    }

    /// The memory it holds.
    pub(super) fn footprint(&self) -> usize {
        self.buffer.capacity()
    }
}

/// Opens a segment for writing: with O_DIRECT | O_DSYNC when `direct` (each write is durable
/// when it returns, and skips the page cache: no copy into it, no writeback to wait for, one
/// request to the disk), else buffered, to be synced with fdatasync.
pub(super) fn open_writer(path: &Path, direct: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fsutil::private_options();
    options.read(true).write(true);
    if direct {
        options.custom_flags(libc::O_DIRECT | libc::O_DSYNC);
    }
    options.open(path)
}

/// Whether the log's directory takes direct, synchronous writes: probed by rewriting the
/// active segment's first page (its header, then zeros: nothing was written after it yet).
pub(super) fn probe_direct(path: &Path, first_page: &[u8]) -> bool {
    let Ok(file) = open_writer(path, true) else {
        return false;
    };
    let mut staged = Staged::new(first_page, 0);
    staged.pad_to_page();
    file.write_all_at(staged.bytes(), 0).is_ok()
}

/// The unit of every write to a segment. Writes always cover whole pages: the kernel never
/// has to read a page from disk to merge a partial write into it (that read, inside every
/// commit, is what makes partial writes into uncached preallocated or recycled pages slow).
pub(super) const WRITE_PAGE: usize = 4096;

/// The active segment, written by whichever committer leads a batch.
pub(super) struct WriterState {
    /// Opened for direct, synchronous writes where the filesystem allows (`Shared::direct`).
    pub(super) file: Arc<File>,
    pub(super) segment: u64,
    /// Where the next record goes: everything before it is durable.
    pub(super) size: u64,
    /// The bytes of the last, partly filled page before `size`, written again (with what
    /// follows) by the next write, so every write starts on a page boundary.
    pub(super) tail: Vec<u8>,
    /// Descriptions of the active segment's records, for its index when it is sealed.
    pub(super) metas: Vec<RecordMeta>,
    /// What a failed write left to repair before anything else is written.
    pub(super) damage: Option<Damage>,
}

/// What a failed write may have left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Damage {
    /// The active segment may hold, from `size` up to `to`, bytes of records that were never
    /// acknowledged; some may even pass their checksums. They are zeroed (or cut off) before
    /// anything is written after them, or recovery could take them for commits.
    Tail { to: u64 },
    /// The active segment is durable and full, but sealing it or starting the next one failed.
    Roll,
}

impl WriterState {
    /// Writes the batch durably, sealing segments as they fill, after repairing what an earlier
    /// failure left. Returns where each durable record went (a prefix of the batch) and the
    /// error that stopped the rest.
    pub(super) fn write_batch(
        &mut self,
        shared: &Shared,
        batch: &[Vec<u8>],
    ) -> (Vec<Appended>, io::Result<()>) {
        let mut durable = Vec::with_capacity(batch.len());
        if let Err(e) = self.repair(shared) {
            return (durable, Err(e));
        }
        if batch.iter().any(|r| describe(r, 0, 0).is_none()) {
            return (
                durable,
                Err(io::Error::other("a malformed record was appended")),
            );
        }
        let room: usize = batch.iter().map(Vec::len).sum();
        let mut staged = Staged::new(&self.tail, room);
        let mut pending: Vec<Appended> = Vec::new();
        for record in batch {
            let end = self.write_start() + staged.len() as u64;
            if end + record.len() as u64 > shared.segment_bytes && end > SEGMENT_HEADER {
                if let Err(e) = self.write_durably(shared, staged, pending.len()) {
                    return (durable, Err(e));
                }
                durable.append(&mut pending);
                if let Err(e) = self.seal_and_roll(shared) {
                    self.damage = Some(Damage::Roll);
                    return (durable, Err(e));
                }
                staged = Staged::new(&self.tail, room);
            }
            let offset = self.write_start() + staged.len() as u64;
            let meta = describe(record, self.segment, offset).expect("checked above");
            self.metas.push(meta);
            staged.push_record(record, self.segment);
            pending.push(Appended {
                segment: self.segment,
                offset,
            });
        }
        if let Err(e) = self.write_durably(shared, staged, pending.len()) {
            return (durable, Err(e));
        }
        durable.append(&mut pending);
        (durable, Ok(()))
    }

    /// Where the next write starts: the beginning of the page that holds `size`.
    pub(super) fn write_start(&self) -> u64 {
        self.size - self.tail.len() as u64
    }

    /// Writes `staged` (the partial page's known bytes, then the last `records` records) at
    /// `write_start`, as whole pages, and makes it durable: the last page is zero-padded; the
    /// padding is overwritten by the next write and reads as the end of the log until then.
    /// The written pages are kept in memory for readers. If it fails, the writer is as it
    /// was before, with the range the write may have reached marked as damage.
    pub(super) fn write_durably(
        &mut self,
        shared: &Shared,
        mut staged: Staged,
        records: usize,
    ) -> io::Result<()> {
        if staged.len() == self.tail.len() {
            return Ok(());
        }
        let start = self.write_start();
        let end = start + staged.len() as u64;
        let partial = staged.len() % WRITE_PAGE;
        let tail = staged.bytes()[staged.len() - partial..].to_vec();
        staged.pad_to_page();
        let reached = start + staged.len() as u64;
        let written = self
            .file
            .write_all_at(staged.bytes(), start)
            .and_then(|()| sync_unless_direct(&self.file, shared.direct));
        if let Err(e) = written {
            self.metas.truncate(self.metas.len() - records);
            self.damage = Some(Damage::Tail { to: reached });
            return Err(e);
        }
        self.size = end;
        self.tail = tail;
        if let Some(size) = shared.sizes.lock().unwrap().get_mut(&self.segment) {
            *size = (*size).max(end);
        }
        shared
            .recent
            .lock()
            .unwrap()
            .insert(self.segment, start, Arc::new(staged));
        Ok(())
    }

    /// Undoes what a failed write left: zeroes the bytes it may have written past the durable
    /// end (or, when the disk has no room even for that, cuts the segment after the last
    /// durable page), or finishes an interrupted rollover. Nothing acknowledged is touched.
    pub(super) fn repair(&mut self, shared: &Shared) -> io::Result<()> {
        match self.damage {
            None => return Ok(()),
            Some(Damage::Roll) => self.seal_and_roll(shared)?,
            Some(Damage::Tail { to }) => {
                let start = self.write_start();
                let mut page = Staged::new(&self.tail, 0);
                page.pad_to_page();
                let after = start + page.len() as u64;
                let zeroed = self
                    .file
                    .write_all_at(page.bytes(), start)
                    .and_then(|()| write_zeros(&self.file, after, to))
                    .and_then(|()| sync_unless_direct(&self.file, shared.direct));
                if let Err(e) = zeroed {
                    if !fsutil::is_disk_full(&e) {
                        return Err(e);
                    }
                    // The segment grew into the damage (it was not preallocated): cut it off.
                    self.file.write_all_at(page.bytes(), start)?;
                    self.file.set_len(after)?;
                    self.file.sync_all()?;
                }
                shared
                    .recent
                    .lock()
                    .unwrap()
                    .forget_from(self.segment, start);
            }
        }
        tracing::info!(
            segment = self.segment,
            "the change log repaired what a failed write left"
        );
        self.damage = None;
        Ok(())
    }

    /// Makes the active segment durable, writes its index, and starts the next one in the
    /// spare (or, if the preallocator is behind, in a file that grows). Safe to repeat after
    /// a failure part way.
    pub(super) fn seal_and_roll(&mut self, shared: &Shared) -> io::Result<()> {
        self.file.sync_data()?;
        write_index(&shared.dir, self.segment, self.size, &self.metas)?;
        shared.sizes.lock().unwrap().insert(self.segment, self.size);
        let next = self.segment + 1;
        let path = segment_path(&shared.dir, next);
        start_segment(&shared.dir, next)?;
        {
            let (wanted, wake) = &shared.spare_wanted;
            wanted.lock().unwrap().0 = true;
            wake.notify_all();
        }
        let reader = Arc::new(File::open(&path)?);
        let writer = Arc::new(open_writer(&path, shared.direct)?);
        shared.files.write().unwrap().insert(next, reader);
        self.file = writer;
        self.segment = next;
        self.size = SEGMENT_HEADER;
        self.tail = segment_header(next);
        self.metas.clear();
        shared.sizes.lock().unwrap().insert(next, SEGMENT_HEADER);
        shared.active.store(next, Ordering::Release);
        Ok(())
    }
}

pub(super) fn sync_unless_direct(file: &File, direct: bool) -> io::Result<()> {
    if direct {
        Ok(())
    } else {
        file.sync_data()
    }
}

/// Writes zeros over `from..to` (both page-aligned, as direct I/O requires).
pub(super) fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.0.len() as u64) as usize;
        file.write_all_at(&ZEROS.0[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
