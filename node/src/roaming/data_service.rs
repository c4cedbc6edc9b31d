//! The data service module: reaches other regions' data centers.

use super::{Hop, Roaming, Sender};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::peer_api::data_service_client::DataServiceClient;
use crate::proto::peer_api::{DataReply, DataRequest, data_reply};
use crate::transport::call_error;
use crate::trust::origin::Payload;

impl Roaming {
    /// Carries a data request one hop towards its destination and returns
    /// the answer that comes back along the same path.
    pub async fn route_data(&self, mut request: DataRequest, sender: Sender) -> DataReply {
        let admitted = self.admit(
            request.envelope.as_mut(),
            Payload::Data(&request.op),
            &sender,
        );
        let answer = match admitted.and_then(|()| self.hop(request.envelope.as_mut())) {
            Err(err) => Err(err),
            Ok(Hop::Local(mut service_center)) => service_center
                .data(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| call_error(&self.region(), status)),
            Ok(Hop::Peer {
                next_hop,
                destination,
                channel,
            }) => {
                let mut client = DataServiceClient::new(channel)
                    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
                self.relay(&next_hop, &destination, client.call(request))
                    .await
            }
        };
        match answer {
            Ok(reply) => reply,
            Err(err) => DataReply {
                result: Some(data_reply::Result::Failure(err.into())),
            },
        }
    }
}
