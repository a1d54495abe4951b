//! The log's tests: records round trip, group commit, recovery of torn and stale tails,
//! rollovers and recycling.

use std::fs::OpenOptions;

use uuid::Uuid;

use super::record::*;
use super::segment::*;
use super::writer::*;
use super::*;
use crate::engine::timeline::Lsn;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bt-log-{name}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn commit(volume: Uuid, lsn: u64, fill: u8) -> Vec<u8> {
    let page = vec![fill; PAGE_SIZE];
    encode_commit(
        volume,
        Lsn(lsn),
        lsn as i64 * 10,
        1,
        &[(0, &page), (3, &page)],
    )
}

#[test]
fn records_survive_a_reopen_and_their_pages_read_back() {
    // Direct I/O where the filesystem takes it, and the page cache with fdatasync.
    for direct in [true, false] {
        records_survive_a_reopen(direct);
    }
}

fn records_survive_a_reopen(direct: bool) {
    let dir = temp_dir("reopen");
    let volume = Uuid::new_v4();
    let (log, found) = Log::open_with(&dir, 1 << 20, direct).unwrap();
    assert!(found.is_empty());
    if !direct {
        assert!(!log.is_direct());
    }
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

    // Reopened, nothing is in memory: the pages come from the disk.
    let (log, found) = Log::open_with(&dir, 1 << 20, direct).unwrap();
    assert_eq!(
        found.iter().map(|r| r.lsn.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(found[0].pages, [0, 3]);
    log.read_at(found[4].segment, found[4].page_offset(0), &mut buf)
        .unwrap();
    assert!(buf.iter().all(|b| *b == 5));
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_torn_tail_is_left_behind_and_nothing_before_it_is_lost() {
    let dir = temp_dir("torn");
    let volume = Uuid::new_v4();
    let (log, _) = Log::open(&dir, 1 << 20).unwrap();
    let placed: Vec<_> = (1..=3)
        .map(|lsn| log.append(commit(volume, lsn, 1)).unwrap())
        .collect();
    let segment = log.active_segment();
    drop(log);
    let path = segment_path(&dir, segment);
    let end = placed[2].offset + commit(volume, 3, 1).len() as u64;
    // Half of a fourth record, as a crash mid-write leaves it, and a later whole record
    // that reached the disk before it (pages can land out of order).
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&commit(volume, 4, 1)[..3000], end)
        .unwrap();
    let mut later = commit(volume, 5, 1);
    salt_crc(&mut later[4..8], segment);
    file.write_all_at(&later, end + 20_000).unwrap();
    let (log, found) = Log::open(&dir, 1 << 20).unwrap();
    assert_eq!(found.len(), 3);
    // The log goes on in a new segment, and nothing after the tear ever comes back.
    assert!(log.active_segment() > segment);
    log.append(commit(volume, 4, 9)).unwrap();
    drop(log);
    let (log, found) = Log::open(&dir, 1 << 20).unwrap();
    assert_eq!(
        found.iter().map(|r| r.lsn.0).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_recycled_segment_never_replays_its_old_records() {
    let dir = temp_dir("recycle");
    let volume = Uuid::new_v4();
    let segment_bytes = 8 * (2 * PAGE_ENTRY + RECORD_HEADER) as u64;
    let (log, _) = Log::open(&dir, segment_bytes).unwrap();
    for lsn in 1..=40 {
        log.append(commit(volume, lsn, lsn as u8)).unwrap();
    }
    // Let the preallocator settle, then free the oldest segment: it becomes the spare.
    std::thread::sleep(Duration::from_millis(200));
    let _ = std::fs::remove_file(dir.join(SPARE));
    let oldest = log.segments()[0].0;
    log.delete_segment(oldest).unwrap();
    assert!(dir.join(SPARE).exists(), "the freed segment was recycled");
    for lsn in 41..=60 {
        log.append(commit(volume, lsn, 0)).unwrap();
    }
    drop(log);
    let (log, found) = Log::open(&dir, segment_bytes).unwrap();
    let lsns: Vec<u64> = found.iter().map(|r| r.lsn.0).collect();
    assert!(lsns.windows(2).all(|w| w[0] < w[1]), "{lsns:?}");
    assert_eq!(lsns.last(), Some(&60));
    drop(log);
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
    let lsns: Vec<u64> = found.iter().map(|r| r.lsn.0).collect();
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
    let (dir, log) = shared_log("group");
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
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Once a volume's record fails, none of its later records is written, whether queued
/// already or still to come, until the volume has undone what followed (`forget_failure`):
/// on disk there is never a record built on a lost one.
#[test]
fn no_record_after_a_failed_one_is_written_until_the_volume_undid_it() {
    let (dir, log) = shared_log("failed");
    let (volume, other) = (Uuid::new_v4(), Uuid::new_v4());
    log.append(commit(volume, 1, 1)).unwrap();
    // Commits 2 and 3 are queued together; their batch fails.
    log.shared.fail_batches.store(1, Ordering::Release);
    let second = log.submit(commit(volume, 2, 2)).unwrap();
    let third = log.submit(commit(volume, 3, 3)).unwrap();
    assert!(log.wait(&second).is_err());
    assert!(log.wait(&third).is_err());
    // Commit 4 (built on 3) is refused although the disk takes writes again; the other
    // volume's records go on.
    let fourth = log.submit(commit(volume, 4, 4)).unwrap();
    log.append(commit(other, 1, 9)).unwrap();
    assert!(log.wait(&fourth).is_err());
    // Queued before the volume undid its commits: refused when it has.
    let fifth = log.submit(commit(volume, 5, 5)).unwrap();
    log.forget_failure(volume);
    assert!(log.wait(&fifth).is_err());
    // The volume's next commit, on the undone state, is written.
    log.append(commit(volume, 6, 6)).unwrap();
    drop(log);
    let (reopened, records) = Log::open(&dir, 64 << 20).unwrap();
    let ours: Vec<u64> = records
        .iter()
        .filter(|r| r.volume == volume)
        .map(|r| r.lsn.0)
        .collect();
    assert_eq!(ours, [1, 6]);
    drop(reopened);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A new log in a fresh directory, for several threads.
fn shared_log(name: &str) -> (PathBuf, Arc<Log>) {
    let dir = temp_dir(name);
    let (log, _) = Log::open(&dir, 64 << 20).unwrap();
    (dir, Arc::new(log))
}

/// Appends one record of each volume in turn, so the next leader expects them all.
fn prime(log: &Log, volumes: &[Uuid]) {
    for (i, volume) in volumes.iter().enumerate() {
        log.append(commit(*volume, 1, i as u8)).unwrap();
    }
}

#[test]
fn a_leader_waits_for_the_volumes_of_the_last_batches() {
    let (dir, log) = shared_log("gather");
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    prime(&log, &[a, b]);
    log.shared.queue.lock().unwrap().gather_for = Some(Duration::from_secs(60));
    let syncs = || log.stats().syncs.load(Ordering::Relaxed);
    let before = syncs();
    let first = {
        let log = log.clone();
        std::thread::spawn(move || log.append(commit(a, 2, 1)).unwrap())
    };
    // The leader holds its record back until b's committer queues too.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!first.is_finished(), "the leader did not wait for b");
    assert_eq!(syncs(), before);
    log.append(commit(b, 2, 2)).unwrap();
    first.join().unwrap();
    assert_eq!(syncs(), before + 1, "a and b shared one durable write");
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_leader_stops_waiting_for_peers_gone_idle() {
    let (dir, log) = shared_log("gather-idle");
    let volumes: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    prime(&log, &volumes);
    let (done, finished) = std::sync::mpsc::channel();
    let alone = {
        let log = log.clone();
        std::thread::spawn(move || {
            for lsn in 2..=20 {
                log.append(commit(volumes[0], lsn, 0)).unwrap();
            }
            done.send(()).unwrap();
        })
    };
    // Each wait is bounded by half the last flush; a hang here would be a leader waiting
    // for committers that never come.
    finished
        .recv_timeout(Duration::from_secs(30))
        .expect("a lone committer was kept waiting for idle peers");
    alone.join().unwrap();
    assert_eq!(log.stats().records.load(Ordering::Relaxed), 4 + 19);
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn recent_writes_answer_what_they_hold_and_drop_the_oldest() {
    let chunk = |fill: u8, pages: usize| {
        let mut staged = Staged::new(&vec![fill; pages * WRITE_PAGE], 0);
        staged.pad_to_page();
        Arc::new(staged)
    };
    // Room for three one-page chunks, or one of two pages and one of one.
    let one = chunk(0, 1).footprint();
    let two = chunk(0, 2).footprint();
    let mut recent = RecentWrites::new(two + one);
    recent.insert(7, 0, chunk(1, 2));
    let mut buf = vec![0u8; 100];
    assert!(recent.read(7, WRITE_PAGE as u64 + 5, &mut buf));
    assert!(buf.iter().all(|b| *b == 1));
    // Past the end of what was written, or another segment: not there.
    assert!(!recent.read(7, 2 * WRITE_PAGE as u64 - 50, &mut buf));
    assert!(!recent.read(8, 0, &mut buf));
    // A later write from the same page replaces the earlier one.
    recent.insert(7, 0, chunk(2, 1));
    assert!(recent.read(7, 0, &mut buf));
    assert!(buf.iter().all(|b| *b == 2));
    assert_eq!(recent.bytes, one);
    // Over capacity, the oldest go first.
    recent.insert(7, WRITE_PAGE as u64, chunk(3, 1));
    recent.insert(8, 0, chunk(4, 2));
    assert!(!recent.read(7, 0, &mut buf));
    assert!(recent.read(7, WRITE_PAGE as u64, &mut buf));
    assert!(recent.read(8, 0, &mut buf));
    assert_eq!(recent.bytes, one + two);
    recent.forget_segment(8);
    assert!(!recent.read(8, 0, &mut buf));
    assert_eq!(recent.bytes, one);
}

#[test]
fn staged_bytes_start_page_aligned() {
    for tail in [0, 1, 4095, 4096, 5000] {
        let mut staged = Staged::new(&vec![7; tail], 10_000);
        staged.push_record(&[1; 20], 1);
        staged.pad_to_page();
        assert_eq!(staged.bytes().as_ptr() as usize % WRITE_PAGE, 0);
        assert_eq!(staged.len() % WRITE_PAGE, 0);
        assert_eq!(staged.len(), (tail + 20).next_multiple_of(WRITE_PAGE));
    }
}
