//! Whether a region serves: its service center answers a client call and its
//! roaming system answers a heartbeat.

use std::time::Duration;

use anyhow::Context;
use meridian_node::client::Client;
use meridian_node::proto::peer_api::Ping;
use meridian_node::proto::peer_api::business_client::BusinessClient;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn wait(code: &str, client_url: String, peer_url: String) -> anyhow::Result<()> {
    let attempt = async {
        loop {
            if serves(&client_url, &peer_url).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, attempt)
        .await
        .with_context(|| {
            format!("region {code} did not start serving within {READY_TIMEOUT:?}; see its logs")
        })
}

async fn serves(client_url: &str, peer_url: &str) -> bool {
    let Ok(mut client) = Client::connect(client_url).await else {
        return false;
    };
    // Any answer from the business center (here: "log in first") means it serves.
    match client.get_group("readiness@probe").await {
        Err(status) if status.code() == tonic::Code::Unauthenticated => {}
        _ => return false,
    }
    let Ok(mut roaming) = BusinessClient::connect(peer_url.to_owned()).await else {
        return false;
    };
    roaming.heartbeat(Ping::default()).await.is_ok()
}
