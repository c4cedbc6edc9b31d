//! Meridian's Kubernetes API types: [`Region`] and [`RegionLink`] (group `meridian.dev`,
//! version `v1alpha1`), their CRDs, their validation, loading them from manifests, and
//! comparing the quantities they hold.

pub mod manifest;
pub mod quantity;
pub mod region;
pub mod region_link;
pub mod validate;

use kube::CustomResourceExt;

pub use region::{
    BandwidthSpec, DataCenterSpec, DataCenterType, PeerServiceSpec, PeerServiceType, PeerStatus,
    PostgresSpec, PostgresTlsSpec, Region, RegionSpec, RegionStatus, RoamingSpec,
    ServiceCenterSpec, StorageSpec, WorkloadStatus,
};
pub use region_link::{LinkState, RegionLink, RegionLinkSpec, RegionLinkStatus};
pub use validate::is_region_code;

/// The API group of Meridian's resources.
pub const GROUP: &str = "meridian.dev";
/// The API version of Meridian's resources.
pub const VERSION: &str = "v1alpha1";

const HEADER: &str = "\
# Meridian's CustomResourceDefinitions: Region and RegionLink.
# Generated from the Rust types in crds/src; do not edit by hand. Regenerate with:
#   cargo run -p meridian-operator -- crd > crds/crds.yaml
";

/// Both CRDs as one multi-document YAML text, Region first, as committed in
/// `crds/crds.yaml` and printed by `meridian-operator crd`.
pub fn crd_yaml() -> String {
    let mut out = String::from(HEADER);
    for crd in [Region::crd(), RegionLink::crd()] {
        out.push_str("---\n");
        // A CRD is plain data (strings, maps, lists), which always serializes.
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}
