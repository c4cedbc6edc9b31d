//! The NetworkPolicy of a Region's pods: the pair ports (the service center
//! and its roaming system calling each other) only from the same Region's
//! pods; the client and peer ports from anywhere (they are TLS, the peer
//! port mutual), and the probe and metrics ports from anywhere (kubelet and
//! Prometheus, which speak no mesh TLS).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::build::{
    CLIENT_PORT, METRICS_PORT, PEER_PORT, PROBE_PORT, ROAMING_PAIR_PORT, SERVICE_CENTER_PAIR_PORT,
};

/// Selects every pod of `region`.
fn region_pods(region: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            "meridian.dev/region".to_owned(),
            region.to_owned(),
        )])),
        ..Default::default()
    }
}

fn tcp(ports: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        ports
            .iter()
            .map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(*p)),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
    )
}

/// `metadata` names and owns it; it applies to `region`'s pods.
pub fn network_policy(metadata: ObjectMeta, region: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(region_pods(region)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(region_pods(region)),
                        ..Default::default()
                    }]),
                    ports: tcp(&[SERVICE_CENTER_PAIR_PORT, ROAMING_PAIR_PORT]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: tcp(&[CLIENT_PORT, PEER_PORT, PROBE_PORT, METRICS_PORT]),
                },
            ]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| match p.port {
                Some(IntOrString::Int(n)) => n,
                _ => panic!("a numbered port"),
            })
            .collect()
    }

    #[test]
    fn pair_ports_are_open_only_to_the_regions_own_pods() {
        let policy = network_policy(ObjectMeta::default(), "eu");
        let spec = policy.spec.unwrap();
        assert_eq!(spec.pod_selector, Some(region_pods("eu")));
        let rules = spec.ingress.unwrap();
        let pair = rules
            .iter()
            .find(|r| ports(r).contains(&SERVICE_CENTER_PAIR_PORT))
            .unwrap();
        assert_eq!(
            ports(pair),
            vec![SERVICE_CENTER_PAIR_PORT, ROAMING_PAIR_PORT]
        );
        let from = pair.from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].pod_selector, Some(region_pods("eu")));
        assert!(from[0].namespace_selector.is_none(), "this namespace only");
        let open: Vec<i32> = rules
            .iter()
            .filter(|r| r.from.is_none())
            .flat_map(ports)
            .collect();
        assert!(!open.contains(&SERVICE_CENTER_PAIR_PORT));
        assert!(!open.contains(&ROAMING_PAIR_PORT));
        assert!(open.contains(&PEER_PORT) && open.contains(&CLIENT_PORT));
    }
}
