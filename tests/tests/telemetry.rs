//! What a node tells its operators: after a chat across regions, each
//! region's `/metrics` (read over HTTP) counts what happened there.

use std::time::Duration;

use meridian_tests::in_process::Mesh;
use meridian_tests::prometheus::{self, Samples};
use tokio_stream::StreamExt;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);
/// Messages ann sends from eu to a group homed at us.
const SENT: usize = 3;

/// Scrapes `code` until `ready` holds of its samples, or the wait is over.
async fn scrape_until(mesh: &Mesh, code: &str, ready: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let samples = prometheus::scrape(mesh.region(code).metrics_addr).await;
        if ready(&samples) || tokio::time::Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_chat_across_regions() {
    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    let wrong = mesh
        .client("eu")
        .await
        .login("ann@eu", "not the password")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);

    let group = bob.create_group("chat").await.unwrap().id;
    ann.join(&group).await.unwrap();
    let mut inbox = bob.subscribe(Vec::new()).await.unwrap();
    for i in 0..SENT {
        ann.send(&group, &format!("hello {i}"), &format!("key-{i}"))
            .await
            .unwrap();
    }
    // A retry with the same key, and a send to a group that does not exist.
    ann.send(&group, "hello 0", "key-0").await.unwrap();
    let nope = ann.send("nope@eu", "hi", "").await.unwrap_err();
    assert_eq!(nope.code(), Code::NotFound);
    for _ in 0..SENT {
        tokio::time::timeout(WAIT, inbox.next())
            .await
            .expect("bob gets every message")
            .expect("the stream is open")
            .expect("a delivery");
    }

    let eu = scrape_until(&mesh, "eu", |s| {
        s.value("meridian_outbox_depth", &[("destination", "us")]) == 0.0
    })
    .await;
    let at_eu = |result| {
        eu.value(
            "meridian_sends_total",
            &[("region", "eu"), ("result", result)],
        )
    };
    assert_eq!(at_eu("accepted"), SENT as f64, "sends accepted at eu");
    assert_eq!(at_eu("duplicate"), 1.0, "the retry at eu");
    assert_eq!(at_eu("not_found"), 1.0, "the send to no group at eu");
    assert_eq!(eu.value("meridian_logins_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        eu.value("meridian_logins_total", &[("result", "unauthenticated")]),
        1.0
    );
    assert_eq!(eu.value("meridian_sessions", &[]), 1.0, "ann's session");
    assert!(eu.value("meridian_commit_batch_jobs_count", &[]) > 0.0);
    assert!(eu.value("meridian_commit_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        eu.value("meridian_link_state", &[("peer", "us"), ("state", "Up")]),
        1.0
    );
    assert!(eu.has(
        "meridian_link_path_info",
        &[("peer", "us"), ("path", "eu→us")]
    ));

    let us = scrape_until(&mesh, "us", |s| {
        s.value("meridian_deliveries_total", &[("result", "pushed")]) >= SENT as f64
    })
    .await;
    assert_eq!(
        us.value("meridian_deliveries_total", &[("result", "pushed")]),
        SENT as f64,
        "bob's pushes at us"
    );
    assert_eq!(
        us.value("meridian_sends_total", &[]),
        0.0,
        "nobody sent at us"
    );
    assert_eq!(us.value("meridian_subscriptions", &[]), 1.0, "bob's stream");
    assert_eq!(us.value("meridian_sessions", &[]), 1.0, "bob's session");
    assert_eq!(us.value("meridian_logins_total", &[("result", "ok")]), 1.0);

    // The roaming system's view stays at /mesh, beside /metrics.
    let (_, json) = prometheus::get(mesh.region("eu").metrics_addr, "/mesh").await;
    let mesh_json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(mesh_json["links"][0]["peer"], "us");

    drop(inbox);
    let us = scrape_until(&mesh, "us", |s| {
        s.value("meridian_subscriptions", &[]) == 0.0
    })
    .await;
    assert_eq!(
        us.value("meridian_subscriptions", &[]),
        0.0,
        "bob's stream closed"
    );
    mesh.stop().await;
}

