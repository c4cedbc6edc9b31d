//! The service center's replicas found by name (docs/ARCHITECTURE.md §12,
//! "Reaching the replicas"). On Kubernetes a region on PostgreSQL runs its
//! service center as several pods behind one ClusterIP Service, and the one
//! cached HTTP/2 connection to that Service would take every call to one
//! pod. So the mesh configuration's `serviceCenter.dns` names a headless
//! Service, whose name resolves to every ready pod's address. A task here
//! looks it up every [`RESOLVE_INTERVAL`], and soon after a replica could
//! not be connected to. It keeps one channel per address and hands the
//! calls the current set, over which they take turns and fail over as over
//! a listed `serviceCenter.replicas`. While the name resolves to nothing,
//! or fails to resolve, the set is empty and calls go to `pair`.
//!
//! Dialling an address rather than a name is safe: a channel to the service
//! center checks the region identity in its certificate, never a host name
//! (`trust::tls::connect`, `Dial::Region`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::Error;
use crate::mesh::MeshConfig;
use crate::mesh::config::{DnsName, MAX_PAIR_REPLICAS, PairEndpoint};

/// How often the name is looked up: about the TTL of a Kubernetes DNS
/// record, so a pod that left is dropped within seconds.
pub(super) const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one lookup may take before it counts as failed.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The least time between two lookups, so that a burst of refused
/// connections asks for one lookup rather than one each.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(500);

/// What a lookup answers: every address the name has, with the port.
pub(super) type Lookup<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Looks a host name up. The node asks the system's resolver
/// ([`System`]); tests answer with addresses of their own, so that no DNS
/// server is needed.
pub(super) trait Resolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system's resolver (`getaddrinfo`, on a blocking thread).
pub(super) struct System;

impl Resolver for System {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// How the task looks names up: the resolver and the interval (tests
/// shorten or lengthen it).
#[derive(Clone)]
pub(super) struct Resolving {
    pub resolver: Arc<dyn Resolver>,
    pub interval: Duration,
}

impl Resolving {
    pub fn system() -> Self {
        Self {
            resolver: Arc::new(System),
            interval: RESOLVE_INTERVAL,
        }
    }
}

/// The replicas the name resolved to last, each with its channel.
#[derive(Default)]
pub(super) struct Found {
    current: Mutex<Option<Set>>,
    /// Asks the task for a lookup before its interval is up.
    stale: Notify,
}

struct Set {
    /// The `dns` URL it was resolved from: a set of another name (the
    /// configuration changed since) is not used.
    dns: String,
    /// By address, ascending, at most [`MAX_PAIR_REPLICAS`].
    replicas: Vec<(SocketAddr, Channel)>,
}

impl Found {
    /// The channels of the replicas found for `endpoint`; `None` when it
    /// names no `dns` or nothing was found for it, and then its `pair`
    /// serves.
    pub(super) fn channels(&self, endpoint: &PairEndpoint) -> Option<Vec<Channel>> {
        let dns = endpoint.dns.as_deref()?;
        let current = self.current.lock().expect("found replicas");
        let set = current
            .as_ref()
            .filter(|set| set.dns == dns && !set.replicas.is_empty())?;
        Some(set.replicas.iter().map(|(_, c)| c.clone()).collect())
    }

    /// Asks for a lookup soon: a replica could not be connected to, so it
    /// may have gone (and another come).
    pub(super) fn stale(&self) {
        self.stale.notify_one();
    }

    /// The addresses found for `dns`, in order.
    #[cfg(test)]
    fn addresses(&self, dns: &str) -> Vec<SocketAddr> {
        let current = self.current.lock().expect("found replicas");
        current
            .iter()
            .filter(|set| set.dns == dns)
            .flat_map(|set| set.replicas.iter().map(|(addr, _)| *addr))
            .collect()
    }

    /// Makes `addrs` the set for `dns`: sorted, each once, at most
    /// [`MAX_PAIR_REPLICAS`]. Channels of addresses still there are kept (and
    /// with them their connections), new ones are made with `dial` from
    /// `scheme://address`, and the rest are dropped. Returns how many
    /// replicas the set had before (0 for another name's) and has now.
    fn update(
        &self,
        dns: &str,
        scheme: &str,
        mut addrs: Vec<SocketAddr>,
        dial: &impl Fn(&str) -> Result<Channel, Error>,
    ) -> (usize, usize) {
        addrs.sort();
        addrs.dedup();
        if addrs.len() > MAX_PAIR_REPLICAS {
            tracing::info!(
                dns,
                found = addrs.len(),
                "more service-center replicas than {MAX_PAIR_REPLICAS}; the first are used"
            );
            addrs.truncate(MAX_PAIR_REPLICAS);
        }
        let mut current = self.current.lock().expect("found replicas");
        let old = current
            .take()
            .filter(|set| set.dns == dns)
            .map(|set| set.replicas)
            .unwrap_or_default();
        let before = old.len();
        let replicas: Vec<(SocketAddr, Channel)> = addrs
            .into_iter()
            .filter_map(|addr| {
                if let Some((_, channel)) = old.iter().find(|(a, _)| *a == addr) {
                    return Some((addr, channel.clone()));
                }
                match dial(&format!("{scheme}://{addr}")) {
                    Ok(channel) => Some((addr, channel)),
                    Err(err) => {
                        tracing::warn!(%addr, %err, "a service-center replica's address cannot be dialled");
                        None
                    }
                }
            })
            .collect();
        let now = replicas.len();
        *current = Some(Set {
            dns: dns.to_owned(),
            replicas,
        });
        (before, now)
    }

    /// Forgets every replica: the configuration names no `dns`.
    fn clear(&self) {
        self.current.lock().expect("found replicas").take();
    }

    /// Looks `dns` up once and makes the answer the set; a failed or empty
    /// lookup empties it, so that `pair` serves.
    async fn refresh(
        &self,
        dns: &str,
        resolver: &dyn Resolver,
        dial: &impl Fn(&str) -> Result<Channel, Error>,
    ) {
        let Some(name) = DnsName::parse(dns) else {
            // The configuration was validated; nothing to look up.
            self.clear();
            return;
        };
        let addrs = match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            resolver.lookup(name.host, name.port),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(err)) => {
                tracing::debug!(dns, %err, "looking the service center's replicas up failed");
                Vec::new()
            }
            Err(_) => {
                tracing::debug!(dns, "looking the service center's replicas up timed out");
                Vec::new()
            }
        };
        match self.update(dns, name.scheme, addrs, dial) {
            (before, 0) if before > 0 => {
                tracing::warn!(
                    dns,
                    "no service-center replica found by name; calls go to the pair URL"
                );
            }
            (before, now) if before != now => {
                tracing::info!(dns, replicas = now, "service-center replicas found by name");
            }
            _ => {}
        }
    }
}

/// Keeps `found` up to date with `serviceCenter.dns` of the configuration:
/// a lookup at once, then every `resolving.interval`, at once when the
/// configuration changes, and soon after [`Found::stale`]. Runs until the
/// roaming system's tasks are stopped. `dial` makes a channel to a URL.
pub(super) async fn run(
    found: Arc<Found>,
    mut config: watch::Receiver<MeshConfig>,
    resolving: Resolving,
    dial: impl Fn(&str) -> Result<Channel, Error>,
) {
    let mut config_open = true;
    loop {
        let dns = config.borrow_and_update().service_center.dns.clone();
        let looked_up = Instant::now();
        match dns {
            Some(dns) => {
                found
                    .refresh(&dns, resolving.resolver.as_ref(), &dial)
                    .await
            }
            None => found.clear(),
        }
        tokio::select! {
            () = tokio::time::sleep(resolving.interval) => {}
            () = found.stale.notified() => {
                tokio::time::sleep_until(looked_up + MIN_RESOLVE_GAP).await;
            }
            changed = config.changed(), if config_open => config_open = changed.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::mpsc;
    use tonic::transport::Endpoint;

    use super::*;

    const DNS: &str = "https://eu-service-center-pods.chat.svc:7401";

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    /// A lazy channel (never connected here); counts the dials.
    fn counting(dials: &AtomicUsize) -> impl Fn(&str) -> Result<Channel, Error> + '_ {
        move |url| {
            dials.fetch_add(1, Ordering::Relaxed);
            Ok(Endpoint::from_shared(url.to_owned())
                .map_err(|e| Error::InvalidArgument(e.to_string()))?
                .connect_lazy())
        }
    }

    fn endpoint(dns: Option<&str>) -> PairEndpoint {
        PairEndpoint {
            dns: dns.map(str::to_owned),
            ..PairEndpoint::single("https://eu-service-center.chat.svc:7401")
        }
    }

    #[tokio::test]
    async fn the_set_follows_the_addresses_keeping_channels_of_those_that_stay() {
        let found = Found::default();
        let dials = AtomicUsize::new(0);
        let dial = counting(&dials);
        let (a, b, c) = (addr(3, 7401), addr(1, 7401), addr(2, 7401));
        assert_eq!(found.update(DNS, "https", vec![a, b, a], &dial), (0, 2));
        assert_eq!(found.addresses(DNS), [b, a], "sorted, each once");
        assert_eq!(dials.swap(0, Ordering::Relaxed), 2);
        assert_eq!(found.channels(&endpoint(Some(DNS))).unwrap().len(), 2);

        assert_eq!(found.update(DNS, "https", vec![c, a], &dial), (2, 2));
        assert_eq!(found.addresses(DNS), [c, a], "b went away");
        assert_eq!(dials.swap(0, Ordering::Relaxed), 1, "only c is new");

        let many: Vec<SocketAddr> = (1..=40).map(|i| addr(i, 7401)).collect();
        assert_eq!(
            found.update(DNS, "https", many.clone(), &dial),
            (2, MAX_PAIR_REPLICAS)
        );
        assert_eq!(found.addresses(DNS), many[..MAX_PAIR_REPLICAS]);

        // Another name starts afresh.
        let other = "https://other:7401";
        assert_eq!(found.update(other, "https", vec![a], &dial), (0, 1));
        assert!(found.addresses(DNS).is_empty());
    }

    #[tokio::test]
    async fn pair_serves_without_a_name_or_without_replicas_found_for_it() {
        let found = Found::default();
        let dials = AtomicUsize::new(0);
        assert!(
            found.channels(&endpoint(Some(DNS))).is_none(),
            "nothing yet"
        );
        found.update(DNS, "https", vec![addr(1, 7401)], &counting(&dials));
        assert!(found.channels(&endpoint(None)).is_none(), "no name");
        assert!(
            found
                .channels(&endpoint(Some("https://other:7401")))
                .is_none(),
            "found for another name"
        );
        assert!(found.channels(&endpoint(Some(DNS))).is_some());
        found.update(DNS, "https", Vec::new(), &counting(&dials));
        assert!(found.channels(&endpoint(Some(DNS))).is_none(), "empty");
    }

    /// Answers every lookup with what the test sets (`None`: a failure),
    /// and reports each lookup's host and port.
    struct Fake {
        answer: Mutex<Option<Vec<SocketAddr>>>,
        asked: mpsc::UnboundedSender<(String, u16)>,
    }

    impl Resolver for Fake {
        fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
            let _ = self.asked.send((host.to_owned(), port));
            let answer = self.answer.lock().unwrap().clone();
            Box::pin(async move {
                answer.ok_or_else(|| std::io::Error::other("no such name (a test's answer)"))
            })
        }
    }

    /// Waits for the next lookup, within a deadline shorter than the task's
    /// interval, so that only a lookup made at once passes.
    async fn next_lookup(asked: &mut mpsc::UnboundedReceiver<(String, u16)>) -> (String, u16) {
        tokio::time::timeout(Duration::from_secs(5), asked.recv())
            .await
            .expect("a lookup before the interval is up")
            .unwrap()
    }

    /// Waits until `check` holds, for at most five seconds.
    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn the_task_looks_up_at_once_on_a_change_or_a_stale_set_and_falls_back_on_failure() {
        let (asked_tx, mut asked) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            answer: Mutex::new(Some(vec![addr(1, 7401), addr(2, 7401)])),
            asked: asked_tx,
        });
        let config = MeshConfig {
            region: "eu".into(),
            service_center: endpoint(None),
            roaming: PairEndpoint::single("https://eu-roaming.chat.svc:7402"),
            peers: Vec::new(),
        };
        let (config_tx, config_rx) = watch::channel(config.clone());
        let found = Arc::new(Found::default());
        let resolving = Resolving {
            resolver: fake.clone(),
            // Long: every lookup this test waits for is made at once.
            interval: Duration::from_secs(600),
        };
        let dials = Arc::new(AtomicUsize::new(0));
        let counted = dials.clone();
        let task = tokio::spawn(run(found.clone(), config_rx, resolving, move |url| {
            counting(&counted)(url)
        }));

        // No name: nothing is looked up; a name in the configuration is.
        let mut named = config.clone();
        named.service_center.dns = Some(DNS.into());
        config_tx.send_replace(named.clone());
        assert_eq!(
            next_lookup(&mut asked).await,
            ("eu-service-center-pods.chat.svc".to_owned(), 7401)
        );
        until("two replicas found", || found.addresses(DNS).len() == 2).await;

        // A stale set is looked up again soon: one pod went, one came.
        *fake.answer.lock().unwrap() = Some(vec![addr(2, 7401), addr(3, 7401)]);
        found.stale();
        next_lookup(&mut asked).await;
        until("the new pod replaces the old", || {
            found.addresses(DNS) == [addr(2, 7401), addr(3, 7401)]
        })
        .await;
        assert_eq!(dials.load(Ordering::Relaxed), 3, "one dial per new address");

        // A failed lookup empties the set: pair serves.
        *fake.answer.lock().unwrap() = None;
        found.stale();
        next_lookup(&mut asked).await;
        until("pair serves", || {
            found.channels(&named.service_center).is_none()
        })
        .await;

        // The name resolves again; then the configuration drops the name.
        *fake.answer.lock().unwrap() = Some(vec![addr(4, 7401)]);
        found.stale();
        next_lookup(&mut asked).await;
        until("found again", || {
            found.channels(&named.service_center).is_some()
        })
        .await;
        config_tx.send_replace(config);
        until("forgotten", || found.addresses(DNS).is_empty()).await;
        task.abort();
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let addrs = System.lookup("localhost", 7401).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 7401),
            "{addrs:?}"
        );
    }
}
