//! Identities from a cert-manager Issuer (`--mesh-issuer`, chart value
//! `meshCA.issuerRef`), instead of the mesh CA Secret of `pki.rs`.
//!
//! For each Region of its cluster the operator applies a `cert-manager.io/v1`
//! Certificate `<region>-tls` (owned by the Region) whose Secret
//! `<region>-tls` (`tls.crt`, `tls.key`, `ca.crt`) its pods mount as they
//! mount the operator's own. The Certificate asks for what
//! `MeshCa::issue_region` puts in a region certificate: the DNS name
//! `<region>.region.meridian` and the Region's hosts, its SPIFFE URI, CN the
//! region and O the namespace, an ECDSA P-256 key (PKCS#8, new at every
//! renewal), for server and client auth; it lives `--cert-lifetime-seconds`
//! and is renewed once it has used [`RENEW_AT`] of its life. The operator's
//! own tool identity (`operator.admin.meridian`, for the link poller) comes
//! the same way, from Certificate [`TOOL_CERTIFICATE`] of each namespace.
//!
//! cert-manager is not watched: while a Certificate is not Ready the Region
//! is reconciled again every [`RECHECK`], and its status says why
//! (`IdentityIssued`, see `status.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DynamicObject, Patch};
use kube::{Api, Client};
use meridian_node::trust::Credentials;
use meridian_node::trust::credentials::Loaded;
use meridian_node::trust::pki::region_name;
use serde_json::{Value, json};

use super::Error;
use super::apply::params;
use super::pki::{CA_KEY, CERT_KEY, KEY_KEY, RENEW_AT, region_secret_name};

/// cert-manager's API group, the default of `--mesh-issuer-group`.
pub const DEFAULT_GROUP: &str = "cert-manager.io";
/// The issuer kinds a Certificate may name.
pub const KINDS: [&str; 2] = ["Issuer", "ClusterIssuer"];
/// cert-manager refuses Certificates that live less than this.
pub const MIN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// How often a Region whose Certificate is not Ready is looked at again.
pub const RECHECK: Duration = Duration::from_secs(5);
/// The Certificate (and Secret) of the operator's tool identity in each
/// namespace.
pub const TOOL_CERTIFICATE: &str = "meridian-operator-tool";
/// The tool name in that identity: `operator.admin.meridian`.
pub const TOOL_NAME: &str = "operator";

/// The issuer that signs the mesh's certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRef {
    pub kind: String,
    pub name: String,
    pub group: String,
}

impl std::fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}/{}", self.kind, self.group, self.name)
    }
}

/// Parses `--mesh-issuer`: `KIND/NAME`, KIND being `Issuer` (in the
/// Region's namespace) or `ClusterIssuer`. Returns (kind, name).
pub fn parse_issuer(value: &str) -> Result<(String, String), String> {
    let Some((kind, name)) = value.split_once('/') else {
        return Err(format!(
            "{value:?} is not KIND/NAME, as in Issuer/mesh-ca or ClusterIssuer/mesh-ca"
        ));
    };
    if !KINDS.contains(&kind) {
        return Err(format!(
            "kind {kind:?} is not one of {}",
            KINDS.join(" or ")
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(format!("{name:?} is not a Kubernetes object name"));
    }
    Ok((kind.to_owned(), name.to_owned()))
}

/// What the Region's status says of its Certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateState {
    /// The operator issues from the mesh CA Secret: nothing to say.
    NotUsed,
    /// cert-manager has issued the Certificate for its current spec.
    Ready(String),
    /// Not yet, or no longer: why.
    NotReady(String),
}

impl CertificateState {
    pub fn is_ready(&self) -> bool {
        !matches!(self, CertificateState::NotReady(_))
    }
}

/// `cert-manager.io/v1` Certificate.
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: DEFAULT_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{DEFAULT_GROUP}/v1"),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

/// Go's duration syntax in whole seconds, as cert-manager reads it.
fn seconds(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// `duration` and `renewBefore` for certificates that live `lifetime` and
/// are renewed once they have used [`RENEW_AT`] of it.
pub fn durations(lifetime: Duration) -> (String, String) {
    let renew_before = Duration::from_secs((lifetime.as_secs() as f64 * (1.0 - RENEW_AT)) as u64);
    (seconds(lifetime), seconds(renew_before))
}

fn spec(
    issuer: &IssuerRef,
    lifetime: Duration,
    secret: &str,
    labels: &BTreeMap<String, String>,
) -> serde_json::Map<String, Value> {
    let (duration, renew_before) = durations(lifetime);
    let spec = json!({
        "secretName": secret,
        "secretTemplate": {"labels": labels},
        "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        "duration": duration,
        "renewBefore": renew_before,
        "isCA": false,
        // As MeshCa's keys: ECDSA P-256, PKCS#8 (what the nodes load), and a
        // new one with every certificate.
        "privateKey": {
            "algorithm": "ECDSA",
            "size": 256,
            "encoding": "PKCS8",
            "rotationPolicy": "Always",
        },
    });
    match spec {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}

/// The Certificate of `region` in `namespace`: the names
/// `MeshCa::issue_region` gives a region certificate.
pub fn region_certificate(
    region: &str,
    namespace: &str,
    hosts: &[String],
    issuer: &IssuerRef,
    lifetime: Duration,
    owner: OwnerReference,
) -> DynamicObject {
    let name = region_secret_name(region);
    let labels = super::build::labels(region, "identity");
    let mut dns_names = vec![region_name(region)];
    let mut ip_addresses = Vec::new();
    for host in hosts {
        // As rcgen reads a name: an IP address or a DNS name.
        if host.parse::<IpAddr>().is_ok() {
            ip_addresses.push(host.clone());
        } else {
            dns_names.push(host.clone());
        }
    }
    let mut spec = spec(issuer, lifetime, &name, &labels);
    spec.insert("commonName".into(), json!(region));
    spec.insert("subject".into(), json!({"organizations": [namespace]}));
    spec.insert("dnsNames".into(), json!(dns_names));
    if !ip_addresses.is_empty() {
        spec.insert("ipAddresses".into(), json!(ip_addresses));
    }
    spec.insert(
        "uris".into(),
        json!([format!("spiffe://meridian/ns/{namespace}/region/{region}")]),
    );
    spec.insert(
        "usages".into(),
        json!(["server auth", "client auth", "digital signature"]),
    );
    let mut certificate = DynamicObject::new(&name, &certificate_resource())
        .within(namespace)
        .data(json!({"spec": spec}));
    certificate.metadata.labels = Some(labels);
    certificate.metadata.owner_references = Some(vec![owner]);
    certificate
}

/// The Certificate of the operator's tool identity in `namespace`: what
/// `MeshCa::issue_admin("operator", …)` issues.
pub fn tool_certificate(namespace: &str, issuer: &IssuerRef, lifetime: Duration) -> DynamicObject {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "meridian".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "tool".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "meridian-operator".to_owned(),
        ),
    ]);
    let mut spec = spec(issuer, lifetime, TOOL_CERTIFICATE, &labels);
    spec.insert("commonName".into(), json!(TOOL_NAME));
    spec.insert(
        "dnsNames".into(),
        json!([format!("{TOOL_NAME}.admin.meridian")]),
    );
    spec.insert("usages".into(), json!(["client auth", "digital signature"]));
    let mut certificate = DynamicObject::new(TOOL_CERTIFICATE, &certificate_resource())
        .within(namespace)
        .data(json!({"spec": spec}));
    certificate.metadata.labels = Some(labels);
    certificate
}

/// Whether cert-manager has issued `certificate` (as read back) for its
/// current spec: its `Ready` condition, observed at its generation.
pub fn state_of(certificate: &DynamicObject) -> CertificateState {
    let name = certificate.metadata.name.as_deref().unwrap_or_default();
    let secret = certificate.data["spec"]["secretName"]
        .as_str()
        .unwrap_or(name);
    let ready = certificate.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let not_yet = format!("cert-manager has not issued Certificate {name} yet");
    let Some(ready) = ready else {
        return CertificateState::NotReady(not_yet);
    };
    let current = match (
        ready["observedGeneration"].as_i64(),
        certificate.metadata.generation,
    ) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => true,
    };
    let text = |key: &str| ready[key].as_str().unwrap_or_default().to_owned();
    match (ready["status"].as_str(), current) {
        (Some("True"), true) => CertificateState::Ready(format!(
            "cert-manager issued Certificate {name} into Secret {secret}"
        )),
        (Some("True"), false) => CertificateState::NotReady(format!(
            "cert-manager has not issued Certificate {name} for its current spec yet"
        )),
        _ => CertificateState::NotReady(format!(
            "{not_yet}: Ready={} ({}: {})",
            text("status"),
            text("reason"),
            text("message")
        )),
    }
}

/// An apply of a Certificate that failed, saying what is missing when it is
/// cert-manager or the right to use it.
fn apply_error(name: &str, source: kube::Error) -> Error {
    let message = match &source {
        kube::Error::Api(status) if status.code == 404 => format!(
            "the API server does not serve certificates.cert-manager.io/v1: is cert-manager installed? ({source})"
        ),
        kube::Error::Api(status) if status.code == 403 => format!(
            "the operator may not write certificates.cert-manager.io (the chart grants it when meshCA.issuerRef is set): {source}"
        ),
        _ => source.to_string(),
    };
    Error::Certificate {
        name: name.to_owned(),
        message,
    }
}

async fn apply(client: &Client, certificate: &DynamicObject) -> Result<DynamicObject, Error> {
    let name = certificate.metadata.name.clone().unwrap_or_default();
    let namespace = certificate.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &certificate_resource());
    api.patch(&name, &params(), &Patch::Apply(certificate))
        .await
        .map_err(|e| apply_error(&name, e))
}

/// Applies `region`'s Certificate; returns whether cert-manager has issued it.
pub async fn ensure_region(
    client: &Client,
    certificate: &DynamicObject,
) -> Result<CertificateState, Error> {
    let applied = apply(client, certificate).await?;
    Ok(state_of(&applied))
}

/// The operator's tool credentials of each namespace, from the Secret of its
/// tool Certificate.
#[derive(Clone, Default)]
pub struct Tools {
    by_namespace: Arc<Mutex<HashMap<String, Arc<Credentials>>>>,
    /// Namespaces whose tool Certificate this process has applied.
    applied: Arc<Mutex<HashSet<String>>>,
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

impl Tools {
    pub fn get(&self, namespace: &str) -> Option<Arc<Credentials>> {
        let tools = self.by_namespace.lock().expect("tools");
        tools.get(namespace).cloned()
    }

    /// Makes sure the tool Certificate of `namespace` exists and reads its
    /// Secret; returns whether the credentials are there (false: not issued
    /// yet), or what is wrong. Applied once per process and namespace, and
    /// again when its Secret is missing; the Secret is read every time, so a
    /// renewal is picked up.
    pub async fn ensure(
        &self,
        client: &Client,
        namespace: &str,
        issuer: &IssuerRef,
        lifetime: Duration,
    ) -> Result<bool, String> {
        let first = !self.applied.lock().expect("tools").contains(namespace);
        if first {
            self.apply(client, namespace, issuer, lifetime).await?;
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = api
            .get_opt(TOOL_CERTIFICATE)
            .await
            .map_err(|e| format!("cannot read Secret {namespace}/{TOOL_CERTIFICATE}: {e}"))?;
        let Some(secret) = secret else {
            if !first {
                self.apply(client, namespace, issuer, lifetime).await?;
            }
            return Ok(false);
        };
        let (Some(ca), Some(cert), Some(key)) = (
            secret_text(&secret, CA_KEY),
            secret_text(&secret, CERT_KEY),
            secret_text(&secret, KEY_KEY),
        ) else {
            return Err(format!(
                "Secret {namespace}/{TOOL_CERTIFICATE} lacks {CA_KEY}, {CERT_KEY} or {KEY_KEY}: the issuer must fill {CA_KEY} with the mesh CA (a CA issuer does)"
            ));
        };
        if self
            .get(namespace)
            .is_some_and(|known| known.current().certificate_pem() == cert)
        {
            return Ok(true);
        }
        let loaded = Loaded::from_pem(&ca, &cert, &key)
            .map_err(|e| format!("Secret {namespace}/{TOOL_CERTIFICATE}: {e}"))?;
        tracing::info!(%namespace, identity = %loaded.identity, "read the tool certificate cert-manager issued");
        self.by_namespace
            .lock()
            .expect("tools")
            .insert(namespace.to_owned(), Credentials::fixed(loaded));
        Ok(true)
    }

    async fn apply(
        &self,
        client: &Client,
        namespace: &str,
        issuer: &IssuerRef,
        lifetime: Duration,
    ) -> Result<(), String> {
        apply(client, &tool_certificate(namespace, issuer, lifetime))
            .await
            .map_err(|e| e.to_string())?;
        self.applied
            .lock()
            .expect("tools")
            .insert(namespace.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> IssuerRef {
        IssuerRef {
            kind: "Issuer".into(),
            name: "mesh-ca".into(),
            group: DEFAULT_GROUP.into(),
        }
    }

    #[test]
    fn the_issuer_flag_is_kind_slash_name() {
        assert_eq!(
            parse_issuer("Issuer/mesh-ca"),
            Ok(("Issuer".into(), "mesh-ca".into()))
        );
        assert_eq!(
            parse_issuer("ClusterIssuer/meridian.ca"),
            Ok(("ClusterIssuer".into(), "meridian.ca".into()))
        );
        for bad in [
            "mesh-ca",
            "Certificate/x",
            "Issuer/",
            "Issuer/Mesh",
            "Issuer/-x",
        ] {
            assert!(parse_issuer(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn renewal_comes_at_the_same_point_of_life_as_the_operators_own() {
        assert_eq!(
            durations(Duration::from_secs(86400)),
            ("86400s".into(), "57600s".into())
        );
        assert_eq!(
            durations(Duration::from_secs(3600)),
            ("3600s".into(), "2400s".into())
        );
    }

    #[test]
    fn a_region_certificate_names_what_the_mesh_ca_would() {
        let owner = OwnerReference {
            api_version: "meridian.dev/v1alpha1".into(),
            kind: "Region".into(),
            name: "eu".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let hosts = vec![
            "eu-roaming.chat.svc".to_owned(),
            "eu-service-center.chat.svc".to_owned(),
            "203.0.113.7".to_owned(),
        ];
        let c = region_certificate(
            "eu",
            "chat",
            &hosts,
            &issuer(),
            Duration::from_secs(86400),
            owner,
        );
        let value = serde_json::to_value(&c).unwrap();
        assert_eq!(value["apiVersion"], "cert-manager.io/v1");
        assert_eq!(value["kind"], "Certificate");
        assert_eq!(value["metadata"]["name"], "eu-tls");
        assert_eq!(value["metadata"]["namespace"], "chat");
        assert_eq!(value["metadata"]["ownerReferences"][0]["kind"], "Region");
        let spec = &value["spec"];
        assert_eq!(spec["secretName"], "eu-tls");
        assert_eq!(spec["commonName"], "eu");
        assert_eq!(spec["subject"]["organizations"], json!(["chat"]));
        assert_eq!(
            spec["dnsNames"],
            json!([
                "eu.region.meridian",
                "eu-roaming.chat.svc",
                "eu-service-center.chat.svc"
            ])
        );
        assert_eq!(spec["ipAddresses"], json!(["203.0.113.7"]));
        assert_eq!(spec["uris"], json!(["spiffe://meridian/ns/chat/region/eu"]));
        assert_eq!(
            spec["usages"],
            json!(["server auth", "client auth", "digital signature"])
        );
        assert_eq!(
            spec["privateKey"],
            json!({"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"})
        );
        assert_eq!(
            spec["issuerRef"],
            json!({"name": "mesh-ca", "kind": "Issuer", "group": "cert-manager.io"})
        );
        assert_eq!(
            (&spec["duration"], &spec["renewBefore"]),
            (&json!("86400s"), &json!("57600s"))
        );
        assert_eq!(
            spec["secretTemplate"]["labels"]["meridian.dev/region"],
            "eu"
        );

        let tool = serde_json::to_value(tool_certificate(
            "chat",
            &issuer(),
            Duration::from_secs(3600),
        ))
        .unwrap();
        assert_eq!(tool["metadata"]["name"], TOOL_CERTIFICATE);
        assert_eq!(tool["spec"]["secretName"], TOOL_CERTIFICATE);
        assert_eq!(tool["spec"]["dnsNames"], json!(["operator.admin.meridian"]));
        assert_eq!(
            tool["spec"]["usages"],
            json!(["client auth", "digital signature"])
        );
        assert!(tool["metadata"]["ownerReferences"].is_null());
    }

    #[test]
    fn a_certificate_is_ready_once_cert_manager_says_so_for_its_generation() {
        let with = |generation: i64, status: Value| {
            let mut c = DynamicObject::new("eu-tls", &certificate_resource())
                .data(json!({"spec": {"secretName": "eu-tls"}, "status": status}));
            c.metadata.generation = Some(generation);
            state_of(&c)
        };
        assert_eq!(
            with(1, Value::Null),
            CertificateState::NotReady("cert-manager has not issued Certificate eu-tls yet".into())
        );
        let pending = with(
            1,
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "DoesNotExist",
                "message": "Issuing certificate as Secret does not exist", "observedGeneration": 1}]}),
        );
        assert_eq!(
            pending,
            CertificateState::NotReady("cert-manager has not issued Certificate eu-tls yet: Ready=False (DoesNotExist: Issuing certificate as Secret does not exist)".into())
        );
        assert!(!pending.is_ready());
        let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready",
            "message": "Certificate is up to date and has not expired", "observedGeneration": 1}]});
        assert_eq!(
            with(1, ready.clone()),
            CertificateState::Ready(
                "cert-manager issued Certificate eu-tls into Secret eu-tls".into()
            )
        );
        assert!(
            !with(2, ready).is_ready(),
            "Ready for an older spec (say, before a new host) is not ready"
        );
    }
}
