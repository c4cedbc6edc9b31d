//! Writes the desired objects with server-side apply, one field manager.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use super::build::{Desired, ServiceCenterWorkload};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "meridian-operator";

pub fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

async fn apply<K>(client: &Client, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    // k8s-openapi serializes apiVersion and kind, as apply needs.
    api.patch(&name, &params(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            kind: <K as k8s_openapi::Resource>::KIND,
            name,
            source,
        })
}

/// Applies `status` as the status of `object` (a Region or RegionLink).
pub async fn apply_status<K>(
    client: &Client,
    object: &K,
    status: &impl Serialize,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(
        client.clone(),
        object.meta().namespace.as_deref().unwrap_or_default(),
    );
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&name, &params(), &Patch::Apply(&body))
        .await
        .map_err(|source| Error::Status {
            kind: K::kind(&()).into_owned(),
            name,
            source,
        })?;
    Ok(())
}

/// What the apply left in the cluster, for the status.
pub struct Applied {
    /// Ready pods of the service center's workload, whichever kind it is.
    pub service_center_ready: i32,
    /// The replicas that workload asks for.
    pub service_center_wanted: i32,
    pub roaming_ready: i32,
    pub roaming_wanted: i32,
    /// What was deleted because the data center switched kind, for an Event.
    pub pruned: Option<String>,
}

/// Applies every object of a Region: configuration first, so the pods find it,
/// and the Service exposing the peer port to other clusters last. The
/// service center's workload of the other kind goes before its own is
/// applied (see [`super::prune`]).
pub async fn apply_all(client: &Client, desired: &Desired) -> Result<Applied, Error> {
    let config_map = apply(client, &desired.config_map).await?;
    // At once, so that a failure further down does not hold it back: the
    // running pods' kubelets refresh the file now rather than at their next
    // periodic sync. Never fails the reconcile.
    if let (Some(namespace), Some(mesh_yaml)) = (
        config_map.metadata.namespace.as_deref(),
        config_map
            .data
            .as_ref()
            .and_then(|data| data.get(super::build::MESH_FILE)),
    ) {
        super::nudge::pods(client, namespace, &desired.mesh.region, mesh_yaml).await;
    }
    apply(client, &desired.network_policy).await?;
    apply(client, &desired.service_center_service).await?;
    if let Some(pods) = &desired.service_center_pods_service {
        apply(client, pods).await?;
    }
    apply(client, &desired.roaming_service).await?;
    let pruned = super::prune::other_kind(client, desired).await?;
    let (service_center_ready, service_center_wanted) = match &desired.service_center {
        ServiceCenterWorkload::StatefulSet(sts) => {
            let sts = apply(client, sts).await?;
            (
                sts.status.and_then(|s| s.ready_replicas).unwrap_or(0),
                sts.spec.replicas.unwrap_or(1),
            )
        }
        ServiceCenterWorkload::Deployment { deployment, budget } => {
            let deployment = apply(client, deployment).await?;
            apply(client, budget.as_ref()).await?;
            (
                deployment
                    .status
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0),
                deployment.spec.replicas.unwrap_or(1),
            )
        }
    };
    let deployment = apply(client, &desired.roaming).await?;
    // Last: a node port another Service holds fails only this write, and
    // the region still runs for its own users and in-cluster peers.
    apply(client, &desired.roaming_peer_service).await?;
    Ok(Applied {
        service_center_ready,
        service_center_wanted,
        roaming_ready: deployment
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        roaming_wanted: deployment.spec.replicas.unwrap_or(1),
        pruned,
    })
}
