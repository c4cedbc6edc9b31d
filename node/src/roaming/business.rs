//! The business module: carries cross-region message traffic (outbox items)
//! and answers heartbeats.

use super::{Hop, Roaming};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::peer_api::business_client::BusinessClient;
use crate::proto::peer_api::{BusinessReply, BusinessRequest, Ping, Pong};
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
                .map_err(|status| call_error(&self.region(), status)),
            Ok(Hop::Peer { region, channel }) => BusinessClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .carry(request)
                .await
                .map_err(|status| call_error(&region, status)),
        };
        match answer {
            Ok(reply) => reply.into_inner(),
            Err(err) => BusinessReply {
                failure: Some(err.into()),
            },
        }
    }

    pub fn heartbeat(&self, ping: Ping) -> Pong {
        Pong {
            region: self.region(),
            sent_at_micros: ping.sent_at_micros,
        }
    }
}
