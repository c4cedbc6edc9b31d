//! Every flow of docs/ARCHITECTURE.md §3 across three regions running in this
//! process: real nodes, real gRPC on 127.0.0.1, real data center files.

use std::time::Duration;

use meridian_node::proto::client_api::{
    Cursor, Delivery, Event, GroupSettings, UpdateGroupRequest, event,
};
use meridian_node::proto::peer_api::LinkCondition;
use meridian_tests::in_process::{Mesh, PASSWORD};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(10);

/// The next event, which must be a delivery: every send in these flows gets
/// its verdict in its reply, so none comes as an event.
async fn next(stream: &mut Streaming<Event>) -> Delivery {
    let event = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery within the wait")
        .expect("the stream is open")
        .expect("a delivery, not an error");
    match event.kind {
        Some(event::Kind::Delivery(delivery)) => delivery,
        other => panic!("a delivery, not {other:?}"),
    }
}

/// Asserts nothing more arrives for a short while.
async fn quiet(stream: &mut Streaming<Event>) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected delivery {item:?}");
    }
}

fn bodies(deliveries: &[Delivery]) -> Vec<&str> {
    deliveries.iter().map(|d| d.body.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_at_home_and_log_in_from_any_region() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut eu = mesh.client("eu").await;
    eu.register("ann@eu", PASSWORD).await.unwrap();
    let again = eu.register("ann@eu", PASSWORD).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    // A registration sent to another region is carried to the home.
    mesh.client("us")
        .await
        .register("ben@ap", PASSWORD)
        .await
        .unwrap();
    let twice = mesh
        .client("eu")
        .await
        .register("ben@ap", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);

    // Roaming login: ann (home eu) logs in at us; eu verifies.
    let session = mesh
        .client("us")
        .await
        .login("ann@eu", PASSWORD)
        .await
        .unwrap();
    assert_eq!(session.region, "us");
    assert_eq!(session.user, "ann@eu");
    let wrong = mesh
        .client("us")
        .await
        .login("ann@eu", "not the password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let nobody = mesh
        .client("ap")
        .await
        .login("nobody@eu", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::Unauthenticated);

    let bad = eu.register("Ann@eu", PASSWORD).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("user id"), "{}", bad.message());
    let short = eu.register("short@eu", "pw").await.unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    let no_session = mesh.client("eu").await.create_group("g").await.unwrap_err();
    assert_eq!(no_session.code(), Code::Unauthenticated);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_data_is_queried_and_stored_at_the_home() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    let mut cat = mesh.user("cat@ap", "ap").await;

    let group = ann.create_group("climbing").await.unwrap();
    assert_eq!(group.id, "climbing@eu");
    assert_eq!(
        ann.create_group("climbing").await.unwrap_err().code(),
        Code::AlreadyExists
    );

    // Join from other regions: applied at eu.
    bob.join("climbing@eu").await.unwrap();
    cat.join("climbing@eu").await.unwrap();
    let seen_from_ap = cat.get_group("climbing@eu").await.unwrap();
    let members: Vec<&str> = seen_from_ap
        .members
        .iter()
        .map(|m| m.user.as_str())
        .collect();
    assert_eq!(members, vec!["ann@eu", "bob@us", "cat@ap"]);

    // A non-admin's remote update is refused; nothing changes.
    let update = UpdateGroupRequest {
        group: "climbing@eu".into(),
        announcement: Some("bob was here".into()),
        ..Default::default()
    };
    let refused = bob.update_group(update.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(cat.get_group("climbing@eu").await.unwrap().announcement, "");

    // The owner, roaming at us, may change it.
    let mut ann_at_us = mesh.login("ann@eu", "us").await;
    let changed = ann_at_us
        .update_group(UpdateGroupRequest {
            title: Some("Climbing club".into()),
            announcement: Some("Saturday at 9".into()),
            settings: Some(GroupSettings {
                open: false,
                max_members: 50,
            }),
            ..update
        })
        .await
        .unwrap();
    assert_eq!(changed.title, "Climbing club");
    assert_eq!(
        bob.get_group("climbing@eu").await.unwrap().announcement,
        "Saturday at 9"
    );

    // Closed now: a new user cannot join. Leaving works from anywhere.
    let mut dan = mesh.user("dan@us", "ap").await;
    assert_eq!(
        dan.join("climbing@eu").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    cat.leave("climbing@eu").await.unwrap();
    assert_eq!(bob.get_group("climbing@eu").await.unwrap().members.len(), 2);

    let missing = bob.get_group("nothing@ap").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), "group nothing@ap does not exist");
    let malformed = bob.get_group("no-region").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_sequenced_at_the_home_and_delivered_to_every_region() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    // cat's home is ap, but she is roaming at eu: deliveries follow her.
    let mut cat = mesh.user("cat@ap", "eu").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    cat.join("g@eu").await.unwrap();

    let mut ann_stream = ann.subscribe(vec![]).await.unwrap();
    let mut bob_stream = bob.subscribe(vec![]).await.unwrap();
    let mut cat_stream = cat.subscribe(vec![]).await.unwrap();

    // A local send is sequenced at once; a remote one answers with the seq
    // the home gave it.
    let first = ann.send("g@eu", "hello from eu", "").await.unwrap();
    assert_eq!(first.seq, 1);
    let second = bob.send("g@eu", "hello from us", "").await.unwrap();
    assert_eq!((second.seq, second.queued), (2, false), "{second:?}");
    let third = cat
        .send("g@eu", "hello from a roaming user", "")
        .await
        .unwrap();
    assert_eq!(third.seq, 3);

    for stream in [&mut ann_stream, &mut bob_stream, &mut cat_stream] {
        let got = [next(stream).await, next(stream).await, next(stream).await];
        assert_eq!(got.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got[0].message_id, first.message_id);
        assert_eq!(got[0].sender, "ann@eu");
        let ids: Vec<&str> = got.iter().map(|d| d.message_id.as_str()).collect();
        assert!(
            ids.contains(&second.message_id.as_str()) && ids.contains(&third.message_id.as_str())
        );
        quiet(stream).await;
    }

    // History is the same from every region, paged by seq.
    for client in [&mut ann, &mut bob, &mut cat] {
        let page = client.history("g@eu", 1, 10).await.unwrap();
        assert_eq!(page.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![2, 3]);
    }

    // A non-member may not send to a local group, nor read its history.
    let mut eve = mesh.user("eve@eu", "eu").await;
    assert_eq!(
        eve.send("g@eu", "hi", "").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        eve.history("g@eu", 0, 10).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Size limits on the body.
    let huge = "x".repeat(64 * 1024 + 1);
    assert_eq!(
        ann.send("g@eu", &huge, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        ann.send("g@eu", "", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    ann.send("g@eu", &"x".repeat(64 * 1024), "").await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_with_the_same_key_makes_one_message() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    let mut stream = ann.subscribe(vec![]).await.unwrap();

    // Remote group: the retry is answered by bob's region, with the seq the
    // home gave the first send.
    let a = bob.send("g@eu", "once", "key-1").await.unwrap();
    let b = bob.send("g@eu", "once", "key-1").await.unwrap();
    assert_eq!((&a.message_id, a.seq), (&b.message_id, b.seq));
    assert!(a.seq > 0 && !a.duplicate && b.duplicate, "{a:?} {b:?}");
    // Local group: the retry is answered with the seq it got.
    let c = ann.send("g@eu", "twice", "key-2").await.unwrap();
    let d = ann.send("g@eu", "twice", "key-2").await.unwrap();
    assert_eq!((c.message_id.clone(), c.seq), (d.message_id.clone(), d.seq));

    // bob's send is sequenced when it reaches eu, so either may come first.
    let got = [next(&mut stream).await, next(&mut stream).await];
    let mut got = bodies(&got);
    got.sort();
    assert_eq!(got, vec!["once", "twice"]);
    quiet(&mut stream).await;
    assert_eq!(ann.history("g@eu", 0, 10).await.unwrap().len(), 2);

    // The same keys again, each through the other region: still one message
    // each. ann's key-2 was sent at the home; bob's key-1 came through us.
    let mut ann_at_us = mesh.login("ann@eu", "us").await;
    let via_us = ann_at_us.send("g@eu", "twice", "key-2").await.unwrap();
    assert!(
        via_us.duplicate && (&via_us.message_id, via_us.seq) == (&c.message_id, c.seq),
        "the home answers with the message the key made: {via_us:?} {c:?}"
    );
    let mut bob_at_eu = mesh.login("bob@us", "eu").await;
    let again = bob_at_eu.send("g@eu", "once", "key-1").await.unwrap();
    assert!(
        again.duplicate && again.message_id == a.message_id && again.seq > 0,
        "the home answers with the message the key made: {again:?}"
    );
    let marker = ann.send("g@eu", "after", "key-3").await.unwrap();
    let late = bob_at_eu.send("g@eu", "late", "").await.unwrap();
    assert!(marker.seq == 3 && late.seq == 4, "no retry took a seq");
    // ann_at_us's retry travels through us's outbox, which keeps order: once
    // a later send from there is in the history, the retry has been applied.
    ann_at_us.send("g@eu", "via us", "").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let history = loop {
        let history = ann.history("g@eu", 0, 10).await.unwrap();
        if bodies(&history).contains(&"via us") {
            break history;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the send via us never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut got = bodies(&history);
    got.sort();
    assert_eq!(got, vec!["after", "late", "once", "twice", "via us"]);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_has_no_gap_and_no_duplicate() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();

    let mut stream = bob.subscribe(vec![]).await.unwrap();
    for i in 1..=3 {
        ann.send("g@eu", &format!("m{i}"), "").await.unwrap();
    }
    let before = [next(&mut stream).await, next(&mut stream).await];
    assert_eq!(bodies(&before), vec!["m1", "m2"]);
    drop(stream); // disconnect after seeing seq 2 (m3 may be in flight)

    for i in 4..=6 {
        ann.send("g@eu", &format!("m{i}"), "").await.unwrap();
    }
    let cursor = Cursor {
        group: "g@eu".into(),
        last_seq: 2,
    };
    let mut resumed = bob.subscribe(vec![cursor]).await.unwrap();
    let mut after = Vec::new();
    for _ in 3..=6 {
        after.push(next(&mut resumed).await);
    }
    assert_eq!(bodies(&after), vec!["m3", "m4", "m5", "m6"]);
    assert_eq!(
        after.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    // Live deliveries continue on the resumed stream, still in order.
    ann.send("g@eu", "m7", "").await.unwrap();
    assert_eq!(next(&mut resumed).await.seq, 7);
    quiet(&mut resumed).await;
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_link_detours_through_the_third_region_and_returns_when_enabled() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    let mut stream = bob.subscribe(vec![]).await.unwrap();

    mesh.set_link("eu", "us", false);
    let detour = mesh.wait_link("us", "eu", LinkCondition::Detoured).await;
    assert_eq!(detour.path, vec!["us", "ap", "eu"]);
    assert!(!detour.enabled);
    // Data and messages flow both ways over the detour.
    assert_eq!(bob.get_group("g@eu").await.unwrap().members.len(), 2);
    ann.send("g@eu", "via ap", "").await.unwrap();
    bob.send("g@eu", "back via ap", "").await.unwrap();
    assert_eq!(
        bodies(&[next(&mut stream).await, next(&mut stream).await]),
        vec!["via ap", "back via ap"]
    );

    mesh.set_link("eu", "us", true);
    let direct = mesh.wait_link("us", "eu", LinkCondition::Up).await;
    assert_eq!(direct.path, vec!["us", "eu"]);
    ann.send("g@eu", "direct again", "").await.unwrap();
    assert_eq!(next(&mut stream).await.body, "direct again");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_queue_while_the_home_is_unreachable_and_arrive_in_order_after() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    let mut stream = ann.subscribe(vec![]).await.unwrap();

    // us is cut off from every other region.
    mesh.set_link("eu", "us", false);
    mesh.set_link("ap", "us", false);
    mesh.wait_link("us", "eu", LinkCondition::Down).await;
    let unreachable = bob.get_group("g@eu").await.unwrap_err();
    assert_eq!(unreachable.code(), Code::Unavailable);
    assert_eq!(unreachable.message(), "region eu is unreachable");
    // us keeps accepting its user's sends to the eu group, durably, and
    // says they are queued.
    for i in 1..=5 {
        let reply = bob.send("g@eu", &format!("queued {i}"), "").await.unwrap();
        assert!(reply.queued && reply.seq == 0, "{reply:?}");
    }
    quiet(&mut stream).await;

    mesh.set_link("eu", "us", true);
    mesh.set_link("ap", "us", true);
    let mut got = Vec::new();
    for _ in 1..=5 {
        got.push(next(&mut stream).await);
    }
    assert_eq!(
        bodies(&got),
        vec!["queued 1", "queued 2", "queued 3", "queued 4", "queued 5"]
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_answers_the_grpc_health_check_kubernetes_probes() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mesh = Mesh::start(&["eu", "us"]).await;
    let eu = mesh.region("eu");
    let tool = meridian_node::transport::Dial::Region {
        credentials: mesh.tool.clone(),
        region: "eu".into(),
    };
    let client = tonic::transport::Endpoint::from_shared(eu.client_url.clone())
        .unwrap()
        .connect_lazy();
    let peer = meridian_node::transport::channel(&eu.peer_url, tool).unwrap();
    for (url, channel) in [(&eu.client_url, client), (&eu.peer_url, peer)] {
        let mut health = HealthClient::new(channel);
        let reply = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{url}");
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_beyond_the_largest_seq_is_an_invalid_argument() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    ann.send("g@eu", "hi", "").await.unwrap();

    for client in [&mut ann, &mut bob] {
        // history after_seq, local (eu) and across regions (us → eu).
        for after in [u64::MAX, i64::MAX as u64 + 1] {
            let err = client.history("g@eu", after, 10).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains("after_seq"), "{err:?}");
        }
        assert!(
            client
                .history("g@eu", i64::MAX as u64, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // A subscription's resume cursor.
        let cursor = Cursor {
            group: "g@eu".into(),
            last_seq: u64::MAX,
        };
        let err = client.subscribe(vec![cursor]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("cursors[0].last_seq"), "{err:?}");
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_groups_members_are_visible_to_its_members_only() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    let mut eve = mesh.user("eve@eu", "eu").await;
    let mut dan = mesh.user("dan@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();

    // Open: everyone sees the members.
    let open = dan.get_group("g@eu").await.unwrap();
    assert_eq!(open.members.len(), 2);
    assert!(!open.members_hidden);

    ann.update_group(UpdateGroupRequest {
        group: "g@eu".into(),
        settings: Some(GroupSettings {
            open: false,
            max_members: 10,
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    // Closed: members see each other, here and across regions.
    for member in [&mut ann, &mut bob] {
        let info = member.get_group("g@eu").await.unwrap();
        assert_eq!(info.members.len(), 2, "{info:?}");
        assert!(!info.members_hidden);
    }
    // Non-members, local (eve) or remote (dan), get the group without them.
    for outsider in [&mut eve, &mut dan] {
        let info = outsider.get_group("g@eu").await.unwrap();
        assert_eq!(info.id, "g@eu");
        assert!(info.members.is_empty(), "{info:?}");
        assert!(info.members_hidden);
    }
    mesh.stop().await;
}
