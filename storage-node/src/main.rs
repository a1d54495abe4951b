use std::process::ExitCode;

use backtrack_storage_node::config::{check_config, Cli, Command};
use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    let config = match Cli::parse().command {
        Command::Serve(config) => config,
        Command::CheckConfig(config) => {
            return check_config(&Cli::command(), "check-config", config.effective())
        }
    };
    backtrack_storage_node::config::init_tracing();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime starts");
    match runtime.block_on(backtrack_storage_node::server::serve(*config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backtrack-storage-node: {e}");
            ExitCode::FAILURE
        }
    }
}
