//! The roaming system paired with each service center. It connects to the
//! roaming systems of every other region (the full mesh) and carries its
//! service center's requests to other regions, and other regions' requests
//! to its service center, relaying through other regions when a direct link
//! is down. It stores nothing: the outboxes live in the data centers at the
//! sending end, and retry whatever a relay drops.

pub mod business;
pub mod data_service;
mod forward;
pub mod grpc;
pub mod links;
pub mod metrics;
mod probe;
mod replicas;
mod resolve;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::Error;
use crate::ids::is_region_code;
use crate::mesh::health::HealthPolicy;
use crate::mesh::{MeshConfig, Route};
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::Envelope;
use crate::tasks::Tasks;
use crate::transport::{self, Dial};
use crate::trust::origin::{self, Payload};
use crate::trust::{Credentials, Verifier};
use links::Links;

#[derive(Clone)]
pub struct Roaming {
    config: watch::Receiver<MeshConfig>,
    /// Channels by (endpoint, region the server must prove it is).
    channels: Arc<Mutex<HashMap<(String, String), Channel>>>,
    pub links: Arc<Links>,
    credentials: Arc<Credentials>,
    verifier: Arc<Verifier>,
    /// The prober and its heartbeats: stopped by [`Self::shutdown`].
    tasks: Tasks,
    /// Which service-center replica the next call to it starts at.
    turns: Arc<replicas::Turns>,
    /// The service-center replicas found by `serviceCenter.dns`, if it is
    /// set, each with its channel.
    found: Arc<resolve::Found>,
}

/// Who handed this roaming system a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// Its own service center (over the pair port): the request leaves the
    /// region here, so it is signed here.
    ServiceCenter,
    /// The roaming system of this region, proven by its TLS certificate.
    Peer(String),
}

/// Where a request goes next.
enum Hop {
    /// This region's service center: its replicas, in the order this call
    /// tries them (one client each, over one cached channel per URL or per
    /// address found by name).
    Local(Vec<PairClient<Channel>>),
    /// Another region's roaming system, `next_hop`, towards `destination`.
    Peer {
        next_hop: String,
        destination: String,
        channel: Channel,
    },
}

impl Roaming {
    /// A roaming system that probes its links with `policy` until
    /// [`Self::shutdown`].
    pub fn start(
        config: watch::Receiver<MeshConfig>,
        policy: HealthPolicy,
        credentials: Arc<Credentials>,
    ) -> Self {
        Self::start_with(config, policy, credentials, resolve::Resolving::system())
    }

    /// [`Self::start`], finding the service center's replicas by name as
    /// `resolving` says (tests answer lookups themselves).
    fn start_with(
        config: watch::Receiver<MeshConfig>,
        policy: HealthPolicy,
        credentials: Arc<Credentials>,
        resolving: resolve::Resolving,
    ) -> Self {
        let region = config.borrow().region.clone();
        let seal = business::link_state_sealer(credentials.clone());
        let roaming = Self {
            links: Arc::new(Links::new(&region, policy, seal)),
            config,
            channels: Arc::default(),
            verifier: Arc::new(Verifier::new(credentials.clone())),
            credentials,
            tasks: Tasks::new(),
            turns: Arc::default(),
            found: Arc::default(),
        };
        roaming.links.configure(&roaming.config.borrow());
        roaming
            .tasks
            .spawn_until_stopped(probe::run(roaming.clone()));
        let dial = Dial::Region {
            credentials: roaming.credentials.clone(),
            region,
        };
        roaming.tasks.spawn_until_stopped(resolve::run(
            roaming.found.clone(),
            roaming.config.clone(),
            resolving,
            move |url| transport::channel(url, dial.clone()),
        ));
        roaming
    }

    /// Stops the prober and waits for its heartbeats in flight.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    pub fn region(&self) -> String {
        self.config.borrow().region.clone()
    }

    pub fn config(&self) -> MeshConfig {
        self.config.borrow().clone()
    }

    /// A channel to the process at `url`, which must prove it is `region`.
    fn channel(&self, url: &str, region: &str) -> Result<Channel, Error> {
        let key = (url.to_owned(), region.to_owned());
        let mut channels = self.channels.lock().expect("roaming channels");
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let dial = Dial::Region {
            credentials: self.credentials.clone(),
            region: region.to_owned(),
        };
        let channel = transport::channel(url, dial)?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// Whether `region` is a peer in the current configuration.
    pub fn is_peer(&self, region: &str) -> bool {
        self.config.borrow().peer(region).is_some()
    }

    /// Admits a request into this roaming system. One from the service
    /// center leaves the region here and is signed with the region's key;
    /// one from a peer must come from its source, or carry the source's
    /// valid signature (it was relayed). No peer speaks for this region.
    fn admit(
        &self,
        envelope: Option<&mut Envelope>,
        payload: Payload<'_>,
        sender: &Sender,
    ) -> Result<(), Error> {
        let envelope =
            envelope.ok_or_else(|| Error::InvalidArgument("request without an envelope".into()))?;
        let region = self.region();
        match sender {
            Sender::ServiceCenter => {
                envelope.source = region;
                origin::seal(envelope, payload, &self.credentials.current())
            }
            Sender::Peer(peer) => {
                if envelope.source == region {
                    return Err(Error::PermissionDenied(format!(
                        "region {peer} sent a request in the name of region {region}"
                    )));
                }
                if !is_region_code(&envelope.source) {
                    return Err(Error::InvalidArgument(format!(
                        "source {:?} is not a region code",
                        envelope.source
                    )));
                }
                if envelope.path.len() > crate::limits::MAX_HOPS as usize {
                    return Err(Error::InvalidArgument("the path is too long".into()));
                }
                if envelope.source == *peer {
                    return Ok(());
                }
                origin::check(envelope, payload, &self.verifier)
            }
        }
    }

    /// Runs a call to the roaming system of `next_hop`, failing it as soon as
    /// that link is declared down; the sender's outbox then retries it over
    /// the new route at once.
    async fn relay<T>(
        &self,
        next_hop: &str,
        destination: &str,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        let down = self.links.down_signal(next_hop);
        tokio::select! {
            reply = call => reply.map(tonic::Response::into_inner).map_err(|status| transport::call_error(destination, status)),
            () = down.notified() => Err(Error::unreachable(destination)),
        }
    }

    /// Checks the envelope, stamps this hop on it, and picks the next hop.
    fn hop(&self, envelope: Option<&mut Envelope>) -> Result<Hop, Error> {
        let envelope =
            envelope.ok_or_else(|| Error::InvalidArgument("request without an envelope".into()))?;
        if !is_region_code(&envelope.destination) {
            return Err(Error::InvalidArgument(format!(
                "destination {:?} is not a region code",
                envelope.destination
            )));
        }
        let config = self.config();
        match self.links.next_hop(&config, &envelope.destination) {
            Route::Local => {
                // The replicas found by name, or else the listed ones (or
                // `pair` alone).
                let channels = match self.found.channels(&config.service_center) {
                    Some(channels) => channels,
                    None => config
                        .service_center
                        .urls()
                        .iter()
                        .map(|url| self.channel(url, &config.region))
                        .collect::<Result<_, Error>>()?,
                };
                let clients = self
                    .turns
                    .order(channels.len())
                    .into_iter()
                    .map(|i| {
                        PairClient::new(channels[i].clone())
                            .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
                            .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
                    })
                    .collect();
                Ok(Hop::Local(clients))
            }
            Route::Next { next_hop, endpoint } => {
                if envelope.hops_left == 0 || envelope.path.contains(&config.region) {
                    return Err(Error::unreachable(&envelope.destination));
                }
                // Routes are loop-free, but regions whose link state differs
                // for a moment may disagree; rather than send the request
                // back where it came from, take the direct link if enabled.
                let (next_hop, endpoint) = if envelope.path.contains(&next_hop) {
                    match config.peer(&envelope.destination) {
                        Some(peer) if peer.enabled => (peer.region.clone(), peer.endpoint.clone()),
                        _ => return Err(Error::unreachable(&envelope.destination)),
                    }
                } else {
                    (next_hop, endpoint)
                };
                envelope.hops_left -= 1;
                envelope.path.push(config.region.clone());
                let channel = self.channel(&endpoint, &next_hop)?;
                Ok(Hop::Peer {
                    next_hop,
                    destination: envelope.destination.clone(),
                    channel,
                })
            }
            Route::Unreachable => Err(Error::unreachable(&envelope.destination)),
        }
    }
}
