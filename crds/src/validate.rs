//! Validation of Regions and RegionLinks in pure functions.
//!
//! The per-object checks mirror the CRD schema (OpenAPI limits and CEL rules), so that
//! local mode refuses what the apiserver would refuse. [`mesh`] adds the checks that
//! span objects, which the apiserver cannot do.

use std::collections::HashMap;
use std::fmt;

use kube::core::ObjectMeta;

use crate::region::{DataCenterSpec, DataCenterType};
use crate::{Region, RegionLink};

pub use meridian_ids::{REGION_CODE_MAX_LEN, REGION_CODE_PATTERN, is_region_code};
/// A size or rate quantity: a non-negative decimal with an optional SI or binary suffix.
pub const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";
/// Longest `spec.cluster`.
pub const CLUSTER_MAX_LEN: usize = 253;
/// Longest `spec.peerEndpoint`.
pub const PEER_ENDPOINT_MAX_LEN: usize = 512;
/// Longest container image reference.
pub const IMAGE_MAX_LEN: usize = 1024;
/// Longest Kubernetes object name (a DNS subdomain), also used for storage class names.
pub const NAME_MAX_LEN: usize = 253;
/// Lowest `nodePort`: the start of Kubernetes' default node port range
/// (`kube-apiserver --service-node-port-range`, 30000-32767).
pub const NODE_PORT_MIN: i32 = 30000;
/// Highest `nodePort`: the end of Kubernetes' default node port range.
pub const NODE_PORT_MAX: i32 = 32767;
/// Fewest `spec.serviceCenter.maxSubscriptions`: a service center that
/// holds none could not deliver anything live.
pub const SUBSCRIPTIONS_MIN: i32 = 1;
/// Most `spec.serviceCenter.maxSubscriptions`. An idle subscription costs
/// kilobytes of the service center's memory (BENCHMARKS.md measures it),
/// so a million already take many GiB; anything beyond is a typo.
pub const SUBSCRIPTIONS_MAX: i32 = 1_000_000;
/// The namespace of an object whose manifest names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The most Regions one mesh (one namespace) may have. Every pair of regions
/// is linked (a full mesh), so a mesh of `n` regions has `n(n-1)/2` links,
/// each probed from both ends every 500 ms, and every region floods its
/// link state to every other: the work of each roaming system grows with
/// `n` and that of the mesh with `n²`. At 64 that is 2016 links and 63
/// probes a second per region (126 probe messages with their replies); a
/// Region's `status.peers` has at most 63 entries. Local mode, which runs
/// every region on one machine, stops far earlier on memory (it measures
/// it before starting). docs/ARCHITECTURE.md ("Bounds").
pub const MAX_REGIONS: usize = 64;

/// Why a Region beyond [`MAX_REGIONS`] is refused, in local mode's error and
/// the operator's status condition.
pub fn too_many_regions_message(name: &str, position: usize, total: usize, ns: &str) -> String {
    format!(
        "Region {name:?} would be region {position} of {total} in namespace {ns:?}; \
         a mesh has at most {MAX_REGIONS} regions"
    )
}

const REGION_CODE_RULE: &str =
    "is not a region code (lowercase letters, digits and '-', at most 32 characters)";

/// One broken rule: the field path within the object and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, for example `spec.serviceCenter.replicas`.
    pub field: String,
    /// What is wrong, readable on its own.
    pub message: String,
}

impl Violation {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why `spec.serviceCenter.replicas` is 1 unless the data center is on
/// PostgreSQL, in the CRD's CEL rule and in local mode's check.
pub const SERVICE_CENTER_REPLICAS_MESSAGE: &str = "spec.serviceCenter.replicas may be above 1 only with \
     spec.serviceCenter.dataCenter.type postgres: a SQLite data center is one file on one volume \
     that one process writes; use dataCenter.type postgres for several replicas";
/// Why `spec.serviceCenter.storage` is refused on PostgreSQL.
pub const STORAGE_SQLITE_ONLY_MESSAGE: &str = "spec.serviceCenter.storage is the volume of a \
     SQLite data center: it is not allowed with spec.serviceCenter.dataCenter.type postgres, whose \
     data is in PostgreSQL";
/// Why a PostgreSQL data center without `postgres` is refused.
pub const POSTGRES_REQUIRED_MESSAGE: &str = "spec.serviceCenter.dataCenter.postgres is required \
     with type postgres: it names the Secret holding the connection string";
/// Why `postgres` is refused on SQLite.
pub const POSTGRES_ONLY_WITH_POSTGRES_MESSAGE: &str =
    "spec.serviceCenter.dataCenter.postgres is allowed only with type postgres";

/// A Secret's name: a DNS-1123 subdomain (at most [`NAME_MAX_LEN`] characters).
pub const SECRET_NAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key of a Secret's data, as Kubernetes allows them.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// Longest key of a Secret's data.
pub const SECRET_KEY_MAX_LEN: usize = 253;

/// Whether `s` is a size or rate quantity such as `10Gi`, `100M` or `1.5G`
/// (see [`SIZE_PATTERN`]).
pub fn is_size(s: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|suffix| s.strip_suffix(suffix))
        .unwrap_or(s);
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit());
    match number.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(number),
    }
}

/// Whether `s` is a DNS-1123 label (a namespace name).
fn is_dns_label(s: &str) -> bool {
    is_dns_part(s, 63)
}

/// Whether `s` is a DNS-1123 subdomain (what the apiserver requires of most names).
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= NAME_MAX_LEN && s.split('.').all(|label| is_dns_part(label, 63))
}

fn is_dns_part(s: &str, max: usize) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            b.len() <= max
                && alnum(first)
                && alnum(last)
                && b.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

/// The namespace an object lives in: its own, or [`DEFAULT_NAMESPACE`].
pub fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// Checks one Region on its own: the rules of its CRD schema.
pub fn region(region: &Region) -> Vec<Violation> {
    let mut out = Vec::new();
    match region.metadata.name.as_deref() {
        None | Some("") => out.push(Violation::new("metadata.name", "required")),
        Some(name) if !is_region_code(name) => {
            out.push(Violation::new(
                "metadata.name",
                format!("{name:?} {REGION_CODE_RULE}"),
            ));
        }
        Some(_) => {}
    }
    namespace(&region.metadata, &mut out);

    let spec = &region.spec;
    length(
        "spec.cluster",
        Some(&spec.cluster),
        CLUSTER_MAX_LEN,
        &mut out,
    );
    length(
        "spec.peerEndpoint",
        spec.peer_endpoint.as_deref(),
        PEER_ENDPOINT_MAX_LEN,
        &mut out,
    );

    let sc = &spec.service_center;
    replicas("spec.serviceCenter.replicas", sc.replicas, &mut out);
    if sc.replicas > 1 && !sc.on_postgres() {
        out.push(Violation::new(
            "spec.serviceCenter.replicas",
            format!("is {}: {SERVICE_CENTER_REPLICAS_MESSAGE}", sc.replicas),
        ));
    }
    if sc.storage.is_some() && sc.on_postgres() {
        out.push(Violation::new(
            "spec.serviceCenter.storage",
            STORAGE_SQLITE_ONLY_MESSAGE,
        ));
    }
    if let Some(dc) = &sc.data_center {
        data_center(dc, &mut out);
    }
    if let Some(storage) = &sc.storage {
        size(
            "spec.serviceCenter.storage.size",
            Some(&storage.size),
            &mut out,
        );
        length(
            "spec.serviceCenter.storage.storageClassName",
            storage.storage_class_name.as_deref(),
            NAME_MAX_LEN,
            &mut out,
        );
    }
    if let Some(bandwidth) = &sc.bandwidth {
        bandwidth_rates("spec.serviceCenter.bandwidth", bandwidth, &mut out);
    }
    length(
        "spec.serviceCenter.image",
        sc.image.as_deref(),
        IMAGE_MAX_LEN,
        &mut out,
    );
    if let Some(max) = sc.max_subscriptions
        && !(SUBSCRIPTIONS_MIN..=SUBSCRIPTIONS_MAX).contains(&max)
    {
        out.push(Violation::new(
            "spec.serviceCenter.maxSubscriptions",
            format!("must be {SUBSCRIPTIONS_MIN} to {SUBSCRIPTIONS_MAX}, not {max}"),
        ));
    }
    if let Some(tls) = &sc.client_tls
        && !is_dns_subdomain(&tls.secret_name)
    {
        out.push(Violation::new(
            "spec.serviceCenter.clientTls.secretName",
            format!("{:?} is not a Secret name", tls.secret_name),
        ));
    }

    let roaming = &spec.roaming;
    replicas("spec.roaming.replicas", roaming.replicas, &mut out);
    if let Some(bandwidth) = &roaming.bandwidth {
        bandwidth_rates("spec.roaming.bandwidth", bandwidth, &mut out);
    }
    length(
        "spec.roaming.image",
        roaming.image.as_deref(),
        IMAGE_MAX_LEN,
        &mut out,
    );
    if let Some(peer) = &roaming.peer_service
        && let Some(port) = peer.node_port
    {
        let field = "spec.roaming.peerService.nodePort";
        if !peer.type_.has_node_ports() {
            out.push(Violation::new(
                field,
                format!(
                    "is allowed only with type NodePort or LoadBalancer, not {}",
                    peer.type_.as_str()
                ),
            ));
        }
        if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&port) {
            out.push(Violation::new(
                field,
                format!(
                    "must be in {NODE_PORT_MIN}-{NODE_PORT_MAX} (Kubernetes' default node port range), not {port}"
                ),
            ));
        }
    }
    out
}

/// Checks a change to a Region: the transition rules of its CRD schema.
pub fn region_update(old: &Region, new: &Region) -> Vec<Violation> {
    let mut out = Vec::new();
    if old.spec.cluster != new.spec.cluster {
        out.push(Violation::new("spec.cluster", "spec.cluster is immutable"));
    }
    out
}

/// Checks one RegionLink on its own: the rules of its CRD schema.
pub fn region_link(link: &RegionLink) -> Vec<Violation> {
    let mut out = Vec::new();
    match link.metadata.name.as_deref() {
        None | Some("") => out.push(Violation::new("metadata.name", "required")),
        Some(name) if !is_dns_subdomain(name) => out.push(Violation::new(
            "metadata.name",
            format!(
                "{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most {NAME_MAX_LEN} characters)"
            ),
        )),
        Some(_) => {}
    }
    namespace(&link.metadata, &mut out);

    let regions = &link.spec.regions;
    if regions.len() != 2 {
        out.push(Violation::new(
            "spec.regions",
            format!("must name exactly two regions, not {}", regions.len()),
        ));
    }
    for (i, region) in regions.iter().enumerate() {
        if !is_region_code(region) {
            out.push(Violation::new(
                format!("spec.regions[{i}]"),
                format!("{region:?} {REGION_CODE_RULE}"),
            ));
        }
    }
    if let [a, b] = regions.as_slice()
        && a == b
    {
        out.push(Violation::new(
            "spec.regions",
            format!("must name two different regions, not {a:?} twice"),
        ));
    }
    if link.spec.cost == Some(0) {
        out.push(Violation::new("spec.cost", "must be at least 1"));
    }
    out
}

/// Which object of the slices given to [`mesh`] a [`MeshViolation`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectRef {
    /// Index into the Regions.
    Region(usize),
    /// Index into the RegionLinks.
    Link(usize),
}

/// A rule that spans objects, broken by `object`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshViolation {
    /// The object that breaks the rule (for duplicates, the later one).
    pub object: ObjectRef,
    /// The field and what is wrong with it.
    pub violation: Violation,
    /// The other object involved (the first definition of a duplicate, or the object
    /// whose namespace the mesh uses).
    pub conflicts_with: Option<ObjectRef>,
}

/// Checks the rules that span the objects of one mesh: every object in one namespace
/// (that of the first Region), no two Regions or RegionLinks with one name, every link
/// between two existing Regions, at most one link per pair of regions, and at most
/// [`MAX_REGIONS`] Regions (reported once, on the first Region beyond the limit).
pub fn mesh(regions: &[Region], links: &[RegionLink]) -> Vec<MeshViolation> {
    let mut out = Vec::new();
    if let Some(first_beyond) = regions.get(MAX_REGIONS) {
        out.push(MeshViolation {
            object: ObjectRef::Region(MAX_REGIONS),
            violation: Violation::new(
                "metadata.name",
                too_many_regions_message(
                    first_beyond.metadata.name.as_deref().unwrap_or_default(),
                    MAX_REGIONS + 1,
                    regions.len(),
                    namespace_of(&first_beyond.metadata),
                ),
            ),
            conflicts_with: None,
        });
    }
    let objects = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (ObjectRef::Region(i), &r.metadata))
        .chain(
            links
                .iter()
                .enumerate()
                .map(|(i, l)| (ObjectRef::Link(i), &l.metadata)),
        );
    let mut expected: Option<(ObjectRef, &str)> = None;
    for (object, meta) in objects {
        let ns = namespace_of(meta);
        match expected {
            None => expected = Some((object, ns)),
            Some((first, want)) if want != ns => out.push(MeshViolation {
                object,
                violation: Violation::new(
                    "metadata.namespace",
                    format!(
                        "{ns:?} differs from {want:?}; all Regions and RegionLinks of a mesh share one namespace"
                    ),
                ),
                conflicts_with: Some(first),
            }),
            Some(_) => {}
        }
    }

    let mut region_names: HashMap<&str, usize> = HashMap::new();
    for (i, region) in regions.iter().enumerate() {
        let Some(name) = region.metadata.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        if let Some(&first) = region_names.get(name) {
            out.push(MeshViolation {
                object: ObjectRef::Region(i),
                violation: Violation::new(
                    "metadata.name",
                    format!("Region {name:?} is defined more than once"),
                ),
                conflicts_with: Some(ObjectRef::Region(first)),
            });
        } else {
            region_names.insert(name, i);
        }
    }

    let mut link_names: HashMap<&str, usize> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, link) in links.iter().enumerate() {
        if let Some(name) = link.metadata.name.as_deref().filter(|n| !n.is_empty()) {
            if let Some(&first) = link_names.get(name) {
                out.push(MeshViolation {
                    object: ObjectRef::Link(i),
                    violation: Violation::new(
                        "metadata.name",
                        format!("RegionLink {name:?} is defined more than once"),
                    ),
                    conflicts_with: Some(ObjectRef::Link(first)),
                });
            } else {
                link_names.insert(name, i);
            }
        }

        let ns = namespace_of(&link.metadata);
        for (j, region) in link.spec.regions.iter().enumerate() {
            if is_region_code(region) && !region_names.contains_key(region.as_str()) {
                out.push(MeshViolation {
                    object: ObjectRef::Link(i),
                    violation: Violation::new(
                        format!("spec.regions[{j}]"),
                        format!("there is no Region {region:?} in namespace {ns:?}"),
                    ),
                    conflicts_with: None,
                });
            }
        }

        let Some((a, b)) = link.spec.pair().filter(|(a, b)| a != b) else {
            continue;
        };
        if let Some(&first) = pairs.get(&(a, b)) {
            out.push(MeshViolation {
                object: ObjectRef::Link(i),
                violation: Violation::new(
                    "spec.regions",
                    format!("another RegionLink already sets the link between {a:?} and {b:?}"),
                ),
                conflicts_with: Some(ObjectRef::Link(first)),
            });
        } else {
            pairs.insert((a, b), i);
        }
    }
    out
}

/// The Regions of one namespace that are beyond [`MAX_REGIONS`], each with
/// its position (counted from 1): the mesh keeps the Regions created first
/// (by `metadata.creationTimestamp`, then name), so adding one too many
/// never takes down a region that was already serving.
pub fn regions_beyond_limit(regions: &[Region]) -> Vec<(&Region, usize)> {
    let mut ordered: Vec<&Region> = regions.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |r: &&Region| {
            (
                r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                r.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    ordered
        .into_iter()
        .enumerate()
        .skip(MAX_REGIONS)
        .map(|(i, r)| (r, i + 1))
        .collect()
}

fn namespace(meta: &ObjectMeta, out: &mut Vec<Violation>) {
    if let Some(ns) = meta.namespace.as_deref()
        && !is_dns_label(ns)
    {
        out.push(Violation::new(
            "metadata.namespace",
            format!(
                "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63 characters)"
            ),
        ));
    }
}

fn length(field: &str, value: Option<&str>, max: usize, out: &mut Vec<Violation>) {
    match value {
        Some("") => out.push(Violation::new(field, "must not be empty")),
        Some(v) if v.len() > max => out.push(Violation::new(
            field,
            format!("must be at most {max} characters, not {}", v.len()),
        )),
        _ => {}
    }
}

/// `spec.serviceCenter.dataCenter`: the PostgreSQL block with type
/// postgres and only then, and its Secrets' names and keys.
fn data_center(dc: &DataCenterSpec, out: &mut Vec<Violation>) {
    const FIELD: &str = "spec.serviceCenter.dataCenter.postgres";
    match (dc.type_, &dc.postgres) {
        (DataCenterType::Postgres, None) => {
            out.push(Violation::new(FIELD, POSTGRES_REQUIRED_MESSAGE));
        }
        (DataCenterType::Sqlite, Some(_)) => {
            out.push(Violation::new(FIELD, POSTGRES_ONLY_WITH_POSTGRES_MESSAGE));
        }
        _ => {}
    }
    let Some(postgres) = &dc.postgres else {
        return;
    };
    secret_name(&format!("{FIELD}.secretName"), &postgres.secret_name, out);
    secret_key(&format!("{FIELD}.key"), &postgres.key, out);
    if let Some(tls) = &postgres.tls {
        secret_name(
            &format!("{FIELD}.tls.caSecretName"),
            &tls.ca_secret_name,
            out,
        );
        secret_key(&format!("{FIELD}.tls.caKey"), &tls.ca_key, out);
    }
}

fn secret_name(field: &str, name: &str, out: &mut Vec<Violation>) {
    if !is_dns_subdomain(name) {
        out.push(Violation::new(
            field,
            format!("{name:?} is not a Secret name"),
        ));
    }
}

/// Whether `key` may name an entry of a Secret's data ([`SECRET_KEY_PATTERN`]).
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= SECRET_KEY_MAX_LEN
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

fn secret_key(field: &str, key: &str, out: &mut Vec<Violation>) {
    if !is_secret_key(key) {
        out.push(Violation::new(
            field,
            format!(
                "{key:?} is not a Secret key (letters, digits, '-', '.' and '_', at most {SECRET_KEY_MAX_LEN} characters)"
            ),
        ));
    }
}

fn replicas(field: &str, replicas: i32, out: &mut Vec<Violation>) {
    if replicas < 1 {
        out.push(Violation::new(
            field,
            format!("must be at least 1, not {replicas}"),
        ));
    }
}

fn size(field: &str, value: Option<&str>, out: &mut Vec<Violation>) {
    if let Some(v) = value
        && !is_size(v)
    {
        out.push(Violation::new(
            field,
            format!("{v:?} is not a quantity such as 10Gi or 100M"),
        ));
    }
}

fn bandwidth_rates(field: &str, bandwidth: &crate::BandwidthSpec, out: &mut Vec<Violation>) {
    size(
        &format!("{field}.ingress"),
        bandwidth.ingress.as_deref(),
        out,
    );
    size(&format!("{field}.egress"), bandwidth.egress.as_deref(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_yaml(yaml: &str) -> Region {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn link_yaml(yaml: &str) -> RegionLink {
        serde_yaml::from_str(yaml).expect("fixture parses")
    }

    fn fields(violations: &[Violation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    const EU: &str = "
apiVersion: meridian.dev/v1alpha1
kind: Region
metadata: {name: eu, namespace: chat}
spec:
  cluster: default
  serviceCenter:
    replicas: 1
    storage: {size: 10Gi, storageClassName: standard}
    bandwidth: {ingress: 100M, egress: 1.5G}
  roaming: {replicas: 2}
";

    #[test]
    fn sizes() {
        for ok in ["1", "10Gi", "100M", "1.5G", "512Ki", "3k", "0"] {
            assert!(is_size(ok), "{ok:?} should be a size");
        }
        for bad in [
            "", "Gi", "10gi", "-1Gi", "1.Gi", ".5G", "10 Gi", "1e3", "100m",
        ] {
            assert!(!is_size(bad), "{bad:?} should not be a size");
        }
    }

    #[test]
    fn a_good_region_passes() {
        assert_eq!(region(&region_yaml(EU)), vec![]);
    }

    #[test]
    fn defaults_apply_when_parts_are_absent() {
        let r = region_yaml("metadata: {name: ap}\nspec: {cluster: c}\n");
        assert_eq!(r.spec.service_center.replicas, 1);
        assert_eq!(r.spec.roaming.replicas, 1);
        assert_eq!(region(&r), vec![]);
    }

    #[test]
    fn region_name_must_be_a_region_code() {
        let r = region_yaml("metadata: {name: EU}\nspec: {cluster: c}\n");
        assert_eq!(
            region(&r),
            vec![Violation::new(
                "metadata.name",
                "\"EU\" is not a region code (lowercase letters, digits and '-', at most 32 characters)"
            )]
        );
    }

    #[test]
    fn region_name_is_required() {
        let r = region_yaml("metadata: {namespace: chat}\nspec: {cluster: c}\n");
        assert_eq!(
            region(&r),
            vec![Violation::new("metadata.name", "required")]
        );
    }

    #[test]
    fn region_limits() {
        let r = region_yaml(
            "
metadata: {name: eu, namespace: Chat}
spec:
  cluster: ''
  peerEndpoint: ''
  serviceCenter:
    replicas: 0
    storage: {size: ten, storageClassName: ''}
    bandwidth: {ingress: 1x}
    maxSubscriptions: 1000001
    clientTls: {secretName: Not_A_Name}
  roaming: {replicas: -1, image: '', bandwidth: {egress: fast}}
",
        );
        assert_eq!(
            fields(&region(&r)),
            vec![
                "metadata.namespace",
                "spec.cluster",
                "spec.peerEndpoint",
                "spec.serviceCenter.replicas",
                "spec.serviceCenter.storage.size",
                "spec.serviceCenter.storage.storageClassName",
                "spec.serviceCenter.bandwidth.ingress",
                "spec.serviceCenter.maxSubscriptions",
                "spec.serviceCenter.clientTls.secretName",
                "spec.roaming.replicas",
                "spec.roaming.bandwidth.egress",
                "spec.roaming.image",
            ]
        );
    }

    /// eu's service center with `service_center` (flow YAML) as its spec.
    fn service_center(service_center: &str) -> Vec<Violation> {
        region(&region_yaml(&format!(
            "metadata: {{name: eu}}\nspec:\n  cluster: c\n  serviceCenter: {service_center}\n"
        )))
    }

    const PG: &str = "dataCenter: {type: postgres, postgres: {secretName: db-app}}";

    #[test]
    fn several_service_center_replicas_need_postgres() {
        for sqlite in [
            "{replicas: 2}",
            "{replicas: 3, dataCenter: {}}",
            "{replicas: 2, dataCenter: {type: sqlite}}",
        ] {
            let violations = service_center(sqlite);
            assert_eq!(
                fields(&violations),
                vec!["spec.serviceCenter.replicas"],
                "{sqlite}"
            );
            let message = violations[0].to_string();
            assert!(
                message.contains(
                    "a SQLite data center is one file on one volume that one process writes"
                ) && message.contains("dataCenter.type postgres"),
                "{message}"
            );
        }
        assert_eq!(
            fields(&service_center("{replicas: 0}")),
            vec!["spec.serviceCenter.replicas"],
            "at least 1 on any data center"
        );
        assert_eq!(
            fields(&service_center(&format!("{{replicas: 0, {PG}}}"))),
            vec!["spec.serviceCenter.replicas"]
        );
        assert_eq!(service_center("{replicas: 1}"), vec![]);
        assert_eq!(service_center(&format!("{{replicas: 2, {PG}}}")), vec![]);
        assert_eq!(service_center(&format!("{{replicas: 5, {PG}}}")), vec![]);

        // The CRD carries the same rule, with the same message, for the
        // apiserver, on the field it is about.
        let crd = crate::crd_yaml();
        assert!(
            crd.contains("rule: self.replicas == 1 || (has(self.dataCenter)"),
            "no CEL rule on serviceCenter.replicas"
        );
        assert!(crd.contains("fieldPath: .replicas"));
        let flat = crd.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(SERVICE_CENTER_REPLICAS_MESSAGE), "{flat}");
    }

    #[test]
    fn a_data_center_is_sqlite_unless_it_says_postgres() {
        let sc = |yaml: &str| {
            region_yaml(&format!(
                "metadata: {{name: eu}}\nspec: {{cluster: c, serviceCenter: {yaml}}}\n"
            ))
            .spec
            .service_center
        };
        assert!(!sc("{}").on_postgres(), "absent means sqlite");
        let empty = sc("{dataCenter: {}}");
        assert_eq!(
            empty.data_center.as_ref().map(|dc| dc.type_),
            Some(crate::DataCenterType::Sqlite)
        );
        assert!(!empty.on_postgres());
        let pg = sc(&format!("{{{PG}}}"));
        assert!(pg.on_postgres());
        let postgres = pg.postgres().unwrap();
        assert_eq!(postgres.secret_name, "db-app");
        assert_eq!(postgres.key, "uri", "CloudNativePG's key by default");
        assert_eq!(postgres.tls, None);
        let tls = sc(
            "{dataCenter: {type: postgres, postgres: {secretName: a, tls: {caSecretName: db-ca}}}}",
        )
        .postgres()
        .unwrap()
        .tls
        .clone()
        .unwrap();
        assert_eq!(
            (tls.ca_secret_name.as_str(), tls.ca_key.as_str()),
            ("db-ca", "ca.crt")
        );
        assert!(
            serde_yaml::from_str::<Region>(
                "metadata: {name: eu}\nspec: {cluster: c, serviceCenter: {dataCenter: {type: mysql}}}\n"
            )
            .is_err(),
            "an unknown type"
        );
    }

    #[test]
    fn postgres_needs_its_block_and_refuses_storage_and_sqlite_refuses_the_block() {
        let messages = |yaml: &str| {
            service_center(yaml)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            messages("{dataCenter: {type: postgres}}"),
            vec![format!(
                "spec.serviceCenter.dataCenter.postgres: {POSTGRES_REQUIRED_MESSAGE}"
            )]
        );
        assert_eq!(
            messages("{dataCenter: {postgres: {secretName: db-app}}}"),
            vec![format!(
                "spec.serviceCenter.dataCenter.postgres: {POSTGRES_ONLY_WITH_POSTGRES_MESSAGE}"
            )]
        );
        assert_eq!(
            messages("{dataCenter: {type: sqlite, postgres: {secretName: db-app}}}").len(),
            1
        );
        assert_eq!(
            messages(&format!("{{storage: {{size: 1Gi}}, {PG}}}")),
            vec![format!(
                "spec.serviceCenter.storage: {STORAGE_SQLITE_ONLY_MESSAGE}"
            )]
        );
        assert_eq!(
            messages("{storage: {size: 1Gi}, dataCenter: {type: sqlite}}"),
            Vec::<String>::new()
        );
        // Each message names its field for the apiserver too, where the
        // CEL rules carry them.
        let crd = crate::crd_yaml();
        let flat = crd.split_whitespace().collect::<Vec<_>>().join(" ");
        for message in [
            STORAGE_SQLITE_ONLY_MESSAGE,
            POSTGRES_REQUIRED_MESSAGE,
            POSTGRES_ONLY_WITH_POSTGRES_MESSAGE,
        ] {
            assert!(flat.contains(message), "{message}");
        }
    }

    #[test]
    fn postgres_secrets_and_keys_are_bounded_names() {
        let long = "a".repeat(SECRET_KEY_MAX_LEN + 1);
        let v = service_center(&format!(
            "{{dataCenter: {{type: postgres, postgres: {{secretName: Db_App, key: 'a/b', \
             tls: {{caSecretName: '', caKey: {long}}}}}}}}}"
        ));
        assert_eq!(
            fields(&v),
            vec![
                "spec.serviceCenter.dataCenter.postgres.secretName",
                "spec.serviceCenter.dataCenter.postgres.key",
                "spec.serviceCenter.dataCenter.postgres.tls.caSecretName",
                "spec.serviceCenter.dataCenter.postgres.tls.caKey",
            ]
        );
        assert!(
            v[0].to_string().contains("\"Db_App\" is not a Secret name"),
            "{}",
            v[0]
        );
        assert_eq!(
            service_center(
                "{dataCenter: {type: postgres, postgres: {secretName: db-app, key: password_2.txt, \
                 tls: {caSecretName: db.ca, caKey: ca.crt}}}}"
            ),
            vec![]
        );
        // The CRD bounds the same strings.
        let crd = serde_json::to_value(<Region as kube::CustomResourceExt>::crd()).unwrap();
        let postgres = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["serviceCenter"]["properties"]["dataCenter"]["properties"]["postgres"]["properties"];
        for (field, max) in [
            (&postgres["secretName"], NAME_MAX_LEN),
            (&postgres["key"], SECRET_KEY_MAX_LEN),
            (&postgres["tls"]["properties"]["caSecretName"], NAME_MAX_LEN),
            (&postgres["tls"]["properties"]["caKey"], SECRET_KEY_MAX_LEN),
        ] {
            assert_eq!(field["maxLength"], max, "{field}");
            assert_eq!(field["minLength"], 1, "{field}");
            assert!(field["pattern"].is_string(), "{field}");
        }
    }

    #[test]
    fn a_peer_service_may_be_a_node_port_or_a_load_balancer() {
        let r = region_yaml(
            "metadata: {name: eu}\nspec:\n  cluster: c\n  roaming:\n    peerService: {type: NodePort, nodePort: 30701}\n",
        );
        let peer = r.spec.roaming.peer_service.as_ref().unwrap();
        assert_eq!(peer.type_, crate::PeerServiceType::NodePort);
        assert_eq!(peer.node_port, Some(30701));
        assert_eq!(region(&r), vec![]);

        for ok in [
            "{type: LoadBalancer}",
            "{type: LoadBalancer, nodePort: 32767}",
            "{type: NodePort, nodePort: 30000}",
            "{type: NodePort}",
            "{type: ClusterIP}",
            "{}",
        ] {
            let r = region_yaml(&format!(
                "metadata: {{name: eu}}\nspec: {{cluster: c, roaming: {{peerService: {ok}}}}}\n"
            ));
            assert_eq!(region(&r), vec![], "{ok}");
        }
        let r =
            region_yaml("metadata: {name: eu}\nspec: {cluster: c, roaming: {peerService: {}}}\n");
        assert_eq!(
            r.spec.roaming.peer_service.unwrap().type_,
            crate::PeerServiceType::ClusterIp,
            "ClusterIP by default"
        );
    }

    #[test]
    fn a_node_port_needs_a_type_with_node_ports_and_the_default_range() {
        let check = |peer: &str| {
            region(&region_yaml(&format!(
                "metadata: {{name: eu}}\nspec: {{cluster: c, roaming: {{peerService: {peer}}}}}\n"
            )))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            check("{nodePort: 30701}"),
            vec![
                "spec.roaming.peerService.nodePort: is allowed only with type NodePort or LoadBalancer, not ClusterIP"
            ]
        );
        assert_eq!(
            check("{type: ClusterIP, nodePort: 30701}"),
            check("{nodePort: 30701}")
        );
        assert_eq!(
            check("{type: NodePort, nodePort: 7443}"),
            vec![
                "spec.roaming.peerService.nodePort: must be in 30000-32767 (Kubernetes' default node port range), not 7443"
            ]
        );
        assert_eq!(
            check("{type: LoadBalancer, nodePort: 32768}").len(),
            1,
            "one past the range"
        );
        assert_eq!(check("{type: ClusterIP, nodePort: 1}").len(), 2);
        let unknown = serde_yaml::from_str::<Region>(
            "metadata: {name: eu}\nspec: {cluster: c, roaming: {peerService: {type: ExternalName}}}\n",
        );
        assert!(unknown.is_err(), "ExternalName is not a peer Service type");
    }

    #[test]
    fn cluster_is_immutable() {
        let old = region_yaml(EU);
        let mut new = old.clone();
        new.spec.roaming.replicas = 3;
        assert_eq!(region_update(&old, &new), vec![]);
        new.spec.cluster = "elsewhere".into();
        assert_eq!(
            region_update(&old, &new),
            vec![Violation::new("spec.cluster", "spec.cluster is immutable")]
        );
    }

    #[test]
    fn a_good_link_passes() {
        let l = link_yaml("metadata: {name: eu-us}\nspec: {regions: [eu, us], cost: 10}\n");
        assert!(l.spec.enabled, "enabled defaults to true");
        assert_eq!(region_link(&l), vec![]);
        assert_eq!(l.spec.pair(), Some(("eu", "us")));
    }

    #[test]
    fn link_regions_must_be_two_distinct_codes() {
        let same = link_yaml("metadata: {name: x}\nspec: {regions: [eu, eu]}\n");
        assert_eq!(
            region_link(&same),
            vec![Violation::new(
                "spec.regions",
                "must name two different regions, not \"eu\" twice"
            )]
        );

        let three = link_yaml("metadata: {name: x}\nspec: {regions: [eu, us, ap]}\n");
        assert_eq!(fields(&region_link(&three)), vec!["spec.regions"]);

        let bad = link_yaml("metadata: {name: x}\nspec: {regions: [eu, US]}\n");
        assert_eq!(fields(&region_link(&bad)), vec!["spec.regions[1]"]);

        let zero = link_yaml("metadata: {name: x}\nspec: {regions: [eu, us], cost: 0}\n");
        assert_eq!(fields(&region_link(&zero)), vec!["spec.cost"]);

        let unnamed = link_yaml("metadata: {}\nspec: {regions: [eu, us]}\n");
        assert_eq!(fields(&region_link(&unnamed)), vec!["metadata.name"]);
    }

    fn named_region(name: &str, ns: Option<&str>) -> Region {
        let mut r = Region::new(
            name,
            crate::RegionSpec {
                cluster: "default".into(),
                peer_endpoint: None,
                service_center: Default::default(),
                roaming: Default::default(),
            },
        );
        r.metadata.namespace = ns.map(Into::into);
        r
    }

    fn link(name: &str, a: &str, b: &str) -> RegionLink {
        link_yaml(&format!(
            "metadata: {{name: {name}, namespace: chat}}\nspec: {{regions: [{a}, {b}]}}\n"
        ))
    }

    #[test]
    fn a_good_mesh_passes() {
        let regions = [
            named_region("eu", Some("chat")),
            named_region("us", Some("chat")),
            named_region("ap", Some("chat")),
        ];
        let links = [link("eu-us", "eu", "us"), link("us-ap", "ap", "us")];
        assert_eq!(mesh(&regions, &links), vec![]);
    }

    #[test]
    fn mesh_objects_share_one_namespace() {
        let regions = [named_region("eu", None), named_region("us", Some("chat"))];
        let v = mesh(&regions, &[]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].object, ObjectRef::Region(1));
        assert_eq!(v[0].conflicts_with, Some(ObjectRef::Region(0)));
        assert_eq!(
            v[0].violation.to_string(),
            "metadata.namespace: \"chat\" differs from \"default\"; all Regions and RegionLinks of a mesh share one namespace"
        );
    }

    #[test]
    fn mesh_refuses_duplicates_and_unknown_regions() {
        let regions = [
            named_region("eu", Some("chat")),
            named_region("us", Some("chat")),
            named_region("eu", Some("chat")),
        ];
        let links = [
            link("eu-us", "eu", "us"),
            link("us-eu", "us", "eu"),
            link("eu-us", "eu", "ap"),
        ];
        let v = mesh(&regions, &links);
        let summary: Vec<_> = v
            .iter()
            .map(|m| (m.object, m.violation.field.as_str(), m.conflicts_with))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    ObjectRef::Region(2),
                    "metadata.name",
                    Some(ObjectRef::Region(0))
                ),
                (ObjectRef::Link(1), "spec.regions", Some(ObjectRef::Link(0))),
                (
                    ObjectRef::Link(2),
                    "metadata.name",
                    Some(ObjectRef::Link(0))
                ),
                (ObjectRef::Link(2), "spec.regions[1]", None),
            ]
        );
        assert_eq!(
            v[3].violation.message,
            "there is no Region \"ap\" in namespace \"chat\""
        );
    }

    #[test]
    fn a_mesh_has_at_most_max_regions_and_the_error_names_the_numbers() {
        let regions: Vec<Region> = (0..MAX_REGIONS)
            .map(|i| named_region(&format!("r{i}"), Some("chat")))
            .collect();
        assert_eq!(
            mesh(&regions, &[]),
            vec![],
            "{MAX_REGIONS} regions are fine"
        );

        let mut too_many = regions.clone();
        too_many.extend((MAX_REGIONS..1000).map(|i| named_region(&format!("r{i}"), Some("chat"))));
        let v = mesh(&too_many, &[]);
        assert_eq!(v.len(), 1, "reported once, not per extra Region");
        assert_eq!(v[0].object, ObjectRef::Region(64));
        assert_eq!(
            v[0].violation.to_string(),
            "metadata.name: Region \"r64\" would be region 65 of 1000 in namespace \"chat\"; \
             a mesh has at most 64 regions"
        );
    }

    #[test]
    fn the_regions_created_first_stay_within_the_limit() {
        let at = |name: &str, second: i64| {
            let mut region = named_region(name, Some("chat"));
            region.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(second).unwrap(),
                ));
            region
        };
        // Listed in name order, as the apiserver lists them: "late" was
        // created last, though its name sorts first.
        let mut regions = vec![at("a-late", 1_000)];
        regions.extend((0..MAX_REGIONS).map(|i| at(&format!("r{i:02}"), 10 + i as i64)));
        let beyond: Vec<(&str, usize)> = regions_beyond_limit(&regions)
            .into_iter()
            .map(|(r, position)| (r.metadata.name.as_deref().unwrap(), position))
            .collect();
        assert_eq!(beyond, vec![("a-late", 65)]);
        assert!(regions_beyond_limit(&regions[1..]).is_empty());
    }

    #[test]
    fn the_crd_bounds_the_lists_that_grow_with_the_mesh() {
        let crd = serde_json::to_value(<Region as kube::CustomResourceExt>::crd()).unwrap();
        let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"];
        assert_eq!(status["peers"]["maxItems"], MAX_REGIONS - 1);
        assert_eq!(
            status["peers"]["items"]["properties"]["via"]["maxItems"],
            MAX_REGIONS - 2
        );
        let link = serde_json::to_value(<RegionLink as kube::CustomResourceExt>::crd()).unwrap();
        assert_eq!(
            link["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
                ["via"]["maxItems"],
            MAX_REGIONS - 2
        );
    }
}
