//! The desired objects of one local Region, built by pure functions from the
//! Region, its namespace's other Regions and RegionLinks, and the operator's
//! settings. Nothing here talks to the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    GRPCAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_crds::{BandwidthSpec, PeerServiceSpec, Region, RegionLink};
use meridian_node::mesh::MeshConfig;

use crate::mesh::{PairEndpoints, mesh_config};

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
    pub service_center: StatefulSet,
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

/// The node's arguments for its identity and its probe port.
fn trust_args() -> Vec<String> {
    vec![
        "--tls-ca".into(),
        format!("{TLS_DIR}/{}", super::pki::CA_KEY),
        "--tls-cert".into(),
        format!("{TLS_DIR}/{}", super::pki::CERT_KEY),
        "--tls-key".into(),
        format!("{TLS_DIR}/{}", super::pki::KEY_KEY),
        "--listen-probe".into(),
        format!("0.0.0.0:{PROBE_PORT}"),
    ]
}

/// Builds the desired objects of `region` (which must be local and valid).
pub fn desired(
    region: &Region,
    regions: &[Region],
    links: &[RegionLink],
    settings: &Settings,
    owner: OwnerReference,
) -> Desired {
    let code = region.metadata.name.clone().unwrap_or_default();
    let namespace = region.metadata.namespace.clone().unwrap_or_default();
    let pair = PairEndpoints {
        service_center: format!(
            "https://{}.{namespace}.svc:{SERVICE_CENTER_PAIR_PORT}",
            service_center_name(&code)
        ),
        roaming: format!(
            "https://{}.{namespace}.svc:{ROAMING_PAIR_PORT}",
            roaming_name(&code)
        ),
    };
    let mesh = mesh_config(&code, pair, regions, links, |peer| {
        let name = peer.metadata.name.as_deref()?;
        if peer.spec.cluster == settings.cluster {
            Some(peer_url(name, &namespace))
        } else {
            peer.spec.peer_endpoint.as_deref().map(remote_peer_url)
        }
    });
    let meta = |name: String, component: &str| ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&code, component)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };

    let config_map = ConfigMap {
        metadata: meta(config_map_name(&code), "mesh"),
        data: Some(BTreeMap::from([(MESH_FILE.to_owned(), mesh.to_yaml())])),
        ..Default::default()
    };

    let sc = &region.spec.service_center;
    let sc_name = service_center_name(&code);
    let sc_image = sc.image.clone().unwrap_or_else(|| settings.image.clone());
    let sc_args = [
        "--role",
        "service-center",
        "--config",
        &format!("{CONFIG_DIR}/{MESH_FILE}"),
        "--data-dir",
        DATA_DIR,
        "--listen-client",
        &format!("0.0.0.0:{CLIENT_PORT}"),
        "--listen-pair",
        &format!("0.0.0.0:{SERVICE_CENTER_PAIR_PORT}"),
        "--listen-metrics",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ];
    let mut sc_container = container(
        "service-center",
        sc_image,
        &sc_args,
        &[
            ("client", CLIENT_PORT),
            ("pair", SERVICE_CENTER_PAIR_PORT),
            ("metrics", METRICS_PORT),
        ],
    );
    sc_container.resources = sc.resources.clone();
    sc_container
        .volume_mounts
        .get_or_insert_default()
        .push(VolumeMount {
            name: DATA_VOLUME.into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        });
    let mut sc_volumes = common_volumes(&code);
    if let Some(tls) = &sc.client_tls {
        // The client API's own certificate, re-read by the node on renewal.
        sc_container.args.get_or_insert_default().extend([
            "--client-tls-cert".to_owned(),
            format!("{CLIENT_TLS_DIR}/tls.crt"),
            "--client-tls-key".to_owned(),
            format!("{CLIENT_TLS_DIR}/tls.key"),
        ]);
        sc_container
            .volume_mounts
            .get_or_insert_default()
            .push(VolumeMount {
                name: "client-tls".into(),
                mount_path: CLIENT_TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        sc_volumes.push(Volume {
            name: "client-tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let claims = match &sc.storage {
        Some(storage) => Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: storage.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(storage.size.clone()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        None => {
            sc_volumes.push(Volume {
                name: DATA_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            None
        }
    };
    let service_center = StatefulSet {
        metadata: meta(sc_name.clone(), "service-center"),
        spec: StatefulSetSpec {
            // One data center per region: a second writer would fork it.
            replicas: Some(1),
            service_name: Some(sc_name.clone()),
            selector: selector(&code, "service-center"),
            template: pod(
                &code,
                "service-center",
                sc_container,
                sc_volumes,
                sc.bandwidth.as_ref(),
            ),
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    };
    let service_center_service = service(
        meta(sc_name, "service-center"),
        &code,
        "service-center",
        &[("client", CLIENT_PORT), ("pair", SERVICE_CENTER_PAIR_PORT)],
    );

    let roaming_spec = &region.spec.roaming;
    let r_name = roaming_name(&code);
    let r_image = roaming_spec
        .image
        .clone()
        .unwrap_or_else(|| settings.image.clone());
    let r_args = [
        "--role",
        "roaming",
        "--config",
        &format!("{CONFIG_DIR}/{MESH_FILE}"),
        "--listen-roaming-pair",
        &format!("0.0.0.0:{ROAMING_PAIR_PORT}"),
        "--listen-peer",
        &format!("0.0.0.0:{PEER_PORT}"),
        "--listen-metrics",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ];
    let mut r_container = container(
        "roaming",
        r_image,
        &r_args,
        &[
            ("pair", ROAMING_PAIR_PORT),
            ("peer", PEER_PORT),
            ("metrics", METRICS_PORT),
        ],
    );
    r_container.resources = roaming_spec.resources.clone();
    let roaming = Deployment {
        metadata: meta(r_name.clone(), "roaming"),
        spec: DeploymentSpec {
            replicas: Some(roaming_spec.replicas),
            selector: selector(&code, "roaming"),
            template: pod(
                &code,
                "roaming",
                r_container,
                common_volumes(&code),
                roaming_spec.bandwidth.as_ref(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    // In-cluster addressing (the pair endpoint, local peers' URLs, the
    // certificate's names) stays on `<region>-roaming`, always ClusterIP.
    let roaming_service = service(
        meta(r_name, "roaming"),
        &code,
        "roaming",
        &[("pair", ROAMING_PAIR_PORT), ("peer", PEER_PORT)],
    );
    let roaming_peer_service = peer_service(
        meta(roaming_peer_name(&code), "roaming"),
        &code,
        roaming_spec.peer_service.clone().unwrap_or_default(),
    );

    let network_policy =
        super::policy::network_policy(meta(format!("{code}-meridian"), "network"), &code);
    Desired {
        mesh,
        config_map,
        network_policy,
        service_center_service,
        service_center,
        roaming_service,
        roaming_peer_service,
        roaming,
    }
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

fn container(name: &str, image: String, args: &[&str], ports: &[(&str, i32)]) -> Container {
    Container {
        name: name.into(),
        image: Some(image),
        args: Some(
            args.iter()
                .map(|a| a.to_string())
                .chain(trust_args())
                .collect(),
        ),
        ports: Some(
            ports
                .iter()
                .chain(&[("probe", PROBE_PORT)])
                .map(|(n, p)| ContainerPort {
                    name: Some(n.to_string()),
                    container_port: *p,
                    ..Default::default()
                })
                .collect(),
        ),
        // The probe port answers grpc.health.v1 once the node serves.
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: PROBE_PORT,
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "mesh".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tls".into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        // Pod Security Standard "restricted", plus a read-only root filesystem.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn common_volumes(region: &str) -> Vec<Volume> {
    vec![
        Volume {
            name: "mesh".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(region),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        // Readable by the pod's group (fsGroup) only: the key is in it.
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(super::pki::region_secret_name(region)),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

fn pod(
    region: &str,
    component: &str,
    container: Container,
    volumes: Vec<Volume>,
    bandwidth: Option<&BandwidthSpec>,
) -> PodTemplateSpec {
    let mut annotations = BTreeMap::new();
    if let Some(bandwidth) = bandwidth {
        if let Some(ingress) = &bandwidth.ingress {
            annotations.insert(
                "kubernetes.io/ingress-bandwidth".to_owned(),
                ingress.clone(),
            );
        }
        if let Some(egress) = &bandwidth.egress {
            annotations.insert("kubernetes.io/egress-bandwidth".to_owned(), egress.clone());
        }
    }
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(region, component)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(volumes),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_crds::manifest;
    use std::path::PathBuf;

    const MANIFESTS: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec:
  cluster: a
  serviceCenter:
    resources: {requests: {cpu: 500m}}
    storage: {size: 10Gi, storageClassName: fast}
    bandwidth: {ingress: 100M, egress: 50M}
  roaming: {replicas: 2, image: 'example/roaming:1'}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: us, namespace: chat}
spec: {cluster: a}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: ap, namespace: chat}
spec: {cluster: b, peerEndpoint: 'roaming.ap.example.net:7443'}
---
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: sa, namespace: chat}
spec: {cluster: b}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: eu-us, namespace: chat}
spec: {regions: [eu, us], enabled: false}
";

    fn desired_eu() -> Desired {
        desired_eu_with(|_| {})
    }

    /// eu's desired objects, after `change` to the parsed eu Region.
    fn desired_eu_with(change: impl FnOnce(&mut Region)) -> Desired {
        desired_eu_from(MANIFESTS, change)
    }

    /// eu's desired objects from `manifests` (eu first), after `change` to eu.
    fn desired_eu_from(manifests: &str, change: impl FnOnce(&mut Region)) -> Desired {
        let mut m = manifest::parse(&[(PathBuf::from("m.yaml"), manifests.to_owned())]).unwrap();
        change(&mut m.regions[0]);
        let settings = Settings {
            cluster: "a".into(),
            image: "example/node:1".into(),
        };
        let owner = OwnerReference {
            name: "eu".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        };
        desired(&m.regions[0], &m.regions, &m.links, &settings, owner)
    }

    /// Every object `desired` builds for eu, in several variants, as YAML:
    /// the generated manifests, compared with `testdata/desired.yaml` so
    /// that no change to them goes unnoticed. After an intended change,
    /// `MERIDIAN_UPDATE_GOLDEN=1 cargo test -p meridian-operator golden`
    /// rewrites the file, and its diff shows the change.
    #[test]
    fn the_generated_manifests_are_the_golden_ones() {
        let variants = [
            ("eu as in MANIFESTS", desired_eu()),
            (
                "client TLS, no storage, roaming image unset",
                desired_eu_with(|eu| {
                    eu.spec.service_center.client_tls = Some(meridian_crds::region::ClientTlsSpec {
                        secret_name: "chat-example-com".into(),
                    });
                    eu.spec.service_center.storage = None;
                    eu.spec.roaming.image = None;
                }),
            ),
            (
                "NodePort peer Service",
                desired_eu_from(
                    &with_eu_peer_service("{type: NodePort, nodePort: 30701}"),
                    |_| {},
                ),
            ),
            (
                "LoadBalancer peer Service",
                desired_eu_from(&with_eu_peer_service("{type: LoadBalancer}"), |_| {}),
            ),
        ];
        let mut text = String::new();
        for (variant, d) in &variants {
            text.push_str(&format!("# {variant}\n"));
            let objects = [
                serde_yaml::to_string(&d.config_map),
                serde_yaml::to_string(&d.network_policy),
                serde_yaml::to_string(&d.service_center_service),
                serde_yaml::to_string(&d.service_center),
                serde_yaml::to_string(&d.roaming_service),
                serde_yaml::to_string(&d.roaming_peer_service),
                serde_yaml::to_string(&d.roaming),
            ];
            for object in objects {
                text.push_str("---\n");
                text.push_str(&object.unwrap());
            }
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/controller/testdata/desired.yaml");
        if std::env::var_os("MERIDIAN_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap();
        assert!(
            golden == text,
            "the generated manifests differ from {}; if intended, rewrite it with MERIDIAN_UPDATE_GOLDEN=1",
            path.display()
        );
    }

    #[test]
    fn local_peers_use_services_and_remote_peers_their_endpoint() {
        let d = desired_eu();
        let peers: Vec<(&str, &str, bool)> = d
            .mesh
            .peers
            .iter()
            .map(|p| (p.region.as_str(), p.endpoint.as_str(), p.enabled))
            .collect();
        assert_eq!(
            peers,
            vec![
                ("ap", "https://roaming.ap.example.net:7443", true),
                ("us", "https://us-roaming.chat.svc:7443", false),
            ],
            "sa is remote without a peerEndpoint, so it cannot be reached and is left out"
        );
        assert_eq!(
            d.mesh.service_center.pair,
            "https://eu-service-center.chat.svc:7401"
        );
        assert_eq!(
            d.config_map.data.as_ref().unwrap()["mesh.yaml"],
            d.mesh.to_yaml()
        );
    }

    #[test]
    fn workloads_follow_the_spec_and_are_owned_by_the_region() {
        let d = desired_eu();
        let sts = &d.service_center;
        assert_eq!(sts.metadata.name.as_deref(), Some("eu-service-center"));
        assert_eq!(
            sts.metadata.owner_references.as_ref().unwrap()[0].name,
            "eu"
        );
        let claim = &sts.spec.volume_claim_templates.as_ref().unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "10Gi"
        );
        let template = &sts.spec.template;
        let annotations = template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations["kubernetes.io/ingress-bandwidth"], "100M");
        assert_eq!(annotations["kubernetes.io/egress-bandwidth"], "50M");
        let container = &template.spec.as_ref().unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("example/node:1"));
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"]
                .0,
            "500m"
        );

        let roaming = &d.roaming;
        assert_eq!(roaming.spec.replicas, Some(2));
        let r_container = &roaming.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(r_container.image.as_deref(), Some("example/roaming:1"));
        let ports: Vec<i32> = d
            .roaming_service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port)
            .collect();
        assert_eq!(ports, vec![ROAMING_PAIR_PORT, PEER_PORT]);
    }

    #[test]
    fn readiness_is_the_grpc_health_check_of_the_plaintext_probe_port() {
        let d = desired_eu();
        for template in [&d.service_center.spec.template, &d.roaming.spec.template] {
            let container = &template.spec.as_ref().unwrap().containers[0];
            let probe = container.readiness_probe.as_ref().unwrap();
            assert_eq!(probe.grpc.as_ref().map(|g| g.port), Some(PROBE_PORT));
            assert!(probe.tcp_socket.is_none());
            let args = container.args.as_ref().unwrap();
            assert!(args.contains(&format!("0.0.0.0:{PROBE_PORT}")), "{args:?}");
        }
    }

    #[test]
    fn a_client_certificate_in_the_spec_is_mounted_into_the_service_center() {
        let d = desired_eu();
        let args = |d: &Desired| {
            d.service_center
                .spec
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .args
                .clone()
                .unwrap()
                .join(" ")
        };
        assert!(!args(&d).contains("--client-tls"), "plaintext unless asked");
        let d = desired_eu_with(|eu| {
            eu.spec.service_center.client_tls = Some(meridian_crds::region::ClientTlsSpec {
                secret_name: "chat-example-com".into(),
            });
        });
        assert!(args(&d).contains("--client-tls-cert /etc/meridian-client-tls/tls.crt"));
        let spec = d.service_center.spec.template.spec.unwrap();
        let volume = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "client-tls")
            .unwrap();
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("chat-example-com")
        );
    }

    #[test]
    fn both_pods_mount_the_regions_identity_and_use_it() {
        let d = desired_eu();
        for template in [&d.service_center.spec.template, &d.roaming.spec.template] {
            let spec = template.spec.as_ref().unwrap();
            let volume = spec
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "tls")
                .expect("a tls volume");
            let secret = volume.secret.as_ref().unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("eu-tls"));
            assert_eq!(secret.default_mode, Some(0o440));
            let container = &spec.containers[0];
            let args = container.args.as_ref().unwrap().join(" ");
            assert!(
                args.contains("--tls-key /etc/meridian-tls/tls.key"),
                "{args}"
            );
        }
        assert!(d.mesh.roaming.pair.starts_with("https://"));
        assert!(
            d.mesh
                .peers
                .iter()
                .all(|p| p.endpoint.starts_with("https://"))
        );
    }

    #[test]
    fn pods_meet_the_restricted_pod_security_standard() {
        let d = desired_eu();
        for template in [&d.service_center.spec.template, &d.roaming.spec.template] {
            let spec = template.spec.as_ref().unwrap();
            let pod = spec.security_context.as_ref().unwrap();
            assert_eq!(pod.run_as_non_root, Some(true));
            assert_eq!(
                pod.seccomp_profile.as_ref().unwrap().type_,
                "RuntimeDefault"
            );
            for container in &spec.containers {
                let sc = container.security_context.as_ref().unwrap();
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(sc.read_only_root_filesystem, Some(true));
                assert_eq!(
                    sc.capabilities.as_ref().unwrap().drop.as_deref(),
                    Some(&["ALL".to_owned()][..])
                );
            }
        }
    }

    /// MANIFESTS with eu's `spec.roaming.peerService` set to `peer` (flow YAML).
    fn with_eu_peer_service(peer: &str) -> String {
        let roaming = "roaming: {replicas: 2, image: 'example/roaming:1'}";
        assert!(MANIFESTS.contains(roaming));
        MANIFESTS.replacen(
            roaming,
            &format!("roaming: {{replicas: 2, image: 'example/roaming:1', peerService: {peer}}}"),
            1,
        )
    }

    /// (name, port, targetPort, nodePort) of each port of `service`.
    fn service_ports(service: &Service) -> Vec<(String, i32, Option<IntOrString>, Option<i32>)> {
        service
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    p.target_port.clone(),
                    p.node_port,
                )
            })
            .collect()
    }

    fn service_type(service: &Service) -> Option<&str> {
        service.spec.as_ref().unwrap().type_.as_deref()
    }

    #[test]
    fn the_peer_service_is_cluster_ip_by_default_and_carries_the_peer_port_alone() {
        let d = desired_eu();
        let peer = &d.roaming_peer_service;
        assert_eq!(peer.metadata.name.as_deref(), Some("eu-roaming-peer"));
        assert_eq!(peer.metadata.namespace.as_deref(), Some("chat"));
        assert_eq!(
            peer.metadata.owner_references.as_ref().unwrap()[0].name,
            "eu"
        );
        assert_eq!(service_type(peer), Some("ClusterIP"));
        assert_eq!(
            service_ports(peer),
            vec![(
                "peer".to_owned(),
                PEER_PORT,
                Some(IntOrString::Int(PEER_PORT)),
                None
            )]
        );
        assert_eq!(
            peer.spec.as_ref().unwrap().selector,
            d.roaming_service.spec.as_ref().unwrap().selector,
            "the same roaming pods"
        );
        // An explicit ClusterIP is the same as none.
        let explicit = desired_eu_from(&with_eu_peer_service("{type: ClusterIP}"), |_| {});
        assert_eq!(explicit.roaming_peer_service, d.roaming_peer_service);
    }

    #[test]
    fn a_node_port_peer_service_exposes_the_peer_port_at_the_given_node_port() {
        let d = desired_eu_from(
            &with_eu_peer_service("{type: NodePort, nodePort: 30701}"),
            |_| {},
        );
        let peer = &d.roaming_peer_service;
        assert_eq!(service_type(peer), Some("NodePort"));
        assert_eq!(
            service_ports(peer),
            vec![(
                "peer".to_owned(),
                PEER_PORT,
                Some(IntOrString::Int(PEER_PORT)),
                Some(30701)
            )]
        );

        // In-cluster addressing is unchanged: the pair endpoints and local
        // peers still use `<region>-roaming`, which stays ClusterIP with
        // the pair and peer ports.
        let plain = desired_eu();
        assert_eq!(d.roaming_service, plain.roaming_service);
        assert_eq!(service_type(&d.roaming_service), None, "ClusterIP");
        assert_eq!(d.mesh, plain.mesh);
        assert_eq!(d.mesh.roaming.pair, "https://eu-roaming.chat.svc:7402");
        assert_eq!(
            d.mesh.peer("us").map(|p| p.endpoint.as_str()),
            Some("https://us-roaming.chat.svc:7443")
        );
    }

    #[test]
    fn a_load_balancer_peer_service_lets_kubernetes_pick_the_node_port() {
        let d = desired_eu_from(&with_eu_peer_service("{type: LoadBalancer}"), |_| {});
        let peer = &d.roaming_peer_service;
        assert_eq!(service_type(peer), Some("LoadBalancer"));
        assert_eq!(
            service_ports(peer),
            vec![(
                "peer".to_owned(),
                PEER_PORT,
                Some(IntOrString::Int(PEER_PORT)),
                None
            )]
        );
    }

    #[test]
    fn invalid_peer_services_are_refused_naming_the_field() {
        for (peer, why) in [
            (
                "{nodePort: 30701}",
                "is allowed only with type NodePort or LoadBalancer, not ClusterIP",
            ),
            (
                "{type: ClusterIP, nodePort: 30701}",
                "is allowed only with type NodePort or LoadBalancer, not ClusterIP",
            ),
            (
                "{type: NodePort, nodePort: 80}",
                "must be in 30000-32767 (Kubernetes' default node port range), not 80",
            ),
        ] {
            let err = manifest::parse(&[(PathBuf::from("m.yaml"), with_eu_peer_service(peer))])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "Region \"eu\"): spec.roaming.peerService.nodePort: {why}"
                )),
                "{peer}: {err}"
            );
        }
    }

    /// The pair port must never reach outside the cluster: it is on no
    /// Service that may get node ports, and the NetworkPolicy opens it only
    /// to the region's own pods, while every port of the peer Service is
    /// open from anywhere (mutual TLS), as node-port traffic needs.
    #[test]
    fn only_the_peer_port_leaves_the_cluster_and_the_network_policy_agrees() {
        let d = desired_eu_from(
            &with_eu_peer_service("{type: NodePort, nodePort: 30701}"),
            |_| {},
        );
        let exposed: Vec<i32> = service_ports(&d.roaming_peer_service)
            .into_iter()
            .map(|(_, port, _, _)| port)
            .collect();
        assert_eq!(exposed, vec![PEER_PORT]);
        for internal in [&d.roaming_service, &d.service_center_service] {
            assert!(
                matches!(service_type(internal), None | Some("ClusterIP")),
                "{:?}",
                internal.metadata.name
            );
        }

        let rules = d
            .network_policy
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .clone()
            .unwrap();
        let ports = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
            rule.ports
                .iter()
                .flatten()
                .filter_map(|p| match p.port {
                    Some(IntOrString::Int(n)) => Some(n),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let open: Vec<i32> = rules
            .iter()
            .filter(|r| r.from.is_none())
            .flat_map(ports)
            .collect();
        for port in &exposed {
            assert!(open.contains(port), "{port} is open from anywhere");
        }
        assert!(!open.contains(&ROAMING_PAIR_PORT));
        assert!(!open.contains(&SERVICE_CENTER_PAIR_PORT));
    }
}
