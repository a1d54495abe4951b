//! The log's records: one checksummed record per committed transaction (its page versions) or
//! backtrack (its new live set), how they are encoded, and how one is read back into its
//! description.

use uuid::Uuid;

use super::PAGE_SIZE;
use crate::engine::timeline::Lsn;

/// `len | crc | kind | volume | lsn | time | db_pages | count`.
pub const RECORD_HEADER: usize = 4 + 4 + 1 + 16 + 8 + 8 + 4 + 4;
/// Where a record's volume id is: after its length, checksum and kind.
pub(super) const VOLUME_BYTES: std::ops::Range<usize> = 9..25;
/// Where its LSN is, after the volume id.
pub(super) const LSN_BYTES: std::ops::Range<usize> = 25..33;
/// One page in a commit record: its number and its bytes.
pub const PAGE_ENTRY: usize = 4 + PAGE_SIZE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Commit = 1,
    Backtrack = 2,
}

impl RecordKind {
    pub(super) fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Commit),
            2 => Some(RecordKind::Backtrack),
            _ => None,
        }
    }
}

/// A record's description, without its page data: what recovery and the index need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub kind: RecordKind,
    pub volume: Uuid,
    pub lsn: Lsn,
    pub time_us: i64,
    pub db_pages: u32,
    pub segment: u64,
    /// Where the record starts in its segment.
    pub offset: u64,
    /// The record's size in bytes, header included.
    pub len: u32,
    /// A commit's page numbers, in record order.
    pub pages: Vec<u32>,
    /// A backtrack's payload.
    pub payload: Vec<u8>,
}

impl RecordMeta {
    /// Where the bytes of the `i`-th page of a commit record are.
    pub fn page_offset(&self, i: usize) -> u64 {
        page_offset(self.offset, i)
    }
}

pub fn page_offset(record_offset: u64, i: usize) -> u64 {
    record_offset + (RECORD_HEADER + i * PAGE_ENTRY + 4) as u64
}

/// Encodes a commit record of `pages` (page number and exactly PAGE_SIZE bytes each).
pub fn encode_commit(
    volume: Uuid,
    lsn: Lsn,
    time_us: i64,
    db_pages: u32,
    pages: &[(u32, &[u8])],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + pages.len() * PAGE_ENTRY);
    header(
        &mut out,
        RecordKind::Commit,
        volume,
        lsn,
        time_us,
        db_pages,
        pages.len() as u32,
    );
    for (page_no, bytes) in pages {
        assert_eq!(bytes.len(), PAGE_SIZE, "pages are whole");
        out.extend_from_slice(&page_no.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    seal(out)
}

pub fn encode_backtrack(
    volume: Uuid,
    lsn: Lsn,
    time_us: i64,
    db_pages: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    header(
        &mut out,
        RecordKind::Backtrack,
        volume,
        lsn,
        time_us,
        db_pages,
        payload.len() as u32,
    );
    out.extend_from_slice(payload);
    seal(out)
}

pub(super) fn header(
    out: &mut Vec<u8>,
    kind: RecordKind,
    volume: Uuid,
    lsn: Lsn,
    time_us: i64,
    db_pages: u32,
    count: u32,
) {
    out.extend_from_slice(&[0; 8]); // len and crc, filled by seal()
    out.push(kind as u8);
    out.extend_from_slice(volume.as_bytes());
    out.extend_from_slice(&lsn.0.to_le_bytes());
    out.extend_from_slice(&time_us.to_le_bytes());
    out.extend_from_slice(&db_pages.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

pub(super) fn seal(mut record: Vec<u8>) -> Vec<u8> {
    let len = (record.len() - 4) as u32;
    let crc = crc32c::crc32c(&record[8..]);
    record[0..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

/// Parses a whole record (as written) into its description.
pub(super) fn describe(record: &[u8], segment: u64, offset: u64) -> Option<RecordMeta> {
    if record.len() < RECORD_HEADER {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(record[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(record[i..i + 8].try_into().unwrap());
    let kind = RecordKind::from_byte(record[8])?;
    let volume = Uuid::from_slice(&record[VOLUME_BYTES]).ok()?;
    let count = u32_at(45) as usize;
    let (pages, payload) = match kind {
        RecordKind::Commit => {
            if record.len() != RECORD_HEADER + count * PAGE_ENTRY {
                return None;
            }
            let pages = (0..count)
                .map(|i| u32_at(RECORD_HEADER + i * PAGE_ENTRY))
                .collect();
            (pages, Vec::new())
        }
        RecordKind::Backtrack => {
            if record.len() != RECORD_HEADER + count {
                return None;
            }
            (Vec::new(), record[RECORD_HEADER..].to_vec())
        }
    };
    Some(RecordMeta {
        kind,
        volume,
        lsn: Lsn(u64_at(25)),
        time_us: u64_at(33) as i64,
        db_pages: u32_at(41),
        segment,
        offset,
        len: record.len() as u32,
        pages,
        payload,
    })
}
