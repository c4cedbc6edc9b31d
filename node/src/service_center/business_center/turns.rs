//! A batch that arrives ahead of its turn in its run (`CarryOrder`) waits
//! here, briefly, for the one before it. Batches a sender has in flight
//! together take separate calls through two roaming systems, so the one
//! behind now and then overtakes the one ahead; without the wait it would
//! apply nothing, and the sender would start its run again. The data
//! center's `Runs::take_batch` stays the judge: this only holds a batch
//! back while this process knows the run is behind, which it does from
//! the batches it applied itself (another replica's are not seen here, and
//! a batch whose run is unknown here goes straight on).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use crate::proto::peer_api::CarryOrder;

/// The longest a batch waits for the one before it. The sender has the
/// two in flight together, so the one ahead is normally a fraction of a
/// millisecond behind; one that is lost is not coming.
pub const TURN_WAIT: Duration = Duration::from_millis(50);

/// Where each source's run stands, by the batches this process applied.
/// Keyed by the source region the roaming system proved, so it holds one
/// entry per region of the mesh at most.
#[derive(Default)]
pub struct Turns {
    taken: Mutex<HashMap<String, (i64, i64)>>,
    changed: Notify,
}

impl Turns {
    /// Waits until batch `order` from `source` is in its turn here, or the
    /// run is not known to be behind it, for at most `within`.
    pub async fn wait(&self, source: &str, order: CarryOrder, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so no change after it is missed.
            changed.as_mut().enable();
            if !self.behind(source, &order) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Batch `order` from `source` applied here.
    pub fn taken(&self, source: &str, order: &CarryOrder) {
        self.taken
            .lock()
            .expect("carried runs")
            .insert(source.to_owned(), (order.chain, order.batch));
        self.changed.notify_waiters();
    }

    /// Whether `source`'s run is here known to be more than one batch
    /// behind `order`.
    fn behind(&self, source: &str, order: &CarryOrder) -> bool {
        let taken = self.taken.lock().expect("carried runs");
        matches!(taken.get(source), Some(&(chain, batch)) if chain == order.chain && batch < order.batch - 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Longer than any test runs: a wait this long would fail it.
    const LONG: Duration = Duration::from_secs(600);
    /// Ample for a call that does not wait, on a loaded machine.
    const PROMPTLY: Duration = Duration::from_secs(20);

    fn order(batch: i64) -> CarryOrder {
        CarryOrder { chain: 5, batch }
    }

    #[tokio::test]
    async fn a_batch_ahead_waits_for_the_one_before_it() {
        let turns = Arc::new(Turns::default());
        turns.taken("eu", &order(0));
        let waiting = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.wait("eu", order(2), LONG).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "batch 2 waits while the run is at 0"
        );
        turns.taken("eu", &order(1));
        tokio::time::timeout(PROMPTLY, waiting)
            .await
            .expect("let go once batch 1 applied")
            .unwrap();
    }

    #[tokio::test]
    async fn a_batch_waits_no_longer_than_its_bound() {
        let turns = Turns::default();
        turns.taken("eu", &order(0));
        let started = std::time::Instant::now();
        let bound = Duration::from_millis(20);
        tokio::time::timeout(PROMPTLY, turns.wait("eu", order(3), bound))
            .await
            .expect("gave up at its bound");
        assert!(started.elapsed() >= bound, "it waited for the batch before");
    }

    #[tokio::test]
    async fn a_batch_of_an_unknown_run_or_in_its_turn_does_not_wait() {
        let turns = Turns::default();
        let no_wait = |source: &'static str, order: CarryOrder| {
            tokio::time::timeout(PROMPTLY, turns.wait(source, order, LONG))
        };
        no_wait("eu", order(3)).await.expect("an unknown run");
        turns.taken("eu", &order(2));
        no_wait("eu", order(3)).await.expect("the next batch");
        no_wait("eu", order(2)).await.expect("the last one again");
        no_wait("eu", CarryOrder { chain: 6, batch: 9 })
            .await
            .expect("another run");
        no_wait("us", order(9)).await.expect("another source");
    }
}
