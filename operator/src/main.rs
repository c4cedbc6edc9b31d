//! The `meridian-operator` binary: parses arguments and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_operator::controller::{self, RunArgs};
use meridian_operator::local::{self, LocalArgs};
use tracing_subscriber::EnvFilter;

/// Meridian's operator: deploys regions from Region and RegionLink objects.
#[derive(Debug, Parser)]
#[command(name = "meridian-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the Region and RegionLink CustomResourceDefinitions as YAML.
    Crd,
    /// Run the controller: deploy this cluster's Regions and keep the mesh configured.
    Run(Box<RunArgs>),
    /// Run the regions of manifest files as processes on this machine.
    Local(LocalArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, so that `crd > crds.yaml` captures only the YAML.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Crd => {
            print!("{}", meridian_crds::crd_yaml());
            Ok(())
        }
        Command::Run(args) => controller::run(*args).await,
        Command::Local(args) => local::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
