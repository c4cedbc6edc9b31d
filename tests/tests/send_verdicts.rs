//! Send verdicts (issue 10 §1) across regions running in this process: a
//! send to a group homed elsewhere answers with the home's seq or refusal;
//! when the home cannot answer in time it says `queued`, and the verdict
//! reaches the sender's subscription later; a retry with the same key,
//! through any region, answers with the same message id and seq.

use std::time::Duration;

use clap::Parser;
use meridian_node::cli::{Cli, run};
use meridian_node::proto::client_api::{Event, SendVerdict, event, send_verdict};
use meridian_node::proto::peer_api::LinkCondition;
use meridian_tests::in_process::{Mesh, PASSWORD};
use tokio_stream::StreamExt;
use tonic::{Code, Streaming};

const WAIT: Duration = Duration::from_secs(15);

/// The next verdict on the stream, passing over deliveries.
async fn next_verdict(stream: &mut Streaming<Event>) -> SendVerdict {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a verdict within the wait")
            .expect("the stream is open")
            .expect("an event, not an error");
        if let Some(event::Kind::Verdict(verdict)) = event.kind {
            return verdict;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_send_answers_with_the_homes_seq_also_over_a_detour() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    ann.send("g@eu", "one", "").await.unwrap();

    let two = bob.send("g@eu", "two", "").await.unwrap();
    assert_eq!((two.seq, two.queued, two.duplicate), (2, false, false));
    // The direct link down: the verdict comes back through ap.
    mesh.set_link("eu", "us", false);
    mesh.wait_link("us", "eu", LinkCondition::Detoured).await;
    let three = bob.send("g@eu", "three", "").await.unwrap();
    assert_eq!((three.seq, three.queued), (3, false), "{three:?}");

    let history = ann.history("g@eu", 0, 10).await.unwrap();
    let at: Vec<(&str, u64)> = history
        .iter()
        .map(|d| (d.message_id.as_str(), d.seq))
        .collect();
    assert_eq!(
        &at[1..],
        &[(two.message_id.as_str(), 2), (three.message_id.as_str(), 3)]
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_refusal_fails_the_send_with_its_reason_and_blocks_nothing() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    bob.create_group("g").await.unwrap();

    // No such group at its home.
    let missing = ann.send("nope@us", "hi", "k1").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert_eq!(missing.message(), "group nope@us does not exist");
    // A retry with the key answers with the recorded refusal.
    let again = ann.send("nope@us", "hi", "k1").await.unwrap_err();
    assert_eq!(
        (again.code(), again.message()),
        (missing.code(), missing.message())
    );

    // No such region in the mesh: refused at once, nothing queued.
    let nowhere = ann.send("g@zz", "hi", "").await.unwrap_err();
    assert_eq!(nowhere.code(), Code::NotFound, "{nowhere:?}");
    assert_eq!(
        nowhere.message(),
        "group g@zz does not exist: region zz is not in this mesh"
    );

    // Not a member.
    let denied = ann.send("g@us", "hi", "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(denied.message(), "ann@eu is not a member of group g@us");

    // The refusals were acknowledged: eu's outbox to us flows on.
    ann.join("g@us").await.unwrap();
    let sent = ann.send("g@us", "now a member", "").await.unwrap();
    assert_eq!((sent.seq, sent.queued), (1, false), "{sent:?}");
    assert_eq!(bob.history("g@us", 0, 10).await.unwrap().len(), 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_send_to_a_group_that_does_not_exist_fails() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    mesh.user("ann@eu", "eu").await;
    let server = mesh.region("eu").client_url.clone();
    let cli = |args: &[&str]| {
        let base = ["meridian", "--server", &server, "--user", "ann@eu"];
        let password = ["--password", PASSWORD];
        Cli::try_parse_from(base.iter().chain(&password).chain(args)).expect("arguments")
    };
    let err = run(cli(&["send", "nope@us", "hi"]))
        .await
        .expect_err("a refused send fails (the binary exits 1)");
    assert!(
        err.to_string().contains("group nope@us does not exist"),
        "{err}"
    );
    run(cli(&["group", "create", "mine"])).await.unwrap();
    run(cli(&["send", "mine@eu", "hi"])).await.unwrap();
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_retried_through_any_region_answers_with_one_message_and_seq() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();

    let first = bob.send("g@eu", "once", "key-1").await.unwrap();
    assert!(first.seq > 0 && !first.duplicate, "{first:?}");
    // The same key through ap (a third region), twice, and at the home.
    let mut bob_at_ap = mesh.login("bob@us", "ap").await;
    let mut bob_at_eu = mesh.login("bob@us", "eu").await;
    for retry in [
        bob_at_ap.send("g@eu", "once", "key-1").await.unwrap(),
        bob_at_ap.send("g@eu", "once", "key-1").await.unwrap(),
        bob_at_eu.send("g@eu", "once", "key-1").await.unwrap(),
        bob.send("g@eu", "once", "key-1").await.unwrap(),
    ] {
        assert_eq!(
            (&retry.message_id, retry.seq, retry.duplicate, retry.queued),
            (&first.message_id, first.seq, true, false)
        );
    }
    let history = ann.history("g@eu", 0, 10).await.unwrap();
    assert_eq!(history.len(), 1, "one message: {history:?}");
    assert_eq!(history[0].message_id, first.message_id);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_sends_verdict_reaches_the_senders_subscription_after_the_heal() {
    let mesh = Mesh::start(&["eu", "us", "ap"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    ann.create_group("g").await.unwrap();
    bob.join("g@eu").await.unwrap();
    let mut events = bob.subscribe(vec![]).await.unwrap();

    // us is cut off from every other region.
    mesh.set_link("eu", "us", false);
    mesh.set_link("ap", "us", false);
    mesh.wait_link("us", "eu", LinkCondition::Down).await;
    let queued = bob.send("g@eu", "while cut off", "key-q").await.unwrap();
    assert!(queued.queued && queued.seq == 0, "{queued:?}");
    let refused = bob.send("nope@eu", "to nowhere", "").await.unwrap();
    assert!(refused.queued, "{refused:?}");
    // A retry while still cut off is queued too, as the same message.
    let retry = bob.send("g@eu", "while cut off", "key-q").await.unwrap();
    assert_eq!(
        (&retry.message_id, retry.queued, retry.duplicate),
        (&queued.message_id, true, true)
    );

    mesh.set_link("eu", "us", true);
    mesh.set_link("ap", "us", true);
    let verdict = next_verdict(&mut events).await;
    assert_eq!(
        (
            verdict.group.as_str(),
            verdict.queued_id.as_str(),
            verdict.idempotency_key.as_str()
        ),
        ("g@eu", queued.message_id.as_str(), "key-q")
    );
    let Some(send_verdict::Outcome::Sequenced(sequenced)) = verdict.outcome else {
        panic!("sequenced: {verdict:?}");
    };
    assert_eq!(sequenced.message_id, queued.message_id);
    assert_eq!(sequenced.seq, 1);
    let verdict = next_verdict(&mut events).await;
    assert_eq!(verdict.queued_id, refused.message_id);
    match verdict.outcome {
        Some(send_verdict::Outcome::Refused(r)) => {
            assert_eq!(r.code, Code::NotFound as i32);
            assert_eq!(r.message, "group nope@eu does not exist");
        }
        other => panic!("refused: {other:?}"),
    }

    // The verdict is kept: a retry answers with it.
    let after = bob.send("g@eu", "while cut off", "key-q").await.unwrap();
    assert_eq!(
        (&after.message_id, after.seq, after.duplicate, after.queued),
        (&queued.message_id, 1, true, false)
    );
    mesh.stop().await;
}
