//! The Region's status: conditions with reasons and messages, ready replica
//! counts and the peer list. Built by a pure function; a condition keeps its
//! transition time while its status stays the same, so an unchanged world
//! writes an unchanged status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use meridian_crds::{LinkState, PeerStatus, RegionStatus, WorkloadStatus};
use meridian_node::mesh::MeshConfig;

use super::apply::Applied;

/// What one reconcile found.
pub enum Outcome<'a> {
    /// Every object was applied.
    Applied {
        applied: &'a Applied,
        mesh: &'a MeshConfig,
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
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
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
    match outcome {
        Outcome::Applied { applied, mesh } => {
            let ready = applied.service_center_ready >= 1
                && applied.roaming_ready >= applied.roaming_wanted;
            let counts = format!(
                "service center {}/1 ready, roaming {}/{} ready",
                applied.service_center_ready, applied.roaming_ready, applied.roaming_wanted
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
            set(
                "Progressing",
                !ready,
                if ready {
                    "RolloutComplete"
                } else {
                    "RollingOut"
                },
                counts,
            );
            set(
                "Degraded",
                false,
                "AsExpected",
                "every object is applied".into(),
            );
            set(
                "MeshConfigured",
                true,
                "PeersConfigured",
                format!("{} peers configured", mesh.peers.len()),
            );
            next.service_center = WorkloadStatus {
                ready_replicas: applied.service_center_ready,
            };
            next.roaming = WorkloadStatus {
                ready_replicas: applied.roaming_ready,
            };
            next.peers = mesh
                .peers
                .iter()
                .map(|p| PeerStatus {
                    region: p.region.clone(),
                    state: if p.enabled {
                        LinkState::Up
                    } else {
                        LinkState::Down
                    },
                    via: Vec::new(),
                    rtt_millis: None,
                })
                .collect();
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
    next.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    next
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn ready_when_both_workloads_are_and_the_transition_time_is_kept() {
        let mesh = mesh();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let waiting = Applied {
            service_center_ready: 0,
            roaming_ready: 0,
            roaming_wanted: 2,
        };
        let first = status(
            Some(1),
            Outcome::Applied {
                applied: &waiting,
                mesh: &mesh,
            },
            None,
            t0,
        );
        assert_eq!(condition(&first, "Ready").status, "False");
        assert_eq!(condition(&first, "Progressing").status, "True");
        assert_eq!(condition(&first, "MeshConfigured").status, "True");
        assert_eq!(first.peers.len(), 2);
        assert!(matches!(
            first.peers.iter().find(|p| p.region == "ap").unwrap().state,
            LinkState::Down
        ));

        let same = status(
            Some(1),
            Outcome::Applied {
                applied: &waiting,
                mesh: &mesh,
            },
            Some(&first),
            t1,
        );
        assert_eq!(same, first, "nothing changed, so the status is identical");

        let done = Applied {
            service_center_ready: 1,
            roaming_ready: 2,
            roaming_wanted: 2,
        };
        let ready = status(
            Some(1),
            Outcome::Applied {
                applied: &done,
                mesh: &mesh,
            },
            Some(&first),
            t1,
        );
        assert_eq!(condition(&ready, "Ready").status, "True");
        assert_eq!(condition(&ready, "Ready").last_transition_time, Time(t1));
        assert_eq!(ready.roaming.ready_replicas, 2);
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
