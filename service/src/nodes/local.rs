//! Local storage nodes for the embedded setup: `backtrack-service serve` without `--node`
//! starts its storage nodes as child processes of its own binary (`backtrack-service node`),
//! on free local ports, with their volumes under DATA_DIR/nodes/N.
//!
//! Each child has a supervisor task: it learns the child's address from the child's first
//! line of output, restarts the child (with backoff) if it dies, and stops it on shutdown by
//! closing its standard input, which the node watches. If this process dies outright, the
//! children see their input close and stop too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::NodeRegistry;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
        token: &str,
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
                token: token.to_string(),
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
    token: String,
    registry: NodeRegistry,
}

impl Supervised {
    async fn supervise(
        self,
        mut stop: watch::Receiver<bool>,
        first: oneshot::Sender<Result<String, String>>,
    ) {
        let mut first = Some(first);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.spawn().await {
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
                            if up_since.elapsed() > Duration::from_secs(60) {
                                backoff = FIRST_BACKOFF;
                            }
                        }
                        _ = stopped(&mut stop) => {
                            drop(input);
                            stop_child(&self.name, child).await;
                            return;
                        }
                    }
                }
                Err(e) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(e));
                        return;
                    }
                    tracing::error!(node = %self.name, error = %e, "cannot restart local storage node");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Starts the node and reads the address it announces.
    async fn spawn(&self) -> Result<(Child, String), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let mut child = Command::new(&self.exe)
            .arg("node")
            .args(["--listen", "127.0.0.1:0", "--exit-with-stdin"])
            .arg("--data-dir")
            .arg(&self.dir)
            .env("BACKTRACK_NODE_TOKEN", &self.token)
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
