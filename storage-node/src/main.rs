use std::process::ExitCode;

use backtrack_storage_node::config::{Cli, Command, NodeConfig};
use backtrack_storage_node::engine::Engine;
use clap::Parser;

fn main() -> ExitCode {
    let Command::Serve(config) = Cli::parse().command;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    match runtime.block_on(serve(*config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backtrack-storage-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: NodeConfig) -> Result<(), String> {
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
    println!(
        "backtrack-storage-node listening on http://{}:{port}",
        config.listen.ip()
    );
    let app = backtrack_storage_node::http::router(engine.clone(), &config.token);
    axum::serve(listener, app)
        .with_graceful_shutdown(wait_for_signal())
        .await
        .map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
