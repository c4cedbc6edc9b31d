//! The roaming system paired with each service center. It connects to the
//! roaming systems of every other region (the full mesh) and carries its
//! service center's requests to other regions, and other regions' requests
//! to its service center. It stores nothing: the outboxes live in the data
//! centers at the sending end.

pub mod business;
pub mod data_service;
pub mod grpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tonic::transport::Channel;

use crate::Error;
use crate::ids::is_region_code;
use crate::mesh::{MeshConfig, Route, next_hop};
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::Envelope;
use crate::transport;

#[derive(Clone)]
pub struct Roaming {
    config: watch::Receiver<MeshConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// Where a request goes next.
enum Hop {
    /// This region's service center.
    Local(PairClient<Channel>),
    /// Another region's roaming system.
    Peer { region: String, channel: Channel },
}

impl Roaming {
    pub fn new(config: watch::Receiver<MeshConfig>) -> Self {
        Self {
            config,
            channels: Arc::default(),
        }
    }

    pub fn region(&self) -> String {
        self.config.borrow().region.clone()
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
        let config = self.config.borrow().clone();
        match next_hop(&config, &envelope.destination) {
            Route::Local => {
                let channel = self.channel(&config.service_center.pair)?;
                let client = PairClient::new(channel)
                    .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES);
                Ok(Hop::Local(client))
            }
            Route::Direct { endpoint } => {
                if envelope.hops_left == 0 {
                    return Err(Error::unreachable(&envelope.destination));
                }
                envelope.hops_left -= 1;
                envelope.path.push(config.region.clone());
                Ok(Hop::Peer {
                    region: envelope.destination.clone(),
                    channel: self.channel(&endpoint)?,
                })
            }
            Route::Unreachable => Err(Error::unreachable(&envelope.destination)),
        }
    }
}
