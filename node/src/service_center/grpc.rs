//! gRPC adapters of the service center: the client API, and the local-pair
//! API on which its roaming system hands it requests for this region.

use std::net::IpAddr;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::BusinessCenter;
use super::grpc_subscribe::ClientService;
use crate::Error;
use crate::ids::Id;
use crate::proto::client_api::business_center_server;
use crate::proto::client_api::*;
use crate::proto::pair_api::pair_server::{self, PairServer};
use crate::proto::peer_api::{BusinessReply, BusinessRequest, DataReply, DataRequest};
use crate::telemetry::traces;

type Reply<T> = Result<Response<T>, Status>;

/// The client API served by `center`. It sends no message larger than a
/// client receives ([`MAX_CLIENT_MESSAGE_BYTES`]; history is paged to fit),
/// and takes none much larger than a maximal send.
///
/// `Subscribe` starts each stream with a small encode buffer (see
/// [`super::grpc_subscribe`]).
///
/// [`MAX_CLIENT_MESSAGE_BYTES`]: crate::limits::MAX_CLIENT_MESSAGE_BYTES
pub fn client_service(center: BusinessCenter) -> ClientService {
    ClientService::new(
        ClientApi(center),
        crate::limits::MAX_BODY_BYTES + 16 * 1024,
        crate::limits::MAX_CLIENT_MESSAGE_BYTES,
    )
}

/// The local-pair API served by `center` to its roaming system.
pub fn pair_service(center: BusinessCenter) -> PairServer<PairApi> {
    PairServer::new(PairApi(center))
        .max_decoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(crate::limits::MAX_GRPC_MESSAGE_BYTES)
}

pub struct ClientApi(BusinessCenter);

impl ClientApi {
    async fn actor<T>(&self, request: &Request<T>) -> Result<Id, Status> {
        let token = bearer(request)?
            .ok_or_else(|| Error::Unauthenticated("no session: log in first".into()))?;
        Ok(self.0.authenticate(token).await?)
    }
}

/// The session token a request carries, if any.
fn bearer<T>(request: &Request<T>) -> Result<Option<&str>, Error> {
    let Some(header) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    // A value that is not visible ASCII has no `Bearer ` prefix either.
    bearer_token(header.to_str().unwrap_or_default()).map(Some)
}

/// The session token in an `authorization` header's value: `Bearer <session>`.
pub fn bearer_token(header: &str) -> Result<&str, Error> {
    header
        .strip_prefix("Bearer ")
        .ok_or_else(|| Error::Unauthenticated("authorization must be `Bearer <session>`".into()))
}

/// The client's address: from the TLS connection when the port serves TLS,
/// otherwise from the TCP connection.
fn source<T>(request: &Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<crate::transport::PeerInfo>()
        .map(|info| info.addr.ip())
        .or_else(|| request.remote_addr().map(|addr| addr.ip()))
}

fn ok<T>(result: Result<T, Error>) -> Reply<T> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl business_center_server::BusinessCenter for ClientApi {
    async fn register(&self, request: Request<RegisterRequest>) -> Reply<RegisterReply> {
        let r = request.into_inner();
        ok(self.0.register(&r.user, &r.password).await)
    }

    async fn login(&self, request: Request<LoginRequest>) -> Reply<LoginReply> {
        let source = source(&request);
        let r = request.into_inner();
        ok(self
            .0
            .metrics()
            .logged_in(self.0.login(&r.user, &r.password, source).await))
    }

    async fn refresh(&self, request: Request<RefreshRequest>) -> Reply<LoginReply> {
        ok(self.0.refresh(&request.into_inner().refresh_token).await)
    }

    async fn logout(&self, request: Request<LogoutRequest>) -> Reply<LogoutReply> {
        let session = bearer(&request)?.map(str::to_owned);
        let refresh = request.into_inner().refresh_token;
        ok(self.0.logout(session.as_deref(), Some(&refresh)).await)
    }

    async fn create_group(&self, request: Request<CreateGroupRequest>) -> Reply<GroupInfo> {
        let actor = self.actor(&request).await?;
        ok(self.0.create_group(&actor, request.into_inner()).await)
    }

    async fn get_group(&self, request: Request<GetGroupRequest>) -> Reply<GroupInfo> {
        let actor = self.actor(&request).await?;
        ok(self.0.get_group(&actor, &request.into_inner().group).await)
    }

    async fn update_group(&self, request: Request<UpdateGroupRequest>) -> Reply<GroupInfo> {
        let actor = self.actor(&request).await?;
        ok(self.0.update_group(&actor, request.into_inner()).await)
    }

    async fn join_group(&self, request: Request<MembershipRequest>) -> Reply<GroupInfo> {
        let actor = self.actor(&request).await?;
        ok(self.0.join_group(&actor, &request.into_inner().group).await)
    }

    async fn leave_group(&self, request: Request<MembershipRequest>) -> Reply<LeaveGroupReply> {
        let actor = self.actor(&request).await?;
        let group = request.into_inner().group;
        ok(self
            .0
            .leave_group(&actor, &group)
            .await
            .map(|_| LeaveGroupReply { group }))
    }

    async fn send(&self, request: Request<SendRequest>) -> Reply<SendReply> {
        // The root of a message's trace (docs/ARCHITECTURE.md §9, Traces).
        // `seq` is the home's, once known: it names the message, as the
        // `deliver` spans of its last hop do.
        let span = tracing::info_span!(
            "send",
            region = self.0.region(),
            group = %request.get_ref().group,
            seq = tracing::field::Empty,
        );
        let sent = async {
            let actor = self.actor(&request).await?;
            ok(self
                .0
                .metrics()
                .sent(self.0.send(&actor, request.into_inner()).await))
        }
        .instrument(span.clone())
        .await;
        if let Ok(reply) = &sent
            && reply.get_ref().seq > 0
        {
            span.record("seq", reply.get_ref().seq);
        }
        sent
    }

    async fn history(&self, request: Request<HistoryRequest>) -> Reply<HistoryReply> {
        let actor = self.actor(&request).await?;
        ok(self.0.history(&actor, request.into_inner()).await)
    }

    type SubscribeStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Event, Status>> + Send>>;

    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Reply<Self::SubscribeStream> {
        let actor = self.actor(&request).await?;
        let stream = self
            .0
            .subscribe(&actor, request.into_inner().cursors)
            .await?;
        Ok(Response::new(Box::pin(
            stream.map(|item| item.map_err(Status::from)),
        )))
    }
}

pub struct PairApi(BusinessCenter);

impl PairApi {
    /// Only this region's own roaming system calls the pair port.
    fn own_roaming<T>(&self, request: &Request<T>) -> Result<(), Status> {
        crate::transport::calling_region(request, |r| r == self.0.region()).map(|_| ())
    }
}

#[tonic::async_trait]
impl pair_server::Pair for PairApi {
    async fn data(&self, request: Request<DataRequest>) -> Reply<DataReply> {
        self.own_roaming(&request)?;
        Ok(Response::new(
            self.0.handle_data(request.into_inner()).await,
        ))
    }

    async fn carry(&self, request: Request<BusinessRequest>) -> Reply<BusinessReply> {
        self.own_roaming(&request)?;
        let request = request.into_inner();
        // Items from another region, in the trace of the hop that brought
        // them; what they lead to here (deliveries, outbox items) is in it.
        let envelope = request.envelope.as_ref();
        let span = tracing::info_span!(
            "receive",
            region = self.0.region(),
            source = envelope.map_or("", |e| e.source.as_str()),
            items = request.items.len(),
        );
        traces::follow(&span, envelope.map_or("", |e| e.traceparent.as_str()));
        Ok(Response::new(
            self.0.handle_carry(request).instrument(span).await,
        ))
    }
}
