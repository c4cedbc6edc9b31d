//! The roaming system's Deployment, and what both of a region's workloads'
//! pods share: the container, the common volumes and the pod template. The
//! service center's workload is in [`super::service_center`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    GRPCAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use meridian_crds::BandwidthSpec;

use super::{
    CONFIG_DIR, MESH_FILE, METRICS_PORT, PEER_PORT, PROBE_PORT, ROAMING_PAIR_PORT, Settings,
    TLS_DIR, ValidRegion, config_map_name, labels, roaming_name, selector,
};
use crate::controller::pki;
use crate::node_command::{self, Common, Identity};

/// What both of a pod's nodes are given: the mounted mesh configuration and
/// identity, and the plaintext probe port.
pub(super) fn common() -> Common {
    Common {
        config: format!("{CONFIG_DIR}/{MESH_FILE}"),
        identity: Identity {
            ca: format!("{TLS_DIR}/{}", pki::CA_KEY),
            cert: format!("{TLS_DIR}/{}", pki::CERT_KEY),
            key: format!("{TLS_DIR}/{}", pki::KEY_KEY),
        },
        listen_probe: Some(format!("0.0.0.0:{PROBE_PORT}")),
        exit_with_parent: false,
    }
}

/// `<region>-roaming`: `spec.roaming.replicas` of the roaming system.
pub fn roaming(region: ValidRegion<'_>, settings: &Settings, owner: &OwnerReference) -> Deployment {
    let code = region.code();
    let spec = &region.spec().roaming;
    let image = spec.image.clone().unwrap_or_else(|| settings.image.clone());
    let command = node_command::Roaming {
        listen_pair: format!("0.0.0.0:{ROAMING_PAIR_PORT}"),
        listen_peer: format!("0.0.0.0:{PEER_PORT}"),
        listen_metrics: format!("0.0.0.0:{METRICS_PORT}"),
    };
    let mut container = container(
        "roaming",
        image,
        command.args(&common()),
        &[
            ("pair", ROAMING_PAIR_PORT),
            ("peer", PEER_PORT),
            ("metrics", METRICS_PORT),
        ],
    );
    container.resources = spec.resources.clone();
    Deployment {
        metadata: region.metadata(roaming_name(code), "roaming", owner),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: selector(code, "roaming"),
            template: pod(
                code,
                "roaming",
                container,
                common_volumes(code),
                spec.bandwidth.as_ref(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A node's container: `args` from [`node_command`], `ports` and the probe
/// port, the mesh configuration, identity and a writable /tmp mounted, and
/// the restricted security context.
pub(super) fn container(
    name: &str,
    image: String,
    args: Vec<String>,
    ports: &[(&str, i32)],
) -> Container {
    Container {
        name: name.into(),
        image: Some(image),
        args: Some(args),
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

pub(super) fn common_volumes(region: &str) -> Vec<Volume> {
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
                secret_name: Some(super::super::pki::region_secret_name(region)),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        },
    ]
}

pub(super) fn pod(
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
