//! The schema: the files of migrations/<backend>/, compiled into the binary (a deployed service
//! needs nothing beside it) and applied by sqlx's migrator, which records them, with their
//! checksums, in `_sqlx_migrations`. Two replicas starting at once take turns: on PostgreSQL
//! by sqlx's advisory lock, on SQLite (where sqlx takes none) by an flock beside the database
//! file.
//!
//! Databases made before the switch to sqlx's migrator recorded their migrations in
//! `schema_migrations`; they are carried over once, so nothing is applied twice.

use std::borrow::Cow;
use std::path::PathBuf;

use sqlx::migrate::{Migrate, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyConnection, AnyPool, Row};

use super::{sqlite_path, Backend, StoreError};

/// The migrations of one backend, in order: (version, description, SQL).
type Files = &'static [(i64, &'static str, &'static str)];

macro_rules! files {
    ($dir:literal: $($version:literal $name:literal),* $(,)?) => {
        &[$(($version, $name, include_str!(concat!("../../../migrations/", $dir, "/", $name, ".sql")))),*]
    };
}

const SQLITE: Files = files!("sqlite":
    1 "0001_clusters_and_backtracks",
    2 "0002_metering_and_events",
    3 "0003_clones",
    4 "0004_master_user_verifier",
    5 "0005_database_names",
);
const POSTGRES: Files = files!("postgres":
    1 "0001_clusters_and_backtracks",
    2 "0002_metering_and_events",
    3 "0003_clones",
    4 "0004_master_user_verifier",
    5 "0005_database_names",
);

type Resolved = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Migration>, sqlx::error::BoxDynError>> + Send>,
>;

/// The files above, as sqlx's migrator takes them.
#[derive(Debug)]
struct Embedded(Files);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Resolved {
        Box::pin(async move { Ok(migrations(self.0)) })
    }
}

fn migrations(files: Files) -> Vec<Migration> {
    files
        .iter()
        .map(|(version, name, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*name),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect()
}

/// Applies what is not applied yet.
pub(super) async fn migrate(pool: &AnyPool, url: &str, backend: Backend) -> Result<(), StoreError> {
    let files = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    let _turn = match backend {
        Backend::Sqlite => sqlite_turn(url).await?,
        Backend::Postgres => None,
    };
    let mut conn = pool.acquire().await?;
    carry_over(&mut conn, files).await?;
    let migrator = Migrator::new(Embedded(files))
        .await
        .map_err(|e| StoreError::Invalid(format!("the embedded migrations: {e}")))?;
    migrator
        .run(&mut *conn)
        .await
        .map_err(|e| StoreError::Invalid(format!("migrating the schema: {e}")))
}

/// On SQLite, an exclusive flock on `<database>.migrate.lock` while migrating.
async fn sqlite_turn(url: &str) -> Result<Option<std::fs::File>, StoreError> {
    let Some(path) = sqlite_path(url) else {
        return Ok(None);
    };
    let lock = PathBuf::from(format!("{}.migrate.lock", path.display()));
    tokio::task::spawn_blocking(move || {
        let file = backtrack_storage_node::fsutil::private_options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("waiting to migrate: {e}")))?
    .map(Some)
    .map_err(|e| StoreError::Invalid(format!("waiting to migrate: {e}")))
}

/// A database whose migrations `schema_migrations` records (the store's own runner, before
/// sqlx's) gets them recorded in `_sqlx_migrations`, with their checksums, and the old table
/// goes.
async fn carry_over(conn: &mut AnyConnection, files: Files) -> Result<(), StoreError> {
    let old = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await;
    let Ok(rows) = old else {
        // No such table: a new database, or one carried over already.
        return Ok(());
    };
    let applied: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    conn.ensure_migrations_table()
        .await
        .map_err(|e| StoreError::Invalid(format!("creating _sqlx_migrations: {e}")))?;
    for migration in migrations(files)
        .into_iter()
        .filter(|m| applied.contains(&m.version))
    {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
        )
        .bind(migration.version)
        .bind(migration.description.to_string())
        .bind(migration.checksum.to_vec())
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DROP TABLE IF EXISTS schema_migrations")
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        migrations = applied.len(),
        "carried the applied migrations over to sqlx's _sqlx_migrations"
    );
    Ok(())
}
