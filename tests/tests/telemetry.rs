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

/// A reflection client (what `grpcurl` does without .proto files) lists the
/// client API and gets its schema from the client port, and nothing of the
/// pair or peer APIs, which that port does not serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_port_describes_the_client_api_by_reflection() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mesh = Mesh::start(&["eu"]).await;
    let channel = tonic::transport::Endpoint::from_shared(mesh.region("eu").client_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ask = |request| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let requests = [
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "meridian.client.v1.BusinessCenter".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "meridian.peer.v1.Business".into(),
        )),
    ];
    let mut replies = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(WAIT, replies.next())
            .await
            .expect("a reflection reply")
            .expect("the stream is open")
            .map(|reply| reply.message_response.expect("a response"))
    };

    let Ok(MessageResponse::ListServicesResponse(list)) = next().await else {
        panic!("not a service list");
    };
    let mut services: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    services.sort();
    assert_eq!(
        services,
        [
            "grpc.reflection.v1.ServerReflection",
            "meridian.client.v1.BusinessCenter"
        ]
    );

    let Ok(MessageResponse::FileDescriptorResponse(files)) = next().await else {
        panic!("no file for the client API");
    };
    let file = files.file_descriptor_proto.concat();
    let has = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"meridian/client.proto") && has(b"SendRequest"));
    // With its comments, so that `grpcurl describe` explains each call.
    assert!(
        has(b"retry with the same"),
        "the descriptor keeps the comments"
    );

    let unknown = next()
        .await
        .expect_err("the peer API is not described here");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    mesh.stop().await;
}

