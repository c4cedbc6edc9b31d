//! The periodic pruning of what the data center keeps only for a while:
//! sessions that can no longer be used or refreshed, and the records of
//! accepted sends once their retention ([`ACCEPTED_RETENTION_MS`]) has
//! passed. Each write deletes at most [`PRUNE_BATCH`] rows per table, so a
//! large prune (after a long stop) is many short writes that the clients'
//! writes interleave with, never one long hold of the writer.

use std::time::Duration;

use super::data_center::DataCenter;
use crate::Error;
use crate::limits::{ACCEPTED_RETENTION_MS, PRUNE_BATCH, PRUNE_INTERVAL_MS, REFRESH_TOKEN_TTL_MS};

// A client may retry a send for as long as its session can be refreshed.
const _: () = assert!(ACCEPTED_RETENTION_MS >= REFRESH_TOKEN_TTL_MS);

/// What one prune deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub sessions: usize,
    pub accepted: usize,
    /// The writes it took.
    pub writes: usize,
}

/// Deletes everything past its retention at `now_ms`, `batch` rows per
/// table and write, until nothing is left to delete.
pub async fn prune(dc: &DataCenter, now_ms: i64, batch: usize) -> Result<Pruned, Error> {
    let mut pruned = Pruned::default();
    loop {
        let (sessions, accepted) = dc
            .write(move |tx| {
                Ok((
                    tx.delete_expired_sessions(now_ms, batch)?,
                    tx.delete_accepted_before(now_ms.saturating_sub(ACCEPTED_RETENTION_MS), batch)?,
                ))
            })
            .await?;
        pruned.sessions += sessions;
        pruned.accepted += accepted;
        pruned.writes += 1;
        if sessions < batch && accepted < batch {
            return Ok(pruned);
        }
        // Let the writes that waited for this one go first.
        tokio::task::yield_now().await;
    }
}

/// Prunes at once and then every [`PRUNE_INTERVAL_MS`], forever; its owner
/// ends it by dropping it (each write is atomic, so any await is a safe
/// place to stop).
pub async fn run(dc: DataCenter) {
    let mut every = tokio::time::interval(Duration::from_millis(PRUNE_INTERVAL_MS));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match prune(&dc, crate::now_ms(), PRUNE_BATCH).await {
            Ok(pruned) if pruned.sessions + pruned.accepted > 0 => tracing::info!(
                sessions = pruned.sessions,
                accepted = pruned.accepted,
                writes = pruned.writes,
                "pruned what is past its retention"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, "pruning failed; trying again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::data_center::tx::{TokenHash, Tokens};

    const HOUR: i64 = 60 * 60 * 1000;

    fn open() -> (tempfile::TempDir, DataCenter) {
        let dir = tempfile::tempdir().unwrap();
        let dc = DataCenter::open(&dir.path().join("data-center.sqlite")).unwrap();
        (dir, dc)
    }

    /// `n` sessions issued at `at_ms` and `n` sends accepted at `at_ms`.
    async fn fill(dc: &DataCenter, first: usize, n: usize, at_ms: i64) {
        dc.write(move |tx| {
            for i in first..first + n {
                let tokens = Tokens {
                    access_hash: hash(i, 0),
                    refresh_hash: hash(i, 1),
                    expires_at_ms: at_ms + 15 * 60 * 1000,
                    refresh_expires_at_ms: at_ms + REFRESH_TOKEN_TTL_MS,
                };
                tx.insert_session("ann@eu", &tokens)?;
                let id = format!("m{i}");
                tx.insert_accepted(&id, "g@us", "ann@eu", Some(&id), at_ms)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    fn hash(i: usize, which: u8) -> TokenHash {
        let mut hash = [which; 32];
        hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
        hash
    }

    async fn counts(dc: &DataCenter) -> (i64, i64) {
        dc.read_sqlite(|conn| {
            let count = |table: &str| {
                conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            };
            Ok((count("sessions")?, count("accepted")?))
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn what_is_past_retention_goes_in_bounded_writes_and_the_rest_stays() {
        let (_dir, dc) = open();
        fill(&dc, 0, 250, 0).await;
        fill(&dc, 250, 7, 10 * HOUR).await;
        assert_eq!(counts(&dc).await, (257, 257));

        // Just before the day is out, nothing has passed its retention.
        let pruned = prune(&dc, ACCEPTED_RETENTION_MS - 1, 100).await.unwrap();
        assert_eq!((pruned.sessions, pruned.accepted), (0, 0));

        let pruned = prune(&dc, 25 * HOUR, 100).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                sessions: 250,
                accepted: 250,
                writes: 3
            },
            "250 rows per table in writes of at most 100"
        );
        assert_eq!(counts(&dc).await, (7, 7), "the later ones stay");
        assert_eq!(
            prune(&dc, 25 * HOUR, 100).await.unwrap().writes,
            1,
            "nothing left: one write that finds nothing"
        );
    }

    #[tokio::test]
    async fn a_started_business_center_prunes_at_once() {
        use crate::mesh::MeshConfig;
        use crate::mesh::config::PairEndpoint;
        use crate::service_center::BusinessCenter;
        use crate::service_center::roaming_client::RoamingClient;
        use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa};

        let (_dir, dc) = open();
        // Left by a run that stopped more than a day ago.
        fill(&dc, 0, 3, 0).await;
        let nowhere = || PairEndpoint::single("https://127.0.0.1:9");
        let config = MeshConfig {
            region: "eu".into(),
            service_center: nowhere(),
            roaming: nowhere(),
            peers: Vec::new(),
        };
        let (_config, config_rx) = tokio::sync::watch::channel(config);
        let ca = MeshCa::generate("test").unwrap();
        let credentials = ca
            .issue_region("eu", "test", &[], DEFAULT_LIFETIME)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();
        let link = std::sync::Arc::new(RoamingClient::new(config_rx, credentials));
        let center = BusinessCenter::start(dc.clone(), link).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while counts(&dc).await != (0, 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not pruned within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        center.shutdown().await;
    }
}
