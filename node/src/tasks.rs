//! The background tasks a part of the node owns: outbox workers, the link
//! prober, credential reloads, subscriptions. Each is started through
//! [`Tasks::spawn`] with a [`Stop`] it must watch; [`Tasks::shutdown`] tells
//! them all to stop and waits for them (the mini-redis shutdown pattern).
//! So a stopped node leaves nothing running, and nothing that still holds
//! its data center — and with it the data center's lock.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long [`Tasks::shutdown`] waits for its tasks before it gives up on
/// them: a task watches its [`Stop`] at every await that can block, so this
/// is only reached by a bug, which is then logged rather than hung on.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A set of owned tasks. Clones share the set.
#[derive(Clone, Default)]
pub struct Tasks {
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// A task's view of its owner's stop request.
#[derive(Clone)]
pub struct Stop(CancellationToken);

impl Stop {
    /// Completes once the owner asks its tasks to stop.
    pub async fn requested(&self) {
        self.0.cancelled().await;
    }

    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// [`Stop::requested`] as a future that owns what it waits on: for a
    /// holder that polls it many times over its life, registered once.
    pub fn into_requested(self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.cancelled_owned()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it returns. It is given the [`Stop`] to watch, and
    /// is awaited by [`Tasks::shutdown`].
    pub fn spawn<F, Fut>(&self, task: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task(self.stop_signal()));
    }

    /// Runs `future` until it completes or a stop is requested, whichever
    /// is first: for tasks with nothing to clean up.
    pub fn spawn_until_stopped<Fut>(&self, future: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = future => {}
                () = stop.cancelled() => {}
            }
        });
    }

    pub fn stop_signal(&self) -> Stop {
        Stop(self.stop.clone())
    }

    /// How many tasks are still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Tells every task to stop and waits for them all, for at most
    /// [`SHUTDOWN_GRACE`]. No task can be started afterwards that would not
    /// see the stop at once.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::error!(
                running = self.tracker.len(),
                "background tasks did not stop within {SHUTDOWN_GRACE:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_task_to_finish_its_cleanup() {
        let tasks = Tasks::new();
        let cleaned = Arc::new(AtomicBool::new(false));
        let flag = cleaned.clone();
        tasks.spawn(|stop| async move {
            stop.requested().await;
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
        });
        tasks.spawn_until_stopped(std::future::pending());
        assert_eq!(tasks.running(), 2);
        tasks.shutdown().await;
        assert!(cleaned.load(Ordering::SeqCst), "the task's cleanup ran");
        assert_eq!(tasks.running(), 0);
    }

    #[tokio::test]
    async fn a_task_spawned_after_shutdown_sees_the_stop_at_once() {
        let tasks = Tasks::new();
        tasks.shutdown().await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(|stop| async move {
            let _ = tx.send(stop.is_requested());
        });
        assert!(rx.await.unwrap());
    }
}
