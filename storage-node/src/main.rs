use std::process::ExitCode;

use backtrack_storage_node::config::{Cli, Command};
use clap::Parser;

fn main() -> ExitCode {
    let Command::Serve(config) = Cli::parse().command;
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
