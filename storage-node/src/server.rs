//! Runs a node: opens the engine, serves the HTTP API, and stops cleanly on SIGTERM, Ctrl-C,
//! or (when a control plane supervises the node) when its standard input closes, so a node
//! never outlives the process that started it. Both `backtrack-storage-node serve` and
//! `backtrack-service node` run this.

use tokio::io::AsyncReadExt;

use crate::config::NodeConfig;
use crate::engine::Engine;

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
    let app = crate::http::router(engine.clone(), &config.token);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_requested(config.exit_with_stdin))
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn stop_requested(watch_stdin: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    let stdin_closed = async {
        if !watch_stdin {
            return std::future::pending().await;
        }
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => tracing::info!("the supervising process went away"),
    }
    tracing::info!("shutting down");
}
