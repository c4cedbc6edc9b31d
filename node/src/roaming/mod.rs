//! The roaming system paired with each service center. It connects to the
//! roaming systems of every other region (the full mesh) and carries its
//! service center's requests to other regions, and other regions' requests
//! to its service center, relaying through other regions when a direct link
//! is down. It stores nothing: the outboxes live in the data centers at the
//! sending end, and retry whatever a relay drops.

pub mod business;
pub mod data_service;
pub mod grpc;
pub mod links;
pub mod metrics;
mod probe;

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
use crate::transport;
use links::Links;

#[derive(Clone)]
pub struct Roaming {
    config: watch::Receiver<MeshConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    pub links: Arc<Links>,
}

/// Where a request goes next.
enum Hop {
    /// This region's service center.
    Local(PairClient<Channel>),
    /// Another region's roaming system, `next_hop`, towards `destination`.
    Peer {
        next_hop: String,
        destination: String,
        channel: Channel,
    },
}

impl Roaming {
    /// A roaming system that probes its links with `policy`, until dropped
    /// along with every clone.
    pub fn start(config: watch::Receiver<MeshConfig>, policy: HealthPolicy) -> Self {
        let region = config.borrow().region.clone();
        let roaming = Self {
            links: Arc::new(Links::new(&region, policy)),
            config,
            channels: Arc::default(),
        };
        roaming.links.configure(&roaming.config.borrow());
        tokio::spawn(probe::run(roaming.clone()));
        roaming
    }

    pub fn region(&self) -> String {
        self.config.borrow().region.clone()
    }

    pub fn config(&self) -> MeshConfig {
        self.config.borrow().clone()
    }

    fn channel(&self, url: &str) -> Result<Channel, Error> {
        let mut channels = self.channels.lock().expect("roaming channels");
        if let Some(channel) = channels.get(url) {
            return Ok(channel.clone());
        }
        let channel = transport::channel(url)?;
        channels.insert(url.to_owned(), channel.clone());
        Ok(channel)
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
                let channel = self.channel(&config.service_center.pair)?;
                let client = PairClient::new(channel)
                    .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES);
                Ok(Hop::Local(client))
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
                Ok(Hop::Peer {
                    next_hop,
                    destination: envelope.destination.clone(),
                    channel: self.channel(&endpoint)?,
                })
            }
            Route::Unreachable => Err(Error::unreachable(&envelope.destination)),
        }
    }
}
