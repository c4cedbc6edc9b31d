//! Whether a region serves: its service center answers a client call and its
//! roaming system answers a status call, both over TLS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_node::client::Client;
use meridian_node::proto::peer_api::admin_client::AdminClient;
use meridian_node::proto::peer_api::{MeshStatusReply, MeshStatusRequest};
use meridian_node::transport::{self, Dial};
use meridian_node::trust::Credentials;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How local mode reaches the regions it runs: the CA for the client API,
/// and its tool certificate for the roaming systems.
pub struct Access {
    pub client_tls: Arc<rustls::ClientConfig>,
    pub tool: Arc<Credentials>,
}

pub async fn wait(
    code: &str,
    client_url: String,
    peer_url: String,
    access: &Access,
) -> anyhow::Result<()> {
    let attempt = async {
        loop {
            if serves(code, &client_url, &peer_url, access).await {
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

async fn serves(code: &str, client_url: &str, peer_url: &str, access: &Access) -> bool {
    let Ok(mut client) = Client::connect(client_url, Some(access.client_tls.clone())).await else {
        return false;
    };
    // Any answer from the business center (here: "log in first") means it serves.
    match client.get_group("readiness@probe").await {
        Err(status) if status.code() == tonic::Code::Unauthenticated => {}
        _ => return false,
    }
    mesh_status(code, peer_url, access).await.is_ok()
}

/// How region `code`'s roaming system, at `peer_url`, sees its links, asked
/// with local mode's tool certificate (as `meridian mesh status` does).
pub async fn mesh_status(
    code: &str,
    peer_url: &str,
    access: &Access,
) -> Result<MeshStatusReply, String> {
    let dial = Dial::Region {
        credentials: access.tool.clone(),
        region: code.to_owned(),
    };
    let channel = transport::channel(peer_url, dial).map_err(|e| e.to_string())?;
    let status = AdminClient::new(channel)
        .mesh_status(MeshStatusRequest {})
        .await
        .map_err(|e| e.message().to_owned())?;
    Ok(status.into_inner())
}
