//! A service center's readiness, as Kubernetes asks it: the gRPC health
//! check of the plaintext probe port (`--listen-probe`). Real `meridian-node`
//! processes: the service center stays NOT_SERVING while its roaming system
//! is not running, turns SERVING once a call to it has succeeded, and stays
//! SERVING when it is lost later (it still serves its own users).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_tests::node_process::{self, Node, Region, free_addr};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The probe port's answer for the whole server (service ""), if it answers.
async fn health(probe: SocketAddr) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{probe}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(reply.into_inner().status())
}

/// Waits up to `secs` for `probe` to answer `want`.
async fn wait_for(node: &Node, probe: SocketAddr, want: ServingStatus, secs: u64) -> Duration {
    let started = Instant::now();
    loop {
        let now = health(probe).await;
        if now == Some(want) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "{probe} still answers {now:?}, not {want:?}, after {secs} s\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that `probe` answers `want` at every check for `window`.
async fn stays(node: &Node, probe: SocketAddr, want: ServingStatus, window: Duration) {
    let started = Instant::now();
    while started.elapsed() < window {
        let now = health(probe).await;
        assert_eq!(now, Some(want), "{probe}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_center_is_ready_only_once_its_roaming_system_answers() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let region = Region::new(dir, "readiness");
    let (client, sc_probe) = (free_addr(), free_addr());
    let (peer, roaming_probe) = (free_addr(), free_addr());
    // Debug logs: the test reads the service center's.
    let start = |name: &str, args: &[String]| {
        Node::start(
            dir,
            name,
            node_process::command(args).env("RUST_LOG", "info,meridian_node=debug"),
        )
    };

    let mut args = region.args("service-center");
    args.extend(region.service_center_args(&dir.join("data"), client));
    args.extend(["--listen-probe".into(), sc_probe.to_string()]);
    let service_center = start("service-center", &args);

    // It serves (the probe answers), but is not ready: no roaming system.
    wait_for(&service_center, sc_probe, ServingStatus::NotServing, 30).await;
    stays(
        &service_center,
        sc_probe,
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;

    let mut args = region.args("roaming");
    args.extend(region.roaming_args(peer));
    args.extend(["--listen-probe".into(), roaming_probe.to_string()]);
    let mut roaming = start("roaming", &args);
    // A roaming system is ready as soon as it serves.
    wait_for(&roaming, roaming_probe, ServingStatus::Serving, 30).await;
    let took = wait_for(&service_center, sc_probe, ServingStatus::Serving, 20).await;
    println!("the service center was ready {took:?} after its roaming system");
    assert!(
        service_center
            .log_text()
            .contains("service center ready: its roaming system answers"),
        "{}",
        service_center.log_text()
    );

    // Losing the roaming system later does not make it unready: it still
    // serves its own users and local groups.
    roaming.kill();
    stays(
        &service_center,
        sc_probe,
        ServingStatus::Serving,
        Duration::from_secs(2),
    )
    .await;
}
