//! The desired objects of one local Region, built by pure functions from the
//! Region, its namespace's other Regions and RegionLinks, and the operator's
//! settings. Nothing here talks to the API server.
//!
//! One builder per object, each taking a [`ValidRegion`]: [`mesh`] and
//! [`config_map`], [`network_policy`], the service center's workload in
//! [`service_center`], the roaming system's in [`pods`], and their
//! Services in [`services`]. [`desired`] makes them all. The nodes' command
//! line comes from [`crate::node_command`], which local mode uses too.

mod pods;
mod service_center;
mod services;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use meridian_crds::validate::{self, Violation};
use meridian_crds::{Region, RegionLink, RegionSpec};
use meridian_node::mesh::MeshConfig;

use crate::mesh::{PairEndpoints, mesh_config};
pub use pods::roaming;
pub use service_center::{
    POSTGRES_CA_DIR, POSTGRES_CA_FILE, POSTGRES_DIR, POSTGRES_URL_FILE, SPREAD_KEYS,
    ServiceCenterWorkload, service_center,
};
pub use services::{
    roaming_peer_service, roaming_service, service_center_pods_service, service_center_service,
};

pub const CLIENT_PORT: i32 = 7400;
pub const SERVICE_CENTER_PAIR_PORT: i32 = 7401;
pub const ROAMING_PAIR_PORT: i32 = 7402;
pub const PEER_PORT: i32 = 7443;
pub const METRICS_PORT: i32 = 9090;
/// Plaintext, answering only grpc.health.v1: kubelet's gRPC probes speak no
/// TLS, and every other port is mutual TLS.
pub const PROBE_PORT: i32 = 7404;
const CONFIG_DIR: &str = "/etc/meridian";
/// Where the Region's Secret (CA, certificate, key) is mounted.
const TLS_DIR: &str = "/etc/meridian-tls";
/// Where the client API's own certificate (spec.serviceCenter.clientTls) is.
const CLIENT_TLS_DIR: &str = "/etc/meridian-client-tls";
const DATA_DIR: &str = "/var/lib/meridian";
/// The mesh configuration's key in the ConfigMap, and its file name.
pub(crate) const MESH_FILE: &str = "mesh.yaml";

/// What the operator was started with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This operator's cluster: Regions with this `spec.cluster` are deployed here.
    pub cluster: String,
    /// The node image, unless a Region sets its own.
    pub image: String,
}

/// Everything one local Region becomes.
#[derive(Clone, Debug)]
pub struct Desired {
    pub mesh: MeshConfig,
    pub config_map: ConfigMap,
    pub network_policy: NetworkPolicy,
    pub service_center_service: Service,
    /// `<region>-service-center-pods`, on PostgreSQL: headless, so that the
    /// roaming system finds every replica by its name.
    pub service_center_pods_service: Option<Service>,
    /// A StatefulSet on SQLite, a Deployment and its PodDisruptionBudget on
    /// PostgreSQL.
    pub service_center: ServiceCenterWorkload,
    /// `<region>-roaming`: the pair and peer ports, ClusterIP, for this
    /// cluster (the service center and local peers).
    pub roaming_service: Service,
    /// `<region>-roaming-peer`: the peer port alone, of the type
    /// `spec.roaming.peerService` asks for, for other clusters.
    pub roaming_peer_service: Service,
    pub roaming: Deployment,
}

pub fn service_center_name(region: &str) -> String {
    format!("{region}-service-center")
}

/// The headless Service of a region's service-center replicas on
/// PostgreSQL, whose name resolves to each ready pod's address.
pub fn service_center_pods_name(region: &str) -> String {
    format!("{region}-service-center-pods")
}

pub fn roaming_name(region: &str) -> String {
    format!("{region}-roaming")
}

/// The Service that carries a region's peer port alone, exposed as
/// `spec.roaming.peerService` asks; never the pair port.
pub fn roaming_peer_name(region: &str) -> String {
    format!("{region}-roaming-peer")
}

/// The service center's data volume, and the name of its claim template.
pub const DATA_VOLUME: &str = "data";

/// The claim the StatefulSet makes for pod `ordinal` from its template:
/// `data-<region>-service-center-<ordinal>`.
pub fn data_claim_name(region: &str, ordinal: i32) -> String {
    format!("{DATA_VOLUME}-{}-{ordinal}", service_center_name(region))
}

pub fn config_map_name(region: &str) -> String {
    format!("{region}-mesh")
}

/// The in-cluster address of a local region's roaming peer API.
pub(crate) fn peer_url(region: &str, namespace: &str) -> String {
    format!(
        "https://{}.{namespace}.svc:{PEER_PORT}",
        roaming_name(region)
    )
}

/// A remote region's `spec.peerEndpoint` as a URL (`host:port` gets `https://`).
pub fn remote_peer_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// The names a local region's servers answer at, for its certificate.
pub fn region_hosts(region: &Region, namespace: &str) -> Vec<String> {
    let code = region.metadata.name.clone().unwrap_or_default();
    let mut hosts = vec![
        format!("{}.{namespace}.svc", roaming_name(&code)),
        format!("{}.{namespace}.svc", service_center_name(&code)),
    ];
    if let Some(endpoint) = &region.spec.peer_endpoint {
        let authority = endpoint.rsplit("://").next().unwrap_or(endpoint);
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if !host.is_empty() {
            hosts.push(host.to_owned());
        }
    }
    hosts
}
/// A Region that passed validation (`meridian_crds::validate::region`),
/// with its code and namespace: what every builder takes, so that none
/// builds from a spec nobody checked.
#[derive(Clone, Copy, Debug)]
pub struct ValidRegion<'a> {
    region: &'a Region,
    code: &'a str,
    namespace: &'a str,
}

impl<'a> ValidRegion<'a> {
    /// `region`, or what is wrong with it (each violation names its field).
    pub fn check(region: &'a Region) -> Result<Self, Vec<Violation>> {
        let violations = validate::region(region);
        if !violations.is_empty() {
            return Err(violations);
        }
        Ok(Self {
            region,
            code: region.metadata.name.as_deref().unwrap_or_default(),
            namespace: region.metadata.namespace.as_deref().unwrap_or_default(),
        })
    }

    pub fn region(&self) -> &'a Region {
        self.region
    }

    /// The region code: the Region's name.
    pub fn code(&self) -> &'a str {
        self.code
    }

    pub fn namespace(&self) -> &'a str {
        self.namespace
    }

    pub fn spec(&self) -> &'a RegionSpec {
        &self.region.spec
    }

    /// The metadata of an object of this region: `name`, the labels of
    /// `component`, and `owner` as its controller.
    fn metadata(&self, name: String, component: &str, owner: &OwnerReference) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels(self.code, component)),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        }
    }
}

/// Builds the desired objects of `region` (which must be local).
pub fn desired(
    region: ValidRegion<'_>,
    regions: &[Region],
    links: &[RegionLink],
    settings: &Settings,
    owner: OwnerReference,
) -> Desired {
    let mesh = mesh(region, regions, links, settings);
    Desired {
        config_map: config_map(region, &mesh, &owner),
        network_policy: network_policy(region, &owner),
        service_center_service: service_center_service(region, &owner),
        service_center_pods_service: service_center_pods_service(region, &owner),
        service_center: service_center(region, settings, &owner),
        roaming_service: roaming_service(region, &owner),
        roaming_peer_service: roaming_peer_service(region, &owner),
        roaming: roaming(region, settings, &owner),
        mesh,
    }
}

/// The region's mesh configuration: its pair reached through its own
/// Services, local peers through theirs, remote peers at their
/// `spec.peerEndpoint` (left out without one). On PostgreSQL the service
/// center's replicas are also found by the name of their headless Service
/// (`serviceCenter.dns`, docs/ARCHITECTURE.md §12, "Reaching the
/// replicas"); `pair` stays the ClusterIP Service, for when that name
/// resolves to nothing.
pub fn mesh(
    region: ValidRegion<'_>,
    regions: &[Region],
    links: &[RegionLink],
    settings: &Settings,
) -> MeshConfig {
    let (code, namespace) = (region.code(), region.namespace());
    let pair = PairEndpoints {
        service_center: format!(
            "https://{}.{namespace}.svc:{SERVICE_CENTER_PAIR_PORT}",
            service_center_name(code)
        ),
        roaming: format!(
            "https://{}.{namespace}.svc:{ROAMING_PAIR_PORT}",
            roaming_name(code)
        ),
    };
    let mut mesh = mesh_config(code, pair, regions, links, |peer| {
        let name = peer.metadata.name.as_deref()?;
        if peer.spec.cluster == settings.cluster {
            Some(peer_url(name, namespace))
        } else {
            peer.spec.peer_endpoint.as_deref().map(remote_peer_url)
        }
    });
    if region.spec().service_center.postgres().is_some() {
        mesh.service_center.dns = Some(format!(
            "https://{}.{namespace}.svc:{SERVICE_CENTER_PAIR_PORT}",
            service_center_pods_name(code)
        ));
    }
    mesh
}

/// `<region>-mesh`: the mesh configuration the nodes mount as a file.
pub fn config_map(region: ValidRegion<'_>, mesh: &MeshConfig, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: region.metadata(config_map_name(region.code()), "mesh", owner),
        data: Some(BTreeMap::from([(MESH_FILE.to_owned(), mesh.to_yaml())])),
        ..Default::default()
    }
}

/// `<region>-meridian`: which pods may reach which of the region's ports.
pub fn network_policy(region: ValidRegion<'_>, owner: &OwnerReference) -> NetworkPolicy {
    let code = region.code();
    super::policy::network_policy(
        region.metadata(format!("{code}-meridian"), "network", owner),
        code,
    )
}

pub fn labels(region: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "meridian".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), region.to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "meridian-operator".to_owned(),
        ),
        ("meridian.dev/region".to_owned(), region.to_owned()),
    ])
}

fn selector_labels(region: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
        ("meridian.dev/region".to_owned(), region.to_owned()),
    ])
}

fn selector(region: &str, component: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(selector_labels(region, component)),
        ..Default::default()
    }
}
