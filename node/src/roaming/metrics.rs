//! The roaming system's `/metrics` (Prometheus text) and `/mesh` (JSON):
//! every link's state, path in use, round-trip time and last change.

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;

use super::Roaming;
use super::links::{LinkView, PeerStatus};

/// Serves `/metrics` and `/mesh` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, roaming: Roaming) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(r): State<Roaming>| async move {
                prometheus(&r.region(), &r.links.status(&r.config()))
            }),
        )
        .route(
            "/mesh",
            get(|State(r): State<Roaming>| async move {
                mesh_json(&r.region(), &r.links.status(&r.config()))
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(roaming);
    axum::serve(listener, app).await
}

fn prometheus(region: &str, links: &[PeerStatus]) -> String {
    let mut out = String::new();
    out.push_str("# HELP meridian_link_state Whether the link to a peer is in this state (Up, Detoured, Down).\n# TYPE meridian_link_state gauge\n");
    for link in links {
        for view in [LinkView::Up, LinkView::Detoured, LinkView::Down] {
            let on = u8::from(link.view == view);
            let _ = writeln!(
                out,
                "meridian_link_state{{region=\"{region}\",peer=\"{}\",state=\"{}\"}} {on}",
                link.peer,
                view.as_str()
            );
        }
    }
    out.push_str("# HELP meridian_link_rtt_milliseconds Smoothed round-trip time of the direct link.\n# TYPE meridian_link_rtt_milliseconds gauge\n");
    for link in links.iter().filter(|l| l.rtt.is_some()) {
        let rtt = link
            .rtt
            .map(|r| r.as_secs_f64() * 1000.0)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "meridian_link_rtt_milliseconds{{region=\"{region}\",peer=\"{}\"}} {rtt:.3}",
            link.peer
        );
    }
    out.push_str("# HELP meridian_link_path_info The path in use to a peer.\n# TYPE meridian_link_path_info gauge\n");
    for link in links {
        let _ = writeln!(
            out,
            "meridian_link_path_info{{region=\"{region}\",peer=\"{}\",path=\"{}\"}} 1",
            link.peer,
            link.path.join("→")
        );
    }
    out.push_str("# HELP meridian_link_last_change_timestamp_seconds When the link's state last changed.\n# TYPE meridian_link_last_change_timestamp_seconds gauge\n");
    for link in links {
        let _ = writeln!(
            out,
            "meridian_link_last_change_timestamp_seconds{{region=\"{region}\",peer=\"{}\"}} {:.3}",
            link.peer,
            link.last_change_ms as f64 / 1000.0
        );
    }
    out
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
        let text = prometheus("eu", &links);
        assert!(
            text.contains("meridian_link_state{region=\"eu\",peer=\"us\",state=\"Detoured\"} 1"),
            "{text}"
        );
        assert!(text.contains("meridian_link_state{region=\"eu\",peer=\"us\",state=\"Up\"} 0"));
        assert!(text.contains("path=\"eu→ap→us\"} 1"));
        assert!(text.contains("meridian_link_rtt_milliseconds{region=\"eu\",peer=\"us\"} 1.500"));
        let json: serde_json::Value = serde_json::from_str(&mesh_json("eu", &links)).unwrap();
        assert_eq!(json["links"][0]["state"], "Detoured");
    }
}
