//! Applies the schema files of migrations/<backend>/ in order, each once, each in its own
//! transaction, recording what ran in `schema_migrations`. The files are compiled into the
//! binary, so a deployed service needs nothing beside it. On PostgreSQL an advisory lock keeps
//! two replicas starting at once from applying the same migration twice.

use sqlx::{AnyPool, Executor};

use super::{Backend, StoreError};
use crate::domain::Timestamp;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($version:literal $name:literal),* $(,)?) => {
        &[$(Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../../migrations/", $dir, "/", $name, ".sql")),
        }),*]
    };
}

const SQLITE: &[Migration] = migrations!("sqlite":
    1 "0001_clusters_and_backtracks",
    2 "0002_metering_and_events",
);
const POSTGRES: &[Migration] = migrations!("postgres":
    1 "0001_clusters_and_backtracks",
    2 "0002_metering_and_events",
);

/// An arbitrary constant that names our migration lock among PostgreSQL's advisory locks.
const PG_MIGRATION_LOCK: i64 = 0x6261_636b_7472_6163;

pub(super) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    // Even CREATE TABLE IF NOT EXISTS can fail when two sessions run it at once on
    // PostgreSQL, so it takes the lock too.
    let mut tx = pool.begin_with(backend.begin_statement()).await?;
    lock(&mut tx, backend).await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    tx.commit().await?;
    for migration in migrations {
        let mut tx = pool.begin_with(backend.begin_statement()).await?;
        lock(&mut tx, backend).await?;
        let applied = sqlx::query("SELECT 1 FROM schema_migrations WHERE version = $1")
            .bind(migration.version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if applied {
            continue;
        }
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::Invalid(format!("migration {} failed: {e}", migration.name))
            })?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.name)
        .bind(Timestamp::now().as_micros())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(migration = migration.name, "applied migration");
    }
    Ok(())
}

/// On PostgreSQL, waits for the migration lock, held until the transaction ends (SQLite's
/// BEGIN IMMEDIATE already serializes writers).
async fn lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PG_MIGRATION_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
