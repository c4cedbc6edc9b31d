//! The builders' tests, and the golden file of what they build.

use std::path::PathBuf;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_crds::manifest;

use super::*;

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

/// CloudNativePG's names: the `<cluster>-app` Secret (key `uri`, the
/// default) and the `<cluster>-ca` Secret (key `ca.crt`, the default).
const POSTGRES_WITH_CA: &str =
    "{type: postgres, postgres: {secretName: chat-db-app, tls: {caSecretName: chat-db-ca}}}";
const POSTGRES_PLAIN: &str =
    "{type: postgres, postgres: {secretName: db-credentials, key: connection-string}}";

/// Moves `eu`'s data center to PostgreSQL (`data_center`, flow YAML), with
/// `replicas` service center replicas and no volume (refused there).
fn on_postgres(eu: &mut Region, replicas: i32, data_center: &str) {
    let sc = &mut eu.spec.service_center;
    sc.storage = None;
    sc.replicas = replicas;
    sc.data_center = Some(serde_yaml::from_str(data_center).unwrap());
}

/// The service center's Deployment and budget, which must be there.
fn deployment_and_budget(d: &Desired) -> (&Deployment, &PodDisruptionBudget) {
    match &d.service_center {
        ServiceCenterWorkload::Deployment { deployment, budget } => (deployment, budget),
        ServiceCenterWorkload::StatefulSet(_) => panic!("a StatefulSet on PostgreSQL"),
    }
}

fn statefulset(d: &Desired) -> &k8s_openapi::api::apps::v1::StatefulSet {
    match &d.service_center {
        ServiceCenterWorkload::StatefulSet(sts) => sts,
        ServiceCenterWorkload::Deployment { .. } => panic!("a Deployment on SQLite"),
    }
}

fn service_center_container(d: &Desired) -> &k8s_openapi::api::core::v1::Container {
    &d.service_center
        .template()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
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
    let eu = ValidRegion::check(&m.regions[0]).unwrap();
    desired(eu, &m.regions, &m.links, &settings, owner)
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
        (
            "PostgreSQL data center, 2 replicas, CA, client TLS",
            desired_eu_with(|eu| {
                on_postgres(eu, 2, POSTGRES_WITH_CA);
                eu.spec.service_center.client_tls = Some(meridian_crds::region::ClientTlsSpec {
                    secret_name: "chat-example-com".into(),
                });
            }),
        ),
    ];
    let mut text = String::new();
    for (variant, d) in &variants {
        text.push_str(&format!("# {variant}\n"));
        let mut objects = vec![
            serde_yaml::to_string(&d.config_map),
            serde_yaml::to_string(&d.network_policy),
            serde_yaml::to_string(&d.service_center_service),
        ];
        objects.extend(
            d.service_center_pods_service
                .iter()
                .map(serde_yaml::to_string),
        );
        match &d.service_center {
            ServiceCenterWorkload::StatefulSet(sts) => objects.push(serde_yaml::to_string(sts)),
            ServiceCenterWorkload::Deployment { deployment, budget } => {
                objects.push(serde_yaml::to_string(deployment));
                objects.push(serde_yaml::to_string(budget));
            }
        }
        objects.extend([
            serde_yaml::to_string(&d.roaming_service),
            serde_yaml::to_string(&d.roaming_peer_service),
            serde_yaml::to_string(&d.roaming),
        ]);
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
    let sts = statefulset(&d);
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
    for template in [d.service_center.template(), &d.roaming.spec.template] {
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
    let args = |d: &Desired| service_center_container(d).args.clone().unwrap().join(" ");
    assert!(!args(&d).contains("--client-tls"), "plaintext unless asked");
    let d = desired_eu_with(|eu| {
        eu.spec.service_center.client_tls = Some(meridian_crds::region::ClientTlsSpec {
            secret_name: "chat-example-com".into(),
        });
    });
    assert!(args(&d).contains("--client-tls-cert /etc/meridian-client-tls/tls.crt"));
    let spec = d.service_center.template().spec.clone().unwrap();
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
    for template in [d.service_center.template(), &d.roaming.spec.template] {
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
    for template in [d.service_center.template(), &d.roaming.spec.template] {
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

#[test]
fn only_a_valid_region_is_built_from() {
    let mut m = manifest::parse(&[(PathBuf::from("m.yaml"), MANIFESTS.to_owned())]).unwrap();
    let eu = ValidRegion::check(&m.regions[0]).unwrap();
    assert_eq!((eu.code(), eu.namespace()), ("eu", "chat"));
    m.regions[0].spec.service_center.replicas = 3;
    let violations = ValidRegion::check(&m.regions[0]).unwrap_err();
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.serviceCenter.replicas"]);
}

#[test]
fn on_sqlite_the_service_center_is_todays_statefulset_however_it_is_said() {
    let absent = desired_eu();
    let said = desired_eu_with(|eu| {
        eu.spec.service_center.data_center = Some(serde_yaml::from_str("{type: sqlite}").unwrap());
    });
    let sts = statefulset(&absent);
    assert_eq!(sts, statefulset(&said));
    assert_eq!(sts.spec.replicas, Some(1));
    let args = service_center_container(&absent).args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--data-dir", DATA_DIR]),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--postgres")),
        "{args:?}"
    );
}

#[test]
fn on_postgres_the_service_center_is_a_deployment_of_the_replicas_with_no_claim() {
    let d = desired_eu_with(|eu| on_postgres(eu, 3, POSTGRES_WITH_CA));
    let (deployment, _) = deployment_and_budget(&d);
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some("eu-service-center")
    );
    assert_eq!(deployment.metadata.namespace.as_deref(), Some("chat"));
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.name.as_str(), owner.controller), ("eu", Some(true)));
    assert_eq!(deployment.spec.replicas, Some(3), "replicas honoured");
    let strategy = deployment.spec.strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let rolling = strategy.rolling_update.as_ref().unwrap();
    assert_eq!(
        (rolling.max_surge.clone(), rolling.max_unavailable.clone()),
        (Some(IntOrString::Int(1)), Some(IntOrString::Int(0))),
        "one extra pod during a rollout, never one fewer"
    );
    let spec = deployment.spec.template.spec.as_ref().unwrap();
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        !volumes.contains(&DATA_VOLUME),
        "no data volume: {volumes:?}"
    );
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .all(
                |v| v.persistent_volume_claim.is_none() && v.empty_dir.is_none() || v.name == "tmp"
            ),
        "nothing kept in the pod but /tmp"
    );
    // Same image, resources and bandwidth as the StatefulSet would have.
    let sqlite = desired_eu();
    let (pg, sq) = (
        service_center_container(&d),
        service_center_container(&sqlite),
    );
    assert_eq!((&pg.image, &pg.resources), (&sq.image, &sq.resources));
    assert_eq!(
        deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations,
        sqlite
            .service_center
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .annotations
    );
}

#[test]
fn the_service_and_the_pair_endpoint_reach_the_deployments_pods() {
    let sqlite = desired_eu();
    let d = desired_eu_with(|eu| on_postgres(eu, 2, POSTGRES_WITH_CA));
    let (deployment, budget) = deployment_and_budget(&d);
    let pod_labels = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(
        Some(&pod_labels),
        sqlite
            .service_center
            .template()
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref(),
        "the same labels as the StatefulSet's pods"
    );
    assert_eq!(d.service_center_service, sqlite.service_center_service);
    let service_selector = d
        .service_center_service
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone()
        .unwrap();
    for selector in [
        &service_selector,
        deployment.spec.selector.match_labels.as_ref().unwrap(),
        budget
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
    ] {
        assert!(
            selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{selector:?} selects {pod_labels:?}"
        );
    }
    // `pair` is the ClusterIP Service, never one pod's name; on
    // PostgreSQL the replicas are also found by the headless Service's name.
    assert_eq!(
        d.mesh.service_center.pair,
        "https://eu-service-center.chat.svc:7401"
    );
    let mut found_by_name = sqlite.mesh.clone();
    found_by_name.service_center.dns = Some("https://eu-service-center-pods.chat.svc:7401".into());
    assert_eq!(d.mesh, found_by_name, "otherwise the same as on SQLite");
    assert_eq!(
        service_type(&d.service_center_service),
        None,
        "ClusterIP, not headless"
    );
    assert!(
        d.service_center_service
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .is_none(),
        "not headless"
    );
}

/// On PostgreSQL the roaming system finds every ready replica by the name
/// of a headless Service on the pair port, which the mesh configuration
/// names, and dials the pods' addresses: the NetworkPolicy lets the
/// roaming pods reach the service-center pods' pair port directly.
#[test]
fn on_postgres_a_headless_service_names_every_ready_replica_for_the_roaming_pods() {
    assert!(
        desired_eu().service_center_pods_service.is_none(),
        "not on SQLite"
    );
    let d = desired_eu_with(|eu| on_postgres(eu, 3, POSTGRES_WITH_CA));
    let pods = d.service_center_pods_service.as_ref().unwrap();
    assert_eq!(
        pods.metadata.name.as_deref(),
        Some("eu-service-center-pods")
    );
    assert_eq!(pods.metadata.namespace.as_deref(), Some("chat"));
    assert_eq!(
        pods.metadata.owner_references, d.service_center_service.metadata.owner_references,
        "owned by the Region"
    );
    let spec = pods.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(spec.publish_not_ready_addresses, Some(false));
    assert_eq!(service_type(pods), None);
    assert_eq!(
        service_ports(pods),
        [(
            "pair".to_owned(),
            SERVICE_CENTER_PAIR_PORT,
            Some(IntOrString::Int(SERVICE_CENTER_PAIR_PORT)),
            None
        )],
        "the pair port alone"
    );
    let (deployment, _) = deployment_and_budget(&d);
    let sc_labels = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let selects = |selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>| {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(selects(spec.selector.as_ref().unwrap(), &sc_labels));

    // The mesh configuration names it; pair stays the ClusterIP Service.
    d.mesh.validate().unwrap();
    let dns = d.mesh.service_center.dns.as_deref().unwrap();
    let name = meridian_node::mesh::config::DnsName::parse(dns).unwrap();
    assert_eq!(
        (name.scheme, name.host, name.port),
        (
            "https",
            "eu-service-center-pods.chat.svc",
            u16::try_from(SERVICE_CENTER_PAIR_PORT).unwrap()
        )
    );
    assert!(d.config_map.data.as_ref().unwrap()[MESH_FILE].contains(dns));

    // The policy covers the service-center pods and lets the roaming pods
    // in on the pair port, whatever address they dial.
    let roaming_labels = d
        .roaming
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let policy = d.network_policy.spec.as_ref().unwrap();
    let applies_to = policy
        .pod_selector
        .as_ref()
        .unwrap()
        .match_labels
        .clone()
        .unwrap();
    assert!(selects(&applies_to, &sc_labels));
    let rules = policy.ingress.as_ref().unwrap();
    assert!(rules.iter().any(|rule| {
        let pair = rule.ports.iter().flatten().any(|p| {
            p.port == Some(IntOrString::Int(SERVICE_CENTER_PAIR_PORT))
                && p.protocol.as_deref() == Some("TCP")
        });
        let from_roaming = rule.from.iter().flatten().any(|peer| {
            peer.namespace_selector.is_none()
                && peer
                    .pod_selector
                    .as_ref()
                    .and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|m| selects(m, &roaming_labels))
        });
        pair && from_roaming
    }));
}

#[test]
fn the_disruption_budget_lets_one_replica_go_at_a_time() {
    for replicas in [1, 2, 5] {
        let d = desired_eu_with(|eu| on_postgres(eu, replicas, POSTGRES_WITH_CA));
        let (_, budget) = deployment_and_budget(&d);
        assert_eq!(budget.metadata.name.as_deref(), Some("eu-service-center"));
        assert_eq!(
            budget.metadata.owner_references.as_ref().unwrap()[0].name,
            "eu"
        );
        let spec = budget.spec.as_ref().unwrap();
        assert_eq!(
            spec.max_unavailable,
            Some(IntOrString::Int(1)),
            "{replicas}"
        );
        assert_eq!(
            spec.min_available, None,
            "never blocks a drain at 1 replica"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
    }
}

#[test]
fn replicas_spread_over_nodes_then_zones_without_blocking_scheduling() {
    let d = desired_eu_with(|eu| on_postgres(eu, 2, POSTGRES_WITH_CA));
    let spread = d
        .service_center
        .template()
        .spec
        .as_ref()
        .unwrap()
        .topology_spread_constraints
        .clone()
        .unwrap();
    let keys: Vec<&str> = spread.iter().map(|c| c.topology_key.as_str()).collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    let service_selector = d
        .service_center_service
        .spec
        .as_ref()
        .unwrap()
        .selector
        .clone();
    for c in &spread {
        assert_eq!(c.max_skew, 1);
        assert_eq!(c.when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(
            c.label_selector.as_ref().unwrap().match_labels,
            service_selector,
            "counts the service center's pods"
        );
        assert_eq!(
            c.match_label_keys.as_deref(),
            Some(&["pod-template-hash".to_owned()][..])
        );
    }
    let sqlite = desired_eu();
    assert!(
        sqlite
            .service_center
            .template()
            .spec
            .as_ref()
            .unwrap()
            .topology_spread_constraints
            .is_none(),
        "one pod has nothing to spread"
    );
}

#[test]
fn the_postgres_secrets_are_mounted_read_only_and_passed_by_flag() {
    let d = desired_eu_with(|eu| on_postgres(eu, 2, POSTGRES_WITH_CA));
    let container = service_center_container(&d);
    let args = container.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains(
            "--postgres-url-file /etc/meridian-postgres/url --postgres-ca-file /etc/meridian-postgres-ca/ca.crt"
        ),
        "{args}"
    );
    assert!(!args.contains("--data-dir"), "unused on PostgreSQL: {args}");
    let mounts: Vec<(&str, &str, Option<bool>)> = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name.starts_with("postgres"))
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("postgres", POSTGRES_DIR, Some(true)),
            ("postgres-ca", POSTGRES_CA_DIR, Some(true)),
        ]
    );
    let spec = d.service_center.template().spec.as_ref().unwrap();
    let secret = |name: &str| {
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap();
        let secret = volume.secret.clone().unwrap();
        let items: Vec<(String, String)> = secret
            .items
            .iter()
            .flatten()
            .map(|i| (i.key.clone(), i.path.clone()))
            .collect();
        (secret.secret_name.unwrap(), items, secret.default_mode)
    };
    assert_eq!(
        secret("postgres"),
        (
            "chat-db-app".to_owned(),
            vec![("uri".to_owned(), POSTGRES_URL_FILE.to_owned())],
            Some(0o440)
        ),
        "CloudNativePG's <cluster>-app Secret, its key uri as the url file"
    );
    assert_eq!(
        secret("postgres-ca"),
        (
            "chat-db-ca".to_owned(),
            vec![("ca.crt".to_owned(), POSTGRES_CA_FILE.to_owned())],
            Some(0o440)
        )
    );

    // Without tls: no CA, and the key the spec names.
    let plain = desired_eu_with(|eu| on_postgres(eu, 1, POSTGRES_PLAIN));
    let args = service_center_container(&plain)
        .args
        .as_ref()
        .unwrap()
        .join(" ");
    assert!(
        args.contains("--postgres-url-file /etc/meridian-postgres/url"),
        "{args}"
    );
    assert!(!args.contains("--postgres-ca-file"), "{args}");
    let spec = plain.service_center.template().spec.as_ref().unwrap();
    assert!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "postgres-ca")
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "postgres")
        .unwrap();
    let secret = volume.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("db-credentials"));
    assert_eq!(secret.items.as_ref().unwrap()[0].key, "connection-string");
}

#[test]
fn the_node_log_level_reaches_the_deployments_pods() {
    let mut d = desired_eu_with(|eu| on_postgres(eu, 2, POSTGRES_WITH_CA));
    crate::controller::log_level::apply(&mut d, Some("debug"));
    let env = service_center_container(&d).env.clone().unwrap();
    assert!(
        env.iter()
            .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug")),
        "{env:?}"
    );
}

#[test]
fn several_replicas_are_built_only_on_postgres() {
    let mut m = manifest::parse(&[(PathBuf::from("m.yaml"), MANIFESTS.to_owned())]).unwrap();
    m.regions[0].spec.service_center.replicas = 2;
    let violations = ValidRegion::check(&m.regions[0]).unwrap_err();
    assert_eq!(violations[0].field, "spec.serviceCenter.replicas");
    on_postgres(&mut m.regions[0], 2, POSTGRES_WITH_CA);
    assert!(ValidRegion::check(&m.regions[0]).is_ok());
    m.regions[0].spec.service_center.storage = Some(meridian_crds::StorageSpec {
        size: "1Gi".into(),
        storage_class_name: None,
    });
    let violations = ValidRegion::check(&m.regions[0]).unwrap_err();
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.serviceCenter.storage"]);
}

/// `spec.serviceCenter.maxSubscriptions` becomes the service center's
/// `--max-subscriptions`, on either kind of workload; unset, the flag is
/// absent and the node keeps its default. The roaming system holds no
/// subscriptions and never gets it.
#[test]
fn max_subscriptions_reaches_the_service_centers_command_line_alone() {
    let flag = |args: &[String]| -> Option<String> {
        let at = args.iter().position(|a| a == "--max-subscriptions")?;
        args.get(at + 1).cloned()
    };
    let sc_args = |d: &Desired| service_center_container(d).args.clone().unwrap();
    let roaming_args = |d: &Desired| {
        d.roaming.spec.template.spec.as_ref().unwrap().containers[0]
            .args
            .clone()
            .unwrap()
    };

    let unset = desired_eu();
    assert_eq!(flag(&sc_args(&unset)), None, "{:?}", sc_args(&unset));

    let on_sqlite = desired_eu_with(|eu| eu.spec.service_center.max_subscriptions = Some(2500));
    assert_eq!(flag(&sc_args(&on_sqlite)).as_deref(), Some("2500"));
    assert_eq!(flag(&roaming_args(&on_sqlite)), None);
    let _on_sqlite_a_statefulset = statefulset(&on_sqlite);

    let on_pg = desired_eu_with(|eu| {
        on_postgres(eu, 2, POSTGRES_WITH_CA);
        eu.spec.service_center.max_subscriptions = Some(1);
    });
    let (deployment, _) = deployment_and_budget(&on_pg);
    let args = deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(flag(&args).as_deref(), Some("1"));
}

/// A bound outside 1 to 1,000,000 is refused, naming the field, by the
/// operator's check and by local mode's manifest loading; the CRD's schema
/// carries the same bounds for the apiserver.
#[test]
fn max_subscriptions_outside_its_bounds_is_refused_naming_the_field() {
    let mut m = manifest::parse(&[(PathBuf::from("m.yaml"), MANIFESTS.to_owned())]).unwrap();
    for good in [1, 10_000, 1_000_000] {
        m.regions[0].spec.service_center.max_subscriptions = Some(good);
        assert!(ValidRegion::check(&m.regions[0]).is_ok(), "{good}");
    }
    for bad in [0, -1, 1_000_001, i32::MAX] {
        m.regions[0].spec.service_center.max_subscriptions = Some(bad);
        let violations = ValidRegion::check(&m.regions[0]).unwrap_err();
        let found: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [format!(
                "spec.serviceCenter.maxSubscriptions: must be 1 to 1000000, not {bad}"
            )],
            "{bad}"
        );
    }

    let yaml = MANIFESTS.replacen(
        "    resources: {requests: {cpu: 500m}}\n",
        "    resources: {requests: {cpu: 500m}}\n    maxSubscriptions: 0\n",
        1,
    );
    assert_ne!(yaml, MANIFESTS);
    let err = manifest::parse(&[(PathBuf::from("m.yaml"), yaml)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "Region \"eu\"): spec.serviceCenter.maxSubscriptions: must be 1 to 1000000, not 0"
        ),
        "{err}"
    );
    let not_a_number = MANIFESTS.replacen(
        "    resources: {requests: {cpu: 500m}}\n",
        "    resources: {requests: {cpu: 500m}}\n    maxSubscriptions: lots\n",
        1,
    );
    let err = manifest::parse(&[(PathBuf::from("m.yaml"), not_a_number)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.serviceCenter.maxSubscriptions"), "{err}");

    let crd = meridian_crds::crd_yaml();
    let at = crd
        .find("maxSubscriptions:")
        .expect("the CRD has the field");
    let field: String = crd[at..].lines().take(12).collect::<Vec<_>>().join("\n");
    assert!(
        field.contains("maximum: 1000000.0") && field.contains("minimum: 1.0"),
        "{field}"
    );
}
