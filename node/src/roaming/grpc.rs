//! gRPC adapters of the roaming system: the local-pair API its service
//! center calls, and the peer API other roaming systems call.

use tonic::{Request, Response, Status};

use super::Roaming;
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::pair_api::pair_server::{self, PairServer};
use crate::proto::peer_api::admin_server::{self, AdminServer};
use crate::proto::peer_api::business_server::{self, BusinessServer};
use crate::proto::peer_api::data_service_server::{self, DataServiceServer};
use crate::proto::peer_api::{
    BusinessReply, BusinessRequest, DataReply, DataRequest, LinkStatus, MeshStatusReply,
    MeshStatusRequest, Ping, Pong,
};

type Reply<T> = Result<Response<T>, Status>;

pub struct RoamingApi(pub Roaming);

/// The local-pair API, for this region's service center.
pub fn pair_service(roaming: Roaming) -> PairServer<RoamingApi> {
    PairServer::new(RoamingApi(roaming))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
}

/// The peer API's data service, for other roaming systems.
pub fn data_service(roaming: Roaming) -> DataServiceServer<RoamingApi> {
    DataServiceServer::new(RoamingApi(roaming))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
}

/// The peer API's business service, for other roaming systems.
pub fn business_service(roaming: Roaming) -> BusinessServer<RoamingApi> {
    BusinessServer::new(RoamingApi(roaming))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
}

/// What this roaming system knows of the mesh, for `meridian mesh status`.
pub fn admin_service(roaming: Roaming) -> AdminServer<RoamingApi> {
    AdminServer::new(RoamingApi(roaming))
}

#[tonic::async_trait]
impl admin_server::Admin for RoamingApi {
    async fn mesh_status(&self, _: Request<MeshStatusRequest>) -> Reply<MeshStatusReply> {
        let config = self.0.config();
        let links = self
            .0
            .links
            .status(&config)
            .into_iter()
            .map(|s| LinkStatus {
                peer: s.peer,
                state: s.view.as_str().to_owned(),
                path: s.path,
                rtt_millis: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                enabled: s.enabled,
                last_change_ms: s.last_change_ms,
                cost: s.cost,
            })
            .collect();
        Ok(Response::new(MeshStatusReply {
            region: config.region,
            links,
        }))
    }
}

#[tonic::async_trait]
impl pair_server::Pair for RoamingApi {
    async fn data(&self, request: Request<DataRequest>) -> Reply<DataReply> {
        Ok(Response::new(self.0.route_data(request.into_inner()).await))
    }

    async fn carry(&self, request: Request<BusinessRequest>) -> Reply<BusinessReply> {
        Ok(Response::new(
            self.0.route_carry(request.into_inner()).await,
        ))
    }
}

#[tonic::async_trait]
impl data_service_server::DataService for RoamingApi {
    async fn call(&self, request: Request<DataRequest>) -> Reply<DataReply> {
        Ok(Response::new(self.0.route_data(request.into_inner()).await))
    }
}

#[tonic::async_trait]
impl business_server::Business for RoamingApi {
    async fn carry(&self, request: Request<BusinessRequest>) -> Reply<BusinessReply> {
        Ok(Response::new(
            self.0.route_carry(request.into_inner()).await,
        ))
    }

    async fn heartbeat(&self, request: Request<Ping>) -> Reply<Pong> {
        Ok(Response::new(self.0.heartbeat(request.into_inner())))
    }
}
