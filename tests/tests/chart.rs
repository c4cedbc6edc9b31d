//! The chart's log levels, rendered with real helm (built with the control
//! plane): `logLevel` is the operator's RUST_LOG, `nodeLogLevel` reaches the
//! operator as MERIDIAN_NODE_LOG_LEVEL (`--node-log-level`), and the schema
//! refuses what is not a log filter, naming the value. The operator refuses
//! such a `--node-log-level` too.

use std::path::PathBuf;
use std::process::{Command, Output};

use meridian_tests::local_mode::{binary, workspace_root};
use serde::Deserialize;
use serde_json::Value;

fn helm() -> PathBuf {
    meridian_tests::control_plane::build()
        .expect("the control plane's binaries")
        .join("helm")
}

fn template(helm: &PathBuf, args: &[&str]) -> Output {
    Command::new(helm)
        .args(["template", "x"])
        .arg(workspace_root().join("charts/meridian"))
        .args(args)
        .output()
        .unwrap()
}

/// The operator container's environment, by name.
fn operator_env(rendered: &Output) -> serde_json::Map<String, Value> {
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).unwrap();
        if object["kind"] == "Deployment" {
            let container = &object["spec"]["template"]["spec"]["containers"][0];
            return container["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].clone()))
                .collect();
        }
    }
    panic!("no Deployment rendered");
}

#[test]
fn the_chart_sets_the_log_levels_and_refuses_what_is_not_one() {
    let helm = helm();

    let defaults = operator_env(&template(&helm, &[]));
    assert_eq!(defaults["RUST_LOG"], "info");
    assert!(
        !defaults.contains_key("MERIDIAN_NODE_LOG_LEVEL"),
        "unset, the node pods get no log level"
    );

    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "logLevel: info,meridian_operator=debug\nnodeLogLevel: debug,tonic=warn\n",
    )
    .unwrap();
    let set = operator_env(&template(&helm, &["-f", values.to_str().unwrap()]));
    assert_eq!(set["RUST_LOG"], "info,meridian_operator=debug");
    assert_eq!(set["MERIDIAN_NODE_LOG_LEVEL"], "debug,tonic=warn");

    for (value, name) in [
        ("logLevel=loud", "logLevel"),
        ("nodeLogLevel=verbose", "nodeLogLevel"),
        ("logLevel=", "logLevel"),
    ] {
        let refused = template(&helm, &["--set", value]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{value} was accepted");
        assert!(stderr.contains(name), "the schema names {name}: {stderr}");
    }

    // The operator itself refuses a node log level that is not a filter,
    // before it reaches any cluster.
    let refused = Command::new(binary("meridian-operator"))
        .args(["run", "--cluster", "x", "--node-log-level", "loud"])
        .env("KUBECONFIG", dir.path().join("none"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a log filter"), "{stderr}");
}

/// With `metrics.dashboard.enabled` and `metrics.podMonitor.enabled`, the
/// chart ships the Grafana dashboard unchanged (its `{{region}}` legends are
/// not taken for templates) and a PodMonitor of the node pods' `metrics`
/// port in every namespace.
#[test]
fn the_chart_ships_the_dashboard_and_a_pod_monitor_of_the_nodes() {
    let helm = helm();
    let defaults = template(&helm, &[]);
    assert!(defaults.status.success());
    let text = String::from_utf8_lossy(&defaults.stdout);
    assert!(!text.contains("kind: PodMonitor") && !text.contains("grafana_dashboard"));

    let rendered = template(
        &helm,
        &[
            "--set",
            "metrics.dashboard.enabled=true,metrics.podMonitor.enabled=true",
        ],
    );
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout);
    let objects: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|o| !o.is_null())
        .collect();
    let dashboard = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard's ConfigMap");
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["meridian.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace_root().join("charts/meridian/dashboards/meridian.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(shipped, file);
    let monitor = objects
        .iter()
        .find(|o| o["kind"] == "PodMonitor")
        .expect("the PodMonitor");
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        "meridian-operator"
    );
    assert_eq!(monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
}
