//! Background workers. Handlers record intent in the store and return; these workers act on
//! the storage nodes and converge the store to what happened:
//!
//! - [`BacktrackRunner`] executes backtrack jobs: it claims one with a lease, calls the node
//!   with the backtrack id as the idempotency key, and finishes the job (fenced by the lease),
//!   or gives it back with a capped, jittered backoff while the node is unreachable, until the
//!   job's deadline. A runner that dies mid-job leaves a lease that expires; the next runner
//!   repeats the node call, which the node answers from its record: the backtrack happens once.
//! - [`ClusterReconciler`] creates, resizes and drops volumes for clusters that are
//!   `creating`, `modifying` or `deleting`. Every node call it makes is idempotent, so several
//!   replicas may run it at once.
//!
//! - [`metering::Meter`] samples the volumes' stored change records for billing, metrics and
//!   window alerts.
//!
//! Each exposes `run_once()`, so tests drive them step by step without sleeping; [`spawn`]
//! runs them in loops that stop between steps on shutdown.

pub mod metering;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backtrack_storage_node::api::{BacktrackRequest, CloneSource, ErrorCode, VolumeAccess};
use backtrack_storage_node::client::CallError;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::{Config, Settings};
use crate::domain::{Backtrack, Cluster, ClusterStatus, RestoreType, Timestamp};
use crate::events::{self, What};
use crate::nodes::NodeRegistry;
use crate::store::{JobOutcome, Store, StoreError};

/// What the runner needs to know about time.
#[derive(Debug, Clone)]
pub struct JobTiming {
    pub lease: Duration,
    pub deadline: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl JobTiming {
    pub fn from_config(config: &Config) -> Self {
        let timings = config.timings();
        JobTiming {
            lease: timings.job_lease,
            deadline: timings.job_deadline,
            retry_base: timings.job_retry_base,
            retry_max: timings.job_retry_max,
        }
    }

    /// The delay before attempt `attempts + 1`: doubling from the base, capped, with up to a
    /// fifth taken off at random so that jobs failing together do not retry together.
    pub fn backoff(&self, attempts: i64) -> Duration {
        let exponent = attempts.clamp(1, 30) as u32 - 1;
        let delay = self
            .retry_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.retry_max);
        let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
        delay - delay / 5 * jitter / 1000
    }
}

pub struct BacktrackRunner {
    store: Store,
    nodes: NodeRegistry,
    settings: Arc<Settings>,
    timing: JobTiming,
    /// Names this runner in leases; unique per process start.
    owner: String,
}

impl BacktrackRunner {
    pub fn new(
        store: Store,
        nodes: NodeRegistry,
        settings: Arc<Settings>,
        timing: JobTiming,
    ) -> Self {
        BacktrackRunner {
            store,
            nodes,
            settings,
            timing,
            owner: format!("runner-{}", Uuid::new_v4()),
        }
    }

    /// Claims and runs one due job; `false` when there was none.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let lease_until = now.plus_millis(self.timing.lease.as_millis() as i64);
        let Some(job) = self
            .store
            .claim_backtrack(&self.owner, now, lease_until)
            .await?
        else {
            return Ok(false);
        };
        self.apply(job).await?;
        Ok(true)
    }

    /// Asks the node to apply a claimed job, then records what came of it (or when to try
    /// again). Every log line of the attempt carries the backtrack and cluster ids.
    #[tracing::instrument(skip_all, fields(backtrack = %job.id, cluster = %job.cluster_id, attempt = job.attempts))]
    async fn apply(&self, job: Backtrack) -> Result<(), StoreError> {
        tracing::info!("applying backtrack");
        let result = match self.nodes.client(&job.node_id) {
            Some(client) => {
                let request = BacktrackRequest {
                    backtrack_id: job.id,
                    to_us: job.backtrack_to.as_micros(),
                    clamp_to_earliest: job.use_earliest,
                    force: job.force,
                };
                client.backtrack(&job.volume_id, &request).await
            }
            None => Err(CallError::Unreachable(format!(
                "storage node {:?} is not among the configured nodes",
                job.node_id
            ))),
        };
        let now = Timestamp::now();
        let outcome = match result {
            Ok(done) => JobOutcome::Completed {
                backtrack_to: Timestamp::from_micros(done.backtrack_to_us),
                backtracked_from: Timestamp::from_micros(done.backtracked_from_us),
            },
            Err(e) if e.is_transient() && now < job.deadline_at => {
                let run_at = now.plus_millis(self.timing.backoff(job.attempts).as_millis() as i64);
                tracing::warn!(error = %e, "backtrack will be retried");
                self.store
                    .retry_backtrack(job.id, &self.owner, run_at, &e.to_string())
                    .await?;
                return Ok(());
            }
            Err(e) if e.is_transient() => JobOutcome::Failed {
                reason: format!(
                    "The storage node did not complete the backtrack before its deadline \
                     ({} attempts); last error: {e}",
                    job.attempts
                ),
            },
            Err(e) => JobOutcome::Failed {
                reason: format!("The storage node refused the backtrack: {e}"),
            },
        };
        self.finish(&job, &outcome).await
    }

    async fn finish(&self, job: &Backtrack, outcome: &JobOutcome) -> Result<(), StoreError> {
        if self
            .store
            .finish_backtrack(job, &self.owner, outcome)
            .await?
        {
            let what = match outcome {
                JobOutcome::Completed { backtrack_to, .. } => {
                    tracing::info!(backtrack = %job.id, to = %backtrack_to, "backtrack completed");
                    What::BacktrackCompleted(job, *backtrack_to)
                }
                JobOutcome::Failed { reason } => {
                    tracing::warn!(backtrack = %job.id, %reason, "backtrack failed");
                    What::BacktrackFailed(job, reason)
                }
            };
            events::record(&self.store, &self.settings, job.cluster_id.as_str(), what).await;
        } else {
            // Another runner took the job over after our lease ran out; it will finish it.
            tracing::warn!(backtrack = %job.id, "lease lost before the backtrack was recorded");
        }
        Ok(())
    }
}

pub struct ClusterReconciler {
    store: Store,
    nodes: NodeRegistry,
    settings: Arc<Settings>,
    /// The last error logged per cluster, so a node that stays down is not logged every poll.
    last_errors: Mutex<HashMap<String, String>>,
}

impl ClusterReconciler {
    pub fn new(store: Store, nodes: NodeRegistry, settings: Arc<Settings>) -> Self {
        ClusterReconciler {
            store,
            nodes,
            settings,
            last_errors: Mutex::default(),
        }
    }

    /// Converges every cluster that is waiting on its node; `true` if one changed.
    pub async fn run_once(&self) -> Result<bool, StoreError> {
        let mut changed = false;
        for cluster in self.store.clusters_to_converge().await? {
            changed |= self.converge(&cluster).await?;
        }
        Ok(changed)
    }

    /// Makes the cluster's volume match the cluster, then records it; `false` if the node
    /// could not be reached (a later pass tries again).
    #[tracing::instrument(skip_all, fields(cluster = %cluster.id, status = cluster.status.as_str()))]
    pub async fn converge(&self, cluster: &Cluster) -> Result<bool, StoreError> {
        let Some(client) = self.nodes.client(&cluster.node_id) else {
            self.note_error(
                cluster,
                format!("storage node {:?} is not configured", cluster.node_id),
            )
            .await;
            return Ok(false);
        };
        let volume = &cluster.resource_id;
        let (result, from, to) = match cluster.status {
            ClusterStatus::Creating => match &cluster.restored_from {
                None => (
                    client
                        .create_volume(volume, cluster.backtrack_window)
                        .await
                        .map(drop),
                    ClusterStatus::Creating,
                    ClusterStatus::Available,
                ),
                Some(restored) => {
                    let source = CloneSource {
                        volume_id: restored.volume.clone(),
                        at_us: restored.at.as_micros(),
                        full_copy: restored.restore_type == RestoreType::FullCopy,
                    };
                    match client
                        .create_clone(volume, cluster.backtrack_window, &source)
                        .await
                    {
                        Err(e) if refuses_restore_for_good(&e) => {
                            return self.restore_failed(cluster, &e.to_string()).await
                        }
                        result => (
                            result.map(drop),
                            ClusterStatus::Creating,
                            ClusterStatus::Available,
                        ),
                    }
                }
            },
            ClusterStatus::Modifying => (
                client
                    .modify_volume(volume, cluster.backtrack_window)
                    .await
                    .map(drop),
                ClusterStatus::Modifying,
                ClusterStatus::Available,
            ),
            ClusterStatus::Deleting => {
                if let Err(e) = client.delete_volume(volume).await {
                    self.note_error(cluster, e.to_string()).await;
                    return Ok(false);
                }
                self.last_errors.lock().await.remove(cluster.id.as_str());
                let removed = self.store.remove_deleted_cluster(&cluster.id).await?;
                if removed {
                    tracing::info!(cluster = %cluster.id, "cluster deleted");
                }
                return Ok(removed);
            }
            ClusterStatus::Available
            | ClusterStatus::Backtracking
            | ClusterStatus::IncompatibleRestore => return Ok(false),
        };
        // Who may connect to the database, once the volume is there.
        let result = match (result, access(cluster)) {
            (Ok(()), Some(access)) => client.set_access(volume, &access).await,
            (result, _) => result,
        };
        if let Err(e) = result {
            self.note_error(cluster, e.to_string()).await;
            return Ok(false);
        }
        self.last_errors.lock().await.remove(cluster.id.as_str());
        let moved = self
            .store
            .transition_cluster(&cluster.id, &[from], to)
            .await?;
        if moved {
            tracing::info!(cluster = %cluster.id, status = to.as_str(), "cluster converged");
        }
        Ok(moved)
    }

    /// The node will never make the restored volume (its source's history no longer holds
    /// the instant, or the source is gone): the cluster says so and can only be deleted.
    async fn restore_failed(&self, cluster: &Cluster, reason: &str) -> Result<bool, StoreError> {
        let moved = self
            .store
            .transition_cluster(
                &cluster.id,
                &[ClusterStatus::Creating],
                ClusterStatus::IncompatibleRestore,
            )
            .await?;
        if moved {
            tracing::warn!(cluster = %cluster.id, %reason, "restore refused by the storage node");
            events::record(
                &self.store,
                &self.settings,
                cluster.id.as_str(),
                What::RestoreFailed(reason),
            )
            .await;
        }
        Ok(moved)
    }

    async fn note_error(&self, cluster: &Cluster, error: String) {
        let mut last = self.last_errors.lock().await;
        if last.get(cluster.id.as_str()) != Some(&error) {
            tracing::warn!(cluster = %cluster.id, status = cluster.status.as_str(), %error, "cannot converge cluster yet");
            last.insert(cluster.id.to_string(), error);
        }
    }
}

/// What the node needs to authenticate connections to the cluster's database.
fn access(cluster: &Cluster) -> Option<VolumeAccess> {
    Some(VolumeAccess {
        database: cluster.database().to_string(),
        username: cluster.master_username.clone()?,
        verifier: cluster.master_user_verifier.clone()?,
    })
}

/// Whether a node's answer to a restore means it will never succeed. A time in the node's
/// future is not: the node's clock may be a little behind this one's.
fn refuses_restore_for_good(e: &CallError) -> bool {
    !e.is_transient() && e.code() != Some(ErrorCode::TimeInFuture)
}

/// Wakes the workers when a handler has just recorded work for them.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn wake(&self) {
        self.0.notify_waiters();
        self.0.notify_one();
    }
}

/// Runs the workers until `shutdown` turns true. A step under way when it does is finished,
/// never cut short: a node call in flight completes and its result is recorded.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    runner: Arc<BacktrackRunner>,
    reconciler: Arc<ClusterReconciler>,
    meter: Arc<metering::Meter>,
    wakeup: Wakeup,
    poll: Duration,
    metering: Duration,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    // The meter keeps its own time: nothing this process does wakes it early.
    let meter_loop = tokio::spawn(work_loop(
        "meter",
        Wakeup::default(),
        metering,
        shutdown.clone(),
        move || {
            let meter = meter.clone();
            async move { meter.run_once().await }
        },
    ));
    let runner_loop = {
        let wakeup = wakeup.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(work_loop(
            "backtrack runner",
            wakeup,
            poll,
            shutdown,
            move || {
                let runner = runner.clone();
                async move { runner.run_once().await }
            },
        ))
    };
    let reconciler_loop = tokio::spawn(work_loop(
        "cluster reconciler",
        wakeup,
        poll,
        shutdown,
        move || {
            let reconciler = reconciler.clone();
            async move { reconciler.run_once().await }
        },
    ));
    vec![runner_loop, reconciler_loop, meter_loop]
}

async fn work_loop<F, Fut>(
    name: &'static str,
    wakeup: Wakeup,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
    step: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Registered before the step, so a wakeup sent while the step runs is not lost.
        let woken = wakeup.0.notified();
        let did_work = match step().await {
            Ok(did_work) => did_work,
            Err(StoreError::Unavailable(why)) => {
                tracing::warn!(worker = name, error = %why, "the metadata store cannot take the step now; retrying");
                false
            }
            Err(e) => {
                tracing::error!(worker = name, error = %e, "worker step failed");
                false
            }
        };
        if did_work {
            continue;
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::debug!(worker = name, "stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let timing = JobTiming {
            lease: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1_000),
        };
        for (attempts, nominal) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let delay = timing.backoff(attempts).as_millis() as u64;
            assert!(
                delay <= nominal && delay >= nominal * 4 / 5,
                "attempt {attempts}: {delay} ms"
            );
        }
    }
}
