//! A sealed segment's index: every record's header and page numbers without the page data, so
//! a restart reads kilobytes per sealed segment instead of its whole size.

use std::io;
use std::path::Path;

use uuid::Uuid;

use super::record::{RecordKind, RecordMeta};
use super::segment::{index_path, segment_path, FORMAT_VERSION};
use crate::engine::timeline::Lsn;
use crate::fsutil::write_atomically;

pub(super) const INDEX_MAGIC: &[u8; 8] = b"BTLOGIX1";

pub(super) fn write_index(
    dir: &Path,
    number: u64,
    data_end: u64,
    metas: &[RecordMeta],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 + metas.len() * 64);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&data_end.to_le_bytes());
    out.extend_from_slice(&(metas.len() as u64).to_le_bytes());
    for m in metas {
        out.push(m.kind as u8);
        out.extend_from_slice(m.volume.as_bytes());
        out.extend_from_slice(&m.lsn.0.to_le_bytes());
        out.extend_from_slice(&m.time_us.to_le_bytes());
        out.extend_from_slice(&m.db_pages.to_le_bytes());
        out.extend_from_slice(&m.offset.to_le_bytes());
        out.extend_from_slice(&m.len.to_le_bytes());
        match m.kind {
            RecordKind::Commit => {
                out.extend_from_slice(&(m.pages.len() as u32).to_le_bytes());
                for p in &m.pages {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            RecordKind::Backtrack => {
                out.extend_from_slice(&(m.payload.len() as u32).to_le_bytes());
                out.extend_from_slice(&m.payload);
            }
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    write_atomically(&index_path(dir, number), &out)
}

/// Reads a sealed segment's index and where its records end; `None` if it is missing or does
/// not describe the segment as it is (then the caller rescans the segment).
pub(super) fn read_index(dir: &Path, number: u64) -> io::Result<Option<(Vec<RecordMeta>, u64)>> {
    let bytes = match std::fs::read(index_path(dir, number)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let segment_len = std::fs::metadata(segment_path(dir, number))?.len();
    Ok(parse_index(&bytes, number, segment_len))
}

pub(super) fn parse_index(
    bytes: &[u8],
    number: u64,
    segment_len: u64,
) -> Option<(Vec<RecordMeta>, u64)> {
    let (body, crc) = bytes.split_at(bytes.len().checked_sub(4)?);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = body.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    if take(8)? != INDEX_MAGIC {
        return None;
    }
    let version = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let stated = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let data_end = u64::from_le_bytes(take(8)?.try_into().ok()?);
    if version != FORMAT_VERSION || stated != number || data_end > segment_len {
        return None;
    }
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut metas = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let kind = RecordKind::from_byte(take(1)?[0])?;
        let volume = Uuid::from_slice(take(16)?).ok()?;
        let lsn = Lsn(u64::from_le_bytes(take(8)?.try_into().ok()?));
        let time_us = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let db_pages = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let offset = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let (pages, payload) = match kind {
            RecordKind::Commit => {
                let raw = take(n * 4)?;
                let pages = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                (pages, Vec::new())
            }
            RecordKind::Backtrack => (Vec::new(), take(n)?.to_vec()),
        };
        metas.push(RecordMeta {
            kind,
            volume,
            lsn,
            time_us,
            db_pages,
            segment: number,
            offset,
            len,
            pages,
            payload,
        });
    }
    Some((metas, data_end))
}
