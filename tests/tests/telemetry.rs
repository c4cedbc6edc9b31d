//! What a node tells its operators: after a chat across regions, each
//! region's `/metrics` (read over HTTP) counts what happened there.

use std::collections::BTreeSet;
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

/// Every `meridian_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meridian_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

/// Every query string of a Grafana dashboard: the panels' `expr`s and the
/// variables' queries.
fn queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition" | "query", serde_json::Value::String(q)) => {
                        out.push(q.clone())
                    }
                    _ => queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

/// The chart's Grafana dashboard queries only metrics a node declares, and
/// covers the list; the table in docs/ARCHITECTURE.md §9 names
/// exactly the metrics a node (both roles) declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_docs_name_the_exported_metrics() {
    // Two regions, so that the per-destination families have a peer.
    let mesh = Mesh::start(&["eu", "us"]).await;
    let (_, text) = prometheus::get(mesh.region("eu").metrics_addr, "/metrics").await;
    mesh.stop().await;
    let declared = prometheus::declared(&text);
    let root = meridian_tests::local_mode::workspace_root();

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("charts/meridian/dashboards/meridian.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    queries(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let queried: BTreeSet<String> = exprs.iter().flat_map(|q| metric_names(q)).collect();
    let unknown: Vec<_> = queried
        .iter()
        .filter(|n| !declared.contains_key(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which no node exports; it exports {declared:?}"
    );
    for wanted in [
        "meridian_sends_total",
        "meridian_deliveries_total",
        "meridian_commit_duration_seconds_bucket",
        "meridian_commit_batch_jobs_sum",
        "meridian_outbox_depth",
        "meridian_sessions",
        "meridian_logins_total",
        "meridian_link_state",
        "meridian_link_rtt_seconds",
    ] {
        assert!(queried.contains(wanted), "the dashboard shows no {wanted}");
    }

    let docs = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let documented: BTreeSet<String> = docs
        .lines()
        .filter(|l| l.starts_with("| `meridian_"))
        .flat_map(metric_names)
        .collect();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| match l.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_owned(),
            None => panic!("`# TYPE name type`"),
        })
        .collect();
    assert_eq!(
        documented, exported,
        "docs/ARCHITECTURE.md §9 against /metrics"
    );
}
