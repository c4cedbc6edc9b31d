//! Live sessions: the subscribers connected to this service center, by user.
//! They receive events: deliveries, and the verdicts on their queued sends.

//!
//! What they hold is bounded: a subscription buffers at most
//! [`SUBSCRIBER_BUFFER`] events and [`SUBSCRIBER_BUFFER_BYTES`] of them, and
//! one that falls further behind is cut off (it resumes from its cursors, so
//! nothing is lost); a user may hold [`MAX_SUBSCRIPTIONS_PER_USER`] and the
//! service center its `--max-subscriptions` ([`MAX_SUBSCRIPTIONS`] unless
//! its operator sets another bound).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::sync::mpsc;

use crate::Error;
use crate::limits::{
    MAX_SUBSCRIPTIONS, MAX_SUBSCRIPTIONS_PER_USER, SUBSCRIBER_BUFFER, SUBSCRIBER_BUFFER_BYTES,
};
use crate::proto::client_api::{Delivery, Event, SendVerdict, event};
use crate::telemetry::ServiceCenterMetrics;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    metrics: ServiceCenterMetrics,
    /// Live subscriptions held at once, the most: what the process's memory
    /// is sized for (`--max-subscriptions`).
    max_subscriptions: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(ServiceCenterMetrics::default())
    }
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<String, Vec<Live>>,
    total: usize,
}

/// The hub's end of one subscription.
struct Live {
    id: u64,
    tx: mpsc::Sender<(Queued, usize)>,
    /// Encoded bytes sent and not yet received.
    queued: Arc<AtomicUsize>,
}

/// An event waiting in a subscription, with the bytes it encodes to. A
/// delivery is shared by every subscription it is pushed to, and becomes
/// an [`Event`] of its own only when received. A verdict is shared too, so
/// this is two words: the channel's first block, allocated for every
/// subscription idle or not, holds 32 of them.
#[derive(Clone)]
enum Queued {
    Delivery(Arc<Delivery>),
    Verdict(Arc<SendVerdict>),
}

impl Queued {
    fn into_event(self) -> Event {
        let kind = match self {
            Queued::Delivery(delivery) => event::Kind::Delivery(Arc::unwrap_or_clone(delivery)),
            Queued::Verdict(verdict) => event::Kind::Verdict(Arc::unwrap_or_clone(verdict)),
        };
        Event { kind: Some(kind) }
    }
}

/// The bytes an [`Event`] holding `delivery` encodes to (its field 1).
fn delivery_event_len(delivery: &Delivery) -> usize {
    prost::encoding::message::encoded_len(1, delivery)
}

impl Live {
    /// Queues `event` of `size` bytes; false when the subscriber is too far
    /// behind (or gone), which cuts it off.
    fn offer(&self, event: &Queued, size: usize) -> bool {
        if self.queued.load(Ordering::Acquire) + size > SUBSCRIBER_BUFFER_BYTES {
            return false;
        }
        self.queued.fetch_add(size, Ordering::AcqRel);
        if self.tx.try_send((event.clone(), size)).is_err() {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// A live subscription; it leaves the hub when dropped.
pub struct Subscription {
    events: mpsc::Receiver<(Queued, usize)>,
    queued: Arc<AtomicUsize>,
    hub: Hub,
    user: String,
    id: u64,
}

impl Subscription {
    /// The next event; `None` once the hub has cut this subscription off.
    pub async fn recv(&mut self) -> Option<Event> {
        let (event, size) = self.events.recv().await?;
        self.queued.fetch_sub(size, Ordering::AcqRel);
        Some(event.into_event())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.metrics.subscription(false);
        let mut inner = self.hub.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(&self.user) {
            list.retain(|live| live.id != self.id);
            if list.is_empty() {
                inner.sessions.remove(&self.user);
            }
        }
        inner.total -= 1;
    }
}

impl Hub {
    /// A hub that counts its deliveries and subscriptions in `metrics`,
    /// holding at most [`MAX_SUBSCRIPTIONS`] subscriptions.
    pub fn new(metrics: ServiceCenterMetrics) -> Self {
        Self::with_max_subscriptions(metrics, MAX_SUBSCRIPTIONS)
    }

    /// As [`Hub::new`], holding at most `max` subscriptions (at least one).
    pub fn with_max_subscriptions(metrics: ServiceCenterMetrics, max: usize) -> Self {
        Self {
            inner: Arc::default(),
            metrics,
            max_subscriptions: max.max(1),
        }
    }

    /// A new live subscription of `user`, within the limits on how many a
    /// user and this service center hold.
    pub fn attach(&self, user: &str) -> Result<Subscription, Error> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let queued = Arc::new(AtomicUsize::new(0));
        let mut inner = self.inner.lock().expect("hub");
        if inner.total >= self.max_subscriptions {
            return Err(Error::ResourceExhausted(format!(
                "this service center holds {} subscriptions, its most; try again later",
                self.max_subscriptions
            )));
        }
        let held = inner.sessions.get(user).map_or(0, Vec::len);
        if held >= MAX_SUBSCRIPTIONS_PER_USER {
            return Err(Error::ResourceExhausted(format!(
                "{user} holds {held} subscriptions here, the most one user may; close one first"
            )));
        }
        inner.next_id += 1;
        inner.total += 1;
        let id = inner.next_id;
        inner
            .sessions
            .entry(user.to_owned())
            .or_default()
            .push(Live {
                id,
                tx,
                queued: queued.clone(),
            });
        self.metrics.subscription(true);
        Ok(Subscription {
            events: rx,
            queued,
            hub: self.clone(),
            user: user.to_owned(),
            id,
        })
    }

    /// Pushes a delivery to every live session of `user` (see
    /// [`Hub::push_to`]).
    pub fn push(&self, user: &str, delivery: &Delivery) {
        self.push_to(&[user], Arc::new(delivery.clone()));
    }

    /// Pushes one delivery to every live session of each of `users`,
    /// sharing it among them (each subscription makes its own copy as it
    /// takes it). A session that has fallen too far behind is cut off; it
    /// resumes from its cursors. When any of them has a session here, the
    /// push is one `deliver` span of the message's trace, the last hop.
    pub fn push_to(&self, users: &[impl AsRef<str>], delivery: Arc<Delivery>) {
        let size = delivery_event_len(&delivery);
        let event = Queued::Delivery(Arc::clone(&delivery));
        let mut inner = self.inner.lock().expect("hub");
        let mut deliver = None;
        let (mut pushed, mut cut_off) = (0, 0);
        for user in users {
            let Some(list) = inner.sessions.get_mut(user.as_ref()) else {
                continue;
            };
            deliver.get_or_insert_with(|| {
                tracing::info_span!(
                    "deliver",
                    group = %delivery.group,
                    seq = delivery.seq,
                    users = users.len(),
                )
                .entered()
            });
            let before = list.len();
            list.retain(|live| live.offer(&event, size));
            pushed += list.len();
            cut_off += before - list.len();
        }
        if deliver.is_some() {
            self.metrics.delivered(pushed, cut_off);
        }
    }

    /// Pushes the verdict on one of `user`'s sends to every live session of
    /// theirs, cut off as a delivery would be when too far behind.
    pub fn push_verdict(&self, user: &str, verdict: &SendVerdict) {
        let size = Event {
            kind: Some(event::Kind::Verdict(verdict.clone())),
        }
        .encoded_len();
        let event = Queued::Verdict(Arc::new(verdict.clone()));
        let mut inner = self.inner.lock().expect("hub");
        if let Some(list) = inner.sessions.get_mut(user) {
            list.retain(|live| live.offer(&event, size));
        }
    }

    /// Whether `user` has a live session here.
    pub fn has_sessions(&self, user: &str) -> bool {
        self.inner.lock().expect("hub").sessions.contains_key(user)
    }

    /// Cuts off every live subscription: what they were promised may have
    /// been missed (another replica's notices were lost), so each client
    /// resumes from its cursors.
    pub fn cut_all(&self) {
        let mut inner = self.inner.lock().expect("hub");
        let cut: usize = inner.sessions.values().map(Vec::len).sum();
        inner.sessions.clear();
        self.metrics.delivered(0, cut);
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
        let mut a = hub.attach("ann@eu").unwrap();
        let mut b = hub.attach("ann@eu").unwrap();
        let d = Delivery {
            seq: 1,
            ..Default::default()
        };
        hub.push("ann@eu", &d);
        hub.push("bob@eu", &d);
        let want = Some(event::Kind::Delivery(d.clone()));
        assert_eq!(a.recv().await.unwrap().kind, want);
        assert_eq!(b.recv().await.unwrap().kind, want);
        let verdict = SendVerdict {
            queued_id: "m1".into(),
            ..Default::default()
        };
        hub.push_verdict("ann@eu", &verdict);
        let want = Some(event::Kind::Verdict(verdict));
        assert_eq!(a.recv().await.unwrap().kind, want);
        drop(a);
        assert_eq!(hub.sessions(), 1);
        drop(b);
        assert_eq!(hub.sessions(), 0);
    }

    /// One push reaches every session of each user that has one here.
    #[tokio::test]
    async fn one_delivery_is_pushed_to_the_sessions_of_many_users() {
        let hub = Hub::default();
        let mut sessions = [
            hub.attach("ann@eu").unwrap(),
            hub.attach("ann@eu").unwrap(),
            hub.attach("bob@eu").unwrap(),
        ];
        let d = delivery(7, 10);
        hub.push_to(&["ann@eu", "bob@eu", "cat@eu"], Arc::new(d.clone()));
        for session in &mut sessions {
            let got = session.recv().await.unwrap();
            assert_eq!(got.kind, Some(event::Kind::Delivery(d.clone())));
            assert_eq!(session.queued.load(Ordering::Acquire), 0);
        }
    }

    /// Every subscription's channel allocates a first block of 32 slots
    /// when attached, busy or idle: a slot must stay small.
    #[test]
    fn a_queued_event_is_three_words() {
        assert_eq!(size_of::<(Queued, usize)>(), 3 * size_of::<usize>());
    }

    fn delivery(seq: u64, body_bytes: usize) -> Delivery {
        Delivery {
            group: "g@eu".into(),
            seq,
            body: "x".repeat(body_bytes),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_subscriber_behind_by_more_than_its_byte_budget_is_cut_off() {
        let hub = Hub::default();
        let mut slow = hub.attach("ann@eu").unwrap();
        let mut fast = hub.attach("ann@eu").unwrap();
        let big = crate::limits::MAX_BODY_BYTES;
        // Far fewer events than SUBSCRIBER_BUFFER, but more bytes than
        // SUBSCRIBER_BUFFER_BYTES.
        let n = (SUBSCRIBER_BUFFER_BYTES / big + 8) as u64;
        assert!((n as usize) < SUBSCRIBER_BUFFER);
        for seq in 1..=n {
            hub.push("ann@eu", &delivery(seq, big));
            let got = fast.recv().await.expect("the reader keeps up");
            assert!(matches!(got.kind, Some(event::Kind::Delivery(d)) if d.seq == seq));
        }
        assert_eq!(hub.sessions(), 1, "only the reader is left");
        let mut buffered = 0;
        while let Some(event) = slow.recv().await {
            buffered += event.encoded_len();
        }
        assert!(
            buffered <= SUBSCRIBER_BUFFER_BYTES,
            "{buffered} bytes buffered"
        );
        assert_eq!(slow.queued.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn subscriptions_per_user_are_limited_and_freed_when_dropped() {
        let hub = Hub::default();
        let held: Vec<_> = (0..MAX_SUBSCRIPTIONS_PER_USER)
            .map(|_| hub.attach("ann@eu").unwrap())
            .collect();
        let Err(Error::ResourceExhausted(message)) = hub.attach("ann@eu") else {
            panic!("one subscription too many was accepted");
        };
        assert!(
            message.contains("ann@eu holds 16 subscriptions"),
            "{message}"
        );
        hub.attach("bob@eu").expect("another user is not affected");
        drop(held);
        hub.attach("ann@eu").expect("free again once dropped");
    }

    #[tokio::test]
    async fn the_service_center_holds_at_most_its_configured_subscriptions() {
        let hub = Hub::with_max_subscriptions(ServiceCenterMetrics::default(), 3);
        let mut held: Vec<_> = ["ann@eu", "bob@eu", "cy@eu"]
            .iter()
            .map(|user| hub.attach(user).unwrap())
            .collect();
        for user in ["ann@eu", "dan@eu"] {
            let Err(Error::ResourceExhausted(message)) = hub.attach(user) else {
                panic!("a fourth subscription was accepted for {user}");
            };
            assert!(
                message.contains("this service center holds 3 subscriptions"),
                "{message}"
            );
        }
        held.pop();
        held.push(hub.attach("dan@eu").expect("a place is free again"));
        assert_eq!(hub.sessions(), 3);
    }
}
