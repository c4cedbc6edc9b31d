//! A stopped node leaves nothing running: `Node::run` returns only once the
//! outbox workers, the prober, subscriptions and reloads it started have
//! stopped, so its data center — and the data center's lock — is released.

use std::fs::{File, TryLockError};
use std::time::Duration;

use meridian_node::proto::peer_api::LinkCondition;
use meridian_tests::in_process::Mesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_releases_its_data_center_even_with_an_outbox_worker_retrying() {
    let mut mesh = Mesh::start(&["eu", "us"]).await;
    let mut bob = mesh.user("bob@us", "us").await;
    let group = bob.create_group("ops").await.expect("create group");
    let mut ann = mesh.user("ann@eu", "eu").await;
    ann.join(&group.id).await.expect("join");

    // With the link cut, eu's outbox worker for us retries with backoff.
    mesh.set_link("eu", "us", false);
    mesh.wait_link("eu", "us", LinkCondition::Down).await;
    ann.send(&group.id, "waits in the outbox", "")
        .await
        .expect("accepted at eu");
    // A subscription is one more task the node owns.
    let _stream = ann.subscribe(Vec::new()).await.expect("subscribe");

    mesh.stop_regions().await;
    let lock = mesh.data_dir("eu").join("data-center.lock");
    let file = File::options().write(true).open(&lock).expect("lock file");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "eu's data center is still held after its node stopped"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(TryLockError::Error(e)) => panic!("lock {}: {e}", lock.display()),
        }
    }
}
