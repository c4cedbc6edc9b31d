//! Live sessions: the subscribers connected to this service center, by user.
//! They receive events: deliveries, and the verdicts on their queued sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::limits::SUBSCRIBER_BUFFER;
use crate::proto::client_api::{Delivery, Event, SendVerdict, event};
use crate::telemetry::ServiceCenterMetrics;

#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    metrics: ServiceCenterMetrics,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<String, Vec<(u64, mpsc::Sender<Event>)>>,
}

/// A live subscription; it leaves the hub when dropped.
pub struct Subscription {
    pub events: mpsc::Receiver<Event>,
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
            events: rx,
            hub: self.clone(),
            user: user.to_owned(),
            id,
        }
    }

    /// Pushes a delivery to every live session of `user`. A session that has
    /// fallen too far behind is cut off; it resumes from its cursors. The
    /// push is the `deliver` span of the message's trace, the last hop.
    pub fn push(&self, user: &str, delivery: &Delivery) {
        let event = Event {
            kind: Some(event::Kind::Delivery(delivery.clone())),
        };
        let mut inner = self.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(user) {
            let _deliver = tracing::info_span!(
                "deliver",
                user,
                group = %delivery.group,
                seq = delivery.seq,
                sessions = list.len(),
            )
            .entered();
            let before = list.len();
            list.retain(|(_, tx)| tx.try_send(event.clone()).is_ok());
            self.metrics.delivered(list.len(), before - list.len());
        }
    }

    /// Pushes the verdict on one of `user`'s sends to every live session of
    /// theirs, cut off as a delivery would be when too far behind.
    pub fn push_verdict(&self, user: &str, verdict: &SendVerdict) {
        let event = Event {
            kind: Some(event::Kind::Verdict(verdict.clone())),
        };
        let mut inner = self.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(user) {
            list.retain(|(_, tx)| tx.try_send(event.clone()).is_ok());
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
        let want = Some(event::Kind::Delivery(d.clone()));
        assert_eq!(a.events.recv().await.unwrap().kind, want);
        assert_eq!(b.events.recv().await.unwrap().kind, want);
        let verdict = SendVerdict {
            queued_id: "m1".into(),
            ..Default::default()
        };
        hub.push_verdict("ann@eu", &verdict);
        let want = Some(event::Kind::Verdict(verdict));
        assert_eq!(a.events.recv().await.unwrap().kind, want);
        drop(a);
        assert_eq!(hub.sessions(), 1);
        drop(b);
        assert_eq!(hub.sessions(), 0);
    }
}
