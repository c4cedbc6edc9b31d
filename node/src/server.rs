//! Builds a node from its typed configuration and serves it on listeners the
//! caller bound, until the shutdown future completes. Tests run it on
//! `127.0.0.1:0`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::Error;
use crate::mesh::MeshConfig;
use crate::mesh::health::HealthPolicy;
use crate::roaming::{self, Roaming};
use crate::service_center::data_center::{DataCenter, postgres};
use crate::service_center::roaming_client::RoamingClient;
use crate::service_center::{self, BusinessCenter};
use crate::tasks::Tasks;
use crate::telemetry;
use crate::transport::{self, ClientAuth, ServerTls};
use crate::trust::Credentials;

/// What a node process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    ServiceCenter,
    Roaming,
    Both,
}

impl Role {
    pub fn runs_service_center(self) -> bool {
        matches!(self, Role::ServiceCenter | Role::Both)
    }

    pub fn runs_roaming(self) -> bool {
        matches!(self, Role::Roaming | Role::Both)
    }
}

/// The service center's listeners: clients, and its roaming system.
pub struct ServiceCenterListeners {
    pub client: TcpListener,
    pub pair: TcpListener,
}

/// The roaming system's listeners: its service center, and the peers.
pub struct RoamingListeners {
    pub pair: TcpListener,
    pub peer: TcpListener,
}

pub struct Node {
    pub mesh: watch::Receiver<MeshConfig>,
    /// Where the data center's file lives.
    pub data_dir: PathBuf,
    /// The region's PostgreSQL, when its data center is there instead of
    /// in a file (shared by several service-center replicas).
    pub postgres: Option<postgres::Settings>,
    pub service_center: Option<ServiceCenterListeners>,
    pub roaming: Option<RoamingListeners>,
    /// How the roaming system probes and judges its links.
    pub health: HealthPolicy,
    /// The region's identity: its pair and peer ports serve mutual TLS
    /// with it, and the roaming system signs with its key.
    pub credentials: Arc<Credentials>,
    /// How the client API serves TLS: with the region's certificate, with
    /// one of its own, or (`None`) not at all.
    pub client_tls: Option<ServerTls>,
    /// A plaintext port answering only grpc.health.v1, for Kubernetes'
    /// gRPC probes (which speak no TLS). It answers once the node serves:
    /// a roaming system is SERVING at once; a service center is NOT_SERVING
    /// until a call to its own roaming system (over the pair port's mutual
    /// TLS) has succeeded, so that it turns ready only when its region can
    /// reach others. That holds once reached: a service center that loses
    /// its roaming system later keeps serving its own users (local first),
    /// so it stays SERVING.
    pub probe: Option<TcpListener>,
    /// `/metrics` of every role the node runs (and the roaming system's
    /// `/mesh`) over plain HTTP, when wanted.
    pub metrics: Option<TcpListener>,
    /// The service center's bounds its operator sets (`--max-subscriptions`).
    pub limits: service_center::Limits,
}

/// How often a service center whose PostgreSQL cannot be reached tries again.
const DATA_CENTER_RETRY: Duration = Duration::from_secs(1);

/// Opens the data center: the SQLite file in `data_dir` (waiting while
/// another process holds it), or the PostgreSQL of `postgres` (waiting
/// while it cannot be reached: it may be starting too). `None` when
/// `stopped` completes first.
async fn open_data_center(
    data_dir: PathBuf,
    postgres: Option<postgres::Settings>,
    stopped: impl Future<Output = ()>,
) -> Result<Option<DataCenter>, Error> {
    let opening = async move {
        let Some(settings) = postgres else {
            crate::service_center::data_center::private_dir(&data_dir).map_err(|e| {
                Error::FailedPrecondition(format!("data directory {}: {e}", data_dir.display()))
            })?;
            let db = data_dir.join("data-center.sqlite");
            return tokio::task::spawn_blocking(move || DataCenter::open(&db))
                .await
                .map_err(|e| Error::Internal(format!("opening the data center: {e}")))?;
        };
        loop {
            let settings = settings.clone();
            match tokio::task::spawn_blocking(move || DataCenter::connect(&settings))
                .await
                .map_err(|e| Error::Internal(format!("opening the data center: {e}")))?
            {
                Err(Error::Unavailable(err)) => {
                    tracing::warn!(%err, "the data center's PostgreSQL cannot be reached; trying again");
                    tokio::time::sleep(DATA_CENTER_RETRY).await;
                }
                opened => return opened,
            }
        }
    };
    tokio::select! {
        opened = opening => opened.map(Some),
        () = stopped => Ok(None),
    }
}

/// How often a service center that waits for its roaming system asks again.
const PAIRING_RETRY: Duration = Duration::from_millis(200);
/// How long one such call may take.
const PAIRING_TIMEOUT: Duration = Duration::from_secs(2);

/// The parts of a running node that own background tasks.
#[derive(Default)]
struct Parts {
    roaming: Option<Roaming>,
    center: Option<BusinessCenter>,
}

impl Node {
    /// Serves until `shutdown` completes. Before it returns, every task the
    /// node started has stopped: the servers, the outbox workers, the
    /// prober, subscriptions and reloads — so the data center (and its
    /// lock) is released, and nothing of the node keeps running.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let tasks = Tasks::new();
        let mut parts = Parts::default();
        let served = self.serve(shutdown, &tasks, &mut parts).await;
        stop_parts(parts.center.as_ref(), parts.roaming.as_ref()).await;
        tasks.shutdown().await;
        served
    }

    async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        tasks: &Tasks,
        parts: &mut Parts,
    ) -> Result<(), Error> {
        let (stop_tx, stop_rx) = watch::channel(false);
        tasks.spawn_until_stopped(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let region = self.mesh.borrow().region.clone();
        if self.credentials.identity().region() != Some(region.as_str()) {
            return Err(Error::FailedPrecondition(format!(
                "the certificate names {}, but this node serves region {region}",
                self.credentials.identity()
            )));
        }
        tasks.spawn_until_stopped(self.credentials.reloads());
        let credentials = self.credentials;
        let mutual = |listener| {
            transport::incoming(
                listener,
                ServerTls::Region(credentials.clone(), ClientAuth::Required),
            )
        };
        let mut servers = tokio::task::JoinSet::new();
        // The service center's link to its roaming system, for readiness.
        let mut pairing = None;
        let mut registry = telemetry::metrics::registry(&region);
        let mut more_routes = axum::Router::new();
        let mut center_metrics = None;

        if let Some(listeners) = self.roaming {
            let roaming = Roaming::start(self.mesh.clone(), self.health, credentials.clone());
            parts.roaming = Some(roaming.clone());
            roaming::metrics::register(&mut registry, roaming.clone());
            more_routes = more_routes.merge(roaming::metrics::router(roaming.clone()));
            tracing::info!(%region, pair = %local(&listeners.pair), peer = %local(&listeners.peer), "roaming system serving");
            servers.spawn(
                transport::server()
                    .add_service(roaming::grpc::pair_service(roaming.clone()))
                    .serve_with_incoming_shutdown(mutual(listeners.pair), stopped()),
            );
            servers.spawn(
                transport::server()
                    .add_service(roaming::grpc::data_service(roaming.clone()))
                    .add_service(roaming::grpc::business_service(roaming.clone()))
                    .add_service(roaming::grpc::admin_service(roaming))
                    .serve_with_incoming_shutdown(mutual(listeners.peer), stopped()),
            );
        }

        if let Some(listeners) = self.service_center {
            let Some(dc) = open_data_center(self.data_dir, self.postgres, stopped()).await? else {
                tracing::info!(%region, "stopped while waiting for the data center");
                return Ok(());
            };
            let link = Arc::new(RoamingClient::new(self.mesh.clone(), credentials.clone()));
            pairing = Some(link.clone());
            let observed = dc.clone();
            let center = BusinessCenter::start_with(dc, link, self.limits).await?;
            parts.center = Some(center.clone());
            center.metrics().register(&mut registry);
            center_metrics = Some((center.metrics().clone(), observed));
            tracing::info!(%region, client = %local(&listeners.client), pair = %local(&listeners.pair), "service center serving");
            let client_api = transport::server()
                .add_service(service_center::grpc::client_service(center.clone()))
                .add_service(crate::reflection::v1()?)
                .add_service(crate::reflection::v1alpha()?);
            if let Some(tls) = self.client_tls {
                let incoming = transport::incoming(listeners.client, tls);
                servers.spawn(client_api.serve_with_incoming_shutdown(incoming, stopped()));
            } else {
                let incoming = transport::plain_incoming(listeners.client);
                servers.spawn(client_api.serve_with_incoming_shutdown(incoming, stopped()));
            }
            servers.spawn(
                transport::server()
                    .add_service(service_center::grpc::pair_service(center))
                    .serve_with_incoming_shutdown(mutual(listeners.pair), stopped()),
            );
        }

        if let Some(metrics) = self.metrics {
            tracing::info!(%region, metrics = %local(&metrics), "metrics serving");
            let scrape = telemetry::http::Scrape {
                registry,
                center: center_metrics,
                mesh: self.mesh.clone(),
            };
            tasks.spawn_until_stopped(async move {
                if let Err(err) = telemetry::http::serve(metrics, scrape, more_routes).await {
                    tracing::error!(%err, "metrics server failed");
                }
            });
        }

        if let Some(probe) = self.probe {
            tracing::info!(%region, probe = %local(&probe), "health probe serving");
            let (reporter, health) = tonic_health::server::health_reporter();
            if let Some(link) = pairing {
                reporter
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                tasks.spawn_until_stopped(async move {
                    link.wait_until_paired(PAIRING_RETRY, PAIRING_TIMEOUT).await;
                    reporter
                        .set_service_status("", ServingStatus::Serving)
                        .await;
                });
            }
            servers.spawn(
                tonic::transport::Server::builder()
                    .add_service(health)
                    .serve_with_incoming_shutdown(transport::plain_incoming(probe), stopped()),
            );
        }

        let drained = async {
            while let Some(result) = servers.join_next().await {
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => return Err(Error::Internal(format!("server failed: {err}"))),
                    Err(err) => return Err(Error::Internal(format!("server task failed: {err}"))),
                }
            }
            Ok(())
        };
        // A graceful stop of the servers waits for open streams, and a
        // subscription's stream ends only on its service center's stop: so
        // the parts are stopped as soon as the stop is asked for, alongside.
        let (center, roaming) = (parts.center.clone(), parts.roaming.clone());
        let stopping = async move {
            stopped().await;
            stop_parts(center.as_ref(), roaming.as_ref()).await;
        };
        tokio::pin!(drained);
        let served = tokio::select! {
            served = &mut drained => served,
            () = stopping => drained.await,
        };
        tracing::info!(%region, "node stopped");
        served
    }
}

async fn stop_parts(center: Option<&BusinessCenter>, roaming: Option<&Roaming>) {
    if let Some(center) = center {
        center.shutdown().await;
    }
    if let Some(roaming) = roaming {
        roaming.shutdown().await;
    }
}

fn local(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into())
}
