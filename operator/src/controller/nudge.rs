//! Telling a Region's running pods that their mesh configuration changed, so
//! that the kubelet refreshes it now rather than at its next periodic sync.
//!
//! The mesh configuration reaches the nodes as a file: the ConfigMap
//! `<region>-mesh` is mounted into the service center's and the roaming
//! system's pods at `/etc/meridian/mesh.yaml`, and the nodes re-read it every
//! 250 ms (`meridian_node::mesh::config::watch_file`). But the kubelet writes
//! a changed ConfigMap into a pod's volume only when it syncs that pod, and
//! without an event it syncs a running pod only every `syncFrequency`
//! (default one minute) plus jitter. Left alone, a RegionLink edit (a link
//! taken down for maintenance, a new cost) would reach the nodes up to a
//! minute or more later.
//!
//! The kubelet syncs a pod at once when the pod object changes (kubelet
//! 1.37, `pkg/kubelet`): its API source counts a change of annotations as an
//! `UPDATE` (`config.podsDifferSemantically`), which goes to the pod's worker;
//! every pod sync calls the volume manager's `WaitForAttachAndMount`, which
//! calls `ReprocessPod`; the desired-state populator then processes the pod's
//! volumes again and marks those whose plugin `RequiresRemount` (ConfigMap
//! volumes do) for a remount, and the volume reconciler (a 100 ms loop)
//! rewrites the file from the kubelet's watch-based ConfigMap cache. The file
//! is fresh within about a second of the annotation.
//!
//! So after applying the ConfigMap, the operator lists the Region's pods by
//! the labels it puts on them ([`super::build::labels`]) and gives each pod
//! whose annotation [`ANNOTATION`] is not the [`mesh_hash`] of the applied
//! content that annotation, with a JSON merge patch on
//! `metadata.annotations` alone (so the operator owns no other field of the
//! pod). A pod that already carries it is not written, so a reconcile that
//! changes nothing writes no pod.
//!
//! The hash goes on the running pods, **never in the pod template**: a
//! template change rolls the StatefulSet and the Deployment, restarting every
//! pod for what the nodes pick up live.
//!
//! None of this is needed for correctness: a pod that cannot be annotated
//! (being deleted, a conflict, no RBAC for pods) still gets the new file at
//! the kubelet's next periodic sync. So failures here are logged and never
//! fail the reconcile.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::apply::FIELD_MANAGER;

/// The annotation on each of a Region's running pods: the [`mesh_hash`] of
/// the mesh configuration the operator last told it about.
pub const ANNOTATION: &str = "meridian.dev/mesh-config";

/// The pod components that mount the mesh configuration.
const COMPONENTS: [&str; 2] = ["service-center", "roaming"];

/// A short fingerprint of a mesh configuration's text: the first 16 hex
/// digits (64 bits) of its SHA-256, as `sha256sum` prints it.
pub fn mesh_hash(mesh_yaml: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, mesh_yaml.as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The label selector of `region`'s service center and roaming pods.
pub fn selector(region: &str) -> String {
    format!(
        "meridian.dev/region={region},app.kubernetes.io/managed-by=meridian-operator,app.kubernetes.io/component in ({})",
        COMPONENTS.join(",")
    )
}

/// The names of the pods among `pods` to annotate with `hash`: those whose
/// annotation differs (or is missing), skipping pods that are being deleted
/// or have finished, which will not run the configuration anyway.
pub fn to_annotate<'a>(pods: &'a [Pod], hash: &str) -> Vec<&'a str> {
    pods.iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter(|pod| pod.annotations().get(ANNOTATION).map(String::as_str) != Some(hash))
        .filter_map(|pod| pod.metadata.name.as_deref())
        .collect()
}

/// Annotates `region`'s running pods in `namespace` with the hash of
/// `mesh_yaml`, the content just applied to its ConfigMap, where they do not
/// carry it yet. Never fails: see the module's documentation.
pub async fn pods(client: &Client, namespace: &str, region: &str, mesh_yaml: &str) {
    let hash = mesh_hash(mesh_yaml);
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = match api
        .list(&ListParams::default().labels(&selector(region)))
        .await
    {
        Ok(list) => list.items,
        Err(err) => {
            tracing::warn!(%region, %err, "cannot list the region's pods to refresh their mesh configuration; the kubelet refreshes it at its next sync");
            return;
        }
    };
    let stale = to_annotate(&listed, &hash);
    if stale.is_empty() {
        return;
    }
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION: &hash}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let mut annotated = 0;
    for name in &stale {
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => annotated += 1,
            // Deleted or replaced meanwhile: its successor mounts the new file.
            Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                tracing::debug!(%region, pod = %name, reason = %status.reason, "pod not annotated with its mesh configuration");
            }
            Err(err) => {
                tracing::warn!(%region, pod = %name, %err, "cannot annotate a pod with its mesh configuration; the kubelet refreshes it at its next sync");
            }
        }
    }
    if annotated > 0 {
        tracing::info!(%region, mesh_config = %hash, pods = annotated, "told the region's pods of a new mesh configuration");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn pod(name: &str, annotation: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: annotation
                    .map(|a| BTreeMap::from([(ANNOTATION.to_owned(), a.to_owned())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_hash_is_the_start_of_the_contents_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223...
        assert_eq!(mesh_hash("abc"), "ba7816bf8f01cfea");
        assert_eq!(mesh_hash("region: eu\n").len(), 16);
        assert_ne!(mesh_hash("region: eu\n"), mesh_hash("region: eu \n"));
        assert_eq!(mesh_hash("region: eu\n"), mesh_hash("region: eu\n"));
    }

    #[test]
    fn only_running_pods_with_another_or_no_hash_are_annotated() {
        let hash = mesh_hash("new");
        let old = mesh_hash("old");
        let mut terminating = pod("terminating", Some(&old));
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let mut failed = pod("evicted", None);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut pending = pod("pending", None);
        pending.status.as_mut().unwrap().phase = Some("Pending".into());
        let pods = vec![
            pod("current", Some(&hash)),
            pod("stale", Some(&old)),
            pod("unannotated", None),
            terminating,
            failed,
            pending,
        ];
        assert_eq!(
            to_annotate(&pods, &hash),
            vec!["stale", "unannotated", "pending"]
        );
        assert!(
            to_annotate(&pods[..1], &hash).is_empty(),
            "nothing changed, nothing written"
        );
    }

    #[test]
    fn the_selector_names_the_regions_service_center_and_roaming_pods() {
        assert_eq!(
            selector("eu"),
            "meridian.dev/region=eu,app.kubernetes.io/managed-by=meridian-operator,app.kubernetes.io/component in (service-center,roaming)"
        );
        // The labels the operator puts on them match it.
        for component in COMPONENTS {
            let labels = super::super::build::labels("eu", component);
            assert_eq!(labels["meridian.dev/region"], "eu");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "meridian-operator");
            assert_eq!(labels["app.kubernetes.io/component"], component);
        }
    }
}
