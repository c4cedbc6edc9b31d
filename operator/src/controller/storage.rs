//! Growing a Region's data-center volume when `spec.serviceCenter.storage.size`
//! changes.
//!
//! The service center is a StatefulSet whose volume claim template is sized
//! by the spec, and Kubernetes forbids changing a StatefulSet's
//! `volumeClaimTemplates`. So the size is changed where the data is, on each
//! claim the StatefulSet made (`data-<region>-service-center-<ordinal>`):
//!
//! - **Growing**, where the claim's StorageClass has `allowVolumeExpansion:
//!   true`: the claim's `spec.resources.requests.storage` is patched, and the
//!   cluster's resizer grows the volume in place: no pod is deleted, no data
//!   moves. `StorageResized` is `False` (`StorageResizing`) until the claim's
//!   `status.capacity` reaches the new size.
//! - **Refused** otherwise (the class does not allow it, the claim's class
//!   cannot be read, or the size shrinks): nothing is changed, everything
//!   else of the Region is applied, and `StorageResized` is `False`
//!   (`StorageResizeRefused`) with a message naming the field and why.
//!
//! **The StatefulSet keeps the claim template it was created with.** The
//! alternative, re-creating the StatefulSet with `propagationPolicy: Orphan`
//! so that its template carries the new size, was rejected: between the
//! delete and the create the pod runs with no controller: an operator
//! stopped there (a crash, a lost lease) leaves it orphaned, and a delete
//! sent without the orphan policy would take the pod down with it. Keeping
//! the template deletes nothing (the operator deletes a StatefulSet only
//! when its Region's data center moves to PostgreSQL: `prune`). The
//! template's size only matters when the StatefulSet creates a claim (its
//! first, or one an admin deleted); such a claim starts at the template's
//! size and the next reconcile grows it like any other. `kubectl get statefulset` shows the
//! first size; the claims and the Region's status show the real one.

use std::cmp::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use meridian_crds::{Region, quantity};

use super::Error;
use super::apply::FIELD_MANAGER;
use super::build;

/// The field whose change this module carries out.
pub const SIZE_FIELD: &str = "spec.serviceCenter.storage.size";

/// How soon a Region with a resize in progress or refused is looked at
/// again: the operator watches neither claims nor StorageClasses (its RBAC
/// only gets them), so it polls while something is pending.
pub const RECHECK: Duration = Duration::from_secs(10);

/// Whether a claim's StorageClass lets the claim grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassExpansion {
    /// `allowVolumeExpansion: true`.
    Allowed,
    /// The class does not set `allowVolumeExpansion: true`.
    NotAllowed { class: String },
    /// The claim names no class, or it cannot be read: why.
    Unknown(String),
}

/// What to do with one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It already has the size (in whatever unit it is written).
    Unchanged,
    /// Patch its request to the new size.
    Expand,
    /// Change nothing; the message names the field and why.
    Refuse(String),
}

/// The decision for a claim that requests `old` when the spec asks for `new`,
/// given what its StorageClass allows. Sizes compare as amounts, so `1Gi`
/// and `1024Mi` are the same size.
pub fn decide(old: &str, new: &str, class: &ClassExpansion) -> Decision {
    let order = match quantity::compare(old, new) {
        Ok(order) => order,
        Err(err) => {
            return Decision::Refuse(format!(
                "{SIZE_FIELD}: cannot compare {old} with {new}: {err}"
            ));
        }
    };
    match order {
        Ordering::Equal => Decision::Unchanged,
        Ordering::Greater => Decision::Refuse(format!(
            "{SIZE_FIELD}: cannot shrink {old} to {new}: volumes cannot shrink"
        )),
        Ordering::Less => match class {
            ClassExpansion::Allowed => Decision::Expand,
            ClassExpansion::NotAllowed { class } => Decision::Refuse(format!(
                "{SIZE_FIELD}: cannot grow {old} to {new}: StorageClass {class:?} does not allow volume expansion"
            )),
            ClassExpansion::Unknown(why) => {
                Decision::Refuse(format!("{SIZE_FIELD}: cannot grow {old} to {new}: {why}"))
            }
        },
    }
}

/// The data volume's state, for the `StorageResized` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageState {
    /// No `spec.serviceCenter.storage`: an emptyDir, nothing to size.
    NoVolume,
    /// Every existing claim requests and has the spec's size.
    Sized { size: String },
    /// A claim is growing (or waits to be Bound to grow): which, how far.
    Resizing(String),
    /// A resize the operator does not make; nothing was changed.
    Refused(String),
}

/// What [`check`] found and did.
pub struct Checked {
    pub state: StorageState,
    /// One note per claim whose request was patched, for an Event.
    pub expanded: Vec<String>,
}

impl Checked {
    /// Nothing to size: no volume, nothing done.
    pub fn no_volume() -> Self {
        Self {
            state: StorageState::NoVolume,
            expanded: Vec::new(),
        }
    }
}

/// Sets the size of each claim template of `desired` to that of the same
/// template in `live`, the StatefulSet as it is: the template stays as it was
/// created (see the module's comment), whatever the spec says now.
pub fn keep_claim_template_sizes(desired: &mut StatefulSet, live: &StatefulSet) {
    let Some(live_templates) = live.spec.volume_claim_templates.as_ref() else {
        return;
    };
    for template in desired.spec.volume_claim_templates.iter_mut().flatten() {
        let live_size = live_templates
            .iter()
            .find(|t| t.metadata.name == template.metadata.name)
            .and_then(requested_size);
        let desired_size = template
            .spec
            .as_mut()
            .and_then(|s| s.resources.as_mut())
            .and_then(|r| r.requests.as_mut())
            .and_then(|r| r.get_mut("storage"));
        if let (Some(live_size), Some(desired_size)) = (live_size, desired_size) {
            desired_size.0 = live_size.to_owned();
        }
    }
}

/// A claim's (or claim template's) `spec.resources.requests.storage`.
fn requested_size(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.as_str())
}

/// A claim's `status.capacity.storage`, once it is provisioned.
fn capacity(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .status
        .as_ref()?
        .capacity
        .as_ref()?
        .get("storage")
        .map(|q| q.0.as_str())
}

fn is_bound(claim: &PersistentVolumeClaim) -> bool {
    claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

/// Whether a claim that already requests `wanted` is still growing towards
/// it: Bound with a `status.capacity` below `wanted`. The message says so.
pub fn still_growing(name: &str, capacity: Option<&str>, wanted: &str) -> Option<String> {
    let capacity = capacity?;
    let below = quantity::compare(capacity, wanted).ok()? == Ordering::Less;
    below.then(|| format!("{SIZE_FIELD}: claim {name} requests {wanted} and has {capacity} so far"))
}

/// Keeps the live StatefulSet's claim template in `desired`, then takes
/// each claim of the Region's service center to the spec's size where its
/// StorageClass allows, and says how far that is. Only reads fail it:
/// a refused resize is a state, not an error.
pub async fn check(
    client: &Client,
    region: &Region,
    namespace: &str,
    desired: &mut StatefulSet,
) -> Result<Checked, Error> {
    let Some(storage) = &region.spec.service_center.storage else {
        return Ok(Checked::no_volume());
    };
    let wanted = storage.size.as_str();
    let code = region.metadata.name.clone().unwrap_or_default();
    let sts_name = build::service_center_name(&code);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let live = statefulsets
        .get_opt(&sts_name)
        .await
        .map_err(|source| Error::Read {
            kind: "StatefulSet",
            name: format!("{namespace}/{sts_name}"),
            source,
        })?;
    if let Some(live) = &live {
        keep_claim_template_sizes(desired, live);
    }

    // Claims outlive their StatefulSet (and a deleted Region), so they are
    // looked at whether or not the StatefulSet exists.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let replicas = desired.spec.replicas.unwrap_or(1);
    let mut refused = Vec::<String>::new();
    let mut growing = Vec::<String>::new();
    let mut expanded = Vec::new();
    for ordinal in 0..replicas {
        let name = build::data_claim_name(&code, ordinal);
        let claim = claims.get_opt(&name).await.map_err(|source| Error::Read {
            kind: "PersistentVolumeClaim",
            name: format!("{namespace}/{name}"),
            source,
        })?;
        let Some(claim) = claim else {
            continue; // not made yet: the StatefulSet makes it at the spec's size
        };
        let Some(old) = requested_size(&claim) else {
            continue;
        };
        let class = match quantity::compare(old, wanted) {
            Ok(Ordering::Less) => class_expansion(client, &claim, &name).await,
            // Not growing: the class does not matter.
            _ => ClassExpansion::Allowed,
        };
        match decide(old, wanted, &class) {
            Decision::Unchanged => {
                growing.extend(still_growing(&name, capacity(&claim), wanted));
            }
            Decision::Refuse(message) => refused.push(message),
            // Kubernetes grows only Bound claims; a Pending one is looked at
            // again until it is.
            Decision::Expand if !is_bound(&claim) => growing.push(format!(
                "{SIZE_FIELD}: claim {name} is not Bound yet; it grows from {old} to {wanted} once it is"
            )),
            Decision::Expand => {
                let patch = serde_json::json!({
                    "spec": {"resources": {"requests": {"storage": wanted}}}
                });
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match claims.patch(&name, &params, &Patch::Merge(&patch)).await {
                    Ok(claim) => {
                        tracing::info!(claim = %name, from = old, to = wanted, "growing a data claim");
                        expanded.push(format!(
                            "growing claim {name} from {old} to {wanted} ({SIZE_FIELD})"
                        ));
                        growing.extend(still_growing(&name, capacity(&claim), wanted));
                    }
                    // The API server's admission has the last word (for
                    // example on a class changed meanwhile): nothing changed.
                    Err(err) => refused.push(format!(
                        "{SIZE_FIELD}: cannot grow {old} to {wanted}: the API server refused to change claim {name}: {err}"
                    )),
                }
            }
        }
    }
    refused.dedup();
    let state = if !refused.is_empty() {
        StorageState::Refused(refused.join("; "))
    } else if !growing.is_empty() {
        StorageState::Resizing(growing.join("; "))
    } else {
        StorageState::Sized {
            size: wanted.to_owned(),
        }
    };
    Ok(Checked { state, expanded })
}

/// Whether the StorageClass of `claim` (named `name`) lets it grow.
async fn class_expansion(
    client: &Client,
    claim: &PersistentVolumeClaim,
    name: &str,
) -> ClassExpansion {
    let class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|c| !c.is_empty());
    let Some(class) = class else {
        return ClassExpansion::Unknown(format!(
            "claim {name} names no StorageClass, so it cannot be expanded"
        ));
    };
    match Api::<StorageClass>::all(client.clone())
        .get_opt(class)
        .await
    {
        Ok(Some(sc)) if sc.allow_volume_expansion == Some(true) => ClassExpansion::Allowed,
        Ok(Some(_)) => ClassExpansion::NotAllowed {
            class: class.to_owned(),
        },
        Ok(None) => ClassExpansion::Unknown(format!("StorageClass {class:?} does not exist")),
        Err(err) => ClassExpansion::Unknown(format!("cannot read StorageClass {class:?}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NOT_ALLOWED: fn() -> ClassExpansion = || ClassExpansion::NotAllowed {
        class: "standard".into(),
    };

    #[test]
    fn growing_where_the_class_allows_expands() {
        for (old, new) in [
            ("1Gi", "2Gi"),
            ("1Gi", "2G"),
            ("1024Mi", "1.5Gi"),
            ("1G", "1Gi"),
        ] {
            assert_eq!(
                decide(old, new, &ClassExpansion::Allowed),
                Decision::Expand,
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn the_same_size_in_another_unit_is_unchanged_whatever_the_class() {
        for (old, new) in [
            ("1Gi", "1Gi"),
            ("1Gi", "1024Mi"),
            ("1024Mi", "1Gi"),
            ("1G", "1000M"),
        ] {
            for class in [
                ClassExpansion::Allowed,
                NOT_ALLOWED(),
                ClassExpansion::Unknown("x".into()),
            ] {
                assert_eq!(decide(old, new, &class), Decision::Unchanged, "{old} {new}");
            }
        }
    }

    #[test]
    fn growing_where_the_class_does_not_allow_it_is_refused_naming_the_class() {
        assert_eq!(
            decide("1Gi", "2Gi", &NOT_ALLOWED()),
            Decision::Refuse(
                "spec.serviceCenter.storage.size: cannot grow 1Gi to 2Gi: StorageClass \"standard\" does not allow volume expansion".into()
            )
        );
        assert_eq!(
            decide(
                "1Gi",
                "2G",
                &ClassExpansion::Unknown("StorageClass \"gone\" does not exist".into())
            ),
            Decision::Refuse(
                "spec.serviceCenter.storage.size: cannot grow 1Gi to 2G: StorageClass \"gone\" does not exist".into()
            )
        );
    }

    #[test]
    fn shrinking_is_refused_whatever_the_class() {
        for (old, new) in [("2Gi", "1Gi"), ("2Gi", "2G"), ("1Gi", "1023Mi")] {
            for class in [ClassExpansion::Allowed, NOT_ALLOWED()] {
                assert_eq!(
                    decide(old, new, &class),
                    Decision::Refuse(format!(
                        "spec.serviceCenter.storage.size: cannot shrink {old} to {new}: volumes cannot shrink"
                    ))
                );
            }
        }
    }

    #[test]
    fn a_size_that_is_not_a_quantity_is_refused() {
        let Decision::Refuse(message) = decide("1GB", "2Gi", &ClassExpansion::Allowed) else {
            panic!("not refused");
        };
        assert!(
            message.starts_with(
                "spec.serviceCenter.storage.size: cannot compare 1GB with 2Gi: \"1GB\" is not a quantity"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_claim_grows_until_its_capacity_reaches_the_size() {
        assert_eq!(
            still_growing("data-eu-service-center-0", Some("1Gi"), "2Gi").as_deref(),
            Some(
                "spec.serviceCenter.storage.size: claim data-eu-service-center-0 requests 2Gi and has 1Gi so far"
            )
        );
        assert_eq!(still_growing("c", Some("2Gi"), "2Gi"), None);
        assert_eq!(still_growing("c", Some("2048Mi"), "2Gi"), None);
        assert_eq!(still_growing("c", Some("10Gi"), "2Gi"), None, "rounded up");
        assert_eq!(still_growing("c", None, "2Gi"), None, "not provisioned yet");
    }

    fn sts_with_claim_size(size: &str) -> StatefulSet {
        StatefulSet {
            spec: StatefulSetSpec {
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(build::DATA_VOLUME.into()),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_owned(),
                                Quantity(size.into()),
                            )])),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn template_size(sts: &StatefulSet) -> &str {
        requested_size(&sts.spec.volume_claim_templates.as_ref().unwrap()[0]).unwrap()
    }

    #[test]
    fn the_statefulset_keeps_the_claim_template_it_was_created_with() {
        let live = sts_with_claim_size("1Gi");
        let mut desired = sts_with_claim_size("2Gi");
        keep_claim_template_sizes(&mut desired, &live);
        assert_eq!(template_size(&desired), "1Gi");

        // The live text, even where the spec writes the same size otherwise:
        // the template is then exactly as it is.
        let mut same = sts_with_claim_size("1024Mi");
        keep_claim_template_sizes(&mut same, &live);
        assert_eq!(template_size(&same), "1Gi");

        // A StatefulSet without claim templates changes nothing.
        let mut desired = sts_with_claim_size("2Gi");
        keep_claim_template_sizes(&mut desired, &StatefulSet::default());
        assert_eq!(template_size(&desired), "2Gi");
    }
}
