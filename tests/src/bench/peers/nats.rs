//! The NATS rounds of the side-by-side scenario, with the same open-loop
//! pacer and the same bodies as Meridian's (`deliver.rs`): each body starts
//! with its intended send time (wall clock, µs), and the receiver measures
//! from it on receipt, so a late pacer or a stall counts against every
//! message it delays.
//!
//! - NATS core: published on C0's server, received by a subscriber on
//!   C1's, across the gateway. No ack: a message counts as sent once the
//!   client took it.
//! - JetStream: a stream on C0 (file storage, one replica, the server
//!   syncing every write), published to with an ack awaited per message;
//!   read on C1 through a **push** consumer (no acks, deliver all) whose
//!   deliver subject is subscribed on C1, so every message crosses the
//!   gateway once, as in the core round.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::super::deliver::parse;
use super::super::open_loop::{self, Schedule};
use super::super::report::{histogram, notes, record_micros, wall_micros};
use super::super::setup::body;
use super::servers::{CLUSTERS, Supercluster};
use super::summary::Round;

/// The body a probe carries: proves the path before a round is measured.
const PROBE: &str = "probe";

pub struct Params {
    pub schedule: Schedule,
    pub body_bytes: usize,
    /// How long to wait for deliveries after the last send.
    pub straggler_wait: Duration,
    /// How long the path (and JetStream's API) may take to be ready.
    pub ready_timeout: Duration,
}

/// A connection to C0's server (the sender's) and one to C1's (the
/// receiver's).
pub struct Clients {
    sender: async_nats::Client,
    receiver: async_nats::Client,
    urls: [String; 2],
}

impl Clients {
    pub async fn connect(cluster: &Supercluster) -> anyhow::Result<Self> {
        let connect = |i: usize| {
            let url = cluster.url(i);
            async move {
                async_nats::connect(&url)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))
            }
        };
        Ok(Self {
            sender: connect(0).await?,
            receiver: connect(1).await?,
            urls: [cluster.url(0), cluster.url(1)],
        })
    }
}

/// What the receiver saw.
struct Received {
    latency: Histogram<u64>,
    seen: HashSet<u64>,
    repeated: u64,
    malformed: u64,
    probes: u64,
}

/// Reads a subscription until dropped.
struct Receiver {
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    fn spawn(mut subscriber: async_nats::Subscriber) -> Self {
        let received = Arc::new(Mutex::new(Received {
            latency: histogram(),
            seen: HashSet::new(),
            repeated: 0,
            malformed: 0,
            probes: 0,
        }));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let now = wall_micros();
                let body = String::from_utf8_lossy(&message.payload);
                let mut r = sink.lock().expect("received");
                if body == PROBE {
                    r.probes += 1;
                    continue;
                }
                match parse(&body) {
                    Some((sent, true, index)) => {
                        if r.seen.insert(index) {
                            record_micros(&mut r.latency, now.saturating_sub(sent));
                        } else {
                            r.repeated += 1;
                        }
                    }
                    Some((_, false, _)) => {}
                    None => r.malformed += 1,
                }
            }
        });
        Self { received, task }
    }

    fn probes(&self) -> u64 {
        self.received.lock().expect("received").probes
    }

    /// Sends probes with `send` until one arrives (every 50 ms, at most
    /// `timeout`): the subscription's interest has crossed the gateway.
    async fn wait_for_path<F, Fut>(&self, timeout: Duration, send: F) -> anyhow::Result<()>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            // A send that fails (JetStream not ready yet) is tried again.
            let _ = tokio::time::timeout(Duration::from_secs(1), send()).await;
            let next = Instant::now() + Duration::from_millis(50);
            while Instant::now() < next {
                if self.probes() > 0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no probe reached the receiver on {} within {} s",
                CLUSTERS[1],
                timeout.as_secs()
            );
        }
    }
}

/// NATS core: publish on C0, a subscriber on C1.
pub async fn core(clients: &Clients, params: &Params, run: usize) -> anyhow::Result<Round> {
    let subject = format!("peers.core.{run}");
    let subscriber = clients.receiver.subscribe(subject.clone()).await?;
    clients.receiver.flush().await?;
    let receiver = Receiver::spawn(subscriber);
    let sender = clients.sender.clone();
    receiver
        .wait_for_path(params.ready_timeout, || {
            let (sender, subject) = (sender.clone(), subject.clone());
            async move {
                sender.publish(subject, PROBE.into()).await?;
                sender.flush().await?;
                Ok(())
            }
        })
        .await
        .context("NATS core")?;
    println!(
        "  NATS core: publisher on {} ({}), subscriber on {} ({}), subject {subject}",
        CLUSTERS[0], clients.urls[0], CLUSTERS[1], clients.urls[1]
    );
    measure(params, &receiver, |body| {
        let (sender, subject) = (sender.clone(), subject.clone());
        async move {
            sender
                .publish(subject, body.into())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// JetStream: a stream on C0 with file storage, a push consumer read on C1.
pub async fn jetstream(clients: &Clients, params: &Params, run: usize) -> anyhow::Result<Round> {
    let name = format!("PEERS_{run}");
    let subject = format!("peers.js.{run}");
    let js = jetstream::new(clients.sender.clone());
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        placement: Some(stream::Placement {
            cluster: Some(CLUSTERS[0].to_owned()),
            tags: Vec::new(),
        }),
        ..Default::default()
    };
    // The meta leader may still be settling: the stream is retried.
    let deadline = Instant::now() + params.ready_timeout;
    let mut stream = loop {
        match js.create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("creating stream {name}")),
        }
    };
    let info = stream.info().await?;
    let placed = info.cluster.as_ref().and_then(|c| c.name.clone());
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    anyhow::ensure!(
        placed.as_deref() == Some(CLUSTERS[0]),
        "stream {name} was placed in {placed:?}, not {}",
        CLUSTERS[0]
    );

    let deliver = clients.receiver.new_inbox();
    let subscriber = clients.receiver.subscribe(deliver.clone()).await?;
    clients.receiver.flush().await?;
    let receiver = Receiver::spawn(subscriber);
    jetstream::new(clients.receiver.clone())
        .create_consumer_on_stream(
            consumer::push::Config {
                deliver_subject: deliver.clone(),
                name: Some(format!("peers-{run}")),
                ack_policy: consumer::AckPolicy::None,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            },
            name.as_str(),
        )
        .await
        .with_context(|| format!("creating a push consumer on {name} from C1"))?;
    let publish = |body: String| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, body.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
    };
    receiver
        .wait_for_path(params.ready_timeout, || {
            let ack = publish(PROBE.to_owned());
            async move { ack.await.map_err(anyhow::Error::msg) }
        })
        .await
        .context("JetStream")?;
    println!(
        "  JetStream: stream {name} in {} (leader {}), file storage, sync always; publisher on {} awaits each ack; push consumer read on {}",
        placed.unwrap_or_default(),
        leader.unwrap_or_default(),
        CLUSTERS[0],
        CLUSTERS[1]
    );
    let round = measure(params, &receiver, publish).await;
    drop(receiver);
    if let Err(e) = stream.delete_consumer(&format!("peers-{run}")).await {
        eprintln!("  deleting the consumer: {e}");
    }
    if let Err(e) = js.delete_stream(&name).await {
        eprintln!("  deleting stream {name}: {e}");
    }
    round
}

/// The open loop: `send(body)` per message, then the stragglers.
async fn measure<F, Fut>(params: &Params, receiver: &Receiver, send: F) -> anyhow::Result<Round>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let sent = Arc::new(Mutex::new(HashSet::new()));
    let outcome = open_loop::run(&params.schedule, |slot| {
        let phase = if slot.measured { 'm' } else { 'w' };
        let head = format!("{} {phase} {}", slot.intended_wall_micros, slot.index);
        let request = send(body(&head, params.body_bytes));
        let sent = sent.clone();
        async move {
            request.await?;
            if slot.measured {
                sent.lock().expect("sent").insert(slot.index);
            }
            Ok(())
        }
    })
    .await;

    let sent = std::mem::take(&mut *sent.lock().expect("sent"));
    let deadline = Instant::now() + params.straggler_wait;
    loop {
        let done = {
            let r = receiver.received.lock().expect("received");
            sent.iter().all(|i| r.seen.contains(i))
        };
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut r = receiver.received.lock().expect("received");
    let missing = sent.iter().filter(|i| !r.seen.contains(i)).count() as u64;
    let mut parts = outcome.notes();
    if r.repeated > 0 {
        parts.push(format!("delivered twice {}", r.repeated));
    }
    if r.malformed > 0 {
        parts.push(format!("malformed bodies {}", r.malformed));
    }
    Ok(Round {
        latency: std::mem::replace(&mut r.latency, histogram()),
        lag: outcome.start_lag,
        sent: sent.len() as u64,
        missing,
        note: notes(&parts),
    })
}
