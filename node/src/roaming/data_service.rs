//! The data service module: reaches other regions' data centers.

use super::{Hop, Roaming};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::peer_api::data_service_client::DataServiceClient;
use crate::proto::peer_api::{DataReply, DataRequest, data_reply};
use crate::transport::call_error;

impl Roaming {
    /// Carries a data request one hop towards its destination and returns
    /// the answer that comes back along the same path.
    pub async fn route_data(&self, mut request: DataRequest) -> DataReply {
        let answer = match self.hop(request.envelope.as_mut()) {
            Err(err) => Err(err),
            Ok(Hop::Local(mut service_center)) => service_center
                .data(request)
                .await
                .map_err(|status| call_error(&self.region(), status)),
            Ok(Hop::Peer {
                destination: region,
                channel,
            }) => DataServiceClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .call(request)
                .await
                .map_err(|status| call_error(&region, status)),
        };
        match answer {
            Ok(reply) => reply.into_inner(),
            Err(err) => DataReply {
                result: Some(data_reply::Result::Failure(err.into())),
            },
        }
    }
}
