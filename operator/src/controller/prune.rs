//! Removes the service center's objects of the kind a Region no longer
//! uses, when `spec.serviceCenter.dataCenter.type` switches. On SQLite the
//! service center is a StatefulSet. On PostgreSQL it is a Deployment with a
//! PodDisruptionBudget. All three are named `<region>-service-center`
//! (see `build::service_center`); PostgreSQL's replicas also have the
//! headless Service `<region>-service-center-pods` (see
//! `build::service_center_pods_service`), which goes with them. Server-side apply never removes an
//! object, so the other kind's is deleted here, and only when:
//! - the Region is its controller, so an object someone else made under the
//!   name is left alone;
//! - its uid is still the one read, a precondition of the delete, so an
//!   object made again meanwhile is not hit.
//!
//! The delete is in the background: the pods go with their workload. The
//! StatefulSet's claims stay, as Kubernetes keeps them, so switching back to
//! SQLite finds its data again. Nothing moves data between the two backends.
//!
//! It runs before the new workload is applied. The old pods then leave the
//! Service's endpoints while the new ones start, so clients are not served
//! from two data centers holding different data for longer than that.
//! The budget goes before its Deployment, and is applied after it, so a
//! reconcile stopped half way never leaves a budget without its Deployment.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Error;
use super::build::{Desired, ServiceCenterWorkload, service_center_pods_name};

/// Deletes the service-center objects of the other kind than `desired`'s
/// that the Region (`desired`'s owner) controls; returns what it deleted and
/// why, for one Event (kube's Recorder would fold a second Event of the
/// same reason into the first, note and all).
pub async fn other_kind(client: &Client, desired: &Desired) -> Result<Option<String>, Error> {
    let meta = &desired.service_center_service.metadata;
    let (Some(namespace), Some(name), Some(owner)) = (
        meta.namespace.as_deref(),
        meta.name.as_deref(),
        meta.owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true)),
    ) else {
        return Ok(None);
    };
    let mut deleted = Vec::new();
    let mut pods_service = None;
    let why = match &desired.service_center {
        ServiceCenterWorkload::StatefulSet(_) => {
            if delete_owned::<PodDisruptionBudget>(client, namespace, name, &owner.uid).await? {
                deleted.push("PodDisruptionBudget");
            }
            if delete_owned::<Deployment>(client, namespace, name, &owner.uid).await? {
                deleted.push("Deployment");
            }
            let pods = service_center_pods_name(&desired.mesh.region);
            if delete_owned::<Service>(client, namespace, &pods, &owner.uid).await? {
                pods_service = Some(pods);
            }
            "the data center is on SQLite now (a StatefulSet of one pod)"
        }
        ServiceCenterWorkload::Deployment { .. } => {
            if delete_owned::<StatefulSet>(client, namespace, name, &owner.uid).await? {
                deleted.push("StatefulSet");
            }
            "the data center is on PostgreSQL now (a Deployment); the SQLite claims are kept"
        }
    };
    let mut what = Vec::new();
    if !deleted.is_empty() {
        what.push(format!("{} {name}", deleted.join(" and ")));
    }
    if let Some(pods) = pods_service {
        what.push(format!("Service {pods}"));
    }
    Ok((!what.is_empty()).then(|| format!("deleted {}: {why}", what.join(" and "))))
}

/// Deletes `namespace/name` of kind `K` if `owner_uid` is its controller;
/// whether it did.
async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let live = api.get_opt(name).await.map_err(|source| Error::Read {
        kind,
        name: format!("{namespace}/{name}"),
        source,
    })?;
    let Some(live) = live else {
        return Ok(false);
    };
    let owned = live
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    if !owned {
        tracing::warn!(%kind, %name, %namespace, "not deleting an object the Region does not control");
        return Ok(false);
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {
            tracing::info!(%kind, %name, %namespace, "deleted the service center's workload of the other data center kind");
            Ok(true)
        }
        // Gone already, or replaced since the read (the uid precondition):
        // the next reconcile looks again.
        Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => Ok(false),
        Err(source) => Err(Error::Delete {
            kind,
            name: name.to_owned(),
            source,
        }),
    }
}
