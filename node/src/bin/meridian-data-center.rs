//! `meridian-data-center`: moves a region's data center from its SQLite
//! file to PostgreSQL (README, "Moving a region from SQLite to
//! PostgreSQL"). The work is in `service_center::data_center::transfer`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meridian_node::service_center::data_center::postgres::Settings;
use meridian_node::service_center::data_center::transfer;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Exports a region's SQLite data center to a dump, and imports a dump into PostgreSQL"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Writes everything the SQLite data center holds to a new dump file
    /// (0600: it holds password and token hashes). The region's service
    /// center must be stopped: the export takes its lock.
    Export {
        /// The service center's data directory (holding data-center.sqlite).
        #[arg(long)]
        data_dir: PathBuf,
        /// The dump to write; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Loads a dump into an empty PostgreSQL database in one transaction,
    /// first bringing its schema up to date.
    Import {
        /// The dump `export` wrote.
        #[arg(long = "in")]
        input: PathBuf,
        /// A file holding the connection string, as the service center's
        /// --postgres-url-file.
        #[arg(long)]
        postgres_url_file: PathBuf,
        /// PEM CA certificates of the server, as the service center's
        /// --postgres-ca-file: with them the connection requires TLS.
        #[arg(long)]
        postgres_ca_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().command {
        Command::Export { data_dir, out } => transfer::export(&data_dir, &out).map(|counts| {
            print!("{counts}");
            println!("exported {} rows to {}", counts.total(), out.display());
        }),
        Command::Import {
            input,
            postgres_url_file,
            postgres_ca_file,
        } => {
            let settings = Settings {
                url_file: postgres_url_file,
                ca_file: postgres_ca_file,
            };
            transfer::import(&input, &settings).map(|counts| {
                print!("{counts}");
                println!("imported {} rows from {}", counts.total(), input.display());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("meridian-data-center: {err}");
            ExitCode::FAILURE
        }
    }
}
