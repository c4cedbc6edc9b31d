//! A member's live subscription to one group, as a client would keep it:
//! deduplicated by `seq`, and resumed from its cursor when the server ends
//! it (for example after the subscriber fell behind).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::proto::client_api::{Cursor, Delivery, Event, event};
use tokio::task::JoinHandle;

use super::report::{Errors, wall_micros};

/// What happened to the subscription itself.
#[derive(Default)]
pub struct SubscriptionStats {
    /// Times the stream ended or failed and was opened again.
    pub resumes: AtomicU64,
    /// Deliveries at or below the cursor (already seen), dropped.
    pub stale: AtomicU64,
    pub errors: Mutex<Errors>,
}

impl SubscriptionStats {
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let resumes = self.resumes.load(Ordering::Relaxed);
        if resumes > 0 {
            notes.push(format!("subscription resumed {resumes}x"));
        }
        let stale = self.stale.load(Ordering::Relaxed);
        if stale > 0 {
            notes.push(format!("stale deliveries dropped {stale}"));
        }
        let errors = self.errors.lock().expect("errors").describe();
        if !errors.is_empty() {
            notes.push(format!("subscription {errors}"));
        }
        notes
    }
}

/// A running subscription; the task stops when this is dropped.
pub struct Subscription {
    pub stats: Arc<SubscriptionStats>,
    task: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to `group` after `last_seq` and calls `on` with every new
/// delivery and the wall-clock time (µs) it arrived. Returns once the server
/// has accepted the subscription, so that nothing sent afterwards is missed.
pub async fn subscribe<F>(
    client: Client,
    group: String,
    last_seq: u64,
    on: F,
) -> anyhow::Result<Subscription>
where
    F: FnMut(&Delivery, u64) + Send + 'static,
{
    subscribe_all(client, BTreeMap::from([(group, last_seq)]), on).await
}

/// As [`subscribe`], to several groups on one stream, each after its own
/// seq (a member's stream carries every group it is in).
pub async fn subscribe_all<F>(
    mut client: Client,
    mut last: BTreeMap<String, u64>,
    mut on: F,
) -> anyhow::Result<Subscription>
where
    F: FnMut(&Delivery, u64) + Send + 'static,
{
    let mut stream = client.subscribe(cursors(&last)).await?;
    let stats = Arc::new(SubscriptionStats::default());
    let task_stats = stats.clone();
    let task = tokio::spawn(async move {
        let stats = task_stats;
        loop {
            match stream.message().await {
                // The bench's sends are not queued when the home answers;
                // a verdict on one that was is not a delivery.
                Ok(Some(Event {
                    kind: Some(event::Kind::Verdict(_)) | None,
                })) => continue,
                Ok(Some(Event {
                    kind: Some(event::Kind::Delivery(delivery)),
                })) => {
                    let now = wall_micros();
                    match last.get_mut(&delivery.group) {
                        Some(seq) if delivery.seq > *seq => *seq = delivery.seq,
                        _ => {
                            stats.stale.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    on(&delivery, now);
                    continue;
                }
                Ok(None) => stats
                    .errors
                    .lock()
                    .expect("errors")
                    .add("the server ended the stream".into()),
                Err(status) => stats.errors.lock().expect("errors").add(format!(
                    "{:?}: {}",
                    status.code(),
                    status.message()
                )),
            }
            // Open it again from the cursor, until that works.
            stats.resumes.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match client.subscribe(cursors(&last)).await {
                    Ok(again) => {
                        stream = again;
                        break;
                    }
                    Err(status) => stats.errors.lock().expect("errors").add(format!(
                        "resubscribe: {:?}: {}",
                        status.code(),
                        status.message()
                    )),
                }
            }
        }
    });
    Ok(Subscription { stats, task })
}

fn cursors(last: &BTreeMap<String, u64>) -> Vec<Cursor> {
    last.iter()
        .map(|(group, last_seq)| Cursor {
            group: group.clone(),
            last_seq: *last_seq,
        })
        .collect()
}
