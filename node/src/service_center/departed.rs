//! Outbox items addressed to a region that left the mesh: no region will
//! ever acknowledge them, so the outbox would keep them (and retry them)
//! forever. They are dropped, with a WARN line and a count.
//!
//! A region is in the mesh while the current mesh configuration names it,
//! whatever the state of the link to it: a region that is cut off, down, or
//! whose link is disabled keeps its items until it is reachable again (see
//! [`crate::mesh::MeshConfig::has_region`]). The outbox worker of a
//! destination checks each batch it reads against the configuration, so the
//! items are dropped when the configuration changes, and after a restart by
//! the worker that resumes them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::data_center::DataCenter;
use crate::Error;
use crate::limits::PRUNE_BATCH;

/// Outbox items dropped because their destination left the mesh, since
/// this process started. Clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Dropped(Arc<AtomicU64>);

impl Dropped {
    pub fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, items: u64) {
        self.0.fetch_add(items, Ordering::Relaxed);
    }
}

/// Drops every item waiting for `destination`, [`PRUNE_BATCH`] per write
/// so that a long queue never holds the writer for long; logs and counts
/// them. How many it dropped.
pub async fn discard(dc: &DataCenter, destination: &str, dropped: &Dropped) -> Result<u64, Error> {
    let mut total = 0u64;
    loop {
        let dest = destination.to_owned();
        let deleted = dc.write(move |tx| tx.discard(&dest, PRUNE_BATCH)).await?;
        total += deleted as u64;
        dropped.add(deleted as u64);
        if deleted < PRUNE_BATCH {
            break;
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::warn!(
            %destination,
            items = total,
            "outbox items dropped unsent: region {destination} is not in the mesh configuration"
        );
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mesh::MeshConfig;
    use crate::mesh::config::{PairEndpoint, Peer};
    use crate::proto::peer_api::{Item, Submission, item::Kind};
    use crate::service_center::hub::Hub;
    use crate::service_center::outbox::Outbox;
    use crate::service_center::roaming_client::RoamingClient;
    use crate::service_center::verdicts::Verdicts;
    use crate::tasks::Tasks;
    use crate::telemetry::ServiceCenterMetrics;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

    fn item(n: usize) -> Item {
        Item {
            kind: Some(Kind::Submission(Submission {
                message_id: format!("m{n}"),
                ..Default::default()
            })),
        }
    }

    async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !done().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn items_for_a_region_out_of_the_mesh_are_dropped_and_an_unreachable_regions_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dc = DataCenter::open(&dir.path().join("data-center.sqlite")).unwrap();
        // What a previous run left: items for us (in the mesh, but nothing
        // answers at its address) and for gone (no longer in the mesh).
        dc.write(|tx| {
            for n in 0..5 {
                tx.enqueue(if n < 2 { "us" } else { "gone" }, &item(n), "", 1)?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let nowhere = || PairEndpoint::single("https://127.0.0.1:9");
        let mut config = MeshConfig {
            region: "eu".into(),
            service_center: nowhere(),
            roaming: nowhere(),
            peers: vec![Peer {
                region: "us".into(),
                endpoint: "https://127.0.0.1:9".into(),
                enabled: false,
                cost: None,
            }],
        };
        let (config_tx, config_rx) = tokio::sync::watch::channel(config.clone());
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let link = Arc::new(RoamingClient::new(config_rx, credentials));
        let metrics = ServiceCenterMetrics::new(dc.commits().clone());
        let tasks = Tasks::new();
        let outbox = Outbox::new(
            dc.clone(),
            link,
            tasks.clone(),
            metrics.clone(),
            Verdicts::new(Hub::new(metrics)),
            crate::service_center::replicas::Replica::default(),
        );
        outbox.resume().await.unwrap();

        let depth = || {
            let dc = dc.clone();
            async move { dc.read(|tx| tx.depth()).await.unwrap() }
        };
        eventually("gone's items dropped at startup", async || {
            outbox.dropped_total() == 3
        })
        .await;
        assert_eq!(
            depth().await,
            2,
            "us is unreachable, not gone: its items stay"
        );

        // A new item for gone is dropped too; us's stay while it is listed.
        dc.write(|tx| tx.enqueue("gone", &item(9), "", 1))
            .await
            .unwrap();
        outbox.wake("gone");
        eventually("a later item for gone dropped", async || {
            outbox.dropped_total() == 4
        })
        .await;
        assert_eq!(depth().await, 2);

        // us leaves the mesh: the configuration change drops its items.
        config.peers.clear();
        config_tx.send_replace(config);
        eventually("us's items dropped", async || depth().await == 0).await;
        assert_eq!(outbox.dropped_total(), 6);
        tasks.shutdown().await;
    }

    #[tokio::test]
    async fn a_long_queue_is_dropped_in_bounded_writes_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let dc = DataCenter::open(&dir.path().join("data-center.sqlite")).unwrap();
        let items = PRUNE_BATCH * 2 + 3;
        dc.write(move |tx| {
            for n in 0..items {
                let item = Item {
                    kind: Some(Kind::Submission(Submission {
                        message_id: format!("m{n}"),
                        ..Default::default()
                    })),
                };
                tx.enqueue(if n == 0 { "us" } else { "gone" }, &item, "", 1)?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let dropped = Dropped::default();
        let count = discard(&dc, "gone", &dropped).await.unwrap();
        assert_eq!(count, items as u64 - 1);
        assert_eq!(dropped.total(), count);
        assert_eq!(
            dc.read(|tx| tx.depth()).await.unwrap(),
            1,
            "us keeps its item"
        );
        assert_eq!(discard(&dc, "gone", &dropped).await.unwrap(), 0);
        assert_eq!(dropped.total(), count);
    }
}
