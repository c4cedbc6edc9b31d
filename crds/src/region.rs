//! The `Region` custom resource: one set region of the source design, deployed as a
//! service center (StatefulSet) paired with a roaming system (Deployment).
//!
//! The object's name is the region code (docs/ARCHITECTURE.md §2). The schema carries the
//! same rules that [`crate::validate`] checks in pure code for local mode.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::region_link::LinkState;
use crate::validate::{
    CLUSTER_MAX_LEN, IMAGE_MAX_LEN, MAX_REGIONS, NAME_MAX_LEN, NODE_PORT_MAX, NODE_PORT_MIN,
    PEER_ENDPOINT_MAX_LEN, REGION_CODE_MAX_LEN, REGION_CODE_PATTERN,
    SERVICE_CENTER_REPLICAS_MESSAGE, SIZE_PATTERN,
};

/// Desired state of a region.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(
    clippy::duplicated_attributes,
    reason = "every printcolumn(...) repeats keys such as type_"
)]
#[kube(
    group = "meridian.dev",
    version = "v1alpha1",
    kind = "Region",
    namespaced,
    shortname = "rg",
    status = "RegionStatus",
    derive = "PartialEq",
    doc = "A set region: a service center paired with a roaming system. The name is the region code.",
    validation = Rule::new(format!("self.metadata.name.matches('{REGION_CODE_PATTERN}')"))
        .message("metadata.name must be a region code (lowercase letters, digits and '-', at most 32 characters, starting and ending with a letter or digit)"),
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.cluster", description = "The cluster whose operator deploys this region"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Status of the Ready condition"),
    printcolumn(name = "Service-Center", type_ = "integer", json_path = ".status.serviceCenter.readyReplicas", description = "Ready service center replicas", priority = 1),
    printcolumn(name = "Roaming", type_ = "integer", json_path = ".status.roaming.readyReplicas", description = "Ready roaming replicas", priority = 1),
    printcolumn(name = "Peer-Endpoint", type_ = "string", json_path = ".spec.peerEndpoint", description = "Where other clusters reach this region's roaming system", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct RegionSpec {
    /// The cluster that runs this region: the operator started with `--cluster <this>`
    /// deploys it, operators elsewhere treat it as a remote peer. Immutable.
    #[schemars(length(min = 1, max = CLUSTER_MAX_LEN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.cluster is immutable"))]
    pub cluster: String,

    /// `host:port` where roaming systems in other clusters reach this region's roaming
    /// system. Needed only when other clusters must reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = PEER_ENDPOINT_MAX_LEN))]
    pub peer_endpoint: Option<String>,

    /// The service center and its resource pool (the source design's first resource pool).
    #[serde(default)]
    pub service_center: ServiceCenterSpec,

    /// The roaming system paired with the service center and its resource pool
    /// (the source design's second resource pool).
    #[serde(default)]
    pub roaming: RoamingSpec,
}

/// The service center: serves the region's clients and holds its data center.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCenterSpec {
    /// Number of service center pods: 1. Each pod would hold its own data
    /// center, so several replicas need a shared one; until then anything
    /// but 1 is refused (not accepted and ignored).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == 1").message(SERVICE_CENTER_REPLICAS_MESSAGE))]
    pub replicas: i32,

    /// Compute resources of each service center pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The data center's volume. Without it the data lives in an emptyDir and does not
    /// survive the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// Pod bandwidth limits (the `kubernetes.io/{ingress,egress}-bandwidth` annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,

    /// Container image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = IMAGE_MAX_LEN))]
    pub image: Option<String>,

    /// Serve the client API over TLS with this certificate. Without it the
    /// client API is plaintext (inside the cluster's network policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTlsSpec>,
}

/// The client API's server certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSpec {
    /// A Secret of type kubernetes.io/tls in the Region's namespace
    /// (`tls.crt`, `tls.key`), for example one cert-manager keeps. A renewed
    /// certificate is picked up without a restart.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

impl Default for ServiceCenterSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            storage: None,
            bandwidth: None,
            image: None,
            client_tls: None,
        }
    }
}

/// The roaming system: the region's only door to other regions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoamingSpec {
    /// Number of roaming pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Compute resources of each roaming pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Pod bandwidth limits (the `kubernetes.io/{ingress,egress}-bandwidth` annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthSpec>,

    /// Container image; the operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = IMAGE_MAX_LEN))]
    pub image: Option<String>,

    /// How other clusters reach the peer port: the type of the Service
    /// `<region>-roaming-peer`, which carries the peer port (7443) and no other.
    /// A ClusterIP Service when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_service: Option<PeerServiceSpec>,
}

impl Default for RoamingSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            bandwidth: None,
            image: None,
            peer_service: None,
        }
    }
}

/// The Service `<region>-roaming-peer`: the roaming system's peer port (mutual TLS),
/// alone, for roaming systems in other clusters. Other clusters set this region's
/// `spec.peerEndpoint` to the address it gives (a node's address and `nodePort`, or the
/// load balancer's address and port 7443).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.nodePort) || (has(self.type) && self.type != 'ClusterIP')")
        .message("spec.roaming.peerService.nodePort is allowed only with type NodePort or LoadBalancer")
        .field_path(".nodePort")
)]
#[serde(rename_all = "camelCase")]
pub struct PeerServiceSpec {
    /// `ClusterIP` (the default: inside the cluster only), `NodePort` (every node's
    /// address, at `nodePort`) or `LoadBalancer` (a load balancer's address, at port 7443).
    #[serde(default, rename = "type")]
    pub type_: PeerServiceType,

    /// The node port of the peer port, with type `NodePort` or `LoadBalancer` only;
    /// Kubernetes picks a free one when unset. 30000 to 32767, Kubernetes' default
    /// node port range (`--service-node-port-range`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = NODE_PORT_MIN, max = NODE_PORT_MAX))]
    pub node_port: Option<i32>,
}

/// A Kubernetes Service type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PeerServiceType {
    /// A cluster-internal address only.
    #[default]
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    /// A port on every node, plus the cluster-internal address.
    NodePort,
    /// A load balancer in front of a node port, plus the cluster-internal address.
    LoadBalancer,
}

impl PeerServiceType {
    /// The name Kubernetes uses in `Service.spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIp => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }

    /// Whether the Service has node ports (and so may set `nodePort`).
    pub fn has_node_ports(self) -> bool {
        self != Self::ClusterIp
    }
}

/// A persistent volume for the data center.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size as a quantity, for example `10Gi`.
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub size: String,

    /// Storage class of the volume claim; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = NAME_MAX_LEN))]
    pub storage_class_name: Option<String>,
}

/// Bandwidth limits in bits per second, as quantities (for example `100M`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthSpec {
    /// Limit on traffic into the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub ingress: Option<String>,

    /// Limit on traffic out of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub egress: Option<String>,
}

fn default_replicas() -> i32 {
    1
}

/// Observed state of a region, written by the operator.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`, `Progressing`, `Degraded`, `MeshConfigured`, `LinkStateKnown` and,
    /// with a data volume (`spec.serviceCenter.storage`), `StorageResized`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The service center's workload.
    #[serde(default)]
    pub service_center: WorkloadStatus,

    /// The roaming system's workload.
    #[serde(default)]
    pub roaming: WorkloadStatus,

    /// How this region reaches every other region of the mesh: at most 63
    /// peers, as a mesh has at most 64 regions.
    #[serde(default)]
    #[schemars(length(max = MAX_REGIONS - 1))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["region".into()]))]
    pub peers: Vec<PeerStatus>,
}

/// Readiness of one of the region's workloads.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
}

/// The path from this region to one peer region.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    /// The peer's region code.
    #[schemars(length(min = 1, max = REGION_CODE_MAX_LEN))]
    pub region: String,

    /// `Up` (direct link), `Detoured` (relayed through `via`) or `Down` (unreachable),
    /// as this region's roaming system reports it; absent until it has reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,

    /// The regions traffic is relayed through, in order; empty on the direct link.
    /// A loop-free path passes at most every other region of the mesh.
    #[serde(default)]
    #[schemars(length(max = MAX_REGIONS - 2))]
    pub via: Vec<String>,

    /// Round-trip time of the direct link in milliseconds, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_millis: Option<u64>,

    /// When the roaming system last saw `state` or `via` change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}
