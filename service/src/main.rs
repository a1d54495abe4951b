use std::process::ExitCode;

use backtrack_service::config::{Cli, Command};
use backtrack_service::startup::App;
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(config) => backtrack_storage_node::config::check_config(
            &Cli::command(),
            "check-config",
            config.effective(),
        ),
        Command::Openapi => {
            print!("{}", backtrack_service::openapi::document_json());
            ExitCode::SUCCESS
        }
        Command::Node(config) => {
            backtrack_storage_node::config::init_tracing();
            match backtrack_storage_node::server::run(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("backtrack-service node: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(config) => {
            backtrack_storage_node::config::init_tracing();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
            match runtime.block_on(serve(*config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("backtrack-service: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: backtrack_service::config::Config) -> Result<(), String> {
    let listen = config.listen;
    let app = App::build(config).await?;
    let stop = app.shutdown_handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.shutdown();
    });
    // On stdout, so a supervisor or a test can learn the port when it asked for port 0.
    println!(
        "backtrack-service listening on http://{}:{}",
        listen.ip(),
        app.port()
    );
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM can be handled");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
