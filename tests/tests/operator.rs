//! The operator on a real control plane (kube-apiserver, etcd,
//! kube-controller-manager, kube-scheduler and kwok, from
//! `tests/control-plane`): installed with real helm, run as the chart's
//! ServiceAccount, driven with kubectl.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_node::mesh::MeshConfig;
use meridian_tests::control_plane::ControlPlane;
use meridian_tests::local_mode::LocalMode;
use meridian_tests::local_mode::workspace_root;
use meridian_tests::operator::{
    Operator, RELEASE_NAMESPACE, install_and_wait, service_account_kubeconfig,
};
use serde::Deserialize;
use serde_json::Value;

const NS: &str = "chat";

fn get_json(cluster: &ControlPlane, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = cluster.kubectl(&all);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("kubectl prints JSON"))
}

/// The mesh configuration the operator wrote for `region`, if any.
fn mesh(cluster: &ControlPlane, region: &str) -> Option<MeshConfig> {
    let cm = get_json(cluster, &["configmap", &format!("{region}-mesh"), "-n", NS])?;
    MeshConfig::from_yaml(cm["data"]["mesh.yaml"].as_str()?).ok()
}

fn peers(cluster: &ControlPlane, region: &str) -> Vec<String> {
    mesh(cluster, region)
        .map(|m| m.peers.into_iter().map(|p| p.region).collect())
        .unwrap_or_default()
}

fn condition(region: &Value, type_: &str) -> Option<String> {
    region["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

fn ready(cluster: &ControlPlane, region: &str) -> bool {
    get_json(cluster, &["region", region, "-n", NS])
        .is_some_and(|r| condition(&r, "Ready").as_deref() == Some("True"))
}

fn region_yaml(name: &str, cluster_name: &str, peer_endpoint: Option<&str>) -> String {
    let endpoint = peer_endpoint
        .map(|e| format!("  peerEndpoint: {e}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  cluster: {cluster_name}\n{endpoint}  serviceCenter: {{storage: {{size: 1Gi}}}}\n"
    )
}

/// The resourceVersions of everything the operator owns, and of the Regions.
fn versions(cluster: &ControlPlane) -> BTreeMap<String, String> {
    let list = get_json(
        cluster,
        &[
            "statefulsets,deployments,services,configmaps,regions",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/managed-by=meridian-operator",
        ],
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().unwrap() {
        let key = format!(
            "{}/{}",
            item["kind"].as_str().unwrap(),
            item["metadata"]["name"].as_str().unwrap()
        );
        out.insert(
            key,
            item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let regions = get_json(cluster, &["regions", "-n", NS]).unwrap();
    for item in regions["items"].as_array().unwrap() {
        let key = format!("Region/{}", item["metadata"]["name"].as_str().unwrap());
        out.insert(
            key,
            item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    out
}

fn wait(cluster: &ControlPlane, what: &str, secs: u64, check: impl FnMut() -> bool) -> Duration {
    cluster
        .wait_until(what, Duration::from_secs(secs), check)
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.log_tails(20)))
}

/// Merges `patch` (JSON) into RegionLink eu-us.
fn patch_eu_us(cluster: &ControlPlane, patch: &str) {
    cluster
        .kubectl_ok(&[
            "patch",
            "regionlink",
            "eu-us",
            "-n",
            NS,
            "--type",
            "merge",
            "-p",
            patch,
        ])
        .unwrap();
}

/// A control plane with the chart installed for `cluster_name`, the test
/// namespace, and an operator (`name` in its logs) running as the chart's
/// ServiceAccount.
fn operated(cluster_name: &str, name: &str) -> (ControlPlane, Operator) {
    let cluster = ControlPlane::start().expect("a control plane");
    install_and_wait(&cluster, cluster_name).unwrap();
    cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let operator = Operator::start(&kubeconfig, cluster_name, name, &cluster.log_dir());
    (cluster, operator)
}

fn reconciles(op: &Operator) -> usize {
    op.log_text().matches("reconciled").count()
}

#[test]
fn the_operator_turns_regions_into_workloads_and_a_full_mesh() {
    let cluster = ControlPlane::start().expect("a control plane");
    let logs = cluster.log_dir();

    // 1. helm install; the CRDs become established.
    install_and_wait(&cluster, "default").unwrap();

    // 2. The operator runs with the chart's ServiceAccount: its RBAC suffices.
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let mut leader = Operator::start(&kubeconfig, "default", "replica-a", &logs);

    // 3. The example Regions become workloads, Ready through kwok.
    cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
    // The API server admits only pods that meet the "restricted" profile:
    // every pod the operator writes must pass it to become Ready below.
    cluster
        .kubectl_ok(&[
            "label",
            "namespace",
            NS,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .unwrap();
    let refused = cluster.kubectl(&["run", "unconfined", "--image=example.invalid/x", "-n", NS]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("PodSecurity"),
        "the namespace enforces the restricted profile"
    );
    let example = workspace_root().join("examples/three-regions.yaml");
    cluster
        .kubectl_ok(&["apply", "-f", example.to_str().unwrap()])
        .unwrap();
    let took = wait(&cluster, "three Ready Regions", 180, || {
        ["eu", "us", "ap"].iter().all(|r| ready(&cluster, r))
    });
    println!("three regions Ready after {took:?}");
    for region in ["eu", "us", "ap"] {
        let sts = get_json(
            &cluster,
            &["statefulset", &format!("{region}-service-center"), "-n", NS],
        )
        .unwrap();
        assert_eq!(sts["spec"]["replicas"], 1);
        assert_eq!(
            sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            "1Gi"
        );
        assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "Region");
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(
            pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
            true
        );
        assert_eq!(pod["containers"][0]["resources"]["requests"]["cpu"], "100m");
        let deploy = get_json(
            &cluster,
            &["deployment", &format!("{region}-roaming"), "-n", NS],
        )
        .unwrap();
        assert_eq!(deploy["spec"]["replicas"], 1);
        let svc = get_json(
            &cluster,
            &["service", &format!("{region}-roaming"), "-n", NS],
        )
        .unwrap();
        let ports: Vec<i64> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect();
        assert_eq!(ports, vec![7402, 7443]);
        assert!(
            get_json(
                &cluster,
                &["service", &format!("{region}-service-center"), "-n", NS]
            )
            .is_some()
        );
        let status = get_json(&cluster, &["region", region, "-n", NS]).unwrap()["status"].clone();
        assert_eq!(status["serviceCenter"]["readyReplicas"], 1);
        assert_eq!(status["roaming"]["readyReplicas"], 1);
        assert_eq!(status["peers"].as_array().unwrap().len(), 2);
        for type_ in ["Ready", "Progressing", "Degraded", "MeshConfigured"] {
            assert!(
                status["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == type_ && c["reason"].is_string())
            );
        }
    }
    let eu = mesh(&cluster, "eu").unwrap();
    assert_eq!(
        eu.peers
            .iter()
            .map(|p| p.region.as_str())
            .collect::<Vec<_>>(),
        vec!["ap", "us"]
    );
    let us_peer = eu.peer("us").unwrap();
    assert_eq!(
        (us_peer.endpoint.as_str(), us_peer.cost),
        ("https://us-roaming.chat.svc:7443", Some(10))
    );
    assert_eq!(
        eu.service_center.pair,
        "https://eu-service-center.chat.svc:7401"
    );
    let events = cluster
        .kubectl_ok(&["get", "events", "-n", NS, "-o", "json"])
        .unwrap();
    assert!(events.contains("Reconciled"), "the operator records events");

    // Identities: the operator made the namespace's mesh CA, and issued each
    // Region a certificate naming it, from that CA, in a Secret its pods
    // mount; each Region's pods get a NetworkPolicy.
    let secret = |name: &str| -> k8s_openapi::api::core::v1::Secret {
        serde_json::from_value(get_json(&cluster, &["secret", name, "-n", NS]).unwrap()).unwrap()
    };
    let text = |s: &k8s_openapi::api::core::v1::Secret, key: &str| {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    };
    let ca = secret("meridian-mesh-ca");
    for region in ["eu", "us", "ap"] {
        let identity = secret(&format!("{region}-tls"));
        assert_eq!(text(&identity, "ca.crt"), text(&ca, "tls.crt"));
        let credentials = meridian_node::trust::credentials::Loaded::from_pem(
            &text(&identity, "ca.crt"),
            &text(&identity, "tls.crt"),
            &text(&identity, "tls.key"),
        )
        .unwrap();
        assert_eq!(
            credentials.identity,
            meridian_node::trust::Identity::Region(region.into())
        );
        let policy = get_json(
            &cluster,
            &["networkpolicy", &format!("{region}-meridian"), "-n", NS],
        )
        .unwrap();
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["meridian.dev/region"],
            region
        );
    }

    // 4. A fourth Region: within 10 s every region's mesh lists it.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &region_yaml("sa", "default", None))
        .unwrap();
    let started = Instant::now();
    wait(&cluster, "every mesh lists sa", 10, || {
        ["eu", "us", "ap"]
            .iter()
            .all(|r| peers(&cluster, r).contains(&"sa".to_owned()))
    });
    println!(
        "a fourth region reached every mesh configuration in {:?}",
        started.elapsed()
    );
    wait(&cluster, "sa's own mesh", 10, || {
        peers(&cluster, "sa") == ["ap", "eu", "us"]
    });

    // 5. Deleting it removes it from the peers, and its objects are collected.
    cluster
        .kubectl_ok(&["delete", "region", "sa", "-n", NS])
        .unwrap();
    wait(&cluster, "sa gone from every mesh", 20, || {
        ["eu", "us", "ap"]
            .iter()
            .all(|r| !peers(&cluster, r).contains(&"sa".to_owned()))
    });
    wait(&cluster, "sa's objects garbage-collected", 60, || {
        [
            "statefulset/sa-service-center",
            "deployment/sa-roaming",
            "configmap/sa-mesh",
            "service/sa-roaming",
        ]
        .iter()
        .all(|o| !cluster.kubectl(&["get", o, "-n", NS]).status.success())
    });

    // 6. Disabling a RegionLink marks it disabled at both ends.
    patch_eu_us(&cluster, r#"{"spec":{"enabled":false}}"#);
    wait(&cluster, "eu-us disabled at both ends", 10, || {
        let eu = mesh(&cluster, "eu").and_then(|m| m.peer("us").map(|p| p.enabled));
        let us = mesh(&cluster, "us").and_then(|m| m.peer("eu").map(|p| p.enabled));
        eu == Some(false) && us == Some(false)
    });

    // 7. The apiserver refuses invalid objects with a readable message.
    let bad_name = cluster
        .kubectl_stdin(&["apply", "-f", "-"], &region_yaml("a.b", "default", None))
        .unwrap_err()
        .to_string();
    assert!(bad_name.contains("region code"), "{bad_name}");
    let self_link = "apiVersion: meridian.dev/v1alpha1\nkind: RegionLink\nmetadata: {name: eu-eu, namespace: chat}\nspec: {regions: [eu, eu]}\n";
    let refused = cluster
        .kubectl_stdin(&["apply", "-f", "-"], self_link)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("two different regions"), "{refused}");
    let moved = cluster.kubectl(&[
        "patch",
        "region",
        "eu",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"cluster":"elsewhere"}}"#,
    ]);
    let moved = String::from_utf8_lossy(&moved.stderr).into_owned();
    assert!(moved.contains("spec.cluster is immutable"), "{moved}");
    let scaled = cluster.kubectl(&[
        "patch",
        "region",
        "eu",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"serviceCenter":{"replicas":2}}}"#,
    ]);
    let scaled = String::from_utf8_lossy(&scaled.stderr).into_owned();
    assert!(
        scaled.contains("spec.serviceCenter.replicas")
            && scaled
                .contains("a SQLite data center is one file on one volume that one process writes"),
        "{scaled}"
    );

    // 8. A restarted operator changes nothing it owns.
    let before = versions(&cluster);
    leader.stop(false);
    let mut leader = Operator::start(&kubeconfig, "default", "replica-a", &logs);
    wait(&cluster, "the restarted operator to reconcile", 60, || {
        reconciles(&leader) >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(versions(&cluster), before, "a restart rewrote nothing");

    // 9. Two replicas: only the Lease holder writes; the other takes over.
    let mut standby = Operator::start(&kubeconfig, "default", "replica-b", &logs);
    wait(&cluster, "the second replica to stand by", 30, || {
        standby.log_text().contains("standing by")
    });
    patch_eu_us(&cluster, r#"{"spec":{"enabled":true}}"#);
    wait(&cluster, "eu-us enabled again", 10, || {
        mesh(&cluster, "eu").and_then(|m| m.peer("us").map(|p| p.enabled)) == Some(true)
    });
    assert_eq!(reconciles(&standby), 0, "the standby replica wrote nothing");
    let lease = get_json(
        &cluster,
        &["lease", "meridian-operator", "-n", RELEASE_NAMESPACE],
    )
    .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    leader.stop(true);
    wait(&cluster, "the standby to take the lease", 60, || {
        standby.log_text().contains("became the leader")
    });
    patch_eu_us(&cluster, r#"{"spec":{"cost":20}}"#);
    wait(&cluster, "the new leader to apply a change", 20, || {
        mesh(&cluster, "us").and_then(|m| m.peer("eu").and_then(|p| p.cost)) == Some(20)
    });
    assert!(standby.is_running());
}

/// A rolling restart: the leader gets SIGTERM and releases the Lease, so
/// the standby leads within a few seconds rather than after the 15 s the
/// Lease lasts.
#[test]
fn a_leader_that_stops_hands_the_lease_over_at_once() {
    let cluster = ControlPlane::start().expect("a control plane");
    install_and_wait(&cluster, "default").unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let logs = cluster.log_dir();
    let lease = || {
        get_json(
            &cluster,
            &["lease", "meridian-operator", "-n", RELEASE_NAMESPACE],
        )
        .map(|l| l["spec"].clone())
        .unwrap_or(Value::Null)
    };
    let mut leader = Operator::start(&kubeconfig, "default", "replica-a", &logs);
    wait(&cluster, "replica-a to lead", 60, || {
        leader.log_text().contains("became the leader")
    });
    let standby = Operator::start(&kubeconfig, "default", "replica-b", &logs);
    wait(&cluster, "replica-b to stand by", 30, || {
        standby.log_text().contains("standing by")
    });
    assert_eq!(lease()["holderIdentity"], "replica-a");
    let transitions = lease()["leaseTransitions"].as_i64().unwrap_or(0);

    let stopped = Instant::now();
    leader.stop(false);
    assert!(
        leader.log_text().contains("released the leader lease"),
        "{}",
        leader.log_text()
    );
    wait(&cluster, "replica-b to take the released Lease", 8, || {
        lease()["holderIdentity"] == "replica-b"
    });
    let took = stopped.elapsed();
    println!("the standby led {took:?} after the leader's SIGTERM");
    assert!(
        took < Duration::from_secs(8),
        "the standby took {took:?}; the Lease lasts 15 s"
    );
    assert_eq!(lease()["leaseTransitions"].as_i64(), Some(transitions + 1));
    wait(&cluster, "replica-b to say it leads", 10, || {
        standby.log_text().contains("became the leader")
    });
}

/// The chart's probes: /readyz is 503 while the leader's caches have not
/// synced (here the operator starts before the CRDs exist, so its first
/// LIST fails) and 200 once they have, with no Region anywhere; a standby
/// replica is ready, and ready again once it leads; /healthz is 200
/// throughout.
#[test]
fn readyz_waits_for_synced_caches_even_with_no_region_and_a_standby_is_ready() {
    let cluster = ControlPlane::start().expect("a control plane");
    let logs = cluster.log_dir();
    cluster
        .kubectl_ok(&["create", "namespace", RELEASE_NAMESPACE])
        .unwrap();
    let admin = cluster.kubeconfig();
    let mut leader = Operator::start(&admin, "default", "replica-a", &logs);
    wait(&cluster, "replica-a to lead", 60, || {
        leader.log_text().contains("became the leader") && leader.metrics_addr().is_some()
    });
    // The Region and RegionLink types do not exist: nothing can sync.
    let (status, why) = leader.http_get("/readyz").unwrap();
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("not synced"), "{why}");
    assert_eq!(leader.http_get("/healthz").unwrap(), (200, "ok".into()));

    install_and_wait(&cluster, "default").unwrap();
    let took = wait(&cluster, "replica-a ready", 60, || {
        leader.http_get("/readyz").ok() == Some((200, "leading; caches synced".into()))
    });
    println!("ready {took:?} after the CRDs were established");
    let regions = cluster
        .kubectl_ok(&["get", "regions", "-A", "-o", "name"])
        .unwrap();
    assert_eq!(
        regions.trim(),
        "",
        "no Region: synced with nothing to reconcile"
    );
    assert_eq!(leader.http_get("/healthz").unwrap().0, 200);

    // A second replica, as the chart's ServiceAccount, stands by: ready.
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let standby = Operator::start(&kubeconfig, "default", "replica-b", &logs);
    wait(&cluster, "replica-b to stand by, ready", 30, || {
        standby.log_text().contains("standing by")
            && standby.http_get("/readyz").ok()
                == Some((200, "standing by for the leader Lease".into()))
    });
    assert_eq!(standby.http_get("/healthz").unwrap().0, 200);

    // It leads once the leader stops, and is ready when its caches sync.
    leader.stop(false);
    wait(&cluster, "replica-b to lead, ready", 60, || {
        standby.http_get("/readyz").ok() == Some((200, "leading; caches synced".into()))
    });
}

#[test]
fn two_clusters_each_deploy_their_own_regions_and_list_the_others_as_peers() {
    let a = ControlPlane::start().expect("control plane a");
    let b = ControlPlane::start().expect("control plane b");
    let manifests = [
        region_yaml("eu", "cluster-a", Some("roaming.eu.example.net:7443")),
        region_yaml("us", "cluster-a", Some("roaming.us.example.net:7443")),
        region_yaml("ap", "cluster-b", Some("roaming.ap.example.net:7443")),
    ]
    .join("---\n");
    // One mesh, one CA: made once, copied into both clusters before the
    // operators start (the README's way for clusters that share a mesh).
    let ca = meridian_node::trust::pki::MeshCa::generate(NS).unwrap();
    let files = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = (files.path().join("ca.crt"), files.path().join("ca.key"));
    std::fs::write(&ca_cert, &ca.cert_pem).unwrap();
    std::fs::write(&ca_key, ca.key_pem()).unwrap();
    let mut operators = Vec::new();
    for (cluster, name) in [(&a, "cluster-a"), (&b, "cluster-b")] {
        install_and_wait(cluster, name).unwrap();
        cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
        install_mesh_ca(cluster, &ca_cert, &ca_key);
        cluster
            .kubectl_stdin(&["apply", "-f", "-"], &manifests)
            .unwrap();
        let kubeconfig = service_account_kubeconfig(cluster).unwrap();
        operators.push(Operator::start(&kubeconfig, name, name, &cluster.log_dir()));
    }
    wait(&a, "eu and us deployed in cluster a", 60, || {
        mesh(&a, "eu").is_some() && mesh(&a, "us").is_some()
    });
    wait(&b, "ap deployed in cluster b", 60, || {
        mesh(&b, "ap").is_some()
    });

    let eu = mesh(&a, "eu").unwrap();
    assert_eq!(
        eu.peer("ap").unwrap().endpoint,
        "https://roaming.ap.example.net:7443"
    );
    assert_eq!(
        eu.peer("us").unwrap().endpoint,
        "https://us-roaming.chat.svc:7443"
    );
    let ap = mesh(&b, "ap").unwrap();
    assert_eq!(
        ap.peer("eu").unwrap().endpoint,
        "https://roaming.eu.example.net:7443"
    );
    assert_eq!(
        ap.peer("us").unwrap().endpoint,
        "https://roaming.us.example.net:7443"
    );
    // Each cluster runs only its own regions.
    assert!(
        mesh(&a, "ap").is_none()
            && get_json(&a, &["statefulset", "ap-service-center", "-n", NS]).is_none()
    );
    assert!(
        mesh(&b, "eu").is_none() && get_json(&b, &["deployment", "us-roaming", "-n", NS]).is_none()
    );

    // Each cluster issued its regions' identities from the shared CA, so a
    // region of one cluster verifies a region of the other: eu's
    // certificate (cluster a) is trusted by ap (cluster b) as eu's.
    let identity = |cluster: &ControlPlane, region: &str| {
        let name = format!("{region}-tls");
        wait(cluster, &format!("Secret {name}"), 30, || {
            get_json(cluster, &["secret", &name, "-n", NS]).is_some()
        });
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(get_json(cluster, &["secret", &name, "-n", NS]).unwrap())
                .unwrap();
        let text =
            |key: &str| String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
        assert_eq!(text("ca.crt"), ca.cert_pem, "{region} has the shared CA");
        meridian_node::trust::credentials::Loaded::from_pem(
            &text("ca.crt"),
            &text("tls.crt"),
            &text("tls.key"),
        )
        .unwrap()
    };
    let (eu, ap) = (identity(&a, "eu"), identity(&b, "ap"));
    let at_ap = meridian_node::trust::Verifier::new(meridian_node::trust::Credentials::fixed(ap));
    assert_eq!(
        at_ap.certificate(eu.certificate()).unwrap(),
        meridian_node::trust::Identity::Region("eu".into())
    );
}

/// Makes the mesh CA in `cert` and `key` the namespace's, as clusters of one
/// mesh share it: before the operator starts, which then issues from it.
fn install_mesh_ca(cluster: &ControlPlane, cert: &std::path::Path, key: &std::path::Path) {
    cluster
        .kubectl_ok(&[
            "create",
            "secret",
            "tls",
            "meridian-mesh-ca",
            "-n",
            NS,
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ])
        .unwrap();
}

/// The peer entry for `peer` in Region `region`'s status.
fn peer_status(cluster: &ControlPlane, region: &str, peer: &str) -> Value {
    get_json(cluster, &["region", region, "-n", NS])
        .and_then(|r| {
            r["status"]["peers"]
                .as_array()?
                .iter()
                .find(|p| p["region"] == peer)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// The notes of the Events with `reason` about `kind`/`name`, each with the
/// number of times it occurred.
fn events(cluster: &ControlPlane, kind: &str, name: &str, reason: &str) -> Vec<(String, u64)> {
    let list = get_json(cluster, &["events.events.k8s.io", "-n", NS]).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["kind"] == kind
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .filter_map(|e| {
            let count = e["series"]["count"].as_u64().unwrap_or(1);
            Some((e["note"].as_str()?.to_owned(), count))
        })
        .collect()
}

/// Fixed route weights for the example's other two links, as it fixes
/// eu-us's. Without them eu-ap and us-ap weigh their measured round-trip
/// times, which a loaded machine swings by tens of milliseconds (a starved
/// process answers heartbeats late), enough to route eu→ap through us while
/// nothing in the mesh changed; the operator would rightly report that.
const PINNED_LINKS: &str = "---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: eu-ap, namespace: chat}
spec: {regions: [eu, ap], cost: 10}
---
apiVersion: meridian.dev/v1alpha1
kind: RegionLink
metadata: {name: us-ap, namespace: chat}
spec: {regions: [us, ap], cost: 10}
";

/// Link state flows from the roaming systems into the API. kwok runs no
/// containers, so the example's regions run as real processes in local mode,
/// and the operator reaches each roaming Service's name at its process through
/// `--resolve`, as an operator outside the cluster would through forwarded
/// ports. The drill is the README's: disable eu-us in the manifest. Every
/// link's cost is fixed (`PINNED_LINKS`), so routes change only with the
/// manifest and the links' health; RTTs are still measured and reported.
#[test]
fn the_operator_copies_link_state_into_status_and_records_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("three-regions.yaml");
    let example =
        std::fs::read_to_string(workspace_root().join("examples/three-regions.yaml")).unwrap();
    let example = format!("{example}{PINNED_LINKS}");
    std::fs::write(&manifest, &example).unwrap();
    let mut local = LocalMode::start(std::slice::from_ref(&manifest), &dir.path().join("state"));
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/endpoints.json")).unwrap())
            .unwrap();
    let mut args = vec![
        "--link-poll-millis".to_owned(),
        "500".to_owned(),
        "--node-log-level".to_owned(),
        "info,meridian_node=debug".to_owned(),
    ];
    for region in ["eu", "us", "ap"] {
        let peer = endpoints["regions"][region]["peer"].as_str().unwrap();
        let addr = peer.trim_start_matches("https://");
        args.push("--resolve".into());
        args.push(format!("{region}-roaming.{NS}.svc={addr}"));
    }

    let cluster = ControlPlane::start().expect("a control plane");
    install_and_wait(&cluster, "default").unwrap();
    cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
    // The cluster shares the mesh CA with the local-mode processes, as two
    // clusters of one mesh do: the CA Secret is made before the operator
    // starts, which then issues from it rather than making a CA of its own.
    let pki = dir.path().join("state/pki");
    let (ca_cert, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    install_mesh_ca(&cluster, &ca_cert, &ca_key);
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &example)
        .unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let _operator =
        Operator::start_with(&kubeconfig, "default", "links", &cluster.log_dir(), &args);

    // Every link is reported Up, with its RTT, from the roaming systems.
    wait(
        &cluster,
        "every peer of every region reported Up",
        60,
        || {
            ["eu", "us", "ap"].iter().all(|r| {
                ["eu", "us", "ap"].iter().filter(|p| *p != r).all(|p| {
                    let s = peer_status(&cluster, r, p);
                    s["state"] == "Up"
                        && s["rttMillis"].is_u64()
                        && s["lastTransitionTime"].is_string()
                })
            })
        },
    );
    // The node pods get the operator's --node-log-level as RUST_LOG.
    for (kind, name) in [
        ("statefulset", "eu-service-center"),
        ("deployment", "eu-roaming"),
    ] {
        let workload = get_json(&cluster, &[kind, name, "-n", NS]).unwrap();
        let env = &workload["spec"]["template"]["spec"]["containers"][0]["env"];
        let rust_log: Vec<&Value> = env
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["name"] == "RUST_LOG")
            .collect();
        assert_eq!(
            rust_log,
            [&serde_json::json!({"name": "RUST_LOG", "value": "info,meridian_node=debug"})],
            "{kind}/{name}"
        );
    }
    // Which says the link state is known.
    let link_state_known = |region: &str| {
        get_json(&cluster, &["region", region, "-n", NS]).and_then(|r| {
            let c = r["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "LinkStateKnown")?
                .clone();
            Some((
                c["status"].as_str()?.to_owned(),
                c["reason"].as_str()?.to_owned(),
            ))
        })
    };
    wait(&cluster, "LinkStateKnown=True on every region", 20, || {
        ["eu", "us", "ap"]
            .iter()
            .all(|r| link_state_known(r) == Some(("True".into(), "LinkStateReported".into())))
    });
    let link = |cluster: &ControlPlane| {
        get_json(cluster, &["regionlink", "eu-us", "-n", NS]).unwrap()["status"].clone()
    };
    wait(&cluster, "RegionLink eu-us reported Up from eu", 20, || {
        let s = link(&cluster);
        s["state"] == "Up" && s["observedFrom"] == "eu"
    });
    // A steady mesh changes nothing but (past a threshold) measured RTTs,
    // which with every cost fixed steer no route: four polls later, states,
    // paths, transition times and conditions are as they were. (Pods
    // turning Ready would change the conditions: wait.)
    wait(&cluster, "eu Ready", 30, || ready(&cluster, "eu"));
    let settled = |kind: &str, name: &str| {
        let mut status = get_json(&cluster, &[kind, name, "-n", NS]).unwrap()["status"].clone();
        for peer in status["peers"].as_array_mut().into_iter().flatten() {
            peer.as_object_mut().unwrap().remove("rttMillis");
        }
        status.as_object_mut().unwrap().remove("rttMillis");
        status
    };
    let steady = [settled("region", "eu"), settled("regionlink", "eu-us")];
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        [settled("region", "eu"), settled("regionlink", "eu-us")],
        steady,
        "an unchanged mesh changed a status"
    );

    // The drill: eu-us disabled in the manifest detours eu↔us through ap.
    std::fs::write(
        &manifest,
        example.replace("  enabled: true", "  enabled: false"),
    )
    .unwrap();
    wait(&cluster, "eu→us reported Detoured via ap", 30, || {
        let s = peer_status(&cluster, "eu", "us");
        s["state"] == "Detoured" && s["via"] == serde_json::json!(["ap"])
    });
    wait(
        &cluster,
        "RegionLink eu-us reported Detoured via ap",
        20,
        || {
            let s = link(&cluster);
            s["state"] == "Detoured" && s["via"] == serde_json::json!(["ap"])
        },
    );
    // us judges the cut by its own heartbeats, and is polled on its own.
    wait(&cluster, "us→eu reported Detoured", 20, || {
        peer_status(&cluster, "us", "eu")["state"] == "Detoured"
    });
    assert_eq!(peer_status(&cluster, "eu", "ap")["state"], "Up");
    // A busy machine may flap a link once more, so repeats are allowed.
    let has = |kind: &str, name: &str, reason: &str, note: &str, at_least: u64| {
        events(&cluster, kind, name, reason)
            .iter()
            .any(|(n, count)| n == note && *count >= at_least)
    };
    let detour = "link eu→us is Detoured, path eu→ap→us";
    wait(&cluster, "Events for the detour", 20, || {
        has("Region", "eu", "LinkDetoured", detour, 1)
            && has("RegionLink", "eu-us", "LinkDetoured", detour, 1)
    });

    // Healed: back on the direct link; the link's LinkUp Event occurs again.
    std::fs::write(&manifest, &example).unwrap();
    wait(&cluster, "eu→us back Up", 30, || {
        let s = peer_status(&cluster, "eu", "us");
        s["state"] == "Up" && s["via"] == serde_json::json!([])
    });
    wait(&cluster, "the second LinkUp of eu→us", 20, || {
        has("Region", "eu", "LinkUp", "link eu→us is Up, path eu→us", 2)
    });
    wait(&cluster, "RegionLink eu-us back Up", 20, || {
        link(&cluster)["state"] == "Up"
    });

    // With the roaming systems gone, the operator stops claiming any state.
    local.stop();
    wait(
        &cluster,
        "no state reported without roaming systems",
        30,
        || {
            ["us", "ap"]
                .iter()
                .all(|p| peer_status(&cluster, "eu", p)["state"].is_null())
                && link(&cluster)["state"].is_null()
        },
    );
    wait(&cluster, "a LinkUnknown Event per peer of eu", 20, || {
        events(&cluster, "Region", "eu", "LinkUnknown").len() == 2
    });
    // And a condition says so.
    wait(&cluster, "LinkStateKnown=False on eu", 20, || {
        link_state_known("eu") == Some(("False".into(), "LinkStateUnknown".into()))
    });
}

#[test]
fn the_chart_lints_clean_and_its_schema_refuses_bad_values() {
    let helm = meridian_tests::control_plane::build()
        .expect("the control plane's binaries")
        .join("helm");
    let chart = workspace_root().join("charts/meridian");
    let lint = std::process::Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(&chart)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&lint.stdout);
    assert!(
        lint.status.success() && out.contains("0 chart(s) failed"),
        "{out}"
    );
    let bad = std::process::Command::new(&helm)
        .args(["template", "x"])
        .arg(&chart)
        .args(["--set", "replicas=0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("replicas"),
        "the schema names the value"
    );

    // Least privilege: no wildcard anywhere in the rendered RBAC, and
    // Secrets are read and written by name, never listed or watched.
    let rendered = std::process::Command::new(&helm)
        .args(["template", "x"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(rendered.status.success());
    let text = String::from_utf8_lossy(&rendered.stdout);
    let mut secrets_verbs = Vec::new();
    let mut pods_verbs = Vec::new();
    let mut storage_rules = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).unwrap();
        if !matches!(object["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in object["rules"].as_array().into_iter().flatten() {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                for value in rule[field].as_array().into_iter().flatten() {
                    assert_ne!(
                        value, "*",
                        "a wildcard in {field} of {}",
                        object["metadata"]["name"]
                    );
                }
            }
            if rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "secrets"))
            {
                secrets_verbs.extend(rule["verbs"].as_array().unwrap().iter().cloned());
            }
            if rule["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "pods"))
            {
                pods_verbs.extend(rule["verbs"].as_array().unwrap().iter().cloned());
            }
            let kind = object["kind"].as_str().unwrap().to_owned();
            for resource in rule["resources"].as_array().into_iter().flatten() {
                if matches!(
                    resource.as_str(),
                    Some("persistentvolumeclaims" | "storageclasses")
                ) {
                    storage_rules.push((
                        kind.clone(),
                        resource.as_str().unwrap().to_owned(),
                        rule["verbs"].clone(),
                    ));
                }
            }
        }
    }
    assert_eq!(
        secrets_verbs,
        vec![
            Value::from("get"),
            Value::from("create"),
            Value::from("patch")
        ]
    );
    // Pods are listed (by label) and their annotations patched, to refresh
    // their mounted mesh configuration; never created, deleted or watched.
    assert_eq!(pods_verbs, vec![Value::from("list"), Value::from("patch")]);
    // Growing data volumes: claims are read and patched by name, never
    // created, deleted, listed or watched; StorageClasses (cluster-scoped)
    // only read by name.
    storage_rules.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        storage_rules,
        vec![
            (
                "ClusterRole".to_owned(),
                "persistentvolumeclaims".to_owned(),
                serde_json::json!(["get", "patch"])
            ),
            (
                "ClusterRole".to_owned(),
                "storageclasses".to_owned(),
                serde_json::json!(["get"])
            ),
        ]
    );
}

/// `spec.roaming.peerService` exposes the peer port, and only it, to other
/// clusters: the Service `<region>-roaming-peer` turns from ClusterIP into a
/// NodePort at the given port and back in place (same object, same cluster
/// IP) through the operator's server-side apply, while `<region>-roaming`
/// (pair and peer ports, for this cluster) stays ClusterIP. The apiserver
/// refuses a node port without a node-port type, or outside the default
/// range, naming the field.
#[test]
fn a_regions_peer_port_becomes_a_node_port_in_place_and_the_pair_port_never_does() {
    let (cluster, _operator) = operated("cluster-b", "cluster-b");

    let ap = |peer_service: Option<&str>| {
        let peer_service = peer_service
            .map(|p| format!("  roaming: {{peerService: {p}}}\n"))
            .unwrap_or_default();
        format!("{}{peer_service}", region_yaml("ap", "cluster-b", None))
    };
    let service = |name: &str| get_json(&cluster, &["service", name, "-n", NS]);
    // (type, [(port, nodePort)]) of a Service.
    let shape = |svc: &Value| {
        let ports: Vec<(i64, Option<i64>)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["port"].as_i64().unwrap(), p["nodePort"].as_i64()))
            .collect();
        (svc["spec"]["type"].as_str().unwrap().to_owned(), ports)
    };
    let in_cluster = || {
        let roaming = service("ap-roaming").unwrap();
        assert_eq!(
            shape(&roaming),
            ("ClusterIP".to_owned(), vec![(7402, None), (7443, None)])
        );
    };

    // ClusterIP by default.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &ap(None))
        .unwrap();
    wait(&cluster, "ap-roaming-peer", 60, || {
        service("ap-roaming-peer").is_some()
    });
    let first = service("ap-roaming-peer").unwrap();
    assert_eq!(shape(&first), ("ClusterIP".to_owned(), vec![(7443, None)]));
    in_cluster();
    let same_object = |svc: &Value| {
        svc["metadata"]["uid"] == first["metadata"]["uid"]
            && svc["spec"]["clusterIP"] == first["spec"]["clusterIP"]
    };

    // Refused by the CRD's schema, naming the field.
    for bad in ["{nodePort: 30701}", "{type: NodePort, nodePort: 80}"] {
        let refused = cluster
            .kubectl_stdin(&["apply", "-f", "-"], &ap(Some(bad)))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("spec.roaming.peerService.nodePort"),
            "{bad}: {refused}"
        );
    }

    // ClusterIP -> NodePort, in place.
    cluster
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &ap(Some("{type: NodePort, nodePort: 30701}")),
        )
        .unwrap();
    wait(&cluster, "ap-roaming-peer at node port 30701", 30, || {
        service("ap-roaming-peer")
            .is_some_and(|s| shape(&s) == ("NodePort".to_owned(), vec![(7443, Some(30701))]))
    });
    assert!(same_object(&service("ap-roaming-peer").unwrap()));
    in_cluster();

    // And back: the node port is released.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &ap(None))
        .unwrap();
    wait(&cluster, "ap-roaming-peer ClusterIP again", 30, || {
        service("ap-roaming-peer")
            .is_some_and(|s| shape(&s) == ("ClusterIP".to_owned(), vec![(7443, None)]))
    });
    assert!(same_object(&service("ap-roaming-peer").unwrap()));
    in_cluster();
}

/// (status, reason, message) of condition `type_` of Region `region`.
fn region_condition(
    cluster: &ControlPlane,
    region: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    let region = get_json(cluster, &["region", region, "-n", NS])?;
    let c = region["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

/// Growing a Region's data volume (`spec.serviceCenter.storage.size`). The
/// StatefulSet's claim template cannot change, so the operator grows the
/// claim itself where its StorageClass allows expansion, and refuses (with a
/// condition, an Event, and nothing changed) where it does not or where the
/// size shrinks, while the rest of the Region is still applied. kwok binds
/// the claims of its default class `kwok-volume` but resizes nothing, so
/// the test plays the cluster's resizer by writing the claim's capacity.
#[test]
fn a_regions_data_volume_grows_where_its_class_allows_and_is_refused_elsewhere() {
    let (cluster, operator) = operated("default", "storage");

    let apply = |name: &str, size: &str, roaming_replicas: i32| {
        let yaml = format!(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  cluster: default\n  serviceCenter: {{storage: {{size: {size}}}}}\n  roaming: {{replicas: {roaming_replicas}}}\n"
        );
        cluster.kubectl_stdin(&["apply", "-f", "-"], &yaml).unwrap();
    };
    let claim = |region: &str| {
        get_json(
            &cluster,
            &["pvc", &format!("data-{region}-service-center-0"), "-n", NS],
        )
        .unwrap_or(Value::Null)
    };
    let requested =
        |region: &str| claim(region)["spec"]["resources"]["requests"]["storage"].clone();
    let statefulset = |region: &str| {
        get_json(
            &cluster,
            &["statefulset", &format!("{region}-service-center"), "-n", NS],
        )
        .unwrap()
    };
    let template_size = |region: &str| {
        statefulset(region)["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
            ["storage"]
            .clone()
    };
    let uid = |kind: &str, name: &str| {
        get_json(&cluster, &[kind, name, "-n", NS]).unwrap()["metadata"]["uid"].clone()
    };
    let condition = |region: &str, type_: &str| region_condition(&cluster, region, type_);
    let is = |region: &str, type_: &str, status: &str, reason: &str, message: &str| {
        condition(region, type_) == Some((status.to_owned(), reason.to_owned(), message.to_owned()))
    };
    let has_event = |region: &str, reason: &str, note: &str| {
        events(&cluster, "Region", region, reason)
            .iter()
            .any(|(n, _)| n == note)
    };

    // Two Regions on kwok's default class, which binds their claims and does
    // not allow volume expansion.
    apply("eu", "1Gi", 1);
    apply("ap", "1Gi", 1);
    wait(&cluster, "both claims Bound at 1Gi", 90, || {
        ["eu", "ap"].iter().all(|r| {
            let c = claim(r);
            c["status"]["phase"] == "Bound"
                && c["status"]["capacity"]["storage"] == "1Gi"
                && c["spec"]["storageClassName"] == "kwok-volume"
        })
    });
    let class = get_json(&cluster, &["storageclass", "kwok-volume"]).unwrap();
    assert!(class["allowVolumeExpansion"].is_null(), "{class}");
    wait(&cluster, "both Regions Ready and sized", 60, || {
        ["eu", "ap"].iter().all(|r| {
            ready(&cluster, r)
                && is(
                    r,
                    "StorageResized",
                    "True",
                    "SizeMatchesSpec",
                    "the data claims have spec.serviceCenter.storage.size (1Gi)",
                )
        })
    });
    let ap_claim = claim("ap");
    let ap_sts = statefulset("ap");
    let ap_pod = uid("pod", "ap-service-center-0");

    // 1. Refused: ap grows where its class does not allow it, and gets a
    // second roaming replica in the same change, which is applied.
    apply("ap", "2Gi", 2);
    let refused = "spec.serviceCenter.storage.size: cannot grow 1Gi to 2Gi: StorageClass \"kwok-volume\" does not allow volume expansion";
    wait(&cluster, "ap's refused resize in its status", 30, || {
        is(
            "ap",
            "StorageResized",
            "False",
            "StorageResizeRefused",
            refused,
        ) && is("ap", "Degraded", "True", "StorageResizeRefused", refused)
    });
    wait(
        &cluster,
        "the rest of ap applied: 2 roaming replicas",
        30,
        || {
            get_json(&cluster, &["deployment", "ap-roaming", "-n", NS])
                .is_some_and(|d| d["spec"]["replicas"] == 2)
        },
    );
    wait(&cluster, "a Warning Event for the refusal", 20, || {
        has_event("ap", "StorageResizeRefused", refused)
    });
    assert_eq!(
        claim("ap")["spec"],
        ap_claim["spec"],
        "the claim is unchanged"
    );
    let sts = statefulset("ap");
    assert_eq!(sts["spec"], ap_sts["spec"], "the StatefulSet is unchanged");
    assert_eq!(
        sts["metadata"]["generation"],
        ap_sts["metadata"]["generation"]
    );
    assert_eq!(uid("pod", "ap-service-center-0"), ap_pod);
    assert!(
        events(&cluster, "Region", "ap", "ApplyFailed").is_empty(),
        "the StatefulSet's apply did not fail"
    );

    // 2. Shrinking is refused too; the same size in other units is no change.
    apply("eu", "512Mi", 1);
    wait(&cluster, "eu's refused shrink", 30, || {
        is(
            "eu",
            "StorageResized",
            "False",
            "StorageResizeRefused",
            "spec.serviceCenter.storage.size: cannot shrink 1Gi to 512Mi: volumes cannot shrink",
        )
    });
    assert_eq!(requested("eu"), "1Gi");
    apply("eu", "1024Mi", 1);
    wait(&cluster, "eu sized again at 1024Mi", 30, || {
        is(
            "eu",
            "StorageResized",
            "True",
            "SizeMatchesSpec",
            "the data claims have spec.serviceCenter.storage.size (1024Mi)",
        ) && is(
            "eu",
            "Degraded",
            "False",
            "AsExpected",
            "every object is applied",
        )
    });
    assert_eq!(requested("eu"), "1Gi");

    // 3. Grown: the admin allows expansion on the class; eu grows to 2Gi.
    cluster
        .kubectl_ok(&[
            "patch",
            "storageclass",
            "kwok-volume",
            "--type",
            "merge",
            "-p",
            r#"{"allowVolumeExpansion":true}"#,
        ])
        .unwrap();
    let eu_claim = uid("pvc", "data-eu-service-center-0");
    let eu_pod = uid("pod", "eu-service-center-0");
    let eu_generation = statefulset("eu")["metadata"]["generation"].clone();
    apply("eu", "2Gi", 1);
    let growing = "spec.serviceCenter.storage.size: claim data-eu-service-center-0 requests 2Gi and has 1Gi so far";
    let took = wait(&cluster, "eu's claim patched and growing", 30, || {
        requested("eu") == "2Gi"
            && is("eu", "StorageResized", "False", "StorageResizing", growing)
            && is("eu", "Progressing", "True", "StorageResizing", growing)
    });
    println!("eu's claim was patched to 2Gi in {took:?}");
    assert!(is(
        "eu",
        "Degraded",
        "False",
        "AsExpected",
        "every object is applied"
    ));
    wait(&cluster, "a StorageResizing Event", 20, || {
        has_event(
            "eu",
            "StorageResizing",
            "growing claim data-eu-service-center-0 from 1Gi to 2Gi (spec.serviceCenter.storage.size)",
        )
    });
    // In place: the same claim and pod; the StatefulSet keeps the template
    // it was created with and is not rewritten.
    assert_eq!(uid("pvc", "data-eu-service-center-0"), eu_claim);
    assert_eq!(uid("pod", "eu-service-center-0"), eu_pod);
    assert_eq!(template_size("eu"), "1Gi");
    assert_eq!(statefulset("eu")["metadata"]["generation"], eu_generation);
    assert!(events(&cluster, "Region", "eu", "ApplyFailed").is_empty());

    // The cluster's resizer finishes: the claim's capacity reaches 2Gi.
    cluster
        .kubectl_ok(&[
            "patch",
            "pvc",
            "data-eu-service-center-0",
            "-n",
            NS,
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"capacity":{"storage":"2Gi"}}}"#,
        ])
        .unwrap();
    wait(&cluster, "eu sized at 2Gi", 30, || {
        is(
            "eu",
            "StorageResized",
            "True",
            "SizeMatchesSpec",
            "the data claims have spec.serviceCenter.storage.size (2Gi)",
        ) && condition("eu", "Progressing").is_some_and(|c| c.1 == "RolloutComplete")
    });
    wait(&cluster, "a StorageResized Event", 20, || {
        has_event(
            "eu",
            "StorageResized",
            "the data claims have spec.serviceCenter.storage.size (2Gi)",
        )
    });

    // ap, refused before, grows at its next look now that its class allows.
    wait(
        &cluster,
        "ap's claim patched once the class allows",
        30,
        || {
            requested("ap") == "2Gi"
                && condition("ap", "StorageResized").is_some_and(|c| c.1 == "StorageResizing")
                && condition("ap", "Degraded").is_some_and(|c| c.0 == "False")
        },
    );
    assert_eq!(uid("pod", "ap-service-center-0"), ap_pod);
    assert!(
        !operator.log_text().contains("volumeClaimTemplates"),
        "no apply of the StatefulSet failed: {}",
        operator.log_text()
    );
}

/// The first 16 hex digits of the SHA-256 of `text`, as `sha256sum` prints
/// them: the operator's `meridian.dev/mesh-config` annotation, computed
/// independently of it.
fn sha256_prefix(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..16].to_owned()
}

/// The service center and roaming pods of `region`: name -> (uid,
/// resourceVersion, `meridian.dev/mesh-config` annotation), of those not
/// being deleted.
fn region_pods(
    cluster: &ControlPlane,
    region: &str,
) -> BTreeMap<String, (String, String, Option<String>)> {
    let selector = format!("meridian.dev/region={region}");
    let list = get_json(cluster, &["pods", "-n", NS, "-l", &selector]).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let meta = &p["metadata"];
            (
                meta["name"].as_str().unwrap().to_owned(),
                (
                    meta["uid"].as_str().unwrap().to_owned(),
                    meta["resourceVersion"].as_str().unwrap().to_owned(),
                    meta["annotations"]["meridian.dev/mesh-config"]
                        .as_str()
                        .map(str::to_owned),
                ),
            )
        })
        .collect()
}

/// The hash of `region`'s mesh configuration as its ConfigMap holds it.
fn mesh_config_hash(cluster: &ControlPlane, region: &str) -> Option<String> {
    let cm = get_json(cluster, &["configmap", &format!("{region}-mesh"), "-n", NS])?;
    cm["data"]["mesh.yaml"].as_str().map(sha256_prefix)
}

/// Whether every pod of `region` (1 service center + `roaming` roaming pods)
/// runs and carries the hash of the region's current mesh configuration.
fn pods_carry_current_hash(cluster: &ControlPlane, region: &str, roaming: usize) -> bool {
    let Some(hash) = mesh_config_hash(cluster, region) else {
        return false;
    };
    let pods = region_pods(cluster, region);
    pods.len() == 1 + roaming
        && pods
            .values()
            .all(|(_, _, annotation)| annotation.as_deref() == Some(hash.as_str()))
}

/// A RegionLink edit reaches the nodes' mounted `mesh.yaml` within about a
/// second rather than at the kubelet's next periodic sync (a minute by
/// default): after the operator changes a Region's mesh ConfigMap, it
/// annotates the Region's running pods with the hash of the new content, and
/// the pod update makes the kubelet sync the pod and remount the ConfigMap.
/// kwok mounts nothing, so this proves the operator's half: every pod
/// carries the new hash promptly, the pods are not restarted (the hash is
/// not in the template), and a reconcile that changes nothing writes no pod.
/// Run with the chart's ServiceAccount, in a namespace enforcing the
/// "restricted" Pod Security profile, so the RBAC and admission allow it.
#[test]
fn a_mesh_change_is_announced_on_the_regions_running_pods_and_nothing_else_writes_them() {
    let cluster = ControlPlane::start().expect("a control plane");
    install_and_wait(&cluster, "default").unwrap();
    cluster.kubectl_ok(&["create", "namespace", NS]).unwrap();
    cluster
        .kubectl_ok(&[
            "label",
            "namespace",
            NS,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .unwrap();
    let kubeconfig = service_account_kubeconfig(&cluster).unwrap();
    let operator = Operator::start(&kubeconfig, "default", "nudge", &cluster.log_dir());
    let announcements = || {
        operator
            .log_text()
            .matches("told the region's pods of a new mesh configuration")
            .count()
    };

    let region = |name: &str, roaming: usize| {
        format!(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  cluster: default\n  serviceCenter: {{storage: {{size: 1Gi}}}}\n  roaming: {{replicas: {roaming}}}\n"
        )
    };
    let manifest = format!(
        "{}---\n{}---\napiVersion: meridian.dev/v1alpha1\nkind: RegionLink\nmetadata: {{name: eu-us, namespace: {NS}}}\nspec: {{regions: [eu, us], cost: 10}}\n",
        region("eu", 2),
        region("us", 1)
    );
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &manifest)
        .unwrap();
    let all_current =
        || pods_carry_current_hash(&cluster, "eu", 2) && pods_carry_current_hash(&cluster, "us", 1);
    let took = wait(
        &cluster,
        "every pod annotated with its mesh configuration",
        180,
        || ready(&cluster, "eu") && ready(&cluster, "us") && all_current(),
    );
    println!("every pod carried its mesh configuration's hash after {took:?}");
    // On the pods, never in their templates: that would restart them.
    let sts = get_json(&cluster, &["statefulset", "eu-service-center", "-n", NS]).unwrap();
    let deploy = get_json(&cluster, &["deployment", "eu-roaming", "-n", NS]).unwrap();
    for template in [&sts, &deploy] {
        assert!(
            template["spec"]["template"]["metadata"]["annotations"]["meridian.dev/mesh-config"]
                .is_null(),
            "{template}"
        );
    }

    // 1. A reconcile that changes nothing writes no pod: an annotation on the
    // Region makes the controller reconcile it without a mesh change.
    let quiet = |step: &str| {
        let pods = (region_pods(&cluster, "eu"), region_pods(&cluster, "us"));
        let (told, done) = (announcements(), reconciles(&operator));
        cluster
            .kubectl_ok(&[
                "annotate",
                "region",
                "eu",
                "us",
                "-n",
                NS,
                "--overwrite",
                &format!("test.meridian.dev/touch={step}"),
            ])
            .unwrap();
        wait(&cluster, "both Regions reconciled again", 30, || {
            reconciles(&operator) >= done + 2
        });
        assert_eq!(
            (region_pods(&cluster, "eu"), region_pods(&cluster, "us")),
            pods,
            "{step}: a reconcile with no change rewrote a pod"
        );
        assert_eq!(announcements(), told, "{step}: no pod was patched");
    };
    quiet("before");

    // 2. A RegionLink edit changes both ends' mesh: every pod of both
    // regions carries the new hash promptly, and none was replaced.
    let before = (region_pods(&cluster, "eu"), region_pods(&cluster, "us"));
    let old = (
        mesh_config_hash(&cluster, "eu").unwrap(),
        mesh_config_hash(&cluster, "us").unwrap(),
    );
    patch_eu_us(&cluster, r#"{"spec":{"cost":25}}"#);
    let took = wait(&cluster, "the new mesh's hash on every pod", 10, || {
        mesh(&cluster, "eu").and_then(|m| m.peer("us").and_then(|p| p.cost)) == Some(25)
            && mesh(&cluster, "us").and_then(|m| m.peer("eu").and_then(|p| p.cost)) == Some(25)
            && all_current()
    });
    println!("a RegionLink edit reached every pod's annotation in {took:?}");
    assert_ne!(mesh_config_hash(&cluster, "eu").unwrap(), old.0);
    assert_ne!(mesh_config_hash(&cluster, "us").unwrap(), old.1);
    let uids = |pods: &BTreeMap<String, (String, String, Option<String>)>| {
        pods.iter()
            .map(|(name, (uid, _, _))| (name.clone(), uid.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        uids(&region_pods(&cluster, "eu")),
        uids(&before.0),
        "no eu pod restarted"
    );
    assert_eq!(
        uids(&region_pods(&cluster, "us")),
        uids(&before.1),
        "no us pod restarted"
    );
    assert_eq!(
        get_json(&cluster, &["statefulset", "eu-service-center", "-n", NS]).unwrap()["metadata"]["generation"],
        sts["metadata"]["generation"],
        "the template did not change"
    );

    // 3. And once told, they are left alone again.
    quiet("after");
}

/// `spec.serviceCenter.dataCenter` on a real API server: its CEL rules
/// refuse what cannot run (several replicas on SQLite, PostgreSQL without
/// its Secret or with a volume, the PostgreSQL block on SQLite, a name that
/// is not a Secret's), each naming the field, and accept several replicas
/// on PostgreSQL. Then a Region moves from SQLite to PostgreSQL and back:
/// the operator (with the chart's RBAC) swaps the StatefulSet for a
/// Deployment of the replicas with a PodDisruptionBudget and back, the
/// Service reaches the Deployment's pods, the status counts them, and the
/// SQLite claim is kept for the way back. kwok runs no containers, so no
/// PostgreSQL is needed.
#[test]
fn a_region_moves_its_data_center_to_postgres_and_back_and_the_rules_hold() {
    let (cluster, _operator) = operated("default", "postgres");

    let eu = |service_center: &str| {
        format!(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: eu, namespace: {NS}}}\nspec:\n  cluster: default\n  serviceCenter: {service_center}\n"
        )
    };
    let postgres = |replicas: i32| {
        eu(&format!(
            "{{replicas: {replicas}, dataCenter: {{type: postgres, postgres: {{secretName: chat-db-app, tls: {{caSecretName: chat-db-ca}}}}}}}}"
        ))
    };
    let refused = |yaml: &str| {
        cluster
            .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], yaml)
            .unwrap_err()
            .to_string()
    };

    // 1. The CEL rules, each naming its field.
    let sqlite_replicas = refused(&eu("{replicas: 2}"));
    assert!(
        sqlite_replicas.contains("spec.serviceCenter.replicas")
            && sqlite_replicas
                .contains("a SQLite data center is one file on one volume that one process writes")
            && sqlite_replicas.contains("use dataCenter.type postgres for several replicas"),
        "{sqlite_replicas}"
    );
    assert!(
        refused(&eu("{replicas: 2, dataCenter: {type: sqlite}}"))
            .contains("a SQLite data center is one file"),
    );
    for (bad, field) in [
        (
            "{dataCenter: {type: postgres}}",
            "spec.serviceCenter.dataCenter.postgres is required with type postgres",
        ),
        (
            "{dataCenter: {type: postgres, postgres: {secretName: chat-db-app}}, storage: {size: 1Gi}}",
            "spec.serviceCenter.storage is the volume of a SQLite data center",
        ),
        (
            "{dataCenter: {type: sqlite, postgres: {secretName: chat-db-app}}}",
            "spec.serviceCenter.dataCenter.postgres is allowed only with type postgres",
        ),
        (
            "{dataCenter: {type: postgres, postgres: {secretName: Chat_DB}}}",
            "spec.serviceCenter.dataCenter.postgres.secretName",
        ),
        (
            "{dataCenter: {type: postgres, postgres: {secretName: chat-db-app, key: 'a/b'}}}",
            "spec.serviceCenter.dataCenter.postgres.key",
        ),
    ] {
        let message = refused(&eu(bad));
        assert!(message.contains(field), "{bad}: {message}");
    }
    cluster
        .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &postgres(2))
        .expect("2 replicas on PostgreSQL are accepted");
    let example = workspace_root().join("examples/postgres.yaml");
    cluster
        .kubectl_ok(&["apply", "--dry-run=server", "-f", example.to_str().unwrap()])
        .expect("examples/postgres.yaml is accepted");

    // 2. On SQLite: the StatefulSet and its claim.
    let exists = |kind: &str| {
        cluster
            .kubectl(&["get", kind, "eu-service-center", "-n", NS])
            .status
            .success()
    };
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &eu("{storage: {size: 1Gi}}"))
        .unwrap();
    wait(&cluster, "eu Ready on SQLite", 90, || {
        exists("statefulset") && ready(&cluster, "eu")
    });
    let claim_uid = || {
        get_json(&cluster, &["pvc", "data-eu-service-center-0", "-n", NS])
            .map(|c| c["metadata"]["uid"].clone())
    };
    let claim = claim_uid().expect("the SQLite claim");
    assert!(!exists("deployment") && !exists("poddisruptionbudget"));

    // 3. To PostgreSQL with 2 replicas: a Deployment and its budget, no
    // StatefulSet; the Service's endpoints are the Deployment's pods.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &postgres(2))
        .unwrap();
    let ready_replicas = || {
        get_json(&cluster, &["region", "eu", "-n", NS])
            .and_then(|r| r["status"]["serviceCenter"]["readyReplicas"].as_i64())
    };
    let took = wait(&cluster, "eu on a Deployment of 2, Ready", 90, || {
        !exists("statefulset")
            && exists("deployment")
            && exists("poddisruptionbudget")
            && ready_replicas() == Some(2)
            && ready(&cluster, "eu")
    });
    println!("eu moved to PostgreSQL (2 replicas) in {took:?}");
    let deployment = get_json(&cluster, &["deployment", "eu-service-center", "-n", NS]).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--postgres-url-file") && !args.contains("--data-dir"),
        "{args}"
    );
    let budget = get_json(&cluster, &["pdb", "eu-service-center", "-n", NS]).unwrap();
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    wait(&cluster, "the budget counts 2 healthy pods", 30, || {
        get_json(&cluster, &["pdb", "eu-service-center", "-n", NS]).is_some_and(|b| {
            b["status"]["currentHealthy"] == 2 && b["status"]["disruptionsAllowed"] == 1
        })
    });
    let pod_names = |selector: &str| -> Vec<String> {
        get_json(&cluster, &["pods", "-n", NS, "-l", selector])
            .map(|l| {
                l["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let service = get_json(&cluster, &["service", "eu-service-center", "-n", NS]).unwrap();
    let selector = service["spec"]["selector"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    // The ready pods behind `service`, by its EndpointSlices.
    let targets = |service: &str| -> Vec<String> {
        let slices = get_json(
            &cluster,
            &[
                "endpointslices",
                "-n",
                NS,
                "-l",
                &format!("kubernetes.io/service-name={service}"),
            ],
        )
        .unwrap_or(Value::Null);
        let mut targets: Vec<String> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["targetRef"]["name"].as_str().map(str::to_owned))
            .collect();
        targets.sort();
        targets
    };
    wait(
        &cluster,
        "the Services' endpoints are the Deployment's 2 pods",
        60,
        || {
            let pods = pod_names(&selector);
            pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p.starts_with("eu-service-center-") && !p.ends_with("-0"))
                && targets("eu-service-center") == pods
                && targets("eu-service-center-pods") == pods
        },
    );
    let headless = get_json(&cluster, &["service", "eu-service-center-pods", "-n", NS]).unwrap();
    assert_eq!(headless["spec"]["clusterIP"], "None", "{headless}");
    let mesh = mesh(&cluster, "eu").unwrap();
    assert_eq!(
        mesh.service_center.pair,
        format!("https://eu-service-center.{NS}.svc:7401"),
        "pair is the Service, not a pod"
    );
    assert_eq!(
        mesh.service_center.dns,
        Some(format!("https://eu-service-center-pods.{NS}.svc:7401")),
        "the roaming system finds every replica by the headless Service's name"
    );
    assert!(
        !events(&cluster, "Region", "eu", "DataCenterSwitched").is_empty(),
        "the switch is recorded"
    );
    assert_eq!(claim_uid(), Some(claim.clone()), "the SQLite claim is kept");

    // 4. Scaling is the Region's replicas.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &postgres(3))
        .unwrap();
    wait(&cluster, "3 ready replicas", 60, || {
        ready_replicas() == Some(3) && ready(&cluster, "eu")
    });

    // 5. Back to SQLite: the StatefulSet again, on the kept claim; the
    // Deployment, its budget and the headless Service are gone (the
    // chart's RBAC lets the operator delete them), and the mesh
    // configuration names no replicas to find.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], &eu("{storage: {size: 1Gi}}"))
        .unwrap();
    wait(&cluster, "eu back on its StatefulSet", 90, || {
        exists("statefulset")
            && !exists("deployment")
            && !exists("poddisruptionbudget")
            && ready_replicas() == Some(1)
            && ready(&cluster, "eu")
    });
    wait(&cluster, "the headless Service gone", 30, || {
        !cluster
            .kubectl(&["get", "service", "eu-service-center-pods", "-n", NS])
            .status
            .success()
    });
    assert_eq!(
        crate::mesh(&cluster, "eu").unwrap().service_center.dns,
        None
    );
    assert_eq!(claim_uid(), Some(claim), "the same claim");
}

/// `spec.serviceCenter.maxSubscriptions`: the apiserver refuses a bound
/// outside 1 to 1,000,000, naming the field, and the operator passes the
/// one given to the service center as `--max-subscriptions`, following
/// each change (and dropping the flag when the field goes).
#[test]
fn a_regions_max_subscriptions_is_bounded_and_reaches_its_service_center() {
    let (cluster, _operator) = operated("default", "subscriptions");

    let eu = |max: &str| {
        format!(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: eu, namespace: {NS}}}\nspec:\n  cluster: default\n  serviceCenter: {{maxSubscriptions: {max}}}\n"
        )
    };
    // The schema's own bounds, not only an unknown field.
    for (bad, why) in [
        ("0", "greater than or equal to 1"),
        ("-5", "greater than or equal to 1"),
        ("1000001", "less than or equal to 1000000"),
        ("lots", "must be of type integer"),
    ] {
        let refused = cluster
            .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &eu(bad))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("spec.serviceCenter.maxSubscriptions") && refused.contains(why),
            "{bad}: {refused}"
        );
    }

    // The value of `--max-subscriptions` in the service center's container.
    let flag = || -> Option<Option<String>> {
        let sts = get_json(&cluster, &["statefulset", "eu-service-center", "-n", NS])?;
        let args: Vec<String> = serde_json::from_value(
            sts["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
        )
        .ok()?;
        let at = args.iter().position(|a| a == "--max-subscriptions");
        Some(at.and_then(|at| args.get(at + 1).cloned()))
    };
    for max in ["2500", "1000000", "1"] {
        cluster
            .kubectl_stdin(&["apply", "-f", "-"], &eu(max))
            .unwrap();
        wait(&cluster, &format!("--max-subscriptions {max}"), 60, || {
            flag() == Some(Some(max.to_owned()))
        });
    }
    let roaming = get_json(&cluster, &["deployment", "eu-roaming", "-n", NS]).unwrap();
    let roaming_args = roaming["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        !roaming_args.contains("--max-subscriptions"),
        "{roaming_args}"
    );
    cluster
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &format!(
                "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: eu, namespace: {NS}}}\nspec: {{cluster: default}}\n"
            ),
        )
        .unwrap();
    wait(&cluster, "no --max-subscriptions once unset", 60, || {
        flag() == Some(None)
    });
}
