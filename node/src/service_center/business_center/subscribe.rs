//! Subscribe with resume: replay what the client missed after its cursors,
//! then stream live deliveries, with no gap and no duplicate per stream,
//! and the verdicts on the subscriber's queued sends as they come.
//!
//! The stream is pulled. A subscription is not a task of its own: the
//! response body polls [`Session::next`], which takes what is ready from
//! the hub, or does the next step of the work before it (a history page of
//! the replay, of a gap, of a resync). So an event goes from the hub to the
//! body's task directly, where a task of its own took it first and then
//! handed it on, a wake-up more per event; and an idle subscription holds
//! no task and no second buffer. The body is polled only while the
//! client's HTTP/2 window is open, so a slow client leaves its events in
//! the hub's bounded buffer, which cuts it off when full, as before.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::BusinessCenter;
use crate::Error;
use crate::ids::Id;
use crate::limits::{HISTORY_PAGE_BYTES, MAX_CURSORS, MAX_HISTORY_PAGE};
use crate::proto::client_api::{Cursor, Delivery, Event, HistoryRequest, event};
use crate::service_center::hub::Subscription;

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
    live: Subscription,
    /// The service center's stop, which ends the stream.
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The last `seq` sent on this stream, per group.
    last: HashMap<String, u64>,
    /// Events to send before anything else is done: at most a history
    /// page of them, or what one live event adds.
    ready: VecDeque<Event>,
    work: Work,
    end: End,
}

/// What is to be done before the next live event, in this order, a page
/// at a time.
#[derive(Default)]
struct Work {
    /// A history read under way.
    catching: Option<CatchUp>,
    /// Deliveries a resync read, each to pass through [`Session::live`].
    checking: VecDeque<Delivery>,
    /// Groups whose records a resync has still to read.
    resync: Vec<String>,
    /// Groups whose cursors the replay has still to catch up from.
    replay: Vec<String>,
}

/// A group's messages after the stream's cursor, up to `until`; then
/// `then`, the live delivery that found the gap, unless it was sent.
struct CatchUp {
    group: String,
    until: Option<u64>,
    then: Option<Delivery>,
}

/// Whether the stream goes on, and how it ends.
enum End {
    Open,
    /// The events ready are sent, then this error (or none), then the end.
    After(Option<Error>),
    Ended,
}

impl BusinessCenter {
    /// The subscription's stream of events (the caller boxes it once, for
    /// its transport).
    pub async fn subscribe(
        &self,
        actor: &Id,
        cursors: Vec<Cursor>,
    ) -> Result<impl Stream<Item = Result<Event, Error>> + Send + use<>, Error> {
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
        // Attach before replaying, so nothing sequenced meanwhile is missed.
        let live = self.hub.attach(actor.as_str())?;
        let session = Session::new(self, actor, live, last);
        Ok(futures::stream::unfold(session, |mut session| async move {
            let event = session.next().await?;
            Some((event, session))
        }))
    }
}

impl Session {
    /// A subscription of `actor` taking `live`'s events, that first
    /// replays each group of `last` after its cursor.
    fn new(
        center: &BusinessCenter,
        actor: &Id,
        live: Subscription,
        last: HashMap<String, u64>,
    ) -> Self {
        Session {
            center: center.clone(),
            actor: actor.clone(),
            live,
            stopped: Box::pin(center.tasks.stop_signal().into_requested()),
            work: Work {
                replay: last.keys().cloned().collect(),
                ..Work::default()
            },
            last,
            ready: VecDeque::new(),
            end: End::Open,
        }
    }

    /// The stream's next item: an event ready, or the next step of the work
    /// until one is; `None` once it has ended.
    async fn next(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            match std::mem::replace(&mut self.end, End::Ended) {
                End::Ended => return None,
                End::After(err) => return err.map(Err),
                End::Open => {}
            }
            self.end = match self.step().await {
                Ok(()) => End::Open,
                Err(err) => End::After(err),
            };
        }
    }

    /// One step: a page of history, a delivery checked, or a live event
    /// awaited. An `Err` ends the stream, with its error if it has one.
    async fn step(&mut self) -> Result<(), Option<Error>> {
        if let Some(catch_up) = self.work.catching.take() {
            // Boxed: a history read's state exists only while it runs,
            // instead of making every idle subscription as large.
            return Box::pin(self.catch_up(catch_up)).await;
        }
        if let Some(delivery) = self.work.checking.pop_front() {
            self.live(delivery);
            return Ok(());
        }
        if let Some(group) = self.work.resync.pop() {
            Box::pin(self.resync(group)).await;
            return Ok(());
        }
        if let Some(group) = self.work.replay.pop() {
            self.work.catching = Some(CatchUp {
                group,
                until: None,
                then: None,
            });
            return Ok(());
        }
        tokio::select! {
            () = self.stopped.as_mut() => Err(None),
            next = self.live.recv() => {
                match next {
                    None => {
                        return Err(Some(Error::Unavailable(
                            "the subscription fell behind; subscribe again with your cursors".into(),
                        )));
                    }
                    Some(Event { kind: Some(event::Kind::Delivery(delivery)) }) => self.live(delivery),
                    Some(event @ Event { kind: Some(event::Kind::Verdict(_)) }) => {
                        self.ready.push_back(event);
                    }
                    Some(Event { kind: None }) => {}
                }
                Ok(())
            }
            () = tokio::time::sleep(RESYNC_IDLE), if self.center.replicated => {
                self.work.resync = self.last.keys().cloned().collect();
                Ok(())
            }
        }
    }

    fn emit(&mut self, delivery: Delivery) {
        self.last.insert(delivery.group.clone(), delivery.seq);
        self.ready.push_back(Event {
            kind: Some(event::Kind::Delivery(delivery)),
        });
    }

    /// Handles a live delivery: drops what was sent already; on a gap,
    /// fills it from history first.
    fn live(&mut self, delivery: Delivery) {
        match self.last.get(&delivery.group).copied() {
            Some(last) if delivery.seq <= last => {}
            Some(last) if delivery.seq > last + 1 => {
                self.work.catching = Some(CatchUp {
                    group: delivery.group.clone(),
                    until: Some(delivery.seq - 1),
                    then: Some(delivery),
                });
            }
            _ => self.emit(delivery),
        }
    }

    /// Reads this region's records of `group` after the stream's cursor,
    /// a page, to pass through [`Self::live`] (which drops what was sent
    /// and fills gaps from the home).
    async fn resync(&mut self, group: String) {
        let after = self.last.get(&group).copied().unwrap_or(0);
        let read = self
            .center
            .dc
            .read(move |tx| tx.page(&group, after, MAX_HISTORY_PAGE, HISTORY_PAGE_BYTES))
            .await;
        // Unreadable now: the next idle period tries again.
        self.work
            .checking
            .extend(read.map(|page| page.messages).unwrap_or_default());
    }

    /// Makes ready the next page of the group's messages after the stream's
    /// cursor, up to `until`: a page is bounded in count and bytes
    /// (`HISTORY_PAGE_BYTES`), and the next is read only once this one has
    /// been taken by the stream, so a long replay never sits in memory.
    async fn catch_up(&mut self, catch_up: CatchUp) -> Result<(), Option<Error>> {
        let after_seq = self.last.get(&catch_up.group).copied().unwrap_or(0);
        if catch_up.until.is_some_and(|u| after_seq >= u) {
            self.caught_up(catch_up);
            return Ok(());
        }
        let request = HistoryRequest {
            group: catch_up.group.clone(),
            after_seq,
            limit: MAX_HISTORY_PAGE,
        };
        let page = tokio::select! {
            () = self.stopped.as_mut() => return Err(None),
            page = self.center.history(&self.actor, request) => page.map_err(Some)?,
        };
        // An empty page cannot move the cursor: trust no `more` with it.
        let more = page.more && !page.messages.is_empty();
        for delivery in page.messages {
            if catch_up.until.is_some_and(|u| delivery.seq > u) {
                self.caught_up(catch_up);
                return Ok(());
            }
            self.emit(delivery);
        }
        if more {
            self.work.catching = Some(catch_up);
        } else {
            self.caught_up(catch_up);
        }
        Ok(())
    }

    /// Sends the delivery that found the gap, once the gap is filled,
    /// unless the history sent it.
    fn caught_up(&mut self, catch_up: CatchUp) {
        if let Some(delivery) = catch_up.then
            && delivery.seq > self.last.get(&delivery.group).copied().unwrap_or(0)
        {
            self.emit(delivery);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_center::business_center::for_tests;

    /// The stream takes the hub's events itself, drops one it has sent,
    /// and ends when the service center stops: it is no task that the
    /// stop would end.
    #[tokio::test]
    async fn the_stream_takes_from_the_hub_and_ends_when_the_service_center_stops() {
        use tokio_stream::StreamExt;

        let (_dir, center) = for_tests("eu").await;
        let ann = Id::parse("user", "ann@eu").unwrap();
        let stream = center.subscribe(&ann, Vec::new()).await.unwrap();
        let mut stream = std::pin::pin!(stream);
        let delivery = |seq| Delivery {
            group: "g@eu".into(),
            seq,
            ..Default::default()
        };
        for seq in [1, 1, 2] {
            center.hub.push("ann@eu", &delivery(seq));
        }
        let wait = std::time::Duration::from_secs(10);
        for seq in [1, 2] {
            let event = tokio::time::timeout(wait, stream.next())
                .await
                .expect("an event in time")
                .expect("the stream is open")
                .expect("an event, not an error");
            assert_eq!(event.kind, Some(event::Kind::Delivery(delivery(seq))));
        }
        center.tasks.shutdown().await;
        let end = tokio::time::timeout(wait, stream.next()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    /// A subscription is held for as long as it lives, mostly idle, and a
    /// service center holds up to 100,000 of them (BENCHMARKS.md, idle
    /// subscriptions): waiting for its next event must not carry the state
    /// of a history read, which runs only at the start and on a gap.
    #[tokio::test]
    async fn an_idle_subscription_does_not_hold_a_history_read() {
        let (_dir, center) = for_tests("eu").await;
        let ann = Id::parse("user", "ann@eu").unwrap();
        let live = center.hub.attach("ann@eu").unwrap();
        let mut session = Session::new(&center, &ann, live, HashMap::new());
        let catch_up = CatchUp {
            group: "g@eu".into(),
            until: None,
            then: None,
        };
        let history_read = std::mem::size_of_val(&session.catch_up(catch_up));
        let waiting = std::mem::size_of_val(&session.next());
        assert!(
            waiting < history_read,
            "waiting for an event takes {waiting} bytes; a history read's state is {history_read}"
        );
    }
}
