//! Link state, copied from the roaming systems. Every poll interval the
//! operator asks each local Region's roaming system (`Admin.MeshStatus` on
//! its peer Service) how it reaches every peer. A significant change (state,
//! path, or a large move in round-trip time) is published and triggers a
//! reconcile of that Region, which writes it into `Region.status.peers` and
//! `RegionLink.status` and records an Event. Small RTT jitter is not written,
//! so a steady mesh causes no status writes.
//!
//! A failed poll drops the channel and dials afresh for the next one: a
//! lazily connected channel keeps its connection for as long as the server
//! at the other end keeps it open, even one that answers every call wrongly
//! (a Service address that still led to another pod when it was first
//! dialled). Failures are logged at WARN when they start, then at most once
//! a minute; a Region whose roaming system has not answered for three polls
//! gets the condition `LinkStateKnown=False` (see `status.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use meridian_crds::{LinkState, Region};
use meridian_node::proto::peer_api::admin_client::AdminClient;
use meridian_node::proto::peer_api::{
    LinkCondition, LinkStatus, MeshStatusReply, MeshStatusRequest,
};
use tonic::transport::Channel;

/// How one peer is reached, as the roaming system last reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedLink {
    pub state: LinkState,
    /// The regions between this one and the peer; empty on the direct link.
    pub via: Vec<String>,
    pub rtt_millis: Option<u64>,
    pub since: Timestamp,
}

/// Every peer of one region, by peer region code.
pub type ObservedLinks = BTreeMap<String, ObservedLink>;

/// A roaming system's reply as observed links. Skipped: links it has not
/// judged yet (no change recorded: a roaming system that just started), and
/// links whose condition this operator does not know (see [`link_state`]):
/// their state stays unknown in the status, never taken for up.
pub fn from_reply(reply: &MeshStatusReply) -> ObservedLinks {
    reply
        .links
        .iter()
        .filter(|link| link.last_change_ms > 0)
        .filter_map(|link| {
            let state = link_state(link)?;
            // The path runs from this region to the peer; the relays are in between.
            let via = match link.path.as_slice() {
                [_, relays @ .., _] if state == LinkState::Detoured => relays.to_vec(),
                _ => Vec::new(),
            };
            let observed = ObservedLink {
                state,
                via,
                rtt_millis: link.rtt_millis.map(|ms| ms.max(0.0).round() as u64),
                // Whole seconds: the API stores times to the second, and a
                // finer time would never equal what it gives back.
                since: Timestamp::from_second(link.last_change_ms / 1000)
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            };
            Some((link.peer.clone(), observed))
        })
        .collect()
}

/// The CRD's state for a link's wire condition; `None` for
/// LINK_CONDITION_UNSPECIFIED and for a value this operator does not know (a
/// newer node may add conditions).
fn link_state(link: &LinkStatus) -> Option<LinkState> {
    match LinkCondition::try_from(link.condition) {
        Ok(LinkCondition::Up) => Some(LinkState::Up),
        Ok(LinkCondition::Detoured) => Some(LinkState::Detoured),
        Ok(LinkCondition::Down) => Some(LinkState::Down),
        Ok(LinkCondition::Unspecified) | Err(_) => None,
    }
}

/// The peers whose link condition in `reply` this operator does not know,
/// with the condition's value: their state is left unknown, and the poller
/// logs them.
pub fn unknown_conditions(reply: &MeshStatusReply) -> BTreeMap<String, i32> {
    reply
        .links
        .iter()
        .filter(|link| link_state(link).is_none())
        .map(|link| (link.peer.clone(), link.condition))
        .collect()
}

/// Whether `next` is worth a status write over `published`: a peer came or
/// went, a state or path changed, or an RTT moved by more than 5 ms and 25 %.
pub fn significant(published: &ObservedLinks, next: &ObservedLinks) -> bool {
    if published.len() != next.len() {
        return true;
    }
    published.iter().zip(next).any(|((pa, a), (pb, b))| {
        pa != pb || a.state != b.state || a.via != b.via || rtt_moved(a.rtt_millis, b.rtt_millis)
    })
}

fn rtt_moved(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let delta = a.abs_diff(b);
            delta > 5 && delta * 4 > a.max(b)
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// What this process knows of one Region's links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Not polled yet (this process just started or just became leader):
    /// the status keeps what it says.
    Pending,
    /// The roaming system's latest significant report.
    Reported(ObservedLinks),
    /// The roaming system has not answered for three polls: nothing is
    /// known. Says why, as of when it stopped answering.
    Unreachable(String),
}

/// The published link state of every local Region, shared with the reconciler.
#[derive(Clone, Default)]
pub struct Observations(Arc<Mutex<HashMap<ObjectRef<Region>, Observation>>>);

impl Observations {
    pub fn get(&self, region: &ObjectRef<Region>) -> Observation {
        self.lock()
            .get(region)
            .cloned()
            .unwrap_or(Observation::Pending)
    }

    /// Replaces a Region's links when the change is significant; returns whether it did.
    fn publish(&self, region: &ObjectRef<Region>, next: ObservedLinks) -> bool {
        let mut map = self.lock();
        if let Some(Observation::Reported(old)) = map.get(region)
            && !significant(old, &next)
        {
            return false;
        }
        map.insert(region.clone(), Observation::Reported(next));
        true
    }

    /// Marks a Region's roaming system unreachable, for `why`; returns
    /// whether that is news. An unreachable Region keeps its first reason,
    /// so that a changing error text causes no status writes.
    fn lose(&self, region: &ObjectRef<Region>, why: String) -> bool {
        let mut map = self.lock();
        if matches!(map.get(region), Some(Observation::Unreachable(_))) {
            return false;
        }
        map.insert(region.clone(), Observation::Unreachable(why));
        true
    }

    /// Drops what is known of Regions not in `keep` (deleted ones), so that a
    /// Region made again under the same name starts afresh.
    fn retain(&self, keep: &HashSet<ObjectRef<Region>>) {
        self.lock().retain(|key, _| keep.contains(key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<Region>, Observation>> {
        // The map is replaced entry by entry, so a panic elsewhere leaves it whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Where the poller reaches a roaming system: its peer Service's URL, with
/// the host rewritten when `--resolve` names it (for an operator that runs
/// outside the cluster and reaches the Services through forwarded ports).
#[derive(Clone, Debug, Default)]
pub struct Resolver(HashMap<String, String>);

impl Resolver {
    /// Parses `HOST=ADDR` entries.
    pub fn parse(entries: &[String]) -> anyhow::Result<Resolver> {
        let mut map = HashMap::new();
        for entry in entries {
            let (host, addr) = entry
                .split_once('=')
                .filter(|(h, a)| !h.is_empty() && !a.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--resolve {entry:?}: expected HOST=ADDR, as in eu-roaming.chat.svc=127.0.0.1:7443"))?;
            map.insert(host.to_owned(), addr.to_owned());
        }
        Ok(Resolver(map))
    }

    /// `url` (`https://host:port`) with its authority replaced when its
    /// host is listed. The server is still verified as its region, not by
    /// the address.
    pub fn url(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_owned();
        };
        let host = rest.split([':', '/']).next().unwrap_or_default();
        match self.0.get(host) {
            Some(addr) => format!("{scheme}://{addr}"),
            None => url.to_owned(),
        }
    }
}

/// What the poller needs from the controller.
pub struct Poller {
    pub regions: Store<Region>,
    pub cluster: String,
    pub resolver: Resolver,
    pub observations: Observations,
    pub interval: Duration,
    /// Regions whose published links changed, to be reconciled.
    pub changed: UnboundedSender<ObjectRef<Region>>,
    /// Where the operator's tool certificate of each namespace comes from.
    pub authorities: super::pki::Authorities,
}

/// How often a roaming system that keeps failing is logged at WARN.
const WARN_EVERY: Duration = Duration::from_secs(60);

struct Target {
    channel: Channel,
    url: String,
    region: String,
    tool: Arc<meridian_node::trust::Credentials>,
    last_success: Instant,
    /// Failed polls since the last success.
    failures: u32,
    /// When a failure was last logged at WARN.
    warned: Option<Instant>,
    /// The peers whose link condition was unknown in the last reply, as
    /// logged: logged again only when they change.
    unknown: BTreeMap<String, i32>,
}

/// A lazily connected channel to `region`'s roaming system at `url`.
fn dial(
    url: &str,
    region: &str,
    tool: &Arc<meridian_node::trust::Credentials>,
) -> Result<Channel, meridian_node::Error> {
    let dial = meridian_node::transport::Dial::Region {
        credentials: tool.clone(),
        region: region.to_owned(),
    };
    meridian_node::transport::channel(url, dial)
}

impl Target {
    /// Records a failed poll: the next poll dials afresh, and the failure
    /// is logged at WARN when it starts a run of failures and then at most
    /// every [`WARN_EVERY`]. Returns how long the roaming system has not
    /// answered.
    fn failed(&mut self, key: &ObjectRef<Region>, err: &str) -> Duration {
        self.failures += 1;
        // Whatever answered (or did not) at the far end of this channel
        // may not be the roaming system: a new connection is dialled, and
        // resolved, for the next poll.
        match dial(&self.url, &self.region, &self.tool) {
            Ok(channel) => self.channel = channel,
            Err(err) => tracing::warn!(%err, region = %key, "cannot reach its roaming system"),
        }
        let silent = self.last_success.elapsed();
        if self.failures == 1 || self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(region = %key, url = %self.url, %err, failures = self.failures,
                silent_secs = silent.as_secs(), "cannot poll the roaming system's link state; reconnecting");
            self.warned = Some(Instant::now());
        } else {
            tracing::debug!(region = %key, url = %self.url, %err, failures = self.failures, "no link state");
        }
        silent
    }

    /// Records a successful poll of `reply`. Links whose condition this
    /// operator does not know are logged at WARN when they first appear.
    fn succeeded(&mut self, key: &ObjectRef<Region>, reply: &MeshStatusReply) {
        if self.failures > 0 {
            tracing::info!(region = %key, url = %self.url, failures = self.failures,
                "polling the roaming system's link state again");
        }
        self.failures = 0;
        self.warned = None;
        self.last_success = Instant::now();
        let unknown = unknown_conditions(reply);
        if unknown != self.unknown {
            if !unknown.is_empty() {
                tracing::warn!(region = %key, url = %self.url, peers = ?unknown,
                    "the roaming system reports link conditions this operator does not know; their state is left unknown");
            }
            self.unknown = unknown;
        }
    }
}

impl Poller {
    /// Polls until the process ends.
    pub async fn run(self) {
        let mut targets: HashMap<ObjectRef<Region>, Target> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let local: Vec<Arc<Region>> = self
                .regions
                .state()
                .into_iter()
                .filter(|r| {
                    r.spec.cluster == self.cluster && r.metadata.deletion_timestamp.is_none()
                })
                .collect();
            let keys: Vec<ObjectRef<Region>> =
                local.iter().map(|r| ObjectRef::from_obj(&**r)).collect();
            let keep: HashSet<ObjectRef<Region>> = keys.iter().cloned().collect();
            targets.retain(|key, _| keep.contains(key));
            self.observations.retain(&keep);
            for (region, key) in local.iter().zip(&keys) {
                let namespace = region.namespace().unwrap_or_default();
                let url = self
                    .resolver
                    .url(&super::build::peer_url(&region.name_any(), &namespace));
                // Known once a reconcile has read the namespace's mesh CA.
                let Some(tool) = self.authorities.tool(&namespace) else {
                    continue;
                };
                let stale = |t: &Target| t.url != url || !Arc::ptr_eq(&t.tool, &tool);
                if targets.get(key).is_none_or(stale) {
                    match dial(&url, &region.name_any(), &tool) {
                        Ok(channel) => {
                            // A new address or certificate keeps the count
                            // of a roaming system that is not answering.
                            let last_success = targets
                                .get(key)
                                .map_or_else(Instant::now, |t| t.last_success);
                            targets.insert(
                                key.clone(),
                                Target {
                                    channel,
                                    url,
                                    region: region.name_any(),
                                    tool,
                                    last_success,
                                    failures: 0,
                                    warned: None,
                                    unknown: BTreeMap::new(),
                                },
                            );
                        }
                        Err(err) => {
                            tracing::warn!(%err, region = %key, "cannot reach its roaming system")
                        }
                    }
                }
            }
            // At most a second, so one silent roaming system delays the
            // other Regions' polls by little.
            let timeout = self.interval.min(Duration::from_secs(1));
            let polls = targets.iter_mut().map(|(key, target)| async move {
                let reply = tokio::time::timeout(timeout, async {
                    AdminClient::new(target.channel.clone())
                        .mesh_status(MeshStatusRequest {})
                        .await
                })
                .await;
                (key, target, reply)
            });
            for (key, target, reply) in futures::future::join_all(polls).await {
                let changed = match reply {
                    Ok(Ok(reply)) => {
                        target.succeeded(key, reply.get_ref());
                        self.observations.publish(key, from_reply(reply.get_ref()))
                    }
                    failed => {
                        let err = match failed {
                            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                            _ => format!("no answer within {timeout:?}"),
                        };
                        let silent = target.failed(key, &err);
                        // Stale state is worse than none: drop it after three missed polls.
                        silent > self.interval * 3
                            && self.observations.lose(
                                key,
                                format!("cannot poll the roaming system at {}: {err}", target.url),
                            )
                    }
                };
                if changed {
                    let _ = self.changed.unbounded_send(key.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(peer: &str, condition: LinkCondition, path: &[&str], rtt: Option<f64>) -> LinkStatus {
        LinkStatus {
            peer: peer.into(),
            condition: condition.into(),
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            rtt_millis: rtt,
            enabled: true,
            last_change_ms: 1_700_000_000_000,
            cost: 10,
        }
    }

    fn reply(links: Vec<LinkStatus>) -> MeshStatusReply {
        MeshStatusReply {
            region: "eu".into(),
            links,
        }
    }

    /// What eu observes when its roaming system reports one link, to us.
    fn to_us(condition: LinkCondition, path: &[&str], rtt: Option<f64>) -> ObservedLinks {
        from_reply(&reply(vec![link("us", condition, path, rtt)]))
    }

    /// Serves a Service address the way kube-proxy does: each new
    /// connection goes to the backend set at that moment, and established
    /// ones stay where they went.
    async fn service_address(backend: Arc<Mutex<std::net::SocketAddr>>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let to = *backend.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        addr
    }

    async fn wait_for(
        observations: &Observations,
        key: &ObjectRef<Region>,
        what: &str,
        check: impl Fn(&Observation) -> bool,
    ) -> Observation {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = observations.get(key);
            if check(&now) {
                return now;
            }
            assert!(Instant::now() < deadline, "{what}: still {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The trial on kind: the first poll reached another server behind the
    /// Service address (which answered HTTP 404), and the channel kept that
    /// connection. The poller must dial again, and get the state once the
    /// address leads to the roaming system, without a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poller_whose_connection_reached_the_wrong_server_dials_again() {
        use meridian_node::transport::{ClientAuth, ServerTls};
        use meridian_node::trust::pki::MeshCa;

        let ca = MeshCa::generate("chat").unwrap();
        let eu = ca
            .issue_region("eu", "chat", &[], Duration::from_secs(3600))
            .and_then(|c| c.credentials(&ca.cert_pem))
            .unwrap();

        // The wrong server holds eu's certificate (as an old pod of the
        // region might) and answers every request with HTTP 404.
        let wrong = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let wrong_addr = wrong.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(tonic::service::Routes::from(axum::Router::new()))
                .serve_with_incoming(meridian_node::transport::incoming(
                    wrong,
                    ServerTls::Region(eu.clone(), ClientAuth::Required),
                )),
        );
        let backend = Arc::new(Mutex::new(wrong_addr));
        let service = service_address(backend.clone()).await;

        let (regions, mut writer) = kube::runtime::reflector::store::<Region>();
        let region: Region = serde_yaml::from_str(
            "apiVersion: meridian.dev/v1alpha1\nkind: Region\nmetadata: {name: eu, namespace: chat, uid: u1}\nspec: {cluster: here}\n",
        )
        .unwrap();
        let key = ObjectRef::from_obj(&region);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(region));
        let authorities = super::super::pki::Authorities::new(super::super::pki::Issuing {
            ca_secret: "meridian-mesh-ca".into(),
            lifetime: Duration::from_secs(3600),
            issuer: None,
        });
        authorities.insert(
            "chat",
            MeshCa::from_pem(&ca.cert_pem, &ca.key_pem()).unwrap(),
        );
        let observations = Observations::default();
        let (changed, mut reconciles) = futures::channel::mpsc::unbounded();
        let poller = tokio::spawn(
            Poller {
                regions,
                cluster: "here".into(),
                resolver: Resolver::parse(&[format!("eu-roaming.chat.svc={service}")]).unwrap(),
                observations: observations.clone(),
                interval: Duration::from_millis(200),
                changed,
                authorities,
            }
            .run(),
        );

        let lost = wait_for(&observations, &key, "eu unreachable", |o| {
            matches!(o, Observation::Unreachable(_))
        })
        .await;
        let Observation::Unreachable(why) = lost else {
            unreachable!()
        };
        assert!(why.contains("404"), "the reason names the answer: {why}");
        assert_eq!(reconciles.try_recv().ok(), Some(key.clone()));

        // Now the address leads to eu's roaming system; the wrong server
        // keeps serving whatever connection it has.
        let pair = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let mesh = meridian_node::mesh::MeshConfig::from_yaml(&format!(
            "region: eu\nserviceCenter: {{pair: 'https://127.0.0.1:1'}}\nroaming: {{pair: 'https://{}'}}\n",
            pair.local_addr().unwrap()
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (_config, mesh) = tokio::sync::watch::channel(mesh);
        let node = tokio::spawn(
            meridian_node::server::Node {
                mesh,
                data_dir: dir.path().to_owned(),
                postgres: None,
                service_center: None,
                roaming: Some(meridian_node::server::RoamingListeners { pair, peer }),
                health: Default::default(),
                limits: Default::default(),
                credentials: eu,
                client_tls: None,
                probe: None,
                metrics: None,
            }
            .run(async {
                let _ = stopped.await;
            }),
        );
        *backend.lock().unwrap() = peer_addr;
        wait_for(&observations, &key, "eu's links reported", |o| {
            matches!(o, Observation::Reported(_))
        })
        .await;
        assert_eq!(reconciles.try_recv().ok(), Some(key.clone()));
        poller.abort();
        let _ = stop.send(());
        node.await.unwrap().unwrap();
    }

    #[test]
    fn a_detour_names_its_relays_and_the_direct_link_none() {
        let links = from_reply(&reply(vec![
            link(
                "us",
                LinkCondition::Detoured,
                &["eu", "ap", "sa", "us"],
                Some(80.4),
            ),
            link("ap", LinkCondition::Up, &["eu", "ap"], Some(12.6)),
            link("sa", LinkCondition::Down, &[], None),
            link("xx", LinkCondition::Unspecified, &[], None),
        ]));
        assert_eq!(links.len(), 3, "an unspecified condition is skipped");
        assert_eq!(links["us"].state, LinkState::Detoured);
        assert_eq!(links["us"].via, ["ap", "sa"]);
        assert_eq!(links["us"].rtt_millis, Some(80));
        assert!(links["ap"].via.is_empty());
        assert_eq!(links["ap"].rtt_millis, Some(13));
        assert_eq!(
            (links["sa"].state, links["sa"].rtt_millis),
            (LinkState::Down, None)
        );
        assert_eq!(
            links["ap"].since,
            Timestamp::from_second(1_700_000_000).unwrap()
        );
    }

    #[test]
    fn only_state_path_and_large_rtt_moves_are_significant() {
        let base = to_us(LinkCondition::Up, &["eu", "us"], Some(80.0));
        let jitter = to_us(LinkCondition::Up, &["eu", "us"], Some(84.0));
        let slower = to_us(LinkCondition::Up, &["eu", "us"], Some(120.0));
        let small = to_us(LinkCondition::Up, &["eu", "us"], Some(1.0));
        let small_jump = to_us(LinkCondition::Up, &["eu", "us"], Some(5.0));
        let detoured = to_us(LinkCondition::Detoured, &["eu", "ap", "us"], Some(80.0));
        let other_relay = to_us(LinkCondition::Detoured, &["eu", "sa", "us"], Some(80.0));
        let no_rtt = to_us(LinkCondition::Up, &["eu", "us"], None);
        assert!(!significant(&base, &base));
        assert!(
            !significant(&base, &jitter),
            "4 ms of jitter is not written"
        );
        assert!(significant(&base, &slower));
        assert!(
            !significant(&small, &small_jump),
            "a few ms on a fast link is not written"
        );
        assert!(significant(&base, &detoured));
        assert!(significant(&detoured, &other_relay));
        assert!(significant(&base, &no_rtt));
        assert!(significant(&base, &ObservedLinks::new()));
    }

    #[test]
    fn the_resolver_rewrites_only_listed_hosts() {
        let resolver = Resolver::parse(&["eu-roaming.chat.svc=127.0.0.1:4000".into()]).unwrap();
        assert_eq!(
            resolver.url("http://eu-roaming.chat.svc:7443"),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            resolver.url("http://us-roaming.chat.svc:7443"),
            "http://us-roaming.chat.svc:7443"
        );
        let err = Resolver::parse(&["eu-roaming.chat.svc".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HOST=ADDR"), "{err}");
        assert!(Resolver::parse(&["=1.2.3.4:1".into()]).is_err());
    }

    #[test]
    fn observations_publish_only_significant_changes_and_are_lost_and_dropped() {
        let observations = Observations::default();
        let key = ObjectRef::<Region>::new("eu").within("chat");
        assert_eq!(observations.get(&key), Observation::Pending);
        let base = to_us(LinkCondition::Up, &["eu", "us"], Some(80.0));
        let jitter = to_us(LinkCondition::Up, &["eu", "us"], Some(82.0));
        assert!(observations.publish(&key, base.clone()));
        assert!(!observations.publish(&key, jitter));
        assert_eq!(observations.get(&key), Observation::Reported(base.clone()));
        assert!(observations.lose(&key, "refused".into()));
        assert!(
            !observations.lose(&key, "timed out".into()),
            "losing it again is no news"
        );
        assert_eq!(
            observations.get(&key),
            Observation::Unreachable("refused".into()),
            "the first reason is kept"
        );
        assert!(observations.publish(&key, base));
        observations.retain(&HashSet::new());
        assert_eq!(
            observations.get(&key),
            Observation::Pending,
            "a deleted Region's links are dropped"
        );
    }

    #[test]
    fn times_are_whole_seconds_and_unjudged_links_are_skipped() {
        let mut fine = link("us", LinkCondition::Up, &["eu", "us"], Some(80.0));
        fine.last_change_ms = 1_700_000_000_999;
        let mut unjudged = link("ap", LinkCondition::Down, &[], None);
        unjudged.last_change_ms = 0;
        let links = from_reply(&reply(vec![fine, unjudged]));
        assert_eq!(links.len(), 1, "a link never judged is not reported");
        assert_eq!(
            links["us"].since,
            Timestamp::from_second(1_700_000_000).unwrap()
        );
        // What the API gives back equals what was written, so no rewrite follows.
        let status = meridian_crds::PeerStatus {
            region: "us".into(),
            state: Some(links["us"].state),
            via: Vec::new(),
            rtt_millis: links["us"].rtt_millis,
            last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                links["us"].since,
            )),
        };
        let back: meridian_crds::PeerStatus =
            serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn an_unspecified_or_unknown_condition_is_not_taken_for_a_state() {
        let up = link("us", LinkCondition::Up, &["eu", "us"], Some(80.0));
        let unspecified = link("ap", LinkCondition::Unspecified, &["eu", "ap"], Some(9.0));
        let mut newer = link("sa", LinkCondition::Up, &["eu", "sa"], Some(40.0));
        newer.condition = 99;
        let reply = reply(vec![up, unspecified, newer]);
        let links = from_reply(&reply);
        assert_eq!(
            links.keys().collect::<Vec<_>>(),
            ["us"],
            "only a known condition is reported; the others stay unknown"
        );
        assert_eq!(links["us"].state, LinkState::Up);
        assert_eq!(
            unknown_conditions(&reply),
            BTreeMap::from([("ap".to_owned(), 0), ("sa".to_owned(), 99)]),
            "what the poller logs"
        );
    }
}
