//! A writing transaction on one pooled connection, begun with the backend's statement
//! (`BEGIN IMMEDIATE` on SQLite). sqlx's own `Transaction` leaves a SQLite connection that its
//! next user cannot begin on when COMMIT fails (a full disk: "attempted to call begin_with at
//! non-zero transaction depth" for every later write). This one ends every transaction
//! explicitly, and a connection whose COMMIT or ROLLBACK failed, or whose transaction was
//! abandoned (a dropped future), is closed instead of going back to the pool. The next
//! transaction then starts on a clean connection: the store recovers as soon as its database
//! does.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use super::StoreError;

pub struct Tx {
    conn: PoolConnection<Any>,
    /// Ended with COMMIT or ROLLBACK; otherwise the connection is closed when dropped.
    ended: bool,
}

impl Tx {
    pub async fn begin(pool: &AnyPool, statement: &str) -> Result<Tx, StoreError> {
        let mut conn = pool.acquire().await?;
        if let Err(e) = conn.execute(statement).await {
            conn.close_on_drop();
            return Err(e.into());
        }
        Ok(Tx { conn, ended: false })
    }

    /// Commits if `result` is a success, rolls back otherwise, and returns `result` (or why
    /// the commit failed).
    pub async fn finish<T, E: From<StoreError>>(self, result: Result<T, E>) -> Result<T, E> {
        match result {
            Ok(value) => {
                self.commit().await?;
                Ok(value)
            }
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    pub async fn commit(mut self) -> Result<(), StoreError> {
        let committed = self.conn.execute("COMMIT").await;
        if committed.is_err() {
            // SQLite may already have rolled back (a full disk does); either way the
            // connection is not trusted again.
            let _ = self.conn.execute("ROLLBACK").await;
            self.conn.close_on_drop();
        }
        self.ended = true;
        committed.map(drop).map_err(StoreError::from)
    }

    pub async fn rollback(mut self) {
        if self.conn.execute("ROLLBACK").await.is_err() {
            self.conn.close_on_drop();
        }
        self.ended = true;
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}
