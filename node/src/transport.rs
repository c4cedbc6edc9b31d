//! The one place where the domain meets gRPC: channels to other processes,
//! and the conversions between [`Error`], `tonic::Status` and the peer API's
//! `Failure`.
//!
//! Every channel and server is made here. Every one speaks TLS (the
//! handshakes are `trust::tls`'s): a channel is dialled as a [`Dial`], and a
//! server takes its connections from [`incoming`].

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code as StatusCode, Status};

use crate::Error;
use crate::limits::MAX_FAILURE_MESSAGE_BYTES;
use crate::proto::peer_api::{Code, Failure};
use crate::trust::Identity;
pub use crate::trust::tls::{ClientAuth, Dial, PeerInfo, ServerTls};

/// How long to wait for a TCP connection to another process.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one call to another process may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A lazily connected channel to `url` (`https://host:port`), whose server
/// must prove itself as `dial` says. Every new connection handshakes with the
/// credentials current then.
pub fn channel(url: &str, dial: Dial) -> Result<Channel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidArgument(format!("endpoint {url:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(endpoint.connect_with_connector_lazy(connector(dial)))
}

/// Dials TCP, then handshakes TLS as `dial` says; for `Endpoint`s.
pub fn connector(
    dial: Dial,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = crate::trust::tls::ClientIo,
    Error = std::io::Error,
    Future = impl Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |uri| crate::trust::tls::connect(uri, dial.clone()))
}

/// A gRPC server with Meridian's settings. It answers the standard health
/// service (`grpc.health.v1.Health`, SERVING) as soon as it serves, which
/// Kubernetes' gRPC probes ask: a port that is bound but not yet served (a
/// service center waiting for its data center) is not ready.
pub fn server() -> tonic::transport::server::Router {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder().add_service(health)
}

/// The TLS connections a bound listener accepts, with Nagle's algorithm off
/// (a subscription's deliveries flow one way, and would otherwise wait for
/// the client's delayed ACK).
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
) -> tokio_stream::wrappers::ReceiverStream<Result<crate::trust::tls::TlsConn, std::io::Error>> {
    crate::trust::accept::incoming(listener, tls)
}

/// The connections of a port served without TLS (a client API that has no
/// certificate configured).
pub fn plain_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The verified identity of the process that made `request`, if its
/// connection came through a mutually authenticated port.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Identity> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|info| info.identity.as_ref())
}

/// The region that made `request`, which must be one of `allowed`.
pub fn calling_region<T>(
    request: &tonic::Request<T>,
    allowed: impl Fn(&str) -> bool,
) -> Result<&str, Status> {
    match caller(request) {
        Some(Identity::Region(region)) if allowed(region) => Ok(region),
        Some(other) => Err(Status::permission_denied(format!(
            "{other} may not call this"
        ))),
        None => Err(Status::unauthenticated("no mesh certificate")),
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidArgument(_) => StatusCode::InvalidArgument,
            Error::Unauthenticated(_) => StatusCode::Unauthenticated,
            Error::PermissionDenied(_) => StatusCode::PermissionDenied,
            Error::NotFound(_) => StatusCode::NotFound,
            Error::AlreadyExists(_) => StatusCode::AlreadyExists,
            Error::ResourceExhausted(_) => StatusCode::ResourceExhausted,
            Error::Unavailable(_) => StatusCode::Unavailable,
            Error::FailedPrecondition(_) => StatusCode::FailedPrecondition,
            Error::Internal(_) => StatusCode::Internal,
        };
        Status::new(code, err.to_string())
    }
}

/// The domain error for a failed call to another process of region `region`.
pub fn call_error(region: &str, status: Status) -> Error {
    match status.code() {
        StatusCode::Unavailable | StatusCode::DeadlineExceeded | StatusCode::Cancelled => {
            Error::unreachable(region)
        }
        StatusCode::InvalidArgument => Error::InvalidArgument(status.message().to_owned()),
        StatusCode::ResourceExhausted => Error::ResourceExhausted(status.message().to_owned()),
        _ => Error::Internal(format!("region {region}: {}", status.message())),
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let (code, message) = match err {
            Error::InvalidArgument(m) => (Code::InvalidArgument, m),
            Error::Unauthenticated(m) => (Code::Unauthenticated, m),
            Error::PermissionDenied(m) => (Code::PermissionDenied, m),
            Error::NotFound(m) => (Code::NotFound, m),
            Error::AlreadyExists(m) => (Code::AlreadyExists, m),
            Error::ResourceExhausted(m) => (Code::ResourceExhausted, m),
            Error::Unavailable(m) => (Code::Unavailable, m),
            Error::FailedPrecondition(m) => (Code::FailedPrecondition, m),
            Error::Internal(m) => (Code::Internal, m),
        };
        Failure {
            code: code as i32,
            message,
        }
    }
}

impl From<Failure> for Error {
    /// Another region's failure, with its reason cut to
    /// [`MAX_FAILURE_MESSAGE_BYTES`] (it may be stored with a send's verdict
    /// and shown to clients).
    fn from(failure: Failure) -> Self {
        let mut m = failure.message;
        if m.len() > MAX_FAILURE_MESSAGE_BYTES {
            let mut end = MAX_FAILURE_MESSAGE_BYTES;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
        }
        match Code::try_from(failure.code).unwrap_or(Code::Unspecified) {
            Code::InvalidArgument => Error::InvalidArgument(m),
            Code::Unauthenticated => Error::Unauthenticated(m),
            Code::PermissionDenied => Error::PermissionDenied(m),
            Code::NotFound => Error::NotFound(m),
            Code::AlreadyExists => Error::AlreadyExists(m),
            Code::ResourceExhausted => Error::ResourceExhausted(m),
            Code::Unavailable => Error::Unavailable(m),
            Code::FailedPrecondition => Error::FailedPrecondition(m),
            Code::Internal | Code::Unspecified => Error::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_a_trip_through_a_failure() {
        let errors = [
            Error::InvalidArgument("a".into()),
            Error::Unauthenticated("b".into()),
            Error::PermissionDenied("c".into()),
            Error::NotFound("d".into()),
            Error::AlreadyExists("e".into()),
            Error::ResourceExhausted("f".into()),
            Error::Unavailable("g".into()),
            Error::FailedPrecondition("h".into()),
            Error::Internal("i".into()),
        ];
        for err in errors {
            assert_eq!(Error::from(Failure::from(err.clone())), err);
        }
    }

    #[test]
    fn another_regions_reason_is_cut_to_its_limit_on_a_char_boundary() {
        let failure = Failure {
            code: Code::NotFound as i32,
            message: "ü".repeat(MAX_FAILURE_MESSAGE_BYTES),
        };
        let Error::NotFound(message) = Error::from(failure) else {
            panic!("the code is kept");
        };
        assert!(message.len() <= MAX_FAILURE_MESSAGE_BYTES);
        assert!(message.len() > MAX_FAILURE_MESSAGE_BYTES - 2);
        assert!(message.chars().all(|c| c == 'ü'));
    }

    #[test]
    fn statuses_carry_the_code_and_the_message() {
        let status = Status::from(Error::NotFound("group x@eu does not exist".into()));
        assert_eq!(status.code(), StatusCode::NotFound);
        assert_eq!(status.message(), "group x@eu does not exist");
    }
}
