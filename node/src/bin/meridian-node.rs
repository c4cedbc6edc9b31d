//! `meridian-node`: a region's service center, its roaming system, or both.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use meridian_node::mesh::config::watch_file;
use meridian_node::server::{Node, RoamingListeners, Role, ServiceCenterListeners};
use meridian_node::service_center::Limits;
use meridian_node::service_center::data_center::postgres::Settings;
use meridian_node::telemetry::traces::{self, Export};
use meridian_node::transport::{ClientAuth, ServerTls};
use meridian_node::trust::server_cert::ServerCert;
use meridian_node::trust::{CredentialFiles, Credentials};
use tokio::net::TcpListener;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    ServiceCenter,
    Roaming,
    Both,
}

impl RoleArg {
    /// As the flag spells it.
    fn as_str(self) -> &'static str {
        match self {
            RoleArg::ServiceCenter => "service-center",
            RoleArg::Roaming => "roaming",
            RoleArg::Both => "both",
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Meridian's node: a region's service center and roaming system"
)]
struct Args {
    #[arg(long, value_enum, env = "MERIDIAN_ROLE", default_value = "both")]
    role: RoleArg,
    /// The mesh configuration file; changes are picked up without a restart.
    #[arg(long, env = "MERIDIAN_CONFIG")]
    config: PathBuf,
    /// Where the service center keeps its data center.
    #[arg(long, env = "MERIDIAN_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Keep the data center on PostgreSQL instead: a file holding its
    /// connection string (a mounted Secret's key). Several service-center
    /// replicas of one region may share it.
    #[arg(long, env = "MERIDIAN_POSTGRES_URL_FILE")]
    postgres_url_file: Option<PathBuf>,
    /// PEM CA certificates of the PostgreSQL server: with them the
    /// connection requires TLS and checks the server's certificate and name.
    #[arg(
        long,
        env = "MERIDIAN_POSTGRES_CA_FILE",
        requires = "postgres_url_file"
    )]
    postgres_ca_file: Option<PathBuf>,
    /// The service center's client API.
    #[arg(long, env = "MERIDIAN_LISTEN_CLIENT", default_value = "127.0.0.1:7400")]
    listen_client: SocketAddr,
    /// The service center's local-pair API (called by its roaming system).
    #[arg(long, env = "MERIDIAN_LISTEN_PAIR", default_value = "127.0.0.1:7401")]
    listen_pair: SocketAddr,
    /// The roaming system's local-pair API (called by its service center).
    #[arg(
        long,
        env = "MERIDIAN_LISTEN_ROAMING_PAIR",
        default_value = "127.0.0.1:7402"
    )]
    listen_roaming_pair: SocketAddr,
    /// The roaming system's peer API (called by other regions).
    #[arg(long, env = "MERIDIAN_LISTEN_PEER", default_value = "127.0.0.1:7443")]
    listen_peer: SocketAddr,
    /// A plaintext port that answers only the gRPC health check (for
    /// Kubernetes' probes); off unless given.
    #[arg(long, env = "MERIDIAN_LISTEN_PROBE")]
    listen_probe: Option<SocketAddr>,
    /// /metrics of the roles this node runs, and the roaming system's /mesh
    /// (plain HTTP); off unless given.
    #[arg(long, env = "MERIDIAN_LISTEN_METRICS")]
    listen_metrics: Option<SocketAddr>,
    /// The mesh CA bundle (PEM) that every pair and peer connection is
    /// verified against. Files are re-read when they change.
    #[arg(long, env = "MERIDIAN_TLS_CA")]
    tls_ca: PathBuf,
    /// This region's certificate (PEM), issued by the mesh CA.
    #[arg(long, env = "MERIDIAN_TLS_CERT")]
    tls_cert: PathBuf,
    /// This region's key (PEM, ECDSA P-256); it also signs what the region
    /// sends through other regions.
    #[arg(long, env = "MERIDIAN_TLS_KEY")]
    tls_key: PathBuf,
    /// Serve the client API over TLS too, with the region's certificate.
    #[arg(long, env = "MERIDIAN_CLIENT_TLS", conflicts_with = "client_tls_cert")]
    client_tls: bool,
    /// Serve the client API over TLS with this certificate (PEM) instead,
    /// with --client-tls-key. Re-read when it changes.
    #[arg(long, env = "MERIDIAN_CLIENT_TLS_CERT", requires = "client_tls_key")]
    client_tls_cert: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_CLIENT_TLS_KEY", requires = "client_tls_cert")]
    client_tls_key: Option<PathBuf>,
    /// Export spans of each message's path over OTLP/gRPC to this
    /// collector (`http://host:4317`); off unless given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// The most live subscriptions the service center holds at once; one
    /// more is refused with RESOURCE_EXHAUSTED. Each costs memory
    /// (BENCHMARKS.md measures an idle one), so size it to the process's.
    #[arg(
        long,
        env = "MERIDIAN_MAX_SUBSCRIPTIONS",
        value_name = "N",
        default_value_t = meridian_node::limits::MAX_SUBSCRIPTIONS,
        value_parser = max_subscriptions
    )]
    max_subscriptions: usize,
    /// Stop when the parent process goes away (used by local mode).
    #[arg(long)]
    exit_with_parent: bool,
}

/// `--max-subscriptions`: a whole number, at least 1.
fn max_subscriptions(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number of subscriptions of at least 1 (the default is {})",
            meridian_node::limits::MAX_SUBSCRIPTIONS
        )),
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let role = match args.role {
        RoleArg::ServiceCenter => Role::ServiceCenter,
        RoleArg::Roaming => Role::Roaming,
        RoleArg::Both => Role::Both,
    };
    let mesh = watch_file(args.config.clone())?;
    let region = mesh.borrow().region.clone();
    // Until dropped at the end of main, when the last spans are exported.
    let _tracing = traces::init(args.otlp_endpoint.as_deref().map(|endpoint| Export {
        endpoint,
        region: &region,
        role: args.role.as_str(),
    }))?;
    let credentials = Credentials::load(CredentialFiles {
        ca: args.tls_ca,
        cert: args.tls_cert,
        key: args.tls_key,
    })?;
    let service_center = if role.runs_service_center() {
        Some(ServiceCenterListeners {
            client: bind(args.listen_client, "client API").await?,
            pair: bind(args.listen_pair, "service center's pair API").await?,
        })
    } else {
        None
    };
    let roaming = if role.runs_roaming() {
        Some(RoamingListeners {
            pair: bind(args.listen_roaming_pair, "roaming system's pair API").await?,
            peer: bind(args.listen_peer, "peer API").await?,
        })
    } else {
        None
    };
    let node = Node {
        mesh,
        data_dir: args.data_dir,
        postgres: args.postgres_url_file.map(|url_file| Settings {
            url_file,
            ca_file: args.postgres_ca_file,
        }),
        service_center,
        roaming,
        health: Default::default(),
        client_tls: match (args.client_tls_cert, args.client_tls_key) {
            (Some(cert), Some(key)) => {
                let cert = ServerCert::load(cert, key)?;
                cert.watch();
                Some(ServerTls::Cert(cert))
            }
            _ => args
                .client_tls
                .then(|| ServerTls::Region(credentials.clone(), ClientAuth::None)),
        },
        credentials,
        probe: match args.listen_probe {
            Some(addr) => Some(bind(addr, "health probe").await?),
            None => None,
        },
        metrics: match args.listen_metrics {
            Some(addr) => Some(bind(addr, "metrics").await?),
            None => None,
        },
        limits: Limits {
            max_subscriptions: args.max_subscriptions,
        },
    };
    let exit_with_parent = args.exit_with_parent;
    node.run(async move { stop_signal(exit_with_parent).await })
        .await?;
    Ok(())
}

/// SIGTERM, Ctrl-C, or (when asked) the parent process going away.
async fn stop_signal(exit_with_parent: bool) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if exit_with_parent && std::os::unix::process::parent_id() != parent {
                tracing::warn!("parent process went away; stopping");
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        () = orphaned => {}
    }
    tracing::info!("stopping");
}
