//! Builds the running service from a `Config`: opens (and migrates) the store, binds the
//! listener (port 0 works, and `port()` tells which port was taken), spawns the workers, and
//! runs until told to stop. There is one shutdown path: the HTTP server stops accepting and
//! drains, then each worker finishes the step it is in.

use std::sync::Arc;
use std::time::Duration;

use backtrack_storage_node::fsutil::DirLock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::{self, AppState, Settings};
use crate::jobs::metering::Meter;
use crate::jobs::{self, BacktrackRunner, ClusterReconciler, JobTiming, Wakeup};
use crate::nodes::local::{self, LocalNodes};
use crate::nodes::NodeRegistry;
use crate::ops::Ops;
use crate::store::{redact, Store};

pub struct App {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    runner: Arc<BacktrackRunner>,
    meter: Arc<Meter>,
    poll: Duration,
    metering: Duration,
    shutdown: watch::Sender<bool>,
    /// The storage nodes this process started (the embedded setup), stopped last.
    local: Option<LocalNodes>,
    /// Held while this process uses its data directory (the embedded database or local
    /// nodes): a second process on the same directory refuses to start.
    _lock: Option<DirLock>,
}

/// Stops a running [`App`] from elsewhere (a signal handler, a test).
#[derive(Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

impl App {
    pub async fn build(config: Config) -> Result<App, String> {
        config.validate()?;
        let lock = if config.uses_data_dir() {
            let lock = DirLock::acquire(&config.data_dir, "backtrack-service serve")
                .map_err(|e| format!("cannot use {}: {e}", config.data_dir.display()))?;
            Some(lock)
        } else {
            None
        };
        let url = config.database_url();
        let store = Store::connect(&url)
            .await
            .map_err(|e| format!("cannot open the metadata store {}: {e}", redact(&url)))?;
        let timings = config.timings();
        let (nodes, local) = if config.nodes.is_empty() {
            // The embedded setup: storage nodes as child processes, with a fresh token.
            let token = uuid::Uuid::new_v4().simple().to_string();
            let names = local::names(config.local_nodes);
            let placeholders: Vec<(String, String)> = names
                .iter()
                .map(|n| (n.clone(), "http://127.0.0.1:1".to_string()))
                .collect();
            let nodes = NodeRegistry::new(&placeholders, &token, timings.node_call)
                .with_sql_timeout(timings.sql_call);
            let settings = local::NodeSettings {
                token,
                statement_timeout_ms: config.statement_timeout_ms,
            };
            let local =
                LocalNodes::start(&config.data_dir, &names, settings, nodes.clone()).await?;
            (nodes, Some(local))
        } else {
            let endpoints: Vec<(String, String)> = config
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.url.clone()))
                .collect();
            let token = config.node_token.as_deref().unwrap_or_default();
            let nodes = NodeRegistry::new(&endpoints, token, timings.node_call)
                .with_sql_timeout(timings.sql_call);
            nodes.check_health().await;
            (nodes, None)
        };
        let keys = config.access_keys()?;
        let mut settings = Settings::from_config(&config);
        settings.authenticated = !keys.is_empty();
        let settings = Arc::new(settings);
        let reconciler = Arc::new(ClusterReconciler::new(
            store.clone(),
            nodes.clone(),
            settings.clone(),
        ));
        let runner = Arc::new(BacktrackRunner::new(
            store.clone(),
            nodes.clone(),
            settings.clone(),
            JobTiming::from_config(&config),
        ));
        let meter = Arc::new(Meter::new(store.clone(), nodes.clone(), settings.clone()));
        let state = AppState {
            ops: Ops {
                store,
                nodes,
                reconciler,
                wakeup: Wakeup::default(),
                settings,
                ready: Arc::default(),
            },
            metrics: Arc::default(),
        };
        let router = http::router(
            state.clone(),
            timings.request,
            config.body_limit_bytes,
            http::guard::Guard {
                // Signed requests name their host in the signature.
                loopback_hosts_only: config.listen.ip().is_loopback() && keys.is_empty(),
            },
            (!keys.is_empty())
                .then(|| http::auth::Auth::new(keys.clone(), &config.region, config.metrics_auth)),
        );
        let listener = match TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                if let Some(local) = local {
                    local.stop().await;
                }
                return Err(format!("cannot listen on {}: {e}", config.listen));
            }
        };
        Ok(App {
            listener,
            router,
            state,
            runner,
            meter,
            poll: timings.poll,
            metering: timings.metering,
            shutdown: watch::channel(false).0,
            local,
            _lock: lock,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown handle fires. If this future is dropped instead (a crash, as
    /// tests simulate one), the workers are aborted with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let mut workers = jobs::spawn(
            self.runner.clone(),
            self.state.ops.reconciler.clone(),
            self.meter.clone(),
            self.state.ops.wakeup.clone(),
            self.poll,
            self.metering,
            self.shutdown.subscribe(),
        );
        workers.push(tokio::spawn(watch_node_health(
            self.state.ops.nodes.clone(),
            self.shutdown.subscribe(),
        )));
        let workers = AbortOnDrop(workers);
        let mut stop = self.shutdown.subscribe();
        http::server::serve(self.listener, self.router, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await?;
        for worker in workers.take() {
            let _ = worker.await;
        }
        // Last: no worker calls a node any more.
        if let Some(local) = self.local {
            local.stop().await;
        }
        self.state.ops.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Asks every node for its health each second: placement, cluster statuses
/// (`inaccessible`) and the Data API follow the answers.
async fn watch_node_health(nodes: NodeRegistry, mut shutdown: watch::Receiver<bool>) {
    loop {
        nodes.check_health().await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl AbortOnDrop {
    fn take(mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for worker in &self.0 {
            worker.abort();
        }
    }
}
