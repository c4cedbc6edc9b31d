//! gRPC adapters of the roaming system: the local-pair API its service
//! center calls, and the peer API other roaming systems call.

use tonic::{Request, Response, Status};

use super::links::LinkView;
use super::{Roaming, Sender};
use crate::limits::MAX_GRPC_MESSAGE_BYTES;
use crate::proto::pair_api::pair_server::{self, PairServer};
use crate::proto::peer_api::admin_server::{self, AdminServer};
use crate::proto::peer_api::business_server::{self, BusinessServer};
use crate::proto::peer_api::data_service_server::{self, DataServiceServer};
use crate::proto::peer_api::{
    BusinessReply, BusinessRequest, DataReply, DataRequest, LinkCondition, LinkStatus,
    MeshStatusReply, MeshStatusRequest, Ping, Pong,
};
use crate::transport;

type Reply<T> = Result<Response<T>, Status>;

pub struct RoamingApi(pub Roaming);

impl RoamingApi {
    /// Only this region's own service center calls the pair port.
    fn own_service_center<T>(&self, request: &Request<T>) -> Result<Sender, Status> {
        let region = self.0.region();
        transport::calling_region(request, |r| r == region)?;
        Ok(Sender::ServiceCenter)
    }

    /// Only the roaming systems of configured peers call the peer API.
    fn peer<T>(&self, request: &Request<T>) -> Result<String, Status> {
        transport::calling_region(request, |r| self.0.is_peer(r)).map(str::to_owned)
    }
}

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
    async fn mesh_status(&self, request: Request<MeshStatusRequest>) -> Reply<MeshStatusReply> {
        // Any holder of a mesh certificate (a region, or a tool such as the
        // operator) may read the status.
        if transport::caller(&request).is_none() {
            return Err(Status::unauthenticated("no mesh certificate"));
        }
        let config = self.0.config();
        let links = self
            .0
            .links
            .status(&config)
            .into_iter()
            .map(|s| LinkStatus {
                peer: s.peer,
                condition: LinkCondition::from(s.view).into(),
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

impl From<LinkView> for LinkCondition {
    fn from(view: LinkView) -> Self {
        match view {
            LinkView::Up => LinkCondition::Up,
            LinkView::Detoured => LinkCondition::Detoured,
            LinkView::Down => LinkCondition::Down,
        }
    }
}

/// A wire condition as a view. UNSPECIFIED names none: a reader shows it
/// as unknown (prost reads a value this node does not know, from a newer
/// one, as UNSPECIFIED too).
impl TryFrom<LinkCondition> for LinkView {
    type Error = LinkCondition;

    fn try_from(condition: LinkCondition) -> Result<Self, LinkCondition> {
        match condition {
            LinkCondition::Up => Ok(LinkView::Up),
            LinkCondition::Detoured => Ok(LinkView::Detoured),
            LinkCondition::Down => Ok(LinkView::Down),
            LinkCondition::Unspecified => Err(condition),
        }
    }
}

#[tonic::async_trait]
impl pair_server::Pair for RoamingApi {
    async fn data(&self, request: Request<DataRequest>) -> Reply<DataReply> {
        let sender = self.own_service_center(&request)?;
        Ok(Response::new(
            self.0.route_data(request.into_inner(), sender).await,
        ))
    }

    async fn carry(&self, request: Request<BusinessRequest>) -> Reply<BusinessReply> {
        let sender = self.own_service_center(&request)?;
        Ok(Response::new(
            self.0.route_carry(request.into_inner(), sender).await,
        ))
    }
}

#[tonic::async_trait]
impl data_service_server::DataService for RoamingApi {
    async fn call(&self, request: Request<DataRequest>) -> Reply<DataReply> {
        let sender = Sender::Peer(self.peer(&request)?);
        Ok(Response::new(
            self.0.route_data(request.into_inner(), sender).await,
        ))
    }
}

#[tonic::async_trait]
impl business_server::Business for RoamingApi {
    async fn carry(&self, request: Request<BusinessRequest>) -> Reply<BusinessReply> {
        let sender = Sender::Peer(self.peer(&request)?);
        Ok(Response::new(
            self.0.route_carry(request.into_inner(), sender).await,
        ))
    }

    async fn heartbeat(&self, request: Request<Ping>) -> Reply<Pong> {
        let peer = self.peer(&request)?;
        if request.get_ref().source != peer {
            return Err(Status::permission_denied(format!(
                "region {peer} sent a heartbeat in the name of {}",
                request.get_ref().source
            )));
        }
        Ok(Response::new(self.0.heartbeat(request.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_link_view_round_trips_through_the_wire() {
        for view in LinkView::ALL {
            let sent = LinkStatus {
                peer: "us".into(),
                condition: LinkCondition::from(view).into(),
                ..LinkStatus::default()
            };
            let got = LinkStatus::decode(sent.encode_to_vec().as_slice()).unwrap();
            assert_eq!(LinkView::try_from(got.condition()), Ok(view));
            assert_ne!(got.condition(), LinkCondition::Unspecified, "{view:?}");
        }
    }

    #[test]
    fn an_unspecified_or_unknown_condition_names_no_view() {
        assert_eq!(
            LinkView::try_from(LinkCondition::Unspecified),
            Err(LinkCondition::Unspecified)
        );
        // A newer node's condition reads as UNSPECIFIED here.
        let newer = LinkStatus {
            condition: 99,
            ..LinkStatus::default()
        };
        assert!(LinkView::try_from(newer.condition()).is_err());
    }
}
