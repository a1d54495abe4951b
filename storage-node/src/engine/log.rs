//! The node's append-only log: every committed transaction of every volume, as one checksummed
//! record, in segment files under `log/`.
//!
//! Durability: one writer thread owns the active segment. Committers hand it their record and
//! block; it takes everything queued, writes it with one `write`, makes it durable with one
//! `fdatasync`, and only then answers each committer (group commit: one sync serves many
//! commits). A commit is acknowledged only once its record is on disk.
//!
//! Formats (little-endian; each starts with a magic number and a version):
//! - segment `NNNNNNNNNNNNNNNN.seg`: a 32-byte header (`BTLOGSG1`, version, segment number),
//!   then records. A record is `len:u32 | crc32c:u32 | body` where the CRC covers the body and
//!   `body = kind:u8 | volume:[u8;16] | lsn:u64 | time_us:i64 | db_pages:u32 | count:u32 |
//!   payload`; a commit's payload is `count × (page_no:u32 | 4096 bytes)`, a backtrack's is
//!   `count` bytes of JSON.
//! - index `NNNNNNNNNNNNNNNN.idx`, written when a segment is sealed: every record's header and
//!   page numbers without the page data, with its own CRC, so a restart reads kilobytes per
//!   sealed segment instead of its 64 MiB.
//!
//! Recovery reads the sealed segments' indexes (rescanning a segment whose index is missing or
//! does not match), then scans the active segment record by record and truncates it at the
//! first record that is short or fails its CRC: such a torn tail is always an unacknowledged
//! suffix, because answers are sent after the sync. Nothing is guessed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use uuid::Uuid;

pub const PAGE_SIZE: usize = 4096;
const SEGMENT_MAGIC: &[u8; 8] = b"BTLOGSG1";
const INDEX_MAGIC: &[u8; 8] = b"BTLOGIX1";
const FORMAT_VERSION: u32 = 1;
const SEGMENT_HEADER: u64 = 32;
/// `len | crc | kind | volume | lsn | time | db_pages | count`.
pub const RECORD_HEADER: usize = 4 + 4 + 1 + 16 + 8 + 8 + 4 + 4;
/// One page in a commit record: its number and its bytes.
pub const PAGE_ENTRY: usize = 4 + PAGE_SIZE;
/// The most a batch writes before syncing, so a flood of commits still gets answered.
const MAX_BATCH_BYTES: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Commit = 1,
    Backtrack = 2,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
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
    pub lsn: u64,
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
    lsn: u64,
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
    lsn: u64,
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

fn header(
    out: &mut Vec<u8>,
    kind: RecordKind,
    volume: Uuid,
    lsn: u64,
    time_us: i64,
    db_pages: u32,
    count: u32,
) {
    out.extend_from_slice(&[0; 8]); // len and crc, filled by seal()
    out.push(kind as u8);
    out.extend_from_slice(volume.as_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&time_us.to_le_bytes());
    out.extend_from_slice(&db_pages.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
}

fn seal(mut record: Vec<u8>) -> Vec<u8> {
    let len = (record.len() - 4) as u32;
    let crc = crc32c::crc32c(&record[8..]);
    record[0..4].copy_from_slice(&len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

/// Parses a whole record (as written) into its description.
fn describe(record: &[u8], segment: u64, offset: u64) -> Option<RecordMeta> {
    if record.len() < RECORD_HEADER {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(record[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(record[i..i + 8].try_into().unwrap());
    let kind = RecordKind::from_byte(record[8])?;
    let volume = Uuid::from_slice(&record[9..25]).ok()?;
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
        lsn: u64_at(25),
        time_us: u64_at(33) as i64,
        db_pages: u32_at(41),
        segment,
        offset,
        len: record.len() as u32,
        pages,
        payload,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// The log could not be written or synced; the node must be restarted (recovery then
    /// decides what is durable). Every later append fails the same way.
    Failed(String),
    Closed,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Failed(why) => write!(f, "the change log failed: {why}"),
            LogError::Closed => f.write_str("the change log is closed"),
        }
    }
}

impl std::error::Error for LogError {}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub segment: u64,
    pub offset: u64,
}

struct Append {
    record: Vec<u8>,
    reply: SyncSender<Result<Appended, LogError>>,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
}

struct Shared {
    dir: PathBuf,
    /// Read handles of every segment, by number.
    files: RwLock<BTreeMap<u64, Arc<File>>>,
    /// Bytes in each segment.
    sizes: Mutex<BTreeMap<u64, u64>>,
    active: AtomicU64,
    failure: Mutex<Option<String>>,
    stats: LogStats,
}

pub struct Log {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Append>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it, and returns every record found, in
    /// log order.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Log, Vec<RecordMeta>)> {
        std::fs::create_dir_all(dir)?;
        let mut numbers: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        // A segment created by a crash in the middle of sealing may lack even its header.
        if let Some(&last) = numbers.last() {
            let path = segment_path(dir, last);
            if std::fs::metadata(&path)?.len() < SEGMENT_HEADER && numbers.len() > 1 {
                std::fs::remove_file(&path)?;
                sync_dir(dir)?;
                numbers.pop();
            }
        }
        let mut records = Vec::new();
        let mut sizes = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (i, &number) in numbers.iter().enumerate() {
            let path = segment_path(dir, number);
            let active = i + 1 == numbers.len();
            let found = if active {
                let (found, end) = scan_segment(&path, number, true)?;
                sizes.insert(number, end);
                found
            } else {
                let found = match read_index(dir, number)? {
                    Some(found) => found,
                    None => {
                        let (found, end) = scan_segment(&path, number, false)?;
                        write_index(dir, number, end, &found)?;
                        found
                    }
                };
                sizes.insert(number, std::fs::metadata(&path)?.len());
                found
            };
            records.extend(found);
            files.insert(number, Arc::new(File::open(&path)?));
        }
        let active = match numbers.last() {
            Some(&n) => n,
            None => {
                create_segment(dir, 1)?;
                files.insert(1, Arc::new(File::open(segment_path(dir, 1))?));
                sizes.insert(1, SEGMENT_HEADER);
                1
            }
        };
        let writer_file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, active))?;
        let active_records = records
            .iter()
            .filter(|r| r.segment == active)
            .cloned()
            .collect();
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            files: RwLock::new(files),
            sizes: Mutex::new(sizes),
            active: AtomicU64::new(active),
            failure: Mutex::new(None),
            stats: LogStats::default(),
        });
        // A small queue: committers beyond it wait, which is the back-pressure we want.
        let (sender, receiver) = mpsc::sync_channel(1024);
        let state = WriterState {
            shared: shared.clone(),
            file: writer_file,
            segment: active,
            size: shared.sizes.lock().unwrap()[&active],
            metas: active_records,
            segment_bytes: segment_bytes.max(SEGMENT_HEADER + PAGE_ENTRY as u64),
        };
        let writer = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || state.run(receiver))?;
        Ok((
            Log {
                shared,
                sender: Mutex::new(Some(sender)),
                writer: Mutex::new(Some(writer)),
            },
            records,
        ))
    }

    /// Appends a record and returns once it is durable.
    pub fn append(&self, record: Vec<u8>) -> Result<Appended, LogError> {
        if let Some(why) = self.shared.failure.lock().unwrap().clone() {
            return Err(LogError::Failed(why));
        }
        let sender = self
            .sender
            .lock()
            .unwrap()
            .clone()
            .ok_or(LogError::Closed)?;
        let (reply, answer) = mpsc::sync_channel(1);
        sender
            .send(Append { record, reply })
            .map_err(|_| LogError::Closed)?;
        answer.recv().map_err(|_| LogError::Closed)?
    }

    /// Reads `buf.len()` bytes at `offset` of `segment`.
    pub fn read_at(&self, segment: u64, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let file = self.segment_file(segment).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("log segment {segment} is gone"),
            )
        })?;
        file.read_exact_at(buf, offset)
    }

    pub fn segment_file(&self, segment: u64) -> Option<Arc<File>> {
        self.shared.files.read().unwrap().get(&segment).cloned()
    }

    /// Every segment and its size in bytes, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.shared
            .sizes
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    pub fn total_bytes(&self) -> u64 {
        self.shared.sizes.lock().unwrap().values().sum()
    }

    pub fn active_segment(&self) -> u64 {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Deletes a sealed segment (never the active one). Readers that already hold its file
    /// keep reading it until they drop it.
    pub fn delete_segment(&self, segment: u64) -> io::Result<()> {
        if segment >= self.active_segment() {
            return Err(io::Error::other("the active segment cannot be deleted"));
        }
        self.shared.files.write().unwrap().remove(&segment);
        self.shared.sizes.lock().unwrap().remove(&segment);
        remove_if_exists(&segment_path(&self.shared.dir, segment))?;
        remove_if_exists(&index_path(&self.shared.dir, segment))?;
        sync_dir(&self.shared.dir)
    }

    pub fn stats(&self) -> &LogStats {
        &self.shared.stats
    }

    /// The failure that stopped the log, if any.
    pub fn failure(&self) -> Option<String> {
        self.shared.failure.lock().unwrap().clone()
    }

    /// Stops the writer after the appends already queued.
    pub fn close(&self) {
        self.sender.lock().unwrap().take();
        if let Some(writer) = self.writer.lock().unwrap().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.close();
    }
}

struct WriterState {
    shared: Arc<Shared>,
    file: File,
    segment: u64,
    size: u64,
    /// Descriptions of the active segment's records, for its index when it is sealed.
    metas: Vec<RecordMeta>,
    segment_bytes: u64,
}

impl WriterState {
    fn run(mut self, queue: Receiver<Append>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].record.len();
            while bytes < MAX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(next) => {
                        bytes += next.record.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            match self.write_batch(&batch) {
                Ok(placed) => {
                    for (append, placed) in batch.into_iter().zip(placed) {
                        let _ = append.reply.send(Ok(placed));
                    }
                }
                Err(e) => {
                    // Every committer of the failed batch hears of it, and so does everyone
                    // queued; later appends fail early. Recovery decides what is durable.
                    let why = e.to_string();
                    tracing::error!(error = %why, "the change log failed");
                    *self.shared.failure.lock().unwrap() = Some(why.clone());
                    for append in batch.into_iter().chain(queue.try_iter()) {
                        let _ = append.reply.send(Err(LogError::Failed(why.clone())));
                    }
                }
            }
        }
        let _ = self.file.sync_data();
    }

    /// Writes the batch (sealing segments as they fill) and syncs; all or an error.
    fn write_batch(&mut self, batch: &[Append]) -> io::Result<Vec<Appended>> {
        let mut placed = Vec::with_capacity(batch.len());
        let mut buffer: Vec<u8> = Vec::with_capacity(batch.iter().map(|a| a.record.len()).sum());
        let result = (|| {
            for append in batch {
                let len = append.record.len() as u64;
                if self.size + buffer.len() as u64 + len > self.segment_bytes
                    && self.size + buffer.len() as u64 > SEGMENT_HEADER
                {
                    self.file.write_all(&buffer)?;
                    self.size += buffer.len() as u64;
                    buffer.clear();
                    self.seal_and_roll()?;
                }
                let offset = self.size + buffer.len() as u64;
                let meta = describe(&append.record, self.segment, offset)
                    .ok_or_else(|| io::Error::other("a malformed record was appended"))?;
                self.metas.push(meta);
                buffer.extend_from_slice(&append.record);
                placed.push(Appended {
                    segment: self.segment,
                    offset,
                });
            }
            self.file.write_all(&buffer)?;
            self.size += buffer.len() as u64;
            self.file.sync_data()
        })();
        let stats = &self.shared.stats;
        if result.is_ok() {
            stats
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats.bytes.fetch_add(
                batch.iter().map(|a| a.record.len() as u64).sum(),
                Ordering::Relaxed,
            );
            stats.syncs.fetch_add(1, Ordering::Relaxed);
        }
        self.shared
            .sizes
            .lock()
            .unwrap()
            .insert(self.segment, self.size);
        result.map(|()| placed)
    }

    /// Makes the active segment durable, writes its index, and starts the next one.
    fn seal_and_roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        write_index(&self.shared.dir, self.segment, self.size, &self.metas)?;
        self.shared
            .sizes
            .lock()
            .unwrap()
            .insert(self.segment, self.size);
        let next = self.segment + 1;
        create_segment(&self.shared.dir, next)?;
        let path = segment_path(&self.shared.dir, next);
        self.shared
            .files
            .write()
            .unwrap()
            .insert(next, Arc::new(File::open(&path)?));
        self.file = OpenOptions::new().append(true).open(&path)?;
        self.segment = next;
        self.size = SEGMENT_HEADER;
        self.metas.clear();
        self.shared
            .sizes
            .lock()
            .unwrap()
            .insert(next, SEGMENT_HEADER);
        self.shared.active.store(next, Ordering::Release);
        Ok(())
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.seg"))
}

fn index_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.idx"))
}

fn create_segment(dir: &Path, number: u64) -> io::Result<()> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&number.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(segment_path(dir, number))?;
    file.write_all(&header)?;
    file.sync_all()?;
    sync_dir(dir)
}

/// Scans a segment record by record. With `truncate_torn` (the active segment), a short or
/// corrupt record ends the log there and the file is cut; otherwise (a sealed segment, which
/// was synced whole before the next one began) it is corruption and an error.
fn scan_segment(
    path: &Path,
    number: u64,
    truncate_torn: bool,
) -> io::Result<(Vec<RecordMeta>, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; SEGMENT_HEADER as usize];
    reader.read_exact(&mut header)?;
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    let stated = u64::from_le_bytes(header[16..24].try_into().unwrap());
    if &header[..8] != SEGMENT_MAGIC || version != FORMAT_VERSION || stated != number {
        return Err(io::Error::other(format!(
            "{} is not a version-{FORMAT_VERSION} log segment number {number}",
            path.display()
        )));
    }
    let mut records = Vec::new();
    let mut offset = SEGMENT_HEADER;
    let mut record = Vec::new();
    let torn_at = loop {
        let mut len_bytes = [0u8; 4];
        match read_full(&mut reader, &mut len_bytes)? {
            0 => break None,
            4 => {}
            _ => break Some(offset),
        }
        let len = u32::from_le_bytes(len_bytes) as u64;
        if len < (RECORD_HEADER - 4) as u64 || offset + 4 + len > file_len {
            break Some(offset);
        }
        record.clear();
        record.extend_from_slice(&len_bytes);
        record.resize(4 + len as usize, 0);
        if read_full(&mut reader, &mut record[4..])? != len as usize {
            break Some(offset);
        }
        let crc = u32::from_le_bytes(record[4..8].try_into().unwrap());
        if crc32c::crc32c(&record[8..]) != crc {
            break Some(offset);
        }
        match describe(&record, number, offset) {
            Some(meta) => records.push(meta),
            None => break Some(offset),
        }
        offset += 4 + len;
    };
    if let Some(at) = torn_at {
        if !truncate_torn {
            return Err(io::Error::other(format!(
                "sealed log segment {} is corrupt at offset {at}",
                path.display()
            )));
        }
        tracing::warn!(
            segment = number,
            offset = at,
            dropped = file_len - at,
            "truncating a torn log tail"
        );
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(at)?;
        file.sync_all()?;
        offset = at;
    }
    Ok((records, offset))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match reader.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

fn write_index(dir: &Path, number: u64, data_end: u64, metas: &[RecordMeta]) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 + metas.len() * 64);
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(&data_end.to_le_bytes());
    out.extend_from_slice(&(metas.len() as u64).to_le_bytes());
    for m in metas {
        out.push(m.kind as u8);
        out.extend_from_slice(m.volume.as_bytes());
        out.extend_from_slice(&m.lsn.to_le_bytes());
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

/// Reads a sealed segment's index; `None` if it is missing or does not describe the segment
/// as it is (then the caller rescans the segment).
fn read_index(dir: &Path, number: u64) -> io::Result<Option<Vec<RecordMeta>>> {
    let bytes = match std::fs::read(index_path(dir, number)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let segment_len = std::fs::metadata(segment_path(dir, number))?.len();
    Ok(parse_index(&bytes, number, segment_len))
}

fn parse_index(bytes: &[u8], number: u64, segment_len: u64) -> Option<Vec<RecordMeta>> {
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
    if version != FORMAT_VERSION || stated != number || data_end != segment_len {
        return None;
    }
    let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mut metas = Vec::with_capacity(count.min(1 << 20) as usize);
    for _ in 0..count {
        let kind = RecordKind::from_byte(take(1)?[0])?;
        let volume = Uuid::from_slice(take(16)?).ok()?;
        let lsn = u64::from_le_bytes(take(8)?.try_into().ok()?);
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
    Some(metas)
}

/// Writes a file so that a crash leaves either the old or the new content: a temporary file,
/// synced, renamed over, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bt-log-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn commit(volume: Uuid, lsn: u64, fill: u8) -> Vec<u8> {
        let page = vec![fill; PAGE_SIZE];
        encode_commit(volume, lsn, lsn as i64 * 10, 1, &[(0, &page), (3, &page)])
    }

    #[test]
    fn records_survive_a_reopen_and_their_pages_read_back() {
        let dir = temp_dir("reopen");
        let volume = Uuid::new_v4();
        let (log, found) = Log::open(&dir, 1 << 20).unwrap();
        assert!(found.is_empty());
        let placed: Vec<_> = (1..=5)
            .map(|lsn| log.append(commit(volume, lsn, lsn as u8)).unwrap())
            .collect();
        let mut buf = vec![0; PAGE_SIZE];
        log.read_at(
            placed[2].segment,
            page_offset(placed[2].offset, 1),
            &mut buf,
        )
        .unwrap();
        assert!(buf.iter().all(|b| *b == 3));
        drop(log);

        let (log, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(
            found.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(found[0].pages, [0, 3]);
        log.read_at(found[4].segment, found[4].page_offset(0), &mut buf)
            .unwrap();
        assert!(buf.iter().all(|b| *b == 5));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_truncated_and_nothing_before_it_is_lost() {
        let dir = temp_dir("torn");
        let volume = Uuid::new_v4();
        let (log, _) = Log::open(&dir, 1 << 20).unwrap();
        for lsn in 1..=3 {
            log.append(commit(volume, lsn, 1)).unwrap();
        }
        drop(log);
        let path = segment_path(&dir, 1);
        let full = std::fs::metadata(&path).unwrap().len();
        // Half of a fourth record, as a crash mid-write would leave it.
        let half = &commit(volume, 4, 1)[..3000];
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(half)
            .unwrap();
        let (log, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full);
        // The log goes on where the valid records end.
        log.append(commit(volume, 4, 9)).unwrap();
        drop(log);
        let (_, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(found.len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_ends_the_log_at_that_record() {
        let dir = temp_dir("crc");
        let volume = Uuid::new_v4();
        let (log, _) = Log::open(&dir, 1 << 20).unwrap();
        let placed: Vec<_> = (1..=3)
            .map(|lsn| log.append(commit(volume, lsn, 1)).unwrap())
            .collect();
        drop(log);
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(&dir, 1))
            .unwrap();
        file.write_all_at(&[0xff], placed[1].offset + 100).unwrap();
        let (_, found) = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(found.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_roll_over_and_sealed_ones_are_indexed() {
        let dir = temp_dir("roll");
        let volume = Uuid::new_v4();
        let segment_bytes = 4 * (2 * PAGE_ENTRY + RECORD_HEADER) as u64;
        let (log, _) = Log::open(&dir, segment_bytes).unwrap();
        for lsn in 1..=20 {
            log.append(commit(volume, lsn, lsn as u8)).unwrap();
        }
        assert!(log.segments().len() >= 5, "{:?}", log.segments());
        log.delete_segment(1).unwrap();
        assert!(log.delete_segment(log.active_segment()).is_err());
        drop(log);
        assert!(index_path(&dir, 2).exists());
        let (_, found) = Log::open(&dir, segment_bytes).unwrap();
        let lsns: Vec<u64> = found.iter().map(|r| r.lsn).collect();
        assert_eq!(lsns.first(), Some(&4));
        assert_eq!(lsns.last(), Some(&20));
        // A missing index is rebuilt from the segment.
        std::fs::remove_file(index_path(&dir, 3)).unwrap();
        let (_, again) = Log::open(&dir, segment_bytes).unwrap();
        assert_eq!(again, found);
        assert!(index_path(&dir, 3).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_appends_share_syncs() {
        let dir = temp_dir("group");
        let (log, _) = Log::open(&dir, 64 << 20).unwrap();
        let log = Arc::new(log);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let volume = Uuid::new_v4();
                    for lsn in 1..=50 {
                        log.append(commit(volume, lsn, t)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.records.load(Ordering::Relaxed), 400);
        assert!(stats.syncs.load(Ordering::Relaxed) < 400);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
