//! A small userspace TCP proxy, one per directed link, running in the test
//! process. This machine has no `tc netem`, so delay and drop are injected
//! here; both can be changed while traffic flows.
//!
//! - [`Proxy::set_delay`]: every chunk is forwarded `delay` after it was read
//!   (order kept, no bandwidth limit), in both directions of a connection.
//! - [`Proxy::stall`]: stop forwarding; data waits in the proxy (as TCP
//!   retransmits over a link that is down), and new connections are closed
//!   at once (as a connect over a link without a route fails). Un-stalling
//!   resumes the waiting connections, as a healed link does.
//! - [`Proxy::reset`]: closes every open connection (as a crashed peer does).
//!
//! The listener and the upstream sockets are handed in, so one proxy type
//! serves both modes: in namespace mode the listener lives in one region's
//! namespace and the upstream sockets are made in it (see
//! [`super::hosts::Hosts`]).

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Makes the upstream connection for each accepted one.
pub type Connector = Arc<dyn Fn() -> BoxFuture<'static, io::Result<TcpStream>> + Send + Sync>;

struct Shared {
    delay_micros: AtomicU64,
    stalled: watch::Sender<bool>,
    /// Bumped to close every open connection.
    generation: watch::Sender<u64>,
    forwarded_bytes: AtomicU64,
    accepted: AtomicU64,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    /// Returns once the proxy forwards.
    async fn flowing(&self) {
        let mut stalled = self.stalled.subscribe();
        let _ = stalled.wait_for(|s| !*s).await;
    }
}

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Proxies every connection `listener` accepts to what `connect` makes.
    pub fn start(listener: TcpListener, connect: Connector) -> Proxy {
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            delay_micros: AtomicU64::new(0),
            stalled: watch::channel(false).0,
            generation: watch::channel(0).0,
            forwarded_bytes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), connect));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// A proxy listening at `addr` (on this process's own network) towards
    /// `upstream`.
    pub async fn to(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let connect: Connector = Arc::new(move || {
            Box::pin(async move {
                let stream = TcpStream::connect(upstream).await?;
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
        Ok(Proxy::start(listener, connect))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards every chunk `delay` after it was read.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_micros
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Stops forwarding (`true`) or resumes it (`false`).
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.send_replace(stalled);
    }

    pub fn is_stalled(&self) -> bool {
        *self.shared.stalled.borrow()
    }

    /// Closes every open connection; new ones are accepted as before.
    pub fn reset(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Bytes forwarded so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded_bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, connect: Connector) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if *shared.stalled.borrow() {
            // Nothing gets through a cut link: close at once.
            drop(client);
            continue;
        }
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, shared.clone(), connect.clone()));
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>, connect: Connector) {
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    let upstream = tokio::select! {
        upstream = connect() => upstream,
        _ = generation.changed() => return,
    };
    let Ok(upstream) = upstream else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let forward = async {
        let mut there = pin!(pump(client_read, upstream_write, &shared));
        let mut back = pin!(pump(upstream_read, client_write, &shared));
        // A clean end of one direction lets the other finish; an error
        // ends both (dropping the halves closes the sockets).
        tokio::select! {
            r = &mut there => if r.is_ok() { let _ = back.await; },
            r = &mut back => if r.is_ok() { let _ = there.await; },
        }
    };
    tokio::select! {
        () = forward => {}
        _ = generation.changed() => {}
    }
}

/// Forwards one direction, chunk by chunk, honouring delay and stall.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, shared: &Shared) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            shared.flowing().await;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), io::Error>(());
            }
            if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((read_at, chunk)) = rx.recv().await {
            shared.flowing().await;
            tokio::time::sleep_until(read_at + shared.delay()).await;
            shared.flowing().await;
            to.write_all(&chunk).await?;
            shared
                .forwarded_bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        to.shutdown().await
    };
    let (mut read, mut write) = (pin!(read), pin!(write));
    tokio::select! {
        // The source ended: finish writing what was read, then close.
        r = &mut read => match r {
            Ok(()) => write.await,
            Err(err) => Err(err),
        },
        // Only an error ends the writer before the reader.
        w = &mut write => w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> Duration {
        let started = Instant::now();
        stream.write_all(text).await.unwrap();
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, text);
        started.elapsed()
    }

    #[tokio::test]
    async fn forwards_delays_stalls_and_resets() {
        let proxy = Proxy::to("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut stream, b"hello").await < Duration::from_millis(50));

        proxy.set_delay(Duration::from_millis(40));
        let rtt = round_trip(&mut stream, b"slow").await;
        assert!(rtt >= Duration::from_millis(80), "{rtt:?}");
        proxy.set_delay(Duration::ZERO);

        // A stall holds data back and refuses new connections...
        proxy.stall(true);
        stream.write_all(b"held").await.unwrap();
        let mut back = [0u8; 4];
        let waited =
            tokio::time::timeout(Duration::from_millis(200), stream.read_exact(&mut back)).await;
        assert!(waited.is_err(), "nothing passes a stalled proxy");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(refused.read(&mut byte).await.unwrap_or(0), 0);
        // ...and delivers it once the link heals.
        proxy.stall(false);
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"held");
        assert!(proxy.forwarded_bytes() >= 2 * (5 + 4 + 4));

        proxy.reset();
        let closed = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte))
            .await
            .unwrap();
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut fresh, b"again").await;
    }
}
