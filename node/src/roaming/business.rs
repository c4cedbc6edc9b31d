//! The business module: carries cross-region message traffic (outbox items)
//! and answers heartbeats.

use super::{Hop, Roaming};
use crate::ids::is_region_code;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::mesh::link_state::Advert;
use crate::proto::peer_api::business_client::BusinessClient;
use crate::proto::peer_api::{BusinessReply, BusinessRequest, LinkAdvert, LinkState, Ping, Pong};
use crate::transport::call_error;

impl Roaming {
    /// Carries outbox items one hop towards their destination. The reply is
    /// the destination's acknowledgement; nothing is kept here.
    pub async fn route_carry(&self, mut request: BusinessRequest) -> BusinessReply {
        let answer = match self.hop(request.envelope.as_mut()) {
            Err(err) => Err(err),
            Ok(Hop::Local(mut service_center)) => service_center
                .carry(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| call_error(&self.region(), status)),
            Ok(Hop::Peer {
                next_hop,
                destination,
                channel,
            }) => {
                let mut client = BusinessClient::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
                self.relay(&next_hop, &destination, client.carry(request))
                    .await
            }
        };
        match answer {
            Ok(reply) => reply,
            Err(err) => BusinessReply {
                failure: Some(err.into()),
            },
        }
    }

    /// Answers a heartbeat, exchanging link state with the prober.
    pub fn heartbeat(&self, ping: Ping) -> Pong {
        let known = self
            .links
            .exchange(&self.config(), adverts_from_wire(ping.link_states));
        Pong {
            region: self.region(),
            sent_at_micros: ping.sent_at_micros,
            link_states: adverts_to_wire(known),
        }
    }
}

pub fn adverts_to_wire(adverts: Vec<Advert>) -> Vec<LinkState> {
    adverts
        .into_iter()
        .map(|a| LinkState {
            origin: a.origin,
            seq: a.seq,
            links: a
                .links
                .into_iter()
                .map(|(peer, (up, cost))| LinkAdvert { peer, up, cost })
                .collect(),
        })
        .collect()
}

/// Reads advertisements from a peer, dropping malformed ones.
pub fn adverts_from_wire(states: Vec<LinkState>) -> Vec<Advert> {
    states
        .into_iter()
        .filter(|s| is_region_code(&s.origin) && s.links.iter().all(|l| is_region_code(&l.peer)))
        .map(|s| Advert {
            origin: s.origin,
            seq: s.seq,
            links: s
                .links
                .into_iter()
                .map(|l| (l.peer, (l.up, l.cost)))
                .collect(),
        })
        .collect()
}
