//! The Region's status: conditions with reasons and messages, ready replica
//! counts and the peer list. Built by a pure function; a condition keeps its
//! transition time while its status stays the same, so an unchanged world
//! writes an unchanged status.
//!
//! `LinkStateKnown` says whether `peers` comes from the roaming system:
//! `True` (`LinkStateReported`) once it answered the operator's poll,
//! `False` (`LinkStateUnknown`, with the error) while it has not answered for
//! three polls, `Unknown` (`NotPolledYet`) before the first poll of a new
//! Region. A restarted operator keeps what is written until it has polled.
//!
//! `StorageResized` (only with `spec.serviceCenter.storage`) says whether the
//! data claims have the spec's size: `True` (`SizeMatchesSpec`), `False`
//! (`StorageResizing`) while a claim grows, `False` (`StorageResizeRefused`)
//! when the operator will not resize (see `storage.rs`). A refusal also
//! makes the Region `Degraded` and a resize `Progressing`, with the same
//! reason and message.
//!
//! `IdentityIssued` (only when identities come from a cert-manager issuer)
//! says whether cert-manager has issued the Region's Certificate: `True`
//! (`CertManagerIssued`) or `False` (`CertManagerNotReady`, with the
//! Certificate's own Ready condition). Not issued, the Region is also
//! `Progressing` with that reason and message: its pods wait for the Secret.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use meridian_crds::{
    LinkState, PeerStatus, RegionLinkSpec, RegionLinkStatus, RegionStatus, WorkloadStatus,
};
use meridian_node::mesh::MeshConfig;

use super::apply::Applied;
use super::cert_manager::CertificateState;
use super::mesh_status::Observation;
use super::storage::{SIZE_FIELD, StorageState};

/// The condition on the data volume's size.
pub const STORAGE_RESIZED: &str = "StorageResized";
pub const STORAGE_RESIZING: &str = "StorageResizing";
pub const STORAGE_RESIZE_REFUSED: &str = "StorageResizeRefused";

/// The condition on a Region's Certificate, with a cert-manager issuer.
pub const IDENTITY_ISSUED: &str = "IdentityIssued";
pub const CERT_MANAGER_ISSUED: &str = "CertManagerIssued";
pub const CERT_MANAGER_NOT_READY: &str = "CertManagerNotReady";

/// What one reconcile found.
pub enum Outcome<'a> {
    /// Every object was applied.
    Applied {
        applied: &'a Applied,
        mesh: &'a MeshConfig,
        /// What the roaming system reported of its links.
        observed: &'a Observation,
        /// The data volume's size against the spec.
        storage: &'a StorageState,
        /// With a cert-manager issuer, whether it issued the identity.
        identity: &'a CertificateState,
    },
    /// The Region or its namespace is invalid; nothing was applied.
    Invalid(&'a str),
    /// Applying failed.
    Failed(&'a str),
}

pub fn status(
    generation: Option<i64>,
    outcome: Outcome<'_>,
    previous: Option<&RegionStatus>,
    now: Timestamp,
) -> RegionStatus {
    let mut next = previous.cloned().unwrap_or_default();
    next.observed_generation = generation;
    let mut no_identity_condition = false;
    let mut set_status = |type_: &str, status: &str, reason: &str, message: String| {
        let kept = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone());
        let condition = Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: kept.unwrap_or(Time(now)),
        };
        match next.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = condition,
            None => next.conditions.push(condition),
        }
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_status(type_, if ok { "True" } else { "False" }, reason, message)
    };
    match outcome {
        Outcome::Applied {
            applied,
            mesh,
            observed,
            storage,
            identity,
        } => {
            let ready = applied.service_center_ready >= applied.service_center_wanted
                && applied.roaming_ready >= applied.roaming_wanted;
            let counts = format!(
                "service center {}/{} ready, roaming {}/{} ready",
                applied.service_center_ready,
                applied.service_center_wanted,
                applied.roaming_ready,
                applied.roaming_wanted
            );
            set(
                "Ready",
                ready,
                if ready {
                    "AllReplicasReady"
                } else {
                    "ReplicasNotReady"
                },
                counts.clone(),
            );
            match (identity, storage) {
                // The identity first: the pods cannot start without it.
                (CertificateState::NotReady(message), _) => {
                    set("Progressing", true, CERT_MANAGER_NOT_READY, message.clone());
                }
                // Pods next: a rollout says more than a volume growing.
                (_, StorageState::Resizing(message)) if ready => {
                    set("Progressing", true, STORAGE_RESIZING, message.clone());
                }
                _ => set(
                    "Progressing",
                    !ready,
                    if ready {
                        "RolloutComplete"
                    } else {
                        "RollingOut"
                    },
                    counts,
                ),
            }
            match storage {
                StorageState::Refused(message) => {
                    set("Degraded", true, STORAGE_RESIZE_REFUSED, message.clone());
                }
                _ => set(
                    "Degraded",
                    false,
                    "AsExpected",
                    "every object is applied".into(),
                ),
            }
            set(
                "MeshConfigured",
                true,
                "PeersConfigured",
                format!("{} peers configured", mesh.peers.len()),
            );
            let (known, reason, message) = link_state_known(observed, previous);
            set_status("LinkStateKnown", &known, &reason, message);
            match identity {
                // Removed below, once `set_status` is done.
                CertificateState::NotUsed => no_identity_condition = true,
                CertificateState::Ready(message) => {
                    set_status(
                        IDENTITY_ISSUED,
                        "True",
                        CERT_MANAGER_ISSUED,
                        message.clone(),
                    );
                }
                CertificateState::NotReady(message) => set_status(
                    IDENTITY_ISSUED,
                    "False",
                    CERT_MANAGER_NOT_READY,
                    message.clone(),
                ),
            }
            match storage {
                StorageState::NoVolume => {
                    next.conditions.retain(|c| c.type_ != STORAGE_RESIZED);
                }
                StorageState::Sized { size } => set_status(
                    STORAGE_RESIZED,
                    "True",
                    "SizeMatchesSpec",
                    format!("the data claims have {SIZE_FIELD} ({size})"),
                ),
                StorageState::Resizing(message) => {
                    set_status(STORAGE_RESIZED, "False", STORAGE_RESIZING, message.clone());
                }
                StorageState::Refused(message) => set_status(
                    STORAGE_RESIZED,
                    "False",
                    STORAGE_RESIZE_REFUSED,
                    message.clone(),
                ),
            }
            next.service_center = WorkloadStatus {
                ready_replicas: applied.service_center_ready,
            };
            next.roaming = WorkloadStatus {
                ready_replicas: applied.roaming_ready,
            };
            next.peers = peers(mesh, observed, previous);
        }
        Outcome::Invalid(message) => {
            set("Ready", false, "InvalidSpec", message.to_owned());
            set("Degraded", true, "InvalidSpec", message.to_owned());
            set("MeshConfigured", false, "InvalidSpec", message.to_owned());
        }
        Outcome::Failed(message) => {
            set("Degraded", true, "ApplyFailed", message.to_owned());
        }
    }
    if no_identity_condition {
        next.conditions.retain(|c| c.type_ != IDENTITY_ISSUED);
    }
    next.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    next
}

/// The Event a data volume's state deserves, against the status before:
/// (warning?, reason, note). A refusal is recorded when it is new or says
/// something new, not at every look; the end of a resize once. (Each claim
/// patched has an Event of its own, `StorageResizing`.)
pub fn storage_event(
    previous: Option<&RegionStatus>,
    state: &StorageState,
) -> Option<(bool, &'static str, String)> {
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == STORAGE_RESIZED));
    match state {
        StorageState::Refused(message) => {
            let known =
                before.is_some_and(|c| c.reason == STORAGE_RESIZE_REFUSED && &c.message == message);
            (!known).then(|| (true, STORAGE_RESIZE_REFUSED, message.clone()))
        }
        StorageState::Sized { size } => {
            before
                .is_some_and(|c| c.reason == STORAGE_RESIZING)
                .then(|| {
                    (
                        false,
                        STORAGE_RESIZED,
                        format!("the data claims have {SIZE_FIELD} ({size})"),
                    )
                })
        }
        StorageState::NoVolume | StorageState::Resizing(_) => None,
    }
}

/// The `LinkStateKnown` condition's status, reason and message.
fn link_state_known(
    observed: &Observation,
    previous: Option<&RegionStatus>,
) -> (String, String, String) {
    match observed {
        Observation::Reported(_) => (
            "True".into(),
            "LinkStateReported".into(),
            "the roaming system reports its links".into(),
        ),
        Observation::Unreachable(why) => ("False".into(), "LinkStateUnknown".into(), why.clone()),
        Observation::Pending => {
            let before =
                previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == "LinkStateKnown"));
            match before {
                // Not polled by this process yet: what is written stands.
                Some(c) => (c.status.clone(), c.reason.clone(), c.message.clone()),
                None => (
                    "Unknown".into(),
                    "NotPolledYet".into(),
                    "the roaming system has not been polled yet".into(),
                ),
            }
        }
    }
}

/// One entry per configured peer, with the roaming system's view of it: as
/// reported; as the status already says while this process has not polled
/// yet (a restart or a new leader changes nothing); none when the roaming
/// system is unreachable or has not judged that link.
fn peers(
    mesh: &MeshConfig,
    observed: &Observation,
    previous: Option<&RegionStatus>,
) -> Vec<PeerStatus> {
    mesh.peers
        .iter()
        .map(|p| {
            let seen = match observed {
                Observation::Reported(links) => links.get(&p.region),
                Observation::Unreachable(_) => None,
                Observation::Pending => {
                    let before =
                        previous.and_then(|s| s.peers.iter().find(|b| b.region == p.region));
                    if let Some(before) = before {
                        return before.clone();
                    }
                    None
                }
            };
            PeerStatus {
                region: p.region.clone(),
                state: seen.map(|s| s.state),
                via: seen.map(|s| s.via.clone()).unwrap_or_default(),
                rtt_millis: seen.and_then(|s| s.rtt_millis),
                last_transition_time: seen.map(|s| Time(s.since)),
            }
        })
        .collect()
}

/// The region whose view a RegionLink's status shows: the first of its two
/// regions, in code order, that `is_local` (this operator deploys it).
pub fn link_observer(link: &RegionLinkSpec, is_local: impl Fn(&str) -> bool) -> Option<&str> {
    let (a, b) = link.pair()?;
    [a, b].into_iter().find(|r| is_local(r))
}

/// A RegionLink's status from its observer's peer entry, once reported.
pub fn link_status(observer: &str, peer: &PeerStatus) -> Option<RegionLinkStatus> {
    Some(RegionLinkStatus {
        state: Some(peer.state?),
        via: peer.via.clone(),
        rtt_millis: peer.rtt_millis,
        observed_from: Some(observer.to_owned()),
        last_transition_time: peer.last_transition_time.clone(),
    })
}

/// A peer whose state or path changed between two statuses, for an Event.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerChange {
    pub peer: String,
    /// `None`: the roaming system no longer reports the link.
    pub now: Option<LinkState>,
    pub via: Vec<String>,
}

impl PeerChange {
    /// The Event's reason: `LinkUp`, `LinkDetoured`, `LinkDown` or `LinkUnknown`.
    pub fn reason(&self) -> &'static str {
        match self.now {
            Some(LinkState::Up) => "LinkUp",
            Some(LinkState::Detoured) => "LinkDetoured",
            Some(LinkState::Down) => "LinkDown",
            None => "LinkUnknown",
        }
    }

    /// Whether the Event is a warning: the link is down, or nothing is known.
    pub fn is_warning(&self) -> bool {
        matches!(self.now, Some(LinkState::Down) | None)
    }

    /// For example `link eu→us is Detoured, path eu→ap→us`. The note names no
    /// previous state. kube's Recorder folds an Event with the same reason
    /// about the same objects, within a few minutes, into the first one's
    /// series, keeping its note: a detour moving to another path counts as a
    /// repeat there, while the status always shows the path in use.
    pub fn note(&self, region: &str) -> String {
        let path: Vec<&str> = std::iter::once(region)
            .chain(self.via.iter().map(String::as_str))
            .chain(std::iter::once(self.peer.as_str()))
            .collect();
        match self.now {
            Some(LinkState::Down) => format!("link {region}→{} is Down, no path", self.peer),
            Some(now) => format!(
                "link {region}→{} is {now:?}, path {}",
                self.peer,
                path.join("→")
            ),
            None => format!(
                "link {region}→{}: {region}'s roaming system does not report it",
                self.peer
            ),
        }
    }
}

/// The peers whose reported state or path differs in `next` from
/// `previous`, and those no longer reported. A peer never reported is no change.
pub fn peer_changes(previous: Option<&RegionStatus>, next: &RegionStatus) -> Vec<PeerChange> {
    next.peers
        .iter()
        .filter_map(|p| {
            let now = p.state;
            let before = previous.and_then(|s| s.peers.iter().find(|b| b.region == p.region));
            let was = before.and_then(|b| b.state);
            let same = was == now && before.is_none_or(|b| b.via == p.via);
            (!same).then(|| PeerChange {
                peer: p.region.clone(),
                now,
                via: p.via.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::mesh_status::{ObservedLink, ObservedLinks};
    use super::*;

    fn mesh() -> MeshConfig {
        MeshConfig::from_yaml(
            "region: eu\nserviceCenter: {pair: 'http://a'}\nroaming: {pair: 'http://b'}\npeers:\n  - {region: us, endpoint: 'http://us'}\n  - {region: ap, endpoint: 'http://ap', enabled: false}\n",
        )
        .unwrap()
    }

    fn condition<'a>(status: &'a RegionStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// What one reconcile found besides its workloads, which are all ready.
    struct Found<'a> {
        observed: &'a Observation,
        storage: &'a StorageState,
        identity: &'a CertificateState,
    }

    impl Default for Found<'_> {
        fn default() -> Self {
            Found {
                observed: &Observation::Pending,
                storage: &StorageState::NoVolume,
                identity: &CertificateState::NotUsed,
            }
        }
    }

    /// The status after a reconcile of generation `generation` that applied
    /// every object of [`mesh`] with every pod ready, and found `found`.
    fn all_applied(
        generation: i64,
        found: Found<'_>,
        previous: Option<&RegionStatus>,
        now: Timestamp,
    ) -> RegionStatus {
        let applied = Applied {
            service_center_ready: 1,
            service_center_wanted: 1,
            roaming_ready: 1,
            roaming_wanted: 1,
            pruned: None,
        };
        let mesh = mesh();
        let outcome = Outcome::Applied {
            applied: &applied,
            mesh: &mesh,
            observed: found.observed,
            storage: found.storage,
            identity: found.identity,
        };
        status(Some(generation), outcome, previous, now)
    }

    #[test]
    fn ready_when_both_workloads_are_and_the_transition_time_is_kept() {
        let mesh = mesh();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let waiting = Applied {
            service_center_ready: 0,
            service_center_wanted: 1,
            roaming_ready: 0,
            roaming_wanted: 2,
            pruned: None,
        };
        let first = status(
            Some(1),
            Outcome::Applied {
                applied: &waiting,
                mesh: &mesh,
                observed: &Observation::Pending,
                storage: &StorageState::NoVolume,
                identity: &CertificateState::NotUsed,
            },
            None,
            t0,
        );
        assert_eq!(condition(&first, "Ready").status, "False");
        assert_eq!(condition(&first, "Progressing").status, "True");
        assert_eq!(condition(&first, "MeshConfigured").status, "True");
        assert_eq!(first.peers.len(), 2);
        assert!(
            first.peers.iter().all(|p| p.state.is_none()),
            "no state until the roaming system reports one"
        );

        let same = status(
            Some(1),
            Outcome::Applied {
                applied: &waiting,
                mesh: &mesh,
                observed: &Observation::Pending,
                storage: &StorageState::NoVolume,
                identity: &CertificateState::NotUsed,
            },
            Some(&first),
            t1,
        );
        assert_eq!(same, first, "nothing changed, so the status is identical");

        let done = Applied {
            service_center_ready: 1,
            service_center_wanted: 1,
            roaming_ready: 2,
            roaming_wanted: 2,
            pruned: None,
        };
        let ready = status(
            Some(1),
            Outcome::Applied {
                applied: &done,
                mesh: &mesh,
                observed: &Observation::Pending,
                storage: &StorageState::NoVolume,
                identity: &CertificateState::NotUsed,
            },
            Some(&first),
            t1,
        );
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert_eq!(condition(&ready, "Ready").last_transition_time, Time(t1));
        assert_eq!(ready.roaming.ready_replicas, 2);
    }

    /// On PostgreSQL the service center has several replicas: the Region is
    /// Ready once all of them are, and the status counts what is ready.
    #[test]
    fn every_service_center_replica_counts_towards_ready() {
        let mesh = mesh();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let at = |service_center_ready: i32, previous: Option<&RegionStatus>| {
            let applied = Applied {
                service_center_ready,
                service_center_wanted: 3,
                roaming_ready: 1,
                roaming_wanted: 1,
                pruned: None,
            };
            status(
                Some(1),
                Outcome::Applied {
                    applied: &applied,
                    mesh: &mesh,
                    observed: &Observation::Pending,
                    storage: &StorageState::NoVolume,
                    identity: &CertificateState::NotUsed,
                },
                previous,
                t0,
            )
        };
        let partly = at(2, None);
        assert_eq!(partly.service_center.ready_replicas, 2);
        let ready = condition(&partly, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "ReplicasNotReady")
        );
        assert_eq!(ready.message, "service center 2/3 ready, roaming 1/1 ready");
        let all = at(3, Some(&partly));
        assert_eq!(all.service_center.ready_replicas, 3);
        assert_eq!(condition(&all, "Ready").status, "True");
        assert_eq!(
            condition(&all, "Ready").message,
            "service center 3/3 ready, roaming 1/1 ready"
        );
    }

    #[test]
    fn reported_links_fill_the_peers_and_each_change_is_named_once() {
        let since = Timestamp::from_second(5_000).unwrap();
        let link = |state, via: &[&str], rtt| ObservedLink {
            state,
            via: via.iter().map(|s| (*s).to_owned()).collect(),
            rtt_millis: rtt,
            since,
        };
        let with = |observed: &Observation, previous: Option<&RegionStatus>| {
            let found = Found {
                observed,
                ..Found::default()
            };
            all_applied(1, found, previous, since)
        };
        let at = |links: &ObservedLinks, previous: Option<&RegionStatus>| {
            with(&Observation::Reported(links.clone()), previous)
        };
        let up: ObservedLinks = [
            ("us".to_owned(), link(LinkState::Up, &[], Some(80))),
            ("ap".to_owned(), link(LinkState::Down, &[], None)),
        ]
        .into();
        let first = at(&up, None);
        let us = first.peers.iter().find(|p| p.region == "us").unwrap();
        assert_eq!(
            (us.state, us.rtt_millis, us.last_transition_time.clone()),
            (Some(LinkState::Up), Some(80), Some(Time(since)))
        );
        let changes = peer_changes(None, &first);
        assert_eq!(changes.len(), 2, "first reports are changes");
        let us = changes.iter().find(|c| c.peer == "us").unwrap();
        assert_eq!(us.note("eu"), "link eu→us is Up, path eu→us");

        assert!(peer_changes(Some(&first), &at(&up, Some(&first))).is_empty());

        let mut detoured = up.clone();
        detoured.insert("us".into(), link(LinkState::Detoured, &["ap"], Some(80)));
        let second = at(&detoured, Some(&first));
        let changes = peer_changes(Some(&first), &second);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].reason(), "LinkDetoured");
        assert_eq!(
            changes[0].note("eu"),
            "link eu→us is Detoured, path eu→ap→us"
        );

        let mut rerouted = detoured.clone();
        rerouted.insert(
            "us".into(),
            link(LinkState::Detoured, &["sa", "ap"], Some(80)),
        );
        let third = at(&rerouted, Some(&second));
        assert_eq!(
            peer_changes(Some(&second), &third)[0].note("eu"),
            "link eu→us is Detoured, path eu→sa→ap→us",
            "a new path is a change too"
        );
        let ap = peer_changes(None, &third)
            .into_iter()
            .find(|c| c.peer == "ap")
            .unwrap();
        assert_eq!(
            (ap.reason(), ap.note("eu").as_str()),
            ("LinkDown", "link eu→ap is Down, no path")
        );

        // A restarted operator that has not polled yet keeps what is written;
        // an unreachable roaming system leaves no state.
        let kept = with(&Observation::Pending, Some(&third));
        assert_eq!(kept.peers, third.peers);
        assert!(peer_changes(Some(&third), &kept).is_empty());
        let lost = with(&Observation::Unreachable("refused".into()), Some(&third));
        assert!(lost.peers.iter().all(|p| p.state.is_none()));
        let unknown = peer_changes(Some(&third), &lost);
        assert_eq!(unknown.len(), 2, "each peer no longer reported is a change");
        assert_eq!(
            (unknown[0].reason(), unknown[0].is_warning()),
            ("LinkUnknown", true)
        );
        assert!(
            unknown[0]
                .note("eu")
                .ends_with("eu's roaming system does not report it")
        );
        assert!(
            peer_changes(Some(&lost), &lost).is_empty(),
            "still unreported is no change"
        );
    }

    #[test]
    fn link_state_known_says_whether_the_roaming_system_answers() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let at = |observed: &Observation, previous: Option<&RegionStatus>, now| {
            let found = Found {
                observed,
                ..Found::default()
            };
            all_applied(1, found, previous, now)
        };
        let known = |s: &RegionStatus| {
            let c = condition(s, "LinkStateKnown");
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let fresh = at(&Observation::Pending, None, t(1));
        assert_eq!(known(&fresh).0, "Unknown");
        assert_eq!(known(&fresh).1, "NotPolledYet");

        let lost = at(
            &Observation::Unreachable("cannot poll: refused".into()),
            Some(&fresh),
            t(2),
        );
        assert_eq!(
            known(&lost),
            (
                "False".into(),
                "LinkStateUnknown".into(),
                "cannot poll: refused".into()
            )
        );
        assert_eq!(
            condition(&lost, "Ready").status,
            "True",
            "an unpolled roaming system does not make the Region unready"
        );
        // A restarted operator that has not polled yet keeps the condition.
        let restarted = at(&Observation::Pending, Some(&lost), t(3));
        assert_eq!(restarted, lost);

        let polled = at(
            &Observation::Reported(ObservedLinks::new()),
            Some(&restarted),
            t(4),
        );
        assert_eq!(known(&polled).0, "True");
        assert_eq!(known(&polled).1, "LinkStateReported");
        assert_eq!(
            condition(&polled, "LinkStateKnown").last_transition_time,
            Time(t(4))
        );
        let again = at(
            &Observation::Reported(ObservedLinks::new()),
            Some(&polled),
            t(5),
        );
        assert_eq!(again, polled, "a steady poll writes nothing new");
    }

    #[test]
    fn a_link_is_observed_from_its_first_local_region() {
        let spec = |a: &str, b: &str| RegionLinkSpec {
            regions: vec![a.into(), b.into()],
            enabled: true,
            cost: None,
        };
        assert_eq!(link_observer(&spec("us", "eu"), |_| true), Some("eu"));
        assert_eq!(link_observer(&spec("us", "eu"), |r| r == "us"), Some("us"));
        assert_eq!(link_observer(&spec("us", "eu"), |_| false), None);
        let peer = PeerStatus {
            region: "us".into(),
            state: Some(LinkState::Detoured),
            via: vec!["ap".into()],
            rtt_millis: None,
            last_transition_time: None,
        };
        let status = link_status("eu", &peer).unwrap();
        assert_eq!(
            (status.state, status.via, status.observed_from.as_deref()),
            (Some(LinkState::Detoured), vec!["ap".to_owned()], Some("eu"))
        );
        let unreported = PeerStatus {
            state: None,
            ..peer
        };
        assert_eq!(link_status("eu", &unreported), None);
    }

    #[test]
    fn storage_resized_follows_the_data_volume_and_a_refusal_degrades_the_region() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let at = |storage: &StorageState, previous: Option<&RegionStatus>, now| {
            let found = Found {
                storage,
                ..Found::default()
            };
            all_applied(2, found, previous, now)
        };
        let view = |s: &RegionStatus, type_: &str| {
            let c = condition(s, type_);
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let triple = |status: &str, reason: &str, message: &str| {
            (status.to_owned(), reason.to_owned(), message.to_owned())
        };

        let sized = StorageState::Sized { size: "1Gi".into() };
        let first = at(&sized, None, t(1));
        assert_eq!(
            view(&first, "StorageResized"),
            triple(
                "True",
                "SizeMatchesSpec",
                "the data claims have spec.serviceCenter.storage.size (1Gi)"
            )
        );
        assert_eq!(storage_event(None, &sized), None);

        let why = "spec.serviceCenter.storage.size: cannot grow 1Gi to 2Gi: StorageClass \"standard\" does not allow volume expansion";
        let refused = StorageState::Refused(why.into());
        let second = at(&refused, Some(&first), t(2));
        assert_eq!(
            view(&second, "StorageResized"),
            triple("False", "StorageResizeRefused", why)
        );
        assert_eq!(
            view(&second, "Degraded"),
            triple("True", "StorageResizeRefused", why)
        );
        assert_eq!(
            view(&second, "Ready").0,
            "True",
            "the region still serves on the volume it has"
        );
        assert_eq!(
            storage_event(Some(&first), &refused),
            Some((true, "StorageResizeRefused", why.to_owned()))
        );
        assert_eq!(
            storage_event(Some(&second), &refused),
            None,
            "the same refusal is recorded once"
        );
        let shrink = StorageState::Refused("cannot shrink".into());
        assert!(
            storage_event(Some(&second), &shrink).is_some(),
            "a new reason is"
        );

        let growing = "spec.serviceCenter.storage.size: claim data-eu-service-center-0 requests 2Gi and has 1Gi so far";
        let resizing = StorageState::Resizing(growing.into());
        let third = at(&resizing, Some(&second), t(3));
        assert_eq!(
            view(&third, "StorageResized"),
            triple("False", "StorageResizing", growing)
        );
        assert_eq!(
            view(&third, "Progressing"),
            triple("True", "StorageResizing", growing)
        );
        assert_eq!(
            view(&third, "Degraded"),
            triple("False", "AsExpected", "every object is applied")
        );
        assert_eq!(
            condition(&third, "StorageResized").last_transition_time,
            Time(t(2)),
            "still False: the transition time stays"
        );
        assert_eq!(storage_event(Some(&second), &resizing), None);

        let done = StorageState::Sized { size: "2Gi".into() };
        let fourth = at(&done, Some(&third), t(4));
        assert_eq!(view(&fourth, "StorageResized").0, "True");
        assert_eq!(view(&fourth, "Progressing").1, "RolloutComplete");
        assert_eq!(
            storage_event(Some(&third), &done),
            Some((
                false,
                "StorageResized",
                "the data claims have spec.serviceCenter.storage.size (2Gi)".to_owned()
            ))
        );
        assert_eq!(storage_event(Some(&fourth), &done), None, "once");

        // Storage removed from the spec: the condition goes.
        let none = at(&StorageState::NoVolume, Some(&fourth), t(5));
        assert!(none.conditions.iter().all(|c| c.type_ != "StorageResized"));
    }

    #[test]
    fn identity_issued_follows_the_certificate_and_only_with_an_issuer() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let at = |identity: &CertificateState, previous: Option<&RegionStatus>, now| {
            let found = Found {
                identity,
                ..Found::default()
            };
            all_applied(1, found, previous, now)
        };
        let view = |s: &RegionStatus, type_: &str| {
            let c = condition(s, type_);
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        let why = "cert-manager has not issued Certificate eu-tls yet: Ready=False (DoesNotExist: Issuing certificate as Secret does not exist)";
        let pending = at(&CertificateState::NotReady(why.into()), None, t(1));
        assert_eq!(
            view(&pending, IDENTITY_ISSUED),
            ("False".into(), "CertManagerNotReady".into(), why.into())
        );
        assert_eq!(
            view(&pending, "Progressing"),
            ("True".into(), "CertManagerNotReady".into(), why.into()),
            "the pods wait for the Secret"
        );
        let issued_message = "cert-manager issued Certificate eu-tls into Secret eu-tls";
        let issued = at(
            &CertificateState::Ready(issued_message.into()),
            Some(&pending),
            t(2),
        );
        assert_eq!(
            view(&issued, IDENTITY_ISSUED),
            (
                "True".into(),
                "CertManagerIssued".into(),
                issued_message.into()
            )
        );
        assert_eq!(view(&issued, "Progressing").1, "RolloutComplete");
        let again = at(
            &CertificateState::Ready(issued_message.into()),
            Some(&issued),
            t(3),
        );
        assert_eq!(again, issued, "an issued identity writes nothing new");
        // Back to the mesh CA Secret: the condition goes.
        let own = at(&CertificateState::NotUsed, Some(&issued), t(4));
        assert!(own.conditions.iter().all(|c| c.type_ != IDENTITY_ISSUED));
    }

    #[test]
    fn an_invalid_region_is_degraded_with_the_reason() {
        let s = status(
            Some(2),
            Outcome::Invalid("spec.cluster: empty"),
            None,
            Timestamp::from_second(1).unwrap(),
        );
        let degraded = condition(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(degraded.message, "spec.cluster: empty");
        assert_eq!(s.observed_generation, Some(2));
    }
}
