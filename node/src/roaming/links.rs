//! The roaming system's links to its peers: heartbeats measure each link,
//! the link state they carry is merged, and routes are recomputed whenever
//! either changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::Notify;

use crate::mesh::health::{Health, HealthPolicy, LinkHealth};
use crate::mesh::topology::{Advert, LinkStateDb, MAX_AGE_MICROS, Path, REFRESH_MICROS};
use crate::mesh::{MeshConfig, Route, next_hop};

/// How a peer is reached now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkView {
    Up,
    Detoured,
    Down,
}

impl LinkView {
    /// Every view, in the order people read them.
    pub const ALL: [LinkView; 3] = [LinkView::Up, LinkView::Detoured, LinkView::Down];

    /// The design's word for the view, as status, metrics and the CLI print it.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkView::Up => "Up",
            LinkView::Detoured => "Detoured",
            LinkView::Down => "Down",
        }
    }
}

/// One peer as seen from here.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub peer: String,
    pub view: LinkView,
    /// From this region to the peer, both included.
    pub path: Vec<String>,
    pub cost: u64,
    pub rtt: Option<Duration>,
    pub enabled: bool,
    pub last_change_ms: i64,
}

#[derive(Default)]
struct State {
    /// Woken when the direct link to a peer goes down.
    down: BTreeMap<String, Arc<Notify>>,
    health: BTreeMap<String, LinkHealth>,
    db: LinkStateDb,
    own_seq: u64,
    routes: BTreeMap<String, Path>,
    views: BTreeMap<String, (LinkView, i64)>,
}

/// Signs this region's own records; returns the proof passed on with them.
pub type Seal = Box<dyn Fn(&Advert) -> Vec<u8> + Send + Sync>;

pub struct Links {
    region: String,
    pub policy: HealthPolicy,
    state: Mutex<State>,
    seal: Seal,
}

/// Every hop costs this much on top of its round-trip time, so that jitter
/// on fast links never makes a detour look cheaper than the direct link.
pub const HOP_COST: u32 = 10;

/// The cost of a link whose RegionLink sets none: the per-hop cost plus the
/// smoothed round-trip time in milliseconds, in steps of 5 ms so that small
/// jitter does not re-advertise it.
pub fn measured_cost(rtt: Option<Duration>) -> u32 {
    let millis = rtt.map(|r| r.as_millis() as u32).unwrap_or(0);
    HOP_COST + millis / 5 * 5
}

fn now_micros() -> u64 {
    (crate::now_ms() as u64) * 1000
}

impl Links {
    pub fn new(region: &str, policy: HealthPolicy, seal: Seal) -> Self {
        Self {
            region: region.to_owned(),
            policy,
            state: Mutex::default(),
            seal,
        }
    }

    /// Records a heartbeat's outcome (`None`: no answer in time).
    pub fn probed(&self, config: &MeshConfig, peer: &str, rtt: Option<Duration>) {
        let mut state = self.state.lock().expect("links");
        let health = state.health.entry(peer.to_owned()).or_default();
        let changed = match rtt {
            Some(rtt) => health.success(rtt, &self.policy),
            None => health.miss(&self.policy),
        };
        if changed {
            tracing::warn!(region = %self.region, %peer, health = ?health.health, "link changed");
            if health.health == Health::Down {
                state
                    .down
                    .entry(peer.to_owned())
                    .or_default()
                    .notify_waiters();
            }
        }
        self.refresh(&mut state, config);
    }

    /// Merges advertisements from a peer, each newer one only if `accept`
    /// takes it (its signature and age are checked there); returns what
    /// this region knows.
    pub fn exchange(
        &self,
        config: &MeshConfig,
        adverts: Vec<Advert>,
        accept: impl Fn(&Advert) -> bool,
    ) -> Vec<Advert> {
        let mut state = self.state.lock().expect("links");
        let mut changed = false;
        for advert in adverts {
            if advert.origin != self.region && state.db.is_newer(&advert) && accept(&advert) {
                changed |= state.db.merge(advert);
            }
        }
        if changed {
            self.refresh(&mut state, config);
        }
        state.db.adverts().cloned().collect()
    }

    /// Applies a new configuration (peers added, removed or disabled).
    pub fn configure(&self, config: &MeshConfig) {
        let mut state = self.state.lock().expect("links");
        self.refresh(&mut state, config);
    }

    pub fn adverts(&self) -> Vec<Advert> {
        self.state
            .lock()
            .expect("links")
            .db
            .adverts()
            .cloned()
            .collect()
    }

    /// Woken when the direct link to `peer` goes down, so that calls in
    /// flight on it fail at once instead of waiting for their deadline.
    pub fn down_signal(&self, peer: &str) -> Arc<Notify> {
        self.state
            .lock()
            .expect("links")
            .down
            .entry(peer.to_owned())
            .or_default()
            .clone()
    }

    /// Where traffic for `destination` goes next.
    pub fn next_hop(&self, config: &MeshConfig, destination: &str) -> Route {
        next_hop(
            config,
            &self.state.lock().expect("links").routes,
            destination,
        )
    }

    /// Re-advertises this region's links if they changed, and recomputes routes.
    fn refresh(&self, state: &mut State, config: &MeshConfig) {
        let regions: BTreeSet<String> = config
            .peers
            .iter()
            .map(|p| p.region.clone())
            .chain([self.region.clone()])
            .collect();
        state.health.retain(|peer, _| regions.contains(peer));
        state.db.retain(&regions);
        let advertised = state
            .db
            .get(&self.region)
            .map(|own| own.links.clone())
            .unwrap_or_default();
        let links: BTreeMap<String, (bool, u32)> = config
            .peers
            .iter()
            .map(|peer| {
                let health = state.health.entry(peer.region.clone()).or_default();
                if !peer.enabled && health.disable() {
                    state
                        .down
                        .entry(peer.region.clone())
                        .or_default()
                        .notify_waiters();
                }
                let up = peer.enabled && health.health == Health::Up;
                let cost = peer.cost.unwrap_or_else(|| {
                    let measured = measured_cost(health.rtt);
                    match advertised.get(&peer.region) {
                        // Hysteresis: a measured cost is re-advertised only
                        // when it moved by half, so jitter moves no route.
                        Some((_, old)) if measured.abs_diff(*old) * 2 < *old => *old,
                        _ => measured,
                    }
                });
                (peer.region.clone(), (up, cost))
            })
            .collect();
        let now = now_micros();
        // Re-advertised when it changed, and refreshed before it expires.
        let current = state
            .db
            .get(&self.region)
            .is_some_and(|own| own.links == links && own.seq + REFRESH_MICROS > now);
        if !current {
            state.own_seq = (state.own_seq + 1).max(now);
            let mut advert = Advert {
                origin: self.region.clone(),
                seq: state.own_seq,
                links,
                proof: Vec::new(),
            };
            advert.proof = (self.seal)(&advert);
            state.db.merge(advert);
        }
        state.db.expire(now.saturating_sub(MAX_AGE_MICROS));
        state.routes = state.db.routes(&self.region);
        let now_ms = crate::now_ms();
        for peer in &config.peers {
            let view = match state.routes.get(&peer.region) {
                Some(path) if path.hops.len() == 1 => LinkView::Up,
                Some(_) => LinkView::Detoured,
                None => LinkView::Down,
            };
            let entry = state
                .views
                .entry(peer.region.clone())
                .or_insert((view, now_ms));
            if entry.0 != view {
                tracing::info!(region = %self.region, peer = %peer.region, from = entry.0.as_str(), to = view.as_str(), "route changed");
                *entry = (view, now_ms);
            }
        }
        state.views.retain(|peer, _| regions.contains(peer));
    }

    /// Every peer's link, for status output.
    pub fn status(&self, config: &MeshConfig) -> Vec<PeerStatus> {
        let state = self.state.lock().expect("links");
        config
            .peers
            .iter()
            .map(|peer| {
                let route = state.routes.get(&peer.region);
                let (view, last_change_ms) = state
                    .views
                    .get(&peer.region)
                    .copied()
                    .unwrap_or((LinkView::Down, 0));
                PeerStatus {
                    peer: peer.region.clone(),
                    view,
                    path: route
                        .map(|p| {
                            std::iter::once(self.region.clone())
                                .chain(p.hops.iter().cloned())
                                .collect()
                        })
                        .unwrap_or_default(),
                    cost: route.map(|p| p.cost).unwrap_or(0),
                    rtt: state.health.get(&peer.region).and_then(|h| h.rtt),
                    enabled: peer.enabled,
                    last_change_ms,
                }
            })
            .collect()
    }
}
