//! Load for the fault scenarios: senders that keep sending at a steady rate
//! and subscribers that keep a member session's stream open, and a
//! [`Recorder`] of everything they saw, for the [`super::checker`].
//!
//! - A sender retries a failed send with the same idempotency key until it is
//!   acknowledged (as a real client does), so "acknowledged" is well defined
//!   while processes die. A send never acknowledged is not counted.
//! - A subscriber resubscribes after any error with its last seen `seq` per
//!   group (the client contract of docs/ARCHITECTURE.md §3.7), so one member
//!   session spans reconnects and restarts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::proto::client_api::{Cursor, event};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::checker::{self, History, Report};

/// One attempt's time limit; a stopped process must not hang a sender.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// An acknowledged send, with when and by whom.
#[derive(Clone, Debug)]
pub struct AckEvent {
    /// Since the recorder started.
    pub at: Duration,
    pub session: String,
    pub group: String,
    pub key: String,
    pub message_id: String,
    /// When the first attempt was made.
    pub sent_at: Duration,
}

/// A delivery to a member session, with when.
#[derive(Clone, Debug)]
pub struct DeliveryEvent {
    pub at: Duration,
    pub session: String,
    pub group: String,
    pub seq: u64,
    pub message_id: String,
    /// The sending user.
    pub sender: String,
    /// The sender's idempotency key (senders send it as the body).
    pub body: String,
}

#[derive(Default)]
struct Records {
    history: History,
    acks: Vec<AckEvent>,
    deliveries: Vec<DeliveryEvent>,
}

/// Everything the clients saw.
pub struct Recorder {
    started: Instant,
    records: Mutex<Records>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            records: Mutex::default(),
        })
    }

    /// Time since the recorder started; every event is stamped with it.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `session` must receive every message of `group`.
    pub fn member(&self, group: &str, session: &str) {
        self.lock().history.member(group, session);
    }

    /// Records an acknowledged send (the senders here do; a load generator
    /// of its own may too).
    pub fn acked(&self, event: AckEvent, seq: u64) {
        let mut records = self.lock();
        records
            .history
            .ack(&event.group, &event.key, &event.message_id, seq);
        records.acks.push(event);
    }

    fn delivered(&self, event: DeliveryEvent) {
        let mut records = self.lock();
        records
            .history
            .delivered(&event.session, &event.group, event.seq, &event.message_id);
        records.deliveries.push(event);
    }

    pub fn history(&self) -> History {
        self.lock().history.clone()
    }

    pub fn acks(&self) -> Vec<AckEvent> {
        self.lock().acks.clone()
    }

    pub fn deliveries(&self) -> Vec<DeliveryEvent> {
        self.lock().deliveries.clone()
    }

    /// How many acknowledgements and deliveries were recorded so far; cheap,
    /// for polling while the records grow large.
    pub fn counts(&self) -> (usize, usize) {
        let records = self.lock();
        (records.acks.len(), records.deliveries.len())
    }

    /// The acknowledgements recorded from the `from`-th on (see [`Self::counts`]).
    pub fn acks_since(&self, from: usize) -> Vec<AckEvent> {
        let records = self.lock();
        records.acks.get(from..).unwrap_or_default().to_vec()
    }

    /// The deliveries recorded from the `from`-th on (see [`Self::counts`]).
    pub fn deliveries_since(&self, from: usize) -> Vec<DeliveryEvent> {
        let records = self.lock();
        records.deliveries.get(from..).unwrap_or_default().to_vec()
    }

    pub fn check(&self) -> Report {
        checker::check(&self.lock().history)
    }

    /// Waits until every acknowledged message reached every member session
    /// (or `timeout` passes), then checks once more after a short grace for
    /// late duplicates.
    pub async fn settle(&self, timeout: Duration) -> Report {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.check();
            if (report.lost == 0 && report.gaps == 0) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.check()
    }
}

/// Senders and subscribers running against a cluster.
pub struct Workload {
    pub recorder: Arc<Recorder>,
    sending: watch::Sender<bool>,
    subscribing: watch::Sender<bool>,
    senders: Vec<JoinHandle<()>>,
    subscribers: Vec<JoinHandle<()>>,
}

impl Default for Workload {
    fn default() -> Self {
        Self::new()
    }
}

impl Workload {
    pub fn new() -> Workload {
        Workload {
            recorder: Recorder::new(),
            sending: watch::channel(true).0,
            subscribing: watch::channel(true).0,
            senders: Vec::new(),
            subscribers: Vec::new(),
        }
    }

    /// Keeps a stream open for member `session` of `groups`, from the start.
    pub fn subscribe(&mut self, session: &str, client: &Client, groups: &[&str]) {
        self.subscribe_any(session, std::slice::from_ref(client), groups, None);
    }

    /// As [`Self::subscribe`], through any of `clients` (one per replica of
    /// a service center, logged in as one user): after an error the stream
    /// resumes through the next.
    /// With `login`, a client whose session expired logs in again.
    pub fn subscribe_any(
        &mut self,
        session: &str,
        clients: &[Client],
        groups: &[&str],
        login: Option<&Login>,
    ) {
        for group in groups {
            self.recorder.member(group, session);
        }
        let task = subscriber(
            self.recorder.clone(),
            session.to_owned(),
            clients.to_vec(),
            login.cloned(),
            groups.iter().map(|g| g.to_string()).collect(),
            self.subscribing.subscribe(),
        );
        self.subscribers.push(tokio::spawn(task));
    }

    /// Sends to `group` as `session` once every `every`.
    pub fn send(&mut self, session: &str, client: &Client, group: &str, every: Duration) {
        self.send_any(session, std::slice::from_ref(client), group, every, None);
    }

    /// As [`Self::send`], through any of `clients` (one per replica of a
    /// service center): a failed attempt is retried through the next.
    /// With `login`, a client whose session expired logs in again.
    pub fn send_any(
        &mut self,
        session: &str,
        clients: &[Client],
        group: &str,
        every: Duration,
        login: Option<&Login>,
    ) {
        let task = sender(
            self.recorder.clone(),
            session.to_owned(),
            clients.to_vec(),
            login.cloned(),
            group.to_owned(),
            every,
            self.sending.subscribe(),
        );
        self.senders.push(tokio::spawn(task));
    }

    /// Stops starting new sends and waits (at most `timeout`) for the sends
    /// in progress to be acknowledged; returns whether they all were.
    pub async fn stop_sending(&mut self, timeout: Duration) -> bool {
        self.sending.send_replace(false);
        let all = futures::future::join_all(self.senders.drain(..));
        if tokio::time::timeout(timeout, all).await.is_err() {
            eprintln!("faults: some sends were still unacknowledged after {timeout:?}");
            return false;
        }
        true
    }

    /// After [`Self::stop_sending`]: senders added from now on send again.
    /// (A sender left over from a stop that timed out ends once its send in
    /// progress is acknowledged.)
    /// Give the new senders new session labels: a sender's idempotency keys
    /// are `<session>-<n>` from n = 1.
    pub fn resume_sending(&mut self) {
        self.sending = watch::channel(true).0;
    }

    /// Stops sending, waits until everything acknowledged was delivered (at
    /// most `settle`), stops the subscribers and returns the checker's report.
    pub async fn finish(mut self, settle: Duration) -> Report {
        self.stop_sending(settle).await;
        let report = self.recorder.settle(settle).await;
        self.subscribing.send_replace(false);
        for task in self.subscribers.drain(..) {
            let _ = task.await;
        }
        report
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for task in self.senders.iter().chain(&self.subscribers) {
            task.abort();
        }
    }
}

/// Who a client is, so that it can log in again once its session expires
/// (a run longer than a session's lifetime).
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// After `status`: logs `client` in again if its session expired.
async fn renew(client: &mut Client, status: &tonic::Status, login: Option<&Login>) {
    if let (tonic::Code::Unauthenticated, Some(login)) = (status.code(), login) {
        let _ =
            tokio::time::timeout(CALL_TIMEOUT, client.login(&login.user, &login.password)).await;
    }
}

async fn sender(
    recorder: Arc<Recorder>,
    session: String,
    mut clients: Vec<Client>,
    login: Option<Login>,
    group: String,
    every: Duration,
    mut sending: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = sending.wait_for(|s| !*s) => return,
        }
        if !*sending.borrow() {
            return;
        }
        let key = format!("{session}-{n}");
        let sent_at = recorder.now();
        // Retry with the same key until acknowledged; a stop only prevents
        // new sends (the caller bounds how long it waits for this one).
        for attempt in 0.. {
            let n = clients.len();
            let client = &mut clients[attempt % n];
            let sent = tokio::time::timeout(CALL_TIMEOUT, client.send(&group, &key, &key)).await;
            if let Ok(Err(status)) = &sent {
                renew(client, status, login.as_ref()).await;
            }
            if let Ok(Ok(reply)) = sent {
                let event = AckEvent {
                    at: recorder.now(),
                    session: session.clone(),
                    group: group.clone(),
                    key: key.clone(),
                    message_id: reply.message_id,
                    sent_at,
                };
                recorder.acked(event, reply.seq);
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

async fn subscriber(
    recorder: Arc<Recorder>,
    session: String,
    mut clients: Vec<Client>,
    login: Option<Login>,
    groups: Vec<String>,
    mut subscribing: watch::Receiver<bool>,
) {
    let mut last: BTreeMap<String, u64> = groups.iter().map(|g| (g.clone(), 0)).collect();
    for attempt in 0.. {
        if !*subscribing.borrow() {
            return;
        }
        let n = clients.len();
        let client = &mut clients[attempt % n];
        let cursors = last
            .iter()
            .map(|(group, &last_seq)| Cursor {
                group: group.clone(),
                last_seq,
            })
            .collect();
        let subscribed = tokio::select! {
            s = tokio::time::timeout(CALL_TIMEOUT, client.subscribe(cursors)) => s,
            _ = subscribing.wait_for(|s| !*s) => return,
        };
        if let Ok(Err(status)) = &subscribed {
            renew(client, status, login.as_ref()).await;
        }
        let Ok(Ok(mut stream)) = subscribed else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        loop {
            let item = tokio::select! {
                item = stream.message() => item,
                _ = subscribing.wait_for(|s| !*s) => return,
            };
            let delivery = match item.map(|e| e.and_then(|e| e.kind)) {
                Ok(Some(event::Kind::Delivery(delivery))) => delivery,
                // The verdict on a queued send: the ack is what counts here.
                Ok(Some(event::Kind::Verdict(_))) => continue,
                _ => break,
            };
            if let Some(seq) = last.get_mut(&delivery.group) {
                *seq = (*seq).max(delivery.seq);
            }
            recorder.delivered(DeliveryEvent {
                at: recorder.now(),
                session: session.clone(),
                group: delivery.group,
                seq: delivery.seq,
                message_id: delivery.message_id,
                sender: delivery.sender,
                body: delivery.body,
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
