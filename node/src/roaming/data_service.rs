//! The data service module: reaches other regions' data centers.

use tonic::transport::Channel;

use super::forward::{Answer, Forward};
use super::replicas::Repeat;
use super::{Roaming, Sender};
use crate::Error;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::pair_api::pair_client::PairClient;
use crate::proto::peer_api::data_request::Op;
use crate::proto::peer_api::data_service_client::DataServiceClient;
use crate::proto::peer_api::{DataReply, DataRequest, Envelope, data_reply};
use crate::trust::origin::Payload;

impl Roaming {
    /// Carries a data request one hop towards its destination and returns
    /// the answer that comes back along the same path.
    pub async fn route_data(&self, request: DataRequest, sender: Sender) -> DataReply {
        self.forward(request, sender).await
    }
}

impl Forward for DataRequest {
    type Reply = DataReply;
    const TRACED: bool = false;

    fn parts(&mut self) -> (Option<&mut Envelope>, Payload<'_>) {
        (self.envelope.as_mut(), Payload::Data(&self.op))
    }

    /// Reads (a group's info, a page of history) may be asked again, and so
    /// may a login check: it records the same attachment again. A change
    /// may not: a second registration would be refused as a duplicate and a
    /// second leave as "not a member", though the first took effect, so a
    /// change moves to another replica only if it never reached the first.
    fn repeat(&self) -> Repeat {
        match self.op {
            Some(Op::GetGroup(_) | Op::History(_) | Op::VerifyLogin(_)) => Repeat::Idempotent,
            Some(Op::Register(_) | Op::UpdateGroup(_) | Op::Join(_) | Op::Leave(_)) | None => {
                Repeat::OnlyIfNeverSent
            }
        }
    }

    async fn local(self, mut service_center: PairClient<Channel>) -> Answer<DataReply> {
        service_center.data(self).await
    }

    async fn peer(self, channel: Channel) -> Answer<DataReply> {
        DataServiceClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
            .call(self)
            .await
    }

    fn failed(err: Error) -> DataReply {
        DataReply {
            result: Some(data_reply::Result::Failure(err.into())),
        }
    }
}
