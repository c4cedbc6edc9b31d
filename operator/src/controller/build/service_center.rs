//! The service center's workload, by where its data center is
//! (docs/ARCHITECTURE.md §12, `spec.serviceCenter.dataCenter`):
//!
//! - **SQLite**: a StatefulSet of one pod. The data center is one file on
//!   the pod's own volume that one process writes, so there is never a
//!   second replica.
//! - **PostgreSQL**: a Deployment of `spec.serviceCenter.replicas` pods that
//!   share the database. Nothing is kept in the pod, so it needs no claim and
//!   no stable identity. Its pods roll one at a time without going below
//!   the replica count, spread over nodes and zones, and have a
//!   PodDisruptionBudget. The connection string (and the CA, with `tls`) are
//!   mounted from their Secrets as files and named on the command line.
//!
//! Both kinds are named `<region>-service-center` and make pods with the
//! same labels, so the Service `<region>-service-center` (and so the pair
//! endpoint in the mesh configuration) reaches either. On PostgreSQL the
//! roaming system also finds each replica by the headless Service
//! `<region>-service-center-pods` (`services::service_center_pods_service`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodTemplateSpec, SecretVolumeSource, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_crds::PostgresSpec;

use super::pods::{common, common_volumes, container, pod};
use super::{
    CLIENT_PORT, CLIENT_TLS_DIR, DATA_DIR, DATA_VOLUME, METRICS_PORT, SERVICE_CENTER_PAIR_PORT,
    Settings, ValidRegion, selector, service_center_name,
};
use crate::node_command::{self, ClientTls, DataCenter};

const COMPONENT: &str = "service-center";

/// Where the Secret with PostgreSQL's connection string is mounted.
pub const POSTGRES_DIR: &str = "/etc/meridian-postgres";
/// The connection string's file in [`POSTGRES_DIR`] (`--postgres-url-file`).
pub const POSTGRES_URL_FILE: &str = "url";
/// Where the Secret with PostgreSQL's CA is mounted.
pub const POSTGRES_CA_DIR: &str = "/etc/meridian-postgres-ca";
/// The CA's file in [`POSTGRES_CA_DIR`] (`--postgres-ca-file`).
pub const POSTGRES_CA_FILE: &str = "ca.crt";

/// The topology keys the PostgreSQL replicas spread over: nodes, then zones.
pub const SPREAD_KEYS: [&str; 2] = ["kubernetes.io/hostname", "topology.kubernetes.io/zone"];

/// The service center's workload: one kind or the other, never both (the
/// operator removes the other kind when a Region switches).
#[derive(Clone, Debug)]
pub enum ServiceCenterWorkload {
    /// SQLite: one pod, its data on its own volume.
    StatefulSet(StatefulSet),
    /// PostgreSQL: `replicas` pods sharing the database, and their budget
    /// (boxed: the variants are then of a size).
    Deployment {
        deployment: Deployment,
        budget: Box<PodDisruptionBudget>,
    },
}

impl ServiceCenterWorkload {
    /// The pods' template.
    pub fn template(&self) -> &PodTemplateSpec {
        match self {
            Self::StatefulSet(sts) => &sts.spec.template,
            Self::Deployment { deployment, .. } => &deployment.spec.template,
        }
    }

    pub fn template_mut(&mut self) -> &mut PodTemplateSpec {
        match self {
            Self::StatefulSet(sts) => &mut sts.spec.template,
            Self::Deployment { deployment, .. } => &mut deployment.spec.template,
        }
    }

    /// The StatefulSet, on SQLite.
    pub fn statefulset_mut(&mut self) -> Option<&mut StatefulSet> {
        match self {
            Self::StatefulSet(sts) => Some(sts),
            Self::Deployment { .. } => None,
        }
    }
}

/// `<region>-service-center`: a StatefulSet on SQLite, a Deployment (with
/// its PodDisruptionBudget) on PostgreSQL.
pub fn service_center(
    region: ValidRegion<'_>,
    settings: &Settings,
    owner: &OwnerReference,
) -> ServiceCenterWorkload {
    match region.spec().service_center.postgres() {
        Some(postgres) => ServiceCenterWorkload::Deployment {
            deployment: deployment(region, settings, owner, postgres),
            budget: Box::new(disruption_budget(region, owner)),
        },
        None => ServiceCenterWorkload::StatefulSet(statefulset(region, settings, owner)),
    }
}

/// The service center's pod template: the node run with `data_center`,
/// `data_mounts` mounted (before the client API's certificate, when the
/// spec names one) and the volumes so far, to which the caller adds its
/// data volumes.
fn template(
    region: ValidRegion<'_>,
    settings: &Settings,
    data_center: DataCenter,
    data_mounts: Vec<VolumeMount>,
) -> (k8s_openapi::api::core::v1::Container, Vec<Volume>) {
    let code = region.code();
    let sc = &region.spec().service_center;
    let image = sc.image.clone().unwrap_or_else(|| settings.image.clone());
    let command = node_command::ServiceCenter {
        data_center,
        listen_client: format!("0.0.0.0:{CLIENT_PORT}"),
        listen_pair: format!("0.0.0.0:{SERVICE_CENTER_PAIR_PORT}"),
        listen_metrics: Some(format!("0.0.0.0:{METRICS_PORT}")),
        // The client API's own certificate, re-read by the node on renewal.
        client_tls: match &sc.client_tls {
            Some(_) => ClientTls::Files {
                cert: format!("{CLIENT_TLS_DIR}/tls.crt"),
                key: format!("{CLIENT_TLS_DIR}/tls.key"),
            },
            None => ClientTls::Off,
        },
        max_subscriptions: sc.max_subscriptions,
    };
    let mut container = container(
        COMPONENT,
        image,
        command.args(&common()),
        &[
            ("client", CLIENT_PORT),
            ("pair", SERVICE_CENTER_PAIR_PORT),
            ("metrics", METRICS_PORT),
        ],
    );
    container.resources = sc.resources.clone();
    container
        .volume_mounts
        .get_or_insert_default()
        .extend(data_mounts);
    let mut volumes = common_volumes(code);
    if let Some(tls) = &sc.client_tls {
        container
            .volume_mounts
            .get_or_insert_default()
            .push(read_only_mount("client-tls", CLIENT_TLS_DIR));
        volumes.push(secret_volume("client-tls", &tls.secret_name, None));
    }
    (container, volumes)
}

/// On SQLite: one replica, its data on the claim the spec's storage asks
/// for (an emptyDir without), the client API's own certificate mounted when
/// the spec names one.
fn statefulset(
    region: ValidRegion<'_>,
    settings: &Settings,
    owner: &OwnerReference,
) -> StatefulSet {
    let code = region.code();
    let sc = &region.spec().service_center;
    let name = service_center_name(code);
    let data_mount = VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_DIR.into(),
        ..Default::default()
    };
    let (container, mut volumes) = template(
        region,
        settings,
        DataCenter::Sqlite {
            data_dir: DATA_DIR.into(),
        },
        vec![data_mount],
    );
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
            volumes.push(Volume {
                name: DATA_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            None
        }
    };
    StatefulSet {
        metadata: region.metadata(name.clone(), COMPONENT, owner),
        spec: StatefulSetSpec {
            // One data center file per region: a second writer would fork it.
            replicas: Some(1),
            service_name: Some(name),
            selector: selector(code, COMPONENT),
            template: pod(code, COMPONENT, container, volumes, sc.bandwidth.as_ref()),
            volume_claim_templates: claims,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// On PostgreSQL: `spec.serviceCenter.replicas` pods, rolled one at a time
/// without going below that count (one extra pod during a rollout, none
/// missing), spread over nodes and zones, the connection string mounted
/// at [`POSTGRES_DIR`] and, with `tls`, the CA at [`POSTGRES_CA_DIR`].
fn deployment(
    region: ValidRegion<'_>,
    settings: &Settings,
    owner: &OwnerReference,
    postgres: &PostgresSpec,
) -> Deployment {
    let code = region.code();
    let sc = &region.spec().service_center;
    let mut mounts = vec![read_only_mount("postgres", POSTGRES_DIR)];
    let mut data_volumes = vec![secret_volume(
        "postgres",
        &postgres.secret_name,
        Some((&postgres.key, POSTGRES_URL_FILE)),
    )];
    if let Some(tls) = &postgres.tls {
        mounts.push(read_only_mount("postgres-ca", POSTGRES_CA_DIR));
        data_volumes.push(secret_volume(
            "postgres-ca",
            &tls.ca_secret_name,
            Some((&tls.ca_key, POSTGRES_CA_FILE)),
        ));
    }
    let data_center = DataCenter::Postgres {
        url_file: format!("{POSTGRES_DIR}/{POSTGRES_URL_FILE}"),
        ca_file: postgres
            .tls
            .as_ref()
            .map(|_| format!("{POSTGRES_CA_DIR}/{POSTGRES_CA_FILE}")),
    };
    let (container, mut volumes) = template(region, settings, data_center, mounts);
    volumes.extend(data_volumes);
    let mut template = pod(code, COMPONENT, container, volumes, sc.bandwidth.as_ref());
    if let Some(spec) = template.spec.as_mut() {
        spec.topology_spread_constraints = Some(spread(code));
    }
    Deployment {
        metadata: region.metadata(service_center_name(code), COMPONENT, owner),
        spec: DeploymentSpec {
            replicas: Some(sc.replicas),
            selector: selector(code, COMPONENT),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Spread the replicas over nodes and zones as far as the cluster allows:
/// `ScheduleAnyway`, so that a cluster with one node or no zone labels
/// still runs them all. `pod-template-hash` makes each rollout's pods
/// spread among themselves rather than around the old ones leaving.
fn spread(code: &str) -> Vec<TopologySpreadConstraint> {
    SPREAD_KEYS
        .iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: (*key).into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(selector(code, COMPONENT)),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..Default::default()
        })
        .collect()
}

/// `<region>-service-center` on PostgreSQL: `maxUnavailable: 1`. Voluntary
/// evictions (a drain, a node upgrade) then take one replica at a time, as
/// the rollout does. `minAvailable: 1` was the alternative and is worse at
/// both ends. At 3 or more replicas it lets all but one go at once, where
/// this keeps all but one serving. At 1 replica it blocks every drain until
/// someone scales up, where this lets the drain through: one pod cannot
/// move without a gap, and a budget that pretends otherwise only stalls the
/// node. A pod that is not ready (its PostgreSQL unreachable, say) serves
/// nobody, so `unhealthyPodEvictionPolicy: AlwaysAllow` lets it be evicted
/// even when the budget is spent.
fn disruption_budget(region: ValidRegion<'_>, owner: &OwnerReference) -> PodDisruptionBudget {
    let code = region.code();
    PodDisruptionBudget {
        metadata: region.metadata(service_center_name(code), COMPONENT, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(code, COMPONENT)),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn read_only_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Secret `secret` as volume `name`, readable by the pod's group only;
/// with `item` (key, file), that one key alone as that file: a key missing
/// from the Secret then keeps the pod from starting, with an Event naming it.
fn secret_volume(name: &str, secret: &str, item: Option<(&str, &str)>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: item.map(|(key, path)| {
                vec![KeyToPath {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    ..Default::default()
                }]
            }),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}
