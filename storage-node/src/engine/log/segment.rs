//! Segment files: their names and headers, zero-filled spares made ahead of time, the start of
//! a new segment, checksum salts, and the scan that recovers an unsealed segment's records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{describe, RecordMeta, RECORD_HEADER};
use super::Shared;
use crate::fsutil::{self, remove_if_exists, sync_dir};

pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"BTLOGSG1";
pub(super) const FORMAT_VERSION: u32 = 1;
pub(super) const SEGMENT_HEADER: u64 = 32;
/// A zero-filled segment made ahead of time, renamed into place at the next rollover.
pub(super) const SPARE: &str = "spare.seg";
pub(super) const SPARE_TMP: &str = "spare.tmp";

/// Keeps a zero-filled spare segment ready: overwriting preallocated blocks lets a sync write
/// data only, where appending would also commit the file's new size to the journal.
pub(super) fn preallocate(shared: &Shared) {
    loop {
        {
            let (wanted, wake) = &shared.spare_wanted;
            let state = wanted.lock().unwrap();
            let mut state = wake
                .wait_while(state, |(want, stop)| !*want && !*stop)
                .unwrap();
            if state.1 {
                return;
            }
            state.0 = false;
        }
        if shared.dir.join(SPARE).exists() {
            continue;
        }
        let made = (|| {
            let tmp = shared.dir.join(SPARE_TMP);
            zero_file(&tmp, shared.segment_bytes)?;
            let file = File::open(&tmp)?;
            file.sync_all()?;
            std::fs::rename(&tmp, shared.dir.join(SPARE))?;
            sync_dir(&shared.dir)
        })();
        if let Err(e) = made {
            tracing::warn!(error = %e, "cannot preallocate a log segment; segments will grow instead");
        }
    }
}

/// One MiB of zeros, aligned for direct I/O.
#[repr(C, align(4096))]
pub(super) struct Zeros(pub(super) [u8; 1 << 20]);

pub(super) static ZEROS: Zeros = Zeros([0; 1 << 20]);

/// Creates `path` as `len` bytes of zeros, written with O_DIRECT where the filesystem allows:
/// the disk gets the zeros by DMA, without the CPU copying a segment through the page cache.
pub(super) fn zero_file(path: &Path, len: u64) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let aligned = len.is_multiple_of(4096);
    let direct = fsutil::private_options()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(file) if aligned => {
            let mut at = 0;
            while at < len {
                let n = (len - at).min(ZEROS.0.len() as u64) as usize;
                file.write_all_at(&ZEROS.0[..n], at)?;
                at += n as u64;
            }
            Ok(())
        }
        _ => zero_fill(&fsutil::create_private(path)?, 0, len),
    }
}

pub(super) fn zero_fill(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Begins segment `number` in the spare (preallocated, or recycled) if there is one, else in
/// a new file that grows as it is written.
pub(super) fn start_segment(dir: &Path, number: u64) -> io::Result<()> {
    let path = segment_path(dir, number);
    // A file there is what an interrupted rollover made: no record was written to it.
    remove_if_exists(&path)?;
    match std::fs::rename(dir.join(SPARE), &path) {
        Ok(()) => {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            file.write_all_at(&segment_header(number), 0)?;
            file.sync_data()?;
            sync_dir(dir)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => create_segment(dir, number, 0),
        Err(e) => Err(e),
    }
}

/// A record's checksum is salted with its segment's number, so the records a recycled segment
/// file still holds from its previous life never pass for records of the new one. (CRC-32C is
/// linear, so two segment numbers below 2^32 never share a salt.)
pub(super) fn segment_salt(number: u64) -> u32 {
    crc32c::crc32c(&number.to_le_bytes())
}

pub(super) fn salt_crc(field: &mut [u8], number: u64) {
    let salted = u32::from_le_bytes(field[..4].try_into().unwrap()) ^ segment_salt(number);
    field[..4].copy_from_slice(&salted.to_le_bytes());
}

pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

pub(super) fn index_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.idx"))
}

pub(super) fn segment_header(number: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&number.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    header
}

/// Creates segment `number`, zero-filled to `preallocate` bytes.
pub(super) fn create_segment(dir: &Path, number: u64, preallocate: u64) -> io::Result<()> {
    let file = fsutil::private_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, number))?;
    zero_fill(&file, SEGMENT_HEADER, preallocate)?;
    file.write_all_at(&segment_header(number), 0)?;
    file.sync_all()?;
    sync_dir(dir)
}

pub(super) fn has_own_header(path: &Path, number: u64) -> io::Result<bool> {
    let file = File::open(path)?;
    let mut header = [0u8; SEGMENT_HEADER as usize];
    Ok(file.read_exact_at(&mut header, 0).is_ok() && header[..] == segment_header(number)[..])
}

/// Scans a segment record by record, up to the first record that is short, zero (the
/// preallocated tail) or fails its checksum (a torn write, or a recycled file's old records).
/// Returns the records and where they end.
pub(super) fn scan_segment(path: &Path, number: u64) -> io::Result<(Vec<RecordMeta>, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    reader.read_exact(&mut header)?;
    if header[..] != segment_header(number)[..] {
        return Err(io::Error::other(format!(
            "{} is not a version-{FORMAT_VERSION} log segment number {number}",
            path.display()
        )));
    }
    let salt = segment_salt(number);
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER;
    let mut record = Vec::new();
    loop {
        let mut len_bytes = [0u8; 4];
        if read_full(&mut reader, &mut len_bytes)? < 4 {
            break;
        }
        let len = u32::from_le_bytes(len_bytes) as u64;
        if len < (RECORD_HEADER - 4) as u64 || offset + 4 + len > file_len {
            break;
        }
        record.clear();
        record.extend_from_slice(&len_bytes);
        record.resize(4 + len as usize, 0);
        if read_full(&mut reader, &mut record[4..])? != len as usize {
            break;
        }
        let crc = u32::from_le_bytes(record[4..8].try_into().unwrap());
        if crc32c::crc32c(&record[8..]) ^ salt != crc {
            break;
        }
        match describe(&record, number, offset) {
            Some(meta) => records.push(meta),
            None => break,
        }
        offset += 4 + len;
    }
    Ok((records, offset))
}

pub(super) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}
