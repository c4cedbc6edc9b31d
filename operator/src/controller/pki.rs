//! The mesh CA of each namespace, kept in a Secret, and the identities the
//! operator issues from it: one Secret per Region (mounted into both of its
//! pods) and the operator's own tool certificate, with which it reads the
//! roaming systems' link state.
//!
//! Clusters that share one mesh share its CA: give every cluster's operator
//! the same CA Secret (chart value `meshCA.secretName`), created once and
//! copied. An operator creates the CA only when the Secret does not exist.
//!
//! With a cert-manager Issuer (`--mesh-issuer`, chart value
//! `meshCA.issuerRef`) the operator neither creates nor reads the CA Secret:
//! cert-manager issues both kinds of identity (see `cert_manager.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Patch, PostParams};
use kube::{Api, Client};
use meridian_node::trust::Credentials;
use meridian_node::trust::pki::{self, MeshCa};

use super::Error;
use super::apply::params;
use super::cert_manager::{self, CertificateState, IssuerRef};

/// The keys of a Region's Secret, as its pods read them.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// A Region's certificate is renewed once it has used this much of its life.
pub const RENEW_AT: f64 = 1.0 / 3.0;

/// The Secret holding `region`'s certificate and key.
pub fn region_secret_name(region: &str) -> String {
    format!("{region}-tls")
}

/// How the operator issues certificates.
#[derive(Clone, Debug)]
pub struct Issuing {
    /// The Secret holding the mesh CA in each namespace.
    pub ca_secret: String,
    /// How long a Region's certificate lives.
    pub lifetime: Duration,
    /// The cert-manager issuer that issues instead, when set.
    pub issuer: Option<IssuerRef>,
}

/// Where a Region's identity stands after [`Authorities::ensure_region`].
#[derive(Debug)]
pub struct RegionIdentity {
    /// When to look at it again.
    pub recheck_in: Duration,
    /// With an issuer: whether cert-manager has issued it.
    pub certificate: CertificateState,
}

struct Authority {
    ca: MeshCa,
    tool: Arc<Credentials>,
}

/// The mesh CA of every namespace the operator has reconciled.
#[derive(Clone)]
pub struct Authorities {
    issuing: Issuing,
    by_namespace: Arc<Mutex<HashMap<String, Arc<Authority>>>>,
    /// With an issuer: the tool credentials cert-manager issued.
    issued_tools: cert_manager::Tools,
}

fn secret_error(name: &str, source: kube::Error) -> Error {
    Error::Apply {
        kind: "Secret",
        name: name.to_owned(),
        source,
    }
}

fn invalid(what: String) -> Error {
    Error::Invalid(what)
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn data(entries: [(&str, &str); 3]) -> BTreeMap<String, ByteString> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

impl Authorities {
    pub fn new(issuing: Issuing) -> Self {
        Self {
            issuing,
            by_namespace: Arc::default(),
            issued_tools: cert_manager::Tools::default(),
        }
    }

    /// The operator's tool credentials in `namespace`, once its CA is known
    /// (with an issuer: once cert-manager has issued them).
    pub fn tool(&self, namespace: &str) -> Option<Arc<Credentials>> {
        if self.issuing.issuer.is_some() {
            return self.issued_tools.get(namespace);
        }
        let authorities = self.by_namespace.lock().expect("authorities");
        authorities.get(namespace).map(|a| a.tool.clone())
    }

    /// Makes `ca` the CA of `namespace`, as reading its Secret would.
    #[cfg(test)]
    pub(crate) fn insert(&self, namespace: &str, ca: MeshCa) {
        let tool = ca
            .issue_admin("operator", self.issuing.lifetime)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .expect("a tool certificate");
        self.by_namespace
            .lock()
            .expect("authorities")
            .insert(namespace.to_owned(), Arc::new(Authority { ca, tool }));
    }

    /// The CA of `namespace`: read from its Secret, which is created (with
    /// a new CA) when it does not exist.
    async fn authority(&self, client: &Client, namespace: &str) -> Result<Arc<Authority>, Error> {
        let name = &self.issuing.ca_secret;
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = match api.get_opt(name).await.map_err(|e| secret_error(name, e))? {
            Some(secret) => secret,
            None => {
                let ca = MeshCa::generate(namespace).map_err(|e| invalid(e.to_string()))?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "meridian-operator".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data([
                        (CA_KEY, &ca.cert_pem),
                        (CERT_KEY, &ca.cert_pem),
                        (KEY_KEY, &ca.key_pem()),
                    ])),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &secret).await {
                    Ok(created) => {
                        tracing::info!(%namespace, secret = %name, "created the mesh CA");
                        created
                    }
                    // Another replica or cluster made it first: use theirs.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        api.get(name).await.map_err(|e| secret_error(name, e))?
                    }
                    Err(e) => return Err(secret_error(name, e)),
                }
            }
        };
        let (Some(cert), Some(key)) = (text(&secret, CERT_KEY), text(&secret, KEY_KEY)) else {
            return Err(invalid(format!(
                "Secret {namespace}/{name} must hold the mesh CA as {CERT_KEY} and {KEY_KEY}"
            )));
        };
        let known = self
            .by_namespace
            .lock()
            .expect("authorities")
            .get(namespace)
            .cloned();
        if let Some(known) = known
            && known.ca.cert_pem == cert
            && !pki::due_for_renewal(known.tool.current().certificate_pem(), RENEW_AT)
        {
            return Ok(known);
        }
        let ca = MeshCa::from_pem(&cert, &key)
            .map_err(|e| invalid(format!("Secret {namespace}/{name}: {e}")))?;
        let tool = ca
            .issue_admin("operator", self.issuing.lifetime)
            .and_then(|c| c.credentials(&ca.cert_pem))
            .map_err(|e| invalid(e.to_string()))?;
        let authority = Arc::new(Authority { ca, tool });
        self.by_namespace
            .lock()
            .expect("authorities")
            .insert(namespace.to_owned(), authority.clone());
        Ok(authority)
    }

    /// Makes sure `region`'s Secret holds a certificate from the current CA
    /// that has used less than [`RENEW_AT`] of its life, and says when it is
    /// due again. With an issuer, applies the Region's Certificate (and the
    /// namespace's tool Certificate) instead, and says whether cert-manager
    /// has issued it.
    pub async fn ensure_region(
        &self,
        client: &Client,
        namespace: &str,
        region: &str,
        hosts: &[String],
        owner: OwnerReference,
    ) -> Result<RegionIdentity, Error> {
        let lifetime = self.issuing.lifetime;
        if let Some(issuer) = &self.issuing.issuer {
            // The tool identity only serves the link poller: while it is
            // missing, the Region is reconciled all the same.
            let tool = match self
                .issued_tools
                .ensure(client, namespace, issuer, lifetime)
                .await
            {
                Ok(issued) => issued,
                Err(why) => {
                    tracing::warn!(%namespace, %why, "no tool certificate to poll link state with");
                    false
                }
            };
            if !tool {
                tracing::debug!(%namespace, "cert-manager has not issued the tool certificate yet");
            }
            let certificate =
                cert_manager::region_certificate(region, namespace, hosts, issuer, lifetime, owner);
            let certificate = cert_manager::ensure_region(client, &certificate).await?;
            // cert-manager renews; the operator re-reads the tool Secret at
            // every reconcile, which comes at least every five minutes.
            let recheck_in = if certificate.is_ready() && tool {
                Duration::from_secs(300)
            } else {
                cert_manager::RECHECK
            };
            return Ok(RegionIdentity {
                recheck_in,
                certificate,
            });
        }
        let authority = self.authority(client, namespace).await?;
        let name = region_secret_name(region);
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let current = api
            .get_opt(&name)
            .await
            .map_err(|e| secret_error(&name, e))?;
        let keep = current.as_ref().and_then(|s| {
            let cert = text(s, CERT_KEY)?;
            let fresh = text(s, CA_KEY)? == authority.ca.cert_pem
                && text(s, KEY_KEY).is_some()
                && !pki::due_for_renewal(&cert, RENEW_AT);
            fresh.then_some(cert)
        });
        let cert = match keep {
            Some(cert) => cert,
            None => {
                let issued = authority
                    .ca
                    .issue_region(region, namespace, hosts, lifetime)
                    .map_err(|e| invalid(e.to_string()))?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(super::build::labels(region, "identity")),
                        owner_references: Some(vec![owner]),
                        ..Default::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data([
                        (CA_KEY, &authority.ca.cert_pem),
                        (CERT_KEY, &issued.cert_pem),
                        (KEY_KEY, &issued.key_pem),
                    ])),
                    ..Default::default()
                };
                api.patch(&name, &params(), &Patch::Apply(&secret))
                    .await
                    .map_err(|e| secret_error(&name, e))?;
                tracing::info!(%namespace, %region, secret = %name, "issued the region's certificate");
                issued.cert_pem
            }
        };
        let (start, end) = pki::validity_of(&cert).map_err(|e| invalid(e.to_string()))?;
        let due = start + ((end - start) as f64 * RENEW_AT) as i64;
        let now = meridian_node::now_ms() / 1000;
        Ok(RegionIdentity {
            recheck_in: Duration::from_secs(due.saturating_sub(now).max(1) as u64),
            certificate: CertificateState::NotUsed,
        })
    }
}
