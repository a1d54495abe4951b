//! Maintenance, on a thread of its own: each pass folds every volume to its window, keeps the
//! log within its budget (folding the oldest history early when it must), deletes segments
//! nothing needs and rolls back idle transactions.

use std::io;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::sql::SqlVolume;
use super::volume::VolumeError;
use super::Engine;
use crate::api::ErrorCode;

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub folds: usize,
    pub forced_folds: usize,
    pub segments_deleted: usize,
    pub transactions_expired: usize,
}

impl Engine {
    /// One pass of maintenance: fold each volume to its window, keep the log within its
    /// budget (folding the oldest history early if it must), delete segments nothing needs,
    /// and roll back idle transactions.
    pub fn maintain(&self) -> Maintenance {
        let _one_pass = self.maintaining.lock().unwrap();
        let mut done = Maintenance::default();
        // A failed write (a full disk) is repaired as soon as it can be, writes or not.
        self.log.try_repair();
        let volumes: Vec<Arc<SqlVolume>> = self.volumes.read().unwrap().values().cloned().collect();
        for sql in &volumes {
            match sql.volume().fold_for_window() {
                Ok(true) => done.folds += 1,
                Ok(false) => {}
                Err(e) => fold_failed(&sql.volume().id, &e, "fold failed"),
            }
            done.transactions_expired +=
                sql.expire_transactions(self.config.transaction_idle_timeout);
        }
        done.segments_deleted += self.delete_unneeded_segments();
        let budget = self.log_budget();
        while self.log.disk_bytes() > budget {
            let segments = self.log.segments();
            let Some(&(oldest, _)) = segments.first().filter(|_| segments.len() > 1) else {
                break;
            };
            for sql in &volumes {
                let volume = sql.volume();
                if let Some(used) = volume
                    .segment_use()
                    .get(&oldest)
                    .filter(|_| volume.needs_segment(oldest))
                {
                    match volume.fold_through(used.max_lsn) {
                        Ok(true) => done.forced_folds += 1,
                        Ok(false) => {}
                        Err(e) => fold_failed(&volume.id, &e, "forced fold failed"),
                    }
                }
            }
            let deleted = self.delete_unneeded_segments();
            done.segments_deleted += deleted;
            if deleted == 0 {
                break;
            }
        }
        if done.forced_folds > 0 {
            tracing::warn!(
                folds = done.forced_folds,
                budget,
                "log budget full: the oldest history was folded early, so actual windows shrink"
            );
        }
        done
    }

    /// Deletes the sealed segments that no volume needs any more.
    pub(super) fn delete_unneeded_segments(&self) -> usize {
        let volumes: Vec<Arc<SqlVolume>> = self.volumes.read().unwrap().values().cloned().collect();
        let active = self.log.active_segment();
        let mut deleted = 0;
        for (segment, _) in self.log.segments() {
            if segment >= active || volumes.iter().any(|v| v.volume().needs_segment(segment)) {
                continue;
            }
            match self.log.delete_segment(segment) {
                Ok(()) => {
                    for v in &volumes {
                        v.volume().forget_segment(segment);
                    }
                    deleted += 1;
                }
                Err(e) => tracing::error!(segment, error = %e, "cannot delete a log segment"),
            }
        }
        deleted
    }
}

pub(super) fn spawn_maintenance(
    engine: Weak<Engine>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    every: Duration,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("maintenance".into())
        .spawn(move || loop {
            {
                let (stopped, wake) = &*stop;
                let guard = stopped.lock().unwrap();
                let (guard, _) = wake.wait_timeout_while(guard, every, |s| !*s).unwrap();
                if *guard {
                    return;
                }
            }
            let Some(engine) = engine.upgrade() else {
                return;
            };
            let done = engine.maintain();
            if done != Maintenance::default() {
                tracing::debug!(?done, "maintenance");
            }
        })
}

/// A fold that failed is tried again at the next pass; a full disk (reported by the log once,
/// where it happens) is not an error worth repeating every pass.
fn fold_failed(volume: &str, e: &VolumeError, what: &str) {
    if e.code == ErrorCode::StorageFull {
        tracing::debug!(volume, error = %e, "{what}");
    } else {
        tracing::error!(volume, error = %e, "{what}");
    }
}
