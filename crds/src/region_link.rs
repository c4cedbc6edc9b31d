//! The `RegionLink` custom resource. Every pair of regions in a namespace is linked by
//! default (the full peer mesh of the source design); a `RegionLink` only sets the
//! properties of one pair's link.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{MAX_REGIONS, REGION_CODE_MAX_LEN, REGION_CODE_PATTERN};

/// Desired properties of the link between two regions.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[allow(
    clippy::duplicated_attributes,
    reason = "every printcolumn(...) repeats keys such as type_"
)]
#[kube(
    group = "meridian.dev",
    version = "v1alpha1",
    kind = "RegionLink",
    namespaced,
    shortname = "rl",
    status = "RegionLinkStatus",
    derive = "PartialEq",
    doc = "Properties of the link between two regions of the mesh.",
    printcolumn(
        name = "Regions",
        type_ = "string",
        json_path = ".spec.regions",
        description = "The two regions this link joins"
    ),
    printcolumn(
        name = "Enabled",
        type_ = "boolean",
        json_path = ".spec.enabled",
        description = "Whether the link may carry traffic"
    ),
    printcolumn(
        name = "Cost",
        type_ = "integer",
        json_path = ".spec.cost",
        description = "Route weight; empty means the measured round-trip time"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Up, Detoured or Down"
    ),
    printcolumn(
        name = "RTT-ms",
        type_ = "integer",
        json_path = ".status.rttMillis",
        description = "Last measured round-trip time in milliseconds"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RegionLinkSpec {
    /// The two region codes this link joins. The order does not matter.
    #[schemars(length(min = 2, max = 2), inner(length(min = 1, max = REGION_CODE_MAX_LEN)))]
    #[x_kube(
        validation = Rule::new(format!("self.all(r, r.matches('{REGION_CODE_PATTERN}'))"))
            .message("spec.regions: each entry must be a region code (lowercase letters, digits and '-', at most 32 characters, starting and ending with a letter or digit)"),
        validation = Rule::new("size(self) != 2 || self[0] != self[1]")
            .message("spec.regions must name two different regions")
    )]
    pub regions: Vec<String>,

    /// `false` takes the link down, for maintenance or drills; traffic detours.
    #[serde(default = "default_enabled")]
    pub enabled: bool,

    /// Route weight of the link. Unset means the measured round-trip time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cost: Option<u32>,
}

fn default_enabled() -> bool {
    true
}

impl RegionLinkSpec {
    /// The two regions in a canonical order (smaller code first), or `None` when the
    /// spec does not name exactly two regions.
    pub fn pair(&self) -> Option<(&str, &str)> {
        match self.regions.as_slice() {
            [a, b] if a <= b => Some((a, b)),
            [a, b] => Some((b, a)),
            _ => None,
        }
    }
}

/// State of a link between two regions, as seen from one end.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// The direct link carries traffic.
    Up,
    /// The direct link is down; traffic is relayed through other regions.
    Detoured,
    /// No path at all.
    Down,
}

/// Observed state of the link, written by the operator from the roaming system of
/// one of its two regions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegionLinkStatus {
    /// `Up`, `Detoured` or `Down`; absent until first observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,

    /// The regions traffic is relayed through, in order; empty on the direct link.
    /// A loop-free path passes at most every other region of the mesh.
    #[serde(default)]
    #[schemars(length(max = MAX_REGIONS - 2))]
    pub via: Vec<String>,

    /// Round-trip time of the direct link in milliseconds, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_millis: Option<u64>,

    /// The region whose roaming system reported this view of the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_from: Option<String>,

    /// When `state` or `via` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}
