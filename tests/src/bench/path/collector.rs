//! An OTLP/gRPC trace collector in the bench process: the nodes of local
//! mode export their spans to it (`OTEL_EXPORTER_OTLP_ENDPOINT`), and it
//! keeps the few fields the breakdown needs, up to a bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// Spans kept at most; later ones are counted and dropped.
const MAX_SPANS: usize = 2_000_000;
/// The largest export request taken (the nodes' batches are far smaller).
const MAX_REQUEST_BYTES: usize = 64 << 20;

/// A span's identity: its trace and its own id.
pub type SpanKey = ([u8; 16], [u8; 8]);

/// What the breakdown reads of one exported span.
#[derive(Clone, Debug, Default)]
pub struct Span {
    pub key: SpanKey,
    /// All zero for a root span.
    pub parent: [u8; 8],
    pub name: String,
    /// The exporting node's `meridian.region`.
    pub region: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// String and integer attributes, as text.
    pub attributes: HashMap<String, String>,
    pub links: Vec<SpanKey>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn parent_key(&self) -> Option<SpanKey> {
        (self.parent != [0; 8]).then_some((self.key.0, self.parent))
    }
}

#[derive(Default)]
struct Store {
    spans: Vec<Span>,
    dropped: u64,
}

/// The running collector; stops when dropped.
pub struct Collector {
    pub endpoint: String,
    store: Arc<Mutex<Store>>,
    _stop: oneshot::Sender<()>,
}

impl Collector {
    /// Listens on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address: SocketAddr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store::default()));
        let service = TraceServiceServer::new(Sink(store.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(Self {
            endpoint: format!("http://{address}"),
            store,
            _stop: stop,
        })
    }

    /// `f` of every span kept so far (exports wait meanwhile).
    pub fn with_spans<T>(&self, f: impl FnOnce(&[Span]) -> T) -> T {
        f(&self.store.lock().expect("spans").spans)
    }

    /// How many spans were dropped over the bound.
    pub fn dropped(&self) -> u64 {
        self.store.lock().expect("spans").dropped
    }
}

struct Sink(Arc<Mutex<Store>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut taken = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let region = resource_spans
                .resource
                .as_ref()
                .and_then(|r| text_of(&r.attributes, "meridian.region"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    if let Some(span) = convert(span, &region) {
                        taken.push(span);
                    }
                }
            }
        }
        let mut store = self.0.lock().expect("spans");
        let room = MAX_SPANS.saturating_sub(store.spans.len());
        store.dropped += taken.len().saturating_sub(room) as u64;
        taken.truncate(room);
        store.spans.extend(taken);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn convert(span: opentelemetry_proto::tonic::trace::v1::Span, region: &str) -> Option<Span> {
    let key = (
        span.trace_id.as_slice().try_into().ok()?,
        span.span_id.as_slice().try_into().ok()?,
    );
    let parent = span.parent_span_id.as_slice().try_into().unwrap_or([0; 8]);
    let links = span
        .links
        .iter()
        .filter_map(|l| {
            Some((
                l.trace_id.as_slice().try_into().ok()?,
                l.span_id.as_slice().try_into().ok()?,
            ))
        })
        .collect();
    let attributes = span
        .attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv)?)))
        .collect();
    Some(Span {
        key,
        parent,
        name: span.name,
        region: region.to_owned(),
        start_ns: span.start_time_unix_nano,
        end_ns: span.end_time_unix_nano,
        attributes,
        links,
    })
}

fn text(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(text)
}
