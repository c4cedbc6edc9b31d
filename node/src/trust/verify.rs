//! Checks certificates carried inside messages (origin signatures, link
//! state) against the mesh CA, and the signatures made with their keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::signature::EcdsaKeyPair;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::credentials::Credentials;
use super::pki::Identity;
use crate::Error;

/// How long a verified certificate is trusted without checking it again
/// (so an expired one is refused within this time).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Certificates remembered at once.
const CACHE_ENTRIES: usize = 1024;
/// The largest certificate accepted inside a message.
pub const MAX_CERTIFICATE_BYTES: usize = 4096;
/// The largest signature accepted (an ASN.1 ECDSA P-256 one is at most 72).
pub const MAX_SIGNATURE_BYTES: usize = 128;

fn refused(what: impl std::fmt::Display) -> Error {
    Error::Unauthenticated(what.to_string())
}

/// The identity a certificate names (not yet trusted).
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, Error> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| refused(format!("certificate: {e}")))?;
    Identity::from_dns_names(parsed.valid_dns_names())
        .ok_or_else(|| refused("certificate names no Meridian region or tool"))
}

/// Signs `message` with an ECDSA P-256 key (ASN.1 signature).
pub fn sign(key: &EcdsaKeyPair, message: &[u8]) -> Result<Vec<u8>, Error> {
    key.sign(&ring::rand::SystemRandom::new(), message)
        .map(|s| s.as_ref().to_vec())
        .map_err(|e| Error::Internal(format!("signing: {e}")))
}

/// Checks that `signature` over `message` was made with `cert`'s key.
pub fn check_signature(
    cert: &CertificateDer<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| refused(format!("certificate: {e}")))?;
    parsed
        .verify_signature(webpki::ring::ECDSA_P256_SHA256, message, signature)
        .map_err(|_| refused("signature does not match"))
}

/// Verifies certificates and origin signatures against this process's CA.
pub struct Verifier {
    credentials: Arc<Credentials>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    entries: HashMap<Vec<u8>, (Identity, Instant)>,
}

impl Verifier {
    pub fn new(credentials: Arc<Credentials>) -> Self {
        Self {
            credentials,
            cache: Mutex::default(),
        }
    }

    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// The identity of a certificate issued by the mesh CA and valid now.
    pub fn certificate(&self, der: &[u8]) -> Result<Identity, Error> {
        if der.len() > MAX_CERTIFICATE_BYTES {
            return Err(refused(format!(
                "certificate is {} bytes; at most {MAX_CERTIFICATE_BYTES} are allowed",
                der.len()
            )));
        }
        let generation = self.credentials.generation();
        {
            let mut cache = self.cache.lock().expect("verifier cache");
            if cache.generation != generation {
                cache.entries.clear();
                cache.generation = generation;
            }
            if let Some((identity, at)) = cache.entries.get(der)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(identity.clone());
            }
        }
        let cert = CertificateDer::from(der);
        let parsed = webpki::EndEntityCert::try_from(&cert)
            .map_err(|e| refused(format!("certificate: {e}")))?;
        let loaded = self.credentials.current();
        parsed
            .verify_for_usage(
                rustls::crypto::ring::default_provider()
                    .signature_verification_algorithms
                    .all,
                &loaded.anchors,
                &[],
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| refused(format!("certificate is not trusted: {e}")))?;
        let identity = identity_of(&cert)?;
        let mut cache = self.cache.lock().expect("verifier cache");
        if cache.entries.len() >= CACHE_ENTRIES {
            cache.entries.clear();
        }
        cache
            .entries
            .insert(der.to_vec(), (identity.clone(), Instant::now()));
        Ok(identity)
    }

    /// Checks a signature made by `region` over `message` with the key of
    /// `certificate`, which must be a current mesh certificate of `region`.
    pub fn signed_by(
        &self,
        region: &str,
        certificate: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Error> {
        if signature.len() > MAX_SIGNATURE_BYTES {
            return Err(refused("signature is too long"));
        }
        match self.certificate(certificate)? {
            Identity::Region(r) if r == region => {}
            other => {
                return Err(refused(format!(
                    "signed by {other}, which cannot speak for region {region}"
                )));
            }
        }
        check_signature(&CertificateDer::from(certificate), message, signature)
    }
}
