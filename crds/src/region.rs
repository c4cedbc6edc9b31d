//! The `Region` custom resource: one set region of the source design, deployed as a
//! service center (a StatefulSet on SQLite, a Deployment on PostgreSQL) paired with a
//! roaming system (Deployment).
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
    PEER_ENDPOINT_MAX_LEN, POSTGRES_ONLY_WITH_POSTGRES_MESSAGE, POSTGRES_REQUIRED_MESSAGE,
    REGION_CODE_MAX_LEN, REGION_CODE_PATTERN, SECRET_KEY_MAX_LEN, SECRET_KEY_PATTERN,
    SECRET_NAME_PATTERN, SERVICE_CENTER_REPLICAS_MESSAGE, SIZE_PATTERN,
    STORAGE_SQLITE_ONLY_MESSAGE, SUBSCRIPTIONS_MAX, SUBSCRIPTIONS_MIN,
};

/// CEL: the `DataCenterSpec` at `self` is PostgreSQL. `type` has a default, which the
/// API server fills in before validating; `has` keeps the rule total all the same.
const IS_POSTGRES: &str = "has(self.type) && self.type == 'postgres'";
/// CEL: the `ServiceCenterSpec` at `self` has a PostgreSQL data center.
const SERVICE_CENTER_ON_POSTGRES: &str =
    "has(self.dataCenter) && has(self.dataCenter.type) && self.dataCenter.type == 'postgres'";

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
#[x_kube(
    validation = Rule::new(format!("self.replicas == 1 || ({SERVICE_CENTER_ON_POSTGRES})"))
        .message(SERVICE_CENTER_REPLICAS_MESSAGE)
        .field_path(".replicas"),
    validation = Rule::new(format!("!has(self.storage) || !({SERVICE_CENTER_ON_POSTGRES})"))
        .message(STORAGE_SQLITE_ONLY_MESSAGE)
        .field_path(".storage")
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceCenterSpec {
    /// Number of service center pods. More than 1 only with
    /// `dataCenter.type: postgres`: a SQLite data center is one file on one
    /// volume that one process writes, so every replica beyond the first
    /// would need a data center of its own (refused, not accepted and ignored).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub replicas: i32,

    /// Compute resources of each service center pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The SQLite data center's volume (not with `dataCenter.type: postgres`).
    /// Without it the data lives in an emptyDir and does not survive the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,

    /// Where the data center is: SQLite (the default, also when this is
    /// absent) or PostgreSQL (docs/ARCHITECTURE.md §12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_center: Option<DataCenterSpec>,

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

    /// The most live subscriptions each service center pod holds at once
    /// (`meridian-node --max-subscriptions`); one more is refused with
    /// RESOURCE_EXHAUSTED. Each idle one costs memory (BENCHMARKS.md
    /// measures it), so size this to `resources`. The node's default,
    /// 10,000, when unset. 1 to 1,000,000: a million idle subscriptions
    /// already take many GiB, so a larger figure is a typo, not a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = SUBSCRIPTIONS_MIN, max = SUBSCRIPTIONS_MAX))]
    pub max_subscriptions: Option<i32>,
}

impl ServiceCenterSpec {
    /// Whether the data center is on PostgreSQL (`dataCenter.type: postgres`).
    pub fn on_postgres(&self) -> bool {
        self.data_center
            .as_ref()
            .is_some_and(|dc| dc.type_ == DataCenterType::Postgres)
    }

    /// The PostgreSQL connection, when the data center is on PostgreSQL and
    /// names one (validation requires it).
    pub fn postgres(&self) -> Option<&PostgresSpec> {
        self.data_center
            .as_ref()
            .filter(|dc| dc.type_ == DataCenterType::Postgres)?
            .postgres
            .as_ref()
    }
}

/// Where a region's data center is (docs/ARCHITECTURE.md §12).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new(format!("!({IS_POSTGRES}) || has(self.postgres)"))
        .message(POSTGRES_REQUIRED_MESSAGE)
        .field_path(".postgres"),
    validation = Rule::new(format!("!has(self.postgres) || ({IS_POSTGRES})"))
        .message(POSTGRES_ONLY_WITH_POSTGRES_MESSAGE)
        .field_path(".postgres")
)]
#[serde(rename_all = "camelCase")]
pub struct DataCenterSpec {
    /// `sqlite` (the default: one file on the pod's volume, one replica) or
    /// `postgres` (a shared PostgreSQL 15 or newer; several replicas).
    #[serde(default, rename = "type")]
    pub type_: DataCenterType,

    /// The PostgreSQL to use; required with `type: postgres`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
}

/// The data center's backend.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DataCenterType {
    /// The embedded SQLite file: one service center replica.
    #[default]
    Sqlite,
    /// A shared PostgreSQL: as many service center replicas as wanted.
    Postgres,
}

/// A PostgreSQL reached with the connection string in a Secret, for example
/// the `<cluster>-app` Secret of a CloudNativePG cluster.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    /// A Secret in the Region's namespace holding the connection string
    /// (a `postgresql://` URL or `key=value` pairs). The pods mount it; the
    /// operator never reads it.
    #[schemars(length(min = 1, max = NAME_MAX_LEN), regex(pattern = SECRET_NAME_PATTERN))]
    pub secret_name: String,

    /// The Secret's key holding the connection string: `uri` when unset, the
    /// key of CloudNativePG's `<cluster>-app` Secret.
    #[serde(default = "default_postgres_key")]
    #[schemars(length(min = 1, max = SECRET_KEY_MAX_LEN), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,

    /// Require TLS and verify the server's certificate and host name against
    /// this CA. Without it, TLS is whatever the connection string says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PostgresTlsSpec>,
}

/// The CA that PostgreSQL's server certificate must chain to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PostgresTlsSpec {
    /// A Secret in the Region's namespace holding the CA certificate(s) in
    /// PEM, for example CloudNativePG's `<cluster>-ca`.
    #[schemars(length(min = 1, max = NAME_MAX_LEN), regex(pattern = SECRET_NAME_PATTERN))]
    pub ca_secret_name: String,

    /// The Secret's key holding the CA: `ca.crt` when unset.
    #[serde(default = "default_postgres_ca_key")]
    #[schemars(length(min = 1, max = SECRET_KEY_MAX_LEN), regex(pattern = SECRET_KEY_PATTERN))]
    pub ca_key: String,
}

/// The key of the connection string in CloudNativePG's `<cluster>-app` Secret.
pub const DEFAULT_POSTGRES_KEY: &str = "uri";
/// The key of the CA in a CA Secret (cert-manager's and CloudNativePG's).
pub const DEFAULT_POSTGRES_CA_KEY: &str = "ca.crt";

fn default_postgres_key() -> String {
    DEFAULT_POSTGRES_KEY.to_owned()
}

fn default_postgres_ca_key() -> String {
    DEFAULT_POSTGRES_CA_KEY.to_owned()
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
            data_center: None,
            bandwidth: None,
            image: None,
            client_tls: None,
            max_subscriptions: None,
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
