//! Paging by bytes (docs/ARCHITECTURE.md §3.7): a group whose history is far
//! larger than one gRPC message is read whole from another region, by
//! history and by a subscription's catch-up, in order, with no gap and no
//! duplicate.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use meridian_node::client::Client;
use meridian_node::limits::{MAX_BODY_BYTES, MAX_CLIENT_MESSAGE_BYTES};
use meridian_node::proto::client_api::{Cursor, event};
use meridian_tests::in_process::Mesh;

/// 600 maximal bodies: about 39 MiB, ten times a client's receive limit.
const MESSAGES: u64 = 600;
/// Sends in flight at once while filling the group.
const IN_FLIGHT: usize = 16;
const WAIT: Duration = Duration::from_secs(60);

/// Message `i`'s body: its number, padded to the largest body allowed.
fn body(i: u64) -> String {
    let mut body = format!("{i:04} ");
    body.extend(std::iter::repeat_n('x', MAX_BODY_BYTES - body.len()));
    body
}

/// Sends messages 1..=MESSAGES to `group`, a bounded number at a time;
/// returns each message's body number in seq order.
async fn fill(sender: &Client, group: &str) -> Vec<u64> {
    let mut by_seq: Vec<(u64, u64)> = futures::stream::iter(1..=MESSAGES)
        .map(|i| {
            let mut client = sender.clone();
            async move {
                let reply = client.send(group, &body(i), "").await.expect("send");
                (reply.seq, i)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    by_seq.sort_unstable();
    let seqs: Vec<u64> = by_seq.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=MESSAGES).collect::<Vec<_>>(),
        "sequenced at once at the home"
    );
    by_seq.into_iter().map(|(_, i)| i).collect()
}

fn number(body: &str) -> u64 {
    body[..4].parse().expect("a numbered body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_larger_than_a_grpc_message_is_read_whole_from_another_region() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("big").await.unwrap();
    bob.join("big@eu").await.unwrap();

    let started = Instant::now();
    let expected = fill(&ann, "big@eu").await;
    eprintln!(
        "{MESSAGES} sends of {MAX_BODY_BYTES} bytes: {:?}",
        started.elapsed()
    );

    // One page, across regions: bounded by bytes before the count, and
    // saying that more follow.
    let page = bob.history_page("big@eu", 0, 1_000).await.unwrap();
    let page_len = page.messages.len();
    assert!(page.more, "a page of {page_len} says that more follow");
    assert!(
        (1..MESSAGES as usize).contains(&page_len),
        "a page holds some messages, not all: {page_len}"
    );
    // It came through the client's receive limit; by how much it fits:
    let bytes: usize = page.messages.iter().map(|d| d.body.len()).sum();
    assert!(
        bytes < MAX_CLIENT_MESSAGE_BYTES,
        "page of {bytes} body bytes"
    );

    // History of 1000, across regions: the client pages on to all 600.
    let started = Instant::now();
    let history = bob.history("big@eu", 0, 1_000).await.unwrap();
    eprintln!(
        "history of {} messages: {:?}",
        history.len(),
        started.elapsed()
    );
    let seqs: Vec<u64> = history.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
    let numbers: Vec<u64> = history.iter().map(|d| number(&d.body)).collect();
    assert_eq!(numbers, expected, "each seq carries its own message");
    assert!(history.iter().all(|d| d.body.len() == MAX_BODY_BYTES));
    // A count below what is there stops at the count, across pages.
    let some = bob.history("big@eu", 10, 150).await.unwrap();
    assert_eq!(some.first().map(|d| d.seq), Some(11));
    assert_eq!(some.last().map(|d| d.seq), Some(160));
    assert_eq!(some.len(), 150);

    // A subscription from seq 0 catches up on all 600 in order, page by
    // page, then stays quiet: no gap, no duplicate.
    let started = Instant::now();
    let cursor = Cursor {
        group: "big@eu".into(),
        last_seq: 0,
    };
    let mut stream = bob.subscribe(vec![cursor]).await.unwrap();
    let mut caught_up = Vec::new();
    while (caught_up.len() as u64) < MESSAGES {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("catch-up stalled after {}", caught_up.len()))
            .expect("the stream is open")
            .expect("an event, not an error");
        let Some(event::Kind::Delivery(delivery)) = event.kind else {
            panic!("only deliveries on this stream: {event:?}");
        };
        caught_up.push((delivery.seq, number(&delivery.body)));
    }
    eprintln!("catch-up of {MESSAGES} messages: {:?}", started.elapsed());
    let seqs: Vec<u64> = caught_up.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>());
    let numbers: Vec<u64> = caught_up.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, expected);
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected item after the catch-up: {item:?}");
    }
    mesh.stop().await;
}
