//! A server port's TLS connections: accepted, admitted, handshaken with the
//! credentials current at each accept, and handed to tonic with the verified
//! identity of the other side (docs/ARCHITECTURE.md §10).
//!
//! Handshakes cost CPU, so a port runs at most [`MAX_HANDSHAKES`] at once.
//! A connection beyond those waits for a slot, in the order it came, rather
//! than being closed: a crowd of clients reconnecting at once (a reconnect
//! storm) is then served back to back instead of retrying into a full port.
//! At most [`MAX_WAITING`] wait, and each accepted connection must finish
//! its handshake, wait included, within [`HANDSHAKE_TIMEOUT`] of its
//! accept. So what a port holds for connections not yet handshaken is
//! bounded in count and in time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::tls::{ClientAuth, PeerInfo, ServerTls, TlsConn};
use super::verify::identity_of;

/// How long an accepted connection has to finish its handshake, the wait
/// for a slot included.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress on one port.
pub const MAX_HANDSHAKES: usize = 256;
/// Accepted connections waiting for a handshake slot on one port; one more
/// is closed at once.
pub const MAX_WAITING: usize = 4096;
/// How often, at most, a port logs the connections it closed for being
/// over [`MAX_WAITING`].
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(1);

/// The bounds a port admits connections within.
#[derive(Clone, Copy, Debug)]
struct Admission {
    in_progress: usize,
    waiting: usize,
    within: Duration,
}

const ADMISSION: Admission = Admission {
    in_progress: MAX_HANDSHAKES,
    waiting: MAX_WAITING,
    within: HANDSHAKE_TIMEOUT,
};

/// The TLS connections a bound listener accepts, within the bounds above.
/// A connection that is refused, times out or fails its handshake is
/// logged and never reaches the server.
pub fn incoming(
    listener: TcpListener,
    tls: ServerTls,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    incoming_within(listener, tls, ADMISSION)
}

fn incoming_within(
    listener: TcpListener,
    tls: ServerTls,
    admission: Admission,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(admission.in_progress));
        let admitted = Arc::new(Semaphore::new(admission.in_progress + admission.waiting));
        let mut refusals = Refusals::default();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
                () = refusals.due(), if refusals.unreported > 0 => {
                    refusals.report(None);
                    continue;
                }
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, for example: back off, keep serving.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(admit) = admitted.clone().try_acquire_owned() else {
                refusals.note(addr);
                continue;
            };
            let deadline = Instant::now() + admission.within;
            // Taken here when one is free, so such a connection starts at
            // once. One that has to wait joins the semaphore's queue when
            // its task first runs; the semaphore is fair, so waiting
            // connections are served about in the order they came.
            let slot = slots.clone().try_acquire_owned().ok();
            let slots = slots.clone();
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _admit = admit;
                let _slot = match slot {
                    Some(slot) => slot,
                    None => match wait_for(slots, deadline).await {
                        Some(slot) => slot,
                        None => {
                            tracing::debug!(%addr, "no handshake slot in time; connection closed");
                            return;
                        }
                    },
                };
                // The credentials current now, after any wait.
                let handshake = TlsAcceptor::from(tls.config()).accept(tcp);
                let stream = match tokio::time::timeout_at(deadline, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::info!(%addr, %err, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%addr, "TLS handshake timed out");
                        return;
                    }
                };
                let Some(info) = peer_info(&stream, addr, tls.auth()) else {
                    return;
                };
                let _ = tx.send(Ok(TlsConn::new(stream, info))).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn wait_for(slots: Arc<Semaphore>, deadline: Instant) -> Option<OwnedSemaphorePermit> {
    match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
        Ok(Ok(slot)) => Some(slot),
        // Timed out; the semaphore is never closed.
        _ => None,
    }
}

/// Who handshook: on a port that requires a client certificate, the mesh
/// identity it names, or `None` (logged) if it names none.
fn peer_info(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    addr: SocketAddr,
    auth: ClientAuth,
) -> Option<PeerInfo> {
    let identity = match auth {
        ClientAuth::None => None,
        ClientAuth::Required => {
            let leaf = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first());
            match leaf.map(identity_of) {
                Some(Ok(identity)) => Some(identity),
                _ => {
                    tracing::info!(%addr, "client certificate names no Meridian identity");
                    return None;
                }
            }
        }
    };
    Some(PeerInfo { addr, identity })
}

/// The connections a port closed for being over its bound: the first is
/// logged at once, and later ones as a count at most once per
/// [`REFUSAL_REPORT_EVERY`] (the accept loop reports what is left when that
/// is due), so a storm does not become one log line per connection.
#[derive(Default)]
struct Refusals {
    unreported: u64,
    total: u64,
    last_report: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, addr: SocketAddr) {
        self.unreported += 1;
        self.total += 1;
        if self.due_at().is_none_or(|due| Instant::now() >= due) {
            self.report(Some(addr));
        }
    }

    /// When the next report may be made; `None` before the first.
    fn due_at(&self) -> Option<Instant> {
        self.last_report.map(|last| last + REFUSAL_REPORT_EVERY)
    }

    /// Completes once the next report may be made.
    async fn due(&self) {
        if let Some(due) = self.due_at() {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Logs the connections closed since the last report; `addr` is the
    /// latest, when a refusal is what makes the report.
    fn report(&mut self, addr: Option<SocketAddr>) {
        let latest = addr.map(|a| a.to_string()).unwrap_or_default();
        tracing::warn!(
            latest,
            closed = self.unreported,
            closed_on_this_port = self.total,
            "too many connections waiting for a TLS handshake; closed at once"
        );
        self.unreported = 0;
        self.last_report = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rustls::pki_types::ServerName;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_stream::StreamExt;
    use tonic::transport::server::Connected;

    use super::*;
    use crate::trust::Identity;
    use crate::trust::pki::{DEFAULT_LIFETIME, MeshCa, region_name};

    /// A burst of refusals is reported once at its first, and the rest
    /// fall due as one count a second later, not when another refusal
    /// happens to come, which may be never.
    #[tokio::test]
    async fn refusals_are_reported_as_counts_and_none_is_left_unreported() {
        let mut refusals = Refusals::default();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        for _ in 0..5 {
            refusals.note(addr);
        }
        assert_eq!((refusals.total, refusals.unreported), (5, 4));
        tokio::time::timeout(Duration::from_secs(10), refusals.due())
            .await
            .expect("the rest fall due");
        refusals.report(None);
        assert_eq!((refusals.total, refusals.unreported), (5, 0));
    }

    /// One handshake in progress and one waiting: a third connection is
    /// closed at once, and the waiting one is handshaken as soon as the
    /// slot frees, instead of being closed as the port once did.
    #[tokio::test]
    async fn a_connection_over_the_handshake_bound_waits_for_a_slot() {
        let ca = MeshCa::generate("test").unwrap();
        let region = |code: &str| {
            ca.issue_region(code, "test", &[], DEFAULT_LIFETIME)
                .and_then(|c| c.credentials(&ca.cert_pem))
                .unwrap()
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let admission = Admission {
            in_progress: 1,
            waiting: 1,
            within: Duration::from_secs(60),
        };
        let tls = ServerTls::Region(region("eu"), ClientAuth::Required);
        let mut served = incoming_within(listener, tls, admission);
        let connect = || TcpStream::connect((Ipv4Addr::LOCALHOST, port));

        // The port accepts in connect order: the first holds the one slot
        // (connected, and silent), the second waits, the third is over.
        let silent = connect().await.unwrap();
        let second = connect().await.unwrap();
        let mut third = connect().await.unwrap();
        let client = TlsConnector::from(region("us").current().configs.client.clone());
        let name = ServerName::try_from(region_name("eu")).unwrap();
        let waiting = tokio::spawn(client.connect(name, second));

        // Over the bound: closed at once, so its read ends without data.
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buf))
            .await
            .expect("the connection over the bound is closed, not held");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(!waiting.is_finished(), "the second connection did not wait");

        // The slot frees: the waiting handshake completes and is served.
        drop(silent);
        tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting handshake completes once the slot frees")
            .unwrap()
            .expect("and succeeds");
        let conn = tokio::time::timeout(Duration::from_secs(30), served.next())
            .await
            .expect("the port hands the connection on")
            .unwrap()
            .unwrap();
        assert_eq!(
            conn.connect_info().identity,
            Some(Identity::Region("us".into()))
        );
    }
}
