//! Benchmark of the operator on a real control plane: the time from applying
//! N Regions at once to every region's mesh configuration listing all the
//! others, and the operator's memory. Runs each round in a fresh namespace.
//!
//! cargo build --release --workspace --bins && target/release/operator-bench --regions 50 --rounds 3

use std::time::{Duration, Instant};

use clap::Parser;
use meridian_node::mesh::MeshConfig;
use meridian_tests::control_plane::ControlPlane;
use meridian_tests::operator::{Operator, helm_install, service_account_kubeconfig};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 50)]
    regions: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Resident and peak resident memory of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn complete(cluster: &ControlPlane, namespace: &str, regions: usize) -> usize {
    let out = cluster.kubectl(&[
        "get",
        "configmaps",
        "-n",
        namespace,
        "-l",
        "app.kubernetes.io/component=mesh",
        "-o",
        "json",
    ]);
    let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return 0;
    };
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|cm| {
                    cm["data"]["mesh.yaml"]
                        .as_str()
                        .and_then(|y| MeshConfig::from_yaml(y).ok())
                })
                .filter(|m| m.peers.len() == regions - 1)
                .count()
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cluster = ControlPlane::start()?;
    helm_install(&cluster, "default")?;
    cluster.kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "crd/regions.meridian.dev",
        "--timeout",
        "60s",
    ])?;
    let kubeconfig = service_account_kubeconfig(&cluster)?;
    let operator = Operator::start(&kubeconfig, "default", "bench", &cluster.log_dir());
    println!(
        "operator-bench: {} regions per round, {} rounds",
        args.regions, args.rounds
    );
    for round in 1..=args.rounds {
        let namespace = format!("bench-{round}");
        cluster.kubectl_ok(&["create", "namespace", &namespace])?;
        let manifests: Vec<String> = (0..args.regions)
            .map(|i| {
                format!("apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {{name: r{i}, namespace: {namespace}}}\nspec: {{cluster: default}}\n")
            })
            .collect();
        let started = Instant::now();
        cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests.join("---\n"))?;
        let applied = started.elapsed();
        cluster.wait_until(
            "every mesh configuration complete",
            Duration::from_secs(300),
            || complete(&cluster, &namespace, args.regions) == args.regions,
        )?;
        let took = started.elapsed();
        let (rss, peak) = memory_mib(operator.pid());
        println!(
            "round {round}: kubectl apply {:.2} s; every mesh configuration complete {:.2} s after the apply started; operator RSS {rss:.1} MiB (peak {peak:.1} MiB)",
            applied.as_secs_f64(),
            took.as_secs_f64()
        );
    }
    Ok(())
}
