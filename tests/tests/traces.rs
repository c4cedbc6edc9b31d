//! One cross-region send is one connected trace: its spans, made in two
//! regions and linked through the outbox rows and the peer envelopes'
//! `traceparent`, share one trace id, and each has its parent among them.
//!
//! Its own test binary: it installs the process's global subscriber, with
//! an in-memory exporter in place of OTLP.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use meridian_node::telemetry::traces;
use meridian_tests::in_process::Mesh;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio_stream::StreamExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const WAIT: Duration = Duration::from_secs(10);

fn attribute(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
        .unwrap_or_default()
}

/// How many finished spans there are of each (name, region).
fn census(spans: &[SpanData]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for span in spans {
        let key = (span.name.to_string(), attribute(span, "region"));
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The hops of a send by ann at eu to a group homed at us, with members
/// subscribed at both: eu takes it and carries it to us, which sequences
/// it, delivers it to bob and carries it back to eu for ann.
fn expected() -> BTreeMap<(String, String), usize> {
    [
        ("send", "eu", 1),
        ("outbox.carry", "eu", 1),
        ("roaming.carry", "eu", 2),
        ("roaming.carry", "us", 2),
        ("receive", "us", 1),
        ("outbox.carry", "us", 1),
        ("receive", "eu", 1),
        ("deliver", "", 2),
    ]
    .into_iter()
    .map(|(name, region, n)| ((name.to_owned(), region.to_owned()), n))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_region_send_is_one_connected_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(traces::layer(&provider))
        .init();

    let mesh = Mesh::start(&["eu", "us"]).await;
    let mut ann = mesh.user("ann@eu", "eu").await;
    let mut bob = mesh.user("bob@us", "us").await;
    let group = bob.create_group("chat").await.unwrap().id;
    ann.join(&group).await.unwrap();
    let mut bobs = bob.subscribe(Vec::new()).await.unwrap();
    let mut anns = ann.subscribe(Vec::new()).await.unwrap();
    exporter.reset();

    let sent = ann.send(&group, "hello", "k1").await.unwrap();
    assert_eq!(sent.seq, 1, "the home's verdict: {sent:?}");
    for inbox in [&mut bobs, &mut anns] {
        tokio::time::timeout(WAIT, inbox.next())
            .await
            .expect("the message is delivered")
            .expect("the stream is open")
            .expect("an event");
    }

    // The hops that end after the deliveries (the replies' way back).
    let deadline = tokio::time::Instant::now() + WAIT;
    let spans = loop {
        let spans = exporter.get_finished_spans().unwrap();
        if census(&spans) == expected() || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(census(&spans), expected(), "every hop, once");

    let traces: HashSet<_> = spans.iter().map(|s| s.span_context.trace_id()).collect();
    assert_eq!(
        traces.len(),
        1,
        "one trace, not {}: {:#?}",
        traces.len(),
        spans
            .iter()
            .map(|s| (
                s.name.as_ref(),
                s.span_context.trace_id(),
                attribute(s, "region")
            ))
            .collect::<Vec<_>>()
    );
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| !ids.contains(&s.parent_span_id))
        .map(|s| (s.name.as_ref(), s.parent_span_id))
        .collect();
    assert_eq!(
        roots,
        vec![("send", SpanId::INVALID)],
        "every span but the send has its parent in the trace"
    );
    // The send and the deliveries name the same message.
    let seqs: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "send" || s.name == "deliver")
        .map(|s| (s.name.as_ref(), attribute(s, "group"), attribute(s, "seq")))
        .collect();
    assert_eq!(seqs.len(), 3, "{seqs:?}");
    assert!(
        seqs.iter().all(|(_, g, seq)| *g == group && seq == "1"),
        "{seqs:?}"
    );
    mesh.stop().await;
    let _ = provider.shutdown();
}
