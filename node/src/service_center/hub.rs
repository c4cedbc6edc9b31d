//! Live sessions: the subscribers connected to this service center, by user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::limits::SUBSCRIBER_BUFFER;
use crate::proto::client_api::Delivery;
use crate::telemetry::ServiceCenterMetrics;

#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    metrics: ServiceCenterMetrics,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<String, Vec<(u64, mpsc::Sender<Delivery>)>>,
}

/// A live subscription; it leaves the hub when dropped.
pub struct Subscription {
    pub deliveries: mpsc::Receiver<Delivery>,
    hub: Hub,
    user: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.metrics.subscription(false);
        let mut inner = self.hub.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(&self.user) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                inner.sessions.remove(&self.user);
            }
        }
    }
}

impl Hub {
    /// A hub that counts its deliveries and subscriptions in `metrics`.
    pub fn new(metrics: ServiceCenterMetrics) -> Self {
        Self {
            inner: Arc::default(),
            metrics,
        }
    }

    pub fn attach(&self, user: &str) -> Subscription {
        self.metrics.subscription(true);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut inner = self.inner.lock().expect("hub");
        inner.next_id += 1;
        let id = inner.next_id;
        inner
            .sessions
            .entry(user.to_owned())
            .or_default()
            .push((id, tx));
        Subscription {
            deliveries: rx,
            hub: self.clone(),
            user: user.to_owned(),
            id,
        }
    }

    /// Pushes a delivery to every live session of `user`. A session that has
    /// fallen too far behind is cut off; it resumes from its cursors.
    pub fn push(&self, user: &str, delivery: &Delivery) {
        let mut inner = self.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(user) {
            let before = list.len();
            list.retain(|(_, tx)| tx.try_send(delivery.clone()).is_ok());
            self.metrics.delivered(list.len(), before - list.len());
        }
    }

    pub fn sessions(&self) -> usize {
        self.inner
            .lock()
            .expect("hub")
            .sessions
            .values()
            .map(Vec::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deliveries_reach_every_session_of_the_user_until_it_leaves() {
        let hub = Hub::default();
        let mut a = hub.attach("ann@eu");
        let mut b = hub.attach("ann@eu");
        let d = Delivery {
            seq: 1,
            ..Default::default()
        };
        hub.push("ann@eu", &d);
        hub.push("bob@eu", &d);
        assert_eq!(a.deliveries.recv().await.unwrap().seq, 1);
        assert_eq!(b.deliveries.recv().await.unwrap().seq, 1);
        drop(a);
        assert_eq!(hub.sessions(), 1);
        drop(b);
        assert_eq!(hub.sessions(), 0);
    }
}
