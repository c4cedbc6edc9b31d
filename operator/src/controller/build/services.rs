//! The region's Services: the service center's (and, on PostgreSQL, the
//! headless one of its replicas), the roaming system's for this cluster,
//! and the roaming system's peer port for other clusters.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_crds::PeerServiceSpec;

use super::{
    CLIENT_PORT, PEER_PORT, ROAMING_PAIR_PORT, SERVICE_CENTER_PAIR_PORT, ValidRegion, roaming_name,
    roaming_peer_name, selector_labels, service_center_name, service_center_pods_name,
};

/// `<region>-service-center`: the client and pair ports.
pub fn service_center_service(region: ValidRegion<'_>, owner: &OwnerReference) -> Service {
    let code = region.code();
    service(
        region.metadata(service_center_name(code), "service-center", owner),
        code,
        "service-center",
        &[("client", CLIENT_PORT), ("pair", SERVICE_CENTER_PAIR_PORT)],
    )
}

/// `<region>-service-center-pods`, on PostgreSQL only: the pair port of
/// every ready replica, headless (`clusterIP: None`), so that its name
/// resolves to each pod's address and the roaming system spreads its calls
/// over the replicas (`serviceCenter.dns` in the mesh configuration,
/// docs/ARCHITECTURE.md §12, "Reaching the replicas"). Through the ClusterIP
/// Service, its one HTTP/2 connection would take every call to one pod.
/// Pods that are not ready are left out (`publishNotReadyAddresses:
/// false`): one starting, or cut off from its database, takes no call. On
/// SQLite there is one pod, which `<region>-service-center` reaches.
pub fn service_center_pods_service(
    region: ValidRegion<'_>,
    owner: &OwnerReference,
) -> Option<Service> {
    region.spec().service_center.postgres()?;
    let code = region.code();
    let mut service = service(
        region.metadata(service_center_pods_name(code), "service-center", owner),
        code,
        "service-center",
        &[("pair", SERVICE_CENTER_PAIR_PORT)],
    );
    let spec = service.spec.as_mut()?;
    spec.cluster_ip = Some("None".into());
    spec.publish_not_ready_addresses = Some(false);
    Some(service)
}

/// `<region>-roaming`: the pair and peer ports. In-cluster addressing (the
/// pair endpoint, local peers' URLs, the certificate's names) stays on it,
/// always ClusterIP.
pub fn roaming_service(region: ValidRegion<'_>, owner: &OwnerReference) -> Service {
    let code = region.code();
    service(
        region.metadata(roaming_name(code), "roaming", owner),
        code,
        "roaming",
        &[("pair", ROAMING_PAIR_PORT), ("peer", PEER_PORT)],
    )
}

/// `<region>-roaming-peer`: the peer port alone, of the type
/// `spec.roaming.peerService` asks for (see [`peer_service`]).
pub fn roaming_peer_service(region: ValidRegion<'_>, owner: &OwnerReference) -> Service {
    let code = region.code();
    peer_service(
        region.metadata(roaming_peer_name(code), "roaming", owner),
        code,
        region
            .spec()
            .roaming
            .peer_service
            .clone()
            .unwrap_or_default(),
    )
}

fn service(metadata: ObjectMeta, region: &str, component: &str, ports: &[(&str, i32)]) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(region, component)),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: Some(n.to_string()),
                        port: *p,
                        target_port: Some(IntOrString::Int(*p)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The peer port alone, for other clusters: a NodePort or LoadBalancer
/// Service gives every port it carries a node port, so the pair port (its
/// region's own pods only) must never be on it. The type is always written,
/// so that a change in either direction is applied in place: Kubernetes
/// allows ClusterIP to NodePort or LoadBalancer and back on a live Service
/// (it allocates the node port, or releases it, itself), and with
/// server-side apply the operator owns `type` and, when given, `nodePort`;
/// the cluster IP and an allocated node port stay the API server's.
fn peer_service(metadata: ObjectMeta, region: &str, spec: PeerServiceSpec) -> Service {
    let mut service = service(metadata, region, "roaming", &[("peer", PEER_PORT)]);
    if let Some(service_spec) = service.spec.as_mut() {
        service_spec.type_ = Some(spec.type_.as_str().to_owned());
        if spec.type_.has_node_ports()
            && let Some(port) = service_spec.ports.iter_mut().flatten().next()
        {
            port.node_port = spec.node_port;
        }
    }
    service
}
