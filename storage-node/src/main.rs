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
    match backtrack_storage_node::server::run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backtrack-storage-node: {e}");
            ExitCode::FAILURE
        }
    }
}
