//! What a replica hears from the others: one connection LISTENs on
//! [`CHANNEL`] and hands each notification's payload on. Notifications
//! sent while it is not listening are lost (before its first LISTEN, and
//! while a broken connection is made again), so each time it starts to
//! listen it says so ([`Heard::Listening`]): whoever relied on them
//! catches up from the data center.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tokio::sync::mpsc;

use super::{CHANNEL, Connector};

/// Notices buffered between the listener and the service center; past it
/// the listener waits, and the server queues them.
pub const HEARD_BUFFER: usize = 4096;
/// How often an idle listener checks that anyone still wants it.
const CHECK: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A notice another replica (or this one) announced.
    Notice(String),
    /// The listener listens from now on; notices before may have been
    /// missed (it had not listened yet, or its connection broke).
    Listening,
}

/// Starts the listener thread; it ends once the receiver is dropped.
pub fn start(connector: Connector) -> mpsc::Receiver<Heard> {
    let (sink, heard) = mpsc::channel(HEARD_BUFFER);
    std::thread::Builder::new()
        .name("data-center-listener".into())
        .spawn(move || run(&connector, &sink))
        .expect("spawn the listener thread");
    heard
}

fn run(connector: &Connector, sink: &mpsc::Sender<Heard>) {
    let mut backoff = FIRST_BACKOFF;
    while !sink.is_closed() {
        let client = connector
            .connect()
            .and_then(|mut client| {
                client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .map_err(|e| super::error("listening", e))?;
                Ok(client)
            })
            .inspect_err(|err| tracing::warn!(%err, "the replicas' listener cannot connect"));
        let Ok(mut client) = client else {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        };
        backoff = FIRST_BACKOFF;
        if sink.blocking_send(Heard::Listening).is_err() {
            return;
        }
        loop {
            let next = client.notifications().timeout_iter(CHECK).next();
            match next {
                Ok(Some(n)) => {
                    if sink
                        .blocking_send(Heard::Notice(n.payload().to_owned()))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) if sink.is_closed() => return,
                Ok(None) if client.is_closed() => break,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(%err, "the replicas' listener was cut off; listening again");
                    break;
                }
            }
        }
    }
}
