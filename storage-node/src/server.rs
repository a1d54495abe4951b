//! Runs a node: opens the engine, serves the HTTP API, and stops cleanly on SIGTERM, Ctrl-C,
//! or (when a control plane supervises the node) when its standard input closes or its parent
//! process goes away, so a node never outlives the process that started it. Both
//! `backtrack-storage-node serve` and `backtrack-service node` run this.
//!
//! Stopping interrupts the statements still running and gives the requests in flight a few
//! seconds to answer; then the node stops whatever is left (every acknowledged commit is
//! durable already, so nothing is lost by not waiting longer).

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::config::NodeConfig;
use crate::engine::Engine;

/// How long requests in flight get to finish once the node is asked to stop.
const DRAIN: Duration = Duration::from_secs(5);
/// How often a supervised node checks that its parent is still there.
const PARENT_CHECK: Duration = Duration::from_millis(500);

pub async fn serve(config: NodeConfig) -> Result<(), String> {
    config.validate()?;
    let engine_config = config.engine();
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    // On stdout, so a supervisor or a test learns the port when it asked for port 0.
    println!(
        "backtrack-storage-node listening on http://{}:{port}",
        config.listen.ip()
    );
    let pg = pg_listener(&config).await?;
    let pg_port = pg.local_addr().map_err(|e| e.to_string())?.port();
    tracing::info!(port = pg_port, "serving the PostgreSQL protocol");
    let app = crate::http::router(engine.clone(), &config.token, Some(pg_port));
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let pg_served = tokio::spawn(crate::pg::serve(
        pg,
        engine.clone(),
        config.pg()?,
        stopped.clone(),
    ));
    let signal = {
        let engine = engine.clone();
        async move {
            stop_requested(config.exit_with_stdin).await;
            // Runaway statements would otherwise hold the drain open for their whole run.
            engine.interrupt_all();
            stopping.send_replace(true);
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let drained = async {
        let _ = stopped.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| e.to_string())?,
        _ = drained => tracing::warn!("requests still running after {DRAIN:?}; stopping anyway"),
    }
    engine.interrupt_all();
    // Until every PostgreSQL session was told the node stops (57P01), or a few seconds.
    let _ = pg_served.await;
    tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// The PostgreSQL listener: on the configured port, or for port 0 on the port this data
/// directory's node used before (recorded in `pg-port`) when it is free, else a new one.
async fn pg_listener(config: &NodeConfig) -> Result<tokio::net::TcpListener, String> {
    let recorded = config.data_dir.join("pg-port");
    let mut address = config.pg_listen;
    if address.port() == 0 {
        if let Some(port) = std::fs::read_to_string(&recorded)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            address.set_port(port);
            if let Ok(listener) = tokio::net::TcpListener::bind(address).await {
                return Ok(listener);
            }
            tracing::warn!(
                port,
                "the PostgreSQL port of the last run is taken; taking another"
            );
            address.set_port(0);
        }
    }
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for PostgreSQL: {e}"))?;
    if config.pg_listen.port() == 0 {
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        crate::fsutil::write_atomically(&recorded, port.to_string().as_bytes())
            .map_err(|e| format!("cannot record the PostgreSQL port: {e}"))?;
    }
    Ok(listener)
}

/// Runs `serve` on a runtime of its own, and does not wait, once it returns, for engine work
/// still running on blocking threads (a statement interrupted too late): the process is
/// stopping, and what is durable is on disk.
pub fn run(config: NodeConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("no tokio runtime: {e}"))?;
    let result = runtime.block_on(serve(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn stop_requested(supervised: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    let supervisor_gone = async {
        if !supervised {
            return std::future::pending().await;
        }
        tokio::select! {
            _ = stdin_closed() => {}
            _ = parent_changed() => {}
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = supervisor_gone => tracing::info!("the supervising process went away"),
    }
    tracing::info!("shutting down");
}

async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Resolves when this process is given another parent: the one that started it died (even
/// if something else still holds the other end of its standard input).
async fn parent_changed() {
    let parent = std::os::unix::process::parent_id();
    loop {
        tokio::time::sleep(PARENT_CHECK).await;
        if std::os::unix::process::parent_id() != parent {
            return;
        }
    }
}
