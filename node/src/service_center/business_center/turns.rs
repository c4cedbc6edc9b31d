//! A carried batch that is not in its run's turn here (`CarryOrder`) is
//! tried again, briefly, before it is refused. Batches a sender has in
//! flight together take separate calls through two roaming systems, so
//! the one behind now and then overtakes the one ahead; refused at once, it
//! would make the sender start its run again. The data center's
//! `Runs::take_batch` decides each try: a try follows any batch this
//! process applies, and at least every [`RETRY`], for the batch before it
//! may apply on another replica sharing the data center.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Error;

/// The longest a batch is tried for. The sender has the batch before it in
/// flight too, so that one is normally a fraction of a millisecond behind;
/// one that is lost is not coming.
pub const TURN_WAIT: Duration = Duration::from_millis(50);

/// How often a batch is tried when no batch applies here meanwhile.
const RETRY: Duration = Duration::from_millis(2);

/// Wakes the batches waiting for their turn when one applies here.
#[derive(Default)]
pub struct Turns {
    taken: Notify,
}

impl Turns {
    /// A batch of a run applied here.
    pub fn taken(&self) {
        self.taken.notify_waiters();
    }

    /// Runs `attempt` until it applies (`Some`), fails, or `within` has
    /// passed (`None`): again after each batch taken here, and every
    /// [`RETRY`] besides.
    pub async fn in_turn<T, F, Fut>(
        &self,
        within: Duration,
        mut attempt: F,
    ) -> Result<Option<T>, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, Error>>,
    {
        let deadline = Instant::now() + within;
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            // Registered before the try, so a take during it is not missed.
            taken.as_mut().enable();
            if let Some(applied) = attempt().await? {
                return Ok(Some(applied));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let _ = tokio::time::timeout_at(deadline.min(now + RETRY), taken).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// Longer than any test runs: a wait this long would fail it.
    const LONG: Duration = Duration::from_secs(600);

    #[tokio::test]
    async fn a_batch_in_its_turn_is_tried_once() {
        let turns = Turns::default();
        let tries = AtomicUsize::new(0);
        let got = turns.in_turn(LONG, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Ok(Some(7))
        });
        assert_eq!(got.await.unwrap(), Some(7));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_batch_ahead_applies_once_the_one_before_it_has() {
        let turns = Arc::new(Turns::default());
        let before_applied = Arc::new(AtomicBool::new(false));
        let waiting = {
            let (turns, before_applied) = (turns.clone(), before_applied.clone());
            tokio::spawn(async move {
                let attempt = || {
                    let applied = before_applied.load(Ordering::SeqCst);
                    async move { Ok(applied.then_some("applied")) }
                };
                turns.in_turn(LONG, attempt).await
            })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "refused while the one before it is not in"
        );
        before_applied.store(true, Ordering::SeqCst);
        turns.taken();
        let got = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("tried again once the one before it applied");
        assert_eq!(got.unwrap().unwrap(), Some("applied"));
    }

    #[tokio::test]
    async fn a_batch_never_in_its_turn_is_refused_after_its_bound_having_been_tried_again() {
        let turns = Turns::default();
        let tries = AtomicUsize::new(0);
        let bound = Duration::from_millis(30);
        let started = std::time::Instant::now();
        let got = turns.in_turn(bound, || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Ok(None::<()>)
        });
        assert_eq!(got.await.unwrap(), None);
        assert!(started.elapsed() >= bound);
        assert!(
            tries.load(Ordering::SeqCst) >= 2,
            "tried again while waiting"
        );
    }

    #[tokio::test]
    async fn a_failed_try_ends_the_wait_with_its_error() {
        let turns = Turns::default();
        let got = turns.in_turn(LONG, || async {
            Err::<Option<()>, _>(Error::Unavailable("down".into()))
        });
        assert!(matches!(got.await, Err(Error::Unavailable(_))));
    }
}
