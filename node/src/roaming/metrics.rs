//! The roaming system's metrics, read from its links at each scrape (every
//! link's state, path in use, round-trip time and last change), and `/mesh`,
//! the same as JSON. Names are documented in docs/ARCHITECTURE.md §9.

use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::Roaming;
use super::links::{LinkView, PeerStatus};

/// Registers the link metrics of `roaming` in `registry`.
pub fn register(registry: &mut Registry, roaming: Roaming) {
    registry.register_collector(Box::new(LinkCollector(roaming)));
}

/// `/mesh`: every link as JSON.
pub fn router(roaming: Roaming) -> Router {
    Router::new()
        .route(
            "/mesh",
            get(|State(r): State<Roaming>| async move {
                mesh_json(&r.region(), &r.links.status(&r.config()))
            }),
        )
        .with_state(roaming)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    peer: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    peer: String,
    path: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

struct LinkCollector(Roaming);

impl std::fmt::Debug for LinkCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LinkCollector")
            .field(&self.0.region())
            .finish()
    }
}

impl Collector for LinkCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        encode_links(&self.0.links.status(&self.0.config()), encoder)
    }
}

fn encode_links(links: &[PeerStatus], mut encoder: DescriptorEncoder) -> std::fmt::Result {
    let state = Family::<StateLabels, Gauge>::default();
    let rtt = Family::<PeerLabels, F64Gauge>::default();
    let path = Family::<PathLabels, Gauge>::default();
    let changed = Family::<PeerLabels, F64Gauge>::default();
    for link in links {
        for view in LinkView::ALL {
            let labels = StateLabels {
                peer: link.peer.clone(),
                state: view.as_str(),
            };
            state
                .get_or_create(&labels)
                .set(i64::from(link.view == view));
        }
        let peer = PeerLabels {
            peer: link.peer.clone(),
        };
        if let Some(measured) = link.rtt {
            rtt.get_or_create(&peer).set(measured.as_secs_f64());
        }
        let labels = PathLabels {
            peer: link.peer.clone(),
            path: link.path.join("→"),
        };
        path.get_or_create(&labels).set(1);
        changed
            .get_or_create(&peer)
            .set(link.last_change_ms as f64 / 1000.0);
    }
    let help = [
        (
            "link_state",
            "Whether the link to a peer is in this state (Up, Detoured, Down).",
        ),
        (
            "link_rtt_seconds",
            "Smoothed round-trip time of the direct link to a peer.",
        ),
        ("link_path_info", "The path in use to a peer."),
        (
            "link_last_change_timestamp_seconds",
            "When the state of the link to a peer last changed.",
        ),
    ];
    let metrics: [&dyn EncodeMetric; 4] = [&state, &rtt, &path, &changed];
    for ((name, help), metric) in help.into_iter().zip(metrics) {
        let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
        metric.encode(descriptor)?;
    }
    Ok(())
}

fn mesh_json(region: &str, links: &[PeerStatus]) -> String {
    let links: Vec<serde_json::Value> = links
        .iter()
        .map(|l| {
            json!({
                "peer": l.peer, "state": l.view.as_str(), "path": l.path, "cost": l.cost,
                "rttMillis": l.rtt.map(|r| r.as_secs_f64() * 1000.0), "enabled": l.enabled,
                "lastChangeMs": l.last_change_ms,
            })
        })
        .collect();
    json!({ "region": region, "links": links }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<PeerStatus>);

    impl Collector for Fixed {
        fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
            encode_links(&self.0, encoder)
        }
    }

    #[test]
    fn metrics_name_every_link_state_and_path() {
        let links = vec![PeerStatus {
            peer: "us".into(),
            view: LinkView::Detoured,
            path: vec!["eu".into(), "ap".into(), "us".into()],
            cost: 20,
            rtt: Some(std::time::Duration::from_micros(1500)),
            enabled: false,
            last_change_ms: 2_000,
        }];
        let mut registry = crate::telemetry::metrics::registry("eu");
        registry.register_collector(Box::new(Fixed(links.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "meridian_link_state{region=\"eu\",peer=\"us\",state=\"Detoured\"} 1",
            "meridian_link_state{region=\"eu\",peer=\"us\",state=\"Up\"} 0",
            "meridian_link_path_info{region=\"eu\",peer=\"us\",path=\"eu→ap→us\"} 1",
            "meridian_link_rtt_seconds{region=\"eu\",peer=\"us\"} 0.0015",
            "meridian_link_last_change_timestamp_seconds{region=\"eu\",peer=\"us\"} 2.0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let json: serde_json::Value = serde_json::from_str(&mesh_json("eu", &links)).unwrap();
        assert_eq!(json["links"][0]["state"], "Detoured");
    }
}
