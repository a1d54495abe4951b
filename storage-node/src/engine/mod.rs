//! The storage engine of one node: the shared log, the volumes, and the maintenance that
//! keeps history to each volume's window and the log to its budget.
//!
//! - `log`: segments, records, group commit, recovery.
//! - `timeline`: live sets and the state at an instant.
//! - `volume`: one cluster's page store: reads, commits, backtracks, folds.
//! - `vfs`: the SQLite glue (the only `unsafe` code).
//! - `sql`: connections, statements, transactions, quiescing for a backtrack.
//! - `maintenance`: the background passes (folds, the log budget, idle transactions).
//!
//! On disk, under the data directory: `log/` (segments and their indexes) and
//! `volumes/<id>/` (`volume.json` and `base.img`).

pub mod btree;
pub mod log;
mod maintenance;
pub mod sql;
pub mod timeline;
pub mod vfs;
pub mod volume;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use self::maintenance::Maintenance;

use self::log::Log;
use self::maintenance::spawn_maintenance;
use self::sql::{SqlLimits, SqlVolume};
use self::volume::{Clock, CloneSpec, Volume, VolumeError};
use crate::api::{
    BacktrackList, BacktrackOutcome, BacktrackRequest, CloneSource, ErrorCode, ExecuteRequest,
    ExecuteResult, VolumeAccess, VolumeFigures, MAX_WINDOW_SECS,
};
use crate::fsutil::{self, DirLock};

/// How the engine is tuned.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    /// Size at which a log segment is sealed and the next one begins.
    pub segment_bytes: u64,
    /// The most disk the log's segments may take (each is preallocated whole; one spare
    /// segment comes on top); beyond it the oldest history is folded early and the volumes'
    /// actual windows shrink. At least two segments.
    pub log_budget_bytes: u64,
    /// How often maintenance runs (folds, budget, segment deletion, idle transactions).
    pub maintenance_interval: Duration,
    /// Open transactions unused this long are rolled back.
    pub transaction_idle_timeout: Duration,
    /// What one SQL call may use: time, and the size of one transaction.
    pub sql_limits: SqlLimits,
    /// The most memory SQLite may allocate in this process, over all volumes (its hard heap
    /// limit): a statement that needs more fails with an out-of-memory error.
    pub sql_memory_limit_bytes: u64,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            data_dir: data_dir.into(),
            segment_bytes: 64 << 20,
            log_budget_bytes: 64 << 30,
            maintenance_interval: Duration::from_secs(10),
            transaction_idle_timeout: Duration::from_secs(180),
            sql_limits: SqlLimits::default(),
            sql_memory_limit_bytes: 1 << 30,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 64 << 10 {
            return Err("the segment size must be at least 64 KiB".into());
        }
        if self.log_budget_bytes < 2 * self.segment_bytes {
            return Err(format!(
                "the log budget ({} bytes) must hold at least two segments ({} bytes each)",
                self.log_budget_bytes, self.segment_bytes
            ));
        }
        self.sql_limits.validate()?;
        if self.sql_memory_limit_bytes < 64 << 20 {
            return Err("the SQL memory limit must be at least 64 MiB".into());
        }
        Ok(())
    }
}

pub struct Engine {
    config: EngineConfig,
    /// The log budget in force (it may change while the node runs).
    log_budget: std::sync::atomic::AtomicU64,
    log: Arc<Log>,
    clock: Arc<Clock>,
    volumes: RwLock<HashMap<String, Arc<SqlVolume>>>,
    /// Who may connect to each volume's database, by volume (`access.json` in its directory).
    access: RwLock<HashMap<String, VolumeAccess>>,
    /// Creations and deletions, one at a time.
    creating: Mutex<()>,
    /// Maintenance, one pass at a time.
    maintaining: Mutex<()>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// This engine is the data directory's only user while it holds this (until closed).
    lock: Mutex<Option<DirLock>>,
}

impl Engine {
    /// Opens the node's data directory: recovers the log, replays every volume, finishes any
    /// interrupted fold, and starts maintenance.
    pub fn open(config: EngineConfig) -> io::Result<Arc<Engine>> {
        config.validate().map_err(io::Error::other)?;
        let lock = DirLock::acquire(&config.data_dir, "backtrack-storage-node")?;
        // What an older version left readable by others becomes private.
        for own in ["log", "volumes"] {
            fsutil::make_tree_private(&config.data_dir.join(own));
        }
        vfs::ensure_registered().map_err(io::Error::other)?;
        sql::set_memory_limit(config.sql_memory_limit_bytes).map_err(io::Error::other)?;
        let started = std::time::Instant::now();
        let (log, records) = Log::open(&config.data_dir.join("log"), config.segment_bytes)?;
        let log = Arc::new(log);
        let clock = Arc::new(Clock::default());
        let volumes_dir = config.data_dir.join("volumes");
        fsutil::create_private_dir_all(&volumes_dir)?;
        let mut opened: HashMap<String, Arc<Volume>> = HashMap::new();
        for entry in std::fs::read_dir(&volumes_dir)? {
            let dir = entry?.path();
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.starts_with('.') {
                // A deletion that a crash interrupted.
                std::fs::remove_dir_all(&dir)?;
                continue;
            }
            match Volume::open(&dir, &records, log.clone(), clock.clone())? {
                Some(volume) => {
                    opened.insert(name, Arc::new(volume));
                }
                // A creation that a crash interrupted before anything was acknowledged.
                None => std::fs::remove_dir_all(&dir)?,
            }
        }
        // Clones read from their sources again before any fold of a source runs: an
        // interrupted fold copies for them too.
        for volume in opened.values() {
            volume.relink(|id| opened.get(id).cloned())?;
        }
        let mut volumes = HashMap::new();
        let mut access = HashMap::new();
        for (name, volume) in opened {
            let granted = read_access(volume.dir())?;
            volume.finish_interrupted_fold()?;
            let sql = SqlVolume::with_limits(volume, config.sql_limits)
                .map_err(|e| io::Error::other(e.message))?;
            sql.set_database(granted.as_ref().map_or(&name, |a| &a.database));
            if let Some(granted) = granted {
                access.insert(name.clone(), granted);
            }
            volumes.insert(name, Arc::new(sql));
        }
        tracing::info!(
            volumes = volumes.len(),
            records = records.len(),
            millis = started.elapsed().as_millis() as u64,
            "storage engine recovered"
        );
        let engine = Arc::new(Engine {
            log_budget: std::sync::atomic::AtomicU64::new(config.log_budget_bytes),
            config,
            log,
            clock,
            volumes: RwLock::new(volumes),
            access: RwLock::new(access),
            creating: Mutex::new(()),
            maintaining: Mutex::new(()),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            worker: Mutex::new(None),
            lock: Mutex::new(Some(lock)),
        });
        engine.delete_unneeded_segments();
        let worker = spawn_maintenance(
            Arc::downgrade(&engine),
            engine.stop.clone(),
            engine.config.maintenance_interval,
        )?;
        *engine.worker.lock().unwrap() = Some(worker);
        Ok(engine)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn log_budget(&self) -> u64 {
        self.log_budget.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Changes the log budget; the next maintenance pass enforces it.
    pub fn set_log_budget(&self, bytes: u64) -> Result<(), VolumeError> {
        let mut config = self.config.clone();
        config.log_budget_bytes = bytes;
        config
            .validate()
            .map_err(|e| VolumeError::new(ErrorCode::InvalidRequest, e))?;
        self.log_budget
            .store(bytes, std::sync::atomic::Ordering::Release);
        tracing::info!(bytes, "log budget changed");
        Ok(())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Creates a volume; creating one that exists returns it unchanged.
    pub fn create_volume(&self, id: &str, window_secs: u64) -> Result<VolumeFigures, VolumeError> {
        self.create(id, window_secs, None)
    }

    /// Creates volume `id` as a clone of `source.volume_id` at `source.at_us` (see
    /// [`volume::CloneSpec`]); with `full_copy`, every page is copied before it returns.
    /// Creating one that exists returns it (finishing its full copy if that was cut short).
    pub fn create_clone(
        &self,
        id: &str,
        window_secs: u64,
        source: &CloneSource,
    ) -> Result<VolumeFigures, VolumeError> {
        self.create(id, window_secs, Some(source))
    }

    fn create(
        &self,
        id: &str,
        window_secs: u64,
        source: Option<&CloneSource>,
    ) -> Result<VolumeFigures, VolumeError> {
        validate_id(id)?;
        validate_window(window_secs)?;
        // One creation or deletion at a time: a clone's source cannot go while it is made.
        let _one_at_a_time = self.creating.lock().unwrap();
        let existing = self.volumes.read().unwrap().get(id).cloned();
        let sql = match existing {
            Some(existing) => existing,
            None => {
                let dir = self.config.data_dir.join("volumes").join(id);
                let volume = match source {
                    None => Arc::new(Volume::create(
                        &dir,
                        id,
                        window_secs,
                        self.log.clone(),
                        self.clock.clone(),
                    )?),
                    Some(source) => {
                        let from = self.volume(&source.volume_id)?;
                        let spec = CloneSpec {
                            source: from.volume(),
                            time_us: source.at_us,
                        };
                        Volume::create_clone(&dir, id, window_secs, spec)?
                    }
                };
                let sql = Arc::new(SqlVolume::with_limits(volume, self.config.sql_limits)?);
                sql.set_database(id);
                tracing::info!(volume = id, window_secs, source = ?source, "volume created");
                self.volumes
                    .write()
                    .unwrap()
                    .insert(id.to_string(), sql.clone());
                sql
            }
        };
        if source.is_some_and(|s| s.full_copy) {
            sql.volume().hydrate()?;
        }
        Ok(figures(&sql))
    }

    pub fn modify_volume(&self, id: &str, window_secs: u64) -> Result<VolumeFigures, VolumeError> {
        validate_window(window_secs)?;
        let sql = self.volume(id)?;
        sql.volume().set_window(window_secs)?;
        tracing::info!(volume = id, window_secs, "volume window changed");
        Ok(figures(&sql))
    }

    /// Deletes a volume, its base image and (as segments empty) its history. Its clones get
    /// a copy of every page they still shared with it first, so they stay exact.
    pub fn delete_volume(&self, id: &str) -> Result<(), VolumeError> {
        let _one_at_a_time = self.creating.lock().unwrap();
        for clone in self.volume(id)?.volume().clones() {
            clone.hydrate()?;
            tracing::info!(volume = %clone.id, source = id, "clone hydrated before its source goes");
        }
        let sql = self
            .volumes
            .write()
            .unwrap()
            .remove(id)
            .ok_or_else(|| not_found(id))?;
        sql.shut();
        sql.volume().leave_source();
        self.access.write().unwrap().remove(id);
        let dir = sql.volume().dir().to_path_buf();
        let doomed = dir.with_file_name(format!(".deleted-{}", sql.volume().uuid));
        std::fs::rename(&dir, &doomed)?;
        crate::fsutil::sync_dir(dir.parent().unwrap_or(&dir))?;
        std::fs::remove_dir_all(&doomed)?;
        tracing::info!(volume = id, "volume deleted");
        Ok(())
    }

    /// Sets who may connect to volume `id`'s database, and under which database name (unique
    /// on the node); kept in `access.json` beside the volume.
    pub fn set_access(&self, id: &str, access: VolumeAccess) -> Result<(), VolumeError> {
        crate::scram::Verifier::parse(&access.verifier)
            .map_err(|e| VolumeError::new(ErrorCode::InvalidRequest, e))?;
        let sql = self.volume(id)?;
        let mut all = self.access.write().unwrap();
        if let Some((other, _)) = all
            .iter()
            .find(|(volume, a)| a.database == access.database && volume.as_str() != id)
        {
            return Err(VolumeError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "the database name {:?} is volume {other}'s",
                    access.database
                ),
            ));
        }
        let bytes = serde_json::to_vec_pretty(&access).map_err(VolumeError::internal)?;
        fsutil::write_atomically(&sql.volume().dir().join(ACCESS_FILE), &bytes)?;
        sql.set_database(&access.database);
        all.insert(id.to_string(), access);
        Ok(())
    }

    /// The volume whose database is called `database`, and who may connect to it.
    pub fn database(&self, database: &str) -> Option<(String, VolumeAccess)> {
        self.access
            .read()
            .unwrap()
            .iter()
            .find(|(_, a)| a.database == database)
            .map(|(id, a)| (id.clone(), a.clone()))
    }

    pub fn volume(&self, id: &str) -> Result<Arc<SqlVolume>, VolumeError> {
        self.volumes
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// A read-only view of volume `id` as it was at `time_us` (see [`sql::View`]).
    pub fn view_at(&self, id: &str, time_us: i64) -> Result<sql::View, VolumeError> {
        self.volume(id)?.view_at(time_us)
    }

    /// What a backtrack of volume `id` to `to_us` would undo (see [`sql::SqlVolume::preview`]).
    pub fn preview(
        &self,
        id: &str,
        to_us: i64,
        include_rows: bool,
    ) -> Result<crate::api::Preview, VolumeError> {
        self.volume(id)?.preview(to_us, include_rows)
    }

    pub fn figures(&self, id: &str) -> Result<VolumeFigures, VolumeError> {
        Ok(figures(&*self.volume(id)?))
    }

    pub fn backtracks(&self, id: &str) -> Result<BacktrackList, VolumeError> {
        Ok(BacktrackList {
            backtracks: self.volume(id)?.volume().ledger(),
        })
    }

    pub fn all_figures(&self) -> Vec<VolumeFigures> {
        let mut all: Vec<VolumeFigures> = self
            .volumes
            .read()
            .unwrap()
            .values()
            .map(|v| figures(v))
            .collect();
        all.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
        all
    }

    pub fn backtrack(
        &self,
        id: &str,
        request: &BacktrackRequest,
    ) -> Result<BacktrackOutcome, VolumeError> {
        let outcome = self.volume(id)?.backtrack(request)?;
        tracing::info!(volume = id, backtrack = %outcome.backtrack_id, to_us = outcome.backtrack_to_us, "volume backtracked");
        Ok(outcome)
    }

    pub fn execute(
        &self,
        id: &str,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, VolumeError> {
        self.volume(id)?.execute(request)
    }

    /// The parameters and result columns of `sql` on volume `id`, without running it.
    pub fn describe(&self, id: &str, sql: &str) -> Result<sql::Described, VolumeError> {
        self.volume(id)?.describe(sql)
    }

    pub fn begin(&self, id: &str) -> Result<String, VolumeError> {
        self.volume(id)?.begin()
    }

    pub fn commit(&self, id: &str, transaction: &str) -> Result<(), VolumeError> {
        self.volume(id)?.commit(transaction)
    }

    pub fn rollback(&self, id: &str, transaction: &str) -> Result<(), VolumeError> {
        self.volume(id)?.rollback(transaction)
    }

    pub fn now_us(&self) -> i64 {
        self.clock.now_us()
    }

    /// Interrupts every statement running on any volume (the node is stopping).
    pub fn interrupt_all(&self) {
        for sql in self.volumes.read().unwrap().values() {
            sql.interrupt_running();
        }
    }

    /// Stops maintenance and the log writer.
    pub fn close(&self) {
        {
            let (stopped, wake) = &*self.stop;
            *stopped.lock().unwrap() = true;
            wake.notify_all();
        }
        if let Some(worker) = self.worker.lock().unwrap().take() {
            let _ = worker.join();
        }
        self.volumes.write().unwrap().clear();
        self.log.close();
        self.lock.lock().unwrap().take();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap() = true;
        wake.notify_all();
    }
}

fn figures(sql: &SqlVolume) -> VolumeFigures {
    sql.volume()
        .figures(sql.open_transactions(), sql.is_switching())
}

const ACCESS_FILE: &str = "access.json";

fn read_access(dir: &std::path::Path) -> io::Result<Option<VolumeAccess>> {
    match std::fs::read(dir.join(ACCESS_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::other(format!("{}: bad {ACCESS_FILE}: {e}", dir.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn not_found(id: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::VolumeNotFound,
        format!("no volume {id:?} on this node"),
    )
}

/// Volume ids name directories: letters, digits, `-` and `_`, at most 128.
fn validate_id(id: &str) -> Result<(), VolumeError> {
    let valid = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            format!("{id:?} is not a valid volume id"),
        ))
    }
}

fn validate_window(window_secs: u64) -> Result<(), VolumeError> {
    if window_secs <= MAX_WINDOW_SECS {
        Ok(())
    } else {
        Err(VolumeError::new(
            ErrorCode::InvalidRequest,
            format!("window {window_secs} is outside 0..={MAX_WINDOW_SECS} seconds"),
        ))
    }
}
