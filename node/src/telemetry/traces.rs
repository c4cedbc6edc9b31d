//! Traces: `tracing` spans on every hop of a message, exported with
//! OpenTelemetry over OTLP (gRPC) when an endpoint is configured, and off
//! otherwise (docs/ARCHITECTURE.md §9, Traces, names the spans).
//!
//! A trace crosses processes as a W3C Trace Context `traceparent` string:
//! in the peer envelope, which every hop rewrites to its own span (it is
//! not signed, as `hops_left` and `path` are not), and in the outbox row,
//! where it waits between the write and the worker that carries it, across
//! restarts. The flows only pass these strings on; spans are made at the
//! adapters (the gRPC handlers, the outbox worker, the roaming hop, the
//! hub's push). A malformed or oversized `traceparent` is ignored, as the
//! W3C recommendation says: the span then starts a trace of its own.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::Error;

const TRACEPARENT: &str = "traceparent";
/// A `traceparent` is 55 characters; anything much longer is not one.
pub const MAX_TRACEPARENT_BYTES: usize = 128;
/// The service name a node's spans are exported under.
pub const SERVICE: &str = "meridian-node";

/// The W3C `traceparent` of `span`, or empty when it is not traced (no
/// exporter, or not sampled).
pub fn traceparent(span: &tracing::Span) -> String {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT).unwrap_or_default()
}

/// The `traceparent` of the current span: the trace that work done now
/// (such as an outbox item written now) belongs to.
pub fn current() -> String {
    traceparent(&tracing::Span::current())
}

/// Makes the trace `traceparent` names the parent of `span`, which must not
/// have been entered yet. An empty or malformed one is ignored.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = parse(traceparent) {
        // Fails only for a span already started, which callers never pass.
        let _ = span.set_parent(context);
    }
}

/// Links `span` to the trace `traceparent` names, for work done for
/// several traces at once (one outbox batch carries many sends).
pub fn link(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = parse(traceparent) {
        span.add_link(context.span().span_context().clone());
    }
}

fn parse(traceparent: &str) -> Option<opentelemetry::Context> {
    if traceparent.is_empty() || traceparent.len() > MAX_TRACEPARENT_BYTES {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let valid = context.span().span_context().is_valid();
    valid.then_some(context)
}

/// The layer that hands Meridian's spans (and no dependency's) to
/// `provider`, for export.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber
        + for<'span> tracing_subscriber::registry::LookupSpan<'span>
        + Send
        + Sync,
{
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), tracing::Level::INFO);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(SERVICE))
        .with_filter(ours)
}

/// Where a node exports its spans, and as what.
pub struct Export<'a> {
    /// The OTLP/gRPC collector, `http://host:port`.
    pub endpoint: &'a str,
    pub region: &'a str,
    /// `service-center`, `roaming` or `both`.
    pub role: &'a str,
}

/// The process's tracing, until dropped: then the spans still buffered are
/// exported.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(%err, "the last spans could not be exported");
        }
    }
}

/// Installs the process's subscriber: log lines on stderr, filtered by
/// `RUST_LOG` (default `info`), and, when `export` is given, Meridian's
/// spans exported over OTLP/gRPC in batches, as the service
/// `meridian-node` with the resource attributes `meridian.region` and
/// `meridian.role`. Call it within the Tokio runtime (the exporter's gRPC
/// client runs on it).
pub fn init(export: Option<Export<'_>>) -> Result<Tracing, Error> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let provider = export.map(provider).transpose()?;
    tracing_subscriber::registry()
        .with(logs)
        .with(provider.as_ref().map(layer))
        .try_init()
        .map_err(|e| Error::Internal(format!("installing the log subscriber: {e}")))?;
    Ok(Tracing { provider })
}

fn provider(export: Export<'_>) -> Result<SdkTracerProvider, Error> {
    let endpoint = export.endpoint;
    // The exporter is built without TLS: a collector is reached over
    // plain gRPC, usually on the same host or pod.
    if !endpoint.starts_with("http://") {
        return Err(Error::InvalidArgument(format!(
            "--otlp-endpoint {endpoint:?} must be an http:// URL of an OTLP/gRPC collector"
        )));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("--otlp-endpoint {endpoint:?}: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(SERVICE)
        .with_attributes([
            opentelemetry::KeyValue::new("meridian.region", export.region.to_owned()),
            opentelemetry::KeyValue::new("meridian.role", export.role.to_owned()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wellformed_bounded_traceparent_is_followed() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(good).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "not a traceparent",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let long = format!("{good}{}", "-0".repeat(64));
        assert!(parse(&long).is_none(), "over {MAX_TRACEPARENT_BYTES} bytes");
    }

    #[test]
    fn without_an_exporter_nothing_is_carried() {
        let span = tracing::info_span!("send");
        follow(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(traceparent(&span), "");
    }
}
