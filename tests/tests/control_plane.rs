//! The real control plane of `tests/control-plane` works: workloads are
//! scheduled, kwok makes their pods Ready, volumes are bound, garbage
//! collection runs, and two control planes coexist.

use std::time::Duration;

use meridian_tests::control_plane::ControlPlane;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: cp-test
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example.invalid/never-pulled:1
"#;

const STATEFUL_SET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: store
  namespace: cp-test
spec:
  replicas: 1
  serviceName: store
  selector:
    matchLabels: {app: store}
  template:
    metadata:
      labels: {app: store}
    spec:
      containers:
      - name: store
        image: example.invalid/never-pulled:1
        volumeMounts:
        - {name: data, mountPath: /data}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;

/// The Ready condition of every pod matching `selector`, e.g. "True True".
fn ready(cluster: &ControlPlane, selector: &str) -> String {
    cluster
        .kubectl_ok(&[
            "-n",
            "cp-test",
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {end}"#,
        ])
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn workloads_become_ready_on_the_real_control_plane() {
    let cluster = ControlPlane::start().expect("control plane");

    let readyz = cluster.kubectl_ok(&["get", "--raw", "/readyz"]).unwrap();
    assert_eq!(readyz.trim(), "ok");
    let version = cluster.kubectl_ok(&["version", "-o", "json"]).unwrap();
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["minor"], "37", "{version}");

    cluster
        .kubectl_ok(&["create", "namespace", "cp-test"])
        .unwrap();
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT)
        .unwrap();
    let took = cluster
        .wait_until(
            "the Deployment's pod to be Ready",
            Duration::from_secs(60),
            || ready(&cluster, "app=web") == "True",
        )
        .unwrap();
    eprintln!(
        "Deployment pod Ready {:.1} s after apply",
        took.as_secs_f64()
    );
    let phase = cluster
        .kubectl_ok(&[
            "-n",
            "cp-test",
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].status.phase}",
        ])
        .unwrap();
    assert_eq!(phase, "Running");

    // A StatefulSet with a volume claim: kwok's StorageClass binds it.
    cluster
        .kubectl_stdin(&["apply", "-f", "-"], STATEFUL_SET)
        .unwrap();
    cluster
        .wait_until(
            "the StatefulSet's pod to be Ready",
            Duration::from_secs(60),
            || ready(&cluster, "app=store") == "True",
        )
        .unwrap();
    let claim = cluster
        .kubectl_ok(&[
            "-n",
            "cp-test",
            "get",
            "pvc",
            "data-store-0",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .unwrap();
    assert_eq!(claim, "Bound");

    // Garbage collection: deleting the Deployment removes its ReplicaSet
    // and pod through their owner references.
    cluster
        .kubectl_ok(&[
            "-n",
            "cp-test",
            "delete",
            "deployment",
            "web",
            "--wait=false",
        ])
        .unwrap();
    cluster
        .wait_until(
            "the Deployment's ReplicaSet and pod to be collected",
            Duration::from_secs(60),
            || {
                let left = cluster
                    .kubectl_ok(&[
                        "-n",
                        "cp-test",
                        "get",
                        "replicasets,pods",
                        "-l",
                        "app=web",
                        "-o",
                        "name",
                    ])
                    .unwrap_or_else(|_| "error".into());
                left.trim().is_empty()
            },
        )
        .unwrap();

    // The helm that was built talks to this cluster.
    let releases = cluster
        .helm_ok(&["list", "--all-namespaces", "-o", "json"])
        .unwrap();
    assert_eq!(releases.trim(), "[]");
}

#[test]
fn two_control_planes_run_side_by_side() {
    let a = ControlPlane::start().expect("control plane a");
    let b = ControlPlane::start().expect("control plane b");
    assert_ne!(a.server, b.server);

    a.kubectl_ok(&["create", "namespace", "only-in-a"]).unwrap();
    b.kubectl_ok(&["create", "namespace", "only-in-b"]).unwrap();
    for (cluster, mine, other) in [
        (&a, "only-in-a", "only-in-b"),
        (&b, "only-in-b", "only-in-a"),
    ] {
        assert_eq!(
            cluster
                .kubectl_ok(&["get", "--raw", "/readyz"])
                .unwrap()
                .trim(),
            "ok"
        );
        let namespaces = cluster
            .kubectl_ok(&["get", "namespaces", "-o", "name"])
            .unwrap();
        assert!(
            namespaces.contains(&format!("namespace/{mine}")),
            "{namespaces}"
        );
        assert!(
            !namespaces.contains(&format!("namespace/{other}")),
            "{namespaces}"
        );
        let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]).unwrap();
        assert!(nodes.contains("node/kwok-node-0"), "{nodes}");
    }

    // Stopping one leaves the other working.
    let dir_a = a.dir.clone();
    drop(a);
    assert!(!dir_a.join("kubeconfig").exists());
    assert_eq!(
        b.kubectl_ok(&["get", "--raw", "/readyz"]).unwrap().trim(),
        "ok"
    );
}
