//! Subscribe with resume: replay what the client missed after its cursors,
//! then stream live deliveries, with no gap and no duplicate per stream,
//! and the verdicts on the subscriber's queued sends as they come.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::BusinessCenter;
use crate::Error;
use crate::ids::Id;
use crate::limits::{HISTORY_PAGE_BYTES, MAX_CURSORS, MAX_HISTORY_PAGE};
use crate::proto::client_api::{Cursor, Delivery, Event, HistoryRequest, event};
use crate::service_center::hub::Subscription;

pub type EventStream = ReceiverStream<Result<Event, Error>>;

/// The subscriber went away.
struct Gone;

/// On a data center shared by replicas, a subscription that has had no
/// event for this long reads this region's records of its groups after its
/// cursors. Pushes from another replica are notices, which can be lost (a
/// listener reconnecting, a commit whose writer never learned it
/// succeeded), and a delivery with nothing after it would then wait for
/// the next one; this bounds that wait (docs/ARCHITECTURE.md §12).
const RESYNC_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

struct Session {
    center: BusinessCenter,
    actor: Id,
    /// The last `seq` sent on this stream, per group.
    last: HashMap<String, u64>,
    out: mpsc::Sender<Result<Event, Error>>,
}

impl BusinessCenter {
    pub async fn subscribe(&self, actor: &Id, cursors: Vec<Cursor>) -> Result<EventStream, Error> {
        if cursors.len() > MAX_CURSORS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_CURSORS} cursors"
            )));
        }
        let mut last = HashMap::new();
        for (i, cursor) in cursors.into_iter().enumerate() {
            Id::parse("group", &cursor.group)?;
            super::messages::check_seq(&format!("cursors[{i}].last_seq"), cursor.last_seq)?;
            last.insert(cursor.group, cursor.last_seq);
        }
        let (out, rx) = mpsc::channel(256);
        // Attach before replaying, so nothing sequenced meanwhile is missed.
        let subscription = self.hub.attach(actor.as_str())?;
        let session = Session {
            center: self.clone(),
            actor: actor.clone(),
            last,
            out,
        };
        // A stop drops the stream's sender, which ends the client's stream.
        // Boxed, so the task's wrapper (`spawn_until_stopped`) holds a
        // pointer to it: a future moved into an async block that then moves
        // it again may take its place twice there.
        self.tasks
            .spawn_until_stopped(Box::pin(session.run(subscription)));
        Ok(ReceiverStream::new(rx))
    }
}

impl Session {
    /// Replays what the stream's cursors missed, then streams live events
    /// until the subscriber goes, the hub cuts it off or it fails.
    ///
    /// This future is the subscription's task, held for as long as the
    /// subscription lives, mostly idle. Reading history (the replay, a gap,
    /// a resync) happens at the start and rarely afterwards, so those
    /// futures are boxed: their state is allocated only while they run,
    /// instead of making every idle task as large as the largest of them.
    async fn run(mut self, mut live: Subscription) {
        let groups: Vec<String> = self.last.keys().cloned().collect();
        for group in groups {
            // Boxed in a statement of its own: a temporary in the statement
            // that awaits would still take its place in this future.
            let caught_up = Box::pin(self.catch_up(&group, None));
            if caught_up.await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                () = self.out.closed() => return,
                next = live.recv() => {
                    let Some(event) = next else {
                        let _ = self.out.send(Err(Error::Unavailable(
                            "the subscription fell behind; subscribe again with your cursors".into(),
                        ))).await;
                        return;
                    };
                    let sent = match event.kind {
                        Some(event::Kind::Delivery(delivery)) => self.live(delivery).await,
                        Some(kind @ event::Kind::Verdict(_)) => self.send(kind).await,
                        None => Ok(()),
                    };
                    if sent.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep(RESYNC_IDLE), if self.center.replicated => {
                    let resynced = Box::pin(self.resync());
                    if resynced.await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn emit(&mut self, delivery: Delivery) -> Result<(), Gone> {
        self.last.insert(delivery.group.clone(), delivery.seq);
        self.send(event::Kind::Delivery(delivery)).await
    }

    async fn send(&mut self, kind: event::Kind) -> Result<(), Gone> {
        let event = Event { kind: Some(kind) };
        self.out.send(Ok(event)).await.map_err(|_| Gone)
    }

    /// Handles a live delivery: drops what was sent already, fills a gap
    /// from history first.
    async fn live(&mut self, delivery: Delivery) -> Result<(), Gone> {
        match self.last.get(&delivery.group).copied() {
            Some(last) if delivery.seq <= last => Ok(()),
            Some(last) if delivery.seq > last + 1 => {
                // Boxed: see `run`.
                let caught_up = Box::pin(self.catch_up(&delivery.group, Some(delivery.seq - 1)));
                caught_up.await?;
                if delivery.seq > self.last[&delivery.group] {
                    self.emit(delivery).await?;
                }
                Ok(())
            }
            _ => self.emit(delivery).await,
        }
    }

    /// Passes this region's records after each cursor through [`Self::live`]
    /// (which drops what was sent and fills gaps from the home).
    async fn resync(&mut self) -> Result<(), Gone> {
        let groups: Vec<(String, u64)> = self.last.iter().map(|(g, s)| (g.clone(), *s)).collect();
        for (group, after) in groups {
            let read = self
                .center
                .dc
                .read(move |tx| tx.page(&group, after, MAX_HISTORY_PAGE, HISTORY_PAGE_BYTES))
                .await;
            // Unreadable now: the next idle period tries again.
            for delivery in read.map(|page| page.messages).unwrap_or_default() {
                self.live(delivery).await?;
            }
        }
        Ok(())
    }

    /// Sends the group's messages after the stream's cursor, up to `until`,
    /// one history page at a time: a page is bounded in count and bytes
    /// (`HISTORY_PAGE_BYTES`), and the next is read only once this one is in
    /// the stream's bounded buffer, so a long replay never sits in memory.
    async fn catch_up(&mut self, group: &str, until: Option<u64>) -> Result<(), Gone> {
        loop {
            let after_seq = self.last.get(group).copied().unwrap_or(0);
            if until.is_some_and(|u| after_seq >= u) {
                return Ok(());
            }
            let request = HistoryRequest {
                group: group.to_owned(),
                after_seq,
                limit: MAX_HISTORY_PAGE,
            };
            let page = match self.center.history(&self.actor, request).await {
                Ok(page) => page,
                Err(err) => {
                    let _ = self.out.send(Err(err)).await;
                    return Err(Gone);
                }
            };
            // An empty page cannot move the cursor: trust no `more` with it.
            let more = page.more && !page.messages.is_empty();
            for delivery in page.messages {
                if until.is_some_and(|u| delivery.seq > u) {
                    return Ok(());
                }
                self.emit(delivery).await?;
            }
            if !more {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::business_center::for_tests;

    /// A subscription's task is held for as long as it lives, mostly idle,
    /// and a service center holds up to 100,000 of them (BENCHMARKS.md,
    /// idle subscriptions): the task must not carry the state of a history
    /// read, which runs only at the start and on a gap (see [`Session::run`]).
    #[tokio::test]
    async fn an_idle_subscription_task_does_not_hold_a_history_read() {
        let (_dir, center) = for_tests("eu").await;
        let (out, _rx) = mpsc::channel(1);
        let mut session = Session {
            center: center.clone(),
            actor: Id::parse("user", "ann@eu").unwrap(),
            last: HashMap::new(),
            out,
        };
        let history_read = std::mem::size_of_val(&session.catch_up("g@eu", None));
        let task = session.run(center.hub.attach("ann@eu").unwrap());
        let size = std::mem::size_of_val(&task);
        assert!(
            size < size_of::<Session>() + history_read,
            "the subscription's task is {size} bytes; a history read's state is {history_read}"
        );
    }
}
