//! Local storage nodes for the embedded setup: `backtrack-service serve` without `--node`
//! starts its storage nodes as child processes of its own binary (`backtrack-service node`),
//! on free local ports, with their volumes under DATA_DIR/nodes/N.
//!
//! Each child has a supervisor task: it learns the child's address from the child's first
//! line of output, restarts the child if it dies (after 0.3 s, doubling up to 10 s while it
//! keeps dying; a child that stayed up 30 s starts over at 0.3 s), and stops it on shutdown by
//! closing its standard input, which the node watches. If this process dies outright, the
//! children see their input close (and their parent change) and stop too, interrupting any
//! statement still running.
//!
//! A node that cannot start yet because its data directory is still held (the previous
//! process's node is finishing its stop) is tried again until [`START_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backtrack_storage_node::fsutil;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::NodeRegistry;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What each local node is started with.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub token: String,
    pub statement_timeout_ms: u64,
}

/// The delays between restarts of a node that keeps failing: 0.3 s, doubling each time up to
/// 10 s, and back to 0.3 s once the node has stayed up for [`Backoff::HEALTHY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Backoff::FIRST,
        }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(300);
    pub const MAX: Duration = Duration::from_secs(10);
    /// A node up this long had recovered: its next crash is treated as a first one.
    pub const HEALTHY: Duration = Duration::from_secs(30);

    /// The delay before the next start, after a run that lasted `up_for` (`None`: it did not
    /// start at all).
    pub fn after(&mut self, up_for: Option<Duration>) -> Duration {
        if up_for.is_some_and(|up| up >= Backoff::HEALTHY) {
            self.next = Backoff::FIRST;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }
}

/// The names local nodes have in the metadata.
pub fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("local-{i}")).collect()
}

/// The running local nodes and their supervisors.
pub struct LocalNodes {
    stop: watch::Sender<bool>,
    supervisors: Vec<JoinHandle<()>>,
}

impl LocalNodes {
    /// Starts one node per name, under `data_dir/nodes/N`, and returns once each has said
    /// where it listens (their addresses are then in `registry`).
    pub async fn start(
        data_dir: &Path,
        names: &[String],
        settings: NodeSettings,
        registry: NodeRegistry,
    ) -> Result<LocalNodes, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let (stop, stopped) = watch::channel(false);
        let mut supervisors = Vec::new();
        let mut started = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (first, first_start) = oneshot::channel();
            let node = Supervised {
                name: name.clone(),
                exe: exe.clone(),
                dir: data_dir.join("nodes").join(i.to_string()),
                settings: settings.clone(),
                registry: registry.clone(),
            };
            supervisors.push(tokio::spawn(node.supervise(stopped.clone(), first)));
            started.push(first_start);
        }
        let nodes = LocalNodes { stop, supervisors };
        for (name, first) in names.iter().zip(started) {
            match first.await {
                Ok(Ok(url)) => tracing::info!(node = %name, %url, "local storage node started"),
                Ok(Err(e)) => {
                    nodes.stop().await;
                    return Err(format!("storage node {name} did not start: {e}"));
                }
                Err(_) => {
                    nodes.stop().await;
                    return Err(format!("storage node {name} did not start"));
                }
            }
        }
        Ok(nodes)
    }

    /// Stops every node and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for supervisor in self.supervisors {
            let _ = supervisor.await;
        }
    }
}

struct Supervised {
    name: String,
    exe: PathBuf,
    dir: PathBuf,
    settings: NodeSettings,
    registry: NodeRegistry,
}

impl Supervised {
    async fn supervise(
        self,
        mut stop: watch::Receiver<bool>,
        first: oneshot::Sender<Result<String, String>>,
    ) {
        let mut first = Some(first);
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let up_for = match self.spawn().await {
                Ok((mut child, url)) => {
                    self.registry.set_url(&self.name, &url);
                    self.registry.set_healthy(&self.name, true);
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(url));
                    }
                    let up_since = Instant::now();
                    // Held here: tokio's wait() would close the child's input, and a closed
                    // input tells the node to stop.
                    let input = child.stdin.take();
                    tokio::select! {
                        status = child.wait() => {
                            self.registry.set_healthy(&self.name, false);
                            tracing::warn!(node = %self.name, ?status, "local storage node exited; restarting it");
                        }
                        _ = stopped(&mut stop) => {
                            drop(input);
                            stop_child(&self.name, child).await;
                            return;
                        }
                    }
                    Some(up_since.elapsed())
                }
                Err(e) => {
                    if started.elapsed() > START_TIMEOUT {
                        if let Some(first) = first.take() {
                            let _ = first.send(Err(e));
                            return;
                        }
                    }
                    tracing::error!(node = %self.name, error = %e, "cannot start local storage node yet");
                    None
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff.after(up_for)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }

    /// Starts the node and reads the address it announces.
    async fn spawn(&self) -> Result<(Child, String), String> {
        fsutil::create_private_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let mut child = Command::new(&self.exe)
            .arg("node")
            .args(["--listen", "127.0.0.1:0", "--exit-with-stdin"])
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--statement-timeout-ms")
            .arg(self.settings.statement_timeout_ms.to_string())
            .env("BACKTRACK_NODE_TOKEN", &self.settings.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(START_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => return Err(format!("it exited: {:?}", child.wait().await)),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "it did not announce its address within {START_TIMEOUT:?}"
                ))
            }
        };
        let url = line
            .strip_prefix("backtrack-storage-node listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_string();
        Ok((child, url))
    }
}

/// Resolves once stopping is asked for (or the asker is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Waits for a node whose input was closed to stop, and kills it if it does not in time.
async fn stop_child(name: &str, mut child: Child) {
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => tracing::info!(node = name, "local storage node stopped"),
        Err(_) => {
            tracing::warn!(
                node = name,
                "local storage node did not stop in time; killing it"
            );
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_a_third_of_a_second_to_ten_and_reset_after_a_healthy_run() {
        let mut backoff = Backoff::default();
        let crash = Some(Duration::from_millis(100));
        let delays: Vec<u64> = (0..9)
            .map(|_| backoff.after(crash).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [300, 600, 1200, 2400, 4800, 9600, 10_000, 10_000, 10_000]
        );
        // A start that failed outright counts as a crash.
        assert_eq!(backoff.after(None), Duration::from_secs(10));
        // A node that stayed up a while and then crashed is restarted at once.
        assert_eq!(
            backoff.after(Some(Duration::from_secs(31))),
            Duration::from_millis(300)
        );
        assert_eq!(backoff.after(crash), Duration::from_millis(600));
    }
}
