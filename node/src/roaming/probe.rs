//! Heartbeats: every interval, each enabled peer link is probed with the
//! link state this region knows, and the answer's link state is merged.

use std::time::Instant;

use super::Roaming;
use super::business::adverts_to_wire;
use crate::proto::peer_api::Ping;
use crate::proto::peer_api::business_client::BusinessClient;

pub async fn run(roaming: Roaming) {
    let policy = roaming.links.policy;
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_config = None;
    loop {
        tick.tick().await;
        let config = roaming.config();
        if last_config.as_ref() != Some(&config) {
            roaming.links.configure(&config);
            last_config = Some(config.clone());
        }
        // Each heartbeat runs on its own, so a slow answer does not delay
        // the next one and a cut is noticed within the policy's bound.
        for peer in config.peers.iter().filter(|p| p.enabled) {
            let roaming = roaming.clone();
            let config = config.clone();
            let (region, endpoint) = (peer.region.clone(), peer.endpoint.clone());
            let tasks = roaming.tasks.clone();
            tasks.spawn_until_stopped(async move {
                let rtt = probe(&roaming, &region, &endpoint).await;
                roaming.links.probed(&config, &region, rtt);
            });
        }
    }
}

/// One heartbeat; the round-trip time, or `None` when it went unanswered.
async fn probe(roaming: &Roaming, peer: &str, endpoint: &str) -> Option<std::time::Duration> {
    let channel = roaming.channel(endpoint, peer).ok()?;
    let ping = Ping {
        source: roaming.region(),
        sent_at_micros: crate::now_ms() * 1000,
        link_states: adverts_to_wire(roaming.links.adverts()),
    };
    let started = Instant::now();
    let reply = tokio::time::timeout(
        roaming.links.policy.timeout,
        BusinessClient::new(channel).heartbeat(ping),
    )
    .await;
    match reply {
        Ok(Ok(pong)) => {
            let rtt = started.elapsed();
            let pong = pong.into_inner();
            if pong.region != peer {
                tracing::warn!(%peer, answered = %pong.region, "a different region answered the heartbeat");
                return None;
            }
            roaming.merge_link_states(pong.link_states);
            Some(rtt)
        }
        _ => None,
    }
}
