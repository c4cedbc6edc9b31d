//! `meridian`: the chat client CLI.

use clap::Parser;
use meridian_node::cli::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meridian: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
