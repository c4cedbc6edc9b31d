//! The client API's `Subscribe` route, served with a smaller encode buffer
//! than tonic's default.
//!
//! tonic allocates an encode buffer for each response stream when it starts
//! and keeps it for the stream's life: 8 KiB unless the codec says otherwise
//! (`tonic::codec::BufferSettings`). A subscription is a response stream
//! held for hours and mostly idle, and a service center holds up to its
//! `--max-subscriptions` of them, so that buffer alone would be most of what
//! an idle subscription costs. The generated server picks its codec for
//! every method alike; [`ClientService`] answers `Subscribe` itself, with
//! [`SubscribeCodec`], and hands every other method to the generated
//! server unchanged. The wire format is the same (prost, the same
//! messages); only the buffer's first size differs, and it grows as a
//! larger event or a burst needs.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::grpc::ClientApi;
use crate::proto::client_api::business_center_server::{
    self, BusinessCenter as _, BusinessCenterServer, SERVICE_NAME,
};
use crate::proto::client_api::{Event, SubscribeRequest};

/// The path of the `Subscribe` method.
const SUBSCRIBE_PATH: &str = "/meridian.client.v1.BusinessCenter/Subscribe";

/// The first size of a subscription's encode buffer: an idle subscription
/// keeps this much, where tonic's default is 8 KiB. A typical event fits
/// (a delivery of a short message); a larger one, or several ready at once,
/// grow the buffer as they need.
pub const SUBSCRIBE_ENCODE_BUFFER: usize = 512;

/// tonic's default: a burst of ready events is written in batches of up to
/// this many bytes.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The prost codec of `Subscribe`, with an encode buffer of
/// [`SUBSCRIBE_ENCODE_BUFFER`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscribeCodec;

impl Codec for SubscribeCodec {
    type Encode = Event;
    type Decode = SubscribeRequest;
    type Encoder = ProstEncoder<Event>;
    type Decoder = ProstDecoder<SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(
            SUBSCRIBE_ENCODE_BUFFER,
            YIELD_THRESHOLD,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        // The request is one message, read once: tonic's default is fine.
        ProstCodec::<Event, SubscribeRequest>::default().decoder()
    }
}

/// The client API: `Subscribe` with [`SubscribeCodec`], every other method
/// by the generated server, with the same message size limits.
#[derive(Clone)]
pub struct ClientService {
    api: Arc<ClientApi>,
    generated: BusinessCenterServer<ClientApi>,
    max_decoding: usize,
    max_encoding: usize,
}

impl ClientService {
    /// Serves `api`, taking no message larger than `max_decoding` bytes and
    /// sending none larger than `max_encoding`.
    pub fn new(api: ClientApi, max_decoding: usize, max_encoding: usize) -> Self {
        let api = Arc::new(api);
        let generated = BusinessCenterServer::from_arc(api.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding);
        Self {
            api,
            generated,
            max_decoding,
            max_encoding,
        }
    }
}

impl NamedService for ClientService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for ClientService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return self.generated.call(request);
        }
        let method = Subscribe(self.api.clone());
        let mut grpc = Grpc::new(SubscribeCodec)
            .apply_max_message_size_config(Some(self.max_decoding), Some(self.max_encoding));
        Box::pin(async move { Ok(grpc.server_streaming(method, request).await) })
    }
}

/// `Subscribe`, as the generated server would call it.
struct Subscribe(Arc<ClientApi>);

impl ServerStreamingService<SubscribeRequest> for Subscribe {
    type Response = Event;
    type ResponseStream = <ClientApi as business_center_server::BusinessCenter>::SubscribeStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<SubscribeRequest>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.subscribe(request).await })
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::Encoder;

    use super::*;

    /// The point of this codec: a subscription's stream starts with a
    /// small buffer, not tonic's 8 KiB.
    #[test]
    fn the_subscribe_encoder_starts_small() {
        let settings = format!("{:?}", SubscribeCodec.encoder().buffer_settings());
        assert!(
            settings.contains(&format!("buffer_size: {SUBSCRIBE_ENCODE_BUFFER}")),
            "{settings}"
        );
    }
}
