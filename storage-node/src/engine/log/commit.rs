//! Group commit: committers queue their records; whichever finds the log idle leads the batch,
//! gathers the committers of the last batches, writes the batch durably and answers each.
//!
//! A record can be queued (`submit`) and waited for later (`wait`), by its committer or by
//! anyone who read what it commits: a volume lets its next writer in as soon as a commit's
//! record is queued (early lock release), and answers no one before the data they saw is
//! durable. Once a volume's record fails, no later record of that volume is written until
//! the volume has undone the commits that followed it (`forget_failure`): a record that is
//! written is never one built on a lost one.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::record::{LSN_BYTES, VOLUME_BYTES};
use super::{Appended, Log, LogError, Shared};

/// A committer waiting for its record: the leader that writes the record sets the answer,
/// then wakes the committer (and whoever else waits for it), which reads it without taking
/// the queue's lock.
pub struct Waiter {
    pub(super) answer: OnceLock<Result<Appended, LogError>>,
    pub(super) thread: Thread,
    /// Other threads waiting for this record.
    pub(super) others: Mutex<Vec<Thread>>,
}

impl Waiter {
    /// Wakes everyone waiting for the answer just set, but the current thread.
    fn wake(&self) {
        let me = std::thread::current().id();
        if self.thread.id() != me {
            self.thread.unpark();
        }
        for other in self.others.lock().unwrap().drain(..) {
            if other.id() != me {
                other.unpark();
            }
        }
    }
}

/// A queued record: `Log::wait` says when it is durable, or why it never will be.
pub type Ticket = Arc<Waiter>;

/// Committers waiting for their records to be durable.
#[derive(Default)]
pub(super) struct Queue {
    /// Records not yet taken by a leader, with their committers.
    pub(super) pending: Vec<(Vec<u8>, Arc<Waiter>)>,
    /// A batch is being made durable right now.
    pub(super) flushing: bool,
    pub(super) closed: bool,
    /// The volumes of the last two batches (committers that are likely to come back).
    pub(super) recent_volumes: [Vec<[u8; 16]>; 2],
    /// A leader gathering committers, with how many volumes it waits for.
    pub(super) gatherer: Option<(Thread, usize)>,
    /// How long the last batch took to make durable.
    pub(super) last_flush: Duration,
    /// Tests set how long a leader gathers, instead of half the last flush.
    #[cfg(test)]
    pub(super) gather_for: Option<Duration>,
    /// Volumes one of whose records failed: the first LSN that failed, and why. Their later
    /// records fail too until the volume has undone what followed (`forget_failure`).
    pub(super) failed: HashMap<[u8; 16], (u64, LogError)>,
}

impl Queue {
    /// How many distinct volumes have records queued.
    pub(super) fn queued_volumes(&self) -> usize {
        let mut seen: Vec<[u8; 16]> = Vec::with_capacity(self.pending.len());
        for (record, _) in &self.pending {
            let volume = volume_of(record);
            if !seen.contains(&volume) {
                seen.push(volume);
            }
        }
        seen.len()
    }

    /// How many volumes committed in the last two batches: the batch a leader gathers for.
    pub(super) fn expected_volumes(&self) -> usize {
        let [older, newer] = &self.recent_volumes;
        newer.len() + older.iter().filter(|v| !newer.contains(v)).count()
    }

    /// How long a leader waits for them: half the last flush, so the disk idles at most
    /// that long to save a whole flush for the latecomers.
    pub(super) fn gathering_time(&self) -> Duration {
        #[cfg(test)]
        if let Some(wait) = self.gather_for {
            return wait;
        }
        (self.last_flush / 2).min(MAX_GATHERING)
    }

    /// Takes the queued records as the next batch, remembering their volumes.
    pub(super) fn take_batch(&mut self) -> (Vec<Vec<u8>>, Vec<Arc<Waiter>>) {
        let volumes = self.pending.iter().map(|(r, _)| volume_of(r)).collect();
        self.recent_volumes.swap(0, 1);
        self.recent_volumes[1] = volumes;
        std::mem::take(&mut self.pending).into_iter().unzip()
    }
}

/// The longest a leader waits for committers, whatever the disk's speed.
const MAX_GATHERING: Duration = Duration::from_millis(1);

/// The volume a record belongs to.
fn volume_of(record: &[u8]) -> [u8; 16] {
    let mut volume = [0; 16];
    volume.copy_from_slice(&record[VOLUME_BYTES]);
    volume
}

fn lsn_of(record: &[u8]) -> u64 {
    u64::from_le_bytes(record[LSN_BYTES].try_into().expect("8 bytes"))
}

impl Log {
    /// Appends a record and returns once it is durable.
    ///
    /// Group commit without a writer thread: a committer that finds no batch under way
    /// becomes the leader: it waits briefly for the committers of the last batches to queue
    /// again (see `gather`), writes every record queued with one write, durably, and hands
    /// each committer its answer; the others wait, and whoever queued meanwhile forms the
    /// next batch. A lone committer pays no thread handoff and no wait. Every wakeup is one a
    /// thread needs (on a virtual machine each costs an interrupt to the other CPU): the next
    /// leader first, so the disk is idle as briefly as can be, then each committer once, with
    /// its answer in hand, so it need not take the queue's lock again.
    ///
    /// One batch at a time: measured on 2 vCPUs with 8 writers, a second batch in flight
    /// split the batches (2.7–3.0 records per write) and cost more than it overlapped; so did
    /// a blind commit delay, where waiting for known peers (`gather`) gains.
    ///
    /// For a record nothing is built on before it is durable (a backtrack's): if it fails,
    /// the volume's later records are written again at once.
    pub fn append(&self, record: Vec<u8>) -> Result<Appended, LogError> {
        let volume = volume_of(&record);
        let ticket = self.submit(record)?;
        let answer = self.wait(&ticket);
        if answer.is_err() {
            self.forget_failure_of(volume);
        }
        answer
    }

    /// Queues a record and returns at once; `wait` makes it durable (or says why not).
    pub fn submit(&self, record: Vec<u8>) -> Result<Ticket, LogError> {
        let me = Arc::new(Waiter {
            answer: OnceLock::new(),
            thread: std::thread::current(),
            others: Mutex::new(Vec::new()),
        });
        let mut queue = self.shared.queue.lock().unwrap();
        if queue.closed {
            return Err(LogError::Closed);
        }
        queue.pending.push((record, me.clone()));
        if let Some((leader, want)) = &queue.gatherer {
            if queue.queued_volumes() >= *want {
                leader.unpark();
                queue.gatherer = None;
            }
        }
        Ok(me)
    }

    /// The answer to a queued record, once it is durable or failed: from whoever leads its
    /// batch, which may be this thread.
    pub fn wait(&self, me: &Ticket) -> Result<Appended, LogError> {
        if let Some(answer) = me.answer.get() {
            return answer.clone();
        }
        let shared = &self.shared;
        if me.thread.id() != std::thread::current().id() {
            me.others.lock().unwrap().push(std::thread::current());
        }
        let mut queue = shared.queue.lock().unwrap();
        loop {
            if let Some(answer) = me.answer.get() {
                return answer.clone();
            }
            let mine_pending = queue.pending.iter().any(|(_, w)| Arc::ptr_eq(w, me));
            if !mine_pending || queue.flushing {
                // Our record is being flushed by another leader, or a batch is under way:
                // wait to be woken (parking tolerates spurious wakeups; the loop checks).
                drop(queue);
                std::thread::park();
                if let Some(answer) = me.answer.get() {
                    return answer.clone();
                }
                queue = shared.queue.lock().unwrap();
                continue;
            }
            queue.flushing = true;
            queue = gather(shared, queue);
            let (batch, waiters) = queue.take_batch();
            // Records of volumes whose earlier record failed are not written.
            let (batch, waiters, refused) = refuse_after_failures(&queue, batch, waiters);
            drop(queue);
            for (waiter, why) in refused {
                let _ = waiter.answer.set(Err(why));
                waiter.wake();
            }
            let started = Instant::now();
            let (durable, failed) = if batch.is_empty() {
                (Vec::new(), None)
            } else {
                flush(shared, &batch)
            };
            let took = started.elapsed();
            // The durable prefix of the batch is acknowledged; the rest hears why not. The
            // next batch repairs what the failed write may have left, so once the disk has
            // room (or answers again) commits go on without a restart.
            let failure = failed.map(LogError::of);
            match &failure {
                Some(e) => {
                    let first = shared.failure.lock().unwrap().replace(e.clone()).is_none();
                    if first {
                        tracing::error!(error = %e, "a write to the change log failed; commits fail until it succeeds again");
                    }
                }
                None => {
                    if shared.failure.lock().unwrap().take().is_some() {
                        tracing::info!("the change log is written again");
                    }
                }
            }
            let written = durable.len();
            let mut answers: Vec<Result<Appended, LogError>> =
                durable.into_iter().map(Ok).collect();
            queue = shared.queue.lock().unwrap();
            if let Some(e) = failure {
                answers.resize(batch.len(), Err(e.clone()));
                for record in &batch[written..] {
                    let first = queue
                        .failed
                        .entry(volume_of(record))
                        .or_insert((lsn_of(record), e.clone()));
                    first.0 = first.0.min(lsn_of(record));
                }
            }
            queue.flushing = false;
            queue.last_flush = took;
            let next = queue.pending.first().map(|(_, next)| next.clone());
            if queue.closed {
                shared.flushed.notify_all();
            }
            drop(queue);
            if let Some(next) = next {
                next.thread.unpark();
            }
            for (waiter, answer) in waiters.iter().zip(answers) {
                let _ = waiter.answer.set(answer);
                waiter.wake();
            }
            queue = shared.queue.lock().unwrap();
        }
    }

    /// The volume has undone every commit from its first failed record on: its records still
    /// queued from there on (built on the undone ones) fail too, and its new records are
    /// written again.
    pub fn forget_failure(&self, volume: uuid::Uuid) {
        self.forget_failure_of(*volume.as_bytes());
    }

    fn forget_failure_of(&self, volume: [u8; 16]) {
        let mut queue = self.shared.queue.lock().unwrap();
        let Some((first, why)) = queue.failed.remove(&volume) else {
            return;
        };
        let mut stale = Vec::new();
        queue.pending.retain(|(record, waiter)| {
            let built_on_lost = volume_of(record) == volume && lsn_of(record) >= first;
            if built_on_lost {
                stale.push(waiter.clone());
            }
            !built_on_lost
        });
        drop(queue);
        for waiter in stale {
            let _ = waiter.answer.set(Err(why.clone()));
            waiter.wake();
        }
    }
}

type Refused = Vec<(Arc<Waiter>, LogError)>;

/// Splits off the records that must not be written: those of a volume whose record with the
/// same or a lower LSN failed.
fn refuse_after_failures(
    queue: &Queue,
    batch: Vec<Vec<u8>>,
    waiters: Vec<Arc<Waiter>>,
) -> (Vec<Vec<u8>>, Vec<Arc<Waiter>>, Refused) {
    if queue.failed.is_empty() {
        return (batch, waiters, Vec::new());
    }
    let mut kept = (
        Vec::with_capacity(batch.len()),
        Vec::with_capacity(batch.len()),
    );
    let mut refused = Vec::new();
    for (record, waiter) in batch.into_iter().zip(waiters) {
        match queue.failed.get(&volume_of(&record)) {
            Some((first, why)) if lsn_of(&record) >= *first => refused.push((waiter, why.clone())),
            _ => {
                kept.0.push(record);
                kept.1.push(waiter);
            }
        }
    }
    (kept.0, kept.1, refused)
}

/// The leader's wait for the committers of the last two batches to queue again, up to
/// `gathering_time`: with 8 writers on 2 vCPUs this makes about 7.7 records per durable
/// write instead of 4.2 (the writers otherwise settle into two alternating halves, each
/// waiting for the other's flush). A lone committer, or one whose peers went idle, is never
/// kept waiting for more than that.
fn gather<'a>(shared: &'a Shared, mut queue: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
    let want = queue.expected_volumes();
    let deadline = Instant::now() + queue.gathering_time();
    loop {
        let now = Instant::now();
        if queue.closed || now >= deadline || queue.queued_volumes() >= want {
            queue.gatherer = None;
            return queue;
        }
        queue.gatherer = Some((std::thread::current(), want));
        drop(queue);
        std::thread::park_timeout(deadline - now);
        queue = shared.queue.lock().unwrap();
    }
}

/// Makes a batch durable: one direct, synchronous write, or (where the filesystem refuses
/// direct I/O) a write through the page cache, then fdatasync. Returns where each durable
/// record went (a prefix of the batch: all of it unless a write failed) and the failure that
/// stopped the rest.
fn flush(shared: &Shared, batch: &[Vec<u8>]) -> (Vec<Appended>, Option<io::Error>) {
    #[cfg(test)]
    if shared
        .fail_batches
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        return (
            Vec::new(),
            Some(io::Error::other("a write failed (injected)")),
        );
    }
    let started = Instant::now();
    let (placed, failed) = shared.writer.lock().unwrap().write_batch(shared, batch);
    let stats = &shared.stats;
    stats
        .flush_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    stats
        .records
        .fetch_add(placed.len() as u64, Ordering::Relaxed);
    stats.bytes.fetch_add(
        batch[..placed.len()].iter().map(|r| r.len() as u64).sum(),
        Ordering::Relaxed,
    );
    if !placed.is_empty() {
        stats.syncs.fetch_add(1, Ordering::Relaxed);
    }
    (placed, failed.err())
}
