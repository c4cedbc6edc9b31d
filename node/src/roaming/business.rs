//! The business module: carries cross-region message traffic (outbox items)
//! and answers heartbeats.

use std::sync::Arc;

use prost::Message;
use tonic::transport::Channel;
use tracing::Instrument;

use super::forward::{Answer, Forward};
use super::replicas::Repeat;
use super::{Roaming, Sender};
use crate::Error;
use crate::ids::is_region_code;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::mesh::topology::Advert;
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::business_client::BusinessClient;
use crate::proto::peer_api::{
    BusinessReply, BusinessRequest, Envelope, LinkAdvert, LinkState, Ping, Pong, Signature,
};
use crate::telemetry::traces;
use crate::trust::Credentials;
use crate::trust::origin::{self, Payload};

impl Roaming {
    /// Carries outbox items one hop towards their destination. The reply is
    /// the destination's acknowledgement, with its verdicts on the
    /// submissions, passed back unchanged; nothing is kept here. The hop is
    /// a `roaming.carry` span in the trace the envelope names, and the
    /// envelope goes on naming this span.
    pub async fn route_carry(&self, request: BusinessRequest, sender: Sender) -> BusinessReply {
        let envelope = request.envelope.as_ref();
        let span = tracing::info_span!(
            "roaming.carry",
            region = %self.region(),
            source = envelope.map_or("", |e| e.source.as_str()),
            destination = envelope.map_or("", |e| e.destination.as_str()),
            items = request.items.len(),
        );
        traces::follow(&span, envelope.map_or("", |e| e.traceparent.as_str()));
        self.forward(request, sender).instrument(span).await
    }

    /// Answers a heartbeat, exchanging link state with the prober.
    pub fn heartbeat(&self, ping: Ping) -> Pong {
        let known = self.merge_link_states(ping.link_states);
        Pong {
            region: self.region(),
            sent_at_micros: ping.sent_at_micros,
            link_states: adverts_to_wire(known),
        }
    }

    /// Merges a peer's link-state records; only newer ones signed by their
    /// origin within the age and sequence bounds are taken. Returns every
    /// record this region knows.
    pub(super) fn merge_link_states(&self, states: Vec<LinkState>) -> Vec<Advert> {
        let now = crate::now_ms() as u64 * 1000;
        let accept = |advert: &Advert| match origin::check_link_state(
            &advert_to_wire(advert.clone()),
            &self.verifier,
            now,
        ) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(origin = %advert.origin, %err, "link state refused");
                false
            }
        };
        self.links
            .exchange(&self.config(), adverts_from_wire(states), accept)
    }
}

impl Forward for BusinessRequest {
    type Reply = BusinessReply;
    const TRACED: bool = true;

    fn parts(&mut self) -> (Option<&mut Envelope>, Payload<'_>) {
        (
            self.envelope.as_mut(),
            Payload::Carry(&self.items, self.order.as_ref()),
        )
    }

    /// Carrying a batch twice does no harm: the receiving service center
    /// answers a submission it sequenced already from its sequenced keys
    /// (the same seq, not a second message), and stores a delivery once by
    /// its group and seq (docs/ARCHITECTURE.md §12: "The receiver is
    /// idempotent"). The sending outbox resends whatever fails anyway.
    fn repeat(&self) -> Repeat {
        Repeat::Idempotent
    }

    async fn local(self, mut service_center: PairClient<Channel>) -> Answer<BusinessReply> {
        service_center.carry(self).await
    }

    async fn peer(self, channel: Channel) -> Answer<BusinessReply> {
        BusinessClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .carry(self)
            .await
    }

    fn failed(err: Error) -> BusinessReply {
        BusinessReply {
            failure: Some(err.into()),
            ..Default::default()
        }
    }
}

/// Signs this region's own link-state records with its current key.
pub fn link_state_sealer(credentials: Arc<Credentials>) -> super::links::Seal {
    Box::new(move |advert: &Advert| {
        let mut state = advert_to_wire(advert.clone());
        match origin::sign_link_state(&mut state, &credentials.current()) {
            Ok(()) => state
                .signature
                .map(|s| s.encode_to_vec())
                .unwrap_or_default(),
            Err(err) => {
                tracing::error!(%err, "cannot sign this region's link state");
                Vec::new()
            }
        }
    })
}

fn advert_to_wire(a: Advert) -> LinkState {
    LinkState {
        origin: a.origin,
        seq: a.seq,
        links: a
            .links
            .into_iter()
            .map(|(peer, (up, cost))| LinkAdvert { peer, up, cost })
            .collect(),
        signature: Signature::decode(a.proof.as_slice()).ok(),
    }
}

pub fn adverts_to_wire(adverts: Vec<Advert>) -> Vec<LinkState> {
    adverts.into_iter().map(advert_to_wire).collect()
}

/// Link-state records in one heartbeat, and links in one record.
const MAX_LINK_STATES: usize = 1024;

/// Reads advertisements from a peer, dropping malformed ones.
pub fn adverts_from_wire(states: Vec<LinkState>) -> Vec<Advert> {
    states
        .into_iter()
        .take(MAX_LINK_STATES)
        .filter(|s| {
            is_region_code(&s.origin)
                && s.links.len() <= MAX_LINK_STATES
                && s.links.iter().all(|l| is_region_code(&l.peer))
        })
        .map(|s| Advert {
            origin: s.origin,
            seq: s.seq,
            links: s
                .links
                .into_iter()
                .map(|l| (l.peer, (l.up, l.cost)))
                .collect(),
            proof: s.signature.map(|s| s.encode_to_vec()).unwrap_or_default(),
        })
        .collect()
}
