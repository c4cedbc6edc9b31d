//! Several service-center replicas of one region on one PostgreSQL data
//! center (issue 11 §2), in this process: what one replica commits reaches
//! subscribers of the other; sends through both are sequenced with no gap
//! and no duplicate; a send through either gets the home's verdict, whichever
//! replica carries the outbox; a session revoked at one is refused at the
//! other; when a replica stops, the other carries on alone; an idle
//! subscription finds a delivery whose notice was lost; and an outbox item
//! that commits below ids already carried is carried too.
//!
//! PostgreSQL comes from `tests/postgres/install` (as in `postgres.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use meridian_node::client::Client;
use meridian_node::proto::client_api::{Cursor, Event, event};
use meridian_tests::in_process::{Mesh, PASSWORD};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(15);

/// `eu` with two service-center replicas, `us` with one.
async fn mesh() -> Mesh {
    Mesh::start_with_replicas(&["eu", "us"], &[("eu", 2)]).await
}

async fn login_at(mesh: &Mesh, user: &str, replica: usize) -> Client {
    let mut client = mesh.replica_client("eu", replica).await;
    client.login(user, PASSWORD).await.expect("login");
    client
}

/// The seqs of the next `n` deliveries on the stream.
async fn seqs(stream: &mut Streaming<Event>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let event = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {seqs:?} delivered within {WAIT:?}"))
            .expect("the stream is open")
            .expect("an event");
        if let Some(event::Kind::Delivery(d)) = event.kind {
            seqs.push(d.seq);
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_commits_reaches_subscribers_of_the_other() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    mesh.user("bob@us", "us").await;
    let mut ann_0 = login_at(&mesh, "ann@eu", 0).await;
    ann_0.create_group("g").await.unwrap();
    let mut bob = mesh.login("bob@us", "us").await;
    bob.join("g@eu").await.unwrap();

    // Ann listens at replica 1; she sends at replica 0, Bob from us (whose
    // roaming system hands it to either replica).
    let mut ann_1 = login_at(&mesh, "ann@eu", 1).await;
    let mut stream = ann_1
        .subscribe(vec![Cursor {
            group: "g@eu".into(),
            last_seq: 0,
        }])
        .await
        .unwrap();
    // Only replica 0 commits these: replica 1 hears of each from it.
    for i in 0..5 {
        ann_0.send("g@eu", &format!("ann {i}"), "").await.unwrap();
    }
    assert_eq!(seqs(&mut stream, 5).await, (1..=5).collect::<Vec<_>>());
    for i in 0..5 {
        let reply = bob.send("g@eu", &format!("bob {i}"), "").await.unwrap();
        assert!(!reply.queued, "{reply:?}");
    }
    assert_eq!(seqs(&mut stream, 5).await, (6..=10).collect::<Vec<_>>());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_through_both_replicas_into_one_group_get_every_seq_once() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    mesh.user("cat@eu", "eu").await;
    let mut ann = login_at(&mesh, "ann@eu", 0).await;
    ann.create_group("g").await.unwrap();
    let mut cat = login_at(&mesh, "cat@eu", 1).await;
    cat.join("g@eu").await.unwrap();
    let send_all = |mut client: Client, who: &'static str| async move {
        let mut seqs = Vec::new();
        for i in 0..40 {
            let reply = client.send("g@eu", &format!("{who} {i}"), "").await;
            seqs.push(reply.expect("sent").seq);
        }
        seqs
    };
    let (a, c) = tokio::join!(send_all(ann, "ann"), send_all(cat, "cat"));
    let all: BTreeSet<u64> = a.iter().chain(&c).copied().collect();
    assert_eq!(all, (1..=80).collect(), "ann {a:?}, cat {c:?}");
    assert!(a.is_sorted() && c.is_sorted(), "each sender's seqs ascend");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_through_either_replica_gets_the_homes_verdict() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    bob.create_group("h").await.unwrap();
    let mut ann = [
        login_at(&mesh, "ann@eu", 0).await,
        login_at(&mesh, "ann@eu", 1).await,
    ];
    ann[0].join("h@us").await.unwrap();
    // One replica leases the outbox to us; the other's `Send` calls learn
    // their verdicts from its notices.
    let mut seqs = Vec::new();
    for i in 0..6 {
        let reply = ann[i % 2].send("h@us", &format!("{i}"), "").await.unwrap();
        assert!(
            !reply.queued,
            "send {i} through replica {}: {reply:?}",
            i % 2
        );
        seqs.push(reply.seq);
    }
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_at_one_replica_is_refused_at_the_other() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    let mut at_0 = mesh.replica_client("eu", 0).await;
    let token = at_0.login("ann@eu", PASSWORD).await.unwrap().session;
    let mut at_1 = mesh.replica_client("eu", 1).await;
    at_1.set_session(&token).unwrap();
    at_1.create_group("g")
        .await
        .expect("the session works at replica 1");

    at_0.logout().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match at_1.get_group("g@eu").await {
            Err(status) if status.code() == Code::Unauthenticated => break,
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "replica 1 still accepts the revoked session: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_replica_stops_the_other_serves_and_carries_alone() {
    let mut mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    bob.create_group("h").await.unwrap();
    let mut at_1 = login_at(&mesh, "ann@eu", 1).await;
    at_1.join("h@us").await.unwrap();
    at_1.send("h@us", "through 1", "").await.unwrap();

    mesh.stop_replica("eu", 1).await;
    let mut at_0 = login_at(&mesh, "ann@eu", 0).await;
    let reply = at_0.send("h@us", "through 0", "").await.unwrap();
    assert_eq!((reply.seq, reply.queued), (2, false), "{reply:?}");
    mesh.stop().await;
}

/// A delivery whose push no replica announced (as when a notice is lost)
/// still reaches an idle subscription, from the data center, within the
/// resync period (RESYNC_IDLE, 5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subscription_finds_a_delivery_whose_notice_was_lost() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    let mut ann = login_at(&mesh, "ann@eu", 1).await;
    ann.create_group("g").await.unwrap();
    let mut stream = ann
        .subscribe(vec![Cursor {
            group: "g@eu".into(),
            last_seq: 0,
        }])
        .await
        .unwrap();
    // Sequenced behind the service centers' backs: no push, no notice.
    eu_data_center(
        &mesh,
        "UPDATE groups SET last_seq = 1 WHERE id = 'g@eu';
         INSERT INTO messages (group_id, seq, message_id, sender, body, sent_at_ms)
         VALUES ('g@eu', 1, 'unannounced', 'ann@eu', 'hello', 1)",
    )
    .await;
    assert_eq!(seqs(&mut stream, 1).await, vec![1]);
    mesh.stop().await;
}

/// Outbox ids come from a sequence, which is not commit order: an item can
/// commit below the ids the carrying replica has already carried. It is
/// carried all the same (the worker looks again below them), not stranded
/// until the destination's lease moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_item_committed_below_carried_ids_is_still_carried() {
    let mesh = mesh().await;
    mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    let mut ann = login_at(&mesh, "ann@eu", 0).await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    let mut stream = bob
        .subscribe(vec![Cursor {
            group: "g@eu".into(),
            last_seq: 0,
        }])
        .await
        .unwrap();
    for n in 1..=3 {
        ann.send("g@eu", &format!("carried {n}"), "").await.unwrap();
    }
    assert_eq!(seqs(&mut stream, 3).await, vec![1, 2, 3]);

    // Once everything for us is cleared, the next item gets id 1, below
    // every id already carried, as a late commit would.
    let deadline = tokio::time::Instant::now() + WAIT;
    while eu_data_center(&mesh, "SELECT count(*) FROM outbox").await != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "eu's outbox never emptied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eu_data_center(
        &mesh,
        "SELECT setval(pg_get_serial_sequence('outbox', 'id'), 1, false)",
    )
    .await;
    ann.send("g@eu", "below", "").await.unwrap();
    assert_eq!(seqs(&mut stream, 1).await, vec![4]);
    mesh.stop().await;
}

/// Runs `sql` on eu's data center, behind the service centers' backs: the
/// first column of the last statement's first row, when it is a count.
async fn eu_data_center(mesh: &Mesh, sql: &'static str) -> Option<i64> {
    let settings = mesh
        .region("eu")
        .postgres
        .clone()
        .expect("eu on PostgreSQL");
    let url = std::fs::read_to_string(&settings.url_file).unwrap();
    tokio::task::spawn_blocking(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let messages = client.simple_query(sql).unwrap();
        messages.into_iter().find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
    })
    .await
    .unwrap()
}
