//! Transactions that span calls (BeginTransaction, CommitTransaction, RollbackTransaction):
//! each holds a connection of its own until it ends, expires after being idle, or is rolled
//! back by a backtrack.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::statement::sql_error;
use super::{SqlVolume, TxSlot, MAX_TRANSACTIONS};
use crate::api::ErrorCode;
use crate::engine::vfs;
use crate::engine::volume::VolumeError;

impl SqlVolume {
    /// An open transaction's slot.
    pub(super) fn transaction(&self, id: &str) -> Result<TxSlot, VolumeError> {
        self.transactions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| transaction_not_found(id))
    }

    pub fn begin(&self) -> Result<String, VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        self.check_available()?;
        if self.transactions.lock().unwrap().len() >= MAX_TRANSACTIONS {
            return Err(VolumeError::new(
                ErrorCode::SqlError,
                format!(
                    "the database already has {MAX_TRANSACTIONS} open transactions; commit or \
                     roll back some first"
                ),
            ));
        }
        let conn = self.open()?;
        conn.conn.execute_batch("BEGIN").map_err(sql_error)?;
        let id = format!("tx-{}", uuid::Uuid::new_v4().simple());
        self.transactions.lock().unwrap().insert(
            id.clone(),
            Arc::new(Mutex::new(Some((conn, Instant::now())))),
        );
        Ok(id)
    }

    pub fn commit(&self, id: &str) -> Result<(), VolumeError> {
        self.finish(id, "COMMIT")
    }

    pub fn rollback(&self, id: &str) -> Result<(), VolumeError> {
        self.finish(id, "ROLLBACK")
    }

    fn finish(&self, id: &str, verb: &str) -> Result<(), VolumeError> {
        self.check_available()?;
        let _gate = self.gate.read().unwrap();
        let tx = self.transaction(id)?;
        let taken = tx.lock().unwrap().take();
        self.transactions.lock().unwrap().remove(id);
        let Some((conn, _)) = taken else {
            return Err(transaction_not_found(id));
        };
        vfs::take_failure();
        vfs::take_seen();
        let result = conn
            .conn
            .execute_batch(verb)
            .map_err(|e| self.explain(&conn, sql_error(e)));
        let result = self.settled(result);
        if result.is_err() && !conn.conn.is_autocommit() {
            let _ = conn.conn.execute_batch("ROLLBACK");
        }
        result.map_err(VolumeError::rolled_back)
    }

    /// Rolls back transactions unused for longer than `idle`, as the Data API does.
    pub fn expire_transactions(&self, idle: Duration) -> usize {
        let expired: Vec<String> = self
            .transactions
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, tx)| {
                tx.try_lock()
                    .ok()
                    .and_then(|slot| slot.as_ref().map(|(_, used)| used.elapsed() > idle))
                    .unwrap_or(false)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(volume = %self.volume.id, transaction = %id, "rolling back an idle transaction");
            let _ = self.rollback(id);
        }
        expired.len()
    }
}

pub(super) fn transaction_not_found(id: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::TransactionNotFound,
        format!("transaction {id} does not exist: it was committed, rolled back, expired, or rolled back by a backtrack"),
    )
}
